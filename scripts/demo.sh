#!/usr/bin/env bash
# Newcomer demo: builds tether, starts a private containerd on a temp dir and runs busybox
# containers through the io.containerd.tether.v2 runtime with plain `ctr`.
#
#   scripts/demo.sh    # as root, or through sudo (it asks for it itself)
#
# TETHER_TEST_RUNTIME picks another runtime (e.g. io.containerd.runc.v2 for the reference
# Go shim). TETHER_SHIM_DIR runs an installed containerd-shim-tether-v2 from that directory
# instead of building one. Everything the demo creates is removed on exit: containers, containerd, shims,
# runc state, mounts and the temp dir.
set -euo pipefail

. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
REPO=$PWD
RUNTIME=${TETHER_TEST_RUNTIME:-io.containerd.tether.v2}

say() {
    if [ -t 1 ]; then printf '\n\033[1m== %s\033[0m\n' "$*"; else printf '\n== %s\n' "$*"; fi
}
run() { printf '$ %s\n' "${*/#ctrx/ctr}"; "$@"; }

say "Installing missing system packages (scripts/setup.sh)"
scripts/setup.sh

if [ -n "${TETHER_SHIM_DIR:-}" ]; then
    # An installed binary (scripts/release-test.sh: the .deb's /usr/bin), not a build.
    say "Using the installed shim in $TETHER_SHIM_DIR"
    BIN_DIR=$TETHER_SHIM_DIR
    "$BIN_DIR/containerd-shim-tether-v2" -v
