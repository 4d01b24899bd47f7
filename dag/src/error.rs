//! The crate's error type for everything that is not a graph validation problem.

use crate::validate::ValidationErrors;

/// Errors of `braidflow-dag` outside graph validation and parameter values: spec files.
/// (Parameter values are checked by [`crate::ParamCheck`], whose problems are
/// [`crate::ParamProblem`]s.) More variants may come, so a `match` outside this crate
/// needs a `_` arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A spec written by a newer braid.
    #[error(
        "flow spec has format version {found}, this build of braid reads version {supported}; \
         upgrade braid to read it (or re-export the spec with this version)"
    )]
    UnsupportedFormatVersion {
        /// The spec's `format_version`.
        found: u64,
        /// The version this build reads ([`crate::FORMAT_VERSION`]).
        supported: u32,
    },

    /// The spec is not valid JSON or does not have the expected shape.
    #[error("invalid flow spec JSON: {0}")]
    SpecJson(#[from] serde_json::Error),

    /// The spec parsed but the graph it describes is not valid.
    #[error("invalid flow:\n{0}")]
    Invalid(#[from] ValidationErrors),
}
