//! Cost of `ctx.progress` in a hot loop, and the store writes it causes.
//! Run through `cargo xtask bench [--quick]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_runtime::{Flow, RunOptions};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
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
    println!("\nbraid progress benchmark ({} mode)", if quick { "quick" } else { "full" });
    println!(
        "  progress() in a hot loop            {:>8.1} ns per call  ({reports} calls in {:.2} s)",
        el.as_nanos() as f64 / reports as f64,
        el.as_secs_f64()
    );
    println!(
        "  store writes it caused              {:>8} writes  ({:.1} writes/s; coalescing: 1 per point moved or per second)",
        writes,
        writes as f64 / el.as_secs_f64()
    );
}
