//! A static split, a switch, and a loop (a switch that routes back to itself) that
//! repeats until a counter reaches `rounds`.
//!
//! `cargo run --example branches -- run --param rounds=5 --param mode=fast`

use std::process::ExitCode;

use braid_runtime::{Flow, Merge, Param, ParamType};

fn branches() -> braid_runtime::Result<Flow> {
    Flow::builder("branches")
        .param(Param::new("rounds", ParamType::UInt).default(3u64).help("how many times the loop runs"))
        .param(
            Param::new("mode", ParamType::String).default("fast").help("`fast` or `thorough`: picks the switch case"),
        )
        .step("start", |ctx| async move {
            ctx.set("origin", "start")?;
            Ok(())
        })
        .split(&["left", "right"])
        .step("left", |ctx| async move {
            ctx.set("side", "left")?;
            ctx.set("weight", &2u64)?;
            Ok(())
        })
        .next("merge")
        .step("right", |ctx| async move {
            ctx.set("side", "right")?;
            ctx.set("weight", &2u64)?;
            Ok(())
        })
        .next("merge")
        .join("merge", |ctx| async move {
            let sides: Vec<String> = {
                let mut v = Vec::new();
                for i in ctx.inputs()? {
                    v.push(i.get::<String>("side").await?);
                }
                v
            };
            ctx.set("sides", &sides)?;
            // `side` differs per branch; everything else (origin, weight) agrees.
            ctx.merge_artifacts(Merge::except(&["side"]))?;
            let mode: String = ctx.param("mode")?;
            ctx.set("route", &mode)?;
            Ok(())
        })
        .switch("route", &[("fast", "fast"), ("thorough", "thorough")])
        .step("fast", |ctx| async move {
            ctx.set("checked", &false)?;
            Ok(())
        })
        .next("prepare")
        .step("thorough", |ctx| async move {
            ctx.set("checked", &true)?;
            Ok(())
        })
        .next("prepare")
        .step("prepare", |ctx| async move {
            ctx.set("counter", &0u64)?;
            Ok(())
        })
        .next("repeat")
        .step("repeat", |ctx| async move {
            let counter: u64 = ctx.get("counter").await?;
            let rounds: u64 = ctx.param("rounds")?;
            ctx.set("counter", &(counter + 1))?;
            ctx.log(format!("iteration {} of {rounds}", ctx.iteration() + 1));
            ctx.set("again", if counter + 1 < rounds { "yes" } else { "no" })?;
            Ok(())
        })
        .switch("again", &[("yes", "repeat"), ("no", "end")])
        .step("end", |ctx| async move {
            let counter: u64 = ctx.get("counter").await?;
            ctx.log(format!("looped {counter} times"));
            Ok(())
        })
        .end()
        .build()
}

fn main() -> ExitCode {
    braid_cli::flow_main(vec![branches()])
}
