//! `tether-install install` / `uninstall` against real containerd configs (issue 22,
//! item 5).
//!
//! For every containerd the suite knows (the one on `PATH`, 1.6 on Debian 12, and each build
//! `scripts/containerd-versions.sh --print` lists: 1.7, 2.x): its own `containerd config
//! default`, then a user's config with comments and runtimes of their own. Each is installed
//! into, loaded by a private containerd of that version (the edited file, with only its
//! root, state, sockets and host-wide plugins moved to a temp dir), whose CRI `Status` must
//! list the handler, and uninstalled back to the original bytes. Also: idempotence, the
//! user's later edits surviving uninstall, a config that is not TOML refused untouched with
//! its line and column, and install without root refused.

mod common;
#[path = "common/cri_client.rs"]
mod cri_client;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{describe, output_timeout, require_root, shim_binary, tail};
use cri_client::Cri;
use toml_edit::{value, Array, DocumentMut};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A containerd build: the directory of `containerd` and `ctr`, `None` for the `PATH`'s.
#[derive(Debug, Clone)]
struct Build {
    dir: Option<PathBuf>,
    major: u32,
    version: String,
}

impl Build {
    fn tool(&self, name: &str) -> PathBuf {
        match &self.dir {
            Some(d) => d.join(name),
            None => PathBuf::from(name),
        }
    }
}

/// The `PATH`'s containerd and every cached newer one; at least one 1.x and one 2.x.
fn builds() -> Vec<Build> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/containerd-versions.sh");
    let out = Command::new(&script)
        .arg("--print")
        .output()
        .expect("containerd-versions.sh");
    assert!(out.status.success(), "{}", describe(&out));
    let mut dirs = vec![None];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let dir = PathBuf::from(line.trim());
        assert!(
            dir.join("containerd").exists(),
            "{} is missing: run scripts/containerd-versions.sh",
            dir.display()
        );
        dirs.push(Some(dir));
    }
    let builds: Vec<Build> = dirs
        .into_iter()
        .map(|dir| {
            let mut b = Build {
                dir,
                major: 0,
                version: String::new(),
            };
            let out = Command::new(b.tool("containerd")).arg("--version").output();
            let out = out.unwrap_or_else(|e| panic!("{:?} --version: {e}", b.tool("containerd")));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            b.version = text.split_whitespace().nth(2).unwrap_or("?").to_string();
            b.major = b.version.trim_start_matches('v')[..1]
                .parse()
                .expect("major");
            b
        })
        .collect();
    assert!(
        builds.iter().any(|b| b.major == 1),
        "no containerd 1.x: {builds:?}"
    );
    assert!(
        builds.iter().any(|b| b.major == 2),
        "no containerd 2.x: {builds:?}"
    );
    builds
}

/// The installer cargo built next to the shim.
fn installer() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tether-install"))
}

