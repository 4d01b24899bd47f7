//! The run's one path to the record store: every task write, blob and log line of a run
//! goes through one queue, and whatever is queued is written as one batch (blobs, then
//! task records, then logs). Thousands of small tasks cost a few transactions, not
//! thousands.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use braid_core::{RunId, TaskId};
use braid_store::{LogLine, Precondition, Rejection, Store, TaskWrite, WriteOutcome};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::error::{Error, Result};

const MAX_BATCH: usize = 4096;

/// Task writes queued but not yet written past which no new task starts
/// ([`Persister::throttle`]). Two batches: the writer always has the next one ready, and
/// a run whose tasks outpace the store holds a few MiB of queued records instead of one
/// per task it got ahead by (most of the memory of a 100,000-branch foreach, measured
/// with massif, before this bound).
const MAX_BACKLOG: usize = 2 * MAX_BATCH;

/// Why the run's records could not be written, with the store's error as the cause.
/// Cheap to clone: one failed batch is reported to every write in it. The cause of
/// [`Error::Records`]; variants may be added.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The blob store refused the batch's blobs.
    #[error("storing the run's artifact blobs failed")]
    Blobs(#[source] Arc<braid_store::Error>),
    /// The record store refused the batch's task records.
    #[error("writing the run's task records failed")]
    Tasks(#[source] Arc<braid_store::Error>),
    /// A task's result failed its precondition (someone else wrote the task).
    #[error("the store rejected a task's result")]
    Rejected(#[source] Rejection),
    /// The writer ended before this write (an earlier failure, or the run ended).
    #[error("the run's store writer has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<WriteOutcome, PersistError>>;

/// What a [`Persister::forwarding`] hands on.
pub(crate) enum Forwarded {
    /// The task's record as the attempt last wrote it (progress, events, lease).
    Task(Box<braid_store::TaskRecord>),
    /// Log lines of the attempt.
    Logs(Vec<LogLine>),
}

enum Job {
    Write { blobs: Vec<Vec<u8>>, write: Box<TaskWrite>, reply: Option<Reply> },
    Logs(Vec<LogLine>),
    Flush(oneshot::Sender<()>),
}

/// A handle to the run's writer task.
#[derive(Debug, Clone)]
pub(crate) struct Persister {
    tx: mpsc::UnboundedSender<Job>,
    /// Task writes sent and not yet written (or failed).
    backlog: Arc<AtomicUsize>,
    /// Woken each time the writer finishes a batch.
    drained: Arc<Notify>,
    /// The first failure of a write nobody waited for; it fails the run.
    failure: Arc<Mutex<Option<PersistError>>>,
    /// Set for [`Persister::forwarding`]: where everything goes instead of the writer.
    forward: Option<Forward>,
    /// How many writes were refused by their fencing check (late writes of attempts
    /// that were lost or taken over).
    fenced: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Forward(Arc<dyn Fn(Forwarded) + Send + Sync>);

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forward")
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl Persister {
    pub(crate) fn start(store: Store) -> Self {
        Self::start_with(store, false)
    }

    /// A writer for a worker, which writes the records of many runs' attempts: a write
    /// its precondition refuses is that attempt's business (logged and counted as
    /// fenced), never a failure of the writer, which goes on for the other attempts.
    pub(crate) fn start_for_worker(store: Store) -> Self {
        Self::start_with(store, true)
    }

    fn start_with(store: Store, lenient: bool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let failure = Arc::new(Mutex::new(None));
        let backlog = Arc::new(AtomicUsize::new(0));
        let drained = Arc::new(Notify::new());
        let fenced = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer(store, rx, failure.clone(), backlog.clone(), drained.clone(), fenced.clone(), lenient));
        Persister { tx, backlog, drained, failure, forward: None, fenced }
    }

    /// A persister that writes nothing itself: every task record and log line is handed
    /// to `forward` at once, in the calling thread (so a process that crashes right
    /// after a log line has already passed it on), and a flush has nothing to wait for.
    /// An isolated step's process uses one to send what its attempt writes to the
    /// process that runs the flow.
    pub(crate) fn forwarding(forward: impl Fn(Forwarded) + Send + Sync + 'static) -> Self {
        let (tx, _) = mpsc::unbounded_channel::<Job>();
        Persister {
            tx,
            backlog: Arc::new(AtomicUsize::new(0)),
            drained: Arc::new(Notify::new()),
            failure: Arc::new(Mutex::new(None)),
            forward: Some(Forward(Arc::new(forward))),
            fenced: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Waits while the writer is more than [`MAX_BACKLOG`] task writes behind: called
    /// before a task starts, so a run never gets further ahead of its store than that.
    pub(crate) async fn throttle(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so a batch finishing in between still wakes us.
            notified.as_mut().enable();
            if self.backlog.load(Ordering::Acquire) <= MAX_BACKLOG || self.tx.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// How many writes their fencing check refused so far.
    pub(crate) fn fenced_writes(&self) -> u64 {
        self.fenced.load(Ordering::Relaxed)
    }

    /// Why a write nobody waited for failed, if one did.
    pub(crate) fn failure(&self) -> Option<PersistError> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Queues a write and waits until it is committed.
    pub(crate) async fn write(&self, blobs: Vec<Vec<u8>>, write: TaskWrite) -> Result<WriteOutcome> {
        if let Some(f) = &self.forward {
            (f.0)(Forwarded::Task(Box::new(write.task)));
            return Ok(WriteOutcome::Applied { revision: 0 });
        }
        let (reply, rx) = oneshot::channel();
        self.backlog.fetch_add(1, Ordering::AcqRel);
        self.tx
            .send(Job::Write { blobs, write: Box::new(write), reply: Some(reply) })
            .map_err(|_| Error::Records(PersistError::Stopped))?;
        match rx.await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(e)) => Err(Error::Records(e)),
            Err(_) => Err(Error::Records(PersistError::Stopped)),
        }
    }

    /// Queues a write without waiting: a task starting, a progress report, or a task's
    /// result (its children may start at once: the queue keeps writes in order, so a
    /// child's records never become durable before its parent's). A failure is kept
    /// and fails the run.
    pub(crate) fn write_later(&self, blobs: Vec<Vec<u8>>, write: TaskWrite) {
        if let Some(f) = &self.forward {
            (f.0)(Forwarded::Task(Box::new(write.task)));
            return;
        }
        self.backlog.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Job::Write { blobs, write: Box::new(write), reply: None }).is_err() {
            let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            f.get_or_insert(PersistError::Stopped);
        }
    }

    pub(crate) fn logs(&self, lines: Vec<LogLine>) {
        if let Some(f) = &self.forward {
            (f.0)(Forwarded::Logs(lines));
            return;
        }
        // Sending fails only once the writer has stopped, which every task write then
        // reports (`write_later` records it as the run's failure): a log line cannot be
        // kept where its run's records cannot.
        let _ = self.tx.send(Job::Logs(lines));
    }

    /// Waits until everything queued so far is written.
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(tx)).is_ok() {
            // An error means the writer stopped: nothing queued is left to wait for.
            let _ = rx.await;
        }
    }
}

async fn writer(
    store: Store,
    mut rx: mpsc::UnboundedReceiver<Job>,
    failure: Arc<Mutex<Option<PersistError>>>,
    backlog: Arc<AtomicUsize>,
    drained: Arc<Notify>,
    fenced: Arc<AtomicU64>,
    lenient: bool,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let writes = jobs.iter().filter(|j| matches!(j, Job::Write { .. })).count();
        let poisoned = failure.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(cause) = poisoned {
            refuse_successes(&mut jobs, &cause);
        }
        if let Err(e) = write_batch(&store, &mut jobs, &fenced, lenient).await {
            if lenient {
                tracing::warn!(error = %e, "a worker's write batch failed");
                backlog.fetch_sub(writes, Ordering::AcqRel);
                drained.notify_waiters();
                continue;
            }
            failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
        }
        backlog.fetch_sub(writes, Ordering::AcqRel);
        drained.notify_waiters();
    }
    // The queue is closed: nobody may wait for room in it any more.
    drained.notify_waiters();
}

