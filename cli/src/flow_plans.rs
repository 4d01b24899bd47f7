//! The flow binary's launch plan commands: `plans apply FILE`, `plans launch NAME`,
//! `scheduler` and `backfill PLAN --from T --to T`.
//!
//! Exit codes as for `run`: 0 success, 1 a run failed (or the store failed), 2 bad usage
//! (an invalid plan file, an unknown plan, a bad range), 130 cancelled.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use braid_core::{RunStatus, Timestamp};
use braid_runtime::Flow;
use braid_runtime::plan::{
    self, BackfillOptions, BackfillReport, DispatchOptions, LaunchEnv, LaunchEvent, LaunchOutcome, LaunchPlan,
    PlanError, Registered, Scheduler, SchedulerOptions, SetSource,
};
use braid_store::{LaunchRecord, LaunchState, PlanQuery, Registration, Store};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::flow_main::{EXIT_CANCELLED, EXIT_FAILED, EXIT_USAGE, StoreFlags, hosted, open_store, usage};
use crate::inspect::plan::local;
use crate::report::{Context, fail};

/// `plans ...`
#[derive(Debug, Args)]
pub(crate) struct PlansArgs {
    #[command(subcommand)]
    command: PlansCommand,
}

#[derive(Debug, Subcommand)]
enum PlansCommand {
    /// Validate a plan file (TOML) against this binary's flows and register its plans:
    /// all of them, or none if one is invalid. Same content is a no-op; changed
    /// content makes a new version. `--code` registers the plans declared in this
    /// binary's Rust code instead.
    Apply {
        #[arg(required_unless_present = "code", conflicts_with = "code")]
        file: Option<PathBuf>,
        /// Register the plans this binary declares in code (`FlowBinary::plans`).
        #[arg(long)]
        code: bool,
        /// Validate only; register nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Launch a plan now, in this process, and wait for its runs: every parameter set,
    /// or only those `--param` selects for a matrix parameter. Other `--param`s
    /// override defaults; fixed inputs cannot be overridden.
    Launch {
        plan: String,
        /// `name=value`; repeat for several.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[command(flatten)]
        limits: Limits,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct Limits {
    /// Runs going at once in this process, over every plan.
    #[arg(long, default_value_t = 16)]
    max_runs: usize,
    /// Tasks running at once within each run (default: the number of cores).
    #[arg(long)]
    max_workers: Option<usize>,
    /// Where the launched runs' step bodies run: `workers` (the default on PostgreSQL:
    /// `myflow worker` processes claim them) or `process` (this process).
    #[arg(long, value_enum, value_name = "WHERE")]
    on: Option<crate::flow_main::On>,
}

impl Limits {
    fn dispatch(&self) -> Result<DispatchOptions, ExitCode> {
        if self.max_runs == 0 {
            return Err(usage("--max-runs must be at least 1"));
        }
        let mut d = DispatchOptions { max_runs: self.max_runs, ..Default::default() };
        match self.max_workers {
            Some(0) => return Err(usage("--max-workers must be at least 1")),
            Some(w) => d.run_workers = w,
            None => {}
        }
        Ok(d)
    }

    /// Where the launched runs go, once the store is known.
    fn execution(&self, store: &Store) -> braid_runtime::Execution {
        if crate::flow_main::On::workers(self.on, store) {
            braid_runtime::Execution::Workers { queue: braid_runtime::DEFAULT_QUEUE.to_owned() }
        } else {
            braid_runtime::Execution::InProcess
        }
    }
}

/// `scheduler`
#[derive(Debug, Args)]
pub(crate) struct SchedulerArgs {
    #[command(flatten)]
    limits: Limits,
    /// Longest wait between passes, in seconds (launch requests and stopped schedulers'
    /// launches are noticed this often; ticks are met on time regardless).
    #[arg(long, default_value_t = 1.0)]
    poll: f64,
    /// One pass, wait for the runs it started, and exit.
    #[arg(long)]
    once: bool,
    /// Events as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics: per plan and parameter set
    /// (`braid_plan_*`) and the task metrics of the runs it starts (e.g. 127.0.0.1:9464;
    /// port 0 picks one, printed on stderr). Off by default. Anything but a loopback
    /// address needs --metrics-token.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// A secret every scrape must carry as `Authorization: Bearer TOKEN`; required when
    /// --metrics-addr is not a loopback address, at least 16 characters.
    #[arg(long, env = "BRAID_METRICS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    metrics_token: Option<String>,
}

/// `backfill`
#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    /// The plan.
    plan: String,
    /// First tick time (included): 2026-03-02T09:00 in the plan's time zone,
    /// 2026-03-02T14:00:00Z, or a date.
    #[arg(long)]
    from: String,
    /// End of the interval (excluded).
    #[arg(long)]
    to: String,
    /// List what would launch; claim and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Refuse intervals with more ticks than this.
    #[arg(long, default_value_t = 10_000)]
    max_ticks: usize,
    #[command(flatten)]
    limits: Limits,
    /// One JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn plan_error(e: PlanError) -> ExitCode {
    fail(&e, if e.is_usage() { EXIT_USAGE } else { EXIT_FAILED })
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(&Context::new("cannot start the async runtime", e), EXIT_FAILED))
}

/// The async runtime every plan command runs on, and the store the flags name, opened on it.
fn runtime_and_store(flags: &StoreFlags) -> Result<(tokio::runtime::Runtime, Store), ExitCode> {
    let rt = runtime()?;
    let store = rt.block_on(open_store(flags))?;
    Ok((rt, store))
}

/// What `scheduler` and `backfill` start from.
struct Setup {
    flows: Vec<Arc<Flow>>,
    dispatch: DispatchOptions,
    rt: tokio::runtime::Runtime,
    store: Store,
}

impl Setup {
    /// The flows picked by [`hosted`], the limits checked, then the runtime and the store.
    fn new(
        flags: &StoreFlags,
        wanted: Option<&str>,
        flows: Vec<braid_runtime::Result<Flow>>,
        limits: &Limits,
    ) -> Result<Setup, ExitCode> {
        let flows = hosted(flows, wanted)?;
        let mut dispatch = limits.dispatch()?;
        let (rt, store) = runtime_and_store(flags)?;
        dispatch.execution = limits.execution(&store);
        Ok(Setup { flows, dispatch, rt, store })
    }
}

fn plan_zone(store: &Store, rt: &tokio::runtime::Runtime, plan: &str) -> jiff::tz::TimeZone {
    rt.block_on(plan::get_plan(store, plan))
        .ok()
        .and_then(|r| braid_runtime::plan::LaunchPlan::from_json(&r.spec).ok())
        .and_then(|p| p.schedule().map(|s| s.time_zone()))
        .unwrap_or(jiff::tz::TimeZone::UTC)
}

pub(crate) fn plans(
    store: StoreFlags,
    wanted: Option<&str>,
    flows: Vec<braid_runtime::Result<Flow>>,
    code: &[LaunchPlan],
    args: PlansArgs,
) -> ExitCode {
    let flows = match hosted(flows, wanted) {
        Ok(f) => f,
        Err(code) => return code,
    };
    match args.command {
        PlansCommand::Apply { file, code: true, dry_run, json } if file.is_none() => {
            apply(&store, flows, PlanSource::Code(code), dry_run, json)
        }
        PlansCommand::Apply { file: Some(file), dry_run, json, .. } => {
            apply(&store, flows, PlanSource::File(&file), dry_run, json)
        }
        PlansCommand::Apply { .. } => usage("give a plan file, or --code for the plans declared in this binary"),
        PlansCommand::Launch { plan, params, limits, json } => {
            let overrides = match crate::split_params(&params) {
                Ok(o) => o,
                Err(e) => return usage(e),
            };
            let dispatch = match limits.dispatch() {
                Ok(d) => d,
                Err(code) => return code,
            };
            launch(&store, flows, code, &plan, &overrides, (dispatch, &limits), json)
        }
    }
}

/// Where `plans apply` takes its plans from.
enum PlanSource<'a> {
    File(&'a std::path::Path),
    Code(&'a [LaunchPlan]),
}

fn apply(store: &StoreFlags, flows: Vec<Arc<Flow>>, from: PlanSource<'_>, dry_run: bool, json: bool) -> ExitCode {
    // Every problem of every plan, schema and flow alike, in one error.
    let (plans, source) = match from {
        PlanSource::File(file) => match plan::check_plan_file(file, &flows) {
            Ok(p) => (p, file.display().to_string()),
            Err(e) => return plan_error(e),
        },
        PlanSource::Code([]) => {
            return usage(
                "this binary declares no plans in code; give a plan file, or declare plans with `FlowBinary::plans`",
            );
        }
        PlanSource::Code(code) => match plan::check_plans_against(&flows, code) {
            Ok(()) => (code.to_vec(), "code".to_owned()),
            Err(e) => return plan_error(e),
        },
    };
    if dry_run {
        if json {
            let v: Vec<Value> = plans.iter().map(|p| json!({"plan": p.name().as_str(), "valid": true})).collect();
            println!("{}", json!({"file": source, "dry_run": true, "plans": v}));
        } else {
            println!("{source}: {} plan(s) valid; nothing registered (--dry-run)", plans.len());
        }
        return ExitCode::SUCCESS;
    }
    let (rt, store) = match runtime_and_store(store) {
        Ok(r) => r,
        Err(c) => return c,
    };
    let described: Vec<(String, String, bool)> = plans
        .iter()
        .map(|p| {
            (
                p.schedule().map_or_else(|| "no schedule".to_owned(), |s| s.describe()),
                p.schedule().map(|s| s.time_zone().iana_name().unwrap_or("UTC").to_owned()).unwrap_or_default(),
                p.initially_active(),
            )
        })
        .collect();
    let registered = match rt.block_on(plan::register_plans(&store, &flows, plans, &source)) {
        Ok(r) => r,
        Err(e) => return plan_error(e),
    };
    // The active flag as stored (a re-applied plan keeps the one it had).
    let active: Vec<bool> = registered
        .iter()
        .zip(&described)
        .map(|(r, d)| rt.block_on(store.plans.get_plan(&r.plan)).ok().flatten().map_or(d.2, |p| p.active))
        .collect();
    if json {
        let v: Vec<Value> = registered
            .iter()
            .zip(&active)
            .map(|(r, active)| {
                let mut o = json!({
                    "plan": r.plan.as_str(),
                    "flow": r.flow.as_str(),
                    "version": r.outcome.version(),
                    "parameter_sets": (r.sets_from == SetSource::Static).then_some(r.sets),
                    "sets_from": r.sets_from.to_string(),
                    "active": active,
                    "next_tick": r.next_tick.map(|t| t.to_string()),
                });
                if let (Value::Object(m), Ok(Value::Object(outcome))) = (&mut o, serde_json::to_value(r.outcome)) {
                    m.extend(outcome);
                }
                o
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"file": source, "plans": v})).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    for ((r, (schedule, tz, _)), active) in registered.iter().zip(&described).zip(&active) {
        println!("{}", apply_line(r, schedule, tz, *active));
    }
    ExitCode::SUCCESS
}

fn apply_line(r: &Registered, schedule: &str, tz: &str, active: bool) -> String {
    let what = match r.outcome {
        Registration::Created { version } => format!("registered version {version}"),
        Registration::Updated { version, previous } => format!("updated to version {version} (was {previous})"),
        Registration::Unchanged { version } => format!("unchanged (version {version})"),
    };
    let next = match (r.next_tick, jiff::tz::TimeZone::get(if tz.is_empty() { "UTC" } else { tz })) {
        (Some(t), Ok(z)) if active => format!("; next tick {}", local(t, &z)),
        _ => String::new(),
    };
    let sets = match &r.sets_from {
        SetSource::Static => format!("{} parameter set(s)", r.sets),
        other => format!("parameter sets from {other} at each tick"),
    };
    format!(
        "plan {}: {what}; flow {}, {schedule}, {sets}, {}{next}",
        r.plan,
        r.flow,
        if active { "active" } else { "inactive" }
    )
}

fn outcome_json(o: &LaunchOutcome, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "name": o.name,
        "tick": o.tick.to_string(),
        "tick_local": o.tick.to_zoned(tz.clone()).to_string(),
        "flow": o.flow.as_str(),
        "run": o.run.map(|r| r.to_string()),
        "pathspec": o.run.map(|r| format!("{}/{r}", o.flow)),
        "state": o.state.as_str(),
        "status": o.status.map(|s| s.as_str()),
        "note": o.note,
    })
}

