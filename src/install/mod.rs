//! `tether-install install` and `uninstall`: put tether on a node (the shim binary, and a
//! runtime handler in containerd's config) and take it off again exactly.
//!
//! A binary of its own (`src/bin/tether-install.rs`), not a subcommand of the shim: linked
//! into `containerd-shim-tether-v2`, this code and `toml_edit` cost every idle shim about
//! 120 kB more RSS (pages touched at start-up), and a node runs one shim per pod.
//!
//! `install` records what it did in a state file next to the config
//! (`<config>.tether-install.json`): the config's bytes before, the sha256 of what it wrote,
//! what it added ([`config::Added`]) and whether it created the binary. `uninstall` puts the
//! old bytes back when the file is still what `install` wrote, and otherwise takes out only
//! what was added, keeping the user's later edits. Both are idempotent. containerd is not
//! restarted: the caller does that (deploy/ does it on the host).

pub mod config;

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use config::{Added, ConfigError, Edit, Schema};

/// The binary's file name: containerd derives it from the runtime type.
const BINARY: &str = "containerd-shim-tether-v2";

/// Why `install` or `uninstall` stopped. Nothing was changed unless the message says so.
#[derive(Debug)]
pub enum InstallError {
    /// Bad command line.
    Usage(String),
    /// Writing /etc/containerd and the bin dir needs root.
    NotRoot,
    /// The config could not be edited (not TOML, unknown version...).
    Config { path: PathBuf, error: ConfigError },
    /// An empty config, and no way to tell which version to write.
    UnknownVersion(String),
    /// The state file is not ours or is damaged.
    State { path: PathBuf, message: String },
    /// A file operation failed.
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::Usage(m) => write!(f, "{m}"),
            InstallError::NotRoot => write!(
                f,
                "must run as root (it writes containerd's config and the bin dir); try sudo"
            ),
            InstallError::Config { path, error } => {
                write!(
                    f,
                    "{}: {error}; the file was left untouched",
                    path.display()
                )
            }
            InstallError::UnknownVersion(why) => write!(
                f,
                "the config is empty and the containerd version is unknown ({why}); \
                 pass -config-version 2 (containerd 1.x) or 3 (containerd 2.x)"
            ),
            InstallError::State { path, message } => write!(f, "{}: {message}", path.display()),
            InstallError::Io { what, path, source } => {
                write!(f, "{what} {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for InstallError {}

type Result<T> = std::result::Result<T, InstallError>;

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let (what, path) = (what.to_string(), path.to_path_buf());
    move |source| InstallError::Io { what, path, source }
}

/// The installer's flags (Go style, after the action word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// containerd's config file.
    pub config: PathBuf,
    /// Where the binary goes (on containerd's `PATH`).
    pub bin_dir: PathBuf,
    /// The runtime handler's name (RuntimeClass `handler`).
    pub handler: String,
    /// `ConfigPath` of the handler's options (runc options for tether), if any.
    pub options_file: Option<String>,
    /// The version to write into an empty config; else asked of `containerd`.
    pub config_version: Option<Schema>,
    /// The containerd binary to ask (`containerd --version`) for an empty config.
    pub containerd: PathBuf,
    /// The shim binary to put in place; default: `containerd-shim-tether-v2` next to this
    /// installer.
    pub shim: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: "/etc/containerd/config.toml".into(),
            bin_dir: "/usr/local/bin".into(),
            handler: "tether".into(),
            options_file: None,
            config_version: None,
            containerd: "containerd".into(),
            shim: None,
        }
    }
}

/// Parses the flags after `install` / `uninstall`.
pub fn parse_options(argv: &[String]) -> Result<Options> {
    let mut o = Options::default();
    let mut i = 0;
    while i < argv.len() {
        let token = &argv[i];
        i += 1;
        let Some(flag) = token.strip_prefix("--").or_else(|| token.strip_prefix('-')) else {
            return Err(InstallError::Usage(format!(
                "unexpected argument {token:?}"
            )));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, v.to_string()),
            None => {
                let v = argv.get(i).cloned().ok_or_else(|| {
                    InstallError::Usage(format!("flag needs an argument: -{flag}"))
                })?;
                i += 1;
                (flag, v)
            }
        };
        match name {
            "config" => o.config = value.into(),
            "bin-dir" => o.bin_dir = value.into(),
            "handler" => {
                crate::process::validate_id("handler", &value)
                    .map_err(|e| InstallError::Usage(e.to_string()))?;
                o.handler = value;
            }
            "options-file" => o.options_file = Some(value),
            "config-version" => {
                o.config_version = Some(match value.as_str() {
                    "2" => Schema::V2,
                    "3" => Schema::V3,
                    "4" => Schema::V4,
                    _ => {
                        return Err(InstallError::Usage(format!(
                            "-config-version {value}: want 2, 3 or 4"
                        )))
                    }
                })
            }
            "containerd" => o.containerd = value.into(),
            "shim" => o.shim = Some(value.into()),
            _ => {
                return Err(InstallError::Usage(format!(
                    "unknown flag -{name} (flags: -config, -bin-dir, -handler, -options-file, \
                     -config-version, -containerd, -shim)"
                )))
            }
        }
    }
    Ok(o)
}

