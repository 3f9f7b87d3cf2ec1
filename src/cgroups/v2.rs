//! cgroup v2 metrics: containerd's `io.containerd.cgroups.v2.Metrics`, filled as
//! `cgroups/v3/cgroup2/manager.go` does.

use std::path::Path;

use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::MessageField;

pub use containerd_shim_protos::cgroups_v2::metrics::Metrics;

use super::files::{flat_keyed, huge_page_sizes, parse_num, rdma_entries, read_opt, read_value};
use crate::error::Result;

/// Like containerd's `cgroup2.Manager.Stat`: pids, cpu, memory, io and rdma are always present
/// (zeros for what the cgroup lacks), memory_events when `memory.events` has counters, one
/// hugetlb entry per host page size. Unlike it, `cpu.stat` is read even when the cpu controller
/// is not enabled (its usage lines are always there), and `workingset_refault`,
/// `workingset_activate` and `slab` are summed from their `_anon`/`_file` (resp.
/// `slab_(un)reclaimable`) parts on kernels that no longer print the total.
pub(super) fn metrics(dir: &Path, host_root: &Path) -> Result<v2::Metrics> {
    let mut m = v2::Metrics::new();
    let value =
        |file: &str| -> Result<u64> { Ok(read_value(&dir.join(file), u64::MAX)?.unwrap_or(0)) };

    m.pids = MessageField::some(v2::PidsStat {
        current: value("pids.current")?,
        limit: value("pids.max")?,
        ..Default::default()
    });

    let mut cpu = v2::CPUStat::new();
    if let Some(text) = read_opt(&dir.join("cpu.stat"))? {
        for (key, v) in flat_keyed(&text) {
            let field = match key {
                "usage_usec" => &mut cpu.usage_usec,
                "user_usec" => &mut cpu.user_usec,
                "system_usec" => &mut cpu.system_usec,
                "nr_periods" => &mut cpu.nr_periods,
                "nr_throttled" => &mut cpu.nr_throttled,
                "throttled_usec" => &mut cpu.throttled_usec,
                "nr_bursts" => &mut cpu.nr_bursts,
                "burst_usec" => &mut cpu.burst_usec,
                _ => continue,
            };
            *field = v;
        }
    }
    cpu.psi = read_psi(&dir.join("cpu.pressure"))?;
    m.cpu = MessageField::some(cpu);

    let mut mem = v2::MemoryStat::new();
    if let Some(text) = read_opt(&dir.join("memory.stat"))? {
        v2_memory_stat(&text, &mut mem);
    }
    mem.usage = value("memory.current")?;
    mem.usage_limit = value("memory.max")?;
    mem.max_usage = value("memory.peak")?;
    mem.swap_usage = value("memory.swap.current")?;
    mem.swap_limit = value("memory.swap.max")?;
    mem.swap_max_usage = value("memory.swap.peak")?;
    mem.psi = read_psi(&dir.join("memory.pressure"))?;
    m.memory = MessageField::some(mem);

    if let Some(text) = read_opt(&dir.join("memory.events"))? {
        let mut events = v2::MemoryEvents::new();
        let mut any = false;
        for (key, v) in flat_keyed(&text) {
            let field = match key {
                "low" => &mut events.low,
                "high" => &mut events.high,
                "max" => &mut events.max,
                "oom" => &mut events.oom,
                "oom_kill" => &mut events.oom_kill,
                "oom_group_kill" => &mut events.oom_group_kill,
                _ => continue,
            };
            *field = v;
            any = true;
        }
        if any {
            m.memory_events = MessageField::some(events);
        }
    }

    let mut io_stat = v2::IOStat::new();
    if let Some(text) = read_opt(&dir.join("io.stat"))? {
        io_stat.usage = text.lines().filter_map(io_entry).collect();
    }
    io_stat.psi = read_psi(&dir.join("io.pressure"))?;
    m.io = MessageField::some(io_stat);

    let rdma = |file: &str| -> Result<Vec<v2::RdmaEntry>> {
        Ok(rdma_entries(&dir.join(file))?
            .into_iter()
            .map(|(device, hca_handles, hca_objects)| v2::RdmaEntry {
                device,
                hca_handles,
                hca_objects,
                ..Default::default()
            })
            .collect())
    };
    m.rdma = MessageField::some(v2::RdmaStat {
        current: rdma("rdma.current")?,
        limit: rdma("rdma.max")?,
        ..Default::default()
    });

    for size in huge_page_sizes(host_root) {
        let failcnt = read_opt(&dir.join(format!("hugetlb.{size}.events")))?
            .and_then(|text| flat_keyed(&text).find(|(k, _)| *k == "max").map(|(_, v)| v))
            .unwrap_or(0);
        m.hugetlb.push(v2::HugeTlbStat {
            current: value(&format!("hugetlb.{size}.current"))?,
            max: value(&format!("hugetlb.{size}.max"))?,
            failcnt,
            pagesize: size,
            ..Default::default()
        });
    }
    Ok(m)
}

