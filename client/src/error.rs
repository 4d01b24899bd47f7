use thiserror::Error;

/// Everything that can go wrong reading a store through the client. Every message names
/// what was looked for and, where it helps, what exists instead.
#[derive(Debug, Error)]
pub enum Error {
    /// The location holds no braid store; the client never creates one.
    #[error("no braid store at {location}: {reason}")]
    NoStore { location: String, reason: String },

    /// A store call failed; `context` says what the client was reading.
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: Box<braid_store::Error>,
    },

    /// A name, id or pathspec given to the client does not parse.
    #[error(transparent)]
    Invalid(Box<braid_core::Error>),

    #[error(
        "flow `{flow}` not found in the store at {location}; {}",
        known_list("flows in it", known, "it has no flows yet (run a flow first)")
    )]
    UnknownFlow { flow: String, location: String, known: Vec<String> },

    #[error("flow `{flow}` has no runs yet")]
    NoRuns { flow: String },

    #[error(
        "launch plan `{plan}` not found in the store at {location}; {}",
        known_list(
            "plans in it",
            known,
            "it has no plans yet (register some with the flow binary's `plans apply FILE`)"
        )
    )]
    UnknownPlan { plan: String, location: String, known: Vec<String> },

    #[error("flow `{flow}` has no {status} run; {}", known_list("its latest runs", latest, "it has no runs yet"))]
    NoRunWithStatus { flow: String, status: braid_core::RunStatus, latest: Vec<String> },

    /// The flow's stored spec does not parse or validate.
    #[error("the stored spec of flow `{flow}` cannot be used: {reason}")]
    Spec { flow: String, reason: String },

    #[error("run {flow}/{run} not found; {}", known_list(&format!("latest runs of `{flow}`"), latest, "the flow has no runs yet"))]
    UnknownRun {
        flow: String,
        run: String,
        /// The newest few runs, each as `id (status)`.
        latest: Vec<String>,
    },

    #[error("step `{step}` not found in run {run}; {}", known_list("its steps", known, "it has no tasks yet"))]
    UnknownStep {
        /// The run's pathspec.
        run: String,
        step: String,
        known: Vec<String>,
    },

    #[error(
        "step `{step}` of run {run} has no tasks yet (the flow declares it; the run has not reached it); {}",
        known_list("steps so far", known, "no step has started")
    )]
    StepNotStarted { run: String, step: String, known: Vec<String> },

    #[error("task {task} not found in {within}; {hint}")]
    UnknownTask {
        /// The pathspec of the run or step searched.
        within: String,
        task: String,
        hint: String,
    },

    #[error("no task with foreach index {index} in {step}; {hint}")]
    NoTaskAtIndex { step: String, index: u64, hint: String },

    #[error("foreach index {index} matches {} tasks of {step} (it sits in a nested foreach): {}; pick one by pathspec, or use `tasks_by_index` to get them all", candidates.len(), candidates.join(", "))]
    AmbiguousIndex {
        step: String,
        index: u64,
        /// Each candidate's pathspec with its foreach stack.
        candidates: Vec<String>,
    },

    #[error(
        "{step} has {count} tasks, not one; pick one by id ({step}/ID), by foreach index (`task_by_index`), or read a value from all of them with `artifact_values`"
    )]
    NotOneTask { step: String, count: usize },

    #[error(
        "artifact `{name}` not found in task {task}; {}{note}",
        known_list("the task has", known, "the task has no artifacts")
    )]
    UnknownArtifact {
        task: String,
        name: String,
        known: Vec<String>,
        /// Extra context, e.g. that the task has not finished yet.
        note: String,
    },

    /// A name read from a join (or a task after it) that exists only in the branches the
    /// join received: a join starts empty.
    #[error(
        "artifact `{name}` is not set in {task}: it exists only in the inputs of join task {join} ({branches} branch tasks, e.g. {example}). A join starts empty and sees each branch through its inputs: read one branch with `task.inputs()` (e.g. `join.inputs()?[0].data::<T>(\"{name}\")`) or all of them with `step.artifact_values::<T>(\"{name}\")`; to carry it past the join, take it from `inputs` or call `merge_artifacts()` in the join step"
    )]
    BranchOnly { task: String, name: String, join: String, branches: usize, example: String },

    #[error("task {task} is not inside a foreach, so it has no input item (its foreach stack is empty)")]
    NotForeach { task: String },

    #[error("task {task} has {depth} foreach level(s); level {level} does not exist (0 is the outermost)")]
    NoForeachLevel { task: String, level: usize, depth: usize },

    #[error("cannot read the input item of {task}: {reason}")]
    Input { task: String, reason: String },

    #[error("cannot read artifact `{name}` of {task}: {source}")]
    Decode {
        task: String,
        name: String,
        #[source]
        source: Box<braid_core::Error>,
    },

    #[error("pathspec {pathspec} names a {found}, but a {expected} is needed ({form})")]
    WrongDepth { pathspec: String, found: &'static str, expected: &'static str, form: &'static str },

    #[error("cannot start the client's I/O runtime: {reason}")]
    Runtime { reason: String },
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

pub type Result<T, E = Error> = std::result::Result<T, E>;
