//! Executing one task: reusing its twin of the origin run, or running its step's body
//! attempt by attempt (retries, timeout, lease, catch), storing its result, and deciding
//! where the flow goes next.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_core::{ArtifactName, Attempt, Progress, TaskStatus, Timestamp};
use braid_dag::Transition;
use braid_store::{AttemptRecord, Precondition, TaskError, TaskEvent, TaskEventKind, TaskKey, TaskRecord, TaskWrite};
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use super::messages::{NextMove, Outcome, ReadyTask};
use super::{RunShared, TaskIdentity, lock};
use crate::context::{Ctx, CtxInner, LocalSet};
use crate::error::{Error, Result};
use crate::flow::StepBody;
use crate::namespace::{ArtRef, CACHE_MAX, Namespace};
use crate::progress::ProgressState;

fn task_key(shared: &RunShared, task: &ReadyTask) -> TaskKey {
    TaskKey { flow: shared.flow.name().clone(), run: shared.run_id, step: task.step.clone(), task: task.id }
}

fn base_record(shared: &RunShared, task: &ReadyTask) -> TaskRecord {
    let mut rec = TaskRecord::new(task_key(shared, task));
    rec.foreach_stack = task.frames.iter().map(|f| f.record.clone()).collect();
    rec.iteration = task.iteration;
    rec.parent = task.parent;
    rec.inputs = task.inputs.as_ref().map(|i| i.branches.iter().map(|b| b.task).collect()).unwrap_or_default();
    rec
}