/// What `install` wrote down for `uninstall`.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    /// The config before install; `None` when there was no file.
    original: Option<String>,
    /// sha256 of the config install wrote.
    written_sha256: String,
    added: Added,
    /// The binary install put in place, when it created it (not when it replaced one).
    binary: Option<Binary>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Binary {
    path: PathBuf,
    sha256: String,
}

fn state_path(config: &Path) -> PathBuf {
    let mut name = config.file_name().unwrap_or_default().to_os_string();
    name.push(".tether-install.json");
    config.with_file_name(name)
}

fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(InstallError::NotRoot)
    }
}

/// `None` when the file does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Replaces `path` by `data` atomically (a temp file in the same dir, renamed), keeping the
/// old file's permissions, or `mode` for a new one.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let perms = match fs::metadata(path) {
        Ok(m) => m.permissions(),
        Err(_) => fs::Permissions::from_mode(mode),
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tether-tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(perms)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("write", path)(e)
    })
}

fn utf8(path: &Path, data: Vec<u8>) -> Result<String> {
    String::from_utf8(data).map_err(|_| InstallError::Config {
        path: path.to_path_buf(),
        error: ConfigError::Parse {
            line: 1,
            column: 1,
            message: "not UTF-8".into(),
        },
    })
}

/// The config version containerd `bin` reads natively: 3 from containerd 2.0 on.
fn containerd_schema(bin: &Path) -> Result<Schema> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| InstallError::UnknownVersion(format!("{}: {e}", bin.display())))?;
    // "containerd github.com/containerd/containerd/v2 v2.1.9 <rev>" or "... 1.6.20~ds1 1.6.20~ds1-1+b1"
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .split_whitespace()
        .nth(2)
        .map(|v| v.trim_start_matches('v'))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| {
            InstallError::UnknownVersion(format!("`containerd --version` said {text:?}"))
        })?;
    Ok(if major >= 2 { Schema::V3 } else { Schema::V2 })
}

/// The shim to install: `-shim`, else `containerd-shim-tether-v2` next to this installer.
fn shim_source(o: &Options) -> Result<PathBuf> {
    if let Some(s) = &o.shim {
        return Ok(s.clone());
    }
    let exe =
        fs::read_link("/proc/self/exe").map_err(io_err("resolve", Path::new("/proc/self/exe")))?;
    Ok(exe.with_file_name(BINARY))
}

/// Copies the shim to `<bin_dir>/containerd-shim-tether-v2`; whether it created the file
/// (it did not exist before).
fn put_binary(shim: &Path, bin_dir: &Path) -> Result<(PathBuf, bool)> {
    let dest = std::path::absolute(bin_dir.join(BINARY)).map_err(io_err("resolve", bin_dir))?;
    let me = fs::read(shim).map_err(io_err("read the shim binary", shim))?;
    let existing = read_optional(&dest)?;
    if existing.as_deref() != Some(&me[..]) {
        write_atomic(&dest, &me, 0o755)?;
        eprintln!("installed {}", dest.display());
    } else {
        eprintln!("{} is that binary already", dest.display());
    }
    Ok((dest, existing.is_none()))
}

/// The RuntimeClass that selects the handler.
pub fn runtime_class(handler: &str) -> String {
    format!(
        "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: {handler}\nhandler: {handler}\n"
    )
}

