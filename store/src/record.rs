//! Records: flows, runs, tasks, attempts, artifacts, logs and claims, and the
//! [`RecordStore`] trait every backend implements.
//!
//! The API is shaped for a database server as much as for the embedded default: no
//! file paths, pagination on every list that can grow, batched writes, and conditional
//! updates ([`Precondition`]) wherever two writers can race.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;
use braid_core::codec::Preview;
use braid_core::{
    ArtifactName, Attempt, FlowName, Progress, RunId, RunStatus, StepName, Tag, TaskId, TaskStatus, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::blob::BlobKey;
use crate::error::{Error, Result};

/// A flow as registered by the binary that runs it: its graph spec (the `dag` crate's
/// JSON), so tools can show the flow without its code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// The flow's name.
    pub name: FlowName,
    /// The flow graph as `braidflow-dag`'s JSON spec.
    pub spec: serde_json::Value,
    /// When it was last registered.
    pub updated_at: Timestamp,
}

/// One run of a flow. Fields may be added in a minor release: make one with
/// [`RunRecord::new`] and set what applies, rather than with a struct literal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The flow it is a run of.
    pub flow: FlowName,
    /// The run's id, unique in the store.
    pub id: RunId,
    /// The stored status; readers show [`RunRecord::observed_status`].
    pub status: RunStatus,
    /// Parameter values the run was started with, by parameter name.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Tags people put on it (`braid tag`).
    pub tags: BTreeSet<Tag>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its first task started.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal status.
    pub ended_at: Option<Timestamp>,
    /// For a resumed run, the run it resumed.
    pub origin_run: Option<RunId>,
    /// A readable name, e.g. `data_sync_hourly_site1` for a run a launch plan started.
    pub name: Option<String>,
    /// Why the run failed, naming step, task and attempt.
    pub error: Option<String>,
    /// Free-form facts about how the run was launched (plan, version, tick, host, ...).
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// Who is moving the run forward and until when; renewed by the holder while the run
    /// is `pending` or `running` (see [`RecordStore::renew_run_lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<RunLease>,
    /// Bumped by every write; the precondition of [`RecordStore::update_run`].
    pub revision: u64,
}

/// The lease a process holds on a live run. A run whose lease ran out is `lost`: its
/// process died or hangs, and nothing moves it forward any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLease {
    /// Which process holds it: `role@host:pid`.
    pub holder: String,
    /// When the holder last renewed it.
    pub renewed_at: Timestamp,
    /// Without a renewal before this, the run is lost.
    pub deadline: Timestamp,
}

impl RunLease {
    /// A lease held by `holder` from now for `duration`.
    pub fn new(holder: impl Into<String>, duration: std::time::Duration) -> Self {
        let now = Timestamp::now();
        RunLease { holder: holder.into(), renewed_at: now, deadline: now.plus(duration) }
    }

    /// Whether it ran out before `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        self.deadline < now
    }

    /// Whether its holder is a process of this machine that has exited: the lease can
    /// never be renewed again, even if its deadline has not come yet.
    pub(crate) fn holder_exited(&self) -> bool {
        let Some((_, at)) = self.holder.split_once('@') else { return false };
        let mut parts = at.split(':');
        match (parts.next(), parts.next().and_then(|p| p.parse::<u32>().ok())) {
            (Some(host), Some(pid)) => host == host_name() && process_exited(pid),
            _ => false,
        }
    }
}

/// The id of this process as a lease holder: `role@host:pid`.
pub fn process_holder(role: &str) -> String {
    format!("{role}@{}:{}", host_name(), std::process::id())
}

/// This machine's name, as lease holders and scheduler heartbeats record it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a process of this machine is known to have exited: true only where the
/// system says so (Linux's `/proc`); elsewhere, and for this process, false.
pub fn process_exited(pid: u32) -> bool {
    pid != std::process::id()
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new("/proc").join(pid.to_string()).exists()
}

impl RunRecord {
    /// A `pending` run of `flow`, created now, with no parameters, tags or lease: set the
    /// fields that apply, then `create_run`.
    pub fn new(flow: FlowName, id: RunId) -> Self {
        RunRecord {
            flow,
            id,
            status: RunStatus::Pending,
            params: BTreeMap::new(),
            tags: BTreeSet::new(),
            created_at: Timestamp::now(),
            started_at: None,
            ended_at: None,
            origin_run: None,
            name: None,
            error: None,
            meta: serde_json::Map::new(),
            lease: None,
            revision: 0,
        }
    }

