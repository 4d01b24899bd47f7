//! Rows as the SQL backends keep them (fs's SQLite and PostgreSQL have the same
//! columns): each `…Row` holds one row's raw column values, read by the backend from its
//! own row type, and `decode` turns it into the record, naming the row and the database
//! in a `Corrupt` error when a value no longer parses. The encoding side (task columns
//! kept as one JSON text) is here too, so both backends write the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use braid_core::codec::Preview;
use braid_core::{
    ArtifactName, Attempt, FlowName, PlanName, Progress, ProgressUnits, RunId, RunStatus, StepName, Tag, TaskId,
    TaskStatus, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::blob::BlobKey;
use crate::error::{Error, Result};
use crate::plan::{LaunchRecord, ParamSetState, PlanRecord, PlanVersion, SetPause, TickFailure};
use crate::record::{
    ArtifactRecord, BlobRef, CaughtFailure, ElementsRef, ForeachFrame, Page, RunLease, RunRecord, StepSummary,
    TaskDispatch, TaskError, TaskEvent, TaskKey, TaskRecord,
};

/// The error for a row of `location` that does not decode.
pub(crate) fn corrupt(location: &str, what: String, reason: impl ToString) -> Error {
    Error::Corrupt { what, path: location.to_owned(), reason: reason.to_string() }
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_micros)
}

/// A 32-byte key column.
fn key(bytes: Vec<u8>, location: &str, what: &dyn Fn() -> String, column: &str) -> Result<BlobKey> {
    let key: [u8; 32] = bytes.try_into().map_err(|_| corrupt(location, what(), format!("{column} is not 32 bytes")))?;
    Ok(BlobKey(key))
}

/// Columns of `tasks` that are read rarely, kept as one JSON text (`extra`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct TaskExtra {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    foreach_stack: Vec<ForeachFrame>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    inputs: Vec<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<TaskError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    origin: Option<(RunId, TaskId)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eta: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    events: Vec<TaskEvent>,
    /// The latest progress report's units and details (its percent and message have
    /// their own columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress_units: Option<ProgressUnits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress_details: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    caught: Option<CaughtFailure>,
    /// A worker's claim; the backends read its token (`$.dispatch.token`) for
    /// [`Precondition::Claim`](crate::Precondition::Claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispatch: Option<TaskDispatch>,
}

/// The `extra` column of a task: `None` (SQL `NULL`) when every rarely read field is
/// empty, as most tasks' are.
pub(crate) fn task_extra_json(t: &TaskRecord) -> serde_json::Result<Option<String>> {
    if t.foreach_stack.is_empty()
        && t.inputs.is_empty()
        && t.error.is_none()
        && t.origin.is_none()
        && t.eta.is_none()
        && t.events.is_empty()
        && t.caught.is_none()
        && t.dispatch.is_none()
        && t.progress.as_ref().is_none_or(|p| p.units.is_none() && p.details.is_none())
    {
        return Ok(None);
    }
    let extra = TaskExtra {
        foreach_stack: t.foreach_stack.clone(),
        inputs: t.inputs.clone(),
        error: t.error.clone(),
        origin: t.origin,
        eta: t.eta,
        events: t.events.clone(),
        progress_units: t.progress.as_ref().and_then(|p| p.units.clone()),
        progress_details: t.progress.as_ref().and_then(|p| p.details.clone()),
        caught: t.caught.clone(),
        dispatch: t.dispatch.clone(),
    };
    serde_json::to_string(&extra).map(Some)
}

/// A `runs` row.
pub(crate) struct RunRow {
    pub(crate) id: String,
    pub(crate) flow: String,
    pub(crate) status: String,
    pub(crate) params: String,
    pub(crate) tags: String,
    pub(crate) meta: String,
    pub(crate) origin_run: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) started_at: Option<i64>,
    pub(crate) ended_at: Option<i64>,
    pub(crate) name: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) revision: i64,
    pub(crate) lease_holder: Option<String>,
    pub(crate) lease_renewed: Option<i64>,
    pub(crate) lease_deadline: Option<i64>,
}

