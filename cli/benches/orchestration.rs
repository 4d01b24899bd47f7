//! Per-task orchestration cost of whole runs, and the client reading them back.
//!
//! Orchestration: a linear flow of trivial steps (10 and 1,000) and a trivial foreach of
//! 100 / 1,000 / 10,000 / 100,000 branches (and 1,000,000 without `--quick`), each run in
//! a fresh child process of this binary on a fresh fs store: wall time of the process,
//! µs per task, peak RSS of the process (VmHWM), bytes and files the store holds per
//! task afterwards.
//! Client: one artifact from each of 10,000 tasks (bulk and one by one), `task_by_index`
//! on the 100,000-branch step, listing 1,000 runs.
//!
//! Run through `cargo xtask bench [--quick]`, which passes `--json-out FILE` and merges
//! the rows into one table; alone (`cargo bench -p braidflow-cli --bench orchestration`) it
//! prints its own rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/fanout/flow.rs"]
mod fanout_flow;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_client::Client;
use braid_core::RunStatus;
use braid_runtime::{Flow, RunOptions};
use braid_store::Store;
use serde_json::{Value, json};

#[path = "support/args.rs"]
mod args;
use args::args;

fn main() {
    let a = args();
    if let Some((kind, n, store)) = &a.child {
        child(kind, *n, store, a.max_workers);
        return;
    }
    let dir = tempfile::Builder::new().prefix("braid-bench-").tempdir_in(".").or_else(|_| tempfile::tempdir()).unwrap();
    let reps = if a.quick { 1 } else { 3 };
    let mut rows = Vec::new();
    let mut keep = Vec::new();
    let mut configs: Vec<(&str, u64)> = vec![
        ("linear", 10),
        ("linear", 1_000),
        ("foreach", 100),
        ("foreach", 1_000),
        ("foreach", 10_000),
        ("foreach", 100_000),
    ];
    if !a.quick {
        // About a minute on 2 cores: in the full bench only, once.
        configs.push(("foreach", 1_000_000));
    }
    for (kind, n) in configs {
        let reps = if n >= 1_000_000 { 1 } else { reps };
        let (r, store) = orchestration(dir.path(), kind, n, reps, a.max_workers);
        rows.extend(r);
        if n >= 1_000_000 {
            // Half a GiB the client rows do not read.
            std::fs::remove_dir_all(&store).unwrap();
        } else {
            keep.push(((kind, n), store));
        }
    }
    let store_of = |k: (&str, u64)| keep.iter().find(|(c, _)| *c == k).map(|(_, s)| s.clone()).unwrap();
    rows.extend(client_rows(
        &store_of(("foreach", 1_000)),
        &store_of(("foreach", 10_000)),
        &store_of(("foreach", 100_000)),
        &dir.path().join("runs"),
    ));
    emit(&rows, a.json_out.as_deref());
}

#[path = "support/rows.rs"]
mod rows;
use rows::{emit, row};

/// 1234567 -> "1,234,567".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---- the flows ----

/// start -> s1 .. s{steps-2} -> end; each step adds one to `x`.
fn linear(steps: u64) -> Flow {
    assert!(steps >= 3);
    let mut b = Flow::builder("linear")
        .step("start", |ctx| async move {
            ctx.set("x", &0u64)?;
            Ok(())
        })
        .next("s1");
    for i in 1..steps - 1 {
        let next = if i == steps - 2 { "end".to_owned() } else { format!("s{}", i + 1) };
        b = b
            .step(&format!("s{i}"), |ctx| async move {
                let x: u64 = ctx.get("x").await?;
                ctx.set("x", &(x + 1))?;
                Ok(())
            })
            .next(&next);
    }
    b.step("end", |_| async { Ok(()) }).end().build().unwrap()
}

/// The `fanout` example's flow (`n` = 100 unless given).
fn fanout() -> Flow {
    fanout_flow::fanout().expect("the fanout flow is valid")
}

