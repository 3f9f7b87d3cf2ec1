//! Rootfs mounts made for real: overlay with options longer than a page. Root only: these fail,
//! never skip, without it.

use std::fs;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tether::mount::{mount_all, unmount_all, Mount};

/// Lazily unmounts `path` when dropped, so a failed assertion leaves no mount behind.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// An image with many layers: 120 lowerdirs under a long path make a `lowerdir=` option of
/// ~12 kB, three times what mount(2) takes. `mount_all` (what Create calls) must still
/// mount every layer, top to bottom.
#[test]
fn overlay_with_options_longer_than_a_page() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts overlay and needs root: run `sudo -E cargo test --test root_mount`"
    );
    let tmp = tempfile::tempdir().unwrap();
    // tmpfs, so upperdir is on a filesystem overlay accepts whatever backs /tmp.
    mount(
        Some("tmpfs"),
        tmp.path(),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let _tmpfs = Unmount(tmp.path().to_owned());
    let root = tmp
        .path()
        .join("io.containerd.snapshotter.v1.overlayfs-with-a-deliberately-long-directory-name");
    let snapshots = root.join("snapshots");
    let layers: Vec<_> = (100..220)
        .map(|n| snapshots.join(n.to_string()).join("fs"))
        .collect();
    for (i, l) in layers.iter().enumerate() {
        fs::create_dir_all(l).unwrap();
        fs::write(l.join("who"), format!("layer {i}")).unwrap();
    }
    fs::write(layers[0].join("top"), "top").unwrap();
    fs::write(layers[layers.len() - 1].join("bottom"), "bottom").unwrap();
    let (upper, work, target) = (root.join("upper"), root.join("work"), root.join("rootfs"));
    for d in [&upper, &work, &target] {
        fs::create_dir_all(d).unwrap();
    }
    let lowerdir = layers
        .iter()
        .map(|l| l.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let options = vec![
        "index=off".to_string(),
        format!("workdir={}", work.display()),
        format!("upperdir={}", upper.display()),
        format!("lowerdir={lowerdir}"),
    ];
    assert!(
        options.join(",").len() > 3 * 4096,
        "the test must exceed a page"
    );
    let m = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options,
    };
    let cwd = std::env::current_dir().unwrap();

    mount_all(&[m], &target).expect("mount overlay with a long lowerdir list");
    let mounted = Unmount(target.clone());
    assert_eq!(fs::read_to_string(target.join("top")).unwrap(), "top");
    assert_eq!(fs::read_to_string(target.join("bottom")).unwrap(), "bottom");
    assert_eq!(
        fs::read_to_string(target.join("who")).unwrap(),
        "layer 0",
        "the first lowerdir is the top layer"
    );
    fs::write(target.join("written"), "x").unwrap();
    assert!(
        upper.join("written").exists(),
        "writes go to the (absolute) upperdir"
    );
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "the process's cwd is untouched"
    );

    unmount_all(&target);
    std::mem::forget(mounted);
    assert!(!target.join("top").exists(), "unmounted");
}
