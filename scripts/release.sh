#!/usr/bin/env bash
# Builds tether's release packages in one command:
#
#   scripts/release.sh [OUT_DIR]      # default: target/dist
#
# For x86_64 (this machine's build) and aarch64 (the cross-build of scripts/cross-arm64.sh):
#   tether-<version>-linux-<arch>.tar.gz   the static shim and tether-install (the node
#                                          installer), LICENSE, config snippets for
#                                          containerd 1.x (config v2) and 2.x (v3), an example
#                                          runtime options file, the RuntimeClass, SHA256SUMS
#   containerd-shim-tether_<version>-1_<debarch>.deb
#                                          /usr/bin/containerd-shim-tether-v2,
#                                          /usr/bin/tether-install and the same
#                                          examples under /usr/share/doc/containerd-shim-tether
#   SHA256SUMS                             of all of the above
#
# Reproducible: SOURCE_DATE_EPOCH (default: the last commit's time) dates the binary's
# `Built:` line and every file in the archives, which are sorted and owned by root.
#
# Why the binary goes to /usr/bin in the .deb: Debian policy reserves /usr/local for the
# administrator (packages must not put files there), and containerd's PATH has /usr/bin.
# The example options file is documentation, not a conffile in /etc/containerd: it does
# nothing until the containerd config names it (ConfigPath), and an inert conffile would
# only raise dpkg's questions on upgrades. The tarball and `containerd-shim-tether-v2
# install` default to /usr/local/bin instead, where hand-installed binaries belong.
set -euo pipefail

. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${1:-$REPO/target/dist}

if ! command -v dpkg-deb >/dev/null || ! command -v file >/dev/null; then
    echo "+ apt-get install dpkg-dev file"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg file >/dev/null
fi

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
HOST=$(rustc -vV | sed -n 's/^host: //p')

echo "+ cargo build --release --bins (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"
cargo build --release --bin containerd-shim-tether-v2 --bin tether-install
# Builds (and checks with `file`) target/aarch64-unknown-linux-gnu/release/'s shim; the
# installer with the same linker.
scripts/cross-arm64.sh
echo "+ cargo build --release --target aarch64-unknown-linux-gnu --bin tether-install"
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    cargo build --release --target aarch64-unknown-linux-gnu --bin tether-install

rm -rf "$OUT"
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# tar with fixed order, owners and times, so the same inputs give the same bytes.
repro_tar() { # ARCHIVE DIR NAME
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
        -C "$2" -cf - "$3" | gzip -9n >"$1"
}

# The files every package ships besides the binary, into DIR.
examples() {
    local dir=$1
    cp packaging/containerd-1.x-config-v2.toml packaging/containerd-2.x-config-v3.toml \
        packaging/tether.toml deploy/runtimeclass.yaml "$dir/"
}

for triple in "$HOST" aarch64-unknown-linux-gnu; do
    case "$triple" in
    x86_64-*) arch=x86_64 debarch=amd64 ;;
    aarch64-*) arch=aarch64 debarch=arm64 ;;
    *) echo "release.sh: no package name for $triple" >&2; exit 1 ;;
    esac
    bin=target/$triple/release/containerd-shim-tether-v2
    installer=target/$triple/release/tether-install
    for b in "$bin" "$installer"; do
        [ -x "$b" ] || { echo "release.sh: $b missing" >&2; exit 1; }
    done

    # --- tarball
    name=tether-$VERSION-linux-$arch
    dir=$work/$name
    mkdir -p "$dir/config"
    install -m 755 "$bin" "$dir/containerd-shim-tether-v2"
    install -m 755 "$installer" "$dir/tether-install"
    install -m 644 LICENSE "$dir/LICENSE"
    install -m 644 docs/install.md "$dir/INSTALL.md"
    examples "$dir/config"
    (cd "$dir" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort |
        xargs sha256sum >SHA256SUMS)
    repro_tar "$OUT/$name.tar.gz" "$work" "$name"

    # --- Debian package
    pkg=$work/deb-$debarch
    doc=$pkg/usr/share/doc/containerd-shim-tether
    mkdir -p "$pkg/DEBIAN" "$pkg/usr/bin" "$doc/examples"
    install -m 755 "$bin" "$pkg/usr/bin/containerd-shim-tether-v2"
    install -m 755 "$installer" "$pkg/usr/bin/tether-install"
    examples "$doc/examples"
    chmod 644 "$doc/examples"/*
    install -m 644 docs/install.md "$doc/INSTALL.md"
    {
        echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
        echo "Upstream-Name: tether"
        echo
        echo "Files: *"
        echo "License: Apache-2.0"
        echo " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0."
    } >"$doc/copyright"
    chmod 644 "$doc/copyright"
    size=$(du -k -s "$pkg/usr" | cut -f1)
    cat >"$pkg/DEBIAN/control" <<EOF
Package: containerd-shim-tether
Version: $VERSION-1
Architecture: $debarch
Maintainer: tether developers <tether@localhost>
Installed-Size: $size
Recommends: containerd, runc
Section: admin
Priority: optional
Description: containerd runtime v2 shim for runc, written in Rust
 The per-container monitor between containerd and runc: runtime type
 io.containerd.tether.v2, binary containerd-shim-tether-v2 (static).
 Use it with ctr --runtime io.containerd.tether.v2, or as a CRI runtime
 handler: tether-install install adds it to containerd's config.
EOF
    (cd "$pkg" && find usr -type f -printf '%P\n' | LC_ALL=C sort |
        sed 's|^|usr/|' | xargs md5sum >DEBIAN/md5sums)
    find "$pkg" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    deb=$OUT/containerd-shim-tether_${VERSION}-1_$debarch.deb
    dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
    echo "built $OUT/$name.tar.gz and $deb ($(file -b "$bin" | cut -d, -f1-2))"
done

(cd "$OUT" && sha256sum -- *.tar.gz *.deb >SHA256SUMS)
echo "release.sh: $OUT"
ls -l "$OUT"