/// `install`: binary in place, handler in the config, RuntimeClass on stdout.
pub fn install(o: &Options) -> Result<()> {
    require_root()?;
    let state_file = state_path(&o.config);
    let before = read_optional(&o.config)?;
    let text = utf8(&o.config, before.clone().unwrap_or_default())?;
    let config_err = |error| InstallError::Config {
        path: o.config.clone(),
        error,
    };
    // Refuse a bad config before touching anything, the binary included.
    let fresh = match config::parse(&text).map_err(config_err)?.is_empty() {
        true => match o.config_version {
            Some(v) => v,
            None => containerd_schema(&o.containerd)?,
        },
        false => Schema::V2,
    };
    let edit =
        config::add(&text, &o.handler, o.options_file.as_deref(), fresh).map_err(config_err)?;
    let previous: Option<State> = match read_optional(&state_file)? {
        Some(d) => Some(serde_json::from_slice(&d).map_err(|e| InstallError::State {
            path: state_file.clone(),
            message: format!("not an install record: {e}"),
        })?),
        None => None,
    };
    let (binary, created) = put_binary(&shim_source(o)?, &o.bin_dir)?;
    // A binary created by an earlier install stays ours to remove.
    let created = created || previous.as_ref().is_some_and(|s| s.binary.is_some());
    let binary = created.then(|| -> Result<Binary> {
        let data = fs::read(&binary).map_err(io_err("read", &binary))?;
        Ok(Binary {
            path: binary.clone(),
            sha256: sha256(&data),
        })
    });
    let binary = binary.transpose()?;
    match edit {
        Edit::AlreadyPresent(schema) => {
            eprintln!(
                "{}: runtime {:?} is already declared (config version {}); left as it is",
                o.config.display(),
                o.handler,
                if schema == Schema::V2 { 2 } else { 3 }
            );
            if let Some(mut s) = previous {
                s.binary = binary;
                write_state(&state_file, &s)?;
            }
        }
        Edit::Changed(new, added) => {
            // An earlier install whose handler the user has since removed: keep its original.
            let original = match previous {
                Some(s) => s.original,
                None => before.map(|b| utf8(&o.config, b)).transpose()?,
            };
            let state = State {
                original,
                written_sha256: sha256(new.as_bytes()),
                added,
                binary,
            };
            // The record first: a crash between the two writes leaves a way back.
            write_state(&state_file, &state)?;
            write_atomic(&o.config, new.as_bytes(), 0o644)?;
            eprintln!(
                "{}: added runtime {:?} (runtime_type {}) under plugins.\"{}\".containerd.runtimes{}",
                o.config.display(),
                o.handler,
                config::RUNTIME_TYPE,
                state.added.schema.cri_plugin(),
                if state.added.runc { ", with runc" } else { "" }
            );
            eprintln!("restart containerd to load it; this RuntimeClass selects it:");
        }
    }
    print!("{}", runtime_class(&o.handler));
    Ok(())
}

fn write_state(path: &Path, s: &State) -> Result<()> {
    let mut data = serde_json::to_vec_pretty(s).map_err(|e| InstallError::State {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    data.push(b'\n');
    write_atomic(path, &data, 0o600)
}

/// `uninstall`: the config as it was (or without what install added), the binary removed if
/// install created it and it is unchanged.
pub fn uninstall(o: &Options) -> Result<()> {
    require_root()?;
    let state_file = state_path(&o.config);
    let Some(data) = read_optional(&state_file)? else {
        eprintln!(
            "{}: no install record; nothing to uninstall",
            state_file.display()
        );
        return Ok(());
    };
    let state: State = serde_json::from_slice(&data).map_err(|e| InstallError::State {
        path: state_file.clone(),
        message: format!("not an install record: {e}"),
    })?;
    let now = read_optional(&o.config)?;
    match now {
        Some(now) if sha256(&now) == state.written_sha256 => {
            match &state.original {
                Some(orig) => write_atomic(&o.config, orig.as_bytes(), 0o644)?,
                None => fs::remove_file(&o.config).map_err(io_err("remove", &o.config))?,
            }
            eprintln!("{}: restored as it was before install", o.config.display());
        }
        Some(now) => {
            let text = utf8(&o.config, now)?;
            let out =
                config::remove(&text, &state.added).map_err(|error| InstallError::Config {
                    path: o.config.clone(),
                    error,
                })?;
            if out != text {
                write_atomic(&o.config, out.as_bytes(), 0o644)?;
            }
            eprintln!(
                "{}: changed since install; removed runtime {:?} and kept the rest",
                o.config.display(),
                state.added.handler
            );
        }
        None => eprintln!("{}: gone; nothing to take out", o.config.display()),
    }
    if let Some(b) = &state.binary {
        match read_optional(&b.path)? {
            Some(d) if sha256(&d) == b.sha256 => {
                fs::remove_file(&b.path).map_err(io_err("remove", &b.path))?;
                eprintln!("removed {}", b.path.display());
            }
            Some(_) => eprintln!(
                "{} was replaced since install; left in place",
                b.path.display()
            ),
            None => {}
        }
    }
    fs::remove_file(&state_file).map_err(io_err("remove", &state_file))?;
    eprintln!("restart containerd to unload the runtime");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_refuse() {
        let argv: Vec<String> = ["-config", "/c.toml", "--bin-dir=/b", "-config-version", "3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse_options(&argv).unwrap();
        assert_eq!(o.config, PathBuf::from("/c.toml"));
        assert_eq!(o.bin_dir, PathBuf::from("/b"));
        assert_eq!(o.config_version, Some(Schema::V3));
        assert_eq!(o.handler, "tether");
        for bad in [
            &["-bogus", "1"][..],
            &["-config"],
            &["stray"],
            &["-config-version", "1"],
        ] {
            let argv: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(
                matches!(parse_options(&argv), Err(InstallError::Usage(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn state_file_sits_next_to_the_config() {
        assert_eq!(
            state_path(Path::new("/etc/containerd/config.toml")),
            PathBuf::from("/etc/containerd/config.toml.tether-install.json")
        );
    }
}