    /// The status a reader should show at `now`: `lost` for a `pending` or `running`
    /// record whose lease ran out, or whose holder is a process of this machine that has
    /// exited (its lease can never be renewed); the stored status otherwise.
    pub fn observed_status(&self, now: Timestamp) -> RunStatus {
        match &self.lease {
            Some(l) if self.status.is_live() && (l.expired(now) || l.holder_exited()) => RunStatus::Lost,
            _ => self.status,
        }
    }

    /// [`RunRecord::observed_status`] now.
    pub fn status_now(&self) -> RunStatus {
        self.observed_status(Timestamp::now())
    }
}

/// Where a task is: flow, run, step, task id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskKey {
    /// The flow.
    pub flow: FlowName,
    /// The run.
    pub run: RunId,
    /// The step the task is of.
    pub step: StepName,
    /// The task's id within the run.
    pub task: TaskId,
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.flow, self.run, self.step, self.task)
    }
}

/// One level of foreach nesting a task sits in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeachFrame {
    /// The foreach step that fanned out.
    pub step: StepName,
    /// The task of that step that fanned out (whose `over` artifact holds the items).
    pub task: TaskId,
    /// The artifact it fanned out over.
    pub over: ArtifactName,
    /// This task's item in that sequence, from 0.
    pub index: u64,
    /// How many items the sequence has.
    pub len: u64,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// A short kind: `error`, `panic`, `timeout`, `lost`, `cancelled`, or the error's type.
    pub kind: String,
    /// What went wrong, for people.
    pub message: String,
}

/// A task of a run: one execution unit of a step (one per foreach item, per loop
/// iteration, ...). Holds status, progress and lease in one record, so a write that
/// extends the lease can never drop progress. Fields may be added in a minor release:
/// make one with [`TaskRecord::new`] and set what applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Where the task is.
    pub key: TaskKey,
    /// The stored status; readers show [`TaskRecord::observed_status`].
    pub status: TaskStatus,
    /// The current (or last) attempt; also the lease's fencing token.
    pub attempt: Attempt,
    /// Foreach frames, outermost first; empty outside a foreach.
    pub foreach_stack: Vec<ForeachFrame>,
    /// Loop iteration (0 outside a loop or on the first pass).
    pub iteration: u32,
    /// The task whose artifacts this one starts with (by reference); `None` for
    /// `start` and for joins, which start empty.
    pub parent: Option<TaskId>,
    /// For a join: the branch tasks, in foreach index (or declared branch) order.
    pub inputs: Vec<TaskId>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its current attempt started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub ended_at: Option<Timestamp>,
    /// Until when the running attempt's lease holds; past it, the attempt is lost.
    pub lease_deadline: Option<Timestamp>,
    /// The latest progress report.
    pub progress: Option<Progress>,
    /// When that report was made.
    pub progress_at: Option<Timestamp>,
    /// Why the last attempt failed.
    pub error: Option<TaskError>,
    /// For a task reused by `resume`: the run and task it was cloned from.
    pub origin: Option<(RunId, TaskId)>,
    /// When the runtime expects the running attempt to finish, from its rate of progress.
    pub eta: Option<Timestamp>,
    /// The latest progress reports and warnings, oldest first, at most [`MAX_TASK_EVENTS`].
    pub events: Vec<TaskEvent>,
    /// For a task whose step catches failures (`.catch(artifact)`) and whose last
    /// attempt failed: that failure, caught. The task succeeded (its `error` is `None`);
    /// the failure is also the value of `artifact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caught: Option<CaughtFailure>,
    /// For an attempt a worker runs: its claim on the task queue (fencing token, worker,
    /// how many earlier dispatches were lost). `None` for an attempt run in-process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<TaskDispatch>,
    /// Bumped by every write; the precondition of [`Precondition::Revision`].
    pub revision: u64,
}

/// Which worker runs an attempt, under which claim of the task queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskDispatch {
    /// The claim's fencing token: every write of the attempt names it
    /// ([`Precondition::Claim`]), so a worker whose claim was taken over writes nothing.
    pub token: u64,
    /// Who holds the claim (`worker@host:pid`).
    pub worker: String,
    /// How many earlier dispatches of this attempt were lost (their worker died or
    /// stopped heartbeating, and the queue handed the task to another): counted apart
    /// from the step's own retries, which are for failures.
    pub lost: u32,
}

impl TaskDispatch {
    /// The claim `token` of `worker`, after `lost` lost dispatches.
    pub fn new(token: u64, worker: impl Into<String>, lost: u32) -> Self {
        TaskDispatch { token, worker: worker.into(), lost }
    }
}

