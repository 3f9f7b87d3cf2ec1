//! Fake cgroup hosts in temp dirs, built from `tests/fixtures/cgroups`, for the unit tests.

use std::fs;
use std::path::Path;

use super::ContainerCgroup;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgroups");

pub fn fixture(rel: &str) -> String {
    fs::read_to_string(format!("{FIXTURES}/{rel}")).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// Copies every fixture file of `src` into `dst`.
pub fn copy_fixtures(src: &str, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(format!("{FIXTURES}/{src}")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
}

pub fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A fake cgroup2 host in a temp dir: the `unified/` fixture's cgroup holding the `v2/`
/// files, and two huge page sizes.
pub fn v2_tree() -> (tempfile::TempDir, ContainerCgroup) {
    let root = tempfile::tempdir().unwrap();
    let cg = ContainerCgroup::from_parts(
        &fixture("unified/cgroup"),
        &fixture("unified/mountinfo"),
        root.path(),
    )
    .unwrap();
    copy_fixtures("v2", cg.dir("memory").unwrap());
    for size in ["hugepages-2048kB", "hugepages-1048576kB"] {
        fs::create_dir_all(root.path().join("sys/kernel/mm/hugepages").join(size)).unwrap();
    }
    (root, cg)
}

/// A fake v1 host in a temp dir with memory, cpu+cpuacct (co-mounted), pids, blkio and hugetlb
/// hierarchies, the `v1/` fixture files in each and a 2 MB huge page size.
pub fn v1_tree() -> (tempfile::TempDir, ContainerCgroup) {
    let root = tempfile::tempdir().unwrap();
    let mountinfo = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                     32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                     39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
                     38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n\
                     42 31 0:39 / /sys/fs/cgroup/hugetlb rw,relatime - cgroup cgroup rw,hugetlb\n\
                     41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    let proc_cgroup = "10:memory:/ctr\n9:cpu,cpuacct:/ctr\n8:pids:/ctr\n7:blkio:/ctr\n6:hugetlb:/ctr\n1:name=systemd:/ctr\n0::/ctr\n";
    let cg = ContainerCgroup::from_parts(proc_cgroup, mountinfo, root.path()).unwrap();
    for controller in ["memory", "cpu", "pids", "blkio", "hugetlb"] {
        copy_fixtures("v1", cg.dir(controller).unwrap());
    }
    let hugetlb = cg.dir("hugetlb").unwrap();
    write(&hugetlb.join("hugetlb.2MB.usage_in_bytes"), "2097152\n");
    write(&hugetlb.join("hugetlb.2MB.max_usage_in_bytes"), "4194304\n");
    write(&hugetlb.join("hugetlb.2MB.failcnt"), "1\n");
    fs::create_dir_all(root.path().join("sys/kernel/mm/hugepages/hugepages-2048kB")).unwrap();
    fs::create_dir_all(root.path().join("proc")).unwrap();
    fs::copy(
        format!("{FIXTURES}/partitions"),
        root.path().join("proc/partitions"),
    )
    .unwrap();
    (root, cg)
}

pub fn events(max: u64, oom_kill: u64) -> String {
    format!("low 0\nhigh 0\nmax {max}\noom {oom_kill}\noom_kill {oom_kill}\noom_group_kill 0\n")
}

/// A cgroup2 "host" in a temp dir with one cgroup `/ctr` holding only `memory.events`.
pub fn events_tree() -> (tempfile::TempDir, ContainerCgroup) {
    let root = tempfile::tempdir().unwrap();
    let cg = ContainerCgroup::from_parts(
        "0::/ctr\n",
        "31 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
        root.path(),
    )
    .unwrap();
    fs::create_dir_all(cg.dir("memory").unwrap()).unwrap();
    write(
        &cg.dir("memory").unwrap().join("memory.events"),
        &events(0, 0),
    );
    (root, cg)
}
