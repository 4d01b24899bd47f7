//! A foreach over `n` items and a join that sums their squares.
//!
//! `cargo run --release --example fanout -- run --param n=1000` stores `total` =
//! 332833500 in the join task; read it with
//! `cargo run --release --bin braid -- artifact fanout/latest/join total`.

use std::process::ExitCode;

use braid_runtime::{Flow, Param, ParamType};

fn fanout() -> braid_runtime::Result<Flow> {
    Flow::builder("fanout")
        .param(Param::new("n", ParamType::UInt).default(100u64).help("how many items to fan out over"))
        .step("start", |ctx| async move {
            let n: u64 = ctx.param("n")?;
            ctx.set("items", &(0..n).collect::<Vec<u64>>())?;
            Ok(())
        })
        .doc("makes the items 0..n")
        .foreach("items", "work")
        .step("work", |ctx| async move {
            let x: u64 = ctx.input()?;
            ctx.set("out", &(x * x))?;
            Ok(())
        })
        .doc("squares its item")
        .next("join")
        .join("join", |ctx| async move {
            let mut total = 0u64;
            for input in ctx.inputs()? {
                total += input.get::<u64>("out").await?;
            }
            ctx.set("total", &total)?;
            Ok(())
        })
        .doc("sums the squares")
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

fn main() -> ExitCode {
    braid_cli::flow_main(vec![fanout()])
}
