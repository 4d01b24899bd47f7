//! Crash and corruption cases of the fs backend: each is detected and reported with the
//! file concerned, and nothing else is lost. Also several processes on one store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use braid_core::{ArtifactName, FlowName, RunId, StepName, TaskId, TaskStatus, codec};
use braid_store::{ArtifactRecord, BlobKey, Error, RunRecord, Store, TaskKey, TaskQuery, TaskRecord, TaskWrite};

fn blob_file(root: &Path, key: &BlobKey) -> PathBuf {
    let hex = key.to_hex();
    root.join("blobs").join(&hex[..2]).join(hex)
}

fn big(seed: u8) -> Vec<u8> {
    (0..200_000u32).map(|i| (i as u8).wrapping_mul(seed)).collect()
}

#[tokio::test]
async fn truncated_and_flipped_blob_files_are_reported_and_confined() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let store = Store::open_fs(&root).unwrap();
    let good = store.blobs.put(big(3)).await.unwrap();
    let cut = store.blobs.put(big(5)).await.unwrap();
    let flipped = store.blobs.put(big(7)).await.unwrap();
    let small = store.blobs.put(b"small inline value".to_vec()).await.unwrap();

    let path = blob_file(&root, &cut);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(1000).unwrap();
    let path2 = blob_file(&root, &flipped);
    let mut bytes = std::fs::read(&path2).unwrap();
    bytes[12345] ^= 0x40;
    std::fs::write(&path2, bytes).unwrap();

    for (key, path) in [(cut, &path), (flipped, &path2)] {
        let e = store.blobs.get(&key).await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "names the file: {e}");
        // Streaming reads fail at the end instead of returning bad bytes silently.
        let mut r = store.blobs.get_stream(&key).await.unwrap();
        let mut sink = Vec::new();
        let err = tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink).await.unwrap_err();
        assert!(err.to_string().contains("corrupted blob"), "{err}");
    }
    assert_eq!(store.blobs.get(&good).await.unwrap(), big(3));
    assert_eq!(store.blobs.get(&small).await.unwrap(), b"small inline value");

    let problems = braid_store::fs::verify(&root).await.unwrap();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&path.display().to_string().as_str()), "{problems:?}");
    assert!(paths.contains(&path2.display().to_string().as_str()), "{problems:?}");
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[tokio::test]
async fn leftover_temp_files_never_surface_and_old_ones_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let store = Store::open_fs(&root).unwrap();
    let key = store.blobs.put(big(9)).await.unwrap();
    // A writer died mid-blob: half a file in tmp/.
    let fresh = root.join("tmp").join("999-1-dead.tmp");
    std::fs::write(&fresh, &big(9)[..1000]).unwrap();
    let old = root.join("tmp").join("999-2-dead.tmp");
    std::fs::write(&old, b"partial").unwrap();
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(7200)).unwrap();
    drop(f);

    assert_eq!(store.blobs.get(&key).await.unwrap(), big(9));
    let problems = braid_store::fs::verify(&root).await.unwrap();
    assert!(
        problems.iter().any(|p| p.path.ends_with("999-1-dead.tmp") && p.what.contains("temp file")),
        "{problems:?}"
    );
    drop(store);
    // Opening again removes the hour-old leftover, keeps the fresh one (its writer may be alive).
    let _store = Store::open_fs(&root).unwrap();
    assert!(!old.exists());
    assert!(fresh.exists());
}

#[tokio::test]
async fn corrupted_inline_blob_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let store = Store::open_fs(&root).unwrap();
    let key = store.blobs.put(b"hello".to_vec()).await.unwrap();
    let other = store.blobs.put(b"world".to_vec()).await.unwrap();
    drop(store);
    let conn = alter_inline_blob(&root, &key);
    assert!(conn);
    let store = Store::open_fs(&root).unwrap();
    let e = store.blobs.get(&key).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains("records.sqlite"), "{e}");
    assert_eq!(store.blobs.get(&other).await.unwrap(), b"world");
}

/// Alters an inline blob's bytes behind the store's back, as a disk fault would.
fn alter_inline_blob(root: &Path, key: &BlobKey) -> bool {
    let conn = rusqlite::Connection::open(root.join("records.sqlite")).unwrap();
    conn.execute("UPDATE blobs SET data = ?1 WHERE blob_key = ?2", rusqlite::params![b"jello".to_vec(), &key.0[..]])
        .unwrap()
        == 1
}

#[tokio::test]
async fn format_file_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    drop(Store::open_fs(&root).unwrap());
    assert_eq!(std::fs::read_to_string(root.join("FORMAT")).unwrap(), "braid-store 1\n");
    std::fs::write(root.join("FORMAT"), "braid-store 99\n").unwrap();
    let e = Store::open_fs(&root).unwrap_err();
    assert!(matches!(e, Error::UnsupportedFormat { found: 99, .. }), "{e}");
    assert!(e.to_string().contains("upgrade braid"), "{e}");
    std::fs::write(root.join("FORMAT"), "garbage").unwrap();
    let e = Store::open_fs(&root).unwrap_err();
    assert!(e.to_string().contains("FORMAT") && e.to_string().contains("garbage"), "{e}");
}

#[tokio::test]
async fn truncated_database_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    {
        let store = Store::open_fs(&root).unwrap();
        store.records.create_run(&RunRecord::new(FlowName::new("f").unwrap(), RunId::generate())).await.unwrap();
    }
    let db = root.join("records.sqlite");
    std::fs::write(&db, b"this is not a database at all, it was overwritten").unwrap();
    let _ = std::fs::remove_file(root.join("records.sqlite-wal"));
    let _ = std::fs::remove_file(root.join("records.sqlite-shm"));
    let e = Store::open_fs(&root).unwrap_err();
    assert!(e.to_string().contains("records.sqlite"), "{e}");
}

