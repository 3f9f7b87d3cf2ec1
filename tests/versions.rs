//! What differs between containerd versions (SPEC §1.17), proven against the containerd under
//! test (`TETHER_CONTAINERD`, see tests/common): `-info` and `ctr plugins inspect-runtime`
//! (2.0+; 2.2+ runs `-info` before the first Create of every non-runc runtime), and a task's
//! exit status across a containerd restart (1.7+ deletes a shim whose `Pids` is empty on
//! reload). `scripts/test.sh` runs this file under 1.6.20, 1.7.24, 2.1.9, 2.2.7, 2.3.4 and
//! 2.4.0-beta.0; each test says next to its assertions what each version does.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use tether::protos::introspection::RuntimeInfo;

const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Runs `<tether> -info` with `stdin`; returns (exit status success, stdout, stderr).
fn run_info(stdin: &[u8]) -> (bool, Vec<u8>, String) {
    let mut child = Command::new(shim_binary())
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tether -info");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn runc_features() -> serde_json::Value {
    let out = Command::new("runc").arg("features").output().unwrap();
    assert!(out.status.success(), "runc features failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `-info` without options prints a RuntimeInfo whose features are `runc features`, as JSON
/// in an `Any` of the runtime-spec type URL (containerd decodes it with `json.Unmarshal`).
#[test]
fn info_prints_runtime_info_with_the_runtimes_features() {
    let (ok, stdout, stderr) = run_info(b"");
    assert!(ok, "-info failed: {stderr}");
    let info = RuntimeInfo::parse_from_bytes(&stdout).expect("stdout is a RuntimeInfo");
    assert_eq!(info.name, "io.containerd.tether.v2");
    assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
    assert!(info.options.is_none());
    assert_eq!(info.features.type_url, FEATURES_TYPE_URL);
    let features: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
    assert_eq!(features, runc_features());
}

/// The options' BinaryName answers for itself (here a wrapper that prints its own features,
/// as crun would), the options come back as sent; a runtime without `features` gives a
/// RuntimeInfo without features; a missing runtime, or garbage on stdin, is a clear error and
/// a non-zero exit.
#[test]
fn info_uses_the_configured_runtime_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake-runtime");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1\" = features ] && echo '{\"ociVersionMin\":\"1.0.0\",\"ociVersionMax\":\"9.9.9\"}' && exit 0\necho \"unknown command $1\" >&2; exit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let options = |binary: &str| {
        let runc = containerd_shim_protos::shim::oci::Options {
            binary_name: binary.into(),
            ..Default::default()
        };
        Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: runc.write_to_bytes().unwrap(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap()
    };

    let (ok, stdout, stderr) = run_info(&options(&fake.to_string_lossy()));
    assert!(ok, "-info with BinaryName failed: {stderr}");
    let info = RuntimeInfo::parse_from_bytes(&stdout).unwrap();
    assert_eq!(info.options.type_url, "containerd.runc.v1.Options");
    let features: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
    assert_eq!(features["ociVersionMax"], "9.9.9");

    // A runtime without a `features` command (runc before 1.1, crun before 1.8.6): the
    // RuntimeInfo without features, as the Go shim answers, and a note on stderr.
    let (ok, stdout, stderr) = run_info(&options("/bin/false"));
    assert!(ok, "{stderr}");
    let info = RuntimeInfo::parse_from_bytes(&stdout).unwrap();
    assert_eq!(info.name, "io.containerd.tether.v2");
    assert!(info.features.is_none(), "{:?}", info.features);
    assert_eq!(info.options.type_url, "containerd.runc.v1.Options");
    assert!(
        stderr.contains("/bin/false") && stderr.contains("features"),
        "{stderr}"
    );

    // A runtime that is not there at all is an error (the Go shim's LookPath fails too).
    let (ok, stdout, stderr) = run_info(&options("/nonexistent/oci-runtime"));
    assert!(!ok && stdout.is_empty(), "{stderr}");
    assert!(stderr.contains("/nonexistent/oci-runtime"), "{stderr}");

    // No options and no `runc` to run (a crun-only host; containerd 2.2+ sends no options
    // before a Create): answered without features, as a runtime without `features` is.
    let mut child = Command::new(shim_binary())
        .arg("-info")
        .env("PATH", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run tether -info");
    let stderr = String::from_utf8_lossy(&child.stderr).into_owned();
    assert!(child.status.success(), "{stderr}");
    let info = RuntimeInfo::parse_from_bytes(&std::mem::take(&mut child.stdout)).unwrap();
    assert!(
        info.features.is_none() && info.options.is_none(),
        "{info:?}"
    );
    assert!(stderr.contains("\"runc\""), "{stderr}");

    let (ok, stdout, stderr) = run_info(b"this is not a protobuf");
    assert!(!ok && stdout.is_empty(), "{stderr}");
    assert!(stderr.contains("not a protobuf Any"), "{stderr}");
}

/// `-info` answers for the runtime users configured: with the options file of
/// `TETHER_TEST_RUNTIME_CONFIG` (sent as `runtimeoptions.v1.Options { ConfigPath }`, what ctr's
/// `--runtime-config-path` and the CRI plugin send), its `BinaryName`; without, `runc`. The VM
/// lane's crun run sets `BinaryName = "/usr/bin/crun"`.
#[test]
fn info_answers_for_the_configured_runtime() {
    let binary = runtime_binary();
    let stdin = match runtime_config_path() {
        Some(path) => Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: tether::protos::runtimeoptions::Options {
                config_path: path,
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap(),
        None => Vec::new(),
    };
    let own = Command::new(&binary)
        .arg("features")
        .output()
        .unwrap_or_else(|e| panic!("{binary} features: {e}"));
    let (ok, stdout, stderr) = run_info(&stdin);
    if own.status.success() {
        // runc 1.1+ (the host, the VM lane's default run), crun 1.8.6+: its own features.
        assert!(ok, "-info with {binary} failed: {stderr}");
        let info = RuntimeInfo::parse_from_bytes(&stdout).expect("stdout is a RuntimeInfo");
        let features: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
        let want: serde_json::Value = serde_json::from_slice(&own.stdout).unwrap();
        assert_eq!(
            features, want,
            "-info's features are not `{binary} features`"
        );
    } else {
        // crun before 1.8.6 (Debian 12's 1.8.1: "unknown command features") and runc before
        // 1.1 have no `features`: -info answers without features, as the Go shim does, and
        // says why on stderr, naming the runtime and carrying its own message.
        let theirs = String::from_utf8_lossy(&own.stderr).trim().to_string();
        assert!(ok, "-info with {binary} failed: {stderr}");
        let info = RuntimeInfo::parse_from_bytes(&stdout).expect("stdout is a RuntimeInfo");
        assert!(info.features.is_none(), "{binary}: {:?}", info.features);
        assert!(
            stderr.contains(&binary) && stderr.contains("features") && stderr.contains(&theirs),
            "-info's note should name {binary}, `features` and say {theirs:?}: {stderr}"
        );
    }
}

/// containerd 2.0+: `ctr plugins inspect-runtime` runs the shim's `-info` and shows the
/// runtime's features exactly as it does for the Go shim. 1.6/1.7 have no such command (and
/// never run `-info`): there the test checks that ctr does not know it, so the difference
/// stays visible.
#[test]
fn inspect_runtime_shows_the_runtimes_features() {
    require_root();
    let cd = Containerd::start();
    if containerd_version() < (2, 0) {
        let out = cd.ctr(&["plugins", "inspect-runtime", "--runtime", &runtime()]);
        assert!(
            !out.status.success(),
            "containerd {:?} has no inspect-runtime\n{}",
            containerd_version(),
            describe(&out)
        );
        return;
    }
    let inspect = |rt: &str| -> serde_json::Value {
        let out = cd.ctr_ok(&["plugins", "inspect-runtime", "--runtime", rt]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{rt}: {e}\n{out}"))
    };
    let ours = inspect(&runtime());
    let go = inspect("io.containerd.runc.v2");
    assert_eq!(ours["Name"], runtime().as_str(), "{ours}");
    assert!(ours["Features"]["ociVersionMax"].is_string(), "{ours}");
    assert_eq!(
        ours["Features"], go["Features"],
        "tether {ours}\nGo shim {go}"
    );
}

/// containerd 2.2+ runs `<shim> -info`, with no options on stdin, before the first Create of
/// every runtime other than `io.containerd.runc.v2` (`loadShimInfo`,
/// `containerd@v2.2.7:core/runtime/v2/shim_manager.go`; a failure is logged as "failed to load
/// runtime info" at error level, the Create goes on). Here `runc` on containerd's PATH is a
/// wrapper without `features` (as runc before 1.1, or a crun 1.8.1 host): tether answers
/// without features, so containerd logs no error, and the containers run. Before 2.2 nothing
/// runs `-info` at a Create; the containers run the same.
#[test]
fn info_without_runtime_features_keeps_containerd_quiet() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let real_runc = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v runc"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let real_runc = real_runc.trim();
    assert!(!real_runc.is_empty(), "no runc on PATH");
    let wrapper = dir.path().join("runc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh
if [ \"$1\" = features ]; then echo 'unknown command \"features\" for \"runc\"' >&2; exit 1; fi
exec {real_runc} \"$@\"
"
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let shim = dir.path().join(SHIM_BINARY_NAME);
    std::os::unix::fs::symlink(shim_binary(), &shim).unwrap();
    let cd = Containerd::start_with(ContainerdOptions {
        shim,
        ..Default::default()
    });
    for n in 0..2 {
        let id = unique_id(&format!("nofeat{n}"));
        let out = cd.ctr_timeout(
            &cd.run_args(&id, &["sh", "-c", "exit 0"]).build(),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", describe(&out));
    }
    let log = std::fs::read_to_string(cd.log_path()).unwrap();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("failed to load runtime info"))
        .collect();
    assert!(
        errors.is_empty(),
        "containerd {:?} logged -info failures:\n{}",
        containerd_version(),
        errors.join("\n")
    );
    if containerd_version() >= (2, 2) && runtime() != "io.containerd.runc.v2" {
        // containerd logs the loaded info at debug level (the harness runs it at debug).
        assert!(
            log.contains("loaded shim info"),
            "containerd {:?} did not run -info before the Create",
            containerd_version()
        );
    }
}

/// A task whose process exits while containerd is down keeps its exit status.
///
/// containerd 1.7+ calls `Pids` on every shim it reloads and deletes one that answers empty
/// ("cleaning leaked shim process"). tether answers with the exited init's pid, so on every
/// version the task is STOPPED with its pid after the restart and `ctr tasks delete` reports
/// the real exit code. The Go shim (TETHER_TEST_RUNTIME=io.containerd.runc.v2) answers empty:
/// on 1.6 its task is kept too (1.6 only calls `Connect`), on 1.7+ it is gone.
#[test]
fn exit_status_survives_a_containerd_restart() {
    require_root();
    let mut cd = Containerd::start();
    let id = unique_id("exitrestart");
    let flag = format!("go-{id}");
    let script = format!("while [ ! -e /{flag} ]; do sleep 0.05; done; exit 7");
    cd.ctr_ok(&cd.run_args(&id, &["sh", "-c", &script]).detach().build());
    let (pid, status) = cd.task(&id).expect("task listed");
    assert_eq!(status, "RUNNING");

    cd.stop();
    std::fs::write(cd.rootfs().join(&flag), b"").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !alive(pid)),
        "container did not exit"
    );
    cd.restart();

    let go_shim_on_1_7 = runtime() == "io.containerd.runc.v2" && containerd_version() >= (1, 7);
    if go_shim_on_1_7 {
        // The Go shim's empty Pids: containerd 1.7+ deletes the task and its status.
        assert_eq!(cd.task(&id), None, "containerd {:?}", containerd_version());
        return;
    }
    assert_eq!(
        cd.task(&id),
        Some((pid, "STOPPED".to_string())),
        "task after restart (containerd {:?})",
        containerd_version()
    );
    let out = cd.ctr(&["tasks", "delete", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 7")
            || String::from_utf8_lossy(&out.stdout).contains("exit code 7"),
        "exit status not reported after restart\n{}",
        describe(&out)
    );
    cd.ctr_ok(&["containers", "delete", &id]);
    assert!(
        wait_until(Duration::from_secs(3), || cd.shim_pids().is_empty()),
        "shim left: {:?}",
        cd.shim_pids()
    );
}

// ---------------------------------------------------------------------------------------------
// binary-v2:// log URIs (containerd 2.3+ sends them; ctr of every version passes any scheme)
// ---------------------------------------------------------------------------------------------

/// Writes an executable logger script `name` into `dir`.
fn logger_script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

/// Pids of live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A `binary-v2://` logger that writes its ready byte to fd 5 gets the container's stdout on
/// fd 3 and stderr on fd 4, as a `binary://` one does. The Go shim knows binary-v2 only from
/// containerd 2.3 on, so with TETHER_TEST_RUNTIME=io.containerd.runc.v2 (1.6 to 2.1 here) the
/// run fails with its "unknown STDIO scheme".
#[test]
fn binary_v2_logger_that_says_ready_gets_both_streams() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("binv2");
    let dir = cd.dir().join("binv2");
    std::fs::create_dir_all(&dir).unwrap();
    let logger = logger_script(
        cd.dir(),
        &format!("logger-{id}.sh"),
        "cat <&3 >\"$2/stdout\" 4<&- 5>&- &\n\
         cat <&4 >\"$2/stderr\" 3<&- 5>&- &\n\
         exec 3<&- 4<&-\n\
         printf r >&5\n\
         exec 5>&-\n\
         wait",
    );
    let uri = format!("binary-v2://{}?dir={}", logger.display(), dir.display());
    let args = cd
        .run_args(&id, &["sh", "-c", "echo to-out; echo to-err >&2"])
        .flag("--log-uri")
        .flag(&uri)
        .build();
    let out = cd.ctr_timeout(&args, Duration::from_secs(30));
    if runtime() == "io.containerd.runc.v2" {
        assert!(!out.status.success(), "{}", describe(&out));
        return;
    }
    assert!(out.status.success(), "{}", describe(&out));
    for (file, want) in [("stdout", "to-out\n"), ("stderr", "to-err\n")] {
        let path = dir.join(file);
        assert!(
            wait_until(Duration::from_secs(10), || {
                std::fs::read_to_string(&path).is_ok_and(|s| s == want)
            }),
            "{}: {:?}",
            path.display(),
            std::fs::read_to_string(&path)
        );
    }
}

/// A `binary-v2://` logger that closes fd 5 without writing (alive or exiting) fails the
/// start with the logger's path in the error, and no logger process or shim fd is left.
/// The failing exec is sent straight to the shim of a running container, so its fds can be
/// counted before and after.
#[test]
fn binary_v2_logger_that_never_says_ready_fails_the_start() {
    require_root();
    if runtime() == "io.containerd.runc.v2" {
        // The Go shim before 2.3 does not know binary-v2 at all (see the test above).
        return;
    }
    let cd = Containerd::start();
    let id = unique_id("binv2bad");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    let shim = *cd.shim_pids().first().expect("shim running");
    let fds = || {
        std::fs::read_dir(format!("/proc/{shim}/fd"))
            .unwrap()
            .count()
    };
    let conn = ShimConn::connect(&cd, &id);
    // The shim opens some fds lazily (its event connection to containerd): count once the
    // number has held still for a second.
    let mut before = fds();
    let mut still = 0;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = fds();
        still = if now == before { still + 1 } else { 0 };
        before = now;
        if still == 5 {
            break;
        }
    }
    let loggers = [
        ("closes", "exec 5>&-\nwhile :; do sleep 1; done"),
        ("exits", "exit 3"),
    ];
    for (n, (what, body)) in loggers.iter().enumerate() {
        let logger = logger_script(cd.dir(), &format!("logger-{what}-{id}.sh"), body);
        let uri = format!("binary-v2://{}", logger.display());
        let exec_id = format!("e{n}");
        let spec = serde_json::json!({
            "args": ["true"], "cwd": "/", "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0},
        });
        let exec = containerd_shim_protos::api::ExecProcessRequest {
            id: id.clone(),
            exec_id: exec_id.clone(),
            stdout: uri.clone(),
            stderr: uri.clone(),
            spec: Some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: serde_json::to_vec(&spec).unwrap(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let err = conn
            .call::<_, containerd_shim_protos::api::Empty>("Exec", &exec, Duration::from_secs(30))
            .err()
            .or_else(|| {
                let start = containerd_shim_protos::api::StartRequest {
                    id: id.clone(),
                    exec_id: exec_id.clone(),
                    ..Default::default()
                };
                conn.call::<_, containerd_shim_protos::api::StartResponse>(
                    "Start",
                    &start,
                    Duration::from_secs(30),
                )
                .err()
            })
            .unwrap_or_else(|| {
                panic!("{what}: the exec started with a logger that never got ready")
            });
        let msg = format!("{err:?}");
        assert!(
            msg.contains(&logger.display().to_string()) && msg.contains("ready"),
            "{what}: {msg}"
        );
        let name = logger.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            wait_until(Duration::from_secs(10), || processes_mentioning(&name)
                .is_empty()),
            "{what}: logger left running: {:?}",
            processes_mentioning(&name)
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || fds() <= before),
        "shim fds: {before} before, {} after",
        fds()
    );
    assert_eq!(cd.task(&id).map(|t| t.1), Some("RUNNING".to_string()));
}

/// A traced containerd request reaches the shim's log and runc with its trace id.
///
/// containerd 2.0+ puts the W3C `traceparent` of each request into the ttrpc metadata of its
/// calls to the shim (`otelttrpc`), but only when its tracing is on: with no
/// `OTEL_EXPORTER_OTLP_ENDPOINT` its tracing plugins skip loading and nothing is sent (so
/// `Containerd::start` sends nothing). tether writes the trace id on the request's log lines
/// and gives runc `TRACEPARENT` for the calls that request makes. 1.6 and 1.7 have no
/// propagation to shims: no trace id anywhere. The Go shim of 2.1 passes none to runc either
/// (containerd 2.4 added that).
#[test]
fn traced_requests_carry_their_trace_id_to_the_log_and_runc() {
    require_root();
    let cd = Containerd::start_traced("http://127.0.0.1:9");
    // runc, recording each call's subcommand and TRACEPARENT.
    let calls = cd.dir().join("runtime-calls");
    let wrapper = cd.dir().join("traced-runtime");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do case $a in create|start|delete) echo \"$a ${{TRACEPARENT:-}}\" >>{calls}; break;; esac; done\nexec {runtime} \"$@\"\n",
            calls = calls.display(),
            runtime = runtime_binary(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let options = cd.dir().join("traced.toml");
    std::fs::write(
        &options,
        format!("BinaryName = \"{}\"\n", wrapper.display()),
    )
    .unwrap();
    let id = unique_id("traced");
    cd.ctr_ok(
        &cd.run_args(&id, &["true"])
            .flag("--runtime-config-path")
            .flag(&options.display().to_string())
            .build(),
    );
    let log = std::fs::read_to_string(cd.log_path()).unwrap();
    let recorded = std::fs::read_to_string(&calls).unwrap_or_default();
    let create_call = recorded
        .lines()
        .find(|l| l.starts_with("create"))
        .map(str::to_string);
    let tether = runtime() == DEFAULT_RUNTIME;
    if containerd_version() < (2, 0) || !tether {
        assert!(
            !log.contains("trace_id=") && !recorded.contains("00-"),
            "containerd {:?} with {}: no trace context expected\n{recorded}",
            containerd_version(),
            runtime()
        );
        return;
    }
    // The trace id of the Create request, as tether logged it.
    let trace_id = log
        .lines()
        .filter(|l| l.contains("rpc=\"create\""))
        .find_map(|l| l.split("trace_id=").nth(1))
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>()
        })
        .unwrap_or_else(|| {
            panic!(
                "no create line with a trace id in {}",
                tail(cd.log_path(), 40)
            )
        });
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    let create_call = create_call.unwrap_or_else(|| panic!("no runc create recorded: {recorded}"));
    assert!(
        create_call.starts_with(&format!("create 00-{trace_id}-")),
        "runc create carries the Create request's trace context: {create_call:?} (trace {trace_id})"
    );
}
