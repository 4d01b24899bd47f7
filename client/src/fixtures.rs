//! Runs fabricated through the store API, written the way the runtime writes them: for
//! tests, examples and doc tests that need a run without running a flow.
//!
//! [`fanout`] writes a whole `fanout` run (start → foreach `work` → `join` → `end`);
//! [`RunWriter`] and [`TaskSpec`] write any run task by task, so a test can read a run
//! between writes as if it were still going.

use std::collections::BTreeMap;
use std::time::Duration;

use braid_core::codec;
use braid_core::{ArtifactName, FlowName, Progress, RunId, RunStatus, StepName, TaskId, TaskStatus, Timestamp};
use braid_store::{
    ArtifactRecord, AttemptRecord, ElementsRef, FlowRecord, ForeachFrame, LogLine, RunRecord, Store, TaskError,
    TaskKey, TaskRecord, TaskWrite,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::rt;

/// The spec of the `fanout` flow, in the `braidflow-dag` `FlowSpec` JSON form.
pub fn fanout_spec() -> Value {
    json!({
        "format_version": 1,
        "name": "fanout",
        "params": [{"name": "n", "type": "uint", "default": 1000, "help": "how many items"}],
        "steps": [
            {"name": "start", "kind": "normal", "next": {"type": "foreach", "over": "items", "to": "work"}},
            {"name": "work", "kind": "normal", "next": {"type": "next", "to": "join"}},
            {"name": "join", "kind": "join", "next": {"type": "next", "to": "end"}},
            {"name": "end", "kind": "normal", "next": {"type": "end"}}
        ]
    })
}

/// The tasks of a fabricated `fanout` run.
#[derive(Debug, Clone)]
pub struct FanoutRun {
    /// The run's id.
    pub run: RunId,
    /// The `start` task.
    pub start: TaskId,
    /// The `work` tasks, by foreach index.
    pub work: Vec<TaskId>,
    /// The `join` task.
    pub join: TaskId,
    /// The `end` task.
    pub end: TaskId,
}

/// Writes a finished, succeeded `fanout` run with `n` items:
/// - `start` sets `n: u64`, `items: Vec<u64>` (0..n, with per-element data) and
///   `label: String`, and fans out over `items`;
/// - `work` task `i` sets `out: u64 = i * i` and `note: String`, logs two lines and
///   reports progress; the task at index 1 needed two attempts;
/// - `join` (inputs: every `work` task, no parent) sets `total: u64` = the sum of `out`;
/// - `end` (parent: the join) sets `done: bool`.
pub fn fanout(store: &Store, n: u64) -> Result<FanoutRun> {
    let mut params = BTreeMap::new();
    params.insert("n".to_owned(), json!(n));
    let mut w = RunWriter::start(store, "fanout", Some(fanout_spec()), params)?;
    let f = fanout_start(&mut w, n)?;
    let mut work = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut specs = Vec::with_capacity(work.capacity());
    for i in 0..n {
        specs.push(fanout_work(f.start, i, n)?);
    }
    for id in w.tasks(specs)? {
        work.push(id);
    }
    let total: u64 = (0..n).map(|i| i * i).sum();
    let join = w.task(TaskSpec::new("join").inputs(work.clone()).set("total", &total)?)?;
    let end = w.task(TaskSpec::new("end").parent(join).set("done", &true)?)?;
    w.finish(RunStatus::Succeeded, None)?;
    Ok(FanoutRun { run: w.run_id(), start: f.start, work, join, end })
}

/// The `start` task of a `fanout` run, written.
#[derive(Debug, Clone, Copy)]
pub struct FanoutStart {
    /// The `start` task's id, the parent of every `work` task.
    pub start: TaskId,
}

/// Writes the `start` task of a `fanout` run with `n` items.
pub fn fanout_start(w: &mut RunWriter, n: u64) -> Result<FanoutStart> {
    let items: Vec<u64> = (0..n).collect();
    let start = w.task(
        TaskSpec::new("start")
            .set("n", &n)?
            .set_sequence("items", &items)?
            .set("label", "fanout")?
            .log("splitting into items"),
    )?;
    Ok(FanoutStart { start })
}

/// The spec of `work` task `i` of a `fanout` run whose `start` is `start`.
pub fn fanout_work(start: TaskId, i: u64, n: u64) -> Result<TaskSpec> {
    let mut spec = TaskSpec::new("work")
        .parent(start)
        .foreach("start", start, "items", i, n)
        .set("out", &(i * i))?
        .set("note", &format!("item {i}"))?
        .log(format!("squaring {i}"))
        .log(format!("{i} squared is {}", i * i))
        .progress(100.0, "done");
    if i == 1 {
        spec = spec.failed_attempt("error", "transient: connection reset");
    }
    Ok(spec)
}

/// Writes one run task by task through the store API.
#[derive(Debug)]
pub struct RunWriter {
    store: Store,
    run: RunRecord,
    next_task: u64,
    clock: Timestamp,
}

impl RunWriter {
    /// Registers `spec` as the flow's spec (when given) and creates a running run.
    pub fn start(store: &Store, flow: &str, spec: Option<Value>, params: BTreeMap<String, Value>) -> Result<RunWriter> {
        let flow = FlowName::new(flow)?;
        let records = &store.records;
        if let Some(spec) = spec {
            let record = FlowRecord { name: flow.clone(), spec, updated_at: Timestamp::now() };
            rt::call(|| format!("fixture: put flow {flow}"), records.put_flow(record))?;
        }
        let mut run = RunRecord::new(flow.clone(), RunId::generate());
        run.status = RunStatus::Running;
        run.params = params;
        run.started_at = Some(run.created_at);
        rt::call(|| format!("fixture: create run {flow}"), records.create_run(&run))?;
        let run = rt::call(|| format!("fixture: read run {flow}"), records.get_run(&flow, run.id))?
            .ok_or_else(|| Error::NoRuns { flow: flow.to_string() })?;
        let clock = run.created_at;
        Ok(RunWriter { store: store.clone(), run, next_task: 1, clock })
    }

    /// The id of the run being written.
    pub fn run_id(&self) -> RunId {
        self.run.id
    }

    /// The run record as last written.
    pub fn record(&self) -> &RunRecord {
        &self.run
    }

    /// Changes the run record (status, tags, name, meta, origin, ...) and stores it.
    pub fn update_run(&mut self, f: impl FnOnce(&mut RunRecord)) -> Result<()> {
        let mut run = self.run.clone();
        f(&mut run);
        let records = &self.store.records;
        self.run = rt::call(|| format!("fixture: update run {}", run.id), records.update_run(&run))?;
        Ok(())
    }

    /// Ends the run with `status`.
    pub fn finish(&mut self, status: RunStatus, error: Option<String>) -> Result<()> {
        let end = self.tick();
        self.update_run(|r| {
            r.status = status;
            r.ended_at = Some(end);
            r.error = error;
        })
    }

    /// Writes one task; returns its id.
    pub fn task(&mut self, spec: TaskSpec) -> Result<TaskId> {
        Ok(self.tasks(vec![spec])?.into_iter().next().unwrap_or(TaskId(0)))
    }

    /// Writes tasks in one batch; returns their ids in order.
    pub fn tasks(&mut self, specs: Vec<TaskSpec>) -> Result<Vec<TaskId>> {
        let mut blobs = Vec::new();
        let mut writes = Vec::with_capacity(specs.len());
        let mut logs = Vec::new();
        let mut ids = Vec::with_capacity(specs.len());
        for spec in specs {
            let (write, spec_blobs, spec_logs) = self.prepare(spec)?;
            ids.push(write.task.key.task);
            blobs.extend(spec_blobs);
            logs.extend(spec_logs);
            writes.push(write);
        }
        let records = &self.store.records;
        let bl = &self.store.blobs;
        if !blobs.is_empty() {
            rt::call(|| "fixture: put blobs".to_owned(), bl.put_many(blobs))?;
        }
        let outcomes = rt::call(|| "fixture: write tasks".to_owned(), records.write_tasks(writes))?;
        if let Some(o) = outcomes.iter().find(|o| !o.is_applied()) {
            return Err(Error::store(
                "fixture: write tasks",
                braid_store::Error::Conflict { what: "task write".into(), reason: format!("{o:?}") },
            ));
        }
        if !logs.is_empty() {
            rt::call(|| "fixture: append logs".to_owned(), records.append_logs(logs))?;
        }
        Ok(ids)
    }

    fn tick(&mut self) -> Timestamp {
        self.clock = self.clock.plus(Duration::from_millis(3));
        self.clock
    }

    fn prepare(&mut self, spec: TaskSpec) -> Result<(TaskWrite, Vec<Vec<u8>>, Vec<LogLine>)> {
        let id = match spec.id {
            Some(id) => id,
            None => {
                let id = TaskId(self.next_task);
                self.next_task += 1;
                id
            }
        };
        let key = TaskKey { flow: self.run.flow.clone(), run: self.run.id, step: StepName::new(&spec.step)?, task: id };
        let foreach = spec
            .foreach
            .into_iter()
            .map(|(step, task, over, index, len)| {
                Ok(ForeachFrame { step: StepName::new(step)?, task, over: ArtifactName::new(over)?, index, len })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut task = TaskRecord::new(key);
        task.status = spec.status;
        task.parent = spec.parent;
        task.inputs = spec.inputs;
        task.foreach_stack = foreach;
        task.iteration = spec.iteration;
        task.created_at = self.tick();
        let started = self.tick();
        if spec.status != TaskStatus::Pending {
            task.started_at = Some(started);
        }
        let ended = self.tick();
        if spec.status.is_terminal() {
            task.ended_at = Some(ended);
        }
        if let Some(p) = spec.progress {
            task.progress = Some(p);
            task.progress_at = Some(ended);
        }
        task.error = spec.error.clone();
        let mut attempts = Vec::new();
        for (kind, message) in spec.failed_attempts {
            attempts.push(AttemptRecord {
                attempt: task.attempt,
                status: TaskStatus::Failed,
                started_at: started,
                ended_at: Some(started),
                error: Some(TaskError { kind, message }),
            });
            task.attempt = task.attempt.next();
        }
        // Earlier attempts are recorded in their own writes so each lands in the table.
        let attempt = AttemptRecord {
            attempt: task.attempt,
            status: spec.status,
            started_at: started,
            ended_at: task.ended_at,
            error: spec.error,
        };
        let mut blobs = Vec::new();
        let mut artifacts = Vec::new();
        for a in spec.artifacts {
            let key = braid_store::BlobKey::of(&a.bytes);
            let elements = a.elements.map(|(manifest, len)| {
                let key = braid_store::BlobKey::of(&manifest);
                blobs.push(manifest);
                ElementsRef { key, len }
            });
            // Like the runtime: small values travel inline in their record, larger ones
            // are blobs.
            let inline = (a.bytes.len() <= braid_store::INLINE_VALUE_MAX).then(|| a.bytes.clone());
            let size = a.bytes.len() as u64;
            if inline.is_none() {
                blobs.push(a.bytes);
            }
            artifacts.push(ArtifactRecord {
                name: a.name,
                key,
                type_name: a.type_name,
                size,
                preview: a.preview,
                elements,
                inline,
            });
        }
        let logs = spec
            .logs
            .into_iter()
            .map(|line| LogLine {
                run: self.run.id,
                task: id,
                attempt: task.attempt,
                seq: 0,
                at: ended,
                level: "info".into(),
                line,
            })
            .collect();
        if !attempts.is_empty() {
            let records = &self.store.records;
            let writes = attempts
                .into_iter()
                .map(|a| {
                    let mut t = task.clone();
                    t.attempt = a.attempt;
                    t.status = TaskStatus::Failed;
                    TaskWrite {
                        task: t,
                        artifacts: None,
                        attempt: Some(a),
                        precondition: braid_store::Precondition::None,
                    }
                })
                .collect();
            rt::call(|| "fixture: write attempts".to_owned(), records.write_tasks(writes))?;
        }
        let write = TaskWrite {
            task,
            artifacts: Some(artifacts),
            attempt: (spec.status != TaskStatus::Pending).then_some(attempt),
            precondition: braid_store::Precondition::None,
        };
        Ok((write, blobs, logs))
    }
}

struct EncodedValue {
    name: ArtifactName,
    bytes: Vec<u8>,
    type_name: String,
    preview: codec::Preview,
    /// The manifest of per-element envelopes and the element count.
    elements: Option<(Vec<u8>, u64)>,
}

impl std::fmt::Debug for EncodedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.type_name)
    }
}

