//! Joins wider than `RunOptions::join_inputs_in_memory`: their branches are kept as names
//! only and read back from the store a window at a time, and must read exactly what a
//! join holding everything in memory reads.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use braid_core::RunStatus;
use braid_runtime::{Error, Flow, Merge, Param, ParamType, Resume, RunOptions, RunSummary};
use braid_store::Store;
use common::*;

/// `start` sets `items` 0..n and `shared`; each `work` squares its item into `out` and,
/// for even items, sets `even`; `join` checks what each input sees and sums `out`.
fn wide(fail_item: Option<Arc<AtomicBool>>) -> Arc<Flow> {
    Flow::builder("wide")
        .param(Param::new("n", ParamType::UInt).default(3000u64))
        .step("start", |ctx| async move {
            let n: u64 = ctx.param("n")?;
            ctx.set("items", &(0..n).collect::<Vec<u64>>())?;
            ctx.set("shared", &"from start")?;
            Ok(())
        })
        .foreach("items", "work")
        .step("work", move |ctx| {
            let fail_item = fail_item.clone();
            async move {
                let x: u64 = ctx.input()?;
                if x == 7 && fail_item.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                    return Err("item 7 is not ready".into());
                }
                ctx.set("out", &(x * x))?;
                if x % 2 == 0 {
                    ctx.set("even", &x)?;
                }
                Ok(())
            }
        })
        .next("join")
        .join("join", |ctx| async move {
            let mut total = 0u64;
            let mut last = None;
            for (i, input) in ctx.inputs_iter()?.enumerate() {
                assert_eq!(input.index(), i as u64, "inputs come in index order");
                assert!(last.is_none_or(|l| l < input.task_id()));
                last = Some(input.task_id());
                let x = input.index();
                assert_eq!(input.has("even"), x % 2 == 0);
                let names = input.names();
                assert!(names.iter().any(|n| n == "shared") && names.iter().any(|n| n == "out"), "{names:?}");
                assert_eq!(input.get::<String>("shared").await?, "from start", "inherited from the fanning task");
                if x % 2 == 0 {
                    assert_eq!(input.get::<u64>("even").await?, x);
                } else {
                    assert!(matches!(input.get::<u64>("even").await, Err(Error::ArtifactMissing { .. })));
                }
                total += input.get::<u64>("out").await?;
            }
            ctx.set("total", &total)?;
            Ok(())
        })
        .then_end()
}

/// Runs `flow` (`n` = 0: with no `n` parameter) holding joins of up to `in_memory` branches.
async fn run_with(flow: &Arc<Flow>, store: &Store, n: u64, in_memory: usize, resume: Option<Resume>) -> RunSummary {
    let opts = RunOptions {
        params: if resume.is_some() || n == 0 { Vec::new() } else { vec![("n".into(), n.to_string())] },
        env_params: false,
        join_inputs_in_memory: in_memory,
        resume,
        ..Default::default()
    };
    braid_runtime::run(flow.clone(), store.clone(), opts).await.unwrap()
}

fn sum_of_squares(n: u64) -> u64 {
    (0..n).map(|x| x * x).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_wider_than_it_holds_reads_every_branch_from_the_store_as_a_held_one_would() {
    let (store, _d) = fs_store();
    let flow = wide(None);
    let n = 3000;
    let stored = run_with(&flow, &store, n, 100, None).await;
    assert_ok(&stored);
    let held = run_with(&flow, &store, n, 10_000, None).await;
    assert_ok(&held);
    for s in [&stored, &held] {
        assert_eq!(output::<u64>(&store, s, "join", "total").await, sum_of_squares(n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_join_on_the_memory_store_reads_the_same() {
    let store = Store::memory();
    let s = run_with(&wide(None), &store, 2500, 10, None).await;
    assert_ok(&s);
    assert_eq!(output::<u64>(&store, &s, "join", "total").await, sum_of_squares(2500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_wide_join_reads_the_branches_it_reused() {
    let (store, _d) = fs_store();
    let fail = Arc::new(AtomicBool::new(true));
    let flow = wide(Some(fail.clone()));
    let first = run_with(&flow, &store, 2000, 50, None).await;
    assert_eq!(first.status, RunStatus::Failed);
    fail.store(false, Ordering::SeqCst);
    let resume = Resume { origin: Some(first.run_id), from: None, force: false };
    let second = run_with(&flow, &store, 2000, 50, Some(resume)).await;
    assert_ok(&second);
    assert!(second.reused > 0);
    assert_eq!(output::<u64>(&store, &second, "join", "total").await, sum_of_squares(2000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_of_several_steps_are_held_and_read_right_in_a_wide_join() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("long_branches")
        .step("start", |ctx| async move {
            ctx.set("items", &(0..300u64).collect::<Vec<u64>>())?;
            Ok(())
        })
        .foreach("items", "first")
        .step("first", |ctx| async move {
            let x: u64 = ctx.input()?;
            ctx.set("a", &x)?;
            Ok(())
        })
        .next("second")
        .step("second", |ctx| async move {
            let a: u64 = ctx.get("a").await?;
            ctx.set("b", &(a + 1))?;
            Ok(())
        })
        .next("join")
        .join("join", |ctx| async move {
            let mut total = 0u64;
            for input in ctx.inputs()? {
                total += input.get::<u64>("a").await? + input.get::<u64>("b").await?;
            }
            ctx.set("total", &total)?;
            Ok(())
        })
        .then_end();
    let s = run_with(&flow, &store, 0, 10, None).await;
    assert_ok(&s);
    let expected: u64 = (0..300u64).map(|x| 2 * x + 1).sum();
    assert_eq!(output::<u64>(&store, &s, "join", "total").await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merging_a_join_held_in_the_store_fails_saying_how_to_read_it_instead() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("wide_merge")
        .step("start", |ctx| async move {
            ctx.set("items", &(0..50u64).collect::<Vec<u64>>())?;
            Ok(())
        })
        .foreach("items", "work")
        .step("work", |ctx| async move {
            ctx.set("same", &1u8)?;
            Ok(())
        })
        .next("join")
        .join("join", |ctx| async move {
            ctx.merge_artifacts(Merge::all())?;
            Ok(())
        })
        .then_end();
    let s = run_with(&flow, &store, 0, 10, None).await;
    assert_eq!(s.status, RunStatus::Failed);
    let e = s.error.unwrap().to_string();
    assert!(e.contains("merge_artifacts") && e.contains("inputs_iter") && e.contains("join_inputs_in_memory"), "{e}");
}
