#!/usr/bin/env python3
"""Carries layout/symbol-order.txt over to a new toolchain or dependency versions.

    layout/rehash.py LINK_MAP

Keeps the file's order (what was profiled) and renames each entry the build no longer has to
the build's one name with the same stable key (see symbols.stable_key): the same function
whose hash changed. Entries with no match, or several, are dropped. This is what a toolchain
bump needs; new or moved code needs a new profile (profile.py)."""
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from symbols import entries, placeable, stable_key  # noqa: E402

ORDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "symbol-order.txt")


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    names = placeable(sys.argv[1])
    by_key = collections.defaultdict(list)
    for n in names:
        by_key[stable_key(n)].append(n)
    out, kept, renamed, dropped, seen = [], 0, 0, 0, set()
    for e in entries(ORDER):
        if e in names:
            new = e
            kept += 1
        else:
            cands = by_key.get(stable_key(e), [])
            if len(cands) != 1:
                dropped += 1
                continue
            new = cands[0]
            renamed += 1
        if new not in seen:
            seen.add(new)
            out.append(new)
    with open(ORDER, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"rehash: {kept} kept, {renamed} renamed, {dropped} dropped; {len(out)} entries")


if __name__ == "__main__":
    main()
