//! The executor: runs a flow's tasks in-process on tokio, at most `max_workers` at once.
//!
//! Split by role, as cargo-nextest's runner is: one [`Dispatcher`](dispatcher::Dispatcher)
//! per run owns all run state (ready queue, join barriers), so routing needs no locks
//! (`dispatcher.rs`); each task runs as its own tokio task, executed by `task.rs`, and
//! hands back an outcome; what passes between the two is in `messages.rs`. Task ids are
//! assigned in creation order, so foreach branches get consecutive ids in index order.

mod adopt;
mod dispatcher;
mod isolate;
mod messages;
mod remote;
mod task;
mod worker;

pub use isolate::{is_isolated_task, serve_isolated_task};
pub use remote::{CLAIM_LEASE, DEFAULT_QUEUE, MAX_DISPATCHES, valid_queue_name};
pub use worker::{WorkerOptions, WorkerReport, WorkerStop, run_worker};

/// Where a run's step bodies execute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Execution {
    /// In this process, on tokio (isolated steps in child processes of it).
    #[default]
    InProcess,
    /// On workers (`myflow worker`) that claim the run's tasks from the store's queue
    /// (PostgreSQL); this process keeps the run's routing, under the run's lease, and a
    /// worker takes the run over if this process dies.
    Workers {
        /// The queue of the run's tasks whose step names none.
        queue: String,
    },
}

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_core::{FlowName, Progress, RunId, RunStatus, StepName, Tag, TaskStatus, Timestamp};
use braid_store::{FlowRecord, RunLease, RunRecord, Store, TaskQuery, TaskRecord};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::flow::Flow;
use crate::persist::Persister;

use dispatcher::Dispatcher;

/// How to start a run. Fields may be added: start from `RunOptions::default()` and set
/// the ones you need (`RunOptions { max_workers: 4, ..Default::default() }`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Parameter values as given on the command line (`name`, `text`), parsed against
    /// the declared types.
    pub params: Vec<(String, String)>,
    /// Parameter values already typed (from a launch plan).
    pub param_values: BTreeMap<String, serde_json::Value>,
    /// Tags the run record starts with.
    pub tags: Vec<Tag>,
    /// Tasks running at once (default: the number of cores).
    pub max_workers: usize,
    /// Bound on a foreach's width, overriding the flow's.
    pub max_num_splits: Option<u64>,
    /// Resume this run instead of starting from scratch.
    pub resume: Option<Resume>,
    /// A readable name for the run (launch plans set one).
    pub name: Option<String>,
    /// Facts recorded with the run (plan, version, tick, ...).
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// Cancelling it stops the run (Ctrl-C).
    pub cancel: CancellationToken,
    /// Read `BRAID_PARAM_<NAME>` environment variables.
    pub env_params: bool,
    /// Where `env_params` reads the variables from: `None` (the default) reads the
    /// process environment; a map (a snapshot taken at start-up, a test's values) is
    /// read instead, so nothing has to change the environment of a running process.
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Where to count tasks, progress, leases and retries (served by `--metrics-addr`).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// How long the run's lease lasts without a renewal (see [`crate::RUN_LEASE`]).
    pub run_lease: Duration,
    /// Use this run id (a launch records it before the run exists). If a run with this id
    /// exists and never started (`pending`: its creator died before executing it), it is
    /// taken over; any other existing run is a conflict.
    pub run_id: Option<RunId>,
    /// A join of at most this many branches holds each branch's artifacts in memory until
    /// it runs (the fastest reads); a wider one keeps only their names and reads their
    /// values from the store, a window of branches at a time, in index order, so its
    /// memory does not grow with every artifact of every branch (default
    /// [`crate::JOIN_INPUTS_IN_MEMORY`]).
    pub join_inputs_in_memory: usize,
    /// Where the step bodies run: in this process (the default) or on workers.
    pub execution: Execution,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            params: Vec::new(),
            param_values: BTreeMap::new(),
            tags: Vec::new(),
            max_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_num_splits: None,
            resume: None,
            name: None,
            meta: serde_json::Map::new(),
            cancel: CancellationToken::new(),
            env_params: true,
            env_vars: None,
            metrics: None,
            run_lease: crate::lease::RUN_LEASE,
            run_id: None,
            join_inputs_in_memory: JOIN_INPUTS_IN_MEMORY,
            execution: Execution::InProcess,
        }
    }
}

