//! Format 3 of the fs store: a task written succeeded in its first write, with the one
//! attempt its row describes, keeps no attempt row; `list_attempts` reads that attempt
//! back from the task's row. Everything else keeps its attempt rows as before.

#![allow(clippy::unwrap_used)]

use braid_core::{Attempt, FlowName, RunId, StepName, TaskId, TaskStatus, Timestamp};
use braid_store::{AttemptRecord, Precondition, RunRecord, Store, TaskError, TaskKey, TaskRecord, TaskWrite};

fn flow() -> FlowName {
    FlowName::new("implied").unwrap()
}

async fn store_with_run() -> (Store, RunId, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path().join("store")).unwrap();
    let run = RunId::generate();
    store.records.create_run(&RunRecord::new(flow(), run)).await.unwrap();
    (store, run, dir)
}

fn succeeded(run: RunId, task: u64) -> (TaskRecord, AttemptRecord) {
    let mut t =
        TaskRecord::new(TaskKey { flow: flow(), run, step: StepName::new("work").unwrap(), task: TaskId(task) });
    let started = Timestamp::now();
    let ended = Timestamp::from_micros(started.as_micros() + 40);
    t.status = TaskStatus::Succeeded;
    t.started_at = Some(started);
    t.ended_at = Some(ended);
    let a = AttemptRecord {
        attempt: Attempt::FIRST,
        status: TaskStatus::Succeeded,
        started_at: started,
        ended_at: Some(ended),
        error: None,
    };
    (t, a)
}

fn attempt_rows(dir: &tempfile::TempDir, task: u64) -> i64 {
    let conn = rusqlite::Connection::open(dir.path().join("store/records.sqlite")).unwrap();
    conn.query_row("SELECT COUNT(*) FROM attempts WHERE task_id = ?1", [task as i64], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn a_task_written_succeeded_at_once_keeps_no_attempt_row_and_reads_its_attempt_back() {
    let (store, run, dir) = store_with_run().await;
    let (t, a) = succeeded(run, 1);
    store.records.write_tasks(vec![TaskWrite { attempt: Some(a.clone()), ..TaskWrite::new(t) }]).await.unwrap();
    assert_eq!(attempt_rows(&dir, 1), 0, "the row implies the attempt");
    assert_eq!(store.records.list_attempts(&flow(), run, TaskId(1)).await.unwrap(), vec![a]);
}

#[tokio::test]
async fn a_caught_failure_a_running_task_and_a_reused_task_keep_what_they_were() {
    let (store, run, dir) = store_with_run().await;
    // Caught: the task succeeded, its attempt failed.
    let (mut caught, mut a) = succeeded(run, 1);
    let e = TaskError { kind: "error".into(), message: "caught".into() };
    caught.error = Some(e.clone());
    a.status = TaskStatus::Failed;
    a.error = Some(e);
    // Running: the attempt has not ended.
    let (mut running, mut r) = succeeded(run, 2);
    running.status = TaskStatus::Running;
    running.ended_at = None;
    r.status = TaskStatus::Running;
    r.ended_at = None;
    // Reused from an origin run: no attempt of its own.
    let (mut reused, _) = succeeded(run, 3);
    reused.origin = Some((RunId::generate(), TaskId(3)));
    let writes = vec![
        TaskWrite { attempt: Some(a.clone()), ..TaskWrite::new(caught) },
        TaskWrite { attempt: Some(r.clone()), ..TaskWrite::new(running) },
        TaskWrite::new(reused),
    ];
    store.records.write_tasks(writes).await.unwrap();
    assert_eq!((attempt_rows(&dir, 1), attempt_rows(&dir, 2), attempt_rows(&dir, 3)), (1, 1, 0));
    assert_eq!(store.records.list_attempts(&flow(), run, TaskId(1)).await.unwrap(), vec![a]);
    assert_eq!(store.records.list_attempts(&flow(), run, TaskId(2)).await.unwrap(), vec![r]);
    assert!(
        store.records.list_attempts(&flow(), run, TaskId(3)).await.unwrap().is_empty(),
        "a reused task ran nothing"
    );
}

#[tokio::test]
async fn a_task_that_ran_then_succeeded_keeps_its_attempt_row() {
    let (store, run, dir) = store_with_run().await;
    let (t, a) = succeeded(run, 1);
    let mut start = t.clone();
    start.status = TaskStatus::Running;
    start.ended_at = None;
    let running = AttemptRecord { status: TaskStatus::Running, ended_at: None, ..a.clone() };
    store.records.write_tasks(vec![TaskWrite { attempt: Some(running), ..TaskWrite::new(start) }]).await.unwrap();
    let end = TaskWrite {
        attempt: Some(a.clone()),
        precondition: Precondition::Attempt(Attempt::FIRST),
        ..TaskWrite::new(t)
    };
    store.records.write_tasks(vec![end]).await.unwrap();
    assert_eq!(attempt_rows(&dir, 1), 1);
    assert_eq!(store.records.list_attempts(&flow(), run, TaskId(1)).await.unwrap(), vec![a]);
}

#[tokio::test]
async fn rewriting_a_succeeded_task_keeps_the_attempt_its_row_implied() {
    let (store, run, dir) = store_with_run().await;
    let (t, a) = succeeded(run, 1);
    store.records.write_tasks(vec![TaskWrite { attempt: Some(a.clone()), ..TaskWrite::new(t.clone()) }]).await.unwrap();
    let mut again = t;
    again.status = TaskStatus::Running;
    again.attempt = Attempt(2);
    again.ended_at = None;
    let second = AttemptRecord { attempt: Attempt(2), status: TaskStatus::Running, ended_at: None, ..a.clone() };
    store
        .records
        .write_tasks(vec![TaskWrite { attempt: Some(second.clone()), ..TaskWrite::new(again) }])
        .await
        .unwrap();
    assert_eq!(attempt_rows(&dir, 1), 2, "the implied attempt became a row before the task's row changed");
    assert_eq!(store.records.list_attempts(&flow(), run, TaskId(1)).await.unwrap(), vec![a, second]);
    drop(store);
    let report = braid_store::fs::check(&dir.path().join("store")).await.unwrap();
    assert!(report.problems.is_empty(), "the made row's checksum checks out: {:?}", report.problems);
}
