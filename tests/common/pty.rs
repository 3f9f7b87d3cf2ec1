//! A command on a pseudo-terminal of the test's own: what `ctr ... -t` needs as its console.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::wait_until;

/// How a test's reader takes output: at most `rate` bytes a second (`None`: as fast as it
/// can), and once it has `pause_at` bytes, nothing at all for `pause`. A slow client, or one
/// that looks away for a while.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pace {
    pub rate: Option<u64>,
    pub pause_at: Option<usize>,
    pub pause: Duration,
}

impl Pace {
    /// Called after each read with the bytes read so far: sleeps as the pace asks.
    pub fn keep(&self, started: Instant, total: usize, paused: &mut bool) {
        let mut offset = Duration::ZERO;
        if let Some(at) = self.pause_at {
            if total >= at {
                if !*paused {
                    *paused = true;
                    thread::sleep(self.pause);
                }
                offset = self.pause;
            }
        }
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(total as f64 / rate as f64) + offset;
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
        }
    }
}

/// A command running on a fresh pseudo-terminal as its controlling terminal (session leader,
/// stdin/stdout/stderr = the pty slave). The test holds the master: it reads everything the
/// command writes and can change the window size (the kernel then sends SIGWINCH).
pub struct PtyChild {
    child: Child,
    what: String,
    master: Arc<File>,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

pub fn set_winsize(fd: i32, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `fd` is an open terminal fd and `ws` a valid winsize for the duration of the call.
    let r = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ as _, &ws) };
    assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
}

impl PtyChild {
    pub fn spawn(cmd: Command, rows: u16, cols: u16) -> PtyChild {
        PtyChild::spawn_reading(cmd, rows, cols, None)
    }

    /// [`PtyChild::spawn`] on a raw terminal whose reader keeps `pace`: a byte-exact,
    /// possibly slow, client.
    pub fn spawn_reading(mut cmd: Command, rows: u16, cols: u16, pace: Option<Pace>) -> PtyChild {
        let what = format!("{cmd:?}");
        // SAFETY: plain libc calls on a fd we own; results are checked.
        let master_fd =
            unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(
            master_fd >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: master_fd is a freshly opened fd owned by nobody else.
        let master = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(master_fd) };
        // SAFETY: as above; `name` is large enough and NUL-terminated by ptsname_r.
        let slave_path = unsafe {
            assert_eq!(libc::grantpt(master_fd), 0, "grantpt");
            assert_eq!(libc::unlockpt(master_fd), 0, "unlockpt");
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(
                libc::ptsname_r(master_fd, name.as_mut_ptr(), name.len()),
                0,
                "ptsname_r"
            );
            std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&slave_path)
            .unwrap_or_else(|e| panic!("open {slave_path}: {e}"));
        set_winsize(master.as_raw_fd(), rows, cols);
        if pace.is_some() {
            // A byte-exact reader: the terminal passes output as it is (no `\n` -> `\r\n`), even
            // after the command restored its own settings.
            let mut t = nix::sys::termios::tcgetattr(&slave).expect("tcgetattr");
            nix::sys::termios::cfmakeraw(&mut t);
            nix::sys::termios::tcsetattr(&slave, nix::sys::termios::SetArg::TCSANOW, &t)
                .expect("tcsetattr");
        }
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup slave")))
            .stdout(Stdio::from(slave.try_clone().expect("dup slave")))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        // Our copies of the slave are gone with `cmd`: the master reads EIO once the child
        // (and anything it passed the slave to) has closed it.
        drop(cmd);
        let master = Arc::new(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (m, sink) = (Arc::clone(&master), Arc::clone(&output));
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let started = Instant::now();
            let mut total = 0usize;
            let mut paused = false;
            loop {
                let n = match (&*m).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
                total += n;
                if let Some(pace) = &pace {
                    pace.keep(started, total, &mut paused);
                }
            }
        });
        PtyChild {
            child,
            what,
            master,
            output,
            reader: Some(reader),
        }
    }

    /// Kills the command and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sets the window size of the terminal the command runs on (it gets SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        set_winsize(self.master.as_raw_fd(), rows, cols);
    }

    /// Everything read so far, byte for byte.
    pub fn bytes(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// Everything read so far, with the terminals' `\r`s removed.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).replace('\r', "")
    }

    /// Waits (bounded) until the output contains `needle`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let mut exited = None;
        let ok = wait_until(timeout, || {
            if self.text().contains(needle) {
                return true;
            }
            exited = exited.or_else(|| self.child.try_wait().ok().flatten());
            exited.is_some() && {
                // Give the reader a moment to drain what is left, then decide.
                thread::sleep(Duration::from_millis(200));
                true
            }
        });
        let how = match exited {
            Some(status) => format!("exited ({status}) without printing {needle:?}"),
            None => format!("did not print {needle:?} within {timeout:?}"),
        };
        assert!(
            ok && self.text().contains(needle),
            "`{}` {how}; output:\n{}",
            self.what,
            self.text()
        );
    }

    /// Waits at most `timeout` for the command to exit; panics (after killing it) otherwise.
    /// Returns its status and its output with the terminals' `\r`s removed.
    pub fn wait(self, timeout: Duration) -> (ExitStatus, String) {
        let (status, bytes) = self.wait_bytes(timeout);
        (status, String::from_utf8_lossy(&bytes).replace('\r', ""))
    }

    /// [`PtyChild::wait`], with the output byte for byte. The reader is waited for until it
    /// reads EIO (every slave closed): it may be reading slowly on purpose.
    pub fn wait_bytes(mut self, timeout: Duration) -> (ExitStatus, Vec<u8>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break Some(s);
            }
            if Instant::now() >= deadline {
                break None;
            }
            thread::sleep(Duration::from_millis(10));
        };
        let Some(status) = status else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let text = self.text();
            panic!(
                "`{}` did not exit within {timeout:?}; killed it. Output ({} bytes), its end:\n{}",
                self.what,
                text.len(),
                &text[text.len().saturating_sub(2000)..]
            );
        };
        let reader = self.reader.take().unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        wait_until(left.max(Duration::from_secs(5)), || reader.is_finished());
        (status, self.bytes())
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
