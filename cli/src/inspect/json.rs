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

/// A task as a row of a step (`progress`: `{percent, message, at, units: {done, total, unit,
/// rate_per_s} or null, details}`): `{id, pathspec, step, index, foreach_stack, iteration,
/// status, attempt, created_at, started_at, ended_at, duration_s, progress, eta_s,
/// error, caught: {artifact, attempt, kind, message} or null, parent, inputs, origin}`.
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
            "units": p.units.as_ref().map(|u| json!({
                "done": u.done,
                "total": u.total,
                "unit": u.unit,
                "rate_per_s": u.rate,
            })),
            "details": p.details,
        })),
        "eta_s": secs(t.eta()),
        "lost_reason": t.lost_reason(),
        "lease_deadline": ts(t.lease_deadline()),
        "warnings": t.warnings().iter().map(|e| event(e)).collect::<Vec<_>>(),
        "error": error(t.error()),
        "caught": t.caught().map(|c| json!({"artifact": c.artifact, "attempt": c.attempt.0, "kind": c.error.kind, "message": c.error.message})),
        "parent": t.parent_id().map(|p| p.0),
        "inputs": t.input_ids().iter().map(|i| i.0).collect::<Vec<_>>(),
        "origin": t.origin().map(|(run, task)| json!({"run": run.to_string(), "task": task.0})),
        "retries": t.attempt().0.saturating_sub(1),
        "worker": t.record().dispatch.as_ref().map(|d| d.worker.as_str()),
        "lost_dispatches": t.record().dispatch.as_ref().map_or(0, |d| d.lost),
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

/// A float as `json!` stores it: the `f64` (an `f32` widened), `null` when not finite.
fn float(x: f64) -> Option<serde_json::Number> {
    serde_json::Number::from_f64(x)
}

/// A value written as its `Display` text, a JSON string (no `String` made for it).
struct Text<T: std::fmt::Display>(T);

impl<T: std::fmt::Display> serde::Serialize for Text<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// [`task`] serialized straight from the task, without building a `Value`: the same
/// fields, in the order `Value`'s map prints them (sorted by name), with the same
/// numbers, for the rows of a step written as they are read.
#[derive(serde::Serialize)]
pub struct TaskRow<'a> {
    attempt: u32,
    caught: Option<CaughtJson<'a>>,
    created_at: Text<Timestamp>,
    duration_s: Option<serde_json::Number>,
    ended_at: Option<Text<Timestamp>>,
    error: Option<ErrorJson<'a>>,
    eta_s: Option<serde_json::Number>,
    foreach_stack: Vec<FrameJson<'a>>,
    id: u64,
    index: Option<u64>,
    inputs: Vec<u64>,
    iteration: u32,
    lease_deadline: Option<Text<Timestamp>>,
    lost_dispatches: u32,
    lost_reason: Option<String>,
    origin: Option<OriginJson>,
    parent: Option<u64>,
    pathspec: Text<&'a braid_client::TaskKey>,
    progress: Option<ProgressJson<'a>>,
    retries: u32,
    started_at: Option<Text<Timestamp>>,
    status: &'static str,
    step: &'a str,
    warnings: Vec<EventJson<'a>>,
    worker: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct CaughtJson<'a> {
    artifact: &'a str,
    attempt: u32,
    kind: &'a str,
    message: &'a str,
}

#[derive(serde::Serialize)]
struct ErrorJson<'a> {
    kind: &'a str,
    message: &'a str,
}

#[derive(serde::Serialize)]
struct FrameJson<'a> {
    index: u64,
    len: u64,
    over: &'a str,
    step: &'a str,
    task: u64,
}

#[derive(serde::Serialize)]
struct OriginJson {
    run: Text<braid_client::RunId>,
    task: u64,
}

#[derive(serde::Serialize)]
struct ProgressJson<'a> {
    at: Option<Text<Timestamp>>,
    details: Option<&'a Value>,
    message: &'a str,
    percent: Option<serde_json::Number>,
    units: Option<UnitsJson<'a>>,
}

#[derive(serde::Serialize)]
struct UnitsJson<'a> {
    done: u64,
    rate_per_s: Option<serde_json::Number>,
    total: u64,
    unit: &'a str,
}

#[derive(serde::Serialize)]
struct EventJson<'a> {
    at: Text<Timestamp>,
    attempt: u32,
    kind: braid_client::TaskEventKind,
    message: &'a str,
    percent: Option<serde_json::Number>,
}