impl RunRow {
    pub(crate) fn decode(self, location: &str) -> Result<RunRecord> {
        let lease = match (self.lease_holder, self.lease_renewed, self.lease_deadline) {
            (Some(holder), Some(renewed), Some(deadline)) => Some(RunLease {
                holder,
                renewed_at: Timestamp::from_micros(renewed),
                deadline: Timestamp::from_micros(deadline),
            }),
            _ => None,
        };
        let id = self.id;
        let c = |e: &dyn std::fmt::Display| corrupt(location, format!("run row {id}"), e);
        Ok(RunRecord {
            flow: FlowName::new(&self.flow).map_err(|e| c(&e))?,
            id: RunId::parse(&id).map_err(|e| c(&e))?,
            status: self.status.parse::<RunStatus>().map_err(|e| c(&e))?,
            params: serde_json::from_str(&self.params).map_err(|e| c(&e))?,
            tags: serde_json::from_str::<BTreeSet<Tag>>(&self.tags).map_err(|e| c(&e))?,
            created_at: Timestamp::from_micros(self.created_at),
            started_at: ts(self.started_at),
            ended_at: ts(self.ended_at),
            origin_run: self.origin_run.map(|o| RunId::parse(&o)).transpose().map_err(|e| c(&e))?,
            name: self.name,
            error: self.error,
            meta: serde_json::from_str(&self.meta).map_err(|e| c(&e))?,
            lease,
            revision: self.revision as u64,
        })
    }
}

/// A `tasks` row.
pub(crate) struct TaskRow {
    pub(crate) run: String,
    pub(crate) task: i64,
    pub(crate) flow: String,
    pub(crate) step: String,
    pub(crate) status: String,
    pub(crate) attempt: i64,
    pub(crate) iteration: i64,
    pub(crate) parent: Option<i64>,
    pub(crate) created_at: i64,
    pub(crate) started_at: Option<i64>,
    pub(crate) ended_at: Option<i64>,
    pub(crate) lease_deadline: Option<i64>,
    pub(crate) progress_pct: Option<f64>,
    pub(crate) progress_msg: Option<String>,
    pub(crate) progress_at: Option<i64>,
    pub(crate) extra: Option<String>,
    pub(crate) revision: i64,
}

impl TaskRow {
    /// `flow_hint`: the flow the caller asked for, reused (not parsed again) when the
    /// row's flow is that one.
    pub(crate) fn decode(self, flow_hint: Option<&FlowName>, location: &str) -> Result<TaskRecord> {
        let (run, task) = (self.run, self.task);
        let c = |e: &dyn std::fmt::Display| corrupt(location, format!("task row {run}/{task}"), e);
        let extra: TaskExtra = match self.extra {
            Some(e) => serde_json::from_str(&e).map_err(|e| c(&e))?,
            None => TaskExtra::default(),
        };
        let flow = match flow_hint {
            Some(f) if f.as_str() == self.flow => f.clone(),
            _ => FlowName::new(&self.flow).map_err(|e| c(&e))?,
        };
        Ok(TaskRecord {
            key: TaskKey {
                flow,
                run: RunId::parse(&run).map_err(|e| c(&e))?,
                step: StepName::new(&self.step).map_err(|e| c(&e))?,
                task: TaskId(task as u64),
            },
            status: self.status.parse::<TaskStatus>().map_err(|e| c(&e))?,
            attempt: Attempt(self.attempt as u32),
            foreach_stack: extra.foreach_stack,
            iteration: self.iteration as u32,
            parent: self.parent.map(|p| TaskId(p as u64)),
            inputs: extra.inputs,
            created_at: Timestamp::from_micros(self.created_at),
            started_at: ts(self.started_at),
            ended_at: ts(self.ended_at),
            lease_deadline: ts(self.lease_deadline),
            progress: self.progress_pct.map(|p| Progress {
                percent: p as f32,
                message: self.progress_msg.unwrap_or_default(),
                units: extra.progress_units,
                details: extra.progress_details,
            }),
            progress_at: ts(self.progress_at),
            error: extra.error,
            origin: extra.origin,
            eta: extra.eta,
            events: extra.events,
            caught: extra.caught,
            dispatch: extra.dispatch,
            revision: self.revision as u64,
        })
    }
}

