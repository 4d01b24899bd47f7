//! The JSON API under `/api/v1`: the shapes `braid --json` prints (see
//! `inspect/json.rs`), paged where lists grow, plus the foreach grid in one compact
//! document. Described by [`super::openapi`]; keep the two in step.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use braid_client::{Client, LaunchQuery, PlanQuery, Run, RunQuery, RunStatus, Step, Tag, Task, TaskId, TaskStatus};
use braid_core::{FlowName, Label, PlanName};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{UiError, UiResult};
use super::server::{GRID_CACHE_MAX, Q, Seg, Shared, blocking};
use crate::inspect::json as shape;
use crate::inspect::plan as plan_view;

/// Runs per page unless `limit` says otherwise, and at most.
pub const RUNS_PAGE: usize = 50;
pub const RUNS_PAGE_MAX: usize = 500;
/// Tasks per page of a step unless `limit` says otherwise, and at most.
pub const TASKS_PAGE: usize = 100;
pub const TASKS_PAGE_MAX: usize = 1000;
/// Log lines per call unless `limit` says otherwise, and at most.
pub const LOG_PAGE: usize = 1000;
pub const LOG_PAGE_MAX: usize = 10_000;
/// Log lines a task document carries.
pub const LOG_TAIL: usize = 200;

/// Filters of the runs list (API and page).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunsQuery {
    pub flow: Option<String>,
    pub status: Option<String>,
    pub tag: Option<String>,
    /// A launch plan's name, as recorded in the run's meta.
    pub plan: Option<String>,
    /// The run's name; a trailing `*` matches a prefix.
    pub name: Option<String>,
    /// Only runs created at or after this time (RFC 3339, or a date `2026-03-02`, UTC).
    pub since: Option<String>,
    /// Only runs created before this time.
    pub until: Option<String>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

fn blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Parses `2026-03-02T09:00:00Z` or `2026-03-02` (UTC midnight).
pub fn parse_time(what: &str, text: &str) -> UiResult<braid_client::Timestamp> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(braid_client::Timestamp::from_jiff(t));
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>()
        && let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(braid_client::Timestamp::from_jiff(z.timestamp()));
    }
    Err(UiError::bad(format!(
        "{what} {:?} is not a time: give RFC 3339 (2026-03-02T09:00:00Z) or a date (2026-03-02)",
        super::view::cut(text, 80)
    )))
}

/// A page of runs across flows, newest first, and the cursor of the next page.
pub fn list_runs(client: &Client, q: &RunsQuery) -> UiResult<(Vec<Run>, Option<String>)> {
    let limit = q.limit.unwrap_or(RUNS_PAGE).clamp(1, RUNS_PAGE_MAX);
    let status = blank(&q.status).map(|s| s.parse::<RunStatus>()).transpose()?;
    let tag = blank(&q.tag).map(Tag::new).transpose()?;
    let since = blank(&q.since).map(|s| parse_time("since", s)).transpose()?;
    let until = blank(&q.until).map(|s| parse_time("until", s)).transpose()?;
    let after = blank(&q.after).map(|a| a.parse::<braid_client::RunId>()).transpose()?;
    let name = blank(&q.name).map(str::to_owned);
    let plan = blank(&q.plan).map(str::to_owned);
    let flows = match blank(&q.flow) {
        Some(f) => vec![client.flow(f)?],
        None => client.flows()?,
    };
    let matches = |r: &Run| {
        let name_ok = match (&name, r.name()) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(want), Some(have)) => match want.strip_suffix('*') {
                Some(prefix) => have.starts_with(prefix),
                None => have == want,
            },
        };
        let plan_ok = plan.as_ref().is_none_or(|p| r.meta().get("plan").and_then(Value::as_str) == Some(p));
        let until_ok = until.is_none_or(|u| r.created_at() < u);
        name_ok && plan_ok && until_ok
    };
    // Up to `limit + 1` matches from each flow, newest first, then merged.
    let mut merged: Vec<Run> = Vec::new();
    for f in flows {
        let mut query =
            RunQuery { status, tag: tag.clone(), after: after.map(|a| a.to_string()), limit: (limit + 1).min(500) };
        let mut found = 0;
        'pages: loop {
            let page = f.runs_page(&query)?;
            for r in page.items {
                if since.is_some_and(|s| r.created_at() < s) {
                    break 'pages;
                }
                if matches(&r) {
                    merged.push(r);
                    found += 1;
                    if found > limit {
                        break 'pages;
                    }
                }
            }
            match page.next {
                Some(n) => query.after = Some(n),
                None => break,
            }
        }
    }
    merged.sort_by_key(|r| std::cmp::Reverse(r.id()));
    let next = (merged.len() > limit).then(|| merged[limit - 1].id().to_string());
    merged.truncate(limit);
    Ok((merged, next))
}

