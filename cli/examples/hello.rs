//! The smallest flow: start -> a -> end.
//!
//! `cargo run --example hello -- run`

use std::process::ExitCode;

use braid_runtime::Flow;

fn hello() -> braid_runtime::Result<Flow> {
    Flow::builder("hello")
        .step("start", |ctx| async move {
            ctx.set("greeting", "hello")?;
            Ok(())
        })
        .next("a")
        .step("a", |ctx| async move {
            let g: String = ctx.get("greeting").await?;
            ctx.log(format!("read {g:?}"));
            ctx.set("greeting", &format!("{g}, world"))?;
            Ok(())
        })
        .next("end")
        .step("end", |ctx| async move {
            let g: String = ctx.get("greeting").await?;
            ctx.log(g);
            Ok(())
        })
        .end()
        .build()
}

fn main() -> ExitCode {
    braid_cli::flow_main(vec![hello()])
}
