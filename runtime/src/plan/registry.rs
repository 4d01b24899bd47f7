//! Registering plans against the flows a binary hosts, activation, and reading times
//! people type.

use std::collections::BTreeSet;
use std::sync::Arc;

use braid_core::{FlowName, PlanName, Timestamp};
use braid_store::{FlowRecord, PlanDraft, PlanSelector, Registration, Store};
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

use super::error::{PlanError, PlanProblem, PlanResult};
use super::model::LaunchPlan;
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
    /// How many parameter sets it launches per tick.
    pub sets: usize,
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
