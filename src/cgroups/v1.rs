//! cgroup v1 metrics: containerd's `io.containerd.cgroups.v1.Metrics`, filled as
//! `cgroups/v3/cgroup1` does.

use std::path::Path;

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::protobuf::MessageField;

pub use containerd_shim_protos::cgroups::metrics::Metrics;

use super::files::{
    clock_ticks, flat_keyed, huge_page_sizes, parse_num, rdma_entries, read_opt, read_value,
};
use super::ContainerCgroup;
use crate::error::Result;

/// The v1 metrics of `cg` (a v1 layout).
pub(super) fn metrics(cg: &ContainerCgroup) -> Result<v1::Metrics> {
    let mut m = v1::Metrics::new();
    if let Some(dir) = cg.dir("pids") {
        if let Some(current) = read_value(&dir.join("pids.current"), 0)? {
            let limit = read_value(&dir.join("pids.max"), 0)?.unwrap_or(0);
            m.pids = MessageField::some(v1::PidsStat {
                current,
                limit,
                ..Default::default()
            });
        }
    }
    // containerd always sends a cpu message with both parts, zero when not mounted.
    m.cpu = MessageField::some(v1::CPUStat {
        usage: MessageField::some(v1_cpu_usage(cg.dir("cpuacct"))?),
        throttling: MessageField::some(v1_throttling(cg.dir("cpu"))?),
        ..Default::default()
    });
    if let Some(dir) = cg.dir("memory") {
        v1_memory(dir, &mut m)?;
    }
    if let Some(dir) = cg.dir("blkio") {
        m.blkio = MessageField::some(v1_blkio(dir, &cg.host_root)?);
    }
    if let Some(dir) = cg.dir("hugetlb") {
        for size in huge_page_sizes(&cg.host_root) {
            let file = |name: &str| dir.join(format!("hugetlb.{size}.{name}"));
            m.hugetlb.push(v1::HugetlbStat {
                usage: read_value(&file("usage_in_bytes"), 0)?.unwrap_or(0),
                max: read_value(&file("max_usage_in_bytes"), 0)?.unwrap_or(0),
                failcnt: read_value(&file("failcnt"), 0)?.unwrap_or(0),
                pagesize: size,
                ..Default::default()
            });
        }
    }
    if let Some(dir) = cg.dir("rdma") {
        let entries = |file: &str| -> Result<Vec<v1::RdmaEntry>> {
            Ok(rdma_entries(&dir.join(file))?
                .into_iter()
                .map(|(device, hca_handles, hca_objects)| v1::RdmaEntry {
                    device,
                    hca_handles,
                    hca_objects,
                    ..Default::default()
                })
                .collect())
        };
        m.rdma = MessageField::some(v1::RdmaStat {
            current: entries("rdma.current")?,
            limit: entries("rdma.max")?,
            ..Default::default()
        });
    }
    Ok(m)
}

fn v1_cpu_usage(cpuacct: Option<&Path>) -> Result<v1::CPUUsage> {
    let mut usage = v1::CPUUsage::new();
    let Some(dir) = cpuacct else { return Ok(usage) };
    usage.total = read_value(&dir.join("cpuacct.usage"), 0)?.unwrap_or(0);
    if let Some(text) = read_opt(&dir.join("cpuacct.usage_percpu"))? {
        // Keep positions: entry i is CPU i even if one value were unreadable.
        usage.per_cpu = text
            .split_ascii_whitespace()
            .map(|v| parse_num(v).unwrap_or(0))
            .collect();
    }
    if let Some(text) = read_opt(&dir.join("cpuacct.stat"))? {
        // USER_HZ ticks to nanoseconds, as containerd reports them. u128: a root cgroup on a big
        // machine overflows u64 in the multiplication.
        let hz = u128::from(clock_ticks());
        let ns =
            |ticks: u64| u64::try_from(u128::from(ticks) * 1_000_000_000 / hz).unwrap_or(u64::MAX);
        for (key, value) in flat_keyed(&text) {
            match key {
                "user" => usage.user = ns(value),
                "system" => usage.kernel = ns(value),
                _ => {}
            }
        }
    }
    Ok(usage)
}

