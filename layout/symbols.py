"""Reading an lld link map, and matching `symbol-order.txt` against it (used by check.py and
rehash.py; profile.py has its own, richer reader)."""
import re

TEXT_SECTION = re.compile(r":\(\.text\.(.+)\)$")


def placeable(map_path):
    """Names lld can place in this build: every `.text.<name>` input section (Rust and C
    function sections) and every defined symbol (archive members without function sections)."""
    names = set()
    with open(map_path) as f:
        for line in f:
            line = line.rstrip("\n")
            m = TEXT_SECTION.search(line)
            if m:
                names.add(m.group(1))
                continue
            parts = line.split()
            if len(parts) == 5:
                names.add(parts[4])
    return names


def entries(order_path):
    with open(order_path) as f:
        return [l.strip() for l in f if l.strip() and not l.startswith("#")]


def is_rust(name):
    return name.startswith("_R") or name.startswith("_ZN")


def stable_key(name):
    """The name without what a toolchain or dependency change alters: legacy `17h<hash>E`
    hashes, v0 crate disambiguators (`Cs<base62>_`) and LLVM's numeric suffixes."""
    name = re.sub(r"\.(llvm\.)?\d+$", "", name)
    if name.startswith("_ZN"):
        return re.sub(r"17h[0-9a-f]{16}E$", "E", name)
    if name.startswith("_R"):
        return re.sub(r"Cs[0-9A-Za-z]+_(?=\d)", "C", name)
    return name
