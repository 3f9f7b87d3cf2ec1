//! The lifecycle of one process (init or exec) as a pure transition function.
//!
//! ```text
//! Created --start--> Running --exit--> Stopped
//!    |                 ^  |               ^
//!    |          resume |  | pause         |
//!    |                 |  v               |
//!    |                Paused ----exit-----+
//!    +----------------exit----------------+
//! ```
//! `Deleted` is not a state: a deleted process is removed from the table, so every later
//! request for it answers NotFound. Pausing applies to a container's init (the whole cgroup).

use crate::error::{Error, Result};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `runc create` (or exec registration) done, not started.
    Created,
    Running,
    /// Frozen by `runc pause`.
    Paused,
    /// Exited and reaped; the exit status is kept until `Delete`.
    Stopped,
}

/// Something that may change or require a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start,
    Kill,
    Delete,
    Pause,
    Resume,
    /// Update resources or checkpoint: needs live processes, changes nothing.
    Modify,
    /// The process was reaped.
    Exit,
}

impl State {
    /// The state after `op`, or the error the caller gets when `op` is not allowed now.
    pub fn apply(self, op: Op) -> Result<State> {
        use {Op::*, State::*};
        let refuse = |what: &str| {
            Err(Error::FailedPrecondition(format!(
                "cannot {what} a {} process",
                self.name()
            )))
        };
        match (self, op) {
            (Created, Start) => Ok(Running),
            (_, Start) => refuse("start"),
            (Created | Running | Paused, Kill) => Ok(self),
            (Stopped, Kill) => Err(Error::NotFound("process already finished".into())),
            (Created | Stopped, Delete) => Ok(Stopped),
            (Running | Paused, Delete) => refuse("delete"),
            (Running, Pause) => Ok(Paused),
            (_, Pause) => refuse("pause"),
            (Paused, Resume) => Ok(Running),
            (_, Resume) => refuse("resume"),
            (Created | Running | Paused, Modify) => Ok(self),
            (Stopped, Modify) => refuse("modify"),
            (Created | Running | Paused, Exit) => Ok(Stopped),
            (Stopped, Exit) => Err(Error::FailedPrecondition("process already exited".into())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
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
            (Paused, Start, None),
            (Stopped, Start, None),
            (Created, Kill, Some(Created)),
            (Running, Kill, Some(Running)),
            (Paused, Kill, Some(Paused)),
            (Stopped, Kill, None),
            (Created, Delete, Some(Stopped)),
            (Running, Delete, None),
            (Paused, Delete, None),
            (Stopped, Delete, Some(Stopped)),
            (Running, Pause, Some(Paused)),
            (Created, Pause, None),
            (Paused, Pause, None),
            (Stopped, Pause, None),
            (Paused, Resume, Some(Running)),
            (Running, Resume, None),
            (Stopped, Resume, None),
            (Running, Modify, Some(Running)),
            (Paused, Modify, Some(Paused)),
            (Stopped, Modify, None),
            (Created, Exit, Some(Stopped)),
            (Running, Exit, Some(Stopped)),
            (Paused, Exit, Some(Stopped)),
            (Stopped, Exit, None),
        ];
        for (from, op, to) in table {
            assert_eq!(from.apply(op).ok(), to, "{from:?} {op:?}");
        }
    }

    #[test]
    fn refusals_carry_the_codes_containerd_expects() {
        assert!(matches!(Stopped.apply(Kill), Err(Error::NotFound(_))));
        assert!(matches!(
            Running.apply(Delete),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(
            Running.apply(Start),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(
            Created.apply(Pause),
            Err(Error::FailedPrecondition(_))
        ));
    }
}
