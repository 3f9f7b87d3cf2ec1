//! `containerd-shim-tether-v2 -v` / `--version` (issue 22, item 3): the binary containerd
//! runs names its version, the commit it was built from, its build date and the protocols it
//! speaks, and needs no other flag.

mod common;

use std::process::Command;

use common::{describe, shim_binary};

fn version_output(flag: &str) -> String {
    let out = Command::new(shim_binary()).arg(flag).output().unwrap();
    assert!(out.status.success(), "{flag}: {}", describe(&out));
    assert!(out.stderr.is_empty(), "{flag}: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn v_and_version_print_version_commit_date_and_protocols() {
    let text = version_output("-v");
    assert_eq!(text, version_output("--version"));
    assert_eq!(text, version_output("-version"));
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{text}"))
    };
    assert!(text.starts_with("containerd-shim-tether-v2:\n"), "{text}");
    assert_eq!(field("Version:"), env!("CARGO_PKG_VERSION"));
    // The commit this checkout is at (the test builds from it), unless built outside git.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let revision = field("Revision:");
    match head {
        Some(head) => assert!(
            revision == head || revision == format!("{head}-dirty"),
            "Revision {revision:?}, HEAD {head}"
        ),
        None => assert_eq!(revision, "unknown"),
    }
    let built = field("Built:");
    assert!(
        built.len() == 20 && built.as_bytes()[10] == b'T' && built.ends_with('Z'),
        "Built {built:?}"
    );
    for proto in [
        "containerd.task.v2.Task",
        "containerd.task.v3.Task",
        "BootstrapParams",
        "ttrpc",
    ] {
        assert!(text.contains(proto), "{proto} missing:\n{text}");
    }
}