pub async fn flows(State(st): State<Shared>) -> UiResult<Json<Value>> {
    blocking(move || {
        let mut out = Vec::new();
        for f in st.client.flows()? {
            let latest = match f.latest_run() {
                Ok(r) => Some(r),
                Err(braid_client::Error::NoRuns { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            out.push(shape::flow(&f, latest.as_ref()));
        }
        Ok(Json(Value::Array(out)))
    })
    .await
}

pub async fn runs(State(st): State<Shared>, Q(q): Q<RunsQuery>) -> UiResult<Json<Value>> {
    blocking(move || {
        let (runs, next) = list_runs(&st.client, &q)?;
        Ok(Json(json!({"items": runs.iter().map(shape::run).collect::<Vec<_>>(), "next": next})))
    })
    .await
}

pub fn find_run(client: &Client, flow: &str, run: &str) -> UiResult<Run> {
    Ok(client.flow(flow)?.run(run)?)
}

/// A run's steps with their counts. A finished run's come from the cache (they no longer
/// change): summarising a run reads every task row of it, ~0.3 s at 100,000 tasks here.
pub fn steps_of(st: &Shared, r: &Run) -> UiResult<Arc<Vec<Step>>> {
    let key = r.pathspec();
    if r.is_finished()
        && let Ok(cache) = st.steps.lock()
        && let Some(s) = cache.get(&key)
    {
        return Ok(s.clone());
    }
    let steps = Arc::new(r.steps()?);
    if r.is_finished()
        && let Ok(mut cache) = st.steps.lock()
    {
        if cache.len() >= STEPS_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, steps.clone());
    }
    Ok(steps)
}

/// Finished runs whose steps are kept.
const STEPS_CACHE_MAX: usize = 256;

pub fn find_step(st: &Shared, flow: &str, run: &str, step: &str) -> UiResult<Step> {
    let r = find_run(&st.client, flow, run)?;
    let name = braid_client::StepName::new(step)?;
    if let Some(s) = steps_of(st, &r)?.iter().find(|s| *s.name() == name) {
        return Ok(s.clone());
    }
    // Not there: the client's error says whether it is unknown or not reached yet.
    Ok(r.step(step)?)
}

/// Computes the grids of a finished run's wide foreach steps in the background, so the
/// step page a user opens next finds its grid ready.
pub fn prefetch_grids(st: &Shared, r: &Run, steps: &[Step]) {
    if !r.is_finished() {
        return;
    }
    for s in steps.iter().filter(|s| s.task_count() >= PREFETCH_MIN) {
        let key = s.pathspec();
        let Ok(mut busy) = st.prefetching.lock() else { return };
        let cached = st.grids.lock().map(|g| g.contains_key(&key)).unwrap_or(false);
        if cached || !busy.insert(key.clone()) {
            continue;
        }
        drop(busy);
        let (st, s) = (st.clone(), s.clone());
        std::thread::spawn(move || {
            let _ = cached_grid(&st, &s);
            if let Ok(mut busy) = st.prefetching.lock() {
                busy.remove(&key);
            }
        });
    }
}

/// Steps at least this wide get their grid computed ahead.
const PREFETCH_MIN: u64 = 5_000;

pub fn find_task(client: &Client, flow: &str, run: &str, task: &str) -> UiResult<Task> {
    let id = TaskId::parse(task)?;
    Ok(find_run(client, flow, run)?.task(id)?)
}

/// A run with its steps (counts by status), the steps not reached yet and the spec.
pub fn run_doc(st: &Shared, r: &Run) -> UiResult<Value> {
    let steps = steps_of(st, r)?;
    let flow = r.flow().ok();
    let declared = flow.as_ref().map(|f| f.declared_steps()).unwrap_or_default();
    let not_started: Vec<&str> =
        declared.iter().filter(|d| !steps.iter().any(|s| s.name() == *d)).map(|d| d.as_str()).collect();
    Ok(json!({
        "run": shape::run(r),
        "steps": steps.iter().map(shape::step).collect::<Vec<_>>(),
        "not_started": not_started,
        "spec": flow.as_ref().and_then(|f| f.spec().cloned()),
    }))
}

pub async fn run(State(st): State<Shared>, Seg((flow, run)): Seg<(String, String)>) -> UiResult<Json<Value>> {
    blocking(move || Ok(Json(run_doc(&st, &find_run(&st.client, &flow, &run)?)?))).await
}

#[derive(Debug, Default, Deserialize)]
pub struct TasksQuery {
    pub status: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
}

pub fn tasks_page(step: &Step, q: &TasksQuery) -> UiResult<braid_client::Page<Task>> {
    let status = blank(&q.status).map(|s| s.parse::<TaskStatus>()).transpose()?;
    let limit = q.limit.unwrap_or(TASKS_PAGE).clamp(1, TASKS_PAGE_MAX);
    Ok(step.tasks_page(status, blank(&q.after), limit)?)
}

pub async fn step_tasks(
    State(st): State<Shared>,
    Seg((flow, run, step)): Seg<(String, String, String)>,
    Q(q): Q<TasksQuery>,
) -> UiResult<Json<Value>> {
    blocking(move || {
        let s = find_step(&st, &flow, &run, &step)?;
        let page = tasks_page(&s, &q)?;
        Ok(Json(json!({
            "step": shape::step(&s),
            "items": page.items.iter().map(shape::task).collect::<Vec<_>>(),
            "next": page.next,
        })))
    })
    .await
}

/// Every task of a step as one character each: the compact document the foreach grid
/// draws, 100,000 tasks in about 100 KB.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Grid {
    pub step: String,
    pub count: usize,
    /// Status names; `cells[i]` is the digit of task `i`'s status in this list.
    pub legend: Vec<&'static str>,
    pub cells: String,
    /// Foreach nesting depth of the step's tasks (0: not in a foreach).
    pub depth: usize,
    /// `[first task id, first index, length]`: runs of cells whose task ids and
    /// innermost indexes both go up by one, in cell order.
    pub ranges: Vec<[u64; 3]>,
    /// Whether the step has no pending or running task (the grid will not change).
    pub done: bool,
}

/// The legend of every grid: all task statuses, in their declared order.
pub fn legend() -> Vec<&'static str> {
    TaskStatus::ALL.iter().map(|s| s.as_str()).collect()
}

