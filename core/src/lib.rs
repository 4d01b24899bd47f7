//! `braidflow-core`: the vocabulary every other braid crate speaks. No I/O.
//!
//! - [`name`]: validated names ([`FlowName`], [`StepName`], [`ArtifactName`], ...). A name
//!   that passes validation is safe to use as a path component.
//! - [`id`]: [`RunId`] (time-sortable, unique across processes), [`TaskId`], [`Attempt`].
//! - [`pathspec`]: `flow/run/step/task` addresses, `latest` allowed for the run.
//! - [`status`]: [`RunStatus`], [`TaskStatus`], [`Progress`], [`Timestamp`].
//! - [`codec`]: the artifact envelope (bincode payload, type name, optional zstd) and the
//!   bounded JSON preview made at write time.

pub mod codec;
mod error;
pub mod id;
pub mod name;
pub mod pathspec;
pub mod status;

pub use error::{Error, Result};
pub use id::{Attempt, RunId, TaskId};
pub use name::{ArtifactName, FlowName, Label, LabelPart, MAX_NAME_LEN, ParamName, PlanName, StepName, Tag};
pub use pathspec::{Pathspec, PathspecDepth, RunRef};
pub use status::{Progress, RunStatus, TaskStatus, Timestamp};
