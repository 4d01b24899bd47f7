//! `braidflow-client`: read everything braid runs produce, from a script, a notebook or a tool.
//!
//! The client is read-only and blocking. It walks `Flow -> Run -> Step -> Task ->
//! Artifact`, or jumps anywhere by pathspec (`flow/run/step/task`, the run may be
//! `latest`). Every task is readable — foreach branches included — typed with
//! [`Task::data`] or as a JSON preview with [`Task::preview`], while the run is still
//! going too: a read sees the run as it is now and never blocks the writer.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let store = braid_store::Store::memory();
//! # braid_client::fixtures::fanout(&store, 50)?;
//! use braid_client::Client;
//!
//! // `Client::open(".braid")` or `Client::open_default()` for a store on disk.
//! let client = Client::from_store(store);
//! let run = client.flow("fanout")?.latest_run()?;
//! println!("{} {} {:?}", run.pathspec(), run.status(), run.params());
//!
//! // One foreach branch, by its index: typed, or as JSON.
//! let work = run.step("work")?;
//! let task = work.task_by_index(7)?;
//! assert_eq!(task.data::<u64>("out")?, 49);
//! assert_eq!(task.input::<u64>()?, 7);
//! assert_eq!(task.preview("out")?, serde_json::json!(49));
//!
//! // Every branch at once, in index order.
//! let outs: Vec<(u64, u64)> = work.artifact_values("out")?;
//! assert_eq!(outs.len(), 50);
//! assert_eq!(outs[3], (3, 9));
//!
//! // The join's own result; a name that exists only in the branches says so.
//! let join = client.task_at("fanout/latest/join")?;
//! assert_eq!(join.data::<u64>("total")?, 40425);
//! let err = join.data::<u64>("out").unwrap_err();
//! assert!(err.to_string().contains("exists only in the inputs"));
//! assert!(join.input_only_names()?.iter().any(|n| n == "out"));
//! # Ok(())
//! # }
//! ```
//!
//! Errors name what was looked for and what exists: an unknown run lists the latest
//! runs, an unknown artifact the names the task has, a wrong type the stored and the
//! requested type.

mod artifact;
mod error;
mod flow;
mod plan;
mod rt;
mod run;
mod step;
mod task;

#[cfg(feature = "fixtures")]
pub mod fixtures;

use std::path::Path;

pub use artifact::Artifact;
pub use braid_core::{
    ArtifactName, Attempt, FlowName, Pathspec, PathspecDepth, Progress, RunId, RunRef, RunStatus, StepName, Tag,
    TaskId, TaskStatus, Timestamp,
};
pub use braid_store::{
    AttemptRecord, ForeachFrame, LaunchKind, LaunchQuery, LaunchRecord, LaunchState, LogLine, Page, PlanQuery,
    PlanRecord, PlanVersion, RunQuery, RunRecord, SchedulerRecord, Store, TaskError, TaskRecord,
};
pub use error::{Error, Result};
pub use flow::{Flow, RunFilter};
pub use run::Run;
pub use step::{ArtifactEntry, Step, TaskState};
pub use task::Task;

use braid_store::{FlowRecord, MEMORY_LOCATION};

/// A read-only view of a store. Cheap to clone; every handle it gives out holds a clone.
#[derive(Debug, Clone)]
pub struct Client {
    store: Store,
}

/// What a pathspec names, by its depth.
#[derive(Debug, Clone)]
pub enum Object {
    Flow(Flow),
    Run(Run),
    Step(Step),
    Task(Task),
}

impl Client {
    /// Opens the store at `location` (a directory, `memory:`, or `postgres://…`). A
    /// directory that holds no braid store is an error: the client never creates one.
    /// A PostgreSQL store's blobs are where `BRAID_BLOBS` says (`s3://bucket/prefix`,
    /// with endpoint and credentials from the `AWS_*` environment, or `file:///path`);
    /// to give them explicitly use [`Client::open_with_blobs`].
    pub fn open(location: &str) -> Result<Client> {
        Self::open_with_blobs(location, Store::resolve_blobs(None).as_deref())
    }

    /// Opens the store at `location` with its blobs at `blobs`: for a `postgres://`
    /// store, `s3://bucket/prefix` or `file:///path`; `None` for a store that keeps its
    /// own (a directory, `memory:`).
    ///
    /// ```no_run
    /// let client = braid_client::Client::open_with_blobs(
    ///     "postgres://braid@db.internal:5432/braid",
    ///     Some("s3://team-runs/braid"),
    /// )?;
    /// # Ok::<(), braid_client::Error>(())
    /// ```
    pub fn open_with_blobs(location: &str, blobs: Option<&str>) -> Result<Client> {
        let parsed = if location.is_empty() { None } else { Some(braid_store::StoreLocation::parse(location)) };
        let remote = matches!(parsed, Some(Ok(braid_store::StoreLocation::Postgres(_))));
        if location != MEMORY_LOCATION && !remote {
            // A location no backend of this build serves (a URL scheme, ...) says so.
            if let Some(Err(e)) = parsed {
                return Err(Error::store(format!("cannot open the store at {location}"), e));
            }
            let root = Path::new(location);
            let reason = if location.is_empty() {
                Some("the location is empty; give the store's directory".to_owned())
            } else if !root.exists() {
                Some(format!("{} does not exist", root.display()))
            } else if !root.join("FORMAT").is_file() {
                Some(format!("{} has no FORMAT file, so it is not a braid store", root.display()))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(Error::NoStore { location: location.to_owned(), reason });
            }
        }
        // A store that keeps its own blobs ignores BRAID_BLOBS (set for another store).
        let blobs = if remote { blobs } else { None };
        let store = rt::block_on(Store::connect(location, blobs))?
            .map_err(|e| Error::store(format!("cannot open the store at {}", shown(location)), e))?;
        Ok(Client { store })
    }