pub(super) async fn run_task(shared: &Arc<RunShared>, task: &ReadyTask) -> Outcome {
    // Not while the store's writer is far behind: the run's memory stays bounded by what
    // is queued for it, however wide the step (see `persist::MAX_BACKLOG`).
    shared.persister.throttle().await;
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
    let ns = Namespace::extend(
        &task.parent_ns,
        arts.iter().map(|a| (a.name.clone(), Arc::new(ArtRef::new(a.clone())))).collect(),
    );
    if o.run == shared.run_id {
        // A run taken over from its dead driver: the task is already this run's, as
        // stored (same id); nothing to write.
        let next = decide_next(shared, task, &ns).await?;
        return Ok(Outcome::Succeeded { ns, next, reused: true });
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
    let next = decide_next(shared, task, &ns).await?;
    Ok(Outcome::Succeeded { ns, next, reused: true })
}

pub(super) enum AttemptEnd {
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

pub(super) async fn run_body(
    body: &StepBody,
    ctx: Ctx,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> AttemptEnd {
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
    // Events (progress history, warnings) carry over from one attempt to the next, and
    // so does the last report, for `ctx.last_progress()`.
    let mut events = Vec::new();
    let mut last_progress = origin_progress(shared, task);
    loop {
        // On workers, the bound on what runs at once is theirs: here a task only waits.
        let permit = match &shared.remote {
            Some(_) => None,
            None => tokio::select! {
                p = shared.workers.clone().acquire_owned() => match p {
                    Ok(p) => Some(p),
                    Err(_) => return Outcome::Cancelled,
                },
                _ = shared.cancel.cancelled() => return Outcome::Cancelled,
            },
        };
        let mut started = Timestamp::now();
        let clock = Instant::now();
        let mut rec = base_record(shared, task);
        rec.status = TaskStatus::Running;
        rec.attempt = attempt;
        rec.started_at = Some(started);
        rec.lease_deadline = Some(started.plus(policy.lease));
        if shared.remote.is_some() {
            // Queued: the worker that claims it says when it starts, under its own lease.
            rec.status = TaskStatus::Pending;
            rec.started_at = None;
            rec.lease_deadline = None;
        }
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
                last_progress: last_progress.take(),
                policy: policy.clone(),
                claim: None,
            }),
        };
        let end = if let Some(remote) = &shared.remote {
            let end = super::remote::run_remote(&ctx, policy, &shared.cancel, remote).await;
            started = lock(&record).started_at.unwrap_or(started);
            end
        } else if policy.is_isolated() {
            super::isolate::run_isolated(&ctx, policy, &shared.cancel).await
        } else {
            run_body(&step_impl.body, ctx.clone(), policy.timeout, &shared.cancel).await
        };
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
                let rec = ended_record(&ctx, &record, status, ended, &e);
                events = rec.events.clone();
                last_progress = rec.progress.clone();
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
                let rec = ended_record(&ctx, &record, status, ended, &e);
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

/// The report a resumed task's twin in the origin run left when it did not succeed
/// (failed, lost, or still marked running when its process died), for its first attempt's
/// `ctx.last_progress()`.
fn origin_progress(shared: &RunShared, task: &ReadyTask) -> Option<Progress> {
    let origin = shared.origin.as_ref()?;
    if origin.unfinished.is_empty() {
        return None;
    }
    let identity = TaskIdentity {
        step: task.step.clone(),
        path: task.frames.iter().map(|f| f.record.index).collect(),
        iteration: task.iteration,
    };
    origin.unfinished.get(&identity).cloned()
}

/// The record of an attempt that ended without success: status, end, error, no lease,
/// its latest progress report (written or not), and for a lost attempt the event that
/// says so.
fn ended_record(
    ctx: &Ctx,
    record: &Mutex<TaskRecord>,
    status: TaskStatus,
    ended: Timestamp,
    e: &TaskError,
) -> TaskRecord {
    let mut rec = lock(record).clone();
    if let (Some(p), at) = crate::progress::latest(ctx) {
        rec.progress = Some(p);
        rec.progress_at = at;
    }
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
    let mut own = Vec::with_capacity(sets.len());
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
        own.push((name, set.art));
    }
    let ns = Namespace::extend(&task.parent_ns, own);
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
    // A caught failure is not the task's error: the task succeeded, and says what it caught.
    rec.error = None;
    rec.caught = caught.clone().map(|error| braid_store::CaughtFailure {
        artifact: ctx.inner.policy.catch.as_ref().map(|n| n.to_string()).unwrap_or_default(),
        attempt: rec.attempt,
        error,
    });
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
        Transition::Split { to } => NextMove::Split { to: to.clone(), join: join_of(graph, &task.step, None)? },
        Transition::Foreach { over, to } => {
            let art = ns.get(over.as_str()).ok_or_else(|| Error::Foreach {
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
            let art = ns.get(on.as_str()).ok_or_else(|| Error::Switch {
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
            let target = cases.get(&value).ok_or_else(|| Error::Switch {
                step: task.step.clone(),
                on: on.clone(),
                reason: format!(
                    "value {value:?} matches no case; cases: {}",
                    cases.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            })?;
            match target {
                braid_dag::CaseTarget::Split(to) => {
                    NextMove::Split { to: to.clone(), join: join_of(graph, &task.step, Some(&value))? }
                }
                other => {
                    let to = other.steps().first().cloned().ok_or_else(|| Error::Switch {
                        step: task.step.clone(),
                        on: on.clone(),
                        reason: format!("case {value:?} goes to no step"),
                    })?;
                    let loop_back = graph.is_loop_back(task.step.as_str(), to.as_str());
                    NextMove::Go { to, loop_back }
                }
            }
        }
    })
}

/// The join that closes the split of `step` (or, with a case, that fan-out case).
fn join_of(
    graph: &braid_dag::FlowGraph,
    step: &braid_core::StepName,
    case: Option<&str>,
) -> Result<braid_core::StepName> {
    let join = match case {
        None => graph.join_of(step.as_str()),
        Some(c) => graph.join_of_case(step.as_str(), c),
    };
    join.cloned().ok_or_else(|| Error::InvalidFlow {
        flow: graph.name().to_string(),
        problems: format!("split `{step}` has no join"),
    })
}
