//! The `braid` binary: read-only commands over a store, plus its writes: `tag`, and
//! `plan activate|deactivate|delete|resume-set|launch` (a launch is a request a running scheduler starts).
//!
//! Every read command takes `--json` and then prints exactly one JSON document on
//! stdout. Exit codes: 0 ok, 1 not found or another runtime error (`error: ...` on stderr, then a
//! `caused by:` line per cause),
//! 2 bad usage (clap's message, which includes malformed pathspecs, statuses and tags).

mod artifact;
mod copy;
mod dag;
mod error;
mod gc;
pub(crate) mod json;
mod logs;
pub(crate) mod output;
pub(crate) mod plan;
mod queue;
mod show;
mod tag;
mod verify;
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use braid_client::{Client, Pathspec, RunStatus, Tag, TagWriter};
use braid_core::Label;
use clap::{Args, Parser, Subcommand};

pub(crate) use error::{Error, Result};
use output::Out;

/// Inspect what braid runs produced: flows, runs, steps, tasks, artifacts, logs.
#[derive(Debug, Parser)]
#[command(name = "braid", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub(crate) struct Global {
    /// The store to read: a directory (default ./.braid), `memory:`, or
    /// postgres://USER@HOST[:PORT]/DB.
    #[arg(long, global = true, env = "BRAID_STORE", value_name = "PATH")]
    pub(crate) store: Option<String>,
    /// Where a postgres:// store's blobs are: s3://BUCKET/PREFIX (endpoint, region and
    /// credentials from the AWS_* environment) or file:///SHARED/DIR.
    #[arg(long, global = true, env = "BRAID_BLOBS", value_name = "LOCATION")]
    pub(crate) blobs: Option<String>,
    /// Print exactly one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the flows in the store, each with its latest run.
    Flows,
    /// Copy everything of one store into another (e.g. ./.braid into PostgreSQL + S3):
    /// flows, plans, launches, runs with their tasks, attempts, artifacts and logs.
    /// Idempotent and resumable: run it again after an interruption; a second copy
    /// changes nothing. `--blobs` is where the destination's blobs go.
    Copy {
        /// The store to copy from: a directory, or postgres://…
        #[arg(long, value_name = "LOCATION")]
        from: String,
        /// Where the source's blobs are, for a postgres:// source.
        #[arg(long, value_name = "LOCATION")]
        from_blobs: Option<String>,
        /// The store to copy into: a directory, or postgres://… (with --blobs).
        #[arg(long, value_name = "LOCATION")]
        to: String,
    },
    /// List runs, newest first: of FLOW, or of every flow.
    Runs {
        /// Only this flow's runs.
        flow: Option<String>,
        /// Only runs with this status (pending, running, succeeded, failed, cancelled).
        #[arg(long, value_parser = parse_status)]
        status: Option<RunStatus>,
        /// Only runs with this tag.
        #[arg(long, value_parser = parse_tag)]
        tag: Option<Tag>,
        /// Only runs with this name; a trailing `*` matches a prefix, e.g.
        /// `data_sync_hourly_*` for every parameter set of a plan.
        #[arg(long)]
        name: Option<String>,
        /// Only runs a launch plan started (its name, as recorded in the run's meta).
        #[arg(long)]
        plan: Option<String>,
        /// Only runs this user launched (`user` in the run's meta: `BRAID_USER`, else the
        /// login name of the process that started it).
        #[arg(long)]
        user: Option<String>,
        /// At most this many runs (0 for all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show a flow, a run (steps with counts and durations), a step (its tasks) or a
    /// task (status, attempts, error, artifacts, last log lines).
    Show {
        /// flow[/run[/step[/task]]]; the run may be `latest`, the task is a task id.
        #[arg(value_parser = parse_pathspec)]
        pathspec: Pathspec,
        /// With a step pathspec: the task with this foreach index.
        #[arg(long)]
        index: Option<u64>,
        /// Log lines to show for a task.
        #[arg(long, default_value_t = 10)]
        lines: usize,
        /// With a step pathspec: list every task, however many (a step of more than
        /// 2,000 tasks is otherwise summarised: counts, the tasks that did not succeed,
        /// the first ones). `--json` always prints every task.
        #[arg(long)]
        all: bool,
    },
    /// Print an artifact's value: its JSON preview (`--json` for the bare JSON), or with
    /// `--raw` the stored envelope bytes. A step with many tasks prints every task's value.
    Artifact {
        /// A task (flow/run/step/task), or a step (one task, or all with their indexes).
        #[arg(value_parser = parse_pathspec)]
        pathspec: Pathspec,
        /// The artifact's name.
        name: String,
        /// With a step pathspec: the task with this foreach index.
        #[arg(long)]
        index: Option<u64>,
        /// Write the raw stored envelope bytes to stdout.
        #[arg(long, conflicts_with = "json")]
        raw: bool,
    },
    /// Print a task's log lines.
    Logs {
        /// A task (flow/run/step/task), or a step with one task.
        #[arg(value_parser = parse_pathspec)]
        pathspec: Pathspec,
        /// With a step pathspec: the task with this foreach index.
        #[arg(long)]
        index: Option<u64>,
        /// Keep printing new lines until the task ends (with --json: print them all then).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Follow a run live, a bar per step and the running tasks' progress, until it ends.
    /// Exits 1 if the run did not succeed.
    Watch {
        /// flow/run (the run may be `latest`), or a flow for its latest run.
        #[arg(value_parser = parse_pathspec)]
        run: Pathspec,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 0.5)]
        interval: f64,
    },
    /// Draw a flow's graph from its stored spec.
    Dag {
        flow: String,
        /// Mermaid flowchart text.
        #[arg(long, conflicts_with = "dot")]
        mermaid: bool,
        /// Graphviz DOT text.
        #[arg(long)]
        dot: bool,
    },
    /// Add or remove a run's tags.
    Tag {
        #[command(subcommand)]
        action: TagAction,
    },
    /// Launch plans: list, show, activate, deactivate, delete, resume-set, launch.
    Plan {
        #[command(subcommand)]
        action: PlanAction,
    },
    /// Check the store's integrity: the record database (structure, every row's
    /// checksum, every value decoded) and every blob against its hash. Names each damaged
    /// file and record; exits 1 if anything is damaged.
    Verify,
    /// Delete old runs (their tasks, attempts, artifact rows, logs), then the blobs no
    /// remaining run references, and give the space back. Never collected: runs tagged
    /// `keep`, runs not finished, runs a remaining run was resumed from.
    Gc(gc::GcArgs),
    /// Serve the web UI and the JSON API (/api/v1) over the store, on 127.0.0.1:8080
    /// unless told otherwise.
    Ui(crate::ui::UiArgs),
    /// The task queues of a PostgreSQL store: tasks ready and claimed, and each cap.
    Queues,
    /// A task queue: `limit QUEUE N` caps how many of its tasks are claimed at once over
    /// every worker (`none` lifts the cap).
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum QueueAction {
    /// Cap how many of QUEUE's tasks run at once, over every worker.
    Limit {
        /// The queue (`default`, or what a step's `.queue(name)` names).
        queue: String,
        /// At most this many tasks claimed at once, or `none`.
        limit: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PlanAction {
    /// List plans with version, active flag, schedule, parameter sets, labels, next tick.
    List {
        /// Only plans with this label (key=value); repeat to require several.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<Label>,
        /// Only plans of this flow.
        #[arg(long)]
        flow: Option<String>,
        /// Deleted plans too (shown as deleted).
        #[arg(long)]
        all: bool,
    },
    /// A plan: versions, schedule and its next ticks in the plan's time zone, inputs,
    /// matrix, and the latest launches of each parameter set.
    Show {
        name: String,
        /// How many next ticks to show.
        #[arg(long, default_value_t = 5)]
        ticks: usize,
        /// How many recent launches per parameter set.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Activate plans by name, or every plan with the labels (one atomic write). Ticks
    /// start counting from now: ticks while a plan was inactive are not caught up.
    Activate {
        names: Vec<String>,
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<Label>,
    },
    /// Deactivate plans by name, or every plan with the labels (one atomic write).
    Deactivate {
        names: Vec<String>,
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<Label>,
    },
    /// Delete plans by name, or every plan with the labels (one atomic write): they stop
    /// launching and leave `plan list` (`--all` shows them); their runs keep naming them.
    /// Applying a deleted plan's file again registers it anew: a new history whose
    /// version numbers continue.
    Delete {
        names: Vec<String>,
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<Label>,
    },
    /// Resume paused parameter sets of a plan (`pause_after_failures`): those every
    /// `--param NAME=VALUE` selects, or every set without `--param`. They launch again
    /// from their next tick; failures before now no longer count.
    ResumeSet {
        name: String,
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Request a launch of a plan now: every parameter set, or those `--param` selects
    /// for a matrix parameter (other `--param`s override defaults; fixed inputs cannot
    /// be overridden). A running `scheduler` of the plan's flow starts it.
    Launch {
        name: String,
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TagAction {
    /// Add tags to a run.
    Add {
        /// flow/run; the run may be `latest`.
        #[arg(value_parser = parse_pathspec)]
        run: Pathspec,
        #[arg(required = true, value_parser = parse_tag)]
        tags: Vec<Tag>,
    },
    /// Remove tags from a run.
    Remove {
        /// flow/run; the run may be `latest`.
        #[arg(value_parser = parse_pathspec)]
        run: Pathspec,
        #[arg(required = true, value_parser = parse_tag)]
        tags: Vec<Tag>,
    },
}

fn parse_pathspec(s: &str) -> std::result::Result<Pathspec, String> {
    Pathspec::parse(s).map_err(|e| e.to_string())
}

fn parse_status(s: &str) -> std::result::Result<RunStatus, String> {
    s.parse().map_err(|e: braid_core::Error| e.to_string())
}

fn parse_label(s: &str) -> std::result::Result<Label, String> {
    s.parse().map_err(|e: braid_core::Error| e.to_string())
}

fn parse_tag(s: &str) -> std::result::Result<Tag, String> {
    Tag::new(s).map_err(|e| e.to_string())
}

/// The `braid` binary: parses the command line, runs the command, maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let out = Out::detect(cli.global.json);
    match run(cli, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            out.error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs one parsed command.
pub(crate) fn run(cli: Cli, out: &Out) -> Result<()> {
    if let Command::Verify = cli.command {
        let flag = cli.global.store.as_deref().filter(|s| !s.is_empty());
        return verify::verify(&braid_store::Store::resolve_location(flag), out);
    }
    if let Command::Copy { from, from_blobs, to } = &cli.command {
        // The destination's blobs: --blobs, else BRAID_BLOBS (through clap).
        return copy::copy(out, from, from_blobs.as_deref(), to, cli.global.blobs.as_deref());
    }
    let store = open(&cli.global)?;
    let client = Client::from_store(store.clone());
    match cli.command {
        Command::Flows => show::flows(&client, out),
        Command::Copy { .. } => Err(Error::Usage("copy opens its own stores".into())),
        Command::Runs { flow, status, tag, name, plan, user, limit } => {
            let names = show::NameFilter { name, plan, user };
            show::runs(&client, out, flow.as_deref(), status, tag, &names, limit)
        }
        Command::Show { pathspec, index, lines, all } => show::show(&client, out, &pathspec, index, lines, all),
        Command::Artifact { pathspec, name, index, raw } => {
            artifact::artifact(&client, out, &pathspec, &name, index, raw)
        }
        Command::Logs { pathspec, index, follow } => logs::logs(&client, out, &pathspec, index, follow),
        Command::Watch { run, interval } => {
            let interval = Duration::from_secs_f64(interval.clamp(0.05, 3600.0));
            watch::watch(&client, out, &run, interval)
        }
        Command::Dag { flow, mermaid, dot } => dag::dag(&client, out, &flow, mermaid, dot),
        Command::Tag { action } => match action {
            TagAction::Add { run, tags } => tag::tag(&client, TagWriter::from_store(store), out, &run, &tags, true),
            TagAction::Remove { run, tags } => tag::tag(&client, TagWriter::from_store(store), out, &run, &tags, false),
        },
        Command::Plan { action } => match action {
            PlanAction::List { labels, flow, all } => plan::list(&client, out, &labels, flow.as_deref(), all),
            PlanAction::Show { name, ticks, runs } => plan::show(&client, out, &name, ticks, runs),
            PlanAction::Activate { names, labels } => plan::set_active(&store, out, &names, &labels, true),
            PlanAction::Deactivate { names, labels } => plan::set_active(&store, out, &names, &labels, false),
            PlanAction::Launch { name, params } => plan::launch(&store, out, &name, &params),
            PlanAction::Delete { names, labels } => plan::delete(&store, out, &names, &labels),
            PlanAction::ResumeSet { name, params } => plan::resume_set(&store, out, &name, &params),
        },
        Command::Gc(args) => gc::gc(&store, client.location(), out, &args),
        // Handled above: it reads the store without opening a client.
        Command::Verify => Ok(()),
        Command::Ui(args) => crate::ui::serve(store, &args),
        Command::Queues => queue::queues(&store, out),
        Command::Queue { action: QueueAction::Limit { queue: name, limit } } => {
            queue::limit(&store, out, &name, &limit)
        }
    }
}

/// The store `--store` (or `BRAID_STORE`, else `./.braid`) names, with its blobs where
/// `--blobs` (or `BRAID_BLOBS`) says; one that does not exist is an error, never created.
/// Reads go through a [`Client`] over it; only `tag`, `gc`, `queue limit` and `plan
/// activate|deactivate|delete|resume-set|launch` (and the UI's plan buttons) write to it.
fn open(global: &Global) -> Result<braid_store::Store> {
    let flag = global.store.as_deref().filter(|s| !s.is_empty());
    let location = braid_store::Store::resolve_location(flag);
    let blobs = braid_store::Store::resolve_blobs(global.blobs.as_deref());
    Ok(braid_client::open_store(&location, blobs.as_deref())?)
}
