//! Command-line parsing in Go `flag` style, as containerd invokes shims:
//! `-namespace ns -address a -publish-binary p -id x [-debug] start`.
//!
//! Unknown flags are skipped rather than fatal so a newer containerd that passes a new flag does
//! not break us. Parsing is pure; nothing here touches the system.

use std::fmt;

/// What the binary was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start (or find) the long-lived server and print its address.
    Start,
    /// Clean up after a server that is gone.
    Delete,
    /// Be the long-lived server (no action word, as the Go shim re-execs itself).
    Serve,
    /// Print the version and exit.
    Version,
    /// `-info` (containerd 2.0+): print a `RuntimeInfo` protobuf and exit (`src/info.rs`).
    Info,
}

/// Parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC address; part of the socket hash.
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    /// Listening socket path (server only): the server inherits the bound socket on fd 3 and
    /// needs the path to remove it on shutdown.
    pub socket: String,
    pub debug: bool,
    pub action: Action,
}

/// Why the command line was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    MissingValue(String),
    UnknownAction(String),
    Missing(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::MissingValue(flag) => write!(f, "flag needs an argument: -{flag}"),
            ParseError::UnknownAction(a) => {
                write!(f, "unknown action {a:?} (want start or delete)")
            }
            ParseError::Missing(flag) => write!(f, "-{flag} is required"),
        }
    }
}

impl std::error::Error for ParseError {}

const BOOL_FLAGS: &[&str] = &["debug", "v", "version", "info"];

/// Parses argv (without the program name).
pub fn parse<I, S>(argv: I) -> Result<Args, ParseError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
    let mut args = Args {
        namespace: String::new(),
        id: String::new(),
        address: String::new(),
        publish_binary: String::new(),
        bundle: String::new(),
        socket: String::new(),
        debug: false,
        action: Action::Serve,
    };
    let mut version = false;
    let mut info = false;
    let mut i = 0;
    let mut action_word = None;
    while i < argv.len() {
        let token = &argv[i];
        i += 1;
        let Some(flag) = token.strip_prefix("--").or_else(|| token.strip_prefix('-')) else {
            // Go's flag package stops at the first non-flag word: that is the action.
            action_word = Some(token.clone());
            break;
        };
        if flag.is_empty() {
            // A bare "--" ends the flags.
            action_word = argv.get(i).cloned();
            break;
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if BOOL_FLAGS.contains(&name) {
            let on = inline.as_deref().is_none_or(|v| v != "false" && v != "0");
            match name {
                "debug" => args.debug = on,
                "v" | "version" => version = on,
                "info" => info = on,
                _ => {}
            }
            continue;
        }
        let known = matches!(
            name,
            "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket"
        );
        let value = match inline {
            Some(_) if !known => continue,
            Some(v) => v,
            None if known => {
                let v = argv
                    .get(i)
                    .cloned()
                    .ok_or_else(|| ParseError::MissingValue(name.into()))?;
                i += 1;
                v
            }
            None => {
                // An unknown flag: take the next word as its value unless it looks like a flag
                // or an action, so `-new-flag value start` and `-new-bool start` both work.
                if let Some(next) = argv.get(i) {
                    if !next.starts_with('-') && next != "start" && next != "delete" {
                        i += 1;
                    }
                }
                continue;
            }
        };
        match name {
            "namespace" => args.namespace = value,
            "id" => args.id = value,
            "address" => args.address = value,
            "publish-binary" => args.publish_binary = value,
            "bundle" => args.bundle = value,
            "socket" => args.socket = value,
            _ => {}
        }
    }
    args.action = match action_word.as_deref() {
        _ if version => Action::Version,
        // A flag, not an action, and given without -namespace (containerd's PluginInfo).
        _ if info => Action::Info,
        None => Action::Serve,
        Some("start") => Action::Start,
        Some("delete") => Action::Delete,
        Some(other) => return Err(ParseError::UnknownAction(other.to_string())),
    };
    if !matches!(args.action, Action::Version | Action::Info) && args.namespace.is_empty() {
        return Err(ParseError::Missing("namespace"));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_containerd_start_line() {
        let a = parse([
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(a.action, Action::Start);
        assert_eq!(a.namespace, "default");
        assert_eq!(a.address, "/run/containerd/containerd.sock");
        assert_eq!(a.publish_binary, "/usr/bin/containerd");
        assert_eq!(a.id, "c1");
        assert!(a.debug);
    }

    #[test]
    fn parses_delete_with_bundle_and_double_dash_forms() {
        let a = parse(["--namespace=k8s.io", "-id=x", "--bundle", "/b", "delete"]).unwrap();
        assert_eq!(a.action, Action::Delete);
        assert_eq!(a.namespace, "k8s.io");
        assert_eq!(a.id, "x");
        assert_eq!(a.bundle, "/b");
        assert!(!a.debug);
    }

    #[test]
    fn no_action_word_means_serve() {
        let a = parse(["-namespace", "n", "-id", "x", "-socket", "/s"]).unwrap();
        assert_eq!(a.action, Action::Serve);
        assert_eq!(a.socket, "/s");
    }

    #[test]
    fn unknown_flags_are_ignored() {
        let a = parse([
            "-namespace",
            "n",
            "-future-flag",
            "v",
            "-other=1",
            "-newbool",
            "start",
        ])
        .unwrap();
        assert_eq!(a.action, Action::Start);
        assert_eq!(a.namespace, "n");
    }

    #[test]
    fn version_needs_nothing_else() {
        assert_eq!(parse(["-v"]).unwrap().action, Action::Version);
        assert_eq!(parse(["--version"]).unwrap().action, Action::Version);
    }

    #[test]
    fn info_needs_nothing_else() {
        assert_eq!(parse(["-info"]).unwrap().action, Action::Info);
        assert_eq!(parse(["--info=true"]).unwrap().action, Action::Info);
        assert_eq!(
            parse(["-info=false", "-v"]).unwrap().action,
            Action::Version
        );
        assert_eq!(
            parse(["-info=false"]).unwrap_err(),
            ParseError::Missing("namespace")
        );
    }

    #[test]
    fn errors_are_reported() {
        assert_eq!(
            parse(["-namespace"]).unwrap_err(),
            ParseError::MissingValue("namespace".into())
        );
        assert_eq!(
            parse(["-namespace", "n", "bogus"]).unwrap_err(),
            ParseError::UnknownAction("bogus".into())
        );
        assert_eq!(
            parse(["start"]).unwrap_err(),
            ParseError::Missing("namespace")
        );
    }
}
