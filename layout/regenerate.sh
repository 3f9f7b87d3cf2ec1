#!/usr/bin/env bash
# Regenerates layout/symbol-order.txt for the current sources, toolchain and dependencies,
# then checks it (layout/check.sh).
#
#   layout/regenerate.sh            # full profile (layout/profile.py): root, perf, uprobes,
#                                   # tracefs, a loop device; several minutes
#   layout/regenerate.sh --rehash   # after a toolchain or dependency bump only: keeps the
#                                   # profiled order and renames entries to the new hashes
#                                   # (layout/rehash.py); no root, one release link
set -euo pipefail
if [ "${1:-}" != "--rehash" ]; then
    . "$(dirname "$0")/../scripts/as-root.sh"
fi
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--rehash" ]; then
    map=$(mktemp)
    trap 'rm -f "$map"' EXIT
    echo "+ TETHER_LINK_MAP=$map cargo build --release --bin containerd-shim-tether-v2"
    TETHER_LINK_MAP=$map cargo build --release --bin containerd-shim-tether-v2
    python3 layout/rehash.py "$map"
else
    python3 layout/profile.py "$@"
fi
layout/check.sh