fn v1_throttling(cpu: Option<&Path>) -> Result<v1::Throttle> {
    let mut throttle = v1::Throttle::new();
    let Some(text) = cpu
        .map(|d| read_opt(&d.join("cpu.stat")))
        .transpose()?
        .flatten()
    else {
        return Ok(throttle);
    };
    for (key, value) in flat_keyed(&text) {
        match key {
            "nr_periods" => throttle.periods = value,
            "nr_throttled" => throttle.throttled_periods = value,
            "throttled_time" => throttle.throttled_time = value,
            _ => {}
        }
    }
    Ok(throttle)
}

fn v1_memory(dir: &Path, m: &mut v1::Metrics) -> Result<()> {
    let Some(text) = read_opt(&dir.join("memory.stat"))? else {
        return Ok(());
    };
    let mut s = v1::MemoryStat::new();
    for (key, value) in flat_keyed(&text) {
        let field = match key {
            "cache" => &mut s.cache,
            "rss" => &mut s.rss,
            "rss_huge" => &mut s.rss_huge,
            "mapped_file" => &mut s.mapped_file,
            "dirty" => &mut s.dirty,
            "writeback" => &mut s.writeback,
            "pgpgin" => &mut s.pg_pg_in,
            "pgpgout" => &mut s.pg_pg_out,
            "pgfault" => &mut s.pg_fault,
            "pgmajfault" => &mut s.pg_maj_fault,
            "inactive_anon" => &mut s.inactive_anon,
            "active_anon" => &mut s.active_anon,
            "inactive_file" => &mut s.inactive_file,
            "active_file" => &mut s.active_file,
            "unevictable" => &mut s.unevictable,
            "hierarchical_memory_limit" => &mut s.hierarchical_memory_limit,
            "hierarchical_memsw_limit" => &mut s.hierarchical_swap_limit,
            "total_cache" => &mut s.total_cache,
            "total_rss" => &mut s.total_rss,
            "total_rss_huge" => &mut s.total_rss_huge,
            "total_mapped_file" => &mut s.total_mapped_file,
            "total_dirty" => &mut s.total_dirty,
            "total_writeback" => &mut s.total_writeback,
            "total_pgpgin" => &mut s.total_pg_pg_in,
            "total_pgpgout" => &mut s.total_pg_pg_out,
            "total_pgfault" => &mut s.total_pg_fault,
            "total_pgmajfault" => &mut s.total_pg_maj_fault,
            "total_inactive_anon" => &mut s.total_inactive_anon,
            "total_active_anon" => &mut s.total_active_anon,
            "total_inactive_file" => &mut s.total_inactive_file,
            "total_active_file" => &mut s.total_active_file,
            "total_unevictable" => &mut s.total_unevictable,
            _ => continue,
        };
        *field = value;
    }
    // containerd sends all four entries, zero where the kernel has no such files (memsw without
    // swap accounting, kmem on newer kernels).
    for (module, entry) in [
        ("", &mut s.usage),
        ("memsw.", &mut s.swap),
        ("kmem.", &mut s.kernel),
        ("kmem.tcp.", &mut s.kernel_tcp),
    ] {
        let value = |name: &str| -> Result<u64> {
            Ok(read_value(&dir.join(format!("memory.{module}{name}")), 0)?.unwrap_or(0))
        };
        *entry = MessageField::some(v1::MemoryEntry {
            usage: value("usage_in_bytes")?,
            max: value("max_usage_in_bytes")?,
            failcnt: value("failcnt")?,
            limit: value("limit_in_bytes")?,
            ..Default::default()
        });
    }
    m.memory = MessageField::some(s);
    if let Some(text) = read_opt(&dir.join("memory.oom_control"))? {
        let mut oom = v1::MemoryOomControl::new();
        for (key, value) in flat_keyed(&text) {
            match key {
                "oom_kill_disable" => oom.oom_kill_disable = value,
                "under_oom" => oom.under_oom = value,
                "oom_kill" => oom.oom_kill = value,
                _ => {}
            }
        }
        m.memory_oom_control = MessageField::some(oom);
    }
    Ok(())
}

