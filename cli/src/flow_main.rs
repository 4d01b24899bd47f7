//! The entry point of a user's flow binary: `braid_cli::flow_main(vec![my_flow()])`
//! gives it a command line with `run`, `resume`, `check` and `show`.
//!
//! Exit codes: 0 success, 1 the run failed, 2 bad usage (unknown flags, invalid flow,
//! unknown or ill-typed parameters, a store location that cannot be a store), 130
//! cancelled with Ctrl-C. Errors are printed with their causes (`crate::report`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use braid_core::{RunId, RunStatus, StepName, Tag};
use braid_runtime::{CancellationToken, Flow, PreparedRun, Resume, RunOptions, RunSummary};
use braid_store::Store;
use clap::{Args, Parser, Subcommand};

use crate::report::{Context, fail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A run failed, or the store did.
pub(crate) const EXIT_FAILED: u8 = 1;
/// Bad usage: unknown flags, an invalid flow or plan, a store location that cannot be one.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Cancelled with Ctrl-C.
pub(crate) const EXIT_CANCELLED: u8 = 130;

#[derive(Debug, Parser)]
#[command(about = "Run, resume, check and show the flows of this binary (braid)", version)]
struct FlowCli {
    /// Which flow, when this binary hosts several.
    #[arg(long, global = true)]
    flow: Option<String>,
    /// The store: a directory, `memory:`, or postgres://USER@HOST[:PORT]/DB (default:
    /// $BRAID_STORE, else ./.braid).
    #[arg(long, global = true, env = "BRAID_STORE")]
    store: Option<String>,
    /// Where a postgres:// store's blobs go: s3://BUCKET/PREFIX (endpoint, region and
    /// credentials from the AWS_* environment) or file:///SHARED/DIR.
    #[arg(long, global = true, env = "BRAID_BLOBS")]
    blobs: Option<String>,
    #[command(subcommand)]
    command: FlowCommand,
}

#[derive(Debug, Subcommand)]
enum FlowCommand {
    /// Start a run.
    Run(RunArgs),
    /// Resume a run: reuse every task that succeeded, run the rest.
    Resume {
        /// The run to resume (default: the latest run of the flow).
        run: Option<String>,
        /// Re-run this step and everything after it, even if it succeeded.
        #[arg(long)]
        from: Option<String>,
        /// Resume even a run that is still going (its lease is being renewed): both then go on.
        #[arg(long)]
        force: bool,
        /// A tag for the new run, besides the ones it carries from RUN; repeat for several.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[command(flatten)]
        common: CommonRunArgs,
    },
    /// Validate the flow and print every problem.
    Check,
    /// Describe the flow: steps, transitions, parameters.
    Show {
        #[arg(long, conflicts_with_all = ["dot", "json"])]
        mermaid: bool,
        #[arg(long, conflicts_with = "json")]
        dot: bool,
        /// The flow spec as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Launch plans: `plans apply FILE` registers a plan file, `plans launch NAME` runs a plan now.
    Plans(crate::flow_plans::PlansArgs),
    /// Serve every active launch plan of this binary's flows (all of them, or `--flow`).
    Scheduler(crate::flow_plans::SchedulerArgs),
    /// Launch the ticks of a plan in the past interval [--from, --to), through the scheduler's claims.
    Backfill(crate::flow_plans::BackfillArgs),
    /// Run the step bodies of any run of this binary's flows (all of them, or `--flow`),
    /// claimed from the store's task queue (PostgreSQL); SIGTERM drains.
    Worker(crate::flow_worker::WorkerArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// A parameter value, `name=value`; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// A tag for the run; repeat for several.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    #[command(flatten)]
    common: CommonRunArgs,
}

#[derive(Debug, Args)]
struct CommonRunArgs {
    /// Tasks running at once (default: the number of cores).
    #[arg(long)]
    max_workers: Option<usize>,
    /// Bound on a foreach's width (default: the flow's, 1,000,000 unless it says otherwise).
    #[arg(long)]
    max_num_splits: Option<u64>,
    /// Write the run id to this file as soon as it is known, before any step runs.
    #[arg(long, value_name = "PATH")]
    run_id_file: Option<PathBuf>,
    /// No live view on stderr.
    #[arg(long)]
    quiet: bool,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics while the run goes
    /// (e.g. 127.0.0.1:9464). Off by default. Anything but a loopback address needs
    /// --metrics-token.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// A secret every scrape must carry as `Authorization: Bearer TOKEN`; required when
    /// --metrics-addr is not a loopback address, at least 16 characters.
    #[arg(long, env = "BRAID_METRICS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    metrics_token: Option<String>,
    /// Where the step bodies run: `workers` (`myflow worker` processes claim them from
    /// the store's queue; the default on PostgreSQL) or `process` (this process; the
    /// default on a directory store).
    #[arg(long, value_enum, value_name = "WHERE")]
    on: Option<On>,
    /// With --on workers: the queue of the tasks whose step names none (default `default`).
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
}

/// Where a run's step bodies run (`--on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum On {
    /// In this process.
    Process,
    /// On workers sharing the store.
    Workers,
}

impl On {
    /// Whether runs go to workers: as `--on` says, else when the store has a queue.
    pub(crate) fn workers(on: Option<On>, store: &Store) -> bool {
        match on {
            Some(On::Workers) => true,
            Some(On::Process) => false,
            None => store.queue().is_some(),
        }
    }
}

/// Runs the flow binary's command line over `flows` (each as its builder returned it,
/// so `check` can print the problems of an invalid one) and returns the exit code.
pub fn flow_main(flows: Vec<braid_runtime::Result<Flow>>) -> ExitCode {
    flow_main_from(std::env::args_os(), flows)
}

/// A flow binary with more than flows: launch plans declared in its Rust code (whose
/// parameter sets may come from a [`LaunchPlanBuilder::matrix_fn`]). `plans apply --code`
/// registers them; its `scheduler`, `backfill` and `plans launch` call their functions.
///
/// ```no_run
/// use braid_runtime::{Flow, Param, ParamType, plan::LaunchPlan};
/// let data_sync = Flow::builder("data_sync")
///     .param(Param::new("site_id", ParamType::String))
///     .step("start", |_ctx| async move { Ok(()) })
///     .next("end")
///     .step("end", |_ctx| async move { Ok(()) })
///     .end()
///     .build();
/// let hourly = LaunchPlan::builder("data_sync_from_code", "data_sync")
///     .cron("0 * * * *", "UTC")
///     .matrix_fn(|_tick| Ok::<_, String>(serde_json::json!({"site_id": ["site1", "site2"]})))
///     .build()
///     .expect("a valid plan");
/// braid_cli::FlowBinary::new(vec![data_sync]).plans(vec![hourly]).main();
/// ```
///
/// [`LaunchPlanBuilder::matrix_fn`]: braid_runtime::plan::LaunchPlanBuilder::matrix_fn
#[derive(Debug)]
pub struct FlowBinary {
    flows: Vec<braid_runtime::Result<Flow>>,
    plans: Vec<braid_runtime::plan::LaunchPlan>,
}

impl FlowBinary {
    /// A binary hosting `flows` (each as its builder returned it).
    pub fn new(flows: Vec<braid_runtime::Result<Flow>>) -> Self {
        FlowBinary { flows, plans: Vec::new() }
    }

    /// Launch plans declared in code, served by this binary's `scheduler`.
    pub fn plans(mut self, plans: Vec<braid_runtime::plan::LaunchPlan>) -> Self {
        self.plans.extend(plans);
        self
    }

    /// Runs the command line of the process.
    pub fn main(self) -> ExitCode {
        self.main_from(std::env::args_os())
    }

    /// Runs an explicit command line (the first argument is the program name), as
    /// [`flow_main_from`].
    pub fn main_from<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        run_main(args, self.flows, &self.plans)
    }
}

/// [`flow_main`] with explicit arguments (the first is the program name): for tests and
/// for binaries that build their argument list themselves. Must not be called from
/// inside an async runtime: it starts its own.
pub fn flow_main_from<I, T>(args: I, flows: Vec<braid_runtime::Result<Flow>>) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    run_main(args, flows, &[])
}

