//! A long-running step that reports progress about 100 times a second, in rows done out
//! of a total, with a message naming its stage and details saying which row it is on.
//! `stall_at` (a percent) makes the first attempt stop heartbeating there: its lease
//! (3 s) expires, it is declared lost, and the retry picks up at the row the lost attempt
//! last reported (`ctx.last_progress()`), as does a `resume` after the process died.
//!
//! ```sh
//! cargo run --release --example progress -- run --param seconds=5 --metrics-addr 127.0.0.1:9464
//! curl -s 127.0.0.1:9464/metrics | grep braid_task_progress_percent
//! cargo run --release --example progress -- run --param seconds=5 --param stall_at=50
//! ```

use std::process::ExitCode;
use std::time::Duration;

use braid_runtime::{Flow, Param, ParamType};

const STAGES: [&str; 4] = ["loading", "transforming", "aggregating", "writing"];

pub fn progress() -> braid_runtime::Result<Flow> {
    Flow::builder("progress")
        .param(Param::new("seconds", ParamType::Float).default(10.0).help("how long the work takes"))
        .param(
            Param::new("stall_at", ParamType::Float)
                .optional()
                .help("percent at which the first attempt stops heartbeating (default: never)"),
        )
        .step("start", |ctx| async move {
            let seconds: f64 = ctx.param("seconds")?;
            let stall_at: Option<f64> = ctx.param("stall_at")?;
            let ticks = (seconds * 100.0).max(1.0) as u64;
            // Where the attempt before this one (or the resumed run's) got to.
            let from = ctx.last_progress().and_then(|p| p.details.as_ref()?.get("row")?.as_u64()).unwrap_or(0);
            if from > 0 {
                ctx.log(format!("picking up at row {from}, where the last attempt was"));
            }
            for i in from.min(ticks)..=ticks {
                let percent = (i as f64 * 100.0 / ticks as f64) as f32;
                if ctx.attempt().0 == 1 && stall_at.is_some_and(|s| f64::from(percent) >= s) {
                    tracing::warn!(percent, "simulating a hang: no more heartbeats");
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let stage = STAGES[((percent / 25.0) as usize).min(STAGES.len() - 1)];
                ctx.progress(percent, stage)?;
                ctx.progress_units(i, ticks, "rows")?;
                ctx.progress_details(serde_json::json!({ "row": i, "stage": stage }))?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            ctx.progress(100.0, "done: all stages finished")?;
            ctx.progress_units(ticks, ticks, "rows")?;
            ctx.set("ticks", &ticks)?;
            ctx.set("started_at_row", &from)?;
            Ok(())
        })
        .lease(Duration::from_secs(3))
        .retries(1)
        .stall_after(Duration::from_secs(2))
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

fn main() -> ExitCode {
    braid_cli::flow_main(vec![progress()])
}