/// One task to write: step, status, links, foreach frames, artifacts, logs, progress.
#[derive(Debug)]
pub struct TaskSpec {
    id: Option<TaskId>,
    step: String,
    status: TaskStatus,
    parent: Option<TaskId>,
    inputs: Vec<TaskId>,
    /// (step, task, over, index, len), outermost first.
    foreach: Vec<(String, TaskId, String, u64, u64)>,
    iteration: u32,
    artifacts: Vec<EncodedValue>,
    logs: Vec<String>,
    progress: Option<Progress>,
    error: Option<TaskError>,
    failed_attempts: Vec<(String, String)>,
}

impl TaskSpec {
    /// A succeeded task of `step` (the name is checked when the task is written).
    pub fn new(step: &str) -> Self {
        TaskSpec {
            id: None,
            step: step.to_owned(),
            status: TaskStatus::Succeeded,
            parent: None,
            inputs: Vec::new(),
            foreach: Vec::new(),
            iteration: 0,
            artifacts: Vec::new(),
            logs: Vec::new(),
            progress: None,
            error: None,
            failed_attempts: Vec::new(),
        }
    }

    /// Rewrites the task with this id instead of creating a new one.
    pub fn id(mut self, id: TaskId) -> Self {
        self.id = Some(id);
        self
    }