impl<'a> TaskRow<'a> {
    /// The row of `t`.
    pub fn of(t: &'a Task) -> Self {
        TaskRow {
            attempt: t.attempt().0,
            caught: t.caught().map(|c| CaughtJson {
                artifact: &c.artifact,
                attempt: c.attempt.0,
                kind: &c.error.kind,
                message: &c.error.message,
            }),
            created_at: Text(t.created_at()),
            duration_s: t.duration().and_then(|d| float(d.as_secs_f64())),
            ended_at: t.ended_at().map(Text),
            error: t.error().map(|e| ErrorJson { kind: &e.kind, message: &e.message }),
            eta_s: t.eta().and_then(|d| float(d.as_secs_f64())),
            foreach_stack: t
                .foreach_stack()
                .iter()
                .map(|f| FrameJson {
                    index: f.index,
                    len: f.len,
                    over: f.over.as_str(),
                    step: f.step.as_str(),
                    task: f.task.0,
                })
                .collect(),
            id: t.id().0,
            index: t.index(),
            inputs: t.input_ids().iter().map(|i| i.0).collect(),
            iteration: t.iteration(),
            lease_deadline: t.lease_deadline().map(Text),
            lost_dispatches: t.record().dispatch.as_ref().map_or(0, |d| d.lost),
            lost_reason: t.lost_reason(),
            origin: t.origin().map(|(run, task)| OriginJson { run: Text(run), task: task.0 }),
            parent: t.parent_id().map(|p| p.0),
            pathspec: Text(t.key()),
            progress: t.progress().map(|p| ProgressJson {
                at: t.progress_at().map(Text),
                details: p.details.as_ref(),
                message: &p.message,
                percent: float(f64::from(p.percent)),
                units: p.units.as_ref().map(|u| UnitsJson {
                    done: u.done,
                    rate_per_s: u.rate.and_then(float),
                    total: u.total,
                    unit: &u.unit,
                }),
            }),
            retries: t.attempt().0.saturating_sub(1),
            started_at: t.started_at().map(Text),
            status: t.status().as_str(),
            step: t.step_name().as_str(),
            warnings: t
                .warnings()
                .into_iter()
                .map(|e| EventJson {
                    at: Text(e.at),
                    attempt: e.attempt.0,
                    kind: e.kind,
                    message: &e.message,
                    percent: e.percent.and_then(|p| float(f64::from(p))),
                })
                .collect(),
            worker: t.record().dispatch.as_ref().map(|d| d.worker.as_str()),
        }
    }
}

/// A task written as [`TaskRow`]: an element of a stream of a step's tasks.
pub struct TaskJson(pub Task);

impl serde::Serialize for TaskJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TaskRow::of(&self.0).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use braid_client::{
        Attempt, Client, Progress, RunId, RunRecord, StepName, Store, TaskError, TaskEvent, TaskEventKind, TaskId,
        TaskKey, TaskRecord, TaskStatus,
    };
    use braid_store::TaskWrite;

    use super::*;

    #[test]
    fn a_task_row_prints_exactly_what_the_task_value_prints_whatever_fields_are_set() {
        let store = Store::memory();
        let flow = braid_client::FlowName::new("rows").unwrap();
        let run = RunRecord::new(flow.clone(), RunId::generate());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(store.records.create_run(&run)).unwrap();
        let key =
            |t| TaskKey { flow: flow.clone(), run: run.id, step: StepName::new("work").unwrap(), task: TaskId(t) };
        let bare = TaskRecord::new(key(1));
        let mut full = TaskRecord::new(key(2));
        full.status = TaskStatus::Running;
        full.attempt = Attempt(3);
        full.parent = Some(TaskId(1));
        full.inputs = vec![TaskId(1), TaskId(7)];
        full.iteration = 4;
        full.foreach_stack = vec![braid_client::ForeachFrame {
            step: StepName::new("start").unwrap(),
            task: TaskId(1),
            over: braid_client::ArtifactName::new("items").unwrap(),
            index: 9,
            len: 10,
        }];
        full.started_at = Some(Timestamp::from_micros(1_700_000_000_123_456));
        full.ended_at = Some(Timestamp::from_micros(1_700_000_001_000_001));
        full.lease_deadline = Some(Timestamp::from_micros(1_700_000_002_000_000));
        full.progress = Some(Progress {
            percent: 33.3,
            message: "a \"quoted\"\nline ✓".into(),
            units: Some(braid_core::ProgressUnits { done: 333, total: 1000, unit: "rows".into(), rate: Some(12.5) }),
            details: Some(json!({"file": "b\"2\".csv", "offset": 4096})),
        });
        full.progress_at = Some(Timestamp::from_micros(1_700_000_000_500_000));
        full.eta = Some(Timestamp::from_micros(1_700_000_009_000_000));
        full.error = Some(TaskError { kind: "panic".into(), message: "tab\there".into() });
        full.origin = Some((RunId::generate(), TaskId(5)));
        full.events = vec![
            TaskEvent {
                at: Timestamp::from_micros(1_700_000_000_200_000),
                attempt: Attempt(2),
                kind: TaskEventKind::Progress,
                percent: Some(10.1),
                message: "ten".into(),
            },
            TaskEvent {
                at: Timestamp::from_micros(1_700_000_000_300_000),
                attempt: Attempt(3),
                kind: TaskEventKind::Stalled,
                percent: None,
                message: "no report for 5m".into(),
            },
        ];
        // Running as of now (no lease), with an estimate from its progress rate.
        let mut running = TaskRecord::new(key(3));
        running.status = TaskStatus::Running;
        running.started_at = Some(Timestamp::from_micros(1_700_000_000_000_000));
        running.ended_at = Some(Timestamp::from_micros(1_700_000_000_700_000));
        running.progress = Some(Progress { percent: 14.3, message: String::new(), ..Default::default() });
        running.progress_at = Some(Timestamp::from_micros(1_700_000_000_333_333));
        let writes = vec![TaskWrite::new(bare), TaskWrite::new(full), TaskWrite::new(running)];
        rt.block_on(store.records.write_tasks(writes)).unwrap();
        let client = Client::from_store(store);
        let tasks = client.flow("rows").unwrap().run_by_id(run.id).unwrap().tasks().unwrap();
        assert_eq!(tasks.len(), 3);
        assert_eq!(tasks[1].status(), TaskStatus::Lost, "its lease ran out");
        assert!(tasks[2].eta().is_some());
        for t in &tasks {
            let want = serde_json::to_string_pretty(&task(t)).unwrap();
            let got = serde_json::to_string_pretty(&TaskJson(t.clone())).unwrap();
            assert_eq!(got, want, "task {}", t.id());
        }
        assert!(serde_json::to_string(&task(&tasks[1])).unwrap().contains("no report for 5m"), "a warning is in");
    }
}
