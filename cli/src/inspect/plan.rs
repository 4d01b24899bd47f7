//! `braid plan list|show|activate|deactivate|delete|resume-set|launch`.
//!
//! `launch` records a launch request in the store (pending launches without a holder);
//! the next pass of a running `scheduler` of the plan's flow starts them, within its
//! poll interval (1 s by default). The `braid` binary never runs flow code itself.

use std::collections::BTreeMap;
use std::time::Duration;

use braid_client::{
    Client, LaunchQuery, LaunchRecord, ParamSetState, PlanQuery, PlanRecord, SetPause, TickFailure, Timestamp,
};
use braid_core::{FlowName, Label, PlanName};
use braid_runtime::plan::{self, LaunchPlan, ParamSet, PlanSpec, SetSource};
use braid_store::{PlanSelector, Store};
use comfy_table::Cell;
use serde_json::{Value, json};

use super::error::{Error, Result};
use super::output::{Out, cut, time, time_opt};

/// How long a scheduler may be silent and still count as running.
const LIVE: Duration = plan::DEAD_AFTER;

pub(crate) fn zone(lp: Option<&LaunchPlan>) -> jiff::tz::TimeZone {
    lp.and_then(|p| p.schedule()).map_or(jiff::tz::TimeZone::UTC, |s| s.time_zone())
}

/// A plan's versions and its next ticks (each as the instant and in the plan's zone), put
/// into the plan's JSON: `braid plan show --json` and the UI's `/api/v1/plans/{plan}`.
pub(crate) fn insert_versions_and_ticks(
    m: &mut serde_json::Map<String, Value>,
    versions: &[braid_client::PlanVersion],
    upcoming: &[jiff::Timestamp],
    tz: &jiff::tz::TimeZone,
) {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"version": v.version, "hash": v.hash, "created_at": v.created_at.to_string()}))
        .collect();
    m.insert("versions".into(), json!(versions));
    let ticks: Vec<Value> = upcoming.iter().map(|t| json!({"tick": t.to_string(), "local": local(*t, tz)})).collect();
    m.insert("next_ticks".into(), json!(ticks));
}

/// A time in a plan's zone: `2026-03-02 09:00:00 EST`.
pub(crate) fn local(t: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> String {
    t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
}

fn labels_json(rec: &PlanRecord) -> Value {
    let m: serde_json::Map<String, Value> =
        rec.labels.iter().map(|l| (l.key.to_string(), json!(l.value.as_str()))).collect();
    Value::Object(m)
}

pub(crate) fn labels_text(rec: &PlanRecord) -> String {
    rec.labels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",")
}

fn ts_json(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| json!(t.to_string()))
}

/// The next tick of an active plan, from now (or from its cursor if that is later).
pub(crate) fn next_tick(rec: &PlanRecord, lp: Option<&LaunchPlan>) -> Option<jiff::Timestamp> {
    if !rec.active {
        return None;
    }
    let s = lp?.schedule()?;
    let from = jiff::Timestamp::now().max(rec.cursor.map_or(jiff::Timestamp::UNIX_EPOCH, |c| c.to_jiff()));
    s.next_after(from)
}

fn schedule_json(spec: Option<&PlanSpec>) -> Value {
    match spec {
        Some(PlanSpec { cron: Some(c), timezone, .. }) => {
            json!({"cron": c, "timezone": timezone.as_deref().unwrap_or("UTC")})
        }
        Some(PlanSpec { every: Some(e), .. }) => json!({"every": e}),
        _ => Value::Null,
    }
}

/// Where a plan's parameter sets come from, as `--json` gives it: `{"kind": "static"}`,
/// `{"kind": "command", "command": [...], "dir": ..., "timeout": "30s"}` or
/// `{"kind": "function", "timeout": "30s"}`.
pub(crate) fn sets_from_json(lp: &LaunchPlan) -> Value {
    match lp.set_source() {
        SetSource::Command { argv, dir, timeout } => json!({
            "kind": "command",
            "command": argv,
            "dir": dir.map(|d| d.display().to_string()),
            "timeout": plan::format_duration(timeout),
        }),
        SetSource::Function { timeout } => json!({"kind": "function", "timeout": plan::format_duration(timeout)}),
        _ => json!({"kind": "static"}),
    }
}

