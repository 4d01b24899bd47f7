//! The JSON shapes `braid --json` prints. Times are RFC 3339 strings in UTC, durations
//! are seconds (`duration_s`), statuses are lower-case words.

use std::time::Duration;

use braid_client::{Artifact, AttemptRecord, Flow, ForeachFrame, LogLine, Run, Step, Task, TaskError, Timestamp};
use serde_json::{Value, json};

fn ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.to_string()))
}

fn secs(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

/// A run: `{flow, id, pathspec, status, name, tags, params, created_at, started_at,
/// ended_at, duration_s, origin_run, error, lost_reason, lease: {holder, renewed_at,
/// deadline}, meta}`; `status` is as of now (`lost` once the lease ran out).
pub fn run(r: &Run) -> Value {
    json!({
        "flow": r.flow_name().as_str(),
        "id": r.id().to_string(),
        "pathspec": r.pathspec(),
        "status": r.status().as_str(),
        "name": r.name(),
        "tags": r.tags().iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "params": r.params(),
        "created_at": r.created_at().to_string(),
        "started_at": ts(r.started_at()),
        "ended_at": ts(r.ended_at()),
        "duration_s": secs(r.duration()),
        "origin_run": r.origin_run().map(|id| id.to_string()),
        "error": r.error(),
        "lost_reason": r.lost_reason(),
        "lease": r.lease().map(|l| json!({
            "holder": l.holder,
            "renewed_at": l.renewed_at.to_string(),
            "deadline": l.deadline.to_string(),
        })),
        "meta": r.meta(),
    })
}

/// A step: `{name, pathspec, counts: {status: n}, total, first_started, last_ended, duration_s}`.
pub fn step(s: &Step) -> Value {
    let counts: serde_json::Map<String, Value> =
        s.counts().iter().map(|(k, v)| (k.as_str().to_owned(), json!(v))).collect();
    json!({
        "name": s.name().as_str(),
        "pathspec": s.pathspec(),
        "counts": counts,
        "total": s.task_count(),
        "first_started": ts(s.first_started()),
        "last_ended": ts(s.last_ended()),
        "duration_s": secs(s.duration()),
    })
}

fn frame(f: &ForeachFrame) -> Value {
    json!({"step": f.step.as_str(), "task": f.task.0, "over": f.over.as_str(), "index": f.index, "len": f.len})
}

fn error(e: Option<&TaskError>) -> Value {
    e.map_or(Value::Null, |e| json!({"kind": e.kind, "message": e.message}))
}

/// A task as a row of a step: `{id, pathspec, step, index, foreach_stack, iteration,
/// status, attempt, created_at, started_at, ended_at, duration_s, progress, eta_s,
/// error, parent, inputs, origin}`.
pub fn task(t: &Task) -> Value {
    json!({
        "id": t.id().0,
        "pathspec": t.pathspec(),
        "step": t.step_name().as_str(),
        "index": t.index(),
        "foreach_stack": t.foreach_stack().iter().map(frame).collect::<Vec<_>>(),
        "iteration": t.iteration(),
        "status": t.status().as_str(),
        "attempt": t.attempt().0,
        "created_at": t.created_at().to_string(),
        "started_at": ts(t.started_at()),
        "ended_at": ts(t.ended_at()),
        "duration_s": secs(t.duration()),
        "progress": t.progress().map(|p| json!({
            "percent": p.percent,
            "message": p.message,
            "at": ts(t.progress_at()),
        })),
        "eta_s": secs(t.eta()),
        "lost_reason": t.lost_reason(),
        "lease_deadline": ts(t.lease_deadline()),
        "warnings": t.warnings().iter().map(|e| event(e)).collect::<Vec<_>>(),
        "error": error(t.error()),
        "parent": t.parent_id().map(|p| p.0),
        "inputs": t.input_ids().iter().map(|i| i.0).collect::<Vec<_>>(),
        "origin": t.origin().map(|(run, task)| json!({"run": run.to_string(), "task": task.0})),
    })
}

/// A progress report or warning: `{at, attempt, kind, percent, message}`.
pub fn event(e: &braid_store::TaskEvent) -> Value {
    json!({
        "at": e.at.to_string(),
        "attempt": e.attempt.0,
        "kind": e.kind,
        "percent": e.percent,
        "message": e.message,
    })
}

pub fn attempt(a: &AttemptRecord) -> Value {
    json!({
        "attempt": a.attempt.0,
        "status": a.status.as_str(),
        "started_at": a.started_at.to_string(),
        "ended_at": ts(a.ended_at),
        "duration_s": secs(a.ended_at.map(|e| e.since(a.started_at))),
        "error": error(a.error.as_ref()),
    })
}

/// An artifact: `{name, type_name, size, key, set_by, inherited, elements, preview,
/// preview_truncated}`.
pub fn artifact(a: &Artifact) -> Value {
    json!({
        "name": a.name().as_str(),
        "type_name": a.type_name(),
        "size": a.size(),
        "key": a.key().to_hex(),
        "set_by": a.set_by().0,
        "inherited": a.is_inherited(),
        "elements": a.elements_len(),
        "preview": a.preview(),
        "preview_truncated": a.preview_truncated(),
    })
}

pub fn log(l: &LogLine) -> Value {
    json!({
        "seq": l.seq,
        "attempt": l.attempt.0,
        "at": l.at.to_string(),
        "level": l.level,
        "line": l.line,
    })
}

/// A flow: `{name, updated_at, steps: [declared names], params, latest_run}`.
pub fn flow(f: &Flow, latest: Option<&Run>) -> Value {
    json!({
        "name": f.name().as_str(),
        "updated_at": ts(f.updated_at()),
        "steps": f.declared_steps().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "params": f.spec().and_then(|s| s.get("params")).cloned().unwrap_or(json!([])),
        "latest_run": latest.map(|r| json!({
            "id": r.id().to_string(),
            "status": r.status().as_str(),
            "created_at": r.created_at().to_string(),
        })),
    })
}
