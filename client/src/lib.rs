//! `braidflow-client`: read everything braid runs produce, from a script, a notebook or a tool.
//!
//! The client is read-only and blocking. It walks `Flow -> Run -> Step -> Task ->
//! Artifact`, or jumps anywhere by pathspec (`flow/run/step/task`, the run may be
//! `latest`). Every task is readable — foreach branches included — typed with
//! [`Task::data`] or as a JSON preview with [`Task::preview`], while the run is still
//! going too: a read sees the run as it is now and never blocks the writer.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let store = braid_client::Store::memory();
//! # braid_client::fixtures::fanout(&store, 50)?;
//! use braid_client::Client;
//!
//! // `Client::open(".braid")` or `Client::open_default()` for a store on disk.
//! let client = Client::from_store(store);
//! let run = client.flow("fanout")?.latest_run()?;
//! println!("{} {} {:?}", run.pathspec(), run.status(), run.params());
//!
//! // One foreach branch, by its index: typed, or as JSON.
//! let work = run.step("work")?;
//! let task = work.task_by_index(7)?;
//! assert_eq!(task.data::<u64>("out")?, 49);
//! assert_eq!(task.input::<u64>()?, 7);
//! assert_eq!(task.preview("out")?, serde_json::json!(49));
//!
//! // Every branch at once, in index order.
//! let outs: Vec<(u64, u64)> = work.artifact_values("out")?;
//! assert_eq!(outs.len(), 50);
//! assert_eq!(outs[3], (3, 9));
//!
//! // The join's own result; a name that exists only in the branches says so.
//! let join = client.task_at("fanout/latest/join")?;
//! assert_eq!(join.data::<u64>("total")?, 40425);
//! let err = join.data::<u64>("out").unwrap_err();
//! assert!(err.to_string().contains("exists only in the inputs"));
//! assert!(join.input_only_names()?.iter().any(|n| n == "out"));
//! # Ok(())
//! # }
//! ```
//!
//! Errors name what was looked for and what exists: an unknown run lists the latest
//! runs, an unknown artifact the names the task has, a wrong type the stored and the
//! requested type.
//!
//! A [`Client`] only reads, by type: it hands out no store, and none of its handles
//! writes. Run tags are written through a [`TagWriter`]; a tool that also writes other
//! things (the `braid` command's `gc`, plan activation) opens the store with
//! [`open_store`], which refuses a location that holds no store as [`Client::open`] does.
//!
//! Every type the API takes or returns is re-exported below, so `braidflow-client` is
//! the only braid crate a script or a notebook depends on.

#![warn(missing_docs)]

mod artifact;
mod client;
mod error;
mod flow;
mod object;
mod pages;
mod plan;
mod rt;
mod run;
mod step;
mod tags;
mod task;

#[cfg(feature = "fixtures")]
pub mod fixtures;

// Reading: the client and the handles it gives out, from a flow down to an artifact.
pub use artifact::Artifact;
pub use client::Client;
pub use flow::{Flow, RunFilter};
pub use object::Object;
pub use run::Run;
pub use step::{ArtifactEntry, Step, TaskState};
pub use task::Task;

// Writing: run tags, and the store for a tool that writes more (never through a `Client`).
pub use client::open_store;
pub use tags::TagWriter;

// Errors: this crate's, and the lower crates' ones its variants carry as causes.
pub use braid_core::Error as CoreError;
pub use braid_store::Error as StoreError;
pub use error::{Error, Result};

// Names, ids, statuses and times, as handles return them and as filters take them.
pub use braid_core::codec::Preview;
pub use braid_core::{
    ArtifactName, Attempt, FlowName, Label, Pathspec, PathspecDepth, PlanName, Progress, ProgressUnits, RunId, RunRef,
    RunStatus, StepName, Tag, TaskId, TaskStatus, Timestamp,
};

// The store's records, as the handles' `record()` and detail methods return them.
pub use braid_store::{
    ArtifactRecord, AttemptRecord, BlobKey, CaughtFailure, ElementsRef, FlowRecord, ForeachFrame, LogLine, Page,
    RunLease, RunQuery, RunRecord, StepSummary, Store, TaskError, TaskEvent, TaskEventKind, TaskKey, TaskRecord,
};

// Launch plans, read with `Client::plans`, `plan`, `plan_versions`, `launches`, `set_states`,
// `tick_failures`, `schedulers`.
pub use braid_store::{
    LaunchKind, LaunchQuery, LaunchRecord, LaunchState, ParamSetState, PlanQuery, PlanRecord, PlanVersion,
    SchedulerRecord, SetPause, TickFailure,
};

// A flow's validated graph, from `Flow::graph`.
pub use braid_dag::FlowGraph;
