//! What a supervised process is: its lifecycle state machine and the rules for ids.
//! Pure code: no I/O.

mod state;

pub use state::{Kind, Op, State};

use crate::error::{Error, Result};
use std::fmt;
use std::time::SystemTime;

/// Which process of a container a request is about. The task API spells the init as an empty
/// `exec_id`; inside the shim that convention never travels further than [`ProcessId::from_api`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProcessId {
    Init,
    Exec(String),
}

impl ProcessId {
    /// From the task API's `exec_id` (empty = the init). An exec id is validated here.
    pub fn from_api(exec_id: &str) -> Result<ProcessId> {
        if exec_id.is_empty() {
            return Ok(ProcessId::Init);
        }
        validate_id("exec", exec_id)?;
        Ok(ProcessId::Exec(exec_id.to_string()))
    }

    /// Back to the task API's spelling.
    pub fn exec_id(&self) -> &str {
        match self {
            ProcessId::Init => "",
            ProcessId::Exec(e) => e,
        }
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessId::Init => f.write_str("init"),
            ProcessId::Exec(e) => write!(f, "exec {e}"),
        }
    }
}

/// The pid of a process that exists (or existed): always positive. "Not started yet" is
/// `Option::<Pid>::None`, never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pid(i32);

impl Pid {
    /// `None` for 0 and negative numbers, which name no single process.
    pub fn new(raw: i32) -> Option<Pid> {
        (raw > 0).then_some(Pid(raw))
    }

    pub fn raw(self) -> i32 {
        self.0
    }

    /// The task API's unsigned form.
    pub fn as_u32(self) -> u32 {
        self.0.unsigned_abs()
    }

    /// The task API's pid field: 0 when there is no process yet.
    pub fn or_zero(pid: Option<Pid>) -> u32 {
        pid.map_or(0, Pid::as_u32)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitInfo {
    /// Exit code, or 128 + signal.
    pub status: u32,
    pub at: SystemTime,
}

/// The longest id we accept; containerd's own identifier limit.
pub const MAX_ID_LEN: usize = 76;

/// Checks a container or exec id before it is used in any path or runc argument.
///
/// Accepted: 1 to 76 characters, alphanumeric runs joined by single `.`, `_` or `-`
/// (containerd's identifier grammar), so no `/`, no `..`, no leading dot, no NUL.
pub fn validate_id(kind: &str, id: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "invalid {kind} id {id:?}: {why}"
        )))
    };
    if id.is_empty() {
        return bad("must not be empty");
    }
    if id.len() > MAX_ID_LEN {
        return bad(&format!("longer than {MAX_ID_LEN} characters"));
    }
    let mut prev_sep = true; // no separator at the start
    for c in id.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' => prev_sep = false,
            '.' | '_' | '-' if !prev_sep => prev_sep = true,
            _ => {
                return bad(
                    "only letters, digits and single '.', '_' or '-' between them are allowed",
                )
            }
        }
    }
    if prev_sep {
        return bad("must end with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ids_from_the_api() {
        assert_eq!(ProcessId::from_api("").unwrap(), ProcessId::Init);
        let e = ProcessId::from_api("e1").unwrap();
        assert_eq!(e, ProcessId::Exec("e1".into()));
        assert_eq!(e.exec_id(), "e1");
        assert_eq!(ProcessId::Init.exec_id(), "");
        assert!(matches!(
            ProcessId::from_api("../x"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn pids_are_positive() {
        assert_eq!(Pid::new(0), None);
        assert_eq!(Pid::new(-1), None);
        assert_eq!(Pid::new(42).map(Pid::raw), Some(42));
        assert_eq!(Pid::or_zero(None), 0);
        assert_eq!(Pid::or_zero(Pid::new(7)), 7);
    }

    #[test]
    fn accepts_containerd_style_ids() {
        for id in [
            "a",
            "c1",
            "redis-1",
            "k8s_POD.x-y",
            &"f".repeat(64),
            &"a".repeat(76),
        ] {
            assert!(validate_id("container", id).is_ok(), "{id}");
        }
    }

    #[test]
    fn refuses_ids_that_could_escape_a_path() {
        for id in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/abs",
            "a..b",
            ".hidden",
            "x-",
            "a b",
            "a\0b",
            "é",
            &"a".repeat(77),
        ] {
            match validate_id("container", id) {
                Err(Error::InvalidArgument(msg)) => {
                    assert!(msg.contains("invalid container id"), "{msg}")
                }
                other => panic!("{id:?} gave {other:?}"),
            }
        }
    }
}
