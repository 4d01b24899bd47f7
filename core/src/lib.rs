//! `braidflow-core`: the vocabulary every other braid crate speaks. No I/O.
//!
//! Everything is re-exported here at the root; the one namespace kept as a module is
//! [`codec`], whose free functions read best qualified (`codec::encode`, `codec::decode`).
//!
//! - Names, validated on construction and safe to use as a path component:
//!   [`FlowName`], [`StepName`], [`ArtifactName`], [`ParamName`], [`PlanName`],
//!   [`Label`] (a `key=value` of two [`LabelPart`]s), at most [`MAX_NAME_LEN`] bytes; and
//!   [`Tag`], printable text in any language up to [`MAX_TAG_LEN`] bytes, never a path.
//! - Ids: [`RunId`] (time-sortable, unique across processes), [`TaskId`], [`Attempt`].
//! - Addresses: [`Pathspec`] (`flow/run/step/task`, `latest` allowed for the run as a
//!   [`RunRef`]) and how deep one goes ([`PathspecDepth`]).
//! - Life cycle: [`RunStatus`], [`TaskStatus`], [`Progress`] ([`ProgressUnits`]), [`Timestamp`].
//! - [`codec`]: the artifact envelope (bincode payload, type name, optional zstd) and the
//!   bounded JSON preview made at write time.
//! - Errors: one [`Error`] for all of the above, and its [`Result`].
#![warn(missing_docs)]

pub mod codec;
mod error;
mod id;
mod name;
mod pathspec;
mod status;
mod string_enum;

// Errors.
pub use error::{Error, Result};
// Ids.
pub use id::{Attempt, RunId, TaskId};
// Names.
pub use name::{
    ArtifactName, FlowName, Label, LabelPart, MAX_NAME_LEN, MAX_TAG_LEN, ParamName, PlanName, StepName, Tag,
};
// Addresses.
pub use pathspec::{Pathspec, PathspecDepth, RunRef};
// Life cycle.
pub use status::{MAX_PROGRESS_DETAILS, MAX_PROGRESS_UNIT, Progress, ProgressUnits, RunStatus, TaskStatus, Timestamp};
