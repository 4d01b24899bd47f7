//! Attempts run by workers, the side of the process that runs the flow (the *driver*).
//!
//! A run on workers keeps its routing here, in the dispatcher, exactly as in-process;
//! only an attempt's body goes elsewhere. [`run_remote`] is the one-attempt seam an
//! isolated step already uses, over the database instead of a Unix socket: the task
//! (its [`TaskSpec`], what it inherits as records) goes into the store's
//! [`TaskQueue`](braid_store::TaskQueue); a worker claims it, writes the attempt's
//! progress, heartbeats and logs to the store itself (each write fenced by its claim's
//! token), puts the blobs of what it set, and completes its claim with a [`WorkerReply`]
//! — in one statement that fails for a stale claim, so only the current holder's result
//! ever arrives. The driver reads the replies of its run in batches ([`Remote`]), and
//! writes the task's final record through its own writer, as for an in-process attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_core::{Attempt, RunId, TaskId};
use braid_store::{ArtifactRecord, QueuedTask, TaskError, TaskQueue, TaskRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::isolate::{End, TaskSpec, failed, spec_of};
use super::lock;
use super::task::AttemptEnd;
use crate::context::{Ctx, LocalSet};
use crate::flow::StepPolicy;
use crate::namespace::ArtRef;

/// The queue a run's tasks wait in unless its step names one.
pub const DEFAULT_QUEUE: &str = "default";

/// How long a worker's claim on a task lasts without a heartbeat; the worker renews it
/// every [`CLAIM_LEASE`]` / 4`, so a worker killed with `kill -9` loses its tasks to
/// another within this (plus the other's poll interval, 1 s). A step whose
/// `.lease(d)` is shorter uses `d`.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10);

/// How many times a task's attempt is handed to a worker before it fails as lost: each
/// dispatch after the first means the worker holding it died or stopped heartbeating.
/// Counted apart from the step's `.retries(n)`, which are for failures.
pub const MAX_DISPATCHES: u32 = 4;

/// Whether `name` may name a queue: 1 to 64 ASCII letters, digits, `-` or `_`.
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a queued task's payload holds.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RemoteTask {
    pub(super) spec: TaskSpec,
    /// The claim's lease in milliseconds (the step's lease when shorter than [`CLAIM_LEASE`]).
    pub(super) lease_ms: u64,
    /// Past this many dispatches, the attempt fails as lost without running.
    pub(super) max_dispatches: u32,
}

/// What a worker says about an attempt when it completes its claim.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WorkerReply {
    pub(super) attempt: Attempt,
    pub(super) end: End,
    /// The records of what the attempt set (their blobs are stored).
    pub(super) sets: Vec<ArtifactRecord>,
    /// The task's record as the worker last wrote it (progress, events, its claim);
    /// `None` when no worker ran it.
    pub(super) record: Option<Box<TaskRecord>>,
}

/// A run's link to its workers: tasks go out through one batching sender, replies come
/// back through one reader that hands each to the attempt waiting for it.
pub(crate) struct Remote {
    pub(super) queue: Arc<dyn TaskQueue>,
    pub(super) default_queue: String,
    waiting: Mutex<HashMap<TaskId, (Attempt, oneshot::Sender<WorkerReply>)>>,
    outbox: mpsc::UnboundedSender<QueuedTask>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote(queue {})", self.default_queue)
    }
}

impl Remote {
    /// Starts the sender and the reply reader of `run`; both end with [`Remote::stop`].
    pub(crate) fn start(queue: Arc<dyn TaskQueue>, run: RunId, default_queue: String) -> Arc<Remote> {
        let (outbox, rx) = mpsc::unbounded_channel();
        let remote = Arc::new(Remote {
            queue,
            default_queue,
            waiting: Mutex::new(HashMap::new()),
            outbox,
            stop: CancellationToken::new(),
        });
        tokio::spawn(send(Arc::downgrade(&remote), rx));
        tokio::spawn(read_replies(Arc::downgrade(&remote), run, remote.stop.clone()));
        remote
    }

