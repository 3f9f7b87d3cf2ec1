//! `containerd-shim-tether-v2 upgrade [--pid PID]... [--namespace NS [--id ID]] [--parallel N]`:
//! asks every running tether server (or the ones named) to re-execute the binary now at its
//! path, N at a time (default 8), and prints one line per server. Exits 1 if any server did not end up on the new binary, if none
//! runs, or if not run as root.
//!
//! Servers are found through `/proc`: a process whose executable is named
//! `containerd-shim-tether-v2*` and whose command line is a server's (no action word, a
//! `-socket`); its socket path, namespace and id come from that command line.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Outcome, Status, SERVICE};

/// How long one server may take to report the end of its upgrade.
const LIMIT: Duration = Duration::from_secs(60);

/// One running server.
#[derive(Debug, Clone)]
struct Server {
    pid: u32,
    /// The path it was started from: the file there now is what it must end up running.
    path: PathBuf,
    namespace: String,
    id: String,
    socket: PathBuf,
}

struct Wanted {
    /// How many servers hand off at once.
    parallel: usize,
    pids: Vec<u32>,
    namespace: Option<String>,
    id: Option<String>,
}

fn parse(argv: &[String]) -> Result<Wanted, String> {
    let mut w = Wanted {
        parallel: 8,
        pids: Vec::new(),
        namespace: None,
        id: None,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.trim_start_matches('-') {
            "pid" => w
                .pids
                .push(value()?.parse().map_err(|e| format!("--pid: {e}"))?),
            "namespace" => w.namespace = Some(value()?),
            "id" => w.id = Some(value()?),
            "parallel" => w.parallel = value()?.parse().map_err(|e| format!("--parallel: {e}"))?,
            _ => {
                return Err(format!(
                    "unknown argument {flag:?} (want --pid, --namespace, --id, --parallel)"
                ))
            }
        }
    }
    if w.id.is_some() && w.namespace.is_none() {
        return Err("--id needs --namespace".into());
    }
    Ok(w)
}

/// Every tether server process on this host.
fn servers() -> Vec<Server> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut found: Vec<Server> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            let name = exe.file_name()?.to_str()?;
            if !name.starts_with("containerd-shim-tether-v2") {
                return None;
            }
            let exe = exe.to_string_lossy();
            let path = PathBuf::from(exe.strip_suffix(" (deleted)").unwrap_or(&exe));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv: Vec<String> = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .skip(1)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let args = crate::cli::parse(argv).ok()?;
            (args.action == crate::cli::Action::Serve && !args.socket.is_empty()).then(|| Server {
                pid,
                path,
                namespace: args.namespace,
                id: args.id,
                socket: PathBuf::from(args.socket),
            })
        })
        .collect();
    found.sort_by_key(|s| s.pid);
    found
}

async fn call(client: &ttrpc::asynchronous::Client, method: &str) -> Result<Vec<u8>, String> {
    let mut req = ttrpc::Request::new();
    req.service = SERVICE.into();
    req.method = method.into();
    req.timeout_nano = Duration::from_secs(10).as_nanos() as i64;
    let res = client.request(req).await.map_err(|e| e.to_string())?;
    Ok(res.payload)
}

async fn connect(s: &Server) -> Result<ttrpc::asynchronous::Client, String> {
    ttrpc::asynchronous::Client::connect(&format!("unix://{}", s.socket.display()))
        .await
        .map_err(|e| format!("connect {}: {e}", s.socket.display()))
}

async fn status(client: &ttrpc::asynchronous::Client) -> Result<Status, String> {
    let bytes = call(client, "Status").await?;
    serde_json::from_slice(&bytes).map_err(|e| format!("bad Status answer: {e}"))
}

