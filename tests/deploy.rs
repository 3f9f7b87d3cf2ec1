//! deploy/: the installer image, built without a registry or builder (`deploy/build-image.sh`),
//! imports into a private containerd with `ctr images import` and, run through tether with
//! the DaemonSet's host mounts (temp dirs here) and no containerd restart, installs the
//! handler into the mounted config and uninstalls it again to the original bytes: what
//! `deploy/daemonset.yaml` does on a node.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{describe, output_timeout, release_shim_binary, stale_binary_reason, Containerd};

const NAME: &str = concat!(
    "docker.io/library/tether-installer:",
    env!("CARGO_PKG_VERSION")
);

#[test]
fn the_installer_image_imports_and_installs_through_tether() {
    common::require_root();
    let bin = release_shim_binary();
    if let Some(why) = stale_binary_reason(&bin) {
        panic!("{why}: run `cargo build --release --bin containerd-shim-tether-v2` first");
    }
    let cd = Containerd::start();
    let archive = cd.dir().join("installer.oci.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/build-image.sh");
    let mut build = Command::new(&script);
    build.arg(&bin).arg(&archive);
    let out = output_timeout(build, Duration::from_secs(120)).unwrap();
    assert!(out.status.success(), "build-image.sh: {}", describe(&out));

    let imported = cd.ctr_ok(&["images", "import", archive.to_str().unwrap()]);
    let listed = cd.ctr_ok(&["images", "ls", "-q"]);
    assert!(
        listed.lines().any(|l| l == NAME),
        "import printed {imported:?}; images: {listed:?}"
    );

    // The host's /etc/containerd and bin dir, as the DaemonSet mounts them.
    let host = cd.dir().join("host");
    let (etc, bin_dir) = (host.join("etc"), host.join("bin"));
    fs::create_dir_all(&etc).unwrap();
    fs::create_dir_all(&bin_dir).unwrap();
    let original = "# the node's own config\nversion = 2\n\n[grpc]\n  uid = 0\n";
    fs::write(etc.join("config.toml"), original).unwrap();
    let run = |id: &str, action: &str| {
        let mounts = [
            format!(
                "type=bind,src={},dst=/host/etc/containerd,options=rbind:rw",
                etc.display()
            ),
            format!(
                "type=bind,src={},dst=/host/usr/local/bin,options=rbind:rw",
                bin_dir.display()
            ),
        ];
        let runtime = common::runtime();
        let args: Vec<&str> = vec![
            "run",
            "--rm",
            "--runtime",
            &runtime,
            "--mount",
            &mounts[0],
            "--mount",
            &mounts[1],
            "--env",
            "RESTART=0",
            "--env",
            "SLEEP=0",
            NAME,
            id,
            "/entrypoint.sh",
            action,
        ];
        cd.track_id(id);
        let out = cd.ctr_timeout(&args, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{action} in the image: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let out = run("installer", "install");
    assert!(out.contains("handler: tether"), "{out}");
    let text = fs::read_to_string(etc.join("config.toml")).unwrap();
    assert!(
        text.starts_with(original)
            && text.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.tether]"),
        "{text}"
    );
    assert_eq!(
        fs::read(bin_dir.join("containerd-shim-tether-v2")).unwrap(),
        fs::read(&bin).unwrap(),
        "the image's shim was not put in the bin dir"
    );
    assert!(
        !bin_dir.join("tether-install").exists(),
        "the installer itself was installed"
    );

    run("uninstaller", "uninstall");
    assert_eq!(
        fs::read_to_string(etc.join("config.toml")).unwrap(),
        original
    );
    assert!(!bin_dir.join("containerd-shim-tether-v2").exists());
}
