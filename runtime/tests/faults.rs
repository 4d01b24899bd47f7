#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Faults injected into the store (`braid_store::faults`): a failed blob put, a failed
//! fsync, a full disk and a short read. Each fails the attempt or the run with a message
//! naming the cause, loses nothing already committed, and leaves a store that `resume`
//! completes.

mod common;

use std::sync::Arc;

use braid_core::{FlowName, RunStatus, TaskStatus};
use braid_runtime::{Flow, Resume, RunOptions, RunSummary};
use braid_store::Store;
use braid_store::faults::{Fault, Faults, Op};
use common::*;

/// A foreach whose branches each store ~4 KiB (a blob, not an inline value), and a join
/// that reads them all back.
fn bulky() -> Arc<Flow> {
    Arc::new(
        Flow::builder("bulky")
            .step("start", |ctx| async move {
                ctx.set("items", &(0..40u64).collect::<Vec<u64>>())?;
                Ok(())
            })
            .foreach("items", "work")
            .step("work", |ctx| async move {
                let x: u64 = ctx.input()?;
                ctx.set("out", &vec![x + BIG; 600])?;
                Ok(())
            })
            .next("join")
            .join("join", |ctx| async move {
                let mut total = 0u64;
                for input in ctx.inputs()? {
                    total += input.get::<Vec<u64>>("out").await?.iter().sum::<u64>();
                }
                ctx.set("total", &total)?;
                Ok(())
            })
            .next("end")
            .step("end", |_| async { Ok(()) })
            .end()
            .build()
            .unwrap(),
    )
}

/// Large enough that each element takes 6 bytes of bincode's varint encoding.
const BIG: u64 = 1 << 40;
/// 600 copies of each of BIG + 0..40.
const TOTAL: u64 = 600 * (39 * 40 / 2 + 40 * BIG);

fn opts() -> RunOptions {
    RunOptions { env_params: false, max_workers: 2, ..Default::default() }
}

fn chain(s: &RunSummary) -> String {
    s.error.clone().unwrap_or_default()
}

/// Every task of the run that the store says succeeded still reads completely.
async fn committed_tasks_read_back(store: &Store, s: &RunSummary) -> usize {
    let work = tasks(store, "bulky", s.run_id, "work").await;
    let done: Vec<_> = work.iter().filter(|t| t.status == TaskStatus::Succeeded).collect();
    for t in &done {
        let i = t.foreach_index().unwrap();
        let v: Vec<u64> = value(store, "bulky", s.run_id, t.key.task, "out").await;
        assert_eq!(v, vec![i + BIG; 600], "{}", t.key);
    }
    done.len()
}

