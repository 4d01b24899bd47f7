use braid_core::{ArtifactName, Attempt, StepName, TaskId};
use thiserror::Error;

/// Everything that can go wrong building or running a flow. Messages name the step,
/// task and artifact concerned and, where there is one, the fix. Decide on the variant,
/// never on the message; variants may be added, so a `match` needs a `_` arm.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// `FlowBuilder::build` found the graph or a step's policy invalid.
    #[error("flow `{flow}` is not valid:\n{problems}")]
    InvalidFlow {
        /// The flow's name as declared.
        flow: String,
        /// Every problem, one indented line each.
        problems: String,
    },

    /// `Ctx::param` could not give a parameter's value as the type asked for.
    #[error("parameter `{param}`: {reason}")]
    Param {
        /// The parameter's name.
        param: String,
        /// What did not fit.
        reason: String,
    },

    /// Parameter values given to a run that do not fit the flow: every problem at once.
    #[error(transparent)]
    Params(#[from] braid_dag::ParamErrors),

    /// A step read an artifact that neither it nor any ancestor set.
    #[error("step `{step}` reads artifact `{name}`, which does not exist; {existing}")]
    ArtifactMissing {
        /// The step that read it.
        step: StepName,
        /// The name it read.
        name: String,
        /// The names it could have read, as a phrase.
        existing: String,
    },

    /// A join read, as its own, an artifact that only its branches set.
    #[error(
        "join step `{step}` reads artifact `{name}`, which exists only inside the branches it joins ({branches} of them have it); a join starts empty: read it per branch with `ctx.inputs()`, or take it with `ctx.merge_artifacts(..)` if all branches agree"
    )]
    BranchOnly {
        /// The join.
        step: StepName,
        /// The artifact it read.
        name: ArtifactName,
        /// How many of its branches set it.
        branches: usize,
    },

    /// A `Ctx` call made in a step where it means nothing (`inputs()` outside a join,
    /// `input()` outside a foreach).
    #[error("step `{step}`: {what} is only available in {where_}")]
    WrongPlace {
        /// The step that called it.
        step: StepName,
        /// The call, e.g. `inputs()`.
        what: &'static str,
        /// Where it is available, e.g. `a join step`.
        where_: &'static str,
    },

    /// `Ctx::merge_artifacts` found branches that disagree, or a bad include/exclude list.
    #[error("merge_artifacts in join `{step}` failed, nothing was set: {reason}")]
    Merge {
        /// The join.
        step: StepName,
        /// What went wrong, naming the artifacts and branches.
        reason: String,
    },

    /// An artifact value could not be encoded or decoded (e.g. read as another type).
    #[error("step `{step}`, artifact `{name}`: {source}")]
    Codec {
        /// The step that set or read it.
        step: StepName,
        /// The artifact.
        name: String,
        /// The codec's error.
        #[source]
        source: braid_core::Error,
    },

    /// A foreach's artifact is not set, or is not a sequence.
    #[error("foreach step `{step}` over `{over}`: {reason}")]
    Foreach {
        /// The step the foreach follows.
        step: StepName,
        /// The artifact it fans out over.
        over: ArtifactName,
        /// What is wrong with it and how to fix it.
        reason: String,
    },

    /// A foreach would fan out wider than the run's `max_num_splits`.
    #[error(
        "foreach step `{step}` fans out over {len} items, more than max_num_splits ({max}); raise it with `--max-num-splits {len}` or `Flow::max_num_splits`"
    )]
    TooManySplits {
        /// The step the foreach follows.
        step: StepName,
        /// How many items it has.
        len: u64,
        /// The bound in force.
        max: u64,
    },

    /// A switch's value is not set or names no case.
    #[error("switch step `{step}` on `{on}`: {reason}")]
    Switch {
        /// The switching step.
        step: StepName,
        /// The artifact whose value picks the case.
        on: ArtifactName,
        /// What is wrong, with the cases there are.
        reason: String,
    },

    /// A looping switch looped back more often than its `max_iterations`.
    #[error(
        "step `{step}` looped {max} times without taking its exit (max_iterations = {max}); fix its exit condition or raise it with `.max_iterations(n)`"
    )]
    LoopLimit {
        /// The step that loops.
        step: StepName,
        /// Its bound.
        max: u32,
    },

    /// A task failed its last attempt (error, panic, timeout, lost lease) and caught
    /// nothing, so the run fails.
    #[error("step `{step}` task {task} failed on attempt {attempt}: {cause}")]
    TaskFailed {
        /// The task's step.
        step: StepName,
        /// The task.
        task: TaskId,
        /// Its last attempt.
        attempt: Attempt,
        /// The failure as `kind: message`.
        cause: String,
    },

    /// The run was cancelled (its `CancellationToken`, e.g. Ctrl-C).
    #[error("run cancelled")]
    Cancelled,

    /// A resume could not start: no such run, a live run without `force`, a bad
    /// `from` step, or parameters given to a resumed run.
    #[error("cannot resume: {reason}")]
    Resume {
        /// Why, and what to do instead.
        reason: String,
    },

    /// A step reported progress that is not valid (a percent outside 0 to 100, ...).
    #[error("invalid progress from step `{step}`: {source}")]
    Progress {
        /// The step that reported it.
        step: StepName,
        /// What is wrong with it.
        #[source]
        source: braid_core::Error,
    },

    /// A step tagged its run with a tag that is not valid.
    #[error("step `{step}` cannot tag its run: {source}")]
    Tag {
        /// The step that asked.
        step: StepName,
        /// What is wrong with the tag.
        #[source]
        source: braid_core::Error,
    },

    /// A worker, or a run on workers, cannot start as asked.
    #[error("workers: {reason}")]
    Worker {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The store failed (reading or writing a run's records or blobs).
    #[error(transparent)]
    Store(#[from] braid_store::Error),

    /// The run's records could not be written (the cause says why).
    #[error("the run's records could not be stored")]
    Records(#[source] crate::persist::PersistError),

    /// A name or value that `braid_core` refuses (an invalid step or artifact name, ...).
    #[error(transparent)]
    Core(#[from] braid_core::Error),
}

/// The result of the runtime's calls.
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