/// The default of [`RunOptions::join_inputs_in_memory`]: up to 10,000 branches a join's
/// inputs stay in memory (a few MiB); past that, the store holds them.
pub const JOIN_INPUTS_IN_MEMORY: usize = 10_000;

/// Which run to resume, and from which step to re-run everything.
#[derive(Debug, Clone)]
pub struct Resume {
    /// `None`: the latest run of the flow.
    pub origin: Option<RunId>,
    /// Re-run this step and everything after it even if it succeeded.
    pub from: Option<StepName>,
    /// Resume even a run that is still live (`pending` or `running` with a lease that
    /// has not run out): both then go on.
    pub force: bool,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The flow that ran.
    pub flow: FlowName,
    /// The run's id.
    pub run_id: RunId,
    /// How it ended: succeeded, failed or cancelled.
    pub status: RunStatus,
    /// Why it did not succeed: the error and its causes on one line.
    pub error: Option<String>,
    /// Tasks executed in this run (attempted at least once).
    pub executed: u64,
    /// Tasks reused from the origin run of a resume.
    pub reused: u64,
    /// Wall-clock time from the start of `execute` to the run's end.
    pub elapsed: Duration,
}

/// Counts per step, for live views.
#[derive(Debug, Default, Clone)]
pub struct StepCounts {
    /// Tasks of the step that succeeded (or were reused).
    pub done: u64,
    /// Tasks of the step started and not yet ended.
    pub running: u64,
    /// Tasks of the step that failed their last attempt.
    pub failed: u64,
}

/// What a live view can observe while a run goes.
#[derive(Debug, Default)]
pub struct RunProgress {
    /// Counts by step name; [`RunProgress::snapshot`] copies them.
    pub steps: Mutex<BTreeMap<String, StepCounts>>,
}

impl RunProgress {
    fn update(&self, step: &StepName, f: impl FnOnce(&mut StepCounts)) {
        let mut m = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        f(m.entry(step.to_string()).or_default());
    }

    /// The counts by step name now.
    pub fn snapshot(&self) -> BTreeMap<String, StepCounts> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What every task of a run shares.
pub(crate) struct RunShared {
    pub(crate) flow: Arc<Flow>,
    pub(crate) store: Store,
    pub(crate) run_id: RunId,
    pub(crate) params: BTreeMap<String, serde_json::Value>,
    pub(crate) persister: Persister,
    pub(crate) cancel: CancellationToken,
    pub(crate) progress: Arc<RunProgress>,
    pub(crate) origin: Option<Origin>,
    pub(crate) max_num_splits: u64,
    pub(crate) join_inputs_in_memory: usize,
    /// One permit per worker: held while a step's code runs, so at most `max_workers`
    /// run at once while many more tasks are in flight (starting, storing results).
    pub(crate) workers: Arc<tokio::sync::Semaphore>,
    pub(crate) metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Renews the run's lease while this process holds the run.
    pub(crate) lease: Mutex<Option<crate::lease::LeaseKeeper>>,
    pub(crate) holder: String,
    pub(crate) run_lease: Duration,
    /// The last task id given out. Ids are handed out by whoever decides a task: the
    /// dispatcher, or a task running its linear successor itself (`dispatcher::run_chain`).
    pub(crate) last_id: std::sync::atomic::AtomicU64,
    /// For a run on workers: where its attempts go, and their replies come from.
    pub(crate) remote: Option<Arc<remote::Remote>>,
}

impl RunShared {
    /// Reserves `n` consecutive task ids and returns the first.
    pub(crate) fn reserve_ids(&self, n: u64) -> u64 {
        self.last_id.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + 1
    }
}

/// The run being resumed: its successful tasks by identity, and the last progress
/// report of those that did not succeed (for `ctx.last_progress()`).
pub(crate) struct Origin {
    pub(super) run: RunId,
    pub(super) from: Option<StepName>,
    pub(super) tasks: HashMap<TaskIdentity, TaskRecord>,
    pub(super) unfinished: HashMap<TaskIdentity, Progress>,
}

/// The user a run is recorded as launched by: `BRAID_USER` if set (a service account,
/// CI), else the login name from the environment (`USER`, `LOGNAME`, `USERNAME`), else
/// `unknown`.
pub(crate) fn current_user() -> String {
    ["BRAID_USER", "USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// What makes a task the "same" task in two runs of one flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct TaskIdentity {
    pub(super) step: StepName,
    pub(super) path: Vec<u64>,
    pub(super) iteration: u32,
}

/// A run whose record exists (its id is known) and that is ready to execute.
pub struct PreparedRun {
    shared: Arc<RunShared>,
    max_workers: usize,
}

impl std::fmt::Debug for PreparedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedRun({}/{})", self.shared.flow.name(), self.shared.run_id)
    }
}

