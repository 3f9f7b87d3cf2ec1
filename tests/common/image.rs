//! OCI image archives built from a busybox-static rootfs, for tests that need images in
//! containerd's store (the CRI plugin, ctr's checkpoint/restore) with no registry to pull from.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{describe, output_timeout};

/// `sha256:<hex>` of `data`.
fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Writes `data` as a blob of the OCI layout at `layout`; returns its descriptor.
fn put_blob(layout: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let d = digest(data);
    let path = layout.join("blobs/sha256").join(&d["sha256:".len()..]);
    fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    serde_json::json!({ "mediaType": media_type, "digest": d, "size": data.len() })
}

/// Runs `cmd` (tar, gzip) with a bound; panics with its output unless it succeeds.
fn run_ok(cmd: Command) {
    let what = format!("{cmd:?}");
    let out = output_timeout(cmd, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{what} failed\n{}", describe(&out));
}

/// The OCI architecture name of this machine (what `uname -m` says, in Go's spelling).
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => panic!("no OCI architecture name known for {other}"),
    }
}

/// Builds `<dir>/images.tar`: an OCI image layout archive with one gzip layer (a busybox-static
/// rootfs) and one manifest per `(name, cmd)` image, each named through the
/// `io.containerd.image.name` annotation that `ctr images import` uses.
pub fn build_image_archive(dir: &Path, images: &[(&str, &[&str])]) -> PathBuf {
    let rootfs = dir.join("image-rootfs");
    super::busybox_rootfs(&rootfs);
    let layout = dir.join("oci-layout");
    fs::create_dir_all(layout.join("blobs/sha256")).expect("mkdir blobs");

    // The layer: an uncompressed tar (its digest is the diff_id), then gzipped (its digest is
    // the layer descriptor's).
    let layer_tar = dir.join("layer.tar");
    let mut tar = Command::new("tar");
    tar.args([
        "--sort=name",
        "--numeric-owner",
        "--owner=0",
        "--group=0",
        "-C",
    ])
    .arg(&rootfs)
    .arg("-cf")
    .arg(&layer_tar)
    .arg(".");
    run_ok(tar);
    let mut gzip = Command::new("gzip");
    gzip.args(["-n", "-k", "-f"]).arg(&layer_tar);
    run_ok(gzip);
    let raw = fs::read(&layer_tar).expect("read layer.tar");
    let gz = fs::read(dir.join("layer.tar.gz")).expect("read layer.tar.gz");
    let diff_id = digest(&raw);
    let layer = put_blob(&layout, "application/vnd.oci.image.layer.v1.tar+gzip", &gz);

    let mut manifests = Vec::new();
    for (name, cmd) in images {
        let config = serde_json::json!({
            "architecture": oci_arch(),
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": cmd,
                "WorkingDir": "/",
            },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        });
        let config = put_blob(
            &layout,
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [layer],
        });
        let mut desc = put_blob(
            &layout,
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        );
        let tag = name.rsplit(':').next().unwrap();
        desc["platform"] = serde_json::json!({ "architecture": oci_arch(), "os": "linux" });
        desc["annotations"] = serde_json::json!({
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": tag,
        });
        manifests.push(desc);
    }
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": manifests });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();

    let archive = dir.join("images.tar");
    let mut tar = Command::new("tar");
    tar.arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .args(["oci-layout", "index.json", "blobs"]);
    run_ok(tar);
    archive
}
