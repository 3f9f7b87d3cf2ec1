#!/usr/bin/env bash
# Proves scripts/release.sh's packages (run by scripts/test.sh):
#   - both tarballs hold what they should, their SHA256SUMS check, and `file` calls the
#     binaries static x86-64 and static ARM aarch64;
#   - a second run gives the same bytes (reproducible);
#   - the amd64 .deb installs with dpkg into a clean root (an empty dpkg database, no host
#     files), its binary answers -v with this checkout's commit, scripts/demo.sh runs its
#     containers through that INSTALLED binary (the shim processes are checked to be it), and
#     the package removes cleanly.
set -euo pipefail

. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."

fail() { echo "release-test: $*" >&2; exit 1; }

work=$(mktemp -d /tmp/tether-release-XXXXXX)
trap 'rm -rf "$work"' EXIT
dist=$work/dist

scripts/release.sh "$dist"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
(cd "$dist" && sha256sum -c --quiet SHA256SUMS) || fail "dist SHA256SUMS"

for arch in x86_64 aarch64; do
    name=tether-$VERSION-linux-$arch
    tgz=$dist/$name.tar.gz
    mkdir -p "$work/unpack"
    tar -C "$work/unpack" -xzf "$tgz"
    for f in containerd-shim-tether-v2 tether-install LICENSE INSTALL.md SHA256SUMS config/tether.toml \
        config/containerd-1.x-config-v2.toml config/containerd-2.x-config-v3.toml \
        config/runtimeclass.yaml; do
        [ -s "$work/unpack/$name/$f" ] || fail "$name.tar.gz lacks $f"
    done
    (cd "$work/unpack/$name" && sha256sum -c --quiet SHA256SUMS) || fail "$name SHA256SUMS"
    for b in containerd-shim-tether-v2 tether-install; do
        info=$(file -b "$work/unpack/$name/$b")
        echo "$name/$b: $info"
        case "$arch:$info" in
        x86_64:*x86-64*static*) ;;
        aarch64:*"ARM aarch64"*static*) ;;
        *) fail "$name/$b: not a static $arch executable: $info" ;;
        esac
    done
done

# Reproducible: the same checkout packaged again gives the same bytes.
scripts/release.sh "$work/dist2" >/dev/null
cmp "$dist/SHA256SUMS" "$work/dist2/SHA256SUMS" || {
    diff "$dist/SHA256SUMS" "$work/dist2/SHA256SUMS" >&2
    fail "a second release.sh run gave different packages"
}

deb=$dist/containerd-shim-tether_${VERSION}-1_amd64.deb
dpkg-deb -f "$deb" Package Architecture Version
[ "$(dpkg-deb -f "$deb" Architecture)" = amd64 ] || fail "amd64 .deb has the wrong architecture"
[ "$(dpkg-deb -f "$dist/containerd-shim-tether_${VERSION}-1_arm64.deb" Architecture)" = arm64 ] ||
    fail "arm64 .deb has the wrong architecture"

# A clean root: nothing but an empty dpkg database.
root=$work/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers"
: >"$root/var/lib/dpkg/status"
: >"$root/var/lib/dpkg/available"
echo "+ dpkg --root=$root -i $(basename "$deb")"
dpkg --root="$root" --log=/dev/null -i "$deb"
[ "$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status}' containerd-shim-tether)" = \
    "install ok installed" ] || fail "dpkg does not list the package as installed"
bin=$root/usr/bin/containerd-shim-tether-v2
[ -x "$bin" ] || fail "$bin missing"
[ -s "$root/usr/share/doc/containerd-shim-tether/examples/tether.toml" ] || fail "no example options file"
[ -x "$root/usr/bin/tether-install" ] || fail "no tether-install"
"$bin" -v
commit=$(git rev-parse --short=12 HEAD)
"$bin" -v | grep -q "Revision: $commit" || fail "installed binary is not from commit $commit"
# release.sh's default SOURCE_DATE_EPOCH (the last commit's time) is the binary's build date.
built=$(date -u -d "@$(git log -1 --format=%ct)" +%Y-%m-%dT%H:%M:%SZ)
"$bin" -v | grep -q "Built:    $built" || fail "installed binary's Built is not $built"

echo "+ TETHER_SHIM_DIR=$root/usr/bin scripts/demo.sh"
if ! TETHER_SHIM_DIR=$root/usr/bin scripts/demo.sh >"$work/demo.log" 2>&1; then
    cat "$work/demo.log"
    fail "demo failed with the installed binary"
fi
cat "$work/demo.log"
grep -q "pid [0-9]*: $bin " "$work/demo.log" || fail "the demo's shim was not $bin"

echo "+ dpkg --root=$root -r containerd-shim-tether"
dpkg --root="$root" --log=/dev/null -r containerd-shim-tether
[ ! -e "$bin" ] && [ ! -e "$root/usr/bin/tether-install" ] || fail "binaries left after removal"
echo "release-test: passed"