impl PreparedRun {
    /// Registers the flow, resolves parameters and creates the run record, so the run
    /// id is known before any step runs.
    pub async fn prepare(flow: Arc<Flow>, store: Store, opts: RunOptions) -> Result<PreparedRun> {
        let run_id = opts.run_id.unwrap_or_else(RunId::generate);
        let mut params = crate::params::resolve_params_with(&flow, &opts, Vec::new())?;
        let mut origin = None;
        let mut origin_run = None;
        let mut origin_tags = std::collections::BTreeSet::new();
        if let Some(resume) = &opts.resume {
            let o = load_origin(&flow, &store, resume).await?;
            if !opts.params.is_empty() || !opts.param_values.is_empty() {
                return Err(Error::Resume {
                    reason: format!("a resumed run takes its parameters from run {}; drop --param", o.run),
                });
            }
            let rec = store
                .records
                .get_run(flow.name(), o.run)
                .await?
                .ok_or_else(|| Error::Resume { reason: format!("run {}/{} not found", flow.name(), o.run) })?;
            params = rec.params.clone();
            origin_tags = rec.tags.clone();
            origin_run = Some(o.run);
            origin = Some(o);
        }
        let queue = match &opts.execution {
            Execution::InProcess => None,
            Execution::Workers { queue: name } => {
                let Some(q) = store.queue().cloned() else {
                    return Err(Error::Worker {
                        reason: format!(
                            "`--on workers` needs a store with a task queue, and {} has none: run workers and the \
                             flow on PostgreSQL (--store postgres://...), or run in this process (--on process)",
                            store.location()
                        ),
                    });
                };
                if !remote::valid_queue_name(name) {
                    return Err(Error::Worker {
                        reason: format!("queue {name:?}: a queue name is 1 to 64 ASCII letters, digits, `-` or `_`"),
                    });
                }
                Some((q, name.clone()))
            }
        };
        let spec = serde_json::to_value(flow.graph.spec())
            .map_err(|e| Error::InvalidFlow { flow: flow.name().to_string(), problems: e.to_string() })?;
        store.records.put_flow(FlowRecord { name: flow.name().clone(), spec, updated_at: Timestamp::now() }).await?;
        let mut run = RunRecord::new(flow.name().clone(), run_id);
        run.params = params.clone();
        run.tags = opts.tags.iter().cloned().collect();
        // A resumed run carries its origin's tags (as of now), plus any given.
        run.tags.extend(origin_tags);
        run.origin_run = origin_run;
        run.name = opts.name.clone();
        run.meta = opts.meta.clone();
        // Who ran it, unless the caller said: with a shared store, several people's runs
        // live side by side (`braid runs --user`).
        run.meta.entry("user").or_insert_with(|| serde_json::Value::String(current_user()));
        run.meta.entry("host").or_insert_with(|| serde_json::Value::String(braid_store::host_name()));
        if let Some((_, name)) = &queue {
            // Whoever adopts the run if this process dies reads these.
            run.meta.insert("on".into(), serde_json::Value::String("workers".into()));
            run.meta.insert("queue".into(), serde_json::Value::String(name.clone()));
        }
        let holder = braid_store::process_holder("run");
        run.lease = Some(RunLease::new(holder.clone(), opts.run_lease));
        match store.records.create_run(&run).await {
            Ok(()) => {}
            Err(e) if e.is_conflict() && opts.run_id.is_some() => take_over_pending(&store, run).await?,
            Err(e) => return Err(e.into()),
        }
        let keeper = crate::lease::LeaseKeeper::start(
            store.clone(),
            flow.name().clone(),
            run_id,
            holder.clone(),
            opts.run_lease,
        );
        let max_num_splits = opts.max_num_splits.unwrap_or(flow.max_num_splits);
        let shared = Arc::new(RunShared {
            persister: Persister::start(store.clone()),
            flow,
            store,
            run_id,
            params,
            cancel: opts.cancel.clone(),
            progress: Arc::new(RunProgress::default()),
            origin,
            max_num_splits,
            join_inputs_in_memory: opts.join_inputs_in_memory,
            workers: Arc::new(tokio::sync::Semaphore::new(opts.max_workers.max(1))),
            metrics: opts.metrics.clone(),
            lease: Mutex::new(Some(keeper)),
            holder,
            run_lease: opts.run_lease,
            last_id: std::sync::atomic::AtomicU64::new(0),
            remote: queue.map(|(q, name)| remote::Remote::start(q, run_id, name)),
        });
        Ok(PreparedRun { shared, max_workers: opts.max_workers.max(1) })
    }