/// An `artifacts` row (without its run and task, which the caller knows).
pub(crate) struct ArtifactRow {
    pub(crate) name: String,
    pub(crate) blob_key: Vec<u8>,
    pub(crate) type_name: String,
    pub(crate) size: i64,
    pub(crate) preview: String,
    pub(crate) preview_cut: bool,
    pub(crate) elements_key: Option<Vec<u8>>,
    pub(crate) elements_len: Option<i64>,
    pub(crate) inline_value: Option<Vec<u8>>,
}

impl ArtifactRow {
    /// `what` names the row in errors.
    pub(crate) fn decode(self, what: &dyn Fn() -> String, location: &str) -> Result<ArtifactRecord> {
        let elements = match (self.elements_key, self.elements_len) {
            (Some(k), Some(len)) => Some(ElementsRef { key: key(k, location, what, "elements key")?, len: len as u64 }),
            _ => None,
        };
        let blob_key = key(self.blob_key, location, what, "blob key")?;
        Ok(ArtifactRecord {
            name: ArtifactName::new(&self.name).map_err(|e| corrupt(location, what(), e))?,
            key: blob_key,
            type_name: self.type_name,
            size: self.size as u64,
            preview: Preview { text: self.preview, truncated: self.preview_cut },
            elements,
            inline: self.inline_value,
        })
    }
}

/// The row an `artifact_blob_refs` cursor names: `run/task/name` of the last artifact
/// row of the previous page; the start (before every row) without one.
pub(crate) fn parse_artifact_cursor(after: Option<&str>) -> Result<(String, i64, String)> {
    let Some(s) = after else { return Ok((String::new(), -1, String::new())) };
    let mut parts = s.splitn(3, '/');
    match (parts.next(), parts.next().and_then(|t| t.parse::<i64>().ok()), parts.next()) {
        (Some(r), Some(t), Some(n)) => Ok((r.to_owned(), t, n.to_owned())),
        _ => Err(crate::record::bad_cursor("blob reference", s)),
    }
}

/// One artifact row's blob references: `(run, task, name, blob key, elements key)`.
pub(crate) type BlobRefRow = (String, i64, String, Vec<u8>, Option<Vec<u8>>);

/// The page of blob references of `rows` (fetched in key order with one extra, to
/// know whether more remain); the cursor names the last row included.
pub(crate) fn blob_ref_page(rows: Vec<BlobRefRow>, limit: usize, location: &str) -> Result<Page<BlobRef>> {
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(rows.len() * 2);
    let mut last = None;
    for (run_s, task, name, blob_key, elements) in rows.into_iter().take(limit) {
        let what = || format!("artifact row {run_s}/{task}/{name}");
        let run = RunId::parse(&run_s).map_err(|e| corrupt(location, what(), e))?;
        items.push(BlobRef { run, key: key(blob_key, location, &what, "blob key")? });
        if let Some(k) = elements {
            items.push(BlobRef { run, key: key(k, location, &what, "elements key")? });
        }
        last = Some(format!("{run_s}/{task}/{name}"));
    }
    Ok(Page { items, next: if more { last } else { None } })
}

/// One row of `SELECT step, status, COUNT(*), MIN(started_at), MAX(ended_at),
/// MIN(task_id) … GROUP BY step, status`.
pub(crate) type StepCountRow = (String, String, i64, Option<i64>, Option<i64>, i64);