/// After a batch nobody waited for failed, its task results are not durable, and a
/// later batch may hold their children's (a child starts as soon as its parent's result
/// is queued). So no success is written after that: each is refused with the first
/// failure, which fails the run, and the store keeps only successes whose parents are
/// durable too — what `resume` reuses. Failures, progress and logs are still written,
/// so the store says what happened to the tasks that were running.
fn refuse_successes(jobs: &mut Vec<Job>, cause: &PersistError) {
    jobs.retain_mut(|job| {
        let Job::Write { write, reply, .. } = job else { return true };
        if write.task.status != braid_core::TaskStatus::Succeeded {
            return true;
        }
        if let Some(r) = reply.take() {
            // The waiting task learns why; if it stopped waiting, nobody is left to tell.
            let _ = r.send(Err(cause.clone()));
        }
        false
    });
}

/// Writes one batch; `Err` for a failure that no waiting caller was told about.
async fn write_batch(
    store: &Store,
    jobs: &mut Vec<Job>,
    fenced_count: &AtomicU64,
    lenient: bool,
) -> Result<(), PersistError> {
    let mut blobs = Vec::new();
    let mut writes: Vec<TaskWrite> = Vec::new();
    // Writes whose caller waits for the outcome (few: ends of attempts that must be
    // known durable), with the task they are for.
    let mut replies: Vec<(usize, String, Reply)> = Vec::new();
    // Writes without a waiting caller: their rejection must not go unnoticed.
    let mut unwatched_results: Vec<usize> = Vec::new();
    let mut unwatched_keys: HashMap<usize, (RunId, TaskId, braid_core::Attempt)> = HashMap::new();
    let mut logs = Vec::new();
    let mut flushes = Vec::new();
    // A fire-and-forget write superseded by a later write of the same task in this batch
    // is dropped: the later record holds everything the earlier one did.
    let mut last_unconditional: HashMap<(RunId, TaskId), usize> = HashMap::new();
    let mut dropped = vec![];
    for job in jobs.drain(..) {
        match job {
            Job::Write { blobs: b, write, reply } => {
                blobs.extend(b);
                let mut write = write;
                let key = (write.task.key.run, write.task.key.task);
                if let Some(&prev) = last_unconditional.get(&key) {
                    // An earlier unconditional write of this task in the same batch always
                    // applies, so a later write's precondition can be checked against it
                    // here, and the earlier one (a task starting) need not be written.
                    let earlier: &TaskWrite = &writes[prev];
                    let holds = match write.precondition {
                        Precondition::None => true,
                        Precondition::Attempt(a) => earlier.task.attempt == a && !earlier.task.status.is_terminal(),
                        _ => false,
                    };
                    if holds {
                        write.precondition = Precondition::None;
                        if write.attempt.is_none() {
                            write.attempt = earlier.attempt.clone();
                        }
                        dropped.push(prev);
                    }
                }
                if reply.is_none() && write.precondition == Precondition::None && write.artifacts.is_none() {
                    last_unconditional.insert(key, writes.len());
                } else {
                    last_unconditional.remove(&key);
                }
                match reply {
                    Some(r) => replies.push((writes.len(), write.task.key.to_string(), r)),
                    None => {
                        unwatched_results.push(writes.len());
                        unwatched_keys.insert(writes.len(), (key.0, key.1, write.task.attempt));
                    }
                }
                writes.push(*write);
            }
            Job::Logs(l) => logs.extend(l),
            Job::Flush(tx) => flushes.push(tx),
        }
    }
    let blob_result = if blobs.is_empty() { Ok(Vec::new()) } else { store.blobs.put_many(blobs).await };
    let outcome = match blob_result {
        Err(e) => Err(PersistError::Blobs(Arc::new(e))),
        Ok(_) => {
            dropped.sort_unstable();
            let mut index_map = Vec::with_capacity(writes.len());
            let mut kept = Vec::with_capacity(writes.len());
            let mut d = dropped.iter().peekable();
            for (i, w) in writes.into_iter().enumerate() {
                if d.peek() == Some(&&i) {
                    d.next();
                    index_map.push(None);
                } else {
                    index_map.push(Some(kept.len()));
                    kept.push(w);
                }
            }
            match store.records.write_tasks(kept).await {
                Ok(outcomes) => Ok((index_map, outcomes)),
                Err(e) => Err(PersistError::Tasks(Arc::new(e))),
            }
        }
    };
    if !logs.is_empty()
        && let Err(e) = store.records.append_logs(logs).await
    {
        tracing::warn!(error = %e, "could not store task log lines");
    }
    let result = match outcome {
        Ok((index_map, outcomes)) => {
            for (i, key, reply) in replies {
                let o = index_map[i]
                    .and_then(|k| outcomes.get(k).cloned())
                    .unwrap_or(WriteOutcome::Rejected { reason: Rejection::Superseded { key } });
                // The caller may have stopped waiting (its task was cancelled): the
                // outcome is durable either way.
                let _ = reply.send(Ok(o));
            }
            // A write refused by its fencing token comes from an attempt that was
            // declared lost: it is logged (in the task's log too) and never applied.
            let mut fenced = Vec::new();
            let mut failure = None;
            for &i in &unwatched_results {
                if let Some(WriteOutcome::Rejected { reason }) = index_map[i].and_then(|k| outcomes.get(k)) {
                    let Some(&(run, task, attempt)) = unwatched_keys.get(&i) else { continue };
                    if reason.is_fenced() || lenient {
                        fenced_count.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%run, %task, %attempt, %reason, "late write from a lost attempt rejected");
                        fenced.push(LogLine {
                            run,
                            task,
                            attempt,
                            seq: 0,
                            at: braid_core::Timestamp::now(),
                            level: "WARN".into(),
                            line: format!("late write from attempt {attempt} rejected: {reason}"),
                        });
                    } else {
                        failure.get_or_insert_with(|| PersistError::Rejected(reason.clone()));
                    }
                }
            }
            if !fenced.is_empty()
                && let Err(e) = store.records.append_logs(fenced).await
            {
                tracing::warn!(error = %e, "could not store task log lines");
            }
            match failure {
                Some(f) => Err(f),
                None => Ok(()),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, cause = ?std::error::Error::source(&e).map(ToString::to_string), "task write batch failed");
            for (_, _, reply) in replies {
                // A caller that stopped waiting learns of the failure from the run's.
                let _ = reply.send(Err(e.clone()));
            }
            Err(e)
        }
    };
    for f in flushes {
        // A flusher that stopped waiting needs no answer.
        let _ = f.send(());
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use braid_core::{FlowName, StepName};
    use braid_store::{TaskKey, TaskRecord};
    use futures_util::FutureExt;

    fn write(run: RunId, task: u64) -> TaskWrite {
        let key =
            TaskKey { flow: FlowName::new("f").unwrap(), run, step: StepName::new("s").unwrap(), task: TaskId(task) };
        TaskWrite::new(TaskRecord::new(key))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_task_starts_while_the_writer_is_more_than_two_batches_behind() {
        let p = Persister::start(Store::memory());
        let run = RunId::generate();
        // The writer task cannot run before this test yields: everything stays queued.
        for i in 0..(MAX_BACKLOG as u64 + 100) {
            p.write_later(Vec::new(), write(run, i + 1));
        }
        assert_eq!(p.backlog.load(Ordering::Acquire), MAX_BACKLOG + 100);
        assert!(p.throttle().now_or_never().is_none(), "a task would start with the writer too far behind");
        // Awaiting lets the writer take batches; it returns once the backlog is back under the bound.
        p.throttle().await;
        assert!(p.backlog.load(Ordering::Acquire) <= MAX_BACKLOG);
        p.flush().await;
        assert_eq!(p.backlog.load(Ordering::Acquire), 0, "every write is counted out once written");
        assert!(p.throttle().now_or_never().is_some());
    }
}
