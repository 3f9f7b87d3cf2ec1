//! Rootfs mounts made for real: overlay with options longer than a page, idmapped bind and
//! overlay mounts. Root only: these fail, never skip, without it.

use std::fs;
use std::os::unix::fs::{chown, MetadataExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tether::error::Error;
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
    // tmpfs, so upperdir is on a filesystem overlay accepts whatever backs /tmp.
    let (tmp, _tmpfs) = tmpfs();
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

// ------------------------------------------------------------------------------------------------
// Idmapped mounts (containerd 2.x `uidmap=`/`gidmap=` options)
// ------------------------------------------------------------------------------------------------

const UIDMAP: &str = "uidmap=0:100000:65536";
const GIDMAP: &str = "gidmap=0:200000:65536";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts and needs root: run `sudo -E cargo test --test root_mount`"
    );
}

/// A tmpfs (which supports idmapped mounts) on a temp dir, lazily unmounted on drop.
fn tmpfs() -> (tempfile::TempDir, Unmount) {
    let tmp = tempfile::tempdir().unwrap();
    mount(
        Some("tmpfs"),
        tmp.path(),
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let guard = Unmount(tmp.path().to_owned());
    (tmp, guard)
}

/// A file with `text`, owned by `uid:gid`.
fn file(path: &Path, text: &str, uid: u32, gid: u32) {
    fs::write(path, text).unwrap();
    chown(path, Some(uid), Some(gid)).unwrap();
}

/// Owner of `path` as the kernel reports it to us (through any idmapped mount on the way).
fn owner(path: &Path) -> (u32, u32) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.uid(), m.gid())
}

/// Mount points at or under `dir`, from our mountinfo.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| mp == dir || mp.starts_with(&format!("{dir}/")))
        .collect()
}

/// Children of this process in another user namespace still there after 2 s (the user
/// namespace helper must not linger; another test's may be passing through).
fn unreaped_children() -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let left = userns_children();
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn userns_children() -> Vec<String> {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/ns/user")).ok()
                != fs::read_link("/proc/self/ns/user").ok()
        })
        .collect()
}

/// A bind mount with `uidmap=`/`gidmap=` shows every file's owner shifted by the mapping, as the
/// kernel reports it to the host, while the source keeps its real owners.
#[test]
fn idmapped_bind_mount_shows_mapped_owners() {
    require_root();
    let (tmp, _tmpfs) = tmpfs();
    let (src, target) = (tmp.path().join("src"), tmp.path().join("target"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&target).unwrap();
    file(&src.join("by-root"), "r", 0, 0);
    file(&src.join("by-user"), "u", 5, 7);
    let m = Mount {
        kind: "bind".into(),
        source: src.to_str().unwrap().into(),
        options: vec!["rbind".into(), UIDMAP.into(), GIDMAP.into()],
    };

    mount_all(&[m], &target).expect("idmapped bind mount");
    let _mounted = Unmount(target.clone());
    assert_eq!(owner(&target.join("by-root")), (100000, 200000));
    assert_eq!(owner(&target.join("by-user")), (100005, 200007));
    assert_eq!(fs::read_to_string(target.join("by-user")).unwrap(), "u");
    assert_eq!(
        owner(&src.join("by-root")),
        (0, 0),
        "the source is untouched"
    );
    assert_eq!(owner(&src.join("by-user")), (5, 7));
    assert!(unreaped_children().is_empty(), "{:?}", unreaped_children());

    unmount_all(&target);
    assert!(
        mounts_under(&target).is_empty(),
        "{:?}",
        mounts_under(&target)
    );
    assert!(!target.join("by-root").exists());
}

/// An overlay with `uidmap=`/`gidmap=` mounts with its layers idmapped: files of every layer
/// show the mapped owners; the temporary idmapped copy of the layers is gone afterwards.
#[test]
fn idmapped_overlay_shows_mapped_owners_of_its_layers() {
    require_root();
    let (tmp, _tmpfs) = tmpfs();
    let snapshots = tmp.path().join("snapshots");
    let (l1, l2) = (snapshots.join("1/fs"), snapshots.join("2/fs"));
    let (upper, work) = (snapshots.join("3/fs"), snapshots.join("3/work"));
    let bundle = tmp.path().join("bundle");
    let target = bundle.join("rootfs");
    for d in [&l1, &l2, &upper, &work, &target] {
        fs::create_dir_all(d).unwrap();
    }
    file(&l1.join("top"), "top", 0, 0);
    file(&l2.join("bottom"), "bottom", 3, 4);
    file(&l2.join("top"), "hidden", 9, 9);
    let m = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options: vec![
            "index=off".into(),
            format!("workdir={}", work.display()),
            format!("upperdir={}", upper.display()),
            format!("lowerdir={}:{}", l1.display(), l2.display()),
            UIDMAP.into(),
            GIDMAP.into(),
        ],
    };

    mount_all(&[m], &target).expect("idmapped overlay");
    let _mounted = Unmount(target.clone());
    assert_eq!(fs::read_to_string(target.join("top")).unwrap(), "top");
    assert_eq!(owner(&target.join("top")), (100000, 200000));
    assert_eq!(owner(&target.join("bottom")), (100003, 200004));
    assert_eq!(owner(&l2.join("bottom")), (3, 4), "the layer is untouched");
    let leftovers: Vec<_> = fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "rootfs")
        .collect();
    assert!(leftovers.is_empty(), "left in the bundle: {leftovers:?}");
    assert_eq!(
        mounts_under(&bundle),
        vec![target.to_str().unwrap().to_string()],
        "only the overlay stays mounted"
    );
    assert!(unreaped_children().is_empty(), "{:?}", unreaped_children());

    unmount_all(&target);
    assert!(!target.join("top").exists(), "unmounted");
}

