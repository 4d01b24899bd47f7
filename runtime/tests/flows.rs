//! The executor's semantics, end to end on an fs store.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use braid_core::{FlowName, RunStatus, TaskStatus};
use braid_runtime::{Backoff, Error, Flow, Merge, Param, ParamType, Resume, RunOptions};
use braid_store::TaskError;
use common::*;

fn ok() -> braid_runtime::StepResult {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_flow_inherits_by_reference() {
    let (store, _d) = fs_store();
    let flow = Arc::new(
        Flow::builder("hello")
            .step("start", |ctx| async move {
                ctx.set("greeting", "hello")?;
                ctx.set("big", &vec![7u8; 200_000])?;
                Ok(())
            })
            .next("a")
            .step("a", |ctx| async move {
                let g: String = ctx.get("greeting").await?;
                ctx.set("greeting", &format!("{g}, world"))?;
                assert_eq!(ctx.get::<Vec<u8>>("big").await?.len(), 200_000);
                Ok(())
            })
            .next("end")
            .step("end", |ctx| async move {
                assert_eq!(ctx.get::<String>("greeting").await?, "hello, world");
                Ok(())
            })
            .end()
            .build()
            .unwrap(),
    );
    let s = run_ok(&flow, &store, &[]).await;
    let f = FlowName::new("hello").unwrap();
    let start = only_task(&store, "hello", s.run_id, "start").await;
    let end = only_task(&store, "hello", s.run_id, "end").await;
    // `end` set nothing: it has no rows of its own, and sees `big` through its ancestors,
    // pointing at the very blob `start` stored.
    assert!(store.records.task_artifacts(&f, s.run_id, end.key.task).await.unwrap().is_empty());
    let vis = store.records.visible_artifacts(&f, s.run_id, end.key.task).await.unwrap();
    let big = vis.iter().find(|v| v.artifact.name == "big").unwrap();
    assert_eq!(big.set_by, start.key.task);
    let own = store.records.task_artifacts(&f, s.run_id, start.key.task).await.unwrap();
    assert_eq!(own.iter().find(|a| a.name == "big").unwrap().key, big.artifact.key);
    let greeting: String = value(&store, "hello", s.run_id, end.key.task, "greeting").await;
    assert_eq!(greeting, "hello, world");
}

fn split_flow(join_body: fn(braid_runtime::Ctx) -> braid_runtime::StepResult) -> Arc<Flow> {
    Flow::builder("splitter")
        .step("start", |ctx| async move {
            ctx.set("common", &1u32)?;
            Ok(())
        })
        .split(&["left", "right"])
        .step("left", |ctx| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ctx.set("side", "l")?;
            ctx.set("shared", &5u32)?;
            ctx.set("only_left", &true)?;
            Ok(())
        })
        .next("join")
        .step("right", |ctx| async move {
            ctx.set("side", "r")?;
            ctx.set("shared", &5u32)?;
            Ok(())
        })
        .next("join")
        .join("join", move |ctx| async move { join_body(ctx) })
        .then_end()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_join_order_merge_and_branch_only_error() {
    let (store, _d) = fs_store();
    let flow = split_flow(|ctx| {
        let inputs = ctx.inputs()?;
        // Declared branch order, though `right` finished first.
        assert_eq!(inputs.iter().map(|i| i.step().to_string()).collect::<Vec<_>>(), ["left", "right"]);
        assert_eq!(inputs.iter().map(|i| i.index()).collect::<Vec<_>>(), [0, 1]);
        // A join starts empty; a branch-only name says so.
        assert!(!ctx.has("side"));
        let e = futures_block(ctx.get::<String>("side")).unwrap_err();
        assert!(matches!(e, Error::BranchOnly { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("`side`") && msg.contains("inputs()") && msg.contains("merge_artifacts"), "{msg}");
        // A conflicting merge fails, names the conflict and sets nothing.
        let e = ctx.merge_artifacts(Merge::all()).unwrap_err().to_string();
        assert!(e.contains("`side`") && e.contains("left") && e.contains("right"), "{e}");
        assert!(!ctx.has("shared"));
        // Include and exclude together, include of a missing name: errors.
        let both = Merge { include: vec!["shared".into()], exclude: vec!["side".into()] };
        assert!(ctx.merge_artifacts(both).unwrap_err().to_string().contains("not both"));
        assert!(ctx.merge_artifacts(Merge::only(&["nope"])).unwrap_err().to_string().contains("nope"));
        // The join's own value wins over the branches'.
        ctx.set("common", &99u32)?;
        ctx.merge_artifacts(Merge::except(&["side"]))?;
        assert!(ctx.has("shared") && ctx.has("only_left"));
        Ok(())
    });
    let s = run_ok(&flow, &store, &[]).await;
    let join = only_task(&store, "splitter", s.run_id, "join").await;
    assert_eq!(join.inputs.len(), 2);
    assert_eq!(value::<u32>(&store, "splitter", s.run_id, join.key.task, "common").await, 99);
    assert_eq!(value::<u32>(&store, "splitter", s.run_id, join.key.task, "shared").await, 5);
    assert!(value::<bool>(&store, "splitter", s.run_id, join.key.task, "only_left").await);
}

/// Runs a future to completion from sync code inside a step (tests only).
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_outside_a_join_is_an_error() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("nomerge")
        .step("start", |ctx| async move {
            let e = ctx.merge_artifacts(Merge::all()).unwrap_err().to_string();
            assert!(e.contains("join"), "{e}");
            assert!(ctx.inputs().is_err());
            assert!(ctx.input::<u64>().unwrap_err().to_string().contains("foreach"));
            Ok(())
        })
        .then_end();
    run_ok(&flow, &store, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreach_join_sees_index_order_and_records_frames() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("order")
        .step("start", |ctx| async move {
            ctx.set("items", &["a", "b", "c", "d", "e"])?;
            Ok(())
        })
        .foreach("items", "work")
        .step("work", |ctx| async move {
            let i = ctx.index().unwrap();
            // Later items finish first.
            tokio::time::sleep(Duration::from_millis(10 * (5 - i))).await;
            let item: String = ctx.input()?;
            ctx.set("out", &format!("{item}{i}"))?;
            Ok(())
        })
        .next("join")
        .join("join", |ctx| gather::<String>(ctx, "out", "all"))
        .then_end();
    let s = run_ok(&flow, &store, &[]).await;
    let join = only_task(&store, "order", s.run_id, "join").await;
    let all: Vec<String> = value(&store, "order", s.run_id, join.key.task, "all").await;
    assert_eq!(all, ["a0", "b1", "c2", "d3", "e4"]);
    let work = tasks(&store, "order", s.run_id, "work").await;
    let start = only_task(&store, "order", s.run_id, "start").await;
    for (i, t) in work.iter().enumerate() {
        assert_eq!(t.foreach_stack.len(), 1);
        assert_eq!(t.foreach_stack[0].index, i as u64);
        assert_eq!(t.foreach_stack[0].len, 5);
        assert_eq!(t.foreach_stack[0].task, start.key.task);
        assert_eq!(t.parent, Some(start.key.task));
    }
    assert_eq!(join.inputs, work.iter().map(|t| t.key.task).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_foreach_joins_each_level() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("nested")
        .step("start", |ctx| async move {
            ctx.set("rows", &vec![1u64, 2, 3])?;
            Ok(())
        })
        .foreach("rows", "row")
        .step("row", |ctx| async move {
            let r: u64 = ctx.input()?;
            ctx.set("cols", &(0..4).map(|c| r * 10 + c).collect::<Vec<u64>>())?;
            Ok(())
        })
        .foreach("cols", "cell")
        .step("cell", |ctx| async move {
            let v: u64 = ctx.input()?;
            let row: u64 = ctx.outer_input(1)?;
            assert_eq!(v / 10, row);
            assert_eq!(ctx.foreach_stack().len(), 2);
            ctx.set("v", &v)?;
            Ok(())
        })
        .next("join_cols")
        .join("join_cols", |ctx| async move {
            let mut s = 0u64;
            for i in ctx.inputs()? {
                s += i.get::<u64>("v").await?;
            }
            ctx.set("row_sum", &s)?;
            Ok(())
        })
        .next("join_rows")
        .join("join_rows", |ctx| gather::<u64>(ctx, "row_sum", "sums"))
        .then_end();
    let s = run_ok(&flow, &store, &[]).await;
    let sums: Vec<u64> = output(&store, &s, "join_rows", "sums").await;
    assert_eq!(sums, vec![46, 86, 126]);
    let cells = tasks(&store, "nested", s.run_id, "cell").await;
    assert_eq!(cells.len(), 12);
    assert!(cells.iter().all(|c| c.foreach_stack.len() == 2));
    let inner_joins = tasks(&store, "nested", s.run_id, "join_cols").await;
    assert_eq!(inner_joins.len(), 3);
    assert!(inner_joins.iter().all(|j| j.foreach_stack.len() == 1 && j.inputs.len() == 4));
}

fn switch_flow(choice: &'static str, after_runs: Arc<AtomicU64>) -> Arc<Flow> {
    Flow::builder("switcher")
        .step("start", move |ctx| async move {
            ctx.set("choice", choice)?;
            Ok(())
        })
        .switch("choice", &[("left", "left"), ("right", "right")])
        .step("left", |ctx| async move {
            ctx.set("went", "left")?;
            Ok(())
        })
        .next("after")
        .step("right", |ctx| async move {
            ctx.set("went", "right")?;
            Ok(())
        })
        .next("after")
        .step("after", move |_| {
            let a = after_runs.clone();
            async move {
                a.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .then_end()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_takes_one_case_and_the_meeting_step_runs_once() {
    let (store, _d) = fs_store();
    let after = Arc::new(AtomicU64::new(0));
    let s = run_ok(&switch_flow("right", after.clone()), &store, &[]).await;
    assert_eq!(after.load(Ordering::SeqCst), 1);
    assert!(tasks(&store, "switcher", s.run_id, "left").await.is_empty());
    assert_eq!(output::<String>(&store, &s, "after", "went").await, "right");

    let s = run(&switch_flow("up", after), &store, &[]).await;
    assert_eq!(s.status, RunStatus::Failed);
    let e = s.error.unwrap();
    assert!(e.contains("start") && e.contains("\"up\"") && e.contains("left, right"), "{e}");
}

/// Metaflow 2.19's switch with a case that fans out: `miss` runs `clip` and `face` as a
/// static split closed by `join_miss`; `hit` goes to `fast` alone; `end` runs once from
/// whichever path ran. `face` fails while `fail` is set.
fn detector(fail: Arc<AtomicBool>, face_runs: Arc<AtomicU64>) -> Arc<Flow> {
    Flow::builder("detector")
        .param(Param::new("verdict", ParamType::String).default("miss"))
        .step("start", |ctx| async move {
            let v: String = ctx.param("verdict")?;
            ctx.set("verdict", &v)?;
            Ok(())
        })
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
        .step("face", move |ctx| {
            let (fail, runs) = (fail.clone(), face_runs.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if fail.load(Ordering::SeqCst) {
                    return Err("face model not loaded".into());
                }
                ctx.set("part", "face")?;
                Ok(())
            }
        })
        .next("join_miss")
        .join("join_miss", |ctx| async move {
            let mut found = Vec::new();
            for i in ctx.inputs()? {
                found.push(i.get::<String>("part").await?);
            }
            ctx.set("found", &found)?;
            Ok(())
        })
        .next("end")
        .step("end", |ctx| async move {
            let found: Vec<String> = ctx.get("found").await?;
            ctx.set("summary", &found.join("+"))?;
            Ok(())
        })
        .end()
        .build()
        .map(Arc::new)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_case_that_fans_out_runs_its_branches_and_end_runs_once() {
    let (store, _d) = fs_store();
    let flow = detector(Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let miss = run_ok(&flow, &store, &[("verdict", "miss")]).await;
    assert_eq!(output::<String>(&store, &miss, "end", "summary").await, "clip+face");
    assert!(tasks(&store, "detector", miss.run_id, "fast").await.is_empty());
    let start = only_task(&store, "detector", miss.run_id, "start").await;
    for step in ["clip", "face"] {
        let t = only_task(&store, "detector", miss.run_id, step).await;
        assert_eq!(t.parent, Some(start.key.task), "{step} starts from the switch task");
    }
    let join = only_task(&store, "detector", miss.run_id, "join_miss").await;
    assert_eq!(join.inputs.len(), 2);
    assert_eq!(tasks(&store, "detector", miss.run_id, "end").await.len(), 1);

    let hit = run_ok(&flow, &store, &[("verdict", "hit")]).await;
    assert_eq!(output::<String>(&store, &hit, "end", "summary").await, "cached");
    for step in ["clip", "face", "join_miss"] {
        assert!(tasks(&store, "detector", hit.run_id, step).await.is_empty(), "{step} ran on the hit path");
    }
    assert_eq!(tasks(&store, "detector", hit.run_id, "end").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_fanout_case_reruns_only_the_branch_that_failed() {
    let (store, _d) = fs_store();
    let fail = Arc::new(AtomicBool::new(true));
    let face_runs = Arc::new(AtomicU64::new(0));
    let flow = detector(fail.clone(), face_runs.clone());
    let first = run(&flow, &store, &[]).await;
    assert_eq!(first.status, RunStatus::Failed);
    assert!(first.error.as_deref().unwrap_or("").contains("face model not loaded"), "{:?}", first.error);
    fail.store(false, Ordering::SeqCst);
    face_runs.store(0, Ordering::SeqCst);
    let opts = RunOptions {
        resume: Some(Resume { origin: Some(first.run_id), from: None, force: false }),
        env_params: false,
        ..Default::default()
    };
    let second = braid_runtime::run(flow.clone(), store.clone(), opts).await.unwrap();
    assert_ok(&second);
    assert_eq!(face_runs.load(Ordering::SeqCst), 1);
    assert_eq!(output::<String>(&store, &second, "end", "summary").await, "clip+face");
    let clip = only_task(&store, "detector", second.run_id, "clip").await;
    assert!(clip.origin.is_some(), "clip succeeded the first time: reused, not run again");
}

fn loop_flow() -> Arc<Flow> {
    Arc::new(
        Flow::builder("looper")
            .param(Param::new("rounds", ParamType::UInt).default(3u64))
            .step("start", |ctx| async move {
                ctx.set("count", &0u64)?;
                Ok(())
            })
            .next("body")
            .step("body", |ctx| async move {
                let c: u64 = ctx.get("count").await?;
                assert_eq!(u64::from(ctx.iteration()), c);
                let rounds: u64 = ctx.param("rounds")?;
                ctx.set("count", &(c + 1))?;
                ctx.set("next", if c + 1 >= rounds { "done" } else { "again" })?;
                Ok(())
            })
            .max_iterations(10)
            .switch("next", &[("again", "body"), ("done", "end")])
            .step("end", |_| async { ok() })
            .end()
            .build()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_switch_loops_until_exit_and_is_bounded() {
    let (store, _d) = fs_store();
    let s = run_ok(&loop_flow(), &store, &[("rounds", "4")]).await;
    let bodies = tasks(&store, "looper", s.run_id, "body").await;
    assert_eq!(bodies.iter().map(|t| t.iteration).collect::<Vec<_>>(), [0, 1, 2, 3]);
    for w in bodies.windows(2) {
        assert_eq!(w[1].parent, Some(w[0].key.task), "artifacts flow from one iteration to the next");
    }
    assert_eq!(output::<u64>(&store, &s, "end", "count").await, 4);

    let s = run(&loop_flow(), &store, &[("rounds", "100")]).await;
    assert_eq!(s.status, RunStatus::Failed);
    let e = s.error.unwrap();
    assert!(e.contains("`body`") && e.contains("max_iterations = 10"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_inside_foreach_branches_run_independently() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("foreach_loop")
        .step("start", |ctx| async move {
            ctx.set("limits", &vec![1u64, 3, 2])?;
            Ok(())
        })
        .foreach("limits", "prep")
        .step("prep", |ctx| async move {
            ctx.set("n", &0u64)?;
            Ok(())
        })
        .next("spin")
        .step("spin", |ctx| async move {
            let limit: u64 = ctx.input()?;
            let n: u64 = ctx.get("n").await?;
            ctx.set("n", &(n + 1))?;
            ctx.set("go", if n + 1 >= limit { "out" } else { "more" })?;
            Ok(())
        })
        .switch("go", &[("more", "spin"), ("out", "join")])
        .join("join", |ctx| gather::<u64>(ctx, "n", "ns"))
        .then_end();
    let s = run_ok(&flow, &store, &[]).await;
    assert_eq!(output::<Vec<u64>>(&store, &s, "join", "ns").await, vec![1, 3, 2]);
    assert_eq!(tasks(&store, "foreach_loop", s.run_id, "spin").await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_after_switch_in_a_branch_gets_the_branch_that_ran() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("split_switch")
        .step("start", |_| async { ok() })
        .split(&["a", "b"])
        .step("a", |ctx| async move {
            ctx.set("pick", "two")?;
            Ok(())
        })
        .switch("pick", &[("one", "a1"), ("two", "a2")])
        .step("a1", |ctx| async move {
            ctx.set("v", "a1")?;
            Ok(())
        })
        .next("join")
        .step("a2", |ctx| async move {
            ctx.set("v", "a2")?;
            Ok(())
        })
        .next("join")
        .step("b", |ctx| async move {
            ctx.set("v", "b")?;
            Ok(())
        })
        .next("join")
        .join("join", |ctx| async move {
            let mut vs = Vec::new();
            for i in ctx.inputs()? {
                vs.push(format!("{}={}", i.step(), i.get::<String>("v").await?));
            }
            ctx.set("vs", &vs)?;
            Ok(())
        })
        .then_end();
    let s = run_ok(&flow, &store, &[]).await;
    assert_eq!(output::<Vec<String>>(&store, &s, "join", "vs").await, ["a2=a2", "b=b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_drop_failed_attempts_artifacts() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("flaky")
        .step("start", |ctx| async move {
            ctx.set("from_failed", &ctx.attempt().0)?;
            if ctx.attempt().0 < 3 {
                return Err(format!("transient failure on attempt {}", ctx.attempt()).into());
            }
            ctx.set("ok", &true)?;
            Ok(())
        })
        .retries(3)
        .backoff(Backoff::Exponential { base: Duration::from_millis(40), max: Duration::from_secs(1) })
        .then_end();
    let t0 = Instant::now();
    let s = run_ok(&flow, &store, &[]).await;
    assert!(t0.elapsed() >= Duration::from_millis(120), "backoff 40 + 80 ms was honoured");
    let f = FlowName::new("flaky").unwrap();
    let start = only_task(&store, "flaky", s.run_id, "start").await;
    assert_eq!(start.attempt.0, 3);
    let attempts = store.records.list_attempts(&f, s.run_id, start.key.task).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [TaskStatus::Failed, TaskStatus::Failed, TaskStatus::Succeeded]
    );
    assert!(attempts[0].error.as_ref().unwrap().message.contains("attempt 1"));
    assert!(attempts.iter().all(|a| a.ended_at.is_some()));
    assert_eq!(value::<u32>(&store, "flaky", s.run_id, start.key.task, "from_failed").await, 3);
    let logs = store.records.read_logs(&f, s.run_id, start.key.task, 0, 0).await.unwrap();
    assert!(logs.iter().any(|l| l.line.contains("attempt 1 failed")), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fails_the_attempt_and_the_run_names_step_task_attempt() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("slow")
        .step("start", |_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            ok()
        })
        .timeout(Duration::from_millis(100))
        .retries(1)
        .then_end();
    let t0 = Instant::now();
    let s = run(&flow, &store, &[]).await;
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(s.status, RunStatus::Failed);
    let e = s.error.unwrap();
    assert!(e.contains("step `start`") && e.contains("attempt 2") && e.contains("timeout"), "{e}");
    let start = only_task(&store, "slow", s.run_id, "start").await;
    assert_eq!(start.status, TaskStatus::Failed);
    assert_eq!(start.error.unwrap().kind, "timeout");
    let run = store.records.get_run(&FlowName::new("slow").unwrap(), s.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.unwrap().contains("start"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_records_the_failure_and_the_flow_goes_on() {
    let (store, _d) = fs_store();
    let flow = Arc::new(
        Flow::builder("caught")
            .step("start", |ctx| async move {
                ctx.set("partial", &41u32)?;
                Err("boom".into())
            })
            .retries(1)
            .catch("failure")
            .next("end")
            .step("end", |ctx| async move {
                let f: TaskError = ctx.get("failure").await?;
                assert_eq!(f.message, "boom");
                assert_eq!(ctx.get::<u32>("partial").await?, 41);
                Ok(())
            })
            .end()
            .build()
            .unwrap(),
    );
    let s = run_ok(&flow, &store, &[]).await;
    let start = only_task(&store, "caught", s.run_id, "start").await;
    assert_eq!(start.status, TaskStatus::Succeeded);
    // Caught, not an error: a succeeded task has no error, it says what it caught.
    assert!(start.error.is_none(), "{:?}", start.error);
    let caught = start.caught.as_ref().unwrap();
    assert_eq!((caught.artifact.as_str(), caught.attempt.0, caught.error.message.as_str()), ("failure", 2, "boom"));
    assert_eq!(start.attempt.0, 2);
    // Each failed attempt is still in the attempt history.
    let attempts = store.records.list_attempts(&start.key.flow, start.key.run, start.key.task).await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.status).collect::<Vec<_>>(), [TaskStatus::Failed, TaskStatus::Failed]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_cancels_running_tasks_and_panics_are_failures() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("crash")
        .step("start", |ctx| async move {
            ctx.set("xs", &vec![0u32, 1, 2, 3])?;
            Ok(())
        })
        .foreach("xs", "work")
        .step("work", |ctx| async move {
            if ctx.input::<u32>()? == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                panic!("branch zero exploded");
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
            ok()
        })
        .next("join")
        .join("join", |_| async { ok() })
        .then_end();
    let opts = RunOptions { max_workers: 4, env_params: false, ..Default::default() };
    let t0 = Instant::now();
    let s = braid_runtime::run(flow, store.clone(), opts).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(s.status, RunStatus::Failed);
    let e = s.error.unwrap();
    assert!(e.contains("`work`") && e.contains("panic") && e.contains("branch zero exploded"), "{e}");
    let work = tasks(&store, "crash", s.run_id, "work").await;
    let statuses: BTreeMap<TaskStatus, usize> = work.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t.status).or_default() += 1;
        m
    });
    assert_eq!(statuses.get(&TaskStatus::Failed), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get(&TaskStatus::Cancelled), Some(&3), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_the_run_cleanly() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("cancel")
        .step("start", |_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            ok()
        })
        .then_end();
    let opts = RunOptions { env_params: false, ..Default::default() };
    let token = opts.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        token.cancel();
    });
    let s = braid_runtime::run(flow, store.clone(), opts).await.unwrap();
    assert_eq!(s.status, RunStatus::Cancelled);
    let start = only_task(&store, "cancel", s.run_id, "start").await;
    assert_eq!(start.status, TaskStatus::Cancelled);
    let run = store.records.get_run(&FlowName::new("cancel").unwrap(), s.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert!(run.ended_at.is_some());
}

fn resumable(fail_at: Arc<AtomicBool>, work_runs: Arc<AtomicU64>, join_runs: Arc<AtomicU64>) -> Arc<Flow> {
    Flow::builder("resumable")
        .param(Param::new("n", ParamType::UInt).default(20u64))
        .step("start", |ctx| async move {
            let n: u64 = ctx.param("n")?;
            ctx.set("items", &(0..n).collect::<Vec<u64>>())?;
            Ok(())
        })
        .foreach("items", "work")
        .step("work", move |ctx| {
            let fail_at = fail_at.clone();
            let work_runs = work_runs.clone();
            async move {
                work_runs.fetch_add(1, Ordering::SeqCst);
                let x: u64 = ctx.input()?;
                if x == 7 && fail_at.load(Ordering::SeqCst) {
                    return Err("item 7 is not ready".into());
                }
                ctx.set("out", &(x * 3))?;
                Ok(())
            }
        })
        .next("join")
        .join("join", move |ctx| {
            let join_runs = join_runs.clone();
            async move {
                join_runs.fetch_add(1, Ordering::SeqCst);
                let mut t = 0u64;
                for i in ctx.inputs()? {
                    t += i.get::<u64>("out").await?;
                }
                ctx.set("total", &t)?;
                Ok(())
            }
        })
        .then_end()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_reuses_successful_tasks_by_reference() {
    let (store, _d) = fs_store();
    let fail = Arc::new(AtomicBool::new(true));
    let work_runs = Arc::new(AtomicU64::new(0));
    let join_runs = Arc::new(AtomicU64::new(0));
    let flow = resumable(fail.clone(), work_runs.clone(), join_runs.clone());
    let first = run(&flow, &store, &[("n", "20")]).await;
    assert_eq!(first.status, RunStatus::Failed);
    let ran_first = work_runs.load(Ordering::SeqCst);

    fail.store(false, Ordering::SeqCst);
    work_runs.store(0, Ordering::SeqCst);
    let opts = RunOptions {
        resume: Some(Resume { origin: Some(first.run_id), from: None, force: false }),
        env_params: false,
        ..Default::default()
    };
    let second = braid_runtime::run(flow.clone(), store.clone(), opts).await.unwrap();
    assert_ok(&second);
    let f = FlowName::new("resumable").unwrap();
    let old_work = tasks(&store, "resumable", first.run_id, "work").await;
    let succeeded_before = old_work.iter().filter(|t| t.status == TaskStatus::Succeeded).count() as u64;
    // Only what did not succeed ran again: item 7, the items cancelled after it failed.
    assert_eq!(work_runs.load(Ordering::SeqCst), 20 - succeeded_before);
    assert!(succeeded_before > 0 && ran_first > 0);
    assert_eq!(second.reused, succeeded_before + 1, "the start task and every successful branch");
    let new_work = tasks(&store, "resumable", second.run_id, "work").await;
    assert_eq!(new_work.len(), 20);
    for t in &new_work {
        let idx = t.foreach_index().unwrap();
        let old = old_work.iter().find(|o| o.foreach_index() == Some(idx));
        if let Some(old) = old.filter(|o| o.status == TaskStatus::Succeeded) {
            assert_eq!(t.origin, Some((first.run_id, old.key.task)));
            let a = store.records.task_artifacts(&f, second.run_id, t.key.task).await.unwrap();
            let b = store.records.task_artifacts(&f, first.run_id, old.key.task).await.unwrap();
            assert_eq!(a, b, "same artifact keys, nothing re-stored");
        } else {
            assert_eq!(t.origin, None);
        }
    }
    assert_eq!(output::<u64>(&store, &second, "join", "total").await, 3 * 190);
    let run = store.records.get_run(&f, second.run_id).await.unwrap().unwrap();
    assert_eq!(run.origin_run, Some(first.run_id));
    assert_eq!(run.params.get("n"), Some(&serde_json::json!(20)));

    // Resuming the successful run reuses everything; --from re-runs from that step.
    work_runs.store(0, Ordering::SeqCst);
    join_runs.store(0, Ordering::SeqCst);
    let opts = RunOptions {
        resume: Some(Resume { origin: None, from: None, force: false }),
        env_params: false,
        ..Default::default()
    };
    let third = braid_runtime::run(flow.clone(), store.clone(), opts).await.unwrap();
    assert_ok(&third);
    assert_eq!((work_runs.load(Ordering::SeqCst), join_runs.load(Ordering::SeqCst)), (0, 0));
    let opts = RunOptions {
        resume: Some(Resume {
            origin: Some(third.run_id),
            from: Some(braid_core::StepName::new("join").unwrap()),
            force: false,
        }),
        env_params: false,
        ..Default::default()
    };
    let fourth = braid_runtime::run(flow.clone(), store.clone(), opts).await.unwrap();
    assert_ok(&fourth);
    assert_eq!((work_runs.load(Ordering::SeqCst), join_runs.load(Ordering::SeqCst)), (0, 1));

    let bad = RunOptions {
        resume: Some(Resume { origin: None, from: Some(braid_core::StepName::new("nope").unwrap()), force: false }),
        env_params: false,
        ..Default::default()
    };
    let e = braid_runtime::run(flow, store.clone(), bad).await.unwrap_err().to_string();
    assert!(e.contains("--from nope") && e.contains("work"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_get_distinct_ids_and_records() {
    let (store, _d) = fs_store();
    let flow = fanout(Arc::new(AtomicU64::new(0)));
    let (a, b) = tokio::join!(run(&flow, &store, &[("n", "30")]), run(&flow, &store, &[("n", "40")]));
    assert_ok(&a);
    assert_ok(&b);
    assert_ne!(a.run_id, b.run_id);
    assert_eq!(tasks(&store, "fanout", a.run_id, "work").await.len(), 30);
    assert_eq!(tasks(&store, "fanout", b.run_id, "work").await.len(), 40);
    assert_eq!(output::<u64>(&store, &a, "join", "total").await, (0..30u64).map(|x| x * x).sum::<u64>());
    assert_eq!(output::<u64>(&store, &b, "join", "total").await, (0..40u64).map(|x| x * x).sum::<u64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_checked_and_resolved() {
    let (store, _d) = fs_store();
    let calls = Arc::new(AtomicU64::new(0));
    let c2 = calls.clone();
    let flow = Flow::builder("params")
        .param(Param::new("n", ParamType::UInt).default(5u64))
        .param(Param::new("label", ParamType::String))
        .param_computed("seed", ParamType::UInt, "computed once", move || c2.fetch_add(1, Ordering::SeqCst) + 100)
        .step("start", |ctx| async move {
            ctx.set("seed_seen", &ctx.param::<u64>("seed")?)?;
            Ok(())
        })
        .then_end();
    let opts = |params: &[(&str, &str)]| RunOptions {
        params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        env_params: false,
        ..Default::default()
    };
    let e = braid_runtime::run(flow.clone(), store.clone(), opts(&[("label", "x"), ("nn", "1")]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("`nn` (did you mean `n`?)") && e.contains("`n` (uint), `label` (string), `seed` (uint)"), "{e}");
    // Every problem at once: unknown, ill-typed, repeated, and the required one missing.
    let e = braid_runtime::run(flow.clone(), store.clone(), opts(&[("lable", "x"), ("n", "-1"), ("n", "2")]))
        .await
        .unwrap_err();
    let braid_runtime::Error::Params(errors) = &e else { panic!("{e}") };
    let at: Vec<&str> = errors.problems.iter().map(|(at, _)| at.as_str()).collect();
    assert_eq!(at, ["--param lable=x", "--param n=-1", "--param n=2", ""], "{e}");
    let e = e.to_string();
    assert!(e.starts_with("flow `params`: 4 problems with its parameters:\n"), "{e}");
    for line in [
        "\n  --param lable=x: the flow has no parameter `lable` (did you mean `label`?)",
        "\n  --param n=-1: parameter `n` expects an unsigned integer (u64), got \"-1\" (must not be negative)",
        "\n  --param n=2: parameter `n` is given twice (first as --param n=-1); keep one",
        "\n  the flow requires parameter `label` (string, no default) and it is not given; pass --param label=VALUE",
    ] {
        assert!(e.contains(line), "{line:?} missing from {e}");
    }
    let e = braid_runtime::run(flow.clone(), store.clone(), opts(&[("label", "x"), ("n", "abc")]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("`n`") && e.contains("abc"), "{e}");
    let e = braid_runtime::run(flow.clone(), store.clone(), opts(&[])).await.unwrap_err().to_string();
    assert!(e.contains("requires parameter `label`") && e.contains("--param label=VALUE"), "{e}");
    let s = braid_runtime::run(flow.clone(), store.clone(), opts(&[("label", "x")])).await.unwrap();
    assert_ok(&s);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "computed once per run");
    let run = store.records.get_run(&FlowName::new("params").unwrap(), s.run_id).await.unwrap().unwrap();
    assert_eq!(run.params.get("seed"), Some(&serde_json::json!(100)));
    assert_eq!(run.params.get("n"), Some(&serde_json::json!(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_params_override_defaults() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("envp")
        .param(Param::new("width", ParamType::UInt).default(1u64))
        .step("start", |ctx| async move {
            ctx.set("w", &ctx.param::<u64>("width")?)?;
            Ok(())
        })
        .then_end();
    // The variables a run reads, given to it: no test changes the process environment.
    let env_vars = BTreeMap::from([("BRAID_PARAM_WIDTH".to_owned(), "7".to_owned())]);
    let s =
        braid_runtime::run(flow.clone(), store.clone(), RunOptions { env_vars: Some(env_vars), ..Default::default() })
            .await
            .unwrap();
    assert_ok(&s);
    assert_eq!(output::<u64>(&store, &s, "start", "w").await, 7);
    // A bad value names the variable it came from.
    let env_vars = BTreeMap::from([("BRAID_PARAM_WIDTH".to_owned(), "wide".to_owned())]);
    let opts = RunOptions { env_vars: Some(env_vars), ..Default::default() };
    let e = braid_runtime::run(flow, store.clone(), opts).await.unwrap_err().to_string();
    assert!(e.contains("environment variable BRAID_PARAM_WIDTH") && e.contains("\"wide\""), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreach_width_is_bounded_and_non_sequences_refused() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("wide")
        .max_num_splits(10)
        .param(Param::new("n", ParamType::UInt).default(11u64))
        .step("start", |ctx| async move {
            let n: u64 = ctx.param("n")?;
            if n == 0 {
                ctx.set("items", &5u64)?;
            } else {
                ctx.set("items", &(0..n).collect::<Vec<_>>())?;
            }
            Ok(())
        })
        .foreach("items", "work")
        .step("work", |_| async { ok() })
        .next("join")
        .join("join", |_| async { ok() })
        .then_end();
    let s = run(&flow, &store, &[]).await;
    assert_eq!(s.status, RunStatus::Failed);
    let e = s.error.unwrap();
    assert!(e.contains("11 items") && e.contains("max_num_splits (10)") && e.contains("--max-num-splits"), "{e}");
    let s = run(&flow, &store, &[("n", "0")]).await;
    assert_eq!(s.status, RunStatus::Failed);
    assert!(s.error.unwrap().contains("needs a sequence"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_foreach_runs_the_join_with_no_inputs() {
    let (store, _d) = fs_store();
    let flow = fanout(Arc::new(AtomicU64::new(0)));
    let s = run_ok(&flow, &store, &[("n", "0")]).await;
    assert_eq!(output::<u64>(&store, &s, "join", "total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_steps_and_invalid_flows() {
    let (store, _d) = fs_store();
    let flow = Flow::builder("blocking")
        .step_blocking("start", |ctx| {
            std::thread::sleep(Duration::from_millis(10));
            ctx.set("x", &1u8)?;
            Ok(())
        })
        .then_end();
    run_ok(&flow, &store, &[]).await;
    let e = Flow::builder("bad")
        .step("start", |_| async { ok() })
        .next("nowhere")
        .step("../x", |_| async { ok() })
        .next("end")
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere") && e.contains("../x") && e.contains("end"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_is_resumed_only_with_force_and_a_lost_one_is_marked_lost() {
    let (store, _d) = fs_store();
    let flow = fanout(Arc::new(AtomicU64::new(0)));
    let first = run(&flow, &store, &[("n", "3")]).await;
    assert_ok(&first);
    let f = FlowName::new("fanout").unwrap();
    // Make it look held by a live process (a fresh lease), then by a dead one.
    let mut rec = store.records.get_run(&f, first.run_id).await.unwrap().unwrap();
    rec.status = RunStatus::Running;
    rec.lease = Some(braid_store::RunLease::new("run@elsewhere:42", Duration::from_secs(60)));
    store.records.update_run(&rec).await.unwrap();
    let resume = |force| RunOptions {
        resume: Some(Resume { origin: Some(first.run_id), from: None, force }),
        env_params: false,
        ..Default::default()
    };
    let e = braid_runtime::run(flow.clone(), store.clone(), resume(false)).await.unwrap_err();
    assert!(matches!(e, Error::Resume { .. }), "{e}");
    let e = e.to_string();
    assert!(e.contains("still running") && e.contains("run@elsewhere:42") && e.contains("--force"), "{e}");
    assert_ok(&braid_runtime::run(flow.clone(), store.clone(), resume(true)).await.unwrap());

    let mut rec = store.records.get_run(&f, first.run_id).await.unwrap().unwrap();
    rec.lease = Some(braid_store::RunLease {
        holder: "run@elsewhere:42".into(),
        renewed_at: braid_core::Timestamp::from_micros(1_000_000),
        deadline: braid_core::Timestamp::from_micros(4_000_000),
    });
    store.records.update_run(&rec).await.unwrap();
    assert_ok(&braid_runtime::run(flow, store.clone(), resume(false)).await.unwrap());
    let origin = store.records.get_run(&f, first.run_id).await.unwrap().unwrap();
    assert_eq!(origin.status, RunStatus::Lost, "resume stores the lost a reader saw");
    let why = origin.error.unwrap();
    assert!(why.contains("run@elsewhere:42") && why.contains("ran out"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_holds_a_lease_while_it_goes_and_none_once_it_ends() {
    let (store, _d) = fs_store();
    let f = FlowName::new("leased").unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = store.clone();
    let seen2 = seen.clone();
    let flow = Arc::new(
        Flow::builder("leased")
            .step("start", move |ctx| {
                let (store, seen) = (s2.clone(), seen2.clone());
                async move {
                    // Long enough for several renewals of a 300 ms lease.
                    for _ in 0..4 {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        let r = store
                            .records
                            .get_run(&FlowName::new("leased").unwrap(), ctx.run_id())
                            .await
                            .unwrap()
                            .unwrap();
                        seen.lock().unwrap().push((r.status_now(), r.lease.unwrap()));
                    }
                    Ok(())
                }
            })
            .next("end")
            .step("end", |_| async { Ok(()) })
            .end()
            .build()
            .unwrap(),
    );
    let opts = RunOptions { run_lease: Duration::from_millis(300), env_params: false, ..Default::default() };
    let summary = braid_runtime::run(flow, store.clone(), opts).await.unwrap();
    assert_ok(&summary);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|(s, _)| *s == RunStatus::Running), "renewed in time: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1].1.deadline > w[0].1.deadline), "each read sees a later deadline: {seen:?}");
    assert!(seen[0].1.holder.starts_with("run@") && seen[0].1.holder.ends_with(&format!(":{}", std::process::id())));
    let done = store.records.get_run(&f, summary.run_id).await.unwrap().unwrap();
    assert_eq!((done.status, done.lease), (RunStatus::Succeeded, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_step_on_a_memory_store_fails_saying_why() {
    let flow = Arc::new(
        Flow::builder("isolated_mem")
            .step("start", |_ctx| async move { Ok(()) })
            .isolated()
            .next("end")
            .step("end", |_ctx| async move { Ok(()) })
            .end()
            .build()
            .unwrap(),
    );
    let s = run(&flow, &braid_store::Store::memory(), &[]).await;
    assert_eq!(s.status, RunStatus::Failed);
    let e = s.error.unwrap();
    assert!(e.contains("step `start` is isolated") && e.contains("memory store") && e.contains("--store DIR"), "{e}");
}
