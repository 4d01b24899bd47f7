use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use braid_core::{ArtifactName, Attempt, FlowName, RunId, StepName, TaskId, TaskStatus, Timestamp};
use braid_store::{ArtifactRecord, BlobKey, Page, StepSummary, TaskKey, TaskQuery, VisibleArtifact};
use serde::de::DeserializeOwned;

use crate::artifact::Artifact;
use crate::error::{Error, Result};
use crate::run::{Run, duration, get_task, list_tasks};
use crate::task::Task;
use crate::{Client, rt};

/// A step of a run: its tasks (one per foreach item, per loop iteration, ...) and their
/// counts by status as of when the handle was made.
#[derive(Debug, Clone)]
pub struct Step {
    client: Client,
    flow: FlowName,
    run: RunId,
    summary: StepSummary,
}

/// One task's value of an artifact, from [`Step::artifact_entries`]. Fields may be added.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ArtifactEntry {
    /// The task that has the value.
    pub task: TaskId,
    /// The task's innermost foreach index; `None` outside a foreach.
    pub index: Option<u64>,
    /// The value, as that task sees it.
    pub artifact: Artifact,
}

/// A task in brief, from [`Step::task_states`]: enough to draw it as one cell of a grid.
/// Fields may be added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskState {
    /// The task's id.
    pub task: TaskId,
    /// Its foreach indexes, outermost first (empty outside a foreach).
    pub indexes: Vec<u64>,
    /// Its status as of now (lost rather than running once its lease ran out).
    pub status: TaskStatus,
    /// Its current (or last) attempt, from 1.
    pub attempt: Attempt,
}

struct Row {
    task: TaskId,
    index: Option<u64>,
    visible: VisibleArtifact,
}

impl Step {
    pub(crate) fn new(client: Client, flow: FlowName, run: RunId, summary: StepSummary) -> Self {
        Step { client, flow, run, summary }
    }

    /// The step's name.
    pub fn name(&self) -> &StepName {
        &self.summary.step
    }

    /// The name of the flow the run belongs to.
    pub fn flow_name(&self) -> &FlowName {
        &self.flow
    }

    /// The id of the run the step belongs to.
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// `flow/run_id/step`.
    pub fn pathspec(&self) -> String {
        format!("{}/{}/{}", self.flow, self.run, self.summary.step)
    }

    /// The run this step belongs to, as it is now.
    pub fn run(&self) -> Result<Run> {
        self.client.flow_by_name(&self.flow)?.run_by_id(self.run)
    }

    /// The step as it is now (new tasks, new counts).
    pub fn refresh(&self) -> Result<Step> {
        self.run()?.step_by_name(&self.summary.step)
    }

    /// The store's summary of the step as read: counts by status, first start, last end.
    pub fn summary(&self) -> &StepSummary {
        &self.summary
    }

    /// How many of the step's tasks are in each status.
    pub fn counts(&self) -> &BTreeMap<TaskStatus, u64> {
        &self.summary.counts
    }

    /// How many of its tasks are in `status`.
    pub fn count(&self, status: TaskStatus) -> u64 {
        self.summary.counts.get(&status).copied().unwrap_or(0)
    }

    /// How many tasks the step has so far.
    pub fn task_count(&self) -> u64 {
        self.summary.counts.values().sum()
    }

    /// Whether every task so far has ended.
    pub fn is_done(&self) -> bool {
        self.count(TaskStatus::Pending) == 0 && self.count(TaskStatus::Running) == 0
    }

    /// When its first task started.
    pub fn first_started(&self) -> Option<Timestamp> {
        self.summary.first_started
    }

    /// When its last task so far ended.
    pub fn last_ended(&self) -> Option<Timestamp> {
        self.summary.last_ended
    }

    /// From the first task's start to the last task's end (to now while tasks run).
    pub fn duration(&self) -> Option<Duration> {
        let end = if self.is_done() { self.summary.last_ended } else { None };
        duration(self.summary.first_started, end)
    }

    /// Every task of the step, in task id order.
    pub fn tasks(&self) -> Result<Vec<Task>> {
        Ok(list_tasks(&self.client, &self.flow, self.run, Some(self.name()))?
            .into_iter()
            .map(|r| Task::new(self.client.clone(), r))
            .collect())
    }

