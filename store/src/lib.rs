//! `braidflow-store`: where everything a run produces is kept.
//!
//! Three concerns, three traits:
//! - [`BlobStore`]: content-addressed bytes (key = blake3 of the content), put and read
//!   whole or as streams, every read verified against the key.
//! - [`RecordStore`]: flows, runs, tasks, attempts, artifact tables, logs and claims,
//!   with pagination and conditional writes ([`Precondition`]).
//! - [`PlanStore`]: launch plans (versions, labels, activation) and the scheduler's
//!   state: cursors, launches claimed at most once, heartbeats.
//!
//! A [`Store`] holds the three. Backends: [`fs`] (the embedded default: SQLite records and
//! small blobs, larger blobs as files) and [`memory`]. The `conformance` feature exposes
//! the suite every backend must pass.

mod blob;
mod error;
#[cfg(feature = "faults")]
pub mod faults;
pub mod fs;
pub mod memory;
mod memory_plans;
mod plan;
mod record;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
mod conformance_plans;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use blob::{BlobInfo, BlobKey, BlobReader, BlobStore};
pub use error::{Error, Result};
pub use memory_plans::MemoryPlans;
pub use plan::{
    LAUNCH_CLAIM_SCOPE, LaunchKind, LaunchQuery, LaunchRecord, LaunchState, PlanDraft, PlanQuery, PlanRecord,
    PlanSelector, PlanStore, PlanVersion, Registration, SchedulerRecord,
};
pub use record::{
    ArtifactRecord, AttemptRecord, BlobRef, ElementsRef, FlowRecord, ForeachFrame, INLINE_VALUE_MAX, LogLine,
    MAX_TASK_EVENTS, Page, Precondition, RecordStore, Rejection, RunDeletion, RunLease, RunQuery, RunRecord,
    StepArtifact, StepSummary, TaskError, TaskEvent, TaskEventKind, TaskKey, TaskQuery, TaskRecord, TaskWrite,
    VisibleArtifact, WriteOutcome, host_name, process_exited, process_holder,
};

/// The environment variable naming the store when no `--store` flag is given.
pub const STORE_ENV: &str = "BRAID_STORE";
/// The store used when neither flag nor environment names one.
pub const DEFAULT_STORE: &str = ".braid";
/// The location that opens a fresh, empty memory store.
pub const MEMORY_LOCATION: &str = "memory:";

/// Where a store lives, as a location string names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `memory:`: a fresh, empty store in this process.
    Memory,
    /// A directory: the fs backend.
    Dir(PathBuf),
}

impl StoreLocation {
    /// Reads a location: `memory:` or a directory path. Every problem is reported at
    /// once: an empty location, whitespace around it, a URL scheme this build has no
    /// backend for. Whether the directory can hold a store is checked when it is opened.
    pub fn parse(location: &str) -> Result<StoreLocation> {
        let mut problems = Vec::new();
        let trimmed = location.trim();
        if trimmed.is_empty() {
            problems.push("is empty; give a directory path (e.g. ./.braid) or `memory:`".to_owned());
        } else if trimmed != location {
            problems
                .push("has whitespace around it, which would be part of the directory's name; remove it".to_owned());
        }
        if let Some((scheme, _)) = trimmed.split_once("://")
            && scheme.len() > 1
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        {
            let hint = match scheme.to_ascii_lowercase().as_str() {
                "memory" => " (for a memory store write `memory:`)",
                "file" => " (give the directory's path itself, without `file://`)",
                _ => "",
            };
            problems.push(format!(
                "names a {scheme}:// store, which this build cannot open: it supports directory paths and `memory:`{hint}; postgres:// and s3:// come with the PostgreSQL and S3 backends"
            ));
        }
        if !problems.is_empty() {
            return Err(Error::Location { location: location.to_owned(), problems });
        }
        Ok(if trimmed == MEMORY_LOCATION { StoreLocation::Memory } else { StoreLocation::Dir(PathBuf::from(location)) })
    }
}

/// A store: blobs and records, cheap to clone and share between tasks.
#[derive(Debug, Clone)]
pub struct Store {
    pub blobs: Arc<dyn BlobStore>,
    pub records: Arc<dyn RecordStore>,
    /// Launch plans and the scheduler's state; shares the records' database.
    pub plans: Arc<dyn PlanStore>,
    location: String,
}

impl Store {
    /// A store made of these halves (e.g. wrappers around another store's), known by
    /// `location` in messages.
    pub fn from_parts(
        blobs: Arc<dyn BlobStore>,
        records: Arc<dyn RecordStore>,
        plans: Arc<dyn PlanStore>,
        location: impl Into<String>,
    ) -> Self {
        Store { blobs, records, plans, location: location.into() }
    }

    /// A fresh, empty store in memory.
    pub fn memory() -> Self {
        let records: Arc<dyn RecordStore> = Arc::new(memory::MemoryRecords::default());
        Store {
            blobs: Arc::new(memory::MemoryBlobs::default()),
            plans: Arc::new(MemoryPlans::new(records.clone())),
            records,
            location: MEMORY_LOCATION.into(),
        }
    }

    /// Opens the fs store rooted at `root`, creating it if `root` does not exist (its
    /// parent must) or is an empty directory. Refused, with what to do instead: a path
    /// that is a file, a directory that is neither a store nor empty, a missing parent,
    /// a location braid may not read and write.
    pub fn open_fs(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let (blobs, records) = fs::open(root)?;
        let plans = fs::FsPlans::new(&records);
        Ok(Store {
            blobs: Arc::new(blobs),
            records: Arc::new(records),
            plans: Arc::new(plans),
            location: root.display().to_string(),
        })
    }

    /// Opens the store at `location`: `memory:` or a directory path (see
    /// [`StoreLocation::parse`] and [`Store::open_fs`] for what is refused, and why).
    pub fn open(location: &str) -> Result<Self> {
        match StoreLocation::parse(location)? {
            StoreLocation::Memory => Ok(Self::memory()),
            StoreLocation::Dir(root) => Self::open_fs(root),
        }
    }

    /// The location a command should use: the flag if given, else `BRAID_STORE`, else
    /// `./.braid`.
    pub fn resolve_location(flag: Option<&str>) -> String {
        flag.map(str::to_owned)
            .or_else(|| std::env::var(STORE_ENV).ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE).display().to_string())
    }

    /// The envelope bytes of an artifact: inline in its record, or from the blob store;
    /// verified against the artifact's key either way.
    pub async fn artifact_bytes(&self, artifact: &ArtifactRecord) -> Result<Vec<u8>> {
        match &artifact.inline {
            Some(bytes) => {
                blob::verify(&artifact.key, bytes, &format!("the record of artifact `{}`", artifact.name))?;
                Ok(bytes.clone())
            }
            None => self.blobs.get(&artifact.key).await,
        }
    }

    /// Where this store lives, as given when it was opened.
    pub fn location(&self) -> &str {
        &self.location
    }
}
