#!/usr/bin/env bash
# The project's single test command: builds, then runs every test target (unit tests,
# integration tests, examples' tests) and the doc tests.
#
# tests/memory.rs measures the release binary, so the release shim is built too.
# The integration tests need root, containerd, runc and busybox-static
# (scripts/setup.sh, run first, installs them) and fail, never skip, without them. They drive the runtime
# named by TETHER_TEST_RUNTIME (default io.containerd.tether.v2); set
# TETHER_TEST_RUNTIME=io.containerd.runc.v2 to run them against the reference Go shim.
#
# The integration suites run once per containerd version: first everything against the
# containerd on PATH (Debian 12's 1.6.20), then the suites that drive containerd's task path
# (core, exec, resources, robustness, cri, versions, exit_status, lifecycle, memory, upgrade)
# against each newer build scripts/containerd-versions.sh provides (1.7.24, 2.1.9, 2.2.7,
# 2.3.4, 2.4.0-beta.0), through TETHER_CONTAINERD. The other targets either start no
# containerd (unit tests, service, supervisor, properties, root_*, start_params), so a second
# run would repeat the first, or are this round's long output and packaging suites (output,
# stdio_outage, deploy: 1.6.20 only, for CI's time; install.rs and the 2.x CRI and userns runs
# below pick their versions themselves). One matrix run per version takes a few minutes
# (docs/testing.md has the numbers). With TETHER_CONTAINERD set by the caller (their own
# containerd build: a directory
# holding containerd, ctr and containerd-shim-runc-v2) everything runs against that one instead.
#
# Extra arguments are passed to the test binaries, e.g. `scripts/test.sh --test-threads=1`.
set -euo pipefail

. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."

# Installs containerd, runc and busybox-static if missing (quiet when all are there).
scripts/setup.sh
# containerd 1.7.24, 2.1.9, 2.2.7, 2.3.4 and 2.4.0-beta.0 (also when TETHER_CONTAINERD is set:
# tests/userns.rs always runs under 2.1.9 and 2.4.0-beta.0) and runc 1.3.6 (tests/userns.rs,
# tests/cri_features.rs), cached under /var/cache/tether.
scripts/containerd-versions.sh
scripts/runc-versions.sh
matrix=()
if [ -z "${TETHER_CONTAINERD:-}" ]; then
    mapfile -t matrix < <(scripts/containerd-versions.sh --print)
fi

# Format and lint gates: one style for src/, tests/ and examples/, and no clippy warning.
echo "+ cargo fmt --check"
cargo fmt --check
echo "+ cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "+ cargo build --all-targets"
cargo build --all-targets

# tests/memory.rs measures the release shim (a debug build maps far more pages).
echo "+ cargo build --release --bin containerd-shim-tether-v2"
cargo build --release --bin containerd-shim-tether-v2

# Release build checks (layout/README.md, scripts/cross-arm64.sh): the code order in
# layout/symbol-order.txt must still name this build's functions (a toolchain or dependency
# bump otherwise grows every shim's RSS silently), and the release build must not be tied to
# x86_64 (an aarch64 cross-build, not run).
echo "+ layout/check.sh"
layout/check.sh
scripts/cross-arm64.sh

# Release packages and deploy/ (docs/install.md): scripts/release.sh's tarballs and .debs
# (contents, sums, `file` on both architectures, reproducible), the amd64 .deb installed with
# dpkg into a clean root and the demo run through that installed binary; deploy/'s manifests
# against the Kubernetes schemas. (tests/install.rs and tests/deploy.rs run with the rest.)
echo "+ scripts/release-test.sh"
scripts/release-test.sh
echo "+ deploy/check.sh"
deploy/check.sh

