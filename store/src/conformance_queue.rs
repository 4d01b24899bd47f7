//! The task queue's part of the conformance suite: every backend with a queue
//! ([`Store::queue`]) passes these; a backend without one (fs) has nothing to check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use braid_core::{FlowName, RunId, TaskId, Timestamp};

use crate::*;

fn queued(queue: &str, run: RunId, task: u64, priority: i32) -> QueuedTask {
    let mut t = QueuedTask::new(queue, FlowName::new("conf").unwrap(), run, TaskId(task));
    t.priority = priority;
    t.payload = serde_json::json!({ "task": task });
    t
}

const T0: Timestamp = Timestamp(1_800_000_000_000_000);

fn at(secs: u64) -> Timestamp {
    T0.plus(Duration::from_secs(secs))
}

/// Claims come highest priority first, then in queue order; a task queued twice is
/// queued once; a claimed task is not claimed again while its lease holds.
pub async fn queue_claims_by_priority_then_age_once(store: &Store) {
    let Some(q) = store.queue() else { return };
    let run = RunId::generate();
    let tasks =
        vec![queued("q1", run, 1, 0), queued("q1", run, 2, 5), queued("q1", run, 3, 0), queued("q1", run, 4, 5)];
    q.enqueue(tasks.clone()).await.unwrap();
    q.enqueue(vec![queued("q1", run, 2, 9), queued("other", run, 9, 0)]).await.unwrap();
    assert_eq!(q.counts("q1", at(0)).await.unwrap(), QueueCounts { ready: 4, claimed: 0 });
    let first = q.claim("q1", "w1", 3, Duration::from_secs(30), at(0)).await.unwrap();
    let ids: Vec<u64> = first.iter().map(|c| c.task.task.0).collect();
    assert_eq!(ids, [2, 4, 1], "priority 5 first (in queue order), then the oldest");
    assert_eq!(first[0].task.priority, 5, "the second enqueue of task 2 changed nothing");
    assert_eq!(first[0].task.payload, serde_json::json!({ "task": 2 }));
    assert!(first.iter().all(|c| c.worker == "w1" && c.dispatches == 1 && c.lease_deadline == at(30)));
    let rest = q.claim("q1", "w2", 10, Duration::from_secs(30), at(1)).await.unwrap();
    assert_eq!(rest.iter().map(|c| c.task.task.0).collect::<Vec<_>>(), [3]);
    assert!(q.claim("q1", "w2", 10, Duration::from_secs(30), at(2)).await.unwrap().is_empty());
    assert_eq!(q.counts("q1", at(2)).await.unwrap(), QueueCounts { ready: 0, claimed: 4 });
    let tokens: BTreeSet<u64> = first.iter().chain(&rest).map(|c| c.token).collect();
    assert_eq!(tokens.len(), 4, "every claim has its own token");
    for c in first.iter().chain(&rest) {
        assert!(q.finish(c.token).await.unwrap());
    }
    assert_eq!(q.counts("q1", at(3)).await.unwrap(), QueueCounts::default(), "finished rows are gone");
    assert_eq!(q.counts("other", at(3)).await.unwrap(), QueueCounts { ready: 1, claimed: 0 });
}

/// Workers claiming at once never get the same task, and together get every one.
pub async fn queue_claims_under_concurrency(store: &Store) {
    let Some(q) = store.queue() else { return };
    let run = RunId::generate();
    q.enqueue((1..=300).map(|i| queued("busy", run, i, (i % 3) as i32)).collect()).await.unwrap();
    let mut workers = Vec::new();
    for w in 0..6 {
        let q: Arc<dyn TaskQueue> = q.clone();
        workers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = q.claim("busy", &format!("w{w}"), 7, Duration::from_secs(60), at(0)).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|c| (c.task.task.0, c.token)));
            }
        }));
    }
    let mut tasks = BTreeSet::new();
    let mut tokens = BTreeSet::new();
    for w in workers {
        for (task, token) in w.await.unwrap() {
            assert!(tasks.insert(task), "task {task} claimed twice");
            assert!(tokens.insert(token), "token {token} handed out twice");
        }
    }
    assert_eq!(tasks.len(), 300);
}

