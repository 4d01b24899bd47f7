//! Starting claimed launches: the concurrency policy per parameter set, the global
//! limit on runs, and the bookkeeping that makes each launch start at most one run.
//!
//! A launch is claimed `pending` with this process as holder. To start it, the run
//! record is created first (so its id is known), then the launch moves `pending ->
//! started` with that id by a conditional update that only its holder can make. A holder
//! that lost its launch (another scheduler adopted it because this one looked dead)
//! cancels the run it prepared, which never executed. When the run ends the launch
//! moves to `finished` with the run's status.
//!
//! Policies per parameter set: `allow`, `skip`, `queue`, `buffer_one` (like `queue`, at
//! most one tick waiting) and `cancel_other` (a new tick cancels the set's running run
//! through the run's cancellation token, then starts once it has ended). A run of another
//! scheduler replica cannot be cancelled from here: that replica's next pass sees the
//! newer pending tick of the set and cancels its own run ([`Launcher::cancel_superseded`]),
//! while the replica holding the new tick waits for it to end, as `queue` would.
//!
//! Pause on failure: when a run of a plan with `pause_after_failures = N` fails, the
//! set's last N finished launches (of the same plan version, ended after the set was
//! last resumed) are read back; all failed, the set is paused in the store. Scheduled
//! ticks of a paused set are claimed as always (exactly once) and recorded as skipped
//! with the pause's note; the scheduler re-reads the paused sets every pass, so a pause
//! survives restarts and `braid plan resume-set` takes effect within one pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use braid_core::{FlowName, PlanName, RunId, RunStatus, Timestamp};
use braid_store::{LaunchKind, LaunchQuery, LaunchRecord, LaunchState, SchedulerRecord, SetPause, Store};
use serde_json::{Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::error::PlanResult;
use super::matrix::MatrixFns;
use super::metrics::{LaunchOutcomeKind, PlanMetrics};
use super::model::{Concurrency, LaunchPlan};
use crate::executor::{PreparedRun, RunOptions};
use crate::failpoint::crash_point;
use crate::flow::Flow;

/// The time a scheduler sees. Injected in tests, so DST days and missed ticks are tested
/// without waiting.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> jiff::Timestamp;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<jiff::Timestamp>,
}

impl ManualClock {
    /// A clock that reads `start` until it is set.
    pub fn new(start: jiff::Timestamp) -> Self {
        ManualClock { now: Mutex::new(start) }
    }

    /// Moves the clock to `t` (forward or back).
    pub fn set(&self, t: jiff::Timestamp) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a scheduler, a backfill or a manual launch did, as it happens (sent to
/// [`LaunchEnv::with_events`]). Variants may be added: a `match` needs a `_` arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LaunchEvent {
    /// A run started.
    Started {
        /// The launch's claim key ([`launch_key`](super::launch_key)).
        launch: String,
        /// The run, as `flow/run`.
        pathspec: String,
        /// The run's readable name, `<plan>_<values>`.
        name: String,
        /// The tick it launches.
        tick: jiff::Timestamp,
    },
    /// A run ended.
    Finished {
        /// The launch's claim key.
        launch: String,
        /// The run, as `flow/run`.
        pathspec: String,
        /// The run's readable name.
        name: String,
        /// How it ended.
        status: RunStatus,
        /// Its error, if it failed.
        error: Option<String>,
    },
    /// A launch was not started, on purpose or because its run could not be created.
    Skipped {
        /// The launch's claim key.
        launch: String,
        /// The run name it would have had.
        name: String,
        /// The tick it was for.
        tick: jiff::Timestamp,
        /// Why it was skipped.
        reason: String,
    },
    /// A parameter set was paused after consecutive failed runs; its ticks are skipped
    /// until it is resumed.
    Paused {
        /// The plan.
        plan: PlanName,
        /// The set's run name, `<plan>_<values>`.
        name: String,
        /// How many consecutive runs failed.
        failures: u32,
        /// The note its skipped ticks carry (how to resume it).
        reason: String,
    },
    /// The parameter sets of a tick could not be produced (the plan's `matrix_command`
    /// or `matrix_fn` failed): nothing launched for it; the failure is recorded in the
    /// store ([`braid_store::TickFailure`]).
    MatrixFailed {
        /// The plan.
        plan: PlanName,
        /// The tick.
        tick: jiff::Timestamp,
        /// What went wrong.
        error: String,
    },
    /// Missed ticks left out by the catch-up policy.
    MissedTicks {
        /// The plan whose ticks were missed.
        plan: PlanName,
        /// How many ticks were left out.
        skipped: usize,
        /// The catch-up policy that left them out, as text.
        policy: String,
    },
}

/// How a launch this process handled ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchOutcome {
    /// The launch's claim key.
    pub key: String,
    /// The plan it launched.
    pub plan: PlanName,
    /// The run's readable name, `<plan>_<values>`.
    pub name: String,
    /// The tick (for a manual launch, when it was asked for).
    pub tick: jiff::Timestamp,
    /// The plan's flow.
    pub flow: FlowName,
    /// The run it started, if it started one.
    pub run: Option<RunId>,
    /// `None` while the run goes; `Skipped` launches have none.
    pub status: Option<RunStatus>,
    /// The launch's state in the store (`finished`, `skipped`, ...).
    pub state: LaunchState,
    /// Why it was skipped, or what else there is to know about it.
    pub note: Option<String>,
}

/// How long a scheduler, backfill or launch process may go without a heartbeat before it
/// counts as dead: its pending launches are then adopted by a live scheduler, and
/// `braid plan launch` no longer counts it as a scheduler that will start a request.
/// The default of [`DispatchOptions::dead_after`]; six missed heartbeats of the default
/// 5 s interval.
pub const DEAD_AFTER: Duration = Duration::from_secs(30);

