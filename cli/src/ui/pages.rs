//! The HTML pages: runs, a run, a step, a task, and the error page. Every value goes
//! through maud, which escapes it; links are built from percent-encoded segments.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use braid_client::{RunStatus, TaskStatus, Timestamp};
use maud::{Markup, html};

use super::api::{self, RunsQuery, TasksQuery};
use super::dag::{self, Bar, Row, StepState};
use super::error::UiResult;
use super::server::{Q, Seg, Shared, blocking};
use super::view::{
    self, badge, cut, duration_opt, page, query, run_href, sclass, seg, size, step_href, task_href, time_opt,
};

/// Steps with at most this many tasks get a bar per task in the timeline.
const TIMELINE_TASKS_MAX: u64 = 200;

pub fn error_page(status: StatusCode, message: &str) -> Markup {
    let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("error"));
    page(
        &title,
        &[],
        html! {
            h1 { (title) }
            p.error-message { (message) }
            p { a href="/" { "Back to the runs" } }
        },
    )
}

fn crumbs_run(flow: &str, run: &str) -> Vec<(String, String)> {
    vec![
        ("runs".into(), "/".into()),
        (flow.to_owned(), format!("/?flow={}", seg(flow))),
        (run.to_owned(), run_href(flow, run)),
    ]
}

pub async fn runs(State(st): State<Shared>, Q(q): Q<RunsQuery>) -> UiResult<Markup> {
    blocking(move || {
        let (runs, next) = api::list_runs(&st.client, &q)?;
        let flows: Vec<String> = st.client.flows()?.iter().map(|f| f.name().to_string()).collect();
        let v = |o: &Option<String>| o.clone().unwrap_or_default();
        let (flow, status, tag, plan, name, since, until) =
            (v(&q.flow), v(&q.status), v(&q.tag), v(&q.plan), v(&q.name), v(&q.since), v(&q.until));
        let limit = q.limit.map(|l| l.to_string()).unwrap_or_default();
        let older = next.as_ref().map(|n| {
            format!(
                "/{}",
                query(&[
                    ("flow", &flow),
                    ("status", &status),
                    ("tag", &tag),
                    ("plan", &plan),
                    ("name", &name),
                    ("since", &since),
                    ("until", &until),
                    ("limit", &limit),
                    ("after", n),
                ])
            )
        });
        let body = html! {
            h1 { "Runs" }
            form.filters method="get" action="/" {
                label { "flow " select name="flow" {
                    option value="" { "any" }
                    @for f in &flows { option value=(f) selected[*f == flow] { (f) } }
                } }
                label { "status " select name="status" {
                    option value="" { "any" }
                    @for s in RunStatus::ALL { option value=(s.as_str()) selected[s.as_str() == status] { (s.as_str()) } }
                } }
                label { "tag " input type="text" name="tag" value=(tag) size="10"; }
                label { "plan " input type="text" name="plan" value=(plan) size="12"; }
                label { "name " input type="text" name="name" value=(name) size="14" placeholder="prefix*"; }
                label { "since " input type="text" name="since" value=(since) size="11" placeholder="2026-03-02"; }
                label { "until " input type="text" name="until" value=(until) size="11"; }
                button type="submit" { "Filter" }
            }
            div #live data-live="/events/runs" data-region {
                @if runs.is_empty() {
                    p.empty { "No runs match. Run a flow, e.g. " code { "cargo run --release --example fanout -- run" } "." }
                } @else {
                    table.runs {
                        thead { tr { th { "flow" } th { "run" } th { "status" } th { "name" } th { "created" } th { "duration" } th { "tags" } th { "params" } } }
                        tbody {
                            @for r in &runs {
                                tr {
                                    td { a href={"/?flow=" (seg(r.flow_name().as_str()))} { (r.flow_name()) } }
                                    td.mono { a href=(run_href(r.flow_name().as_str(), &r.id().to_string())) { (r.id()) } }
                                    td { (badge(r.status().as_str())) }
                                    td { (r.name().unwrap_or("")) }
                                    td { (view::time(r.created_at())) }
                                    td { (duration_opt(r.duration())) }
                                    td { @for t in r.tags() { span.tag { (t.as_str()) } " " } }
                                    td.params { (cut(&params_text(r.params()), 80)) }
                                }
                            }
                        }
                    }
                }
                @if let Some(href) = &older { p.pager { a href=(href) { "Older runs →" } } }
            }
        };
        Ok(page("Runs", &[], body))
    })
    .await
}

