use thiserror::Error;

/// Everything that can go wrong in `braidflow-core`: bad names, ids and pathspecs,
/// out-of-range progress, and artifact envelopes that cannot be decoded.
///
/// Decide on the variant, never on the message text. New variants may be added in a
/// minor release, so a `match` outside this crate needs a `_` arm.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A name (flow, step, artifact, parameter, plan, tag, label) broke its character rule.
    #[error("invalid {kind} {input:?}: {reason}; {rule}")]
    InvalidName {
        /// What the name names, e.g. `flow name` (the type's `KIND`).
        kind: &'static str,
        /// The text that was refused.
        input: String,
        /// What is wrong with it, e.g. `it starts with a digit`.
        reason: String,
        /// The rule names of this kind follow, for the user to fix the input.
        rule: &'static str,
    },

    /// A run id or task id that does not parse.
    #[error("invalid {kind} {input:?}: {reason}")]
    InvalidId {
        /// `run id` or `task id`.
        kind: &'static str,
        /// The text that was refused.
        input: String,
        /// Why, with an example of a valid id.
        reason: String,
    },

    /// A `flow[/run[/step[/task]]]` address that does not parse.
    #[error("invalid pathspec {input:?}: {part} {reason} (expected flow[/run[/step[/task]]], run may be `latest`)")]
    InvalidPathspec {
        /// The whole pathspec as given.
        input: String,
        /// Which part is wrong, e.g. `run part`.
        part: &'static str,
        /// Why that part is wrong.
        reason: String,
    },

    /// A word that is not one of the values it may take (a status, a label's `key=value`).
    #[error("invalid {what} {input:?}: {reason}")]
    InvalidValue {
        /// What was being read, e.g. `run status`.
        what: &'static str,
        /// The text that was refused.
        input: String,
        /// What would be accepted instead.
        reason: String,
    },

    /// A progress report whose percent is not a finite number from 0 to 100, whose
    /// units do not add up, or whose details are not a small JSON object.
    #[error("invalid progress: {reason}")]
    InvalidProgress {
        /// What is wrong with the report.
        reason: String,
    },

    /// A value that cannot be put in an artifact envelope (serde refused it, or its type
    /// name is too long, or it is not a sequence where one was needed).
    #[error("cannot encode value of type {type_name}: {reason}")]
    Encode {
        /// The value's type, as recorded in envelopes.
        type_name: String,
        /// What the serializer said.
        reason: String,
    },

    /// Bytes that are not a well-formed artifact envelope (bad magic, short header,
    /// unknown flags, a payload that does not decompress).
    #[error("corrupted artifact envelope: {reason}")]
    CorruptEnvelope {
        /// What is wrong with the bytes.
        reason: String,
    },

    /// An envelope written by a newer braid, in a format this build cannot read.
    #[error(
        "artifact envelope has format version {found}, this build reads up to {supported}; upgrade braid to read it"
    )]
    UnsupportedFormat {
        /// The envelope's format version.
        found: u8,
        /// The newest format version this build reads ([`crate::codec::FORMAT_VERSION`]).
        supported: u8,
    },

    /// An envelope whose payload was made by a serializer this build does not know.
    #[error("artifact was written with codec id {codec}, which this build does not know; upgrade braid to read it")]
    UnknownCodec {
        /// The codec id byte of the envelope.
        codec: u8,
    },

    /// An envelope holding another type than the one asked for.
    #[error("artifact holds a value of type `{stored}`, but `{requested}` was requested; read it as `{stored}`")]
    TypeMismatch {
        /// The type name recorded in the envelope.
        stored: String,
        /// The type name of the type asked for.
        requested: String,
    },

    /// A payload that does not decode as the type asked for, although the names agree.
    #[error("cannot decode artifact payload as `{type_name}`: {reason}")]
    Decode {
        /// The type asked for.
        type_name: String,
        /// What the deserializer said.
        reason: String,
    },
}

/// A result whose error is this crate's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;