    /// Opens the store `BRAID_STORE` names, else `./.braid`.
    pub fn open_default() -> Result<Client> {
        Self::open(&Store::resolve_location(None))
    }

    /// A client over a store already open (e.g. the one a run writes to).
    pub fn from_store(store: Store) -> Client {
        Client { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where the store lives, as given when it was opened.
    pub fn location(&self) -> &str {
        self.store.location()
    }

    /// Every flow registered in the store, by name.
    pub fn flows(&self) -> Result<Vec<Flow>> {
        let records = self.list_flow_records()?;
        Ok(records.into_iter().map(|r| Flow::new(self.clone(), r.name.clone(), Some(r))).collect())
    }

    /// The flow `name`; an unknown name lists the flows that exist.
    pub fn flow(&self, name: &str) -> Result<Flow> {
        let name = FlowName::new(name)?;
        self.flow_by_name(&name)
    }

    /// Whatever `pathspec` names: `flow`, `flow/run`, `flow/run/step` or
    /// `flow/run/step/task`, where the run may be `latest`.
    pub fn get(&self, pathspec: &str) -> Result<Object> {
        self.resolve(&Pathspec::parse(pathspec)?)
    }

    /// Like [`Client::get`], for a parsed pathspec.
    pub fn resolve(&self, spec: &Pathspec) -> Result<Object> {
        let flow = self.flow_by_name(&spec.flow)?;
        let Some(run_ref) = spec.run else {
            return Ok(Object::Flow(flow));
        };
        let run = flow.run_ref(run_ref)?;
        let Some(step) = &spec.step else {
            return Ok(Object::Run(run));
        };
        match spec.task {
            None => Ok(Object::Step(run.step_by_name(step)?)),
            Some(task) => Ok(Object::Task(run.task_in_step(step, task)?)),
        }
    }

    /// The run `flow/run` (the run may be `latest`).
    pub fn run(&self, pathspec: &str) -> Result<Run> {
        self.get(pathspec)?.into_run(pathspec)
    }

    /// The step `flow/run/step`.
    pub fn step(&self, pathspec: &str) -> Result<Step> {
        self.get(pathspec)?.into_step(pathspec)
    }

    /// The task `flow/run/step/task` (the last part is the task id).
    pub fn task(&self, pathspec: &str) -> Result<Task> {
        self.get(pathspec)?.into_task(pathspec)
    }

    /// A task by `flow/run/step/task`, or by `flow/run/step` when that step has exactly
    /// one task (e.g. `fanout/latest/join`).
    pub fn task_at(&self, pathspec: &str) -> Result<Task> {
        match self.get(pathspec)? {
            Object::Task(t) => Ok(t),
            Object::Step(s) => s.single_task(),
            other => Err(wrong_depth(pathspec, other.depth(), "task")),
        }
    }

    pub(crate) fn list_flow_records(&self) -> Result<Vec<FlowRecord>> {
        let records = self.store.records.clone();
        rt::call(|| "cannot list flows".to_owned(), async move { records.list_flows().await })
    }

    pub(crate) fn flow_by_name(&self, name: &FlowName) -> Result<Flow> {
        let records = &self.store.records;
        let record = rt::call(|| format!("cannot read flow `{name}`"), records.get_flow(name))?;
        if record.is_some() {
            return Ok(Flow::new(self.clone(), name.clone(), record));
        }
        // A flow whose runs exist but whose spec was never registered is still a flow.
        let query = RunQuery { limit: 1, ..RunQuery::default() };
        let runs = rt::call(|| format!("cannot list runs of `{name}`"), records.list_runs(name, &query))?;
        if !runs.items.is_empty() {
            return Ok(Flow::new(self.clone(), name.clone(), None));
        }
        let known =
            self.list_flow_records().map(|fs| fs.into_iter().map(|f| f.name.to_string()).collect()).unwrap_or_default();
        Err(Error::UnknownFlow { flow: name.to_string(), location: self.location().to_owned(), known })
    }
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

    pub fn into_flow(self, pathspec: &str) -> Result<Flow> {
        match self {
            Object::Flow(f) => Ok(f),
            other => Err(wrong_depth(pathspec, other.depth(), "flow")),
        }
    }

    pub fn into_run(self, pathspec: &str) -> Result<Run> {
        match self {
            Object::Run(r) => Ok(r),
            other => Err(wrong_depth(pathspec, other.depth(), "run")),
        }
    }

    pub fn into_step(self, pathspec: &str) -> Result<Step> {
        match self {
            Object::Step(s) => Ok(s),
            other => Err(wrong_depth(pathspec, other.depth(), "step")),
        }
    }

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

pub(crate) fn wrong_depth(pathspec: &str, found: PathspecDepth, expected: &'static str) -> Error {
    let form = match expected {
        "flow" => "flow",
        "run" => "flow/run, the run may be `latest`",
        "step" => "flow/run/step",
        _ => "flow/run/step/task, the task part being a task id",
    };
    Error::WrongDepth { pathspec: pathspec.to_owned(), found: depth_name(found), expected, form }
}

/// A location as messages show it: a password in it hidden.
fn shown(location: &str) -> String {
    match location.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
        Some((scheme, (auth, host))) if auth.contains(':') => {
            format!("{scheme}://{}:***@{host}", auth.split(':').next().unwrap_or_default())
        }
        _ => location.to_owned(),
    }
}
