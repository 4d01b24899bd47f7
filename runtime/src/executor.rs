//! The executor: runs a flow's tasks in-process on tokio, at most `max_workers` at once.
//!
//! One [`Dispatcher`] per run owns all run state (ready queue, join barriers), so
//! routing needs no locks; each task runs as its own tokio task and hands back an outcome. Task ids
//! are assigned in creation order, so foreach branches get consecutive ids in index order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_core::{ArtifactName, Attempt, FlowName, RunId, RunStatus, StepName, Tag, TaskId, TaskStatus, Timestamp};
use braid_dag::{StepKind, Transition};
use braid_store::{
    AttemptRecord, FlowRecord, ForeachFrame, Precondition, RunLease, RunRecord, Store, TaskError, TaskEvent,
    TaskEventKind, TaskKey, TaskQuery, TaskRecord, TaskWrite,
};
use futures_util::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::context::{Branch, Ctx, CtxInner, Frame, LocalSet};
use crate::error::{Error, Result};
use crate::flow::{Flow, StepBody};
use crate::namespace::{ArtRef, CACHE_MAX, Namespace};
use crate::persist::Persister;
use crate::progress::ProgressState;

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
        }
    }
}

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
    /// One permit per worker: held while a step's code runs, so at most `max_workers`
    /// run at once while many more tasks are in flight (starting, storing results).
    pub(crate) workers: Arc<tokio::sync::Semaphore>,
    pub(crate) metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Renews the run's lease while this process holds the run.
    pub(crate) lease: Mutex<Option<crate::lease::LeaseKeeper>>,
    pub(crate) holder: String,
    pub(crate) run_lease: Duration,
}

/// The run being resumed: its successful tasks by identity.
pub(crate) struct Origin {
    run: RunId,
    from: Option<StepName>,
    tasks: HashMap<TaskIdentity, TaskRecord>,
}

/// What makes a task the "same" task in two runs of one flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TaskIdentity {
    step: StepName,
    path: Vec<u64>,
    iteration: u32,
}

/// An open fan-out a task sits in: which barrier, which branch.
#[derive(Debug, Clone, Copy)]
struct Fanout {
    barrier: u64,
    branch: usize,
}

/// A task the dispatcher has created and will start: its place in the flow (step,
/// parent, open fan-outs, foreach frames, loop iteration) and what it starts from.
/// (Not a launch plan: those are `plan::LaunchPlan`.)
struct ReadyTask {
    id: TaskId,
    step: StepName,
    parent: Option<TaskId>,
    parent_ns: Arc<Namespace>,
    fanouts: Arc<Vec<Fanout>>,
    frames: Arc<Vec<Frame>>,
    iteration: u32,
    inputs: Option<Arc<Vec<Branch>>>,
    /// The task in the origin run to reuse instead of running this one.
    reuse: Option<TaskRecord>,
}

enum NextMove {
    End,
    Go { to: StepName, loop_back: bool },
    Split(Vec<StepName>),
    Foreach { to: StepName, over: ArtifactName, elements: Arc<Vec<Vec<u8>>> },
}

enum Outcome {
    Succeeded { ns: Arc<Namespace>, next: NextMove, reused: bool },
    Failed(Error),
    Cancelled,
}

