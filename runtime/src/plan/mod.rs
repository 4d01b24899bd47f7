//! Launch plans and the scheduler.
//!
//! A [`LaunchPlan`] binds a flow to fixed inputs (never overridden), default inputs, a
//! matrix of parameter sets (or an explicit list), an optional schedule (cron in an IANA
//! time zone, or a fixed rate), labels, a concurrency policy per parameter set and a
//! catch-up policy. Plans come from code ([`LaunchPlan::builder`]) or TOML files
//! ([`check_plan_file`]); [`register_plans`] validates a batch against the flows'
//! parameters and registers all of it or none. Registering other content makes a new
//! version; the same content is a no-op.
//!
//! The [`Scheduler`] serves the active plans of the flows it hosts. Every (plan, tick,
//! parameter set) is claimed in the store before it launches, so it launches at most
//! once across restarts, versions and concurrent schedulers; ticks missed while no
//! scheduler ran follow the plan's catch-up policy. [`backfill`] launches the ticks of
//! a past interval through the same claims. Manual launches run in-process
//! ([`launch_now`]) or are recorded for a running scheduler ([`request_launch`]).
//!
//! Every launched run records `plan`, `plan_version`, `tick`, `parameter_set`, `launch`
//! and `launch_key` in its meta, and gets the readable name `<plan>_<values>`, e.g.
//! `data_sync_hourly_site1`.

mod dispatch;
mod error;
mod file;
mod launch;
mod matrix;
mod metrics;
mod model;
mod registry;
mod schedule;
mod scheduler;

// Plans: their model, files and registration.
pub use file::{check_plan_file, check_plan_text, parse_plans};
pub use matrix::{MAX_MATRIX_OUTPUT, SetSource};
pub use model::{CatchUp, CatchUpKind, Concurrency, LaunchPlan, LaunchPlanBuilder, ParamSet, PlanSpec};
pub use registry::{
    Registered, ResumedSet, check_plans_against, delete_plans, pause_note, register_plans, register_plans_at,
    resume_sets, select_sets, set_active,
};
pub use schedule::{CronError, Schedule, format_duration};

// The scheduler.
pub use scheduler::{PassReport, Scheduler, SchedulerOptions};

// Launches: the environment they happen in, backfill and manual launches, what they report.
pub use dispatch::{Clock, DEAD_AFTER, DispatchOptions, LaunchEnv, LaunchEvent, LaunchOutcome, ManualClock};
pub use launch::{BackfillOptions, BackfillReport, backfill, get_plan, launch_key, launch_now, request_launch};

// Monitoring.
pub use metrics::{LaunchOutcomeKind, PlanMetrics, set_label};

// Errors.
pub use error::{PlanError, PlanProblem, PlanResult};
