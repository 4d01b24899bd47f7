use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use braid_core::{FlowName, RunId, RunStatus, StepName, Tag, TaskId, Timestamp};
use braid_store::{Page, RunRecord, StepSummary, TaskQuery, TaskRecord};

use crate::error::{Error, Result};
use crate::flow::{Flow, declared_steps};
use crate::pages::paged;
use crate::step::Step;
use crate::task::Task;
use crate::{Client, rt};

/// One run of a flow, as read when the handle was made; [`Run::refresh`] reads it again.
#[derive(Debug, Clone)]
pub struct Run {
    client: Client,
    record: RunRecord,
}

/// Tasks fetched per store call when paging through a run's tasks.
pub(crate) const TASK_PAGE: usize = 1000;

impl Run {
    pub(crate) fn new(client: Client, record: RunRecord) -> Self {
        Run { client, record }
    }

    /// The run's id, unique within its flow.
    pub fn id(&self) -> RunId {
        self.record.id
    }

    /// The name of the flow this is a run of.
    pub fn flow_name(&self) -> &FlowName {
        &self.record.flow
    }

    /// `flow/run_id`.
    pub fn pathspec(&self) -> String {
        format!("{}/{}", self.record.flow, self.record.id)
    }

    /// The client this handle reads through (a tag write returns the run over it).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The whole record as read.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// The run as it is now.
    pub fn refresh(&self) -> Result<Run> {
        self.flow_handle().run_by_id(self.record.id)
    }

    /// The flow this run belongs to.
    pub fn flow(&self) -> Result<Flow> {
        self.client.flow_by_name(&self.record.flow)
    }

    fn flow_handle(&self) -> Flow {
        Flow::new(self.client.clone(), self.record.flow.clone(), None)
    }

    /// The run's status as of now: a `pending` or `running` run whose lease ran out (its
    /// process died or hangs) is `lost`, never `running`.
    pub fn status(&self) -> RunStatus {
        self.record.status_now()
    }

    /// Whether the run has ended (succeeded, failed, cancelled or lost).
    pub fn is_finished(&self) -> bool {
        self.status().is_terminal()
    }

    /// Who holds (or last held) the run and until when: `role@host:pid`, last renewal
    /// and deadline. For a `lost` run, when and by which process it was last held.
    pub fn lease(&self) -> Option<&braid_store::RunLease> {
        self.record.lease.as_ref()
    }

    /// For a run seen as `lost` while its record still says `pending` or `running`: when
    /// its lease ran out and which process last held it.
    pub fn lost_reason(&self) -> Option<String> {
        let l = self.record.lease.as_ref()?;
        (self.record.status.is_live() && self.status() == RunStatus::Lost).then(|| {
            format!(
                "its lease ran out at {} (last renewed at {} by {}); `resume` completes it",
                l.deadline, l.renewed_at, l.holder
            )
        })
    }

    /// Parameter values the run was started with.
    pub fn params(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.record.params
    }

    /// The value of parameter `name` the run was started with.
    pub fn param(&self, name: &str) -> Option<&serde_json::Value> {
        self.record.params.get(name)
    }

    /// The run's tags (written with a [`TagWriter`](crate::TagWriter)).
    pub fn tags(&self) -> &BTreeSet<Tag> {
        &self.record.tags
    }

