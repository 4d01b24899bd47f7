//! `braid flows`, `braid runs` and `braid show`.

use braid_client::{Client, Flow, Object, Pathspec, Run, RunFilter, RunStatus, Step, Tag, Task, TaskStatus};
use comfy_table::{Cell, Color, ColumnConstraint, Width};
use serde_json::{Value, json};

use super::error::{Error, Result};
use super::json;
use super::output::{self, Out, cut, duration_opt, size, time, time_opt};

/// Runs listed under a flow in `braid show FLOW`.
const FLOW_RUNS_SHOWN: usize = 10;

pub fn flows(client: &Client, out: &Out) -> Result<()> {
    let flows = client.flows()?;
    let mut rows = Vec::with_capacity(flows.len());
    for f in &flows {
        let latest = match f.latest_run() {
            Ok(r) => Some(r),
            Err(braid_client::Error::NoRuns { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        rows.push((f, latest));
    }
    if out.json {
        let v: Vec<Value> = rows.iter().map(|(f, r)| json::flow(f, r.as_ref())).collect();
        return out.json(&Value::Array(v));
    }
    if rows.is_empty() {
        return out.line(&format!("no flows in the store at {}", client.location()));
    }
    let mut t = out.table(&["FLOW", "STEPS", "LATEST RUN", "STATUS", "CREATED", "SPEC UPDATED"]);
    for (f, r) in &rows {
        t.add_row(vec![
            Cell::new(f.name()),
            Cell::new(f.declared_steps().len()),
            Cell::new(r.as_ref().map_or("-".to_owned(), |r| r.id().to_string())),
            r.as_ref().map_or(Cell::new("-"), |r| out.run_status(r.status())),
            Cell::new(r.as_ref().map_or("-".to_owned(), |r| time(r.created_at()))),
            Cell::new(time_opt(f.updated_at())),
        ]);
    }
    out.table_out(&t)
}

/// Filters on what launched a run: its readable name and its launch plan.
#[derive(Debug, Clone, Default)]
pub struct NameFilter {
    /// Exact, or a prefix when it ends with `*`.
    pub name: Option<String>,
    pub plan: Option<String>,
    /// The user who launched the run (its meta's `user`).
    pub user: Option<String>,
}

impl NameFilter {
    fn is_set(&self) -> bool {
        self.name.is_some() || self.plan.is_some() || self.user.is_some()
    }

    fn matches(&self, r: &Run) -> bool {
        let name_ok = match (&self.name, r.name()) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(want), Some(have)) => match want.strip_suffix('*') {
                Some(prefix) => have.starts_with(prefix),
                None => have == want,
            },
        };
        let plan_ok = self.plan.as_ref().is_none_or(|p| r.meta().get("plan").and_then(Value::as_str) == Some(p));
        let user_ok = self.user.as_ref().is_none_or(|u| r.meta().get("user").and_then(Value::as_str) == Some(u));
        name_ok && plan_ok && user_ok
    }

    fn describe(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if let Some(n) = &self.name {
            parts.push(format!("name {n}"));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user {u}"));
        }
        if let Some(p) = &self.plan {
            parts.push(format!("plan {p}"));
        }
        parts
    }
}

pub fn runs(
    client: &Client,
    out: &Out,
    flow: Option<&str>,
    status: Option<RunStatus>,
    tag: Option<Tag>,
    names: &NameFilter,
    limit: usize,
) -> Result<()> {
    let limit = (limit > 0).then_some(limit);
    // Names live in the run records: with a name filter, read every run and keep the matches.
    let filter = RunFilter { status, tag, limit: if names.is_set() { None } else { limit } };
    let all_flows = flow.is_none();
    let streams: Vec<_> = match flow {
        Some(name) => vec![client.flow(name)?.runs_iter(&filter)],
        None => client.flows()?.iter().map(|f| f.runs_iter(&filter)).collect(),
    };
    let matching = newest_first(streams)
        .filter(|r| r.as_ref().map_or(true, |r| names.matches(r)))
        .take(limit.unwrap_or(usize::MAX))
        .map(|r| r.map_err(Error::from));
    if out.json {
        return out.json_stream().array(matching.map(|r| r.map(|r| json::run(&r))));
    }
    let mut runs = matching.collect::<Result<Vec<Run>>>()?;
    if runs.is_empty() {
        let what = flow.map_or("no runs".to_owned(), |f| format!("no runs of `{f}`"));
        let mut parts = Vec::new();
        if let Some(s) = &filter.status {
            parts.push(format!("status {s}"));
        }
        if let Some(t) = &filter.tag {
            parts.push(format!("tag {t}"));
        }
        parts.extend(names.describe());
        let filters = if parts.is_empty() { String::new() } else { format!(" with {}", parts.join(" and ")) };
        return out.line(&format!("{what}{filters}"));
    }
    let mut header = vec!["RUN"];
    if all_flows {
        header.insert(0, "FLOW");
    }
    header.extend(["STATUS", "CREATED", "DURATION", "TAGS", "PARAMS", "NAME"]);
    let mut t = out.table(&header);
    for r in runs.drain(..) {
        let mut row = Vec::new();
        if all_flows {
            row.push(Cell::new(r.flow_name()));
        }
        row.extend([
            Cell::new(r.id()),
            out.run_status(r.status()),
            Cell::new(time(r.created_at())),
            Cell::new(duration_opt(r.duration())),
            Cell::new(output::tags_text(r.tags())),
            Cell::new(params_text(&r)),
            Cell::new(r.name().unwrap_or("")),
        ]);
        t.add_row(row);
    }
    out.table_out(&t)
}

/// The runs of several flows' streams (each newest first) merged newest first: run ids
/// sort by creation time. A stream's error comes as soon as it is seen.
fn newest_first<I>(streams: Vec<I>) -> impl Iterator<Item = braid_client::Result<Run>>
where
    I: Iterator<Item = braid_client::Result<Run>>,
{
    let mut streams: Vec<std::iter::Peekable<I>> = streams.into_iter().map(Iterator::peekable).collect();
    std::iter::from_fn(move || {
        let mut pick: Option<(usize, braid_client::RunId)> = None;
        for (i, s) in streams.iter_mut().enumerate() {
            match s.peek() {
                None => {}
                Some(Err(_)) => return s.next(),
                Some(Ok(r)) if pick.is_none_or(|(_, id)| r.id() > id) => pick = Some((i, r.id())),
                Some(Ok(_)) => {}
            }
        }
        let (i, _) = pick?;
        streams[i].next()
    })
}

fn params_text(r: &Run) -> String {
    let text = r.params().iter().map(|(k, v)| format!("{k}={}", compact(v))).collect::<Vec<_>>().join(" ");
    cut(&text, 60)
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

pub fn show(
    client: &Client,
    out: &Out,
    pathspec: &Pathspec,
    index: Option<u64>,
    lines: usize,
    all: bool,
) -> Result<()> {
    match client.resolve(pathspec)? {
        Object::Step(s) => match index {
            Some(i) => show_task(out, &s.task_by_index(i)?, lines),
            None => show_step(out, &s, all),
        },
        _ if index.is_some() => Err(index_needs_step(pathspec)),
        _ if all => Err(Error::Usage(format!(
            "--all lists every task of a step: give a step pathspec (flow/run/step), not {pathspec}"
        ))),
        Object::Flow(f) => show_flow(out, &f),
        Object::Run(r) => show_run(out, &r),
        Object::Task(t) => show_task(out, &t, lines),
    }
}

pub fn index_needs_step(pathspec: &Pathspec) -> Error {
    Error::Usage(format!("--index picks a task of a step: give a step pathspec (flow/run/step), not {pathspec}"))
}

/// The task a pathspec names: a task, or a step with `--index`, or a step with one task.
pub fn resolve_task(client: &Client, pathspec: &Pathspec, index: Option<u64>) -> Result<Task> {
    match client.resolve(pathspec)? {
        Object::Task(t) if index.is_none() => Ok(t),
        Object::Step(s) => Ok(match index {
            Some(i) => s.task_by_index(i)?,
            None => s.single_task()?,
        }),
        _ if index.is_some() => Err(index_needs_step(pathspec)),
        other => Ok(other.into_task(&pathspec.to_string())?),
    }
}

fn show_flow(out: &Out, f: &Flow) -> Result<()> {
    let runs = f.runs_matching(&RunFilter::new().limit(FLOW_RUNS_SHOWN))?;
    if out.json {
        let mut v = json::flow(f, runs.first());
        v["runs"] = Value::Array(runs.iter().map(json::run).collect());
        return out.json(&v);
    }
    let params = f
        .spec()
        .and_then(|s| s.get("params"))
        .and_then(|p| p.as_array())
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    let name = p.get("name")?.as_str()?;
                    let ty = p.get("type").and_then(|t| t.as_str()).unwrap_or("?");
                    Some(match p.get("default") {
                        Some(d) => format!("{name}: {ty} = {}", compact(d)),
                        None => format!("{name}: {ty} (required)"),
                    })
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let steps = f.declared_steps().iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" → ");
    out.fields(&[
        ("flow", f.name().to_string()),
        ("steps", if steps.is_empty() { "- (no spec stored)".into() } else { steps }),
        ("params", if params.is_empty() { "-".into() } else { params }),
        ("spec updated", time_opt(f.updated_at())),
    ])?;
    if runs.is_empty() {
        return out.line("\nno runs yet");
    }
    out.heading(&format!("latest runs (`braid runs {}` for more)", f.name()))?;
    let mut t = out.table(&["RUN", "STATUS", "CREATED", "DURATION", "TAGS"]);
    for r in &runs {
        t.add_row(vec![
            Cell::new(r.id()),
            out.run_status(r.status()),
            Cell::new(time(r.created_at())),
            Cell::new(duration_opt(r.duration())),
            Cell::new(output::tags_text(r.tags())),
        ]);
    }
    out.table_out(&t)
}

pub fn show_run(out: &Out, r: &Run) -> Result<()> {
    let steps = r.steps()?;
    // Steps the flow declares that the run has not reached yet.
    let declared = r.flow().map(|f| f.declared_steps()).unwrap_or_default();
    let not_started: Vec<&str> =
        declared.iter().filter(|d| !steps.iter().any(|s| s.name() == *d)).map(|d| d.as_str()).collect();
    // Tasks that reported progress, from steps small enough to list (a wide foreach is
    // shown by `braid show RUN/STEP`).
    let mut with_progress = Vec::new();
    for s in steps.iter().filter(|s| s.task_count() <= PROGRESS_LIST_MAX) {
        with_progress.extend(s.tasks()?.into_iter().filter(|t| t.progress().is_some()));
    }
    if out.json {
        let mut v = json::run(r);
        v["steps"] = Value::Array(steps.iter().map(json::step).collect());
        v["not_started"] = json!(not_started);
        v["progress"] = Value::Array(with_progress.iter().map(json::task).collect());
        return out.json(&v);
    }
    let mut fields = vec![
        ("run", r.pathspec()),
        ("status", out.status_word(r.status().as_str(), output::run_console_color(r.status()))),
    ];
    if let Some(name) = r.name() {
        fields.push(("name", name.to_owned()));
    }
    fields.push(("created", time(r.created_at())));
    fields.push(("started", time_opt(r.started_at())));
    fields.push(("ended", time_opt(r.ended_at())));
    fields.push(("duration", duration_opt(r.duration())));
    if !r.params().is_empty() {
        fields.push(("params", params_text(r)));
    }
    if !r.tags().is_empty() {
        fields.push(("tags", output::tags_text(r.tags())));
    }
    if let Some(o) = r.origin_run() {
        fields.push(("resumed from", format!("{}/{o}", r.flow_name())));
    }
    if let Some(user) = r.meta().get("user").and_then(Value::as_str) {
        let host = r.meta().get("host").and_then(Value::as_str).map(|h| format!(" on {h}")).unwrap_or_default();
        let by = r.meta().get("launched_by").and_then(Value::as_str).map(|s| format!(" ({s})")).unwrap_or_default();
        fields.push(("launched by", format!("{user}{host}{by}")));
    }
    if let Some(why) = r.lost_reason() {
        fields.push(("lost", out.status_word(&why, Some(console::Color::Red))));
    }
    if let Some(e) = r.error() {
        fields.push(("error", out.status_word(e, Some(console::Color::Red))));
    }
    out.fields(&fields)?;
    if steps.is_empty() {
        return out.line("\nno tasks yet");
    }
    out.heading("steps")?;
    let mut t = out.table(&["STEP", "TASKS", "SUCCEEDED", "RUNNING", "PENDING", "FAILED", "STARTED", "DURATION"]);
    for s in &steps {
        let failed = s.count(TaskStatus::Failed) + s.count(TaskStatus::Lost) + s.count(TaskStatus::Cancelled);
        t.add_row(vec![
            Cell::new(s.name()),
            Cell::new(s.task_count()),
            out.count(s.count(TaskStatus::Succeeded), Color::Green),
            out.count(s.count(TaskStatus::Running), Color::Cyan),
            Cell::new(s.count(TaskStatus::Pending)),
            out.count(failed, Color::Red),
            Cell::new(time_opt(s.first_started())),
            Cell::new(duration_opt(s.duration())),
        ]);
    }
    for name in &not_started {
        let mut row = vec![Cell::new(name), Cell::new(0)];
        let why = if r.is_finished() { "never ran" } else { "not started" };
        row.extend((0..6).map(|i| Cell::new(if i == 5 { why } else { "-" })));
        t.add_row(row);
    }
    out.table_out(&t)?;
    if !with_progress.is_empty() {
        out.heading("progress")?;
        let mut pt = out.table(&["TASK", "STATUS", "PROGRESS", "AGE", "ETA", "WARNINGS"]);
        for task in &with_progress {
            pt.add_row(vec![
                Cell::new(format!("{}/{}", task.step_name(), task.id())),
                Cell::new(task.status().as_str()),
                Cell::new(progress_text(task).unwrap_or_default()),
                Cell::new(duration_opt(task.progress_age())),
                Cell::new(task.eta().map(|e| duration_opt(Some(e))).unwrap_or_else(|| "-".into())),
                Cell::new(task.warnings().last().map(|w| w.message.clone()).unwrap_or_default()),
            ]);
        }
        out.table_out(&pt)?;
    }
    Ok(())
}

/// Steps with at most this many tasks list their tasks' progress in `show RUN`.
const PROGRESS_LIST_MAX: u64 = 100;

/// Steps with more tasks than this are summarised by `braid show STEP` (text) unless
/// `--all` is given: counts, the tasks that did not succeed, the first tasks.
pub const STEP_LIST_MAX: u64 = 2_000;
/// Tasks of each status but `succeeded` listed in a step's summary.
const SUMMARY_PER_STATUS: usize = 20;
/// The first tasks listed in a step's summary.
const SUMMARY_FIRST: usize = 20;
/// Statuses a summary lists first, in this order: what a user looks for.
const SUMMARY_STATUSES: [TaskStatus; 5] =
    [TaskStatus::Failed, TaskStatus::Lost, TaskStatus::Running, TaskStatus::Pending, TaskStatus::Cancelled];

/// `show STEP --json`: the step with every task, written as the tasks are read.
fn step_json<W: std::io::Write>(s: &Step, w: output::JsonStream<W>) -> Result<()> {
    let mut head = json::step(s);
    head["flow"] = json!(s.flow_name().as_str());
    head["run"] = json!(s.run_id().to_string());
    let head = match head {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    w.object_with_array(&head, "tasks", s.tasks_iter().map(|t| Ok(json::TaskJson(t?))))
}

fn show_step(out: &Out, s: &Step, all: bool) -> Result<()> {
    if out.json {
        return step_json(s, out.json_stream());
    }
    let counts = s.counts().iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ");
    out.fields(&[
        ("step", s.pathspec()),
        ("tasks", format!("{} ({counts})", s.task_count())),
        ("started", time_opt(s.first_started())),
        ("duration", duration_opt(s.duration())),
    ])?;
    if s.task_count() == 0 {
        return Ok(());
    }
    if all || s.task_count() <= STEP_LIST_MAX {
        out.heading("tasks")?;
        return task_rows(out, s.tasks_iter());
    }
    // Too many to read on a terminal: the tasks that need a look, then the first ones.
    let mut statuses: Vec<TaskStatus> = SUMMARY_STATUSES.into_iter().filter(|st| s.count(*st) > 0).collect();
    // In a lost run, running tasks are counted as lost but stored as running.
    if s.count(TaskStatus::Lost) > 0 && !statuses.contains(&TaskStatus::Running) {
        statuses.push(TaskStatus::Running);
    }
    for st in statuses {
        let page = s.tasks_page(Some(st), None, SUMMARY_PER_STATUS)?;
        if page.items.is_empty() {
            continue;
        }
        let n = page.items.len();
        let counted = s.count(st);
        out.heading(&match page.next {
            None => format!("{n} {st}"),
            Some(_) if counted > n as u64 => format!("the first {n} of {counted} {st}"),
            Some(_) => format!("the first {n} {st}"),
        })?;
        task_rows(out, page.items.into_iter().map(Ok))?;
    }
    out.heading(&format!("the first {SUMMARY_FIRST} of {} tasks", s.task_count()))?;
    task_rows(out, s.tasks_iter().take(SUMMARY_FIRST))?;
    let path = s.pathspec();
    out.line(&format!(
        "\n{} tasks, more than are listed here; to see them all:\n  braid show {path} --all       every task, a row each\n  braid show {path} --json      every task as JSON\n  braid show {path} --index N   the task at foreach index N",
        s.task_count()
    ))
}

/// The TASK … PROGRESS / ERROR table of `tasks`, printed a page at a time: each page
/// is a table whose columns are at least as wide as those of the pages before, under
/// one header.
fn task_rows(out: &Out, tasks: impl Iterator<Item = braid_client::Result<Task>>) -> Result<()> {
    const HEADER: [&str; 7] = ["TASK", "INDEX", "STATUS", "ATTEMPT", "STARTED", "DURATION", "PROGRESS / ERROR"];
    const PAGE: usize = 1_000;
    let mut widths: [usize; 6] = [0; 6];
    let mut page: Vec<[String; 7]> = Vec::with_capacity(PAGE);
    let mut statuses: Vec<TaskStatus> = Vec::with_capacity(PAGE);
    let mut first = true;
    let mut tasks = tasks.peekable();
    while tasks.peek().is_some() {
        page.clear();
        statuses.clear();
        for task in tasks.by_ref().take(PAGE) {
            let task = task?;
            page.push([
                task.id().to_string(),
                index_text(&task),
                task.status().as_str().to_owned(),
                task.attempt().to_string(),
                time_opt(task.started_at()),
                duration_opt(task.duration()),
                progress_or_error(&task),
            ]);
            statuses.push(task.status());
        }
        for row in &page {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        if first {
            for (w, h) in widths.iter_mut().zip(HEADER) {
                *w = (*w).max(h.len());
            }
        }
        let mut t = if first { out.table(&HEADER) } else { out.headless_table() };
        for (row, status) in page.iter_mut().zip(&statuses) {
            let mut cells: Vec<Cell> = row.iter_mut().map(|c| Cell::new(std::mem::take(c))).collect();
            cells[2] = out.task_status(*status);
            t.add_row(cells);
        }
        for (i, col) in t.column_iter_mut().enumerate() {
            col.set_padding((0, 2));
            if let Some(w) = widths.get(i) {
                let w = u16::try_from(w + 2).unwrap_or(u16::MAX);
                col.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(w)));
            }
        }
        out.table_out(&t)?;
        first = false;
    }
    Ok(())
}

/// The innermost foreach index, or the whole stack (`0.3`) when foreach steps nest.
pub fn index_text(t: &Task) -> String {
    match t.foreach_stack() {
        [] => "-".to_owned(),
        [one] => one.index.to_string(),
        many => many.iter().map(|f| f.index.to_string()).collect::<Vec<_>>().join("."),
    }
}

/// `45% 4500/10000 rows, 120.5 rows/s copying (ETA 46s)`: percent, units with their rate
/// when reported, message, ETA.
pub fn progress_text(t: &Task) -> Option<String> {
    let p = t.progress()?;
    let mut s = format!("{:.0}%", p.percent);
    if let Some(u) = &p.units {
        s.push_str(&format!(" {}/{} {}", u.done, u.total, u.unit));
        if let Some(rate) = u.rate {
            s.push_str(&format!(", {} {}/s", rate_text(rate), u.unit));
        }
    }
    if !p.message.is_empty() {
        s.push(' ');
        s.push_str(&p.message);
    }
    if let Some(eta) = t.eta() {
        s.push_str(&format!(" (ETA {})", output::duration(eta)));
    }
    Some(s)
}

/// A rate with three significant digits or so: `0.25`, `12.5`, `1234`.
fn rate_text(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else if rate >= 1.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.2}")
    }
}