/// The blkio files containerd reads: the CFQ `*_recursive` set when the kernel has it, else
/// (no CFQ, or CFQ not used by the cgroup's devices) the throttle counters.
fn v1_blkio(dir: &Path, host_root: &Path) -> Result<v1::BlkIOStat> {
    let mut stat = v1::BlkIOStat::new();
    let devices = device_names(host_root)?;
    let read = |file: &str, entries: &mut Vec<v1::BlkIOEntry>| -> Result<()> {
        if let Some(text) = read_opt(&dir.join(format!("blkio.{file}")))? {
            entries.extend(text.lines().filter_map(|line| blkio_entry(line, &devices)));
        }
        Ok(())
    };
    if dir.join("blkio.io_serviced_recursive").exists() {
        read("sectors_recursive", &mut stat.sectors_recursive)?;
        read(
            "io_service_bytes_recursive",
            &mut stat.io_service_bytes_recursive,
        )?;
        read("io_serviced_recursive", &mut stat.io_serviced_recursive)?;
        read("io_queued_recursive", &mut stat.io_queued_recursive)?;
        read(
            "io_service_time_recursive",
            &mut stat.io_service_time_recursive,
        )?;
        read("io_wait_time_recursive", &mut stat.io_wait_time_recursive)?;
        read("io_merged_recursive", &mut stat.io_merged_recursive)?;
        read("time_recursive", &mut stat.io_time_recursive)?;
    }
    let cfq_entries = stat.sectors_recursive.len()
        + stat.io_service_bytes_recursive.len()
        + stat.io_serviced_recursive.len()
        + stat.io_queued_recursive.len()
        + stat.io_service_time_recursive.len()
        + stat.io_wait_time_recursive.len()
        + stat.io_merged_recursive.len()
        + stat.io_time_recursive.len();
    if cfq_entries == 0 {
        read("throttle.io_serviced", &mut stat.io_serviced_recursive)?;
        read(
            "throttle.io_service_bytes",
            &mut stat.io_service_bytes_recursive,
        )?;
    }
    Ok(stat)
}

/// `<major>:<minor> <op> <value>` or `<major>:<minor> <value>`; the trailing `Total <n>` line
/// and anything unparsable give None.
fn blkio_entry(line: &str, devices: &[(u64, u64, String)]) -> Option<v1::BlkIOEntry> {
    let mut fields = line.split_ascii_whitespace();
    let (major, minor) = fields.next()?.split_once(':')?;
    let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
    let (op, value) = match (fields.next()?, fields.next()) {
        (value, None) => ("", value),
        (op, Some(value)) => (op, value),
    };
    if fields.next().is_some() {
        return None;
    }
    let device = devices
        .iter()
        .find(|(ma, mi, _)| *ma == major && *mi == minor)
        .map(|(_, _, name)| name.clone())
        .unwrap_or_default();
    Some(v1::BlkIOEntry {
        op: op.to_string(),
        device,
        major,
        minor,
        value: parse_num(value)?,
        ..Default::default()
    })
}

