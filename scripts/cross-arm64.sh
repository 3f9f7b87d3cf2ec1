#!/usr/bin/env bash
# Proves the release build is not tied to x86_64: a release cross-build of the shim for
# aarch64-unknown-linux-gnu, static like the native one (.cargo/config.toml's flags apply to
# every Linux glibc target). Installs what is missing: the rustup target and Debian's
# gcc-aarch64-linux-gnu (linker and arm64 glibc). The binary is not run.
set -euo pipefail

. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
if ! rustup target list --installed | grep -qx "$target"; then
    echo "+ rustup target add $target"
    rustup target add "$target"
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! dpkg -s libc6-dev-arm64-cross >/dev/null 2>&1; then
    echo "+ apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi

echo "+ cargo build --release --target $target --bin containerd-shim-tether-v2"
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    cargo build --release --target "$target" --bin containerd-shim-tether-v2

bin=target/$target/release/containerd-shim-tether-v2
info=$(file -L "$bin")
echo "$info"
case "$info" in
*"ARM aarch64"*"statically linked"*) ;;
*"ARM aarch64"*"static-pie linked"*) ;;
*) echo "cross-arm64: $bin is not a static aarch64 executable" >&2; exit 1 ;;
esac