/// The details of a task's latest progress report, as compact JSON.
pub fn details_text(t: &Task) -> Option<String> {
    t.progress()?.details.as_ref().map(|d| d.to_string())
}

fn progress_or_error(t: &Task) -> String {
    match t.error() {
        Some(e) => cut(&format!("{}: {}", e.kind, e.message), 80),
        None => progress_text(t).map(|p| cut(&p, 80)).unwrap_or_default(),
    }
}

/// `flow/run/step/id` of task `id` of `t`'s run (its step read from the store).
fn task_pathspec(t: &Task, id: braid_client::TaskId) -> String {
    match t.run().and_then(|r| r.task(id)) {
        Ok(o) => o.pathspec(),
        Err(_) => format!("{}/{}/?/{id}", t.flow_name(), t.run_id()),
    }
}

/// Pathspecs on one line: the first 10, then how many more.
fn list_text(items: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = items[..items.len().min(SHOWN)].join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(", … ({} in all; --json lists every one)", items.len()));
    }
    s
}

fn show_task(out: &Out, t: &Task, lines: usize) -> Result<()> {
    let attempts = t.attempts()?;
    let artifacts = t.artifacts()?;
    let input_only = if t.is_join() { t.input_only_names()? } else { Vec::new() };
    let logs = t.log_tail(lines)?;
    // Where it sits in the graph: the task(s) it came from, and those it started.
    let children = t.children()?;
    let parents: Vec<String> = match t.parent_id() {
        Some(p) => vec![task_pathspec(t, p)],
        None => t.input_ids().iter().map(|i| task_pathspec(t, *i)).collect(),
    };
    if out.json {
        let mut v = json::task(t);
        v["parents"] = json!(parents);
        v["children"] = Value::Array(
            children
                .iter()
                .map(|c| json!({"pathspec": c.pathspec(), "step": c.step_name().as_str(), "id": c.id().0}))
                .collect(),
        );
        v["attempts"] = Value::Array(attempts.iter().map(json::attempt).collect());
        v["artifacts"] = Value::Array(artifacts.iter().map(json::artifact).collect());
        v["input_only"] = json!(input_only.iter().map(|n| n.as_str()).collect::<Vec<_>>());
        v["logs"] = Value::Array(logs.iter().map(json::log).collect());
        v["events"] = Value::Array(t.events().iter().map(json::event).collect());
        return out.json(&v);
    }
    let mut fields = vec![
        ("task", t.pathspec()),
        (
            "status",
            format!(
                "{} (attempt {})",
                out.status_word(t.status().as_str(), output::task_console_color(t.status())),
                t.attempt()
            ),
        ),
    ];
    if let Some(f) = t.foreach_stack().last() {
        fields.push((
            "index",
            format!(
                "{} of {} (foreach over `{}` of {}/{}){}",
                f.index,
                f.len,
                f.over,
                f.step,
                f.task,
                if t.foreach_stack().len() > 1 { format!(", stack {}", index_text(t)) } else { String::new() }
            ),
        ));
    }
    if t.iteration() > 0 {
        fields.push(("iteration", t.iteration().to_string()));
    }
    fields.push(("started", time_opt(t.started_at())));
    fields.push(("ended", time_opt(t.ended_at())));
    fields.push(("duration", duration_opt(t.duration())));
    if let Some(p) = progress_text(t) {
        let age = t.progress_age().map(|a| format!(", {} ago", duration_opt(Some(a)))).unwrap_or_default();
        fields.push(("progress", format!("{p} (reported {}{age})", time_opt(t.progress_at()))));
    }
    if let Some(d) = details_text(t) {
        fields.push(("details", d));
    }
    if let Some(eta) = t.eta() {
        fields.push(("eta", format!("{} left at the rate so far", duration_opt(Some(eta)))));
    }
    for w in t.warnings() {
        fields.push((
            "warning",
            out.status_word(&format!("attempt {}: {} ({})", w.attempt, w.message, w.at), Some(console::Color::Yellow)),
        ));
    }
    if let Some(d) = &t.record().dispatch {
        fields.push(("worker", format!("{} (claim {})", d.worker, d.token)));
        if d.lost > 0 {
            fields.push((
                "redispatched",
                out.status_word(
                    &format!(
                        "{} time(s): the worker holding attempt {} stopped heartbeating and the queue gave it to \
                         another (lost dispatches are not retries: {} retries of the step's own were used)",
                        d.lost,
                        t.attempt(),
                        t.attempt().0.saturating_sub(1)
                    ),
                    Some(console::Color::Yellow),
                ),
            ));
        }
    }
    if let Some(why) = t.lost_reason() {
        fields.push(("lost", out.status_word(&why, Some(console::Color::Red))));
    }
    if let Some(e) = t.error() {
        fields.push(("error", out.status_word(&format!("{}: {}", e.kind, e.message), Some(console::Color::Red))));
    }
    if let Some(c) = t.caught() {
        let text = format!(
            "attempt {} failed ({}: {}); the step catches failures, so the task succeeded with it in `{}`",
            c.attempt, c.error.kind, c.error.message, c.artifact
        );
        fields.push(("caught", out.status_word(&text, Some(console::Color::Yellow))));
    }
    if let Some((run, task)) = t.origin() {
        fields.push(("reused from", format!("{}/{run}/{}/{task}", t.flow_name(), t.step_name())));
    }
    if !parents.is_empty() {
        fields.push((if t.is_join() { "inputs" } else { "parent" }, list_text(&parents)));
    }
    let child_specs: Vec<String> = children.iter().map(|c| c.pathspec()).collect();
    fields.push(("children", if child_specs.is_empty() { "none".to_owned() } else { list_text(&child_specs) }));
    out.fields(&fields)?;

    if attempts.len() > 1 || attempts.iter().any(|a| a.error.is_some()) {
        out.heading("attempts")?;
        let mut tab = out.table(&["ATTEMPT", "STATUS", "STARTED", "DURATION", "ERROR"]);
        for a in &attempts {
            tab.add_row(vec![
                Cell::new(a.attempt),
                out.task_status(a.status),
                Cell::new(time(a.started_at)),
                Cell::new(duration_opt(a.ended_at.map(|e| e.since(a.started_at)))),
                Cell::new(
                    a.error.as_ref().map(|e| cut(&format!("{}: {}", e.kind, e.message), 100)).unwrap_or_default(),
                ),
            ]);
        }
        out.table_out(&tab)?;
    }

    out.heading("artifacts")?;
    if artifacts.is_empty() {
        out.line("none")?;
    } else {
        let mut tab = out.table(&["NAME", "TYPE", "SIZE", "SET BY", "PREVIEW"]);
        for a in &artifacts {
            let set_by = if a.is_inherited() { format!("task {}", a.set_by()) } else { "this task".to_owned() };
            tab.add_row(vec![
                Cell::new(a.name()),
                Cell::new(short_type(a.type_name())),
                Cell::new(size(a.size())),
                Cell::new(set_by),
                Cell::new(cut(a.preview_text(), 60)),
            ]);
        }
        out.table_out(&tab)?;
    }
    if !input_only.is_empty() {
        let names = input_only.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
        out.line(&format!(
            "only in the inputs (branches): {names} — read them per branch, or all at once with `braid artifact {}/{}/<branch step> NAME`",
            t.flow_name(),
            t.run_id()
        ))?;
    }

    if !logs.is_empty() {
        out.heading(&if logs.len() == 1 {
            "last log line".to_owned()
        } else {
            format!("last {} log lines", logs.len())
        })?;
        let text: String = logs.iter().map(|l| format!("{}\n", log_line(l, attempts.len() > 1))).collect();
        out.print(&text)?;
    }
    Ok(())
}

