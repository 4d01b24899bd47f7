//! `fs::check` (behind `braid verify`) and a clean close of the fs backend: every row a
//! store writes carries a checksum that checks out, a byte flipped inside a row's
//! payload is named with its record and file, the WAL is folded back on close, and
//! space freed by deleting runs goes back to the file system.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use braid_core::{
    ArtifactName, Attempt, FlowName, Progress, RunId, StepName, Tag, TaskId, TaskStatus, Timestamp, codec,
};
use braid_store::{
    ArtifactRecord, AttemptRecord, ElementsRef, FlowRecord, ForeachFrame, LogLine, RunRecord, Store, TaskError,
    TaskKey, TaskRecord, TaskWrite,
};

fn flow() -> FlowName {
    FlowName::new("verify").unwrap()
}

async fn artifact(store: &Store, name: &str, value: &str, inline: bool) -> ArtifactRecord {
    let enc = codec::encode(&value).unwrap();
    let key = BlobKey::of(&enc.bytes);
    let inline = inline.then(|| enc.bytes.clone());
    if inline.is_none() {
        store.blobs.put(enc.bytes.clone()).await.unwrap();
    }
    ArtifactRecord {
        name: ArtifactName::new(name).unwrap(),
        key,
        type_name: enc.type_name,
        size: enc.bytes.len() as u64,
        preview: enc.preview,
        elements: None,
        inline,
    }
}

use braid_store::BlobKey;

/// Writes one of every kind of row, with every optional field set somewhere; returns
/// the run and how many summed rows were written.
async fn fill(store: &Store, marker: &str) -> (RunRecord, u64) {
    store
        .records
        .put_flow(FlowRecord { name: flow(), spec: serde_json::json!({"steps": []}), updated_at: Timestamp::now() })
        .await
        .unwrap();
    let mut run = RunRecord::new(flow(), RunId::generate());
    run.params.insert("n".into(), serde_json::json!(3));
    run.name = Some("named".into());
    run.meta.insert("host".into(), serde_json::json!("h"));
    store.records.create_run(&run).await.unwrap();
    let mut run = store.records.get_run(&flow(), run.id).await.unwrap().unwrap();
    run.status = braid_core::RunStatus::Failed;
    run.started_at = Some(Timestamp::now());
    run.ended_at = Some(Timestamp::now());
    run.error = Some("it broke".into());
    run.origin_run = Some(RunId::generate());
    let run = store.records.update_run(&run).await.unwrap();
    let run = store.records.update_tags(&flow(), run.id, &[Tag::new("keep").unwrap()], &[]).await.unwrap();

    let mut start =
        TaskRecord::new(TaskKey { flow: flow(), run: run.id, step: StepName::new("start").unwrap(), task: TaskId(1) });
    start.status = TaskStatus::Succeeded;
    start.started_at = Some(Timestamp::now());
    start.ended_at = Some(Timestamp::now());
    start.progress = Some(Progress { percent: 37.5, message: "going".into(), ..Default::default() });
    start.progress_at = Some(Timestamp::now());
    start.lease_deadline = Some(Timestamp::now());
    start.error = Some(TaskError { kind: "error".into(), message: "caught".into() });
    start.origin = Some((RunId::generate(), TaskId(9)));
    let mut work =
        TaskRecord::new(TaskKey { flow: flow(), run: run.id, step: StepName::new("work").unwrap(), task: TaskId(2) });
    work.parent = Some(TaskId(1));
    work.iteration = 2;
    work.progress = Some(Progress { percent: 100.0, message: String::new(), ..Default::default() });
    work.foreach_stack = vec![ForeachFrame {
        step: StepName::new("start").unwrap(),
        task: TaskId(1),
        over: ArtifactName::new("items").unwrap(),
        index: 0,
        len: 1,
    }];
    let mut big = artifact(store, "big", &"x".repeat(50_000), false).await;
    big.elements = Some(ElementsRef { key: store.blobs.put(vec![1u8; 40_000]).await.unwrap(), len: 1 });
    let arts =
        vec![artifact(store, "note", marker, true).await, big, artifact(store, "mid", &"m".repeat(5000), false).await];
    let attempt = AttemptRecord {
        attempt: Attempt::FIRST,
        status: TaskStatus::Failed,
        started_at: Timestamp::now(),
        ended_at: Some(Timestamp::now()),
        error: Some(TaskError { kind: "panic".into(), message: "boom".into() }),
    };
    let writes = vec![
        TaskWrite { artifacts: Some(arts), attempt: Some(attempt), ..TaskWrite::new(start) },
        TaskWrite::new(work.clone()),
    ];
    store.records.write_tasks(writes).await.unwrap();
    // A second write of a task replaces its row (revision 2, its sum computed then).
    work.status = TaskStatus::Succeeded;
    let out = store.records.write_tasks(vec![TaskWrite::new(work)]).await.unwrap();
    assert!(matches!(out[..], [braid_store::WriteOutcome::Applied { revision: 2 }]), "{out:?}");
    let line = |task| LogLine {
        run: run.id,
        task: TaskId(task),
        attempt: Attempt::FIRST,
        seq: 0,
        at: Timestamp::now(),
        level: "INFO".into(),
        line: "a log line".into(),
    };
    store.records.append_logs(vec![line(1), line(1), line(2)]).await.unwrap();
    // flow + run + 2 tasks + 1 attempt + 3 artifacts + 3 log lines
    (run, 11)
}

