//! A container's output while containerd is down (issue 20: containerd#11805, #11511, #9342).
//!
//! One private containerd with the CRI plugin runs two pods side by side, one on the `tether`
//! handler and one on `runc` (the Go shim). In each, a busybox awk writes numbered 1 KiB lines
//! to stdout as fast as it can, [`LINES`] of them, then sleeps. Once both are writing,
//! containerd is stopped for [`OUTAGE`] and started again. During the outage the test samples
//! how much each container has written (`wchar` in `/proc/<pid>/io`).
//!
//! tether must keep the container writing (its spool, `SpoolSize` in the handler's options
//! file, takes what the FIFO cannot), and after recovery the CRI log file must hold every line
//! exactly once, in order. For the Go shim the progress during the outage is printed, not
//! asserted: it blocks once its pipe and the FIFO are full, which is the behaviour tether's
//! spool removes.
//!
//! Both handlers always run: the test is a comparison, so `TETHER_TEST_RUNTIME` is not
//! consulted.
//!
//! The `ctr` variant is the other way a reader goes away: an attached `ctr run` whose own
//! stdout nobody reads for a while (a stuck pipeline or terminal), with no containerd outage
//! and no options file, so tether's default spool (64 MiB, in the bundle's `work` directory)
//! takes the output. It runs with the runtime under test; the Go shim blocks there.

mod common;
#[path = "common/cri_client.rs"]
mod cri_client;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Containerd;
use cri_client::{CgroupParentGuard, PodGuard, SANDBOX_IMAGE, WORKLOAD_IMAGE};
use k8s_cri::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, PodSandboxConfig};
use k8s_cri::v1::{PodSandboxMetadata, StopContainerRequest};

/// How long containerd is down: what the issue asks.
const OUTAGE: Duration = Duration::from_secs(30);
/// Lines each container writes, 1 KiB each: 256 MiB, far more than a pipe and a FIFO hold.
const LINES: usize = 256 * 1024;
const LINE_LEN: usize = 1024;
/// tether's spool per stream: room for the whole stream.
const SPOOL_SIZE: u64 = 512 << 20;

/// awk printing `lines` lines `<9-digit number> <filler>` of `LINE_LEN` bytes, then sleeping.
fn writer_argv(lines: usize) -> Vec<String> {
    let program = format!(
        "BEGIN {{ f = sprintf(\"%0{}d\", 0); for (i = 1; i <= {lines}; i++) printf \"%09d %s\\n\", i, f; fflush(); system(\"exec sleep 100000\") }}",
        LINE_LEN - 11
    );
    vec!["/bin/awk".into(), program]
}

