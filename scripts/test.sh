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
# Extra arguments are passed to the test binaries, e.g. `scripts/test.sh --test-threads=1`.
set -euo pipefail

cd "$(dirname "$0")/.."

# Installs containerd, runc and busybox-static if missing (quiet when all are there).
scripts/setup.sh

echo "+ cargo build --all-targets"
cargo build --all-targets

# tests/memory.rs measures the release shim (a debug build maps far more pages).
echo "+ cargo build --release --bin containerd-shim-tether-v2"
cargo build --release --bin containerd-shim-tether-v2

echo "+ cargo test --all-targets --no-fail-fast${*:+ -- $*}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --all-targets --no-fail-fast -- "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1); if ($i ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "tether: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
