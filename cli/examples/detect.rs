//! A switch whose `miss` case fans out, as Metaflow 2.19 allows: `hit` goes to `fast`
//! alone, `miss` runs `clip` and `face` as branches that `join_miss` closes, and `end`
//! runs once from whichever path ran.
//!
//! `cargo run --example detect -- run --param verdict=miss`, then
//! `braid show detect/latest/start/1` (its children are the two branches) and
//! `braid dag detect` (the graph: `hit → fast, miss → [clip, face]`).

use std::process::ExitCode;

use braid_runtime::{Flow, Param, ParamType};

/// The `detect` flow.
pub fn detect() -> braid_runtime::Result<Flow> {
    Flow::builder("detect")
        .param(Param::new("verdict", ParamType::String).default("miss").help("`hit` or `miss`"))
        .step("start", |ctx| async move {
            let verdict: String = ctx.param("verdict")?;
            ctx.set("verdict", &verdict)?;
            Ok(())
        })
        .doc("picks the path: a cache hit, or a miss that runs two detectors side by side")
        .switch_cases("verdict", &[("hit", &["fast"]), ("miss", &["clip", "face"])])
        .step("fast", |ctx| async move {
            ctx.set("found", &vec!["cached".to_owned()])?;
            Ok(())
        })
        .next("end")
        .step("clip", |ctx| async move {
            ctx.set("part", "clip")?;
            Ok(())
        })
        .next("join_miss")
        .step("face", |ctx| async move {
            ctx.set("part", "face")?;
            Ok(())
        })
        .next("join_miss")
        .join("join_miss", |ctx| async move {
            let mut found = Vec::new();
            for input in ctx.inputs()? {
                found.push(input.get::<String>("part").await?);
            }
            ctx.set("found", &found)?;
            Ok(())
        })
        .next("end")
        .step("end", |ctx| async move {
            let found: Vec<String> = ctx.get("found").await?;
            ctx.log(format!("found: {}", found.join(", ")));
            ctx.set("summary", &found.join("+"))?;
            Ok(())
        })
        .end()
        .build()
}

#[allow(dead_code)]
fn main() -> ExitCode {
    braid_cli::flow_main(vec![detect()])
}
