//! A worker: a process of the flow binary that claims tasks of any run of the flows it
//! hosts from the store's queue, runs their attempts, and completes its claims with how
//! they went (the other side of `remote.rs`).
//!
//! A claim holds a task under a lease this worker renews for everything it holds in one
//! call ([`TaskQueue::extend`]) every quarter lease. Every record write of an attempt
//! names the claim's fencing token ([`Precondition::Claim`]), all of them through one
//! writer that batches them across attempts, so heartbeats and progress of many tasks
//! are one transaction. A heartbeat that finds a claim gone (its lease ran out while
//! this process was stopped, or the network was) stops that attempt: another worker has
//! it. A worker that dies holds nothing for long: its claims expire and any worker
//! claims them again, counted as lost dispatches. Draining (the first SIGTERM) stops
//! claiming and lets what is held finish within a grace period; then (or at a second
//! signal) the rest is handed back to the queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_core::{FlowName, TaskStatus, Timestamp};
use braid_store::{
    Claim, Precondition, Store, TaskDispatch, TaskError, TaskEvent, TaskEventKind, TaskQueue, TaskWrite, WriteOutcome,
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::isolate::{End, attempt_ctx, run_attempt};
use super::lock;
use super::remote::{CLAIM_LEASE, DEFAULT_QUEUE, RemoteTask, WorkerReply};
use crate::error::{Error, Result};
use crate::flow::Flow;
use crate::metrics::Metrics;
use crate::persist::Persister;

/// How a worker runs (`myflow worker`). Fields may be added: start from
/// [`WorkerOptions::default`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerOptions {
    /// The queue it claims from (`--queue`, default `default`).
    pub queue: String,
    /// Attempts it holds at once (`--concurrency`, default 16): claimed, running, or
    /// storing their results.
    pub concurrency: usize,
    /// Its claims' lease (default [`CLAIM_LEASE`]); renewed every quarter of it.
    pub lease: Duration,
    /// How long an idle worker waits for a wake-up before it claims again (the polling
    /// fallback, and what finds dead workers' tasks; default 1 s).
    pub poll: Duration,
    /// When draining, how long what it holds may take to finish before it is handed
    /// back (`--grace`, default 30 s).
    pub grace: Duration,
    /// Where it counts what it does (served by `--metrics-addr`).
    pub metrics: Option<Arc<Metrics>>,
    /// Whether it takes over runs whose driving process died (default true).
    pub adopt_runs: bool,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            queue: DEFAULT_QUEUE.to_owned(),
            concurrency: 16,
            lease: CLAIM_LEASE,
            poll: Duration::from_secs(1),
            grace: Duration::from_secs(30),
            metrics: None,
            adopt_runs: true,
        }
    }
}

/// How a worker is told to stop: [`WorkerStop::drain`] stops claiming and lets what it
/// holds finish within the grace period; [`WorkerStop::hand_back`] hands everything
/// back to the queue at once.
#[derive(Debug, Clone, Default)]
pub struct WorkerStop {
    /// Cancel to drain (the first SIGTERM or Ctrl-C).
    pub drain: CancellationToken,
    /// Cancel to hand everything back now (the second).
    pub hand_back: CancellationToken,
}

/// What a worker did, when it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Attempts claimed.
    pub claimed: u64,
    /// Attempts run and completed (succeeded or not).
    pub completed: u64,
    /// Results refused because another worker had taken the claim over.
    pub stale_results: u64,
    /// Record writes refused by their fencing check.
    pub stale_writes: u64,
    /// Claims a heartbeat found gone (their attempts were stopped).
    pub claims_lost: u64,
    /// Claims handed back unfinished when draining.
    pub handed_back: u64,
}

/// What the worker's attempts share.
struct WorkerShared {
    flows: HashMap<FlowName, Arc<Flow>>,
    store: Store,
    queue: Arc<dyn TaskQueue>,
    holder: String,
    persister: Persister,
    metrics: Option<Arc<Metrics>>,
    held: Mutex<HashMap<u64, Held>>,
    counts: Counts,
    /// Completions waiting for the completer, which sends them many per statement.
    completions:
        tokio::sync::mpsc::UnboundedSender<(u64, serde_json::Value, tokio::sync::oneshot::Sender<Option<bool>>)>,
}

