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
