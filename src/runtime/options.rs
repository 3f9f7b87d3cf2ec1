//! runc's options as containerd passes them (`containerd.runc.v1.Options` in plain form), and
//! the runtime options file a CRI runtime handler names (`ConfigPath`), a TOML subset.

use serde::{Deserialize, Serialize};

/// The runc options containerd passes in `CreateTaskRequest.options`
/// (`containerd.runc.v1.Options`), in plain form. Persisted as the bundle's `options.json` so
/// the `delete` action can find the runc root after the server is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuncOptions {
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub io_uid: u32,
    pub io_gid: u32,
    /// `ShimCgroup`: the cgroup the server moves itself into at `start` (a path under each v1
    /// hierarchy, or under the cgroup2 mount).
    pub shim_cgroup: String,
    /// `CriuWorkPath`: CRIU's work directory (logs, temporary files) for a restore; empty
    /// means one inside the bundle.
    pub criu_work_path: String,
    /// Where each output stream's spool file lives; empty: the bundle's `work` directory.
    /// Only the runtime options file sets the spool (runc's options have no such fields).
    pub spool_dir: String,
    /// Bytes each output stream may spool while its reader is away; None: the default,
    /// 0: no spool (a full FIFO blocks the container, as with every other shim).
    pub spool_size: Option<u64>,
    pub spool_when_full: SpoolWhenFull,
}

/// What a full spool does with more output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpoolWhenFull {
    /// Stop reading: the container blocks on its next write, as without a spool.
    #[default]
    Block,
    /// Discard the oldest spooled output (whole lines where possible), counted in a warning.
    DropOldest,
}

impl std::str::FromStr for SpoolWhenFull {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<SpoolWhenFull, String> {
        match s {
            "block" => Ok(SpoolWhenFull::Block),
            "drop-oldest" => Ok(SpoolWhenFull::DropOldest),
            _ => Err(format!(
                "SpoolWhenFull = {s:?}: expected \"block\" or \"drop-oldest\""
            )),
        }
    }
}

impl RuncOptions {
    /// Reads runc's options from a runtime options file (the CRI's `ConfigPath`), written
    /// with the names of `containerd.runc.v1.Options` as containerd's config uses them:
    ///
    /// ```toml
    /// SystemdCgroup = true
    /// BinaryName = "/usr/local/bin/crun"
    /// ```
    ///
    /// and tether's own keys for the output spool (see `crate::io` spool):
    ///
    /// ```toml
    /// SpoolDir = "/var/lib/tether-spool"   # default: the bundle's work directory
    /// SpoolSize = 67108864                 # bytes per output stream; 0 disables
    /// SpoolWhenFull = "drop-oldest"        # or "block" (the default)
    /// ```
    ///
    /// A small TOML subset: `Key = value` lines (string, boolean or integer), `#` comments
    /// and `[table]` headers (ignored). Unknown keys are ignored, as containerd does.
    pub fn from_toml(text: &str) -> std::result::Result<RuncOptions, String> {
        let mut o = RuncOptions::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let at = |why: String| format!("line {}: {why}", n + 1);
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| at(format!("expected `Key = value`, got {line:?}")))?;
            let key = key.trim().trim_matches('"');
            let value = toml_value(value.trim()).map_err(at)?;
            let uint = |v: &TomlValue| match v {
                TomlValue::Int(i) => {
                    u32::try_from(*i).map_err(|_| at(format!("{key} = {i} is out of range")))
                }
                _ => Err(at(format!("{key} must be an integer"))),
            };
            let boolean = |v: &TomlValue| match v {
                TomlValue::Bool(b) => Ok(*b),
                _ => Err(at(format!("{key} must be true or false"))),
            };
            let string = |v: TomlValue| match v {
                TomlValue::Str(s) => Ok(s),
                _ => Err(at(format!("{key} must be a string"))),
            };
            match key {
                "BinaryName" => o.binary_name = string(value)?,
                "Root" => o.root = string(value)?,
                "SystemdCgroup" => o.systemd_cgroup = boolean(&value)?,
                "NoPivotRoot" => o.no_pivot_root = boolean(&value)?,
                "NoNewKeyring" => o.no_new_keyring = boolean(&value)?,
                "IoUid" => o.io_uid = uint(&value)?,
                "IoGid" => o.io_gid = uint(&value)?,
                "ShimCgroup" => o.shim_cgroup = string(value)?,
                "CriuWorkPath" => o.criu_work_path = string(value)?,
                "SpoolDir" => o.spool_dir = string(value)?,
                "SpoolSize" => {
                    o.spool_size = Some(match value {
                        TomlValue::Int(i) => u64::try_from(i)
                            .map_err(|_| at(format!("{key} = {i} is out of range")))?,
                        _ => return Err(at(format!("{key} must be an integer"))),
                    })
                }
                "SpoolWhenFull" => o.spool_when_full = string(value)?.parse().map_err(at)?,
                _ => {}
            }
        }
        Ok(o)
    }
}

