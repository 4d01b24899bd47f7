use thiserror::Error;

/// What can go wrong in a `braid` command. Printed as `error: ...` with one `caused by:`
/// line per cause the message does not already say.
#[derive(Debug, Error)]
pub enum Error {
    #[error("{}", client_message(.0))]
    Client(#[from] braid_client::Error),

    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: braid_store::Error,
    },

    /// Arguments that parse but do not fit together (exit code 2).
    #[error("{0}")]
    Usage(String),

    /// A command that could not do its work (exit code 1).
    #[error("{0}")]
    Failed(String),

    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),

    #[error("cannot start the async runtime for the store write: {0}")]
    Runtime(std::io::Error),

    /// `watch` saw the run end without succeeding (exit code 1).
    #[error("run {run} ended {status}{}", .error.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    RunNotSucceeded { run: String, status: braid_core::RunStatus, error: Option<String> },

    #[error("flow `{flow}` has no stored spec to draw (runs exist, but its binary never registered the graph)")]
    NoSpec { flow: String },

    /// `verify` found damage (exit code 1); the problems were printed on stdout.
    #[error("store {location} is damaged: {problems} problem(s), each named above")]
    Damaged { location: String, problems: usize },
}

fn client_message(e: &braid_client::Error) -> String {
    match e {
        braid_client::Error::NoStore { location, reason } => {
            format!("no braid store at {location}: {reason} (pass --store PATH or set BRAID_STORE)")
        }
        e => e.to_string(),
    }
}

impl Error {
    /// 2 for usage errors, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
