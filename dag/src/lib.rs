//! `braidflow-dag`: the flow graph without code.
//!
//! A braid flow is a graph of *steps* declared up front, so it can be validated and
//! drawn before anything runs. This crate knows nothing about the Rust functions behind
//! the steps (that is `braidflow-runtime`); it owns:
//!
//! - the data: [`FlowSpec`] (serde JSON, [`FORMAT_VERSION`]) made of [`StepSpec`]s with a
//!   [`StepKind`] and a [`Transition`] (end, next, split, foreach, switch), and
//!   [`ParamSpec`]s with a [`ParamType`], whose values [`ParamCheck`] parses and type-checks;
//! - declaring: [`FlowBuilder`] takes plain `&str` names and [`Next`] transition
//!   descriptions, and `build()` reports every problem at once as [`ValidationErrors`];
//!   each [`ValidationError`] names the step and says how to fix it;
//! - the validated graph: [`FlowGraph`], with the lookups the executor needs (parents,
//!   the join closing a fan-out, the open fan-out stack, loop-back edges, topological
//!   order), and rendering to Mermaid and Graphviz DOT.
//!
//! Graph rules in short: the run begins at `start` and finishes at `end`; a split or a
//! foreach opens a fan-out that exactly one join closes (innermost first); paths that
//! meet agree on the open fan-outs; the only cycles allowed are switch loops, where a
//! switch case goes back to the switch step itself or to a step every path to the switch
//! passes through, within the same fan-out branch.
//!
//! ```
//! use braid_dag::{FlowBuilder, Next};
//! let graph = FlowBuilder::new("retry")
//!     .step("start", Next::to("attempt"))
//!     .step("attempt", Next::switch("outcome", [("again", "attempt"), ("done", "end")]))
//!     .step("end", Next::End)
//!     .build()
//!     .unwrap();
//! assert!(graph.is_loop_back("attempt", "attempt"));
//! assert_eq!(graph.topological_order(), ["start", "attempt", "end"]);
//! ```

#![warn(missing_docs)]

mod builder;
mod error;
mod graph;
mod param;
mod render;
mod spec;
mod validate;

// Declaring a flow.
pub use builder::{FlowBuilder, Next};
pub use param::Param;
// The graph as data (the JSON spec).
pub use param::{ParamSpec, ParamType};
pub use spec::{CaseTarget, FORMAT_VERSION, FlowSpec, StepKind, StepSpec, Transition};
// The validated graph.
pub use graph::FlowGraph;
// Checking parameter values given to a run.
pub use param::{ParamCheck, ParamErrors, ParamProblem, split_param_arg};
// Errors, and the "did you mean" used in them.
pub use error::Error;
pub use validate::{ValidationError, ValidationErrors, suggest};
