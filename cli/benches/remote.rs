//! PostgreSQL + S3 side by side with the fs store, on throwaway servers on this machine
//! (`braid_store::test_servers`): durable task records per second (batched, and one per
//! call), the fanout foreach of 10,000 and 100,000 trivial tasks in one process, and
//! client reads (one artifact from each of 10,000 tasks; `task_by_index` at 100,000).
//!
//! `--quick` (CI) measures nothing here: starting the servers and the 100,000-task runs
//! take too long for a smoke test; it prints one row saying so. Without PostgreSQL or moto
//! installed it prints one row saying what to install.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/fanout/flow.rs"]
mod fanout_flow;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_client::Client;
use braid_core::{RunId, RunStatus, StepName, TaskId};
use braid_runtime::{Flow, RunOptions};
use braid_store::{RecordStore, RunRecord, Store, TaskKey, TaskRecord, TaskWrite, test_servers};
use serde_json::Value;

const SECTION: &str = "remote";

#[path = "support/rows.rs"]
mod rows;
use rows::emit;

fn row(name: impl Into<String>, value: Option<f64>, unit: &str, note: impl Into<String>) -> Value {
    rows::row(SECTION, name, value, unit, note)
}

/// The `fanout` example's flow (`n` = 100 unless given).
fn fanout() -> Flow {
    fanout_flow::fanout().expect("the fanout flow is valid")
}

async fn pg_s3(pg: &test_servers::PgServer, s3: &test_servers::S3Server) -> Store {
    let db = pg.fresh_database();
    let bucket = s3.fresh_bucket();
    let (records, plans) = braid_store::pg::open(&db).await.unwrap();
    let blobs = braid_store::s3::S3Blobs::open_with(&bucket, &s3.env()).await.unwrap();
    Store::from_parts(Arc::new(blobs), Arc::new(records), Arc::new(plans), braid_store::pg::redact(&db), Some(bucket))
}

fn tasks(run: RunId, from: u64, n: u64) -> Vec<TaskWrite> {
    (from..from + n)
        .map(|t| {
            let key =
                TaskKey { flow: "bench".parse().unwrap(), run, step: StepName::new("work").unwrap(), task: TaskId(t) };
            let mut r = TaskRecord::new(key);
            r.status = braid_core::TaskStatus::Succeeded;
            TaskWrite::new(r)
        })
        .collect()
}

/// Records per second, batched (10,000 in batches of 4,096, as the runtime's writer does)
/// and one write per call (1,000).
async fn record_rows(label: &str, records: &dyn RecordStore) -> Vec<Value> {
    let run = RunRecord::new("bench".parse().unwrap(), RunId::generate());
    records.create_run(&run).await.unwrap();
    let n = 20_000u64;
    let start = Instant::now();
    let mut from = 0;
    while from < n {
        let k = (n - from).min(4_096);
        let out = records.write_tasks(tasks(run.id, from, k)).await.unwrap();
        assert!(out.iter().all(|o| o.is_applied()));
        from += k;
    }
    let batched = n as f64 / start.elapsed().as_secs_f64();
    let one = 1_000u64;
    let start = Instant::now();
    for t in 0..one {
        records.write_tasks(tasks(run.id, n + t, 1)).await.unwrap();
    }
    let single = one as f64 / start.elapsed().as_secs_f64();
    vec![
        row(format!("{label}: durable task records, batched"), Some(batched), "/s", "20,000 in write_tasks of 4,096"),
        row(format!("{label}: durable task records, one per call"), Some(single), "/s", "1,000 write_tasks of 1"),
    ]
}

/// The fanout foreach of `n` in this process; returns its run id and wall time.
async fn foreach(store: &Store, n: u64) -> (RunId, Duration) {
    let opts = RunOptions {
        params: vec![("n".to_owned(), n.to_string())],
        max_num_splits: Some(n),
        env_params: false,
        ..Default::default()
    };
    let start = Instant::now();
    let summary = braid_runtime::run(Arc::new(fanout()), store.clone(), opts).await.unwrap();
    let el = start.elapsed();
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.error);
    (summary.run_id, el)
}