/// A failure that a step's `.catch(artifact)` caught: not an error of the task, which
/// succeeded, but what its last attempt ran into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaughtFailure {
    /// The artifact the failure was stored in (the `.catch` name).
    pub artifact: String,
    /// The attempt that failed.
    pub attempt: Attempt,
    /// What went wrong.
    pub error: TaskError,
}

/// How many events a task record keeps; older ones are dropped first.
pub const MAX_TASK_EVENTS: usize = 32;

/// Something that happened to a running task: a progress report written, or a warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// When it happened.
    pub at: Timestamp,
    /// The attempt it happened in.
    pub attempt: Attempt,
    /// What happened.
    pub kind: TaskEventKind,
    /// The percent at that time, if known.
    pub percent: Option<f32>,
    /// The report's message, or what the warning says.
    pub message: String,
}

/// What a [`TaskEvent`] is. More kinds may come, so a `match` outside this crate needs a
/// `_` arm (or [`TaskEventKind::is_warning`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskEventKind {
    /// A progress report was written.
    Progress,
    /// The percent has not moved for the step's stall time.
    Stalled,
    /// At the rate so far, the attempt will not finish before its timeout.
    TimeoutPredicted,
    /// The attempt's lease expired: it was declared lost.
    Lost,
    /// A write from an attempt that had been declared lost was refused.
    StaleWriteRejected,
}

impl TaskEventKind {
    /// Anything but a progress report: what a UI flags, and what
    /// [`TaskRecord::push_event`] keeps longest.
    pub fn is_warning(self) -> bool {
        !matches!(self, TaskEventKind::Progress)
    }
}

impl TaskRecord {
    /// Appends an event; beyond [`MAX_TASK_EVENTS`] the oldest progress report goes
    /// first, so a flood of reports never pushes a warning out (the oldest warning goes
    /// only when warnings alone fill the list).
    pub fn push_event(&mut self, event: TaskEvent) {
        self.events.push(event);
        while self.events.len() > MAX_TASK_EVENTS {
            let victim = self.events.iter().position(|e| !e.kind.is_warning()).unwrap_or(0);
            self.events.remove(victim);
        }
    }
}

impl TaskRecord {
    /// A `pending` task at `key`, attempt 1, created now, outside any foreach or loop:
    /// set the fields that apply, then write it.
    pub fn new(key: TaskKey) -> Self {
        TaskRecord {
            key,
            status: TaskStatus::Pending,
            attempt: Attempt::FIRST,
            foreach_stack: Vec::new(),
            iteration: 0,
            parent: None,
            inputs: Vec::new(),
            created_at: Timestamp::now(),
            started_at: None,
            ended_at: None,
            lease_deadline: None,
            progress: None,
            progress_at: None,
            error: None,
            origin: None,
            eta: None,
            events: Vec::new(),
            caught: None,
            dispatch: None,
            revision: 0,
        }
    }

    /// The status a reader should show at `now`: `lost` for a `running` attempt whose
    /// lease ran out, or whose run is lost (`run_lost`), the stored status otherwise.
    pub fn observed_status(&self, now: Timestamp, run_lost: bool) -> TaskStatus {
        let expired = self.lease_deadline.is_some_and(|d| d < now);
        if self.status == TaskStatus::Running && (expired || run_lost) { TaskStatus::Lost } else { self.status }
    }

    /// The index in the innermost foreach, if any.
    pub fn foreach_index(&self) -> Option<u64> {
        self.foreach_stack.last().map(|f| f.index)
    }
}

/// One attempt at a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Which attempt.
    pub attempt: Attempt,
    /// How it ended, or `running`.
    pub status: TaskStatus,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub ended_at: Option<Timestamp>,
    /// Why it failed, if it did.
    pub error: Option<TaskError>,
}

/// An artifact a task set: name → blob, with what is needed to show it without the blob.
/// Fields may be added in a minor release (new ones are optional, `None` when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// The artifact's name.
    pub name: ArtifactName,
    /// The content hash of its envelope.
    pub key: BlobKey,
    /// The value's Rust type name, as in the envelope.
    pub type_name: String,
    /// Size of the stored envelope in bytes.
    pub size: u64,
    /// A bounded JSON rendering, for tools that do not know the type.
    pub preview: Preview,
    /// For a sequence that a foreach may fan out over: its elements, each in its own
    /// envelope, stored as one blob (see `braid_core::codec::encode_elements`).
    pub elements: Option<ElementsRef>,
    /// A small value's envelope, kept in the record instead of the blob store (see
    /// [`INLINE_VALUE_MAX`]): thousands of tiny values then cost appended rows, not
    /// random inserts into the blob index. `key` is still its content hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<Vec<u8>>,
}

