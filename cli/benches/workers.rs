//! Runs on workers through PostgreSQL, side by side with the in-process path, on a
//! throwaway server on this machine (`braid_store::test_servers`; blobs in a shared
//! directory, as trivial tasks store no blob but their foreach's list): the `fanout`
//! foreach of trivial tasks with 1, 2 and 4 worker processes (this bench binary, started
//! again as a flow binary's `worker`), how long a task waits from the moment the driver
//! decides it to the moment a worker starts it (p50/p99: idle workers woken by `NOTIFY`,
//! a chain of steps one at a time; and under the 4-worker load), and the time from a
//! worker's `kill -9` to its task running on another worker.
//!
//! `--quick` (CI) measures nothing here (servers and worker processes take too long for a
//! smoke test) and prints one row saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/fanout/flow.rs"]
mod fanout_flow;

#[path = "support/rows.rs"]
mod rows;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_core::{RunId, Timestamp};
use braid_runtime::{Execution, Flow, Param, ParamType, PreparedRun, RunOptions};
use braid_store::{Store, TaskQuery, test_servers};
use rows::emit;
use serde_json::Value;

const SECTION: &str = "workers";
/// Set in a worker process: its command line, as JSON.
const WORKER_ARGS: &str = "BRAID_BENCH_WORKER_ARGS";

fn row(name: impl Into<String>, value: Option<f64>, unit: &str, note: impl Into<String>) -> Value {
    rows::row(SECTION, name, value, unit, note)
}

/// A chain of `steps` trivial steps: one task at a time, so each waits only for the
/// queue, not for other tasks.
fn chain(steps: usize) -> braid_runtime::Result<Flow> {
    let mut b = Flow::builder("chain").step("start", |_| async { Ok(()) }).next("s1");
    for i in 1..steps {
        let next = format!("s{}", i + 1);
        b = b.step(&format!("s{i}"), |_| async { Ok(()) }).next(&next);
    }
    b.step(&format!("s{steps}"), |_| async { Ok(()) }).next("end").step("end", |_| async { Ok(()) }).end().build()
}

/// One task that sleeps `ms`, to kill its worker in the middle.
fn sleepy() -> braid_runtime::Result<Flow> {
    Flow::builder("sleepy")
        .param(Param::new("ms", ParamType::UInt).default(20_000u64))
        .step("start", |ctx| async move {
            let ms: u64 = ctx.param("ms")?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build()
}

const CHAIN: usize = 200;

fn flows() -> Vec<braid_runtime::Result<Flow>> {
    vec![fanout_flow::fanout(), chain(CHAIN), sleepy()]
}

fn flow(name: &str) -> Arc<Flow> {
    let f = flows().into_iter().map(|f| f.unwrap()).find(|f| f.name().as_str() == name).unwrap();
    Arc::new(f)
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_workers(n: usize, db: &str, blobs: &str, concurrency: usize, log_dir: &Path) -> Workers {
    let exe = std::env::current_exe().unwrap();
    let workers = (0..n)
        .map(|i| {
            let args = [
                "bench",
                "--store",
                db,
                "--blobs",
                blobs,
                "worker",
                "--no-adopt",
                "--concurrency",
                &concurrency.to_string(),
            ];
            Command::new(&exe)
                .env(WORKER_ARGS, serde_json::to_string(&args).unwrap())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log_dir.join(format!("worker-{n}-{i}.log"))).unwrap())
                .spawn()
                .unwrap()
        })
        .collect();
    // Let them connect and wait on the queue.
    std::thread::sleep(Duration::from_millis(1500));
    Workers(workers)
}

async fn run(store: &Store, flow: Arc<Flow>, n: Option<u64>, execution: Execution) -> (RunId, Duration) {
    let mut opts = RunOptions { execution, env_params: false, ..Default::default() };
    if let Some(n) = n {
        opts.param_values.insert("n".into(), serde_json::json!(n));
    }
    let prepared = PreparedRun::prepare(flow, store.clone(), opts).await.unwrap();
    let run = prepared.run_id();
    let start = Instant::now();
    let summary = prepared.execute().await.unwrap();
    assert_eq!(summary.status, braid_core::RunStatus::Succeeded, "{summary:?}");
    (run, start.elapsed())
}

/// From the decision to run each task (its record's creation) to its start on a worker.
async fn waits(store: &Store, flow: &str, run: RunId) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut q = TaskQuery { limit: 10_000, ..Default::default() };
    let flow = flow.parse().unwrap();
    loop {
        let page = store.records.list_tasks(&flow, run, &q).await.unwrap();
        for t in page.items {
            if let Some(s) = t.started_at {
                out.push(s.since(t.created_at));
            }
        }
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    out.sort();
    out
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)].as_secs_f64() * 1000.0
}