/// A lease that runs out makes the task claimable again, with a new, larger token and
/// its dispatch counted; the old holder's token is refused for everything after that.
/// Heartbeats extend only the caller's own live claims, all in one call.
pub async fn queue_leases_expire_and_fence_the_old_holder(store: &Store) {
    let Some(q) = store.queue() else { return };
    let run = RunId::generate();
    q.enqueue(vec![queued("lease", run, 1, 0), queued("lease", run, 2, 0)]).await.unwrap();
    let old = q.claim("lease", "w1", 2, Duration::from_secs(10), at(0)).await.unwrap();
    let (a, b) = (old[0].token, old[1].token);
    // A heartbeat at 5 s extends both to 15 s; another worker's heartbeat extends nothing.
    assert_eq!(q.extend("w1", &[a, b], Duration::from_secs(10), at(5)).await.unwrap(), [a.min(b), a.max(b)]);
    assert!(q.extend("w2", &[a, b], Duration::from_secs(10), at(5)).await.unwrap().is_empty());
    assert!(q.claim("lease", "w2", 5, Duration::from_secs(10), at(14)).await.unwrap().is_empty(), "still held at 14 s");
    // w1 goes quiet; at 16 s both leases have run out and w2 takes the tasks over.
    let new = q.claim("lease", "w2", 5, Duration::from_secs(10), at(16)).await.unwrap();
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|c| c.dispatches == 2 && c.worker == "w2" && c.token > a.max(b)), "{new:?}");
    // w1 comes back: its heartbeat, its result and its hand-back are all refused.
    assert!(q.extend("w1", &[a, b], Duration::from_secs(10), at(17)).await.unwrap().is_empty());
    assert!(!q.finish(a).await.unwrap(), "a stale token finishes nothing");
    assert!(!q.release(b).await.unwrap(), "a stale token hands nothing back");
    assert_eq!(q.counts("lease", at(17)).await.unwrap(), QueueCounts { ready: 0, claimed: 2 });
    // A draining worker hands a task back: ready at once, for anyone.
    assert!(q.release(new[1].token).await.unwrap());
    let again = q.claim("lease", "w3", 5, Duration::from_secs(10), at(18)).await.unwrap();
    assert_eq!(again.len(), 1);
    // A hand-back is not a lost dispatch: the count is as before the handed-back claim.
    assert_eq!((again[0].task.task, again[0].dispatches), (new[1].task.task, 2));
    assert!(q.finish(new[0].token).await.unwrap());
    assert!(q.finish(again[0].token).await.unwrap());
    assert!(!q.finish(again[0].token).await.unwrap(), "finished once");
    assert_eq!(q.counts("lease", at(19)).await.unwrap(), QueueCounts::default());
}

/// A worker waiting for work is woken when a task is queued or handed back, well before
/// its timeout; with nothing queued it waits the timeout out (its polling fallback).
pub async fn queue_wakes_a_waiting_worker(store: &Store) {
    let Some(q) = store.queue() else { return };
    // The first wait starts PostgreSQL's listener, which wakes everyone once connected
    // (it may have missed notifications); after that, nothing queued waits the timeout.
    q.wait("wake", Duration::from_millis(300)).await;
    let t0 = std::time::Instant::now();
    q.wait("wake", Duration::from_millis(300)).await;
    assert!(t0.elapsed() >= Duration::from_millis(250), "{:?}", t0.elapsed());
    let run = RunId::generate();
    for round in 0..2u64 {
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move {
                let t0 = std::time::Instant::now();
                q.wait("wake", Duration::from_secs(20)).await;
                t0.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        if round == 0 {
            q.enqueue(vec![queued("wake", run, 1, 0)]).await.unwrap();
        } else {
            // A hand-back wakes waiters too.
            let c = q.claim("wake", "w1", 1, Duration::from_secs(30), Timestamp::now()).await.unwrap();
            assert!(q.release(c[0].token).await.unwrap());
        }
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_secs(10), "round {round}: woken only by the timeout ({waited:?})");
    }
    // A task queued after a claim found nothing and before the worker waits: the wait
    // returns at once instead of missing it.
    let c = q.claim("wake", "w1", 10, Duration::from_secs(30), Timestamp::now()).await.unwrap();
    assert!(q.finish(c[0].token).await.unwrap());
    assert!(q.claim("wake", "w1", 10, Duration::from_secs(30), Timestamp::now()).await.unwrap().is_empty());
    q.enqueue(vec![queued("wake", run, 2, 0)]).await.unwrap();
    // (PostgreSQL's notification comes back through the listener: give it a moment.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = std::time::Instant::now();
    q.wait("wake", Duration::from_secs(20)).await;
    assert!(t0.elapsed() < Duration::from_secs(10), "the wake-up before the wait was lost");
}

