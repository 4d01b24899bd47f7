//! [`Client`]: the read-only entry point, and how a location becomes an open store.

use std::path::Path;

use braid_core::{FlowName, Pathspec};
use braid_store::{FlowRecord, MEMORY_LOCATION, RunQuery, Store, StoreLocation};

use crate::error::{Error, Result};
use crate::flow::Flow;
use crate::object::{Object, wrong_depth};
use crate::rt;
use crate::run::Run;
use crate::step::Step;
use crate::task::Task;

/// A read-only view of a store. Cheap to clone; every handle it gives out holds a clone.
///
/// Nothing reached through a `Client` writes: it keeps its store to itself, and every
/// handle it gives out ([`Flow`], [`Run`], [`Step`], [`Task`], [`Artifact`](crate::Artifact))
/// only reads. Tags, the one thing a reader may want to change, are written through a
/// [`TagWriter`](crate::TagWriter), which says so in its name.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let store = braid_client::Store::memory();
/// # braid_client::fixtures::fanout(&store, 3)?;
/// let client = braid_client::Client::from_store(store);
/// let run = client.run("fanout/latest")?;
/// assert_eq!(run.step("work")?.task_count(), 3);
/// # Ok(())
/// # }
/// ```
///
/// A client hands out no store to write through:
///
/// ```compile_fail
/// let client = braid_client::Client::from_store(braid_client::Store::memory());
/// let records = &client.store().records; // error: no method `store` on `Client`
/// ```
///
/// ```compile_fail
/// let client = braid_client::Client::from_store(braid_client::Store::memory());
/// let records = &client.store.records; // error: field `store` of `Client` is private
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    store: Store,
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
        open_store(location, blobs).map(Client::from_store)
    }

    /// Opens the store `BRAID_STORE` names, else `./.braid`.
    pub fn open_default() -> Result<Client> {
        Self::open(&Store::resolve_location(None))
    }

    /// A client over a store already open (e.g. the one a run writes to). The client
    /// only reads it; whoever passed it in may still write through their own clone.
    pub fn from_store(store: Store) -> Client {
        Client { store }
    }

    /// The store, for the handles of this crate (never handed out: a client only reads).
    pub(crate) fn store(&self) -> &Store {
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

/// Opens the store at `location` as it is, for a tool that writes as well as reads (the
/// `braid` command's `tag`, `gc` and `plan activate|deactivate|launch`): the same checks
/// as [`Client::open_with_blobs`], so a location that holds no store is an error and no
/// store is ever created. The [`Store`] it returns can write; read through
/// [`Client::from_store`] over a clone of it, and write tags with
/// [`TagWriter::from_store`](crate::TagWriter::from_store).
pub fn open_store(location: &str, blobs: Option<&str>) -> Result<Store> {
    let parsed = if location.is_empty() { None } else { Some(StoreLocation::parse(location)) };
    let remote = matches!(parsed, Some(Ok(StoreLocation::Postgres(_))));
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
        } else if !braid_store::fs::is_store(root) {
            Some(format!("{} is not a braid store (it holds no store's format marker)", root.display()))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(Error::NoStore { location: location.to_owned(), reason });
        }
    }
    // A store that keeps its own blobs ignores BRAID_BLOBS (set for another store).
    let blobs = if remote { blobs } else { None };
    rt::block_on(Store::connect(location, blobs))?
        .map_err(|e| Error::store(format!("cannot open the store at {}", shown(location)), e))
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
