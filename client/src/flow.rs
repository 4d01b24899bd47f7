use braid_core::{FlowName, RunId, RunRef, RunStatus, StepName, Tag, Timestamp};
use braid_store::{FlowRecord, Page, RunQuery};

use crate::error::{Error, Result};
use crate::pages::paged;
use crate::run::Run;
use crate::{Client, rt};

/// A flow: its registered spec and its runs.
#[derive(Debug, Clone)]
pub struct Flow {
    client: Client,
    name: FlowName,
    record: Option<FlowRecord>,
}

/// Which runs [`Flow::runs_matching`] returns, newest first.
/// Fields may be added: build one with [`RunFilter::new`] (or `Default`) and its setters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs in this status (as of now: a run whose lease ran out counts as lost).
    pub status: Option<RunStatus>,
    /// Only runs with this tag.
    pub tag: Option<Tag>,
    /// At most this many; `None` for all.
    pub limit: Option<usize>,
}

impl RunFilter {
    /// Every run (no status, no tag, no limit).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only runs in `status`.
    pub fn status(mut self, status: RunStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only runs tagged `tag`.
    pub fn tag(mut self, tag: Tag) -> Self {
        self.tag = Some(tag);
        self
    }

    /// At most `limit` runs, the newest.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// Runs fetched per store call when paging through all of them.
const PAGE: usize = 500;
/// Runs named in an "unknown run" error.
const LATEST_SHOWN: usize = 5;

impl Flow {
    pub(crate) fn new(client: Client, name: FlowName, record: Option<FlowRecord>) -> Self {
        Flow { client, name, record }
    }

    /// The flow's name.
    pub fn name(&self) -> &FlowName {
        &self.name
    }

    /// The flow's pathspec: its name.
    pub fn pathspec(&self) -> String {
        self.name.to_string()
    }

    /// The flow as its binary registered it; `None` if runs exist but no spec was stored.
    pub fn record(&self) -> Option<&FlowRecord> {
        self.record.as_ref()
    }

    /// The graph spec (the `braidflow-dag` crate's `FlowSpec` as JSON).
    pub fn spec(&self) -> Option<&serde_json::Value> {
        self.record.as_ref().map(|r| &r.spec)
    }

    /// The validated graph, from the stored spec; `None` without a spec. A spec that does
    /// not parse or validate is an error that says why.
    pub fn graph(&self) -> Result<Option<braid_dag::FlowGraph>> {
        let Some(spec) = self.spec() else {
            return Ok(None);
        };
        let spec: braid_dag::FlowSpec = serde_json::from_value(spec.clone())
            .map_err(|e| Error::Spec { flow: self.name.to_string(), reason: e.to_string() })?;
        braid_dag::FlowGraph::from_spec(spec).map(Some).map_err(|e| Error::Spec {
            flow: self.name.to_string(),
            reason: e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "),
        })
    }

    /// When the spec was last registered.
    pub fn updated_at(&self) -> Option<Timestamp> {
        self.record.as_ref().map(|r| r.updated_at)
    }

    /// The steps the spec declares, in declaration order (empty without a spec).
    pub fn declared_steps(&self) -> Vec<StepName> {
        declared_steps(self.spec())
    }

    /// Every run, newest first.
    pub fn runs(&self) -> Result<Vec<Run>> {
        self.runs_matching(&RunFilter::default())
    }

    /// The runs with the filter's status and tag, newest first, at most `limit`.
    /// [`Flow::runs_iter`] reads the same a page at a time.
    pub fn runs_matching(&self, filter: &RunFilter) -> Result<Vec<Run>> {
        self.runs_iter(filter).collect()
    }

    /// The runs with the filter's status and tag, newest first, at most `limit`, read
    /// lazily a page (500 runs, or `limit` if fewer) at a time, so memory stays bounded
    /// however many runs the flow has. An error (a failed read) is yielded once and ends
    /// the iteration.
    pub fn runs_iter(&self, filter: &RunFilter) -> impl Iterator<Item = Result<Run>> + use<> {
        let flow = self.clone();
        let (status, tag) = (filter.status, filter.tag.clone());
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut left = limit;
        let runs = paged(move |after| {
            let query = RunQuery { status, tag: tag.clone(), after, limit: left.clamp(1, PAGE) };
            let page = flow.runs_page(&query)?;
            // The store filters by lease deadline; a run whose holder on this machine has
            // exited is lost before its deadline, so the status is checked again here.
            let items: Vec<Result<Run>> =
                page.items.into_iter().filter(|r| status.is_none_or(|s| r.status() == s)).map(Ok).collect();
            left = left.saturating_sub(items.len());
            Ok(Page { items, next: page.next.filter(|_| left > 0) })
        });
        runs.take(limit)
    }

    /// One page of runs, newest first; pass `next` back as `query.after` for the next.
    pub fn runs_page(&self, query: &RunQuery) -> Result<Page<Run>> {
        let records = &self.client.store().records;
        let page = rt::call(|| format!("cannot list runs of `{}`", self.name), records.list_runs(&self.name, query))?;
        Ok(Page { items: page.items.into_iter().map(|r| Run::new(self.client.clone(), r)).collect(), next: page.next })
    }

    /// The run with this id, or the newest run for `latest`.
    pub fn run(&self, id: &str) -> Result<Run> {
        self.run_ref(id.parse::<RunRef>()?)
    }

    /// The run with this id; an unknown id lists the latest runs.
    pub fn run_by_id(&self, id: RunId) -> Result<Run> {
        let records = &self.client.store().records;
        let record = rt::call(|| format!("cannot read run {}/{id}", self.name), records.get_run(&self.name, id))?;
        match record {
            Some(r) => Ok(Run::new(self.client.clone(), r)),
            None => {
                Err(Error::UnknownRun { flow: self.name.to_string(), run: id.to_string(), latest: self.latest_ids() })
            }
        }
    }

    pub(crate) fn run_ref(&self, run: RunRef) -> Result<Run> {
        match run {
            RunRef::Latest => self.latest_run(),
            RunRef::Id(id) => self.run_by_id(id),
        }
    }

    /// The newest run, whatever its status.
    pub fn latest_run(&self) -> Result<Run> {
        self.first_matching(None)?.ok_or_else(|| Error::NoRuns { flow: self.name.to_string() })
    }

    /// The newest run that succeeded.
    pub fn latest_successful_run(&self) -> Result<Run> {
        self.first_matching(Some(RunStatus::Succeeded))?.ok_or_else(|| Error::NoRunWithStatus {
            flow: self.name.to_string(),
            status: RunStatus::Succeeded,
            latest: self.latest_ids(),
        })
    }

    fn first_matching(&self, status: Option<RunStatus>) -> Result<Option<Run>> {
        let query = RunQuery { status, limit: 1, ..RunQuery::default() };
        Ok(self.runs_page(&query)?.items.into_iter().next())
    }

    /// The newest few runs as `id (status)`, for error messages; empty if they cannot be read.
    pub(crate) fn latest_ids(&self) -> Vec<String> {
        let query = RunQuery { limit: LATEST_SHOWN, ..RunQuery::default() };
        self.runs_page(&query)
            .map(|p| p.items.iter().map(|r| format!("{} ({})", r.id(), r.status())).collect())
            .unwrap_or_default()
    }
}

/// Step names from a spec's JSON, without requiring the whole spec to parse.
pub(crate) fn declared_steps(spec: Option<&serde_json::Value>) -> Vec<StepName> {
    spec.and_then(|s| s.get("steps"))
        .and_then(|s| s.as_array())
        .map(|steps| {
            steps.iter().filter_map(|s| s.get("name")?.as_str()).filter_map(|n| StepName::new(n).ok()).collect()
        })
        .unwrap_or_default()
}
