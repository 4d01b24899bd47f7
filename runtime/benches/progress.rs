//! Cost of `ctx.progress` in a hot loop, and the store writes it causes.
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
    let result = Arc::new(Mutex::new((Duration::ZERO, 0u64, 0u64)));
    let r2 = result.clone();
    let flow = Flow::builder("progress_bench")
        .step("start", move |ctx| {
            let r2 = r2.clone();
            async move {
                let t0 = Instant::now();
                for i in 0..calls {
                    // Sweeps 0..100% once over the loop, as a long task would.
                    ctx.progress((i * 100) as f32 / calls as f32, "crunching")?;
                }
                let el = t0.elapsed();
                let (reports, writes) = ctx.progress_counts();
                *r2.lock().unwrap() = (el, reports, writes);
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
    let (el, reports, writes) = *result.lock().unwrap();
    let rows = serde_json::json!([
        {
            "section": "progress",
            "name": "one progress() call in a hot loop",
            "value": el.as_nanos() as f64 / reports as f64,
            "unit": "ns",
            "note": format!("{reports} calls in {:.2} s", el.as_secs_f64()),
        },
        {
            "section": "progress",
            "name": "store writes those calls caused",
            "value": writes as f64 / el.as_secs_f64(),
            "unit": "writes/s",
            "note": format!("{writes} writes; coalesced: 1 per point moved or per second"),
        },
    ]);
    match json_out {
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(&rows).unwrap()).unwrap(),
        None => {
            println!("\nbraid progress benchmark ({} mode)", if quick { "quick" } else { "full" });
            for r in rows.as_array().unwrap() {
                println!(
                    "  {:<40} {:>12.1} {:<10} {}",
                    r["name"].as_str().unwrap(),
                    r["value"].as_f64().unwrap(),
                    r["unit"].as_str().unwrap(),
                    r["note"].as_str().unwrap()
                );
            }
        }
    }
}