fn params_text(p: &std::collections::BTreeMap<String, serde_json::Value>) -> String {
    p.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            v => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn run(State(st): State<Shared>, Seg((flow, run)): Seg<(String, String)>) -> UiResult<Markup> {
    blocking(move || {
        let r = api::find_run(&st.client, &flow, &run)?;
        let id = r.id().to_string();
        let href = run_href(&flow, &id);
        let steps = api::steps_of(&st, &r)?;
        api::prefetch_grids(&st, &r, &steps);
        let graph = r.flow().ok().and_then(|f| f.graph().ok().flatten());
        let states: HashMap<String, StepState> = steps
            .iter()
            .map(|s| {
                let counts = s.counts().iter().map(|(k, v)| (k.as_str().to_owned(), *v)).collect();
                (s.name().to_string(), StepState { counts, total: s.task_count() })
            })
            .collect();
        let mut rows = Vec::new();
        for s in steps.iter() {
            let tasks = if s.task_count() <= TIMELINE_TASKS_MAX {
                Some(
                    s.tasks()?
                        .iter()
                        .map(|t| Bar { task: t.id().0, start: t.started_at(), end: t.ended_at(), status: t.status().as_str().to_owned() })
                        .collect(),
                )
            } else {
                None
            };
            let state = states.get(s.name().as_str()).map_or("mixed", |x| x.state()).to_owned();
            let end = if s.is_done() { s.last_ended() } else { None };
            rows.push(Row { step: s.name().to_string(), state, start: s.first_started(), end, total: s.task_count(), tasks });
        }
        let now = r.ended_at().unwrap_or_else(Timestamp::now);
        let declared = r.flow().map(|f| f.declared_steps()).unwrap_or_default();
        let not_started: Vec<String> =
            declared.iter().filter(|d| !steps.iter().any(|s| s.name() == *d)).map(|d| d.to_string()).collect();
        let meta = serde_json::Value::Object(r.meta().clone());
        let body = html! {
            div #live data-live={"/events" (href)} data-region {
                h1 { (flow) " / " span.mono { (id) } " " (badge(r.status().as_str())) }
                dl.fields {
                    @if let Some(n) = r.name() { dt { "name" } dd { (n) } }
                    dt { "created" } dd { (view::time(r.created_at())) }
                    dt { "started" } dd { (time_opt(r.started_at())) }
                    dt { "ended" } dd { (time_opt(r.ended_at())) }
                    dt { "duration" } dd { (duration_opt(r.duration())) }
                    @if !r.params().is_empty() { dt { "params" } dd.mono { (params_text(r.params())) } }
                    @if !r.tags().is_empty() { dt { "tags" } dd { @for t in r.tags() { span.tag { (t.as_str()) } " " } } }
                    @if let Some(p) = r.meta().get("plan").and_then(|p| p.as_str()) {
                        dt { "plan" } dd { a href={"/plans/" (seg(p))} { (p) }
                            @if let Some(t) = r.meta().get("tick").and_then(|t| t.as_str()) { " · tick " (t) } }
                    }
                    @if let Some(o) = r.origin_run() { dt { "resumed from" } dd { a href=(run_href(&flow, &o.to_string())) { (o) } } }
                    @if let Some(e) = r.error() { dt { "error" } dd.error-message { (e) } }
                }
                @if !r.meta().is_empty() { details { summary { "launch metadata" } pre { (view::pretty(&meta)) } } }
                h2 { "Graph" }
                @match &graph {
                    Some(g) => div.scroll { (dag::graph_svg(g, &states, &href)) },
                    None => p.empty { "The flow's spec is not stored, so its graph cannot be drawn." },
                }
                h2 { "Timeline" }
                @if rows.iter().any(|r| r.start.is_some()) {
                    div.scroll { (dag::timeline_svg(&rows, r.started_at(), now, &href)) }
                } @else { p.empty { "No task has started yet." } }
                h2 { "Steps" }
                table.steps {
                    thead { tr { th { "step" } th { "tasks" } @for s in TaskStatus::ALL { th { (s.as_str()) } } th { "duration" } } }
                    tbody {
                        @for s in steps.iter() {
                            tr {
                                td { a href={(href) "/" (seg(s.name().as_str()))} { (s.name()) } }
                                td { (s.task_count()) }
                                @for status in TaskStatus::ALL {
                                    td class=(sclass(status.as_str())) { @let n = s.count(*status); @if n > 0 { (n) } }
                                }
                                td { (duration_opt(s.duration())) }
                            }
                        }
                        @for n in &not_started { tr.dim { td { (n) } td colspan="8" { "not started" } } }
                    }
                }
            }
        };
        Ok(page(&format!("{flow}/{id}"), &crumbs_run(&flow, &id), body))
    })
    .await
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct StepQuery {
    pub status: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
    /// Jump to the task with this foreach index.
    pub index: Option<String>,
}

pub async fn step(
    State(st): State<Shared>,
    Seg((flow, run, step)): Seg<(String, String, String)>,
    Q(q): Q<StepQuery>,
) -> UiResult<Response> {
    blocking(move || {
        let s = api::find_step(&st, &flow, &run, &step)?;
        let id = s.run_id().to_string();
        if let Some(i) = q.index.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
            let t = s.task_by_index(api::parse_index(i)?)?;
            return Ok(Redirect::to(&task_href(&flow, &id, &step, t.id().0)).into_response());
        }
        let tq = TasksQuery { status: q.status.clone(), after: q.after.clone(), limit: q.limit };
        let page_ = api::tasks_page(&s, &tq)?;
        let first = s.tasks_page(None, None, 1)?.items.into_iter().next();
        let foreach = first.as_ref().and_then(|t| t.foreach_stack().last().cloned());
        let depth = first.as_ref().map_or(0, |t| t.foreach_stack().len());
        let href = step_href(&flow, &id, &step);
        let status = q.status.clone().unwrap_or_default();
        let limit = q.limit.map(|l| l.to_string()).unwrap_or_default();
        let next = page_.next.as_ref().map(|n| format!("{href}{}", query(&[("status", &status), ("limit", &limit), ("after", n)])));
        let body = html! {
            div #live data-live={"/events" (run_href(&flow, &id))} data-region {
                h1 { (step) " " span.dim { "in " a href=(run_href(&flow, &id)) { (flow) "/" (id) } } }
                p.counts {
                    (s.task_count()) " task(s) · "
                    @for (status, n) in s.counts() { span class=(sclass(status.as_str())) { (n) " " (status.as_str()) } " " }
                    "· " (duration_opt(s.duration()))
                }
            }
            @if let Some(f) = &foreach {
                h2 { "Foreach grid" }
                p.dim { (f.len) " branch(es) over " code { (f.over) } " from step " (f.step)
                    @if depth > 1 { " (nested " (depth) " deep: cells in order of the outer indexes)" } }
                form.jump method="get" action=(href) {
                    label { "Jump to index " input #jump-index type="number" name="index" min="0" required; }
                    button type="submit" { "Go" }
                }
                div.grid-box {
                    canvas #grid data-grid={"/api/v1" (run_href(&flow, &id)) "/steps/" (seg(&step)) "/grid"}
                        data-href=(href) data-live={"/events" (run_href(&flow, &id))} width="960" height="40" {}
                    div #grid-tip.tip {}
                    div.legend { @for s in TaskStatus::ALL { span class=(sclass(s.as_str())) { (s.as_str()) } " " } }
                }
            }
            h2 { "Tasks" }
            form.filters method="get" action=(href) {
                label { "status " select name="status" {
                    option value="" { "any" }
                    @for s in TaskStatus::ALL { option value=(s.as_str()) selected[s.as_str() == status] { (s.as_str()) } }
                } }
                button type="submit" { "Filter" }
            }
            table.tasks {
                thead { tr { th { "task" } th { "index" } th { "status" } th { "attempt" } th { "duration" } th { "progress" } } }
                tbody {
                    @for t in &page_.items {
                        tr {
                            td.mono { a href=(task_href(&flow, &id, &step, t.id().0)) { (t.id()) } }
                            td { @let path: Vec<String> = t.foreach_stack().iter().map(|f| f.index.to_string()).collect(); (path.join(".")) }
                            td { (badge(t.status().as_str())) }
                            td { (t.attempt().0) }
                            td { (duration_opt(t.duration())) }
                            td { @if let Some(p) = t.progress() {
                                progress max="100" value=(p.percent) {} " " (format!("{:.0}%", p.percent)) " " span.dim { (cut(&p.message, 60)) }
                            } }
                        }
                    }
                }
            }
            @if let Some(n) = &next { p.pager { a href=(n) { "More tasks →" } } }
        };
        let mut crumbs = crumbs_run(&flow, &id);
        crumbs.push((step.clone(), href.clone()));
        Ok(page(&format!("{step} · {flow}/{id}"), &crumbs, body).into_response())
    })
    .await
}

