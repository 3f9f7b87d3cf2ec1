//! The init's exit status, recorded in the bundle as it is reaped, so that `shim delete` after
//! a server that died reports the real status instead of a made-up 137.
//!
//! This is what containerd 2.4's Go shim does (containerd#14113, "record exit status in
//! bundle"): `exitstatus.json` in the bundle, the JSON of go-runc's `Exit` struct
//! (`{"Timestamp":"<RFC 3339, UTC>","Pid":n,"Status":n}`), written before the `TaskExit` is
//! published. containerd keeps bundles on tmpfs (`/run/containerd/...`), so the write is cheap;
//! it still runs off the server thread (see the supervisor).

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// The record's file name in the bundle (the Go shim's).
pub const FILE: &str = "exitstatus.json";

/// One recorded exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub pid: u32,
    pub status: u32,
    pub at: SystemTime,
}

/// Writes the record via a temporary file and rename, so a reader sees all of it or nothing.
pub fn write(bundle: &Path, r: &Recorded) -> Result<()> {
    let json = serde_json::json!({
        "Timestamp": rfc3339(r.at),
        "Pid": r.pid,
        "Status": r.status,
    });
    let data = serde_json::to_vec(&json)
        .map_err(|e| Error::InvalidArgument(format!("encode exit record: {e}")))?;
    crate::daemonize::write_atomic(&bundle.join(FILE), &data)
}

/// Reads the record: `Ok(None)` when there is none, `Err` (with why) when it is corrupt.
pub fn read(bundle: &Path) -> std::result::Result<Option<Recorded>, String> {
    let path = bundle.join(FILE);
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    let bad = |why: &str| format!("{}: {why}", path.display());
    let v: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let int = |key: &str| {
        v.get(key)
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(&format!("no unsigned 32-bit {key:?}")))
    };
    let at = v
        .get("Timestamp")
        .and_then(serde_json::Value::as_str)
        .and_then(parse_rfc3339)
        .ok_or_else(|| bad("no RFC 3339 \"Timestamp\""))?;
    Ok(Some(Recorded {
        pid: int("Pid")?,
        status: int("Status")?,
        at,
    }))
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (Go's `time.RFC3339Nano` for a UTC time, with all nine
/// digits).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Parses what Go's `time.Time` JSON gives: RFC 3339 with an optional fraction and a `Z` or
/// `±HH:MM` offset. Times before 1970 are refused (an exit cannot have happened then).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r| num_in(s, r);
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':' || b[16] != b':' || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = frac[..digits].parse::<u32>().ok()? * 10u32.pow(9 - digits as u32);
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || rb[3] != b':' {
                return None;
            }
            let sign = match rb[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = (num_in(rest, 1..3)?, num_in(rest, 4..6)?);
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

fn num_in(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(r)?;
    if !part.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Ok(None));
        let r = Recorded {
            pid: 4242,
            status: 7,
            at: UNIX_EPOCH + Duration::new(1_796_599_445, 123_456_789),
        };
        write(dir.path(), &r).unwrap();
        assert_eq!(read(dir.path()), Ok(Some(r)));
        let text = fs::read_to_string(dir.path().join(FILE)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Status"], 7);
        assert_eq!(v["Pid"], 4242);
        assert_eq!(v["Timestamp"], "2026-12-06T23:24:05.123456789Z");
        assert!(!dir.path().join("exitstatus.tmp").exists());
    }

    #[test]
    fn go_timestamps_parse() {
        let at = |s| parse_rfc3339(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap());
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(Duration::ZERO));
        assert_eq!(
            at("2026-12-06T23:24:05.5Z"),
            Some(Duration::new(1_796_599_445, 500_000_000))
        );
        assert_eq!(
            at("2026-12-07T01:24:05+02:00"),
            Some(Duration::new(1_796_599_445, 0))
        );
        assert_eq!(
            at("2024-02-29T12:00:00Z"),
            Some(Duration::new(1_709_208_000, 0))
        );
        for bad in [
            "",
            "2026-12-06",
            "2026-13-06T00:00:00Z",
            "2026-12-06T24:00:00Z",
            "2026-12-06T00:00:00",
            "2026-12-06T00:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2026-12-06T00:00:00+0200",
            "２026-12-06T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            &b""[..],
            b"{\"Status\":7",
            b"{\"Pid\":1,\"Status\":-1,\"Timestamp\":\"2026-12-06T00:00:00Z\"}",
            b"{\"Pid\":1,\"Status\":7}",
            b"{\"Pid\":1,\"Status\":7,\"Timestamp\":\"yesterday\"}",
            b"[7]",
        ] {
            fs::write(dir.path().join(FILE), bad).unwrap();
            let e = read(dir.path()).unwrap_err();
            assert!(e.contains(FILE), "{e}");
        }
    }
}
