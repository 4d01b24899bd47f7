use std::collections::BTreeSet;
use std::time::Duration;

use braid_core::{ArtifactName, Attempt, FlowName, Progress, RunId, StepName, TaskId, TaskStatus, Timestamp};
use braid_store::{
    AttemptRecord, CaughtFailure, ForeachFrame, LogLine, TaskError, TaskKey, TaskRecord, VisibleArtifact,
};
use serde::de::DeserializeOwned;

use crate::artifact::Artifact;
use crate::error::{Error, Result};
use crate::run::{Run, duration, get_task};
use crate::step::Step;
use crate::{Client, rt};

/// One task of a run, as read when the handle was made; [`Task::refresh`] reads it again.
#[derive(Debug, Clone)]
pub struct Task {
    client: Client,
    record: TaskRecord,
}

/// How far up the parent chain an "only in the branches" check looks for a join.
const MAX_HOPS_TO_JOIN: usize = 1000;

impl Task {
    pub(crate) fn new(client: Client, record: TaskRecord) -> Self {
        Task { client, record }
    }

    /// The task's id, unique within its run (numbers from 1, in creation order).
    pub fn id(&self) -> TaskId {
        self.record.key.task
    }

    /// Flow, run, step and task id together.
    pub fn key(&self) -> &TaskKey {
        &self.record.key
    }

    /// The name of the flow the run belongs to.
    pub fn flow_name(&self) -> &FlowName {
        &self.record.key.flow
    }

    /// The id of the run the task belongs to.
    pub fn run_id(&self) -> RunId {
        self.record.key.run
    }

    /// The name of the step the task belongs to.
    pub fn step_name(&self) -> &StepName {
        &self.record.key.step
    }

    /// `flow/run_id/step/task_id`.
    pub fn pathspec(&self) -> String {
        self.record.key.to_string()
    }

    /// The whole record as read.
    pub fn record(&self) -> &TaskRecord {
        &self.record
    }

    /// The task as it is now (status, progress, attempt).
    pub fn refresh(&self) -> Result<Task> {
        let k = &self.record.key;
        get_task(&self.client, &k.flow, k.run, k.task)?.map(|r| Task::new(self.client.clone(), r)).ok_or_else(|| {
            Error::UnknownTask {
                within: format!("{}/{}/{}", k.flow, k.run, k.step),
                task: k.task.to_string(),
                hint: "it existed a moment ago; the store may have been replaced".to_owned(),
            }
        })
    }

    /// The run the task belongs to, as it is now.
    pub fn run(&self) -> Result<Run> {
        self.client.flow_by_name(&self.record.key.flow)?.run_by_id(self.record.key.run)
    }

    /// The step the task belongs to, as it is now.
    pub fn step(&self) -> Result<Step> {
        self.run()?.step_by_name(&self.record.key.step)
    }

    /// The task's status as of now: a `running` attempt whose lease ran out, or whose run
    /// is lost, is `lost`, never `running`.
    pub fn status(&self) -> TaskStatus {
        let status = self.record.observed_status(Timestamp::now(), false);
        if status == TaskStatus::Running && self.run_is_lost() { TaskStatus::Lost } else { status }
    }

    /// One read of the run record, only for a task that looks running.
    fn run_is_lost(&self) -> bool {
        let k = &self.record.key;
        let records = &self.client.store().records;
        match rt::call(|| format!("cannot read run {}/{}", k.flow, k.run), records.get_run(&k.flow, k.run)) {
            Ok(Some(run)) => run.status_now() == braid_core::RunStatus::Lost,
            // Unreadable or gone: nothing says it is lost, so the stored status stands.
            Ok(None) | Err(_) => false,
        }
    }

    /// The current (or last) attempt number, from 1.
    pub fn attempt(&self) -> Attempt {
        self.record.attempt
    }

    /// Every attempt, first to last, with its status, timing and error.
    pub fn attempts(&self) -> Result<Vec<AttemptRecord>> {
        let k = &self.record.key;
        let records = &self.client.store().records;
        rt::call(|| format!("cannot list the attempts of {k}"), records.list_attempts(&k.flow, k.run, k.task))
    }

    /// The innermost foreach index; `None` outside a foreach.
    pub fn index(&self) -> Option<u64> {
        self.record.foreach_index()
    }

    /// Foreach frames, outermost first; empty outside a foreach.
    pub fn foreach_stack(&self) -> &[ForeachFrame] {
        &self.record.foreach_stack
    }

    /// The loop iteration (0 outside a loop or on the first pass).
    pub fn iteration(&self) -> u32 {
        self.record.iteration
    }

    /// When the task was created.
    pub fn created_at(&self) -> Timestamp {
        self.record.created_at
    }

