//! `myflow worker`: runs step bodies of any run of the binary's flows, claimed from the
//! store's task queue, until SIGTERM (or Ctrl-C) drains it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use braid_runtime::{Flow, WorkerOptions, WorkerStop};
use clap::Args;

use crate::flow_main::{EXIT_FAILED, EXIT_USAGE, StoreFlags, hosted, open_store, serve_metrics, usage};
use crate::report::fail;

/// `worker`'s flags.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Attempts this worker holds at once: claimed, running, or storing results
    /// (default 16; for steps that keep a core busy, this machine's cores).
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// The queue it claims from (default `default`; a step's `.queue(name)` sends its
    /// tasks to another).
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// When draining (the first SIGTERM or Ctrl-C), how long what it holds may take to
    /// finish before the rest is handed back to the queue (default 30).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    grace: u64,
    /// Do not take over runs whose driving process died (by default every worker looks
    /// for them, and one takes each over).
    #[arg(long)]
    no_adopt: bool,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464).
    /// Anything but a loopback address needs --metrics-token.
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// A secret every scrape must carry as `Authorization: Bearer TOKEN`; required when
    /// --metrics-addr is not a loopback address, at least 16 characters.
    #[arg(long, env = "BRAID_METRICS_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    metrics_token: Option<String>,
}

/// Runs the worker; exit 0 once drained, 2 for bad usage, 1 when the store fails.
pub(crate) fn worker(
    flags: StoreFlags,
    wanted: Option<&str>,
    flows: Vec<braid_runtime::Result<Flow>>,
    args: WorkerArgs,
) -> ExitCode {
    let flows = match hosted(flows, wanted) {
        Ok(f) => f,
        Err(code) => return code,
    };
    let mut opts = WorkerOptions::default();
    if let Some(n) = args.concurrency {
        if n == 0 {
            return usage("--concurrency must be at least 1");
        }
        opts.concurrency = n;
    }
    if let Some(q) = args.queue {
        opts.queue = q;
    }
    opts.grace = Duration::from_secs(args.grace);
    opts.adopt_runs = !args.no_adopt;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&crate::report::Context::new("cannot start the async runtime", e), EXIT_FAILED),
    };
    runtime.block_on(async move {
        let store = match open_store(&flags).await {
            Ok(s) => s,
            Err(code) => return code,
        };
        if let Some(addr) = &args.metrics_addr {
            let metrics = Arc::new(braid_runtime::Metrics::new());
            let render = metrics.clone();
            match serve_metrics(addr, args.metrics_token.as_deref(), Arc::new(move || render.encode())).await {
                Ok(bound) => eprintln!("metrics at http://{bound}/metrics"),
                Err(e) => return usage(e),
            }
            opts.metrics = Some(metrics);
        }
        let stop = WorkerStop::default();
        let signals = tokio::spawn(watch_signals(stop.clone()));
        let names = flows.iter().map(|f| f.name().to_string()).collect::<Vec<_>>().join(", ");
        eprintln!(
            "worker for {names}: claiming from queue `{}` of {} ({} at once); SIGTERM or Ctrl-C drains",
            opts.queue,
            store.location(),
            opts.concurrency
        );
        let result = braid_runtime::run_worker(flows, store, opts, stop).await;
        signals.abort();
        match result {
            Ok(r) => {
                eprintln!(
                    "worker stopped: {} claimed, {} completed, {} handed back, {} claims lost, {} stale results refused",
                    r.claimed, r.completed, r.handed_back, r.claims_lost, r.stale_results
                );
                ExitCode::SUCCESS
            }
            Err(e @ braid_runtime::Error::Worker { .. }) => fail(&e, EXIT_USAGE),
            Err(e) => fail(&e, EXIT_FAILED),
        }
    })
}

/// The first SIGTERM or SIGINT drains the worker; the second hands everything back.
async fn watch_signals(stop: WorkerStop) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::warn!("cannot watch for SIGTERM and SIGINT; stop this worker with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("draining: no new claims; finishing what this worker holds (signal again to hand it back now)");
    stop.drain.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("handing back what this worker holds...");
    stop.hand_back.cancel();
}
