use thiserror::Error;

/// Everything that can go wrong in `braidflow-core`: bad names, ids and pathspecs,
/// out-of-range progress, and artifact envelopes that cannot be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("invalid {kind} {input:?}: {reason}; {rule}")]
    InvalidName { kind: &'static str, input: String, reason: String, rule: &'static str },

    #[error("invalid {kind} {input:?}: {reason}")]
    InvalidId { kind: &'static str, input: String, reason: String },

    #[error("invalid pathspec {input:?}: {part} {reason} (expected flow[/run[/step[/task]]], run may be `latest`)")]
    InvalidPathspec { input: String, part: &'static str, reason: String },

    #[error("invalid {what} {input:?}: {reason}")]
    InvalidValue { what: &'static str, input: String, reason: String },

    #[error("invalid progress: {reason}")]
    InvalidProgress { reason: String },

    #[error("cannot encode value of type {type_name}: {reason}")]
    Encode { type_name: String, reason: String },

    #[error("corrupted artifact envelope: {reason}")]
    CorruptEnvelope { reason: String },

    #[error(
        "artifact envelope has format version {found}, this build reads up to {supported}; upgrade braid to read it"
    )]
    UnsupportedFormat { found: u8, supported: u8 },

    #[error("artifact was written with codec id {codec}, which this build does not know; upgrade braid to read it")]
    UnknownCodec { codec: u8 },

    #[error("artifact holds a value of type `{stored}`, but `{requested}` was requested; read it as `{stored}`")]
    TypeMismatch { stored: String, requested: String },

    #[error("cannot decode artifact payload as `{type_name}`: {reason}")]
    Decode { type_name: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
