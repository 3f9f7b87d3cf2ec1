//! The runc option `ShimCgroup` with a real containerd, ctr and runc: the shim server is moved
//! into the named cgroup at `start` (containerd's own integration suite checks the same for the
//! Go shim: the cgroup holds a process afterwards), and a cgroup that does not exist fails the
//! start and leaves no server behind.
//!
//! The options reach `start` as ctr hands a non-runc runtime its options file
//! (`--runtime-config-path`, `runtimeoptions.v1.Options { ConfigPath }` on start's stdin), or,
//! as containerd 2.3+ sends them, in a `BootstrapParams` extension (that test runs `start`
//! itself).
//!
//! On this kind of host (v1 or hybrid) the cgroup is a static path in every v1 hierarchy. The
//! cgroup2 form runs in the VM lane (`scripts/vm-test.sh` runs the `#[ignore]`d test inside a
//! pure cgroup v2 guest).

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, Extension};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

use common::*;

/// The cgroupfs mounts of this host as (mount point, is cgroup2).
fn cgroup_mounts() -> Vec<(PathBuf, bool)> {
    let text = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mount_point = pre.split_whitespace().nth(4)?;
            match fstype {
                "cgroup" => Some((PathBuf::from(mount_point), false)),
                "cgroup2" => Some((PathBuf::from(mount_point), true)),
                _ => None,
            }
        })
        .collect()
}

/// A cgroup made for a test, removed (with retries while the exiting shim leaves it) on drop.
struct TestCgroup {
    name: String,
    dirs: Vec<PathBuf>,
}

impl TestCgroup {
    /// `/tether-shimcg-…` in every v1 hierarchy (`unified` false) or in the cgroup2 root.
    fn create(unified: bool) -> TestCgroup {
        let name = format!("/{}", unique_id("tether-shimcg"));
        let roots: Vec<PathBuf> = cgroup_mounts()
            .into_iter()
            .filter(|(_, v2)| *v2 == unified)
            .map(|(m, _)| m)
            .collect();
        assert!(!roots.is_empty(), "no cgroup mounts of the wanted layout");
        let mut dirs = Vec::new();
        for root in roots {
            let dir = root.join(name.trim_start_matches('/'));
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            // A new v1 cpuset cgroup has no CPUs or memory nodes, and refuses processes until
            // it has some: copy its parent's, as containerd's cgroup library does.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = fs::read_to_string(root.join(file)) {
                    fs::write(dir.join(file), v.trim()).unwrap();
                }
            }
            dirs.push(dir);
        }
        TestCgroup { name, dirs }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            wait_until(std::time::Duration::from_secs(10), || {
                fs::remove_dir(dir).is_ok() || !dir.exists()
            });
        }
    }
}