    /// Stops reading replies and removes what the run still has in the queue: a
    /// worker still running one of its tasks can no longer complete it.
    pub(crate) async fn stop(&self, run: RunId) {
        self.stop.cancel();
        match self.queue.clear_run(run).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(%run, tasks = n, "removed the run's tasks still queued"),
            Err(e) => tracing::warn!(%run, error = %e, "could not remove the run's tasks from the queue"),
        }
    }

    fn answer(&self, task: TaskId, reply: WorkerReply) {
        let mut waiting = lock(&self.waiting);
        match waiting.remove(&task) {
            Some((attempt, tx)) if attempt == reply.attempt => {
                // The attempt may have stopped waiting (cancelled): nothing to do.
                let _ = tx.send(reply);
            }
            Some(other) => {
                waiting.insert(task, other);
                tracing::debug!(%task, attempt = %reply.attempt, "a reply for an attempt nobody waits for");
            }
            None => tracing::debug!(%task, "a reply for a task this run does not wait for"),
        }
    }

    fn fail_waiting(&self, tasks: &[TaskId], why: &str) {
        let mut waiting = lock(&self.waiting);
        for t in tasks {
            if let Some((attempt, tx)) = waiting.remove(t) {
                let error = TaskError { kind: "dispatch".into(), message: why.to_owned() };
                let _ = tx.send(WorkerReply { attempt, end: End::Failed { error }, sets: Vec::new(), record: None });
            }
        }
    }
}

/// Queues what the run's attempts hand it, as many per statement as have come.
async fn send(remote: std::sync::Weak<Remote>, mut rx: mpsc::UnboundedReceiver<QueuedTask>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1000).await > 0 {
        let Some(r) = remote.upgrade() else { return };
        let tasks: Vec<TaskId> = batch.iter().map(|t| t.task).collect();
        let n = batch.len();
        // Transient failures are retried by the store; one that is not fails the
        // attempts, which their retries and `resume` deal with.
        if let Err(e) = r.queue.enqueue(std::mem::take(&mut batch)).await {
            tracing::error!(tasks = n, error = %e, "could not queue tasks for the workers");
            r.fail_waiting(&tasks, &format!("the task could not be queued for the workers: {e}"));
        }
    }
}