fn outcome_line(o: &LaunchOutcome, tz: &jiff::tz::TimeZone) -> String {
    let run = o.run.map_or_else(|| "-".to_owned(), |r| format!("{}/{r}", o.flow));
    let status = match (o.state, o.status) {
        (_, Some(s)) => s.as_str().to_owned(),
        (LaunchState::Skipped, None) => "skipped".to_owned(),
        (s, None) => s.as_str().to_owned(),
    };
    let note = match (&o.note, o.status) {
        (Some(n), Some(RunStatus::Succeeded)) | (Some(n), None) if !n.is_empty() => format!("  ({n})"),
        (Some(n), Some(_)) => format!("  ({})", n.lines().next().unwrap_or_default()),
        _ => String::new(),
    };
    format!("{run}  {}  tick {}  {status}{note}", o.name, local(o.tick, tz))
}

fn exit_for(outcomes: &[LaunchOutcome]) -> ExitCode {
    if outcomes.iter().any(|o| o.status == Some(RunStatus::Cancelled)) {
        ExitCode::from(EXIT_CANCELLED)
    } else if outcomes.iter().any(|o| o.status.is_some_and(|s| s != RunStatus::Succeeded)) {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints started/ended runs on stderr while a command waits for them.
fn progress_printer(
    rt: &tokio::runtime::Runtime,
    quiet: bool,
) -> (Option<tokio::sync::mpsc::UnboundedSender<LaunchEvent>>, Option<tokio::task::JoinHandle<()>>) {
    if quiet {
        return (None, None);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = rt.spawn(async move {
        while let Some(e) = rx.recv().await {
            let line = match e {
                LaunchEvent::Started { pathspec, name, .. } => format!("{:<9} {pathspec}  {name}", "started"),
                LaunchEvent::Finished { pathspec, name, status, .. } => {
                    format!("{:<9} {pathspec}  {name}", status.as_str())
                }
                LaunchEvent::Skipped { name, reason, .. } => format!("{:<9} {name}: {reason}", "skipped"),
                LaunchEvent::MissedTicks { plan, skipped, policy } => {
                    format!("plan {plan}: {skipped} missed tick(s) left out (catch_up = {policy})")
                }
                LaunchEvent::Paused { name, reason, .. } => format!("{:<9} {name}: {reason}", "paused"),
                LaunchEvent::MatrixFailed { plan, tick, error } => {
                    format!("{:<9} plan {plan}, tick {tick}: {}", "failed", error.replace('\n', "\n  "))
                }
                _ => continue,
            };
            eprintln!("{line}");
        }
    });
    (Some(tx), Some(handle))
}

/// Runs `fut`; the first Ctrl-C cancels the runs it started and starts no more (the
/// launches not started are handed to running schedulers).
async fn cancel_on_ctrl_c<T>(env: &LaunchEnv, fut: impl std::future::Future<Output = T>) -> T {
    let cancel = env.cancel.clone();
    let watcher = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncancelling (Ctrl-C)...");
            cancel.cancel();
        }
    });
    let out = fut.await;
    watcher.abort();
    out
}

