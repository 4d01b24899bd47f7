use thiserror::Error;

/// Everything that can go wrong reading a store through the client. Every message names
/// what was looked for and, where it helps, what exists instead. Variants may be added:
/// decide with [`Error::is_not_found`] or match the variants you handle and keep a `_` arm.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The location holds no braid store; the client never creates one.
    #[error("no braid store at {location}: {reason}")]
    NoStore {
        /// The location as given.
        location: String,
        /// Why it holds no store: it does not exist, it is empty, ...
        reason: String,
    },

    /// A store call failed; `context` says what the client was reading.
    #[error("{context}: {source}")]
    Store {
        /// What the client was reading, e.g. "cannot list runs of `fanout`".
        context: String,
        /// The store's error.
        #[source]
        source: Box<braid_store::Error>,
    },

    /// A name, id or pathspec given to the client does not parse.
    #[error(transparent)]
    Invalid(Box<braid_core::Error>),

    /// No flow of that name is registered, and no run of it exists.
    #[error(
        "flow `{flow}` not found in the store at {location}; {}",
        known_list("flows in it", known, "it has no flows yet (run a flow first)")
    )]
    UnknownFlow {
        /// The name looked for.
        flow: String,
        /// Where the store is.
        location: String,
        /// The flows the store has.
        known: Vec<String>,
    },

    /// The flow exists but has never run (asked for its latest run).
    #[error("flow `{flow}` has no runs yet")]
    NoRuns {
        /// The flow's name.
        flow: String,
    },

    /// No launch plan of that name is registered.
    #[error(
        "launch plan `{plan}` not found in the store at {location}; {}",
        known_list(
            "plans in it",
            known,
            "it has no plans yet (register some with the flow binary's `plans apply FILE`)"
        )
    )]
    UnknownPlan {
        /// The name looked for.
        plan: String,
        /// Where the store is.
        location: String,
        /// The plans the store has.
        known: Vec<String>,
    },

    /// The flow has runs, none of them in the status asked for (e.g. no successful run).
    #[error("flow `{flow}` has no {status} run; {}", known_list("its latest runs", latest, "it has no runs yet"))]
    NoRunWithStatus {
        /// The flow's name.
        flow: String,
        /// The status asked for.
        status: braid_core::RunStatus,
        /// The newest few runs, each as `id (status)`.
        latest: Vec<String>,
    },

    /// The flow's stored spec does not parse or validate.
    #[error("the stored spec of flow `{flow}` cannot be used: {reason}")]
    Spec {
        /// The flow's name.
        flow: String,
        /// What is wrong with the spec (every problem, `; `-separated).
        reason: String,
    },

    /// No run of the flow has that id.
    #[error("run {flow}/{run} not found; {}", known_list(&format!("latest runs of `{flow}`"), latest, "the flow has no runs yet"))]
    UnknownRun {
        /// The flow's name.
        flow: String,
        /// The run id looked for.
        run: String,
        /// The newest few runs, each as `id (status)`.
        latest: Vec<String>,
    },

    /// The run has no step of that name, and the flow declares none.
    #[error("step `{step}` not found in run {run}; {}", known_list("its steps", known, "it has no tasks yet"))]
    UnknownStep {
        /// The run's pathspec.
        run: String,
        /// The step looked for.
        step: String,
        /// The steps the run has tasks in.
        known: Vec<String>,
    },

    /// `task.successors(step)` for a step the task's step does not go to.
    #[error(
        "step `{step}` does not follow task {task}; {}",
        known_list("its step goes to", successors, "its step goes to no other step")
    )]
    NotASuccessor {
        /// The task's pathspec.
        task: String,
        /// The step asked for.
        step: String,
        /// The steps its step goes to.
        successors: Vec<String>,
    },

    /// The flow declares the step, but the run has not reached it yet.
    #[error(
        "step `{step}` of run {run} has no tasks yet (the flow declares it; the run has not reached it); {}",
        known_list("steps so far", known, "no step has started")
    )]
    StepNotStarted {
        /// The run's pathspec.
        run: String,
        /// The step looked for.
        step: String,
        /// The steps the run has reached so far.
        known: Vec<String>,
    },

    /// No task of that id in the run or step searched (or it belongs to another step).
    #[error("task {task} not found in {within}; {hint}")]
    UnknownTask {
        /// The pathspec of the run or step searched.
        within: String,
        /// The task id looked for.
        task: String,
        /// What the ids are, or where the task is instead.
        hint: String,
    },

    /// No task of the step has that foreach index.
    #[error("no task with foreach index {index} in {step}; {hint}")]
    NoTaskAtIndex {
        /// The step's pathspec.
        step: String,
        /// The index looked for.
        index: u64,
        /// What indexes exist (the foreach's length), or that the step is not a foreach.
        hint: String,
    },

    /// Several tasks share the index (a nested foreach): one cannot be picked by it.
    #[error("foreach index {index} matches {} tasks of {step} (it sits in a nested foreach): {}; pick one by pathspec, or use `tasks_by_index` to get them all", candidates.len(), candidates.join(", "))]
    AmbiguousIndex {
        /// The step's pathspec.
        step: String,
        /// The index looked for.
        index: u64,
        /// Each candidate's pathspec with its foreach stack.
        candidates: Vec<String>,
    },

    /// A step's only task was asked for, but the step has none or several.
    #[error(
        "{step} has {count} tasks, not one; pick one by id ({step}/ID), by foreach index (`task_by_index`), or read a value from all of them with `artifact_values`"
    )]
    NotOneTask {
        /// The step's pathspec.
        step: String,
        /// How many tasks it has.
        count: usize,
    },

    /// The task sees no artifact of that name.
    #[error(
        "artifact `{name}` not found in task {task}; {}{note}",
        known_list("the task has", known, "the task has no artifacts")
    )]
    UnknownArtifact {
        /// The task's pathspec.
        task: String,
        /// The name looked for.
        name: String,
        /// The names the task sees.
        known: Vec<String>,
        /// Extra context, e.g. that the task has not finished yet.
        note: String,
    },

    /// A name read from a join (or a task after it) that exists only in the branches the
    /// join received: a join starts empty.
    #[error(
        "artifact `{name}` is not set in {task}: it exists only in the inputs of join task {join} ({branches} branch tasks, e.g. {example}). A join starts empty and sees each branch through its inputs: read one branch with `task.inputs()` (e.g. `join.inputs()?[0].data::<T>(\"{name}\")`) or all of them with `step.artifact_values::<T>(\"{name}\")`; to carry it past the join, take it from `inputs` or call `merge_artifacts()` in the join step"
    )]
    BranchOnly {
        /// The pathspec of the task read.
        task: String,
        /// The name looked for.
        name: String,
        /// The pathspec of the join whose inputs have it.
        join: String,
        /// How many of the join's inputs have it.
        branches: usize,
        /// The pathspec of one branch task that has it.
        example: String,
    },

    /// The task's foreach input item was asked for, but the task is not in a foreach.
    #[error("task {task} is not inside a foreach, so it has no input item (its foreach stack is empty)")]
    NotForeach {
        /// The task's pathspec.
        task: String,
    },

    /// A foreach level deeper than the task's nesting was asked for.
    #[error("task {task} has {depth} foreach level(s); level {level} does not exist (0 is the outermost)")]
    NoForeachLevel {
        /// The task's pathspec.
        task: String,
        /// The level asked for.
        level: usize,
        /// How many levels the task has.
        depth: usize,
    },

    /// The foreach input item cannot be found in the sequence the foreach went over.
    #[error("cannot read the input item of {task}: {reason}")]
    Input {
        /// The task's pathspec.
        task: String,
        /// What is missing: the artifact, its per-element data, the item at the index.
        reason: String,
    },

    /// A stored value does not decode as the type asked for (the message names both).
    #[error("cannot read artifact `{name}` of {task}: {source}")]
    Decode {
        /// The task's pathspec.
        task: String,
        /// The artifact's name.
        name: String,
        /// The decoder's error, naming the stored and the requested type.
        #[source]
        source: Box<braid_core::Error>,
    },

    /// A pathspec names an object of another depth than the call needs (a run for a task, ...).
    #[error("pathspec {pathspec} names a {found}, but a {expected} is needed ({form})")]
    WrongDepth {
        /// The pathspec as given.
        pathspec: String,
        /// What it names: `flow`, `run`, `step` or `task`.
        found: &'static str,
        /// What the call needs.
        expected: &'static str,
        /// The form a pathspec of the needed depth has.
        form: &'static str,
    },

    /// The small runtime that drives the async store calls could not start.
    #[error("cannot start the client's I/O runtime: {reason}")]
    Runtime {
        /// The operating system's reason.
        reason: String,
    },
}

