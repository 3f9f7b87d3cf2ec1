#!/usr/bin/env bash
# Fails when layout/symbol-order.txt no longer matches the release shim (see layout/check.py):
# builds the release binary (build.rs keeps its link map in OUT_DIR) and checks the order
# file against that map. No root needed.
set -euo pipefail
cd "$(dirname "$0")/.."

out_dir=$(cargo build --release --bin containerd-shim-tether-v2 --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "build-script-executed" and m["package_id"].startswith("path+") \
            and "#tether@" in m["package_id"]:
        print(m["out_dir"])
')
map="$out_dir/link-map.txt"
if [ -z "$out_dir" ] || [ ! -f "$map" ]; then
    echo "layout: no link map at ${map:-<tether OUT_DIR>} (not a laid-out build: TETHER_NO_LAYOUT set, or a linker other than rustc's lld?)" >&2
    exit 1
fi
exec python3 layout/check.py "$map"
