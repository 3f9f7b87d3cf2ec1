//! Mounting the rootfs mounts of a `Create` onto `<bundle>/rootfs`, and taking them down.
//!
//! Idmapped mounts (containerd 2.x, user-namespaced pods): a mount carrying `uidmap=` and
//! `gidmap=` options is made as containerd's own mount code does (`core/mount`, v2.1): a bind
//! (or any non-overlay) mount is made, then an idmapped copy of it is stacked on it; an overlay
//! gets the common parent of its lowerdirs idmapped (read-only) on a temporary directory and
//! its lowerdirs rewritten through it, the upperdir left as it is. The options never reach the
//! kernel as mount data.

use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// One mount as containerd sends it (`containerd.types.Mount`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Options split into mount(2) flags, propagation flags and the data string.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedOptions {
    pub flags: MsFlags,
    pub propagation: MsFlags,
    pub data: String,
}

/// Splits fstab-style options. `X-containerd.*` options are containerd-internal and dropped.
pub fn parse_options(options: &[String]) -> ParsedOptions {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "unbindable" | "runbindable") => {
                propagation |= match p.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                if p.starts_with('r') {
                    propagation |= MsFlags::MS_REC;
                }
                continue;
            }
            // containerd 2.x's mount manager consumes `X-containerd.mkdir.path` (for mount types
            // with a `mkdir/` prefix) before a mount reaches a shim; the Go shim never sees it.
            x if x.starts_with("X-containerd.") => continue,
            // Consumed by the idmapping (see [`IdMapping`]); the kernel would refuse them.
            x if x.starts_with("uidmap=") || x.starts_with("gidmap=") => continue,
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags |= set;
        flags &= !clear;
    }
    ParsedOptions {
        flags,
        propagation,
        data: data.join(","),
    }
}

/// Mounts each mount, in order, onto `target`. On failure the ones already mounted are undone.
/// Every mount's id mapping is checked before anything is mounted: a malformed one is
/// `InvalidArgument` and nothing is mounted.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    let idmaps = mounts
        .iter()
        .map(|m| IdMapping::from_options(&m.options))
        .collect::<Result<Vec<_>>>()?;
    for (i, (m, idmap)) in mounts.iter().zip(&idmaps).enumerate() {
        let mounted = match idmap {
            None => mount_one(m, &m.options, target),
            Some(idmap) => mount_idmapped(m, idmap, target),
        };
        if let Err(e) = mounted {
            if i > 0 {
                unmount_all(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// [`mount_one`] through a user namespace with `idmap`'s mappings.
fn mount_idmapped(m: &Mount, idmap: &IdMapping, target: &Path) -> Result<()> {
    let asked: Vec<&str> = m
        .options
        .iter()
        .filter(|o| o.starts_with("uidmap=") || o.starts_with("gidmap="))
        .map(String::as_str)
        .collect();
    tracing::debug!(kind = %m.kind, target = %target.display(), options = ?asked, "idmapped mount");
    let userns = crate::sys::new_userns(&idmap.uid_map(), &idmap.gid_map())
        .map_err(Error::io("create a user namespace for an idmapped mount"))?;
    if m.kind != "overlay" {
        mount_one(m, &m.options, target)?;
        if let Err(e) = crate::sys::idmapped_mount(target, target, userns.as_fd(), 0) {
            unmount_all(target);
            return Err(Error::Io {
                context: format!("idmap the mount of {} on {}", m.source, target.display()),
                source: e,
            });
        }
        return Ok(());
    }
    let lower_idx = m.options.iter().position(|o| o.starts_with(LOWERDIR));
    let lowers: Vec<&str> = match lower_idx {
        Some(i) => m.options[i][LOWERDIR.len()..].split(':').collect(),
        None => Vec::new(),
    };
    let common = common_parent(&lowers).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "idmapped overlay on {}: its lowerdirs have no common parent directory below /",
            target.display()
        ))
    })?;
    let layers = IdmappedLayers::mount(common, target, userns.as_fd())?;
    let mut options = m.options.clone();
    if let Some(i) = lower_idx {
        let through: Vec<String> = lowers
            .iter()
            .map(|l| {
                let rel = l[common.len()..].trim_start_matches('/');
                layers.dir.join(rel).to_string_lossy().into_owned()
            })
            .collect();
        options[i] = format!("{LOWERDIR}{}", through.join(":"));
    }
    // The overlay holds its own references to its layers: the idmapped copy can go right after.
    let mounted = mount_one(m, &options, target);
    drop(layers);
    mounted
}

