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
//! A [`Store`] holds the three, opened from a location ([`Store::open`],
//! [`Store::connect`]; [`StoreLocation`], [`BlobLocation`]). Backends, each a module
//! or type of its own: [`fs`] (the embedded default: SQLite records and small blobs,
//! larger blobs as files), [`memory`], and past one machine [`pg`] (PostgreSQL records
//! and plans, feature `postgres`) with blobs in S3 ([`s3`], feature `s3`) or in a
//! directory every machine mounts ([`DirBlobs`]).
//!
//! For writing and testing backends: feature `conformance` exposes the suite every
//! backend must pass (`conformance`, `conformance_suite!`), `faults` a wrapper that
//! injects failures (`faults`), `test-servers` throwaway PostgreSQL and S3 servers
//! (`test_servers`).
//!
//! The record types are plain data with public fields; fields may be added in a minor
//! release, so outside this crate build them with their constructors
//! ([`RunRecord::new`], [`TaskRecord::new`], [`TaskWrite::new`]), `Default` (the
//! queries) or struct update syntax, and match enums with a `_` arm where they say so.

#![warn(missing_docs)]

mod blob;
mod dir;
mod error;
#[cfg(feature = "faults")]
pub mod faults;
pub mod fs;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod pg;
mod plan;
mod queue;
mod record;
mod rows;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "test-servers")]
pub mod test_servers;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
mod conformance_plans;
#[cfg(feature = "conformance")]
mod conformance_queue;

use std::path::{Path, PathBuf};
use std::sync::Arc;

// The store and where it lives.
pub use error::{Error, Result};
// (Store, StoreLocation, BlobLocation and the location constants are defined below.)

// Blobs.
pub use blob::{BlobInfo, BlobKey, BlobReader, BlobStore};

// The task queue workers claim from.
pub use dir::DirBlobs;
pub use queue::{Claim, MemoryQueue, QueueCounts, QueueInfo, QueuedTask, Reply, TaskQueue};

// Records: the trait, what it stores, how it is queried and written.
pub use record::{
    ArtifactRecord, AttemptRecord, CaughtFailure, ElementsRef, FlowRecord, ForeachFrame, LogLine, RunLease, RunRecord,
    StepArtifact, StepArtifactRow, StepSummary, TaskDispatch, TaskError, TaskEvent, TaskEventKind, TaskKey, TaskRecord,
    VisibleArtifact,
};
pub use record::{BlobRef, Page, RunDeletion, RunQuery, TaskQuery};
pub use record::{INLINE_VALUE_MAX, MAX_TASK_EVENTS, RecordStore};
pub use record::{Precondition, Rejection, TaskWrite, WriteOutcome};
// Lease holders: who a process is, and whether one on this machine is gone.
pub use record::{host_name, process_exited, process_holder};

// Plans: the trait, what it stores, and the scheduler's state.
pub use plan::{
    LAUNCH_CLAIM_SCOPE, LaunchKind, LaunchQuery, LaunchRecord, LaunchState, ParamSetState, PlanDraft, PlanQuery,
    PlanRecord, PlanSelector, PlanStore, PlanVersion, Registration, SchedulerRecord, SetPause, TickFailure,
};

/// The environment variable naming the store when no `--store` flag is given.
pub const STORE_ENV: &str = "BRAID_STORE";
/// The environment variable naming where a PostgreSQL store's blobs go when no
/// `--blobs` flag is given.
pub const BLOBS_ENV: &str = "BRAID_BLOBS";
/// The store used when neither flag nor environment names one.
pub const DEFAULT_STORE: &str = ".braid";
/// The location that opens a fresh, empty memory store.
pub const MEMORY_LOCATION: &str = "memory:";

/// Where a store lives, as a location string names it. New backends bring new variants,
/// so a `match` outside this crate needs a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreLocation {
    /// `memory:`: a fresh, empty store in this process.
    Memory,
    /// A directory: the fs backend.
    Dir(PathBuf),
    /// `postgres://user@host[:port]/db` (or `postgresql://`): records and plans in
    /// PostgreSQL; the blobs go where a [`BlobLocation`] says.
    Postgres(String),
}

/// Where a PostgreSQL store's blobs live (`--blobs`, `BRAID_BLOBS`). New backends bring
/// new variants, so a `match` outside this crate needs a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobLocation {
    /// `s3://bucket[/prefix]`: objects in an S3-compatible store.
    S3(String),
    /// `file:///path`: files in a directory every machine mounts.
    Dir(PathBuf),
}

