//! Compiles the `.proto` files tether owns (`protos/`, see its README) into `$OUT_DIR/protos`.
//!
//! Release builds of the shim lay out the code the shim runs first, contiguously
//! (`layout/symbol-order.txt`, see `layout/README.md`).
//!
//! A shim's resident memory is mostly its mapped code, and the kernel maps file pages in
//! 64 KiB blocks around each fault: one function called anywhere in a block makes the whole
//! block resident. Grouping the functions the shim calls keeps the untouched code (printf,
//! scanf, iconv, the resolver, panic machinery...) out of every shim's RSS.
//!
//! Only with rustc's bundled lld (the default linker for x86_64-unknown-linux-gnu since Rust
//! 1.90), which understands `--symbol-ordering-file`; `TETHER_NO_LAYOUT=1` turns it off.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    compile_protos();
    build_stamp();
    println!("cargo:rerun-if-changed=layout/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=TETHER_NO_LAYOUT");
    println!("cargo:rerun-if-env-changed=TETHER_LINK_MAP");
    // A link map (which input sections went where) for checking the layout: symbols survive
    // in it even though the release binary is stripped.
    if let Some(map) = env::var_os("TETHER_LINK_MAP") {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,-Map={}",
            Path::new(&map).display()
        );
    }
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let target = env::var("TARGET").unwrap_or_default();
    if !release
        || target != "x86_64-unknown-linux-gnu"
        || env::var_os("TETHER_NO_LAYOUT").is_some()
        || !links_with_lld()
    {
        return;
    }
    // Every laid-out build keeps its map in OUT_DIR, so `layout/check.sh` can tell whether the
    // order file still names this build's functions without linking again.
    if env::var_os("TETHER_LINK_MAP").is_none() {
        let out = Path::new(&env::var("OUT_DIR").unwrap()).join("link-map.txt");
        println!("cargo:rustc-link-arg-bins=-Wl,-Map={}", out.display());
    }
    let order = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("layout/symbol-order.txt");
    if order.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Symbols of an older build that no longer exist are expected, not news.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// `TETHER_GIT_COMMIT` and `TETHER_BUILD_DATE` for `--version` (src/version.rs): the commit
/// from `git rev-parse` when building from a checkout (else "unknown", as from a source
/// tarball), the date from `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
fn build_stamp() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=TETHER_GIT_COMMIT");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    // A packager building outside the checkout can name the commit itself.
    let commit = env::var("TETHER_GIT_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            let head = git(&["rev-parse", "--short=12", "HEAD"])?;
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
            Some(if dirty { format!("{head}-dirty") } else { head })
        })
        .unwrap_or_else(|| "unknown".into());
    // Rebuild the stamp when HEAD moves (a commit, a checkout).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = Path::new(&dir);
        for f in ["HEAD", "index"] {
            if dir.join(f).exists() {
                println!("cargo:rerun-if-changed={}", dir.join(f).display());
            }
        }
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                let p = Path::new(&common).join(head_ref);
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
    }
    let epoch = env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    println!("cargo:rustc-env=TETHER_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=TETHER_BUILD_DATE={}", utc_date(epoch));
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, Howard Hinnant's
/// algorithm), so build.rs needs no date crate.
fn utc_date(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

/// rustc 1.90+ links this target with its own lld unless a linker is configured.
fn links_with_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker=")
        || flags.contains("linker-features=-lld")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (...)"
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}

/// `protos/` → Rust, with protobuf-codegen's own parser (no `protoc` needed) and the lite
/// runtime (no reflection tables: the shim only decodes these messages).
fn compile_protos() {
    println!("cargo:rerun-if-changed=protos");
    protobuf_codegen::Codegen::new()
        .pure()
        .include("protos")
        .input("protos/runtimeoptions/v1/api.proto")
        .input("protos/types/introspection.proto")
        .input("protos/runc/options/checkpoint.proto")
        .customize(
            protobuf_codegen::Customize::default()
                .lite_runtime(true)
                .gen_mod_rs(true),
        )
        .cargo_out_dir("protos")
        .run_from_script();
}