fn run_main<I, T>(
    args: I,
    flows: Vec<braid_runtime::Result<Flow>>,
    code: &[braid_runtime::plan::LaunchPlan],
) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    if braid_runtime::is_isolated_task() {
        // Started by this binary to run one attempt of an isolated step: nothing else.
        braid_runtime::serve_isolated_task(flows.into_iter().filter_map(Result::ok).collect());
    }
    init_tracing();
    braid_runtime::init_failpoints();
    let cli = match FlowCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let wanted = cli.flow.as_deref();
    let flags = store_flags(&cli);
    match cli.command {
        FlowCommand::Plans(a) => return crate::flow_plans::plans(flags, wanted, flows, code, a),
        FlowCommand::Scheduler(a) => return crate::flow_plans::scheduler(flags, wanted, flows, code, a),
        FlowCommand::Backfill(a) => return crate::flow_plans::backfill(flags, wanted, flows, code, a),
        FlowCommand::Worker(a) => return crate::flow_worker::worker(flags, wanted, flows, a),
        _ => {}
    }
    match pick_flow(flows, cli.flow.as_deref()) {
        Ok(flow) => dispatch(cli, flow),
        Err(code) => code,
    }
}

fn store_flags(cli: &FlowCli) -> StoreFlags {
    StoreFlags { store: cli.store.clone(), blobs: cli.blobs.clone() }
}

