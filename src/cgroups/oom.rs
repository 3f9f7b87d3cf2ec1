//! OOM watchers: an eventfd on v1, the `memory.events` counter on cgroup2.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;

use super::files::{absent, read_counter};
use crate::error::{Error, Result};

/// Maps a failure to open a file of cgroup `dir`: the cgroup is gone (NotFound), or the file is
/// missing because the controller is not enabled (Unimplemented).
fn open_error(dir: &Path, file: &str, e: io::Error) -> Error {
    if !absent(&e) {
        return Error::Io {
            context: format!("open {}", dir.join(file).display()),
            source: e,
        };
    }
    if dir.is_dir() {
        Error::Unimplemented(format!(
            "{} has no {file}: memory controller not enabled or not supported",
            dir.display()
        ))
    } else {
        Error::NotFound(format!("cgroup {} no longer exists", dir.display()))
    }
}

/// v1: an eventfd registered for `memory.oom_control` notifications via `cgroup.event_control`.
/// The kernel also signals it once when the cgroup is removed, which is told apart by the
/// directory being gone.
pub(super) fn watch_eventfd(dir: PathBuf) -> Result<mpsc::UnboundedReceiver<()>> {
    let control = fs::File::open(dir.join("memory.oom_control"))
        .map_err(|e| open_error(&dir, "memory.oom_control", e))?;
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(Error::os("eventfd"))?;
    let registration = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
    fs::write(dir.join("cgroup.event_control"), registration)
        .map_err(|e| open_error(&dir, "cgroup.event_control", e))?;
    // The kernel keeps its own reference to memory.oom_control.
    drop(control);
    let efd = crate::sys::async_fd(OwnedFd::from(efd)).map_err(Error::io("register eventfd"))?;

    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut counter = [0u8; 8];
        loop {
            let ready = tokio::select! {
                _ = tx.closed() => return,
                ready = efd.readable() => ready,
            };
            let mut guard = match ready {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "OOM watcher stopped");
                    return;
                }
            };
            match guard.try_io(|fd| {
                nix::unistd::read(fd.as_raw_fd(), &mut counter).map_err(io::Error::from)
            }) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "OOM watcher stopped");
                    return;
                }
                Err(_would_block) => continue,
            }
            if !dir.exists() {
                return;
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// v2: inotify on `dir/file` (`memory.events`), one event per observed increase of its `key`
/// counter (`oom_kill`).
///
/// kernfs sends nothing to watches on the files of a removed cgroup, so removal is seen as an
/// `IN_DELETE` of `dir` on its parent; `IN_IGNORED` / `IN_DELETE_SELF` on the file itself (what
/// other filesystems send) and a failed read also end the watch.
pub fn watch_counter_file(
    dir: PathBuf,
    file: &'static str,
    key: &'static str,
) -> Result<mpsc::UnboundedReceiver<()>> {
    let path = dir.join(file);
    let before = read_counter(&path, key)
        .map_err(|e| open_error(&dir, file, e))?
        .unwrap_or(0);
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(Error::os("inotify_init"))?;
    let file_watch = inotify
        .add_watch(
            &path,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE_SELF,
        )
        .map_err(Error::os(format!("inotify watch {}", path.display())))?;
    let name: Option<OsString> = dir.file_name().map(Into::into);
    // Without it OOM kills are still reported; only the end of the watch waits for the receiver
    // to be dropped.
    let parent_watch = match (dir.parent(), &name) {
        (Some(parent), Some(_)) => {
            match inotify.add_watch(parent, AddWatchFlags::IN_DELETE | AddWatchFlags::IN_ONLYDIR) {
                Ok(watch) => Some(watch),
                Err(e) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "cannot watch for the cgroup's removal");
                    None
                }
            }
        }
        _ => None,
    };
    // Readiness comes through a second descriptor of the same inotify instance; reads go through
    // `inotify`, which parses the events.
    let ready_fd = inotify
        .as_fd()
        .try_clone_to_owned()
        .map_err(Error::io("dup inotify descriptor"))?;
    let ready_fd =
        crate::sys::async_fd(ready_fd).map_err(Error::io("register inotify descriptor"))?;

    let (tx, rx) = mpsc::unbounded_channel();
    // A kill between the first read and add_watch made no inotify event: look again now.
    let mut last = before;
    if let Ok(Some(now)) = read_counter(&path, key) {
        if now > before {
            last = now;
            let _ = tx.send(());
        }
    }
    tokio::spawn(async move {
        loop {
            let ready = tokio::select! {
                _ = tx.closed() => return,
                ready = ready_fd.readable() => ready,
            };
            let mut guard = match ready {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "OOM watcher stopped");
                    return;
                }
            };
            let events = match guard.try_io(|_| inotify.read_events().map_err(io::Error::from)) {
                Ok(Ok(events)) => events,
                Ok(Err(e)) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "OOM watcher stopped");
                    return;
                }
                Err(_would_block) => continue,
            };
            let (mut changed, mut gone) = (false, false);
            for event in &events {
                if event.wd == file_watch {
                    if event
                        .mask
                        .intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF)
                    {
                        gone = true;
                    } else {
                        changed = true;
                    }
                } else if Some(event.wd) == parent_watch {
                    gone |= event.mask.contains(AddWatchFlags::IN_DELETE) && event.name == name;
                } else if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    changed = true;
                }
            }
            if !(changed || gone) {
                continue;
            }
            // Read even when gone: a kill just before removal must not be lost.
            match read_counter(&path, key) {
                Ok(now) => {
                    let now = now.unwrap_or(0);
                    if now > last {
                        last = now;
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                }
                Err(_) => gone = true,
            }
            if gone {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;

    use super::*;
    use crate::cgroups::testdata::*;

    async fn next_event(
        rx: &mut mpsc::UnboundedReceiver<()>,
        within: Duration,
    ) -> Option<Option<()>> {
        timeout(within, rx.recv()).await.ok()
    }

    #[tokio::test]
    async fn v2_watcher_reports_oom_kill_increases_until_the_cgroup_goes() {
        let (_root, cg) = events_tree();
        let file = cg.dir("memory").unwrap().join("memory.events");
        let mut rx = cg.watch_oom().unwrap();
        // Rewritten in place like the kernel does (a rename would leave the watch on the old inode).
        write(&file, &events(4, 0));
        assert_eq!(
            next_event(&mut rx, Duration::from_millis(300)).await,
            None,
            "other counters are not OOM kills"
        );
        write(&file, &events(4, 1));
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(5)).await,
            Some(Some(()))
        );
        write(&file, &events(9, 3));
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(5)).await,
            Some(Some(()))
        );
        assert_eq!(
            next_event(&mut rx, Duration::from_millis(300)).await,
            None,
            "one event per observed increase"
        );
        assert_eq!(cg.oom_kill_count(), Some(3));
        fs::remove_dir_all(cg.dir("memory").unwrap()).unwrap();
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(5)).await,
            Some(None),
            "the watch ends with the cgroup"
        );
    }

    #[tokio::test]
    async fn v2_watcher_counts_from_the_value_at_start() {
        let (_root, cg) = events_tree();
        let file = cg.dir("memory").unwrap().join("memory.events");
        write(&file, &events(0, 5));
        let mut rx = cg.watch_oom().unwrap();
        write(&file, &events(1, 5));
        assert_eq!(next_event(&mut rx, Duration::from_millis(300)).await, None);
        write(&file, &events(1, 6));
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(5)).await,
            Some(Some(()))
        );
        // Deleting just the file (IN_DELETE_SELF / IN_IGNORED) ends it too.
        fs::remove_file(&file).unwrap();
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(5)).await,
            Some(None)
        );
    }

    #[tokio::test]
    async fn watch_oom_needs_a_memory_controller_and_a_live_cgroup() {
        let (_root, cg) = events_tree();
        let dir = cg.dir("memory").unwrap();
        fs::remove_file(dir.join("memory.events")).unwrap();
        assert!(matches!(cg.watch_oom(), Err(Error::Unimplemented(_))));
        fs::remove_dir(dir).unwrap();
        assert!(matches!(cg.watch_oom(), Err(Error::NotFound(_))));
    }

    #[test]
    fn watch_oom_outside_a_runtime_is_an_error() {
        let (_root, cg) = events_tree();
        assert!(matches!(cg.watch_oom(), Err(Error::FailedPrecondition(_))));
    }
}
