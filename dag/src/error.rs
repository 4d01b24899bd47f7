//! The crate's error type for everything that is not a graph validation problem.

use braid_core::ParamName;

use crate::validate::ValidationErrors;

/// Errors of `braidflow-dag` outside graph validation: parameter values, spec files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter value (CLI text, a default, a launch-plan input) has the wrong type.
    #[error("parameter `{param}` expects {expected}, got {got}{detail}")]
    ParamValue {
        param: ParamName,
        /// What the type accepts, e.g. ``an unsigned integer (u64)``.
        expected: &'static str,
        /// The offending input, quoted (text) or as JSON (values), shortened when long.
        got: String,
        /// Extra detail such as ` (out of range)`; empty or starting with a space.
        detail: String,
    },

    /// A spec written by a newer braid.
    #[error(
        "flow spec has format version {found}, this build of braid reads version {supported}; \
         upgrade braid to read it (or re-export the spec with this version)"
    )]
    UnsupportedFormatVersion { found: u64, supported: u32 },

    /// The spec is not valid JSON or does not have the expected shape.
    #[error("invalid flow spec JSON: {0}")]
    SpecJson(#[from] serde_json::Error),

    /// The spec parsed but the graph it describes is not valid.
    #[error("invalid flow:\n{0}")]
    Invalid(#[from] ValidationErrors),
}
