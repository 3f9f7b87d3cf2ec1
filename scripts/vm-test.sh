#!/usr/bin/env bash
# The VM lane: runs the tests only a modern node can prove (cgroup v2, a working CRIU) inside
# a virtme-ng guest booted with Debian's kernel under QEMU TCG, over this machine's own root.
#
# What runs inside, one test at a time: every `tests/node_*.rs` binary with `--ignored` (their
# tests are marked `#[ignore = "VM lane: scripts/vm-test.sh"]`), `tests/resources.rs --ignored`
# (the checkpoint/restore tests, which need a `criu check` that passes), `tests/cri.rs` (CRI
# ContainerStats and OOMKilled on a cgroup v2 node) and the upgrade whose handoff an OOM kill
# lands in (`tests/upgrade.rs`, `memory.events` crossing the exec). The test binaries are
# built here (statically linked) and run in the guest from this tree, which the guest sees
# read-only over 9p. Their output comes back through a read-write share (`target/vm-lane/`).
#
# Why TCG: nested KVM on these machines either aborts QEMU or boots no kernel. Why a fresh
# tmpfs on the guest's /tmp: unix sockets cannot be bound on 9p, and virtme-ng's /tmp overlay
# cannot hold the overlay mounts of containerd's snapshotter.
#
# Usage: scripts/vm-test.sh [TEST-BINARY-ARGS...]   e.g. scripts/vm-test.sh --exact some_test
#   TETHER_VM_TIMEOUT   bound on the guest's whole run, seconds (default 1500)
#   TETHER_VM_BINARIES  test targets instead of "node_*:--ignored resources:--ignored cri
#                       upgrade:during_the_handoff"
#                       (TARGET[:FLAG]; FLAG is given to that binary before the arguments, a
#                       flag or a test name filter;
#                       with TETHER_VM_SYSTEMD=1 the default is "systemd_node*:--ignored")
#   TETHER_VM_SYSTEMD=1 boot the guest with systemd as init (`vng --systemd`), for the
#                       systemd cgroup driver (tests/systemd_node*.rs); see "systemd guest" below
#   TETHER_VM_BINARY_TIMEOUT  bound on each test binary in the guest, seconds (default 480)
#   TETHER_VM_TIME_SCALE  TETHER_TEST_TIME_SCALE inside (default 5: TCG is 5-10x slower)
#   TETHER_VM_MEMORY / TETHER_VM_CPUS   guest size (default 4G / 2)
#   TETHER_VM_OUT       where the guest's logs go (default target/vm-lane; emptied first)
#   TETHER_VM_RUNTIME_BINARY  an OCI runtime for tether instead of runc, chosen as users do:
#                       `BinaryName` in the options file ctr hands the shim
#                       (TETHER_TEST_RUNTIME_CONFIG), e.g. /usr/bin/crun (installed if missing)
# Exits non-zero when a test fails, when a test binary hangs twice (TETHER_VM_BINARY_TIMEOUT;
# what each process waited on is printed), when the guest does not boot or does not finish
# (the console tail is printed), or when nothing ran. Ends with `vm: N passed, N failed`.
set -euo pipefail

. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."

cache=/var/cache/tether/vm
timeout_s=${TETHER_VM_TIMEOUT:-1500}
memory=${TETHER_VM_MEMORY:-4G}
cpus=${TETHER_VM_CPUS:-2}
systemd=${TETHER_VM_SYSTEMD:-0}
if [ "$systemd" = 1 ]; then
    specs=${TETHER_VM_BINARIES:-"systemd_node*:--ignored"}
else
    specs=${TETHER_VM_BINARIES:-"node_*:--ignored resources:--ignored cri upgrade:during_the_handoff"}
fi
time_scale=${TETHER_VM_TIME_SCALE:-5}
binary_bound=${TETHER_VM_BINARY_TIMEOUT:-480}
# virtme-ng is pinned: the guest init and its command line conventions change between releases.
vng_version=1.42