fn client_rows(label: &str, store_10k: Store, store_100k: Store) -> Vec<Value> {
    let mut rows = Vec::new();
    let start = Instant::now();
    let step = Client::from_store(store_10k).flow("fanout").unwrap().latest_run().unwrap().step("work").unwrap();
    let values: Vec<(u64, u64)> = step.artifact_values("out").unwrap();
    assert_eq!(values.len(), 10_000);
    rows.push(row(
        format!("{label}: one artifact from each of 10,000 tasks, bulk"),
        Some(start.elapsed().as_secs_f64()),
        "s",
        "step.artifact_values",
    ));
    let step = Client::from_store(store_100k).flow("fanout").unwrap().latest_run().unwrap().step("work").unwrap();
    let calls = 1_000u64;
    let mut worst = Duration::ZERO;
    let start = Instant::now();
    for k in 0..calls {
        let i = (k * 7_919) % 100_000;
        let t0 = Instant::now();
        let task = step.task_by_index(i).unwrap();
        worst = worst.max(t0.elapsed());
        assert_eq!(task.index(), Some(i));
    }
    rows.push(row(
        format!("{label}: task_by_index on a 100,000-branch step"),
        Some(start.elapsed().as_secs_f64() * 1e3 / calls as f64),
        "ms",
        format!("mean of {calls} spread-out indices; worst {:.2} ms", worst.as_secs_f64() * 1e3),
    ));
    rows
}

/// The task queue on PostgreSQL: 20,000 trivial tasks queued in batches of 1,000, then
/// claimed in batches of 100 and finished one by one by 1, 2 and 4 concurrent claimers
/// (each its own pooled connection, as workers would be): tasks through the queue per
/// second. No step runs: this is the queue's own ceiling.
async fn queue_rows(queue: Arc<dyn braid_store::TaskQueue>) -> Vec<Value> {
    const N: u64 = 20_000;
    let mut rows = Vec::new();
    for claimers in [1usize, 2, 4] {
        let run = RunId::generate();
        let name = format!("bench{claimers}");
        let t0 = Instant::now();
        for from in (0..N).step_by(1000) {
            let batch = (from..from + 1000)
                .map(|t| braid_store::QueuedTask::new(name.as_str(), "bench".parse().unwrap(), run, TaskId(t)))
                .collect();
            queue.enqueue(batch).await.unwrap();
        }
        let enqueued = t0.elapsed();
        let t0 = Instant::now();
        let mut handles = Vec::new();
        for w in 0..claimers {
            let (queue, name) = (queue.clone(), name.clone());
            handles.push(tokio::spawn(async move {
                let mut done = 0u64;
                loop {
                    let now = braid_core::Timestamp::now();
                    let claims = queue.claim(&name, &format!("w{w}"), 100, Duration::from_secs(30), now).await.unwrap();
                    if claims.is_empty() {
                        return done;
                    }
                    for c in claims {
                        assert!(queue.finish(c.token).await.unwrap());
                        done += 1;
                    }
                }
            }));
        }
        let mut total = 0;
        for h in handles {
            total += h.await.unwrap();
        }
        let el = t0.elapsed();
        assert_eq!(total, N);
        if claimers == 1 {
            rows.push(row(
                "PostgreSQL queue: tasks queued",
                Some(N as f64 / enqueued.as_secs_f64()),
                "tasks/s",
                format!("{N} in batches of 1,000 in {:.2} s", enqueued.as_secs_f64()),
            ));
        }
        rows.push(row(
            format!("PostgreSQL queue: claimed and finished, {claimers} claimer(s)"),
            Some(N as f64 / el.as_secs_f64()),
            "tasks/s",
            format!("{N} tasks, claims of 100, one finish each, in {:.2} s", el.as_secs_f64()),
        ));
    }
    rows.extend(queue_latency_rows(queue).await);
    rows
}

