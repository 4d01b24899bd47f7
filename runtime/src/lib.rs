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
pub mod plan;
mod progress;

pub use braid_dag::{Param, ParamSpec, ParamType};
pub use context::{Ctx, Input, Merge};
pub use error::{BoxError, Error, Result, StepResult};
pub use executor::{PreparedRun, Resume, RunOptions, RunProgress, RunSummary, StepCounts};
pub use failpoint::init_failpoints;
pub use flow::{Backoff, Flow, FlowBuilder, StepBuilder, StepPolicy};
pub use lease::RUN_LEASE;
pub use logs::{TaskLogLayer, task_log_layer};
pub use metrics::Metrics;
pub use params::resolve_params_with;
pub use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use braid_store::Store;

/// Runs `flow` on `store` to its end: prepare, then execute.
pub async fn run(flow: Arc<Flow>, store: Store, opts: RunOptions) -> Result<RunSummary> {
    PreparedRun::prepare(flow, store, opts).await?.execute().await
}
