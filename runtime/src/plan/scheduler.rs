//! The scheduler: serves every active plan of the flows a binary hosts.
//!
//! One *pass* reads the plans (without their content, which is cached by version),
//! finds the ticks that came due since each plan's cursor, applies the catch-up policy,
//! claims every (plan, tick, parameter set) in one batched conditional write, moves the
//! cursors, adopts pending launches of schedulers that stopped, and starts what the
//! concurrency policies and the global limit allow. A claim lost to another scheduler
//! (or to an earlier run of this one) is simply not launched here: that is the whole of
//! at-most-once, and it holds across restarts because claims live in the store.
//!
//! A plan whose parameter sets come from a command or a function gets them produced for
//! each due tick (a few at a time); a tick they cannot be produced for is recorded as a
//! failed tick, and the claims of the others go in the same batch.
//!
//! Each pass also re-reads the paused parameter sets (their ticks are claimed and
//! recorded as skipped), notices plans deleted since their launches were queued (those
//! launches are skipped), and cancels this scheduler's `cancel_other` runs that a later
//! tick claimed by another replica supersedes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_core::{PlanName, RunStatus, Timestamp};
use braid_store::{LaunchKind, LaunchQuery, LaunchState, PlanQuery};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::dispatch::{DispatchOptions, LaunchEnv, LaunchEvent, LaunchOutcome, Launcher};
use super::error::PlanResult;
use super::launch::scheduled_launches;
use super::model::{CatchUp, LaunchPlan};

/// Most due ticks one plan contributes to a pass (older ones count as missed).
const MAX_DUE_TICKS: usize = 10_000;
/// Parameter set commands or functions running at once in a pass.
const MATRIX_CONCURRENCY: usize = 8;

/// How a scheduler runs. Fields may be added: start from `SchedulerOptions::default()`.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Limits and liveness of the launches it starts.
    pub dispatch: DispatchOptions,
    /// Longest wait between passes (new launch requests, adoptions, and ticks are
    /// noticed at least this often).
    pub poll: Duration,
    /// Most pending launches adopted per pass.
    pub adopt_batch: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { dispatch: DispatchOptions::default(), poll: Duration::from_secs(1), adopt_batch: 1000 }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    /// Active scheduled plans evaluated.
    pub plans: usize,
    /// Plans that had due ticks.
    pub due_plans: usize,
    /// (tick, parameter set) pairs claimed for: won + lost.
    pub claims: usize,
    /// Claims this pass won (now launching or queued).
    pub won: usize,
    /// Claims already held (launched before, or by another scheduler).
    pub lost: usize,
    /// Due ticks left out by catch-up policies.
    pub missed: usize,
    /// Pending launches taken over from stopped schedulers or launch requests.
    pub adopted: usize,
    /// Due ticks whose parameter sets could not be produced (recorded as failed ticks).
    pub failed_ticks: usize,
    /// The next tick of any plan after this pass.
    pub next_tick: Option<jiff::Timestamp>,
}

struct Cached {
    version: u32,
    plan: Arc<LaunchPlan>,
    /// The point ticks are counted from, and the first tick after it.
    start: Timestamp,
    next: Option<jiff::Timestamp>,
}

/// A scheduler over the flows of one binary. See the module docs.
#[derive(Debug)]
pub struct Scheduler {
    d: Arc<Launcher>,
    opts: SchedulerOptions,
    cache: Mutex<HashMap<PlanName, Cached>>,
    /// Whether the plan metrics were read back from the store (first pass).
    restored: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cached({} v{})", self.plan.name(), self.version)
    }
}

impl Scheduler {
    /// A scheduler for the flows of `env`.
    pub fn new(env: &LaunchEnv, opts: SchedulerOptions) -> Self {
        let d = Arc::new(Launcher::new(env, "scheduler", opts.dispatch.clone()));
        Scheduler { d, opts, cache: Mutex::new(HashMap::new()), restored: std::sync::atomic::AtomicBool::new(false) }
    }

    /// This scheduler's id (the holder of the launches it claims).
    pub fn id(&self) -> &str {
        &self.d.id
    }

    /// Runs started and not ended.
    pub fn running(&self) -> usize {
        self.d.running()
    }

