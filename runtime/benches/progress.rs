//! Cost of `ctx.progress`, `ctx.progress_units` and `ctx.progress_details` in a hot
//! loop, and the store writes they cause.
//! Run through `cargo xtask bench [--quick]`, which passes `--json-out FILE` (rows of
//! `{section, name, value, unit, note}`) and merges them into one table; alone it prints
//! its rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_runtime::{Flow, RunOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_out = args.iter().position(|a| a == "--json-out").map(|i| args[i + 1].clone());
    let calls: u64 = if quick { 2_000_000 } else { 20_000_000 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // (what was called, time, calls, writes) per loop.
    let result = Arc::new(Mutex::new(Vec::<(&'static str, Duration, u64, u64)>::new()));
    let r2 = result.clone();
    let flow = Flow::builder("progress_bench")
        .step("start", move |ctx| {
            let r2 = r2.clone();
            async move {
                // Each loop sweeps 0..100% once, as a long task would.
                let measure = |name: &'static str,
                               f: &mut dyn FnMut(u64) -> braid_runtime::Result<()>|
                 -> braid_runtime::Result<()> {
                    let (r0, w0) = ctx.progress_counts();
                    let t0 = Instant::now();
                    for i in 0..calls {
                        f(i)?;
                    }
                    let el = t0.elapsed();
                    let (r1, w1) = ctx.progress_counts();
                    r2.lock().unwrap().push((name, el, r1 - r0, w1 - w0));
                    Ok(())
                };
                measure("one progress() call in a hot loop", &mut |i| {
                    ctx.progress((i * 100) as f32 / calls as f32, "crunching")
                })?;
                measure("one progress_units() call in a hot loop", &mut |i| ctx.progress_units(i, calls, "rows"))?;
                // Details every 1,000th call, units on the others: how a copy loop reports.
                measure("one call, units with details every 1,000th", &mut |i| {
                    if i % 1000 == 0 {
                        ctx.progress_details(serde_json::json!({ "row": i, "file": "part-3.csv" }))
                    } else {
                        ctx.progress_units(i, calls, "rows")
                    }
                })?;
                Ok(())
            }
        })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = braid_store::Store::open_fs(dir.path().join("store")).unwrap();
        let opts = RunOptions { env_params: false, ..Default::default() };
        let s = braid_runtime::run(Arc::new(flow), store, opts).await.unwrap();
        assert_eq!(s.status, braid_core::RunStatus::Succeeded);
    });
    let mut rows = Vec::new();
    for (name, el, reports, writes) in result.lock().unwrap().iter() {
        rows.push(serde_json::json!({
            "section": "progress",
            "name": name,
            "value": el.as_nanos() as f64 / *reports as f64,
            "unit": "ns",
            "note": format!("{reports} calls in {:.2} s, {writes} store writes (coalesced)", el.as_secs_f64()),
        }));
        if name.starts_with("one progress() ") {
            rows.push(serde_json::json!({
                "section": "progress",
                "name": "store writes those calls caused",
                "value": *writes as f64 / el.as_secs_f64(),
                "unit": "writes/s",
                "note": format!("{writes} writes; coalesced: 1 per point moved or per second"),
            }));
        }
    }
    let rows = serde_json::Value::Array(rows);
    match json_out {
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(&rows).unwrap()).unwrap(),
        None => {
            println!("\nbraid progress benchmark ({} mode)", if quick { "quick" } else { "full" });
            for r in rows.as_array().unwrap() {
                println!(
                    "  {:<58} {:>12.1} {:<10} {}",
                    r["name"].as_str().unwrap(),
                    r["value"].as_f64().unwrap(),
                    r["unit"].as_str().unwrap(),
                    r["note"].as_str().unwrap()
                );
            }
        }
    }
}
