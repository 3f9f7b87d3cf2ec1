//! Parsing the stdio strings of `Create`/`Exec`: a bare path or `fifo://` names a FIFO the
//! client made, `file:///abs` a log file, `binary:///abs?k=v` a logger program
//! (`binary-v2://`, containerd 2.3+: one that must say it is ready with a byte). Pure.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where one stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Empty string: the process gets /dev/null.
    None,
    Fifo(PathBuf),
    File(PathBuf),
    /// Logger binary and its arguments (query pairs, in order).
    Binary(PathBuf, Vec<(String, String)>),
    /// `binary-v2://`: the same, but the logger is ready only once it wrote a byte to fd 5.
    BinaryV2(PathBuf, Vec<(String, String)>),
}

pub fn parse_target(s: &str) -> Result<Target> {
    if s.is_empty() {
        return Ok(Target::None);
    }
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "invalid stdio URI {s:?}: {why}"
        )))
    };
    let Some((scheme, rest)) = s.split_once("://") else {
        return absolute(s)
            .map(Target::Fifo)
            .or_else(|_| bad("a FIFO path must be absolute"));
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let Ok(path) = absolute(&percent_decode(path)) else {
        return bad("the path must be absolute (scheme:///path)");
    };
    match scheme {
        "fifo" => Ok(Target::Fifo(path)),
        "file" => Ok(Target::File(path)),
        "binary" | "binary-v2" => {
            let args = query
                .unwrap_or("")
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect();
            Ok(if scheme == "binary" {
                Target::Binary(path, args)
            } else {
                Target::BinaryV2(path, args)
            })
        }
        other => bad(&format!("unsupported scheme {other:?}")),
    }
}

fn absolute(p: &str) -> std::result::Result<PathBuf, ()> {
    if p.starts_with('/') && !p.contains('\0') {
        Ok(PathBuf::from(p))
    } else {
        Err(())
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let p = PathBuf::from;
        let cases: &[(&str, Target)] = &[
            ("", Target::None),
            (
                "/run/containerd/fifo/1/c-stdout",
                Target::Fifo(p("/run/containerd/fifo/1/c-stdout")),
            ),
            ("fifo:///x/y", Target::Fifo(p("/x/y"))),
            ("file:///var/log/c.log", Target::File(p("/var/log/c.log"))),
            ("file:///a%20b", Target::File(p("/a b"))),
            (
                "binary:///usr/bin/logger?id=1&mode=x%2Fy",
                Target::Binary(
                    p("/usr/bin/logger"),
                    vec![("id".into(), "1".into()), ("mode".into(), "x/y".into())],
                ),
            ),
            ("binary:///l", Target::Binary(p("/l"), vec![])),
            (
                "binary-v2:///l?a=b",
                Target::BinaryV2(p("/l"), vec![("a".into(), "b".into())]),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(&parse_target(s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn refusals() {
        for s in [
            "relative/path",
            "file://relative",
            "ftp:///x",
            "npipe:///x",
            "/a\0b",
        ] {
            assert!(
                matches!(parse_target(s), Err(Error::InvalidArgument(_))),
                "{s}"
            );
        }
    }
}