/// Values up to this many bytes travel inline in their artifact record.
pub const INLINE_VALUE_MAX: usize = 1024;

/// Where the per-element envelopes of a sequence artifact are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementsRef {
    /// The blob holding the per-element envelopes (a manifest).
    pub key: BlobKey,
    /// How many elements.
    pub len: u64,
}

/// An artifact as a task sees it, with the task that set it (itself or an ancestor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisibleArtifact {
    /// The artifact.
    pub artifact: ArtifactRecord,
    /// The task that set it: the one asked about or one of its ancestors.
    pub set_by: TaskId,
}

/// One value of an artifact across a step: which task, its foreach index, the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepArtifact {
    /// The task that set it.
    pub task: TaskId,
    /// That task's innermost foreach index, if any.
    pub foreach_index: Option<u64>,
    /// The artifact.
    pub artifact: ArtifactRecord,
}

/// A task of a step with the artifact it set itself under one name, if it did: a row of
/// [`RecordStore::step_artifacts_page`]. A task without one sees its parent's value
/// (the value [`RecordStore::visible_artifacts`] of `parent` gives), if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepArtifactRow {
    /// The task.
    pub task: TaskId,
    /// Its innermost foreach index, if any.
    pub foreach_index: Option<u64>,
    /// For a task that did not set the name: its parent, whose value it sees (`None`
    /// when it set the name itself, or has no parent).
    pub parent: Option<TaskId>,
    /// The artifact as the task set it; `None` if it did not set this name.
    pub artifact: Option<ArtifactRecord>,
}

/// Where a page of [`RecordStore::step_artifacts_page`] resumes: after this
/// (foreach index, task id), tasks without an index (`None`) first. Its text form is
/// the page cursor: `-.TASK` or `INDEX.TASK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StepCursor {
    pub(crate) index: Option<u64>,
    pub(crate) task: u64,
}

impl StepCursor {
    /// The cursor after `row`.
    pub(crate) fn after(row: &StepArtifactRow) -> Self {
        StepCursor { index: row.foreach_index, task: row.task.0 }
    }

    /// Reads the `after` of a page; `None` for the first page.
    pub(crate) fn parse(after: &Option<String>) -> Result<Option<Self>> {
        let Some(s) = after.as_deref() else { return Ok(None) };
        let bad = || bad_cursor("step artifact", s);
        let (index, task) = s.split_once('.').ok_or_else(bad)?;
        let index = if index == "-" { None } else { Some(index.parse::<u64>().map_err(|_| bad())?) };
        let task = task.parse::<u64>().map_err(|_| bad())?;
        // Indexes and ids are stored as signed 64-bit integers by the SQL backends.
        if index.is_some_and(|i| i > i64::MAX as u64) || task > i64::MAX as u64 {
            return Err(bad());
        }
        Ok(Some(StepCursor { index, task }))
    }
}

impl fmt::Display for StepCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            None => write!(f, "-.{}", self.task),
            Some(i) => write!(f, "{i}.{}", self.task),
        }
    }
}

/// A line a task logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// The run.
    pub run: RunId,
    /// The task that logged it.
    pub task: TaskId,
    /// The attempt that logged it.
    pub attempt: Attempt,
    /// Order of the line within the task, assigned by the writer, starting at 1.
    pub seq: u64,
    /// When it was logged.
    pub at: Timestamp,
    /// `trace`, `debug`, `info`, `warn`, `error`, or `stdout`/`stderr`.
    pub level: String,
    /// The text, without the newline.
    pub line: String,
}

/// What must hold for a conditional task write to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Always applies (creates or replaces).
    None,
    /// Applies only if no such task exists yet.
    Absent,
    /// Applies only if the stored record has this revision.
    Revision(u64),
    /// Applies only if the stored record's attempt is this one and it is not finished:
    /// the fencing check of a lease holder.
    Attempt(Attempt),
    /// [`Precondition::Attempt`], and the stored record's claim token (its
    /// [`TaskDispatch::token`]) is absent or not above `token`: the fencing check of a
    /// worker's attempt. Tokens grow with every claim, so once another worker has
    /// claimed the task and written, the earlier holder's writes are refused.
    Claim {
        /// The attempt that writes.
        attempt: Attempt,
        /// Its claim's fencing token.
        token: u64,
    },
}

