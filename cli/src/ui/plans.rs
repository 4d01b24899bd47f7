//! Launch plan pages: the list (labels, filters, activation by label), a plan (versions,
//! schedule and next ticks in its time zone, inputs, the matrix view, recent launches)
//! and the actions, which go through the same code as `braid plan activate|deactivate|
//! launch` (`inspect/plan.rs`).

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use braid_core::Label;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::api::{self, MATRIX_TICKS, MatrixQuery, PlansQuery};
use super::error::{UiError, UiResult};
use super::server::{Q, Seg, Shared, blocking, check_form};
use super::view::{self, page, run_href, sclass, seg};
use crate::inspect::plan as plan_view;

fn csrf_field(st: &Shared) -> Markup {
    html! { input type="hidden" name="csrf" value=(st.security.csrf()); }
}

fn labels_of(v: &Value) -> Vec<String> {
    v.get("labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
        .unwrap_or_default()
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    /// What the last action did, shown once after its redirect.
    pub done: Option<String>,
}

pub async fn list(State(st): State<Shared>, Q(q): Q<PlansQuery>, Q(n): Q<Notice>) -> UiResult<Markup> {
    blocking(move || {
        let plans = api::list_plans(&st.client, &q)?;
        let docs: Vec<Value> = plans.iter().map(|r| plan_view::plan_json(r, plan_view::parse(r).as_ref())).collect();
        let label = q.label.clone().unwrap_or_default();
        let flow = q.flow.clone().unwrap_or_default();
        let body = html! {
            h1 { "Launch plans" }
            @if let Some(d) = &n.done { p.notice { (d) } }
            form.filters method="get" action="/plans" {
                label { "flow " input type="text" name="flow" value=(flow) size="12"; }
                label { "label " input type="text" name="label" value=(label) size="16" placeholder="key=value"; }
                button type="submit" { "Filter" }
            }
            @if docs.is_empty() {
                p.empty { "No launch plans. Register some with the flow binary's " code { "plans apply FILE" } "." }
            } @else {
                table.plans {
                    thead { tr { th { "plan" } th { "description" } th { "flow" } th { "version" } th { "active" } th { "schedule" } th { "sets" } th { "labels" } th { "next tick" } th {} } }
                    tbody {
                        @for d in &docs {
                            @let name = text(d, "name");
                            @let active = d.get("active").and_then(Value::as_bool).unwrap_or(false);
                            tr data-plan=(name) {
                                td { a href={"/plans/" (seg(&name))} { (name) } }
                                td { (view::cut(&text(d, "description"), 80)) }
                                td { (text(d, "flow")) }
                                td { (text(d, "version")) }
                                td.active { @if active { span.st.st-succeeded { "active" } } @else { span.st.st-pending { "inactive" } } }
                                td.mono { (schedule_text(d)) }
                                td { (sets_cell(d)) }
                                td { @for l in labels_of(d) { span.tag { (l) } " " } }
                                td { (text(d, "next_tick_local")) }
                                td { (toggle_form(&st, &name, active)) }
                            }
                        }
                    }
                }
            }
            h2 { "Activate or deactivate by label" }
            form.filters method="post" action="/plans/actions" {
                (csrf_field(&st))
                label { "label " input type="text" name="label" size="16" placeholder="key=value" required; }
                button type="submit" name="action" value="activate" { "Activate all" }
                button type="submit" name="action" value="deactivate" { "Deactivate all" }
            }
        };
        Ok(page("Launch plans", &[("plans".into(), "/plans".into())], body))
    })
    .await
}

/// The sets column: how many, or where they come from when produced at each tick.
fn sets_cell(d: &Value) -> String {
    match d.get("sets_from").and_then(|f| f.get("kind")).and_then(Value::as_str) {
        Some("command") => "per tick (command)".to_owned(),
        Some("function") => "per tick (matrix_fn)".to_owned(),
        _ => text(d, "parameter_sets"),
    }
}

/// Where the sets come from, in words, for the plan page.
fn sets_from_text(d: &Value) -> Option<String> {
    let from = d.get("sets_from")?;
    match from.get("kind").and_then(Value::as_str)? {
        "command" => {
            let argv: Vec<String> = from
                .get("command")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            Some(format!("printed by `{}` at each tick (timeout {})", argv.join(" "), text(from, "timeout")))
        }
        "function" => {
            Some(format!("returned by the plan's matrix_fn at each tick (timeout {})", text(from, "timeout")))
        }
        _ => None,
    }
}

fn schedule_text(d: &Value) -> String {
    match d.get("schedule") {
        Some(Value::Object(m)) => match (m.get("cron"), m.get("every")) {
            (Some(c), _) => format!(
                "cron {} ({})",
                c.as_str().unwrap_or_default(),
                m.get("timezone").and_then(Value::as_str).unwrap_or("UTC")
            ),
            (_, Some(e)) => format!("every {}", e.as_str().unwrap_or_default()),
            _ => String::new(),
        },
        _ => "manual".to_owned(),
    }
}

fn toggle_form(st: &Shared, name: &str, active: bool) -> Markup {
    let action = if active { "deactivate" } else { "activate" };
    html! {
        form.inline method="post" action={"/plans/" (seg(name)) "/" (action)} {
            (csrf_field(st))
            button.toggle type="submit" data-action=(action) { @if active { "Deactivate" } @else { "Activate" } }
        }
    }
}

pub async fn show(
    State(st): State<Shared>,
    Seg(name): Seg<String>,
    Q(q): Q<MatrixQuery>,
    Q(n): Q<Notice>,
) -> UiResult<Markup> {
    blocking(move || {
        let d = api::plan_doc(&st.client, &name)?;
        let m = api::matrix_doc(&st.client, &name, q.ticks.unwrap_or(MATRIX_TICKS))?;
        let rec = st.client.plan(&name)?;
        let tz = plan_view::zone(plan_view::parse(&rec).as_ref());
        let query = braid_client::LaunchQuery { plan: Some(rec.name.clone()), limit: RECENT, ..Default::default() };
        let recent: Vec<Value> =
            st.client.launches(&query)?.iter().map(|l| plan_view::launch_json(&st.client, l, &tz)).collect();
        let active = d.get("active").and_then(Value::as_bool).unwrap_or(false);
        let flow = text(&d, "flow");
        let empty = Vec::new();
        let arr = |v: &Value, k: &str| v.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
        let ticks = arr(&m, "ticks");
        let rows = arr(&m, "rows");
        let sets = arr(&d, "parameter_set_details");
        let failed = arr(&d, "failed_ticks");
        let paused_keys: std::collections::HashSet<String> = sets
            .iter()
            .filter(|s| s.get("paused").and_then(Value::as_bool).unwrap_or(false))
            .map(|s| text(s, "key"))
            .collect();
        let matrix_params: Vec<(String, Vec<Value>)> = d
            .get("matrix")
            .and_then(Value::as_object)
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_array().cloned().unwrap_or_default())).collect())
            .unwrap_or_default();
        let body = html! {
            h1 { "plan " (name) " " @if active { span.st.st-succeeded #plan-active { "active" } } @else { span.st.st-pending #plan-active { "inactive" } } }
            @if let Some(msg) = &n.done { p.notice { (msg) } }
            @if let Some(desc) = d.get("description").and_then(Value::as_str) { p.description { (desc) } }
            div.actions {
                (toggle_form(&st, &name, active))
                form.inline method="post" action={"/plans/" (seg(&name)) "/launch"} {
                    (csrf_field(&st))
                    @for (k, values) in &matrix_params {
                        label { (k) " " select name="param" {
                            option value="" { "every value" }
                            @for v in values { @let t = match v { Value::String(s) => s.clone(), v => v.to_string() }; option value={(k) "=" (t)} { (t) } }
                        } }
                    }
                    button type="submit" { "Launch now" }
                }
            }
            h2 { "Matrix" }
            p.dim { "One row per parameter set, one column per tick (the latest " (ticks.len()) "), each cell the run's status." }
            @if ticks.is_empty() { p.empty { "No launches yet." } } @else {
                div.scroll {
                    table #matrix.matrix {
                        thead { tr { th { "parameter set" } @for t in &ticks { th.tick title=(text(t, "local")) { (short_tick(&text(t, "local"))) } } } }
                        tbody {
                            @for r in &rows {
                                tr {
                                    th.set title=(text(r, "key")) { (text(r, "run_name")) @if paused_keys.contains(&text(r, "key")) { " " span.st.st-failed.paused { "paused" } } }
                                    @for (i, c) in r.get("cells").and_then(Value::as_array).unwrap_or(&empty).iter().enumerate() {
                                        @let tick = ticks.get(i).map(|t| text(t, "local")).unwrap_or_default();
                                        @if c.is_null() { td.cell.none title={(tick) ": no launch"} {} } @else {
                                            @let word = cell_word(c);
                                            td class={"cell " (sclass(&word))} title={(text(r, "run_name")) " @ " (tick) ": " (word) @if let Some(n) = c.get("note").and_then(Value::as_str) { " (" (n) ")" }} {
                                                @if let Some(run) = c.get("run").and_then(Value::as_str) { a href=(run_href(&text(c, "flow"), run)) { (glyph(&word)) } } @else { (glyph(&word)) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                div.legend { @for w in ["succeeded", "failed", "running", "pending", "skipped", "cancelled", "lost"] { span class=(sclass(w)) { (glyph(w)) " " (w) } " " } }
            }
            dl.fields {
                dt { "flow" } dd { a href={"/?flow=" (seg(&flow))} { (flow) } }
                dt { "version" } dd { (text(&d, "version")) " (updated " (text(&d, "updated_at")) ")" }
                dt { "schedule" } dd.mono { (schedule_text(&d)) }
                dt { "catch-up" } dd { (text(&d, "catch_up")) }
                dt { "concurrency" } dd { (text(&d, "concurrency")) }
                dt { "labels" } dd { @for l in labels_of(&d) { span.tag { (l) } " " } }
                dt { "fixed inputs" } dd.mono { (text(&d, "fixed")) }
                dt { "default inputs" } dd.mono { (text(&d, "defaults")) }
                @if !matrix_params.is_empty() { dt { "matrix" } dd.mono { (text(&d, "matrix")) } }
                @if let Some(from) = sets_from_text(&d) { dt { "parameter sets" } dd.mono #sets-from { (from) } }
            }
            @if !failed.is_empty() {
                h2 { "Failed ticks (" (failed.len()) ")" }
                p.dim { "The parameter sets of these ticks could not be produced: nothing launched for them. The flow binary's " code { "backfill" } " retries one." }
                table #failed-ticks.launches { thead { tr { th { "tick" } th { "kind" } th { "failures" } th { "error" } } } tbody {
                    @for f in &failed { tr {
                        td { (text(f, "tick_local")) }
                        td { (text(f, "kind")) }
                        td { (text(f, "failures")) }
                        td { pre.error { (text(f, "error")) } }
                    } }
                } }
            }
            h2 { "Next ticks (" (text(&m, "timezone")) ")" @if !active { " — if activated" } }
            ul.ticks { @for t in d.get("next_ticks").and_then(Value::as_array).unwrap_or(&empty) { li { (text(t, "local")) } } }
            h2 { "Recent launches" }
            @if recent.is_empty() { p.empty { "none" } } @else {
                table.launches { thead { tr { th { "tick" } th { "run name" } th { "kind" } th { "version" } th { "status" } th { "note" } } } tbody {
                    @for l in &recent { tr {
                        td { (text(l, "tick_local")) }
                        td { @match l.get("run").and_then(Value::as_str) {
                            Some(run) => { a href=(run_href(&flow, run)) { (text(l, "name")) } },
                            None => { (text(l, "name")) },
                        } }
                        td { (text(l, "kind")) }
                        td { (text(l, "version")) }
                        td { @let w = if l["status"].is_null() { text(l, "state") } else { text(l, "status") }; span class=(sclass(&w)) { (w) } }
                        td { (text(l, "note")) }
                    } }
                } }
            }
            h2 { "Parameter sets (" (sets.len()) ")" }
            table { thead { tr { th { "run name" } th { "values" } th {} } } tbody {
                @for s in &sets { tr {
                    td { (text(s, "run_name")) @if s.get("paused").and_then(Value::as_bool).unwrap_or(false) { " " span.st.st-failed.paused { "paused" } } }
                    td.mono { (text(s, "values")) }
                    td { a href={"/?plan=" (seg(&name)) "&name=" (seg(&text(s, "run_name")))} { "runs" } }
                } }
            } }
            h2 { "Versions" }
            table { thead { tr { th { "version" } th { "registered" } th { "hash" } } } tbody {
                @for v in d.get("versions").and_then(Value::as_array).unwrap_or(&empty) { tr {
                    td { (text(v, "version")) } td { (text(v, "created_at")) } td.mono { (view::cut(&text(v, "hash"), 13)) }
                } }
            } }
        };
        Ok(page(&format!("plan {name}"), &[("plans".into(), "/plans".into()), (name.clone(), String::new())], body))
    })
    .await
}

/// Launches listed under "Recent launches".
const RECENT: usize = 20;

/// `2026-03-02 09:00:00 EST` -> `03-02 09:00`.
fn short_tick(local: &str) -> String {
    local.get(5..16).unwrap_or(local).to_owned()
}

fn cell_word(c: &Value) -> String {
    c.get("status")
        .and_then(Value::as_str)
        .or_else(|| c.get("state").and_then(Value::as_str))
        .unwrap_or("pending")
        .to_owned()
}

fn glyph(word: &str) -> &'static str {
    match word {
        "succeeded" => "✓",
        "failed" => "✗",
        "running" | "started" => "▶",
        "skipped" => "–",
        "cancelled" => "⊘",
        "lost" => "?",
        _ => "…",
    }
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Where an action goes back to, with what it did.
fn back(to: &str, done: &str) -> Response {
    let q = serde_urlencoded::to_string([("done", done)]).unwrap_or_default();
    Redirect::to(&format!("{to}?{q}")).into_response()
}

fn active_word(active: bool) -> &'static str {
    if active { "activated" } else { "deactivated" }
}

/// `POST /plans/{plan}/activate|deactivate|launch`.
pub async fn action(
    State(st): State<Shared>,
    Seg((name, action)): Seg<(String, String)>,
    body: axum::body::Bytes,
) -> UiResult<Response> {
    let plan_href = format!("/plans/{}", seg(&name));
    let store = st.store.clone();
    match action.as_str() {
        "activate" | "deactivate" => {
            check_form(&st, &body)?;
            let active = action == "activate";
            let sel = plan_view::selector(std::slice::from_ref(&name), &[])?;
            let changed = plan_view::write_active(&store, &sel, active).await?;
            let did = changed.iter().any(|(_, c)| *c);
            let msg = if did {
                format!("{} plan {name}", active_word(active))
            } else {
                format!("plan {name} was already {}", if active { "active" } else { "inactive" })
            };
            Ok(back(&plan_href, &msg))
        }
        "launch" => {
            let pairs = check_form(&st, &body)?;
            // `param` fields are `NAME=VALUE` overrides; an empty one means "every value".
            let params: Vec<String> =
                pairs.into_iter().filter(|(k, v)| k == "param" && !v.trim().is_empty()).map(|(_, v)| v).collect();
            let overrides = crate::split_params(&params).map_err(crate::inspect::Error::Usage)?;
            let (launches, live) = plan_view::request_launch(&store, &name, &overrides).await?;
            let names: Vec<&str> = launches.iter().map(|l| l.name.as_str()).collect();
            let mut msg = format!("requested {} launch(es): {}", launches.len(), names.join(", "));
            if live.is_empty() {
                msg.push_str(" — no scheduler of the flow is running; they start when one runs");
            }
            Ok(back(&plan_href, &msg))
        }
        other => Err(UiError::NotFound(format!(
            "no action {:?} on plans: the actions are activate, deactivate and launch",
            view::cut(other, 40)
        ))),
    }
}

/// `POST /plans/actions`: activate or deactivate every plan with a label.
pub async fn bulk_action(State(st): State<Shared>, body: axum::body::Bytes) -> UiResult<Response> {
    let pairs = check_form(&st, &body)?;
    let active = match field(&pairs, "action").unwrap_or_default() {
        "activate" => true,
        "deactivate" => false,
        other => {
            return Err(UiError::bad(format!("action {:?} is not activate or deactivate", view::cut(other, 40))));
        }
    };
    let label: Label = field(&pairs, "label").unwrap_or_default().trim().parse()?;
    let sel = plan_view::selector(&[], std::slice::from_ref(&label))?;
    let changed = plan_view::write_active(&st.store, &sel, active).await?;
    let did: Vec<String> = changed.iter().filter(|(_, c)| *c).map(|(n, _)| n.to_string()).collect();
    let msg = if changed.is_empty() {
        format!("no plan has {label}; nothing changed")
    } else {
        format!("{} {} plan(s) with {label}: {}", active_word(active), did.len(), did.join(", "))
    };
    Ok(back("/plans", &msg))
}