#[derive(Default)]
struct Counts {
    claimed: AtomicU64,
    completed: AtomicU64,
    stale_results: AtomicU64,
    claims_lost: AtomicU64,
    handed_back: AtomicU64,
}

/// A claim this worker holds.
struct Held {
    lease: Duration,
    cancel: CancellationToken,
    /// Set when the attempt is stopped because the claim is gone.
    lost: Arc<AtomicBool>,
    /// Set when the attempt is stopped to hand the claim back.
    hand_back: Arc<AtomicBool>,
}

/// Runs a worker for `flows` over `store` until `stop` says: claims tasks of any run of
/// these flows from `opts.queue`, runs their attempts, and completes their claims.
/// Fails at once when the store has no queue (an fs store: workers need PostgreSQL).
pub async fn run_worker(
    flows: Vec<Arc<Flow>>,
    store: Store,
    opts: WorkerOptions,
    stop: WorkerStop,
) -> Result<WorkerReport> {
    let Some(queue) = store.queue().cloned() else {
        return Err(Error::Worker {
            reason: format!(
                "the store at {} has no task queue: workers share runs through PostgreSQL; \
                 start them with --store postgres://... (and --blobs for artifact values)",
                store.location()
            ),
        });
    };
    if store.reopen_location().is_none() {
        return Err(Error::Worker {
            reason: "a memory store cannot be shared with the process that runs the flow; use PostgreSQL".into(),
        });
    }
    if !super::remote::valid_queue_name(&opts.queue) {
        return Err(Error::Worker {
            reason: format!("--queue {:?}: a queue name is 1 to 64 ASCII letters, digits, `-` or `_`", opts.queue),
        });
    }
    let (completions, completed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(completer(queue.clone(), completed));
    let shared = Arc::new(WorkerShared {
        completions,
        flows: flows.into_iter().map(|f| (f.name().clone(), f)).collect(),
        persister: Persister::start_for_worker(store.clone()),
        store,
        queue: queue.clone(),
        holder: braid_store::process_holder("worker"),
        metrics: opts.metrics.clone(),
        held: Mutex::new(HashMap::new()),
        counts: Counts::default(),
    });
    tracing::info!(worker = %shared.holder, queue = %opts.queue, concurrency = opts.concurrency, "worker started");
    let beats = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat(shared.clone(), opts.lease, beats.clone()));
    let adopter = opts.adopt_runs.then(|| {
        tokio::spawn(super::adopt::adopt_runs(
            shared.flows.values().cloned().collect(),
            shared.store.clone(),
            shared.metrics.clone(),
            stop.drain.clone(),
        ))
    });
    let mut attempts = JoinSet::new();
    let concurrency = opts.concurrency.max(1);
    loop {
        while attempts.try_join_next().is_some() {}
        if stop.drain.is_cancelled() {
            break;
        }
        let mut free = concurrency.saturating_sub(attempts.len());
        // While busy, claim in batches: a slot that just opened waits up to 2 ms for
        // others, so a burst of trivial tasks costs one claim statement per few tasks,
        // not one each.
        if free > 0 && free < concurrency.div_ceil(4) && !attempts.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(2), async {
                while concurrency.saturating_sub(attempts.len()) < concurrency.div_ceil(4) {
                    if attempts.join_next().await.is_none() {
                        break;
                    }
                }
            })
            .await;
            free = concurrency.saturating_sub(attempts.len());
        }
        if free > 0 {
            match queue.claim(&opts.queue, &shared.holder, free, opts.lease, Timestamp::now()).await {
                Ok(claims) if !claims.is_empty() => {
                    let n = claims.len() as u64;
                    shared.counts.claimed.fetch_add(n, Ordering::Relaxed);
                    if let Some(m) = &shared.metrics {
                        m.worker_claimed(n);
                    }
                    for claim in claims {
                        let held = hold(&shared, &claim, opts.lease);
                        attempts.spawn(work_one(shared.clone(), claim, held));
                    }
                    if let Some(m) = &shared.metrics {
                        m.worker_held(attempts.len());
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(queue = %opts.queue, error = %e, "could not claim tasks; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.drain.cancelled() => {}
                    }
                    continue;
                }
            }
        }
        tokio::select! {
            _ = queue.wait(&opts.queue, opts.poll), if free > 0 => {}
            Some(_) = attempts.join_next(), if !attempts.is_empty() => {
                if let Some(m) = &shared.metrics {
                    m.worker_held(attempts.len());
                }
            }
            _ = stop.drain.cancelled() => {}
        }
    }
    if !attempts.is_empty() {
        tracing::info!(held = attempts.len(), grace = ?opts.grace, "draining: finishing what this worker holds");
    }
    tokio::select! {
        _ = async { while attempts.join_next().await.is_some() {} } => {}
        _ = tokio::time::sleep(opts.grace) => {}
        _ = stop.hand_back.cancelled() => {}
    }
    // Whatever is still held goes back to the queue, for another worker.
    for held in lock(&shared.held).values() {
        held.hand_back.store(true, Ordering::Release);
        held.cancel.cancel();
    }
    while attempts.join_next().await.is_some() {}
    if let Some(a) = adopter {
        a.abort();
    }
    beats.cancel();
    let _ = heartbeat.await;
    shared.persister.flush().await;
    let c = &shared.counts;
    let report = WorkerReport {
        claimed: c.claimed.load(Ordering::Relaxed),
        completed: c.completed.load(Ordering::Relaxed),
        stale_results: c.stale_results.load(Ordering::Relaxed),
        stale_writes: shared.persister.fenced_writes(),
        claims_lost: c.claims_lost.load(Ordering::Relaxed),
        handed_back: c.handed_back.load(Ordering::Relaxed),
    };
    tracing::info!(?report, "worker stopped");
    Ok(report)
}