/// A task write: the record, the artifacts it set (replacing any set before by this
/// task), the attempt to record, and the precondition.
#[derive(Debug, Clone)]
pub struct TaskWrite {
    /// The record to store; its revision is set by the store.
    pub task: TaskRecord,
    /// The artifacts the task set, replacing any it set before; `None` leaves them.
    pub artifacts: Option<Vec<ArtifactRecord>>,
    /// An attempt to record (created or replaced by number).
    pub attempt: Option<AttemptRecord>,
    /// What must hold for the write to apply.
    pub precondition: Precondition,
}

impl TaskWrite {
    /// A write of `task` alone (no artifacts, no attempt) that always applies.
    pub fn new(task: TaskRecord) -> Self {
        TaskWrite { task, artifacts: None, attempt: None, precondition: Precondition::None }
    }
}

/// Whether a conditional write applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Applied; the record now has this revision.
    Applied {
        /// The record's revision after the write.
        revision: u64,
    },
    /// Not applied; says what did not hold.
    Rejected {
        /// What did not hold.
        reason: Rejection,
    },
}

/// Why a conditional task write did not apply: what its [`Precondition`] expected and
/// what was stored. Callers decide on the variant (a fenced write from a lost attempt is
/// expected and logged; anything else is a bug or a race worth reporting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// [`Precondition::Absent`]: the task exists.
    #[error("task {key} exists (revision {revision})")]
    Exists {
        /// The task, as `flow/run/step/task`.
        key: String,
        /// The stored record's revision.
        revision: u64,
    },
    /// [`Precondition::Revision`] or [`Precondition::Attempt`]: there is no such task.
    #[error("task {key} does not exist")]
    Missing {
        /// The task, as `flow/run/step/task`.
        key: String,
    },
    /// [`Precondition::Revision`]: someone else wrote the task first.
    #[error("expected revision {expected} of task {key}, stored is {stored}")]
    RevisionMismatch {
        /// The task, as `flow/run/step/task`.
        key: String,
        /// The revision the write expected.
        expected: u64,
        /// The revision stored.
        stored: u64,
    },
    /// [`Precondition::Attempt`] failed its fencing check: a newer attempt holds the
    /// task (this one was declared lost and retried).
    #[error("stale attempt {attempt} of task {key}: the task is on attempt {current}")]
    StaleAttempt {
        /// The task, as `flow/run/step/task`.
        key: String,
        /// The attempt that wrote.
        attempt: Attempt,
        /// The attempt the task is on.
        current: Attempt,
    },
    /// [`Precondition::Attempt`]: the attempt already ended (e.g. it was declared lost).
    #[error("attempt {attempt} of task {key} already ended as {status}")]
    AttemptEnded {
        /// The task, as `flow/run/step/task`.
        key: String,
        /// The attempt that wrote.
        attempt: Attempt,
        /// How it ended.
        status: TaskStatus,
    },
    /// [`Precondition::Claim`]: another worker's claim (a larger token) holds the task;
    /// this one's lease expired and the task was dispatched again.
    #[error(
        "stale claim {token} of task {key}: claim {current} holds it (the lease expired and another worker took the task)"
    )]
    StaleClaim {
        /// The task, as `flow/run/step/task`.
        key: String,
        /// The token of the claim that wrote.
        token: u64,
        /// The token of the claim that holds the task.
        current: u64,
    },
    /// Not sent: a later write of the same task in the same batch replaced it.
    #[error("superseded by a later write of task {key}")]
    Superseded {
        /// The task, as `flow/run/step/task`.
        key: String,
    },
}

impl Rejection {
    /// A late write from an attempt that lost its lease: refused by the fencing token.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Rejection::StaleAttempt { .. } | Rejection::AttemptEnded { .. } | Rejection::StaleClaim { .. })
    }
}

impl WriteOutcome {
    /// Whether the write applied.
    pub fn is_applied(&self) -> bool {
        matches!(self, WriteOutcome::Applied { .. })
    }
}

/// A page of a list: pass `next` back as `after` for the following page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<String>,
}

/// Which runs to list; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Runs whose *observed* status is this (see [`RunRecord::observed_status`]): `running`
    /// leaves out runs whose lease ran out, `lost` finds them.
    pub status: Option<RunStatus>,
    /// Only runs carrying this tag.
    pub tag: Option<Tag>,
    /// A cursor from a previous page.
    pub after: Option<String>,
    /// At most this many (0 means a backend default of 100).
    pub limit: usize,
}

