//! Registering plans against the flows a binary hosts, activation, deletion, resuming
//! paused parameter sets, and reading times people type.

use std::collections::BTreeSet;
use std::sync::Arc;

use braid_core::{FlowName, PlanName, Timestamp};
use braid_store::{FlowRecord, PlanDraft, PlanSelector, Registration, SetPause, Store};
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use serde_json::Value;

use super::error::{PlanError, PlanProblem, PlanResult};
use super::model::{LaunchPlan, ParamSet, canonical_json};
use crate::flow::Flow;

/// What registering one plan did.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The plan.
    pub plan: PlanName,
    /// Its flow.
    pub flow: FlowName,
    /// Whether it is new, a new version, or unchanged (and its version).
    pub outcome: Registration,
    /// How many parameter sets it launches per tick (0 for sets produced at each tick).
    pub sets: usize,
    /// Where its parameter sets come from.
    pub sets_from: super::SetSource,
    /// Its next tick after the registration, if it has a schedule.
    pub next_tick: Option<jiff::Timestamp>,
}

/// Validates `plans` against the flows of this binary and registers them in one atomic
/// write: if any plan is invalid, none is registered and the error names each bad plan.
/// `source` names the batch in errors (a file path, `code`).
pub async fn register_plans(
    store: &Store,
    flows: &[Arc<Flow>],
    plans: Vec<LaunchPlan>,
    source: &str,
) -> PlanResult<Vec<Registered>> {
    register_plans_at(store, flows, plans, source, Timestamp::now()).await
}

/// Checks `plans` (declared in code) against the flows of this binary as
/// [`register_plans`] does, registering nothing: every problem of every plan in one
/// error.
pub fn check_plans_against(flows: &[Arc<Flow>], plans: &[LaunchPlan]) -> PlanResult<()> {
    let problems = check_plans(flows, plans);
    if problems.is_empty() { Ok(()) } else { Err(PlanError::rejected("code", plans.len(), problems)) }
}

/// [`register_plans`] at a given time (tests with an injected clock).
pub async fn register_plans_at(
    store: &Store,
    flows: &[Arc<Flow>],
    plans: Vec<LaunchPlan>,
    source: &str,
    now: Timestamp,
) -> PlanResult<Vec<Registered>> {
    let problems = check_plans(flows, &plans);
    if !problems.is_empty() {
        return Err(PlanError::rejected(source, plans.len(), problems));
    }
    let mut used: BTreeSet<&FlowName> = BTreeSet::new();
    for p in &plans {
        used.insert(p.flow());
    }
    for f in flows.iter().filter(|f| used.contains(f.name())) {
        let spec = serde_json::to_value(f.spec())
            .map_err(|e| PlanError::Usage(format!("flow `{}`: cannot serialize its spec: {e}", f.name())))?;
        store.records.put_flow(FlowRecord { name: f.name().clone(), spec, updated_at: now }).await?;
    }
    let drafts: Vec<PlanDraft> = plans
        .iter()
        .map(|p| PlanDraft {
            name: p.name().clone(),
            flow: p.flow().clone(),
            labels: p.labels().clone(),
            spec: p.to_json(),
            hash: p.content_hash(),
            active: p.initially_active(),
        })
        .collect();
    let outcomes = store.plans.register_plans(drafts, now).await?;
    Ok(plans
        .iter()
        .zip(outcomes)
        .map(|(p, outcome)| Registered {
            plan: p.name().clone(),
            flow: p.flow().clone(),
            outcome,
            sets: p.parameter_sets().len(),
            sets_from: p.set_source(),
            next_tick: p.schedule().and_then(|s| s.next_after(now.to_jiff())),
        })
        .collect())
}

/// Every problem of a batch against the flows of this binary: each plan's flow is
/// hosted, its inputs fit the flow's parameters, no name is declared twice.
pub(crate) fn check_plans(flows: &[Arc<Flow>], plans: &[LaunchPlan]) -> Vec<PlanProblem> {
    let hosted = || flows.iter().map(|f| format!("`{}`", f.name())).collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for p in plans {
        if !seen.insert(p.name().clone()) {
            out.push(PlanProblem::new(p.name().as_str(), "name", "declared twice in this batch; keep one"));
        }
        match flows.iter().find(|f| f.name() == p.flow()) {
            Some(f) => out.extend(p.check_flow(f.spec())),
            None => out.push(PlanProblem::new(
                p.name().as_str(),
                "flow",
                format!(
                    "`{}` is not hosted by this binary (it hosts {}); apply the plan with the binary that runs `{}`",
                    p.flow(),
                    hosted(),
                    p.flow()
                ),
            )),
        }
    }
    out
}

