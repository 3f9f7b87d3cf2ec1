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
        ] {
            let e = RuncOptions::from_toml(bad).unwrap_err();
            assert!(e.starts_with("line 1: "), "{bad:?}: {e}");
        }
    }
}