/// Completing a claim removes its task and leaves one reply for the task's run, in
/// queue order, until acknowledged; a stale claim completes nothing; a reply wakes the
/// run's waiter; clearing a run removes what it still had queued.
pub async fn queue_completes_with_one_reply_per_current_claim(store: &Store) {
    let Some(q) = store.queue() else { return };
    let (run, other) = (RunId::generate(), RunId::generate());
    q.enqueue(vec![queued("rq", run, 1, 0), queued("rq", run, 2, 0), queued("rq", other, 1, 0)]).await.unwrap();
    let claims = q.claim("rq", "w1", 3, Duration::from_secs(5), at(0)).await.unwrap();
    assert_eq!(claims.len(), 3);
    let (t1, t2) = (claims[0].token, claims[1].token);
    // Task 1's lease runs out and another worker takes it: the first claim is stale.
    let again = q.claim("rq", "w2", 1, Duration::from_secs(5), at(10)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].dispatches, 2);
    let retaken = again[0].clone();
    let stale = claims.iter().find(|c| c.task.task == retaken.task.task && c.task.run == retaken.task.run).unwrap();
    assert!(!q.complete(stale.token, serde_json::json!({ "from": "stale" })).await.unwrap(), "a stale claim completed");
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            q.wait_replies(run, Duration::from_secs(20)).await;
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live: Vec<&Claim> = claims.iter().filter(|c| c.token != stale.token).collect();
    for c in &live {
        assert!(q.complete(c.token, serde_json::json!({ "task": c.task.task.0 })).await.unwrap());
    }
    assert!(
        q.complete(retaken.token, serde_json::json!({ "task": retaken.task.task.0, "retaken": true })).await.unwrap()
    );
    let waited = waiter.await.unwrap();
    assert!(waited < Duration::from_secs(10), "a reply did not wake the run's waiter ({waited:?})");
    let mine = q.replies(run, 10).await.unwrap();
    assert_eq!(mine.len(), 2, "{mine:?}");
    assert!(mine.iter().all(|r| r.run == run));
    assert!(mine.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first: {mine:?}");
    assert!(mine.iter().all(|r| r.body.get("from").is_none()), "the stale claim's reply was kept: {mine:?}");
    let tokens: BTreeSet<u64> = mine.iter().map(|r| r.token).collect();
    assert!(tokens.iter().all(|t| [t1, t2, retaken.token].contains(t)), "{tokens:?}");
    // Unacknowledged replies are read again; acknowledged ones are gone (twice is fine).
    assert_eq!(q.replies(run, 10).await.unwrap(), mine);
    assert_eq!(q.replies(run, 1).await.unwrap(), mine[..1]);
    let seqs: Vec<u64> = mine.iter().map(|r| r.seq).collect();
    q.ack_replies(run, &seqs).await.unwrap();
    q.ack_replies(run, &seqs).await.unwrap();
    assert!(q.replies(run, 10).await.unwrap().is_empty());
    assert_eq!(q.replies(other, 10).await.unwrap().len(), 1, "the other run's reply is its own");
    // Many at once: one answer per claim, in order; a stale one stores nothing.
    q.enqueue(vec![queued("rq", run, 4, 0), queued("rq", run, 5, 0)]).await.unwrap();
    let two = q.claim("rq", "w1", 2, Duration::from_secs(5), at(30)).await.unwrap();
    assert_eq!(two.len(), 2);
    let answers = q
        .complete_many(vec![
            (two[0].token, serde_json::json!({ "n": 4 })),
            (stale.token, serde_json::json!({ "from": "stale" })),
            (two[1].token, serde_json::json!({ "n": 5 })),
        ])
        .await
        .unwrap();
    assert_eq!(answers, [true, false, true]);
    let many = q.replies(run, 10).await.unwrap();
    assert_eq!(many.len(), 2, "{many:?}");
    assert!(many.iter().all(|r| r.body.get("n").is_some()), "{many:?}");
    q.ack_replies(run, &many.iter().map(|r| r.seq).collect::<Vec<_>>()).await.unwrap();
    assert!(q.complete_many(Vec::new()).await.unwrap().is_empty());
    // Clearing a run removes its queued tasks and replies, and nothing of other runs.
    q.enqueue(vec![queued("rq", run, 7, 0), queued("rq", other, 8, 0)]).await.unwrap();
    assert_eq!(q.clear_run(run).await.unwrap(), 1);
    assert_eq!(q.counts("rq", at(20)).await.unwrap(), QueueCounts { ready: 1, claimed: 0 });
    assert_eq!(q.clear_run(other).await.unwrap(), 1);
    assert!(q.replies(other, 10).await.unwrap().is_empty());
}