fn wal_len(root: &Path) -> u64 {
    std::fs::metadata(root.join("records.sqlite-wal")).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test]
async fn every_row_written_carries_a_checksum_that_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let store = Store::open_fs(&root).unwrap();
    let (_, rows) = fill(&store, "all good").await;
    let report = braid_store::fs::check(&root).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.rows_unchecked, 0);
    assert_eq!(report.rows_checked, rows);
    assert_eq!(report.blobs_checked, 3, "two blob files and one inline blob row");
}

#[tokio::test]
async fn a_byte_flipped_inside_a_row_is_named_with_its_record_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let store = Store::open_fs(&root).unwrap();
    let (run, _) = fill(&store, "needle-in-the-preview").await;
    drop(store);
    assert_eq!(wal_len(&root), 0, "a closed store is its database file alone");

    let db = root.join("records.sqlite");
    let mut bytes = std::fs::read(&db).unwrap();
    let needle = b"needle-in-the-preview";
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the preview is in the database file");
    // Still valid text, same length: every structural check passes, the value is wrong.
    bytes[at] = b'N';
    std::fs::write(&db, &bytes).unwrap();

    let report = braid_store::fs::check(&root).await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let p = &report.problems[0];
    assert_eq!(p.path, db.display().to_string());
    assert!(
        p.what.contains(&format!("artifact note of task {}/1", run.id)) && p.what.contains("checksum"),
        "{}",
        p.what
    );
}

#[tokio::test]
async fn rows_written_before_checksums_are_unchecked_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let store = Store::open_fs(&root).unwrap();
    fill(&store, "old rows").await;
    drop(store);
    // What an older braid's rows look like: no checksum.
    let conn = rusqlite::Connection::open(root.join("records.sqlite")).unwrap();
    conn.execute_batch("UPDATE tasks SET row_sum = NULL; UPDATE logs SET row_sum = NULL;").unwrap();
    drop(conn);
    let report = braid_store::fs::check(&root).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.rows_unchecked, report.rows_checked), (5, 6));
}

#[tokio::test]
async fn space_of_deleted_runs_goes_back_to_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let store = Store::open_fs(&root).unwrap();
    let mut runs = Vec::new();
    for _ in 0..30 {
        let run = RunRecord::new(flow(), RunId::generate());
        store.records.create_run(&run).await.unwrap();
        let mut writes = Vec::new();
        let mut lines = Vec::new();
        for t in 1..=100u64 {
            let key = TaskKey { flow: flow(), run: run.id, step: StepName::new("work").unwrap(), task: TaskId(t) };
            writes.push(TaskWrite::new(TaskRecord::new(key)));
            lines.push(LogLine {
                run: run.id,
                task: TaskId(t),
                attempt: Attempt::FIRST,
                seq: 0,
                at: Timestamp::now(),
                level: "INFO".into(),
                line: format!("{t} {}", "padding ".repeat(20)),
            });
        }
        store.records.write_tasks(writes).await.unwrap();
        store.records.append_logs(lines).await.unwrap();
        runs.push(store.records.get_run(&flow(), run.id).await.unwrap().unwrap());
    }
    drop(store);
    let size = || std::fs::metadata(root.join("records.sqlite")).unwrap().len() + wal_len(&root);
    let full = size();
    let store = Store::open_fs(&root).unwrap();
    for r in &runs[1..] {
        store.records.delete_run(&flow(), r.id, r.revision).await.unwrap();
    }
    let given_back = store.records.compact().await.unwrap().expect("a new database can give pages back");
    drop(store);
    let after = size();
    assert!(given_back > full / 2, "gave back {given_back} of {full} bytes");
    assert!(after < full / 3, "{full} -> {after} bytes");
    let report = braid_store::fs::check(&root).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