/// Whether a holder last seen at `seen_at` is still alive at `now`: it wrote a heartbeat
/// within `dead_after`.
pub(crate) fn heard_within(seen_at: Timestamp, now: Timestamp, dead_after: Duration) -> bool {
    let window = i64::try_from(dead_after.as_micros()).unwrap_or(i64::MAX);
    seen_at.as_micros() >= now.as_micros().saturating_sub(window)
}

/// Settings shared by schedulers and one-off launchers. Fields may be added: start from
/// `DispatchOptions::default()` and set the ones you need.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// Runs going at once in this process, over every plan (the global limit).
    pub max_runs: usize,
    /// `max_workers` of each run.
    pub run_workers: usize,
    /// How often this process says it is alive.
    pub heartbeat: Duration,
    /// A holder silent for this long is dead: its pending launches are adopted
    /// (default [`DEAD_AFTER`]).
    pub dead_after: Duration,
    /// Where the launched runs' step bodies run (in this process unless set to workers).
    pub execution: crate::Execution,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        DispatchOptions {
            max_runs: 16,
            run_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            heartbeat: Duration::from_secs(5),
            dead_after: DEAD_AFTER,
            execution: crate::Execution::InProcess,
        }
    }
}

#[derive(Default)]
struct State {
    /// Pending launches this process holds, by (tick, key).
    queue: BTreeMap<(Timestamp, String), LaunchRecord>,
    /// Runs of this process going, per (plan, parameter set).
    active: HashMap<(PlanName, String), usize>,
    /// Runs started and not ended.
    running: usize,
    /// Plans seen inactive by the last pass: their scheduled launches are skipped.
    inactive: HashSet<PlanName>,
    /// Plans deleted (seen by the last pass): none of their launches start.
    deleted: HashSet<PlanName>,
    /// Paused parameter sets and the note their skipped ticks get.
    paused: HashMap<(PlanName, String), String>,
    /// The runs of this process, by launch key: what `cancel_other` cancels.
    runs: HashMap<String, RunHandle>,
    outcomes: Vec<LaunchOutcome>,
    last_heartbeat: Option<jiff::Timestamp>,
}

/// A run this process started (or is starting), as `cancel_other` finds it.
struct RunHandle {
    set: (PlanName, String),
    tick: Timestamp,
    /// Whether its plan version's policy is `cancel_other`.
    cancel_other: bool,
    cancel: CancellationToken,
    /// The later tick that cancelled it, once one did.
    superseded_by: Option<Timestamp>,
}

/// Starts launches held by this process; see the module docs.
pub(crate) struct Launcher {
    pub(crate) store: Store,
    pub(crate) flows: BTreeMap<FlowName, Arc<Flow>>,
    pub(crate) id: String,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) opts: DispatchOptions,
    permits: Arc<Semaphore>,
    cancel: CancellationToken,
    /// Set when this process stops: nothing new starts.
    stopping: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    plans: Mutex<HashMap<(PlanName, u32), Arc<LaunchPlan>>>,
    /// The concurrency policy of every plan version this process has seen.
    policy: Mutex<HashMap<(PlanName, u32), Concurrency>>,
    pub(crate) changed: Notify,
    events: Option<tokio::sync::mpsc::UnboundedSender<LaunchEvent>>,
    started_at: Timestamp,
    /// Task metrics of the runs started here.
    task_metrics: Option<Arc<crate::Metrics>>,
    /// Plan metrics, updated as launches happen.
    pub(crate) metrics: Option<Arc<PlanMetrics>>,
    /// The parameter set functions of plans declared in code.
    pub(crate) matrix_fns: Arc<MatrixFns>,
}

impl fmt::Debug for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Launcher").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Where launches happen: the store, the flows this process hosts, the clock it reads
/// and where it reports what it does. Fields may be added: build one with
/// [`LaunchEnv::new`] and the `with_` methods.
#[derive(Debug, Clone)]
pub struct LaunchEnv {
    /// Where plans, launches and runs are stored.
    pub store: Store,
    /// The flows this process hosts (and so can launch).
    pub flows: Vec<Arc<Flow>>,
    /// The time launches are decided by.
    pub clock: Arc<dyn Clock>,
    /// Where every [`LaunchEvent`] is sent, if anywhere.
    pub events: Option<tokio::sync::mpsc::UnboundedSender<LaunchEvent>>,
    /// Cancelling it cancels the runs started here and starts nothing more (Ctrl-C).
    pub cancel: CancellationToken,
    /// Where the runs started here count their tasks (`RunOptions::metrics`).
    pub metrics: Option<Arc<crate::Metrics>>,
    /// Where launches, runs and ticks are counted per plan and parameter set.
    pub plan_metrics: Option<Arc<PlanMetrics>>,
    /// The `matrix_fn`s of the plans declared in this binary's code, by plan.
    pub(crate) matrix_fns: Arc<MatrixFns>,
}

impl LaunchEnv {
    /// `flows` on `store`, on the system clock, reporting nothing.
    pub fn new(store: Store, flows: Vec<Arc<Flow>>) -> Self {
        LaunchEnv {
            store,
            flows,
            clock: Arc::new(SystemClock),
            events: None,
            cancel: CancellationToken::new(),
            metrics: None,
            plan_metrics: None,
            matrix_fns: Arc::new(MatrixFns::new()),
        }
    }