    /// One page of the step's tasks in task id order: at most `limit` (1 to 1000) after
    /// the cursor `after` (the `next` of the previous page; `None` for the first page),
    /// only those in `status` when given. A malformed cursor is an error that says so.
    pub fn tasks_page(&self, status: Option<TaskStatus>, after: Option<&str>, limit: usize) -> Result<Page<Task>> {
        let records = &self.client.store().records;
        let query = TaskQuery {
            step: Some(self.name().clone()),
            status,
            after: after.map(str::to_owned),
            limit: limit.clamp(1, crate::run::TASK_PAGE),
        };
        let page = rt::call(
            || format!("cannot list the tasks of {}", self.pathspec()),
            records.list_tasks(&self.flow, self.run, &query),
        )?;
        Ok(Page { items: page.items.into_iter().map(|r| Task::new(self.client.clone(), r)).collect(), next: page.next })
    }

    /// Every task of the step as a compact [`TaskState`] (id, foreach indexes, status,
    /// attempt), in task id order. Read page by page and kept small, so a grid of a
    /// 100,000-branch foreach costs a few MB, not the full records.
    pub fn task_states(&self) -> Result<Vec<TaskState>> {
        let records = &self.client.store().records;
        let mut query =
            TaskQuery { step: Some(self.name().clone()), status: None, after: None, limit: crate::run::TASK_PAGE };
        let mut out = Vec::with_capacity(usize::try_from(self.task_count()).unwrap_or(0));
        loop {
            let page = rt::call(
                || format!("cannot list the tasks of {}", self.pathspec()),
                records.list_tasks(&self.flow, self.run, &query),
            )?;
            out.extend(page.items.into_iter().map(|r| {
                let task = Task::new(self.client.clone(), r);
                TaskState {
                    task: task.id(),
                    indexes: task.foreach_stack().iter().map(|f| f.index).collect(),
                    status: task.status(),
                    attempt: task.attempt(),
                }
            }));
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// The step's tasks in one status, in task id order.
    pub fn tasks_with_status(&self, status: TaskStatus) -> Result<Vec<Task>> {
        let records = &self.client.store().records;
        let mut query = TaskQuery {
            step: Some(self.name().clone()),
            status: Some(status),
            after: None,
            limit: crate::run::TASK_PAGE,
        };
        let mut out = Vec::new();
        loop {
            let page = rt::call(
                || format!("cannot list the {status} tasks of {}", self.pathspec()),
                records.list_tasks(&self.flow, self.run, &query),
            )?;
            out.extend(page.items.into_iter().map(|r| Task::new(self.client.clone(), r)));
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// The task with this id, which must belong to this step.
    pub fn task(&self, id: TaskId) -> Result<Task> {
        match get_task(&self.client, &self.flow, self.run, id)? {
            Some(r) if &r.key.step == self.name() => Ok(Task::new(self.client.clone(), r)),
            Some(r) => Err(Error::UnknownTask {
                within: self.pathspec(),
                task: id.to_string(),
                hint: format!("task {id} belongs to step `{}`: {}", r.key.step, r.key),
            }),
            None => {
                Err(Error::UnknownTask { within: self.pathspec(), task: id.to_string(), hint: self.task_id_hint() })
            }
        }
    }

    /// The step's only task (a step outside any foreach, e.g. `start`, a join or `end`).
    pub fn single_task(&self) -> Result<Task> {
        let query = TaskQuery { step: Some(self.name().clone()), limit: 2, ..TaskQuery::default() };
        let records = &self.client.store().records;
        let page = rt::call(
            || format!("cannot list the tasks of {}", self.pathspec()),
            records.list_tasks(&self.flow, self.run, &query),
        )?;
        let mut items = page.items;
        if items.len() == 1
            && let Some(r) = items.pop()
        {
            return Ok(Task::new(self.client.clone(), r));
        }
        Err(Error::NotOneTask {
            step: self.pathspec(),
            count: usize::try_from(self.task_count().max(items.len() as u64)).unwrap_or(usize::MAX),
        })
    }

    /// The task whose innermost foreach index is `index`, found through the store's
    /// index (no scan). In a nested foreach several tasks share an index: that is an
    /// error listing them; use [`Step::tasks_by_index`] to get them all.
    pub fn task_by_index(&self, index: u64) -> Result<Task> {
        let mut tasks = self.tasks_by_index(index)?;
        match tasks.len() {
            0 => Err(Error::NoTaskAtIndex { step: self.pathspec(), index, hint: self.index_hint() }),
            1 => Ok(tasks.remove(0)),
            _ => Err(Error::AmbiguousIndex {
                step: self.pathspec(),
                index,
                candidates: tasks
                    .iter()
                    .map(|t| {
                        let stack: Vec<String> =
                            t.foreach_stack().iter().map(|f| format!("{}[{}]", f.step, f.index)).collect();
                        format!("{} ({})", t.pathspec(), stack.join(" > "))
                    })
                    .collect(),
            }),
        }
    }

    /// Every task whose innermost foreach index is `index` (one per outer branch when
    /// foreach steps nest), in task id order.
    pub fn tasks_by_index(&self, index: u64) -> Result<Vec<Task>> {
        let records = &self.client.store().records;
        let found = rt::call(
            || format!("cannot find task {index} by index in {}", self.pathspec()),
            records.tasks_by_index(&self.flow, self.run, self.name(), index),
        )?;
        Ok(found.into_iter().map(|r| Task::new(self.client.clone(), r)).collect())
    }

    /// The artifact `name` of every task of the step that has it, decoded as `T`, as
    /// `(index, value)` in foreach index order (the index is 0 outside a foreach). Tasks
    /// that have not set it yet are left out. One query and one batched blob read.
    pub fn artifact_values<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<(u64, T)>> {
        let name = ArtifactName::new(name)?;
        let rows = self.rows(&name)?;
        let store = self.client.store();
        let rows_ref = &rows;
        // Small values are inline in their rows; the rest come in one batched blob read.
        let bytes: Vec<Vec<u8>> =
            rt::call(|| format!("cannot read the values of artifact `{name}` in {}", self.pathspec()), async move {
                let mut keys: Vec<BlobKey> = rows_ref
                    .iter()
                    .filter(|r| r.visible.artifact.inline.is_none())
                    .map(|r| r.visible.artifact.key)
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                let fetched = if keys.is_empty() { Vec::new() } else { store.blobs.get_many(&keys).await? };
                let by_key: HashMap<BlobKey, Vec<u8>> = keys.into_iter().zip(fetched).collect();
                let mut out = Vec::with_capacity(rows_ref.len());
                for r in rows_ref {
                    let a = &r.visible.artifact;
                    out.push(match &a.inline {
                        Some(_) => store.artifact_bytes(a).await?,
                        None => by_key
                            .get(&a.key)
                            .cloned()
                            .ok_or_else(|| braid_store::Error::NotFound { what: format!("blob {}", a.key) })?,
                    });
                }
                Ok(out)
            })?;
        rows.iter()
            .zip(bytes)
            .map(|(r, b)| {
                let value = braid_core::codec::decode::<T>(&b)
                    .map_err(|e| Error::decode(format!("{}/{}", self.pathspec(), r.task), name.to_string(), e))?;
                Ok((r.index.unwrap_or(0), value))
            })
            .collect()
    }

    /// Like [`Step::artifact_values`], as the JSON previews made at write time (no blob
    /// is read).
    pub fn artifact_previews(&self, name: &str) -> Result<Vec<(u64, serde_json::Value)>> {
        let name = ArtifactName::new(name)?;
        Ok(self
            .rows(&name)?
            .iter()
            .map(|r| (r.index.unwrap_or(0), r.visible.artifact.preview.to_json_value()))
            .collect())
    }

    /// The artifact `name` of every task of the step that has it, with each task's id
    /// and foreach index, in foreach index order.
    pub fn artifact_entries(&self, name: &str) -> Result<Vec<ArtifactEntry>> {
        let name = ArtifactName::new(name)?;
        Ok(self
            .rows(&name)?
            .into_iter()
            .map(|r| ArtifactEntry {
                task: r.task,
                index: r.index,
                artifact: Artifact::new(
                    self.client.clone(),
                    TaskKey { flow: self.flow.clone(), run: self.run, step: self.name().clone(), task: r.task },
                    r.visible,
                ),
            })
            .collect())
    }

    /// The rows of `name` across the step: the values tasks set themselves (one query),
    /// plus, for tasks that did not set it, the value they inherit from their parent
    /// (one lookup per distinct parent).
    fn rows(&self, name: &ArtifactName) -> Result<Vec<Row>> {
        let records = &self.client.store().records;
        let set = rt::call(
            || format!("cannot read artifact `{name}` across {}", self.pathspec()),
            records.step_artifacts(&self.flow, self.run, self.name(), name),
        )?;
        let mut rows: Vec<Row> = set
            .into_iter()
            .map(|s| Row {
                task: s.task,
                index: s.foreach_index,
                visible: VisibleArtifact { artifact: s.artifact, set_by: s.task },
            })
            .collect();
        if (rows.len() as u64) < self.task_count() {
            self.add_inherited(name, &mut rows)?;
        }
        rows.sort_by_key(|r| (r.index, r.task));
        if rows.is_empty() {
            self.check_name_exists(name)?;
        }
        Ok(rows)
    }

    fn add_inherited(&self, name: &ArtifactName, rows: &mut Vec<Row>) -> Result<()> {
        let have: HashSet<TaskId> = rows.iter().map(|r| r.task).collect();
        let tasks = list_tasks(&self.client, &self.flow, self.run, Some(self.name()))?;
        let mut by_parent: HashMap<TaskId, Option<VisibleArtifact>> = HashMap::new();
        for t in tasks {
            if have.contains(&t.key.task) {
                continue;
            }
            let Some(parent) = t.parent else { continue };
            let found = match by_parent.entry(parent) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(self.visible(parent)?.into_iter().find(|v| &v.artifact.name == name))
                }
            };
            if let Some(v) = found {
                rows.push(Row { task: t.key.task, index: t.foreach_index(), visible: v.clone() });
            }
        }
        Ok(())
    }

    /// When no task has `name`: an error if a finished task of the step shows the name
    /// does not exist (so a typo is not an empty list); nothing while tasks still run.
    fn check_name_exists(&self, name: &ArtifactName) -> Result<()> {
        let done = self.tasks_with_status(TaskStatus::Succeeded)?;
        match done.into_iter().next() {
            Some(task) => task.artifact(name.as_str()).map(|_| ()),
            None => Ok(()),
        }
    }

    fn visible(&self, task: TaskId) -> Result<Vec<VisibleArtifact>> {
        let records = &self.client.store().records;
        rt::call(
            || format!("cannot read the artifacts of {}/{}/{task}", self.flow, self.run),
            records.visible_artifacts(&self.flow, self.run, task),
        )
    }

    pub(crate) fn task_id_hint(&self) -> String {
        let query = TaskQuery { step: Some(self.name().clone()), limit: 5, ..TaskQuery::default() };
        let records = &self.client.store().records;
        match rt::call(String::new, records.list_tasks(&self.flow, self.run, &query)) {
            Ok(p) if p.items.is_empty() => "the step has no tasks yet".to_owned(),
            Ok(p) => {
                let ids: Vec<String> = p.items.iter().map(|t| t.key.task.to_string()).collect();
                let more = if self.task_count() > ids.len() as u64 {
                    format!(", … ({} tasks in all)", self.task_count())
                } else {
                    String::new()
                };
                format!(
                    "its task ids are {}{more} (the last part of a pathspec is a task id; use `task_by_index` or `--index` for a foreach index)",
                    ids.join(", ")
                )
            }
            Err(_) => String::new(),
        }
    }

    fn index_hint(&self) -> String {
        let query = TaskQuery { step: Some(self.name().clone()), limit: 1, ..TaskQuery::default() };
        let records = &self.client.store().records;
        let first = rt::call(String::new, records.list_tasks(&self.flow, self.run, &query));
        match first.ok().and_then(|p| p.items.into_iter().next()) {
            None => "the step has no tasks yet".to_owned(),
            Some(t) => match t.foreach_stack.last() {
                None => format!(
                    "its tasks are not foreach branches, so they have no index (step `{}` is not inside a foreach)",
                    self.name()
                ),
                Some(f) => format!(
                    "its foreach over `{}` has {} items (indexes 0 to {}); {} tasks exist so far",
                    f.over,
                    f.len,
                    f.len.saturating_sub(1),
                    self.task_count()
                ),
            },
        }
    }
}

impl ArtifactEntry {
    /// The artifact's record (key, type name, size, preview).
    pub fn record(&self) -> &ArtifactRecord {
        self.artifact.record()
    }
}