/// `/dev/<name>` for each `major minor` of `proc/partitions` (first occurrence wins).
fn device_names(host_root: &Path) -> Result<Vec<(u64, u64, String)>> {
    let Some(text) = read_opt(&host_root.join("proc/partitions"))? else {
        return Ok(Vec::new());
    };
    let mut devices: Vec<(u64, u64, String)> = Vec::new();
    for line in text.lines().skip(2) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let [major, minor, _, name] = f[..] else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        if !devices
            .iter()
            .any(|(ma, mi, _)| *ma == major && *mi == minor)
        {
            devices.push((major, minor, format!("/dev/{name}")));
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::error::Error;
    use containerd_shim_protos::protobuf::Message;

    use super::*;
    use crate::cgroups::testdata::*;
    use crate::cgroups::Metrics as AnyMetrics;

    #[test]
    fn blkio_lines() {
        let devices = vec![(254, 0, "/dev/vda".to_string())];
        let e = blkio_entry("254:0 Read 4096", &devices).unwrap();
        assert_eq!(
            (e.major, e.minor, e.op.as_str(), e.value, e.device.as_str()),
            (254, 0, "Read", 4096, "/dev/vda")
        );
        let e = blkio_entry("8:16 777", &devices).unwrap();
        assert_eq!(
            (e.major, e.minor, e.op.as_str(), e.value, e.device.as_str()),
            (8, 16, "", 777, "")
        );
        for bad in [
            "Total 12582912",
            "",
            "254:0",
            "254 0 Read 1",
            "254:x Read 1",
            "254:0 Read x",
            "254:0 Read 1 2",
            "1 2 3",
        ] {
            assert!(blkio_entry(bad, &devices).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn v1_metrics_from_fixture_files() {
        let (_root, cg) = v1_tree();
        let AnyMetrics::V1(m) = cg.metrics().unwrap() else {
            panic!("a v1 cgroup gives v1 metrics")
        };
        // pids.max "max" reads as 0 on v1, as in containerd.
        assert_eq!(
            *m.pids,
            v1::PidsStat {
                current: 1,
                limit: 0,
                ..Default::default()
            }
        );
        let ns = |ticks: u64| ticks * 1_000_000_000 / clock_ticks();
        assert_eq!(
            *m.cpu.usage,
            v1::CPUUsage {
                total: 1064364954920,
                kernel: ns(41244),
                user: ns(65192),
                per_cpu: vec![486544593112, 577820421687],
                ..Default::default()
            }
        );
        assert_eq!(*m.cpu.throttling, v1::Throttle::new());
        let unlimited = 9223372036854771712;
        let entry = |usage, max, limit| {
            MessageField::some(v1::MemoryEntry {
                usage,
                max,
                limit,
                failcnt: 0,
                ..Default::default()
            })
        };
        assert_eq!(
            *m.memory,
            v1::MemoryStat {
                cache: 3100672,
                rss: 1974272,
                rss_huge: 0,
                mapped_file: 36864,
                dirty: 61440,
                writeback: 0,
                pg_pg_in: 46743,
                pg_pg_out: 45479,
                pg_fault: 103083,
                pg_maj_fault: 20,
                inactive_anon: 1941504,
                active_anon: 8192,
                inactive_file: 1757184,
                active_file: 1331200,
                unevictable: 0,
                hierarchical_memory_limit: unlimited,
                hierarchical_swap_limit: unlimited,
                total_cache: 3100672,
                total_rss: 1974272,
                total_rss_huge: 0,
                total_mapped_file: 36864,
                total_dirty: 61440,
                total_writeback: 0,
                total_pg_pg_in: 46743,
                total_pg_pg_out: 45479,
                total_pg_fault: 103083,
                total_pg_maj_fault: 20,
                total_inactive_anon: 1941504,
                total_active_anon: 8192,
                total_inactive_file: 1757184,
                total_active_file: 1331200,
                total_unevictable: 0,
                usage: entry(6414336, 13791232, unlimited),
                swap: entry(6762496, 13791232, unlimited),
                kernel: entry(1482752, 3547136, unlimited),
                kernel_tcp: entry(0, 0, unlimited),
                ..Default::default()
            }
        );
        assert_eq!(*m.memory_oom_control, v1::MemoryOomControl::new());
        // No CFQ files: the throttle counters, with device names from /proc/partitions.
        let blk = |op: &str, value| v1::BlkIOEntry {
            op: op.into(),
            device: "/dev/vda".into(),
            major: 254,
            minor: 0,
            value,
            ..Default::default()
        };
        assert_eq!(
            m.blkio.io_service_bytes_recursive,
            [
                blk("Read", 4194304),
                blk("Write", 8388608),
                blk("Sync", 12582912),
                blk("Async", 0),
                blk("Discard", 0),
                blk("Total", 12582912)
            ]
        );
        assert_eq!(
            m.blkio.io_serviced_recursive,
            [
                blk("Read", 32),
                blk("Write", 64),
                blk("Sync", 96),
                blk("Async", 0),
                blk("Discard", 0),
                blk("Total", 96)
            ]
        );
        assert!(m.blkio.io_queued_recursive.is_empty() && m.blkio.sectors_recursive.is_empty());
        assert_eq!(
            m.hugetlb,
            [v1::HugetlbStat {
                usage: 2097152,
                max: 4194304,
                failcnt: 1,
                pagesize: "2MB".into(),
                ..Default::default()
            }]
        );
        assert!(m.rdma.is_none());
        assert_eq!(cg.oom_kill_count(), Some(0));

        let any = AnyMetrics::V1(m.clone()).to_any();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(v1::Metrics::parse_from_bytes(&any.value).unwrap(), m);
    }

    #[test]
    fn blkio_prefers_cfq_files_and_falls_back_to_throttle() {
        let (_root, cg) = v1_tree();
        let blkio = cg.dir("blkio").unwrap();
        // CFQ present but idle for this cgroup: still the throttle counters.
        write(&blkio.join("blkio.io_serviced_recursive"), "Total 0\n");
        let AnyMetrics::V1(m) = cg.metrics().unwrap() else {
            panic!("v1")
        };
        assert_eq!(m.blkio.io_serviced_recursive.len(), 6);
        // CFQ with entries: those, and no throttle counters.
        write(
            &blkio.join("blkio.io_serviced_recursive"),
            "254:0 Read 5\n254:0 Total 5\nTotal 5\n",
        );
        write(&blkio.join("blkio.time_recursive"), "254:0 1234\n");
        let AnyMetrics::V1(m) = cg.metrics().unwrap() else {
            panic!("v1")
        };
        assert_eq!(
            m.blkio
                .io_serviced_recursive
                .iter()
                .map(|e| (e.op.as_str(), e.value))
                .collect::<Vec<_>>(),
            [("Read", 5), ("Total", 5)]
        );
        assert_eq!(
            m.blkio
                .io_time_recursive
                .iter()
                .map(|e| (e.op.as_str(), e.value))
                .collect::<Vec<_>>(),
            [("", 1234)]
        );
        assert!(m.blkio.io_service_bytes_recursive.is_empty());
    }

    #[test]
    fn v1_without_oom_kill_line_and_without_controllers() {
        let (root, cg) = v1_tree();
        let memory = cg.dir("memory").unwrap();
        // Kernels before 4.13 have no oom_kill line.
        write(
            &memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\n",
        );
        assert_eq!(cg.oom_kill_count(), None);
        // A process only in cpu,cpuacct (and a named hierarchy), with none of the cpu files: cpu
        // is still sent, zero, as containerd does; the rest is left out.
        let mountinfo =
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let cg = ContainerCgroup::from_parts(
            "9:cpu,cpuacct:/ctr\n1:name=systemd:/\n",
            mountinfo,
            root.path(),
        )
        .unwrap();
        let cpu = cg.dir("cpu").unwrap();
        for f in [
            "cpuacct.usage",
            "cpuacct.usage_percpu",
            "cpuacct.stat",
            "cpu.stat",
        ] {
            fs::remove_file(cpu.join(f)).unwrap();
        }
        assert_eq!(cg.oom_kill_count(), None);
        assert!(
            matches!(cg.watch_oom(), Err(Error::FailedPrecondition(_))),
            "no runtime here"
        );
        let AnyMetrics::V1(m) = cg.metrics().unwrap() else {
            panic!("v1")
        };
        assert_eq!(m.cpu.usage.as_ref(), Some(&v1::CPUUsage::new()));
        assert_eq!(m.cpu.throttling.as_ref(), Some(&v1::Throttle::new()));
        assert!(
            m.memory.is_none()
                && m.pids.is_none()
                && m.blkio.is_none()
                && m.memory_oom_control.is_none()
        );
        assert!(m.hugetlb.is_empty());
    }
}