    /// The plans declared in this binary's code: the parameter set functions of those
    /// declared with [`LaunchPlanBuilder::matrix_fn`](super::LaunchPlanBuilder::matrix_fn)
    /// are called at each of their ticks (a plan read from the store carries only the
    /// fact that it has one). Plans without a function are ignored here.
    pub fn with_plans(mut self, plans: &[super::LaunchPlan]) -> Self {
        let mut fns = (*self.matrix_fns).clone();
        for p in plans {
            if let Some(f) = p.matrix_fn() {
                fns.insert(p.name().clone(), f.clone());
            }
        }
        self.matrix_fns = Arc::new(fns);
        self
    }

    /// Counts the tasks of the runs started here in `metrics` (as `run --metrics-addr` does).
    pub fn with_metrics(mut self, metrics: Arc<crate::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts launches, runs and ticks per plan and parameter set in `metrics`.
    pub fn with_plan_metrics(mut self, metrics: Arc<PlanMetrics>) -> Self {
        self.plan_metrics = Some(metrics);
        self
    }

    /// Reads this clock instead (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends every [`LaunchEvent`] here.
    pub fn with_events(mut self, tx: tokio::sync::mpsc::UnboundedSender<LaunchEvent>) -> Self {
        self.events = Some(tx);
        self
    }
}

/// A new id for a scheduler or launcher process: host, pid and a unique suffix.
pub(crate) fn holder_id(role: &str) -> String {
    format!("{role}@{}:{}:{}", braid_store::host_name(), std::process::id(), RunId::generate())
}

fn ts(t: jiff::Timestamp) -> Timestamp {
    Timestamp::from_jiff(t)
}

impl Launcher {
    pub(crate) fn new(env: &LaunchEnv, role: &str, opts: DispatchOptions) -> Self {
        let now = ts(env.clock.now());
        Launcher {
            store: env.store.clone(),
            flows: env.flows.iter().map(|f| (f.name().clone(), f.clone())).collect(),
            id: holder_id(role),
            clock: env.clock.clone(),
            permits: Arc::new(Semaphore::new(opts.max_runs.max(1))),
            opts,
            cancel: env.cancel.child_token(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(State::default()),
            plans: Mutex::new(HashMap::new()),
            policy: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            events: env.events.clone(),
            started_at: now,
            task_metrics: env.metrics.clone(),
            metrics: env.plan_metrics.clone(),
            matrix_fns: env.matrix_fns.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn emit(&self, e: LaunchEvent) {
        if let Some(tx) = &self.events {
            // Events are for an observer (the CLI's live lines, tests); one that went
            // away misses nothing the store does not keep.
            let _ = tx.send(e);
        }
    }

    pub(crate) fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    pub(crate) fn flow_names(&self) -> Vec<FlowName> {
        self.flows.keys().cloned().collect()
    }

    /// Says this process is alive (at most once per heartbeat interval unless forced).
    pub(crate) async fn heartbeat(&self, force: bool) -> PlanResult<()> {
        let now = self.now();
        {
            let mut s = self.lock();
            let due = s.last_heartbeat.is_none_or(|last| {
                now.duration_since(last) >= jiff::SignedDuration::try_from(self.opts.heartbeat).unwrap_or_default()
            });
            if !force && !due {
                return Ok(());
            }
            s.last_heartbeat = Some(now);
        }
        let rec = SchedulerRecord {
            id: self.id.clone(),
            flows: self.flow_names(),
            host: braid_store::host_name(),
            pid: std::process::id(),
            started_at: self.started_at,
            seen_at: ts(now),
        };
        Ok(self.store.plans.heartbeat(&rec).await?)
    }

    /// Ids of processes whose heartbeat is recent, this one included. A process of this
    /// machine that has exited is dead at once, whatever its last heartbeat: a scheduler
    /// restarted after a crash adopts what the crashed one held without waiting.
    pub(crate) async fn live_holders(&self) -> PlanResult<Vec<String>> {
        let now = ts(self.now());
        let host = braid_store::host_name();
        let mut live: Vec<String> = self
            .store
            .plans
            .list_schedulers()
            .await?
            .into_iter()
            .filter(|s| heard_within(s.seen_at, now, self.opts.dead_after))
            .filter(|s| !(s.host == host && braid_store::process_exited(s.pid)))
            .map(|s| s.id)
            .collect();
        live.push(self.id.clone());
        Ok(live)
    }

    /// Launches of dead holders that are marked started but whose run never began (the
    /// holder died between the two writes) come back as pending launches held by this
    /// process, to be started exactly once; those whose run began and is now lost are
    /// finished as `lost` (resume the run to complete it). Returns the ones to start.
    pub(crate) async fn rescue_started(&self, live: &[String]) -> PlanResult<Vec<LaunchRecord>> {
        let q = LaunchQuery {
            states: vec![LaunchState::Started],
            flows: self.flow_names(),
            limit: 10_000,
            ..Default::default()
        };
        let mut rescued = Vec::new();
        for l in self.store.plans.list_launches(&q).await? {
            let Some(holder) = l.holder.clone().filter(|h| !live.contains(h)) else { continue };
            let Some(run_id) = l.run else { continue };
            let run = self.store.records.get_run(&l.flow, run_id).await?;
            let mut next = l.clone();
            next.updated_at = ts(self.now());
            match run {
                Some(r) if r.status == RunStatus::Pending && r.started_at.is_none() => {
                    next.state = LaunchState::Pending;
                    next.holder = Some(self.id.clone());
                    if self.store.plans.update_launch(&next, LaunchState::Started, Some(&holder)).await? {
                        tracing::info!(launch = %l.key, %holder, "adopted a launch whose run never began");
                        rescued.push(next);
                    }
                }
                Some(r) if r.status_now() == RunStatus::Lost || r.status.is_terminal() => {
                    next.state = LaunchState::Finished;
                    next.status = Some(r.status_now());
                    if r.status_now() == RunStatus::Lost {
                        next.note =
                            Some(format!("the run was lost with its scheduler {holder}; resume it to complete it"));
                    }
                    if self.store.plans.update_launch(&next, LaunchState::Started, Some(&holder)).await?
                        && let Some(m) = &self.metrics
                    {
                        m.run_ended(l.plan.as_str(), &l.set_key, r.status_now(), next.updated_at);
                    }
                }
                _ => {}
            }
        }
        Ok(rescued)
    }

    pub(crate) fn set_inactive(&self, inactive: HashSet<PlanName>) {
        self.lock().inactive = inactive;
    }

    /// The plans of queued launches, for a pass to find which of them were deleted.
    pub(crate) fn queued_plans(&self) -> HashSet<PlanName> {
        self.lock().queue.values().map(|l| l.plan.clone()).collect()
    }

    pub(crate) fn set_deleted(&self, deleted: HashSet<PlanName>) {
        self.lock().deleted = deleted;
    }

    /// Reads the paused parameter sets from the store (every pass: a pause made by
    /// another process, or a resume, takes effect here within a pass).
    pub(crate) async fn refresh_paused(&self) -> PlanResult<()> {
        let states = self.store.plans.list_set_states(None, true).await?;
        let mut paused = HashMap::with_capacity(states.len());
        for s in states {
            let Some(p) = &s.paused else { continue };
            let note = self.pause_note(&s.plan, s.version, &s.set_key, p.failures).await;
            paused.insert((s.plan, s.set_key), note);
        }
        self.lock().paused = paused;
        Ok(())
    }

    async fn pause_note(&self, plan: &PlanName, version: u32, set_key: &str, failures: u32) -> String {
        let set = match self.plan_version(plan, version).await {
            Ok(Some(p)) if !p.has_dynamic_sets() => p.parameter_sets().iter().find(|s| s.key == set_key).cloned(),
            // Sets produced per tick: the key is all there is.
            Ok(Some(_)) => super::ParamSet::from_key(set_key),
            _ => None,
        };
        match set {
            Some(set) => super::registry::pause_note(plan, &set, failures),
            None => format!("paused after {failures} consecutive failures; `braid plan resume-set {plan}` resumes it"),
        }
    }

    /// After a failed run: pauses its parameter set if the plan says so and the set's
    /// last `pause_after_failures` finished launches (of this version, ended after the
    /// set was last resumed) all failed.
    async fn pause_if_failing(&self, l: &LaunchRecord) {
        if let Err(e) = self.try_pause(l).await {
            tracing::error!(launch = %l.key, error = %e, "cannot check whether the parameter set should pause");
        }
    }

    async fn try_pause(&self, l: &LaunchRecord) -> PlanResult<()> {
        let Some(plan) = self.plan_version(&l.plan, l.version).await? else { return Ok(()) };
        let Some(n) = plan.pause_after_failures() else { return Ok(()) };
        let resumed = self
            .store
            .plans
            .list_set_states(Some(&l.plan), false)
            .await?
            .into_iter()
            .find(|s| s.set_key == l.set_key)
            .and_then(|s| s.resumed_at);
        let q = LaunchQuery {
            plan: Some(l.plan.clone()),
            set_key: Some(l.set_key.clone()),
            states: vec![LaunchState::Finished],
            limit: n as usize,
            ..Default::default()
        };
        let recent = self.store.plans.list_launches(&q).await?;
        let failing = recent.len() == n as usize
            && recent.iter().all(|r| {
                r.version == l.version
                    && r.status == Some(RunStatus::Failed)
                    && resumed.is_none_or(|t| r.updated_at > t)
            });
        if !failing {
            return Ok(());
        }
        let pause = SetPause { failures: n, runs: recent.iter().filter_map(|r| r.run).collect(), at: ts(self.now()) };
        if self.store.plans.pause_set(&l.plan, &l.set_key, l.version, pause).await? {
            let note = self.pause_note(&l.plan, l.version, &l.set_key, n).await;
            tracing::warn!(plan = %l.plan, set = %l.set_key, failures = n, "parameter set paused after consecutive failures");
            self.lock().paused.insert((l.plan.clone(), l.set_key.clone()), note.clone());
            self.emit(LaunchEvent::Paused { plan: l.plan.clone(), name: l.name.clone(), failures: n, reason: note });
        }
        Ok(())
    }

    /// `cancel_other` across scheduler replicas: cancels this process's runs of
    /// `cancel_other` sets for which a later tick is pending (claimed by any scheduler).
    /// One launch query per such run; a pass calls it.
    pub(crate) async fn cancel_superseded(&self) -> PlanResult<()> {
        let candidates: Vec<(String, (PlanName, String), Timestamp)> = self
            .lock()
            .runs
            .iter()
            .filter(|(_, h)| h.cancel_other && h.superseded_by.is_none())
            .map(|(k, h)| (k.clone(), h.set.clone(), h.tick))
            .collect();
        for (key, (plan, set_key), tick) in candidates {
            let q = LaunchQuery {
                plan: Some(plan),
                set_key: Some(set_key),
                states: vec![LaunchState::Pending],
                limit: 1,
                ..Default::default()
            };
            let Some(newer) = self.store.plans.list_launches(&q).await?.into_iter().next() else { continue };
            if newer.kind != LaunchKind::Scheduled || newer.tick <= tick {
                continue;
            }
            if let Some(h) = self.lock().runs.get_mut(&key).filter(|h| h.superseded_by.is_none()) {
                tracing::info!(launch = %key, newer = %newer.key, "cancelling a run superseded by a later tick (cancel_other)");
                h.superseded_by = Some(newer.tick);
                h.cancel.cancel();
            }
        }
        Ok(())
    }

    fn policies(&self) -> HashMap<(PlanName, u32), Concurrency> {
        self.policy.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Hands launches this process holds (won claims, adopted launches) to the queue,
    /// after reading the concurrency policy of each plan version among them.
    pub(crate) async fn enqueue(&self, launches: Vec<LaunchRecord>) {
        let known = self.policies();
        let wanted: HashSet<(PlanName, u32)> =
            launches.iter().map(|l| (l.plan.clone(), l.version)).filter(|k| !known.contains_key(k)).collect();
        for (plan, version) in wanted {
            let c = match self.plan_version(&plan, version).await {
                Ok(Some(p)) => p.concurrency(),
                Ok(None) => Concurrency::Allow,
                Err(e) => {
                    tracing::warn!(plan = %plan, version, error = %e, "cannot read the plan's concurrency policy; allowing");
                    Concurrency::Allow
                }
            };
            self.policy.lock().unwrap_or_else(|e| e.into_inner()).insert((plan, version), c);
        }
        let mut s = self.lock();
        for l in launches {
            s.queue.insert((l.tick, l.key.clone()), l);
        }
    }

    pub(crate) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    pub(crate) fn running(&self) -> usize {
        self.lock().running
    }

    pub(crate) fn take_outcomes(&self) -> Vec<LaunchOutcome> {
        std::mem::take(&mut self.lock().outcomes)
    }

    /// The parameter sets of `plan` (at `version`) for `tick`, produced if the plan's come
    /// from a command or a function. A failure is recorded in the store (one row per
    /// plan and tick, counted), counted in the plan metrics, logged and sent as an
    /// event; it is returned as `Err` with the recording's own error, if any, logged.
    pub(crate) async fn produce_sets(
        &self,
        plan: &LaunchPlan,
        version: u32,
        tick: jiff::Timestamp,
        kind: braid_store::LaunchKind,
    ) -> Result<Vec<super::ParamSet>, String> {
        if !plan.has_dynamic_sets() {
            return Ok(plan.parameter_sets().to_vec());
        }
        let Some(flow) = self.flows.get(plan.flow()) else {
            return Err(format!("flow `{}` is not hosted by this binary", plan.flow()));
        };
        let error = match super::matrix::produce_sets(plan, version, flow.spec(), tick, &self.matrix_fns).await {
            Ok(sets) => {
                tracing::debug!(plan = %plan.name(), %tick, sets = sets.len(), "parameter sets produced");
                return Ok(sets);
            }
            Err(e) => e,
        };
        tracing::error!(plan = %plan.name(), version, %tick, error = %error, "cannot produce the tick's parameter sets; nothing launched for it");
        if let Some(m) = &self.metrics {
            m.matrix_failed(plan.name().as_str());
        }
        let now = ts(self.now());
        let failure = braid_store::TickFailure {
            plan: plan.name().clone(),
            version,
            tick: ts(tick),
            kind,
            holder: self.id.clone(),
            error: error.clone(),
            failures: 1,
            first_at: now,
            last_at: now,
        };
        if let Err(e) = self.store.plans.record_tick_failure(&failure).await {
            tracing::error!(plan = %plan.name(), %tick, error = %e, "cannot record the failed tick");
        }
        self.emit(LaunchEvent::MatrixFailed { plan: plan.name().clone(), tick, error: error.clone() });
        Err(error)
    }

    /// The plan version a launch was claimed with (cached).
    pub(crate) async fn plan_version(&self, name: &PlanName, version: u32) -> PlanResult<Option<Arc<LaunchPlan>>> {
        if let Some(p) = self.plans.lock().unwrap_or_else(|e| e.into_inner()).get(&(name.clone(), version)) {
            return Ok(Some(p.clone()));
        }
        let Some(v) = self.store.plans.get_plan_version(name, version).await? else {
            return Ok(None);
        };
        let plan = Arc::new(LaunchPlan::from_json(&v.spec)?);
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).insert((name.clone(), version), plan.clone());
        Ok(Some(plan))
    }

    pub(crate) fn cache_plan(&self, version: u32, plan: Arc<LaunchPlan>) {
        self.policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((plan.name().clone(), version), plan.concurrency());
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).insert((plan.name().clone(), version), plan);
    }

    /// Starts whatever the policies and the global limit allow, in tick order. (Boxed:
    /// a run that ends dispatches again, from inside the task `dispatch` spawned.)
    pub(crate) fn dispatch(self: &Arc<Self>) -> futures_util::future::BoxFuture<'static, PlanResult<()>> {
        let this = self.clone();
        Box::pin(async move { this.dispatch_now().await })
    }

    async fn dispatch_now(self: &Arc<Self>) -> PlanResult<()> {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) || self.cancel.is_cancelled() {
            return Ok(());
        }
        // Runs of other live processes count for skip and queue.
        let mut elsewhere: HashSet<(PlanName, String)> = HashSet::new();
        let strict = self.policies().values().any(|c| *c != Concurrency::Allow);
        if strict && self.queued() > 0 {
            let live = self.live_holders().await?;
            let q = LaunchQuery {
                states: vec![LaunchState::Started],
                flows: self.flow_names(),
                limit: 100_000,
                ..Default::default()
            };
            for l in self.store.plans.list_launches(&q).await? {
                if l.holder.as_ref().is_some_and(|h| h != &self.id && live.contains(h)) {
                    elsewhere.insert((l.plan, l.set_key));
                }
            }
        }
        let policies = self.policies();
        let mut start: Vec<(LaunchRecord, OwnedSemaphorePermit, CancellationToken)> = Vec::new();
        let mut skip: Vec<(LaunchRecord, String)> = Vec::new();
        {
            let mut guard = self.lock();
            let st: &mut State = &mut guard;
            // Sets with a launch ahead in the queue that stays: later ticks wait behind it.
            let mut ahead: HashSet<(PlanName, String)> = HashSet::new();
            // `buffer_one` sets with a tick waiting already: later ticks are skipped.
            let mut buffered: HashSet<(PlanName, String)> = HashSet::new();
            // The latest queued scheduled tick of each `cancel_other` set: older ones are
            // superseded (starting them would only have them cancelled).
            let mut latest: HashMap<(PlanName, String), (Timestamp, String)> = HashMap::new();
            for (k, l) in st.queue.iter() {
                if l.kind == LaunchKind::Scheduled
                    && policies.get(&(l.plan.clone(), l.version)) == Some(&Concurrency::CancelOther)
                {
                    latest.insert((l.plan.clone(), l.set_key.clone()), k.clone());
                }
            }
            let mut cancels: Vec<((PlanName, String), Timestamp)> = Vec::new();
            let mut skips: Vec<((Timestamp, String), String)> = Vec::new();
            let mut starts: Vec<((Timestamp, String), OwnedSemaphorePermit, bool)> = Vec::new();
            for (k, l) in st.queue.iter() {
                let set = (l.plan.clone(), l.set_key.clone());
                if st.deleted.contains(&l.plan) {
                    skips.push((k.clone(), "the plan was deleted before this launch started".into()));
                    continue;
                }
                if l.kind == LaunchKind::Scheduled && st.inactive.contains(&l.plan) {
                    skips.push((k.clone(), "the plan was deactivated before this tick launched".into()));
                    continue;
                }
                if l.kind == LaunchKind::Scheduled
                    && let Some(note) = st.paused.get(&set)
                {
                    skips.push((k.clone(), note.clone()));
                    continue;
                }
                let declared = policies.get(&(l.plan.clone(), l.version)).copied().unwrap_or_default();
                let mut policy = declared;
                // `skip`, `buffer_one` and `cancel_other` are about ticks that come due while a
                // run goes; a backfill or a manual launch was asked for explicitly, so it waits
                // its turn instead.
                if matches!(policy, Concurrency::Skip | Concurrency::BufferOne | Concurrency::CancelOther)
                    && l.kind != LaunchKind::Scheduled
                {
                    policy = Concurrency::Queue;
                }
                let here = st.active.get(&set).is_some_and(|n| *n > 0);
                let busy = policy != Concurrency::Allow && (here || elsewhere.contains(&set) || ahead.contains(&set));
                match policy {
                    Concurrency::Skip if busy => {
                        let reason = "concurrency = \"skip\": the previous run of this parameter set was still going";
                        skips.push((k.clone(), reason.into()));
                        continue;
                    }
                    Concurrency::Queue if busy => {
                        ahead.insert(set);
                        continue;
                    }
                    Concurrency::BufferOne if busy => {
                        if buffered.contains(&set) {
                            let reason = "concurrency = \"buffer_one\": a run of this parameter set was going and \
                                          another tick was already waiting";
                            skips.push((k.clone(), reason.into()));
                        } else {
                            buffered.insert(set.clone());
                            ahead.insert(set);
                        }
                        continue;
                    }
                    Concurrency::CancelOther => {
                        if latest.get(&set).is_some_and(|newest| newest != k) {
                            let reason = "concurrency = \"cancel_other\": a later tick of this parameter set \
                                          came due before this one started";
                            skips.push((k.clone(), reason.into()));
                            continue;
                        }
                        if busy {
                            // Runs of this process are cancelled now; one of another replica
                            // is cancelled by that replica's next pass. This tick starts once
                            // the run has ended.
                            if here {
                                cancels.push((set.clone(), l.tick));
                            }
                            ahead.insert(set);
                            continue;
                        }
                    }
                    _ => {}
                }
                // In tick order: when no run may start, later launches wait too.
                let Ok(permit) = self.permits.clone().try_acquire_owned() else { break };
                *st.active.entry(set.clone()).or_default() += 1;
                st.running += 1;
                ahead.insert(set);
                starts.push((k.clone(), permit, declared == Concurrency::CancelOther));
            }
            for (set, tick) in cancels {
                for (key, h) in st.runs.iter_mut() {
                    if h.set == set && h.tick < tick && h.superseded_by.is_none() {
                        tracing::info!(launch = %key, "cancelling a run superseded by a later tick (cancel_other)");
                        h.superseded_by = Some(tick);
                        h.cancel.cancel();
                    }
                }
            }
            for (k, reason) in skips {
                if let Some(l) = st.queue.remove(&k) {
                    skip.push((l, reason));
                }
            }
            for (k, permit, cancel_other) in starts {
                if let Some(l) = st.queue.remove(&k) {
                    let cancel = self.cancel.child_token();
                    let handle = RunHandle {
                        set: (l.plan.clone(), l.set_key.clone()),
                        tick: l.tick,
                        cancel_other,
                        cancel: cancel.clone(),
                        superseded_by: None,
                    };
                    st.runs.insert(l.key.clone(), handle);
                    start.push((l, permit, cancel));
                }
            }
        }
        for (l, reason) in skip {
            self.skip(l, reason).await?;
        }
        for (l, permit, cancel) in start {
            self.start(l, permit, cancel).await;
        }
        Ok(())
    }

