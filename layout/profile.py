#!/usr/bin/env python3
"""Regenerates layout/symbol-order.txt: which functions the shim runs, hottest paths first.

    sudo layout/profile.py            # about 6 minutes; needs containerd, runc, busybox-static,
                                      # perf, tracefs and a free loop device
    sudo layout/profile.py --refine   # after small changes: step 5 only, a minute or two

Steps (see layout/README.md for why):
 1. Build the release shim with a link map (the map names every input section and its
    address; the binary itself is stripped).
 2. Count calls of every Rust function with uprobes (one per `.text.<symbol>` section) while a
    private containerd runs two workloads through the shim: "core" (create, start, state,
    kill, delete: what every pod's shim does) and "full" (exec, tty, log file, pause,
    metrics, bulk output...).
 3. Sample the C library's sections (glibc objects are one section each and did not survive
    uprobes) with perf during the full workload and 300 start-ups.
 4. Write the order: core functions, sampled C sections, the rest of the full workload.
 5. Run the core workload from a loop-mounted copy with readahead off, so that the page cache
    holds exactly the pages that were read, and add every section still touched outside the
    ordered block; rebuild and repeat until nothing new shows up.
"""
import bisect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORDER = os.path.join(REPO, "layout", "symbol-order.txt")
# The build's target dir (.cargo/config.toml builds for the host triple).
HOST = re.search(r"^host: (\S+)$", subprocess.run(["rustc", "-vV"], capture_output=True, text=True,
                                                   cwd=REPO).stdout, re.M).group(1)
BIN = os.path.join(REPO, "target", HOST, "release", "containerd-shim-tether-v2")
TRACING = "/sys/kernel/tracing"


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def build(map_path):
    env = dict(os.environ, TETHER_LINK_MAP=map_path)
    subprocess.run(["cargo", "build", "--release", "--bin", "containerd-shim-tether-v2"], cwd=REPO, env=env, check=True)


def text_sections(map_path):
    """Input sections of .text from an lld map: dicts addr, size, sec, obj, syms."""
    out, cur = [], None
    for line in open(map_path):
        parts = line.split()
        if len(parts) < 5:
            continue
        try:
            addr, size = int(parts[0], 16), int(parts[2], 16)
        except ValueError:
            continue
        rest = " ".join(parts[4:])
        m = re.match(r"^(.*):\((\.[^)]*)\)$", rest)
        if m:
            sec = m.group(2)
            cur = {"addr": addr, "size": size, "sec": sec, "obj": m.group(1), "syms": []} if sec == ".text" or sec.startswith(".text.") else None
            if cur:
                out.append(cur)
        elif cur is not None and re.match(r"^[A-Za-z_.$][\w.$@]*$", rest):
            cur["syms"].append(rest)
    return sorted(out, key=lambda s: s["addr"])


def is_archive(s):
    return ".a(" in s["obj"]


def symbol_of(s):
    """A symbol that lld can place: the section's own name for Rust's function sections, else
    the first symbol defined in it."""
    if s["sec"].startswith(".text.") and not is_archive(s):
        return s["sec"][len(".text."):]
    return s["syms"][0] if s["syms"] else None