# --- What the lane needs, installed idempotently -----------------------------------------------
scripts/setup.sh
packages=(qemu-system-x86 linux-image-amd64 iptables python3-venv criu containerd runc busybox-static)
runtime_binary=${TETHER_VM_RUNTIME_BINARY:-}
[ "$runtime_binary" != /usr/bin/crun ] || packages+=(crun)
# The systemd guest boots the root's /sbin/init (systemd-sysv) and needs D-Bus.
[ "${TETHER_VM_SYSTEMD:-0}" != 1 ] || packages+=(systemd systemd-sysv dbus)
missing=()
for pkg in "${packages[@]}"; do
    # (As in setup.sh: the status itself, no `| grep -q` under pipefail.)
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
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
# Each binary's flag, from the first spec whose pattern matches its name. The order is the
# specs' order, then the name: cargo lists artifacts as they finish building, and a lane whose
# order changes from run to run hides order-dependent failures.
binaries=$(while read -r name exe; do
    flag= rank=0
    for t in $targets; do
        rank=$((rank + 1))
        # shellcheck disable=SC2053  # $t is a pattern (node_*)
        if [[ $name == $t ]]; then flag=${flag_of[$t]}; break; fi
    done
    echo "$rank $name $exe $flag"
done <<<"$binaries" | sort -k1,1n -k2,2 | cut -d' ' -f2-)
[ -n "$binaries" ] || { echo "vm-test.sh: no test binaries for: $targets" >&2; exit 1; }

# --- The guest's script -----------------------------------------------------------------------
out=${TETHER_VM_OUT:-$PWD/target/vm-lane}
rm -rf "$out"
mkdir -p "$out"
# The systemd guest sees neither a share nor a tree under /tmp (a CI clone): virtme-ng mounts
# its own overlays over /tmp and other host directories there (/var/cache too), and what the
# guest writes under them never reaches the host. So the output share is a stage outside /tmp,
# copied to $out afterwards, and the test binaries and the shim they run are copied into that
# share (the one host directory the guest does see), bound at their own paths in the guest.
stage=
if [ "$systemd" = 1 ] && [[ $PWD/ == /tmp/* || $out/ == /tmp/* ]]; then
    stage=$cache/systemd-stage
    rm -rf "$stage"
    mkdir -p "$stage/out/tree"
    while read -r name exe flag; do
        # The test and the debug shim next to its deps/ dir (CARGO_BIN_EXE_* names it).
        for f in "$exe" "$(dirname "$(dirname "$exe")")/containerd-shim-tether-v2"; do
            [[ $f == "$PWD"/* && -e $f ]] || continue
            rel=${f#"$PWD"/}
            mkdir -p "$stage/out/tree/$(dirname "$rel")"
            cp -p "$f" "$stage/out/tree/$rel"
        done
    done <<<"$binaries"
    final_out=$out
    out=$stage/out
    echo "vm-test.sh: systemd guest from a tree under /tmp: staged in $stage"
fi
guest=$out/guest.sh
{
    echo '#!/bin/bash'
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    echo "out=$out"
    echo "tree=$PWD"
    echo "stage_tree=${stage:+$stage/out/tree}"
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
        if [ "$dir" = "$tree" ] && [ -n "$stage_tree" ]; then
            mount --bind "$stage_tree" "$dir"
            continue
        fi
        mount --rbind "/run/tether-old-tmp/${dir#/tmp/}" "$dir"
        ;;
    esac
done
export TMPDIR=/tmp HOME=/tmp RUST_BACKTRACE=1
EOF
    if [ "$systemd" = 1 ]; then
        # What the tests will see under /tmp (virtme-ng's overlay, the lane's tmpfs, the tree).
        echo '{ echo "guest: mounts under /tmp:"; findmnt -R -o TARGET,FSTYPE,SOURCE /tmp; } > "$out/tmp-mounts.txt" 2>&1'
    fi
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
    if [ "$systemd" = 1 ]; then
        cat <<'EOF'
# The systemd guest: systemd is PID 1 and booted only what this script's unit needs (see
# "systemd guest" below), so D-Bus, which runc's systemd driver talks to, is started here.
{
    echo "guest: PID 1 is $(cat /proc/1/comm); /run/systemd/system: $([ -d /run/systemd/system ] && echo present || echo MISSING)"
    systemctl start dbus.service
    echo "guest: $(systemctl --version | head -n 1); dbus.service $(systemctl is-active dbus.service); systemctl is-system-running: $(systemctl is-system-running)"
} >> "$out/env.txt" 2>&1
tail -n 2 "$out/env.txt"
EOF
    fi
    if [ -n "$runtime_binary" ]; then
        echo "printf 'BinaryName = \"%s\"\\n' $(printf %q "$runtime_binary") > /tmp/tether-runtime.toml"
        echo 'export TETHER_TEST_RUNTIME_CONFIG=/tmp/tether-runtime.toml'
        echo "echo \"guest: OCI runtime through BinaryName: \$($(printf %q "$runtime_binary") --version | head -n 1)\" >> \"\$out/env.txt\""
    fi
    echo "binary_bound=$binary_bound"
    cat <<'EOF'

# Runs one test binary with a bound of its own, so one hung test costs its binary and not the
# lane. Before killing a binary that hit the bound, it records what every process waits on
# (wchan, and the kernel stacks of the test's threads) and the tails of the newest containerd
# logs: a hang becomes a failure with a cause to read, not a guest that never finished.
run_bounded() {
    local name=$1 log=$2
    shift 2
    "$@" > "$log" 2>&1 &
    local pid=$! waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$binary_bound" ]; then
            {
                echo "!!! $name: still running after ${binary_bound}s; what everything waits on:"
                ps -eo pid,ppid,stat,wchan:30,etimes,args --forest |
                    awk 'NR == 1 || ($1 != 2 && $2 != 2)'  # not the kernel's threads
                for t in /proc/"$pid"/task/*; do
                    echo "--- test thread ${t##*/} ($(cat "$t/comm")):"
                    cat "$t/stack" 2>/dev/null
                done
                for f in $(ls -t /tmp/*/containerd.log /tmp/*/*/containerd.log 2>/dev/null | head -n 2); do
                    echo "--- tail of $f:"
                    tail -n 60 "$f"
                done
            } >> "$log" 2>&1
            kill -KILL "$pid" 2>/dev/null
            wait "$pid" 2>/dev/null
            return 124
        fi
        sleep 1
        waited=$((waited + 1))
        # A heartbeat on the console: tells a hung test from a hung guest.
        [ $((waited % 120)) -ne 0 ] || echo "guest: $name still running after ${waited}s"
    done
    wait "$pid"
}

