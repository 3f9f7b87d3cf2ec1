#!/usr/bin/env bash
# Builds the installer image (deploy/daemonset.yaml runs it) as an OCI image archive, with no
# container builder and no registry: the layer is a tar of the static shim and installer
# (tether-install, taken from the shim's directory), a static busybox
# (sh, sleep, sha256sum, nsenter) and deploy/entrypoint.sh; config, manifest and index are
# written here. The same image as deploy/Containerfile.
#
#   deploy/build-image.sh [SHIM_BINARY [OUT]]
#       SHIM_BINARY  default: the release build, target/<host triple>/release/
#       OUT          default: target/tether-installer-<version>.oci.tar
#
# Load it on a node (or a private containerd) with:
#   ctr -n k8s.io images import target/tether-installer-<version>.oci.tar
# which names it docker.io/library/tether-installer:<version> (its
# io.containerd.image.name annotation). Reproducible under SOURCE_DATE_EPOCH (default: the
# last commit's time). The image is for this machine's architecture: busybox comes from the
# host's busybox-static.
set -euo pipefail

cd "$(dirname "$0")/.."
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
HOST=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p') || true
BIN=${1:-target/${HOST:-x86_64-unknown-linux-gnu}/release/containerd-shim-tether-v2}
OUT=${2:-target/tether-installer-$VERSION.oci.tar}
NAME=docker.io/library/tether-installer:$VERSION
BUSYBOX=${BUSYBOX:-/bin/busybox}
: "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

INSTALLER=$(dirname "$BIN")/tether-install
for b in "$BIN" "$INSTALLER"; do
    [ -x "$b" ] || { echo "build-image.sh: no $b (cargo build --release)" >&2; exit 1; }
done
case "$(file -b "$BUSYBOX")" in
*static*) ;;
*) echo "build-image.sh: $BUSYBOX is not static (apt-get install busybox-static)" >&2; exit 1 ;;
esac
case "$(uname -m)" in
x86_64) arch=amd64 ;;
aarch64) arch=arm64 ;;
*) arch=$(uname -m) ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/tmp" "$work/layout/blobs/sha256"
install -m 755 "$BUSYBOX" "$root/bin/busybox"
for applet in sh sleep sha256sum nsenter cat; do ln -s busybox "$root/bin/$applet"; done
install -m 755 "$BIN" "$root/containerd-shim-tether-v2"
install -m 755 "$INSTALLER" "$root/tether-install"
install -m 755 deploy/entrypoint.sh "$root/entrypoint.sh"

# blob FILE MEDIATYPE: stores FILE under blobs/ and prints its descriptor.
blob() {
    local digest size
    digest=$(sha256sum "$1" | cut -d' ' -f1)
    size=$(stat -c %s "$1")
    cp "$1" "$work/layout/blobs/sha256/$digest"
    printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$digest" "$size"
}

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$root" -cf "$work/layer.tar" bin containerd-shim-tether-v2 entrypoint.sh tether-install tmp
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -9n <"$work/layer.tar" >"$work/layer.tar.gz"
layer=$(blob "$work/layer.tar.gz" application/vnd.oci.image.layer.v1.tar+gzip)

created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
printf '{"created":"%s","architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Entrypoint":["/entrypoint.sh"],"Cmd":["install"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$created" "$arch" "$diff_id" >"$work/config.json"
config=$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
    "$config" "$layer" >"$work/manifest.json"
manifest=$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' \
    "${manifest%\}},\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"},\"annotations\":{\"io.containerd.image.name\":\"$NAME\",\"org.opencontainers.image.ref.name\":\"$VERSION\"}}" \
    >"$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

mkdir -p "$(dirname "$OUT")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$work/layout" -cf "$OUT" oci-layout index.json blobs
echo "build-image.sh: $OUT ($NAME, linux/$arch, manifest ${manifest#*\"digest\":\"})" | sed 's/",.*)/)/'