    async fn skip(&self, mut l: LaunchRecord, reason: String) -> PlanResult<()> {
        l.state = LaunchState::Skipped;
        l.note = Some(reason.clone());
        l.updated_at = ts(self.now());
        if self.store.plans.update_launch(&l, LaunchState::Pending, Some(&self.id)).await? {
            self.emit(LaunchEvent::Skipped {
                launch: l.key.clone(),
                name: l.name.clone(),
                tick: l.tick.to_jiff(),
                reason: reason.clone(),
            });
            self.record(&l, None);
            if let Some(m) = &self.metrics {
                m.launch(l.plan.as_str(), &l.set_key, LaunchOutcomeKind::Skipped);
            }
        }
        Ok(())
    }

    fn record(&self, l: &LaunchRecord, status: Option<RunStatus>) {
        self.lock().outcomes.push(LaunchOutcome {
            key: l.key.clone(),
            plan: l.plan.clone(),
            name: l.name.clone(),
            tick: l.tick.to_jiff(),
            flow: l.flow.clone(),
            run: l.run,
            status,
            state: l.state,
            note: l.note.clone(),
        });
    }

    fn release(&self, l: &LaunchRecord) {
        let mut s = self.lock();
        s.runs.remove(&l.key);
        if let Some(n) = s.active.get_mut(&(l.plan.clone(), l.set_key.clone())) {
            *n = n.saturating_sub(1);
        }
        s.running = s.running.saturating_sub(1);
    }