    /// Whether the run carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.record.tags.iter().any(|t| t.as_str() == tag)
    }

    /// When the run was created.
    pub fn created_at(&self) -> Timestamp {
        self.record.created_at
    }

    /// When the run started; `None` while it is pending.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.record.started_at
    }

    /// When the run ended; `None` while it goes on.
    pub fn ended_at(&self) -> Option<Timestamp> {
        self.record.ended_at
    }

    /// From start to end, or to now while the run goes on; `None` before it starts.
    pub fn duration(&self) -> Option<Duration> {
        duration(self.record.started_at, self.record.ended_at)
    }

    /// For a resumed run, the id of the run it resumed.
    pub fn origin_run(&self) -> Option<RunId> {
        self.record.origin_run
    }

    /// For a resumed run, the run it resumed.
    pub fn origin(&self) -> Result<Option<Run>> {
        self.record.origin_run.map(|id| self.flow_handle().run_by_id(id)).transpose()
    }

    /// The readable name given at launch (e.g. by a launch plan), if any.
    pub fn name(&self) -> Option<&str> {
        self.record.name.as_deref()
    }

    /// How the run was launched (plan, version, tick, host, ...).
    pub fn meta(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.record.meta
    }

    /// Why the run failed.
    pub fn error(&self) -> Option<&str> {
        self.record.error.as_deref()
    }

    /// The steps that have tasks, in order of each step's first task, with counts by
    /// status as of now.
    pub fn steps(&self) -> Result<Vec<Step>> {
        Ok(self
            .summaries()?
            .into_iter()
            .map(|s| Step::new(self.client.clone(), self.record.flow.clone(), self.id(), s))
            .collect())
    }

    /// The step `name`; an unknown name lists the run's steps.
    pub fn step(&self, name: &str) -> Result<Step> {
        self.step_by_name(&StepName::new(name)?)
    }

    pub(crate) fn step_by_name(&self, name: &StepName) -> Result<Step> {
        let summaries = self.summaries()?;
        let known: Vec<String> = summaries.iter().map(|s| s.step.to_string()).collect();
        if let Some(s) = summaries.into_iter().find(|s| &s.step == name) {
            return Ok(Step::new(self.client.clone(), self.record.flow.clone(), self.id(), s));
        }
        let declared = self
            .client
            .flow_by_name(&self.record.flow)
            .map(|f| declared_steps(f.spec()).contains(name))
            .unwrap_or(false);
        if declared {
            Err(Error::StepNotStarted { run: self.pathspec(), step: name.to_string(), known })
        } else {
            Err(Error::UnknownStep { run: self.pathspec(), step: name.to_string(), known })
        }
    }

    pub(crate) fn summaries(&self) -> Result<Vec<StepSummary>> {
        let records = &self.client.store().records;
        let mut summaries = rt::call(
            || format!("cannot summarise the steps of run {}", self.pathspec()),
            records.step_summaries(&self.record.flow, self.record.id),
        )?;
        // In a lost run nothing runs any more: its running tasks are counted as lost.
        if self.status() == RunStatus::Lost {
            for s in &mut summaries {
                if let Some(n) = s.counts.remove(&braid_core::TaskStatus::Running) {
                    *s.counts.entry(braid_core::TaskStatus::Lost).or_default() += n;
                }
            }
        }
        Ok(summaries)
    }

    /// Every task of the run, in task id order. [`Run::tasks_iter`] reads the same a
    /// page at a time.
    pub fn tasks(&self) -> Result<Vec<Task>> {
        self.tasks_iter().collect()
    }

    /// Every task of the run, in task id order, read lazily a page (1,000 tasks) at a
    /// time, so memory stays bounded however many tasks the run has. An error (a failed
    /// read) is yielded once and ends the iteration.
    pub fn tasks_iter(&self) -> impl Iterator<Item = Result<Task>> + use<> {
        task_pages(self.client.clone(), self.record.flow.clone(), self.id(), None, self.pathspec())
    }

    /// The task with this id, whatever its step.
    pub fn task(&self, id: TaskId) -> Result<Task> {
        match get_task(&self.client, &self.record.flow, self.id(), id)? {
            Some(r) => Ok(Task::new(self.client.clone(), r)),
            None => {
                Err(Error::UnknownTask { within: self.pathspec(), task: id.to_string(), hint: self.task_id_hint() })
            }
        }
    }

    /// The task of the `end` step: where a finished run's results usually are.
    pub fn end_task(&self) -> Result<Task> {
        self.step_by_name(&StepName::end())?.single_task()
    }

    /// The task `id`, which must belong to `step`.
    pub(crate) fn task_in_step(&self, step: &StepName, id: TaskId) -> Result<Task> {
        let record = get_task(&self.client, &self.record.flow, self.id(), id)?;
        match record {
            Some(r) if &r.key.step == step => Ok(Task::new(self.client.clone(), r)),
            Some(r) => {
                // The step must exist for the pathspec to make sense at all.
                self.step_by_name(step)?;
                Err(Error::UnknownTask {
                    within: format!("{}/{step}", self.pathspec()),
                    task: id.to_string(),
                    hint: format!("task {id} belongs to step `{}`: {}", r.key.step, r.key),
                })
            }
            None => {
                let s = self.step_by_name(step)?;
                Err(Error::UnknownTask { within: s.pathspec(), task: id.to_string(), hint: s.task_id_hint() })
            }
        }
    }

    fn task_id_hint(&self) -> String {
        let query = TaskQuery { limit: 1, ..TaskQuery::default() };
        let records = &self.client.store().records;
        let first = rt::call(String::new, records.list_tasks(&self.record.flow, self.id(), &query));
        match first {
            Ok(p) if p.items.is_empty() => "the run has no tasks yet".to_owned(),
            Ok(_) => "task ids are numbers from 1 in the order the run created its tasks; `braid show` on the step lists them".to_owned(),
            Err(_) => String::new(),
        }
    }
}

pub(crate) fn get_task(client: &Client, flow: &FlowName, run: RunId, id: TaskId) -> Result<Option<TaskRecord>> {
    let records = &client.store().records;
    rt::call(|| format!("cannot read task {flow}/{run}/{id}"), records.get_task(flow, run, id))
}

/// From `start` to `end`, or to now when not ended.
pub(crate) fn duration(start: Option<Timestamp>, end: Option<Timestamp>) -> Option<Duration> {
    let start = start?;
    Some(end.unwrap_or_else(Timestamp::now).since(start))
}

/// The tasks of `run` (of `step` only, if given), in task id order, a page at a time;
/// `pathspec` names what is listed in errors.
pub(crate) fn task_pages(
    client: Client,
    flow: FlowName,
    run: RunId,
    step: Option<StepName>,
    pathspec: String,
) -> impl Iterator<Item = Result<Task>> {
    paged(move |after| {
        let query = TaskQuery { step: step.clone(), status: None, after, limit: TASK_PAGE };
        let page = rt::call(
            || format!("cannot list the tasks of {pathspec}"),
            client.store().records.list_tasks(&flow, run, &query),
        )?;
        Ok(Page { items: page.items.into_iter().map(|r| Ok(Task::new(client.clone(), r))).collect(), next: page.next })
    })
}
