//! Finding a cgroup's directories: the cgroupfs lines of mountinfo, matched against the paths of
//! `/proc/<pid>/cgroup`.

use std::path::{Path, PathBuf};

/// A cgroupfs line of mountinfo.
pub(super) struct CgroupMount {
    /// The path inside the hierarchy that is mounted (`/` unless a sub-tree is bind-mounted).
    pub(super) root: String,
    pub(super) mount_point: String,
    pub(super) unified: bool,
    /// For v1, the controllers of the hierarchy (`rw,cpu,cpuacct`, `rw,name=systemd`).
    pub(super) super_options: String,
}

impl CgroupMount {
    /// Parses `id parent maj:min root mount-point options [optional...] - fstype source super-options`,
    /// keeping only cgroup and cgroup2 mounts.
    pub(super) fn parse(line: &str) -> Option<CgroupMount> {
        let mut fields = line.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        let mut rest = fields.skip_while(|f| *f != "-");
        rest.next()?;
        let fstype = rest.next()?;
        let super_options = rest.nth(1).unwrap_or("");
        let unified = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => return None,
        };
        Some(CgroupMount {
            root: unescape(root),
            mount_point: unescape(mount_point),
            unified,
            super_options: super_options.to_string(),
        })
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash...).
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let v = (u32::from(d[0] - b'0') << 6)
                    | (u32::from(d[1] - b'0') << 3)
                    | u32::from(d[2] - b'0');
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` through the best of the `wanted` mounts: the one whose root is
/// the longest prefix of the path.
pub(super) fn locate(
    mounts: &[CgroupMount],
    wanted: impl Fn(&CgroupMount) -> bool,
    path: &str,
    host_root: &Path,
) -> Option<PathBuf> {
    let mut best: Option<(&CgroupMount, &str)> = None;
    for m in mounts.iter().filter(|m| wanted(m)) {
        let Some(rel) = relative_to(path, &m.root) else {
            continue;
        };
        if best.is_none_or(|(b, _)| m.root.len() > b.root.len()) {
            best = Some((m, rel));
        }
    }
    let (m, rel) = best?;
    let mut dir = host_root.join(m.mount_point.trim_start_matches('/'));
    if !rel.is_empty() {
        dir.push(rel);
    }
    Some(dir)
}

/// `path` relative to a mount's `root`, if it lies under it: (`/a/b`, `/a`) → `b`,
/// (`/a`, `/`) → `a`, (`/ab`, `/a`) → None. Paths climbing out (`/..`, seen across cgroup
/// namespaces) are refused.
fn relative_to<'p>(path: &'p str, root: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(root.trim_end_matches('/'))?;
    let rel = if rest.is_empty() {
        ""
    } else {
        rest.strip_prefix('/')?.trim_end_matches('/')
    };
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(rel)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cgroups::testdata::fixture;
    use crate::cgroups::ContainerCgroup;
    use crate::error::Error;

    #[test]
    fn locates_v1_controllers_on_a_hybrid_host() {
        // Captured on the dev VM: v1 controllers plus cgroup2 at /sys/fs/cgroup/unified.
        let cg = ContainerCgroup::from_parts(
            &fixture("hybrid/cgroup"),
            &fixture("hybrid/mountinfo"),
            Path::new("/"),
        )
        .unwrap();
        assert!(!cg.is_unified());
        let dir = |c| cg.dir(c).map(Path::to_path_buf);
        assert_eq!(
            dir("memory"),
            Some("/sys/fs/cgroup/memory/process_api/431ac47e17d2076334a7a1e740459517".into())
        );
        assert_eq!(dir("cpu"), Some("/sys/fs/cgroup/cpu".into()));
        assert_eq!(dir("cpuacct"), Some("/sys/fs/cgroup/cpuacct".into()));
        assert_eq!(dir("pids"), Some("/sys/fs/cgroup/pids".into()));
        assert_eq!(dir("blkio"), Some("/sys/fs/cgroup/blkio".into()));
        assert_eq!(dir("name=systemd"), Some("/sys/fs/cgroup/systemd".into()));
        // hugetlb is only on the cgroup2 side of this host.
        assert_eq!(dir("hugetlb"), None);
    }

    #[test]
    fn locates_a_unified_cgroup() {
        let cg = ContainerCgroup::from_parts(
            &fixture("unified/cgroup"),
            &fixture("unified/mountinfo"),
            Path::new("/host"),
        )
        .unwrap();
        assert!(cg.is_unified());
        let want = Path::new(
            "/host/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod5c2f4d1e_8a9b_4c3d_9e1f_2a3b4c5d6e7f.slice/\
             cri-containerd-3f1c9a7e2b4d6f8a0c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a.scope",
        );
        assert_eq!(cg.dir("memory"), Some(want));
        assert_eq!(cg.dir("cpu"), Some(want));
    }

    #[test]
    fn resolves_paths_relative_to_the_mount_root() {
        // Inside a container without a cgroup namespace: hierarchies are mounted from
        // /docker/<id>, /proc/<pid>/cgroup shows the host paths.
        let cg = ContainerCgroup::from_parts(
            &fixture("nested/cgroup"),
            &fixture("nested/mountinfo"),
            Path::new("/"),
        )
        .unwrap();
        assert!(!cg.is_unified(), "v1 controllers win over the 0:: line");
        let dir = |c| cg.dir(c).map(Path::to_path_buf);
        assert_eq!(dir("memory"), Some("/sys/fs/cgroup/memory/worker".into()));
        assert_eq!(dir("cpu"), Some("/sys/fs/cgroup/cpu,cpuacct/worker".into()));
        assert_eq!(
            dir("cpuacct"),
            Some("/sys/fs/cgroup/cpu,cpuacct/worker".into())
        );
        assert_eq!(
            dir("name=systemd"),
            Some("/sys/fs/cgroup/systemd/worker".into())
        );
        assert_eq!(dir("rdma"), Some("/sys/fs/cgroup/rdma".into()));
    }

    #[test]
    fn the_longest_matching_mount_root_wins() {
        let mountinfo = "40 31 0:32 / /cg/all rw - cgroup cgroup rw,memory\n\
                         41 31 0:32 /docker/x /cg/x rw - cgroup cgroup rw,memory\n";
        let at = |path: &str| {
            ContainerCgroup::from_parts(&format!("4:memory:{path}\n"), mountinfo, Path::new("/"))
                .map(|cg| cg.dir("memory").unwrap().to_path_buf())
        };
        assert_eq!(at("/docker/x/y").unwrap(), Path::new("/cg/x/y"));
        assert_eq!(at("/docker/x").unwrap(), Path::new("/cg/x"));
        // "/docker/x" is not a path prefix of "/docker/xy".
        assert_eq!(at("/docker/xy").unwrap(), Path::new("/cg/all/docker/xy"));
        // A path climbing out of every mount is not reachable.
        assert!(matches!(at("/.."), Err(Error::Unimplemented(_))));
    }

    #[test]
    fn unknown_layouts_are_unimplemented() {
        let v1_only = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let v2_only = "31 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let unimplemented = |cgroup: &str, mountinfo: &str| {
            matches!(
                ContainerCgroup::from_parts(cgroup, mountinfo, Path::new("/")),
                Err(Error::Unimplemented(_))
            )
        };
        assert!(unimplemented("", v2_only));
        assert!(unimplemented("garbage\n\n::\n", v2_only));
        assert!(
            unimplemented("0::/c\n", v1_only),
            "cgroup2 entry but no cgroup2 mount"
        );
        assert!(
            unimplemented("4:memory:/c\n", v2_only),
            "v1 controller but no v1 mount"
        );
        // A legacy name=systemd hierarchy on a cgroup2 host does not make it v1.
        let cg = ContainerCgroup::from_parts("1:name=systemd:/c\n0::/c\n", v2_only, Path::new("/"))
            .unwrap();
        assert_eq!(cg.dir("memory"), Some(Path::new("/sys/fs/cgroup/c")));
    }

    /// containerd's CRI turns a pod parent ending in `.slice` into `slice:prefix:name`; without
    /// `SystemdCgroup` runc's cgroupfs driver takes that as a path relative to its own cgroup
    /// (the shim's). The colons belong to the path, not to `/proc/<pid>/cgroup`'s fields.
    #[test]
    fn a_systemd_form_path_used_by_cgroupfs_is_found_where_runc_made_it() {
        let id = "0123abcd";
        let v1_mounts = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                         36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                         37 31 0:34 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let shim = "/system.slice/containerd.service";
        let proc_cgroup = format!(
            "5:memory:{shim}/test.slice:cri-containerd:{id}\n\
             4:cpu,cpuacct:{shim}/test.slice:cri-containerd:{id}\n\
             3:pids:{shim}/test.slice:cri-containerd:{id}\n\
             0::{shim}\n"
        );
        let cg = ContainerCgroup::from_parts(&proc_cgroup, v1_mounts, Path::new("/")).unwrap();
        assert!(!cg.is_unified());
        assert_eq!(
            cg.dir("memory").unwrap(),
            Path::new(&format!(
                "/sys/fs/cgroup/memory{shim}/test.slice:cri-containerd:{id}"
            ))
        );
        assert_eq!(
            cg.dir("cpuacct").unwrap(),
            Path::new(&format!(
                "/sys/fs/cgroup/cpu,cpuacct{shim}/test.slice:cri-containerd:{id}"
            ))
        );
        let v2_mounts = "31 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let cg = ContainerCgroup::from_parts(
            &format!("0::{shim}/test.slice:cri-containerd:{id}\n"),
            v2_mounts,
            Path::new("/"),
        )
        .unwrap();
        assert!(cg.is_unified());
        assert_eq!(
            cg.dir("memory").unwrap(),
            Path::new(&format!(
                "/sys/fs/cgroup{shim}/test.slice:cri-containerd:{id}"
            ))
        );
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\134b\\011c"), "/a\\b\tc");
        assert_eq!(unescape("/odd\\9\\04"), "/odd\\9\\04");
        let mountinfo =
            "30 23 0:27 / /sys/fs/my\\040cgroup rw,relatime shared:4 - cgroup2 cgroup2 rw\n";
        let cg = ContainerCgroup::from_parts("0::/c\n", mountinfo, Path::new("/")).unwrap();
        assert_eq!(cg.dir("cpu"), Some(Path::new("/sys/fs/my cgroup/c")));
    }

    #[test]
    fn for_pid_of_a_missing_process_is_not_found() {
        assert!(matches!(
            ContainerCgroup::for_pid(i32::MAX),
            Err(Error::NotFound(_))
        ));
    }
}