def text_delta(binary):
    """vaddr - file offset of the executable segment."""
    out = subprocess.run(["readelf", "-lW", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and " R E " in line:
            return int(f[2], 16) - int(f[1], 16)
    raise SystemExit("no executable segment")


class Containerd:
    """A private containerd whose PATH starts with `bindir`."""

    def __init__(self, bindir):
        self.dir = tempfile.mkdtemp(prefix="tether-layout-")
        self.sock = os.path.join(self.dir, "c.sock")
        with open(os.path.join(self.dir, "config.toml"), "w") as f:
            f.write(f'''version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
''')
        env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"])
        self.proc = subprocess.Popen(["containerd", "--config", os.path.join(self.dir, "config.toml")], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        for _ in range(100):
            if subprocess.run(self.ctr("version"), shell=True, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        self.rootfs = os.path.join(self.dir, "rootfs")
        os.makedirs(os.path.join(self.rootfs, "bin"))
        for d in ("proc", "dev", "sys", "tmp", "etc"):
            os.makedirs(os.path.join(self.rootfs, d))
        shutil.copy("/bin/busybox", os.path.join(self.rootfs, "bin", "busybox"))
        for applet in subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split():
            if applet != "busybox":
                os.symlink("busybox", os.path.join(self.rootfs, "bin", applet))

    def ctr(self, args):
        return f"ctr --address {self.sock} -n layout {args}"

    def run(self, script):
        rt = f"--runtime io.containerd.tether.v2 --env PATH=/bin --rootfs {self.rootfs}"
        body = script.replace("$RT", rt).replace("$C", self.ctr(""))
        subprocess.run(["timeout", "120", "bash", "-c", body], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        subprocess.run(f"for id in $(runc --root /run/containerd/runc/layout list -q 2>/dev/null); do runc --root /run/containerd/runc/layout delete -f $id; done", shell=True)
        subprocess.run(["umount", "-R", "-l", self.dir], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


CORE = """
$C run --rm $RT c1 sh -c 'echo hi'
$C run -d $RT c2 sleep 1000
$C tasks ls
sleep 0.5
$C tasks kill -s KILL c2; sleep 0.3; $C tasks delete c2; $C c rm c2
"""

FULL = """
$C run --rm $RT a1 sh -c 'echo hi; echo err >&2; exit 3'
$C run --rm $RT a2 sh -c 'dd if=/dev/zero bs=1048576 count=64 2>/dev/null' | wc -c
$C run --rm --log-uri file:///tmp/tether-layout.log $RT a4 sh -c 'echo logged'
script -qec "$C run --rm -t $RT a5 sh -c 'test -t 0 && echo tty'" /dev/null </dev/null
$C run -d $RT d1 sleep 1000
$C tasks exec --exec-id e1 d1 sh -c 'echo out; exit 2'
$C tasks exec --exec-id e2 d1 /nonexistent
script -qec "$C tasks exec -t --exec-id e3 d1 sh -c 'stty size'" /dev/null </dev/null
$C tasks ps d1; $C tasks metrics d1
$C tasks pause d1; $C tasks resume d1
$C tasks kill --exec-id nope d1
pids=; for i in $(seq 20); do $C tasks exec --exec-id s$i d1 true & pids="$pids $!"; done; wait $pids
$C tasks kill -s KILL d1; sleep 0.3; $C tasks delete d1; $C c rm d1
"""


def uprobe_hits(binary, sections, workload):
    """Names of `sections` entered at least once while `workload` runs."""
    delta = text_delta(binary)
    if not os.path.exists(f"{TRACING}/uprobe_events"):
        # A fresh boot may not have tracefs mounted yet.
        sh(f"mount -t tracefs nodev {TRACING}")
    with open(f"{TRACING}/uprobe_events", "w"):
        pass
    fd = os.open(f"{TRACING}/uprobe_events", os.O_WRONLY | os.O_APPEND)
    for i, s in enumerate(sections):
        os.write(fd, f"p:tether_layout/s{i} {binary}:0x{s['addr'] - delta:x}\n".encode())
    os.close(fd)
    with open(f"{TRACING}/events/tether_layout/enable", "w") as f:
        f.write("1")
    cd = Containerd(os.path.dirname(binary))
    try:
        cd.run(workload)
    finally:
        cd.stop()
        with open(f"{TRACING}/events/tether_layout/enable", "w") as f:
            f.write("0")
    hit = set()
    for line in open(f"{TRACING}/uprobe_profile"):
        p = line.split()
        if len(p) >= 3 and p[1].startswith("s") and p[1][1:].isdigit() and int(p[2]) > 0:
            hit.add(int(p[1][1:]))
    with open(f"{TRACING}/uprobe_events", "w"):
        pass
    return [sections[i] for i in sorted(hit)]


def sampled_archive_sections(binary, sections):
    """Archive (C library) sections that perf samples land in during FULL and 300 start-ups."""
    data = tempfile.mktemp(suffix=".perf")
    # Start-up functions run once per process: sample densely enough to see them.
    with open("/proc/sys/kernel/perf_event_max_sample_rate", "w") as f:
        f.write("100000")
    cd = Containerd(os.path.dirname(binary))
    try:
        script = FULL + f"\nfor i in $(seq 300); do {binary} -v >/dev/null; done\n"
        body = script.replace("$RT", f"--runtime io.containerd.tether.v2 --env PATH=/bin --rootfs {cd.rootfs}").replace("$C", cd.ctr(""))
        subprocess.run(["perf", "record", "-q", "-F", "50000", "-a", "-o", data, "--", "bash", "-c", body],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    finally:
        cd.stop()
    ips = subprocess.run(["perf", "script", "-i", data, "-F", "ip,dso"], capture_output=True, text=True).stdout
    os.unlink(data)
    starts = [s["addr"] for s in sections]
    hot = set()
    name = os.path.basename(binary)
    for line in ips.splitlines():
        f = line.split()
        if len(f) < 2 or name not in f[1]:
            continue
        ip = int(f[0], 16)
        i = bisect.bisect_right(starts, ip) - 1
        if i >= 0 and ip < sections[i]["addr"] + max(sections[i]["size"], 1) and is_archive(sections[i]):
            hot.add(i)
    return [sections[i] for i in sorted(hot)]


def touched_pages(path):
    """Page numbers of `path` in the page cache (mincore)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    p = libc.mmap(None, size, 1, 1, fd, 0)
    n = (size + 4095) // 4096
    vec = (ctypes.c_ubyte * n)()
    libc.mincore(p, size, vec)
    libc.munmap(p, size)
    os.close(fd)
    return {i for i in range(n) if vec[i] & 1}


def write_order(names):
    seen, out = set(), []
    for n in names:
        if n and n not in seen:
            seen.add(n)
            out.append(n)
    with open(ORDER, "w") as f:
        f.write("\n".join(out) + "\n")
    return out


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    work = tempfile.mkdtemp(prefix="tether-layout-")
    map_path = os.path.join(work, "map.txt")
    if "--refine" in sys.argv:
        # After small code changes: keep the order, only add what the core workload now
        # touches outside it (a minute or two, no uprobes).
        order = [l.strip() for l in open(ORDER) if l.strip()]
    else:
        build(map_path)
        sections = text_sections(map_path)
        bindir = os.path.join(work, "bin")
        os.makedirs(bindir)
        binary = os.path.join(bindir, "containerd-shim-tether-v2")
        shutil.copy(BIN, binary)
        probed = [s for s in sections if not is_archive(s) and s["size"] > 0]
        core = uprobe_hits(binary, probed, CORE)
        full = uprobe_hits(binary, probed, FULL)
        c_hot = sampled_archive_sections(binary, sections)
        order = write_order([symbol_of(s) for s in core + c_hot + full])
        print(f"{len(core)} core, {len(c_hot)} C, {len(full)} full-workload sections: {len(order)} symbols")

    # Refine against the real page-cache footprint: a loop-mounted ext4 with readahead off.
    img = os.path.join(work, "fs.img")
    sh(f"truncate -s 64M {img} && mkfs.ext4 -q -F {img}")
    loop = subprocess.run(["losetup", "-f", "--show", img], capture_output=True, text=True, check=True).stdout.strip()
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    try:
        sh(f"blockdev --setra 0 {loop}")
        for round_ in range(4):
            build(map_path)
            sections = text_sections(map_path)
            sh(f"mount {loop} {mnt}")
            shutil.copy(BIN, os.path.join(mnt, "containerd-shim-tether-v2"))
            sh(f"umount {mnt} && mount {loop} {mnt}")  # an empty page cache
            cd = Containerd(mnt)
            try:
                cd.run(CORE)
            finally:
                cd.stop()
            pages = touched_pages(os.path.join(mnt, "containerd-shim-tether-v2"))
            delta = text_delta(os.path.join(mnt, "containerd-shim-tether-v2"))
            sh(f"umount {mnt}")
            ordered = set(order)
            new = []
            for s in sections:
                n = symbol_of(s)
                if not n or n in ordered or s["size"] == 0:
                    continue
                off = s["addr"] - delta
                if any(p in pages for p in range(off // 4096, (off + s["size"] - 1) // 4096 + 1)):
                    new.append(n)
            print(f"round {round_}: {len(pages)} pages read, {len(new)} more sections")
            if not new:
                break
            order = write_order(order + new)
    finally:
        subprocess.run(["umount", mnt], stderr=subprocess.DEVNULL)
        subprocess.run(["losetup", "-d", loop])
        shutil.rmtree(work, ignore_errors=True)
    build(os.devnull)
    print(f"wrote {ORDER}")


if __name__ == "__main__":
    main()