pub fn grid_of(step: &Step) -> UiResult<Grid> {
    let mut states = step.task_states()?;
    states.sort_by(|a, b| a.indexes.cmp(&b.indexes).then(a.task.cmp(&b.task)));
    let all = TaskStatus::ALL;
    let mut cells = String::with_capacity(states.len());
    let mut ranges: Vec<[u64; 3]> = Vec::new();
    let mut depth = 0;
    for s in &states {
        let digit = all.iter().position(|x| *x == s.status).unwrap_or(0);
        cells.push(char::from_digit(u32::try_from(digit).unwrap_or(0), 36).unwrap_or('0'));
        depth = depth.max(s.indexes.len());
        let index = s.indexes.last().copied().unwrap_or(0);
        match ranges.last_mut() {
            Some([id, first, len]) if *id + *len == s.task.0 && *first + *len == index => *len += 1,
            _ => ranges.push([s.task.0, index, 1]),
        }
    }
    Ok(Grid {
        step: step.name().to_string(),
        count: states.len(),
        legend: legend(),
        cells,
        depth,
        ranges,
        done: step.is_done(),
    })
}

/// The grid of a step, from the cache when the run and step have ended.
pub fn cached_grid(st: &Shared, step: &Step) -> UiResult<Arc<Grid>> {
    let key = step.pathspec();
    if let Ok(cache) = st.grids.lock()
        && let Some(g) = cache.get(&key)
    {
        return Ok(g.clone());
    }
    let grid = Arc::new(grid_of(step)?);
    let finished = grid.done && step.run().map(|r| r.is_finished()).unwrap_or(false);
    if finished && let Ok(mut cache) = st.grids.lock() {
        if cache.len() >= GRID_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, grid.clone());
    }
    Ok(grid)
}

pub async fn grid(
    State(st): State<Shared>,
    Seg((flow, run, step)): Seg<(String, String, String)>,
) -> UiResult<Response> {
    blocking(move || {
        let s = find_step(&st, &flow, &run, &step)?;
        let g = cached_grid(&st, &s)?;
        Ok(Json(&*g).into_response())
    })
    .await
}

/// A task with its attempts, artifacts, events and the tail of its log.
pub fn task_doc(t: &Task) -> UiResult<Value> {
    let attempts = t.attempts()?;
    let artifacts = t.artifacts()?;
    let tail = t.log_tail(LOG_TAIL)?;
    Ok(json!({
        "task": shape::task(t),
        "attempts": attempts.iter().map(shape::attempt).collect::<Vec<_>>(),
        "artifacts": artifacts.iter().map(shape::artifact).collect::<Vec<_>>(),
        "events": t.events().iter().map(shape::event).collect::<Vec<_>>(),
        "log_tail": tail.iter().map(shape::log).collect::<Vec<_>>(),
    }))
}

