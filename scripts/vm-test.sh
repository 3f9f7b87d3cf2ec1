#!/usr/bin/env bash
# The VM lane: runs the tests only a modern node can prove (cgroup v2, a working CRIU) inside
# a virtme-ng guest booted with Debian's kernel under QEMU TCG, over this machine's own root.
#
# What runs inside, one test at a time: every `tests/node_*.rs` binary with `--ignored` (their
# tests are marked `#[ignore = "VM lane: scripts/vm-test.sh"]`), `tests/resources.rs --ignored`
# (the checkpoint/restore tests, which need a `criu check` that passes) and `tests/cri.rs` (CRI
# ContainerStats and OOMKilled on a cgroup v2 node). The test binaries are
# built here (statically linked) and run in the guest from this tree, which the guest sees
# read-only over 9p. Their output comes back through a read-write share (`target/vm-lane/`).
#
# Why TCG: nested KVM on these machines either aborts QEMU or boots no kernel. Why a fresh
# tmpfs on the guest's /tmp: unix sockets cannot be bound on 9p, and virtme-ng's /tmp overlay
# cannot hold the overlay mounts of containerd's snapshotter.
#
# Usage: scripts/vm-test.sh [TEST-BINARY-ARGS...]   e.g. scripts/vm-test.sh --exact some_test
#   TETHER_VM_TIMEOUT   bound on the guest's whole run, seconds (default 1500)
#   TETHER_VM_BINARIES  test targets instead of "node_*:--ignored resources:--ignored cri"
#                       (TARGET[:FLAG]; FLAG is given to that binary before the arguments)
#   TETHER_VM_TIME_SCALE  TETHER_TEST_TIME_SCALE inside (default 5: TCG is 5-10x slower)
#   TETHER_VM_MEMORY / TETHER_VM_CPUS   guest size (default 4G / 2)
#   TETHER_VM_OUT       where the guest's logs go (default target/vm-lane; emptied first)
#   TETHER_VM_RUNTIME_BINARY  an OCI runtime for tether instead of runc, chosen as users do:
#                       `BinaryName` in the options file ctr hands the shim
#                       (TETHER_TEST_RUNTIME_CONFIG), e.g. /usr/bin/crun (installed if missing)
# Exits non-zero when a test fails, when the guest does not boot or does not finish (the
# console tail is printed), or when nothing ran. Ends with `vm: N passed, N failed`.
set -euo pipefail

. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."

cache=/var/cache/tether/vm
timeout_s=${TETHER_VM_TIMEOUT:-1500}
memory=${TETHER_VM_MEMORY:-4G}
cpus=${TETHER_VM_CPUS:-2}
specs=${TETHER_VM_BINARIES:-"node_*:--ignored resources:--ignored cri"}
time_scale=${TETHER_VM_TIME_SCALE:-5}
# virtme-ng is pinned: the guest init and its command line conventions change between releases.
vng_version=1.42

# --- What the lane needs, installed idempotently -----------------------------------------------
scripts/setup.sh
packages=(qemu-system-x86 linux-image-amd64 iptables python3-venv criu containerd runc busybox-static)
runtime_binary=${TETHER_VM_RUNTIME_BINARY:-}
[ "$runtime_binary" != /usr/bin/crun ] || packages+=(crun)
missing=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" 2>/dev/null | grep -qx 'Status: install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "vm-test.sh: installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
mkdir -p "$cache"
if ! "$cache/venv/bin/vng" --version 2>/dev/null | grep -q "$vng_version"; then
    echo "vm-test.sh: installing virtme-ng $vng_version into $cache/venv"
    python3 -m venv "$cache/venv"
    "$cache/venv/bin/pip" install -q "virtme-ng==$vng_version"
fi
export PATH="$cache/venv/bin:$PATH"
# The newest Debian kernel installed (linux-image-amd64 depends on it).
kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "vm-test.sh: no /boot/vmlinuz-* (linux-image-amd64)" >&2; exit 1; }