fn main() {
    if let Ok(args) = std::env::var(WORKER_ARGS) {
        let args: Vec<String> = serde_json::from_str(&args).unwrap();
        let code = braid_cli::flow_main_from(args, flows());
        let n = (0..=255u8).find(|n| std::process::ExitCode::from(*n) == code).unwrap_or(1);
        std::process::exit(n.into());
    }
    let mut quick = false;
    let mut json_out: Option<PathBuf> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--json-out" => json_out = it.next().map(PathBuf::from),
            _ => {}
        }
    }
    if quick {
        emit(
            &[row("workers", None, "", "not measured with --quick (servers and worker processes)")],
            json_out.as_deref(),
        );
        return;
    }
    let Some(pg) = test_servers::postgres() else {
        emit(&[row("workers", None, "", "not measured: install postgresql")], json_out.as_deref());
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let blobs = format!("file://{}", dir.path().join("blobs").display());
    std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let n = 10_000u64;
    let tasks = (n + 3) as f64;
    let mut rows = Vec::new();
    rt.block_on(async {
        let fresh = || async {
            let db = pg.fresh_database();
            (Store::connect(&db, Some(&blobs)).await.unwrap(), db)
        };
        eprintln!("workers: in-process on PostgreSQL");
        let (store, _) = fresh().await;
        let (_, el) = run(&store, flow("fanout"), Some(n), Execution::InProcess).await;
        rows.push(row(
            format!("fanout of {n} trivial tasks, in-process (PostgreSQL)"),
            Some(tasks / el.as_secs_f64()),
            "tasks/s",
            format!("{:.2} s; the launching process runs every step", el.as_secs_f64()),
        ));
        let mut loaded = Vec::new();
        for w in [1usize, 2, 4] {
            eprintln!("workers: {w} worker(s)");
            let (store, db) = fresh().await;
            let _workers = start_workers(w, &db, &blobs, 32, dir.path());
            let (run_id, el) =
                run(&store, flow("fanout"), Some(n), Execution::Workers { queue: "default".into() }).await;
            rows.push(row(
                format!("fanout of {n} trivial tasks on {w} worker(s)"),
                Some(tasks / el.as_secs_f64()),
                "tasks/s",
                format!("{:.2} s; each worker a process holding 32 at once, the driver in this one", el.as_secs_f64()),
            ));
            if w == 4 {
                loaded = waits(&store, "fanout", run_id).await;
            }
        }
        eprintln!("workers: enqueue to start");
        let (store, db) = fresh().await;
        let _workers = start_workers(2, &db, &blobs, 8, dir.path());
        let (run_id, _) = run(&store, flow("chain"), None, Execution::Workers { queue: "default".into() }).await;
        let idle = waits(&store, "chain", run_id).await;
        let idle_note = format!("a chain of {} steps, one at a time, 2 idle workers woken by NOTIFY", idle.len());
        rows.push(row("decided → started on a worker, p50 (idle)", Some(pct(&idle, 0.5)), "ms", idle_note.clone()));
        rows.push(row("decided → started on a worker, p99 (idle)", Some(pct(&idle, 0.99)), "ms", idle_note));
        let load_note = format!("the {n} branches of the 4-worker run: waiting for a free slot included");
        rows.push(row("decided → started, p50 (4 workers loaded)", Some(pct(&loaded, 0.5)), "ms", load_note.clone()));
        rows.push(row("decided → started, p99 (4 workers loaded)", Some(pct(&loaded, 0.99)), "ms", load_note));

        eprintln!("workers: kill -9 a worker");
        let (store, db) = fresh().await;
        let mut workers = start_workers(2, &db, &blobs, 1, dir.path());
        let flow_s = flow("sleepy");
        let cancel = braid_runtime::CancellationToken::new();
        let opts = RunOptions {
            execution: Execution::Workers { queue: "default".into() },
            cancel: cancel.clone(),
            env_params: false,
            ..Default::default()
        };
        let prepared = PreparedRun::prepare(flow_s, store.clone(), opts).await.unwrap();
        let run_id = prepared.run_id();
        let running = tokio::spawn(prepared.execute());
        let name = "sleepy".parse().unwrap();
        let task = loop {
            let page = store.records.list_tasks(&name, run_id, &TaskQuery::default()).await.unwrap();
            if let Some(t) = page.items.into_iter().find(|t| t.dispatch.is_some()) {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let holder = task.dispatch.as_ref().unwrap().worker.clone();
        let pid: u32 = holder.rsplit(':').next().unwrap().parse().unwrap();
        let victim = workers.0.iter().position(|c| c.id() == pid).expect("the holder is one of the workers");
        let killed = Timestamp::now();
        workers.0[victim].kill().unwrap();
        let again = loop {
            let t = store.records.get_task(&name, run_id, task.key.task).await.unwrap().unwrap();
            if let Some(d) = &t.dispatch
                && d.lost >= 1
            {
                break t.started_at.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        rows.push(row(
            "kill -9 of a worker → its task running on another",
            Some(again.since(killed).as_secs_f64()),
            "s",
            format!(
                "claim lease {} s renewed every {:.1} s, the other worker polling every 1 s",
                braid_runtime::CLAIM_LEASE.as_secs(),
                braid_runtime::CLAIM_LEASE.as_secs_f64() / 4.0
            ),
        ));
        cancel.cancel();
        let _ = running.await;
    });
    emit(&rows, json_out.as_deref());
}