fn v2_memory_stat(text: &str, s: &mut v2::MemoryStat) {
    // Totals newer kernels split up: (seen the total, sum of the parts).
    let (mut refault, mut activate, mut slab) = ((false, 0u64), (false, 0u64), (false, 0u64));
    for (key, v) in flat_keyed(text) {
        match key {
            "workingset_refault_anon" | "workingset_refault_file" => {
                refault.1 = refault.1.saturating_add(v)
            }
            "workingset_activate_anon" | "workingset_activate_file" => {
                activate.1 = activate.1.saturating_add(v)
            }
            "workingset_refault" => refault.0 = true,
            "workingset_activate" => activate.0 = true,
            "slab" => slab.0 = true,
            _ => {}
        }
        if matches!(key, "slab_reclaimable" | "slab_unreclaimable") {
            slab.1 = slab.1.saturating_add(v);
        }
        let field = match key {
            "anon" => &mut s.anon,
            "file" => &mut s.file,
            "kernel_stack" => &mut s.kernel_stack,
            "slab" => &mut s.slab,
            "sock" => &mut s.sock,
            "shmem" => &mut s.shmem,
            "file_mapped" => &mut s.file_mapped,
            "file_dirty" => &mut s.file_dirty,
            "file_writeback" => &mut s.file_writeback,
            "anon_thp" => &mut s.anon_thp,
            "inactive_anon" => &mut s.inactive_anon,
            "active_anon" => &mut s.active_anon,
            "inactive_file" => &mut s.inactive_file,
            "active_file" => &mut s.active_file,
            "unevictable" => &mut s.unevictable,
            "slab_reclaimable" => &mut s.slab_reclaimable,
            "slab_unreclaimable" => &mut s.slab_unreclaimable,
            "pgfault" => &mut s.pgfault,
            "pgmajfault" => &mut s.pgmajfault,
            "workingset_refault" => &mut s.workingset_refault,
            "workingset_activate" => &mut s.workingset_activate,
            "workingset_nodereclaim" => &mut s.workingset_nodereclaim,
            "pgrefill" => &mut s.pgrefill,
            "pgscan" => &mut s.pgscan,
            "pgsteal" => &mut s.pgsteal,
            "pgactivate" => &mut s.pgactivate,
            "pgdeactivate" => &mut s.pgdeactivate,
            "pglazyfree" => &mut s.pglazyfree,
            "pglazyfreed" => &mut s.pglazyfreed,
            "thp_fault_alloc" => &mut s.thp_fault_alloc,
            "thp_collapse_alloc" => &mut s.thp_collapse_alloc,
            _ => continue,
        };
        *field = v;
    }
    if !refault.0 {
        s.workingset_refault = refault.1;
    }
    if !activate.0 {
        s.workingset_activate = activate.1;
    }
    if !slab.0 {
        s.slab = slab.1;
    }
}

/// An `io.stat` line: `<major>:<minor> rbytes=<n> wbytes=<n> rios=<n> wios=<n> ...`.
fn io_entry(line: &str) -> Option<v2::IOEntry> {
    let mut fields = line.split_ascii_whitespace();
    let (major, minor) = fields.next()?.split_once(':')?;
    let mut entry = v2::IOEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        ..Default::default()
    };
    for kv in fields {
        let Some((key, value)) = kv.split_once('=') else {
            continue;
        };
        let Ok(value) = value.parse() else { continue };
        match key {
            "rbytes" => entry.rbytes = value,
            "wbytes" => entry.wbytes = value,
            "rios" => entry.rios = value,
            "wios" => entry.wios = value,
            _ => {}
        }
    }
    Some(entry)
}