else
    say "Building the shim (cargo build --release)"
    cargo build --release
    # Where cargo put it (.cargo/config.toml names a target, so target/<triple>/release).
    BIN=$(cargo build --release --bin containerd-shim-tether-v2 --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*containerd-shim-tether-v2"' | tail -1 | cut -d'"' -f4)
    BIN_DIR=$(dirname "${BIN:-missing/containerd-shim-tether-v2}")
fi
[ -x "$BIN_DIR/containerd-shim-tether-v2" ] || { echo "no $BIN_DIR/containerd-shim-tether-v2" >&2; exit 1; }

WORK=$(mktemp -d /tmp/tether-demo-XXXXXX)
ADDR=$WORK/containerd.sock
NS=tether-demo-$$
ROOTFS=$WORK/rootfs
CD_PID=
IDS=(hello demo)

ctrx() { ctr --address "$ADDR" --namespace "$NS" "$@"; }

# Shim processes (server, start, delete) of this containerd: their command line carries
# `-address <our socket>`.
shim_pids() {
    local d pid args
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        args=$( { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null) || continue
        case "$args" in
            *containerd-shim*"-address $ADDR "*) echo "$pid" ;;
        esac
    done
}

cleanup() {
    local rc=$? pid i
    trap - EXIT
    set +e
    if [ "$rc" -ne 0 ] && [ -f "$WORK/containerd.log" ]; then
        echo "---- demo failed (exit $rc); containerd log tail ----" >&2
        tail -n 30 "$WORK/containerd.log" >&2
    fi
    echo
    echo "cleaning up $WORK"
    if [ -n "$CD_PID" ] && kill -0 "$CD_PID" 2>/dev/null; then
        for id in "${IDS[@]}"; do
            timeout 10 ctr --address "$ADDR" --namespace "$NS" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1
        done
        for id in "${IDS[@]}"; do
            timeout 10 ctr --address "$ADDR" --namespace "$NS" tasks delete -f "$id" >/dev/null 2>&1
            timeout 10 ctr --address "$ADDR" --namespace "$NS" containers delete "$id" >/dev/null 2>&1
        done
        kill -TERM "$CD_PID" 2>/dev/null
        for i in $(seq 50); do kill -0 "$CD_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$CD_PID" 2>/dev/null
        wait "$CD_PID" 2>/dev/null
    fi
    # With containerd gone: remove leftover containers (runc kills their processes), then
    # any shim still running for this containerd, by pid.
    if [ -d "/run/containerd/runc/$NS" ]; then
        for id in $(runc --root "/run/containerd/runc/$NS" list -q 2>/dev/null); do
            runc --root "/run/containerd/runc/$NS" delete --force "$id" >/dev/null 2>&1
        done
        rmdir "/run/containerd/runc/$NS" 2>/dev/null
    fi
    for pid in $(shim_pids); do kill -KILL "$pid" 2>/dev/null; done
    # runc removes each container's cgroup, not the namespace's parent directory (the Go shim
    # leaves it too): rmdir it in every hierarchy; it fails, harmlessly, if not empty.
    for d in /sys/fs/cgroup/"$NS" /sys/fs/cgroup/*/"$NS"; do
        [ -d "$d" ] && rmdir "$d" 2>/dev/null
    done
    # Sockets of killed shims: /run/containerd/s/<sha256 of address/namespace/id>.
    for id in "${IDS[@]}"; do
        sock=/run/containerd/s/$(printf '%s' "$ADDR/$NS/$id" | sha256sum | cut -d' ' -f1)
        [ -S "$sock" ] && rm -f "$sock"
    done
    # Unmount anything left below the work dir, deepest first.
    awk -v p="$WORK/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

say "Starting a private containerd in $WORK"
cat >"$WORK/config.toml" <<EOF
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.opt",
]
[grpc]
  address = "$ADDR"
[ttrpc]
  address = "$ADDR.ttrpc"
[debug]
  level = "debug"
EOF
# BIN_DIR first in PATH: containerd maps io.containerd.tether.v2 to the binary
# containerd-shim-tether-v2 and looks it up in its PATH.
PATH="$BIN_DIR:$PATH" containerd --config "$WORK/config.toml" >"$WORK/containerd.log" 2>&1 &
CD_PID=$!
for i in $(seq 100); do
    ctrx version >/dev/null 2>&1 && break
    kill -0 "$CD_PID" 2>/dev/null || { echo "containerd exited" >&2; exit 1; }
    sleep 0.1
done
ctrx version >/dev/null
echo "containerd pid $CD_PID, socket $ADDR, namespace $NS, runtime $RUNTIME"

say "Building a busybox rootfs in $ROOTFS"
mkdir -p "$ROOTFS/bin" "$ROOTFS/proc" "$ROOTFS/dev" "$ROOTFS/sys" "$ROOTFS/tmp" "$ROOTFS/etc"
cp /bin/busybox "$ROOTFS/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -s busybox "$ROOTFS/bin/$applet"
done
echo "$(ls "$ROOTFS/bin" | wc -l) files in bin/"

# ctr 1.6: --rootfs is a flag and the directory is the first positional argument, and
# no PATH is set for a plain rootfs, hence --env PATH=/bin.
say "1. An attached container: output comes back through the shim"
run ctrx run --rm --runtime "$RUNTIME" --env PATH=/bin --rootfs "$ROOTFS" hello \
    sh -c 'echo "hello from a busybox container, pid $$ in its own pid namespace"; uname -sr'

say "2. A detached container"
run ctrx run -d --runtime "$RUNTIME" --env PATH=/bin --rootfs "$ROOTFS" demo sleep 1000
run ctrx tasks ls
echo "shim serving it:"
for pid in $(shim_pids); do
    printf '  pid %s: %s\n' "$pid" "$(tr '\0' ' ' </proc/"$pid"/cmdline)"
done

say "3. ctr tasks exec: a second process in the running container"
run timeout 20 ctr --address "$ADDR" --namespace "$NS" tasks exec --exec-id demo-ps demo ps </dev/null
echo "and an exec's own exit status comes back:"
set +e
timeout 20 ctr --address "$ADDR" --namespace "$NS" tasks exec --exec-id demo-exit demo sh -c 'exit 3' </dev/null
code=$?
set -e
echo "exec exit status: $code"
[ "$code" -eq 3 ] || { echo "demo: the exec's exit status was lost (want 3, got $code)" >&2; exit 1; }

say "4. ctr tasks kill, and the exit status"
echo "sleep is pid 1 of its pid namespace and ignores SIGTERM, so send SIGKILL:"
run ctrx tasks kill -s SIGKILL demo
for i in $(seq 100); do
    ctrx tasks ls | awk '$1 == "demo" { print $3 }' | grep -qx STOPPED && break
    sleep 0.1
done
run ctrx tasks ls
printf '$ ctr tasks delete demo\n'
out=$(ctrx tasks delete demo 2>&1)
[ -z "$out" ] || echo "$out"
code=$(printf '%s\n' "$out" | sed -n 's/.*exit code \([0-9][0-9]*\).*/\1/p')
# ctr only mentions the exit status when it is non-zero.
echo "exit status collected by the shim: ${code:-0} (128 + 9 = SIGKILL)"
run ctrx containers delete demo

say "Done"