fn pod_config(log_dir: &Path, name: &str, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: common::unique_id("uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(cri_client::host_network_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Bytes process `pid` has written (`wchar`); 0 once it is gone.
fn wchar(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One pod with its writer container.
struct Writer {
    handler: &'static str,
    sandbox: String,
    container: String,
    pid: i32,
    log: PathBuf,
}

/// What a CRI log file holds.
#[derive(Debug, PartialEq)]
struct Logged {
    /// The number of the last line.
    last: usize,
    /// Lines lost at the restart seam (see [`check_log`]).
    lost_at_seam: usize,
}

/// Most lines a stopping containerd may take with it: what it had read from the FIFO but not
/// yet written to the log (its 32 KiB copy buffer, its line reader's 4 KiB, the line it was
/// in), in 1 KiB lines.
const MAX_SEAM_LOSS: usize = 40;

/// Reads a CRI log file (`<time> <stream> <P|F> <text>`, `P` parts joined) and checks that
/// its lines are numbered 1, 2, 3, … with nothing repeated, reordered or cut.
///
/// One exception, at `seam` (the file's size when the old containerd had exited): the bytes the
/// stopping containerd had read from the FIFO but not yet written died with it (seen on 1.7
/// and 2.1: up to about 34 KiB, and a `P` entry for the line it was in). A shim cannot bring
/// those back. There the check resynchronises on the next whole line, forward only, and
/// counts the lines lost.
fn check_log(path: &Path, seam: u64) -> Result<Logged, String> {
    let f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut pending = String::new();
    // Where the pending line's first part began.
    let mut pending_at = 0u64;
    let mut offset = 0u64;
    let mut next = 1usize;
    let mut lost_at_seam = 0;
    let mut resync = false;
    let mut crossed = false;
    // The last entries, for the error.
    let mut recent: Vec<String> = Vec::new();
    for (n, entry) in BufReader::with_capacity(1 << 20, f).lines().enumerate() {
        let entry = entry.map_err(|e| format!("line {n}: {e}"))?;
        let at = offset;
        offset += entry.len() as u64 + 1;
        if recent.len() == 4 {
            recent.remove(0);
        }
        recent.push(format!("{:.60}.. ({} bytes)", entry, entry.len()));
        let mut parts = entry.splitn(4, ' ');
        let (_time, stream, tag) = (parts.next(), parts.next(), parts.next());
        let text = parts.next().unwrap_or("");
        if stream != Some("stdout") {
            return Err(format!("entry {n}: not stdout: {entry:.80}"));
        }
        if at >= seam && !crossed {
            crossed = true;
            resync = true;
            if pending_at < seam {
                // The line the old containerd was in the middle of: drop its first part.
                pending.clear();
            }
        }
        if pending.is_empty() {
            pending_at = at;
        }
        pending.push_str(text);
        match tag {
            Some("P") => continue,
            Some("F") => {}
            other => return Err(format!("entry {n}: tag {other:?}")),
        }
        let line = std::mem::take(&mut pending);
        let number = line.get(..9).and_then(|d| d.parse::<usize>().ok());
        let whole = line.len() == LINE_LEN - 1;
        if resync {
            // The rest of the cut line, or the first whole line after it.
            match number {
                Some(number) if whole && number >= next => {
                    lost_at_seam = number - next;
                    next = number;
                    resync = false;
                }
                _ => continue,
            }
        }
        if number != Some(next) || !whole {
            return Err(format!(
                "entry {n}: {number:?} ({} bytes) where line {next} was due; last entries: {recent:?}",
                line.len()
            ));
        }
        next += 1;
    }
    Ok(Logged {
        last: next - 1,
        lost_at_seam,
    })
}

#[test]
fn output_written_while_containerd_is_down_is_spooled_and_delivered_exactly() {
    common::require_root();
    let t0 = Instant::now();
    let mut cd = cri_client::start_containerd(cri_client::handlers_config(SANDBOX_IMAGE));
    let dir = cd.dir().to_path_buf();
    fs::write(
        dir.join("tether.toml"),
        format!("SpoolSize = {SPOOL_SIZE}\nSpoolWhenFull = \"block\"\n"),
    )
    .unwrap();
    let cri = cri_client::ready_with_images(&cd);
    let log_dir = dir.join("pod-logs");
    let cgroup_parent = format!("/{}", common::unique_id("tether-outage"));
    let _cgroup_guard = CgroupParentGuard(cgroup_parent.clone());
    let argv = writer_argv(LINES);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();

    let mut guards = Vec::new();
    let mut writers = Vec::new();
    for handler in ["tether", "runc"] {
        let pod_logs = log_dir.join(handler);
        fs::create_dir_all(&pod_logs).unwrap();
        let pod = pod_config(&pod_logs, &format!("outage-{handler}"), &cgroup_parent);
        let mut guard = PodGuard {
            cri: &cri,
            id: None,
        };
        let sandbox = cri.run_pod(&pod, handler, &mut guard);
        cd.track_id(&sandbox);
        guards.push(guard);
        let sandbox = sandbox.clone();
        let config = cri_client::limited_container("writer", WORKLOAD_IMAGE, &argv, 0);
        let container = cri.create(&sandbox, &pod, config);
        cd.track_id(&container);
        cri.start(&container)
            .unwrap_or_else(|s| panic!("StartContainer on {handler}: {s:?}"));
        let pid_file = cd.bundle(&container).join("init.pid");
        let pid = cri_client::poll(Duration::from_secs(10), "the writer's pid", || {
            fs::read_to_string(&pid_file)
                .map_err(|e| e.to_string())?
                .trim()
                .parse::<i32>()
                .map_err(|e| e.to_string())
        });
        writers.push(Writer {
            handler,
            sandbox,
            container,
            pid,
            log: pod_logs.join("writer.log"),
        });
    }
    eprintln!("both writers started after {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_secs(1));

    // The outage.
    let before: Vec<u64> = writers.iter().map(|w| wchar(w.pid)).collect();
    let down = Instant::now();
    cd.stop();
    let mut samples = vec![before.clone()];
    while down.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_secs(1).min(OUTAGE.saturating_sub(down.elapsed())));
        samples.push(writers.iter().map(|w| wchar(w.pid)).collect());
    }
    let after = samples.last().unwrap().clone();
    let tether_spool_files = spool_files(&cd, &writers[0].sandbox);
    // What the old containerd wrote to each log (it has exited).
    let seams: Vec<u64> = writers
        .iter()
        .map(|w| fs::metadata(&w.log).map(|m| m.len()).unwrap_or(0))
        .collect();
    cd.restart();
    let outage = down.elapsed();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    for (i, w) in writers.iter().enumerate() {
        let trace: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1}", mib(s[i])))
            .collect();
        eprintln!(
            "{}: wrote {:.1} MiB before the outage and {:.1} MiB during it ({:.1} s); MiB each second: {}",
            w.handler,
            mib(before[i]),
            mib(after[i] - before[i]),
            outage.as_secs_f64(),
            trace.join(" ")
        );
    }
    eprintln!("tether's open spool files during the outage: {tether_spool_files:?}");

    // tether: the container was never held up by the missing reader. It wrote all of its
    // output, most of it while containerd was down.
    let total = (LINES * LINE_LEN) as u64;
    // It finished (wchar also counts a few bytes awk writes besides its output), or, on a
    // host too busy for awk to write 256 MiB in 30 s, it was still writing at the end and
    // wrote far more than a pipe and a FIFO hold.
    let late = samples[samples.len().saturating_sub(6)][0];
    assert!(
        after[0] >= total || (after[0] > late && after[0] - before[0] > 16 << 20),
        "tether's container was blocked during the outage: wrote {} of {total} bytes, {} in its last 5 s",
        after[0],
        after[0] - late
    );
    assert!(
        !tether_spool_files.is_empty(),
        "tether's shim held no spool file while containerd was down"
    );

    // After recovery every line reaches the CRI log exactly once, in order.
    cri.wait_runtime_ready(Duration::from_secs(30));
    let mut results = Vec::new();
    for (w, seam) in writers.iter().zip(seams) {
        let started = Instant::now();
        let mut last = Err(String::from("not checked"));
        while started.elapsed() < Duration::from_secs(120) {
            last = check_log(&w.log, seam);
            match &last {
                Ok(l) if l.last == LINES => break,
                Ok(_) => std::thread::sleep(Duration::from_secs(1)),
                Err(_) => break,
            }
        }
        eprintln!(
            "{}: CRI log after recovery: {last:?} (lines in order, once each) after {:?}",
            w.handler,
            started.elapsed()
        );
        results.push(last);
        let _ = cri.call(
            "StopContainer",
            cri.rs().stop_container(StopContainerRequest {
                container_id: w.container.clone(),
                timeout: 1,
            }),
        );
    }
    let log = fs::read_to_string(cd.log_path()).unwrap_or_default();
    for l in log.lines().filter(|l| l.contains("spool")) {
        eprintln!("containerd log: {l:.300}");
    }
    let tether = results.swap_remove(0);
    let logged = tether.unwrap_or_else(|e| panic!("tether: {}: {e}", writers[0].log.display()));
    assert_eq!(
        logged.last,
        LINES,
        "tether: the CRI log {}",
        writers[0].log.display()
    );
    assert!(
        logged.lost_at_seam <= MAX_SEAM_LOSS,
        "tether: {} lines lost where containerd stopped",
        logged.lost_at_seam
    );
    for mut g in guards {
        g.remove();
    }
    eprintln!("done after {:?}", t0.elapsed());
}

/// Unlinked files the shim of `sandbox` (the pod's shim) holds open under containerd's directories: the
/// spool (in the bundle's `work` directory by default).
fn spool_files(cd: &Containerd, sandbox: &str) -> Vec<String> {
    let Ok(pid) = fs::read_to_string(cd.bundle(sandbox).join("shim.pid")) else {
        return vec![];
    };
    let fds = format!("/proc/{}/fd", pid.trim());
    fs::read_dir(&fds)
        .map(|d| {
            d.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| p.ends_with("(deleted)") && p.starts_with(&*cd.dir().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

/// An attached `ctr run` whose stdout the test leaves unread for [`CTR_PAUSE`]: with tether the
/// container writes all of its 48 MiB meanwhile (the default spool takes what ctr cannot),
/// and ctr then prints every line once, in order.
#[test]
fn a_ctr_that_stops_reading_does_not_block_the_container() {
    const CTR_PAUSE: Duration = Duration::from_secs(10);
    const CTR_LINES: usize = 48 * 1024;
    common::require_root();
    let cd = Containerd::start();
    let id = common::unique_id("unread");
    let argv = writer_argv(CTR_LINES);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut ctr = cd.ctr_cmd(&cd.run_args(&id, &argv).build());
    ctr.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = ctr.spawn().unwrap();
    let pid = cd.wait_task_status(&id, "RUNNING", Duration::from_secs(20));
    written_while_unread(pid, CTR_LINES, CTR_PAUSE, "ctr's stdout");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; CTR_LINES * LINE_LEN];
        std::io::Read::read_exact(&mut out, &mut got).map(|()| got)
    });
    let got = poll_join(reader, Duration::from_secs(60)).expect("ctr printed all the output");
    let _ = cd.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
    let _ = child.wait();
    for (i, line) in got.chunks(LINE_LEN).enumerate() {
        let number: Option<usize> = std::str::from_utf8(&line[..9])
            .ok()
            .and_then(|d| d.parse().ok());
        assert!(
            number == Some(i + 1) && line[LINE_LEN - 1] == b'\n',
            "line {} is {:?}",
            i + 1,
            String::from_utf8_lossy(&line[..20])
        );
    }
}

/// The same through a terminal: `ctr run -t` on a terminal of the test's own that the test
/// stops reading for [`CTR_PAUSE`] once it has 64 KiB. The container's terminal output is
/// copied through a buffer, not spliced, and the spool takes it the same way: the container
/// writes its 8 MiB meanwhile, and the terminal then shows every line once, in order.
#[test]
fn a_terminal_that_stops_reading_does_not_block_the_container() {
    use common::pty::{Pace, PtyChild};
    const CTR_PAUSE: Duration = Duration::from_secs(10);
    const CTR_LINES: usize = 8 * 1024;
    common::require_root();
    let cd = Containerd::start();
    let id = common::unique_id("unread-tty");
    let argv = writer_argv(CTR_LINES);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let ctr = cd.ctr_cmd(&cd.run_args(&id, &argv).flag("-t").build());
    let pace = Pace {
        rate: None,
        pause_at: Some(64 << 10),
        pause: CTR_PAUSE,
    };
    let mut term = PtyChild::spawn_reading(ctr, 24, 80, Some(pace));
    let pid = cd.wait_task_status(&id, "RUNNING", Duration::from_secs(20));
    written_while_unread(pid, CTR_LINES, CTR_PAUSE, "the client's terminal");
    let last = format!("{CTR_LINES:09} ");
    term.wait_for(&last, Duration::from_secs(60));
    let _ = cd.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
    let text = term.text();
    term.kill();
    let numbers: Vec<usize> = text
        .lines()
        .filter_map(|l| l.get(..9).and_then(|d| d.parse().ok()))
        .collect();
    assert_eq!(
        numbers,
        (1..=CTR_LINES).collect::<Vec<_>>(),
        "the terminal did not show every line once, in order"
    );
}

/// Waits (at most `pause`) while the client does not read `what`, until the writer of `lines`
/// lines (process `pid`) has written them all, and prints how far it got. tether's container
/// must get there; the Go shim's (TETHER_TEST_RUNTIME=io.containerd.runc.v2) must block once
/// pipe, FIFO and the client's buffers are full: the behaviour the spool removes.
fn written_while_unread(pid: i32, lines: usize, pause: Duration, what: &str) {
    let total = (lines * LINE_LEN) as u64;
    let started = Instant::now();
    common::wait_until(pause, || wchar(pid) >= total);
    let written = wchar(pid);
    eprintln!(
        "{}: the container wrote {:.1} of {:.1} MiB in {:?} while {what} was not read",
        common::runtime(),
        written as f64 / (1 << 20) as f64,
        total as f64 / (1 << 20) as f64,
        started.elapsed()
    );
    if common::runtime() == common::DEFAULT_RUNTIME {
        assert!(
            written >= total,
            "tether's container blocked after {written} bytes"
        );
    } else {
        assert!(
            written < total,
            "the Go shim did not block ({written} bytes)"
        );
    }
}

/// Joins `t`, or panics after `limit`.
fn poll_join<T>(t: std::thread::JoinHandle<T>, limit: Duration) -> T {
    let deadline = Instant::now() + limit;
    while !t.is_finished() {
        assert!(Instant::now() < deadline, "not done within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t.join().unwrap()
}

/// Unmounts a test's tmpfs when dropped.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A spool directory that fills up (a 1 MiB tmpfs, ENOSPC): what was spooled is still
/// delivered, then the stream blocks as without a spool, the container keeps running, and
/// the failure is logged once.
#[test]
fn a_full_spool_directory_falls_back_to_blocking_and_is_logged_once() {
    const LINES_WRITTEN: usize = 8 * 1024;
    common::require_root();
    let cd = Containerd::start();
    let spool_dir = cd.dir().join("small-spool");
    fs::create_dir_all(&spool_dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&spool_dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a 1 MiB tmpfs");
    let _unmount = Unmount(spool_dir.clone());
    let options = cd.dir().join("spool.toml");
    fs::write(
        &options,
        format!(
            "SpoolDir = \"{}\"\nSpoolSize = 67108864\n",
            spool_dir.display()
        ),
    )
    .unwrap();
    let id = common::unique_id("enospc");
    let argv = writer_argv(LINES_WRITTEN);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let args = cd
        .run_args(&id, &argv)
        .flag("--runtime-config-path")
        .flag(&options.to_string_lossy());
    let mut ctr = cd.ctr_cmd(&args.build());
    ctr.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = ctr.spawn().unwrap();
    let pid = cd.wait_task_status(&id, "RUNNING", Duration::from_secs(20));
    let total = (LINES_WRITTEN * LINE_LEN) as u64;
    // Long enough for a stall, a full tmpfs and the writer to block.
    std::thread::sleep(Duration::from_secs(3));
    let written = wchar(pid);
    eprintln!(
        "{}: wrote {:.1} of {:.1} MiB with a 1 MiB spool filesystem and ctr's stdout unread",
        common::runtime(),
        written as f64 / (1 << 20) as f64,
        total as f64 / (1 << 20) as f64
    );
    assert!(
        written < total,
        "the writer did not block ({written} bytes)"
    );
    assert_eq!(
        cd.task(&id).map(|t| t.1),
        Some("RUNNING".to_string()),
        "the container runs on"
    );
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; LINES_WRITTEN * LINE_LEN];
        std::io::Read::read_exact(&mut out, &mut got).map(|()| got)
    });
    let got = poll_join(reader, Duration::from_secs(60)).expect("ctr printed all the output");
    let _ = cd.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
    let _ = child.wait();
    for (i, line) in got.chunks(LINE_LEN).enumerate() {
        let number: Option<usize> = std::str::from_utf8(&line[..9])
            .ok()
            .and_then(|d| d.parse().ok());
        assert_eq!(number, Some(i + 1), "line {} is out of place", i + 1);
    }
    if common::runtime() == common::DEFAULT_RUNTIME {
        let log = fs::read_to_string(cd.log_path()).unwrap_or_default();
        let warnings = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("spool file"))
            .count();
        assert_eq!(warnings, 1, "the spool failure is logged once");
    }
}
