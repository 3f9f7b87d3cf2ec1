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
            p @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable") => {
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
            x if x.starts_with("X-containerd.") => continue,
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags |= set;
        flags &= !clear;
    }
    ParsedOptions { flags, propagation, data: data.join(",") }
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
    let o = parse_options(&m.options);
    let fail = |e: Errno| Error::Io {
        context: format!("mount {} ({}) on {}", m.source, m.kind, target.display()),
        source: e.into(),
    };
    let data = (!o.data.is_empty()).then_some(o.data.as_str());
    let kind = (!m.kind.is_empty()).then_some(m.kind.as_str());
    mount(Some(m.source.as_str()), target, kind, o.flags, data).map_err(fail)?;
    // A read-only bind needs a remount: the first call ignores MS_RDONLY with MS_BIND.
    if o.flags.contains(MsFlags::MS_BIND) && o.flags.contains(MsFlags::MS_RDONLY) {
        mount(None::<&str>, target, None::<&str>, o.flags | MsFlags::MS_REMOUNT, None::<&str>).map_err(fail)?;
    }
    if !o.propagation.is_empty() {
        mount(None::<&str>, target, None::<&str>, o.propagation, None::<&str>).map_err(fail)?;
    }
    Ok(())
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
        let o = opts(&["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2", "X-containerd.mkdir.path=/x"]);
        assert_eq!(o.flags, MsFlags::empty());
        assert_eq!(o.data, "index=off,workdir=/w,upperdir=/u,lowerdir=/l1:/l2");
    }

    #[test]
    fn flags_and_negations() {
        let o = opts(&["rbind", "ro", "nosuid", "rprivate"]);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.data, "");
        assert_eq!(opts(&["ro", "rw"]).flags, MsFlags::empty());
    }
}