    async fn meta(&self, l: &LaunchRecord) -> serde_json::Map<String, Value> {
        let tz = match self.plan_version(&l.plan, l.version).await {
            Ok(Some(p)) => p.schedule().map(|s| s.time_zone()),
            _ => None,
        };
        let tick = l.tick.to_jiff();
        let set: Value = serde_json::from_str(&l.set_key).unwrap_or(Value::Null);
        let mut m = serde_json::Map::new();
        m.insert("plan".into(), json!(l.plan.as_str()));
        m.insert("plan_version".into(), json!(l.version));
        m.insert("tick".into(), json!(tick.to_string()));
        if let Some(tz) = tz {
            m.insert("tick_local".into(), json!(tick.to_zoned(tz).to_string()));
        }
        m.insert("parameter_set".into(), set);
        m.insert("launch".into(), json!(l.kind.as_str()));
        m.insert("launch_key".into(), json!(l.key));
        m.insert("launched_by".into(), json!(self.id));
        m
    }

    /// Starts a launch this process holds. Each step is a conditional write on the
    /// launch (state and holder), so a crash between any two leaves a launch that the
    /// next scheduler adopts and starts exactly once: the run id is recorded in the
    /// pending launch before the run exists; an adopter reuses it and takes over the
    /// run record if the dead scheduler had created it but not started it.
    async fn start(self: &Arc<Self>, mut l: LaunchRecord, permit: OwnedSemaphorePermit, cancel: CancellationToken) {
        crash_point!("launch-claimed");
        let Some(flow) = self.flows.get(&l.flow).cloned() else {
            let note = format!("flow `{}` is not hosted by this process", l.flow);
            self.fail_start(l, note).await;
            return;
        };
        if l.run.is_none() {
            let mut recorded = l.clone();
            recorded.run = Some(RunId::generate());
            recorded.updated_at = ts(self.now());
            match self.store.plans.update_launch(&recorded, LaunchState::Pending, Some(&self.id)).await {
                Ok(true) => l = recorded,
                Ok(false) => {
                    // Adopted by another process meanwhile: it starts the launch.
                    self.release(&l);
                    self.changed.notify_waiters();
                    return;
                }
                Err(e) => {
                    self.retry_later(l, "record the run id of", &e);
                    return;
                }
            }
        }
        crash_point!("launch-run-id-recorded");
        let opts = RunOptions {
            run_id: l.run,
            param_values: l.params.clone(),
            name: Some(l.name.clone()),
            meta: self.meta(&l).await,
            env_params: false,
            max_workers: self.opts.run_workers.max(1),
            cancel,
            metrics: self.task_metrics.clone(),
            execution: self.opts.execution.clone(),
            ..Default::default()
        };
        let prepared = match PreparedRun::prepare(flow.clone(), self.store.clone(), opts).await {
            Ok(p) => p,
            Err(e @ (crate::Error::Store(_) | crate::Error::Records(_))) => {
                self.retry_later(l, "create the run of", &e);
                return;
            }
            Err(e) => {
                let note = format!("could not start the run: {e}");
                self.fail_start(l, note).await;
                return;
            }
        };
        let run_id = prepared.run_id();
        crash_point!("launch-run-created");
        let mut started = l.clone();
        started.state = LaunchState::Started;
        started.run = Some(run_id);
        started.updated_at = ts(self.now());
        let won = match self.store.plans.update_launch(&started, LaunchState::Pending, Some(&self.id)).await {
            Ok(w) => w,
            Err(e) => {
                // The run was created but not started: the retry takes its record over.
                drop(prepared);
                self.retry_later(l, "mark started", &e);
                return;
            }
        };
        if !won {
            // Adopted by another process meanwhile: this run must not execute.
            drop(prepared);
            self.abandon(&flow, run_id).await;
            self.release(&l);
            self.changed.notify_waiters();
            return;
        }
        let pathspec = format!("{}/{run_id}", l.flow);
        self.emit(LaunchEvent::Started {
            launch: l.key.clone(),
            pathspec: pathspec.clone(),
            name: l.name.clone(),
            tick: l.tick.to_jiff(),
        });
        self.record(&started, None);
        if let Some(m) = &self.metrics {
            m.launch(l.plan.as_str(), &l.set_key, LaunchOutcomeKind::Started);
            if l.kind == LaunchKind::Scheduled {
                m.lag(l.plan.as_str(), l.tick, started.updated_at);
            }
        }
        crash_point!("launch-started");
        let this = self.clone();
        tokio::spawn(async move {
            let (status, error) = match prepared.execute().await {
                Ok(s) => (s.status, s.error),
                Err(e) => (RunStatus::Failed, Some(e.to_string())),
            };
            let superseded = this.lock().runs.get(&started.key).and_then(|h| h.superseded_by);
            let error = match superseded {
                Some(t) if status == RunStatus::Cancelled => Some(format!(
                    "cancelled: the tick {} of this parameter set came due (concurrency = \"cancel_other\")",
                    t.to_jiff()
                )),
                _ => error,
            };
            let mut finished = started.clone();
            finished.state = LaunchState::Finished;
            finished.status = Some(status);
            finished.note = error.clone();
            finished.updated_at = ts(this.now());
            match this.store.plans.update_launch(&finished, LaunchState::Started, Some(&this.id)).await {
                Ok(true) => {
                    if let Some(m) = &this.metrics {
                        m.run_ended(finished.plan.as_str(), &finished.set_key, status, finished.updated_at);
                    }
                }
                // Another process took the launch over and records its end.
                Ok(false) => {}
                Err(e) => tracing::error!(launch = %finished.key, error = %e, "cannot record a finished launch"),
            }
            {
                let mut s = this.lock();
                if let Some(o) = s.outcomes.iter_mut().find(|o| o.key == finished.key) {
                    o.status = Some(status);
                    o.state = LaunchState::Finished;
                    o.note = error.clone();
                }
            }
            if status == RunStatus::Failed {
                this.pause_if_failing(&finished).await;
            }
            this.emit(LaunchEvent::Finished {
                launch: finished.key.clone(),
                pathspec,
                name: finished.name.clone(),
                status,
                error,
            });
            this.release(&finished);
            drop(permit);
            // What waited for this run (its set's next tick, a permit) may start now.
            if let Err(e) = this.dispatch().await {
                tracing::error!(error = %e, "dispatch after a run ended failed");
            }
            this.changed.notify_waiters();
        });
    }

