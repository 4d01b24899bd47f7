use thiserror::Error;

/// Everything that can go wrong reading or writing a store. Messages name the record,
/// blob or file concerned; callers decide on the variant (`is_not_found`,
/// `is_conflict`, a `match`), never on the text. New variants may come with new
/// backends, so a `match` outside this crate needs a `_` arm.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The record, blob or plan asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `run flow/01J…`.
        what: String,
    },

    /// A conditional write whose precondition did not hold: someone else wrote first.
    #[error("conflict on {what}: {reason}")]
    Conflict {
        /// What was written, e.g. `run flow/01J…`.
        what: String,
        /// What did not hold, e.g. `expected revision 3, stored is 4`.
        reason: String,
    },

    /// Data on disk fails its checksum or does not parse. Confined to what it names.
    #[error("corrupted {what} in {path}: {reason}")]
    Corrupt {
        /// The row, blob or file that is damaged.
        what: String,
        /// The store (or file) it is in.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A store made by a newer braid, in a layout this build cannot read.
    #[error("store at {path} has format version {found}, this build reads up to {supported}; upgrade braid to open it")]
    UnsupportedFormat {
        /// The store's location.
        path: String,
        /// Its format version.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },

    /// A file system operation failed; the I/O error is the cause.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. `create directory`.
        action: &'static str,
        /// The file or directory.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The record database refused or failed an operation; the SQLite error is the cause.
    #[error("record database {path}: {context}")]
    Database {
        /// The database file.
        path: String,
        /// The operation, e.g. `write task flow/01J…/start/1`.
        context: String,
        /// SQLite's error.
        #[source]
        source: std::sync::Arc<rusqlite::Error>,
    },

    /// A PostgreSQL store's server refused or failed an operation, or no connection
    /// could be had; the driver's (or the pool's) error is the cause.
    #[error("PostgreSQL store {location}: {context}")]
    Postgres {
        /// The store's location, its password hidden.
        location: String,
        /// The operation.
        context: String,
        /// The driver's or the pool's error.
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },

    /// An object store (S3) refused or failed an operation; its error is the cause.
    #[error("blob store {location}: {context}")]
    ObjectStore {
        /// The blob location, e.g. `s3://bucket/prefix`.
        location: String,
        /// The operation.
        context: String,
        /// The object store client's error.
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },

    /// Input the store cannot take: a cursor it did not hand out, a value that does not
    /// serialize, a selector without names or labels.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was refused.
        what: String,
        /// Why, and what to give instead.
        reason: String,
    },

    /// The fs store's writer thread has stopped (the store is shutting down or it
    /// panicked); nothing more can be written through this handle.
    #[error("the store's writer has stopped; reopen the store")]
    Closed,

    /// A store location that cannot be used: every problem with it, each saying how to
    /// fix it.
    #[error("{}", location_message(.location, .problems))]
    Location {
        /// The location as given, a password in it hidden.
        location: String,
        /// Every problem found, each with what to do instead.
        problems: Vec<String>,
    },

    /// A name, id or artifact envelope from `braidflow-core` that did not parse.
    #[error(transparent)]
    Core(#[from] braid_core::Error),
}

fn location_message(location: &str, problems: &[String]) -> String {
    match problems {
        [one] => format!("store location {location:?} {one}"),
        all => format!("store location {location:?} has {} problems:\n  - {}", all.len(), all.join("\n  - ")),
    }
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.as_ref().display().to_string(), source }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// Whether this is [`Error::Conflict`]: retry after reading again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

/// A result whose error is this crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
