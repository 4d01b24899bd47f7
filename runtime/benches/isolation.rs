//! What isolating a step costs per task: a foreach of trivial tasks run in-process and
//! with the step `.isolated()` (each attempt in a process of its own, started from this
//! binary), one task at a time (the latency a task pays) and two at a time (this
//! machine's cores). Metaflow pays about 0.25 s per task for its process.
//! Run through `cargo xtask bench [--quick]`, which passes `--json-out FILE` (rows of
//! `{section, name, value, unit, note}`); alone it prints its rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_runtime::{Flow, RunOptions};

fn flow(isolated: bool) -> Flow {
    let work = Flow::builder(if isolated { "isolated_bench" } else { "in_process_bench" })
        .param(braid_runtime::Param::new("n", braid_runtime::ParamType::UInt).default(10u64))
        .step("start", |ctx| async move {
            let n: u64 = ctx.param("n")?;
            ctx.set("items", &(0..n).collect::<Vec<u64>>())?;
            Ok(())
        })
        .foreach("items", "work")
        .step("work", |ctx| async move {
            let i: u64 = ctx.input()?;
            ctx.set("out", &(i * 2))?;
            Ok(())
        });
    let work = if isolated { work.isolated() } else { work };
    work.next("join")
        .join("join", |ctx| async move {
            let mut t = 0u64;
            for i in ctx.inputs()? {
                t += i.get::<u64>("out").await?;
            }
            ctx.set("total", &t)?;
            Ok(())
        })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build()
        .unwrap()
}

fn main() {
    // The isolated tasks' processes are this binary, started again.
    if braid_runtime::is_isolated_task() {
        braid_runtime::serve_isolated_task(vec![flow(true)]);
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_out = args.iter().position(|a| a == "--json-out").map(|i| args[i + 1].clone());
    let n: u64 = if quick { 40 } else { 200 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = braid_store::Store::open_fs(dir.path().join("store")).unwrap();
    let time = |isolated: bool, workers: usize| -> Duration {
        let flow = Arc::new(flow(isolated));
        let opts = RunOptions {
            params: vec![("n".into(), n.to_string())],
            max_workers: workers,
            env_params: false,
            ..Default::default()
        };
        let t0 = Instant::now();
        let s = rt.block_on(braid_runtime::run(flow, store.clone(), opts)).unwrap();
        let el = t0.elapsed();
        assert_eq!(s.status, braid_core::RunStatus::Succeeded, "{:?}", s.error);
        el
    };
    // Warm the page cache and the store.
    time(true, 2);
    let mut rows = Vec::new();
    for workers in [1usize, 2] {
        let inproc = time(false, workers);
        let iso = time(true, workers);
        let per = |d: Duration| d.as_secs_f64() * 1e3 / n as f64;
        let at = if workers == 1 { "one at a time" } else { "two at a time" };
        rows.push(serde_json::json!({
            "section": "isolation",
            "name": format!("trivial task, in-process, {at}"),
            "value": per(inproc), "unit": "ms",
            "note": format!("{n} foreach tasks in {:.3} s (run wall time / tasks)", inproc.as_secs_f64()),
        }));
        rows.push(serde_json::json!({
            "section": "isolation",
            "name": format!("trivial task, isolated (own process), {at}"),
            "value": per(iso), "unit": "ms",
            "note": format!("{n} foreach tasks in {:.3} s; Metaflow: ~250 ms a task", iso.as_secs_f64()),
        }));
        rows.push(serde_json::json!({
            "section": "isolation",
            "name": format!("cost of isolation per task, {at}"),
            "value": per(iso) - per(inproc), "unit": "ms",
            "note": "isolated minus in-process",
        }));
    }
    let rows = serde_json::Value::Array(rows);
    match json_out {
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(&rows).unwrap()).unwrap(),
        None => {
            println!("\nbraid isolation benchmark ({} mode)", if quick { "quick" } else { "full" });
            for r in rows.as_array().unwrap() {
                println!(
                    "  {:<52} {:>9.2} {:<3} {}",
                    r["name"].as_str().unwrap(),
                    r["value"].as_f64().unwrap(),
                    r["unit"].as_str().unwrap(),
                    r["note"].as_str().unwrap()
                );
            }
        }
    }
}