/// A log line for people: local time, the attempt when there were several, the line.
pub fn log_line(l: &braid_client::LogLine, with_attempt: bool) -> String {
    let at = output::time(l.at);
    let level = if l.level == "info" { String::new() } else { format!("{} ", l.level.to_uppercase()) };
    if with_attempt { format!("{at} [{}] {level}{}", l.attempt, l.line) } else { format!("{at} {level}{}", l.line) }
}

/// `alloc::vec::Vec<u64>` → `Vec<u64>`: module paths off, for a table.
pub fn short_type(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(&word));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(&word));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use braid_client::fixtures::{self, RunWriter, TaskSpec};
    use braid_client::{RunStatus, Store};

    use super::*;
    use crate::inspect::output::JsonStream;

    /// What `show STEP --json` printed before it streamed: the whole document built as
    /// one value, then pretty-printed.
    fn whole_step_json(s: &Step) -> String {
        let tasks = s.tasks().unwrap();
        let mut v = json::step(s);
        v["flow"] = json!(s.flow_name().as_str());
        v["run"] = json!(s.run_id().to_string());
        v["tasks"] = Value::Array(tasks.iter().map(json::task).collect());
        serde_json::to_string_pretty(&v).unwrap() + "\n"
    }

    fn streamed(f: impl FnOnce(JsonStream<&mut Vec<u8>>) -> Result<()>) -> String {
        let mut buf = Vec::new();
        f(JsonStream::new(&mut buf)).unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// A finished run whose `work` step has 2,600 tasks of every ended status, with
    /// progress, errors that need escaping, retries, a nested foreach stack.
    fn mixed(store: &Store) -> Step {
        let mut w = RunWriter::start(store, "mixed", None, BTreeMap::new()).unwrap();
        let start = w.task(TaskSpec::new("start").set("x", &1u8).unwrap()).unwrap();
        let specs = (0..2_600u64)
            .map(|i| {
                let mut t = TaskSpec::new("work")
                    .parent(start)
                    .foreach("start", start, "items", i / 10, 260)
                    .foreach("fan", start, "parts", i % 10, 10)
                    .progress((i % 7) as f32 * 14.3, &format!("step {i} of \"2600\" \u{2713}"));
                t = match i % 5 {
                    0 => t.status(TaskStatus::Failed).error("panic", &format!("line\nbreak \\ {i}")),
                    1 => t.status(TaskStatus::Cancelled),
                    2 => t.failed_attempt("error", "transient\ttab"),
                    _ => t,
                };
                t.set("out", &i).unwrap()
            })
            .collect();
        w.tasks(specs).unwrap();
        w.finish(RunStatus::Failed, Some("work failed".into())).unwrap();
        Client::from_store(store.clone()).step(&format!("mixed/{}/work", w.run_id())).unwrap()
    }

    #[test]
    fn a_streamed_step_is_byte_for_byte_the_document_built_whole() {
        let store = Store::memory();
        fixtures::fanout(&store, 3_000).unwrap();
        let fanout = Client::from_store(store.clone()).step("fanout/latest/work").unwrap();
        for s in [fanout, mixed(&store)] {
            let whole = whole_step_json(&s);
            let streamed = streamed(|w| step_json(&s, w));
            assert!(streamed == whole, "{} differs from the whole document", s.pathspec());
            let v: Value = serde_json::from_str(&streamed).unwrap();
            assert_eq!(v["tasks"].as_array().unwrap().len() as u64, s.task_count());
        }
    }

    #[test]
    fn a_streamed_list_of_runs_is_byte_for_byte_the_array_built_whole() {
        let store = Store::memory();
        for _ in 0..3 {
            fixtures::fanout(&store, 2).unwrap();
        }
        let client = Client::from_store(store);
        let runs = client.flow("fanout").unwrap().runs().unwrap();
        let whole = serde_json::to_string_pretty(&Value::Array(runs.iter().map(json::run).collect())).unwrap() + "\n";
        let streamed = streamed(|w| w.array(runs.iter().map(|r| Ok(json::run(r)))));
        assert_eq!(streamed, whole);
    }
}
