//! `braidflow-runtime`: write a flow as Rust functions and run it.
//!
//! ```no_run
//! use braid_runtime::{Flow, Param, ParamType};
//!
//! # fn build() -> braid_runtime::Result<Flow> {
//! Flow::builder("fanout")
//!     .param(Param::new("n", ParamType::UInt).default(100u64).help("how many items"))
//!     .step("start", |ctx| async move {
//!         let n: u64 = ctx.param("n")?;
//!         ctx.set("items", &(0..n).collect::<Vec<u64>>())?;
//!         Ok(())
//!     })
//!     .foreach("items", "work")
//!     .step("work", |ctx| async move {
//!         let x: u64 = ctx.input()?;
//!         ctx.set("out", &(x * x))?;
//!         Ok(())
//!     })
//!     .next("join")
//!     .join("join", |ctx| async move {
//!         let mut total = 0u64;
//!         for input in ctx.inputs()? {
//!             total += input.get::<u64>("out").await?;
//!         }
//!         ctx.set("total", &total)?;
//!         Ok(())
//!     })
//!     .next("end")
//!     .step("end", |_ctx| async move { Ok(()) })
//!     .end()
//!     .build()
//! # }
//! ```
//!
//! Semantics worth knowing:
//! - A task starts with its parent's artifacts by reference; `set` overrides a name for
//!   the task and its descendants. Values are stored when the task succeeds; a failed
//!   attempt's values are dropped.
//! - A join starts empty and sees its branches through `inputs()`; `merge_artifacts`
//!   takes the values all branches agree on. Reading a branch-only name in a join is an
//!   error that says so.
//! - A switch goes to the case named by the value its step sets; a case back to the
//!   step itself or an earlier one loops, up to `max_iterations`.
//! - [`PreparedRun::prepare`] creates the run record (the id is known before any step
//!   runs); [`PreparedRun::execute`] runs it. [`Resume`] reuses every successful task of
//!   an earlier run by reference.
//!
//! The API, by purpose (every module but [`plan`] is private, and the lists below are
//! the whole surface):
//! - **Authoring a flow**: [`Flow::builder`] → [`FlowBuilder`] / [`StepBuilder`] (with
//!   [`Param`], [`Backoff`], [`StepPolicy`]); step bodies get a [`Ctx`], joins see
//!   [`Input`]s and take [`Merge`]d values.
//! - **Running it**: [`run`], or [`PreparedRun`] to know the run id first, with
//!   [`RunOptions`] (and [`Resume`]); [`RunSummary`], [`RunProgress`] and [`Metrics`] tell
//!   how it goes; [`task_log_layer`] sends `tracing` events of steps to their task logs.
//! - **Launch plans and the scheduler**: the [`plan`] module, a front door of its own.
//! - **Errors**: [`Error`] (and [`PersistError`], its cause when records cannot be
//!   stored); [`plan::PlanError`] for plans.

#![warn(missing_docs)]

mod context;
mod error;
mod executor;
mod failpoint;
mod flow;
mod lease;
mod logs;
mod metrics;
mod namespace;
mod params;
mod persist;
mod progress;

// Authoring a flow.
pub use braid_dag::{Param, ParamSpec, ParamType};
pub use context::{Ctx, Input, Merge};
pub use error::{BoxError, StepResult};
pub use flow::{Backoff, Flow, FlowBuilder, StepBuilder, StepPolicy};

// Running it.
pub use executor::{Execution, is_isolated_task, serve_isolated_task};
pub use executor::{JOIN_INPUTS_IN_MEMORY, PreparedRun, Resume, RunOptions, RunProgress, RunSummary, StepCounts};
// Running on many machines: workers claim a run's tasks from the store's queue.
pub use executor::{CLAIM_LEASE, DEFAULT_QUEUE, MAX_DISPATCHES, valid_queue_name};
pub use executor::{WorkerOptions, WorkerReport, WorkerStop, run_worker};
pub use failpoint::init_failpoints;
pub use lease::RUN_LEASE;
pub use logs::{TaskLogLayer, task_log_layer};
pub use metrics::Metrics;
pub use params::resolve_params_with;
pub use tokio_util::sync::CancellationToken;

// Launch plans and the scheduler: `braid_runtime::plan::{LaunchPlan, Scheduler, ...}`.
pub mod plan;

// Errors.
pub use error::{Error, Result};
pub use persist::PersistError;

use std::sync::Arc;

use braid_store::Store;

/// Runs `flow` on `store` to its end: prepare, then execute.
pub async fn run(flow: Arc<Flow>, store: Store, opts: RunOptions) -> Result<RunSummary> {
    PreparedRun::prepare(flow, store, opts).await?.execute().await
}