fn launch(
    store: &StoreFlags,
    flows: Vec<Arc<Flow>>,
    code: &[LaunchPlan],
    plan_name: &str,
    overrides: &[(String, String)],
    (mut dispatch, limits): (DispatchOptions, &Limits),
    json: bool,
) -> ExitCode {
    let (rt, store) = match runtime_and_store(store) {
        Ok(r) => r,
        Err(c) => return c,
    };
    dispatch.execution = limits.execution(&store);
    let tz = plan_zone(&store, &rt, plan_name);
    let (tx, printer) = progress_printer(&rt, json || !std::io::stderr().is_terminal());
    let mut env = LaunchEnv::new(store, flows).with_plans(code);
    if let Some(tx) = tx {
        env = env.with_events(tx);
    }
    let result = rt.block_on(cancel_on_ctrl_c(&env, plan::launch_now(&env, plan_name, overrides, dispatch)));
    drop(env);
    if let Some(p) = printer {
        let _ = rt.block_on(p);
    }
    let outcomes = match result {
        Ok(o) => o,
        Err(e) => return plan_error(e),
    };
    if json {
        let v: Vec<Value> = outcomes.iter().map(|o| outcome_json(o, &tz)).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"plan": plan_name, "launched": v})).unwrap_or_default());
    } else {
        for o in &outcomes {
            println!("{}", outcome_line(o, &tz));
        }
        println!("launched {} run(s) of plan {plan_name}", outcomes.iter().filter(|o| o.run.is_some()).count());
    }
    exit_for(&outcomes)
}

