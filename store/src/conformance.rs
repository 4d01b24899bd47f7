//! The conformance suite every store backend must pass, written once.
//!
//! A backend's test file calls [`conformance_suite!`](crate::conformance_suite) with a
//! module name and an expression that makes a fresh [`Harness`]; each check becomes its
//! own `#[tokio::test]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use braid_core::codec;
use braid_core::{
    ArtifactName, Attempt, FlowName, Progress, RunId, RunStatus, StepName, Tag, TaskId, TaskStatus, Timestamp,
};
use tokio::io::AsyncReadExt;

use crate::*;

pub use crate::conformance_plans::*;
pub use crate::conformance_queue::*;

/// A store under test and whatever keeps it alive (a temp directory).
#[derive(Debug)]
pub struct Harness {
    /// The store the checks run against.
    pub store: Store,
    /// What must outlive the store (its temporary directory), if anything.
    pub guard: Option<tempfile::TempDir>,
}

impl Harness {
    /// A fresh memory store.
    pub fn memory() -> Self {
        Harness { store: Store::memory(), guard: None }
    }

    /// A fresh fs store in a temporary directory.
    pub fn fs() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_fs(dir.path().join("store")).expect("open fs store");
        Harness { store, guard: Some(dir) }
    }

    /// Records in a fresh database of this process's throwaway PostgreSQL, blobs in a
    /// fresh bucket of its throwaway S3 server; `None` (after one loud `skipped:` line)
    /// when either is not installed.
    #[cfg(all(feature = "test-servers", feature = "postgres", feature = "s3"))]
    pub async fn pg_s3() -> Option<Self> {
        let pg = crate::test_servers::postgres()?;
        let s3 = crate::test_servers::s3()?;
        Some(Harness { store: pg_s3_store(&pg.fresh_database(), &s3.fresh_bucket()).await, guard: None })
    }

    /// Records in a fresh database of this process's throwaway PostgreSQL, blobs in a
    /// shared directory (`file://`); `None` when PostgreSQL is not installed.
    #[cfg(all(feature = "test-servers", feature = "postgres"))]
    pub async fn pg_dir() -> Option<Self> {
        let pg = crate::test_servers::postgres()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = format!("file://{}", dir.path().join("shared").display());
        let store = Store::connect(&pg.fresh_database(), Some(&blobs)).await.expect("open pg + dir store");
        Some(Harness { store, guard: Some(dir) })
    }
}

/// A store of PostgreSQL records (`db`) and S3 blobs (`bucket`) of the throwaway servers.
#[cfg(all(feature = "test-servers", feature = "postgres", feature = "s3"))]
pub async fn pg_s3_store(db: &str, bucket: &str) -> Store {
    let s3 = crate::test_servers::s3().expect("s3 server");
    let (records, plans) = crate::pg::open(db).await.expect("open pg records");
    // Every put of existing content refreshes its object (`blobs_listed_and_deleted_by_age`
    // checks that a refreshed blob survives gc), not only those older than ten minutes.
    let blobs = crate::s3::S3Blobs::open_with(bucket, &s3.env())
        .await
        .expect("open s3 blobs")
        .with_refresh_after(std::time::Duration::ZERO);
    let queue = Arc::new(records.queue());
    Store::from_parts(
        Arc::new(blobs),
        Arc::new(records),
        Arc::new(plans),
        crate::pg::redact(db),
        Some(bucket.to_owned()),
    )
    .with_queue(queue)
}

/// Expands to one test per check for a backend.
#[macro_export]
macro_rules! conformance_suite {
    // A backend whose servers may be missing: `$harness` is an `Option<Harness>`, and
    // `None` (the server is not installed, said once by the harness) passes every check.
    (optional $name:ident, $harness:expr) => {
        $crate::conformance_suite!($name, match $harness {
            Some(h) => h,
            None => return,
        });
    };
    ($name:ident, $harness:expr) => {
        mod $name {
            use $crate::conformance::Harness;
            $crate::conformance_suite!(@tests $harness;
                blob_round_trip_and_dedupe, blob_stream_round_trip, blob_missing, flows, run_create_update_conflict,
                runs_newest_first_paged_and_filtered, run_leases_say_lost_when_they_run_out, run_tags, tasks_written_listed_and_paged, task_preconditions,
                conditional_updates_under_concurrency, claims_under_concurrency, artifact_visibility_and_bulk_reads,
                step_artifacts_paged_in_index_order,
                step_summaries_count_by_status, attempts_recorded, logs_in_order, missing_records, records_keep_all_fields, task_claims_fence_an_earlier_worker,
                plans_versioned_by_content, plans_listed_and_activated_by_label, launches_claimed_once_under_concurrency,
                launches_updated_conditionally_listed_and_adopted, plans_deleted_and_registered_again,
                parameter_sets_paused_and_resumed, failed_ticks_recorded_once_per_tick, delete_run_removes_everything_under_it_conditionally,
                artifact_blob_refs_cover_values_and_manifests_in_pages, blobs_listed_and_deleted_by_age,
                queue_claims_by_priority_then_age_once, queue_claims_under_concurrency,
                queue_leases_expire_and_fence_the_old_holder, queue_wakes_a_waiting_worker,
                queue_completes_with_one_reply_per_current_claim, queue_caps_claims_at_its_limit);
        }
    };
    (@tests $harness:expr; $($check:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let h: Harness = $harness;
                $crate::conformance::$check(&h.store).await;
            }
        )+
    };
}

fn flow() -> FlowName {
    FlowName::new("conf").unwrap()
}

fn step(s: &str) -> StepName {
    StepName::new(s).unwrap()
}

fn key(run: RunId, s: &str, t: u64) -> TaskKey {
    TaskKey { flow: flow(), run, step: step(s), task: TaskId(t) }
}

async fn new_run(store: &Store) -> RunRecord {
    let run = RunRecord::new(flow(), RunId::generate());
    store.records.create_run(&run).await.unwrap();
    store.records.get_run(&flow(), run.id).await.unwrap().unwrap()
}

async fn artifact(store: &Store, name: &str, value: u64) -> ArtifactRecord {
    let enc = codec::encode(&value).unwrap();
    let size = enc.bytes.len() as u64;
    let key = store.blobs.put(enc.bytes).await.unwrap();
    ArtifactRecord {
        name: ArtifactName::new(name).unwrap(),
        key,
        type_name: enc.type_name,
        size,
        preview: enc.preview,
        elements: None,
        inline: None,
    }
}

fn applied(outcomes: &[WriteOutcome]) {
    for o in outcomes {
        assert!(o.is_applied(), "write rejected: {o:?}");
    }
}