    /// When its current attempt started; `None` while it is pending.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.record.started_at
    }

    /// When it ended; `None` while it goes on.
    pub fn ended_at(&self) -> Option<Timestamp> {
        self.record.ended_at
    }

    /// From start to end, or to now while the task runs; `None` before it starts.
    pub fn duration(&self) -> Option<Duration> {
        duration(self.record.started_at, self.record.ended_at)
    }

    /// The last progress the task reported.
    pub fn progress(&self) -> Option<&Progress> {
        self.record.progress.as_ref()
    }

    /// When the last progress was reported.
    pub fn progress_at(&self) -> Option<Timestamp> {
        self.record.progress_at
    }

    /// Progress reports and warnings of the task (latest last, bounded), across attempts.
    pub fn events(&self) -> &[braid_store::TaskEvent] {
        &self.record.events
    }

    /// The warnings among [`events`](Self::events): stalls, predicted timeouts, lost attempts.
    pub fn warnings(&self) -> Vec<&braid_store::TaskEvent> {
        self.record.events.iter().filter(|e| e.kind.is_warning()).collect()
    }

    /// How long ago the last progress was reported.
    pub fn progress_age(&self) -> Option<Duration> {
        self.record.progress_at.map(|at| Timestamp::now().since(at))
    }

    /// For a running task that reported progress above 0: the time left. The runtime's
    /// own estimate (from the rate of progress of this attempt) when it made one, else
    /// the rate since the attempt started.
    pub fn eta(&self) -> Option<Duration> {
        if self.status() != TaskStatus::Running {
            return None;
        }
        if let Some(eta) = self.record.eta {
            return Some(eta.since(Timestamp::now()));
        }
        let p = self.record.progress.as_ref()?;
        if !(p.percent > 0.0 && p.percent < 100.0) {
            return None;
        }
        let start = self.record.started_at?;
        let elapsed = self.record.progress_at.unwrap_or_else(Timestamp::now).since(start);
        let left = f64::from(100.0 - p.percent) / f64::from(p.percent);
        Some(elapsed.mul_f64(left))
    }

    /// Until when the task's lease holds; a running task past it is about to be declared lost.
    pub fn lease_deadline(&self) -> Option<Timestamp> {
        self.record.lease_deadline
    }

    /// For a task seen as `lost` while its record still says `running`: why, with when
    /// its lease ran out and which process last held its run.
    pub fn lost_reason(&self) -> Option<String> {
        if self.record.status != TaskStatus::Running || self.status() != TaskStatus::Lost {
            return None;
        }
        let k = &self.record.key;
        let records = &self.client.store().records;
        let run = rt::call(|| format!("cannot read run {}/{}", k.flow, k.run), records.get_run(&k.flow, k.run)).ok()?;
        let holder = run.as_ref().and_then(|r| r.lease.as_ref()).map(|l| l.holder.clone());
        let now = Timestamp::now();
        let mut why = match self.record.lease_deadline {
            Some(d) if d < now => format!("attempt {}'s lease ran out at {d}", self.record.attempt),
            _ => format!("its run is lost (attempt {} was running)", self.record.attempt),
        };
        if let Some(h) = holder {
            why.push_str(&format!("; last held by {h}"));
        }
        Some(why)
    }

    /// Why the task (its last attempt) failed.
    pub fn error(&self) -> Option<&TaskError> {
        self.record.error.as_ref()
    }

    /// The failure its step's `.catch(artifact)` caught, if its last attempt failed:
    /// the task succeeded (it has no [`Task::error`]) with the failure in `artifact`.
    pub fn caught(&self) -> Option<&CaughtFailure> {
        self.record.caught.as_ref()
    }

    /// For a task reused by `resume`: the run and task it was cloned from.
    pub fn origin(&self) -> Option<(RunId, TaskId)> {
        self.record.origin
    }

    /// The task whose artifacts this one starts with; `None` for `start` and joins.
    pub fn parent_id(&self) -> Option<TaskId> {
        self.record.parent
    }

    /// The task whose artifacts this one starts with; `None` for `start` and joins.
    pub fn parent(&self) -> Result<Option<Task>> {
        self.record.parent.map(|id| self.sibling(id)).transpose()
    }

    /// The tasks this one started: the next step's task of a linear step, every branch
    /// of a foreach or split, the case a switch took (a loop's next iteration too), and,
    /// for a branch, the join it fed. In task id order. Found among the tasks of the
    /// step's successor steps (the flow's stored spec), so it reads those steps' tasks:
    /// for the task that fanned out a foreach of N items, N tasks.
    pub fn children(&self) -> Result<Vec<Task>> {
        let step = self.step()?;
        let mut out = Vec::new();
        for next in step.child_steps()? {
            out.extend(self.children_in(&next)?);
        }
        out.sort_by_key(|t| t.id());
        Ok(out)
    }

    /// The tasks of step `step` that this one started ([`Task::children`] in one step).
    pub fn successors(&self, step: &str) -> Result<Vec<Task>> {
        let step = StepName::new(step)?;
        let known = self.step()?.child_steps()?;
        if !known.contains(&step) {
            return Err(Error::NotASuccessor {
                task: self.pathspec(),
                step: step.to_string(),
                successors: known.iter().map(|s| s.to_string()).collect(),
            });
        }
        self.children_in(&step)
    }

    fn children_in(&self, step: &StepName) -> Result<Vec<Task>> {
        let k = &self.record.key;
        let run = self.run()?;
        let step = match run.step_by_name(step) {
            Ok(s) => s,
            // Not reached (yet): no children there.
            Err(Error::StepNotStarted { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for t in step.tasks_iter() {
            let t = t?;
            if t.record.parent == Some(k.task) || t.record.inputs.contains(&k.task) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Whether the task is a join (it received branches).
    pub fn is_join(&self) -> bool {
        !self.record.inputs.is_empty()
    }

    /// For a join: the ids of the branch tasks it received, in order.
    pub fn input_ids(&self) -> &[TaskId] {
        &self.record.inputs
    }

    /// For a join: the branch tasks it received, in foreach index (or branch) order.
    pub fn inputs(&self) -> Result<Vec<Task>> {
        self.record.inputs.iter().map(|id| self.sibling(*id)).collect()
    }

    fn sibling(&self, id: TaskId) -> Result<Task> {
        let k = &self.record.key;
        get_task(&self.client, &k.flow, k.run, id)?.map(|r| Task::new(self.client.clone(), r)).ok_or_else(|| {
            Error::UnknownTask {
                within: format!("{}/{}", k.flow, k.run),
                task: id.to_string(),
                hint: format!("{} refers to it, but it is not stored", self.pathspec()),
            }
        })
    }

    /// Every log line the task wrote, all attempts, in order.
    pub fn logs(&self) -> Result<Vec<LogLine>> {
        self.logs_after(0, 0)
    }

    /// Log lines with `seq > after`, at most `limit` (0: all): poll with the last `seq`
    /// seen to follow a running task.
    pub fn logs_after(&self, after: u64, limit: usize) -> Result<Vec<LogLine>> {
        let k = &self.record.key;
        let records = &self.client.store().records;
        rt::call(|| format!("cannot read the logs of {k}"), records.read_logs(&k.flow, k.run, k.task, after, limit))
    }

    /// The last `n` log lines.
    pub fn log_tail(&self, n: usize) -> Result<Vec<LogLine>> {
        let mut lines = self.logs()?;
        let cut = lines.len().saturating_sub(n);
        Ok(lines.split_off(cut))
    }

    /// The artifacts the task sees: its own, and those it inherits from its parent chain
    /// (by reference), sorted by name.
    pub fn artifacts(&self) -> Result<Vec<Artifact>> {
        Ok(self
            .visible()?
            .into_iter()
            .map(|v| Artifact::new(self.client.clone(), self.record.key.clone(), v))
            .collect())
    }

    /// The names of the artifacts the task sees (its own and inherited), sorted.
    pub fn artifact_names(&self) -> Result<Vec<ArtifactName>> {
        Ok(self.visible()?.into_iter().map(|v| v.artifact.name).collect())
    }

    /// Whether the task sees an artifact `name`.
    pub fn has_artifact(&self, name: &str) -> Result<bool> {
        let name = ArtifactName::new(name)?;
        Ok(self.visible()?.iter().any(|v| v.artifact.name == name))
    }

    /// The artifact `name`. An unknown name lists the names the task has; a name that
    /// exists only in the branches of a join says so.
    pub fn artifact(&self, name: &str) -> Result<Artifact> {
        let name = ArtifactName::new(name)?;
        let mut visible = self.visible()?;
        match visible.iter().position(|v| v.artifact.name == name) {
            Some(i) => Ok(Artifact::new(self.client.clone(), self.record.key.clone(), visible.swap_remove(i))),
            None => Err(self.missing(&name, &visible)),
        }
    }

    /// The artifact `name` decoded as `T`; a value stored as another type is an error
    /// naming both types.
    pub fn data<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        self.artifact(name)?.data()
    }

    /// The artifact `name` as the JSON preview made when it was written (bounded in size;
    /// a cut preview is a JSON string ending in a marker).
    pub fn preview(&self, name: &str) -> Result<serde_json::Value> {
        Ok(self.artifact(name)?.preview())
    }

    /// The foreach item this task was given (innermost foreach), decoded as `T`.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T> {
        match self.record.foreach_stack.len() {
            0 => Err(Error::NotForeach { task: self.pathspec() }),
            depth => self.input_at(depth - 1),
        }
    }

    /// The item of foreach level `level` (0 is the outermost) this task sits in.
    pub fn input_at<T: DeserializeOwned>(&self, level: usize) -> Result<T> {
        let frame = self.record.foreach_stack.get(level).ok_or_else(|| Error::NoForeachLevel {
            task: self.pathspec(),
            level,
            depth: self.record.foreach_stack.len(),
        })?;
        let k = &self.record.key;
        let fanned = format!("{}/{}/{}/{}", k.flow, k.run, frame.step, frame.task);
        let fail = |reason: String| Error::Input { task: self.pathspec(), reason };
        let visible = self.visible_of(frame.task)?;
        let art = visible.iter().find(|v| v.artifact.name == frame.over).ok_or_else(|| {
            fail(format!(
                "the foreach task {fanned} has no artifact `{}` to take item {} from",
                frame.over, frame.index
            ))
        })?;
        let elements = art.artifact.elements.ok_or_else(|| {
            fail(format!(
                "artifact `{}` of {fanned} was stored without per-element data, so its items cannot be read one by one",
                frame.over
            ))
        })?;
        let blobs = &self.client.store().blobs;
        let manifest =
            rt::call(|| format!("cannot read the items of `{}` in {fanned}", frame.over), blobs.get(&elements.key))?;
        let mut items = braid_core::codec::decode_manifest(&manifest)
            .map_err(|e| Error::decode(fanned.clone(), frame.over.to_string(), e))?;
        let len = items.len();
        let index = usize::try_from(frame.index).unwrap_or(usize::MAX);
        if index >= len {
            return Err(fail(format!(
                "`{}` of {fanned} has {len} items; index {} is past the end",
                frame.over, frame.index
            )));
        }
        let item = items.swap_remove(index);
        braid_core::codec::decode::<T>(&item).map_err(|e| {
            Error::decode(self.pathspec(), format!("{}[{}] (the foreach input)", frame.over, frame.index), e)
        })
    }

    /// For a join (or a task after one): the names visible in any of the join's inputs
    /// but not in this task — the values a join has to take or merge explicitly.
    pub fn input_only_names(&self) -> Result<Vec<ArtifactName>> {
        let Some(join) = self.nearest_join()? else {
            return Ok(Vec::new());
        };
        let own: BTreeSet<ArtifactName> = self.visible()?.into_iter().map(|v| v.artifact.name).collect();
        let mut names = BTreeSet::new();
        for input in &join.record.inputs {
            for v in self.visible_of(*input)? {
                if !own.contains(&v.artifact.name) {
                    names.insert(v.artifact.name);
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// This task if it is a join, else the first join up its parent chain.
    fn nearest_join(&self) -> Result<Option<Task>> {
        let mut current = self.clone();
        for _ in 0..MAX_HOPS_TO_JOIN {
            if current.is_join() {
                return Ok(Some(current));
            }
            match current.parent()? {
                Some(p) => current = p,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    fn visible(&self) -> Result<Vec<VisibleArtifact>> {
        self.visible_of(self.record.key.task)
    }

    fn visible_of(&self, task: TaskId) -> Result<Vec<VisibleArtifact>> {
        let k = &self.record.key;
        let records = &self.client.store().records;
        rt::call(
            || format!("cannot read the artifacts of {}/{}/{task}", k.flow, k.run),
            records.visible_artifacts(&k.flow, k.run, task),
        )
    }

    /// The error for a name the task does not see: "only in the branches" when a join
    /// on the way received it from its inputs, else the names the task has.
    fn missing(&self, name: &ArtifactName, visible: &[VisibleArtifact]) -> Error {
        if let Ok(Some(join)) = self.nearest_join() {
            let mut having = Vec::new();
            for input in &join.record.inputs {
                if let Ok(v) = self.visible_of(*input)
                    && v.iter().any(|v| &v.artifact.name == name)
                {
                    having.push(*input);
                }
            }
            if let Some(first) = having.first() {
                let k = &join.record.key;
                return Error::BranchOnly {
                    task: self.pathspec(),
                    name: name.to_string(),
                    join: join.pathspec(),
                    branches: having.len(),
                    example: self
                        .sibling(*first)
                        .map(|t| t.pathspec())
                        .unwrap_or_else(|_| format!("{}/{}/?/{first}", k.flow, k.run)),
                };
            }
        }
        let note = if self.record.status.is_terminal() {
            String::new()
        } else {
            format!(" (the task is {}; it may set more before it ends)", self.record.status)
        };
        Error::UnknownArtifact {
            task: self.pathspec(),
            name: name.to_string(),
            known: visible.iter().map(|v| v.artifact.name.to_string()).collect(),
            note,
        }
    }
}