pub(crate) fn backfill(
    store: StoreFlags,
    wanted: Option<&str>,
    flows: Vec<braid_runtime::Result<Flow>>,
    code: &[LaunchPlan],
    args: BackfillArgs,
) -> ExitCode {
    let Setup { flows, dispatch, rt, store } = match Setup::new(&store, wanted, flows, &args.limits) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let quiet = args.quiet || args.json || args.dry_run || !std::io::stderr().is_terminal();
    let (tx, printer) = progress_printer(&rt, quiet);
    let mut env = LaunchEnv::new(store, flows).with_plans(code);
    if let Some(tx) = tx {
        env = env.with_events(tx);
    }
    let opts = BackfillOptions { dispatch, dry_run: args.dry_run, max_ticks: args.max_ticks };
    let result = rt.block_on(cancel_on_ctrl_c(&env, plan::backfill(&env, &args.plan, &args.from, &args.to, opts)));
    drop(env);
    if let Some(p) = printer {
        let _ = rt.block_on(p);
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => return plan_error(e),
    };
    let tz = jiff::tz::TimeZone::get(&report.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&backfill_json(&report, &tz)).unwrap_or_default());
    } else {
        print_backfill(&report, &tz, args.dry_run);
    }
    if !report.failed_ticks.is_empty() && !args.dry_run {
        return ExitCode::from(EXIT_FAILED);
    }
    exit_for(&report.launched)
}

