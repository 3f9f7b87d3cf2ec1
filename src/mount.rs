//! Mounting the rootfs mounts of a `Create` onto `<bundle>/rootfs`, and taking them down.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// One mount as containerd sends it (`containerd.types.Mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
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
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            if i > 0 {
                unmount_all(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let mut o = parse_options(&m.options);
    let fail = |e: Errno| Error::Io {
        context: format!("mount {} ({}) on {}", m.source, m.kind, target.display()),
        source: e.into(),
    };
    // mount(2) copies one page of data and cuts the rest (the last byte is its NUL).
    let page = page_size();
    let mut from_dir = None;
    if m.kind == "overlay" && o.data.len() >= page {
        if let Some((dir, options)) = compact_lowerdirs(&m.options) {
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
}
