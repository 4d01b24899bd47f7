//! Isolated steps: each attempt of `work` runs in its own process, so the branch that
//! calls `std::process::abort()` on its first attempt fails only that attempt (the
//! task's error names SIGABRT, its log keeps the line printed before the crash); its
//! retry succeeds and the rest of the run goes on. `hog_mib` makes branch 0 allocate that
//! many MiB, past `work`'s memory limit of 512 MiB: an attempt failure that says so.
//!
//! `cargo run --example isolated -- run`, then `braid show isolated/latest/work` and
//! `braid logs isolated/latest/work/ID`.

use std::process::ExitCode;

use braid_runtime::{Flow, Param, ParamType};

/// The `isolated` flow.
pub fn isolated() -> braid_runtime::Result<Flow> {
    Flow::builder("isolated")
        .param(Param::new("n", ParamType::UInt).default(4u64).help("branches"))
        .param(
            Param::new("crash_index", ParamType::UInt)
                .default(1u64)
                .help("the branch that aborts on its first attempt"),
        )
        .param(Param::new("hog_mib", ParamType::UInt).default(0u64).help("MiB branch 0 allocates (0: none)"))
        .step("start", |ctx| async move {
            let n: u64 = ctx.param("n")?;
            ctx.set("items", &(0..n).collect::<Vec<u64>>())?;
            Ok(())
        })
        .foreach("items", "work")
        .step_blocking("work", |ctx| {
            let item: u64 = ctx.input()?;
            let crash: u64 = ctx.param("crash_index")?;
            let hog: u64 = ctx.param("hog_mib")?;
            ctx.log(format!("item {item}, attempt {}, process {}", ctx.attempt(), std::process::id()));
            if item == crash && ctx.attempt().0 == 1 {
                ctx.log("about to abort, as a native library might");
                std::process::abort();
            }
            if item == 0 && hog > 0 {
                let bytes = usize::try_from(hog * 1024 * 1024)?;
                let mut big: Vec<u8> = Vec::with_capacity(bytes);
                big.resize(bytes, 1);
                ctx.log(format!("allocated {} MiB", big.len() / (1024 * 1024)));
            }
            ctx.set("square", &(item * item))?;
            Ok(())
        })
        .isolated()
        .memory_limit(512 * 1024 * 1024)
        .retries(1)
        .next("join")
        .join("join", |ctx| async move {
            let mut total = 0u64;
            for input in ctx.inputs()? {
                total += input.get::<u64>("square").await?;
            }
            ctx.set("total", &total)?;
            Ok(())
        })
        .next("end")
        .step("end", |ctx| async move {
            let total: u64 = ctx.get("total").await?;
            ctx.log(format!("total {total}"));
            Ok(())
        })
        .end()
        .build()
}

#[allow(dead_code)]
fn main() -> ExitCode {
    braid_cli::flow_main(vec![isolated()])
}