# The benchmark's plots (docs/benchmarks.md): its unit tests render a small sample (they run
# with cargo test below); here the committed plots must be what the code draws from the
# committed figures, so neither can drift from the other.
echo "+ bench --plot-from docs/benchmarks/results.json (committed plots up to date)"
plot_dir=$(mktemp -d)
cargo run -q --example bench -- --plot-from docs/benchmarks/results.json --plot-dir "$plot_dir" >/dev/null
for f in density.svg latency.svg stdio.svg results.json; do
    if ! cmp -s "$plot_dir/$f" "docs/benchmarks/$f"; then
        echo "test.sh: docs/benchmarks/$f is not what the bench draws from docs/benchmarks/results.json;" \
            "run: cargo run --example bench -- --plot-from docs/benchmarks/results.json" >&2
        exit 1
    fi
done
rm -rf "$plot_dir"

echo "+ cargo test --all-targets --no-fail-fast${*:+ -- $*}"
log=$(mktemp)
criu_log=$(mktemp)
matrix_log=$(mktemp)
trap 'rm -f "$log" "$criu_log" "$matrix_log"' EXIT
set +e
cargo test --all-targets --no-fail-fast -- "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# The same integration suites under each newer containerd (their results count in the sum).
matrix_suites=(--test core --test exec --test resources --test robustness --test cri
    --test versions --test exit_status --test lifecycle --test memory --test upgrade)
for dir in "${matrix[@]}"; do
    echo "+ TETHER_CONTAINERD=$dir cargo test --no-fail-fast ${matrix_suites[*]}${*:+ -- $*}"
    set +e
    m_start=$SECONDS
    TETHER_CONTAINERD=$dir cargo test --no-fail-fast "${matrix_suites[@]}" -- "$@" 2>&1 |
        tee -a "$matrix_log"
    m_status=${PIPESTATUS[0]}
    echo "test.sh: matrix run under $dir took $((SECONDS - m_start)) s"
    set -e
    if [ "$status" -eq 0 ]; then
        status=$m_status
    fi
done

# Checkpoint/restore end to end needs a working CRIU; those tests are #[ignore]d in
# tests/resources.rs and run here only when `criu check` passes. Otherwise one loud line, next
# to the summary, says they did not run, and why.
criu_note=
if criu_out=$(criu check 2>&1); then
    echo "+ cargo test --test resources -- --ignored${*:+ $*}"
    set +e
    cargo test --test resources -- --ignored "$@" 2>&1 | tee "$criu_log"
    criu_status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -eq 0 ]; then
        status=$criu_status
    fi
else
    last=$(printf '%s\n' "$criu_out" | grep -v '^[[:space:]]*$' | tail -n 1)
    criu_note="!!! checkpoint/restore end-to-end: NOT RUN (criu check failed: ${last:-no output}) !!!"
fi

# A user-namespaced pod (tests/userns.rs, #[ignore]d in the main run, whose containerd 1.6 and
# runc 1.1 cannot run one), with tether and runc 1.3.6: under containerd 2.1.9's CRI (tether
# named by runtime_path under runc's runtime type) and under 2.4.0-beta.0's (tether's own
# runtime type, whose features 2.4's CRI asks for). tests/cri_features.rs (2.4+ only): the
# handler's features in CRI Status and a recursive read-only mount. A test's first run goes to
# the CRIU run's log, whose tests count as run instead of skipped in the closing line; the
# second userns run counts like a matrix run.
userns_runc=$(scripts/runc-versions.sh --print)
# containerd version, log to count it in, test targets...
run_ignored() {
    local want=$1 into=$2 dir r
    shift 2
    dir=$(scripts/containerd-versions.sh --print | grep -F "/$want/") ||
        { echo "test.sh: scripts/containerd-versions.sh has no $want" >&2; exit 1; }
    echo "+ TETHER_CONTAINERD=$dir TETHER_USERNS_RUNC=$userns_runc cargo test $* -- --ignored${extra_args:+ $extra_args}"
    set +e
    TETHER_CONTAINERD=$dir TETHER_USERNS_RUNC=$userns_runc \
        cargo test "$@" -- --ignored "${test_args[@]}" 2>&1 | tee -a "$into"
    r=${PIPESTATUS[0]}
    set -e
    if [ "$status" -eq 0 ]; then
        status=$r
    fi
}
test_args=("$@")
extra_args="$*"
run_ignored 2.1.9 "$criu_log" --test userns
run_ignored 2.4.0-beta.0 "$matrix_log" --test userns
run_ignored 2.4.0-beta.0 "$criu_log" --test cri_features

