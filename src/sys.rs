//! The raw OS calls that need `unsafe`, each small and explained. Everything else in the crate
//! uses safe wrappers (std, nix, tokio).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes this process the reaper of orphaned descendants (the container's processes once runc
/// exits), so their exit statuses reach our `waitpid(-1)` loop.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Gives this process (every thread of it) a new core-scheduling cookie, which the processes it
/// forks inherit: runc, and through it the containers. `SCHED_CORE` (containerd's
/// `sched_core`). Fails with EINVAL on a kernel without `CONFIG_SCHED_CORE` and ENODEV on a
/// machine without SMT.
pub fn sched_core_create() -> io::Result<()> {
    // SAFETY: PR_SCHED_CORE_CREATE takes plain integers (pid 0 = this process, the scope) and
    // touches no memory of ours.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SCHED_CORE,
            libc::PR_SCHED_CORE_CREATE,
            0,
            libc::PR_SCHED_CORE_SCOPE_THREAD_GROUP,
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The core-scheduling cookie of process `pid` (0 when it has none), for tests and diagnosis.
pub fn sched_core_cookie(pid: i32) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    // SAFETY: PR_SCHED_CORE_GET writes one u64 to the address given, which is `cookie`, alive
    // and writable for the whole call.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SCHED_CORE,
            libc::PR_SCHED_CORE_GET,
            pid,
            libc::PR_SCHED_CORE_SCOPE_THREAD,
            &mut cookie as *mut u64,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Keeps every thread's allocations in glibc's main arena. The server is single-threaded but
/// for the short-lived cgroup attach primer; a per-thread arena would keep ~70 kB resident for
/// the rest of the shim's life.
pub fn single_malloc_arena() {
    // SAFETY: mallopt takes two integers; called before any second thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Closes every descriptor from `first` up, so the server holds nothing it inherited by
/// accident (containerd's environment can leak descriptors into `start`).
///
/// # Safety
///
/// No descriptor at or above `first` may be owned by anything in this process (an `OwnedFd`,
/// a `File`, the runtime's epoll): call it first thing at startup, before any of those exist.
pub(crate) unsafe fn close_fds_from(first: RawFd) {
    // SAFETY: the caller guarantees nothing owns a descriptor at or above `first`.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        ) != 0
        {
            // Kernels before 5.9: walk the table.
            for fd in first..1024 {
                libc::close(fd);
            }
        }
    }
}

/// Takes ownership of an inherited descriptor (the listener the `start` action passed on fd 3).
///
/// Fails unless `fd` is open, so a server started by hand without it gets a clear error.
/// Marks it close-on-exec: it was inheritable only to cross our own exec, and a runc or logger
/// holding the listener would keep a dead server's socket connectable.
///
/// # Safety
///
/// `fd` must not be owned by anything else in this process, and must be taken only once: it
/// was inherited across exec for exactly this purpose.
pub(crate) unsafe fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_SETFD) only changes the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (fcntl succeeded) and the caller guarantees nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `signal` to `pid` (an exec process). A gone process is NotFound, an unknown signal
/// InvalidArgument.
pub fn signal(pid: i32, signal: u32) -> crate::error::Result<()> {
    let sig = signal_number(signal)?;
    // SAFETY: kill(2) takes plain integers.
    let rc = unsafe { libc::kill(pid, sig) };
    signal_result(rc as libc::c_long, || format!("kill {pid}"))
}

/// A signal number the kernel accepts, or InvalidArgument.
fn signal_number(signal: u32) -> crate::error::Result<i32> {
    i32::try_from(signal)
        .ok()
        .filter(|s| (1..=64).contains(s))
        .ok_or_else(|| crate::error::Error::InvalidArgument(format!("invalid signal {signal}")))
}

/// The outcome of a signalling call: a process that is gone is NotFound.
fn signal_result(rc: libc::c_long, context: impl FnOnce() -> String) -> crate::error::Result<()> {
    use crate::error::Error;
    if rc == 0 {
        return Ok(());
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::ESRCH) => {
            Err(Error::NotFound("process already finished".into()))
        }
        e => Err(Error::Io {
            context: context(),
            source: e,
        }),
    }
}

/// Receives one descriptor sent with SCM_RIGHTS on `sock` (runc's console socket sends the
/// pty master), close-on-exec. Any further descriptors in the message are closed.
pub fn recv_fd(sock: RawFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let mut data = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut data)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                for &extra in &fds[1..] {
                    drop(own_fd(extra));
                }
                return Ok(own_fd(fd));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no descriptor in the console socket message",
    ))
}