/// Which tasks of a run to list; in task id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks of this step.
    pub step: Option<StepName>,
    /// Only tasks with this stored status.
    pub status: Option<TaskStatus>,
    /// A cursor from a previous page.
    pub after: Option<String>,
    /// At most this many (0 means a backend default of 1000).
    pub limit: usize,
}

pub(crate) fn effective_limit(limit: usize, default: usize) -> usize {
    if limit == 0 { default } else { limit }
}

/// Counts of a step's tasks by status, and when the step started and ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    /// The step.
    pub step: StepName,
    /// How many of its tasks have each stored status.
    pub counts: BTreeMap<TaskStatus, u64>,
    /// When its first task started.
    pub first_started: Option<Timestamp>,
    /// When its last task ended.
    pub last_ended: Option<Timestamp>,
}

/// The records half of a store, implemented by each backend (and by out-of-tree ones,
/// checked by the `conformance` suite). Every write is atomic: a batch applies whole or
/// not at all.
#[async_trait]
pub trait RecordStore: Send + Sync + fmt::Debug {
    /// Registers or replaces a flow's spec.
    async fn put_flow(&self, flow: FlowRecord) -> Result<()>;
    /// A flow's registered spec, if any.
    async fn get_flow(&self, name: &FlowName) -> Result<Option<FlowRecord>>;
    /// Every flow, by name. Flows are few; runs and tasks are paged.
    async fn list_flows(&self) -> Result<Vec<FlowRecord>>;

    /// Creates a run; `Conflict` if its id exists.
    async fn create_run(&self, run: &RunRecord) -> Result<()>;
    /// Replaces a run if its stored revision is `run.revision`; returns the stored
    /// record (revision bumped) or `Conflict`.
    async fn update_run(&self, run: &RunRecord) -> Result<RunRecord>;
    /// A run of `flow`, if it exists.
    async fn get_run(&self, flow: &FlowName, id: RunId) -> Result<Option<RunRecord>>;
    /// Runs of a flow, newest first.
    async fn list_runs(&self, flow: &FlowName, query: &RunQuery) -> Result<Page<RunRecord>>;
    /// Extends the lease of a live run (stored status `pending` or `running`) whose lease
    /// `lease.holder` holds, without touching anything else (no revision bump, so it
    /// never conflicts with other writers); false if the run is not live any more, is
    /// held by another process (it took the run over) or does not exist.
    async fn renew_run_lease(&self, flow: &FlowName, id: RunId, lease: &RunLease) -> Result<bool>;
    /// Adds and removes tags in one write; returns the run as stored.
    async fn update_tags(&self, flow: &FlowName, id: RunId, add: &[Tag], remove: &[Tag]) -> Result<RunRecord>;