# One test binary; a binary that hangs is run once more. TCG on a loaded host can stall a
# guest for minutes, so one hang is not yet a verdict; the hung run's diagnostics stay in
# <name>.hung.log, and the host prints them and says so loudly. A second hang fails the lane.
run_binary() {
    local name=$1 log=$2
    shift 2
    run_bounded "$name" "$log" "$@"
    local rc=$?
    [ "$rc" -eq 124 ] || return "$rc"
    mv "$log" "${log%.log}.hung.log"
    echo "guest: $name hung; killing what it left running and running it once more"
    pkill -KILL -x containerd
    pkill -KILL -f containerd-shim-
    sleep 2
    run_bounded "$name" "$log" "$@"
}
EOF
    while read -r name exe flag; do
        printf 'echo "+ %s %s --test-threads=1 %s"\n' "$name" "$flag" "$*"
        printf 'start=$(date +%%s)\n'
        printf 'run_binary %q %q %q %s --test-threads=1' "$name" "$out/$name.log" "$exe" "$flag"
        for a in "$@"; do printf ' %q' "$a"; done
        printf '\n'
        printf 'echo $? > %q\n' "$out/$name.rc"
        printf 'echo "$(( $(date +%%s) - start ))" > %q\n' "$out/$name.secs"
        printf 'grep -E "^test |^test result:|panicked" %q || true\n' "$out/$name.log"
    done <<<"$binaries"
    echo 'touch "$out/done"'
    if [ "$systemd" = 1 ]; then
        # virtme-ng's init, run as a service, does not end the systemd guest after the script.
        echo 'sync'
        echo 'systemctl poweroff --force --force'
    fi
} > "$guest"
chmod +x "$guest"