const LOWERDIR: &str = "lowerdir=";

/// The directory the lowerdirs are idmapped through, as containerd's `getCommonDirectory`:
/// the parent of their longest common prefix; None if that is `/` or they are not absolute.
fn common_parent<'a>(lowers: &[&'a str]) -> Option<&'a str> {
    let first = *lowers.first()?;
    if lowers.iter().any(|l| !l.starts_with('/')) {
        return None;
    }
    let prefix = lowers[1..].iter().fold(first.len(), |n, l| {
        first
            .bytes()
            .zip(l.bytes())
            .take(n)
            .take_while(|(a, b)| a == b)
            .count()
    });
    // Like Go's path.Dir: up to the last slash of the prefix (which may end inside a name).
    let prefix = &first[..prefix];
    let parent = &prefix[..prefix.rfind('/')?];
    (!parent.is_empty()).then_some(parent)
}

/// The common parent of an overlay's lowerdirs, idmapped read-only on a fresh directory next
/// to the target; unmounted and removed on drop.
struct IdmappedLayers {
    dir: std::path::PathBuf,
}

impl IdmappedLayers {
    fn mount(
        common: &str,
        target: &Path,
        userns: std::os::fd::BorrowedFd<'_>,
    ) -> Result<IdmappedLayers> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let parent = target.parent().ok_or_else(|| {
            Error::InvalidArgument(format!("mount target {} has no parent", target.display()))
        })?;
        let name = format!(
            ".idmapped-layers-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let layers = IdmappedLayers { dir };
        crate::sys::idmapped_mount(
            Path::new(common),
            &layers.dir,
            userns,
            crate::sys::MOUNT_ATTR_RDONLY,
        )
        .map_err(|e| Error::Io {
            context: format!("idmap overlay layers {common} on {}", layers.dir.display()),
            source: e,
        })?;
        Ok(layers)
    }
}

impl Drop for IdmappedLayers {
    fn drop(&mut self) {
        unmount_all(&self.dir);
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove idmapped layers directory");
        }
    }
}

/// The uid and gid mappings of an idmapped mount, from its `uidmap=` and `gidmap=` options:
/// `<container id>:<host id>:<size>` entries separated by commas, as containerd writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMapping {
    pub uid: Vec<IdRange>,
    pub gid: Vec<IdRange>,
}

/// One entry of a mapping: `size` ids from `container` inside map to `host` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// The most entries a user namespace map takes (since Linux 4.15).
const MAX_ID_RANGES: usize = 340;

impl IdMapping {
    /// The mapping a mount's options ask for: None without `uidmap=` and `gidmap=`;
    /// `InvalidArgument` when only one is given (containerd then silently mounts without any
    /// mapping, which would hand the pod files it cannot use) or either is malformed. The last
    /// of repeated options counts, as in containerd.
    pub fn from_options(options: &[String]) -> Result<Option<IdMapping>> {
        let last = |prefix: &str| options.iter().rev().find_map(|o| o.strip_prefix(prefix));
        let parse = |name: &str, list: &str| {
            parse_id_ranges(list)
                .map_err(|why| Error::InvalidArgument(format!("mount option {name}={list}: {why}")))
        };
        match (last("uidmap="), last("gidmap=")) {
            (None, None) => Ok(None),
            (Some(uid), Some(gid)) => Ok(Some(IdMapping {
                uid: parse("uidmap", uid)?,
                gid: parse("gidmap", gid)?,
            })),
            (Some(_), None) | (None, Some(_)) => Err(Error::InvalidArgument(
                "an idmapped mount needs both uidmap= and gidmap=".into(),
            )),
        }
    }