/// A pressure file (`some avg10=.. avg60=.. avg300=.. total=..` and the same for `full`); none
/// when absent (PSI disabled).
fn read_psi(path: &Path) -> Result<MessageField<v2::PSIStats>> {
    let Some(text) = read_opt(path)? else {
        return Ok(MessageField::none());
    };
    let mut psi = v2::PSIStats::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut psi.some,
            Some("full") => &mut psi.full,
            _ => continue,
        };
        let mut data = v2::PSIData::new();
        for kv in fields {
            let Some((key, value)) = kv.split_once('=') else {
                continue;
            };
            match key {
                "avg10" => data.avg10 = value.parse().unwrap_or(0.0),
                "avg60" => data.avg60 = value.parse().unwrap_or(0.0),
                "avg300" => data.avg300 = value.parse().unwrap_or(0.0),
                "total" => data.total = parse_num(value).unwrap_or(0),
                _ => {}
            }
        }
        *slot = MessageField::some(data);
    }
    Ok(MessageField::some(psi))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use containerd_shim_protos::protobuf::Message;

    use super::*;
    use crate::cgroups::testdata::*;
    use crate::cgroups::{ContainerCgroup, Metrics as AnyMetrics};

    fn psi(some: (f64, f64, f64, u64), full: (f64, f64, f64, u64)) -> MessageField<v2::PSIStats> {
        let data = |(avg10, avg60, avg300, total)| {
            MessageField::some(v2::PSIData {
                avg10,
                avg60,
                avg300,
                total,
                ..Default::default()
            })
        };
        MessageField::some(v2::PSIStats {
            some: data(some),
            full: data(full),
            ..Default::default()
        })
    }

    #[test]
    fn v2_metrics_from_fixture_files() {
        let (_root, cg) = v2_tree();
        let AnyMetrics::V2(m) = cg.metrics().unwrap() else {
            panic!("a unified cgroup gives v2 metrics")
        };
        assert_eq!(
            *m.pids,
            v2::PidsStat {
                current: 7,
                limit: 4096,
                ..Default::default()
            }
        );
        assert_eq!(
            *m.cpu,
            v2::CPUStat {
                usage_usec: 6132218,
                user_usec: 4485903,
                system_usec: 1646315,
                nr_periods: 2187,
                nr_throttled: 93,
                throttled_usec: 1702811,
                nr_bursts: 4,
                burst_usec: 12000,
                psi: psi((1.25, 0.80, 0.31, 5912233), (0.50, 0.22, 0.07, 2231004)),
                ..Default::default()
            }
        );
        assert_eq!(
            *m.memory,
            v2::MemoryStat {
                anon: 44040192,
                file: 122757120,
                kernel_stack: 327680,
                slab: 2755136,
                sock: 4096,
                shmem: 2195456,
                file_mapped: 33886208,
                file_dirty: 135168,
                file_writeback: 0,
                anon_thp: 8388608,
                inactive_anon: 46170112,
                active_anon: 61440,
                inactive_file: 74067968,
                active_file: 46493696,
                unevictable: 0,
                slab_reclaimable: 2244744,
                slab_unreclaimable: 510392,
                pgfault: 1214436,
                pgmajfault: 712,
                // 6.x prints only the _anon/_file parts: 12 + 3304 and 3 + 1021.
                workingset_refault: 3316,
                workingset_activate: 1024,
                workingset_nodereclaim: 64,
                pgrefill: 4217,
                pgscan: 18254,
                pgsteal: 17993,
                pgactivate: 29581,
                pgdeactivate: 3988,
                pglazyfree: 0,
                pglazyfreed: 0,
                thp_fault_alloc: 9,
                thp_collapse_alloc: 2,
                usage: 170328064,
                usage_limit: 268435456,
                swap_usage: 0,
                swap_limit: u64::MAX,
                max_usage: 201326592,
                swap_max_usage: 1048576,
                psi: psi((0.0, 0.04, 0.01, 40211), (0.0, 0.02, 0.0, 30877)),
                ..Default::default()
            }
        );
        assert_eq!(
            *m.memory_events,
            v2::MemoryEvents {
                low: 0,
                high: 0,
                max: 27,
                oom: 3,
                oom_kill: 2,
                oom_group_kill: 1,
                ..Default::default()
            }
        );
        let io = |major, minor, rbytes, wbytes, rios, wios| v2::IOEntry {
            major,
            minor,
            rbytes,
            wbytes,
            rios,
            wios,
            ..Default::default()
        };
        assert_eq!(
            m.io.usage,
            [
                io(259, 0, 90222592, 2183168, 1797, 213),
                io(253, 0, 4096, 0, 1, 0)
            ]
        );
        assert_eq!(
            m.io.psi,
            psi((0.12, 0.09, 0.03, 811922), (0.10, 0.08, 0.02, 790301))
        );
        let rdma = |hca_handles, hca_objects| v2::RdmaEntry {
            device: "mlx5_0".into(),
            hca_handles,
            hca_objects,
            ..Default::default()
        };
        assert_eq!(m.rdma.current, [rdma(2, 112)]);
        assert_eq!(m.rdma.limit, [rdma(u32::MAX, 4000)]);
        let huge = |pagesize: &str, current, max, failcnt| v2::HugeTlbStat {
            pagesize: pagesize.into(),
            current,
            max,
            failcnt,
            ..Default::default()
        };
        assert_eq!(
            m.hugetlb,
            [
                huge("2MB", 4194304, 16777216, 3),
                huge("1GB", 0, u64::MAX, 0)
            ]
        );
        assert_eq!(cg.oom_kill_count(), Some(2));

        // What the service sends: decodable as the v2 message under its full name.
        let metrics = AnyMetrics::V2(m.clone());
        let any = metrics.to_any();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        assert_eq!(v2::Metrics::parse_from_bytes(&any.value).unwrap(), m);
    }

    #[test]
    fn v2_metrics_of_a_cgroup_without_controllers() {
        // Captured from a cgroup2 child on the dev VM, where every controller is bound to v1.
        let root = tempfile::tempdir().unwrap();
        let cg = ContainerCgroup::from_parts(
            "0::/c\n",
            "31 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            root.path(),
        )
        .unwrap();
        copy_fixtures("v2-real", cg.dir("cpu").unwrap());
        let AnyMetrics::V2(m) = cg.metrics().unwrap() else {
            panic!("v2")
        };
        assert_eq!(
            (
                m.cpu.usage_usec,
                m.cpu.user_usec,
                m.cpu.system_usec,
                m.cpu.nr_periods
            ),
            (71842, 68061, 3781, 0)
        );
        assert_eq!(m.cpu.psi, psi((0.0, 0.0, 0.0, 3569), (0.0, 0.0, 0.0, 3569)));
        // Always present as in containerd, zero here.
        assert_eq!(*m.pids, v2::PidsStat::new());
        assert_eq!(*m.memory, v2::MemoryStat::new());
        assert_eq!(*m.io, v2::IOStat::new());
        assert!(m.memory_events.is_none());
        assert!(m.hugetlb.is_empty(), "no huge page sizes on this fake host");
        assert_eq!(cg.oom_kill_count(), None);
    }

    #[test]
    fn odd_file_contents_are_skipped_not_fatal() {
        let junk = "\u{0}\u{7f}garbage\nmax max\n1 2 3\n-\n=\nsome avg10=x total=\n254:0 rbytes=x wbytes\n:::\n \n";
        let (_root, cg) = v2_tree();
        let (_root1, cg1) = v1_tree();
        for dir in [
            cg.dir("memory").unwrap(),
            cg1.dir("memory").unwrap(),
            cg1.dir("cpu").unwrap(),
            cg1.dir("blkio").unwrap(),
        ] {
            for entry in fs::read_dir(dir).unwrap() {
                write(&entry.unwrap().path(), junk);
            }
        }
        // Not even UTF-8.
        fs::write(
            cg.dir("memory").unwrap().join("memory.stat"),
            b"anon \xff\xfe\nfile 4096\n",
        )
        .unwrap();
        let AnyMetrics::V2(m) = cg.metrics().unwrap() else {
            panic!("v2")
        };
        assert_eq!(
            (
                m.memory.anon,
                m.memory.file,
                m.pids.current,
                m.cpu.usage_usec
            ),
            (0, 4096, 0, 0)
        );
        // Only the line with a device number counts, with nothing readable in it.
        assert_eq!(
            m.io.usage,
            [v2::IOEntry {
                major: 254,
                minor: 0,
                ..Default::default()
            }]
        );
        assert_eq!(m.cpu.psi.some.total, 0);
        assert_eq!(cg.oom_kill_count(), None);
        let AnyMetrics::V1(m) = cg1.metrics().unwrap() else {
            panic!("v1")
        };
        assert_eq!(m.memory.cache, 0);
        assert!(m.blkio.io_serviced_recursive.is_empty());
    }
}