fn already_json(l: &LaunchRecord, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "name": l.name,
        "tick": l.tick.to_jiff().to_string(),
        "tick_local": l.tick.to_jiff().to_zoned(tz.clone()).to_string(),
        "kind": l.kind.as_str(),
        "version": l.version,
        "state": l.state.as_str(),
        "run": l.run.map(|r| r.to_string()),
        "pathspec": l.run.map(|r| format!("{}/{r}", l.flow)),
        "status": l.status.map(|s| s.as_str()),
    })
}

fn backfill_json(r: &BackfillReport, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "plan": r.plan.as_str(),
        "version": r.version,
        "flow": r.flow.as_str(),
        "time_zone": r.time_zone,
        "from": r.from.to_string(),
        "to": r.to.to_string(),
        "ticks": r.ticks.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "parameter_sets": r.sets,
        "launched": r.launched.iter().map(|o| outcome_json(o, tz)).collect::<Vec<_>>(),
        "already_launched": r.already.iter().map(|l| already_json(l, tz)).collect::<Vec<_>>(),
        "would_launch": r.would_launch.iter().map(|l| already_json(l, tz)).collect::<Vec<_>>(),
        "handed_over": r.handed_over,
        "failed_ticks": r.failed_ticks.iter().map(|(t, e)| json!({"tick": t.to_string(), "tick_local": local(*t, tz), "error": e})).collect::<Vec<_>>(),
    })
}