/// Conformance check: Blobs of every size class (empty, inline, file-sized) read back as stored,
/// and storing the same content again yields the same key.
pub async fn blob_round_trip_and_dedupe(store: &Store) {
    for size in [0usize, 10, 300, 40 * 1024, 300 * 1024] {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let k1 = store.blobs.put(bytes.clone()).await.unwrap();
        let k2 = store.blobs.put(bytes.clone()).await.unwrap();
        assert_eq!(k1, k2);
        assert_eq!(k1, BlobKey::of(&bytes));
        assert_eq!(store.blobs.get(&k1).await.unwrap(), bytes);
        assert_eq!(store.blobs.size(&k1).await.unwrap(), Some(size as u64));
        assert!(store.blobs.exists(&k1).await.unwrap());
        let many = store.blobs.get_many(&[k1, k1]).await.unwrap();
        assert_eq!(many, vec![bytes.clone(), bytes]);
    }
    let batch: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![9u8; 100_000], b"one".to_vec(), b"two".to_vec()];
    let keys = store.blobs.put_many(batch.clone()).await.unwrap();
    assert_eq!(keys.len(), 4);
    assert_eq!(keys[0], keys[2]);
    for (k, b) in keys.iter().zip(&batch) {
        assert_eq!(&store.blobs.get(k).await.unwrap(), b);
    }
}

/// Conformance check: Blobs stored from a stream and read as a stream (up to a few MiB) come back
/// byte for byte, with the right size.
pub async fn blob_stream_round_trip(store: &Store) {
    for size in [5usize, 20 * 1024, 3 * 1024 * 1024 + 17] {
        let bytes: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let mut reader = std::io::Cursor::new(bytes.clone());
        let (k, n) = store.blobs.put_stream(&mut reader).await.unwrap();
        assert_eq!(n, size as u64);
        assert_eq!(k, BlobKey::of(&bytes));
        let mut back = Vec::new();
        store.blobs.get_stream(&k).await.unwrap().read_to_end(&mut back).await.unwrap();
        assert_eq!(back, bytes);
        assert_eq!(store.blobs.put(bytes).await.unwrap(), k, "stream and whole puts agree");
    }
}

/// Conformance check: Reading a blob that was never stored is `NotFound`, and `size` says `None`.
pub async fn blob_missing(store: &Store) {
    let k = BlobKey::of(b"never stored");
    let e = store.blobs.get(&k).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(e.to_string().contains(&k.to_hex()), "{e}");
    assert!(store.blobs.get_stream(&k).await.is_err());
    assert_eq!(store.blobs.size(&k).await.unwrap(), None);
    assert!(!store.blobs.exists(&k).await.unwrap());
}

/// Conformance check: Flows are registered, replaced and listed by name.
pub async fn flows(store: &Store) {
    let rec = FlowRecord { name: flow(), spec: serde_json::json!({"steps": [1]}), updated_at: Timestamp::now() };
    store.records.put_flow(rec.clone()).await.unwrap();
    assert_eq!(store.records.get_flow(&flow()).await.unwrap(), Some(rec.clone()));
    let other = FlowRecord { name: FlowName::new("another").unwrap(), ..rec.clone() };
    store.records.put_flow(other.clone()).await.unwrap();
    let newer = FlowRecord { spec: serde_json::json!({"steps": [2]}), ..rec };
    store.records.put_flow(newer.clone()).await.unwrap();
    let all = store.records.list_flows().await.unwrap();
    assert_eq!(all, vec![other, newer]);
    assert_eq!(store.records.get_flow(&FlowName::new("nope").unwrap()).await.unwrap(), None);
}

/// Conformance check: A run is created once; an update on a stale revision is a `Conflict`, on the
/// current one it bumps the revision.
pub async fn run_create_update_conflict(store: &Store) {
    let mut run = new_run(store).await;
    assert_eq!(run.revision, 1);
    assert!(store.records.create_run(&run).await.unwrap_err().is_conflict());
    run.status = RunStatus::Running;
    let stored = store.records.update_run(&run).await.unwrap();
    assert_eq!(stored.revision, 2);
    assert_eq!(stored.status, RunStatus::Running);
    // A writer holding the old revision loses.
    let e = store.records.update_run(&run).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    assert!(e.to_string().contains(&run.id.to_string()), "{e}");
}