/// Owns a descriptor the kernel just handed us in an SCM_RIGHTS message.
fn own_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the descriptor was just created in this process by recvmsg and nothing else
    // refers to it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Registers an owned descriptor with the tokio reactor.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of `fd`; nothing else closes or replaces it while it
    // is registered.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(Into::into)
}

/// Registers an open file with the tokio reactor for `interest` only (e.g. `PRIORITY`, a
/// kernfs file's change notification).
pub fn async_file(
    file: std::fs::File,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<std::fs::File>> {
    // SAFETY: the AsyncFd takes ownership of `file`, whose descriptor stays open and unchanged
    // until the AsyncFd is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(file, interest) }.map_err(Into::into)
}

/// Sets a terminal's window size (TIOCSWINSZ).
pub fn set_window_size(tty: &impl AsRawFd, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct, which lives for the call.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Arranges for the child to find `fds[i].0` at descriptor `fds[i].1` (binary loggers get
/// their pipes on fds 3, 4 and 5).
pub fn map_fds(cmd: &mut Command, fds: Vec<(RawFd, RawFd)>) {
    // SAFETY: between fork and exec only fcntl and dup2 are called, on descriptors that are
    // open in the child; no allocation (the vector was built before fork).
    unsafe {
        cmd.pre_exec(move || {
            // First move every source above the targets, so a source that sits on another's
            // target number is not clobbered before it is used.
            let mut moved = [0 as RawFd; 8];
            for (i, &(src, _)) in fds.iter().enumerate().take(8) {
                let fd = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 64);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved[i] = fd;
            }
            for (i, &(_, target)) in fds.iter().enumerate().take(8) {
                // dup2 clears FD_CLOEXEC on the target, so it survives exec.
                if libc::dup2(moved[i], target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A pidfd for `pid` (Linux 5.3+): a handle on that very process, which a recycled pid can
/// never alias.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process behind a pidfd. A process that has exited is NotFound, even if
/// its pid now belongs to someone else.
pub fn pidfd_signal(pidfd: &OwnedFd, signal: u32) -> crate::error::Result<()> {
    let sig = signal_number(signal)?;
    // SAFETY: pidfd_send_signal with a null siginfo and no flags reads no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    signal_result(rc, || "pidfd_send_signal".into())
}

/// True once the process behind a pidfd has exited (its pidfd polls readable, and stays so
/// after it was reaped).
pub fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd, which lives for the call; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

/// Moves up to `len` bytes from the pipe `from` to the pipe or FIFO `to` inside the kernel
/// (splice(2), non-blocking): no copy through our memory. `Ok(0)` is EOF on `from`; a full
/// `to` (or an empty `from`) is `WouldBlock`.
pub fn splice(from: &impl AsRawFd, to: &impl AsRawFd, len: usize) -> io::Result<usize> {
    let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
    // SAFETY: null offsets (both ends are pipes); the kernel touches no memory of ours.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Splices up to `len` bytes from a pipe into a regular file at `offset`; the file's own
/// position is neither used nor moved. Non-blocking on the pipe side.
pub fn splice_to_file(
    from: &impl AsRawFd,
    to: &impl AsRawFd,
    offset: u64,
    len: usize,
) -> io::Result<usize> {
    let mut off = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: `off` is a live local the kernel reads and updates for the call; the input
    // offset is null because `from` is a pipe.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            &mut off,
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Bytes sitting unread in a pipe or FIFO (FIONREAD).
pub fn unread_bytes(fd: &impl AsRawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int, which lives for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

/// A one-shot monotonic timer with microsecond resolution (a timerfd), for sleeps shorter than
/// tokio's millisecond timer wheel can express.
pub struct Timer(tokio::io::unix::AsyncFd<TimerFd>);

/// The timerfd inside a [`Timer`]; `AsRawFd` for tokio's registration.
struct TimerFd(nix::sys::timerfd::TimerFd);

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl Timer {
    /// Must be called inside the tokio runtime.
    pub fn new() -> io::Result<Timer> {
        use nix::sys::timerfd::{ClockId, TimerFlags};
        let fd = nix::sys::timerfd::TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the AsyncFd owns the timerfd for its whole life and `as_raw_fd` always
        // returns that one descriptor, which is closed only when the AsyncFd drops it.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                TimerFd(fd),
                tokio::io::Interest::READABLE,
            )
        };
        registered.map(Timer).map_err(|e| e.into_parts().1)
    }

    /// Sleeps for `d` (which must not be zero).
    pub async fn sleep(&self, d: std::time::Duration) -> io::Result<()> {
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        let t = &self.0.get_ref().0;
        t.set(
            Expiration::OneShot(nix::sys::time::TimeSpec::from_duration(d)),
            TimerSetTimeFlags::empty(),
        )?;
        loop {
            let mut guard = self.0.readable().await?;
            // Reading the expiry count re-arms readiness; before expiry it would block.
            if let Ok(result) = guard.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                return result;
            }
        }
    }
}

/// Points `target` (e.g. stderr) at `fd`.
pub fn dup_onto(fd: &impl AsRawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on two descriptors; `fd` is borrowed and stays open for the call.
    if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Arranges for the spawned server to start a new session (detached from containerd's process
/// group and terminal) with `listener` on fd 3.
pub fn detach_with_listener(cmd: &mut Command, listener: RawFd) {
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (setsid, dup2, fcntl) with no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if listener == 3 {
                // dup2 onto itself keeps FD_CLOEXEC; clear it so fd 3 survives exec.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(listener, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Gives the calling thread its own filesystem context (cwd, root, umask), so it can `chdir`
/// without moving the rest of the process. Call it only on a thread that ends afterwards.
pub fn unshare_fs() -> io::Result<()> {
    // SAFETY: unshare takes a flag word and touches no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_FS) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A new user namespace whose `uid_map` and `gid_map` are the given texts (lines of
/// `<inside> <outside> <count>`), as a descriptor of it: what `mount_setattr` needs to idmap a
/// mount. Done as containerd does: a child is cloned into a new user namespace, the maps are
/// written from here, and `/proc/<child>/ns/user` is opened; the descriptor keeps the namespace
/// alive after the child is gone.
///
/// The child is a `clone` with no exit signal, so the reaper's `waitpid(-1)` (without
/// `__WALL`) never sees it: it is reaped here through its pidfd, and being unreaped until then
/// its pid cannot be recycled while `/proc/<pid>` is used. It only blocks reading a pipe; this
/// function kills it when done, and it exits on its own if this process dies first.
pub fn new_userns(uid_map: &str, gid_map: &str) -> io::Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let mut pidfd: libc::c_int = -1;
    let flags = (libc::CLONE_NEWUSER | libc::CLONE_PIDFD) as libc::c_ulong;
    // SAFETY: without CLONE_VM and with a null stack, clone is fork: the child runs on a
    // copy-on-write copy of this thread's stack and memory. The child calls only close, read
    // and _exit (raw, async-signal-safe) and never returns from this block. In the parent the
    // kernel writes the pidfd into `pidfd`, a live local.
    let pid = unsafe {
        let pid = libc::syscall(
            libc::SYS_clone,
            flags,
            0usize,
            &mut pidfd as *mut libc::c_int,
            0usize,
            0usize,
        );
        if pid == 0 {
            libc::close(w.as_raw_fd());
            let mut byte = 0u8;
            libc::read(r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
        pid
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CLONE_PIDFD made the kernel create this descriptor for us; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    drop(r);
    let ns = (|| {
        std::fs::write(format!("/proc/{pid}/uid_map"), uid_map)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), gid_map)?;
        std::fs::File::open(format!("/proc/{pid}/ns/user")).map(OwnedFd::from)
    })();
    // The child would read end-of-file and exit, but another thread's child forked at the same
    // moment holds a copy of our write end until it exits too (fds are inherited whatever
    // CLOEXEC says, and neither child execs), so two concurrent calls could wait on each other
    // forever: end ours with SIGKILL through its pidfd. The pipe stays for the case where this
    // process dies first: then every write end is gone and the child exits on its own.
    drop(w);
    if let Err(e) = pidfd_signal(&pidfd, libc::SIGKILL as u32) {
        tracing::debug!(error = %e, "SIGKILL of the user namespace helper");
    }
    loop {
        // SAFETY: siginfo_t is plain data the kernel fills; zeroed is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child through its pidfd; `info` outlives the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::__WALL,
            )
        };
        if rc == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    ns
}

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0) of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
/// `MOUNT_ATTR_RDONLY`, for [`idmapped_mount`]'s `extra`.
pub const MOUNT_ATTR_RDONLY: u64 = 1;

/// Mounts a copy of the mount at `source` on `target`, its files' owners mapped through the
/// user namespace `userns` (and `extra` mount attributes set): `open_tree(OPEN_TREE_CLONE)`,
/// `mount_setattr(MOUNT_ATTR_IDMAP)`, `move_mount`. Only the mount at `source` is copied, not
/// the mounts below it, as containerd does. Source and target may be the same path: the
/// idmapped copy then stacks on the original.
pub fn idmapped_mount(
    source: &std::path::Path,
    target: &std::path::Path,
    userns: std::os::fd::BorrowedFd<'_>,
    extra: u64,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = |p: &std::path::Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))
    };
    let (source, target) = (path(source)?, path(target)?);
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: `source` is a NUL-terminated path that outlives the call; open_tree returns a
    // new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, source.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree just created this descriptor for us; nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | extra,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a valid mount_attr of the size passed, the empty path is a static
    // NUL-terminated string, and both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the paths are NUL-terminated and outlive the call; `tree` is a detached mount
    // we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// ---- Upgrade in place (src/upgrade): descriptors that cross an exec, and the exec itself.

/// An anonymous in-memory file (close-on-exec) for the upgrade's state.
pub fn memfd(name: &str) -> io::Result<std::fs::File> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: memfd_create takes a NUL-terminated name that lives for the call and returns a
    // new descriptor that nothing else owns.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Sets or clears FD_CLOEXEC on `fd`: cleared only on the descriptors an upgrade hands to the
/// next image, and set again if that exec fails.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFD) only changes the descriptor's flags; an fd that is not open is
    // an error (EBADF), not undefined behaviour.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A close-on-exec duplicate of `fd`, for a descriptor a task still owns: an upgrade clears
/// the flag on exactly the duplicates it hands over, just before its exec.
pub fn dup_cloexec(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a borrowed descriptor returns a new one (or fails, EBADF).
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(new)
}

/// Whether `fd` is an open descriptor.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed fd is EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Closes a descriptor nothing owns: an undone upgrade's duplicates, or one a new image found
/// open but not named by the state it took over.
pub fn close_raw(fd: RawFd) {
    // SAFETY: callers pass a duplicate made by `dup_cloexec`, or a descriptor inherited across
    // exec that no object of this image owns (checked before any is adopted).
    unsafe { libc::close(fd) };
}

/// Takes ownership of a descriptor inherited across an upgrade's exec (see
/// `take_inherited_fd`); the number comes from the validated state.
pub fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: the upgrade state names each inherited descriptor once, and only the import of
    // that state adopts it, so no other owner exists.
    unsafe { take_inherited_fd(fd) }
}

/// Replaces the process image with `exe` (a path, or an open executable when `path` is None)
/// keeping the pid and every descriptor without FD_CLOEXEC. Returns only on failure.
pub fn exec_image(
    path: Option<&std::path::Path>,
    exe_fd: RawFd,
    args: &[std::ffi::CString],
    env: &[std::ffi::CString],
) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    match path {
        Some(path) => {
            let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
                return io::Error::other("path has a NUL byte");
            };
            // SAFETY: every pointer is to a NUL-terminated string kept alive by `args`, `env`
            // or `c` for the call, and both arrays end with a null pointer.
            unsafe { libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        }
        None => {
            // SAFETY: as above; execveat with AT_EMPTY_PATH runs the open file `exe_fd` itself
            // (fexecve without needing /proc).
            unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    exe_fd,
                    c"".as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
        }
    }
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pidfd_never_signals_a_process_that_is_gone() {
        let mut child = Command::new("sleep").arg("100").spawn().unwrap();
        let pidfd = pidfd_open(child.id() as i32).unwrap();
        assert!(!pidfd_exited(&pidfd));
        pidfd_signal(&pidfd, 0).map(drop).unwrap_or_else(|e| {
            assert!(
                matches!(e, crate::error::Error::InvalidArgument(_)),
                "{e:?}"
            )
        });
        pidfd_signal(&pidfd, libc::SIGKILL as u32).unwrap();
        child.wait().unwrap();
        assert!(
            pidfd_exited(&pidfd),
            "a reaped process's pidfd reads as exited"
        );
        // Reaped: its pid may be anyone's now, but the pidfd still names the dead process.
        assert!(matches!(
            pidfd_signal(&pidfd, libc::SIGKILL as u32),
            Err(crate::error::Error::NotFound(_))
        ));
        assert!(matches!(
            pidfd_signal(&pidfd, 999),
            Err(crate::error::Error::InvalidArgument(_))
        ));
    }
}
