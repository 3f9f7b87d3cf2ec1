//! Measuring processes: bounded spawn-to-exit wall time, and CPU and memory from `/proc`.

use super::*;

pub struct Timed {
    pub elapsed: Duration,
    /// `None`: did not finish within the bound (it was killed).
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

impl Timed {
    pub fn ok(&self) -> bool {
        matches!(self.status, Some(s) if s.success())
    }
    pub fn describe(&self) -> String {
        match self.status {
            None => format!("timed out after {:?}", self.elapsed),
            Some(s) => format!("{s}: {}", self.stderr.trim()),
        }
    }
}

/// Blocks until `pid` (our child) has exited, without reaping it.
pub fn wait_exited_keep_zombie(pid: i32) {
    loop {
        // SAFETY: siginfo_t is plain data; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a siginfo_t for the duration of the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Runs `cmd` (stdin and stdout `/dev/null`, stderr captured) and measures spawn-to-exit wall
/// time. A watchdog kills it after `timeout`; the child is only reaped after the watchdog is
/// disarmed, so the kill can never hit a recycled pid.
pub fn timed_run(mut cmd: Command, timeout: Duration) -> Timed {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Timed {
                elapsed: t0.elapsed(),
                status: None,
                stderr: format!("spawn {cmd:?}: {e}"),
            }
        }
    };
    let pid = child.id() as i32;
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let gate = Arc::clone(&gate);
        let killed = Arc::clone(&killed);
        thread::spawn(move || {
            let (m, cv) = &*gate;
            let g = m.lock().unwrap();
            let (g, _) = cv.wait_timeout_while(g, timeout, |done| !*done).unwrap();
            if !*g {
                common::kill(pid, libc::SIGKILL);
                killed.store(true, Ordering::SeqCst);
            }
        })
    };
    wait_exited_keep_zombie(pid);
    let elapsed = t0.elapsed();
    {
        let (m, cv) = &*gate;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }
    let _ = watchdog.join();
    let status = child.wait().ok();
    let stderr = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    Timed {
        elapsed,
        status: if killed.load(Ordering::SeqCst) {
            None
        } else {
            status
        },
        stderr,
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// utime + stime from /proc/PID/stat, in ms (10 ms resolution).
    pub stat_ms: f64,
    /// Sum of the live threads' run time from /proc/PID/task/*/schedstat, in ms.
    pub sched_ms: f64,
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

pub fn cpu(pid: i32) -> Option<Cpu> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    // Fields after the comm: state(3) ppid(4) ... utime(14) stime(15).
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    let mut sched_ns = 0u64;
    for e in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        if let Ok(s) = fs::read_to_string(e.path().join("schedstat")) {
            sched_ns += s
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(Cpu {
        stat_ms: (utime + stime) * 1000.0 / clk_tck(),
        sched_ms: sched_ns as f64 / 1e6,
    })
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kb: f64,
    pub pss_kb: f64,
    pub threads: f64,
    pub fds: f64,
}

pub fn kb_field(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub fn mem(pid: i32) -> Option<Mem> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Mem {
        rss_kb: kb_field(&rollup, "Rss")?,
        pss_kb: kb_field(&rollup, "Pss")?,
        threads: kb_field(&status, "Threads")?,
        fds: fds as f64,
    })
}