/// Completes the claims the attempts hand it, as many per statement as have come (one
/// round trip for a burst of trivial tasks instead of one each); `None` answers a
/// completion the store could not take.
async fn completer(
    queue: Arc<dyn TaskQueue>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(u64, serde_json::Value, tokio::sync::oneshot::Sender<Option<bool>>)>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let (done, answers): (Vec<(u64, serde_json::Value)>, Vec<_>) =
            batch.drain(..).map(|(token, body, tx)| ((token, body), tx)).unzip();
        match queue.complete_many(done).await {
            Ok(results) => {
                for (tx, ok) in answers.into_iter().zip(results) {
                    let _ = tx.send(Some(ok));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not complete claims; their leases will expire and the tasks run again");
                for tx in answers {
                    let _ = tx.send(None);
                }
            }
        }
    }
}

/// Records `claim` as held, with the lease its heartbeats renew it by.
fn hold(shared: &WorkerShared, claim: &Claim, default_lease: Duration) -> HeldHandle {
    let lease = claim
        .task
        .payload
        .get("lease_ms")
        .and_then(serde_json::Value::as_u64)
        .map_or(default_lease, Duration::from_millis)
        .min(default_lease);
    let held = Held {
        lease,
        cancel: CancellationToken::new(),
        lost: Arc::new(AtomicBool::new(false)),
        hand_back: Arc::new(AtomicBool::new(false)),
    };
    let handle = HeldHandle { cancel: held.cancel.clone(), lost: held.lost.clone(), hand_back: held.hand_back.clone() };
    lock(&shared.held).insert(claim.token, held);
    handle
}

struct HeldHandle {
    cancel: CancellationToken,
    lost: Arc<AtomicBool>,
    hand_back: Arc<AtomicBool>,
}

