//! The one error type of the shim. It carries no ttrpc types: `service` maps each kind to a
//! status code in one place.

use std::fmt;

/// Every failure the shim reports. The variant decides the ttrpc code the caller sees.
#[derive(Debug)]
pub enum Error {
    /// Malformed request: bad id, undecodable options, unknown stdio scheme.
    InvalidArgument(String),
    /// No such container or exec, or the process already finished.
    NotFound(String),
    /// The id is taken.
    AlreadyExists(String),
    /// The request is valid but not in the process's current state.
    FailedPrecondition(String),
    /// A feature this build does not provide.
    Unimplemented(String),
    /// A runtime call did not finish in time; the runtime process was killed.
    DeadlineExceeded(String),
    /// The OCI runtime failed; `msg` is runc's own error from `log.json` when there is one.
    Runtime { op: &'static str, msg: String },
    /// An OS call failed.
    Io {
        context: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with what we were doing; use as `.map_err(Error::io("open log"))`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    /// The same for a failed `nix` call: `.map_err(Error::os("eventfd"))`.
    pub fn os(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let context = context.into();
        move |e| Error::Io {
            context,
            source: e.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidArgument(m)
            | Error::NotFound(m)
            | Error::AlreadyExists(m)
            | Error::FailedPrecondition(m)
            | Error::Unimplemented(m)
            | Error::DeadlineExceeded(m) => f.write_str(m),
            Error::Runtime { op, msg } => write!(f, "OCI runtime {op} failed: {msg}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Io {
            context: "system call".into(),
            source: std::io::Error::from(e),
        }
    }
}