fn print_backfill(r: &BackfillReport, tz: &jiff::tz::TimeZone, dry_run: bool) {
    println!(
        "backfill {} (version {}) from {} to {}: {} tick(s) x {} parameter set(s)",
        r.plan,
        r.version,
        local(r.from, tz),
        local(r.to, tz),
        r.ticks.len(),
        r.sets
    );
    for (t, e) in &r.failed_ticks {
        println!("failed tick {}: {}", local(*t, tz), e.replace('\n', "\n  "));
    }
    if dry_run {
        for l in &r.would_launch {
            println!("would launch  {}  tick {}", l.name, local(l.tick.to_jiff(), tz));
        }
        println!(
            "{} launch(es) would start; {} already launched (--dry-run: nothing claimed)",
            r.would_launch.len(),
            r.already.len()
        );
        return;
    }
    for o in &r.launched {
        println!("{}", outcome_line(o, tz));
    }
    let started = r.launched.iter().filter(|o| o.run.is_some()).count();
    let ok = r.launched.iter().filter(|o| o.status == Some(RunStatus::Succeeded)).count();
    let skipped = r.launched.iter().filter(|o| o.state == LaunchState::Skipped).count();
    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    for l in &r.already {
        *kinds.entry(l.kind.as_str()).or_default() += 1;
    }
    let by: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} by {k}")).collect();
    let total = r.ticks.len() * r.sets;
    let mut summary = if started == 0 && r.already.len() == total && total > 0 {
        format!(
            "launched 0 runs: all {total} (tick, parameter set) pairs of this interval were already launched ({}); none launched again",
            by.join(", ")
        )
    } else {
        let mut s = format!("launched {started} run(s), {ok} succeeded");
        if !r.already.is_empty() {
            s.push_str(&format!(
                "; {} (tick, parameter set) pair(s) were already launched ({}) and were not launched again",
                r.already.len(),
                by.join(", ")
            ));
        }
        s
    };
    if skipped > 0 {
        summary.push_str(&format!("; {skipped} skipped"));
    }
    if r.handed_over > 0 {
        summary.push_str(&format!("; {} waiting launch(es) handed to the running schedulers", r.handed_over));
    }
    println!("{summary}");
}

pub(crate) fn scheduler(
    store: StoreFlags,
    wanted: Option<&str>,
    flows: Vec<braid_runtime::Result<Flow>>,
    code: &[LaunchPlan],
    args: SchedulerArgs,
) -> ExitCode {
    if !(args.poll.is_finite() && args.poll > 0.0) {
        return usage("--poll must be a positive number of seconds");
    }
    let Setup { flows, dispatch, rt, store } = match Setup::new(&store, wanted, flows, &args.limits) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<LaunchEvent>();
    let json = args.json;
    let printer = rt.spawn(async move {
        while let Some(e) = rx.recv().await {
            print_event(&e, json);
        }
    });
    let names: Vec<String> = flows.iter().map(|f| f.name().to_string()).collect();
    let mut env = LaunchEnv::new(store.clone(), flows).with_events(tx).with_plans(code);
    if let Some(addr) = &args.metrics_addr {
        let tasks = Arc::new(braid_runtime::Metrics::new());
        let plans = Arc::new(braid_runtime::plan::PlanMetrics::new());
        let (t, p) = (tasks.clone(), plans.clone());
        match rt.block_on(crate::flow_main::serve_metrics(
            addr,
            args.metrics_token.as_deref(),
            Arc::new(move || p.encode_with(&t)),
        )) {
            Ok(bound) => eprintln!("metrics at http://{bound}/metrics"),
            Err(e) => return usage(e),
        }
        env = env.with_metrics(tasks).with_plan_metrics(plans);
    }
    let opts = SchedulerOptions {
        dispatch,
        poll: Duration::from_secs_f64(args.poll.clamp(0.01, 3600.0)),
        ..Default::default()
    };
    let sched = Scheduler::new(&env, opts);
    drop(env);
    let query = PlanQuery {
        flows: names.iter().filter_map(|n| braid_core::FlowName::new(n).ok()).collect(),
        without_spec: true,
        ..Default::default()
    };
    let plans = rt.block_on(store.plans.list_plans(&query)).unwrap_or_default();
    let active: Vec<String> = plans.iter().filter(|p| p.active).map(|p| p.name.to_string()).collect();
    if !json {
        println!(
            "scheduler {} serving flow(s) {}: {} active plan(s){}{}; at most {} run(s) at once",
            sched.id(),
            names.join(", "),
            active.len(),
            if active.is_empty() { String::new() } else { format!(" ({})", active.join(", ")) },
            if plans.len() > active.len() {
                format!(", {} inactive", plans.len() - active.len())
            } else {
                String::new()
            },
            args.limits.max_runs,
        );
        if plans.is_empty() {
            println!("no plans yet: register some with `plans apply FILE`; they are picked up without a restart");
        }
        let _ = std::io::stdout().flush();
    }
    let code = rt.block_on(async {
        if args.once {
            let r = match sched.pass().await {
                Ok(r) => r,
                Err(e) => return plan_error(e),
            };
            if let Err(e) = sched.drain().await {
                return plan_error(e);
            }
            let outcomes = sched.take_outcomes();
            if let Err(e) = sched.shutdown(false).await {
                return plan_error(e);
            }
            if !json {
                println!(
                    "one pass: {} plan(s) evaluated, {} launch(es) claimed, {} already claimed, {} adopted, {} missed tick(s) left out, {} failed tick(s)",
                    r.plans, r.won, r.lost, r.adopted, r.missed, r.failed_ticks
                );
            }
            if r.failed_ticks > 0 {
                return ExitCode::from(EXIT_FAILED);
            }
            return exit_for(&outcomes);
        }
        let stop = braid_runtime::CancellationToken::new();
        let loop_stop = stop.clone();
        let serve = sched.run(&loop_stop);
        tokio::pin!(serve);
        tokio::select! {
            r = &mut serve => {
                if let Err(e) = r {
                    return plan_error(e);
                }
            }
            _ = tokio::signal::ctrl_c() => {
                stop.cancel();
            }
        }
        let running = sched.running();
        if running > 0 {
            eprintln!("stopping: waiting for {running} running run(s); Ctrl-C again to cancel them");
        }
        let graceful = sched.shutdown(false);
        tokio::pin!(graceful);
        let released = tokio::select! {
            r = &mut graceful => r,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("cancelling the running runs...");
                sched.shutdown(true).await
            }
        };
        match released {
            Ok(n) if n > 0 => eprintln!("stopped; {n} waiting launch(es) handed to other schedulers"),
            Ok(_) => eprintln!("stopped"),
            Err(e) => return plan_error(e),
        }
        ExitCode::SUCCESS
    });
    drop(sched);
    let _ = rt.block_on(printer);
    code
}

