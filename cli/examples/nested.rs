//! A foreach inside a foreach, each level closed by its own join: a grid of
//! `rows` x `cols` cells, summed per row, then all rows.
//!
//! `cargo run --example nested -- run --param rows=3 --param cols=4`

use std::process::ExitCode;

use braid_runtime::{Flow, Param, ParamType};

fn nested() -> braid_runtime::Result<Flow> {
    Flow::builder("nested")
        .param(Param::new("rows", ParamType::UInt).default(3u64))
        .param(Param::new("cols", ParamType::UInt).default(4u64))
        .step("start", |ctx| async move {
            let rows: u64 = ctx.param("rows")?;
            ctx.set("rows", &(0..rows).collect::<Vec<u64>>())?;
            Ok(())
        })
        .foreach("rows", "row")
        .step("row", |ctx| async move {
            let r: u64 = ctx.input()?;
            let cols: u64 = ctx.param("cols")?;
            ctx.set("cells", &(0..cols).map(|c| (r, c)).collect::<Vec<(u64, u64)>>())?;
            Ok(())
        })
        .foreach("cells", "cell")
        .step("cell", |ctx| async move {
            let (r, c): (u64, u64) = ctx.input()?;
            ctx.set("value", &(r * 100 + c))?;
            Ok(())
        })
        .next("join_cells")
        .join("join_cells", |ctx| async move {
            let mut sum = 0u64;
            for i in ctx.inputs()? {
                sum += i.get::<u64>("value").await?;
            }
            ctx.set("row_sum", &sum)?;
            Ok(())
        })
        .next("join_rows")
        .join("join_rows", |ctx| async move {
            let mut sums = Vec::new();
            for i in ctx.inputs()? {
                sums.push(i.get::<u64>("row_sum").await?);
            }
            ctx.set("total", &sums.iter().sum::<u64>())?;
            ctx.set("row_sums", &sums)?;
            Ok(())
        })
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

fn main() -> ExitCode {
    braid_cli::flow_main(vec![nested()])
}
