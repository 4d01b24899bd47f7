//! Launches outside the schedule: `backfill` (the ticks of a past interval, through the
//! same claims as the scheduler) and manual launches (in this process, or recorded as a
//! request that a running scheduler starts).

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_core::{FlowName, PlanName, RunId, Timestamp};
use braid_dag::FlowSpec;
use braid_store::{LaunchKind, LaunchRecord, LaunchState, PlanQuery, PlanRecord, SchedulerRecord, Store};
use serde_json::Value;

use super::dispatch::{DispatchOptions, LaunchEnv, LaunchOutcome, Launcher, heard_within};
use super::error::{PlanError, PlanProblem, PlanResult};
use super::model::{LaunchPlan, ParamSet};
use super::registry::parse_time;
use crate::flow::Flow;
use crate::params::GivenParams;

/// The claim key of a (plan, tick, parameter set): the same for the scheduler and for
/// backfill, whatever the plan's version, so a tick of a set launches at most once.
pub fn launch_key(plan: &PlanName, tick: jiff::Timestamp, set_key: &str) -> String {
    format!("{plan}/{tick}/{set_key}")
}

#[allow(clippy::too_many_arguments)]
fn record(
    plan: &LaunchPlan,
    version: u32,
    kind: LaunchKind,
    tick: jiff::Timestamp,
    set: &ParamSet,
    key: String,
    params: BTreeMap<String, Value>,
    holder: Option<String>,
    now: Timestamp,
) -> LaunchRecord {
    LaunchRecord {
        key,
        plan: plan.name().clone(),
        version,
        flow: plan.flow().clone(),
        kind,
        tick: Timestamp::from_jiff(tick),
        set_key: set.key.clone(),
        params,
        name: set.run_name(plan.name()),
        state: LaunchState::Pending,
        holder,
        run: None,
        status: None,
        note: None,
        created_at: now,
        updated_at: now,
    }
}

/// One pending launch per parameter set in `sets` (the plan's, or those produced for
/// the tick) of `plan` for `tick`, held by `holder`.
pub(crate) fn scheduled_launches(
    plan: &LaunchPlan,
    version: u32,
    kind: LaunchKind,
    tick: jiff::Timestamp,
    sets: &[ParamSet],
    holder: &str,
    now: Timestamp,
) -> Vec<LaunchRecord> {
    sets.iter()
        .map(|set| {
            let key = launch_key(plan.name(), tick, &set.key);
            record(plan, version, kind, tick, set, key, plan.params_for(set), Some(holder.to_owned()), now)
        })
        .collect()
}