/// Per-step summaries from per-(step, status) counts, in order of each step's first task.
pub(crate) fn step_summaries(
    rows: Vec<StepCountRow>,
    flow: &FlowName,
    run: RunId,
    location: &str,
) -> Result<Vec<StepSummary>> {
    let mut counts = Vec::with_capacity(rows.len());
    for (step, status, count, started, ended, first) in rows {
        let what = || format!("task rows of {flow}/{run}/{step}");
        let name = StepName::new(&step).map_err(|e| corrupt(location, what(), e))?;
        let status: TaskStatus = status.parse().map_err(|e| corrupt(location, what(), e))?;
        counts.push(crate::record::StepCount {
            step: name,
            status,
            count: count as u64,
            first_started: ts(started),
            last_ended: ts(ended),
            first_task: first as u64,
        });
    }
    Ok(crate::record::summarise_steps(counts))
}

/// A `plans` row; `spec` is `None` when the query left it out.
pub(crate) struct PlanRow {
    pub(crate) name: String,
    pub(crate) flow: String,
    pub(crate) version: i64,
    pub(crate) hash: String,
    pub(crate) spec: Option<String>,
    pub(crate) labels: String,
    pub(crate) active: bool,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) active_since: Option<i64>,
    pub(crate) cursor: Option<i64>,
    pub(crate) deleted_at: Option<i64>,
}

impl PlanRow {
    pub(crate) fn decode(self, location: &str) -> Result<PlanRecord> {
        let name = self.name;
        let c = |e: &dyn std::fmt::Display| corrupt(location, format!("plan row {name}"), e);
        Ok(PlanRecord {
            name: PlanName::new(&name).map_err(|e| c(&e))?,
            flow: FlowName::new(&self.flow).map_err(|e| c(&e))?,
            version: self.version as u32,
            hash: self.hash,
            spec: match self.spec {
                Some(s) => serde_json::from_str(&s).map_err(|e| c(&e))?,
                None => serde_json::Value::Null,
            },
            labels: serde_json::from_str(&self.labels).map_err(|e| c(&e))?,
            active: self.active,
            created_at: Timestamp::from_micros(self.created_at),
            updated_at: Timestamp::from_micros(self.updated_at),
            active_since: ts(self.active_since),
            cursor: ts(self.cursor),
            deleted_at: ts(self.deleted_at),
        })
    }
}

/// A `plan_sets` row: a parameter set's pause and last resume.
pub(crate) struct SetStateRow {
    pub(crate) plan: String,
    pub(crate) set_key: String,
    pub(crate) version: i64,
    pub(crate) paused_at: Option<i64>,
    pub(crate) failures: Option<i64>,
    /// The failed runs' ids as a JSON array of strings.
    pub(crate) runs: Option<String>,
    pub(crate) resumed_at: Option<i64>,
}

impl SetStateRow {
    pub(crate) fn decode(self, location: &str) -> Result<ParamSetState> {
        let (plan, set_key) = (self.plan, self.set_key);
        let c = |e: &dyn std::fmt::Display| corrupt(location, format!("parameter set row {plan} {set_key}"), e);
        let paused = match self.paused_at {
            Some(at) => {
                let ids: Vec<String> = serde_json::from_str(self.runs.as_deref().unwrap_or("[]")).map_err(|e| c(&e))?;
                let runs =
                    ids.iter().map(|r| RunId::parse(r)).collect::<std::result::Result<_, _>>().map_err(|e| c(&e))?;
                Some(SetPause {
                    failures: u32::try_from(self.failures.unwrap_or(0)).map_err(|e| c(&e))?,
                    runs,
                    at: Timestamp::from_micros(at),
                })
            }
            None => None,
        };
        Ok(ParamSetState {
            plan: PlanName::new(&plan).map_err(|e| c(&e))?,
            set_key: set_key.clone(),
            version: u32::try_from(self.version).map_err(|e| c(&e))?,
            paused,
            resumed_at: ts(self.resumed_at),
        })
    }
}