/// Conformance check: Runs list newest first, page by cursor without gaps or repeats, and filter by
/// status and tag.
pub async fn runs_newest_first_paged_and_filtered(store: &Store) {
    let mut ids = Vec::new();
    for i in 0..25 {
        let mut run = RunRecord::new(flow(), RunId::generate());
        if i % 5 == 0 {
            run.status = RunStatus::Failed;
        }
        if i % 2 == 0 {
            run.tags.insert(Tag::new("even").unwrap());
        }
        store.records.create_run(&run).await.unwrap();
        ids.push(run.id);
    }
    // Another flow's runs never show up.
    store.records.create_run(&RunRecord::new(FlowName::new("other").unwrap(), RunId::generate())).await.unwrap();
    ids.reverse();
    let mut seen = Vec::new();
    let mut q = RunQuery { limit: 10, ..Default::default() };
    loop {
        let page = store.records.list_runs(&flow(), &q).await.unwrap();
        assert!(page.items.len() <= 10);
        seen.extend(page.items.iter().map(|r| r.id));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids, "newest first, every run once");
    let failed = store
        .records
        .list_runs(&flow(), &RunQuery { status: Some(RunStatus::Failed), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 5);
    assert!(failed.items.iter().all(|r| r.status == RunStatus::Failed));
    let even = store
        .records
        .list_runs(&flow(), &RunQuery { tag: Some(Tag::new("even").unwrap()), limit: 5, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(even.items.len(), 5);
    assert!(even.next.is_some());
    let bad = store.records.list_runs(&flow(), &RunQuery { after: Some("zzz".into()), ..Default::default() }).await;
    assert!(bad.unwrap_err().to_string().contains("cursor"));
}

/// Conformance check: A live run whose lease ran out is observed (and listed) as `lost`; renewing a
/// lease needs its holder.
pub async fn run_leases_say_lost_when_they_run_out(store: &Store) {
    let ms = std::time::Duration::from_millis;
    let mut live = RunRecord::new(flow(), RunId::generate());
    live.status = RunStatus::Running;
    live.lease = Some(RunLease::new("run@host:1", ms(60_000)));
    store.records.create_run(&live).await.unwrap();
    let mut dead = RunRecord::new(flow(), RunId::generate());
    dead.status = RunStatus::Running;
    dead.lease = Some(RunLease {
        holder: "run@host:2".into(),
        renewed_at: Timestamp::from_micros(1),
        deadline: Timestamp::from_micros(2),
    });
    store.records.create_run(&dead).await.unwrap();
    let mut never_started = RunRecord::new(flow(), RunId::generate());
    never_started.lease = dead.lease.clone();
    store.records.create_run(&never_started).await.unwrap();
    let mut done = RunRecord::new(flow(), RunId::generate());
    done.status = RunStatus::Succeeded;
    done.lease = dead.lease.clone();
    store.records.create_run(&done).await.unwrap();

    let stored = store.records.get_run(&flow(), dead.id).await.unwrap().unwrap();
    assert_eq!(stored.lease, dead.lease, "the lease is kept whole");
    assert_eq!(stored.status_now(), RunStatus::Lost);
    assert_eq!(store.records.get_run(&flow(), done.id).await.unwrap().unwrap().status_now(), RunStatus::Succeeded);
    let listed = |status| async move {
        let q = RunQuery { status: Some(status), ..Default::default() };
        let mut ids: Vec<RunId> =
            store.records.list_runs(&flow(), &q).await.unwrap().items.iter().map(|r| r.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(listed(RunStatus::Running).await, vec![live.id], "`running` leaves out runs whose lease ran out");
    let mut lost = vec![dead.id, never_started.id];
    lost.sort();
    assert_eq!(listed(RunStatus::Lost).await, lost);
    assert!(listed(RunStatus::Pending).await.is_empty());

    // Renewing brings a live record back; it bumps no revision, so it never conflicts.
    let renewed = RunLease::new("run@host:2", ms(60_000));
    assert!(store.records.renew_run_lease(&flow(), dead.id, &renewed).await.unwrap());
    let stored = store.records.get_run(&flow(), dead.id).await.unwrap().unwrap();
    assert_eq!((stored.status_now(), stored.revision, stored.lease), (RunStatus::Running, 1, Some(renewed.clone())));
    // Only its holder renews it (another process took it over, or never held it).
    let other = RunLease::new("run@host:3", ms(60_000));
    assert!(!store.records.renew_run_lease(&flow(), dead.id, &other).await.unwrap());
    assert_eq!(store.records.get_run(&flow(), dead.id).await.unwrap().unwrap().lease, Some(renewed.clone()));
    // A run that ended, or does not exist, is not renewed.
    assert!(!store.records.renew_run_lease(&flow(), done.id, &renewed).await.unwrap());
    assert!(!store.records.renew_run_lease(&flow(), RunId::generate(), &renewed).await.unwrap());
}

/// Conformance check: Tags are added and removed in one write, and runs are found by tag.
pub async fn run_tags(store: &Store) {
    let run = new_run(store).await;
    let a = Tag::new("a").unwrap();
    let b = Tag::new("b.1").unwrap();
    let r = store.records.update_tags(&flow(), run.id, &[a.clone(), b.clone()], &[]).await.unwrap();
    assert_eq!(r.tags, BTreeSet::from([a.clone(), b.clone()]));
    let r = store.records.update_tags(&flow(), run.id, &[], &[a]).await.unwrap();
    assert_eq!(r.tags, BTreeSet::from([b.clone()]));
    assert_eq!(store.records.get_run(&flow(), run.id).await.unwrap().unwrap().tags, BTreeSet::from([b.clone()]));
    let e = store.records.update_tags(&flow(), RunId::generate(), &[b], &[]).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

/// Conformance check: Task writes in a batch all apply; tasks list in id order, page by cursor, and
/// filter by step and status.
pub async fn tasks_written_listed_and_paged(store: &Store) {
    let run = new_run(store).await;
    let mut writes = Vec::new();
    for t in 1..=50u64 {
        let s = if t % 2 == 0 { "even" } else { "odd" };
        let mut rec = TaskRecord::new(key(run.id, s, t));
        rec.status = TaskStatus::Succeeded;
        writes.push(TaskWrite::new(rec));
    }
    applied(&store.records.write_tasks(writes).await.unwrap());
    let mut all = Vec::new();
    let mut q = TaskQuery { limit: 7, ..Default::default() };
    loop {
        let page = store.records.list_tasks(&flow(), run.id, &q).await.unwrap();
        all.extend(page.items.iter().map(|t| t.key.task.0));
        match page.next {
            Some(n) => q.after = Some(n),
            None => break,
        }
    }
    assert_eq!(all, (1..=50).collect::<Vec<_>>());
    let evens = store
        .records
        .list_tasks(&flow(), run.id, &TaskQuery { step: Some(step("even")), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(evens.items.len(), 25);
    assert!(evens.items.iter().all(|t| t.key.step == step("even") && t.key.task.0 % 2 == 0));
    let t = store.records.get_task(&flow(), run.id, TaskId(4)).await.unwrap().unwrap();
    assert_eq!(t.key, key(run.id, "even", 4));
    assert_eq!(t.revision, 1);
    // The same run id under another flow name is not this task.
    assert_eq!(store.records.get_task(&FlowName::new("x").unwrap(), run.id, TaskId(4)).await.unwrap(), None);
}

/// Conformance check: Each precondition (none, absent, revision, attempt) applies or rejects with
/// the right `Rejection`.
pub async fn task_preconditions(store: &Store) {
    let run = new_run(store).await;
    let mut rec = TaskRecord::new(key(run.id, "s", 1));
    rec.status = TaskStatus::Running;
    let mut w = TaskWrite::new(rec.clone());
    w.precondition = Precondition::Absent;
    assert_eq!(store.records.write_tasks(vec![w.clone()]).await.unwrap(), vec![WriteOutcome::Applied { revision: 1 }]);
    assert!(!store.records.write_tasks(vec![w]).await.unwrap()[0].is_applied(), "Absent on an existing task");

    let mut stale = TaskWrite::new(rec.clone());
    stale.precondition = Precondition::Revision(7);
    assert!(!store.records.write_tasks(vec![stale]).await.unwrap()[0].is_applied());

    // Attempt 2 takes over; a late write from attempt 1 is fenced off.
    let mut second = rec.clone();
    second.attempt = Attempt(2);
    let mut w2 = TaskWrite::new(second.clone());
    w2.precondition = Precondition::Revision(1);
    assert_eq!(store.records.write_tasks(vec![w2]).await.unwrap(), vec![WriteOutcome::Applied { revision: 2 }]);
    let mut late = rec.clone();
    late.status = TaskStatus::Succeeded;
    let mut lw = TaskWrite::new(late);
    lw.precondition = Precondition::Attempt(Attempt(1));
    match &store.records.write_tasks(vec![lw]).await.unwrap()[0] {
        WriteOutcome::Rejected { reason } => {
            assert!(
                matches!(reason, Rejection::StaleAttempt { attempt: Attempt(1), current: Attempt(2), .. }),
                "{reason:?}"
            );
            assert!(reason.is_fenced() && reason.to_string().contains("stale attempt 1"), "{reason}");
        }
        o => panic!("late write applied: {o:?}"),
    }
    let mut done = second;
    done.status = TaskStatus::Succeeded;
    done.progress = Some(Progress::new(100.0, "done").unwrap());
    let mut dw = TaskWrite::new(done.clone());
    dw.precondition = Precondition::Attempt(Attempt(2));
    applied(&store.records.write_tasks(vec![dw.clone()]).await.unwrap());
    // Once ended, the attempt can write no more.
    assert!(!store.records.write_tasks(vec![dw]).await.unwrap()[0].is_applied());
    let got = store.records.get_task(&flow(), run.id, TaskId(1)).await.unwrap().unwrap();
    assert_eq!(got.status, TaskStatus::Succeeded);
    assert_eq!(got.attempt, Attempt(2));
    assert_eq!(got.revision, 3);

    // Outcomes in a batch are independent and in order.
    let mut a = TaskWrite::new(TaskRecord::new(key(run.id, "s", 2)));
    a.precondition = Precondition::Absent;
    let mut b = TaskWrite::new(TaskRecord::new(key(run.id, "s", 1)));
    b.precondition = Precondition::Absent;
    let out = store.records.write_tasks(vec![a, b]).await.unwrap();
    assert!(out[0].is_applied() && !out[1].is_applied(), "{out:?}");
}

/// Conformance check: a worker's writes name their claim (`Precondition::Claim`): a
/// later claim's write takes the task over, and from then on the earlier claim's writes
/// are refused as `StaleClaim` (fenced), in a batch or alone; the claim is kept in the
/// record.
pub async fn task_claims_fence_an_earlier_worker(store: &Store) {
    let run = new_run(store).await;
    let mut rec = TaskRecord::new(key(run.id, "s", 1));
    rec.status = TaskStatus::Pending;
    applied(&store.records.write_tasks(vec![TaskWrite::new(rec.clone())]).await.unwrap());
    let claim = |token: u64, percent: f32| {
        let mut r = rec.clone();
        r.status = TaskStatus::Running;
        r.dispatch = Some(TaskDispatch::new(token, format!("worker-{token}"), (token / 10) as u32));
        r.progress = Some(Progress::new(percent, "working").unwrap());
        let mut w = TaskWrite::new(r);
        w.precondition = Precondition::Claim { attempt: Attempt(1), token };
        w
    };
    applied(&store.records.write_tasks(vec![claim(10, 1.0)]).await.unwrap());
    applied(&store.records.write_tasks(vec![claim(10, 2.0)]).await.unwrap());
    // The task was dispatched again: claim 20 writes, and claim 10 is fenced off.
    applied(&store.records.write_tasks(vec![claim(20, 3.0)]).await.unwrap());
    let out = store.records.write_tasks(vec![claim(10, 50.0), claim(20, 4.0)]).await.unwrap();
    match &out[0] {
        WriteOutcome::Rejected { reason } => {
            assert!(matches!(reason, Rejection::StaleClaim { token: 10, current: 20, .. }), "{reason:?}");
            assert!(reason.is_fenced(), "{reason}");
        }
        o => panic!("a write of the earlier claim applied: {o:?}"),
    }
    assert!(out[1].is_applied(), "{out:?}");
    let got = store.records.get_task(&flow(), run.id, TaskId(1)).await.unwrap().unwrap();
    assert_eq!(got.dispatch, Some(TaskDispatch::new(20, "worker-20", 2)));
    assert_eq!(got.progress.map(|p| p.percent), Some(4.0));
    // A claim of another attempt is refused as that.
    let mut other = claim(30, 5.0);
    other.precondition = Precondition::Claim { attempt: Attempt(2), token: 30 };
    assert!(!store.records.write_tasks(vec![other]).await.unwrap()[0].is_applied());
}

/// Conformance check: Of many concurrent writes on one revision exactly one applies.
pub async fn conditional_updates_under_concurrency(store: &Store) {
    let run = new_run(store).await;
    let rec = TaskRecord::new(key(run.id, "s", 1));
    applied(&store.records.write_tasks(vec![TaskWrite::new(rec.clone())]).await.unwrap());
    let store = Arc::new(store.clone());
    let mut handles = Vec::new();
    for i in 0..16u32 {
        let store = store.clone();
        let mut r = rec.clone();
        r.attempt = Attempt(i + 2);
        handles.push(tokio::spawn(async move {
            let mut w = TaskWrite::new(r);
            w.precondition = Precondition::Revision(1);
            store.records.write_tasks(vec![w]).await.unwrap().remove(0)
        }));
    }
    let mut wins = 0;
    for h in handles {
        if h.await.unwrap().is_applied() {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one writer holding revision 1 wins");
    assert_eq!(store.records.get_task(&flow(), run.id, TaskId(1)).await.unwrap().unwrap().revision, 2);

    let mut run2 = store.records.get_run(&flow(), run.id).await.unwrap().unwrap();
    run2.status = RunStatus::Running;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        let r = run2.clone();
        handles.push(tokio::spawn(async move { store.records.update_run(&r).await.is_ok() }));
    }
    let mut wins = 0;
    for h in handles {
        wins += usize::from(h.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one run update per revision");
}

/// Conformance check: Of many concurrent claims of one key exactly one wins, and `claim_holder`
/// names it.
pub async fn claims_under_concurrency(store: &Store) {
    let store = Arc::new(store.clone());
    let mut handles = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            (i, store.records.try_claim("tick", "plan/1/2026", &format!("w{i}")).await.unwrap())
        }));
    }
    let mut winners = Vec::new();
    for h in handles {
        let (i, won) = h.await.unwrap();
        if won {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1);
    let holder = store.records.claim_holder("tick", "plan/1/2026").await.unwrap();
    assert_eq!(holder, Some(format!("w{}", winners[0])));
    assert!(store.records.try_claim("tick", "plan/1/2027", "w").await.unwrap());
    assert!(store.records.try_claim("other", "plan/1/2026", "w").await.unwrap(), "scopes are separate");
    assert_eq!(store.records.claim_holder("tick", "none").await.unwrap(), None);
}

/// Conformance check: A task sees its own artifacts and its ancestors', nearer ones shadowing
/// farther ones; a step's artifacts read in foreach index order.
pub async fn artifact_visibility_and_bulk_reads(store: &Store) {
    let run = new_run(store).await;
    let a1 = artifact(store, "a", 1).await;
    let b1 = artifact(store, "b", 1).await;
    let b2 = artifact(store, "b", 2).await;
    let c3 = artifact(store, "c", 3).await;
    let start = TaskRecord::new(key(run.id, "start", 1));
    let mut mid = TaskRecord::new(key(run.id, "mid", 2));
    mid.parent = Some(TaskId(1));
    let mut writes = vec![
        TaskWrite { artifacts: Some(vec![a1.clone(), b1.clone()]), ..TaskWrite::new(start) },
        TaskWrite { artifacts: Some(vec![b2.clone()]), ..TaskWrite::new(mid) },
    ];
    // A foreach of 5 branches under `mid`, written out of index order.
    for (t, idx) in [(3u64, 4u64), (4, 0), (5, 3), (6, 1), (7, 2)] {
        let mut r = TaskRecord::new(key(run.id, "work", t));
        r.parent = Some(TaskId(2));
        r.foreach_stack = vec![ForeachFrame {
            step: step("mid"),
            task: TaskId(2),
            over: ArtifactName::new("items").unwrap(),
            index: idx,
            len: 5,
        }];
        let out = artifact(store, "out", idx * idx).await;
        writes.push(TaskWrite { artifacts: Some(vec![out, c3.clone()]), ..TaskWrite::new(r) });
    }
    applied(&store.records.write_tasks(writes).await.unwrap());

    let vis = store.records.visible_artifacts(&flow(), run.id, TaskId(5)).await.unwrap();
    let names: Vec<(&str, u64)> = vis.iter().map(|v| (v.artifact.name.as_str(), v.set_by.0)).collect();
    assert_eq!(names, vec![("a", 1), ("b", 2), ("c", 5), ("out", 5)]);
    assert_eq!(vis[1].artifact, b2, "nearer ancestors shadow farther ones");
    let own = store.records.task_artifacts(&flow(), run.id, TaskId(2)).await.unwrap();
    assert_eq!(own, vec![b2]);
    let mut each = Vec::new();
    for t in 2..=6 {
        for a in store.records.task_artifacts(&flow(), run.id, TaskId(t)).await.unwrap() {
            each.push((TaskId(t), a));
        }
    }
    let block = store.records.artifacts_of_tasks(&flow(), run.id, TaskId(2), TaskId(6)).await.unwrap();
    assert_eq!(block, each, "a block of tasks' own artifacts, by task then name");
    assert!(store.records.artifacts_of_tasks(&flow(), run.id, TaskId(90), TaskId(99)).await.unwrap().is_empty());
    assert!(
        store
            .records
            .artifacts_of_tasks(&FlowName::new("other").unwrap(), run.id, TaskId(1), TaskId(9))
            .await
            .unwrap()
            .is_empty()
    );

    let bulk =
        store.records.step_artifacts(&flow(), run.id, &step("work"), &ArtifactName::new("out").unwrap()).await.unwrap();
    assert_eq!(bulk.iter().map(|s| s.foreach_index).collect::<Vec<_>>(), (0..5).map(Some).collect::<Vec<_>>());
    for s in &bulk {
        let v: u64 = codec::decode(&store.blobs.get(&s.artifact.key).await.unwrap()).unwrap();
        assert_eq!(v, s.foreach_index.unwrap().pow(2));
    }
    let by_index = store.records.tasks_by_index(&flow(), run.id, &step("work"), 3).await.unwrap();
    assert_eq!(by_index.len(), 1);
    assert_eq!(by_index[0].key.task, TaskId(5));
    assert!(store.records.tasks_by_index(&flow(), run.id, &step("work"), 9).await.unwrap().is_empty());

    // Replacing a task's artifacts drops the old set (a retried attempt's values).
    let mut w = TaskWrite::new(store.records.get_task(&flow(), run.id, TaskId(2)).await.unwrap().unwrap());
    w.artifacts = Some(vec![]);
    applied(&store.records.write_tasks(vec![w]).await.unwrap());
    assert!(store.records.task_artifacts(&flow(), run.id, TaskId(2)).await.unwrap().is_empty());
    let vis = store.records.visible_artifacts(&flow(), run.id, TaskId(5)).await.unwrap();
    assert_eq!(vis.iter().find(|v| v.artifact.name == "b").unwrap().set_by, TaskId(1));
}

/// Conformance check: A step's artifact reads a page at a time: every task of the step once, in
/// foreach index then task id order (tasks without an index first), each with the value it set
/// itself or else its parent; the pages resume where the last one ended whatever their size,
/// agree with the whole-step read, and a cursor the store did not hand out is refused.
pub async fn step_artifacts_paged_in_index_order(store: &Store) {
    let run = new_run(store).await;
    let other_run = new_run(store).await;
    let out = ArtifactName::new("out").unwrap();
    let mut writes = Vec::new();
    let mut start = TaskRecord::new(key(run.id, "start", 1));
    start.status = TaskStatus::Succeeded;
    writes.push(TaskWrite { artifacts: Some(vec![artifact(store, "out", 1).await]), ..TaskWrite::new(start) });
    // Loop iterations (no foreach index), written out of id order; 5 sets no `out`.
    for (t, sets) in [(9u64, true), (2, true), (5, false)] {
        let mut r = TaskRecord::new(key(run.id, "work", t));
        r.parent = Some(TaskId(1));
        r.iteration = t as u32;
        let arts = if sets { vec![artifact(store, "out", t * 10).await] } else { vec![] };
        writes.push(TaskWrite { artifacts: Some(arts), ..TaskWrite::new(r) });
    }
    // A nested foreach: indexes 0..5 under two outer branches (tasks 100+i and 110+i),
    // written out of order; (2, outer 1) sets only another name.
    for idx in [3u64, 0, 4, 1, 2] {
        for outer in [1u64, 0] {
            let t = 100 + 10 * outer + idx;
            let mut r = TaskRecord::new(key(run.id, "work", t));
            r.parent = Some(TaskId(50 + outer));
            r.foreach_stack = vec![ForeachFrame {
                step: step("fan"),
                task: TaskId(50 + outer),
                over: ArtifactName::new("items").unwrap(),
                index: idx,
                len: 5,
            }];
            let arts = if (idx, outer) == (2, 1) {
                vec![artifact(store, "other", t).await]
            } else {
                vec![artifact(store, "out", t).await, artifact(store, "other", 0).await]
            };
            writes.push(TaskWrite { artifacts: Some(arts), ..TaskWrite::new(r) });
        }
    }
    // Another step and another run with the same names: never in the pages.
    let mut elsewhere = TaskRecord::new(key(run.id, "join", 200));
    elsewhere.parent = Some(TaskId(9));
    writes.push(TaskWrite { artifacts: Some(vec![artifact(store, "out", 2).await]), ..TaskWrite::new(elsewhere) });
    let mut other = TaskRecord::new(key(other_run.id, "work", 3));
    other.foreach_stack = vec![ForeachFrame {
        step: step("fan"),
        task: TaskId(1),
        over: ArtifactName::new("items").unwrap(),
        index: 0,
        len: 1,
    }];
    writes.push(TaskWrite { artifacts: Some(vec![artifact(store, "out", 3).await]), ..TaskWrite::new(other) });
    applied(&store.records.write_tasks(writes).await.unwrap());

    let mut expected: Vec<(Option<u64>, u64)> = vec![(None, 2), (None, 5), (None, 9)];
    for idx in 0..5 {
        expected.push((Some(idx), 100 + idx));
        expected.push((Some(idx), 110 + idx));
    }
    for limit in [1usize, 2, 3, 4, 5, 12, 13, 14, 0] {
        let mut rows = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page =
                store.records.step_artifacts_page(&flow(), run.id, &step("work"), &out, after, limit).await.unwrap();
            pages += 1;
            assert!(page.items.len() <= if limit == 0 { 1000 } else { limit }, "limit {limit}");
            assert!(page.next.is_none() || !page.items.is_empty(), "a page with a cursor has rows");
            rows.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
            assert!(pages < 100, "the pages end");
        }
        let got: Vec<(Option<u64>, u64)> = rows.iter().map(|r| (r.foreach_index, r.task.0)).collect();
        assert_eq!(got, expected, "limit {limit}");
        let full_pages = if limit == 0 { 1 } else { expected.len().div_ceil(limit) };
        assert!(pages == full_pages || pages == full_pages + 1, "limit {limit}: {pages} pages");
        for r in &rows {
            let value = match &r.artifact {
                Some(a) => {
                    assert_eq!(a.name, out);
                    Some(codec::decode::<u64>(&store.blobs.get(&a.key).await.unwrap()).unwrap())
                }
                None => None,
            };
            let want = match (r.foreach_index, r.task.0) {
                (None, 5) => None,
                (None, t) => Some(t * 10),
                (Some(2), 112) => None,
                (Some(_), t) => Some(t),
            };
            assert_eq!(value, want, "task {}", r.task);
            let parent = if r.foreach_index.is_none() { 1 } else { 50 + (r.task.0 - 100) / 10 };
            let parent = if want.is_none() { Some(TaskId(parent)) } else { None };
            assert_eq!(r.parent, parent, "the parent of a task without the name: task {}", r.task);
        }
        // The same values as the whole-step read, in the same order.
        let whole = store.records.step_artifacts(&flow(), run.id, &step("work"), &out).await.unwrap();
        let set: Vec<(Option<u64>, TaskId, &ArtifactRecord)> =
            rows.iter().filter_map(|r| Some((r.foreach_index, r.task, r.artifact.as_ref()?))).collect();
        let whole: Vec<(Option<u64>, TaskId, &ArtifactRecord)> =
            whole.iter().map(|s| (s.foreach_index, s.task, &s.artifact)).collect();
        assert_eq!(set, whole);
    }

    let none = store.records.step_artifacts_page(&flow(), run.id, &step("nothing"), &out, None, 10).await.unwrap();
    assert!(none.items.is_empty() && none.next.is_none());
    for bad in ["", "x", "3", "3.x", "-.-", "-1.4", "9223372036854775808.1"] {
        let e = store
            .records
            .step_artifacts_page(&flow(), run.id, &step("work"), &out, Some(bad.to_owned()), 10)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "cursor {bad:?}: {e}");
    }
}

/// Conformance check: Step summaries count each step's tasks by status, in order of each step's
/// first task.
pub async fn step_summaries_count_by_status(store: &Store) {
    let run = new_run(store).await;
    let mut writes = Vec::new();
    let mut t = 0;
    for (s, status, n) in [
        ("start", TaskStatus::Succeeded, 1),
        ("work", TaskStatus::Succeeded, 3),
        ("work", TaskStatus::Running, 2),
        ("work", TaskStatus::Failed, 1),
    ] {
        for _ in 0..n {
            t += 1;
            let mut r = TaskRecord::new(key(run.id, s, t));
            r.status = status;
            r.started_at = Some(Timestamp::from_micros(1_000 + t as i64));
            writes.push(TaskWrite::new(r));
        }
    }
    applied(&store.records.write_tasks(writes).await.unwrap());
    let sums = store.records.step_summaries(&flow(), run.id).await.unwrap();
    assert_eq!(sums.len(), 2);
    assert_eq!(sums[0].step, step("start"));
    assert_eq!(sums[1].step, step("work"));
    assert_eq!(sums[1].counts.get(&TaskStatus::Succeeded), Some(&3));
    assert_eq!(sums[1].counts.get(&TaskStatus::Running), Some(&2));
    assert_eq!(sums[1].counts.get(&TaskStatus::Failed), Some(&1));
    assert_eq!(sums[1].first_started, Some(Timestamp::from_micros(1_002)));
}

/// Conformance check: Every attempt of a task is recorded, in order, with its status and error.
pub async fn attempts_recorded(store: &Store) {
    let run = new_run(store).await;
    let rec = TaskRecord::new(key(run.id, "s", 1));
    for a in 1..=3u32 {
        let attempt = AttemptRecord {
            attempt: Attempt(a),
            status: if a < 3 { TaskStatus::Failed } else { TaskStatus::Succeeded },
            started_at: Timestamp::from_micros(a as i64),
            ended_at: Some(Timestamp::from_micros(a as i64 + 10)),
            error: (a < 3).then(|| TaskError { kind: "error".into(), message: format!("boom {a}") }),
        };
        let w = TaskWrite { attempt: Some(attempt), ..TaskWrite::new(rec.clone()) };
        applied(&store.records.write_tasks(vec![w]).await.unwrap());
    }
    let attempts = store.records.list_attempts(&flow(), run.id, TaskId(1)).await.unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[1].error.as_ref().unwrap().message, "boom 2");
    assert_eq!(attempts[2].status, TaskStatus::Succeeded);
}

/// Conformance check: Log lines get increasing sequence numbers per task and read back after a
/// sequence number, limited.
pub async fn logs_in_order(store: &Store) {
    let run = new_run(store).await;
    applied(&store.records.write_tasks(vec![TaskWrite::new(TaskRecord::new(key(run.id, "s", 1)))]).await.unwrap());
    let line = |i: u32| LogLine {
        run: run.id,
        task: TaskId(1),
        attempt: Attempt::FIRST,
        seq: 0,
        at: Timestamp::now(),
        level: "INFO".into(),
        line: format!("line {i}"),
    };
    store.records.append_logs((0..5).map(line).collect()).await.unwrap();
    store.records.append_logs((5..8).map(line).collect()).await.unwrap();
    let all = store.records.read_logs(&flow(), run.id, TaskId(1), 0, 0).await.unwrap();
    assert_eq!(all.iter().map(|l| l.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    assert_eq!(all[7].line, "line 7");
    let tail = store.records.read_logs(&flow(), run.id, TaskId(1), 6, 10).await.unwrap();
    assert_eq!(tail.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["line 6", "line 7"]);
}

/// Conformance check: Reading runs, tasks, attempts, artifacts and logs that do not exist gives
/// `None` or nothing, not an error.
pub async fn missing_records(store: &Store) {
    let id = RunId::generate();
    assert_eq!(store.records.get_run(&flow(), id).await.unwrap(), None);
    assert_eq!(store.records.get_task(&flow(), id, TaskId(1)).await.unwrap(), None);
    let e = store.records.update_run(&RunRecord::new(flow(), id)).await.unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains(&id.to_string()), "{e}");
    assert!(store.records.list_tasks(&flow(), id, &TaskQuery::default()).await.unwrap().items.is_empty());
    assert!(store.records.list_attempts(&flow(), id, TaskId(1)).await.unwrap().is_empty());
    assert!(store.records.visible_artifacts(&flow(), id, TaskId(1)).await.unwrap().is_empty());
    assert!(store.records.step_summaries(&flow(), id).await.unwrap().is_empty());
}

/// Conformance check: Every field of a run, task, attempt and artifact record survives a write and
/// a read.
pub async fn records_keep_all_fields(store: &Store) {
    let mut run = RunRecord::new(flow(), RunId::generate());
    run.params.insert("n".into(), serde_json::json!(1000));
    run.origin_run = Some(RunId::generate());
    run.name = Some("plan_site1".into());
    run.meta.insert("plan".into(), serde_json::json!({"name": "p", "version": 2}));
    run.started_at = Some(Timestamp::from_micros(5));
    store.records.create_run(&run).await.unwrap();
    let got = store.records.get_run(&flow(), run.id).await.unwrap().unwrap();
    assert_eq!(RunRecord { revision: 1, ..run.clone() }, got);

    let mut t = TaskRecord::new(key(run.id, "join", 9));
    t.status = TaskStatus::Failed;
    t.attempt = Attempt(3);
    t.iteration = 4;
    t.parent = Some(TaskId(2));
    t.inputs = vec![TaskId(5), TaskId(3)];
    t.foreach_stack = vec![
        ForeachFrame { step: step("outer"), task: TaskId(1), over: ArtifactName::new("xs").unwrap(), index: 1, len: 2 },
        ForeachFrame { step: step("inner"), task: TaskId(2), over: ArtifactName::new("ys").unwrap(), index: 7, len: 8 },
    ];
    t.started_at = Some(Timestamp::from_micros(10));
    t.ended_at = Some(Timestamp::from_micros(20));
    t.lease_deadline = Some(Timestamp::from_micros(30));
    let mut p = Progress::of_units(braid_core::ProgressUnits::new(425, 1000, "rows").unwrap(), "halfway").unwrap();
    p.units.as_mut().unwrap().rate = Some(12.5);
    p.details = Some(serde_json::json!({"cursor": "row-425", "files": ["a", "b"]}));
    t.progress = Some(p.clone());
    t.progress_at = Some(Timestamp::from_micros(15));
    t.error = Some(TaskError { kind: "timeout".into(), message: "took too long".into() });
    t.origin = Some((RunId::generate(), TaskId(77)));
    t.eta = Some(Timestamp::from_micros(99));
    for i in 0..40 {
        t.push_event(TaskEvent {
            at: Timestamp::from_micros(i),
            attempt: Attempt(2),
            kind: if i % 10 == 0 { TaskEventKind::Stalled } else { TaskEventKind::Progress },
            percent: Some(i as f32),
            message: format!("event {i}"),
        });
    }
    assert_eq!(t.events.len(), MAX_TASK_EVENTS);
    assert_eq!(t.events[0].message, "event 0", "warnings are kept");
    assert_eq!(t.events.iter().filter(|e| e.kind == TaskEventKind::Stalled).count(), 4);
    assert_eq!(t.events[1].message, "event 9", "the oldest progress reports (1 to 8) went first");
    assert_eq!(t.events[2].message, "event 10");
    applied(&store.records.write_tasks(vec![TaskWrite::new(t.clone())]).await.unwrap());
    let got = store.records.get_task(&flow(), run.id, TaskId(9)).await.unwrap().unwrap();
    assert_eq!(TaskRecord { revision: 1, ..t }, got);
    assert_eq!(got.foreach_index(), Some(7));
    // Progress units and details alone (nothing else rarely read) are kept too.
    let mut only = TaskRecord::new(key(run.id, "start", 10));
    only.status = TaskStatus::Running;
    only.progress = Some(p);
    applied(&store.records.write_tasks(vec![TaskWrite::new(only.clone())]).await.unwrap());
    let only_got = store.records.get_task(&flow(), run.id, TaskId(10)).await.unwrap().unwrap();
    assert_eq!(only_got.progress, only.progress, "progress units and details, read back");
    // A caught failure alone (a succeeded task with no error) is kept too.
    let mut caught = TaskRecord::new(key(run.id, "start", 11));
    caught.status = TaskStatus::Succeeded;
    caught.caught = Some(CaughtFailure {
        artifact: "end_ex".into(),
        attempt: Attempt(3),
        error: TaskError { kind: "panic".into(), message: "index out of bounds".into() },
    });
    applied(&store.records.write_tasks(vec![TaskWrite::new(caught.clone())]).await.unwrap());
    let caught_got = store.records.get_task(&flow(), run.id, TaskId(11)).await.unwrap().unwrap();
    assert_eq!((caught_got.caught, caught_got.error), (caught.caught, None), "a caught failure, read back");

    let mut art = artifact(store, "xs", 5).await;
    art.elements = Some(ElementsRef { key: BlobKey::of(b"manifest"), len: 12 });
    let w = TaskWrite { artifacts: Some(vec![art.clone()]), ..TaskWrite::new(got) };
    applied(&store.records.write_tasks(vec![w]).await.unwrap());
    assert_eq!(store.records.task_artifacts(&flow(), run.id, TaskId(9)).await.unwrap(), vec![art]);

    // Small values may travel inline in their record; reads verify them like blobs.
    let enc = codec::encode(&"tiny").unwrap();
    let mut tiny = ArtifactRecord {
        name: ArtifactName::new("tiny").unwrap(),
        key: BlobKey::of(&enc.bytes),
        type_name: enc.type_name,
        size: enc.bytes.len() as u64,
        preview: enc.preview,
        elements: None,
        inline: Some(enc.bytes.clone()),
    };
    let got = store.records.get_task(&flow(), run.id, TaskId(9)).await.unwrap().unwrap();
    let w = TaskWrite { artifacts: Some(vec![tiny.clone()]), ..TaskWrite::new(got) };
    applied(&store.records.write_tasks(vec![w]).await.unwrap());
    let back = store.records.task_artifacts(&flow(), run.id, TaskId(9)).await.unwrap();
    assert_eq!(back, vec![tiny.clone()]);
    assert_eq!(store.artifact_bytes(&back[0]).await.unwrap(), enc.bytes);
    tiny.inline = Some(b"tampered".to_vec());
    let e = store.artifact_bytes(&tiny).await.unwrap_err();
    assert!(e.to_string().contains("artifact `tiny`"), "{e}");
}

async fn run_with_records(store: &Store, tags: &[&str]) -> (RunRecord, Vec<ArtifactRecord>) {
    let mut run = new_run(store).await;
    if !tags.is_empty() {
        let tags: Vec<Tag> = tags.iter().map(|t| Tag::new(t).unwrap()).collect();
        run = store.records.update_tags(&flow(), run.id, &tags, &[]).await.unwrap();
    }
    let a = artifact(store, "a", run.created_at.as_micros() as u64).await;
    let mut b = artifact(store, "b", 7).await;
    b.elements = Some(ElementsRef { key: store.blobs.put(b"manifest".to_vec()).await.unwrap(), len: 1 });
    let mut writes = Vec::new();
    for t in 1..=3u64 {
        let mut w = TaskWrite::new(TaskRecord::new(key(run.id, "s", t)));
        w.artifacts = Some(vec![a.clone(), b.clone()]);
        w.attempt = Some(AttemptRecord {
            attempt: Attempt::FIRST,
            status: TaskStatus::Succeeded,
            started_at: Timestamp::now(),
            ended_at: Some(Timestamp::now()),
            error: None,
        });
        writes.push(w);
    }
    applied(&store.records.write_tasks(writes).await.unwrap());
    let line = |task: u64| LogLine {
        run: run.id,
        task: TaskId(task),
        attempt: Attempt::FIRST,
        seq: 0,
        at: Timestamp::now(),
        level: "INFO".into(),
        line: format!("line of {task}"),
    };
    store.records.append_logs(vec![line(1), line(1), line(2)]).await.unwrap();
    (run, vec![a, b])
}

/// Conformance check: Deleting a run removes its tasks, attempts, artifacts and logs at once, only
/// at its current revision and only while no run resumed from it remains; other runs are untouched.
pub async fn delete_run_removes_everything_under_it_conditionally(store: &Store) {
    let (gone, _) = run_with_records(store, &["nightly"]).await;
    let (kept, kept_arts) = run_with_records(store, &["nightly"]).await;
    let e = store.records.delete_run(&flow(), gone.id, gone.revision + 1).await.unwrap_err();
    assert!(e.is_conflict(), "a stale revision is refused: {e}");
    let other = FlowName::new("other").unwrap();
    assert!(store.records.delete_run(&other, gone.id, gone.revision).await.unwrap_err().is_not_found());

    // A run resumed from `gone` pins it.
    let mut resumed = RunRecord::new(flow(), RunId::generate());
    resumed.origin_run = Some(gone.id);
    store.records.create_run(&resumed).await.unwrap();
    let e = store.records.delete_run(&flow(), gone.id, gone.revision).await.unwrap_err();
    assert!(e.is_conflict() && e.to_string().contains(&resumed.id.to_string()), "{e}");
    store.records.delete_run(&flow(), resumed.id, 1).await.unwrap();

    let d = store.records.delete_run(&flow(), gone.id, gone.revision).await.unwrap();
    assert_eq!(d, RunDeletion { tasks: 3, attempts: 3, artifacts: 6, log_lines: 3 });
    assert!(store.records.get_run(&flow(), gone.id).await.unwrap().is_none());
    assert!(store.records.get_task(&flow(), gone.id, TaskId(1)).await.unwrap().is_none());
    assert!(store.records.list_tasks(&flow(), gone.id, &TaskQuery::default()).await.unwrap().items.is_empty());
    assert!(store.records.task_artifacts(&flow(), gone.id, TaskId(1)).await.unwrap().is_empty());
    assert!(store.records.list_attempts(&flow(), gone.id, TaskId(1)).await.unwrap().is_empty());
    assert!(store.records.read_logs(&flow(), gone.id, TaskId(1), 0, 0).await.unwrap().is_empty());
    let tagged = RunQuery { tag: Some(Tag::new("nightly").unwrap()), ..Default::default() };
    let ids: Vec<RunId> = store.records.list_runs(&flow(), &tagged).await.unwrap().items.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![kept.id], "the tag index lost the deleted run");
    assert!(store.records.delete_run(&flow(), gone.id, gone.revision).await.unwrap_err().is_not_found());

    // The other run is whole, and a new run may reuse nothing of the deleted one by accident.
    assert_eq!(store.records.task_artifacts(&flow(), kept.id, TaskId(2)).await.unwrap(), kept_arts);
    assert_eq!(store.records.read_logs(&flow(), kept.id, TaskId(1), 0, 0).await.unwrap().len(), 2);
    assert_eq!(store.records.list_attempts(&flow(), kept.id, TaskId(3)).await.unwrap().len(), 1);
    for a in &kept_arts {
        assert!(store.blobs.exists(&a.key).await.unwrap(), "deleting records never deletes blobs");
    }
}

/// Conformance check: Blob references list every artifact's value and elements manifest, page by
/// page, without losing any.
pub async fn artifact_blob_refs_cover_values_and_manifests_in_pages(store: &Store) {
    let (r1, arts1) = run_with_records(store, &[]).await;
    let (r2, arts2) = run_with_records(store, &[]).await;
    let mut want: BTreeSet<(RunId, BlobKey)> = BTreeSet::new();
    for (run, arts) in [(r1.id, &arts1), (r2.id, &arts2)] {
        for a in arts {
            want.insert((run, a.key));
            if let Some(e) = a.elements {
                want.insert((run, e.key));
            }
        }
    }
    for limit in [1usize, 2, 5, 0] {
        let mut got: Vec<BlobRef> = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let page = store.records.artifact_blob_refs(after.clone(), limit).await.unwrap();
            assert!(!page.items.is_empty() || page.next.is_none(), "an empty page ends the list");
            got.extend(page.items);
            pages += 1;
            assert!(pages < 100, "pagination does not end");
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        // 2 runs x 3 tasks x (a + b + b's manifest)
        assert_eq!(got.len(), 18, "limit {limit}: every reference once per row");
        let set: BTreeSet<(RunId, BlobKey)> = got.iter().map(|r| (r.run, r.key)).collect();
        assert_eq!(set, want, "limit {limit}");
    }
    assert!(store.records.artifact_blob_refs(Some("garbage".into()), 10).await.is_err());
}

/// Conformance check: Blobs list in key order with size and time stored, and only those stored
/// before the cut-off are deleted.
pub async fn blobs_listed_and_deleted_by_age(store: &Store) {
    let small = store.blobs.put(b"a small blob".to_vec()).await.unwrap();
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let large = store.blobs.put(big.clone()).await.unwrap();
    let third = store.blobs.put(vec![3u8; 10]).await.unwrap();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store.blobs.list(after, 1).await.unwrap();
        listed.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let keys: Vec<BlobKey> = listed.iter().map(|b| b.key).collect();
    let mut sorted = vec![small, large, third];
    sorted.sort();
    assert_eq!(keys, sorted, "every blob once, in key order");
    let size = |k: BlobKey| listed.iter().find(|b| b.key == k).unwrap().size;
    assert_eq!((size(small), size(large)), (12, 100_000));
    let before_puts = Timestamp::from_micros(listed.iter().map(|b| b.put_at.as_micros()).min().unwrap() - 1);

    // Stored after the cutoff: kept.
    assert_eq!(store.blobs.delete_if_older(&[small, large], before_puts).await.unwrap(), vec![None, None]);
    assert!(store.blobs.exists(&small).await.unwrap() && store.blobs.exists(&large).await.unwrap());

    // A large blob stored again after the cutoff is younger than it: kept. Over a second
    // apart: S3 keeps an object's time in whole seconds.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let cutoff = Timestamp::now();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    store.blobs.put(big.clone()).await.unwrap();
    let missing = BlobKey::of(b"never stored");
    let freed = store.blobs.delete_if_older(&[small, large, missing], cutoff).await.unwrap();
    assert_eq!(freed, vec![Some(12), None, None]);
    assert!(store.blobs.get(&small).await.unwrap_err().is_not_found());
    assert_eq!(store.blobs.get(&large).await.unwrap(), big);

    let later = Timestamp::from_micros(Timestamp::now().as_micros() + 1_000_000);
    assert_eq!(store.blobs.delete_if_older(&[large], later).await.unwrap(), vec![Some(100_000)]);
    assert!(!store.blobs.exists(&large).await.unwrap());
    let left: Vec<BlobKey> = store.blobs.list(None, 0).await.unwrap().items.iter().map(|b| b.key).collect();
    assert_eq!(left, vec![third]);
    // Deleted content can be stored again.
    assert_eq!(store.blobs.put(big.clone()).await.unwrap(), large);
    assert_eq!(store.blobs.get(&large).await.unwrap(), big);
}
