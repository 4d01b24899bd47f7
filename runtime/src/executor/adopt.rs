//! Taking over a run on workers whose driving process died.
//!
//! A run on workers keeps its routing state (ready tasks, join barriers, foreach
//! cursors, loop iterations) in the dispatcher of the process that drives it, under the
//! run's lease (renewed every second). When that process dies, the lease runs out (3 s)
//! and any worker hosting the flow adopts the run: it takes the lease by a conditional
//! update of the run record (so one adopter wins), marks the tasks the dead driver had
//! in flight `lost`, removes what the run had in the queue (a worker still running one
//! of those can no longer complete it), and drives the run again *in place*: the same
//! run id, every task that succeeded reused as stored (same id, nothing rewritten), the
//! rest re-run with new ids after the last one. Everything a driver knows is derived from
//! the records, which is why the routing state need not be in the database: a stored
//! success is never re-run, and a result that was not yet stored is re-run once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_core::{RunId, RunStatus, TaskStatus, Timestamp};
use braid_store::{Precondition, RunLease, RunQuery, Store, TaskError, TaskEvent, TaskEventKind, TaskQuery, TaskWrite};
use tokio_util::sync::CancellationToken;

use super::{Origin, PreparedRun, RunProgress, RunShared, TaskIdentity, remote};
use crate::error::Result;
use crate::flow::Flow;
use crate::metrics::Metrics;
use crate::persist::Persister;

/// How often a worker looks for runs to adopt.
const ADOPT_EVERY: Duration = Duration::from_secs(2);