/// `--store` and `--blobs` as given (each else its environment variable, through clap).
#[derive(Debug, Clone, Default)]
pub(crate) struct StoreFlags {
    pub(crate) store: Option<String>,
    pub(crate) blobs: Option<String>,
}

/// Opens (or, for a new directory, creates) the store the flags name, for every command
/// of the flow binary that needs one. A location that cannot be a store is the caller's
/// to fix (exit 2); a store that does not answer is a failure (exit 1).
pub(crate) async fn open_store(flags: &StoreFlags) -> Result<Store, ExitCode> {
    let location = Store::resolve_location(flags.store.as_deref());
    let blobs = Store::resolve_blobs(flags.blobs.as_deref());
    Store::connect(&location, blobs.as_deref()).await.map_err(|e| {
        let code = if matches!(e, braid_store::Error::Location { .. }) { EXIT_USAGE } else { EXIT_FAILED };
        fail(&Context::new(format!("cannot open the store at {location}"), e), code)
    })
}

/// Logs go to stderr filtered by `RUST_LOG` (default `warn`); every event inside a step
/// also goes, unfiltered, to that task's log in the store.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    let _ = tracing_subscriber::registry().with(stderr).with(braid_runtime::task_log_layer()).try_init();
}

/// Prints `error: msg` and returns the usage exit code.
pub(crate) fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// The flows a command of this binary works on, from what their builders returned: the
/// one `--flow` names, else every flow the binary hosts. Every command picks its flows
/// here, so a broken flow is handled one way: its error is printed on stderr, and the
/// command goes on only if `--flow` names a flow that built (a broken flow does not keep
/// its siblings from running when they are asked for by name); otherwise exit 2.
pub(crate) fn hosted(
    flows: Vec<braid_runtime::Result<Flow>>,
    wanted: Option<&str>,
) -> Result<Vec<Arc<Flow>>, ExitCode> {
    let mut ok = Vec::new();
    let mut broken = false;
    for f in flows {
        match f {
            Ok(f) => ok.push(Arc::new(f)),
            Err(e) => {
                eprintln!("{e}");
                broken = true;
            }
        }
    }
    let names = ok.iter().map(|f| f.name().to_string()).collect::<Vec<_>>().join(", ");
    if let Some(w) = wanted {
        ok.retain(|f| f.name().as_str() == w);
        ok.truncate(1);
    }
    match (ok.is_empty(), broken, wanted) {
        (false, false, _) | (false, true, Some(_)) => Ok(ok),
        // The errors printed above say what is wrong.
        (_, true, _) => Err(ExitCode::from(EXIT_USAGE)),
        (true, false, Some(w)) => Err(usage(format!("this binary has no flow `{w}`; it hosts: {names}"))),
        (true, false, None) => Err(usage("this binary hosts no flow")),
    }
}

/// The one flow `run`, `resume`, `check` and `show` work on: [`hosted`], which must
/// leave one (`--flow` picks it when the binary hosts several).
fn pick_flow(flows: Vec<braid_runtime::Result<Flow>>, wanted: Option<&str>) -> Result<Arc<Flow>, ExitCode> {
    let mut flows = hosted(flows, wanted)?;
    if flows.len() > 1 {
        let names = flows.iter().map(|f| f.name().to_string()).collect::<Vec<_>>().join(", ");
        return Err(usage(format!("this binary hosts several flows; pick one with --flow NAME: {names}")));
    }
    flows.pop().ok_or_else(|| usage("this binary hosts no flow"))
}