    /// The text of `/proc/<pid>/uid_map`.
    pub fn uid_map(&self) -> String {
        map_file(&self.uid)
    }

    /// The text of `/proc/<pid>/gid_map`.
    pub fn gid_map(&self) -> String {
        map_file(&self.gid)
    }
}

fn map_file(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.size))
        .collect()
}

/// Parses `c:h:s[,c:h:s...]`, refusing what the kernel would refuse when the map is written:
/// ids that are not 32-bit numbers, an empty range, a range past the last id, more than 340
/// entries, ranges overlapping on either side.
pub fn parse_id_ranges(list: &str) -> std::result::Result<Vec<IdRange>, String> {
    let number = |field: &str, what: &str| -> std::result::Result<u32, String> {
        if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{what} {field:?} is not a non-negative number"));
        }
        field
            .parse()
            .map_err(|_| format!("{what} {field} is more than 32 bits"))
    };
    let mut ranges = Vec::new();
    for entry in list.split(',') {
        let fields: Vec<&str> = entry.split(':').collect();
        let [c, h, s] = fields[..] else {
            return Err(format!("{entry:?} is not container-id:host-id:size"));
        };
        let r = IdRange {
            container: number(c, "container id")?,
            host: number(h, "host id")?,
            size: number(s, "size")?,
        };
        if r.size == 0 {
            return Err(format!("{entry}: an empty range"));
        }
        let end = |start: u32| u64::from(start) + u64::from(r.size);
        if end(r.container) > 1 << 32 || end(r.host) > 1 << 32 {
            return Err(format!("{entry}: the range ends past the last 32-bit id"));
        }
        ranges.push(r);
    }
    if ranges.len() > MAX_ID_RANGES {
        return Err(format!(
            "{} entries, more than the kernel's {MAX_ID_RANGES}",
            ranges.len()
        ));
    }
    let overlap = |a: u32, b: u32, size_a: u32, size_b: u32| {
        u64::from(a) < u64::from(b) + u64::from(size_b)
            && u64::from(b) < u64::from(a) + u64::from(size_a)
    };
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            if overlap(a.container, b.container, a.size, b.size) {
                return Err(format!("container ids of {a:?} and {b:?} overlap"));
            }
            if overlap(a.host, b.host, a.size, b.size) {
                return Err(format!("host ids of {a:?} and {b:?} overlap"));
            }
        }
    }
    Ok(ranges)
}

/// Mounts `m` with `options` (its own, or with rewritten lowerdirs) on `target`.
fn mount_one(m: &Mount, options: &[String], target: &Path) -> Result<()> {
    let mut o = parse_options(options);
    let fail = |e: Errno| Error::Io {
        context: format!("mount {} ({}) on {}", m.source, m.kind, target.display()),
        source: e.into(),
    };
    // mount(2) copies one page of data and cuts the rest (the last byte is its NUL).
    let page = page_size();
    let mut from_dir = None;
    if m.kind == "overlay" && o.data.len() >= page {
        if let Some((dir, options)) = compact_lowerdirs(options) {
            o = parse_options(&options);
            from_dir = Some(dir);
        }
        if o.data.len() >= page {
            return Err(Error::InvalidArgument(format!(
                "overlay options for {} are {} bytes, more than mount(2) takes ({page}) even with relative lowerdirs",
                target.display(),
                o.data.len()
            )));
        }
    }
    let data = (!o.data.is_empty()).then_some(o.data.as_str());
    let kind = (!m.kind.is_empty()).then_some(m.kind.as_str());
    match from_dir {
        None => mount(Some(m.source.as_str()), target, kind, o.flags, data).map_err(fail)?,
        Some(dir) => mount_from(
            &dir,
            || mount(Some(m.source.as_str()), target, kind, o.flags, data).map_err(fail),
            target,
        )?,
    }
    // A read-only bind needs a remount: the first call ignores MS_RDONLY with MS_BIND.
    if o.flags.contains(MsFlags::MS_BIND) && o.flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            o.flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(fail)?;
    }
    if !o.propagation.is_empty() {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            o.propagation,
            None::<&str>,
        )
        .map_err(fail)?;
    }
    Ok(())
}