/// Where a plan's parameter sets come from, in words (`braid plan show`).
fn sets_from_text(lp: &LaunchPlan) -> String {
    match lp.set_source() {
        SetSource::Command { dir, timeout, .. } => format!(
            "printed by {} at each tick{} (timeout {})",
            lp.set_source(),
            dir.map(|d| format!(", run in {}", d.display())).unwrap_or_default(),
            plan::format_duration(timeout)
        ),
        SetSource::Function { timeout } => {
            format!("returned by the plan's matrix_fn at each tick (timeout {})", plan::format_duration(timeout))
        }
        _ => format!("{} (fixed)", lp.parameter_sets().len()),
    }
}

/// A failed tick as `plan show --json` gives it.
pub(crate) fn tick_failure_json(f: &TickFailure, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "tick": f.tick.to_string(),
        "tick_local": local(f.tick.to_jiff(), tz),
        "version": f.version,
        "kind": f.kind.as_str(),
        "holder": f.holder,
        "error": f.error,
        "failures": f.failures,
        "first_at": f.first_at.to_string(),
        "last_at": f.last_at.to_string(),
    })
}

pub(crate) fn plan_json(rec: &PlanRecord, lp: Option<&LaunchPlan>) -> Value {
    let tz = zone(lp);
    let next = next_tick(rec, lp);
    let spec = lp.map(|p| p.spec());
    json!({
        "name": rec.name.as_str(),
        "flow": rec.flow.as_str(),
        "version": rec.version,
        "active": rec.active,
        "labels": labels_json(rec),
        "description": spec.and_then(|s| s.description.clone()),
        "schedule": schedule_json(spec),
        "parameter_sets": lp.filter(|p| !p.has_dynamic_sets()).map(|p| p.parameter_sets().len()),
        "sets_from": lp.map(sets_from_json),
        "concurrency": lp.map(|p| p.concurrency().to_string()),
        "pause_after_failures": lp.and_then(|p| p.pause_after_failures()),
        "catch_up": spec.map(|s| json!(s.catch_up)),
        "catch_up_limit": spec.and_then(|s| s.catch_up_limit),
        "grace": spec.and_then(|s| s.grace.clone()),
        "fixed": spec.map(|s| json!(s.fixed)),
        "defaults": spec.map(|s| json!(s.defaults)),
        "matrix": spec.map(|s| json!(s.matrix)),
        "next_tick": next.map(|t| t.to_string()),
        "next_tick_local": next.map(|t| t.to_zoned(tz.clone()).to_string()),
        "created_at": rec.created_at.to_string(),
        "updated_at": rec.updated_at.to_string(),
        "active_since": ts_json(rec.active_since),
        "cursor": ts_json(rec.cursor),
        "deleted_at": ts_json(rec.deleted_at),
    })
}

/// Why a paused set is paused, as its skipped ticks say it.
fn pause_reason(rec: &PlanRecord, lp: Option<&LaunchPlan>, set_key: &str, pause: &SetPause) -> String {
    match lp.and_then(|p| p.parameter_sets().iter().find(|s| s.key == set_key)) {
        Some(set) => plan::pause_note(&rec.name, set, pause.failures),
        None => format!("paused after {} consecutive failures", pause.failures),
    }
}

fn pause_json(rec: &PlanRecord, lp: Option<&LaunchPlan>, set_key: &str, pause: &SetPause) -> Value {
    json!({
        "failures": pause.failures,
        "runs": pause.runs.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "pathspecs": pause.runs.iter().map(|r| format!("{}/{r}", rec.flow)).collect::<Vec<_>>(),
        "paused_at": pause.at.to_string(),
        "reason": pause_reason(rec, lp, set_key, pause),
    })
}

/// The paused parameter sets of a plan as `plan list --json` and `plan show --json` give
/// them: each set's key, values and run name, and why it is paused (the failed runs).
fn paused_sets_json(rec: &PlanRecord, lp: Option<&LaunchPlan>, states: &[&ParamSetState]) -> Value {
    let v: Vec<Value> = states
        .iter()
        .filter_map(|s| {
            let pause = s.paused.as_ref()?;
            let set = lp.and_then(|p| p.parameter_sets().iter().find(|p| p.key == s.set_key));
            let mut o = json!({
                "key": s.set_key,
                "values": set.map(|x| json!(x.values)),
                "run_name": set.map(|x| x.run_name(&rec.name)),
                "version": s.version,
            });
            if let (Value::Object(m), Value::Object(p)) = (&mut o, pause_json(rec, lp, &s.set_key, pause)) {
                m.extend(p);
            }
            Some(o)
        })
        .collect();
    Value::Array(v)
}