/// The URL scheme of a location, if it has one (a Windows drive letter is not one).
fn scheme_of(location: &str) -> Option<&str> {
    let (scheme, _) = location.split_once("://")?;
    (scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)))
    .then_some(scheme)
}

impl StoreLocation {
    /// Reads a location: `memory:`, a directory path, or `postgres://…`. Every problem
    /// is reported at once: an empty location, whitespace around it, a URL scheme braid
    /// has no store for (or that this build was made without). Whether the directory can
    /// hold a store, or the server answers, is checked when it is opened.
    pub fn parse(location: &str) -> Result<StoreLocation> {
        let mut problems = Vec::new();
        let trimmed = location.trim();
        if trimmed.is_empty() {
            problems.push(
                "is empty; give a directory path (e.g. ./.braid), `memory:` or postgres://USER@HOST[:PORT]/DATABASE"
                    .to_owned(),
            );
        } else if trimmed != location {
            problems
                .push("has whitespace around it, which would be part of the directory's name; remove it".to_owned());
        }
        let mut postgres = false;
        if let Some(scheme) = scheme_of(trimmed) {
            match scheme.to_ascii_lowercase().as_str() {
                "postgres" | "postgresql" if cfg!(feature = "postgres") => postgres = true,
                "postgres" | "postgresql" => problems.push(
                    "names a PostgreSQL store, but this build has no PostgreSQL backend (braidflow-store was built without its `postgres` feature)".to_owned(),
                ),
                "s3" => problems.push(
                    "names an s3:// location, which holds blobs, not records; give the records' database as the store and the bucket as the blobs: --store postgres://USER@HOST/DB --blobs s3://BUCKET/PREFIX".to_owned(),
                ),
                "file" => problems.push(
                    "names a file:// location: for an fs store give the directory's path itself, without `file://`; a shared blob directory is given with --blobs file:///PATH next to --store postgres://…".to_owned(),
                ),
                "memory" => problems.push("names a memory:// store; for a memory store write `memory:`".to_owned()),
                _ => problems.push(format!(
                    "names a {scheme}:// store, which braid cannot open: a store is a directory path, `memory:` or postgres://USER@HOST[:PORT]/DATABASE"
                )),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Location { location: shown(location), problems });
        }
        Ok(if trimmed == MEMORY_LOCATION {
            StoreLocation::Memory
        } else if postgres {
            StoreLocation::Postgres(location.to_owned())
        } else {
            StoreLocation::Dir(PathBuf::from(location))
        })
    }
}

impl BlobLocation {
    /// Reads a blob location: `s3://bucket[/prefix]` or `file:///path`.
    pub fn parse(location: &str) -> Result<BlobLocation> {
        let refuse = |problem: String| Error::Location { location: location.to_owned(), problems: vec![problem] };
        match scheme_of(location.trim()).map(str::to_ascii_lowercase).as_deref() {
            Some("s3") if cfg!(feature = "s3") => Ok(BlobLocation::S3(location.to_owned())),
            Some("s3") => Err(refuse(
                "names S3 blobs, but this build has no S3 backend (braidflow-store was built without its `s3` feature)"
                    .to_owned(),
            )),
            Some("file") => Ok(BlobLocation::Dir(dir::parse(location)?)),
            _ => {
                Err(refuse("is not a blob location; write s3://BUCKET[/PREFIX] or file:///SHARED/DIRECTORY".to_owned()))
            }
        }
    }
}

/// A location as messages show it: a password in it hidden.
fn shown(location: &str) -> String {
    #[cfg(feature = "postgres")]
    {
        pg::redact(location)
    }
    #[cfg(not(feature = "postgres"))]
    {
        location.to_owned()
    }
}

/// A store: blobs and records, cheap to clone and share between tasks.
#[derive(Debug, Clone)]
pub struct Store {
    /// Artifact values and other content-addressed bytes.
    pub blobs: Arc<dyn BlobStore>,
    /// Flows, runs, tasks, artifacts' records, logs and claims.
    pub records: Arc<dyn RecordStore>,
    /// Launch plans and the scheduler's state; shares the records' database.
    pub plans: Arc<dyn PlanStore>,
    location: String,
    blobs_location: Option<String>,
    /// The location another process opens this store with (credentials kept).
    reopen: Option<String>,
    /// The task queue, where the backend has one.
    queue: Option<Arc<dyn TaskQueue>>,
}