fn dispatch(cli: FlowCli, flow: Arc<Flow>) -> ExitCode {
    let flags = store_flags(&cli);
    match cli.command {
        FlowCommand::Plans(_) | FlowCommand::Scheduler(_) | FlowCommand::Backfill(_) | FlowCommand::Worker(_) => {
            ExitCode::from(EXIT_USAGE)
        }
        FlowCommand::Check => check(&flow),
        FlowCommand::Show { mermaid, dot, json } => show(&flow, mermaid, dot, json),
        FlowCommand::Run(args) => {
            let mut opts = RunOptions::default();
            let example = braid_dag::ParamCheck::new(flow.graph().params()).example();
            let mut malformed = Vec::new();
            for p in &args.params {
                match braid_dag::split_param_arg(p, &example) {
                    Ok((k, v)) => opts.params.push((k.to_owned(), v.to_owned())),
                    Err(problem) => malformed.push((format!("--param {p}"), problem)),
                }
            }
            // Text that is not NAME=VALUE is listed with every other problem of the
            // parameters, so one attempt shows them all.
            if !malformed.is_empty() {
                return match braid_runtime::resolve_params_with(&flow, &opts, malformed) {
                    Err(e) => fail(&e, EXIT_USAGE),
                    Ok(_) => usage("--param: expected NAME=VALUE"),
                };
            }
            match parse_tags(&args.tags) {
                Ok(t) => opts.tags = t,
                Err(code) => return code,
            }
            start(flags, flow, opts, args.common)
        }
        FlowCommand::Resume { run, from, force, tags, common } => {
            let origin = match run.as_deref().map(RunId::parse).transpose() {
                Ok(r) => r,
                Err(e) => return usage(e),
            };
            let from = match from.as_deref().map(StepName::new).transpose() {
                Ok(f) => f,
                Err(e) => return usage(format!("--from: {e}")),
            };
            let tags = match parse_tags(&tags) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let opts = RunOptions { resume: Some(Resume { origin, from, force }), tags, ..Default::default() };
            start(flags, flow, opts, common)
        }
    }
}

/// `--tag`s as tags; every one that is not valid is named at once (exit 2).
fn parse_tags(given: &[String]) -> Result<Vec<Tag>, ExitCode> {
    let (ok, bad): (Vec<_>, Vec<_>) = given.iter().map(Tag::new).partition(|r| r.is_ok());
    if bad.is_empty() {
        return Ok(ok.into_iter().filter_map(|r| r.ok()).collect());
    }
    let lines: Vec<String> = bad.into_iter().filter_map(|r| r.err()).map(|e| format!("  --tag: {e}")).collect();
    Err(usage(format!("{} tag(s) are not valid:\n{}", lines.len(), lines.join("\n"))))
}

fn check(flow: &Flow) -> ExitCode {
    let g = flow.graph();
    println!("flow `{}` is valid: {} steps, {} parameters", flow.name(), g.steps().len(), g.params().len());
    ExitCode::SUCCESS
}