/// A capped queue hands out at most its cap of claims at once, over every worker and
/// under concurrent claims; a finished or expired claim makes room; lifting the cap
/// hands out the rest; `queues` lists counts and caps.
pub async fn queue_caps_claims_at_its_limit(store: &Store) {
    let Some(q) = store.queue() else { return };
    let run = RunId::generate();
    q.enqueue((1..=40).map(|i| queued("capped", run, i, 0)).collect()).await.unwrap();
    q.set_limit("capped", Some(3)).await.unwrap();
    let mut handles = Vec::new();
    for w in 0..8 {
        let q = q.clone();
        handles.push(tokio::spawn(async move {
            q.claim("capped", &format!("w{w}"), 5, Duration::from_secs(30), at(0)).await.unwrap()
        }));
    }
    let mut claims = Vec::new();
    for h in handles {
        claims.extend(h.await.unwrap());
    }
    assert_eq!(claims.len(), 3, "eight workers claiming at once got {} claims under a cap of 3", claims.len());
    assert!(q.claim("capped", "w9", 5, Duration::from_secs(30), at(1)).await.unwrap().is_empty());
    assert!(q.finish(claims[0].token).await.unwrap());
    assert_eq!(
        q.claim("capped", "w9", 5, Duration::from_secs(30), at(1)).await.unwrap().len(),
        1,
        "a finished claim makes room"
    );
    // Past their leases, the claims leave room too.
    assert_eq!(q.claim("capped", "w9", 5, Duration::from_secs(30), at(100)).await.unwrap().len(), 3);
    let listed = q.queues(at(100)).await.unwrap();
    let capped = listed.iter().find(|i| i.name == "capped").unwrap();
    assert_eq!(capped.limit, Some(3));
    assert_eq!(capped.counts, QueueCounts { ready: 36, claimed: 3 });
    q.set_limit("capped", None).await.unwrap();
    assert_eq!(q.claim("capped", "w9", 100, Duration::from_secs(30), at(101)).await.unwrap().len(), 36);
    q.set_limit("idle", Some(1)).await.unwrap();
    let listed = q.queues(at(101)).await.unwrap();
    assert!(listed.iter().any(|i| i.name == "idle" && i.limit == Some(1) && i.counts == QueueCounts::default()));
    assert!(listed.iter().any(|i| i.name == "capped" && i.limit.is_none()));
    q.set_limit("idle", None).await.unwrap();
    q.clear_run(run).await.unwrap();
}