/// A `plan_tick_failures` row.
pub(crate) struct TickFailureRow {
    pub(crate) plan: String,
    pub(crate) tick: i64,
    pub(crate) version: i64,
    pub(crate) kind: String,
    pub(crate) holder: String,
    pub(crate) error: String,
    pub(crate) failures: i64,
    pub(crate) first_at: i64,
    pub(crate) last_at: i64,
}

impl TickFailureRow {
    pub(crate) fn decode(self, location: &str) -> Result<TickFailure> {
        let plan = self.plan;
        let c = |e: &dyn std::fmt::Display| corrupt(location, format!("failed tick row {plan} {}", self.tick), e);
        Ok(TickFailure {
            plan: PlanName::new(&plan).map_err(|e| c(&e))?,
            version: u32::try_from(self.version).map_err(|e| c(&e))?,
            tick: Timestamp::from_micros(self.tick),
            kind: self.kind.parse().map_err(|e| c(&e))?,
            holder: self.holder,
            error: self.error,
            failures: u32::try_from(self.failures).map_err(|e| c(&e))?,
            first_at: Timestamp::from_micros(self.first_at),
            last_at: Timestamp::from_micros(self.last_at),
        })
    }
}

/// The `runs` column of a `plan_sets` row.
pub(crate) fn pause_runs_json(pause: &SetPause) -> String {
    let ids: Vec<String> = pause.runs.iter().map(|r| r.to_string()).collect();
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".to_owned())
}

/// A `plan_versions` row.
pub(crate) struct PlanVersionRow {
    pub(crate) name: String,
    pub(crate) version: i64,
    pub(crate) hash: String,
    pub(crate) spec: String,
    pub(crate) labels: String,
    pub(crate) created_at: i64,
}

impl PlanVersionRow {
    pub(crate) fn decode(self, location: &str) -> Result<PlanVersion> {
        let (name, version) = (self.name, self.version);
        let c = |e: &dyn std::fmt::Display| corrupt(location, format!("plan version row {name}/{version}"), e);
        Ok(PlanVersion {
            name: PlanName::new(&name).map_err(|e| c(&e))?,
            version: version as u32,
            hash: self.hash,
            spec: serde_json::from_str(&self.spec).map_err(|e| c(&e))?,
            labels: serde_json::from_str(&self.labels).map_err(|e| c(&e))?,
            created_at: Timestamp::from_micros(self.created_at),
        })
    }
}

/// A `launches` row.
pub(crate) struct LaunchRow {
    pub(crate) key: String,
    pub(crate) plan: String,
    pub(crate) version: i64,
    pub(crate) flow: String,
    pub(crate) kind: String,
    pub(crate) tick: i64,
    pub(crate) set_key: String,
    pub(crate) params: String,
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) holder: Option<String>,
    pub(crate) run: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) note: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl LaunchRow {
    pub(crate) fn decode(self, location: &str) -> Result<LaunchRecord> {
        let key = self.key;
        let c = |e: &dyn std::fmt::Display| corrupt(location, format!("launch row {key}"), e);
        Ok(LaunchRecord {
            plan: PlanName::new(&self.plan).map_err(|e| c(&e))?,
            version: self.version as u32,
            flow: FlowName::new(&self.flow).map_err(|e| c(&e))?,
            kind: self.kind.parse().map_err(|e| c(&e))?,
            tick: Timestamp::from_micros(self.tick),
            set_key: self.set_key,
            params: serde_json::from_str::<BTreeMap<String, serde_json::Value>>(&self.params).map_err(|e| c(&e))?,
            name: self.name,
            state: self.state.parse().map_err(|e| c(&e))?,
            holder: self.holder,
            run: self.run.map(|r| RunId::parse(&r)).transpose().map_err(|e| c(&e))?,
            status: self.status.map(|s| s.parse::<RunStatus>()).transpose().map_err(|e| c(&e))?,
            note: self.note,
            created_at: Timestamp::from_micros(self.created_at),
            updated_at: Timestamp::from_micros(self.updated_at),
            key: key.clone(),
        })
    }
}
