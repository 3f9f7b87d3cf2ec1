//! OOM watchers: an eventfd on v1, the `memory.events` counter polled through kernfs on cgroup2.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;
use tokio::sync::mpsc;

use super::files::{absent, read_counter_at};
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
pub(super) fn watch_eventfd(dir: PathBuf) -> Result<mpsc::UnboundedReceiver<Option<u64>>> {
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
            // The eventfd says an OOM happened, not how many kills: no count.
            if tx.send(None).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// v2: one event per observed increase of the `key` counter (`oom_kill`) of `dir/file`
/// (`memory.events`), counted from its value when the watch begins.
///
/// No inotify (whose instances are limited per user, 128 by default, shared with everything
/// else running as root): kernfs files signal a change to pollers (`cgroup_file_notify` wakes
/// them with `POLLPRI | POLLERR`), so the file stays open and registered with the runtime's
/// epoll for `PRIORITY`, and each wake re-reads the counter through that descriptor, which
/// also re-arms it. A removed cgroup wakes nobody, so `cgroup.events` is watched the same way:
/// once it says the cgroup is empty (no process left to be killed) the directory is checked
/// on a timer backing off from 50 ms to 5 s until it is gone, or until it is populated again.
/// A failed read also ends the watch. Files that cannot be polled (anything but kernfs) are an
/// error. Public so the root tests can drive it on files every cgroup2 has.
pub fn watch_counter_file(
    dir: PathBuf,
    file: &'static str,
    key: &'static str,
) -> Result<mpsc::UnboundedReceiver<Option<u64>>> {
    let path = dir.join(file);
    let counter = fs::File::open(&path).map_err(|e| open_error(&dir, file, e))?;
    // Read before registering: a change after this read makes the registration itself report
    // the file ready, so nothing between the two is missed.
    let before = read_counter_at(&counter, key)
        .map_err(|e| open_error(&dir, file, e))?
        .unwrap_or(0);
    let counter = poll_priority(counter, &path)?;
    // Not read before registering: a descriptor that has not read the file yet polls as
    // changed, so the task's first wake reads `populated` as it is now.
    let events_path = dir.join("cgroup.events");
    let events = match fs::File::open(&events_path)
        .map_err(|e| open_error(&dir, "cgroup.events", e))
        .and_then(|f| poll_priority(f, &events_path))
    {
        Ok(events) => Some(events),
        Err(e) => {
            // OOM kills are still reported; only the end of the watch waits for the receiver to
            // be dropped (the container's delete).
            tracing::warn!(cgroup = %dir.display(), error = %e, "cannot watch for the cgroup's removal");
            None
        }
    };

    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut last = before;
        // Set while the cgroup is empty: the delay before looking for its removal again.
        let mut removal_check: Option<Duration> = None;
        let stopped = |e: &dyn std::fmt::Display| {
            tracing::warn!(cgroup = %dir.display(), error = %e, "OOM watcher stopped");
        };
        loop {
            let gone = tokio::select! {
                _ = tx.closed() => return,
                ready = counter.ready(Interest::PRIORITY) => {
                    let mut guard = match ready {
                        Ok(guard) => guard,
                        Err(e) => return stopped(&e),
                    };
                    let now = read_counter_at(counter.get_ref(), key);
                    guard.clear_ready();
                    match now {
                        Ok(now) => {
                            let now = now.unwrap_or(0);
                            if now > last {
                                last = now;
                                if tx.send(Some(now)).is_err() {
                                    return;
                                }
                            }
                            false
                        }
                        // ENODEV: the cgroup is gone.
                        Err(_) => true,
                    }
                }
                ready = priority_ready(events.as_ref()) => {
                    let mut guard = match ready {
                        Ok(guard) => guard,
                        Err(e) => return stopped(&e),
                    };
                    let populated = read_counter_at(guard.get_inner(), "populated");
                    guard.clear_ready();
                    match populated {
                        Ok(Some(0)) => {
                            // The cgroup just emptied. Under runc's systemd driver systemd
                            // removes it as soon as it sees this same change, and the kernel
                            // may still be holding back (up to 10 ms) the counter's own
                            // notification of the kill that emptied it: read it now, while
                            // the cgroup is most likely still there.
                            if let Ok(Some(now)) = read_counter_at(counter.get_ref(), key) {
                                if now > last {
                                    last = now;
                                    if tx.send(Some(now)).is_err() {
                                        return;
                                    }
                                }
                            }
                            removal_check.get_or_insert(REMOVAL_CHECK_FIRST);
                            false
                        }
                        Ok(_) => {
                            removal_check = None;
                            false
                        }
                        Err(_) => true,
                    }
                }
                _ = sleep_opt(removal_check) => {
                    removal_check = removal_check.map(|d| (d * 2).min(REMOVAL_CHECK_MAX));
                    !dir.is_dir()
                }
            };
            if gone {
                // A kill just before removal must not be lost: one last read, if still possible.
                match read_counter_at(counter.get_ref(), key) {
                    Ok(Some(now)) if now > last => {
                        let _ = tx.send(Some(now));
                    }
                    Ok(_) => {}
                    // Removed before it could be read (systemd removes an emptied scope's
                    // cgroup itself): a kill since the last read would be lost here.
                    Err(e) => {
                        tracing::debug!(cgroup = %dir.display(), error = %e, last, "cgroup removed before its last {key} read")
                    }
                }
                return;
            }
        }
    });
    Ok(rx)
}

const REMOVAL_CHECK_FIRST: Duration = Duration::from_millis(50);
const REMOVAL_CHECK_MAX: Duration = Duration::from_secs(5);

/// Registers a kernfs file with the runtime's epoll for `POLLPRI`, its change notification.
fn poll_priority(file: fs::File, path: &Path) -> Result<AsyncFd<fs::File>> {
    crate::sys::async_file(file, Interest::PRIORITY)
        .map_err(Error::io(format!("poll {} for changes", path.display())))
}

/// The next change of `fd`, or never without one.
async fn priority_ready(
    fd: Option<&AsyncFd<fs::File>>,
) -> io::Result<AsyncFdReadyGuard<'_, fs::File>> {
    match fd {
        Some(fd) => fd.ready(Interest::PRIORITY).await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(delay: Option<Duration>) {
    match delay {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::testdata::*;

    /// Only kernfs files can be polled for changes (on others epoll refuses the descriptor):
    /// a `memory.events` anywhere else is a clear error, not a watch that never fires. The
    /// watcher itself is proved on a real cgroup2 in `tests/root_cgroups.rs`.
    #[tokio::test]
    async fn a_counter_file_that_cannot_be_polled_is_an_error() {
        let (_root, cg) = events_tree();
        match cg.watch_oom() {
            Err(Error::Io { context, .. }) => {
                assert!(context.contains("memory.events"), "{context}")
            }
            other => panic!("expected an Io error, got {other:?}"),
        }
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
