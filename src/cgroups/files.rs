//! Reading cgroup files: whole files that may be absent, single values, flat-keyed counters.
//!
//! Hand-written rather than with `cgroups-rs` (0.5.1, the kata-containers crate): these few
//! functions are all the parsing the shim needs. That crate manages cgroups (create, apply,
//! freeze) and always links a D-Bus stack (`zbus`, for its systemd manager) and a second `nix`;
//! code the shim never runs still costs mapped text in every shim, which is most of a shim's
//! resident memory. Its stats are its own types, still to be copied field by field into
//! containerd's messages, and it `unwrap`s lines it cannot parse, where containerd skips them
//! (and where a panic aborts the shim).

use std::fs;
use std::io;
use std::path::Path;

use crate::error::{Error, Result};

/// True for errors that mean "this file is not there": controller not enabled, kernel without
/// the feature (PSI off reads as EOPNOTSUPP), or the cgroup being removed (ENODEV).
pub(super) fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(libc::ENODEV) | Some(libc::EOPNOTSUPP)
        )
}

/// A whole cgroup file, or None when it is [`absent`]. Bytes that are not UTF-8 (never written
/// by the kernel) become U+FFFD, so such a line is skipped rather than failing the whole read.
pub(super) fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => {
            Ok(Some(String::from_utf8(bytes).unwrap_or_else(|e| {
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            })))
        }
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(Error::Io {
            context: format!("read {}", path.display()),
            source: e,
        }),
    }
}

/// Parses a counter as containerd does: negative values (v1 uses -1 for "no limit" in places)
/// read as 0; anything else that is not a number is None.
pub(super) fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    match s.strip_prefix('-') {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => Some(0),
        _ => None,
    }
}

/// A single-value file; `max` reads as `max_as` (0 on v1 as containerd's v1 code does,
/// `u64::MAX` on v2). None when absent or not a number.
pub(super) fn read_value(path: &Path, max_as: u64) -> Result<Option<u64>> {
    Ok(read_opt(path)?.and_then(|text| match text.trim() {
        "max" => Some(max_as),
        v => parse_num(v),
    }))
}

/// The `key value` lines of a flat-keyed file (`memory.stat`, `cpu.stat`...); other lines are
/// skipped.
pub(super) fn flat_keyed(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (key, value) = (fields.next()?, fields.next()?);
        if fields.next().is_some() {
            return None;
        }
        Some((key, parse_num(value)?))
    })
}

/// One counter of a small flat-keyed file (`memory.events`, `memory.oom_control`). `Ok(None)`
/// when the key is not there; an error when the file cannot be read (gone, for the watcher).
pub(super) fn read_counter(path: &Path, key: &str) -> io::Result<Option<u64>> {
    read_counter_at(&fs::File::open(path)?, key)
}

/// [`read_counter`] on an open file, from offset 0 (`pread`) into a stack buffer: the v2 OOM
/// watcher calls this on every `memory.events` change, which under memory pressure is often.
/// On kernfs, reading also marks the file's current version as seen by this descriptor, which
/// is what its poll readiness compares against.
pub(super) fn read_counter_at(file: &fs::File, key: &str) -> io::Result<Option<u64>> {
    let mut buf = [0u8; 512];
    let len = read_at_from(file, &mut buf, 0)?;
    if len < buf.len() {
        return Ok(find_counter(&buf[..len], key));
    }
    // Larger than any kernel writes today: read the rest rather than miss the key.
    let mut all = buf.to_vec();
    loop {
        let mut chunk = [0u8; 512];
        let n = read_at_from(file, &mut chunk, all.len() as u64)?;
        all.extend_from_slice(&chunk[..n]);
        if n < chunk.len() {
            return Ok(find_counter(&all, key));
        }
    }
}

/// Fills `buf` from `offset` as far as the file goes; the number of bytes read.
fn read_at_from(file: &fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], offset + len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

fn find_counter(text: &[u8], key: &str) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    flat_keyed(text).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `USER_HZ`, the unit of `cpuacct.stat`.
pub(super) fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as u64,
        _ => 100,
    }
}

/// The host's huge page sizes named the way hugetlb files are (`2MB`, `1GB`, `64KB`), smallest
/// first, from `sys/kernel/mm/hugepages/hugepages-<n>kB`.
pub(super) fn huge_page_sizes(host_root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(host_root.join("sys/kernel/mm/hugepages")) else {
        return Vec::new();
    };
    let mut kib: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()
        })
        .collect();
    kib.sort_unstable();
    kib.dedup();
    kib.into_iter().map(huge_page_name).collect()
}

/// The kernel's name for a huge page size (mm/hugetlb_cgroup.c `mem_fmt`).
fn huge_page_name(kib: u64) -> String {
    if kib >= 1 << 20 {
        format!("{}GB", kib >> 20)
    } else if kib >= 1 << 10 {
        format!("{}MB", kib >> 10)
    } else {
        format!("{kib}KB")
    }
}

/// `rdma.current` / `rdma.max` lines: `<device> hca_handle=<n> hca_object=<n>`, `max` as
/// `u32::MAX`.
pub(super) fn rdma_entries(path: &Path) -> Result<Vec<(String, u32, u32)>> {
    let Some(text) = read_opt(path)? else {
        return Ok(Vec::new());
    };
    let value = |v: &str| {
        if v == "max" {
            Some(u32::MAX)
        } else {
            v.parse().ok()
        }
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let [device, a, b] = fields[..] else {
                return None;
            };
            let (mut handles, mut objects) = (0, 0);
            for kv in [a, b] {
                match kv.split_once('=') {
                    Some(("hca_handle", v)) => handles = value(v)?,
                    Some(("hca_object", v)) => objects = value(v)?,
                    _ => {}
                }
            }
            Some((device.to_string(), handles, objects))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_like_containerd() {
        assert_eq!(parse_num("42\n"), Some(42));
        assert_eq!(parse_num("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_num("18446744073709551616"), None);
        assert_eq!(parse_num("-1"), Some(0));
        assert_eq!(parse_num("-99999999999999999999"), Some(0));
        assert_eq!(parse_num("-"), None);
        assert_eq!(parse_num("max"), None);
        assert_eq!(parse_num(""), None);
        let pairs: Vec<_> = flat_keyed("a 1\nb\nc x\nd 2 3\ne -5\n\n  f   6  \n").collect();
        assert_eq!(pairs, [("a", 1), ("e", 0), ("f", 6)]);
        assert_eq!(find_counter(b"low 0\noom_kill 7\n", "oom_kill"), Some(7));
        assert_eq!(find_counter(b"low 0\n", "oom_kill"), None);
        assert_eq!(find_counter(b"\xff\xfe", "oom_kill"), None);
    }

    #[test]
    fn huge_page_sizes_are_named_like_the_kernel() {
        assert_eq!(huge_page_name(64), "64KB");
        assert_eq!(huge_page_name(2048), "2MB");
        assert_eq!(huge_page_name(32768), "32MB");
        assert_eq!(huge_page_name(1 << 20), "1GB");
        assert_eq!(huge_page_name(16 << 20), "16GB");
        let root = tempfile::tempdir().unwrap();
        let pages = root.path().join("sys/kernel/mm/hugepages");
        for d in [
            "hugepages-1048576kB",
            "hugepages-2048kB",
            "hugepages-bogus",
            "hugepages-12MB",
            "other",
        ] {
            fs::create_dir_all(pages.join(d)).unwrap();
        }
        assert_eq!(huge_page_sizes(root.path()), ["2MB", "1GB"]);
        assert!(huge_page_sizes(Path::new("/nonexistent")).is_empty());
    }
}