    /// The run's id, known before any step runs.
    pub fn run_id(&self) -> RunId {
        self.shared.run_id
    }

    /// Live counts per step while the run goes.
    pub fn progress(&self) -> Arc<RunProgress> {
        self.shared.progress.clone()
    }

    /// Runs the flow to its end, failure or cancellation.
    pub async fn execute(self) -> Result<RunSummary> {
        let started = Instant::now();
        let shared = self.shared.clone();
        let flow_name = shared.flow.name().clone();
        let mut run = shared.store.records.get_run(&flow_name, shared.run_id).await?.ok_or_else(|| {
            Error::Store(braid_store::Error::NotFound { what: format!("run {flow_name}/{}", shared.run_id) })
        })?;
        run.status = RunStatus::Running;
        // An adopted run keeps when it first started.
        run.started_at.get_or_insert_with(Timestamp::now);
        run.lease = Some(RunLease::new(shared.holder.clone(), shared.run_lease));
        run = shared.store.records.update_run(&run).await?;

        let mut dispatcher = Dispatcher::new(shared.clone(), self.max_workers);
        dispatcher.run().await;
        shared.persister.flush().await;
        if let Some(r) = &shared.remote {
            r.stop(shared.run_id).await;
        }
        if let Some(e) = shared.persister.failure() {
            dispatcher.fail(Error::Records(e));
        }

        let (status, error) = match (&dispatcher.failure, dispatcher.ended) {
            (None, true) => (RunStatus::Succeeded, None),
            (Some(Error::Cancelled), _) => (RunStatus::Cancelled, Some("cancelled".to_owned())),
            (Some(e), _) => (RunStatus::Failed, Some(crate::error::chain(e))),
            (None, false) => (RunStatus::Failed, Some("the run stopped before reaching `end`".to_owned())),
        };
        // The run ends here: no more renewals, and the final record holds no lease.
        drop(lock(&shared.lease).take());
        run.status = status;
        run.ended_at = Some(Timestamp::now());
        run.error = error.clone();
        run.lease = None;
        // Tags may have been changed by someone else meanwhile: retry on conflict.
        loop {
            match shared.store.records.update_run(&run).await {
                Ok(_) => break,
                Err(e) if e.is_conflict() => {
                    if let Some(mut fresh) = shared.store.records.get_run(&flow_name, shared.run_id).await? {
                        fresh.status = run.status;
                        fresh.ended_at = run.ended_at;
                        fresh.error = run.error.clone();
                        fresh.lease = None;
                        run = fresh;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(RunSummary {
            flow: flow_name,
            run_id: shared.run_id,
            status,
            error,
            executed: dispatcher.executed,
            reused: dispatcher.reused,
            elapsed: started.elapsed(),
        })
    }
}

async fn load_origin(flow: &Flow, store: &Store, resume: &Resume) -> Result<Origin> {
    let run = match resume.origin {
        Some(r) => r,
        None => store
            .records
            .list_runs(flow.name(), &braid_store::RunQuery { limit: 1, ..Default::default() })
            .await?
            .items
            .first()
            .map(|r| r.id)
            .ok_or_else(|| Error::Resume { reason: format!("flow `{}` has no runs to resume", flow.name()) })?,
    };
    let Some(record) = store.records.get_run(flow.name(), run).await? else {
        return Err(Error::Resume { reason: format!("run {}/{run} not found", flow.name()) });
    };
    let now = Timestamp::now();
    match record.observed_status(now) {
        status if status.is_live() && !resume.force => {
            let held = record.lease.as_ref().map_or_else(String::new, |l| {
                format!(" (held by {}, lease renewed {:.1}s ago)", l.holder, now.since(l.renewed_at).as_secs_f64())
            });
            return Err(Error::Resume {
                reason: format!(
                    "run {}/{run} is still {status}{held}; wait for it to end, or pass --force to resume it anyway (both then go on)",
                    flow.name()
                ),
            });
        }
        RunStatus::Lost if record.status.is_live() => mark_lost(store, record).await?,
        _ => {}
    }
    if let Some(from) = &resume.from
        && flow.graph.step(from.as_str()).is_none()
    {
        return Err(Error::Resume {
            reason: format!(
                "--from {from}: flow `{}` has no such step; its steps: {}",
                flow.name(),
                flow.graph.steps().iter().map(|s| s.name.to_string()).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let mut tasks = HashMap::new();
    let mut unfinished = HashMap::new();
    for status in [TaskStatus::Succeeded, TaskStatus::Failed, TaskStatus::Lost, TaskStatus::Running] {
        let mut q = TaskQuery { status: Some(status), limit: 10_000, ..Default::default() };
        loop {
            let page = store.records.list_tasks(flow.name(), run, &q).await?;
            for t in page.items {
                let id = TaskIdentity {
                    step: t.key.step.clone(),
                    path: t.foreach_stack.iter().map(|f| f.index).collect(),
                    iteration: t.iteration,
                };
                if status == TaskStatus::Succeeded {
                    tasks.insert(id, t);
                } else if let Some(p) = t.progress {
                    unfinished.insert(id, p);
                }
            }
            match page.next {
                Some(n) => q.after = Some(n),
                None => break,
            }
        }
    }
    Ok(Origin { run, from: resume.from.clone(), tasks, unfinished })
}

/// Replaces the record of a run that was created but never started (its creator died in
/// between), so the run keeps the id its launch recorded. The caller holds the launch, so
/// no one else starts this run; a run that did start is never replaced.
async fn take_over_pending(store: &Store, mut run: RunRecord) -> Result<()> {
    let what = format!("run {}/{}", run.flow, run.id);
    let stored = store
        .records
        .get_run(&run.flow, run.id)
        .await?
        .ok_or_else(|| Error::Store(braid_store::Error::NotFound { what: what.clone() }))?;
    if stored.status != RunStatus::Pending || stored.started_at.is_some() {
        return Err(Error::Store(braid_store::Error::Conflict {
            what,
            reason: format!("it exists and is {}; only a run that never started is taken over", stored.status),
        }));
    }
    tracing::info!(run = %run.id, previous = ?stored.lease.as_ref().map(|l| &l.holder), "taking over a run that never started");
    run.created_at = stored.created_at;
    run.revision = stored.revision;
    store.records.update_run(&run).await?;
    Ok(())
}

/// Stores the `lost` a reader already sees for a run whose lease ran out, saying when and
/// by whom it was last held, so the record itself tells what happened.
async fn mark_lost(store: &Store, mut run: RunRecord) -> Result<()> {
    let held = run.lease.as_ref().map_or_else(
        || "its lease ran out".to_owned(),
        |l| format!("its lease, last held by {} and renewed at {}, ran out at {}", l.holder, l.renewed_at, l.deadline),
    );
    run.status = RunStatus::Lost;
    run.error = Some(format!("lost: {held}"));
    run.ended_at = run.lease.as_ref().map(|l| l.deadline);
    match store.records.update_run(&run).await {
        Ok(_) => Ok(()),
        // Someone wrote the run meanwhile (its holder came back, or another resume marked
        // it): their record stands, and readers still derive the status from its lease.
        Err(e) if e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