/// Activates or deactivates plans by name or label, in one atomic write; returns each
/// selected plan and whether it changed.
pub async fn set_active(
    store: &Store,
    selector: &PlanSelector,
    active: bool,
    now: Timestamp,
) -> PlanResult<Vec<(PlanName, bool)>> {
    Ok(store.plans.set_plans_active(selector, active, now).await?)
}

/// Deletes plans by name or label, in one atomic write: they stop launching (a running
/// scheduler skips what it had queued of them), leave `braid plan list` (`--all` shows
/// them), and their runs keep naming them. Registering a deleted name again starts a new
/// history: version numbers continue, activation, cursor and parameter set states start
/// afresh. Returns each selected plan and whether it changed (false: deleted before);
/// unknown names are refused all at once.
pub async fn delete_plans(store: &Store, selector: &PlanSelector, now: Timestamp) -> PlanResult<Vec<(PlanName, bool)>> {
    Ok(store.plans.delete_plans(selector, now).await?)
}

/// The note of a parameter set paused after `failures` consecutive failed runs (its
/// skipped ticks carry it): starts `paused after N consecutive failures`, then says how
/// to resume it.
pub fn pause_note(plan: &PlanName, set: &ParamSet, failures: u32) -> String {
    let params: String = set.values.iter().map(|(k, v)| format!(" --param {k}={}", param_text(v))).collect();
    format!("paused after {failures} consecutive failures; `braid plan resume-set {plan}{params}` resumes it")
}

/// A parameter value as `--param` takes it: strings bare, anything else as JSON.
fn param_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => canonical_json(v),
    }
}

/// Whether `text` (a `--param` value) names `v`: its string, its JSON, or JSON equal to it.
fn names_value(text: &str, v: &Value) -> bool {
    param_text(v) == text || serde_json::from_str::<Value>(text).is_ok_and(|t| &t == v)
}

/// The parameter sets among `all` (the plan's, or those it launched) whose values match
/// every `(name, value)` of `select` (each name a parameter of its sets, each value one
/// of them); none given: every set. Every problem at once.
pub fn select_sets<'p>(
    plan: &LaunchPlan,
    all: &'p [ParamSet],
    select: &[(String, String)],
) -> PlanResult<Vec<&'p ParamSet>> {
    let name = plan.name().as_str();
    let mut problems = Vec::new();
    let mut sets: Vec<&ParamSet> = all.iter().collect();
    for (k, text) in select {
        let at = format!("--param {k}={text}");
        let values: BTreeSet<String> = all.iter().filter_map(|s| s.values.get(k)).map(param_text).collect();
        if values.is_empty() {
            let params: BTreeSet<&str> = all.iter().flat_map(|s| s.values.keys().map(String::as_str)).collect();
            let known = if params.is_empty() {
                "the plan has a single parameter set; leave out --param".to_owned()
            } else {
                format!("its parameter sets vary {}", params.into_iter().collect::<Vec<_>>().join(", "))
            };
            problems.push(PlanProblem::new(name, at, format!("`{k}` is not a parameter of the plan's sets; {known}")));
            continue;
        }
        if !all.iter().any(|s| s.values.get(k).is_some_and(|v| names_value(text, v))) {
            let shown: Vec<String> = values.into_iter().collect();
            problems.push(PlanProblem::new(
                name,
                at,
                format!("no parameter set has {k} = {text}; its values are {}", shown.join(", ")),
            ));
            continue;
        }
        sets.retain(|s| s.values.get(k).is_some_and(|v| names_value(text, v)));
    }
    if problems.is_empty() && sets.is_empty() {
        problems.push(PlanProblem::new(name, "", "no parameter set has every value the --params select; drop one"));
    }
    if !problems.is_empty() {
        return Err(PlanError::BadSelection { plan: name.to_owned(), problems });
    }
    Ok(sets)
}