/// Reads the run's replies in batches and hands each to its attempt.
async fn read_replies(remote: std::sync::Weak<Remote>, run: RunId, stop: CancellationToken) {
    loop {
        if stop.is_cancelled() {
            return;
        }
        let Some(r) = remote.upgrade() else { return };
        match r.queue.replies(run, 1000).await {
            Ok(replies) if !replies.is_empty() => {
                let seqs: Vec<u64> = replies.iter().map(|r| r.seq).collect();
                for reply in replies {
                    match serde_json::from_value::<WorkerReply>(reply.body) {
                        Ok(body) => r.answer(reply.task, body),
                        Err(e) => {
                            tracing::warn!(%run, task = %reply.task, error = %e, "a worker's reply does not read");
                            r.fail_waiting(&[reply.task], &format!("the worker's reply does not read: {e}"));
                        }
                    }
                }
                if let Err(e) = r.queue.ack_replies(run, &seqs).await {
                    // Read again next time; the attempts already answered ignore them.
                    tracing::warn!(%run, error = %e, "could not remove the replies read");
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%run, error = %e, "could not read the workers' replies; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let queue = r.queue.clone();
        drop(r);
        tokio::select! {
            _ = queue.wait_replies(run, Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// The lease of a worker's claim on a task of this step.
pub(super) fn claim_lease(policy: &StepPolicy) -> Duration {
    policy.lease.min(CLAIM_LEASE).max(Duration::from_millis(200))
}

/// Runs one attempt of `ctx`'s task on a worker and says how it ended.
pub(super) async fn run_remote(
    ctx: &Ctx,
    policy: &StepPolicy,
    cancel: &CancellationToken,
    remote: &Remote,
) -> AttemptEnd {
    let inner = &ctx.inner;
    let shared = &inner.shared;
    let Some(location) = shared.store.reopen_location().map(str::to_owned) else {
        return failed(
            "dispatch",
            format!(
                "step `{}` runs on workers, which open this run's store from other processes, and a memory store \
                 lives only in this process; run on PostgreSQL (--store postgres://...)",
                ctx.step()
            ),
        );
    };
    // What the task inherits (and a join's branches) must be readable by the worker.
    shared.persister.flush().await;
    let spec = match spec_of(ctx, policy, location).await {
        Ok(s) => s,
        Err(e) => return failed("dispatch", format!("preparing the task for the workers failed: {e}")),
    };
    let lease = claim_lease(policy);
    let payload = RemoteTask {
        spec,
        lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
        max_dispatches: MAX_DISPATCHES,
    };
    let payload = match serde_json::to_value(&payload) {
        Ok(p) => p,
        Err(e) => return failed("dispatch", format!("the task could not be encoded for the workers: {e}")),
    };
    let (tx, rx) = oneshot::channel();
    lock(&remote.waiting).insert(inner.task, (inner.attempt, tx));
    let queue = policy.queue.clone().unwrap_or_else(|| remote.default_queue.clone());
    let mut task = QueuedTask::new(queue, shared.flow.name().clone(), shared.run_id, inner.task);
    task.priority = policy.priority;
    task.payload = payload;
    if remote.outbox.send(task).is_err() {
        lock(&remote.waiting).remove(&inner.task);
        return failed("dispatch", "the run's queue sender has stopped".to_owned());
    }
    // The worker applies the step's timeout; this is the backstop for a task nobody
    // can finish (every worker holding it died, again and again).
    let backstop = async {
        match policy.timeout {
            Some(t) => tokio::time::sleep(t + lease * (MAX_DISPATCHES + 1) + Duration::from_secs(30)).await,
            None => std::future::pending().await,
        }
    };
    let reply = tokio::select! {
        r = rx => r,
        _ = cancel.cancelled() => {
            lock(&remote.waiting).remove(&inner.task);
            return AttemptEnd::Cancelled;
        }
        _ = backstop => {
            lock(&remote.waiting).remove(&inner.task);
            let t = policy.timeout.unwrap_or_default();
            return failed("timeout", format!("attempt exceeded its timeout of {t:?}: no worker finished it"));
        }
    };
    match reply {
        Ok(reply) => apply(ctx, reply),
        Err(_) => failed("dispatch", "the run stopped reading the workers' replies".to_owned()),
    }
}

/// Takes over what the worker's reply says: the record it wrote last (progress, events,
/// when it started, its claim) and what the attempt set.
fn apply(ctx: &Ctx, reply: WorkerReply) -> AttemptEnd {
    let inner = &ctx.inner;
    if let Some(worker) = reply.record.filter(|r| r.key.task == inner.task) {
        let mut rec = lock(&inner.record);
        rec.started_at = worker.started_at.or(rec.started_at);
        rec.progress = worker.progress;
        rec.progress_at = worker.progress_at;
        rec.eta = worker.eta;
        rec.events = worker.events;
        rec.dispatch = worker.dispatch;
    }
    let mut own = lock(&inner.sets);
    for r in reply.sets {
        own.insert(r.name.clone(), LocalSet { art: Arc::new(ArtRef::new(r)), new_blobs: Vec::new() });
    }
    match reply.end {
        End::Ok => AttemptEnd::Ok,
        End::Failed { error } => AttemptEnd::Failed(error),
        End::Cancelled => AttemptEnd::Cancelled,
        End::Lost => AttemptEnd::Lost,
    }
}