/// Looks for runs of `flows` on workers whose driver died, and drives each it wins,
/// until `stop`.
pub(super) async fn adopt_runs(
    flows: Vec<Arc<Flow>>,
    store: Store,
    metrics: Option<Arc<Metrics>>,
    stop: CancellationToken,
) {
    loop {
        for flow in &flows {
            let query = RunQuery { status: Some(RunStatus::Lost), limit: 50, ..Default::default() };
            let runs = match store.records.list_runs(flow.name(), &query).await {
                Ok(p) => p.items,
                Err(e) => {
                    tracing::debug!(flow = %flow.name(), error = %e, "could not list lost runs");
                    continue;
                }
            };
            for run in runs {
                let on_workers = run.meta.get("on").and_then(|v| v.as_str()) == Some("workers");
                if !on_workers || !run.status.is_live() {
                    continue;
                }
                match adopt(flow.clone(), store.clone(), run.id, metrics.clone()).await {
                    Ok(Some(prepared)) => {
                        if let Some(m) = &metrics {
                            m.worker_run_adopted();
                        }
                        tokio::spawn(async move {
                            match prepared.execute().await {
                                Ok(s) => tracing::info!(run = %s.run_id, status = %s.status, "adopted run ended"),
                                Err(e) => tracing::error!(error = %e, "adopted run failed to finish"),
                            }
                        });
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(run = %run.id, error = %e, "could not adopt a run whose driver died"),
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ADOPT_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Takes over run `run` of `flow` if its driver is gone and nobody else took it first.
pub(super) async fn adopt(
    flow: Arc<Flow>,
    store: Store,
    run: RunId,
    metrics: Option<Arc<Metrics>>,
) -> Result<Option<PreparedRun>> {
    let Some(queue) = store.queue().cloned() else { return Ok(None) };
    let Some(mut record) = store.records.get_run(flow.name(), run).await? else { return Ok(None) };
    let now = Timestamp::now();
    if record.observed_status(now) != RunStatus::Lost || !record.status.is_live() {
        return Ok(None);
    }
    let previous = record.lease.as_ref().map(|l| l.holder.clone()).unwrap_or_default();
    let holder = braid_store::process_holder("run");
    let run_lease = crate::lease::RUN_LEASE;
    record.status = RunStatus::Running;
    record.lease = Some(RunLease::new(holder.clone(), run_lease));
    let adopted = serde_json::json!({ "by": holder, "at": now.to_string(), "from": previous });
    match record.meta.get_mut("adopted") {
        Some(serde_json::Value::Array(list)) => list.push(adopted),
        _ => {
            record.meta.insert("adopted".into(), serde_json::Value::Array(vec![adopted]));
        }
    }
    // Conditional on the revision read: of two adopters, one wins.
    match store.records.update_run(&record).await {
        Ok(_) => {}
        Err(e) if e.is_conflict() => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(%run, flow = %flow.name(), %previous, "adopting a run whose driver died");
    let keeper = crate::lease::LeaseKeeper::start(store.clone(), flow.name().clone(), run, holder.clone(), run_lease);
    // What the dead driver had in the queue can no longer complete.
    queue.clear_run(run).await?;
    let mut tasks = HashMap::new();
    let mut unfinished = HashMap::new();
    let mut last_id = 0;
    let mut in_flight = Vec::new();
    let mut q = TaskQuery { limit: 10_000, ..Default::default() };
    loop {
        let page = store.records.list_tasks(flow.name(), run, &q).await?;
        for t in page.items {
            last_id = last_id.max(t.key.task.0);
            let id = TaskIdentity {
                step: t.key.step.clone(),
                path: t.foreach_stack.iter().map(|f| f.index).collect(),
                iteration: t.iteration,
            };
            match t.status {
                TaskStatus::Succeeded => {
                    tasks.insert(id, t);
                }
                TaskStatus::Pending | TaskStatus::Running => {
                    if let Some(p) = &t.progress {
                        unfinished.insert(id, p.clone());
                    }
                    in_flight.push(t);
                }
                _ => {
                    if let Some(p) = t.progress {
                        unfinished.insert(id, p);
                    }
                }
            }
        }
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    // The tasks the dead driver had in flight say so; they run again under new ids.
    let ended = Timestamp::now();
    let writes: Vec<TaskWrite> = in_flight
        .into_iter()
        .map(|mut t| {
            let message = format!("the run's driver ({previous}) died while this task was in flight; run {run} was adopted by {holder} and runs it again");
            let (attempt, percent) = (t.attempt, t.progress.as_ref().map(|p| p.percent));
            t.push_event(TaskEvent {
                at: ended,
                attempt,
                kind: TaskEventKind::Lost,
                percent,
                message: message.clone(),
            });
            t.status = TaskStatus::Lost;
            t.ended_at = Some(ended);
            t.lease_deadline = None;
            t.error = Some(TaskError { kind: "lost".into(), message });
            let revision = t.revision;
            TaskWrite { precondition: Precondition::Revision(revision), ..TaskWrite::new(t) }
        })
        .collect();
    if !writes.is_empty() {
        // A write refused here lost a race with a late worker write: that task is
        // re-run all the same, and the stale worker can complete nothing.
        store.records.write_tasks(writes).await?;
    }
    let params = record.params.clone();
    let queue_name = record.meta.get("queue").and_then(|v| v.as_str()).unwrap_or(remote::DEFAULT_QUEUE).to_owned();
    let max_workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let shared = Arc::new(RunShared {
        persister: Persister::start(store.clone()),
        max_num_splits: flow.max_num_splits,
        flow,
        store,
        run_id: run,
        params,
        cancel: CancellationToken::new(),
        progress: Arc::new(RunProgress::default()),
        origin: Some(Origin { run, from: None, tasks, unfinished }),
        join_inputs_in_memory: super::JOIN_INPUTS_IN_MEMORY,
        workers: Arc::new(tokio::sync::Semaphore::new(max_workers)),
        metrics,
        lease: Mutex::new(Some(keeper)),
        holder,
        run_lease,
        last_id: std::sync::atomic::AtomicU64::new(last_id),
        remote: Some(remote::Remote::start(queue, run, queue_name)),
    });
    Ok(Some(PreparedRun { shared, max_workers }))
}