fn page_size() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as usize,
        _ => 4096,
    }
}

/// Runs `mount` with `dir` as its cwd, on a short-lived thread with a cwd of its own, so
/// relative lowerdirs resolve there while the rest of the shim's cwd never moves.
fn mount_from(dir: &Path, mount: impl FnOnce() -> Result<()> + Send, target: &Path) -> Result<()> {
    if !target.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "mount target {} must be absolute",
            target.display()
        )));
    }
    let io = |what: &str| {
        Error::io(format!(
            "{what} {} to mount {}",
            dir.display(),
            target.display()
        ))
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::sys::unshare_fs().map_err(io("unshare the filesystem context for"))?;
            std::env::set_current_dir(dir).map_err(io("chdir to"))?;
            mount()
        })
        .join()
        .unwrap_or_else(|_| Err(Error::io("mount thread")(std::io::Error::other("panicked"))))
    })
}

/// containerd's way round the page limit (`compactLowerdirOption`): the lowerdirs relative to
/// the parent of their longest common prefix (the snapshotter's `snapshots` directory), and
/// that directory. None when they have no such parent below `/`.
fn compact_lowerdirs(options: &[String]) -> Option<(std::path::PathBuf, Vec<String>)> {
    const LOWER: &str = "lowerdir=";
    let idx = options.iter().position(|o| o.starts_with(LOWER))?;
    let dirs: Vec<&str> = options[idx][LOWER.len()..].split(':').collect();
    if dirs.len() < 2 {
        return None;
    }
    let first = dirs[0].as_bytes();
    let prefix = dirs[1..].iter().fold(first.len(), |n, d| {
        first
            .iter()
            .zip(d.as_bytes())
            .take(n)
            .take_while(|(a, b)| a == b)
            .count()
    });
    // Back to a whole directory: the prefix may end inside a name (`snapshots/1` of 10 and 11).
    let common = &dirs[0][..first[..prefix].iter().rposition(|&b| b == b'/')?];
    if common.is_empty() || !common.starts_with('/') {
        return None;
    }
    let relative: Vec<&str> = dirs
        .iter()
        .map(|d| d.get(common.len() + 1..).filter(|r| !r.is_empty()))
        .collect::<Option<_>>()?;
    let mut compacted = options.to_vec();
    compacted[idx] = format!("{LOWER}{}", relative.join(":"));
    Some((common.into(), compacted))
}