// ---- several processes, and kill -9 -------------------------------------------------

const CHILD_ENV: &str = "BRAID_STORE_TEST_CHILD";

fn flow() -> FlowName {
    FlowName::new("procs").unwrap()
}

/// Writes tasks with one artifact each, forever or until `count`.
async fn child_writer(root: &str, run: RunId, count: u64) {
    let store = Store::open_fs(root).unwrap();
    let mut t = 0;
    while count == 0 || t < count {
        let mut writes = Vec::new();
        for _ in 0..50 {
            t += 1;
            let enc = codec::encode(&t).unwrap();
            let size = enc.bytes.len() as u64;
            let key = store.blobs.put(enc.bytes).await.unwrap();
            let mut rec =
                TaskRecord::new(TaskKey { flow: flow(), run, step: StepName::new("work").unwrap(), task: TaskId(t) });
            rec.status = TaskStatus::Succeeded;
            let art = ArtifactRecord {
                name: ArtifactName::new("out").unwrap(),
                key,
                type_name: enc.type_name,
                size,
                preview: enc.preview,
                elements: None,
                inline: None,
            };
            writes.push(TaskWrite { artifacts: Some(vec![art]), ..TaskWrite::new(rec) });
        }
        for o in store.records.write_tasks(writes).await.unwrap() {
            assert!(o.is_applied());
        }
    }
}

/// Entry point of the child processes; does nothing in a normal test run.
#[tokio::test]
async fn child_process_entry() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split('|');
    let root = parts.next().unwrap().to_owned();
    let run = RunId::parse(parts.next().unwrap()).unwrap();
    let count: u64 = parts.next().unwrap().parse().unwrap();
    child_writer(&root, run, count).await;
}

fn spawn_child(root: &Path, run: RunId, count: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_process_entry", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, format!("{}|{run}|{count}", root.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn check_run_consistent(store: &Store, run: RunId) -> usize {
    let mut n = 0;
    let mut q = TaskQuery { limit: 5000, ..Default::default() };
    loop {
        let page = store.records.list_tasks(&flow(), run, &q).await.unwrap();
        for t in &page.items {
            let arts = store.records.task_artifacts(&flow(), run, t.key.task).await.unwrap();
            assert_eq!(arts.len(), 1, "task {} has its artifact", t.key.task);
            let v: u64 = codec::decode(&store.blobs.get(&arts[0].key).await.unwrap()).unwrap();
            assert_eq!(v, t.key.task.0);
            n += 1;
        }
        match page.next {
            Some(c) => q.after = Some(c),
            None => return n,
        }
    }
}

#[tokio::test]
async fn two_processes_write_one_store_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    drop(Store::open_fs(&root).unwrap());
    let (r1, r2) = (RunId::generate(), RunId::generate());
    let mut a = spawn_child(&root, r1, 2000);
    let mut b = spawn_child(&root, r2, 2000);
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let store = Store::open_fs(&root).unwrap();
    assert_eq!(check_run_consistent(&store, r1).await, 2000);
    assert_eq!(check_run_consistent(&store, r2).await, 2000);
}

#[tokio::test]
async fn kill_9_mid_write_leaves_a_readable_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    drop(Store::open_fs(&root).unwrap());
    let run = RunId::generate();
    let mut child = spawn_child(&root, run, 0);
    // Let it write for a while, then kill it without warning.
    let store = Store::open_fs(&root).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = store
            .records
            .list_tasks(&flow(), run, &TaskQuery { limit: 1, after: Some("500".into()), ..Default::default() })
            .await
            .unwrap();
        if !page.items.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(store);
    let store = Store::open_fs(&root).unwrap();
    let n = check_run_consistent(&store, run).await;
    assert!(n > 500, "wrote {n} tasks before the kill");
    assert_eq!(n % 50, 0, "batches commit whole or not at all");
    let problems = braid_store::fs::verify(&root).await.unwrap();
    assert!(problems.iter().all(|p| p.what.contains("temp file")), "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_schema_version_1_opens_and_gains_run_leases() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let flow = FlowName::new("old").unwrap();
    let id = RunId::generate();
    {
        let store = Store::open_fs(&root).unwrap();
        store.records.create_run(&RunRecord::new(flow.clone(), id)).await.unwrap();
    }
    // Make it a version-1 database: the runs table as it was before leases.
    {
        let conn = rusqlite::Connection::open(root.join("records.sqlite")).unwrap();
        for c in ["lease_holder", "lease_renewed", "lease_deadline"] {
            conn.execute_batch(&format!("ALTER TABLE runs DROP COLUMN {c}")).unwrap();
        }
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
    }
    let store = Store::open_fs(&root).unwrap();
    let old = store.records.get_run(&flow, id).await.unwrap().unwrap();
    assert_eq!(old.lease, None, "an old run has no lease, and reads as it was stored");
    let mut new = RunRecord::new(flow.clone(), RunId::generate());
    new.lease = Some(braid_store::RunLease::new("run@h:1", Duration::from_secs(5)));
    store.records.create_run(&new).await.unwrap();
    assert_eq!(store.records.get_run(&flow, new.id).await.unwrap().unwrap().lease, new.lease);
    let conn = rusqlite::Connection::open(root.join("records.sqlite")).unwrap();
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 3, "upgraded to the current format");
}
