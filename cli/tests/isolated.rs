#![allow(clippy::unwrap_used)]
//! The `isolated` example as a user runs it: a flow binary (this test binary, started
//! again as one) whose isolated `work` step runs each attempt in a process of its own.
//! A branch that calls `std::process::abort()` on its first attempt fails only that
//! attempt; the retry succeeds and the run's total is right. A branch that allocates past
//! the step's memory limit fails saying so.

use std::process::Command;

use braid_client::{Client, RunStatus, TaskStatus};

mod braid_cmd;
mod child;
use braid_cmd::braid;

#[allow(dead_code)]
#[path = "../examples/isolated.rs"]
mod isolated_example;

#[test]
fn as_flow_binary() {
    child::serve(|| vec![isolated_example::isolated(), stopper(), catcher(), segfault()]);
}

/// An isolated step that always segfaults-by-abort, and catches it: the flow goes on
/// with the crash in `crash`.
fn catcher() -> braid_runtime::Result<braid_runtime::Flow> {
    braid_runtime::Flow::builder("catcher")
        .step_blocking("start", |_ctx| std::process::abort())
        .isolated()
        .catch("crash")
        .next("end")
        .step("end", |ctx| async move {
            let crash: braid_store::TaskError = ctx.get("crash").await?;
            ctx.set("kind", &crash.kind)?;
            Ok(())
        })
        .end()
        .build()
}

