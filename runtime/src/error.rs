use braid_core::{ArtifactName, Attempt, StepName, TaskId};
use thiserror::Error;

/// Everything that can go wrong building or running a flow. Messages name the step,
/// task and artifact concerned and, where there is one, the fix.
#[derive(Debug, Error)]
pub enum Error {
    #[error("flow `{flow}` is not valid:\n{problems}")]
    InvalidFlow { flow: String, problems: String },

    #[error("parameter `{param}`: {reason}")]
    Param { param: String, reason: String },

    /// Parameter values given to a run that do not fit the flow: every problem at once.
    #[error(transparent)]
    Params(#[from] braid_dag::ParamErrors),

    #[error("step `{step}` reads artifact `{name}`, which does not exist; {existing}")]
    ArtifactMissing { step: StepName, name: String, existing: String },

    #[error(
        "join step `{step}` reads artifact `{name}`, which exists only inside the branches it joins ({branches} of them have it); a join starts empty: read it per branch with `ctx.inputs()`, or take it with `ctx.merge_artifacts(..)` if all branches agree"
    )]
    BranchOnly { step: StepName, name: ArtifactName, branches: usize },

    #[error("step `{step}`: {what} is only available in {where_}")]
    WrongPlace { step: StepName, what: &'static str, where_: &'static str },

    #[error("merge_artifacts in join `{step}` failed, nothing was set: {reason}")]
    Merge { step: StepName, reason: String },

    #[error("step `{step}`, artifact `{name}`: {source}")]
    Codec {
        step: StepName,
        name: String,
        #[source]
        source: braid_core::Error,
    },

    #[error("foreach step `{step}` over `{over}`: {reason}")]
    Foreach { step: StepName, over: ArtifactName, reason: String },

    #[error(
        "foreach step `{step}` fans out over {len} items, more than max_num_splits ({max}); raise it with `--max-num-splits {len}` or `Flow::max_num_splits`"
    )]
    TooManySplits { step: StepName, len: u64, max: u64 },

    #[error("switch step `{step}` on `{on}`: {reason}")]
    Switch { step: StepName, on: ArtifactName, reason: String },

    #[error(
        "step `{step}` looped {max} times without taking its exit (max_iterations = {max}); fix its exit condition or raise it with `.max_iterations(n)`"
    )]
    LoopLimit { step: StepName, max: u32 },

    #[error("step `{step}` task {task} failed on attempt {attempt}: {cause}")]
    TaskFailed { step: StepName, task: TaskId, attempt: Attempt, cause: String },

    #[error("run cancelled")]
    Cancelled,

    #[error("cannot resume: {reason}")]
    Resume { reason: String },

    #[error("invalid progress from step `{step}`: {source}")]
    Progress {
        step: StepName,
        #[source]
        source: braid_core::Error,
    },

    #[error(transparent)]
    Store(#[from] braid_store::Error),

    /// The run's records could not be written (the cause says why).
    #[error("the run's records could not be stored")]
    Records(#[source] crate::persist::PersistError),

    #[error(transparent)]
    Core(#[from] braid_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, `error: cause: cause`, for records that keep
/// text (a run's `error`); a cause whose text its parent already shows is skipped.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

/// What a step function returns. Any error type converts into it with `?`.
pub type StepResult = std::result::Result<(), BoxError>;
/// An error from user code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