    /// The status the task is written with (default: succeeded).
    pub fn status(mut self, status: TaskStatus) -> Self {
        self.status = status;
        self
    }

    /// The task whose artifacts this one inherits.
    pub fn parent(mut self, parent: TaskId) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Makes the task a join of these branch tasks.
    pub fn inputs(mut self, inputs: Vec<TaskId>) -> Self {
        self.inputs = inputs;
        self
    }

    /// The loop iteration the task belongs to.
    pub fn iteration(mut self, iteration: u32) -> Self {
        self.iteration = iteration;
        self
    }

    /// Adds a foreach frame (call outermost first; names are checked when written).
    pub fn foreach(mut self, step: &str, task: TaskId, over: &str, index: u64, len: u64) -> Self {
        self.foreach.push((step.to_owned(), task, over.to_owned(), index, len));
        self
    }

    /// Sets artifact `name` to `value`.
    pub fn set<T: Serialize + ?Sized>(mut self, name: &str, value: &T) -> Result<Self> {
        let enc = codec::encode(value)?;
        self.artifacts.push(EncodedValue {
            name: ArtifactName::new(name)?,
            bytes: enc.bytes,
            type_name: enc.type_name,
            preview: enc.preview,
            elements: None,
        });
        Ok(self)
    }

    /// Sets artifact `name` to a sequence a foreach can fan out over (with per-element data).
    pub fn set_sequence<T: Serialize + ?Sized>(mut self, name: &str, value: &T) -> Result<Self> {
        let enc = codec::encode(value)?;
        let elements = codec::encode_elements(value)?;
        let len = elements.len() as u64;
        let manifest = codec::encode_manifest(&elements)?;
        self.artifacts.push(EncodedValue {
            name: ArtifactName::new(name)?,
            bytes: enc.bytes,
            type_name: enc.type_name,
            preview: enc.preview,
            elements: Some((manifest, len)),
        });
        Ok(self)
    }

    /// A log line the task wrote.
    pub fn log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }

    /// Reported progress (percent is clamped to 0..=100).
    pub fn progress(mut self, percent: f32, message: &str) -> Self {
        self.progress = Progress::new(percent.clamp(0.0, 100.0), message).ok();
        self
    }

    /// The task's (last attempt's) error; also marks it failed.
    pub fn error(mut self, kind: &str, message: &str) -> Self {
        self.status = TaskStatus::Failed;
        self.error = Some(TaskError { kind: kind.into(), message: message.into() });
        self
    }

    /// An earlier attempt that failed before the one this spec describes.
    pub fn failed_attempt(mut self, kind: &str, message: &str) -> Self {
        self.failed_attempts.push((kind.into(), message.into()));
        self
    }
}