fn procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_else(|e| panic!("read {}/cgroup.procs: {e}", dir.display()))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// An options file for ctr naming `cgroup`, keeping the lane's runtime binary.
fn options_file(cd: &Containerd, cgroup: &str) -> String {
    let path = cd.dir().join(format!("{}.toml", unique_id("shimcg")));
    fs::write(
        &path,
        format!(
            "BinaryName = \"{}\"\nShimCgroup = \"{cgroup}\"\n",
            runtime_binary()
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn the_shim_server_joins_its_cgroup(unified: bool) {
    require_root();
    let cd = Containerd::start();
    let cg = TestCgroup::create(unified);
    let config = options_file(&cd, &cg.name);
    let id = unique_id("shimcg");
    let args = cd
        .run_args(&id, &["sleep", "60"])
        .detach()
        .flag("--runtime-config-path")
        .flag(&config)
        .build();
    cd.ctr_ok(&args);
    let shim = cd.shim_pid(&id).expect("a live shim server");
    for dir in &cg.dirs {
        assert_eq!(
            procs(dir),
            vec![shim],
            "{} holds the shim server and nothing else",
            dir.display()
        );
    }
    let own = fs::read_to_string(format!("/proc/{shim}/cgroup")).unwrap();
    assert!(
        own.lines().any(|l| l.ends_with(&format!(":{}", cg.name))),
        "the server's /proc/{shim}/cgroup names {}:\n{own}",
        cg.name
    );
    // The container is not in the shim's cgroup: runc puts it in its own.
    let (task_pid, status) = cd.task(&id).expect("the task is listed");
    assert_eq!(status, "RUNNING");
    for dir in &cg.dirs {
        assert!(!procs(dir).contains(&task_pid), "{}", dir.display());
    }
    cd.ctr_ok(&["task", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", std::time::Duration::from_secs(30));
    cd.ctr_ok(&["task", "delete", &id]);
    cd.ctr_ok(&["container", "delete", &id]);
}

/// v1 (and hybrid) hosts: the server is in the named cgroup of every v1 hierarchy.
#[test]
fn the_shim_server_joins_its_cgroup_on_v1() {
    the_shim_server_joins_its_cgroup(false);
}

/// A pure cgroup v2 node: the server is in the one named cgroup.
#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn the_shim_server_joins_its_cgroup_on_v2() {
    let fstype_is_cgroup2 = cgroup_mounts()
        .iter()
        .any(|(m, v2)| *v2 && m == Path::new("/sys/fs/cgroup"));
    assert!(
        fstype_is_cgroup2,
        "this test needs a pure cgroup v2 node (scripts/vm-test.sh)"
    );
    the_shim_server_joins_its_cgroup(true);
}

/// Whether `/sys/fs/cgroup` itself is cgroup2 (a pure v2 host).
fn unified_host() -> bool {
    cgroup_mounts()
        .iter()
        .any(|(m, v2)| *v2 && m == Path::new("/sys/fs/cgroup"))
}

/// containerd 2.3+ passes the runtime options to `start` as a `BootstrapParams` extension, not
/// as stdin itself: `ShimCgroup` is read from there too. (No containerd here speaks it; the
/// shim's `start` is run as 2.3 runs it.)
#[test]
fn the_bootstrap_extension_names_the_shim_cgroup() {
    require_root();
    let cg = TestCgroup::create(unified_host());
    let dir = tempfile::tempdir().unwrap();
    let (namespace, id) = (unique_id("ns"), unique_id("shimcg"));
    let address = dir.path().join("containerd.sock").display().to_string();
    let bundle = dir.path().join(&id);
    fs::create_dir_all(&bundle).unwrap();
    fs::write(bundle.join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
    let options = containerd_shim_protos::shim::oci::Options {
        shim_cgroup: cg.name.clone(),
        ..Default::default()
    };
    let params = BootstrapParams {
        instance_id: id.clone(),
        namespace: namespace.clone(),
        containerd_grpc_address: address.clone(),
        socket_dir: Some(dir.path().join("s").display().to_string()),
        extensions: vec![Extension {
            value: Some(Any {
                type_url: "type.googleapis.com/containerd.runc.v1.Options".into(),
                value: options.write_to_bytes().unwrap(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut child = Command::new(shim_binary())
        .args([
            "-namespace",
            &namespace,
            "-address",
            &address,
            "-id",
            &id,
            "start",
        ])
        .current_dir(&bundle)
        .env_remove("TTRPC_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&params.write_to_bytes().unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let result = BootstrapResult::parse_from_bytes(&out.stdout).unwrap();
    let pid: i32 = fs::read_to_string(bundle.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let in_cgroup: Vec<Vec<i32>> = cg.dirs.iter().map(|d| procs(d)).collect();
    // The server has nothing to do: stop it before asserting.
    kill(pid, libc::SIGKILL);
    let _ = fs::remove_file(result.address.trim_start_matches("unix://"));
    for (dir, procs) in cg.dirs.iter().zip(in_cgroup) {
        assert_eq!(procs, vec![pid], "{}", dir.display());
    }
}

/// A `ShimCgroup` that does not exist fails the start (as with the Go shim): ctr reports the
/// cgroup, no server is left serving the container, and its socket is gone.
#[test]
fn a_missing_shim_cgroup_fails_the_start() {
    require_root();
    let cd = Containerd::start();
    let missing = format!("/{}", unique_id("tether-no-such-cgroup"));
    let config = options_file(&cd, &missing);
    let id = unique_id("shimcg");
    let args = cd
        .run_args(&id, &["true"])
        .detach()
        .flag("--runtime-config-path")
        .flag(&config)
        .build();
    let out = cd.ctr(&args);
    assert!(
        !out.status.success(),
        "ctr run succeeded: {}",
        describe(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ShimCgroup") && err.contains(&missing),
        "the error names the option and the cgroup: {err}"
    );
    assert!(
        wait_until(std::time::Duration::from_secs(10), || cd
            .shim_pids()
            .is_empty()),
        "no shim server is left: {:?}",
        cd.shim_pids()
    );
    assert_eq!(cd.task(&id), None, "no task exists");
}