/// Reads a registered plan (latest version) and checks that this binary runs its flow.
async fn load(store: &Store, flows: &[Arc<Flow>], name: &str) -> PlanResult<(PlanRecord, LaunchPlan, Arc<Flow>)> {
    let rec = get_live_plan(store, name).await?;
    let plan = LaunchPlan::from_json(&rec.spec)?;
    let flow = flows.iter().find(|f| f.name() == plan.flow()).cloned().ok_or_else(|| {
        PlanError::Usage(format!(
            "plan `{name}` runs flow `{}`, which this binary does not host (it hosts {})",
            plan.flow(),
            flows.iter().map(|f| format!("`{}`", f.name())).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let problems = plan.check_flow(flow.spec());
    if !problems.is_empty() {
        return Err(PlanError::NoLongerFits {
            plan: name.to_owned(),
            version: rec.version,
            flow: plan.flow().to_string(),
            problems,
        });
    }
    Ok((rec, plan, flow))
}

/// A registered plan by name; the error lists registered plans when it is unknown.
pub async fn get_plan(store: &Store, name: &str) -> PlanResult<PlanRecord> {
    let plan = PlanName::new(name)?;
    if let Some(rec) = store.plans.get_plan(&plan).await? {
        return Ok(rec);
    }
    let known: Vec<String> = store
        .plans
        .list_plans(&PlanQuery { without_spec: true, ..Default::default() })
        .await?
        .into_iter()
        .map(|p| p.name.to_string())
        .collect();
    let hint = if known.is_empty() {
        " (no plan is registered)".to_owned()
    } else {
        let shown: Vec<&str> = known.iter().take(10).map(String::as_str).collect();
        format!(" (registered: {}{})", shown.join(", "), if known.len() > 10 { ", ..." } else { "" })
    };
    Err(PlanError::UnknownPlan { plan: name.to_owned(), hint })
}

/// [`get_plan`], refusing a deleted plan ([`PlanError::Deleted`]).
pub(crate) async fn get_live_plan(store: &Store, name: &str) -> PlanResult<PlanRecord> {
    let rec = get_plan(store, name).await?;
    match rec.deleted_at {
        Some(at) => Err(PlanError::Deleted { plan: name.to_owned(), at: at.to_jiff() }),
        None => Ok(rec),
    }
}

/// How a backfill goes.
#[derive(Debug, Clone)]
/// Fields may be added: start from `BackfillOptions::default()`.
pub struct BackfillOptions {
    /// Limits and liveness, as for a scheduler.
    pub dispatch: DispatchOptions,
    /// List what would launch; claim and run nothing.
    pub dry_run: bool,
    /// Refuse ranges with more ticks than this.
    pub max_ticks: usize,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions { dispatch: DispatchOptions::default(), dry_run: false, max_ticks: 10_000 }
    }
}

/// What a backfill did.
#[derive(Debug, Clone)]
pub struct BackfillReport {
    /// The plan backfilled.
    pub plan: PlanName,
    /// Its version whose inputs the launches got.
    pub version: u32,
    /// Its flow.
    pub flow: FlowName,
    /// The plan's time zone (IANA name), in which `from` and `to` were read.
    pub time_zone: String,
    /// The start of the interval (included).
    pub from: jiff::Timestamp,
    /// The end of the interval (left out).
    pub to: jiff::Timestamp,
    /// The ticks in `[from, to)`.
    pub ticks: Vec<jiff::Timestamp>,
    /// Parameter sets per tick (for sets produced at each tick: those of the first tick
    /// that produced them).
    pub sets: usize,
    /// Ticks whose parameter sets could not be produced (the plan's `matrix_command` or
    /// `matrix_fn` failed), with why: nothing launched for them, and (unless a dry run)
    /// each is recorded as a failed tick.
    pub failed_ticks: Vec<(jiff::Timestamp, String)>,
    /// Launches this backfill claimed, and how each ended.
    pub launched: Vec<LaunchOutcome>,
    /// Launches someone claimed before (the scheduler, an earlier backfill).
    pub already: Vec<LaunchRecord>,
    /// With `dry_run`: what would be claimed.
    pub would_launch: Vec<LaunchRecord>,
    /// Claimed launches this process could not start (waiting for runs of another
    /// scheduler): handed to the running schedulers.
    pub handed_over: u64,
}

/// Launches the ticks of `plan` in `[from, to)` through the same claims as the scheduler,
/// so a tick of a parameter set that was launched (by the scheduler or an earlier
/// backfill) is not launched again. `from` and `to` are RFC 3339 times with an offset, or
/// wall-clock times or dates in the plan's time zone. Runs go in this process under the plan's concurrency policy and
/// the global limit; returns when they have ended.
pub async fn backfill(
    env: &LaunchEnv,
    plan: &str,
    from: &str,
    to: &str,
    opts: BackfillOptions,
) -> PlanResult<BackfillReport> {
    let (store, flows, clock) = (&env.store, &env.flows[..], env.clock.clone());
    let (rec, lp, flow) = load(store, flows, plan).await?;
    let schedule = lp.schedule().ok_or_else(|| {
        PlanError::Usage(format!(
            "plan `{plan}` has no schedule (no `cron` or `every`), so it has no ticks to backfill; launch it by hand with `plans launch {plan}`"
        ))
    })?;
    let tz = schedule.time_zone();
    let tz_name = tz.iana_name().unwrap_or("UTC").to_owned();
    let from_t = parse_time(from, &tz).map_err(|e| PlanError::Usage(format!("--from {e}")))?;
    let to_t = parse_time(to, &tz).map_err(|e| PlanError::Usage(format!("--to {e}")))?;
    let now = clock.now();
    if from_t >= to_t {
        return Err(PlanError::Usage(format!(
            "--from {} is not before --to {}; backfill launches the ticks in [from, to)",
            from_t.to_zoned(tz.clone()),
            to_t.to_zoned(tz.clone())
        )));
    }
    if to_t > now {
        return Err(PlanError::Usage(format!(
            "--to {} is in the future (now is {}); backfill launches past ticks only, the scheduler launches the rest",
            to_t.to_zoned(tz.clone()),
            now.to_zoned(tz.clone())
        )));
    }
    let ticks = schedule.ticks_between(from_t, to_t, opts.max_ticks).map_err(|limit| {
        PlanError::Usage(format!(
            "more than {limit} ticks of {} between --from and --to; narrow the range or raise --max-ticks",
            schedule.describe()
        ))
    })?;
    let d = Arc::new(Launcher::new(env, "backfill", opts.dispatch.clone()));
    let now_ts = Timestamp::from_jiff(now);
    let mut launches = Vec::new();
    let mut failed_ticks = Vec::new();
    let mut sets = lp.parameter_sets().len();
    for (i, t) in ticks.iter().enumerate() {
        // A dry run writes nothing, not even a failed tick.
        let produced = if opts.dry_run {
            super::matrix::produce_sets(&lp, rec.version, flow.spec(), *t, &d.matrix_fns).await
        } else {
            d.produce_sets(&lp, rec.version, *t, LaunchKind::Backfill).await
        };
        match produced {
            Ok(s) => {
                if lp.has_dynamic_sets() && i == failed_ticks.len() {
                    sets = s.len();
                }
                launches.extend(scheduled_launches(&lp, rec.version, LaunchKind::Backfill, *t, &s, &d.id, now_ts));
            }
            Err(e) => failed_ticks.push((*t, e)),
        }
    }
    let mut report = BackfillReport {
        plan: rec.name.clone(),
        version: rec.version,
        flow: rec.flow.clone(),
        time_zone: tz_name,
        from: from_t,
        to: to_t,
        ticks,
        sets,
        failed_ticks,
        launched: Vec::new(),
        already: Vec::new(),
        would_launch: Vec::new(),
        handed_over: 0,
    };
    if opts.dry_run {
        for l in launches {
            match store.plans.get_launch(&l.key).await? {
                Some(existing) => report.already.push(existing),
                None => report.would_launch.push(l),
            }
        }
        return Ok(report);
    }
    d.cache_plan(rec.version, Arc::new(lp));
    d.heartbeat(true).await?;
    let won = store.plans.claim_launches(launches.clone()).await?;
    let mut mine = Vec::new();
    for (l, w) in launches.into_iter().zip(won) {
        if w {
            mine.push(l);
        } else if let Some(existing) = store.plans.get_launch(&l.key).await? {
            report.already.push(existing);
        }
    }
    d.enqueue(mine).await;
    let result = d.drain().await;
    report.handed_over = d.shutdown().await?;
    result?;
    report.launched = d.take_outcomes();
    report.launched.sort_by(|a, b| (a.tick, &a.name).cmp(&(b.tick, &b.name)));
    Ok(report)
}

/// Manual launches of `plan`: one per parameter set, or only the sets matching
/// `overrides` given for matrix parameters; other overrides replace defaults (fixed
/// inputs cannot be overridden). `holder` `None` records them as a request any
/// scheduler of the flow may start.
pub(crate) fn manual_launches(
    plan: &LaunchPlan,
    version: u32,
    flow: &FlowSpec,
    all_sets: &[ParamSet],
    overrides: &[(String, String)],
    now: jiff::Timestamp,
    holder: Option<String>,
) -> PlanResult<Vec<LaunchRecord>> {
    let mut sets: Vec<&ParamSet> = all_sets.iter().collect();
    let mut extra: BTreeMap<String, Value> = BTreeMap::new();
    let mut given = GivenParams::new(&flow.params);
    let mut problems = Vec::new();
    for (k, text) in overrides {
        let at = format!("--param {k}={text}");
        let v = given.text(k, text);
        problems.extend(given.take_problems().into_iter().map(|(at, p)| PlanProblem::new(plan.name().as_str(), at, p)));
        let Some(v) = v else { continue };
        let mut problem = |message: String| problems.push(PlanProblem::new(plan.name().as_str(), at.clone(), message));
        if let Some(fixed) = plan.fixed().get(k) {
            problem(format!(
                "parameter `{k}` is fixed by the plan to {fixed}; fixed inputs cannot be overridden (change `fixed` in the plan file, or run the flow directly with `run --param`)"
            ));
            continue;
        }
        if all_sets.iter().any(|s| s.values.contains_key(k)) {
            let values: Vec<String> = all_sets
                .iter()
                .filter_map(|s| s.values.get(k).map(|v| v.to_string()))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            sets.retain(|s| s.values.get(k) == Some(&v));
            if !all_sets.iter().any(|s| s.values.get(k) == Some(&v)) {
                problem(format!("the plan has no parameter set with {k} = {v}; its values are {}", values.join(", ")));
            }
        } else {
            extra.insert(k.clone(), v);
        }
    }
    if problems.is_empty() && sets.is_empty() {
        problems.push(PlanProblem::new(
            plan.name().as_str(),
            "",
            "no parameter set has every value the --params select; drop one of them",
        ));
    }
    if !problems.is_empty() {
        return Err(PlanError::BadLaunch { plan: plan.name().to_string(), problems });
    }
    let request = RunId::generate();
    let now_ts = Timestamp::from_jiff(now);
    Ok(sets
        .into_iter()
        .map(|set| {
            let mut params = plan.params_for(set);
            params.extend(extra.clone());
            let key = format!("{}/manual/{request}/{}", plan.name(), set.key);
            record(plan, version, LaunchKind::Manual, now, set, key, params, holder.clone(), now_ts)
        })
        .collect())
}

/// Launches `plan` now in this process (every parameter set, or those `overrides`
/// select) and waits for its runs.
pub async fn launch_now(
    env: &LaunchEnv,
    plan: &str,
    overrides: &[(String, String)],
    opts: DispatchOptions,
) -> PlanResult<Vec<LaunchOutcome>> {
    let (store, clock) = (&env.store, &env.clock);
    let (rec, lp, flow) = load(store, &env.flows, plan).await?;
    let d = Arc::new(Launcher::new(env, "launch", opts));
    let now = clock.now();
    let sets = d.produce_sets(&lp, rec.version, now, LaunchKind::Manual).await.map_err(|reason| PlanError::Matrix {
        plan: plan.to_owned(),
        tick: now,
        reason,
    })?;
    let launches = manual_launches(&lp, rec.version, flow.spec(), &sets, overrides, now, Some(d.id.clone()))?;
    d.cache_plan(rec.version, Arc::new(lp));
    d.heartbeat(true).await?;
    let won = store.plans.claim_launches(launches.clone()).await?;
    d.enqueue(launches.into_iter().zip(won).filter(|(_, w)| *w).map(|(l, _)| l).collect()).await;
    let result = d.drain().await;
    d.shutdown().await?;
    result?;
    let mut out = d.take_outcomes();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Records a manual launch of `plan` as pending launches without a holder: the next
/// pass of any running scheduler of the plan's flow adopts and starts them. Needs only
/// the store (the flow's spec as `plans apply` stored it). Returns the launches and the
/// live schedulers that serve the flow (none: nothing starts them until one runs): those
/// heard from within `dead_after` (normally [`DEAD_AFTER`](super::DEAD_AFTER)).
pub async fn request_launch(
    store: &Store,
    plan: &str,
    overrides: &[(String, String)],
    now: jiff::Timestamp,
    dead_after: std::time::Duration,
) -> PlanResult<(Vec<LaunchRecord>, Vec<SchedulerRecord>)> {
    let rec = get_live_plan(store, plan).await?;
    let lp = LaunchPlan::from_json(&rec.spec)?;
    if lp.has_dynamic_sets() {
        return Err(PlanError::Usage(format!(
            "plan `{plan}` gets its parameter sets from {} at each launch, which only the flow's binary runs; \
             launch it with that binary: `plans launch {plan}`",
            lp.set_source()
        )));
    }
    let flow_rec = store.records.get_flow(lp.flow()).await?.ok_or_else(|| {
        PlanError::Usage(format!(
            "flow `{}` has no stored spec; apply the plan file with the flow's binary (`plans apply FILE`) first",
            lp.flow()
        ))
    })?;
    let spec: FlowSpec = serde_json::from_value(flow_rec.spec)
        .map_err(|e| PlanError::Usage(format!("the stored spec of flow `{}` does not parse: {e}", lp.flow())))?;
    let problems = lp.check_flow(&spec);
    if !problems.is_empty() {
        return Err(PlanError::NoLongerFits {
            plan: plan.to_owned(),
            version: rec.version,
            flow: lp.flow().to_string(),
            problems,
        });
    }
    let launches = manual_launches(&lp, rec.version, &spec, lp.parameter_sets(), overrides, now, None)?;
    store.plans.claim_launches(launches.clone()).await?;
    let now = Timestamp::from_jiff(now);
    let live = store
        .plans
        .list_schedulers()
        .await?
        .into_iter()
        .filter(|s| {
            heard_within(s.seen_at, now, dead_after) && s.flows.contains(lp.flow()) && s.id.starts_with("scheduler@")
        })
        .collect();
    Ok((launches, live))
}
