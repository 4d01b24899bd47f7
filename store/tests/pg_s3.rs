#![allow(clippy::unwrap_used)]
//! What the PostgreSQL and S3 backends need beyond the shared suite: two store handles
//! on one database (two machines) racing, a server restart ridden out, schema migrations, a corrupted object named
//! by its key, and bad locations refused with what is wrong. Against this process's
//! throwaway servers (`braid_store::test_servers`); a machine without them prints one
//! `skipped:` line and passes.

use std::sync::Arc;

use braid_core::{Attempt, FlowName, RunId, RunStatus, TaskId};
use braid_store::conformance::pg_s3_store;
use braid_store::test_servers;
use braid_store::*;

fn flow() -> FlowName {
    FlowName::new("race").unwrap()
}

/// Two handles on one fresh database and bucket, as two machines would have.
async fn two_machines() -> Option<(Store, Store)> {
    let pg = test_servers::postgres()?;
    let s3 = test_servers::s3()?;
    let (db, bucket) = (pg.fresh_database(), s3.fresh_bucket());
    Some((pg_s3_store(&db, &bucket).await, pg_s3_store(&db, &bucket).await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_machines_racing_on_one_claim_precondition_and_revision_have_one_winner_each() {
    let Some((a, b)) = two_machines().await else { return };
    let run = RunRecord::new(flow(), RunId::generate());
    a.records.create_run(&run).await.unwrap();
    assert!(b.records.create_run(&run).await.unwrap_err().is_conflict(), "the other machine sees the run");

    for round in 0..10 {
        // The same claim from both machines, many times over: one holder.
        let key = format!("tick-{round}");
        let (x, y) = tokio::join!(a.records.try_claim("race", &key, "a"), b.records.try_claim("race", &key, "b"));
        assert!(x.unwrap() ^ y.unwrap(), "exactly one machine wins claim {key}");

        // The same new task, created if absent by both.
        let rec = TaskRecord::new(TaskKey {
            flow: flow(),
            run: run.id,
            step: braid_core::StepName::new("s").unwrap(),
            task: TaskId(round),
        });
        let absent = |r: TaskRecord| TaskWrite { precondition: Precondition::Absent, ..TaskWrite::new(r) };
        let (x, y) = tokio::join!(
            a.records.write_tasks(vec![absent(rec.clone())]),
            b.records.write_tasks(vec![absent(rec.clone())])
        );
        let (x, y) = (x.unwrap().remove(0), y.unwrap().remove(0));
        assert!(x.is_applied() ^ y.is_applied(), "one creation applies: {x:?} {y:?}");

        // Both take over revision 1 with a new attempt: one wins, the other is told why.
        let over = |attempt| {
            let mut r = rec.clone();
            r.attempt = Attempt(attempt);
            TaskWrite { precondition: Precondition::Revision(1), ..TaskWrite::new(r) }
        };
        let (x, y) = tokio::join!(a.records.write_tasks(vec![over(2)]), b.records.write_tasks(vec![over(3)]));
        let (x, y) = (x.unwrap().remove(0), y.unwrap().remove(0));
        assert!(x.is_applied() ^ y.is_applied(), "one takeover applies: {x:?} {y:?}");
        let loser = if x.is_applied() { y } else { x };
        assert!(
            matches!(
                loser,
                WriteOutcome::Rejected { reason: Rejection::RevisionMismatch { expected: 1, stored: 2, .. } }
            ),
            "{loser:?}"
        );
    }

    // A run updated from both machines at the same revision: one update lands.
    let stored = a.records.get_run(&flow(), run.id).await.unwrap().unwrap();
    let mut mine = stored.clone();
    mine.status = RunStatus::Running;
    let mut theirs = stored;
    theirs.status = RunStatus::Failed;
    let (x, y) = tokio::join!(a.records.update_run(&mine), b.records.update_run(&theirs));
    assert!(x.is_ok() ^ y.is_ok(), "{x:?} {y:?}");
    let e = if let Err(e) = x { e } else { y.unwrap_err() };
    assert!(e.is_conflict(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_on_many_handles_keep_every_batch_whole() {
    let Some(pg) = test_servers::postgres() else { return };
    let Some(s3) = test_servers::s3() else { return };
    let (db, bucket) = (pg.fresh_database(), s3.fresh_bucket());
    let run = RunRecord::new(flow(), RunId::generate());
    let first = pg_s3_store(&db, &bucket).await;
    first.records.create_run(&run).await.unwrap();
    let mut handles = Vec::new();
    for w in 0..4u64 {
        let store = Arc::new(pg_s3_store(&db, &bucket).await);
        handles.push(tokio::spawn(async move {
            // Overlapping batches: every writer writes tasks 0..200, Precondition::None.
            for _ in 0..5 {
                let writes = (0..200u64)
                    .map(|t| {
                        let mut r = TaskRecord::new(TaskKey {
                            flow: flow(),
                            run: run.id,
                            step: braid_core::StepName::new("s").unwrap(),
                            task: TaskId(t),
                        });
                        r.iteration = w as u32;
                        TaskWrite::new(r)
                    })
                    .collect();
                let out = store.records.write_tasks(writes).await.unwrap();
                assert!(out.iter().all(|o| o.is_applied()), "{out:?}");
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let tasks = first.records.list_tasks(&flow(), run.id, &TaskQuery::default()).await.unwrap().items;
    assert_eq!(tasks.len(), 200);
    // 20 writes of each task applied one after another: revisions 1..=20, none lost.
    assert!(tasks.iter().all(|t| t.revision == 20), "{:?}", tasks.iter().map(|t| t.revision).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_server_restarts_connects_again_and_loses_nothing() {
    // A server of this test's own: a restart cuts every client of the server.
    let Some(pg) = test_servers::private_postgres() else { return };
    let Some(s3) = test_servers::s3() else { return };
    let store = pg_s3_store(&pg.fresh_database(), &s3.fresh_bucket()).await;
    let run = RunRecord::new(flow(), RunId::generate());
    store.records.create_run(&run).await.unwrap();
    let task = |t: u64| {
        TaskWrite::new(TaskRecord::new(TaskKey {
            flow: flow(),
            run: run.id,
            step: braid_core::StepName::new("s").unwrap(),
            task: TaskId(t),
        }))
    };
    store.records.write_tasks((0..10).map(task).collect()).await.unwrap();
    // Writes go on while the server stops, is down and starts: each finds its
    // connection dead or refused and runs again on a new one once the server is back.
    let restart = tokio::task::spawn_blocking(move || pg.restart());
    let mut next = 10;
    while !restart.is_finished() || next < 20 {
        let out = store.records.write_tasks(vec![task(next)]).await.unwrap();
        assert!(out.iter().all(|o| o.is_applied()), "{out:?}");
        next += 1;
    }
    restart.await.unwrap();
    assert_eq!(store.records.get_run(&flow(), run.id).await.unwrap().map(|r| r.id), Some(run.id));
    let tasks = store.records.list_tasks(&flow(), run.id, &TaskQuery::default()).await.unwrap().items;
    assert_eq!(tasks.len(), next as usize, "the writes before, during and after the restart are all there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_create_an_empty_database_upgrade_an_older_one_and_refuse_a_newer_one() {
    let Some(pg) = test_servers::postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let blobs = format!("file://{}", dir.path().join("blobs").display());

    // Empty: every migration, once; opening again changes nothing.
    let db = pg.fresh_database();
    assert_eq!(pg::migrate_to(&db, 0).await.unwrap(), 0, "a new database has no schema");
    let store = Store::connect(&db, Some(&blobs)).await.unwrap();
    store.records.create_run(&RunRecord::new(flow(), RunId::generate())).await.unwrap();
    drop(store);
    assert_eq!(pg::migrate_to(&db, pg::SCHEMA_VERSION).await.unwrap(), pg::SCHEMA_VERSION);
    assert_eq!(
        Store::connect(&db, Some(&blobs))
            .await
            .unwrap()
            .records
            .list_runs(&flow(), &RunQuery::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Older: a database of version 1 (before run leases), with a run in it, is upgraded
    // on open and its run kept.
    let old = pg.fresh_database();
    assert_eq!(pg::migrate_to(&old, 1).await.unwrap(), 0);
    let id = RunId::generate();
    pg::execute_batch(
        &old,
        &format!(
            "INSERT INTO runs (run_id, flow, status, created_at, params, tags, meta, revision) \
             VALUES ('{id}', 'race', 'succeeded', 1, '{{}}', '[]', '{{}}', 1)"
        ),
    )
    .await
    .unwrap();
    let store = Store::connect(&old, Some(&blobs)).await.unwrap();
    let run = store.records.get_run(&flow(), id).await.unwrap().unwrap();
    assert_eq!((run.status, run.lease), (RunStatus::Succeeded, None));
    let mut live = RunRecord::new(flow(), RunId::generate());
    live.lease = Some(RunLease::new("run@host:1", std::time::Duration::from_secs(60)));
    store.records.create_run(&live).await.unwrap();
    assert!(store.records.get_run(&flow(), live.id).await.unwrap().unwrap().lease.is_some(), "version 2 columns");

    // Newer: refused, saying which version it has and which this build knows.
    pg::execute_batch(&old, "UPDATE braid_schema SET version = 99").await.unwrap();
    let e = Store::connect(&old, Some(&blobs)).await.unwrap_err();
    assert!(matches!(e, Error::UnsupportedFormat { found: 99, .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("version 99") && text.contains(&format!("up to {}", pg::SCHEMA_VERSION)), "{text}");
    assert!(text.contains("upgrade braid"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_object_on_s3_is_reported_naming_its_key() {
    let Some(pg) = test_servers::postgres() else { return };
    let Some(s3) = test_servers::s3() else { return };
    let bucket = s3.fresh_bucket();
    let store = pg_s3_store(&pg.fresh_database(), &bucket).await;
    let blobs = s3::S3Blobs::open_with(&bucket, &s3.env()).await.unwrap();
    for size in [100usize, 20 * 1024 * 1024] {
        let bytes = vec![7u8; size];
        let key = store.blobs.put(bytes).await.unwrap();
        let (raw, path) = blobs.raw(&key);
        object_store::ObjectStoreExt::put(raw.as_ref(), &path, b"tampered".to_vec().into()).await.unwrap();
        let e = store.blobs.get(&key).await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains(&key.to_hex()) && text.contains(&blobs.object_url(&key)), "{text}");
        let mut back = Vec::new();
        let e = tokio::io::AsyncReadExt::read_to_end(&mut store.blobs.get_stream(&key).await.unwrap(), &mut back)
            .await
            .unwrap_err();
        assert!(e.to_string().contains(&key.to_hex()), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_postgres_locations_say_what_is_wrong() {
    let Some(pg) = test_servers::postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let blobs = format!("file://{}", dir.path().join("blobs").display());
    let open = |loc: String| {
        let blobs = blobs.clone();
        async move { Store::connect(&loc, Some(&blobs)).await.unwrap_err().to_string() }
    };
    // Port 1 (tcpmux): nothing listens there; a port just freed could be taken by a
    // server another test starts meanwhile.
    let port = 1;
    let started = std::time::Instant::now();
    let e = open(format!("postgres://braid@127.0.0.1:{port}/braid")).await;
    assert!(e.contains("cannot be reached") && e.contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let e = open(format!("postgres://braid:wrong@127.0.0.1:{}/postgres", pg.port)).await;
    assert!(e.contains("authentication failed for user `braid`") && !e.contains("wrong@"), "{e}");
    let e = open(pg.url("no_such_db")).await;
    assert!(e.contains("database `no_such_db`, which does not exist") && e.contains("createdb"), "{e}");
    assert!(!e.contains(test_servers::PG_PASSWORD), "the password is never shown: {e}");
    let e = open("postgres://127.0.0.1/x".to_owned()).await;
    assert!(e.contains("names no user"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_s3_locations_say_what_is_wrong() {
    let Some(s3) = test_servers::s3() else { return };
    let e = s3::S3Blobs::open_with("s3://no-such-bucket-here/x", &s3.env()).await.unwrap_err().to_string();
    assert!(e.contains("bucket `no-such-bucket-here`, which does not exist"), "{e}");
    // Port 1 (tcpmux): nothing listens there; a port just freed could be taken by a
    // server another test starts meanwhile.
    let port = 1;
    let mut env = s3.env();
    env[0].1 = format!("http://127.0.0.1:{port}");
    let e = s3::S3Blobs::open_with("s3://b/x", &env).await.unwrap_err().to_string();
    assert!(e.contains("cannot be reached") && e.contains(&format!("127.0.0.1:{port}")), "{e}");
    env.retain(|(k, _)| *k != "AWS_ALLOW_HTTP");
    let e = s3::S3Blobs::open_with("s3://b/x", &env).await.unwrap_err().to_string();
    assert!(e.contains("AWS_ALLOW_HTTP"), "{e}");
}
