#!/usr/bin/env bash
# Fetches the newer containerd builds the integration tests run against into
# /var/cache/tether/containerd/<version>/ (so .../<version>/usr/bin/containerd, ctr and
# containerd-shim-runc-v2). Point the tests at one with TETHER_CONTAINERD=<that>/usr/bin.
#
#   1.7.24        containerd=1.7.24~ds1-6+deb13u1  Debian 13 "trixie"
#   2.1.9         containerd=2.1.9+ds1-5           Debian "sid"
#   2.2.7         shared/containerd/containerd-2.2.7-linux-amd64.tar.xz
#   2.3.4         shared/containerd/containerd-2.3.4-linux-amd64.tar.xz
#   2.4.0-beta.0  shared/containerd/containerd-2.4.0-beta.0-linux-amd64.tar.xz
#
# Debian packages no 2.2+ yet: those three are static upstream builds kept beside the
# repository, in `shared/containerd/` next to the clone (TETHER_SHARED_CONTAINERD overrides the
# directory; its README.md says how they were built). Each archive is checked against that
# directory's SHA256SUMS before it is unpacked; a mismatch or a missing archive is an error.
#
# Both binaries link only against libc and run on Debian 12 as they are. Nothing is installed:
# `apt-get download` works through a private sources list, state and cache dir (under
# /var/cache/tether/apt), and `dpkg-deb -x` unpacks the .deb. The system's apt sources, its
# package state and its containerd are never touched. Idempotent: a version already unpacked
# is left alone, and a second run does nothing (and prints nothing).
#
# Signatures are checked: the InRelease files of trixie and sid are signed with Debian's
# automatic archive keys (12/bookworm and 13/trixie, checked with gpgv on 2026-12-04), which
# Debian 12's own debian-archive-keyring (2023.3+deb12u*) already holds; the script uses that
# keyring and never `trusted=yes`. Once sid is signed only with keys newer than that package,
# apt fails here with NO_PUBKEY: install a newer debian-archive-keyring then.
#
# Prints the bin directory of each version, one a line, oldest first, with `--print`.
set -euo pipefail

CACHE=${TETHER_CONTAINERD_CACHE:-/var/cache/tether/containerd}
repo=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${TETHER_SHARED_CONTAINERD:-$(dirname "$repo")/shared/containerd}
. "$(dirname "$0")/debian-archive.sh"

# version|package version|suite
VERSIONS=(
    "1.7.24|1.7.24~ds1-6+deb13u1|trixie"
    "2.1.9|2.1.9+ds1-5|sid"
)
# Upstream release builds from $SHARED (containerd-<version>-linux-amd64.tar.xz).
ARCHIVES=(2.2.7 2.3.4 2.4.0-beta.0)

if [ "${1:-}" = "--print" ]; then
    for entry in "${VERSIONS[@]}"; do
        echo "$CACHE/${entry%%|*}/usr/bin"
    done
    for version in "${ARCHIVES[@]}"; do
        echo "$CACHE/$version/usr/bin"
    done
    exit 0
fi

# The archives first: no network, and an archive that does not match SHA256SUMS stops here.
for version in "${ARCHIVES[@]}"; do
    [ -x "$CACHE/$version/usr/bin/containerd" ] && continue
    name=containerd-$version-linux-amd64.tar.xz
    echo "containerd-versions.sh: unpacking containerd $version from $SHARED/$name"
    if [ ! -f "$SHARED/$name" ] || [ ! -f "$SHARED/SHA256SUMS" ]; then
        echo "containerd-versions.sh: $SHARED/$name or its SHA256SUMS is missing" >&2
        echo "  (set TETHER_SHARED_CONTAINERD to the directory holding the archives)" >&2
        exit 1
    fi
    want=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1 }' "$SHARED/SHA256SUMS")
    got=$(sha256sum "$SHARED/$name" | cut -d' ' -f1)
    if [ -z "$want" ] || [ "$want" != "$got" ]; then
        echo "containerd-versions.sh: $name: sha256 $got, SHA256SUMS says ${want:-nothing}" >&2
        exit 1
    fi
    mkdir -p "$CACHE"
    # Unpack next to the final dir and rename, so an interrupted run leaves no half tree.
    rm -rf "$CACHE/$version.tmp"
    mkdir -p "$CACHE/$version.tmp/usr/bin"
    tar -xJf "$SHARED/$name" -C "$CACHE/$version.tmp/usr/bin" --strip-components=1 \
        --no-same-owner "containerd-$version/containerd" "containerd-$version/ctr" \
        "containerd-$version/containerd-shim-runc-v2"
    "$CACHE/$version.tmp/usr/bin/containerd" --version
    rm -rf "$CACHE/$version"
    mv "$CACHE/$version.tmp" "$CACHE/$version"
done

missing=()
for entry in "${VERSIONS[@]}"; do
    IFS='|' read -r version _ _ <<<"$entry"
    [ -x "$CACHE/$version/usr/bin/containerd" ] || missing+=("$entry")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

echo "containerd-versions.sh: fetching containerd ${missing[*]%%|*} (Debian packages)"
debian_archive_init containerd-versions.sh
mkdir -p "$CACHE"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for entry in "${missing[@]}"; do
    IFS='|' read -r version pkgversion _ <<<"$entry"
    debian_archive_download "$work" "containerd=$pkgversion"
    deb=$(ls "$work"/containerd_*.deb)
    # Unpack next to the final dir and rename, so an interrupted run leaves no half tree.
    rm -rf "$CACHE/$version.tmp"
    dpkg-deb -x "$deb" "$CACHE/$version.tmp"
    "$CACHE/$version.tmp/usr/bin/containerd" --version
    rm -rf "$CACHE/$version"
    mv "$CACHE/$version.tmp" "$CACHE/$version"
    rm -f "$deb"
done
