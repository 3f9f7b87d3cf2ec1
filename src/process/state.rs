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
//! request for it answers NotFound. Pausing, updating and checkpointing apply to a container's
//! init (the whole cgroup); an exec refuses them, and an exec that has not started cannot be
//! signalled (it has no process yet), while a created init can (runc holds it).

use crate::error::{Error, Result};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Update resources: needs a container that is not stopped, changes nothing.
    Modify,
    /// Checkpoint: needs processes that run (or are paused for it), changes nothing.
    Checkpoint,
    /// The process was reaped.
    Exit,
}

/// Whether the process is a container's init or one of its execs: some rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    Exec,
}

impl State {
    /// The state after `op` on a process of `kind`, or the error the caller gets when `op` is
    /// not allowed now.
    pub fn apply(self, op: Op, kind: Kind) -> Result<State> {
        use {Op::*, State::*};
        let refuse = |what: &str| {
            Err(Error::FailedPrecondition(format!(
                "cannot {what} a {} process",
                self.name()
            )))
        };
        if kind == Kind::Exec {
            match (self, op) {
                (_, Pause | Resume | Modify | Checkpoint) => {
                    return Err(Error::FailedPrecondition(format!(
                        "{op:?} applies to a container, not to an exec"
                    )))
                }
                // Execs are signalled directly, so one that has no process yet cannot be.
                (Created, Kill) => {
                    return Err(Error::FailedPrecondition(
                        "cannot signal an exec that has not started".into(),
                    ))
                }
                _ => {}
            }
        }
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
            // containerd pauses a task before it checkpoints it, so Paused is the usual state.
            (Running | Paused, Checkpoint) => Ok(self),
            (Created | Stopped, Checkpoint) => refuse("checkpoint"),
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
        // (from, op, Some(to) | None = refused), for an init
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
            (Created, Checkpoint, None),
            (Running, Checkpoint, Some(Running)),
            (Paused, Checkpoint, Some(Paused)),
            (Stopped, Checkpoint, None),
            (Created, Modify, Some(Created)),
        ];
        for (from, op, to) in table {
            assert_eq!(from.apply(op, Kind::Init).ok(), to, "{from:?} {op:?}");
        }
    }

    #[test]
    fn exec_transition_table() {
        // (from, op, Some(to) | None = refused), for an exec
        let table = [
            (Created, Start, Some(Running)),
            (Running, Start, None),
            (Stopped, Start, None),
            (Created, Kill, None),
            (Running, Kill, Some(Running)),
            (Paused, Kill, Some(Paused)),
            (Stopped, Kill, None),
            (Created, Delete, Some(Stopped)),
            (Running, Delete, None),
            (Stopped, Delete, Some(Stopped)),
            (Running, Exit, Some(Stopped)),
            (Created, Exit, Some(Stopped)),
            (Stopped, Exit, None),
        ];
        for (from, op, to) in table {
            assert_eq!(from.apply(op, Kind::Exec).ok(), to, "{from:?} {op:?}");
        }
        // Container-wide operations are refused for an exec in every state.
        for from in [Created, Running, Paused, Stopped] {
            for op in [Pause, Resume, Modify, Checkpoint] {
                assert!(
                    matches!(
                        from.apply(op, Kind::Exec),
                        Err(Error::FailedPrecondition(_))
                    ),
                    "{from:?} {op:?}"
                );
            }
        }
    }

    #[test]
    fn refusals_carry_the_codes_containerd_expects() {
        for kind in [Kind::Init, Kind::Exec] {
            assert!(matches!(Stopped.apply(Kill, kind), Err(Error::NotFound(_))));
            assert!(matches!(
                Running.apply(Delete, kind),
                Err(Error::FailedPrecondition(_))
            ));
            assert!(matches!(
                Running.apply(Start, kind),
                Err(Error::FailedPrecondition(_))
            ));
        }
        assert!(matches!(
            Created.apply(Pause, Kind::Init),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(
            Created.apply(Kill, Kind::Exec),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(matches!(
            Created.apply(Checkpoint, Kind::Init),
            Err(Error::FailedPrecondition(_))
        ));
    }
}
