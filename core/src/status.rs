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

/// A progress report: percent done (0 to 100) and a message, and optionally units done
/// out of a total and a small map of details (what a retried attempt reads back).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// How far the task is, 0 to 100 (checked by [`Progress::new`]).
    pub percent: f32,
    /// What it is doing, at most 1024 bytes ([`Progress::new`] cuts a longer one).
    pub message: String,
    /// Units done out of a total, when the step counts them ([`ProgressUnits::new`]);
    /// `percent` is then derived from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<ProgressUnits>,
    /// Details the step reported (a JSON object of at most [`MAX_PROGRESS_DETAILS`]
    /// bytes, checked by [`Progress::check_details`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Units of work done out of a total (`4,500 of 10,000 rows`), and the rate at which
/// they were done over the attempt so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressUnits {
    /// Units done.
    pub done: u64,
    /// Units in all.
    pub total: u64,
    /// What is counted (`rows`, `files`), at most 64 bytes, no control characters.
    pub unit: String,
    /// Units per second since the attempt's first report in units, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// Longest unit name kept, in bytes.
pub const MAX_PROGRESS_UNIT: usize = 64;

/// Most bytes of progress details (as JSON) kept with a task's lease.
pub const MAX_PROGRESS_DETAILS: usize = 8 * 1024;

impl ProgressUnits {
    /// Checks `done <= total` and the unit's name (non-empty, short, no control
    /// characters); the rate is filled in by the runtime.
    pub fn new(done: u64, total: u64, unit: &str) -> Result<Self> {
        let mut problems = Vec::new();
        if done > total {
            problems.push(format!("done ({done}) is more than total ({total})"));
        }
        if unit.is_empty() {
            problems.push("the unit is empty: name what is counted, such as \"rows\"".to_owned());
        } else if unit.len() > MAX_PROGRESS_UNIT {
            problems.push(format!("the unit is {} bytes long; at most {MAX_PROGRESS_UNIT} are allowed", unit.len()));
        }
        if unit.chars().any(char::is_control) {
            problems.push(format!("the unit {unit:?} contains control characters"));
        }
        if !problems.is_empty() {
            return Err(Error::InvalidProgress { reason: problems.join("; ") });
        }
        Ok(ProgressUnits { done, total, unit: unit.to_owned(), rate: None })
    }

    /// Percent done: `done / total` (100 when the total is 0).
    pub fn percent(&self) -> f32 {
        if self.total == 0 { 100.0 } else { (self.done as f64 * 100.0 / self.total as f64) as f32 }
    }
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
        Ok(Progress { percent, message, units: None, details: None })
    }

    /// A report of units done out of a total, its percent derived from them.
    pub fn of_units(units: ProgressUnits, message: impl Into<String>) -> Result<Self> {
        let mut p = Progress::new(units.percent(), message)?;
        p.units = Some(units);
        Ok(p)
    }

    /// Checks that `details` is a JSON object of at most [`MAX_PROGRESS_DETAILS`] bytes.
    pub fn check_details(details: &serde_json::Value) -> Result<()> {
        if !details.is_object() {
            return Err(Error::InvalidProgress {
                reason: format!(
                    "progress details must be a JSON object (a map of names to values), got {}",
                    json_kind(details)
                ),
            });
        }
        let len = serde_json::to_vec(details).map(|v| v.len()).unwrap_or(usize::MAX);
        if len > MAX_PROGRESS_DETAILS {
            return Err(Error::InvalidProgress {
                reason: format!(
                    "progress details are {len} bytes of JSON; at most {MAX_PROGRESS_DETAILS} are kept with the \
                     lease: keep large state in an artifact and report only where to find it"
                ),
            });
        }
        Ok(())
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
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
    #[test]
    fn units_derive_the_percent_and_refuse_more_done_than_total_naming_every_problem() {
        let u = ProgressUnits::new(4_500, 10_000, "rows").unwrap();
        assert_eq!(u.percent(), 45.0);
        assert_eq!(ProgressUnits::new(0, 0, "rows").unwrap().percent(), 100.0);
        let p = Progress::of_units(u, "copying").unwrap();
        assert_eq!((p.percent, p.units.as_ref().map(|u| u.done)), (45.0, Some(4_500)));
        let e = ProgressUnits::new(11, 10, "").unwrap_err().to_string();
        assert!(e.contains("done (11) is more than total (10)") && e.contains("the unit is empty"), "{e}");
        assert!(ProgressUnits::new(1, 2, "a\nb").is_err());
    }

    #[test]
    fn details_must_be_a_small_json_object() {
        Progress::check_details(&serde_json::json!({"offset": 120, "file": "b.csv"})).unwrap();
        let e = Progress::check_details(&serde_json::json!([1, 2])).unwrap_err().to_string();
        assert!(e.contains("must be a JSON object") && e.contains("an array"), "{e}");
        let big = serde_json::json!({ "blob": "x".repeat(MAX_PROGRESS_DETAILS) });
        let e = Progress::check_details(&big).unwrap_err().to_string();
        assert!(e.contains("at most 8192"), "{e}");
    }

    #[test]
    fn a_report_without_units_or_details_serialises_as_before() {
        let p = Progress::new(12.5, "m").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"percent":12.5,"message":"m"}"#);
        let back: Progress = serde_json::from_str(r#"{"percent":12.5,"message":"m"}"#).unwrap();
        assert_eq!(back, p);
    }

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
