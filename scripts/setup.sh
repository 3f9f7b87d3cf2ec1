#!/usr/bin/env bash
# Installs what the integration tests and the demo need on Debian/Ubuntu:
# containerd (with ctr), runc, busybox-static and protobuf-compiler (`protoc`, which the
# k8s-cri dev-dependency of tests/cri.rs runs at build time) and criu (checkpoint/restore,
# exercised end to end where `criu check` passes) and file (deploy/build-image.sh and the
# release checks tell binaries apart with it). Idempotent: does nothing, and prints
# nothing, when all of them are already installed. Installing needs root.
set -euo pipefail

packages=(containerd runc busybox-static protobuf-compiler criu file)

missing=()
for pkg in "${packages[@]}"; do
    # `dpkg -s` also succeeds for removed-but-not-purged packages; check the status itself.
    # (Not `dpkg -s | grep -q`: grep's early exit can SIGPIPE dpkg, which pipefail counts as
    # a failure, so an installed package would be "missing" now and then.)
    if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: missing packages: ${missing[*]}; run this script as root to install them" >&2
    exit 1
fi

echo "setup.sh: installing ${missing[*]}"
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