/// Runs `tether-install` with `args` (bounded).
fn shim(args: &[&str]) -> Output {
    let mut cmd = Command::new(installer());
    cmd.args(args).stdin(Stdio::null());
    output_timeout(cmd, TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// `install`/`uninstall` of `config` with the binary going to `bin`; must succeed.
fn run_ok(action: &str, config: &Path, bin: &Path) -> Output {
    let out = shim(&[
        action,
        "-config",
        config.to_str().unwrap(),
        "-bin-dir",
        bin.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{action}: {}", describe(&out));
    out
}

/// A private containerd started on `config` with its paths moved under `dir`.
struct Private {
    child: Child,
    log: PathBuf,
    address: String,
}

impl Drop for Private {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        common::kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        common::kill(pid, libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Starts `build`'s containerd on the installed `config`, changed only where it would touch
/// the host's containerd: root, state, the sockets, and plugins that bind host-wide paths.
fn start(build: &Build, config: &Path, dir: &Path) -> Private {
    let text = fs::read_to_string(config).unwrap();
    let mut doc: DocumentMut = text.parse().unwrap();
    let address = dir.join("c.sock").to_string_lossy().into_owned();
    doc["root"] = value(dir.join("root").to_str().unwrap());
    doc["state"] = value(dir.join("state").to_str().unwrap());
    // Config version 4 (containerd 2.3+'s default) moved the server addresses into the
    // server plugins' own tables.
    if doc.get("version").and_then(|v| v.as_integer()) == Some(4) {
        doc["plugins"]["io.containerd.server.v1.grpc"]["address"] = value(&address);
        doc["plugins"]["io.containerd.server.v1.ttrpc"]["address"] =
            value(format!("{address}.ttrpc"));
    } else {
        doc["grpc"]["address"] = value(&address);
        doc["ttrpc"]["address"] = value(format!("{address}.ttrpc"));
    }
    let mut disabled = Array::new();
    for p in [
        "io.containerd.internal.v1.opt",
        "io.containerd.nri.v1.nri",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.internal.v1.tracing",
    ] {
        disabled.push(p);
    }
    doc["disabled_plugins"] = value(disabled);
    let run = dir.join("run.toml");
    fs::write(&run, doc.to_string()).unwrap();
    let log = dir.join("containerd.log");
    let logf = fs::File::create(&log).unwrap();
    let mut cmd = Command::new(build.tool("containerd"));
    cmd.arg("--config")
        .arg(&run)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf);
    let child = cmd.spawn().expect("start containerd");
    let private = Private {
        child,
        log,
        address,
    };
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut ctr = Command::new(build.tool("ctr"));
        ctr.args(["--address", &private.address, "version"]);
        if matches!(output_timeout(ctr, Duration::from_secs(5)), Ok(o) if o.status.success()) {
            return private;
        }
        assert!(
            Instant::now() < deadline,
            "containerd {} did not start on {}:\n{}",
            build.version,
            run.display(),
            tail(&private.log, 40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The runtime handlers containerd's CRI reports: `runtime_handlers` (containerd 2.x) and the
/// `config` of the verbose `Status` (every version), which must agree.
fn cri_handlers(private: &Private, build: &Build) -> Vec<(String, String)> {
    let cri = Cri::connect(&private.address, TIMEOUT);
    cri.wait_runtime_ready(TIMEOUT);
    let req = k8s_cri::v1::StatusRequest { verbose: true };
    let resp = cri.ok("Status", cri.rs().status(req));
    let config = resp
        .info
        .get("config")
        .unwrap_or_else(|| panic!("no `config` in verbose Status: {:?}", resp.info.keys()));
    let config: serde_json::Value = serde_json::from_str(config).unwrap();
    let runtimes = config["containerd"]["runtimes"]
        .as_object()
        .unwrap_or_else(|| panic!("no containerd.runtimes in {config}"));
    let mut out: Vec<(String, String)> = runtimes
        .iter()
        .map(|(name, r)| {
            (
                name.clone(),
                r["runtimeType"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    if build.major >= 2 {
        let mut names: Vec<String> = resp
            .runtime_handlers
            .iter()
            .map(|h| h.name.clone())
            .collect();
        names.retain(|n| !n.is_empty());
        names.sort();
        let from_config: Vec<String> = out.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, from_config, "runtime_handlers vs config");
    }
    out
}

/// install → loads, CRI lists tether next to runc → install again changes nothing →
/// uninstall gives `original` back byte for byte → uninstall again changes nothing.
fn round_trip(build: &Build, original: &[u8], what: &str) {
    let dir = tempfile::Builder::new()
        .prefix("tether-inst-")
        .tempdir_in("/tmp")
        .unwrap();
    let config = dir.path().join("etc/config.toml");
    let bin = dir.path().join("bin");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::write(&config, original).unwrap();

    let out = run_ok("install", &config, &bin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("kind: RuntimeClass") && stdout.contains("handler: tether"),
        "{what}: {}",
        describe(&out)
    );
    let installed = fs::read(&config).unwrap();
    assert_ne!(installed, original, "{what}: install changed nothing");
    assert_eq!(
        fs::read(bin.join("containerd-shim-tether-v2")).unwrap(),
        fs::read(shim_binary()).unwrap(),
        "{what}: the binary was not copied"
    );
    // Every line of the original is still there, in its order.
    let text = String::from_utf8_lossy(&installed).into_owned();
    let mut rest = text.as_str();
    for line in String::from_utf8_lossy(original).lines() {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{what}: install lost {line:?}:\n{text}"));
        rest = &rest[at + line.len()..];
    }
    let plugin =
        if build.major >= 2 && (text.contains("version = 3") || text.contains("version = 4")) {
            "io.containerd.cri.v1.runtime"
        } else {
            "io.containerd.grpc.v1.cri"
        };
    let doc: DocumentMut = text.parse().unwrap();
    assert_eq!(
        doc["plugins"][plugin]["containerd"]["runtimes"]["tether"]["runtime_type"].as_str(),
        Some("io.containerd.tether.v2"),
        "{what}: no tether under {plugin}:\n{text}"
    );

    {
        let private = start(build, &config, dir.path());
        let handlers = cri_handlers(&private, build);
        for want in [
            ("runc", "io.containerd.runc.v2"),
            ("tether", "io.containerd.tether.v2"),
        ] {
            assert!(
                handlers
                    .iter()
                    .any(|(n, t)| (n.as_str(), t.as_str()) == want),
                "{what}: containerd {} CRI lacks {want:?}: {handlers:?}\n{}",
                build.version,
                tail(&private.log, 20)
            );
        }
    }

    run_ok("install", &config, &bin);
    assert_eq!(
        fs::read(&config).unwrap(),
        installed,
        "{what}: second install changed it"
    );

    run_ok("uninstall", &config, &bin);
    assert_eq!(
        fs::read(&config).unwrap(),
        original,
        "{what}: uninstall did not restore the bytes"
    );
    assert!(
        !bin.join("containerd-shim-tether-v2").exists(),
        "{what}: binary left"
    );
    assert!(!dir
        .path()
        .join("etc/config.toml.tether-install.json")
        .exists());
    run_ok("uninstall", &config, &bin);
    assert_eq!(
        fs::read(&config).unwrap(),
        original,
        "{what}: second uninstall"
    );
}

#[test]
fn each_containerds_default_config_round_trips() {
    require_root();
    for build in builds() {
        let out = Command::new(build.tool("containerd"))
            .args(["config", "default"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        let what = format!("containerd {} config default", build.version);
        round_trip(&build, &out.stdout, &what);
    }
}

/// A user's config version 2 (1.x) or 3 (2.x) with comments and a runtime of their own.
fn user_config(build: &Build) -> String {
    let (version, plugin) = if build.major >= 2 {
        (3, "io.containerd.cri.v1.runtime")
    } else {
        (2, "io.containerd.grpc.v1.cri")
    };
    format!(
        r#"# Node config, managed by hand. Do not reorder.
version = {version}

[plugins]
  [plugins."{plugin}"]
    # our own default
    [plugins."{plugin}".containerd]
      default_runtime_name = "runc"
      [plugins."{plugin}".containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'   # single quotes, kept
      [plugins."{plugin}".containerd.runtimes.slow]
        runtime_type = "io.containerd.runc.v2"
        [plugins."{plugin}".containerd.runtimes.slow.options]
          BinaryName = "runc"

# trailing comment
"#
    )
}

#[test]
fn a_users_config_keeps_its_comments_and_later_edits() {
    require_root();
    for build in builds() {
        let original = user_config(&build);
        let what = format!("user config under containerd {}", build.version);
        round_trip(&build, original.as_bytes(), &what);

        // Edited by the user after install: uninstall keeps the edit, takes tether out.
        let dir = tempfile::Builder::new()
            .prefix("tether-inst-")
            .tempdir_in("/tmp")
            .unwrap();
        let config = dir.path().join("config.toml");
        let bin = dir.path().join("bin");
        fs::write(&config, &original).unwrap();
        run_ok("install", &config, &bin);
        let edited = fs::read_to_string(&config)
            .unwrap()
            .replace("# trailing comment", "# trailing comment, edited later");
        fs::write(&config, &edited).unwrap();
        run_ok("uninstall", &config, &bin);
        assert_eq!(
            fs::read_to_string(&config).unwrap(),
            original.replace("# trailing comment", "# trailing comment, edited later"),
            "{what}: uninstall after an edit"
        );
    }
}

#[test]
fn a_broken_config_is_refused_untouched_with_its_position() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let bin = dir.path().join("bin");
    let broken = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"\n  x = 1\n";
    fs::write(&config, broken).unwrap();
    let out = shim(&[
        "install",
        "-config",
        config.to_str().unwrap(),
        "-bin-dir",
        bin.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(stderr.contains("line 3, column"), "{}", describe(&out));
    assert!(stderr.contains("left untouched"), "{}", describe(&out));
    assert_eq!(fs::read_to_string(&config).unwrap(), broken);
    assert!(
        !bin.exists(),
        "the binary was installed for a refused config"
    );
    assert!(!dir.path().join("config.toml.tether-install.json").exists());
}

#[test]
fn install_without_root_says_so() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, "version = 2\n").unwrap();
    // The test binary may sit under a root-only dir: run a copy anybody can read.
    let exe = dir.path().join("tether-install");
    fs::copy(installer(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["install", "-config", config.to_str().unwrap()]);
    let out = output_timeout(cmd, TIMEOUT).unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must run as root"),
        "{}",
        describe(&out)
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), "version = 2\n");
}