impl Error {
    /// True when the error says something looked for does not exist (flow, run, step,
    /// task, index, artifact), as opposed to a bad input or a failing store.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::NoStore { .. }
                | Error::UnknownFlow { .. }
                | Error::NoRuns { .. }
                | Error::UnknownPlan { .. }
                | Error::NoRunWithStatus { .. }
                | Error::UnknownRun { .. }
                | Error::UnknownStep { .. }
                | Error::StepNotStarted { .. }
                | Error::UnknownTask { .. }
                | Error::NoTaskAtIndex { .. }
                | Error::UnknownArtifact { .. }
                | Error::BranchOnly { .. }
        ) || matches!(self, Error::Store { source, .. } if source.is_not_found())
    }

    pub(crate) fn store(context: impl Into<String>, source: braid_store::Error) -> Self {
        Error::Store { context: context.into(), source: Box::new(source) }
    }

    pub(crate) fn decode(task: impl Into<String>, name: impl Into<String>, source: braid_core::Error) -> Self {
        Error::Decode { task: task.into(), name: name.into(), source: Box::new(source) }
    }
}

/// `label: a, b, c` or the fallback when `items` is empty; long lists are cut.
fn known_list(label: &str, items: &[String], empty: &str) -> String {
    const SHOWN: usize = 20;
    if items.is_empty() {
        return empty.to_owned();
    }
    let mut s = format!("{label}: {}", items[..items.len().min(SHOWN)].join(", "));
    if items.len() > SHOWN {
        s.push_str(&format!(", … ({} in all)", items.len()));
    }
    s
}

impl From<braid_core::Error> for Error {
    fn from(e: braid_core::Error) -> Self {
        Error::Invalid(Box::new(e))
    }
}

/// What every fallible call of the client returns.
pub type Result<T, E = Error> = std::result::Result<T, E>;