pub async fn task_by_index(
    State(st): State<Shared>,
    Seg((flow, run, step, index)): Seg<(String, String, String, String)>,
) -> UiResult<Redirect> {
    blocking(move || {
        let index = api::parse_index(&index)?;
        let t = api::find_step(&st, &flow, &run, &step)?.task_by_index(index)?;
        Ok(Redirect::to(&task_href(&flow, &t.run_id().to_string(), &step, t.id().0)))
    })
    .await
}

/// `/runs/FLOW/RUN/~/TASK`: a task by id alone (its step looked up), redirected to its page.
pub async fn task_any(
    State(st): State<Shared>,
    Seg((flow, run, task)): Seg<(String, String, String)>,
) -> UiResult<Redirect> {
    blocking(move || {
        let t = api::find_task(&st.client, &flow, &run, &task)?;
        Ok(Redirect::to(&task_href(&flow, &t.run_id().to_string(), t.step_name().as_str(), t.id().0)))
    })
    .await
}

pub async fn task(
    State(st): State<Shared>,
    Seg((flow, run, step, task)): Seg<(String, String, String, String)>,
) -> UiResult<Markup> {
    blocking(move || {
        let s = api::find_step(&st, &flow, &run, &step)?;
        let t = s.task(braid_client::TaskId::parse(&task)?)?;
        let id = t.run_id().to_string();
        let attempts = t.attempts()?;
        let artifacts = t.artifacts()?;
        let tail = t.log_tail(api::LOG_TAIL)?;
        let last_seq = tail.last().map_or(0, |l| l.seq);
        let api_base = format!("/api/v1{}/tasks/{}", run_href(&flow, &id), t.id());
        let warnings = t.warnings();
        let body = html! {
            h1 { "task " (t.id()) " " span.dim { "of " (step) } " " span #task-status { (badge(t.status().as_str())) } }
            dl.fields {
                @if !t.foreach_stack().is_empty() {
                    dt { "foreach" } dd { @for f in t.foreach_stack() { (f.step) "[" (f.index) " of " (f.len) "] " } }
                }
                @if t.iteration() > 0 { dt { "iteration" } dd { (t.iteration()) } }
                dt { "attempt" } dd #task-attempt { (t.attempt().0) }
                dt { "started" } dd { (time_opt(t.started_at())) }
                dt { "ended" } dd { (time_opt(t.ended_at())) }
                dt { "duration" } dd { (duration_opt(t.duration())) }
                @if let Some(p) = t.parent_id() { dt { "parent" } dd { a href={(run_href(&flow, &id)) "/~/" (p.0)} { (p.0) } } }
                @if t.is_join() { dt { "inputs" } dd { (t.input_ids().len()) " branch task(s)" } }
                @if let Some((orun, otask)) = t.origin() { dt { "reused from" } dd { a href=(task_href(&flow, &orun.to_string(), &step, otask.0)) { (orun) "/" (otask.0) } } }
            }
            section #live-task data-task=(api_base) data-live={"/events" (run_href(&flow, &id)) "/tasks/" (t.id())} data-after=(last_seq) data-status=(t.status().as_str()) {
                h2 { "Progress" }
                div.progress-line {
                    progress #progress max="100" value=(t.progress().map_or(0.0, |p| p.percent)) {}
                    span #progress-text { @if let Some(p) = t.progress() { (view::progress_line(p)) } @else { "no progress reported" } }
                }
                pre #progress-details.details hidden[t.progress().is_none_or(|p| p.details.is_none())] {
                    @if let Some(d) = t.progress().and_then(|p| p.details.as_ref()) { (view::pretty(d)) }
                }
                p.dim { "ETA " span #eta { (duration_opt(t.eta())) } " · last report " span #progress-age { (t.progress_age().map(|d| format!("{} ago", view::duration(d))).unwrap_or_else(|| "-".into())) } }
                ul #warnings.warnings {
                    @for w in &warnings { li class={"warn " (sclass(&format!("{:?}", w.kind)))} { (view::time(w.at)) " · attempt " (w.attempt.0) " · " (format!("{:?}", w.kind)) ": " (w.message) } }
                }
            }
            @if let Some(e) = t.error() {
                h2 { "Error" }
                pre.error-message { (e.kind) ": " (e.message) }
            }
            @if let Some(c) = t.caught() {
                h2 { "Caught failure" }
                p.dim { "Attempt " (c.attempt.0) " failed; the step catches failures, so the task succeeded with the failure in " code { (c.artifact) } "." }
                pre #caught.caught-message { (c.error.kind) ": " (c.error.message) }
            }
            h2 { "Attempts" }
            table.attempts {
                thead { tr { th { "attempt" } th { "status" } th { "started" } th { "ended" } th { "duration" } th { "why it ended" } } }
                tbody {
                    @for a in &attempts {
                        tr {
                            td { (a.attempt.0) }
                            td { (badge(a.status.as_str())) }
                            td { (view::time(a.started_at)) }
                            td { (time_opt(a.ended_at)) }
                            td { (duration_opt(a.ended_at.map(|e| e.since(a.started_at)))) }
                            td { @match &a.error { Some(e) => { span.error-message { (e.kind) ": " (cut(&e.message, 300)) } }, None => { (ended_why(a.status)) } } }
                        }
                    }
                }
            }
            h2 { "Artifacts" }
            @if artifacts.is_empty() { p.empty { "none" } } @else {
                table.artifacts {
                    thead { tr { th { "name" } th { "type" } th { "size" } th { "set by" } th { "preview" } th {} } }
                    tbody {
                        @for a in &artifacts {
                            tr {
                                td.mono { (a.name()) }
                                td.mono { (cut(a.type_name(), 50)) }
                                td { (size(a.size())) }
                                td { @if a.is_inherited() { a href={(run_href(&flow, &id)) "/~/" (a.set_by().0)} { "task " (a.set_by().0) } } @else { "this task" } }
                                td { pre.preview { (cut_block(&view::pretty(&a.preview()), 2000)) } @if a.preview_truncated() { span.dim { "(preview cut at its size limit)" } } }
                                td { a.download href={(api_base) "/artifacts/" (seg(a.name().as_str())) "/value"} download { "download" } }
                            }
                        }
                    }
                }
            }
            h2 { "Log" }
            p.dim { "last " (tail.len()) " line(s); " a href={(api_base) "/logs"} { "all as JSON" } }
            pre #log.log {
                @for l in &tail { span.line { (view::time(l.at)) " " span class={"lvl lvl-" (l.level.to_ascii_lowercase().chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>())} { (l.level) } " " (l.line) "\n" } }
            }
        };
        let mut crumbs = crumbs_run(&flow, &id);
        crumbs.push((step.clone(), step_href(&flow, &id, &step)));
        crumbs.push((t.id().to_string(), String::new()));
        Ok(page(&format!("task {} · {step}", t.id()), &crumbs, body))
    })
    .await
}

fn ended_why(s: TaskStatus) -> &'static str {
    match s.as_str() {
        "succeeded" => "succeeded",
        "running" => "still running",
        "pending" => "not started",
        "lost" => "lost: its lease expired",
        "cancelled" => "cancelled",
        _ => "",
    }
}

/// Cuts multi-line text to `max` characters.
fn cut_block(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push_str("\n…");
    out
}