# --- Boot and run -----------------------------------------------------------------------------
# The systemd guest (TETHER_VM_SYSTEMD=1): `vng --systemd` execs /sbin/init, and runs the script
# from its drop-in for serial-getty@.service (virtme-ng's init, as a service). Kernel arguments:
# - `container=` (empty): systemd takes a /.dockerenv on the exported root (a CI runner's or
#   this machine's) for a Docker container, and then reads no kernel command line and starts
#   no serial getty. PID 1's empty `container` is systemd's own "not a container".
# - `systemd.unit=serial-getty@ttyS0.service`: boot only that unit and sysinit.target, not the
#   exported root's default target with its services (a system containerd, databases...).
# - `systemd.mask=` for what costs boot time and nothing here: systemd-tmpfiles-setup walks the
#   9p root for a minute or more under TCG (virtme-ng's init runs systemd-tmpfiles itself), the
#   journal flush, timesyncd (no network). They come from virtme-ng's config (`systemd.masks`),
#   a private one through HOME: its default mask `getty@` is no unit name, and systemd 252's
#   debug generator stops reading the command line at it, so masks after it do nothing.
vng_args=()
vng_env=()
if [ "$systemd" = 1 ]; then
    vng_args=(--systemd -a container= -a systemd.unit=serial-getty@ttyS0.service)
    vng_home=$cache/systemd-home
    mkdir -p "$vng_home"
    cat > "$vng_home/.virtme-ng.conf" <<'EOF'
{"systemd": {"masks": ["getty@.service", "systemd-tmpfiles-setup.service",
 "systemd-journal-flush.service", "systemd-timesyncd.service"], "fstab": "/dev/null"}}
EOF
    vng_env=(HOME="$vng_home")
fi
echo "+ vng -r $kernel --disable-kvm --memory $memory --cpus $cpus ${vng_args[*]} ($targets, bound ${timeout_s}s)"
started=$(date +%s)
set +e
env "${vng_env[@]}" timeout --kill-after=30 "$timeout_s" \
    vng -r "$kernel" --disable-kvm --memory "$memory" --cpus "$cpus" "${vng_args[@]}" \
    --rwdir "$out" -- "$guest" </dev/null >"$out/console.log" 2>&1
vng_status=$?
set -e
elapsed=$(( $(date +%s) - started ))
if [ -n "$stage" ]; then
    rm -rf "$out/tree"
    cp -a "$out/." "$final_out/"
fi

status=0
if [ ! -e "$out/done" ]; then
    echo "!!! VM lane: the guest did not finish (vng exit $vng_status after ${elapsed}s; 124 = bound hit). Console tail:" >&2
    tail -n 40 "$out/console.log" >&2
    status=1
fi
passed=0 failed=0 host_ignored=0 hung=0
while read -r name exe flag; do
    log=$out/$name.log
    if [ -e "$out/$name.hung.log" ]; then
        echo "!!! VM lane: $name hung on its first run and was run once more; the hung run:" >&2
        cat "$out/$name.hung.log" >&2
        hung=$((hung + 1))
    fi
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
    if [ "$rc" -eq 124 ]; then
        echo "!!! VM lane: $name hung twice; counted as one failed test" >&2
        failed=$((failed + 1))
    fi
    read -r p f < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) {
            if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
        END { print p + 0, f + 0 }' "$log")
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$flag" != --ignored ] || host_ignored=$((host_ignored + p + f))
done <<<"$binaries"
[ -e "$out/env.txt" ] && sed 's/^guest: /vm node: /' "$out/env.txt"
[ ! -e "$out/tmp-mounts.txt" ] || sed 's/^guest: /vm node: /' "$out/tmp-mounts.txt"
echo "vm lane wall time: ${elapsed}s (boot and tests)"
if [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
    echo "!!! VM lane: no test ran" >&2
    status=1
fi
# For scripts/test.sh's closing line: these tests were counted as skipped on the host.
echo "vm lane: $host_ignored of these tests are #[ignore]d on the host"
[ "$hung" -eq 0 ] || echo "!!! VM lane: $hung test binaries hung once (diagnostics above) !!!"
echo "vm: $passed passed, $failed failed"
exit "$status"