    /// Applies task writes in one batch; each write's precondition is checked on its
    /// own, and the outcomes come back in order.
    async fn write_tasks(&self, writes: Vec<TaskWrite>) -> Result<Vec<WriteOutcome>>;
    /// A task of a run, if it exists.
    async fn get_task(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Option<TaskRecord>>;
    /// Tasks of a run matching the query, in task id order, a page at a time.
    async fn list_tasks(&self, flow: &FlowName, run: RunId, query: &TaskQuery) -> Result<Page<TaskRecord>>;
    /// Tasks of `step` whose innermost foreach index is `index`, found through an index
    /// (one task, or one per outer branch when foreach steps nest).
    async fn tasks_by_index(&self, flow: &FlowName, run: RunId, step: &StepName, index: u64)
    -> Result<Vec<TaskRecord>>;
    /// Per-step counts by status, in order of each step's first task.
    async fn step_summaries(&self, flow: &FlowName, run: RunId) -> Result<Vec<StepSummary>>;
    /// Every recorded attempt of a task, oldest first.
    async fn list_attempts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<AttemptRecord>>;

    /// Artifacts the task itself set.
    async fn task_artifacts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<ArtifactRecord>>;
    /// Artifacts set by each task of `run` whose id is in `first..=last` (each task's own,
    /// as [`RecordStore::task_artifacts`] gives them), ordered by task id then name: one
    /// read for a block of tasks, such as a window of a wide foreach's branches, which a
    /// join reads in order instead of holding every branch in memory.
    async fn artifacts_of_tasks(
        &self,
        flow: &FlowName,
        run: RunId,
        first: TaskId,
        last: TaskId,
    ) -> Result<Vec<(TaskId, ArtifactRecord)>>;
    /// Artifacts the task sees: its own, then its parent's and so on up, nearer ones
    /// shadowing farther ones; sorted by name.
    async fn visible_artifacts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<VisibleArtifact>>;
    /// The artifact `name` as set by each task of `step`, in foreach index (then task id) order.
    async fn step_artifacts(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        name: &ArtifactName,
    ) -> Result<Vec<StepArtifact>>;
    /// One page of every task of `step`, each with the artifact `name` if it set it
    /// itself (else its parent), in foreach index order (tasks without an index first), then task id:
    /// at most `limit` (0: 1000) after the cursor `after` (the `next` of the previous
    /// page; `None` for the first). Keyset-paged through an index, so a page costs the
    /// same wherever it is in the step and holds only its own rows; a malformed cursor is
    /// `Invalid`.
    async fn step_artifacts_page(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        name: &ArtifactName,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<StepArtifactRow>>;

    /// Appends log lines; `seq` is assigned here, continuing each task's sequence.
    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()>;
    /// A task's log lines with `seq > after`, at most `limit` (0: all).
    async fn read_logs(
        &self,
        flow: &FlowName,
        run: RunId,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>>;

    /// Claims `key` in `scope` for `holder` if nobody has; true if this call won. The
    /// building block of at-most-once work (schedule ticks, task claims).
    async fn try_claim(&self, scope: &str, key: &str, holder: &str) -> Result<bool>;
    /// Who holds a claim.
    async fn claim_holder(&self, scope: &str, key: &str) -> Result<Option<String>>;

    /// Deletes a run with everything recorded under it — tag index, tasks, attempts,
    /// artifact rows, log lines — in one atomic write, if its stored revision is still
    /// `revision` (`Conflict` otherwise: it changed since the caller decided, e.g. a tag
    /// was added or it was resumed). Refused with `Conflict` while another run resumed
    /// from it remains (that run's reused tasks point at this run's tasks and logs).
    /// `NotFound` if absent. Blobs are not touched: they may be shared (see
    /// [`RecordStore::artifact_blob_refs`] and [`crate::BlobStore::delete_if_older`]).
    async fn delete_run(&self, flow: &FlowName, id: RunId, revision: u64) -> Result<RunDeletion>;

    /// Every blob key an artifact row references — its value's key and, for a sequence,
    /// its elements manifest's key — with the run of the row, in the backend's row order;
    /// keys repeat. Pass `next` back as `after` for the following page.
    async fn artifact_blob_refs(&self, after: Option<String>, limit: usize) -> Result<Page<BlobRef>>;

    /// Gives space freed by deletions back to the file system where the backend can
    /// (fs: free pages of the database, in short transactions). Returns the bytes given
    /// back, `None` when the backend cannot (memory; an fs database made by an older braid).
    async fn compact(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// What [`RecordStore::delete_run`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunDeletion {
    /// Task rows removed.
    pub tasks: u64,
    /// Attempt rows removed.
    pub attempts: u64,
    /// Artifact rows removed.
    pub artifacts: u64,
    /// Log lines removed.
    pub log_lines: u64,
}

/// A blob an artifact row of `run` references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    /// The run of the artifact row.
    pub run: RunId,
    /// The blob it references.
    pub key: BlobKey,
}

/// What a precondition is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredTask {
    pub(crate) revision: u64,
    pub(crate) attempt: braid_core::Attempt,
    pub(crate) status: braid_core::TaskStatus,
    /// The claim token of a worker's attempt ([`TaskDispatch::token`]).
    pub(crate) token: Option<u64>,
}

impl StoredTask {
    pub(crate) fn of(t: &TaskRecord) -> Self {
        StoredTask {
            revision: t.revision,
            attempt: t.attempt,
            status: t.status,
            token: t.dispatch.as_ref().map(|d| d.token),
        }
    }
}

/// Shared by backends: checks a precondition against the stored task; `Some(why)` when
/// it does not hold.
pub(crate) fn check_precondition(task: &TaskKey, stored: Option<StoredTask>, pre: Precondition) -> Option<Rejection> {
    let key = || task.to_string();
    match (pre, stored) {
        (Precondition::None, _) => None,
        (Precondition::Absent, None) => None,
        (Precondition::Absent, Some(s)) => Some(Rejection::Exists { key: key(), revision: s.revision }),
        (Precondition::Revision(_) | Precondition::Attempt(_) | Precondition::Claim { .. }, None) => {
            Some(Rejection::Missing { key: key() })
        }
        (Precondition::Revision(r), Some(s)) => {
            (s.revision != r).then(|| Rejection::RevisionMismatch { key: key(), expected: r, stored: s.revision })
        }
        (Precondition::Attempt(a), Some(s)) => {
            if s.attempt != a {
                Some(Rejection::StaleAttempt { key: key(), attempt: a, current: s.attempt })
            } else if s.status.is_terminal() {
                Some(Rejection::AttemptEnded { key: key(), attempt: a, status: s.status })
            } else {
                None
            }
        }
        (Precondition::Claim { attempt, token }, Some(s)) => {
            check_precondition(task, Some(s), Precondition::Attempt(attempt)).or_else(|| {
                s.token.filter(|&current| current > token).map(|current| Rejection::StaleClaim {
                    key: key(),
                    token,
                    current,
                })
            })
        }
    }
}

/// The error for a page cursor that is not one this store handed out.
pub(crate) fn bad_cursor(what: &str, cursor: &str) -> Error {
    Error::Invalid {
        what: format!("{what} cursor {cursor:?}"),
        reason: "pass back the `next` value of the previous page".into(),
    }
}

/// Reads the `after` cursor of a list of `what` (the `next` of the previous page, a
/// value's `Display` form); `None` for the first page.
pub(crate) fn parse_cursor<T: std::str::FromStr>(after: &Option<String>, what: &str) -> Result<Option<T>> {
    after.as_deref().map(|s| s.parse::<T>().map_err(|_| bad_cursor(what, s))).transpose()
}

/// How many tasks of a step have one status, and when the first of them started and the
/// last ended: what a backend counts (per task, or per `GROUP BY step, status` row) for
/// [`summarise_steps`].
pub(crate) struct StepCount {
    pub(crate) step: StepName,
    pub(crate) status: TaskStatus,
    pub(crate) count: u64,
    pub(crate) first_started: Option<Timestamp>,
    pub(crate) last_ended: Option<Timestamp>,
    /// The lowest task id counted, which orders the steps.
    pub(crate) first_task: u64,
}

/// [`RecordStore::step_summaries`] from counts: one summary per step, in order of each
/// step's first task.
pub(crate) fn summarise_steps(counts: impl IntoIterator<Item = StepCount>) -> Vec<StepSummary> {
    let mut by_step: BTreeMap<StepName, (u64, StepSummary)> = BTreeMap::new();
    for c in counts {
        let e = by_step.entry(c.step.clone()).or_insert_with(|| {
            (c.first_task, StepSummary { step: c.step, counts: BTreeMap::new(), first_started: None, last_ended: None })
        });
        e.0 = e.0.min(c.first_task);
        *e.1.counts.entry(c.status).or_default() += c.count;
        e.1.first_started = match (e.1.first_started, c.first_started) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        e.1.last_ended = e.1.last_ended.max(c.last_ended);
    }
    let mut out: Vec<(u64, StepSummary)> = by_step.into_values().collect();
    out.sort_by_key(|(first, _)| *first);
    out.into_iter().map(|(_, s)| s).collect()
}

/// [`RecordStore::update_tags`] for a backend without a one-statement tag update: read
/// the run, change its tags, write it back on its revision, again on a conflict.
pub(crate) async fn update_tags_by_revision<R: RecordStore + ?Sized>(
    records: &R,
    flow: &FlowName,
    id: RunId,
    add: &[Tag],
    remove: &[Tag],
) -> Result<RunRecord> {
    loop {
        let mut run =
            records.get_run(flow, id).await?.ok_or_else(|| Error::NotFound { what: format!("run {flow}/{id}") })?;
        for t in remove {
            run.tags.remove(t);
        }
        run.tags.extend(add.iter().cloned());
        match records.update_run(&run).await {
            Err(e) if e.is_conflict() => continue,
            other => return other,
        }
    }
}

/// Cuts `items` (fetched with one extra) to `limit`, with a cursor if more remain.
pub(crate) fn page<T>(mut items: Vec<T>, limit: usize, cursor: impl Fn(&T) -> String) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_knows_when_its_holder_on_this_machine_has_exited() {
        let lease = |holder: String| RunLease::new(holder, std::time::Duration::from_secs(60));
        assert!(!lease(process_holder("run")).holder_exited(), "this process is alive");
        if std::path::Path::new("/proc/self").exists() {
            assert!(lease(format!("run@{}:999999999", host_name())).holder_exited(), "no such process");
        }
        assert!(!lease("run@another-machine:999999999".into()).holder_exited(), "elsewhere: unknown");
        assert!(!lease("garbage".into()).holder_exited());
    }
}