# --- VM lane (scripts/vm-test.sh): cgroup v2, CRIU and the CRI plugin on a real modern node,
# in a QEMU guest. TETHER_VM_LANE=0 leaves it out, loudly. Its tests that are #[ignore]d here
# count as run instead of skipped in the closing line.
vm_log=$(mktemp)
trap 'rm -f "$log" "$criu_log" "$matrix_log" "$vm_log"' EXIT
vm_note=
if [ "${TETHER_VM_LANE:-1}" = 0 ]; then
    vm_note="!!! VM lane (cgroup v2, CRIU, CRI on v2): NOT RUN (TETHER_VM_LANE=0) !!!"
else
    # Not given this script's arguments: the lane runs one test at a time already.
    echo "+ scripts/vm-test.sh"
    set +e
    scripts/vm-test.sh 2>&1 | tee "$vm_log"
    vm_status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -eq 0 ]; then
        status=$vm_status
    fi
    [ -z "$criu_note" ] || criu_note="${criu_note% !!!}; the VM lane above ran them !!!"
    # The same guest booted with systemd as init, for runc's systemd cgroup driver
    # (tests/systemd_node*.rs). Its `vm:` line is counted like the lane's.
    echo "+ TETHER_VM_SYSTEMD=1 scripts/vm-test.sh"
    set +e
    TETHER_VM_SYSTEMD=1 TETHER_VM_OUT="$PWD/target/vm-lane-systemd" scripts/vm-test.sh 2>&1 |
        tee -a "$vm_log"
    sd_status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -eq 0 ]; then
        status=$sd_status
    fi
fi

# --- VM lane, crun run (scripts/vm-crun.sh): a selection of the suites in the same guest with
# crun as the OCI runtime (BinaryName), which refuses to run on this host's hybrid cgroups. Its
# `vm:` line is counted in the closing line like the lane's above.
if [ "${TETHER_VM_LANE:-1}" = 0 ]; then
    vm_note+=$'\n''!!! VM lane, crun run (scripts/vm-crun.sh): NOT RUN (TETHER_VM_LANE=0) !!!'
else
    echo "+ scripts/vm-crun.sh"
    set +e
    scripts/vm-crun.sh 2>&1 | tee -a "$vm_log"
    crun_status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -eq 0 ]; then
        status=$crun_status
    fi
fi

# One closing line for the whole suite, summed over every test binary. Tests of the CRIU and
# userns runs above were counted as skipped (ignored) in the main run; there they count as run
# instead.
# The version-matrix runs add their own passed, failed and ignored counts.
[ -z "$criu_note" ] || echo "$criu_note"
[ -z "$vm_note" ] || echo "$vm_note"
awk 'FNR == 1 { extra = (FILENAME == ARGV[2]); vm = (FILENAME == ARGV[3]) }
     vm && /^vm: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     vm && /^vm lane: [0-9]+ of these tests are/ { s -= $3 }
     !vm && /^test result:/ { for (i = 1; i <= NF; i++) {
         if ($i ~ /^passed;?$/) { p += $(i-1); if (extra) s -= $(i-1) }
         if ($i ~ /^failed;?$/) { f += $(i-1); if (extra) s -= $(i-1) }
         if ($i ~ /^ignored;?$/ && !extra) s += $(i-1) } }
     END { printf "tether: %d passed, %d failed, %d skipped\n", p, f, s }' "$log" "$criu_log" "$vm_log" "$matrix_log"
exit "$status"