/// Unmounts everything stacked on `target`. Idempotent: a path that is not a mount point (or
/// does not exist) is done.
pub fn unmount_all(target: &Path) {
    for _ in 0..64 {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return,
            Err(e) => {
                tracing::warn!(target = %target.display(), error = %e, "unmount failed");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> ParsedOptions {
        parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn overlay_options_go_to_data() {
        let o = opts(&[
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l1:/l2",
            "X-containerd.mkdir.path=/x",
        ]);
        assert_eq!(o.flags, MsFlags::empty());
        assert_eq!(o.data, "index=off,workdir=/w,upperdir=/u,lowerdir=/l1:/l2");
    }

    #[test]
    fn lowerdirs_compact_to_the_parent_of_their_common_prefix() {
        let v = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (dir, o) = compact_lowerdirs(&v(&[
            "upperdir=/s/u",
            "lowerdir=/s/snapshots/10/fs:/s/snapshots/11/fs",
        ]))
        .unwrap();
        assert_eq!(
            dir,
            Path::new("/s/snapshots"),
            "back from `snapshots/1` to a whole directory"
        );
        assert_eq!(o, v(&["upperdir=/s/u", "lowerdir=10/fs:11/fs"]));
        assert_eq!(
            compact_lowerdirs(&v(&["lowerdir=/a/x:/b/y"])),
            None,
            "nothing in common below /"
        );
        assert_eq!(
            compact_lowerdirs(&v(&["lowerdir=/s/a/fs"])),
            None,
            "one lowerdir"
        );
        assert_eq!(
            compact_lowerdirs(&v(&["lowerdir=/s/a:/s/a/b"])).unwrap().1,
            v(&["lowerdir=a:a/b"])
        );
        assert_eq!(
            compact_lowerdirs(&v(&["lowerdir=/s/:/s/a"])),
            None,
            "a lowerdir that is the common dir"
        );
        assert_eq!(
            compact_lowerdirs(&v(&["lowerdir=a/x:a/y"])),
            None,
            "relative already"
        );
        assert_eq!(compact_lowerdirs(&v(&["upperdir=/u"])), None);
    }

    #[test]
    fn flags_and_negations() {
        let o = opts(&["rbind", "ro", "nosuid", "rprivate"]);
        assert_eq!(
            o.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        );
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.data, "");
        assert_eq!(opts(&["ro", "rw"]).flags, MsFlags::empty());
    }

    #[test]
    fn id_mappings_parse_like_containerd_writes_them() {
        let r = |container, host, size| IdRange {
            container,
            host,
            size,
        };
        assert_eq!(
            parse_id_ranges("0:100000:65536"),
            Ok(vec![r(0, 100000, 65536)])
        );
        assert_eq!(
            parse_id_ranges("0:1000:1,1:100000:65535"),
            Ok(vec![r(0, 1000, 1), r(1, 100000, 65535)])
        );
        assert_eq!(
            parse_id_ranges("0:0:4294967295"),
            Ok(vec![r(0, 0, u32::MAX)]),
            "the whole id space"
        );
        let many: Vec<String> = (0..341).map(|i| format!("{i}:{}:1", 1000 + i)).collect();
        for bad in [
            "",
            "0:100000",
            "0:100000:65536:1",
            "a:1:1",
            "-1:0:1",
            "+1:0:1",
            " 0:1:1",
            "0:1:0",
            "0:4294967295:2",
            "4294967296:0:1",
            "0:100:10,5:200:10",
            "0:100:10,20:105:10",
            "0:1:1,",
            &many.join(","),
        ] {
            assert!(parse_id_ranges(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn idmap_options_are_consumed_never_mount_data() {
        let v = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let options = v(&["rbind", "uidmap=0:100000:65536", "gidmap=0:200000:65536"]);
        assert_eq!(parse_options(&options).data, "");
        let map = IdMapping::from_options(&options).unwrap().unwrap();
        assert_eq!(map.uid_map(), "0 100000 65536\n");
        assert_eq!(map.gid_map(), "0 200000 65536\n");
        assert_eq!(IdMapping::from_options(&v(&["rbind", "ro"])).unwrap(), None);
        for one_sided in [v(&["uidmap=0:1:1"]), v(&["gidmap=0:1:1"])] {
            assert!(matches!(
                IdMapping::from_options(&one_sided),
                Err(Error::InvalidArgument(_))
            ));
        }
        match IdMapping::from_options(&v(&["uidmap=0:1:1", "gidmap=0:x:1"])) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("gidmap=0:x:1"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn overlay_layers_are_idmapped_through_their_common_parent() {
        assert_eq!(
            common_parent(&["/s/snapshots/10/fs", "/s/snapshots/11/fs"]),
            Some("/s/snapshots")
        );
        assert_eq!(
            common_parent(&["/s/snapshots/1/fs"]),
            Some("/s/snapshots/1")
        );
        assert_eq!(common_parent(&["/s/a", "/s/a/b"]), Some("/s"));
        assert_eq!(common_parent(&["/s/l/a", "/s/l/b"]), Some("/s/l"));
        assert_eq!(common_parent(&["/a/x", "/b/y"]), None, "only / in common");
        assert_eq!(common_parent(&["a/x", "a/y"]), None, "relative");
        assert_eq!(common_parent(&[]), None);
    }
}