struct Barrier {
    join: StepName,
    arrived: Vec<Option<Branch>>,
    count: usize,
    outer_fanouts: Arc<Vec<Fanout>>,
    outer_frames: Arc<Vec<Frame>>,
    iteration: u32,
    reused: bool,
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
            origin_run = Some(o.run);
            origin = Some(o);
        }
        let spec = serde_json::to_value(flow.graph.spec())
            .map_err(|e| Error::InvalidFlow { flow: flow.name().to_string(), problems: e.to_string() })?;
        store.records.put_flow(FlowRecord { name: flow.name().clone(), spec, updated_at: Timestamp::now() }).await?;
        let mut run = RunRecord::new(flow.name().clone(), run_id);
        run.params = params.clone();
        run.tags = opts.tags.iter().cloned().collect();
        run.origin_run = origin_run;
        run.name = opts.name.clone();
        run.meta = opts.meta.clone();
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
            workers: Arc::new(tokio::sync::Semaphore::new(opts.max_workers.max(1))),
            metrics: opts.metrics.clone(),
            lease: Mutex::new(Some(keeper)),
            holder,
            run_lease: opts.run_lease,
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
        run.started_at = Some(Timestamp::now());
        run.lease = Some(RunLease::new(shared.holder.clone(), shared.run_lease));
        run = shared.store.records.update_run(&run).await?;

        let mut dispatcher = Dispatcher {
            shared: shared.clone(),
            next_id: 0,
            ready: VecDeque::new(),
            barriers: HashMap::new(),
            next_barrier: 0,
            running: JoinSet::new(),
            max_workers: self.max_workers,
            failure: None,
            executed: 0,
            reused: 0,
            ended: false,
        };
        dispatcher.run().await;
        shared.persister.flush().await;
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
    let mut q = TaskQuery { status: Some(TaskStatus::Succeeded), limit: 10_000, ..Default::default() };
    loop {
        let page = store.records.list_tasks(flow.name(), run, &q).await?;
        for t in page.items {
            let id = TaskIdentity {
                step: t.key.step.clone(),
                path: t.foreach_stack.iter().map(|f| f.index).collect(),
                iteration: t.iteration,
            };
            tasks.insert(id, t);
        }
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    Ok(Origin { run, from: resume.from.clone(), tasks })
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

/// The run's routing loop: owns the ready queue and the join barriers, starts ready
/// tasks (at most `max_workers` step bodies at once), and routes each finished task's
/// outcome to the tasks that come next. (Launch plans have their own `plan::Scheduler`.)
struct Dispatcher {
    shared: Arc<RunShared>,
    next_id: u64,
    ready: VecDeque<ReadyTask>,
    barriers: HashMap<u64, Barrier>,
    next_barrier: u64,
    running: JoinSet<(ReadyTask, Outcome)>,
    max_workers: usize,
    failure: Option<Error>,
    executed: u64,
    reused: u64,
    ended: bool,
}

impl Dispatcher {
    async fn run(&mut self) {
        let start = StepName::start();
        self.make_ready(
            start,
            None,
            Arc::new(Namespace::new()),
            Arc::new(Vec::new()),
            Arc::new(Vec::new()),
            0,
            None,
            true,
        );
        loop {
            // Many more tasks than workers are kept in flight (each waits for a worker
            // permit before its code runs), so finishing tasks are handed back in batches
            // instead of one thread wake-up per task.
            let in_flight = (self.max_workers * 64).max(512);
            while self.failure.is_none() && self.running.len() < in_flight {
                if self.shared.cancel.is_cancelled() {
                    self.fail(Error::Cancelled);
                    break;
                }
                let Some(task) = self.ready.pop_front() else {
                    break;
                };
                let shared = self.shared.clone();
                self.shared.progress.update(&task.step, |c| c.running += 1);
                self.running.spawn(async move {
                    let outcome = run_task(&shared, &task).await;
                    (task, outcome)
                });
            }
            if self.running.is_empty() {
                break;
            }
            let joined = tokio::select! {
                j = self.running.join_next() => j,
                _ = self.shared.cancel.cancelled(), if self.failure.is_none() => {
                    self.fail(Error::Cancelled);
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let mut batch = vec![joined];
            while let Some(more) = self.running.try_join_next() {
                batch.push(more);
            }
            if let Some(e) = self.shared.persister.failure() {
                self.fail(Error::Records(e));
            }
            for joined in batch {
                match joined {
                    Ok((task, outcome)) => self.handle(task, outcome),
                    Err(e) => self.fail(Error::TaskFailed {
                        step: StepName::start(),
                        task: TaskId(0),
                        attempt: Attempt::FIRST,
                        cause: format!("executor task crashed: {e}"),
                    }),
                }
            }
        }
    }

    fn fail(&mut self, e: Error) {
        if self.failure.is_none() {
            self.failure = Some(e);
        }
        // Tasks still running see the token and stop; nothing new starts.
        self.shared.cancel.cancel();
        self.ready.clear();
    }

    #[allow(clippy::too_many_arguments)]
    /// Creates the next task (the next id) of `step` and queues it, reusing its twin in
    /// the origin run when resuming and everything upstream was reused.
    fn make_ready(
        &mut self,
        step: StepName,
        parent: Option<TaskId>,
        parent_ns: Arc<Namespace>,
        fanouts: Arc<Vec<Fanout>>,
        frames: Arc<Vec<Frame>>,
        iteration: u32,
        inputs: Option<Arc<Vec<Branch>>>,
        upstream_reused: bool,
    ) {
        self.next_id += 1;
        let reuse = match &self.shared.origin {
            Some(o) if upstream_reused && o.from.as_ref() != Some(&step) => o
                .tasks
                .get(&TaskIdentity {
                    step: step.clone(),
                    path: frames.iter().map(|f| f.record.index).collect(),
                    iteration,
                })
                .cloned(),
            _ => None,
        };
        self.ready.push_back(ReadyTask {
            id: TaskId(self.next_id),
            step,
            parent,
            parent_ns,
            fanouts,
            frames,
            iteration,
            inputs,
            reuse,
        });
    }

    fn handle(&mut self, task: ReadyTask, outcome: Outcome) {
        let step = task.step.clone();
        match outcome {
            Outcome::Failed(e) => {
                self.executed += 1;
                self.shared.progress.update(&step, |c| {
                    c.running -= 1;
                    c.failed += 1;
                });
                self.fail(e);
            }
            Outcome::Cancelled => {
                self.shared.progress.update(&step, |c| c.running -= 1);
                self.fail(Error::Cancelled);
            }
            Outcome::Succeeded { ns, next, reused } => {
                if reused {
                    self.reused += 1;
                } else {
                    self.executed += 1;
                }
                self.shared.progress.update(&step, |c| {
                    c.running -= 1;
                    c.done += 1;
                });
                if self.failure.is_some() {
                    return;
                }
                if let Err(e) = self.route(task, ns, next, reused) {
                    self.fail(e);
                }
            }
        }
    }

    fn route(&mut self, task: ReadyTask, ns: Arc<Namespace>, next: NextMove, reused: bool) -> Result<()> {
        let graph = self.shared.flow.graph.clone();
        match next {
            NextMove::End => {
                self.ended = true;
                Ok(())
            }
            NextMove::Go { to, loop_back } => {
                let iteration = if loop_back {
                    let max = self.shared.flow.policy(&task.step).map_or(1000, |p| p.max_iterations);
                    if task.iteration + 1 > max {
                        return Err(Error::LoopLimit { step: task.step.clone(), max });
                    }
                    task.iteration + 1
                } else {
                    task.iteration
                };
                let is_join = graph.step(to.as_str()).is_some_and(|s| s.kind == StepKind::Join);
                if is_join {
                    self.arrive(&task, ns, reused);
                } else {
                    self.make_ready(
                        to,
                        Some(task.id),
                        ns,
                        task.fanouts.clone(),
                        task.frames.clone(),
                        iteration,
                        None,
                        reused,
                    );
                }
                Ok(())
            }
            NextMove::Split(targets) => {
                let join = graph.join_of(task.step.as_str()).cloned().ok_or_else(|| Error::InvalidFlow {
                    flow: graph.name().to_string(),
                    problems: format!("split `{}` has no join", task.step),
                })?;
                let b = self.open_barrier(&task, join, targets.len(), reused);
                for (i, t) in targets.into_iter().enumerate() {
                    let mut fanouts = (*task.fanouts).clone();
                    fanouts.push(Fanout { barrier: b, branch: i });
                    self.make_ready(
                        t,
                        Some(task.id),
                        ns.clone(),
                        Arc::new(fanouts),
                        task.frames.clone(),
                        task.iteration,
                        None,
                        reused,
                    );
                }
                Ok(())
            }
            NextMove::Foreach { to, over, elements } => {
                let len = elements.len() as u64;
                let join = graph.join_of(task.step.as_str()).cloned().ok_or_else(|| Error::InvalidFlow {
                    flow: graph.name().to_string(),
                    problems: format!("foreach `{}` has no join", task.step),
                })?;
                let b = self.open_barrier(&task, join, elements.len(), reused);
                for i in 0..elements.len() {
                    let mut fanouts = (*task.fanouts).clone();
                    fanouts.push(Fanout { barrier: b, branch: i });
                    let mut frames = (*task.frames).clone();
                    frames.push(Frame {
                        record: ForeachFrame {
                            step: task.step.clone(),
                            task: task.id,
                            over: over.clone(),
                            index: i as u64,
                            len,
                        },
                        elements: elements.clone(),
                    });
                    self.make_ready(
                        to.clone(),
                        Some(task.id),
                        ns.clone(),
                        Arc::new(fanouts),
                        Arc::new(frames),
                        task.iteration,
                        None,
                        reused,
                    );
                }
                if elements.is_empty() {
                    self.close_barrier(b);
                }
                Ok(())
            }
        }
    }

    fn open_barrier(&mut self, task: &ReadyTask, join: StepName, n: usize, reused: bool) -> u64 {
        self.next_barrier += 1;
        let id = self.next_barrier;
        self.barriers.insert(
            id,
            Barrier {
                join,
                arrived: vec![None; n],
                count: 0,
                outer_fanouts: task.fanouts.clone(),
                outer_frames: task.frames.clone(),
                iteration: task.iteration,
                reused,
            },
        );
        id
    }

    fn arrive(&mut self, task: &ReadyTask, ns: Arc<Namespace>, reused: bool) {
        let Some(fanout) = task.fanouts.last().copied() else {
            self.fail(Error::InvalidFlow {
                flow: self.shared.flow.name().to_string(),
                problems: format!("step `{}` reaches a join outside any split or foreach", task.step),
            });
            return;
        };
        let full = match self.barriers.get_mut(&fanout.barrier) {
            Some(b) => {
                if b.arrived[fanout.branch].is_none() {
                    b.count += 1;
                }
                b.arrived[fanout.branch] =
                    Some(Branch { task: task.id, step: task.step.clone(), index: fanout.branch as u64, ns, reused });
                b.count == b.arrived.len()
            }
            None => false,
        };
        if full {
            self.close_barrier(fanout.barrier);
        }
    }

    fn close_barrier(&mut self, id: u64) {
        let Some(b) = self.barriers.remove(&id) else {
            return;
        };
        let branches: Vec<Branch> = b.arrived.into_iter().flatten().collect();
        let all_reused = b.reused && branches.iter().all(|br| br.reused);
        self.make_ready(
            b.join,
            None,
            Arc::new(Namespace::new()),
            b.outer_fanouts,
            b.outer_frames,
            b.iteration,
            Some(Arc::new(branches)),
            all_reused,
        );
    }
}

fn task_key(shared: &RunShared, task: &ReadyTask) -> TaskKey {
    TaskKey { flow: shared.flow.name().clone(), run: shared.run_id, step: task.step.clone(), task: task.id }
}

fn base_record(shared: &RunShared, task: &ReadyTask) -> TaskRecord {
    let mut rec = TaskRecord::new(task_key(shared, task));
    rec.foreach_stack = task.frames.iter().map(|f| f.record.clone()).collect();
    rec.iteration = task.iteration;
    rec.parent = task.parent;
    rec.inputs = task.inputs.as_ref().map(|i| i.iter().map(|b| b.task).collect()).unwrap_or_default();
    rec
}

async fn run_task(shared: &Arc<RunShared>, task: &ReadyTask) -> Outcome {
    if let Some(origin) = &task.reuse {
        match reuse_task(shared, task, origin).await {
            Ok(o) => return o,
            Err(e) => {
                tracing::warn!(step = %task.step, error = %e, "could not reuse the origin task; running it");
            }
        }
    }
    execute_task(shared, task).await
}

/// Clones a successful task of the origin run into this run, by reference: same
/// artifact keys, no bytes copied, the step not executed.
async fn reuse_task(shared: &Arc<RunShared>, task: &ReadyTask, origin: &TaskRecord) -> Result<Outcome> {
    let Some(o) = &shared.origin else {
        return Err(Error::Resume { reason: "no origin".into() });
    };
    let arts = shared.store.records.task_artifacts(shared.flow.name(), o.run, origin.key.task).await?;
    let mut ns: Namespace = (*task.parent_ns).clone();
    for a in &arts {
        ns.insert(a.name.clone(), Arc::new(ArtRef::new(a.clone())));
    }
    let mut rec = base_record(shared, task);
    rec.status = TaskStatus::Succeeded;
    rec.attempt = origin.attempt;
    rec.started_at = origin.started_at;
    rec.ended_at = origin.ended_at;
    rec.progress = origin.progress.clone();
    rec.progress_at = origin.progress_at;
    rec.error = origin.error.clone();
    rec.origin = Some((o.run, origin.key.task));
    let write = TaskWrite { artifacts: Some(arts), ..TaskWrite::new(rec) };
    shared.persister.write_later(Vec::new(), write);
    let ns = Arc::new(ns);
    let next = decide_next(shared, task, &ns).await?;
    Ok(Outcome::Succeeded { ns, next, reused: true })
}

enum AttemptEnd {
    Ok,
    Failed(TaskError),
    Cancelled,
    /// The lease expired before the attempt ended.
    Lost,
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

async fn run_body(body: &StepBody, ctx: Ctx, timeout: Option<Duration>, cancel: &CancellationToken) -> AttemptEnd {
    let sink =
        crate::logs::SinkGuard::register(&ctx.inner.shared.persister, ctx.run_id(), ctx.task_id(), ctx.attempt());
    let span = tracing::info_span!("braid_task", braid_sink = sink.0, step = %ctx.step(), task = %ctx.task_id());
    let watched = ctx.clone();
    let fut = match body {
        StepBody::Async(f) => {
            let fut = tracing::Instrument::instrument(f(ctx), span);
            async move {
                match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(Ok(())) => AttemptEnd::Ok,
                    Ok(Err(e)) => AttemptEnd::Failed(TaskError { kind: "error".into(), message: e.to_string() }),
                    Err(p) => AttemptEnd::Failed(TaskError { kind: "panic".into(), message: panic_message(p) }),
                }
            }
            .boxed()
        }
        StepBody::Blocking(f) => {
            let f = f.clone();
            async move {
                match tokio::task::spawn_blocking(move || span.in_scope(|| f(ctx))).await {
                    Ok(Ok(())) => AttemptEnd::Ok,
                    Ok(Err(e)) => AttemptEnd::Failed(TaskError { kind: "error".into(), message: e.to_string() }),
                    Err(e) if e.is_panic() => {
                        AttemptEnd::Failed(TaskError { kind: "panic".into(), message: panic_message(e.into_panic()) })
                    }
                    Err(e) => AttemptEnd::Failed(TaskError { kind: "error".into(), message: e.to_string() }),
                }
            }
            .boxed()
        }
    };
    let timed = async {
        match timeout {
            None => fut.await,
            Some(d) => match tokio::time::timeout(d, fut).await {
                Ok(r) => r,
                Err(_) => AttemptEnd::Failed(TaskError {
                    kind: "timeout".into(),
                    message: format!("attempt exceeded its timeout of {d:?}"),
                }),
            },
        }
    };
    tokio::select! {
        r = timed => r,
        _ = cancel.cancelled() => AttemptEnd::Cancelled,
        _ = crate::progress::watch(watched) => AttemptEnd::Lost,
    }
}

async fn execute_task(shared: &Arc<RunShared>, task: &ReadyTask) -> Outcome {
    let Some(step_impl) = shared.flow.steps.get(&task.step) else {
        return Outcome::Failed(Error::InvalidFlow {
            flow: shared.flow.name().to_string(),
            problems: format!("step `{}` has no function", task.step),
        });
    };
    let policy = &step_impl.policy;
    let max_attempts = policy.retries.saturating_add(1);
    let flow = shared.flow.name().as_str();
    let mut attempt = Attempt::FIRST;
    // Events (progress history, warnings) carry over from one attempt to the next.
    let mut events = Vec::new();
    loop {
        let permit = tokio::select! {
            p = shared.workers.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return Outcome::Cancelled,
            },
            _ = shared.cancel.cancelled() => return Outcome::Cancelled,
        };
        let started = Timestamp::now();
        let clock = Instant::now();
        let mut rec = base_record(shared, task);
        rec.status = TaskStatus::Running;
        rec.attempt = attempt;
        rec.started_at = Some(started);
        rec.lease_deadline = Some(started.plus(policy.lease));
        rec.events = std::mem::take(&mut events);
        let running_attempt =
            AttemptRecord { attempt, status: TaskStatus::Running, started_at: started, ended_at: None, error: None };
        shared
            .persister
            .write_later(Vec::new(), TaskWrite { attempt: Some(running_attempt), ..TaskWrite::new(rec.clone()) });
        if let Some(m) = &shared.metrics {
            m.attempt_started(flow, task.step.as_str(), attempt != Attempt::FIRST);
        }
        let record = Arc::new(Mutex::new(rec));
        let ctx = Ctx {
            inner: Arc::new(CtxInner {
                shared: shared.clone(),
                step: task.step.clone(),
                task: task.id,
                attempt,
                iteration: task.iteration,
                parent_ns: task.parent_ns.clone(),
                sets: Mutex::new(BTreeMap::new()),
                frames: task.frames.clone(),
                inputs: task.inputs.clone(),
                record: record.clone(),
                progress: Mutex::new(ProgressState::new()),
                policy: policy.clone(),
            }),
        };
        let end = run_body(&step_impl.body, ctx.clone(), policy.timeout, &shared.cancel).await;
        drop(permit);
        let ended = Timestamp::now();
        let last = attempt.0 >= max_attempts;
        let (status, error) = match end {
            AttemptEnd::Ok => (TaskStatus::Succeeded, None),
            AttemptEnd::Cancelled => (
                TaskStatus::Cancelled,
                Some(TaskError { kind: "cancelled".into(), message: "the run was cancelled".into() }),
            ),
            AttemptEnd::Failed(e) => (TaskStatus::Failed, Some(e)),
            AttemptEnd::Lost => {
                if let Some(m) = &shared.metrics {
                    m.lease_expired(flow, task.step.as_str());
                }
                let message = format!(
                    "lease expired: no heartbeat or progress for {:.1}s (the step's lease); attempt {attempt} declared lost",
                    policy.lease.as_secs_f64()
                );
                (TaskStatus::Lost, Some(TaskError { kind: "lost".into(), message }))
            }
        };
        if let Some(m) = &shared.metrics {
            let final_status = match status {
                TaskStatus::Failed | TaskStatus::Lost if !last => None,
                TaskStatus::Failed if policy.catch.is_some() => Some(TaskStatus::Succeeded),
                s => Some(s),
            };
            let label = final_status.map_or("retrying", TaskStatus::as_str);
            m.attempt_ended(
                flow,
                task.step.as_str(),
                &task.id.to_string(),
                label,
                clock.elapsed().as_secs_f64(),
                final_status.is_some(),
            );
        }
        match status {
            TaskStatus::Succeeded => {
                return finish(shared, task, &ctx, &record, started, ended, None).await;
            }
            TaskStatus::Failed | TaskStatus::Lost if !last => {
                let e = error.unwrap_or(TaskError { kind: "error".into(), message: String::new() });
                ctx.log_at("ERROR", format!("attempt {attempt} {} ({}): {}", status, e.kind, e.message));
                let rec = ended_record(&record, status, ended, &e);
                events = rec.events.clone();
                let a = AttemptRecord { attempt, status, started_at: started, ended_at: Some(ended), error: Some(e) };
                // The attempt's artifacts are dropped: nothing of `ctx` is stored.
                let w = TaskWrite {
                    attempt: Some(a),
                    artifacts: Some(Vec::new()),
                    precondition: Precondition::Attempt(attempt),
                    ..TaskWrite::new(rec)
                };
                if let Err(e) = shared.persister.write(Vec::new(), w).await {
                    return Outcome::Failed(e);
                }
                let delay = policy.backoff.delay(attempt.0);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.cancel.cancelled() => return Outcome::Cancelled,
                }
                attempt = attempt.next();
            }
            TaskStatus::Failed if policy.catch.is_some() => {
                let e = error.unwrap_or(TaskError { kind: "error".into(), message: String::new() });
                let name = policy.catch.clone().map(|n| n.to_string()).unwrap_or_default();
                if let Err(err) = ctx.set(&name, &e) {
                    return Outcome::Failed(err);
                }
                return finish(shared, task, &ctx, &record, started, ended, Some(e)).await;
            }
            _ => {
                let e = error.unwrap_or(TaskError { kind: "error".into(), message: String::new() });
                let rec = ended_record(&record, status, ended, &e);
                let a = AttemptRecord {
                    attempt,
                    status,
                    started_at: started,
                    ended_at: Some(ended),
                    error: Some(e.clone()),
                };
                let w = TaskWrite { attempt: Some(a), artifacts: Some(Vec::new()), ..TaskWrite::new(rec) };
                if let Err(write) = shared.persister.write(Vec::new(), w).await {
                    // The store cannot say how the task ended: that, not the task's own
                    // failure, is what fails the run (and `resume` re-runs the task).
                    tracing::error!(step = %task.step, task = %task.id, %attempt, error = %e.message, "task ended as {status}, and its record could not be stored");
                    return Outcome::Failed(write);
                }
                if status == TaskStatus::Cancelled {
                    return Outcome::Cancelled;
                }
                return Outcome::Failed(Error::TaskFailed {
                    step: task.step.clone(),
                    task: task.id,
                    attempt,
                    cause: format!("{}: {}", e.kind, e.message),
                });
            }
        }
    }
}

/// The record of an attempt that ended without success: status, end, error, no lease,
/// and for a lost attempt the event that says so.
fn ended_record(record: &Mutex<TaskRecord>, status: TaskStatus, ended: Timestamp, e: &TaskError) -> TaskRecord {
    let mut rec = lock(record).clone();
    rec.status = status;
    rec.ended_at = Some(ended);
    rec.lease_deadline = None;
    rec.error = Some(e.clone());
    if status == TaskStatus::Lost {
        rec.push_event(TaskEvent {
            at: ended,
            attempt: rec.attempt,
            kind: TaskEventKind::Lost,
            percent: rec.progress.as_ref().map(|p| p.percent),
            message: e.message.clone(),
        });
    }
    rec
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stores a successful (or caught) attempt's artifacts and record, then decides where
/// the flow goes next.
async fn finish(
    shared: &Arc<RunShared>,
    task: &ReadyTask,
    ctx: &Ctx,
    record: &Arc<Mutex<TaskRecord>>,
    started: Timestamp,
    ended: Timestamp,
    caught: Option<TaskError>,
) -> Outcome {
    let sets: BTreeMap<ArtifactName, LocalSet> = std::mem::take(&mut *lock(&ctx.inner.sets));
    let mut small_blobs = Vec::new();
    let mut artifacts = Vec::with_capacity(sets.len());
    let mut ns: Namespace = (*task.parent_ns).clone();
    for (name, set) in sets {
        for blob in set.new_blobs {
            if blob.len() > CACHE_MAX {
                // Large values go straight to the blob store, not through the batch.
                if let Err(e) = shared.store.blobs.put(blob).await {
                    return Outcome::Failed(e.into());
                }
            } else {
                small_blobs.push(blob);
            }
        }
        artifacts.push(set.art.record.clone());
        ns.insert(name, set.art);
    }
    let progress = {
        let st = lock(&ctx.inner.progress);
        (st.latest.clone(), st.latest_at)
    };
    let mut rec = lock(record).clone();
    rec.status = TaskStatus::Succeeded;
    rec.ended_at = Some(ended);
    rec.lease_deadline = None;
    if progress.0.is_some() {
        rec.progress = progress.0;
        rec.progress_at = progress.1;
    }
    rec.error = caught.clone();
    let attempt = AttemptRecord {
        attempt: rec.attempt,
        status: if caught.is_some() { TaskStatus::Failed } else { TaskStatus::Succeeded },
        started_at: started,
        ended_at: Some(ended),
        error: caught,
    };
    let write = TaskWrite {
        artifacts: Some(artifacts),
        attempt: Some(attempt),
        precondition: Precondition::Attempt(rec.attempt),
        task: rec,
    };
    shared.persister.write_later(small_blobs, write);
    let ns = Arc::new(ns);
    match decide_next(shared, task, &ns).await {
        Ok(next) => Outcome::Succeeded { ns, next, reused: false },
        Err(e) => Outcome::Failed(e),
    }
}

/// Where the flow goes after a task of `task.step` succeeded with namespace `ns`.
async fn decide_next(shared: &RunShared, task: &ReadyTask, ns: &Namespace) -> Result<NextMove> {
    let graph = &shared.flow.graph;
    let spec = graph.step(task.step.as_str()).ok_or_else(|| Error::InvalidFlow {
        flow: graph.name().to_string(),
        problems: format!("unknown step `{}`", task.step),
    })?;
    Ok(match &spec.next {
        Transition::End => NextMove::End,
        Transition::Next { to } => NextMove::Go { to: to.clone(), loop_back: false },
        Transition::Split { to } => NextMove::Split(to.clone()),
        Transition::Foreach { over, to } => {
            let art = ns.get(over).ok_or_else(|| Error::Foreach {
                step: task.step.clone(),
                over: over.clone(),
                reason: format!("artifact `{over}` is not set; set it in `{}` or an earlier step", task.step),
            })?;
            let elements = art.elements(&*shared.store.blobs).await?.ok_or_else(|| Error::Foreach {
                step: task.step.clone(),
                over: over.clone(),
                reason: format!(
                    "`{over}` (a {}) holds no list of items; set it to a Vec, slice, array or tuple",
                    art.record.type_name
                ),
            })?;
            let len = elements.len() as u64;
            let max = shared.max_num_splits;
            if len > max {
                return Err(Error::TooManySplits { step: task.step.clone(), len, max });
            }
            NextMove::Foreach { to: to.clone(), over: over.clone(), elements }
        }
        Transition::Switch { on, cases } => {
            let art = ns.get(on).ok_or_else(|| Error::Switch {
                step: task.step.clone(),
                on: on.clone(),
                reason: format!(
                    "the step must set `{on}` to one of: {}",
                    cases.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            let value = match art.record.preview.to_json_value() {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            let to = cases.get(&value).ok_or_else(|| Error::Switch {
                step: task.step.clone(),
                on: on.clone(),
                reason: format!(
                    "value {value:?} matches no case; cases: {}",
                    cases.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            NextMove::Go { to: to.clone(), loop_back: graph.is_loop_back(task.step.as_str(), to.as_str()) }
        }
    })
}
