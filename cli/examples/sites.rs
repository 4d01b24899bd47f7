//! One flow run on a schedule for many sites: `data_sync(site_id, full = false)`, with the
//! launch plan `data_sync_hourly` in `cli/examples/sites.toml` (every hour in New York,
//! one run per site).
//!
//! ```sh
//! cargo run --release --example sites -- plans apply cli/examples/sites.toml
//! cargo run --release --example sites -- backfill data_sync_hourly --from 2026-03-02T09:00 --to 2026-03-02T12:00
//! cargo run --release --example sites -- scheduler
//! ```

use std::process::ExitCode;

use braid_runtime::{Flow, Param, ParamType};

fn data_sync() -> braid_runtime::Result<Flow> {
    Flow::builder("data_sync")
        .param(Param::new("site_id", ParamType::String).help("the site to sync"))
        .param(Param::new("full", ParamType::Bool).default(false).help("resync everything, not just changes"))
        .step("start", |ctx| async move {
            let site: String = ctx.param("site_id")?;
            let full: bool = ctx.param("full")?;
            // A stand-in for fetching the site's changes.
            let rows: Vec<u64> = (0..if full { 1000 } else { 10 }).collect();
            ctx.log(format!("{site}: {} rows to sync (full = {full})", rows.len()));
            ctx.set("site", &site)?;
            ctx.set("rows", &rows)?;
            Ok(())
        })
        .next("store")
        .step("store", |ctx| async move {
            let rows: Vec<u64> = ctx.get("rows").await?;
            ctx.set("synced", &(rows.len() as u64))?;
            Ok(())
        })
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

fn main() -> ExitCode {
    braid_cli::flow_main(vec![data_sync()])
}