fn print_event(e: &LaunchEvent, json: bool) {
    let now = Timestamp::now().to_jiff();
    let line = if json {
        let v = match e {
            LaunchEvent::Started { launch, pathspec, name, tick } => {
                json!({"event": "started", "at": now.to_string(), "launch": launch, "pathspec": pathspec, "name": name, "tick": tick.to_string()})
            }
            LaunchEvent::Finished { launch, pathspec, name, status, error } => {
                json!({"event": "finished", "at": now.to_string(), "launch": launch, "pathspec": pathspec, "name": name, "status": status.as_str(), "error": error})
            }
            LaunchEvent::Skipped { launch, name, tick, reason } => {
                json!({"event": "skipped", "at": now.to_string(), "launch": launch, "name": name, "tick": tick.to_string(), "reason": reason})
            }
            LaunchEvent::MissedTicks { plan, skipped, policy } => {
                json!({"event": "missed_ticks", "at": now.to_string(), "plan": plan.as_str(), "left_out": skipped, "catch_up": policy})
            }
            LaunchEvent::Paused { plan, name, failures, reason } => {
                json!({"event": "paused", "at": now.to_string(), "plan": plan.as_str(), "name": name, "failures": failures, "reason": reason})
            }
            LaunchEvent::MatrixFailed { plan, tick, error } => {
                json!({"event": "failed_tick", "at": now.to_string(), "plan": plan.as_str(), "tick": tick.to_string(), "error": error})
            }
            _ => return,
        };
        v.to_string()
    } else {
        let at = now.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S");
        match e {
            LaunchEvent::Started { pathspec, name, tick, .. } => {
                format!("{at} started   {pathspec}  {name}  tick {tick}")
            }
            LaunchEvent::Finished { pathspec, name, status, error, .. } => {
                let err =
                    error.as_deref().map(|e| format!(": {}", e.lines().next().unwrap_or_default())).unwrap_or_default();
                format!("{at} {:<9} {pathspec}  {name}{err}", status.as_str())
            }
            LaunchEvent::Skipped { name, tick, reason, .. } => format!("{at} skipped   {name}  tick {tick}: {reason}"),
            LaunchEvent::MissedTicks { plan, skipped, policy } => {
                format!("{at} plan {plan}: {skipped} missed tick(s) left out (catch_up = {policy})")
            }
            LaunchEvent::Paused { name, reason, .. } => format!("{at} paused    {name}: {reason}"),
            LaunchEvent::MatrixFailed { plan, tick, error } => format!(
                "{at} failed    plan {plan}  tick {tick}: parameter sets not produced, nothing launched: {}",
                error.replace('\n', "\n    ")
            ),
            _ => return,
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