/// A parameter set resumed by [`resume_sets`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResumedSet {
    /// The set.
    pub set: ParamSet,
    /// Its run name, `<plan>_<values>`.
    pub run_name: String,
    /// The pause it had; `None`: it was not paused (its failure count restarts anyway).
    pub pause: Option<SetPause>,
}

/// Resumes the parameter sets of plan `name` that `select` picks ([`select_sets`]): they
/// launch again from their next tick, and failures before now no longer count towards a
/// pause. One atomic write. A deleted or unknown plan is an error.
pub async fn resume_sets(
    store: &Store,
    name: &str,
    select: &[(String, String)],
    now: Timestamp,
) -> PlanResult<Vec<ResumedSet>> {
    let rec = super::launch::get_live_plan(store, name).await?;
    let plan = LaunchPlan::from_json(&rec.spec)?;
    let known = known_sets(store, &plan).await?;
    let sets = select_sets(&plan, &known, select)?;
    let keys: Vec<String> = sets.iter().map(|s| s.key.clone()).collect();
    let resumed = store.plans.resume_sets(&rec.name, &keys, now).await?;
    Ok(sets
        .into_iter()
        .zip(resumed)
        .map(|(set, (_, pause))| ResumedSet { set: set.clone(), run_name: set.run_name(plan.name()), pause })
        .collect())
}

/// The parameter sets of `plan`: its own, or, for sets produced at each tick, those it
/// has launched (its newest 1000 launches) or has a recorded state for (a paused set).
pub(crate) async fn known_sets(store: &Store, plan: &LaunchPlan) -> PlanResult<Vec<ParamSet>> {
    if !plan.has_dynamic_sets() {
        return Ok(plan.parameter_sets().to_vec());
    }
    let mut keys: BTreeSet<String> =
        store.plans.list_set_states(Some(plan.name()), false).await?.into_iter().map(|s| s.set_key).collect();
    let q = braid_store::LaunchQuery { plan: Some(plan.name().clone()), limit: 1000, ..Default::default() };
    keys.extend(store.plans.list_launches(&q).await?.into_iter().map(|l| l.set_key));
    Ok(keys.iter().filter_map(|k| ParamSet::from_key(k)).collect())
}

/// Reads a time as people type it: RFC 3339 with an offset (`2026-03-02T14:00:00Z`,
/// `2026-03-02T09:00-05:00`), or a wall-clock time in `tz` (`2026-03-02T09:00`,
/// `2026-03-02 09:00:00`), or a date (midnight in `tz`). A wall-clock time that happens
/// twice is the first; one that does not exist is moved forward by the gap.
pub(crate) fn parse_time(text: &str, tz: &TimeZone) -> Result<jiff::Timestamp, String> {
    let t = text.trim();
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(ts);
    }
    let civil = t
        .parse::<DateTime>()
        .or_else(|_| t.replacen(' ', "T", 1).parse::<DateTime>())
        .or_else(|_| t.parse::<Date>().map(|d| d.to_datetime(jiff::civil::Time::midnight())));
    match civil {
        Ok(dt) => tz.to_ambiguous_zoned(dt).compatible().map(|z| z.timestamp()).map_err(|e| format!("{text:?}: {e}")),
        Err(_) => Err(format!(
            "{text:?} is not a time; write 2026-03-02T09:00 (in the plan's time zone), 2026-03-02T14:00:00Z, or a date"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_people_type_them() {
        let ny = TimeZone::get("America/New_York").unwrap();
        let z = |s: &str| parse_time(s, &ny).unwrap().to_string();
        assert_eq!(z("2026-03-02T09:00"), "2026-03-02T14:00:00Z");
        assert_eq!(z("2026-03-02 09:00:00"), "2026-03-02T14:00:00Z");
        assert_eq!(z("2026-03-02"), "2026-03-02T05:00:00Z");
        assert_eq!(z("2026-03-02T09:00:00Z"), "2026-03-02T09:00:00Z");
        assert_eq!(z("2026-03-02T09:00:00+01:00"), "2026-03-02T08:00:00Z");
        assert!(parse_time("yesterday", &ny).unwrap_err().contains("2026-03-02T09:00"));
    }
}
