//! The task queue that workers on many machines claim tasks from ([`TaskQueue`]).
//!
//! A queued task is claimed by one worker at a time, under a lease its heartbeats
//! extend ([`TaskQueue::extend`], one call for everything a worker holds). Each claim
//! gets a *fencing token* that never repeats (a sequence, not the attempt number), and
//! every later call about the claim names it: once a lease has expired and another
//! worker has claimed the task, the first worker's token is stale, so nothing it does
//! with it is applied (`extend` leaves it out, `finish` and `release` say `false`). A
//! task whose lease expired is claimable again, with its dispatch count up by one
//! (lost re-dispatches are counted apart from a step's own retries). A finished task's
//! row is deleted, so the queue holds only what is waiting or running.
//!
//! Backends: PostgreSQL (`FOR UPDATE SKIP LOCKED`, feature `postgres`) and memory (for
//! tests and single-process use); an fs store has no queue (workers need a shared
//! database), and [`Store::queue`](crate::Store::queue) is `None` there.

use std::time::Duration;

use async_trait::async_trait;
use braid_core::{FlowName, RunId, TaskId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A task waiting in a queue. Fields may be added: build it with [`QueuedTask::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueuedTask {
    /// The named queue it waits in (`worker --queue Q` claims from one).
    pub queue: String,
    /// The task: flow, run and id (a task is queued at most once at a time).
    pub flow: FlowName,
    /// The run.
    pub run: RunId,
    /// The task's id in the run.
    pub task: TaskId,
    /// Higher first; among equals, the order they were queued in.
    pub priority: i32,
    /// What a worker needs to run it (the executor's business, kept as given).
    pub payload: serde_json::Value,
}

impl QueuedTask {
    /// Task `task` of `flow`/`run` in `queue`, priority 0, no payload.
    pub fn new(queue: impl Into<String>, flow: FlowName, run: RunId, task: TaskId) -> Self {
        QueuedTask { queue: queue.into(), flow, run, task, priority: 0, payload: serde_json::Value::Null }
    }
}

/// A worker's hold on a queued task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claim {
    /// The task claimed.
    pub task: QueuedTask,
    /// The fencing token of this claim: unique across the queue and larger than every
    /// token handed out before it.
    pub token: u64,
    /// Who holds it.
    pub worker: String,
    /// When the hold ends unless extended.
    pub lease_deadline: Timestamp,
    /// How many times the task has been claimed, this claim included, not counting
    /// claims handed back ([`TaskQueue::release`]): above 1, earlier holders lost it
    /// (their leases expired).
    pub dispatches: u32,
}

/// What a worker leaves for the process that runs a task's run when it finishes the
/// task ([`TaskQueue::complete`]): how the attempt went, as that process reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Reply {
    /// The run.
    pub run: RunId,
    /// The task.
    pub task: TaskId,
    /// The claim it completed.
    pub token: u64,
    /// Its place among the run's replies (what [`TaskQueue::ack_replies`] names).
    pub seq: u64,
    /// What the worker said (the executor's business, kept as given).
    pub body: serde_json::Value,
}

/// The name [`Wake`] keys the waiters of `run`'s replies by (queue names are validated
/// names, which cannot hold a `/`).
pub(crate) fn reply_key(run: RunId) -> String {
    format!("reply/{run}")
}

/// How many tasks a queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueCounts {
    /// Waiting to be claimed (lease expired included).
    pub ready: u64,
    /// Held under a lease that has not expired.
    pub claimed: u64,
}

/// One queue, as [`TaskQueue::queues`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueInfo {
    /// Its name.
    pub name: String,
    /// What it holds.
    pub counts: QueueCounts,
    /// How many of its tasks may be claimed at once, if capped.
    pub limit: Option<u32>,
}

/// A queue of tasks that workers claim under leases with fencing tokens.
#[async_trait]
pub trait TaskQueue: Send + Sync + std::fmt::Debug {
    /// Queues tasks; a task already queued (same flow, run and id) is left as it is.
    async fn enqueue(&self, tasks: Vec<QueuedTask>) -> Result<()>;

    /// Claims up to `max` tasks of `queue` for `worker` until `now + lease`: the
    /// highest priority first, then the oldest; tasks whose lease expired before `now`
    /// count as waiting (a backend may take them before the others: they have waited
    /// longest). Two workers claiming at once never get the same task.
    async fn claim(&self, queue: &str, worker: &str, max: usize, lease: Duration, now: Timestamp)
    -> Result<Vec<Claim>>;

    /// Extends to `now + lease` every claim of `worker` among `tokens` that is still its
    /// own and not expired; returns the tokens extended (a missing one was lost).
    async fn extend(&self, worker: &str, tokens: &[u64], lease: Duration, now: Timestamp) -> Result<Vec<u64>>;

    /// Removes the task of claim `token`, done; `false` (nothing changed) when the
    /// token is not the task's current claim (another worker took it over).
    async fn finish(&self, token: u64) -> Result<bool>;

    /// Hands the task of claim `token` back, ready at once for another worker (a
    /// draining worker); `false` when the token is stale.
    async fn release(&self, token: u64) -> Result<bool>;

    /// Finishes claim `token` and leaves `body` for the task's run, as one step: the
    /// task's row is deleted and the [`Reply`] stored only if the claim is the task's
    /// current one; `false` (nothing changed) when it is stale, so a worker whose claim
    /// was taken over can never deliver a result.
    async fn complete(&self, token: u64, body: serde_json::Value) -> Result<bool>;

    /// [`TaskQueue::complete`] for many claims at once (a worker's completions of the
    /// moment, in one statement where the backend can); one answer per claim, in order.
    async fn complete_many(&self, done: Vec<(u64, serde_json::Value)>) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(done.len());
        for (token, body) in done {
            out.push(self.complete(token, body).await?);
        }
        Ok(out)
    }

    /// Up to `max` replies for `run`, oldest first. They stay until acknowledged
    /// ([`TaskQueue::ack_replies`]), so a reader that fails (or a statement whose answer
    /// was lost with the connection) reads them again.
    async fn replies(&self, run: RunId, max: usize) -> Result<Vec<Reply>>;

    /// Removes the replies `seqs` of `run`, read and applied; removing one twice is no error.
    async fn ack_replies(&self, run: RunId, seqs: &[u64]) -> Result<()>;

    /// Waits until a reply for `run` may be waiting, or `timeout` passed (as
    /// [`TaskQueue::wait`] does for a queue).
    async fn wait_replies(&self, run: RunId, timeout: Duration);

    /// Removes every queued task and reply of `run` (it ended, or was cancelled), and
    /// returns how many tasks were still queued or claimed. A worker that still runs one
    /// of them can no longer finish or complete it.
    async fn clear_run(&self, run: RunId) -> Result<u64>;

    /// Caps how many tasks of `queue` are claimed at once, over every worker (`None`
    /// lifts the cap): a claim past it gets fewer tasks, or none. A cap below what is
    /// claimed already takes nothing back; it holds once those finish.
    async fn set_limit(&self, queue: &str, limit: Option<u32>) -> Result<()>;

    /// Every queue that holds tasks or has a cap, by name, with its counts at `now`.
    async fn queues(&self, now: Timestamp) -> Result<Vec<QueueInfo>>;

    /// How many tasks `queue` holds at `now`.
    async fn counts(&self, queue: &str, now: Timestamp) -> Result<QueueCounts>;

    /// Waits until a task may be waiting in `queue` (one was queued or handed back since
    /// the call began), or `timeout` passed: an idle worker calls it between claims, and
    /// claims again either way (the timeout is the polling fallback, and what finds
    /// expired leases; a wake-up may also come with nothing new, e.g. when PostgreSQL's
    /// listener has just connected). PostgreSQL wakes it through `LISTEN`/`NOTIFY`.
    async fn wait(&self, queue: &str, timeout: Duration);
}

/// The memory backend's queue: one lock over a map.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    inner: std::sync::Mutex<MemoryQueueState>,
    wake: Wake,
}

/// Wakes the waiters of a queue: per queue name, a [`tokio::sync::Notify`] and a flag
/// saying a task came since the last claim began, so that a wake-up between a claim that
/// found nothing and the `wait` after it is not lost (the wait returns at once).
#[derive(Debug, Default)]
pub(crate) struct Wake(std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<QueueWake>>>);

#[derive(Debug, Default)]
pub(crate) struct QueueWake {
    notify: tokio::sync::Notify,
    pending: std::sync::atomic::AtomicBool,
}

impl QueueWake {
    fn wake(&self) {
        self.pending.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_waiters();
    }
}

impl Wake {
    fn of(&self, queue: &str) -> std::sync::Arc<QueueWake> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(queue.to_owned()).or_default().clone()
    }

    /// Wakes every waiter of every queue.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn wake_all(&self) {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for w in m.values() {
            w.wake();
        }
    }

    /// Wakes every waiter of `queue`.
    pub(crate) fn wake(&self, queue: &str) {
        self.of(queue).wake();
    }

    /// Called as a claim of `queue` begins: what came before it, the claim sees.
    pub(crate) fn claiming(&self, queue: &str) {
        self.of(queue).pending.store(false, std::sync::atomic::Ordering::Release);
    }

    /// Waits for [`Wake::wake`] of `queue`, at most `timeout`; at once when one came
    /// since the last claim began.
    pub(crate) async fn wait(&self, queue: &str, timeout: Duration) {
        let w = self.of(queue);
        let notified = w.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is read: a wake-up in between still ends the wait.
        notified.as_mut().enable();
        if w.pending.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        // Woken (or timed out): the claim that follows sees whatever came.
        w.pending.store(false, std::sync::atomic::Ordering::Release);
    }
}

#[derive(Debug, Default)]
struct MemoryQueueState {
    /// By (flow, run, task): the task, its queue order, its claim.
    rows: std::collections::BTreeMap<(FlowName, RunId, TaskId), Row>,
    replies: std::collections::HashMap<RunId, std::collections::VecDeque<Reply>>,
    limits: std::collections::BTreeMap<String, u32>,
    next_seq: u64,
    next_token: u64,
}

#[derive(Debug)]
struct Row {
    task: QueuedTask,
    seq: u64,
    claim: Option<(u64, String, Timestamp)>,
    dispatches: u32,
}

impl MemoryQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryQueueState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ready(row: &Row, now: Timestamp) -> bool {
    row.claim.as_ref().is_none_or(|(_, _, deadline)| *deadline < now)
}

#[async_trait]
impl TaskQueue for MemoryQueue {
    async fn enqueue(&self, tasks: Vec<QueuedTask>) -> Result<()> {
        let mut st = self.state();
        for task in tasks {
            let key = (task.flow.clone(), task.run, task.task);
            if st.rows.contains_key(&key) {
                continue;
            }
            st.next_seq += 1;
            let seq = st.next_seq;
            let queue = task.queue.clone();
            st.rows.insert(key, Row { task, seq, claim: None, dispatches: 0 });
            self.wake.wake(&queue);
        }
        Ok(())
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        max: usize,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<Claim>> {
        self.wake.claiming(queue);
        let mut st = self.state();
        let mut picked: Vec<(i32, u64, (FlowName, RunId, TaskId))> = st
            .rows
            .iter()
            .filter(|(_, r)| r.task.queue == queue && ready(r, now))
            .map(|(k, r)| (r.task.priority, r.seq, k.clone()))
            .collect();
        picked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let room = match st.limits.get(queue) {
            Some(&limit) => {
                let held = st.rows.values().filter(|r| r.task.queue == queue && !ready(r, now)).count();
                (limit as usize).saturating_sub(held)
            }
            None => usize::MAX,
        };
        picked.truncate(max.min(room));
        let deadline = now.plus(lease);
        let mut out = Vec::with_capacity(picked.len());
        for (_, _, key) in picked {
            st.next_token += 1;
            let token = st.next_token;
            let Some(row) = st.rows.get_mut(&key) else { continue };
            row.claim = Some((token, worker.to_owned(), deadline));
            row.dispatches += 1;
            out.push(Claim {
                task: row.task.clone(),
                token,
                worker: worker.to_owned(),
                lease_deadline: deadline,
                dispatches: row.dispatches,
            });
        }
        Ok(out)
    }

    async fn extend(&self, worker: &str, tokens: &[u64], lease: Duration, now: Timestamp) -> Result<Vec<u64>> {
        let mut st = self.state();
        let mut out = Vec::new();
        for row in st.rows.values_mut() {
            if let Some((token, holder, deadline)) = &mut row.claim
                && holder == worker
                && tokens.contains(token)
                && *deadline >= now
            {
                *deadline = now.plus(lease);
                out.push(*token);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    async fn finish(&self, token: u64) -> Result<bool> {
        let mut st = self.state();
        let key = st.rows.iter().find(|(_, r)| r.claim.as_ref().is_some_and(|c| c.0 == token)).map(|(k, _)| k.clone());
        Ok(key.is_some_and(|k| st.rows.remove(&k).is_some()))
    }

    async fn release(&self, token: u64) -> Result<bool> {
        let mut st = self.state();
        match st.rows.values_mut().find(|r| r.claim.as_ref().is_some_and(|c| c.0 == token)) {
            Some(row) => {
                row.claim = None;
                row.dispatches = row.dispatches.saturating_sub(1);
                self.wake.wake(&row.task.queue);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn complete(&self, token: u64, body: serde_json::Value) -> Result<bool> {
        let mut st = self.state();
        let key = st.rows.iter().find(|(_, r)| r.claim.as_ref().is_some_and(|c| c.0 == token)).map(|(k, _)| k.clone());
        let Some(row) = key.and_then(|k| st.rows.remove(&k)) else { return Ok(false) };
        let run = row.task.run;
        st.next_seq += 1;
        let seq = st.next_seq;
        st.replies.entry(run).or_default().push_back(Reply { run, task: row.task.task, token, seq, body });
        drop(st);
        self.wake.wake(&reply_key(run));
        Ok(true)
    }

    async fn replies(&self, run: RunId, max: usize) -> Result<Vec<Reply>> {
        self.wake.claiming(&reply_key(run));
        let st = self.state();
        Ok(st.replies.get(&run).map(|q| q.iter().take(max).cloned().collect()).unwrap_or_default())
    }

    async fn ack_replies(&self, run: RunId, seqs: &[u64]) -> Result<()> {
        let mut st = self.state();
        if let Some(q) = st.replies.get_mut(&run) {
            q.retain(|r| !seqs.contains(&r.seq));
            if q.is_empty() {
                st.replies.remove(&run);
            }
        }
        Ok(())
    }

    async fn wait_replies(&self, run: RunId, timeout: Duration) {
        self.wake.wait(&reply_key(run), timeout).await;
    }

    async fn clear_run(&self, run: RunId) -> Result<u64> {
        let mut st = self.state();
        let before = st.rows.len();
        st.rows.retain(|(_, r, _), _| *r != run);
        st.replies.remove(&run);
        Ok((before - st.rows.len()) as u64)
    }

    async fn set_limit(&self, queue: &str, limit: Option<u32>) -> Result<()> {
        let mut st = self.state();
        match limit {
            Some(l) => st.limits.insert(queue.to_owned(), l),
            None => st.limits.remove(queue),
        };
        drop(st);
        self.wake.wake(queue);
        Ok(())
    }

    async fn queues(&self, now: Timestamp) -> Result<Vec<QueueInfo>> {
        let st = self.state();
        let mut out: std::collections::BTreeMap<String, QueueInfo> = std::collections::BTreeMap::new();
        for (name, &limit) in &st.limits {
            out.insert(
                name.clone(),
                QueueInfo { name: name.clone(), counts: QueueCounts::default(), limit: Some(limit) },
            );
        }
        for r in st.rows.values() {
            let q = out.entry(r.task.queue.clone()).or_insert_with(|| QueueInfo {
                name: r.task.queue.clone(),
                counts: QueueCounts::default(),
                limit: None,
            });
            if ready(r, now) {
                q.counts.ready += 1;
            } else {
                q.counts.claimed += 1;
            }
        }
        Ok(out.into_values().collect())
    }

    async fn counts(&self, queue: &str, now: Timestamp) -> Result<QueueCounts> {
        let st = self.state();
        let mut c = QueueCounts::default();
        for r in st.rows.values().filter(|r| r.task.queue == queue) {
            if ready(r, now) {
                c.ready += 1;
            } else {
                c.claimed += 1;
            }
        }
        Ok(c)
    }

    async fn wait(&self, queue: &str, timeout: Duration) {
        self.wake.wait(queue, timeout).await;
    }
}
