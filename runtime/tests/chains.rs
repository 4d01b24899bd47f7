//! Linear chains: a step whose next move is a plain step runs that step itself, in the
//! same tokio task, without a round trip through the dispatcher. What must not change:
//! ids in decision order, each task's parent the one before it, the counts of a run
//! and its progress, a failure stopping the chain, and a resume reusing what ran.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use braid_core::{RunStatus, TaskStatus};
use braid_runtime::{Flow, PreparedRun, Resume, RunOptions};
use common::*;

/// start -> s1 .. s{steps-2} -> end; each step adds one to `x`; step `s{fail_at}` fails
/// while `fail_at` is not 0.
fn chain(steps: u64, fail_at: Arc<AtomicU64>) -> Arc<Flow> {
    let mut b = Flow::builder("chain")
        .step("start", |ctx| async move {
            ctx.set("x", &0u64)?;
            Ok(())
        })
        .next("s1");
    for i in 1..steps - 1 {
        let next = if i == steps - 2 { "end".to_owned() } else { format!("s{}", i + 1) };
        let fail_at = fail_at.clone();
        b = b
            .step(&format!("s{i}"), move |ctx| {
                let fail_at = fail_at.clone();
                async move {
                    if fail_at.load(Ordering::SeqCst) == i {
                        return Err(format!("s{i} is not ready").into());
                    }
                    let x: u64 = ctx.get("x").await?;
                    ctx.set("x", &(x + 1))?;
                    Ok(())
                }
            })
            .next(&next);
    }
    Arc::new(b.step("end", |_| async { Ok(()) }).end().build().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linear_chain_runs_each_step_once_in_order_each_task_the_parent_of_the_next() {
    let (store, _d) = fs_store();
    let steps = 200;
    let flow = chain(steps, Arc::new(AtomicU64::new(0)));
    let opts = RunOptions { env_params: false, ..Default::default() };
    let prepared = PreparedRun::prepare(flow.clone(), store.clone(), opts).await.unwrap();
    let progress = prepared.progress();
    let s = prepared.execute().await.unwrap();
    assert_ok(&s);
    assert_eq!(s.executed, steps, "every step counted once");
    let mut previous = only_task(&store, "chain", s.run_id, "start").await;
    assert_eq!(previous.key.task.0, 1);
    for i in 1..steps - 1 {
        let t = only_task(&store, "chain", s.run_id, &format!("s{i}")).await;
        assert_eq!(t.status, TaskStatus::Succeeded);
        assert_eq!(t.parent, Some(previous.key.task), "s{i}'s parent");
        assert_eq!(t.key.task.0, previous.key.task.0 + 1, "ids follow the chain");
        previous = t;
    }
    assert_eq!(value::<u64>(&store, "chain", s.run_id, previous.key.task, "x").await, steps - 2);
    let counts = progress.snapshot();
    assert_eq!(counts.len() as u64, steps);
    for (step, c) in counts {
        assert_eq!((c.done, c.running, c.failed), (1, 0, 0), "step {step}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_inside_a_chain_fails_the_run_and_nothing_after_it_runs_and_resume_reuses_the_rest() {
    let (store, _d) = fs_store();
    let fail_at = Arc::new(AtomicU64::new(40));
    let flow = chain(100, fail_at.clone());
    let first = run(&flow, &store, &[]).await;
    assert_eq!(first.status, RunStatus::Failed);
    assert!(first.error.as_deref().unwrap_or_default().contains("s40 is not ready"), "{:?}", first.error);
    assert_eq!(first.executed, 41, "start, s1..s39 and the failed s40");
    assert_eq!(only_task(&store, "chain", first.run_id, "s40").await.status, TaskStatus::Failed);
    assert!(tasks(&store, "chain", first.run_id, "s41").await.is_empty(), "nothing runs after the failure");

    fail_at.store(0, Ordering::SeqCst);
    let opts = RunOptions {
        env_params: false,
        resume: Some(Resume { origin: Some(first.run_id), from: None, force: false }),
        ..Default::default()
    };
    let second = braid_runtime::run(flow.clone(), store.clone(), opts).await.unwrap();
    assert_ok(&second);
    assert_eq!((second.reused, second.executed), (40, 60), "start and s1..s39 reused, the rest run");
    let end_parent = only_task(&store, "chain", second.run_id, "s98").await;
    assert_eq!(value::<u64>(&store, "chain", second.run_id, end_parent.key.task, "x").await, 98);
}
