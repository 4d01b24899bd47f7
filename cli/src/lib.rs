//! `braidflow-cli`: the `braid` command and the entry point a flow binary calls.
//!
//! - [`inspect`] holds the `braid` binary: read-only commands over a store (flows, runs,
//!   show, artifact, logs, watch, dag, plan list/show) and its writes: `tag`, `plan
//!   activate|deactivate|launch`. `src/bin/braid.rs` only calls [`inspect::main`].
//! - [`flow_main`] is what a user's flow binary calls from `main`: it gives the flows it
//!   hosts a command line (`run`, `resume`, `check`, `show`) with a live view, and the
//!   launch plan commands (`plans apply|launch`, `scheduler`, `backfill`).
//! - [`ui`] is `braid ui`: the web UI and the JSON API over a store.

mod flow_main;
mod flow_plans;
pub mod inspect;
pub mod ui;

pub use flow_main::{flow_main, flow_main_from};
