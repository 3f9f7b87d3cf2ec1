#!/usr/bin/env python3
"""Fails when layout/symbol-order.txt no longer matches the release binary.

    layout/check.py LINK_MAP

LINK_MAP is the lld map of the release build (build.rs writes it next to its other outputs;
layout/check.sh finds it). The linker silently skips names it does not find
(`--no-warn-symbol-ordering`), and Rust names carry hashes that change with the toolchain and
dependencies: then the shim's hot code is scattered again and every shim's RSS grows.

Checked: the share of the file's Rust entries found in the build, over all of them and over
the hottest quarter (the file is hottest-first). Both must reach MIN_SHARE. A stale file
is fixed with `layout/regenerate.sh` (see layout/README.md)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from symbols import entries, is_rust, placeable  # noqa: E402

MIN_SHARE = 0.9
ORDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "symbol-order.txt")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    names = placeable(sys.argv[1])
    rust = [e for e in entries(ORDER) if is_rust(e)]
    hot = rust[: max(1, len(rust) // 4)]
    share = sum(e in names for e in rust) / len(rust)
    hot_share = sum(e in names for e in hot) / len(hot)
    print(f"layout: {share:.1%} of {len(rust)} Rust entries of symbol-order.txt found in the build "
          f"(hottest {len(hot)}: {hot_share:.1%}; minimum {MIN_SHARE:.0%})")
    if share < MIN_SHARE or hot_share < MIN_SHARE:
        raise SystemExit("layout: symbol-order.txt is stale for this toolchain/dependencies: "
                         "run layout/regenerate.sh (layout/README.md)")


if __name__ == "__main__":
    main()