fn show(flow: &Flow, mermaid: bool, dot: bool, json: bool) -> ExitCode {
    let g = flow.graph();
    if mermaid {
        println!("{}", g.to_mermaid());
    } else if dot {
        println!("{}", g.to_dot());
    } else if json {
        match serde_json::to_string_pretty(g.spec()) {
            Ok(s) => println!("{s}"),
            Err(e) => return usage(e),
        }
    } else {
        println!("flow {}", flow.name());
        if !g.params().is_empty() {
            println!("parameters:");
            for p in g.params() {
                let default = match &p.default {
                    Some(d) => format!(" = {d}"),
                    None if p.optional => String::new(),
                    None => " (required)".into(),
                };
                let help = p.help.as_deref().map(|h| format!("  {h}")).unwrap_or_default();
                println!("  {}: {}{default}{help}", p.name, p.type_text());
            }
        }
        println!("steps:");
        for s in g.steps() {
            let kind = if s.kind == braid_dag::StepKind::Join { " (join)" } else { "" };
            let next = match &s.next {
                braid_dag::Transition::End => "end of flow".to_owned(),
                braid_dag::Transition::Next { to } => format!("-> {to}"),
                braid_dag::Transition::Split { to } => {
                    format!("-> split {}", to.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "))
                }
                braid_dag::Transition::Foreach { over, to } => format!("-> foreach {over} -> {to}"),
                braid_dag::Transition::Switch { on, cases } => format!(
                    "-> switch on {on}: {}",
                    cases.iter().map(|(c, t)| format!("{c} -> {t}")).collect::<Vec<_>>().join(", ")
                ),
            };
            println!("  {}{kind} {next}", s.name);
            if let Some(d) = &s.doc {
                println!("      {d}");
            }
        }
    }
    ExitCode::SUCCESS
}

fn start(flags: StoreFlags, flow: Arc<Flow>, mut opts: RunOptions, common: CommonRunArgs) -> ExitCode {
    if let Some(w) = common.max_workers {
        if w == 0 {
            return usage("--max-workers must be at least 1");
        }
        opts.max_workers = w;
    }
    opts.max_num_splits = common.max_num_splits;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&Context::new("cannot start the async runtime", e), EXIT_FAILED),
    };
    runtime.block_on(async move {
        let store = match open_store(&flags).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        let on_workers = On::workers(common.on, &store);
        match (on_workers, &common.queue) {
            (true, q) => {
                let queue = q.clone().unwrap_or_else(|| braid_runtime::DEFAULT_QUEUE.to_owned());
                eprintln!(
                    "on workers: this run's tasks go to queue `{queue}`, for workers started with `{} worker --store ... --queue {queue}` (without one, the run waits)",
                    program_name()
                );
                opts.execution = braid_runtime::Execution::Workers { queue };
            }
            (false, Some(_)) => return usage("--queue is for runs on workers; add --on workers"),
            (false, None) => {}
        }
        let cancel = CancellationToken::new();
        opts.cancel = cancel.clone();
        if let Some(addr) = &common.metrics_addr {
            let metrics = Arc::new(braid_runtime::Metrics::new());
            let render = metrics.clone();
            match serve_metrics(addr, common.metrics_token.as_deref(), Arc::new(move || render.encode())).await {
                Ok(bound) => eprintln!("metrics at http://{bound}/metrics"),
                Err(e) => return usage(e),
            }
            opts.metrics = Some(metrics);
        }
        let prepared = match PreparedRun::prepare(flow.clone(), store, opts).await {
            Ok(p) => p,
            Err(
                e @ (braid_runtime::Error::Param { .. }
                | braid_runtime::Error::Params(_)
                | braid_runtime::Error::Resume { .. }
                | braid_runtime::Error::Worker { .. }),
            ) => return fail(&e, EXIT_USAGE),
            Err(e) => return fail(&e, EXIT_FAILED),
        };
        let pathspec = format!("{}/{}", flow.name(), prepared.run_id());
        if let Some(path) = &common.run_id_file
            && let Err(e) = std::fs::write(path, format!("{}\n", prepared.run_id()))
        {
            return fail(&Context::new(format!("cannot write --run-id-file {}", path.display()), e), EXIT_FAILED);
        }
        println!("{pathspec} started");
        let _ = std::io::stdout().flush();
        tokio::spawn({
            let cancel = cancel.clone();
            async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("\ncancelling (Ctrl-C)...");
                    cancel.cancel();
                }
            }
        });
        let live =
            (!common.quiet && std::io::stderr().is_terminal()).then(|| LiveView::start(&flow, prepared.progress()));
        let result = prepared.execute().await;
        if let Some(l) = live {
            l.finish().await;
        }
        match result {
            Ok(summary) => report(&pathspec, &summary),
            Err(e) => fail(&e, EXIT_FAILED),
        }
    })
}

/// The name this program was started as, for the commands it suggests.
pub(crate) fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "myflow".to_owned())
}

