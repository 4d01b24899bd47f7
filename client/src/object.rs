//! [`Object`]: whatever a pathspec names, by its depth.

use braid_core::PathspecDepth;

use crate::error::{Error, Result};
use crate::flow::Flow;
use crate::run::Run;
use crate::step::Step;
use crate::task::Task;

/// What a pathspec names, by its depth: the answer of [`Client::get`](crate::Client::get).
/// One variant per pathspec depth, so a `match` on it may name each.
#[derive(Debug, Clone)]
// One is made per pathspec looked up, never held in bulk; boxing the task would only
// change the patterns callers write.
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// `flow`.
    Flow(Flow),
    /// `flow/run` (the run may be `latest`).
    Run(Run),
    /// `flow/run/step`.
    Step(Step),
    /// `flow/run/step/task`.
    Task(Task),
}

impl Object {
    /// How deep the object sits: flow, run, step or task.
    pub fn depth(&self) -> PathspecDepth {
        match self {
            Object::Flow(_) => PathspecDepth::Flow,
            Object::Run(_) => PathspecDepth::Run,
            Object::Step(_) => PathspecDepth::Step,
            Object::Task(_) => PathspecDepth::Task,
        }
    }

    /// The object's pathspec, with the run's real id in place of `latest`.
    pub fn pathspec(&self) -> String {
        match self {
            Object::Flow(f) => f.pathspec(),
            Object::Run(r) => r.pathspec(),
            Object::Step(s) => s.pathspec(),
            Object::Task(t) => t.pathspec(),
        }
    }

    /// The run, or an error saying what `pathspec` named instead and what a run's looks like.
    pub fn into_run(self, pathspec: &str) -> Result<Run> {
        match self {
            Object::Run(r) => Ok(r),
            other => Err(wrong_depth(pathspec, other.depth(), "run")),
        }
    }

    /// The step, or an error saying what `pathspec` named instead and what a step's looks like.
    pub fn into_step(self, pathspec: &str) -> Result<Step> {
        match self {
            Object::Step(s) => Ok(s),
            other => Err(wrong_depth(pathspec, other.depth(), "step")),
        }
    }

    /// The task, or an error saying what `pathspec` named instead and what a task's looks like.
    pub fn into_task(self, pathspec: &str) -> Result<Task> {
        match self {
            Object::Task(t) => Ok(t),
            other => Err(wrong_depth(pathspec, other.depth(), "task")),
        }
    }
}

fn depth_name(d: PathspecDepth) -> &'static str {
    match d {
        PathspecDepth::Flow => "flow",
        PathspecDepth::Run => "run",
        PathspecDepth::Step => "step",
        PathspecDepth::Task => "task",
    }
}

/// The error for a pathspec that names an object of another depth than the one needed.
pub(crate) fn wrong_depth(pathspec: &str, found: PathspecDepth, expected: &'static str) -> Error {
    let form = match expected {
        "flow" => "flow",
        "run" => "flow/run, the run may be `latest`",
        "step" => "flow/run/step",
        _ => "flow/run/step/task, the task part being a task id",
    };
    Error::WrongDepth { pathspec: pathspec.to_owned(), found: depth_name(found), expected, form }
}