pub async fn task(
    State(st): State<Shared>,
    Seg((flow, run, task)): Seg<(String, String, String)>,
) -> UiResult<Json<Value>> {
    blocking(move || Ok(Json(task_doc(&find_task(&st.client, &flow, &run, &task)?)?))).await
}

pub fn parse_index(index: &str) -> UiResult<u64> {
    index.parse::<u64>().map_err(|_| {
        UiError::bad(format!("foreach index {:?} is not a number: give 0, 1, 2, …", super::view::cut(index, 40)))
    })
}

pub async fn task_by_index(
    State(st): State<Shared>,
    Seg((flow, run, step, index)): Seg<(String, String, String, String)>,
) -> UiResult<Json<Value>> {
    blocking(move || {
        let index = parse_index(&index)?;
        let t = find_step(&st, &flow, &run, &step)?.task_by_index(index)?;
        Ok(Json(task_doc(&t)?))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    /// Lines with `seq` above this (0: from the first).
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

pub async fn logs(
    State(st): State<Shared>,
    Seg((flow, run, task)): Seg<(String, String, String)>,
    Q(q): Q<LogsQuery>,
) -> UiResult<Json<Value>> {
    blocking(move || {
        let t = find_task(&st.client, &flow, &run, &task)?;
        let after = q.after.unwrap_or(0);
        let lines = t.logs_after(after, q.limit.unwrap_or(LOG_PAGE).clamp(1, LOG_PAGE_MAX))?;
        let last = lines.last().map_or(after, |l| l.seq);
        Ok(Json(json!({"items": lines.iter().map(shape::log).collect::<Vec<_>>(), "last_seq": last})))
    })
    .await
}

pub async fn artifact(
    State(st): State<Shared>,
    Seg((flow, run, task, name)): Seg<(String, String, String, String)>,
) -> UiResult<Json<Value>> {
    blocking(move || {
        let a = find_task(&st.client, &flow, &run, &task)?.artifact(&name)?;
        Ok(Json(shape::artifact(&a)))
    })
    .await
}

/// The stored envelope bytes (what `braid artifact --raw` prints), as a download.
pub async fn artifact_value(
    State(st): State<Shared>,
    Seg((flow, run, task, name)): Seg<(String, String, String, String)>,
) -> UiResult<Response> {
    blocking(move || {
        let a = find_task(&st.client, &flow, &run, &task)?.artifact(&name)?;
        let bytes = a.bytes()?;
        // The name is validated (ASCII letters, digits, `_`, `-`, `.`), so it is safe here.
        let disposition = format!("attachment; filename=\"{}-{}.braf\"", a.task().task, a.name());
        Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (header::CONTENT_DISPOSITION, disposition),
                (header::HeaderName::from_static("x-braid-type"), a.type_name().to_owned()),
            ],
            bytes,
        )
            .into_response())
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
pub struct PlansQuery {
    pub flow: Option<String>,
    /// `key=value`; only plans carrying it.
    pub label: Option<String>,
}

pub fn list_plans(client: &Client, q: &PlansQuery) -> UiResult<Vec<braid_client::PlanRecord>> {
    let flows = blank(&q.flow).map(FlowName::new).transpose()?.into_iter().collect();
    let labels = blank(&q.label).map(|l| l.parse::<Label>()).transpose()?.into_iter().collect();
    Ok(client.plans(&PlanQuery { flows, labels, ..Default::default() })?)
}

pub async fn plans(State(st): State<Shared>, Q(q): Q<PlansQuery>) -> UiResult<Json<Value>> {
    blocking(move || {
        let plans = list_plans(&st.client, &q)?;
        let v: Vec<Value> = plans.iter().map(|r| plan_view::plan_json(r, plan_view::parse(r).as_ref())).collect();
        Ok(Json(Value::Array(v)))
    })
    .await
}

/// Next ticks shown for a plan.
pub const NEXT_TICKS: usize = 5;

pub fn plan_doc(client: &Client, name: &str) -> UiResult<Value> {
    let rec = client.plan(name)?;
    let lp = plan_view::parse(&rec);
    let tz = plan_view::zone(lp.as_ref());
    let versions = client.plan_versions(name)?;
    let from = jiff::Timestamp::now().max(rec.cursor.map_or(jiff::Timestamp::UNIX_EPOCH, |c| c.to_jiff()));
    let upcoming: Vec<jiff::Timestamp> =
        lp.as_ref().and_then(|p| p.schedule()).map(|s| s.upcoming(from, NEXT_TICKS)).unwrap_or_default();
    let mut v = plan_view::plan_json(&rec, lp.as_ref());
    if let Value::Object(m) = &mut v {
        plan_view::insert_versions_and_ticks(m, &versions, &upcoming, &tz);
        m.insert("timezone".into(), json!(tz.iana_name().unwrap_or("UTC")));
        let paused: std::collections::HashSet<String> =
            client.set_states(Some(name), true)?.into_iter().map(|s| s.set_key).collect();
        let sets: Vec<Value> = match &lp {
            Some(p) => plan_view::sets_of(client, p)?
                .iter()
                .map(|s| {
                    json!({"key": s.key, "values": s.values, "run_name": s.run_name(p.name()), "paused": paused.contains(&s.key)})
                })
                .collect(),
            None => Vec::new(),
        };
        m.insert("parameter_set_details".into(), json!(sets));
        let failed: Vec<Value> =
            client.tick_failures(Some(name), 20)?.iter().map(|f| plan_view::tick_failure_json(f, &tz)).collect();
        m.insert("failed_ticks".into(), json!(failed));
    }
    Ok(v)
}

pub async fn plan(State(st): State<Shared>, Seg(name): Seg<String>) -> UiResult<Json<Value>> {
    blocking(move || Ok(Json(plan_doc(&st.client, &name)?))).await
}

#[derive(Debug, Default, Deserialize)]
pub struct MatrixQuery {
    /// How many of the latest ticks (columns); 24 unless given, at most 500.
    pub ticks: Option<usize>,
}

pub const MATRIX_TICKS: usize = 24;

/// One row per parameter set, one column per tick (the latest `ticks`, oldest first),
/// each cell the launch of that set at that tick and its run's status now.
pub fn matrix_doc(client: &Client, name: &str, ticks: usize) -> UiResult<Value> {
    let rec = client.plan(name)?;
    let lp = plan_view::parse(&rec);
    let tz = plan_view::zone(lp.as_ref());
    let plan_name = PlanName::new(name)?;
    let sets: Vec<(String, String, BTreeMap<String, Value>)> = match &lp {
        Some(p) => plan_view::sets_of(client, p)?
            .into_iter()
            .map(|s| (s.key.clone(), s.run_name(p.name()), s.values))
            .collect(),
        None => Vec::new(),
    };
    let per_tick = sets.len().max(1);
    let ticks = ticks.clamp(1, 500);
    // Newest first; enough launches for `ticks` columns of every set.
    let launches = client.launches(&LaunchQuery {
        plan: Some(plan_name),
        limit: (ticks * per_tick * 2).min(100_000),
        ..Default::default()
    })?;
    let mut cols: Vec<braid_client::Timestamp> = launches.iter().map(|l| l.tick).collect();
    cols.sort_unstable();
    cols.dedup();
    let cut = cols.len().saturating_sub(ticks);
    let cols = cols.split_off(cut);
    let mut cells: BTreeMap<(String, braid_client::Timestamp), &braid_client::LaunchRecord> = BTreeMap::new();
    for l in &launches {
        // Newest first: the first launch seen for a (set, tick) is the latest request.
        cells.entry((l.set_key.clone(), l.tick)).or_insert(l);
    }
    let rows: Vec<Value> = sets
        .iter()
        .map(|(key, run_name, values)| {
            let row: Vec<Value> = cols
                .iter()
                .map(|t| match cells.get(&(key.clone(), *t)) {
                    None => Value::Null,
                    Some(l) => json!({
                        "state": l.state.as_str(),
                        "status": plan_view::run_status(client, l),
                        "kind": l.kind.as_str(),
                        "run": l.run.map(|r| r.to_string()),
                        "flow": l.flow.as_str(),
                        "note": l.note,
                    }),
                })
                .collect();
            json!({"key": key, "run_name": run_name, "values": values, "cells": row})
        })
        .collect();
    Ok(json!({
        "plan": rec.name.as_str(),
        "flow": rec.flow.as_str(),
        "timezone": tz.iana_name().unwrap_or("UTC"),
        "ticks": cols.iter().map(|t| json!({"tick": t.to_string(), "local": plan_view::local(t.to_jiff(), &tz)})).collect::<Vec<_>>(),
        "rows": rows,
    }))
}

pub async fn matrix(State(st): State<Shared>, Seg(name): Seg<String>, Q(q): Q<MatrixQuery>) -> UiResult<Json<Value>> {
    blocking(move || Ok(Json(matrix_doc(&st.client, &name, q.ticks.unwrap_or(MATRIX_TICKS))?))).await
}
