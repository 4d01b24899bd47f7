//! A step that fails on its first attempts and succeeds under its retry policy.
//! `fail_times` (default 2) is how many attempts fail before one succeeds.
//!
//! `cargo run --example flaky -- run` then `braid show flaky/latest/start/1` lists
//! the attempts and their errors.

use std::process::ExitCode;
use std::time::Duration;

use braid_runtime::{Backoff, Flow, Param, ParamType};

fn flaky() -> braid_runtime::Result<Flow> {
    Flow::builder("flaky")
        .param(Param::new("fail_times", ParamType::UInt).default(2u64).help("attempts that fail before one succeeds"))
        .step("start", |ctx| async move {
            let fail_times: u64 = ctx.param("fail_times")?;
            let attempt = u64::from(ctx.attempt().0);
            ctx.log(format!("attempt {attempt}"));
            if attempt <= fail_times {
                return Err(format!("transient failure on attempt {attempt} (the service was not ready)").into());
            }
            ctx.set("attempts_needed", &attempt)?;
            Ok(())
        })
        .retries(3)
        .backoff(Backoff::Exponential { base: Duration::from_millis(100), max: Duration::from_secs(2) })
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

fn main() -> ExitCode {
    braid_cli::flow_main(vec![flaky()])
}