fn tiny() -> Flow {
    Flow::builder("tiny")
        .step("start", |_| async { Ok(()) })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build()
        .unwrap()
}

// ---- orchestration: one child process per run ----

/// In the child: runs one flow on a fresh store, prints what it measured as one JSON line.
fn child(kind: &str, n: u64, store: &Path, max_workers: usize) {
    let (flow, params) = match kind {
        "linear" => (linear(n), vec![]),
        "foreach" => (fanout(), vec![("n".to_owned(), n.to_string())]),
        other => panic!("unknown flow kind {other}"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let summary = rt.block_on(async {
        let store = Store::open_fs(store).unwrap();
        let opts =
            RunOptions { params, max_workers, max_num_splits: Some(n.max(1)), env_params: false, ..Default::default() };
        braid_runtime::run(Arc::new(flow), store, opts).await.unwrap()
    });
    drop(rt);
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.error);
    println!(
        "{}",
        json!({
            "executed": summary.executed,
            "run_secs": summary.elapsed.as_secs_f64(),
            "hwm_kib": proc_field("/proc/self/status", "VmHWM:"),
            "write_bytes": proc_field("/proc/self/io", "write_bytes:"),
        })
    );
}

/// A number from a `/proc` file's `name value` line (Linux only).
fn proc_field(file: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// (bytes, files) under `p`.
fn tree(p: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        if m.is_dir() {
            let (b, f) = tree(&e.path());
            bytes += b;
            files += f;
        } else {
            bytes += m.len();
            files += 1;
        }
    }
    (bytes, files)
}

struct Measured {
    wall: Duration,
    run_secs: f64,
    tasks: u64,
    hwm_kib: Option<u64>,
    write_bytes: Option<u64>,
    store_bytes: u64,
    store_files: u64,
}

/// Runs `kind n` `reps` times, each in its own process on its own store; rows for the
/// run with the median wall time, and the store of the last run (kept for the client).
fn orchestration(dir: &Path, kind: &str, n: u64, reps: usize, max_workers: usize) -> (Vec<Value>, PathBuf) {
    let label = match kind {
        "linear" => format!("linear {} steps", thousands(n)),
        _ => format!("foreach {}", thousands(n)),
    };
    eprintln!("orchestration: {label} ({reps}x)");
    let mut runs = Vec::new();
    let mut last = PathBuf::new();
    for rep in 0..reps {
        let store = dir.join(format!("{kind}-{n}-{rep}"));
        let start = Instant::now();
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--child", kind, &n.to_string()])
            .arg(&store)
            .args(["--max-workers", &max_workers.to_string()])
            .output()
            .unwrap();
        let wall = start.elapsed();
        assert!(out.status.success(), "{label}: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
        let (store_bytes, store_files) = tree(&store);
        runs.push(Measured {
            wall,
            run_secs: v["run_secs"].as_f64().unwrap(),
            tasks: v["executed"].as_u64().unwrap(),
            hwm_kib: v["hwm_kib"].as_u64(),
            write_bytes: v["write_bytes"].as_u64(),
            store_bytes,
            store_files,
        });
        if rep + 1 < reps {
            std::fs::remove_dir_all(&store).unwrap();
        }
        last = store;
    }
    runs.sort_by_key(|m| m.wall);
    let m = &runs[runs.len() / 2];
    let tasks = m.tasks as f64;
    let spread = if runs.len() > 1 {
        format!(
            ", median of {} ({:.3}–{:.3} s)",
            runs.len(),
            runs[0].wall.as_secs_f64(),
            runs[runs.len() - 1].wall.as_secs_f64()
        )
    } else {
        String::new()
    };
    let s = "orchestration";
    let rows = vec![
        row(
            s,
            format!("{label} · wall"),
            Some(m.wall.as_secs_f64()),
            "s",
            format!("whole process, {max_workers} workers; run {:.3} s{spread}", m.run_secs),
        ),
        row(
            s,
            format!("{label} · per task"),
            Some(m.wall.as_secs_f64() * 1e6 / tasks),
            "µs",
            format!("{} tasks; run alone {:.1} µs/task", thousands(m.tasks), m.run_secs * 1e6 / tasks),
        ),
        row(s, format!("{label} · peak RSS"), m.hwm_kib.map(|k| k as f64 / 1024.0), "MiB", "VmHWM of the process"),
        row(
            s,
            format!("{label} · store bytes/task"),
            Some(m.store_bytes as f64 / tasks),
            "B",
            format!(
                "{:.1} MB in the store{}",
                m.store_bytes as f64 / 1e6,
                m.write_bytes.map_or(String::new(), |w| format!("; {:.0} B/task written to disk", w as f64 / tasks))
            ),
        ),
        row(
            s,
            format!("{label} · store files/task"),
            Some(m.store_files as f64 / tasks),
            "files",
            format!("{} files", m.store_files),
        ),
    ];
    (rows, last)
}

// ---- client ----

fn client_rows(store_1k: &Path, store_10k: &Path, store_100k: &Path, runs_dir: &Path) -> Vec<Value> {
    let s = "client";
    let mut rows = Vec::new();
    let open = |p: &Path| Client::open(p.to_str().unwrap()).unwrap();

    eprintln!("client: reads");
    let start = Instant::now();
    let step = open(store_10k).flow("fanout").unwrap().latest_run().unwrap().step("work").unwrap();
    let values: Vec<(u64, u64)> = step.artifact_values("out").unwrap();
    let bulk = start.elapsed();
    assert_eq!(values.len(), 10_000);
    assert_eq!(values[9_999], (9_999, 9_999 * 9_999));
    rows.push(row(
        s,
        "one artifact from each of 10,000 tasks, bulk",
        Some(bulk.as_secs_f64()),
        "s",
        "from Client::open; step.artifact_values",
    ));

    for (n, store) in [(10_000u64, store_10k), (1_000, store_1k)] {
        let start = Instant::now();
        let step = open(store).flow("fanout").unwrap().latest_run().unwrap().step("work").unwrap();
        for i in 0..n {
            let v: u64 = step.task_by_index(i).unwrap().data("out").unwrap();
            assert_eq!(v, i * i);
        }
        let el = start.elapsed();
        rows.push(row(
            s,
            format!("one artifact from each of {} tasks, one by one", thousands(n)),
            Some(el.as_secs_f64()),
            "s",
            format!("task_by_index + data; {:.1} µs each", el.as_secs_f64() * 1e6 / n as f64),
        ));
    }

    // task_by_index at spread-out indices of the 100,000-branch step.
    let step = open(store_100k).flow("fanout").unwrap().latest_run().unwrap().step("work").unwrap();
    assert_eq!(step.task_by_index(0).unwrap().index(), Some(0));
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
    let el = start.elapsed();
    rows.push(row(
        s,
        "task_by_index on a 100,000-branch step",
        Some(el.as_secs_f64() * 1e6 / calls as f64),
        "µs",
        format!("mean of {calls} spread-out indices; worst {:.0} µs", worst.as_secs_f64() * 1e6),
    ));

    // 1,000 runs of a two-step flow, then list them.
    eprintln!("client: making 1,000 runs");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open_fs(runs_dir).unwrap();
        let flow = Arc::new(tiny());
        for _ in 0..1_000 {
            let opts = RunOptions { env_params: false, ..Default::default() };
            let s = braid_runtime::run(flow.clone(), store.clone(), opts).await.unwrap();
            assert_eq!(s.status, RunStatus::Succeeded);
        }
    });
    drop(rt);
    let start = Instant::now();
    let runs = open(runs_dir).flow("tiny").unwrap().runs().unwrap();
    let el = start.elapsed();
    assert_eq!(runs.len(), 1_000);
    rows.push(row(s, "listing 1,000 runs", Some(el.as_secs_f64() * 1e3), "ms", "from Client::open; flow.runs()"));
    rows
}