/// The parameter sets of a plan as readers list them: its own, or, for sets produced at
/// each tick, those its newest 1000 launches used (newest first).
pub(crate) fn sets_of(client: &Client, lp: &LaunchPlan) -> Result<Vec<ParamSet>> {
    if !lp.has_dynamic_sets() {
        return Ok(lp.parameter_sets().to_vec());
    }
    let q = LaunchQuery { plan: Some(lp.name().clone()), limit: 1000, ..Default::default() };
    let mut seen = std::collections::HashSet::new();
    Ok(client
        .launches(&q)?
        .into_iter()
        .filter(|l| seen.insert(l.set_key.clone()))
        .filter_map(|l| ParamSet::from_key(&l.set_key))
        .collect())
}

pub(crate) fn parse(rec: &PlanRecord) -> Option<LaunchPlan> {
    LaunchPlan::from_json(&rec.spec).ok()
}

pub fn list(client: &Client, out: &Out, labels: &[Label], flow: Option<&str>, all: bool) -> Result<()> {
    let flows = match flow {
        Some(f) => vec![FlowName::new(f).map_err(|e| Error::Usage(e.to_string()))?],
        None => Vec::new(),
    };
    let plans =
        client.plans(&PlanQuery { flows, labels: labels.to_vec(), include_deleted: all, ..Default::default() })?;
    let parsed: Vec<Option<LaunchPlan>> = plans.iter().map(parse).collect();
    let states = client.set_states(None, true)?;
    let paused_of = |r: &PlanRecord| states.iter().filter(|s| s.plan == r.name).collect::<Vec<_>>();
    if out.json {
        let v: Vec<Value> = plans
            .iter()
            .zip(&parsed)
            .map(|(r, p)| {
                let mut v = plan_json(r, p.as_ref());
                if let Value::Object(m) = &mut v {
                    m.insert("paused_sets".into(), paused_sets_json(r, p.as_ref(), &paused_of(r)));
                }
                v
            })
            .collect();
        return out.json(&Value::Array(v));
    }
    if plans.is_empty() {
        let filter = if labels.is_empty() {
            String::new()
        } else {
            format!(" with {}", labels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(" and "))
        };
        return out.line(&format!(
            "no launch plans{filter} in the store at {} (register some with the flow binary's `plans apply FILE`)",
            client.location()
        ));
    }
    let mut t = out.table(&["PLAN", "FLOW", "VERSION", "ACTIVE", "SCHEDULE", "SETS", "LABELS", "NEXT TICK"]);
    for (r, p) in plans.iter().zip(&parsed) {
        let tz = zone(p.as_ref());
        let active = match (r.deleted_at, r.active) {
            (Some(at), _) => format!("deleted {}", time(at)),
            (None, true) => "yes".to_owned(),
            (None, false) => "no".to_owned(),
        };
        let sets = match p.as_ref().map(LaunchPlan::set_source) {
            Some(SetSource::Command { .. }) => "per tick (command)".to_owned(),
            Some(SetSource::Function { .. }) => "per tick (matrix_fn)".to_owned(),
            _ => p.as_ref().map_or(0, |p| p.parameter_sets().len()).to_string(),
        };
        let paused = paused_of(r).len();
        t.add_row(vec![
            Cell::new(r.name.as_str()),
            Cell::new(r.flow.as_str()),
            Cell::new(r.version),
            Cell::new(active),
            Cell::new(p.as_ref().and_then(|p| p.schedule()).map_or_else(|| "-".to_owned(), |s| s.describe())),
            Cell::new(if paused > 0 { format!("{sets} ({paused} paused)") } else { sets.to_string() }),
            Cell::new(labels_text(r)),
            Cell::new(next_tick(r, p.as_ref()).map_or_else(|| "-".to_owned(), |n| local(n, &tz))),
        ]);
    }
    out.table_out(&t)
}