enum TomlValue {
    Str(String),
    Bool(bool),
    Int(i64),
}

/// One TOML scalar, with any trailing `# comment` dropped.
fn toml_value(v: &str) -> std::result::Result<TomlValue, String> {
    if let Some(rest) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return trailing_ok(chars.as_str()).map(|()| TomlValue::Str(out)),
                '\\' => match chars.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    other => {
                        return Err(format!(
                            "unsupported escape \\{}",
                            other.map(String::from).unwrap_or_default()
                        ))
                    }
                },
                c => out.push(c),
            }
        }
        return Err("unterminated string".into());
    }
    if let Some(rest) = v.strip_prefix('\'') {
        let (s, after) = rest.split_once('\'').ok_or("unterminated string")?;
        return trailing_ok(after).map(|()| TomlValue::Str(s.to_string()));
    }
    let bare = v.split('#').next().unwrap_or("").trim();
    match bare {
        "true" => Ok(TomlValue::Bool(true)),
        "false" => Ok(TomlValue::Bool(false)),
        _ => bare
            .replace('_', "")
            .parse()
            .map(TomlValue::Int)
            .map_err(|_| format!("unsupported value {bare:?}")),
    }
}

fn trailing_ok(after: &str) -> std::result::Result<(), String> {
    let t = after.trim();
    if t.is_empty() || t.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected {t:?} after the value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example the release tarball and the Debian package ship (scripts/release.sh).
    #[test]
    fn the_shipped_example_file_parses() {
        let o = RuncOptions::from_toml(include_str!("../../packaging/tether.toml")).unwrap();
        assert_eq!(o.binary_name, "/usr/sbin/runc");
        assert!(!o.systemd_cgroup);
    }

    #[test]
    fn options_file_uses_runc_option_names() {
        let text = r#"
# /etc/containerd/tether.toml
[options]
SystemdCgroup = true   # kubelet's systemd cgroup driver
BinaryName = "/usr/local/bin/crun"
Root = '/run/tether-runc'
NoPivotRoot = false
IoUid = 1_000
IoGid = 1000
ShimCgroup = "/tether/shims"
CriuWorkPath = "/var/lib/criu-work"
Unknown = "ignored"
"#;
        let o = RuncOptions::from_toml(text).unwrap();
        assert_eq!(
            o,
            RuncOptions {
                binary_name: "/usr/local/bin/crun".into(),
                root: "/run/tether-runc".into(),
                systemd_cgroup: true,
                io_uid: 1000,
                io_gid: 1000,
                shim_cgroup: "/tether/shims".into(),
                criu_work_path: "/var/lib/criu-work".into(),
                ..Default::default()
            }
        );
        assert_eq!(
            RuncOptions::from_toml("BinaryName = \"a\\\"b\"")
                .unwrap()
                .binary_name,
            "a\"b"
        );
        assert_eq!(RuncOptions::from_toml("").unwrap(), RuncOptions::default());
        for bad in [
            "SystemdCgroup = \"yes\"",
            "IoUid = -1",
            "IoUid = 99999999999",
            "BinaryName = \"open",
            "Root = 1",
            "just words",
            "BinaryName = \"a\" b",
            "SpoolWhenFull = \"drop\"",
            "SpoolWhenFull = 1",
            "SpoolSize = -1",
            "SpoolDir = true",
        ] {
            let e = RuncOptions::from_toml(bad).unwrap_err();
            assert!(e.starts_with("line 1: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn options_file_sets_the_spool() {
        let o = RuncOptions::from_toml(
            "SpoolDir = \"/var/spool/t\"\nSpoolSize = 1_048_576\nSpoolWhenFull = \"drop-oldest\"",
        )
        .unwrap();
        assert_eq!(o.spool_dir, "/var/spool/t");
        assert_eq!(o.spool_size, Some(1 << 20));
        assert_eq!(o.spool_when_full, SpoolWhenFull::DropOldest);
        let o = RuncOptions::from_toml("SpoolSize = 0\nSpoolWhenFull = \"block\"").unwrap();
        assert_eq!(
            (o.spool_size, o.spool_when_full),
            (Some(0), SpoolWhenFull::Block)
        );
        let e = RuncOptions::from_toml("\nSpoolWhenFull = \"Drop-Oldest\"").unwrap_err();
        assert!(e.contains("line 2") && e.contains("drop-oldest"), "{e}");
    }
}