impl Store {
    /// A fresh, empty store in memory.
    pub fn memory() -> Self {
        let records: Arc<dyn RecordStore> = Arc::new(memory::MemoryRecords::default());
        Store {
            blobs: Arc::new(memory::MemoryBlobs::default()),
            plans: Arc::new(memory::MemoryPlans::new(records.clone())),
            records,
            location: MEMORY_LOCATION.into(),
            blobs_location: None,
            reopen: None,
            queue: Some(Arc::new(MemoryQueue::default())),
        }
    }

    /// A store of the given halves: for backends opened by hand (e.g. a PostgreSQL store
    /// with blobs opened with their own settings) and wrappers around another store's
    /// halves. `location` and `blobs_location` name them in messages.
    pub fn from_parts(
        blobs: Arc<dyn BlobStore>,
        records: Arc<dyn RecordStore>,
        plans: Arc<dyn PlanStore>,
        location: impl Into<String>,
        blobs_location: Option<String>,
    ) -> Self {
        let location: String = location.into();
        let reopen = (location != MEMORY_LOCATION).then(|| location.clone());
        Store { blobs, records, plans, location, blobs_location, reopen, queue: None }
    }

    /// Opens the fs store rooted at `root`, creating it if `root` does not exist (its
    /// parent must) or is an empty directory. Refused, with what to do instead: a path
    /// that is a file, a directory that is neither a store nor empty, a missing parent,
    /// a location braid may not read and write.
    pub fn open_fs(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let (blobs, records) = fs::open(root)?;
        let plans = fs::FsPlans::open(&records)?;
        Ok(Store {
            blobs: Arc::new(blobs),
            records: Arc::new(records),
            plans: Arc::new(plans),
            location: root.display().to_string(),
            blobs_location: None,
            reopen: Some(std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()).display().to_string()),
            queue: None,
        })
    }

    /// Opens the store at `location`: `memory:` or a directory path (see
    /// [`StoreLocation::parse`] and [`Store::open_fs`] for what is refused, and why). A
    /// PostgreSQL store needs a server connection: open it with [`Store::connect`].
    pub fn open(location: &str) -> Result<Self> {
        match StoreLocation::parse(location)? {
            StoreLocation::Memory => Ok(Self::memory()),
            StoreLocation::Dir(root) => Self::open_fs(root),
            StoreLocation::Postgres(_) => Err(Error::Location {
                location: shown(location),
                problems: vec![
                    "is a PostgreSQL store, which is opened with `Store::connect` (async) and its blobs' location"
                        .to_owned(),
                ],
            }),
        }
    }

    /// Opens the store at any location: `memory:`, a directory, or `postgres://…` with
    /// `blobs` (`s3://bucket/prefix` or `file:///path`) saying where its blobs go. A
    /// PostgreSQL store without blobs is refused (say where they go); blobs given for a
    /// store that keeps its own are refused too. Connecting gives up after 10 s (20 s
    /// for S3), naming what did not answer; a missing database or bucket, or credentials
    /// that are refused, say so. When both locations are wrong, both are reported.
    pub async fn connect(location: &str, blobs: Option<&str>) -> Result<Self> {
        let parsed = StoreLocation::parse(location);
        let blobs_parsed = blobs.map(BlobLocation::parse).transpose();
        let (parsed, blobs_parsed) = match (parsed, blobs_parsed) {
            (Ok(p), Ok(b)) => (p, b),
            (Err(a), Err(b)) => return Err(both(a, b)),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        match (parsed, blobs_parsed) {
            (StoreLocation::Memory | StoreLocation::Dir(_), Some(_)) => Err(Error::Location {
                location: blobs.unwrap_or_default().to_owned(),
                problems: vec![format!(
                    "is a blob location, which only a postgres:// store takes; the store {location} keeps its blobs itself: drop --blobs (and BRAID_BLOBS)"
                )],
            }),
            (StoreLocation::Memory, None) => Ok(Self::memory()),
            (StoreLocation::Dir(root), None) => Self::open_fs(root),
            (StoreLocation::Postgres(_), None) => Err(Error::Location {
                location: shown(location),
                problems: vec![
                    "keeps records only: say where its blobs go with --blobs s3://BUCKET/PREFIX or --blobs file:///SHARED/DIRECTORY (or the BRAID_BLOBS environment variable)".to_owned(),
                ],
            }),
            (StoreLocation::Postgres(url), Some(blob_location)) => {
                Self::connect_postgres(&url, blob_location, blobs.unwrap_or_default()).await
            }
        }
    }

    #[cfg(feature = "postgres")]
    async fn connect_postgres(url: &str, blobs: BlobLocation, blobs_text: &str) -> Result<Self> {
        let records = pg::open(url);
        let blob_store = open_blobs(blobs);
        let (records, blob_store) = tokio::join!(records, blob_store);
        let ((records, plans), blob_store) = match (records, blob_store) {
            (Ok(r), Ok(b)) => (r, b),
            (Err(a), Err(b)) => return Err(both(a, b)),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let queue: Arc<dyn TaskQueue> = Arc::new(records.queue());
        Ok(Store {
            queue: Some(queue),
            blobs: blob_store,
            records: Arc::new(records),
            plans: Arc::new(plans),
            location: pg::redact(url),
            blobs_location: Some(blobs_text.to_owned()),
            reopen: Some(url.to_owned()),
        })
    }

    #[cfg(not(feature = "postgres"))]
    async fn connect_postgres(url: &str, _: BlobLocation, _: &str) -> Result<Self> {
        Err(Error::Location {
            location: url.to_owned(),
            problems: vec!["names a PostgreSQL store, but this build has no PostgreSQL backend".to_owned()],
        })
    }

    /// Where blobs go for a command: the flag if given, else `BRAID_BLOBS`, else none.
    pub fn resolve_blobs(flag: Option<&str>) -> Option<String> {
        flag.filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| std::env::var(BLOBS_ENV).ok().filter(|s| !s.is_empty()))
    }

    /// Where this store's blobs live when they are apart from its records
    /// (`--blobs`); `None` for a store that keeps its own.
    pub fn blobs_location(&self) -> Option<&str> {
        self.blobs_location.as_deref()
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

    /// Where this store lives, as given when it was opened (a PostgreSQL password
    /// shown as `***`): for messages.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The task queue workers claim from: PostgreSQL's and memory's; `None` for an fs
    /// store (workers on many machines need a shared database).
    pub fn queue(&self) -> Option<&Arc<dyn TaskQueue>> {
        self.queue.as_ref()
    }

    /// This store with `queue` as its task queue (for stores made with
    /// [`Store::from_parts`]).
    pub fn with_queue(mut self, queue: Arc<dyn TaskQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The location another process opens this same store with ([`Store::connect`],
    /// with [`Store::blobs_location`]): an fs store's absolute path, a PostgreSQL URL with
    /// its credentials (never show it). `None` for a memory store, which lives in this
    /// process only.
    pub fn reopen_location(&self) -> Option<&str> {
        self.reopen.as_deref()
    }
}

/// Opens a blob location.
#[cfg(feature = "postgres")]
async fn open_blobs(location: BlobLocation) -> Result<Arc<dyn BlobStore>> {
    match location {
        #[cfg(feature = "s3")]
        BlobLocation::S3(url) => Ok(Arc::new(s3::S3Blobs::open(&url).await?)),
        #[cfg(not(feature = "s3"))]
        BlobLocation::S3(url) => Err(Error::Location {
            location: url,
            problems: vec!["names S3 blobs, but this build has no S3 backend".to_owned()],
        }),
        BlobLocation::Dir(path) => {
            let location = format!("file://{}", path.display());
            Ok(Arc::new(
                tokio::task::spawn_blocking(move || DirBlobs::open(&location))
                    .await
                    .map_err(|e| Error::io("open blob directory", &path, std::io::Error::other(e.to_string())))??,
            ))
        }
    }
}

/// Two errors as one: their problems together when both are about locations.
fn both(a: Error, b: Error) -> Error {
    match (a, b) {
        (Error::Location { location: la, problems: mut pa }, Error::Location { location: lb, problems: pb }) => {
            pa.extend(pb.into_iter().map(|p| format!("(blobs {lb:?}) {p}")));
            Error::Location { location: la, problems: pa }
        }
        (a, _) => a,
    }
}

#[cfg(test)]
mod reopen_tests {
    use super::Store;

    #[test]
    fn another_process_reopens_an_fs_store_by_its_absolute_path_and_cannot_reopen_memory() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let store = Store::open_fs(dir.path().join("s")).unwrap_or_else(|e| panic!("open: {e}"));
        let again = store.reopen_location().map(std::path::PathBuf::from);
        assert!(again.as_ref().is_some_and(|p| p.is_absolute() && p.ends_with("s")), "{again:?}");
        assert_eq!(Store::memory().reopen_location(), None);
    }
}