/// Asks one server to upgrade and waits for the outcome.
async fn upgrade_one(s: &Server) -> Result<Outcome, String> {
    let client = connect(s).await?;
    let bytes = call(&client, "Upgrade").await?;
    let attempt: u64 =
        serde_json::from_slice(&bytes).map_err(|e| format!("bad Upgrade answer: {e}"))?;
    drop(client);
    let deadline = Instant::now() + LIMIT;
    loop {
        // A fresh connection each time: one opened during the handoff waits in the listen
        // backlog and is answered by whichever image takes over.
        let st = match connect(s).await {
            Ok(c) => status(&c).await,
            Err(e) => Err(e),
        };
        match st {
            Ok(st) if st.pid != s.pid => {
                return Err(format!("answered by pid {}, not {}", st.pid, s.pid))
            }
            Ok(Status {
                outcome: Some(o), ..
            }) if o.attempt == attempt => {
                if o.ok {
                    runs_the_new_file(s)?;
                }
                return Ok(o);
            }
            Ok(_) => {}
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => {}
        }
        if Instant::now() > deadline {
            return Err(format!("no outcome within {LIMIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Checks that the server now runs the very file at its path (same inode), not only that it
/// says so.
fn runs_the_new_file(s: &Server) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let running = std::fs::metadata(format!("/proc/{}/exe", s.pid)).map(|m| (m.dev(), m.ino()));
    let on_disk = std::fs::metadata(&s.path).map(|m| (m.dev(), m.ino()));
    match (running, on_disk) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        (Ok(_), Ok(_)) => Err(format!(
            "reported success but does not run the file now at {}",
            s.path.display()
        )),
        (Err(e), _) | (_, Err(e)) => Err(format!("cannot compare executables: {e}")),
    }
}

pub fn main(argv: &[String]) -> i32 {
    let wanted = match parse(argv) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("upgrade: {e}");
            return 2;
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("upgrade: must run as root (the servers' sockets are root's)");
        return 1;
    }
    let all = servers();
    let chosen: Vec<Server> = all
        .into_iter()
        .filter(|s| wanted.pids.is_empty() || wanted.pids.contains(&s.pid))
        .filter(|s| wanted.namespace.as_ref().is_none_or(|n| *n == s.namespace))
        .filter(|s| wanted.id.as_ref().is_none_or(|i| *i == s.id))
        .collect();
    if chosen.is_empty() {
        eprintln!(
            "upgrade: no tether server running{}",
            if argv.is_empty() { "" } else { " matches" }
        );
        return 1;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("upgrade: {e}");
            return 1;
        }
    };
    let all_started = Instant::now();
    let results = rt.block_on(async {
        // Servers hand off independently; a few at a time keeps the node's CPUs for the pods.
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(wanted.parallel.max(1)));
        let tasks: Vec<_> = chosen
            .iter()
            .cloned()
            .map(|s| {
                let slots = slots.clone();
                tokio::spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    let started = Instant::now();
                    (upgrade_one(&s).await, started.elapsed())
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(
                t.await
                    .unwrap_or_else(|e| (Err(e.to_string()), Duration::ZERO)),
            );
        }
        results
    });
    let mut failed = 0;
    for (s, (result, took)) in chosen.iter().zip(results) {
        let who = format!("pid {} namespace {} id {}", s.pid, s.namespace, s.id);
        match result {
            Ok(o) if o.ok => println!(
                "{who}: {} ({}) -> {} ({}) handoff {:.3} ms (total {:.1} ms) ok",
                o.old_version,
                o.old_build,
                o.new_version,
                o.new_build,
                o.handoff_us as f64 / 1000.0,
                took.as_secs_f64() * 1000.0
            ),
            Ok(o) => {
                failed += 1;
                println!(
                    "{who}: {} ({}) kept: FAILED: {}",
                    o.old_version, o.old_build, o.error
                );
            }
            Err(e) => {
                failed += 1;
                println!("{who}: FAILED: {e}");
            }
        }
    }
    eprintln!(
        "upgrade: {} of {} servers on the new binary in {:.1} ms",
        chosen.len() - failed,
        chosen.len(),
        all_started.elapsed().as_secs_f64() * 1000.0
    );
    i32::from(failed > 0)
}