/// An isolated step whose process gets SIGSEGV, as from a bad pointer in a native
/// library. Sent with `kill` (safe Rust has no way to fault), twice: Rust's own SIGSEGV
/// handler (for stack overflows) takes the first, puts the default action back and
/// returns; a real fault then faults again at the same instruction, a `kill` does not.
fn segfault() -> braid_runtime::Result<braid_runtime::Flow> {
    braid_runtime::Flow::builder("segfault")
        .step_blocking("start", |ctx| {
            ctx.log("calling the native library");
            let pid = std::process::id().to_string();
            for _ in 0..2 {
                Command::new("kill").args(["-SEGV", &pid]).status()?;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            std::thread::sleep(std::time::Duration::from_secs(10));
            Ok(())
        })
        .isolated()
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

/// An isolated step whose first attempt stops its own process (SIGSTOP, as a debugger
/// or a partition would freeze it): no heartbeat comes, so the lease of 1 s expires,
/// the attempt is declared lost and its process killed; the retry succeeds.
fn stopper() -> braid_runtime::Result<braid_runtime::Flow> {
    braid_runtime::Flow::builder("stopper")
        .step_blocking("start", |ctx| {
            if ctx.attempt().0 == 1 {
                ctx.log("stopping myself");
                let pid = std::process::id().to_string();
                Command::new("kill").args(["-STOP", &pid]).status()?;
            }
            ctx.set("done", &true)?;
            Ok(())
        })
        .isolated()
        .lease(std::time::Duration::from_secs(1))
        .retries(1)
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

#[test]
fn an_isolated_step_that_aborts_fails_one_attempt_and_its_retry_succeeds_while_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = child::flow_binary(
        &store,
        &["run", "--quiet", "--flow", "isolated", "--param", "n=5", "--param", "crash_index=2"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");

    let client = Client::open(store.to_str().unwrap()).unwrap();
    let run = client.flow("isolated").unwrap().latest_run().unwrap();
    assert_eq!(run.status(), RunStatus::Succeeded);
    let join = client.task_at(&format!("isolated/{}/join", run.id())).unwrap();
    assert_eq!(join.data::<u64>("total").unwrap(), (0..5u64).map(|i| i * i).sum::<u64>());
    let work = run.step("work").unwrap();
    let crashed = work.task_by_index(2).unwrap();
    assert_eq!(crashed.status(), TaskStatus::Succeeded);
    assert_eq!(crashed.attempt().0, 2);
    let attempts = crashed.attempts().unwrap();
    let first = attempts[0].error.as_ref().unwrap();
    assert_eq!(first.kind, "crash");
    assert!(first.message.contains("signal 6 (SIGABRT"), "{}", first.message);
    // Its log keeps what it said before it crashed, and each attempt ran in its own process.
    let logs: Vec<String> = crashed.logs().unwrap().into_iter().map(|l| l.line).collect();
    assert!(logs.iter().any(|l| l == "about to abort, as a native library might"), "{logs:?}");
    let pids: Vec<&str> =
        logs.iter().filter(|l| l.starts_with("item 2,")).filter_map(|l| l.split("process ").nth(1)).collect();
    assert_eq!(pids.len(), 2, "{logs:?}");
    assert_ne!(pids[0], pids[1]);
    assert!(!pids.contains(&std::process::id().to_string().as_str()));
    for i in [0u64, 1, 3, 4] {
        let t = work.task_by_index(i).unwrap();
        assert_eq!((t.status(), t.attempt().0), (TaskStatus::Succeeded, 1), "branch {i}");
    }
    // `braid show` names the signal on the attempt.
    let text = braid(&store, &["show", &crashed.pathspec()]);
    assert!(text.contains("crash: the step's process was killed by signal 6 (SIGABRT, aborted)"), "{text}");
}

#[test]
fn an_isolated_attempt_past_its_memory_limit_fails_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = child::flow_binary(
        &store,
        &[
            "run",
            "--quiet",
            "--flow",
            "isolated",
            "--param",
            "n=2",
            "--param",
            "crash_index=99",
            "--param",
            "hog_mib=2048",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("memory_limit: the attempt exceeded its memory limit of 536870912 bytes (512 MiB)"), "{err}");
    let client = Client::open(store.to_str().unwrap()).unwrap();
    let run = client.flow("isolated").unwrap().latest_run().unwrap();
    assert_eq!(run.status(), RunStatus::Failed);
    let hog = run.step("work").unwrap().task_by_index(0).unwrap();
    assert_eq!(hog.status(), TaskStatus::Failed);
    assert_eq!(hog.attempts().unwrap().len(), 2, "the retry ran, and failed the same way");
    assert_eq!(hog.error().unwrap().kind, "memory_limit");
}

#[test]
fn a_stopped_isolated_attempt_is_declared_lost_when_its_lease_expires_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = child::flow_binary(&store, &["run", "--quiet", "--flow", "stopper"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let client = Client::open(store.to_str().unwrap()).unwrap();
    let start = client.task_at("stopper/latest/start").unwrap();
    assert_eq!((start.status(), start.attempt().0), (TaskStatus::Succeeded, 2));
    let attempts = start.attempts().unwrap();
    assert_eq!(attempts[0].status, TaskStatus::Lost);
    assert!(attempts[0].error.as_ref().unwrap().message.contains("lease expired"), "{attempts:?}");
    assert!(start.data::<bool>("done").unwrap());
}

#[test]
fn an_isolated_crash_is_caught_like_any_failure() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = child::flow_binary(&store, &["run", "--quiet", "--flow", "catcher"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let client = Client::open(store.to_str().unwrap()).unwrap();
    let start = client.task_at("catcher/latest/start").unwrap();
    assert_eq!(start.status(), TaskStatus::Succeeded);
    assert!(start.caught().unwrap().error.message.contains("SIGABRT"));
    assert_eq!(client.task_at("catcher/latest/end").unwrap().data::<String>("kind").unwrap(), "crash");
}

#[test]
fn isolated_attempts_run_against_postgres_and_s3_as_against_a_directory() {
    let (Some(pg), Some(s3)) = (braid_store::test_servers::postgres(), braid_store::test_servers::s3()) else {
        return;
    };
    let (db, bucket) = (pg.fresh_database(), s3.fresh_bucket());
    let args = [
        "flowbin", "--store", &db, "--blobs", &bucket, "run", "--on", "process", "--quiet", "--flow", "isolated",
        "--param", "n=3",
    ];
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["as_flow_binary", "--exact", "--nocapture", "--test-threads=1", "--quiet"])
        .env(child::CHILD_ARGS, serde_json::to_string(&args).unwrap())
        .envs(s3.env())
        .env_remove("BRAID_STORE")
        .env_remove("BRAID_BLOBS")
        .output()
        .unwrap();
    let braid_pg = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_braid"))
            .args(["--store", &db, "--blobs", &bucket])
            .args(args)
            .envs(s3.env())
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    assert!(
        out.status.success(),
        "{}\nthe first branch's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        braid_pg(&["logs", "isolated/latest/work/2"])
    );
    let show = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["--store", &db, "--blobs", &bucket, "show", "isolated/latest/work", "--json"])
        .envs(s3.env())
        .output()
        .unwrap();
    assert!(show.status.success(), "{}", String::from_utf8_lossy(&show.stderr));
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let attempts: Vec<u64> = v["tasks"].as_array().unwrap().iter().map(|t| t["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [1, 2, 1], "branch 1 crashed once and its retry succeeded: {v}");
    let join = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["--store", &db, "--blobs", &bucket, "show", "isolated/latest/join", "--json"])
        .envs(s3.env())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&join.stdout).contains("succeeded"), "{}", String::from_utf8_lossy(&join.stdout));
}

#[test]
fn a_segfault_in_an_isolated_step_fails_the_task_naming_it_and_keeps_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = child::flow_binary(&store, &["run", "--quiet", "--flow", "segfault"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the run failed, the flow binary did not crash: {err}");
    assert!(err.contains("killed by signal 11 (SIGSEGV, segmentation fault)"), "{err}");
    let client = Client::open(store.to_str().unwrap()).unwrap();
    let start = client.task_at("segfault/latest/start").unwrap();
    assert_eq!(start.status(), TaskStatus::Failed);
    assert_eq!(start.error().unwrap().kind, "crash");
    let logs: Vec<String> = start.logs().unwrap().into_iter().map(|l| l.line).collect();
    assert!(logs.iter().any(|l| l == "calling the native library"), "{logs:?}");
}
