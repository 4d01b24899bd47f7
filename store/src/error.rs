use thiserror::Error;

/// Everything that can go wrong reading or writing a store. Messages name the record,
/// blob or file concerned.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{what} not found")]
    NotFound { what: String },

    /// A conditional write whose precondition did not hold: someone else wrote first.
    #[error("conflict on {what}: {reason}")]
    Conflict { what: String, reason: String },

    /// Data on disk fails its checksum or does not parse. Confined to what it names.
    #[error("corrupted {what} in {path}: {reason}")]
    Corrupt { what: String, path: String, reason: String },

    #[error("store at {path} has format version {found}, this build reads up to {supported}; upgrade braid to open it")]
    UnsupportedFormat { path: String, found: u32, supported: u32 },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The record database refused or failed an operation; the SQLite error is the cause.
    #[error("record database {path}: {context}")]
    Database {
        path: String,
        context: String,
        #[source]
        source: std::sync::Arc<rusqlite::Error>,
    },

    /// A PostgreSQL store's server refused or failed an operation, or no connection
    /// could be had; the driver's (or the pool's) error is the cause.
    #[error("PostgreSQL store {location}: {context}")]
    Postgres {
        location: String,
        context: String,
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },

    /// An object store (S3) refused or failed an operation; its error is the cause.
    #[error("blob store {location}: {context}")]
    ObjectStore {
        location: String,
        context: String,
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },

    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },

    #[error("the store's writer has stopped; reopen the store")]
    Closed,

    /// A store location that cannot be used: every problem with it, each saying how to
    /// fix it.
    #[error("{}", location_message(.location, .problems))]
    Location { location: String, problems: Vec<String> },

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

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