/// Resumes the failed run on the store without faults: it completes, reusing what was
/// committed.
async fn resume_completes(store: &Store, failed: &RunSummary, committed: usize) {
    let o = RunOptions { resume: Some(Resume { origin: Some(failed.run_id), from: None, force: false }), ..opts() };
    let s = braid_runtime::run(bulky(), store.clone(), o).await.unwrap();
    assert_ok(&s);
    assert!(s.reused as usize >= committed, "reused {} of {committed} committed tasks", s.reused);
    let join = only_task(store, "bulky", s.run_id, "join").await;
    assert_eq!(value::<u64>(store, "bulky", s.run_id, join.key.task, "total").await, TOTAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_of_a_blob_fails_the_run_naming_the_cause_and_resume_completes() {
    let (inner, _d) = fs_store();
    let faults = Faults::new();
    faults.inject_call("blob put", 1, Fault::Fsync);
    let s = braid_runtime::run(bulky(), faults.wrap(inner.clone()), opts()).await.unwrap();
    assert_eq!(s.status, RunStatus::Failed, "{s:?} after {} blob puts", faults.calls(Op::BlobPut));
    assert_eq!(faults.fired(), 1);
    let e = chain(&s);
    assert!(e.contains("artifact blobs") && e.contains("fsync") && e.contains("injected"), "{e}");
    let run = inner.records.get_run(&FlowName::new("bulky").unwrap(), s.run_id).await.unwrap().unwrap();
    assert_eq!((run.status, run.error.as_deref()), (RunStatus::Failed, Some(e.as_str())), "the record says why");
    let committed = committed_tasks_read_back(&inner, &s).await;
    resume_completes(&inner, &s, committed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_while_writing_task_records_fails_the_run_and_resume_completes() {
    let (inner, _d) = fs_store();
    let faults = Faults::new();
    // The first call: under load the writer batches more, and a run may make only one.
    faults.inject_call("task records", 1, Fault::DiskFull);
    let s = braid_runtime::run(bulky(), faults.wrap(inner.clone()), opts()).await.unwrap();
    assert_eq!(s.status, RunStatus::Failed, "{s:?}");
    let e = chain(&s);
    assert!(e.contains("task records") && e.contains("no space left on device"), "{e}");
    let committed = committed_tasks_read_back(&inner, &s).await;
    resume_completes(&inner, &s, committed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_io_error_on_the_first_blob_put_fails_the_run_before_any_branch_commits() {
    let (inner, _d) = fs_store();
    let faults = Faults::new();
    faults.inject(Op::BlobPut, 1, Fault::Io);
    let s = braid_runtime::run(bulky(), faults.wrap(inner.clone()), opts()).await.unwrap();
    assert_eq!(s.status, RunStatus::Failed, "{s:?}");
    assert!(chain(&s).contains("injected I/O error"), "{}", chain(&s));
    resume_completes(&inner, &s, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_read_fails_the_attempt_that_read_it_naming_the_blob() {
    let (inner, _d) = fs_store();
    let first = braid_runtime::run(bulky(), inner.clone(), opts()).await.unwrap();
    assert_ok(&first);
    // Re-run the join; its reads of the 40 branch values are the last blob reads of such
    // a run (count them once without a fault), and the first of them comes back short.
    let from = Some(braid_core::StepName::new("join").unwrap());
    let o = RunOptions { resume: Some(Resume { origin: Some(first.run_id), from, force: false }), ..opts() };
    let counting = Faults::new();
    assert_ok(&braid_runtime::run(bulky(), counting.wrap(inner.clone()), o.clone()).await.unwrap());
    let reads = counting.calls(Op::BlobRead);
    assert!(reads >= 40, "{reads}");
    let faults = Faults::new();
    faults.inject(Op::BlobRead, reads - 39, Fault::ShortRead);
    let s = braid_runtime::run(bulky(), faults.wrap(inner.clone()), o).await.unwrap();
    assert_eq!(s.status, RunStatus::Failed, "{s:?}");
    assert_eq!(faults.fired(), 1);
    let e = chain(&s);
    assert!(e.contains("join") && e.contains("truncated or altered") && e.contains("short read"), "{e}");
    let join = only_task(&inner, "bulky", s.run_id, "join").await;
    assert_eq!(join.status, TaskStatus::Failed, "the attempt that read it failed");
    // Nothing stored was damaged: the same resume without the fault completes.
    resume_completes(&inner, &s, 40).await;
}

/// `data_sync(site_id)`: one step.
fn data_sync() -> Arc<Flow> {
    Arc::new(
        Flow::builder("data_sync")
            .param(braid_runtime::Param::new("site_id", braid_runtime::ParamType::String))
            .step("start", |ctx| async move {
                let site: String = ctx.param("site_id")?;
                ctx.set("site", &site)?;
                Ok(())
            })
            .next("end")
            .step("end", |_| async { Ok(()) })
            .end()
            .build()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_pass_that_cannot_write_fails_naming_the_cause_and_the_next_launches_each_tick_once() {
    use braid_runtime::plan::{LaunchEnv, LaunchPlan, ManualClock, Scheduler, SchedulerOptions, register_plans_at};
    let (inner, _d) = fs_store();
    let flows = vec![data_sync()];
    let start: jiff::Timestamp = "2026-03-02T13:30:00Z".parse().unwrap();
    let plan = LaunchPlan::builder("hourly", "data_sync")
        .cron("0 * * * *", "UTC")
        .matrix("site_id", ["a", "b", "c"])
        .build()
        .unwrap();
    register_plans_at(&inner, &flows, vec![plan], "test", braid_core::Timestamp::from_jiff(start)).await.unwrap();

    for (call, fault) in
        [("launch claims", Fault::DiskFull), ("plan cursors", Fault::Fsync), ("launch record", Fault::Io)]
    {
        let faults = Faults::new();
        faults.inject_call(call, 1, fault);
        let clock = Arc::new(ManualClock::new(start));
        let env = LaunchEnv::new(faults.wrap(inner.clone()), flows.clone()).with_clock(clock.clone());
        let s = Scheduler::new(&env, SchedulerOptions::default());
        let hour: u32 = match call {
            "launch claims" => 14,
            "plan cursors" => 15,
            _ => 16,
        };
        clock.set(format!("2026-03-02T{hour}:00:01Z").parse().unwrap());
        let first = s.pass().await;
        if call == "launch record" {
            // A launch record that cannot be written while a run starts leaves that launch
            // pending in this scheduler's queue; the pass itself goes on.
            assert!(first.is_ok(), "{call}: {first:?}");
        } else {
            // The pass stops at the failed write and says which and why.
            let e = first.unwrap_err();
            let text = format!("{e}: {:?}", std::error::Error::source(&e).map(ToString::to_string));
            assert!(text.contains("injected"), "{call}: {text}");
        }
        s.drain().await.unwrap();
        // The next pass (the fault fired once) launches what the tick asked for, once.
        s.pass().await.unwrap();
        s.drain().await.unwrap();
        assert_eq!(faults.fired(), 1, "{call}");
    }
    let runs = inner
        .records
        .list_runs(&FlowName::new("data_sync").unwrap(), &braid_store::RunQuery { limit: 1000, ..Default::default() })
        .await
        .unwrap()
        .items;
    let mut names: Vec<(String, String)> =
        runs.iter().map(|r| (r.meta["tick"].as_str().unwrap().to_owned(), r.name.clone().unwrap())).collect();
    names.sort();
    let expect: Vec<(String, String)> = [14, 15, 16]
        .iter()
        .flat_map(|h| ["a", "b", "c"].map(|s| (format!("2026-03-02T{h}:00:00Z"), format!("hourly_{s}"))))
        .collect();
    assert_eq!(names, expect, "each (tick, set) launched exactly once");
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded || r.status == RunStatus::Failed));
}