/// Renews every claim this worker holds, one call per lease length, every quarter of
/// the shortest; stops the attempts whose claims are gone.
async fn heartbeat(shared: Arc<WorkerShared>, lease: Duration, stop: CancellationToken) {
    loop {
        let groups: HashMap<Duration, Vec<u64>> = {
            let held = lock(&shared.held);
            let mut g: HashMap<Duration, Vec<u64>> = HashMap::new();
            for (token, h) in held.iter() {
                g.entry(h.lease).or_default().push(*token);
            }
            g
        };
        let shortest = groups.keys().min().copied().unwrap_or(lease);
        for (lease, tokens) in groups {
            match shared.queue.extend(&shared.holder, &tokens, lease, Timestamp::now()).await {
                Ok(kept) => {
                    let gone: Vec<u64> = tokens.into_iter().filter(|t| kept.binary_search(t).is_err()).collect();
                    if gone.is_empty() {
                        continue;
                    }
                    let held = lock(&shared.held);
                    let mut lost = 0;
                    for t in &gone {
                        // A claim completed meanwhile is no longer held: nothing to stop.
                        if let Some(h) = held.get(t) {
                            lost += 1;
                            h.lost.store(true, Ordering::Release);
                            h.cancel.cancel();
                        }
                    }
                    if lost > 0 {
                        tracing::warn!(
                            worker = %shared.holder,
                            claims = lost,
                            "claims lost: their leases expired before this heartbeat (was this process stopped or cut off?); \
                             their attempts are stopped, another worker runs them"
                        );
                        shared.counts.claims_lost.fetch_add(lost, Ordering::Relaxed);
                        if let Some(m) = &shared.metrics {
                            m.worker_claims_lost(lost);
                        }
                    }
                }
                Err(e) => tracing::warn!(worker = %shared.holder, error = %e, "could not renew this worker's claims"),
            }
        }
        if let Some(m) = &shared.metrics {
            m.worker_stale_writes(shared.persister.fenced_writes());
        }
        tokio::select! {
            _ = tokio::time::sleep((shortest / 4).max(Duration::from_millis(50))) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Runs the attempt of one claim and completes the claim with how it went.
async fn work_one(shared: Arc<WorkerShared>, claim: Claim, held: HeldHandle) {
    let token = claim.token;
    run_claim(&shared, claim, &held).await;
    lock(&shared.held).remove(&token);
}

async fn run_claim(shared: &WorkerShared, claim: Claim, held: &HeldHandle) {
    let token = claim.token;
    let (run, task_id) = (claim.task.run, claim.task.task);
    let remote: RemoteTask = match serde_json::from_value(claim.task.payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(%run, task = %task_id, error = %e, "a queued task does not read (queued by another version of braid?); dropped");
            let _ = shared.queue.finish(token).await;
            return;
        }
    };
    let Some(flow) = shared.flows.get(&remote.spec.flow).cloned() else {
        tracing::warn!(
            flow = %remote.spec.flow,
            queue = %claim.task.queue,
            "this worker does not host flow `{}`: handing its task back (give each flow binary a queue of its own with --queue)",
            remote.spec.flow
        );
        let _ = shared.queue.release(token).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        return;
    };
    let attempt = remote.spec.attempt;
    let lost_before = claim.dispatches.saturating_sub(1);
    if claim.dispatches > remote.max_dispatches {
        let error = TaskError {
            kind: "lost".into(),
            message: format!(
                "attempt {attempt} was dispatched {lost_before} times and each worker holding it stopped heartbeating \
                 (killed, out of memory, or cut off) before it ended; not dispatched again"
            ),
        };
        complete(shared, token, WorkerReply { attempt, end: End::Failed { error }, sets: Vec::new(), record: None })
            .await;
        return;
    }
    let policy_lease = flow.steps.get(&remote.spec.step).map(|s| s.policy.lease);
    let ctx = match attempt_ctx(
        flow.clone(),
        remote.spec,
        shared.store.clone(),
        shared.persister.clone(),
        Some(token),
        shared.metrics.clone(),
        &held.cancel,
    ) {
        Ok(c) => c,
        Err(message) => {
            let error = TaskError { kind: "worker".into(), message };
            complete(
                shared,
                token,
                WorkerReply { attempt, end: End::Failed { error }, sets: Vec::new(), record: None },
            )
            .await;
            return;
        }
    };
    // The first write says the attempt runs here, under this claim.
    let started = Timestamp::now();
    let first = {
        let mut rec = lock(&ctx.inner.record);
        rec.status = TaskStatus::Running;
        rec.started_at = Some(started);
        rec.lease_deadline = policy_lease.map(|l| started.plus(l));
        rec.dispatch = Some(TaskDispatch::new(token, shared.holder.clone(), lost_before));
        if lost_before > 0 {
            let percent = rec.progress.as_ref().map(|p| p.percent);
            rec.push_event(TaskEvent {
                at: started,
                attempt,
                kind: TaskEventKind::Lost,
                percent,
                message: format!(
                    "dispatch {lost_before} of attempt {attempt} was lost (its worker stopped heartbeating); \
                     running again on {}",
                    shared.holder
                ),
            });
        }
        TaskWrite { precondition: Precondition::Claim { attempt, token }, ..TaskWrite::new(rec.clone()) }
    };
    match shared.persister.write(Vec::new(), first).await {
        Ok(WriteOutcome::Applied { .. }) => {}
        Ok(WriteOutcome::Rejected { reason }) => {
            // The attempt ended meanwhile (the run was cancelled, or its driver gave up
            // on it), or a later claim holds it: nothing to run.
            tracing::info!(%run, task = %task_id, %attempt, %reason, "not running a task whose attempt is no longer this claim's");
            if !reason.is_fenced() || matches!(reason, braid_store::Rejection::AttemptEnded { .. }) {
                let _ = shared.queue.finish(token).await;
            }
            return;
        }
        Err(e) => {
            tracing::warn!(%run, task = %task_id, error = %e, "could not record the attempt's start; handing it back");
            let _ = shared.queue.release(token).await;
            return;
        }
    }
    let (end, sets) = run_attempt(&flow, &ctx, &shared.store, &held.cancel, true).await;
    if held.lost.load(Ordering::Acquire) {
        ctx.log_at("WARN", format!("claim {token} was lost before attempt {attempt} ended: its result is not kept"));
        return;
    }
    if held.hand_back.load(Ordering::Acquire) {
        ctx.log_at("WARN", format!("worker {} is stopping: attempt {attempt} handed back to the queue", shared.holder));
        shared.persister.flush().await;
        match shared.queue.release(token).await {
            Ok(true) => {
                shared.counts.handed_back.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &shared.metrics {
                    m.worker_handed_back();
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%run, task = %task_id, error = %e, "could not hand a task back; its lease will expire")
            }
        }
        return;
    }
    // Everything the attempt wrote is durable before the driver writes the end.
    shared.persister.flush().await;
    let mut record = lock(&ctx.inner.record).clone();
    if let (Some(p), at) = crate::progress::latest(&ctx) {
        record.progress = Some(p);
        record.progress_at = at;
    }
    complete(shared, token, WorkerReply { attempt, end, sets, record: Some(Box::new(record)) }).await;
}

async fn complete(shared: &WorkerShared, token: u64, reply: WorkerReply) {
    let body = match serde_json::to_value(&reply) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(token, error = %e, "a reply could not be encoded");
            return;
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if shared.completions.send((token, body, tx)).is_err() {
        return;
    }
    match rx.await.ok().flatten() {
        Some(true) => {
            shared.counts.completed.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &shared.metrics {
                m.worker_completed();
            }
        }
        Some(false) => {
            tracing::warn!(
                worker = %shared.holder,
                token,
                "result refused: the claim was taken over (its lease expired before the attempt ended), so another \
                 worker's result counts"
            );
            shared.counts.stale_results.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &shared.metrics {
                m.worker_stale_result();
            }
        }
        // The completer said why.
        None => {}
    }
}