/// What `/metrics` serves: the current metrics as an OpenMetrics document.
pub(crate) type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves what `render` gives in the Prometheus text format at `/metrics` on `addr`, in
/// the background, for as long as the process lives (`run` and `scheduler`). Off loopback
/// it refuses to start without a `token`; with one, a scrape without
/// `Authorization: Bearer TOKEN` gets 401.
pub(crate) async fn serve_metrics(
    addr: &str,
    token: Option<&str>,
    render: RenderMetrics,
) -> Result<std::net::SocketAddr, String> {
    let token = token.filter(|t| !t.is_empty());
    if let Some(t) = token
        && t.len() < crate::ui::MIN_TOKEN_LEN
    {
        return Err(format!(
            "--metrics-token is {} characters; use at least {} (e.g. `--metrics-token $(head -c 24 /dev/urandom | base64)`)",
            t.len(),
            crate::ui::MIN_TOKEN_LEN
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--metrics-addr {addr}: cannot listen there: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    if !bound.ip().is_loopback() && token.is_none() {
        return Err(format!(
            "--metrics-addr {addr} is not a loopback address, so the metrics need a token: pass --metrics-token \
             TOKEN or set BRAID_METRICS_TOKEN (at least {} characters; scrapers send it as `Authorization: Bearer \
             TOKEN`), or bind 127.0.0.1",
            crate::ui::MIN_TOKEN_LEN
        ));
    }
    let token = token.map(|t| blake3::hash(t.as_bytes()));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let render = render.clone();
            async move {
                use axum::response::IntoResponse;
                let given = headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|t| blake3::hash(t.trim().as_bytes()));
                if token.is_some_and(|t| given != Some(t)) {
                    return (
                        axum::http::StatusCode::UNAUTHORIZED,
                        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                        "this metrics endpoint needs `Authorization: Bearer TOKEN` (the --metrics-token it was started with)\n",
                    )
                        .into_response();
                }
                (
                    [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    render(),
                )
                    .into_response()
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

fn report(pathspec: &str, s: &RunSummary) -> ExitCode {
    let reused = if s.reused > 0 { format!(", {} reused", s.reused) } else { String::new() };
    println!("{pathspec} {} in {:.2}s ({} tasks run{reused})", s.status, s.elapsed.as_secs_f64(), s.executed);
    match s.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Cancelled => ExitCode::from(EXIT_CANCELLED),
        _ => {
            if let Some(e) = &s.error {
                eprintln!("error: {e}");
            }
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Per-step bars on stderr: done / running / failed counts, refreshed a few times a second.
struct LiveView {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl LiveView {
    fn start(flow: &Flow, progress: Arc<braid_runtime::RunProgress>) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let style = ProgressStyle::with_template("{prefix:>16} {spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bars: Vec<(String, ProgressBar)> = flow
            .graph()
            .topological_order()
            .iter()
            .map(|s| {
                let b = multi.add(ProgressBar::new_spinner());
                b.set_style(style.clone());
                b.set_prefix(s.to_string());
                b.set_message("waiting");
                (s.to_string(), b)
            })
            .collect();
        let stop = CancellationToken::new();
        let stop2 = stop.clone();
        let handle = tokio::spawn(async move {
            loop {
                let snap = progress.snapshot();
                for (name, bar) in &bars {
                    if let Some(c) = snap.get(name) {
                        let failed = if c.failed > 0 { format!(", {} failed", c.failed) } else { String::new() };
                        bar.set_message(format!("{} done, {} running{failed}", c.done, c.running));
                        bar.tick();
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(125)) => {}
                    _ = stop2.cancelled() => break,
                }
            }
            for (_, b) in &bars {
                b.finish();
            }
            let _ = multi.clear();
        });
        LiveView { stop, handle }
    }

    async fn finish(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

#[cfg(test)]
mod metrics_server_tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use super::serve_metrics;

    fn get(addr: std::net::SocketAddr, auth: Option<&str>) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn off_loopback_the_metrics_need_a_token_and_with_one_every_scrape_must_carry_it() {
        let render: super::RenderMetrics = Arc::new(|| "braid_up 1\n# EOF\n".to_owned());
        let e = serve_metrics("0.0.0.0:0", None, render.clone()).await.unwrap_err();
        assert!(e.contains("not a loopback address") && e.contains("--metrics-token"), "{e}");
        let e = serve_metrics("127.0.0.1:0", Some("short"), render.clone()).await.unwrap_err();
        assert!(e.contains("at least 16"), "{e}");

        let open = serve_metrics("127.0.0.1:0", None, render.clone()).await.unwrap();
        let r = tokio::task::spawn_blocking(move || get(open, None)).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200") && r.contains("braid_up 1"), "{r}");

        let token = "a-long-enough-secret-token";
        let guarded = serve_metrics("127.0.0.1:0", Some(token), render).await.unwrap();
        let (no, wrong, right) = tokio::task::spawn_blocking(move || {
            (get(guarded, None), get(guarded, Some("not-the-right-token-at-all")), get(guarded, Some(token)))
        })
        .await
        .unwrap();
        assert!(no.starts_with("HTTP/1.1 401") && !no.contains("braid_up"), "{no}");
        assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
        assert!(right.starts_with("HTTP/1.1 200") && right.contains("braid_up 1"), "{right}");
    }
}
