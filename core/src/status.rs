//! Statuses of runs and tasks, progress values and timestamps.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `FromStr` error of the statuses: `InvalidValue`.
fn invalid(what: &'static str, input: &str, reason: String) -> Error {
    Error::InvalidValue { what, input: input.to_owned(), reason }
}

crate::string_enum!(
    /// Where a run is in its life. Stored as its word (`as_str`); more statuses may
    /// come, so a `match` outside this crate needs a `_` arm.
    #[non_exhaustive]
    pub enum RunStatus, "run status", Error = invalid; {
        /// Created, no task started yet.
        Pending = "pending",
        /// A process is moving it forward (see the run's lease).
        Running = "running",
        /// Reached `end`.
        Succeeded = "succeeded",
        /// A task failed for good; the run's `error` says which.
        Failed = "failed",
        /// Stopped by the user (Ctrl-C) or by the scheduler.
        Cancelled = "cancelled",
        /// The process that held the run stopped renewing its lease (it died or hangs):
        /// nothing moves it forward any more; `resume` completes it. Readers derive it from
        /// a `pending` or `running` record whose lease ran out, and `resume` stores it.
        Lost = "lost",
    }
);

impl RunStatus {
    /// Nothing will change this run any more (it succeeded, failed, was cancelled or lost).
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled | RunStatus::Lost)
    }

    /// A process is (or should be) moving the run forward: `pending` or `running`.
    pub fn is_live(self) -> bool {
        matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

crate::string_enum!(
    /// Where a task (or one attempt at it) is in its life. Stored as its word
    /// (`as_str`); more statuses may come, so a `match` outside this crate needs a `_` arm.
    #[non_exhaustive]
    pub enum TaskStatus, "task status", Error = invalid; {
        /// Known to the run, not started.
        Pending = "pending",
        /// An attempt holds its lease and runs it.
        Running = "running",
        /// Its last attempt returned successfully (or a failure was caught).
        Succeeded = "succeeded",
        /// Its last attempt failed and no retry is left.
        Failed = "failed",
        /// Its lease expired: it hung or its process died.
        Lost = "lost",
        /// Stopped because the run was cancelled.
        Cancelled = "cancelled",
    }
);

impl TaskStatus {
    /// Nothing will change this task (or attempt) any more: anything but `pending` and
    /// `running`.
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskStatus::Pending | TaskStatus::Running)
    }
}

/// A progress report: percent done (0 to 100) and a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// How far the task is, 0 to 100 (checked by [`Progress::new`]).
    pub percent: f32,
    /// What it is doing, at most 1024 bytes ([`Progress::new`] cuts a longer one).
    pub message: String,
}

/// Longest progress message kept, in bytes; longer ones are cut at a char boundary.
pub(crate) const MAX_PROGRESS_MESSAGE: usize = 1024;

impl Progress {
    /// Validates `percent` (finite, 0 to 100) and bounds the message.
    pub fn new(percent: f32, message: impl Into<String>) -> Result<Self> {
        if !percent.is_finite() {
            return Err(Error::InvalidProgress {
                reason: format!("percent must be a finite number from 0 to 100, got {percent}"),
            });
        }
        if !(0.0..=100.0).contains(&percent) {
            return Err(Error::InvalidProgress { reason: format!("percent must be from 0 to 100, got {percent}") });
        }
        let mut message = message.into();
        if message.len() > MAX_PROGRESS_MESSAGE {
            let mut cut = MAX_PROGRESS_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Ok(Progress { percent, message })
    }
}

/// A point in time, as microseconds since the Unix epoch (UTC). Small and `Copy`, so
/// records can carry many; converted to `jiff::Timestamp` for display and arithmetic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time, to the microsecond.
    pub fn now() -> Self {
        Timestamp(jiff::Timestamp::now().as_microsecond())
    }

    /// The time `us` microseconds after the Unix epoch (negative: before).
    pub fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }

    /// Microseconds since the Unix epoch: how stores keep it.
    pub fn as_micros(self) -> i64 {
        self.0
    }

    /// As a `jiff::Timestamp`, for display and calendar arithmetic; a value out of
    /// jiff's range (never made by braid) becomes the Unix epoch.
    pub fn to_jiff(self) -> jiff::Timestamp {
        jiff::Timestamp::from_microsecond(self.0).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// From a `jiff::Timestamp`, dropping anything finer than a microsecond.
    pub fn from_jiff(ts: jiff::Timestamp) -> Self {
        Timestamp(ts.as_microsecond())
    }

    /// `d` later, saturating at the largest timestamp.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Timestamp(self.0.saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> std::time::Duration {
        std::time::Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_jiff(), f)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_jiff())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), *s);
        }
        for s in RunStatus::ALL {
            assert_eq!(s.to_string().parse::<RunStatus>().unwrap(), *s);
        }
        let e = "done".parse::<RunStatus>().unwrap_err().to_string();
        assert!(e.contains("succeeded") && e.contains("\"done\""), "{e}");
        assert_eq!(serde_json::to_string(&TaskStatus::Lost).unwrap(), "\"lost\"");
    }

    #[test]
    fn progress_is_validated() {
        Progress::new(0.0, "").unwrap();
        Progress::new(100.0, "done").unwrap();
        for bad in [-0.1, 100.1, f32::NAN, f32::INFINITY] {
            let e = Progress::new(bad, "x").unwrap_err().to_string();
            assert!(e.contains("0 to 100"), "{e}");
        }
        let p = Progress::new(5.0, "é".repeat(1000)).unwrap();
        assert!(p.message.len() <= MAX_PROGRESS_MESSAGE);
    }

    #[test]
    fn timestamps() {
        let t = Timestamp::now();
        let later = t.plus(std::time::Duration::from_millis(1500));
        assert_eq!(later.since(t).as_millis(), 1500);
        assert_eq!(t.since(later).as_millis(), 0);
        assert!(t.to_string().ends_with('Z'));
    }
}
