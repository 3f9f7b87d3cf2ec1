#!/usr/bin/env bash
# Fetches the newer containerd builds the integration tests run against, as Debian packages,
# into /var/cache/tether/containerd/<version>/ (so .../<version>/usr/bin/containerd, ctr and
# containerd-shim-runc-v2). Point the tests at one with TETHER_CONTAINERD=<that>/usr/bin.
#
#   1.7.24  containerd=1.7.24~ds1-6+deb13u1  Debian 13 "trixie"
#   2.1.9   containerd=2.1.9+ds1-5           Debian "sid"
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
# Prints the bin directory of each version, one a line, with `--print`.
set -euo pipefail

CACHE=${TETHER_CONTAINERD_CACHE:-/var/cache/tether/containerd}
. "$(dirname "$0")/debian-archive.sh"

# version|package version|suite
VERSIONS=(
    "1.7.24|1.7.24~ds1-6+deb13u1|trixie"
    "2.1.9|2.1.9+ds1-5|sid"
)

if [ "${1:-}" = "--print" ]; then
    for entry in "${VERSIONS[@]}"; do
        echo "$CACHE/${entry%%|*}/usr/bin"
    done
    exit 0
fi

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
