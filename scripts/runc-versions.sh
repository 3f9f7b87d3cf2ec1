#!/usr/bin/env bash
# Fetches a current runc for the tests that need runc 1.2+ (idmapped mounts, user-namespaced
# pods: tests/userns.rs), as Debian packages, into /var/cache/tether/runc/<version>/, and
# prints nothing when it is already there. The binary is <that dir>/runc.
#
#   1.3.6   runc=1.3.6+ds1-1   Debian "sid"
#
# sid's runc needs glibc 2.38 and libseccomp 2.6; Debian 12 has glibc 2.36. So sid's libc6 and
# libseccomp2 are unpacked next to it and a copy of the binary is pointed at them with patchelf
# (its ELF interpreter and its rpath). A wrapper running it through sid's ld.so would not do:
# runc re-executes /proc/self/exe (`runc init`), which would then be ld.so. The patched binary
# is an ordinary executable that finds its own libraries, however it is started. The system's
# runc and libraries are never touched, nothing is installed but Debian 12's patchelf.
#
# Packages come through the same private apt sources list, state dir and signature check as
# scripts/containerd-versions.sh (under /var/cache/tether/apt; Debian 12's
# debian-archive-keyring, never `trusted=yes`), with `apt-get download` and `dpkg-deb -x`.
# The versions are pinned; once sid drops one of them, apt fails here naming it: move the pins.
#
# `--print` prints the runc binary's path.
set -euo pipefail

CACHE=${TETHER_RUNC_CACHE:-/var/cache/tether/runc}
. "$(dirname "$0")/debian-archive.sh"

VERSION=1.3.6
# Everything `ldd` asks for, pinned (sid, 2026-12-04).
PACKAGES=(runc=1.3.6+ds1-1 libc6=2.43-7 libseccomp2=2.6.1-1+b2)

dir="$CACHE/$VERSION"
if [ "${1:-}" = "--print" ]; then
    echo "$dir/runc"
    exit 0
fi
[ -x "$dir/runc" ] && exit 0

echo "runc-versions.sh: fetching runc $VERSION (Debian packages: ${PACKAGES[*]})"
debian_archive_init runc-versions.sh
if ! command -v patchelf >/dev/null 2>&1; then
    echo "runc-versions.sh: installing patchelf"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf >/dev/null ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf; }
fi

mkdir -p "$CACHE"

work=$(mktemp -d)
trap 'rm -rf "$work" "$dir.tmp"' EXIT
debian_archive_download "$work" "${PACKAGES[@]}"

# Unpacked next to the final dir and renamed, so an interrupted run leaves no half tree. The
# binary is patched with the final paths, valid once renamed.
rm -rf "$dir.tmp"
for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$dir.tmp"
done
# The loader and libc of sid's libc6: usr/lib/<multiarch>/ld-linux*.so.*
interp=$(cd "$dir.tmp" && ls usr/lib/*/ld-linux*.so.* | head -n 1)
cp "$dir.tmp/usr/sbin/runc" "$dir.tmp/runc"
patchelf --set-interpreter "$dir/$interp" --set-rpath "$dir/$(dirname "$interp")" "$dir.tmp/runc"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
if ldd "$dir/runc" | grep -q 'not found'; then
    ldd "$dir/runc" >&2
    rm -rf "$dir"
    echo "runc-versions.sh: runc $VERSION misses a library (above); add its package" >&2
    exit 1
fi
"$dir/runc" --version
