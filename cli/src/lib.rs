//! `braidflow-cli`: the `braid` command and the entry point a flow binary calls.
//!
//! - [`inspect`] holds the `braid` binary: read-only commands over a store (flows, runs,
//!   show, artifact, logs, watch, dag, plan list/show) and its writes: `tag`, `plan
//!   activate|deactivate|launch`. `src/bin/braid.rs` only calls [`inspect::main`].
//! - [`flow_main`] is what a user's flow binary calls from `main`: it gives the flows it
//!   hosts a command line (`run`, `resume`, `check`, `show`) with a live view, and the
//!   launch plan commands (`plans apply|launch`, `scheduler`, `backfill`).
//! - [`ui`] is `braid ui`: the web UI and the JSON API over a store.

#![warn(missing_docs)]

mod flow_main;
mod flow_plans;
mod flow_worker;
pub mod inspect;
mod report;
pub mod ui;

pub use flow_main::{FlowBinary, flow_main, flow_main_from};

/// `--param NAME=VALUE` arguments of a plan launch as (name, text) pairs, or one message
/// naming every argument that is not `NAME=VALUE`.
pub(crate) fn split_params(params: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for p in params {
        match braid_dag::split_param_arg(p, "site_id=site1") {
            Ok((k, v)) => out.push((k.to_owned(), v.to_owned())),
            Err(e) => bad.push(format!("--param {p}: {e}")),
        }
    }
    match bad.len() {
        0 => Ok(out),
        1 => Err(bad.remove(0)),
        n => Err(format!("{n} --param arguments are not NAME=VALUE:\n  {}", bad.join("\n  "))),
    }
}
