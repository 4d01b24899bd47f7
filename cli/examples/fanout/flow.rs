//! The `fanout` flow, defined once: a foreach over the items `0..n`, each `work` task
//! squaring its item, and a join summing the squares (`total` = 332833500 for n = 1000).
//!
//! The `fanout` example (`main.rs` beside this file) hosts it as it is; cli's tests and
//! benches, runtime's tests and the `damaged_store` fuzz target take this same file with
//! `#[path = ".../examples/fanout/flow.rs"] mod fanout_flow;` and vary it through
//! [`Fanout`] (another name, another default `n`, more artifacts in `start`, a log line
//! per `work` task) instead of writing the flow again.
#![allow(dead_code)] // Each includer uses a part.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use braid_runtime::{Ctx, Flow, Param, ParamType, StepResult};

/// The example's flow: `fanout`, `n` = 100 unless given.
pub fn fanout() -> braid_runtime::Result<Flow> {
    Fanout::new().build()
}

/// The `fanout` flow with what a test or bench changes; [`Fanout::new`] is the example's.
#[derive(Debug, Clone)]
pub struct Fanout {
    name: &'static str,
    default_n: u64,
    params: Vec<Param>,
    start_also: Option<fn(&Ctx) -> StepResult>,
    log_work: bool,
    count_work: Option<Arc<AtomicU64>>,
}

impl Default for Fanout {
    fn default() -> Self {
        Fanout::new()
    }
}

impl Fanout {
    /// The example's flow: named `fanout`, `n` defaulting to 100.
    pub fn new() -> Self {
        Fanout {
            name: "fanout",
            default_n: 100,
            params: Vec::new(),
            start_also: None,
            log_work: false,
            count_work: None,
        }
    }

    /// Another name for the flow.
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Another default for `n`, the number of items.
    pub fn default_n(mut self, n: u64) -> Self {
        self.default_n = n;
        self
    }

    /// One more parameter, for what [`Fanout::start_also`] sets.
    pub fn param(mut self, param: Param) -> Self {
        self.params.push(param);
        self
    }

    /// More for `start` to do after it set `items` (e.g. set a large artifact).
    pub fn start_also(mut self, f: fn(&Ctx) -> StepResult) -> Self {
        self.start_also = Some(f);
        self
    }

    /// Each `work` task logs `squaring X` to its task log (a log line per branch).
    pub fn log_work(mut self) -> Self {
        self.log_work = true;
        self
    }

    /// Each `work` execution adds one to `counter` (runtime tests check what resume reran).
    pub fn count_work(mut self, counter: Arc<AtomicU64>) -> Self {
        self.count_work = Some(counter);
        self
    }

    /// The flow.
    pub fn build(self) -> braid_runtime::Result<Flow> {
        let Fanout { name, default_n, params, start_also, log_work, count_work } = self;
        let mut b = Flow::builder(name)
            .param(Param::new("n", ParamType::UInt).default(default_n).help("how many items to fan out over"));
        for p in params {
            b = b.param(p);
        }
        b.step("start", move |ctx| async move {
            let n: u64 = ctx.param("n")?;
            ctx.set("items", &(0..n).collect::<Vec<u64>>())?;
            if let Some(also) = start_also {
                also(&ctx)?;
            }
            Ok(())
        })
        .doc("makes the items 0..n")
        .foreach("items", "work")
        .step("work", move |ctx| {
            let count_work = count_work.clone();
            async move {
                if let Some(c) = &count_work {
                    c.fetch_add(1, Ordering::SeqCst);
                }
                let x: u64 = ctx.input()?;
                if log_work {
                    ctx.log(format!("squaring {x}"));
                }
                ctx.set("out", &(x * x))?;
                Ok(())
            }
        })
        .doc("squares its item")
        .next("join")
        .join("join", |ctx| async move {
            let mut total = 0u64;
            // One branch at a time, in index order: a join of a million branches reads
            // them from the store a window at a time instead of holding them all.
            for input in ctx.inputs_iter()? {
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
}
