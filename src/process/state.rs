//! The lifecycle of one process (init or exec) as a pure transition function.
//!
//! ```text
//! Created --start--> Running --exit--> Stopped
//!    |                                    ^
//!    +---------------exit-----------------+
//! ```
//! `Deleted` is not a state: a deleted process is removed from the table, so every later
//! request for it answers NotFound.

use crate::error::{Error, Result};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `runc create` (or exec registration) done, not started.
    Created,
    Running,
    /// Exited and reaped; the exit status is kept until `Delete`.
    Stopped,
}

/// Something that may change or require a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start,
    Kill,
    Delete,
    /// The process was reaped.
    Exit,
}

impl State {
    /// The state after `op`, or the error the caller gets when `op` is not allowed now.
    pub fn apply(self, op: Op) -> Result<State> {
        use {Op::*, State::*};
        match (self, op) {
            (Created, Start) => Ok(Running),
            (Running | Stopped, Start) => {
                Err(Error::FailedPrecondition(format!("cannot start a {} process", self.name())))
            }
            (Created | Running, Kill) => Ok(self),
            (Stopped, Kill) => Err(Error::NotFound("process already finished".into())),
            (Created | Stopped, Delete) => Ok(Stopped),
            (Running, Delete) => {
                Err(Error::FailedPrecondition("cannot delete a running process".into()))
            }
            (Created | Running, Exit) => Ok(Stopped),
            (Stopped, Exit) => {
                Err(Error::FailedPrecondition("process already exited".into()))
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Stopped => "stopped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Op::*;
    use State::*;

    #[test]
    fn transition_table() {
        // (from, op, Some(to) | None = refused)
        let table = [
            (Created, Start, Some(Running)),
            (Running, Start, None),
            (Stopped, Start, None),
            (Created, Kill, Some(Created)),
            (Running, Kill, Some(Running)),
            (Stopped, Kill, None),
            (Created, Delete, Some(Stopped)),
            (Running, Delete, None),
            (Stopped, Delete, Some(Stopped)),
            (Created, Exit, Some(Stopped)),
            (Running, Exit, Some(Stopped)),
            (Stopped, Exit, None),
        ];
        for (from, op, to) in table {
            assert_eq!(from.apply(op).ok(), to, "{from:?} {op:?}");
        }
    }

    #[test]
    fn refusals_carry_the_codes_containerd_expects() {
        assert!(matches!(Stopped.apply(Kill), Err(Error::NotFound(_))));
        assert!(matches!(Running.apply(Delete), Err(Error::FailedPrecondition(_))));
        assert!(matches!(Running.apply(Start), Err(Error::FailedPrecondition(_))));
    }
}