    /// Launches claimed and waiting to start.
    pub fn queued(&self) -> usize {
        self.d.queued()
    }

    /// What happened to the launches this scheduler handled since the last call.
    pub fn take_outcomes(&self) -> Vec<LaunchOutcome> {
        self.d.take_outcomes()
    }

    /// One pass at the clock's current time.
    pub async fn pass(&self) -> PlanResult<PassReport> {
        let now = self.d.now();
        let now_ts = Timestamp::from_jiff(now);
        self.d.heartbeat(false).await?;
        let mut report = PassReport::default();
        let query = PlanQuery { flows: self.d.flow_names(), without_spec: true, ..Default::default() };
        let records = self.d.store.plans.list_plans(&query).await?;
        self.d.set_inactive(records.iter().filter(|r| !r.active).map(|r| r.name.clone()).collect());

        self.load_uncached(&records).await?;
        self.restore_metrics(&records).await;
        let mut claims = Vec::new();
        let mut cursors = Vec::new();
        let mut seen: HashSet<PlanName> = HashSet::new();
        // (plan, version, tick) whose parameter sets a command or function produces.
        let mut dynamic: Vec<(Arc<LaunchPlan>, u32, jiff::Timestamp)> = Vec::new();
        for rec in records.iter().filter(|r| r.active) {
            seen.insert(rec.name.clone());
            let Some(start) = rec.cursor.max(rec.active_since) else { continue };
            let plan = match self.cached_plan(rec.name.clone(), rec.version).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(plan = %rec.name, version = rec.version, error = %e, "cannot read plan; skipping it");
                    continue;
                }
            };
            let Some(schedule) = plan.schedule() else { continue };
            report.plans += 1;
            // The first tick after `start`, computed once per cursor move.
            let next = {
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                match cache.get_mut(&rec.name) {
                    Some(c) if c.version == rec.version && c.start == start => c.next,
                    Some(c) => {
                        c.start = start;
                        c.next = schedule.next_after(start.to_jiff());
                        if let Some(m) = &self.d.metrics {
                            m.next_tick(rec.name.as_str(), c.next);
                        }
                        c.next
                    }
                    None => None,
                }
            };
            let Some(next) = next else { continue };
            if next > now {
                report.next_tick = Some(report.next_tick.map_or(next, |t: jiff::Timestamp| t.min(next)));
                continue;
            }
            report.due_plans += 1;
            let (due, more) = schedule.latest_ticks(start.to_jiff(), now, MAX_DUE_TICKS);
            let Some(&latest) = due.last() else { continue };
            let chosen: Vec<jiff::Timestamp> = match plan.catch_up() {
                CatchUp::Latest => vec![latest],
                CatchUp::All { limit } => due[due.len().saturating_sub(limit as usize)..].to_vec(),
                CatchUp::None { grace } => {
                    let floor =
                        now.checked_sub(jiff::SignedDuration::try_from(grace).unwrap_or_default()).unwrap_or(now);
                    due.iter().copied().filter(|t| *t >= floor).collect()
                }
            };
            let missed = due.len() - chosen.len();
            if missed > 0 || more {
                report.missed += missed;
                self.d.emit(LaunchEvent::MissedTicks {
                    plan: rec.name.clone(),
                    skipped: missed,
                    policy: plan.catch_up().to_string(),
                });
                tracing::warn!(plan = %rec.name, missed, more, policy = %plan.catch_up(), "missed ticks left out by the catch-up policy");
                if let Some(m) = &self.d.metrics
                    && missed > 0
                {
                    m.skipped(rec.name.as_str(), plan.parameter_sets().iter().map(|s| s.key.clone()), missed as u64);
                }
            }
            if plan.has_dynamic_sets() {
                dynamic.extend(chosen.into_iter().map(|tick| (plan.clone(), rec.version, tick)));
            } else {
                for tick in chosen {
                    claims.extend(scheduled_launches(
                        &plan,
                        rec.version,
                        LaunchKind::Scheduled,
                        tick,
                        plan.parameter_sets(),
                        &self.d.id,
                        now_ts,
                    ));
                }
            }
            cursors.push((rec.name.clone(), Timestamp::from_jiff(latest)));
            let after = schedule.next_after(latest);
            if let Some(n) = after {
                report.next_tick = Some(report.next_tick.map_or(n, |t: jiff::Timestamp| t.min(n)));
            }
            if let Some(c) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&rec.name) {
                c.start = Timestamp::from_jiff(latest);
                c.next = after;
            }
            if let Some(m) = &self.d.metrics {
                m.next_tick(rec.name.as_str(), after);
            }
        }
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).retain(|name, _| {
            let keep = seen.contains(name);
            if !keep && let Some(m) = &self.d.metrics {
                // Deactivated or deleted: it has no next tick any more.
                m.next_tick(name.as_str(), None);
            }
            keep
        });

        // Commands and functions run a few at a time: one slow site list does not hold
        // up every other plan's. A failed tick is recorded (and its cursor moves on:
        // `backfill` retries it).
        let produced: Vec<_> = futures_util::stream::iter(dynamic)
            .map(|(plan, version, tick)| async move {
                let sets = self.d.produce_sets(&plan, version, tick, LaunchKind::Scheduled).await;
                (plan, version, tick, sets)
            })
            .buffer_unordered(MATRIX_CONCURRENCY)
            .collect()
            .await;
        for (plan, version, tick, sets) in produced {
            match sets {
                Ok(sets) => claims.extend(scheduled_launches(
                    &plan,
                    version,
                    LaunchKind::Scheduled,
                    tick,
                    &sets,
                    &self.d.id,
                    now_ts,
                )),
                Err(_) => report.failed_ticks += 1,
            }
        }

        report.claims = claims.len();
        if !claims.is_empty() {
            let outcome = self.d.store.plans.claim_launches(claims.clone()).await?;
            let won: Vec<_> = claims.into_iter().zip(outcome).filter(|(_, w)| *w).map(|(l, _)| l).collect();
            report.won = won.len();
            report.lost = report.claims - report.won;
            self.d.enqueue(won).await;
        }
        self.d.store.plans.advance_cursors(cursors).await?;

        let live = self.d.live_holders().await?;
        let adopted =
            self.d.store.plans.adopt_launches(&self.d.flow_names(), &live, &self.d.id, self.opts.adopt_batch).await?;
        let rescued = self.d.rescue_started(&live).await?;
        report.adopted = adopted.len() + rescued.len();
        self.d.enqueue(adopted).await;
        self.d.enqueue(rescued).await;
        self.find_deleted(&records).await?;
        self.d.refresh_paused().await?;
        self.d.cancel_superseded().await?;
        self.d.dispatch().await?;
        Ok(report)
    }

    /// Once per scheduler, on its first pass with plan metrics: reads every set's
    /// consecutive failures and last success back from the plans' finished launches
    /// (the newest 1000 of each plan), so the gauges survive a restart. A store error
    /// is logged and the next pass tries again.
    async fn restore_metrics(&self, records: &[braid_store::PlanRecord]) {
        use std::sync::atomic::Ordering;
        let Some(m) = &self.d.metrics else { return };
        if self.restored.load(Ordering::Relaxed) {
            return;
        }
        for rec in records {
            let q = LaunchQuery {
                plan: Some(rec.name.clone()),
                states: vec![LaunchState::Finished],
                limit: 1000,
                ..Default::default()
            };
            let launches = match self.d.store.plans.list_launches(&q).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(plan = %rec.name, error = %e, "cannot read the plan's launches for its metrics; retrying next pass");
                    return;
                }
            };
            // Newest first: failures count until the first success.
            let mut sets: HashMap<&str, (i64, Option<Timestamp>)> = HashMap::new();
            for l in &launches {
                let e = sets.entry(l.set_key.as_str()).or_default();
                if e.1.is_some() {
                    continue;
                }
                match l.status {
                    Some(RunStatus::Succeeded) => e.1 = Some(l.updated_at),
                    Some(RunStatus::Failed) => e.0 += 1,
                    _ => {}
                }
            }
            for (key, (failures, last)) in sets {
                m.restore(rec.name.as_str(), key, failures, last);
            }
        }
        self.restored.store(true, Ordering::Relaxed);
    }

    /// Plans of queued launches that the listing (live plans, by name) lacks and the
    /// store says were deleted: their launches are skipped, not started.
    async fn find_deleted(&self, records: &[braid_store::PlanRecord]) -> PlanResult<()> {
        let mut deleted = HashSet::new();
        for name in self.d.queued_plans() {
            if records.binary_search_by(|r| r.name.cmp(&name)).is_ok() {
                continue;
            }
            if self.d.store.plans.get_plan(&name).await?.is_some_and(|p| p.deleted_at.is_some()) {
                deleted.insert(name);
            }
        }
        self.d.set_deleted(deleted);
        Ok(())
    }

    /// Reads the content of every plan not cached at its version in one query (a cold
    /// start over thousands of plans), instead of one read per plan.
    async fn load_uncached(&self, records: &[braid_store::PlanRecord]) -> PlanResult<()> {
        let missing: HashMap<&PlanName, u32> = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            records
                .iter()
                .filter(|r| r.active && cache.get(&r.name).is_none_or(|c| c.version != r.version))
                .map(|r| (&r.name, r.version))
                .collect()
        };
        if missing.len() < 16 {
            return Ok(());
        }
        let query = PlanQuery { flows: self.d.flow_names(), active: Some(true), ..Default::default() };
        for rec in self.d.store.plans.list_plans(&query).await? {
            if missing.get(&rec.name) != Some(&rec.version) {
                continue;
            }
            match LaunchPlan::from_json(&rec.spec) {
                Ok(plan) => {
                    let plan = Arc::new(plan);
                    self.d.cache_plan(rec.version, plan.clone());
                    self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
                        rec.name.clone(),
                        Cached { version: rec.version, plan, start: Timestamp::from_micros(i64::MIN), next: None },
                    );
                }
                Err(e) => tracing::warn!(plan = %rec.name, error = %e, "cannot read plan; skipping it"),
            }
        }
        Ok(())
    }

    async fn cached_plan(&self, name: PlanName, version: u32) -> PlanResult<Arc<LaunchPlan>> {
        if let Some(c) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&name)
            && c.version == version
        {
            return Ok(c.plan.clone());
        }
        let plan = self.d.plan_version(&name, version).await?.ok_or_else(|| super::error::PlanError::UnknownPlan {
            plan: name.to_string(),
            hint: format!(" (version {version} is missing)"),
        })?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, Cached { version, plan: plan.clone(), start: Timestamp::from_micros(i64::MIN), next: None });
        Ok(plan)
    }

    /// Starts what can start now (after runs ended); a pass does this too.
    pub async fn dispatch(&self) -> PlanResult<()> {
        self.d.dispatch().await
    }

    /// Passes until `stop` is cancelled: at each tick, and at least every `poll`; runs
    /// that end let queued launches start at once.
    pub async fn run(&self, stop: &CancellationToken) -> PlanResult<()> {
        self.d.heartbeat(true).await?;
        loop {
            let next = match self.pass().await {
                Ok(r) => r.next_tick,
                Err(e) => {
                    tracing::error!(error = %e, "scheduler pass failed; retrying");
                    None
                }
            };
            let mut wait = self.opts.poll;
            if let Some(n) = next {
                let until = n.duration_since(self.d.now());
                let until = Duration::try_from(until).unwrap_or(Duration::ZERO);
                wait = wait.min(until);
            }
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let notified = self.d.changed.notified();
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = notified => {
                        if let Err(e) = self.d.dispatch().await {
                            tracing::error!(error = %e, "dispatch failed");
                        }
                    }
                    _ = stop.cancelled() => return Ok(()),
                }
            }
        }
    }

    /// Waits until no run of this scheduler is going, starting queued launches as runs
    /// end.
    pub async fn drain(&self) -> PlanResult<()> {
        self.d.drain().await
    }

    /// Stops: optionally cancels running runs and waits for them, lets go of pending
    /// launches (another scheduler adopts them at once) and removes the heartbeat.
    /// Returns how many pending launches were let go.
    pub async fn shutdown(&self, cancel_runs: bool) -> PlanResult<u64> {
        self.d.stop_starting();
        if cancel_runs {
            self.d.cancel_runs();
        }
        while self.d.running() > 0 {
            let notified = self.d.changed.notified();
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        self.d.shutdown().await
    }
}