pub(crate) fn launch_json(client: &Client, l: &LaunchRecord, tz: &jiff::tz::TimeZone) -> Value {
    let status = run_status(client, l);
    json!({
        "tick": l.tick.to_string(),
        "tick_local": l.tick.to_jiff().to_zoned(tz.clone()).to_string(),
        "kind": l.kind.as_str(),
        "version": l.version,
        "state": l.state.as_str(),
        "name": l.name,
        "run": l.run.map(|r| r.to_string()),
        "pathspec": l.run.map(|r| format!("{}/{r}", l.flow)),
        "status": status,
        "note": l.note,
    })
}

/// The run's status now (a started launch's run may have ended since).
pub(crate) fn run_status(client: &Client, l: &LaunchRecord) -> Option<String> {
    if let Some(s) = l.status {
        return Some(s.as_str().to_owned());
    }
    let run = l.run?;
    client.flow(l.flow.as_str()).and_then(|f| f.run_by_id(run)).ok().map(|r| r.status().as_str().to_owned())
}

pub fn show(client: &Client, out: &Out, name: &str, ticks: usize, runs: usize) -> Result<()> {
    let rec = client.plan(name)?;
    let lp = LaunchPlan::from_json(&rec.spec).map_err(|e| Error::Usage(e.to_string()))?;
    let tz = zone(Some(&lp));
    let versions = client.plan_versions(name)?;
    let from = jiff::Timestamp::now().max(rec.cursor.map_or(jiff::Timestamp::UNIX_EPOCH, |c| c.to_jiff()));
    let upcoming: Vec<jiff::Timestamp> = lp.schedule().map(|s| s.upcoming(from, ticks)).unwrap_or_default();
    let plan_name = PlanName::new(name).map_err(|e| Error::Usage(e.to_string()))?;
    let mut recent: Vec<(String, String, Vec<LaunchRecord>)> = Vec::new();
    // Sets produced at each tick: those the plan launched lately, newest first.
    let shown_sets = sets_of(client, &lp)?;
    let failed = client.tick_failures(Some(name), 20)?;
    for set in &shown_sets {
        let q = LaunchQuery {
            plan: Some(plan_name.clone()),
            set_key: Some(set.key.clone()),
            limit: runs.max(1),
            ..Default::default()
        };
        recent.push((set.key.clone(), set.run_name(lp.name()), client.launches(&q)?));
    }
    let pending = client
        .launches(&LaunchQuery {
            plan: Some(plan_name.clone()),
            states: vec![braid_client::LaunchState::Pending],
            limit: 100_000,
            ..Default::default()
        })?
        .len();
    let states = client.set_states(Some(name), true)?;
    let paused: Vec<&ParamSetState> = states.iter().collect();
    let pause_of = |key: &str| states.iter().find(|s| s.set_key == key).and_then(|s| s.paused.as_ref());
    if out.json {
        let mut v = plan_json(&rec, Some(&lp));
        if let Value::Object(m) = &mut v {
            insert_versions_and_ticks(m, &versions, &upcoming, &tz);
            let sets: Vec<Value> = shown_sets
                .iter()
                .zip(&recent)
                .map(|(s, (_, run_name, launches))| {
                    json!({
                        "key": s.key,
                        "values": s.values,
                        "run_name": run_name,
                        "paused": pause_of(&s.key).map(|p| pause_json(&rec, Some(&lp), &s.key, p)),
                        "recent": launches.iter().map(|l| launch_json(client, l, &tz)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            m.insert("parameter_set_details".into(), json!(sets));
            m.insert("paused_sets".into(), paused_sets_json(&rec, Some(&lp), &paused));
            m.insert("pending_launches".into(), json!(pending));
            m.insert("failed_ticks".into(), failed.iter().map(|f| tick_failure_json(f, &tz)).collect());
        }
        return out.json(&v);
    }
    let spec = lp.spec();
    let inputs = |m: &BTreeMap<String, Value>| {
        if m.is_empty() {
            "-".to_owned()
        } else {
            m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        }
    };
    let mut rows = vec![
        ("plan", rec.name.to_string()),
        ("flow", rec.flow.to_string()),
        ("version", format!("{} (of {}; updated {})", rec.version, versions.len(), time(rec.updated_at))),
        (
            "active",
            if rec.active {
                format!("yes, since {}", time_opt(rec.active_since))
            } else {
                "no (`braid plan activate` turns it on)".to_owned()
            },
        ),
        ("schedule", lp.schedule().map_or_else(|| "none (manual launches only)".to_owned(), |s| s.describe())),
        ("catch-up", lp.catch_up().to_string()),
        ("concurrency", format!("{} (per parameter set)", lp.concurrency())),
        (
            "pause after",
            lp.pause_after_failures()
                .map_or_else(|| "never".to_owned(), |n| format!("{n} consecutive failed runs of a parameter set")),
        ),
        ("labels", if rec.labels.is_empty() { "-".to_owned() } else { labels_text(&rec) }),
        ("parameter sets", sets_from_text(&lp)),
        ("fixed", inputs(&spec.fixed)),
        ("defaults", inputs(&spec.defaults)),
    ];
    if let Some(d) = &spec.description {
        rows.insert(2, ("description", d.clone()));
    }
    if !spec.matrix.is_empty() {
        let m = spec
            .matrix
            .iter()
            .map(|(k, v)| format!("{k} = [{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        rows.push(("matrix", m));
    }
    if let Some(c) = rec.cursor {
        rows.push(("last tick", local(c.to_jiff(), &tz)));
    }
    if pending > 0 {
        rows.push(("pending", format!("{pending} launch(es) waiting for a scheduler or their turn")));
    }
    if let Some(at) = rec.deleted_at {
        rows.insert(1, ("deleted", format!("at {} (apply its plan file again to register it anew)", time(at))));
    }
    for s in &states {
        let Some(p) = &s.paused else { continue };
        let run_name =
            shown_sets.iter().find(|x| x.key == s.set_key).map_or_else(|| s.set_key.clone(), |x| x.run_name(lp.name()));
        let runs: Vec<String> = p.runs.iter().map(|r| format!("{}/{r}", rec.flow)).collect();
        rows.push((
            "paused",
            format!(
                "{run_name} since {}: {} (failed runs {})",
                time(p.at),
                pause_reason(&rec, Some(&lp), &s.set_key, p),
                runs.join(", ")
            ),
        ));
    }
    out.fields(&rows)?;
    if lp.schedule().is_some() {
        out.heading(&format!(
            "next ticks ({}){}",
            tz.iana_name().unwrap_or("UTC"),
            if rec.active { "" } else { ", if activated" }
        ))?;
        let mut text = String::new();
        for t in &upcoming {
            text.push_str(&format!("  {}\n", local(*t, &tz)));
        }
        out.print(&text)?;
    }
    out.heading(&format!("versions ({})", versions.len()))?;
    let mut vt = out.table(&["VERSION", "REGISTERED", "HASH"]);
    for v in &versions {
        vt.add_row(vec![
            Cell::new(v.version),
            Cell::new(time(v.created_at)),
            Cell::new(&v.hash[..12.min(v.hash.len())]),
        ]);
    }
    out.table_out(&vt)?;
    if !failed.is_empty() {
        out.heading(&format!(
            "failed ticks ({}{}): their parameter sets could not be produced, nothing launched",
            failed.len(),
            if failed.len() == 20 { ", the newest" } else { "" }
        ))?;
        let mut ft = out.table(&["TICK", "KIND", "VERSION", "FAILURES", "ERROR"]);
        for f in &failed {
            ft.add_row(vec![
                Cell::new(local(f.tick.to_jiff(), &tz)),
                Cell::new(f.kind.as_str()),
                Cell::new(f.version),
                Cell::new(f.failures),
                Cell::new(f.error.trim()),
            ]);
        }
        out.table_out(&ft)?;
        if lp.schedule().is_some() {
            out.line(&format!(
                "  retry a failed tick with the flow binary: `backfill {} --from TICK --to TICK+1`",
                rec.name
            ))?;
        }
    }
    let heading = if lp.has_dynamic_sets() {
        format!("parameter sets launched lately ({}) and their latest launches", shown_sets.len())
    } else {
        format!("parameter sets ({}) and their latest launches", lp.parameter_sets().len())
    };
    out.heading(&heading)?;
    let mut st = out.table(&["RUN NAME", "TICK", "KIND", "VERSION", "RUN", "STATUS"]);
    for (_, run_name, launches) in &recent {
        if launches.is_empty() {
            st.add_row(vec![
                Cell::new(run_name),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("never launched"),
            ]);
        }
        for l in launches {
            let status = run_status(client, l).unwrap_or_else(|| l.state.as_str().to_owned());
            let status = match (&l.note, l.state) {
                (Some(n), braid_client::LaunchState::Skipped) => format!("skipped: {}", cut(n, 60)),
                _ => status,
            };
            st.add_row(vec![
                Cell::new(run_name),
                Cell::new(local(l.tick.to_jiff(), &tz)),
                Cell::new(l.kind.as_str()),
                Cell::new(l.version),
                Cell::new(l.run.map_or_else(|| "-".to_owned(), |r| format!("{}/{r}", l.flow))),
                Cell::new(status),
            ]);
        }
    }
    out.table_out(&st)
}

/// Which plans an activation changes: names or labels, exactly one of the two.
pub(crate) fn selector(names: &[String], labels: &[Label]) -> Result<PlanSelector> {
    match (names.is_empty(), labels.is_empty()) {
        (false, true) => Ok(PlanSelector::Names(
            names.iter().map(|n| PlanName::new(n).map_err(|e| Error::Usage(e.to_string()))).collect::<Result<_>>()?,
        )),
        (true, false) => Ok(PlanSelector::Labels(labels.to_vec())),
        (true, true) => Err(Error::Usage("name the plans, or select them with --label key=value".into())),
        (false, false) => Err(Error::Usage("give plan names or --label, not both".into())),
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
    Ok(rt.block_on(f))
}

/// Activates or deactivates the selected plans in one atomic write: what `braid plan
/// activate|deactivate` and the web UI's buttons both do. Returns each selected plan and
/// whether it changed.
pub(crate) async fn write_active(store: &Store, sel: &PlanSelector, active: bool) -> Result<Vec<(PlanName, bool)>> {
    plan::set_active(store, sel, active, Timestamp::now()).await.map_err(plan_error)
}

pub fn set_active(store: &Store, out: &Out, names: &[String], labels: &[Label], active: bool) -> Result<()> {
    let sel = selector(names, labels)?;
    let changed = block_on(write_active(store, &sel, active))??;
    let verb = if active { "activated" } else { "deactivated" };
    if out.json {
        let v: Vec<Value> = changed.iter().map(|(n, c)| json!({"plan": n.as_str(), "changed": c})).collect();
        return out.json(&json!({"active": active, "plans": v}));
    }
    if changed.is_empty() {
        let what = labels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(" and ");
        return out.line(&format!("no plan has {what}; nothing changed"));
    }
    let did: Vec<&str> = changed.iter().filter(|(_, c)| *c).map(|(n, _)| n.as_str()).collect();
    let already: Vec<&str> = changed.iter().filter(|(_, c)| !*c).map(|(n, _)| n.as_str()).collect();
    let mut line = format!("{verb} {} plan(s)", did.len());
    if !did.is_empty() {
        line.push_str(&format!(": {}", did.join(", ")));
    }
    if !already.is_empty() {
        line.push_str(&format!(
            " ({} already {}: {})",
            already.len(),
            if active { "active" } else { "inactive" },
            already.join(", ")
        ));
    }
    out.line(&line)
}

fn plan_error(e: plan::PlanError) -> Error {
    if e.is_usage() { Error::Usage(e.to_string()) } else { Error::Failed(e.to_string()) }
}

/// Deletes the selected plans in one atomic write: `braid plan delete`. Unknown names are
/// a usage error naming each of them; nothing is deleted then.
pub fn delete(store: &Store, out: &Out, names: &[String], labels: &[Label]) -> Result<()> {
    let sel = selector(names, labels)?;
    let deleted = block_on(plan::delete_plans(store, &sel, Timestamp::now()))?.map_err(|e| match e {
        plan::PlanError::Store(e) if e.is_not_found() => Error::Usage(e.to_string()),
        e => plan_error(e),
    })?;
    if out.json {
        let v: Vec<Value> = deleted.iter().map(|(n, c)| json!({"plan": n.as_str(), "changed": c})).collect();
        return out.json(&json!({"deleted": v}));
    }
    if deleted.is_empty() {
        let what = labels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(" and ");
        return out.line(&format!("no plan has {what}; nothing deleted"));
    }
    let did: Vec<&str> = deleted.iter().filter(|(_, c)| *c).map(|(n, _)| n.as_str()).collect();
    let already: Vec<&str> = deleted.iter().filter(|(_, c)| !*c).map(|(n, _)| n.as_str()).collect();
    let mut line = format!("deleted {} plan(s)", did.len());
    if !did.is_empty() {
        line.push_str(&format!(": {}", did.join(", ")));
    }
    if !already.is_empty() {
        line.push_str(&format!(" ({} deleted before: {})", already.len(), already.join(", ")));
    }
    out.line(&line)?;
    out.note("they launch nothing more; their runs keep naming them; `braid plan list --all` shows them");
    Ok(())
}

/// Resumes paused parameter sets of a plan: `braid plan resume-set PLAN --param k=v`.
pub fn resume_set(store: &Store, out: &Out, name: &str, params: &[String]) -> Result<()> {
    let select = crate::split_params(params).map_err(Error::Usage)?;
    let resumed = block_on(plan::resume_sets(store, name, &select, Timestamp::now()))?.map_err(plan_error)?;
    if out.json {
        let v: Vec<Value> = resumed
            .iter()
            .map(|r| {
                json!({
                    "key": r.set.key,
                    "values": r.set.values,
                    "run_name": r.run_name,
                    "was_paused": r.pause.is_some(),
                    "failures": r.pause.as_ref().map(|p| p.failures),
                    "runs": r.pause.as_ref().map(|p| p.runs.iter().map(|x| x.to_string()).collect::<Vec<_>>()),
                })
            })
            .collect();
        return out.json(&json!({"plan": name, "resumed": v}));
    }
    let was: Vec<String> = resumed
        .iter()
        .filter_map(|r| r.pause.as_ref().map(|p| format!("{} (paused after {} failures)", r.run_name, p.failures)))
        .collect();
    let not: Vec<&str> = resumed.iter().filter(|r| r.pause.is_none()).map(|r| r.run_name.as_str()).collect();
    let mut line = format!("resumed {} paused parameter set(s) of plan {name}", was.len());
    if !was.is_empty() {
        line.push_str(&format!(": {}", was.join(", ")));
    }
    if !not.is_empty() {
        line.push_str(&format!("; {} not paused (their failure count restarts): {}", not.len(), not.join(", ")));
    }
    out.line(&line)?;
    if !was.is_empty() {
        out.line("they launch again from their next tick")?;
    }
    Ok(())
}

/// Records a launch request of a plan now (pending launches a running scheduler of the
/// plan's flow adopts): what `braid plan launch` and the web UI's button both do. Returns
/// the launches and the live schedulers that will start them.
pub(crate) async fn request_launch(
    store: &Store,
    name: &str,
    overrides: &[(String, String)],
) -> Result<(Vec<LaunchRecord>, Vec<braid_client::SchedulerRecord>)> {
    plan::request_launch(store, name, overrides, jiff::Timestamp::now(), LIVE).await.map_err(plan_error)
}

pub fn launch(store: &Store, out: &Out, name: &str, params: &[String]) -> Result<()> {
    let overrides = crate::split_params(params).map_err(Error::Usage)?;
    let (launches, live) = block_on(request_launch(store, name, &overrides))??;
    let flow = launches.first().map(|l| l.flow.to_string()).unwrap_or_default();
    if out.json {
        return out.json(&json!({
            "plan": name,
            "version": launches.first().map(|l| l.version),
            "launches": launches.iter().map(|l| json!({"key": l.key, "name": l.name, "params": l.params})).collect::<Vec<_>>(),
            "schedulers": live.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        }));
    }
    let names: Vec<&str> = launches.iter().map(|l| l.name.as_str()).collect();
    out.line(&format!("requested {} launch(es) of plan {name}: {}", launches.len(), names.join(", ")))?;
    if live.is_empty() {
        out.note(&format!(
            "note: no scheduler of flow `{flow}` is running; the launches wait until one starts (`<flow binary> scheduler`), or launch in-process with `<flow binary> plans launch {name}`"
        ));
    } else {
        out.line(&format!(
            "a running scheduler of flow `{flow}` starts them within a second; `braid plan show {name}` follows them"
        ))?;
    }
    Ok(())
}