/// Enqueue-to-claim latency with a waiting worker woken by NOTIFY: 300 tasks queued one
/// at a time, 5 ms apart; the worker waits (`TaskQueue::wait`, 1 s polling fallback),
/// claims, and notes how long after its enqueue each task was claimed.
async fn queue_latency_rows(queue: Arc<dyn braid_store::TaskQueue>) -> Vec<Value> {
    const N: usize = 300;
    let run = RunId::generate();
    // Start the listener and let its first wake-up pass.
    queue.wait("latency", Duration::from_millis(300)).await;
    let queued_at: Arc<std::sync::Mutex<Vec<Option<Instant>>>> = Arc::new(std::sync::Mutex::new(vec![None; N]));
    let worker = {
        let (queue, queued_at) = (queue.clone(), queued_at.clone());
        tokio::spawn(async move {
            let mut waits = Vec::with_capacity(N);
            while waits.len() < N {
                let claims = queue
                    .claim("latency", "w", 100, Duration::from_secs(30), braid_core::Timestamp::now())
                    .await
                    .unwrap();
                let now = Instant::now();
                for c in &claims {
                    let at = queued_at.lock().unwrap()[c.task.task.0 as usize];
                    waits.push(now.duration_since(at.expect("queued before claimed")));
                    queue.finish(c.token).await.unwrap();
                }
                if claims.is_empty() {
                    queue.wait("latency", Duration::from_secs(1)).await;
                }
            }
            waits
        })
    };
    for i in 0..N {
        queued_at.lock().unwrap()[i] = Some(Instant::now());
        let t = braid_store::QueuedTask::new("latency", "bench".parse().unwrap(), run, TaskId(i as u64));
        queue.enqueue(vec![t]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut waits = worker.await.unwrap();
    waits.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p50, p99) = (waits[N / 2], waits[N * 99 / 100]);
    vec![
        row(
            "PostgreSQL queue: enqueue to claim, p50",
            Some(ms(p50)),
            "ms",
            format!("{N} tasks queued 5 ms apart, one waiting worker woken by NOTIFY (1 s polling fallback)"),
        ),
        row("PostgreSQL queue: enqueue to claim, p99", Some(ms(p99)), "ms", format!("max {:.2} ms", ms(waits[N - 1]))),
    ]
}

fn main() {
    let mut quick = false;
    // Measures the records and the queue, not the foreach runs and reads (for a quick look).
    let mut only_queue = false;
    let mut json_out: Option<PathBuf> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only-queue" => only_queue = true,
            "--json-out" => json_out = it.next().map(PathBuf::from),
            _ => {}
        }
    }
    if quick {
        emit(
            &[row("PostgreSQL + S3", None, "", "not measured with --quick (servers and 100,000-task runs)")],
            json_out.as_deref(),
        );
        return;
    }
    let (Some(pg), Some(s3)) = (test_servers::postgres(), test_servers::s3()) else {
        emit(
            &[row("PostgreSQL + S3", None, "", "not measured: install postgresql and moto[server]")],
            json_out.as_deref(),
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut rows = Vec::new();
    let (fs_stores, pg_stores) = rt.block_on(async {
        eprintln!("remote: task records");
        let fs = Store::open_fs(dir.path().join("records")).unwrap();
        rows.extend(record_rows("fs", fs.records.as_ref()).await);
        let pg_store = pg_s3(pg, s3).await;
        rows.extend(record_rows("PostgreSQL", pg_store.records.as_ref()).await);
        eprintln!("remote: task queue");
        let (records, _) = braid_store::pg::open(&pg.fresh_database()).await.unwrap();
        rows.extend(queue_rows(Arc::new(records.queue())).await);
        if only_queue {
            return (Vec::new(), Vec::new());
        }
        let mut fs_stores = Vec::new();
        let mut pg_stores = Vec::new();
        for n in [10_000u64, 100_000] {
            eprintln!("remote: foreach of {n}");
            let fs = Store::open_fs(dir.path().join(format!("fs{n}"))).unwrap();
            let (_, el) = foreach(&fs, n).await;
            rows.push(row(format!("fs: foreach of {n} trivial tasks"), Some(el.as_secs_f64()), "s", "one process"));
            fs_stores.push(fs);
            let remote = pg_s3(pg, s3).await;
            let (_, el) = foreach(&remote, n).await;
            rows.push(row(
                format!("PostgreSQL + S3: foreach of {n} trivial tasks"),
                Some(el.as_secs_f64()),
                "s",
                format!("one process; {:.1} µs per task", el.as_secs_f64() * 1e6 / n as f64),
            ));
            pg_stores.push(remote);
        }
        (fs_stores, pg_stores)
    });
    if only_queue {
        drop(rt);
        emit(&rows, json_out.as_deref());
        return;
    }
    eprintln!("remote: client reads");
    let [fs10, fs100]: [Store; 2] = fs_stores.try_into().unwrap();
    let [pg10, pg100]: [Store; 2] = pg_stores.try_into().unwrap();
    rows.extend(client_rows("fs", fs10, fs100));
    rows.extend(client_rows("PostgreSQL + S3", pg10, pg100));
    drop(rt);
    emit(&rows, json_out.as_deref());
}
