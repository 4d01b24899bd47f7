use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use braid_core::{ArtifactName, Attempt, FlowName, RunId, StepName, TaskId, TaskStatus, Timestamp};
use braid_store::{ArtifactRecord, BlobKey, Page, StepSummary, TaskKey, TaskQuery, VisibleArtifact};
use serde::de::DeserializeOwned;

use crate::artifact::Artifact;
use crate::error::{Error, Result};
use crate::pages::{or_explain, paged};
use crate::run::{Run, duration, get_task};
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

/// The steps a transition goes to, in declaration order, each once.
pub(crate) fn successor_steps(next: &braid_dag::Transition) -> Vec<StepName> {
    let mut out: Vec<StepName> = Vec::new();
    let mut push = |s: &StepName| {
        if !out.contains(s) {
            out.push(s.clone());
        }
    };
    match next {
        braid_dag::Transition::Next { to } | braid_dag::Transition::Foreach { to, .. } => push(to),
        braid_dag::Transition::Split { to } => to.iter().for_each(push),
        braid_dag::Transition::Switch { cases, .. } => cases.values().flat_map(|c| c.steps()).for_each(push),
        _ => {}
    }
    out
}

/// Parents whose visible artifacts a bulk read remembers before it starts over.
const PARENTS_REMEMBERED: usize = 4096;

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

    /// For a step of a resumed run, the same step in the run it resumed (the origin's
    /// tasks that succeeded there were cloned here); `None` when the run is not a resume
    /// or the origin never started this step.
    pub fn origin(&self) -> Result<Option<Step>> {
        let Some(origin) = self.run()?.origin()? else { return Ok(None) };
        match origin.step_by_name(&self.summary.step) {
            Ok(s) => Ok(Some(s)),
            Err(Error::StepNotStarted { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The steps this step goes to, as the flow's stored spec declares them: the next
    /// step, every branch of a split, the step of a foreach, every case of a switch (a
    /// loop's included); none for `end`. Empty when the flow has no stored spec.
    pub fn child_steps(&self) -> Result<Vec<StepName>> {
        let Some(graph) = self.client.flow_by_name(&self.flow)?.graph()? else { return Ok(Vec::new()) };
        Ok(graph.step(self.summary.step.as_str()).map(|s| successor_steps(&s.next)).unwrap_or_default())
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

    /// Every task of the step, in task id order. [`Step::tasks_iter`] reads the same a
    /// page at a time.
    pub fn tasks(&self) -> Result<Vec<Task>> {
        self.tasks_iter().collect()
    }

    /// Every task of the step, in task id order, read lazily a page (1,000 tasks) at a
    /// time, so memory stays bounded whatever the step's width: the next page is fetched
    /// when the previous one is used up. An error (a failed read) is yielded once and
    /// ends the iteration.
    pub fn tasks_iter(&self) -> impl Iterator<Item = Result<Task>> + use<> {
        crate::run::task_pages(
            self.client.clone(),
            self.flow.clone(),
            self.run,
            Some(self.name().clone()),
            self.pathspec(),
        )
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
    /// that have not set it yet are left out. A query and one batched blob read per
    /// 1,000 tasks; [`Step::artifact_values_iter`] gives the same without holding them all.
    pub fn artifact_values<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<(u64, T)>> {
        self.artifact_values_iter(name).collect()
    }

    /// [`Step::artifact_values`] read lazily, a page of 1,000 tasks at a time (a query and
    /// one batched blob read each), so memory stays bounded whatever the step's width.
    /// An error (a malformed name, a failed read, a value of another type) is yielded
    /// once and ends the iteration; so is a name no finished task of the step has.
    pub fn artifact_values_iter<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> impl Iterator<Item = Result<(u64, T)>> + use<T> {
        let step = self.clone();
        self.row_pages(name, move |name, rows| {
            let bytes = step.row_bytes(name, &rows)?;
            Ok(rows
                .iter()
                .zip(bytes)
                .map(|(r, b)| {
                    let value = braid_core::codec::decode::<T>(&b)
                        .map_err(|e| Error::decode(format!("{}/{}", step.pathspec(), r.task), name.to_string(), e))?;
                    Ok((r.index.unwrap_or(0), value))
                })
                .collect())
        })
    }

    /// Like [`Step::artifact_values`], as the JSON previews made at write time (no blob
    /// is read).
    pub fn artifact_previews(&self, name: &str) -> Result<Vec<(u64, serde_json::Value)>> {
        self.row_pages(name, |_, rows| {
            Ok(rows
                .into_iter()
                .map(|r| Ok((r.index.unwrap_or(0), r.visible.artifact.preview.to_json_value())))
                .collect())
        })
        .collect()
    }

    /// The artifact `name` of every task of the step that has it, with each task's id
    /// and foreach index, in foreach index order. [`Step::artifact_entries_iter`] reads
    /// the same a page at a time.
    pub fn artifact_entries(&self, name: &str) -> Result<Vec<ArtifactEntry>> {
        self.artifact_entries_iter(name).collect()
    }

    /// [`Step::artifact_entries`] read lazily, a page of 1,000 tasks (one query) at a
    /// time, so memory stays bounded whatever the step's width. An error (a malformed
    /// name, a failed read) is yielded once and ends the iteration; so is a name no
    /// finished task of the step has.
    pub fn artifact_entries_iter(&self, name: &str) -> impl Iterator<Item = Result<ArtifactEntry>> + use<> {
        let step = self.clone();
        self.row_pages(name, move |_, rows| {
            Ok(rows
                .into_iter()
                .map(|r| {
                    Ok(ArtifactEntry {
                        task: r.task,
                        index: r.index,
                        artifact: Artifact::new(
                            step.client.clone(),
                            TaskKey { flow: step.flow.clone(), run: step.run, step: step.name().clone(), task: r.task },
                            r.visible,
                        ),
                    })
                })
                .collect())
        })
    }

    /// The rows of `name` across the step, a page at a time, each page turned into items
    /// by `items`: the value each task set itself, or for a task that did not, the value
    /// it inherits from its parent (one lookup per distinct parent, remembered for the
    /// next tasks). Nothing at all is explained by [`Step::check_name_exists`].
    fn row_pages<U, F>(&self, name: &str, mut items: F) -> impl Iterator<Item = Result<U>> + use<U, F>
    where
        F: FnMut(&ArtifactName, Vec<Row>) -> Result<Vec<Result<U>>>,
    {
        let (name, mut malformed) = match ArtifactName::new(name) {
            Ok(n) => (Some(n), None),
            Err(e) => (None, Some(Error::from(e))),
        };
        let step = self.clone();
        let checker = self.clone();
        let check_name = name.clone();
        // Parents whose visible value was looked up; a foreach's branches share one.
        let mut by_parent: HashMap<TaskId, Option<VisibleArtifact>> = HashMap::new();
        let rows = paged(move |after| {
            if let Some(e) = malformed.take() {
                return Err(e);
            }
            let Some(name) = &name else { return Ok(Page { items: Vec::new(), next: None }) };
            let records = &step.client.store().records;
            let page = rt::call(
                || format!("cannot read artifact `{name}` across {}", step.pathspec()),
                records.step_artifacts_page(&step.flow, step.run, step.name(), name, after, crate::run::TASK_PAGE),
            )?;
            let mut rows = Vec::with_capacity(page.items.len());
            for r in page.items {
                let visible = match (r.artifact, r.parent) {
                    (Some(artifact), _) => VisibleArtifact { artifact, set_by: r.task },
                    (None, None) => continue,
                    (None, Some(parent)) => {
                        if by_parent.len() >= PARENTS_REMEMBERED {
                            by_parent.clear();
                        }
                        let found = match by_parent.entry(parent) {
                            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(step.visible(parent)?.into_iter().find(|v| &v.artifact.name == name))
                            }
                        };
                        match found {
                            Some(v) => v.clone(),
                            None => continue,
                        }
                    }
                };
                rows.push(Row { task: r.task, index: r.foreach_index, visible });
            }
            Ok(Page { items: items(name, rows)?, next: page.next })
        });
        or_explain(rows, move || check_name.and_then(|n| checker.check_name_exists(&n).err()))
    }

    /// The envelope bytes of each row's value, in order: inline ones from their rows, the
    /// rest in one batched blob read.
    fn row_bytes(&self, name: &ArtifactName, rows: &[Row]) -> Result<Vec<Vec<u8>>> {
        let store = self.client.store();
        rt::call(|| format!("cannot read the values of artifact `{name}` in {}", self.pathspec()), async move {
            let mut keys: Vec<BlobKey> =
                rows.iter().filter(|r| r.visible.artifact.inline.is_none()).map(|r| r.visible.artifact.key).collect();
            keys.sort_unstable();
            keys.dedup();
            let fetched = if keys.is_empty() { Vec::new() } else { store.blobs.get_many(&keys).await? };
            let by_key: HashMap<BlobKey, Vec<u8>> = keys.into_iter().zip(fetched).collect();
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
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
        })
    }

    /// When no task has `name`: an error if a finished task of the step shows the name
    /// does not exist (so a typo is not an empty list); nothing while tasks still run.
    fn check_name_exists(&self, name: &ArtifactName) -> Result<()> {
        let done = self.tasks_page(Some(TaskStatus::Succeeded), None, 1)?;
        match done.items.into_iter().next() {
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