/// A malformed or one-sided mapping is InvalidArgument and nothing is mounted, not even the
/// well-formed mounts before it.
#[test]
fn malformed_mappings_are_refused_before_anything_is_mounted() {
    require_root();
    let (tmp, _tmpfs) = tmpfs();
    let (src, target) = (tmp.path().join("src"), tmp.path().join("target"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&target).unwrap();
    let bind = |options: &[&str]| Mount {
        kind: "bind".into(),
        source: src.to_str().unwrap().into(),
        options: ["rbind"]
            .iter()
            .chain(options)
            .map(|o| o.to_string())
            .collect(),
    };
    for bad in [
        &["uidmap=0:100000", GIDMAP][..],
        &["uidmap=x:0:1", GIDMAP],
        &["uidmap=-1:0:1", GIDMAP],
        &["uidmap=0:1000:0", GIDMAP],
        &["uidmap=0:4294967295:2", GIDMAP],
        &[UIDMAP, "gidmap=0:100:10,5:300:10"],
        &[UIDMAP],
        &[GIDMAP],
    ] {
        match mount_all(&[bind(&[]), bind(bad)], &target) {
            Err(Error::InvalidArgument(msg)) => assert!(!msg.is_empty()),
            other => panic!("{bad:?}: expected InvalidArgument, got {other:?}"),
        }
        assert!(
            mounts_under(&target).is_empty(),
            "{bad:?} mounted {:?}",
            mounts_under(&target)
        );
    }
}

/// Idmapped mounts made at the same moment from several threads (the shim mounts each Create's
/// rootfs on a thread of its own) all finish: each one's user namespace helper is a forked child
/// that inherits the other calls' pipes, so none may wait for its pipe's end-of-file alone.
#[test]
fn concurrent_idmapped_mounts_do_not_wait_on_each_other() {
    require_root();
    let (tmp, _tmpfs) = tmpfs();
    const THREADS: usize = 8;
    const ROUNDS: usize = 5;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let (tx, rx) = std::sync::mpsc::channel();
    for t in 0..THREADS {
        let (barrier, tx, dir) = (barrier.clone(), tx.clone(), tmp.path().join(t.to_string()));
        std::thread::spawn(move || {
            let (src, target) = (dir.join("src"), dir.join("target"));
            fs::create_dir_all(&src).unwrap();
            fs::create_dir_all(&target).unwrap();
            file(&src.join("f"), "x", 1, 1);
            for _ in 0..ROUNDS {
                let m = Mount {
                    kind: "bind".into(),
                    source: src.to_str().unwrap().into(),
                    options: vec!["rbind".into(), UIDMAP.into(), GIDMAP.into()],
                };
                barrier.wait();
                let mounted = mount_all(&[m], &target);
                let seen = mounted.as_ref().ok().map(|()| owner(&target.join("f")));
                unmount_all(&target);
                tx.send(mounted.map(|()| seen)).unwrap();
            }
        });
    }
    drop(tx);
    for n in 0..THREADS * ROUNDS {
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| {
                panic!(
                    "idmapped mount {n} of {} did not finish: {e}",
                    THREADS * ROUNDS
                )
            });
        assert_eq!(got.expect("idmapped bind mount"), Some((100001, 200001)));
    }
}