# --- The test binaries ------------------------------------------------------------------------
set -f  # the target specs are patterns for cargo (node_*), not for the shell
test_args=()
declare -A flag_of=()
targets=
for spec in $specs; do
    t=${spec%%:*}
    test_args+=(--test "$t")
    flag_of[$t]=${spec#"$t"}
    flag_of[$t]=${flag_of[$t]#:}
    targets+="$t "
done
echo "+ cargo test --no-run ${test_args[*]}"
binaries=$(cargo test --no-run --message-format=json "${test_args[@]}" |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
')
# Each binary's flag, from the first spec whose pattern matches its name.
binaries=$(while read -r name exe; do
    flag=
    for t in $targets; do
        # shellcheck disable=SC2053  # $t is a pattern (node_*)
        if [[ $name == $t ]]; then flag=${flag_of[$t]}; break; fi
    done
    echo "$name $exe $flag"
done <<<"$binaries")
[ -n "$binaries" ] || { echo "vm-test.sh: no test binaries for: $targets" >&2; exit 1; }

# --- The guest's script -----------------------------------------------------------------------
out=${TETHER_VM_OUT:-$PWD/target/vm-lane}
rm -rf "$out"
mkdir -p "$out"
guest=$out/guest.sh
{
    echo '#!/bin/bash'
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    echo "out=$out"
    echo "tree=$PWD"
    cat <<'EOF'
# A fresh tmpfs for containerd's state, sockets and overlay mounts (see the header). This tree
# and the output share may themselves live under /tmp (a CI clone, say), which that tmpfs
# would hide: keep the old /tmp, with its submounts, and bind them back at their own paths
# (the test binaries name their fixtures and helper binaries by absolute path).
mkdir -p /run/tether-old-tmp
mount --rbind /tmp /run/tether-old-tmp
mount -t tmpfs -o size=2G,mode=1777 tether-tmp /tmp
for dir in "$tree" "$out"; do
    case "$dir" in
    /tmp/*)
        mountpoint -q "$dir" && continue
        mkdir -p "$dir"
        mount --rbind "/run/tether-old-tmp/${dir#/tmp/}" "$dir"
        ;;
    esac
done
export TMPDIR=/tmp HOME=/tmp RUST_BACKTRACE=1
EOF
    echo "export TETHER_TEST_TIME_SCALE=$time_scale"
    cat <<'EOF'

{
    echo "guest: kernel $(uname -r), /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup)"
    echo "guest: controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
    echo "guest: $(containerd --version)"
    echo "guest: $(runc --version | head -n 1)"
    echo "guest: criu $(criu --version | head -n 1); criu check: $(criu check 2>&1 | tail -n 1)"
} > "$out/env.txt"
cat "$out/env.txt"
EOF
    if [ -n "$runtime_binary" ]; then
        echo "printf 'BinaryName = \"%s\"\\n' $(printf %q "$runtime_binary") > /tmp/tether-runtime.toml"
        echo 'export TETHER_TEST_RUNTIME_CONFIG=/tmp/tether-runtime.toml'
        echo "echo \"guest: OCI runtime through BinaryName: \$($(printf %q "$runtime_binary") --version | head -n 1)\" >> \"\$out/env.txt\""
    fi
    while read -r name exe flag; do
        printf 'echo "+ %s %s --test-threads=1 %s"\n' "$name" "$flag" "$*"
        printf 'start=$(date +%%s)\n'
        printf '%q %s --test-threads=1' "$exe" "$flag"
        for a in "$@"; do printf ' %q' "$a"; done
        printf ' > %q 2>&1\n' "$out/$name.log"
        printf 'echo $? > %q\n' "$out/$name.rc"
        printf 'echo "$(( $(date +%%s) - start ))" > %q\n' "$out/$name.secs"
        printf 'grep -E "^test |^test result:|panicked" %q || true\n' "$out/$name.log"
    done <<<"$binaries"
    echo 'touch "$out/done"'
} > "$guest"
chmod +x "$guest"

# --- Boot and run -----------------------------------------------------------------------------
echo "+ vng -r $kernel --disable-kvm --memory $memory --cpus $cpus ($targets, bound ${timeout_s}s)"
started=$(date +%s)
set +e
timeout --kill-after=30 "$timeout_s" \
    vng -r "$kernel" --disable-kvm --memory "$memory" --cpus "$cpus" \
    --rwdir "$out" -- "$guest" </dev/null >"$out/console.log" 2>&1
vng_status=$?
set -e
elapsed=$(( $(date +%s) - started ))

status=0
if [ ! -e "$out/done" ]; then
    echo "!!! VM lane: the guest did not finish (vng exit $vng_status after ${elapsed}s; 124 = bound hit). Console tail:" >&2
    tail -n 40 "$out/console.log" >&2
    status=1
fi
passed=0 failed=0 host_ignored=0
while read -r name exe flag; do
    log=$out/$name.log
    if [ ! -e "$out/$name.rc" ]; then
        echo "!!! VM lane: $name did not run to its end" >&2
        [ -e "$log" ] && tail -n 40 "$log" >&2
        status=1
        continue
    fi
    rc=$(cat "$out/$name.rc")
    echo "--- $name (in the guest, $(cat "$out/$name.secs" 2>/dev/null)s, exit $rc)"
    if [ "$rc" -ne 0 ]; then
        cat "$log"
        status=1
    else
        grep -E '^test |^test result:' "$log" || true
    fi
    read -r p f < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) {
            if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
        END { print p + 0, f + 0 }' "$log")
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$flag" != --ignored ] || host_ignored=$((host_ignored + p + f))
done <<<"$binaries"
[ -e "$out/env.txt" ] && sed 's/^guest: /vm node: /' "$out/env.txt"
echo "vm lane wall time: ${elapsed}s (boot and tests)"
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
    echo "!!! VM lane: no test ran" >&2
    status=1
fi
# For scripts/test.sh's closing line: these tests were counted as skipped on the host.
echo "vm lane: $host_ignored of these tests are #[ignore]d on the host"
echo "vm: $passed passed, $failed failed"
exit "$status"
