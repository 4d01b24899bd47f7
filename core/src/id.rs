//! Ids for runs, tasks and attempts.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::{Generator, Ulid};

use crate::error::{Error, Result};

/// The id of a run: a ULID (48-bit millisecond timestamp + 80 random bits), in
/// Crockford base32, so ids sort by creation time as strings. Within one process ids
/// are strictly increasing even inside one millisecond; across processes the 80 random
/// bits keep two runs started in the same millisecond apart.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(Ulid);

static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);

impl RunId {
    /// A fresh id, greater than every id this process made before.
    pub fn generate() -> Self {
        let mut guard = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        let generator = guard.get_or_insert_with(Generator::new);
        // `generate` fails only when 2^80 ids were made in one millisecond; a fresh
        // random id is still unique with overwhelming probability.
        RunId(generator.generate().unwrap_or_else(|_| Ulid::new()))
    }

    /// Milliseconds since the Unix epoch at which the id was made.
    pub fn timestamp_ms(&self) -> u64 {
        self.0.timestamp_ms()
    }

    /// Reads an id as [`Display`](fmt::Display) writes it: 26 characters of Crockford
    /// base32. `InvalidId` says what is wrong (length, a character).
    pub fn parse(input: &str) -> Result<Self> {
        if input.len() != 26 {
            return Err(Error::InvalidId {
                kind: "run id",
                input: input.to_owned(),
                reason: format!("a run id has 26 characters, this has {}", input.len()),
            });
        }
        Ulid::from_string(input).map(RunId).map_err(|e| Error::InvalidId {
            kind: "run id",
            input: input.to_owned(),
            reason: format!("{e} (run ids are ULIDs such as 01JDA3VQ4K3W8X5T2N0R6YB7CM)"),
        })
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({})", self.0)
    }
}

impl FromStr for RunId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The id of a task within a run. Ids are assigned by the executor in the order tasks
/// are created, starting at 1; they are unique within a run, not across runs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub u64);

impl TaskId {
    /// Reads a task id: a non-negative decimal integer. `InvalidId` otherwise.
    pub fn parse(input: &str) -> Result<Self> {
        input.parse::<u64>().map(TaskId).map_err(|_| Error::InvalidId {
            kind: "task id",
            input: input.to_owned(),
            reason: "task ids are non-negative integers such as 12".into(),
        })
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

impl FromStr for TaskId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// The number of an attempt at a task, starting at 1. It doubles as the fencing token
/// of the attempt's lease: a write carrying an older attempt number is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The first attempt at a task.
    pub const FIRST: Attempt = Attempt(1);

    /// The attempt after this one (a retry); saturates at `u32::MAX`.
    pub fn next(self) -> Attempt {
        Attempt(self.0.saturating_add(1))
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn run_ids_round_trip_and_sort_by_creation() {
        let ids: Vec<RunId> = (0..10_000).map(|_| RunId::generate()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_string() < w[1].to_string());
        }
        let s = ids[0].to_string();
        assert_eq!(RunId::parse(&s).unwrap(), ids[0]);
    }

    #[test]
    fn run_ids_are_unique_across_threads() {
        let handles: Vec<_> =
            (0..8).map(|_| std::thread::spawn(|| (0..5_000).map(|_| RunId::generate()).collect::<Vec<_>>())).collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id), "duplicate {id}");
            }
        }
        assert_eq!(all.len(), 40_000);
    }

    #[test]
    fn bad_ids_say_why() {
        let e = RunId::parse("abc").unwrap_err().to_string();
        assert!(e.contains("26 characters"), "{e}");
        let e = RunId::parse("UUUUUUUUUUUUUUUUUUUUUUUUUU").unwrap_err().to_string();
        assert!(e.contains("run id"), "{e}");
        let e = TaskId::parse("-1").unwrap_err().to_string();
        assert!(e.contains("task id"), "{e}");
    }
}
