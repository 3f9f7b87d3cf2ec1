//! What a supervised process is: its lifecycle state machine and the rules for ids.
//! Pure code: no I/O.

mod state;

pub use state::{Op, State};

use crate::error::{Error, Result};
use std::time::SystemTime;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