    /// A launch whose start failed on a store error (a full disk, an unreachable
    /// database) stays pending and held by this process, back in its queue: the next
    /// dispatch (every pass) tries again, so a tick is neither lost nor launched twice.
    fn retry_later(&self, l: LaunchRecord, what: &str, e: &dyn std::error::Error) {
        let cause = e.source().map(|c| format!(": {c}")).unwrap_or_default();
        tracing::error!(launch = %l.key, error = %e, "cannot {what} the launch{cause}; it stays pending and is retried");
        self.release(&l);
        self.lock().queue.insert((l.tick, l.key.clone()), l);
        self.changed.notify_waiters();
    }

    /// Records a launch whose run could not be created.
    async fn fail_start(&self, mut l: LaunchRecord, note: String) {
        l.state = LaunchState::Finished;
        l.status = Some(RunStatus::Failed);
        l.note = Some(note.clone());
        l.updated_at = ts(self.now());
        match self.store.plans.update_launch(&l, LaunchState::Pending, Some(&self.id)).await {
            Ok(true) => {
                if let Some(m) = &self.metrics {
                    m.launch(l.plan.as_str(), &l.set_key, LaunchOutcomeKind::FailedToStart);
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(launch = %l.key, error = %e, "cannot record a launch that failed to start"),
        }
        self.pause_if_failing(&l).await;
        self.emit(LaunchEvent::Skipped {
            launch: l.key.clone(),
            name: l.name.clone(),
            tick: l.tick.to_jiff(),
            reason: note,
        });
        self.record(&l, Some(RunStatus::Failed));
        self.release(&l);
        self.changed.notify_waiters();
    }

    /// Marks a prepared run that must not execute as cancelled, unless the process that
    /// adopted its launch took the record over already (the run then is theirs).
    async fn abandon(&self, flow: &Flow, run: RunId) {
        let records = &self.store.records;
        let mine = braid_store::process_holder("run");
        match records.get_run(flow.name(), run).await {
            Ok(Some(mut r)) if r.status == RunStatus::Pending && r.lease.as_ref().is_some_and(|l| l.holder == mine) => {
                r.status = RunStatus::Cancelled;
                r.ended_at = Some(Timestamp::now());
                r.error = Some("not started: another scheduler took over this launch".into());
                r.lease = None;
                if let Err(e) = records.update_run(&r).await {
                    // The adopter took the record over meanwhile (a conflict), or the store
                    // failed: either way the record is not ours to change any more, and a
                    // pending record left behind reads as lost once its lease runs out.
                    tracing::warn!(%run, error = %e, "could not mark an abandoned run cancelled");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(%run, error = %e, "could not read an abandoned run"),
        }
    }

    /// Dispatches until nothing runs and nothing queued can start, saying it is alive
    /// meanwhile (so no scheduler adopts what this process still holds).
    pub(crate) async fn drain(self: &Arc<Self>) -> PlanResult<()> {
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let this = self.clone();
        let _beat = AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(this.opts.heartbeat).await;
                if let Err(e) = this.heartbeat(true).await {
                    tracing::warn!(error = %e, "cannot record a heartbeat");
                }
            }
        }));
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.dispatch().await?;
            if self.running() == 0 {
                // Nothing runs: whatever is queued now can never start from here.
                if self.queued() == 0 {
                    return Ok(());
                }
                self.dispatch().await?;
                if self.running() == 0 {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Starts nothing new from now on (runs going are left alone).
    pub(crate) fn stop_starting(&self) {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Cancels the runs of this process (and starts nothing new).
    pub(crate) fn cancel_runs(&self) {
        self.stop_starting();
        self.cancel.cancel();
    }

    /// Lets go of pending launches (another scheduler adopts them at once) and removes
    /// this process's heartbeat.
    pub(crate) async fn shutdown(&self) -> PlanResult<u64> {
        let released = self.store.plans.release_launches(&self.id).await?;
        self.lock().queue.clear();
        self.store.plans.remove_scheduler(&self.id).await?;
        Ok(released)
    }
}
