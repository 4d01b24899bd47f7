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
    MAX_TASK_EVENTS, Page, Precondition, RecordStore, RunDeletion, RunQuery, RunRecord, StepArtifact, StepSummary,
    TaskError, TaskEvent, TaskEventKind, TaskKey, TaskQuery, TaskRecord, TaskWrite, VisibleArtifact, WriteOutcome,
};

/// The environment variable naming the store when no `--store` flag is given.
pub const STORE_ENV: &str = "BRAID_STORE";
/// The store used when neither flag nor environment names one.
pub const DEFAULT_STORE: &str = ".braid";
/// The location that opens a fresh, empty memory store.
pub const MEMORY_LOCATION: &str = "memory:";

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

    /// Opens (creating if needed) the fs store rooted at `root`.
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

    /// Opens the store at `location`: `memory:` or a directory path.
    pub fn open(location: &str) -> Result<Self> {
        if location == MEMORY_LOCATION {
            Ok(Self::memory())
        } else if location.is_empty() {
            Err(Error::Invalid {
                what: "store location \"\"".into(),
                reason: "give a directory path (e.g. ./.braid) or `memory:`".into(),
            })
        } else {
            Self::open_fs(location)
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
