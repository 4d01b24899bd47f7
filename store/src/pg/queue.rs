//! The PostgreSQL task queue: one row per queued task, deleted when it finishes, so the
//! table holds only what waits or runs; claims take rows with `FOR UPDATE SKIP LOCKED`
//! (concurrent workers skip each other's rows instead of waiting on them) and stamp each
//! with a token from a sequence, the fencing token every later call must name. Queueing
//! or handing back a task sends `NOTIFY braid_queue, '<queue>'` in the same statement;
//! waiting workers hear it through one `LISTEN` connection per store handle, outside the
//! pool, reconnected when it drops (a wait then falls back to its timeout).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use braid_core::{FlowName, RunId, TaskId, Timestamp};
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use super::records::{get, read, retry};
use super::{Db, Fail, PgResult};
use crate::error::{Error, Result};
use crate::queue::{Claim, QueueCounts, QueueInfo, QueuedTask, Reply, TaskQueue, Wake, reply_key};

/// Migration 6: the task queue. The partial index serves the claim of ready rows in
/// priority order; the second finds expired leases without reading the waiting rows.
pub(crate) const QUEUE_MIGRATION: &str = r#"
CREATE SEQUENCE task_queue_tokens;
CREATE TABLE task_queue (
    flow           TEXT NOT NULL,
    run_id         TEXT NOT NULL,
    task_id        BIGINT NOT NULL,
    queue          TEXT NOT NULL,
    priority       INTEGER NOT NULL,
    payload        TEXT NOT NULL,
    seq            BIGSERIAL NOT NULL,
    token          BIGINT,
    worker         TEXT,
    lease_deadline BIGINT,
    dispatches     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (flow, run_id, task_id)
);
CREATE INDEX task_queue_ready ON task_queue (queue, priority DESC, seq) WHERE token IS NULL;
CREATE INDEX task_queue_leased ON task_queue (queue, lease_deadline) WHERE token IS NOT NULL;
CREATE UNIQUE INDEX task_queue_by_token ON task_queue (token) WHERE token IS NOT NULL;
"#;

/// Migration 7: the replies workers leave for the process that runs a task's run
/// (`TaskQueue::complete`), taken oldest first by that process.
pub(crate) const REPLIES_MIGRATION: &str = r#"
CREATE TABLE task_replies (
    seq     BIGSERIAL PRIMARY KEY,
    run_id  TEXT NOT NULL,
    task_id BIGINT NOT NULL,
    token   BIGINT NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX task_replies_by_run ON task_replies (run_id, seq);
"#;

/// Migration 8: caps on how many tasks of a queue are claimed at once.
pub(crate) const LIMITS_MIGRATION: &str = r#"
CREATE TABLE task_queue_limits (
    queue       TEXT PRIMARY KEY,
    max_claimed INTEGER NOT NULL
);
"#;

/// The channel queued tasks are announced on; the payload is the queue's name.
const CHANNEL: &str = "braid_queue";

/// The queue of a PostgreSQL store ([`PgRecords::queue`](super::PgRecords::queue)).
#[derive(Debug, Clone)]
pub struct PgQueue {
    pub(crate) db: Db,
    wake: Arc<Wake>,
    listening: Arc<AtomicBool>,
}

impl PgQueue {
    pub(crate) fn new(db: Db) -> Self {
        PgQueue { db, wake: Arc::default(), listening: Arc::default() }
    }

    /// Starts the `LISTEN` connection once: it wakes this handle's waiters for each
    /// notification, and every waiter after a reconnect (notifications sent while it was
    /// down are lost). It ends when the handle is gone.
    fn listen(&self) {
        if self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        let (config, wake, location) =
            (self.db.config.clone(), Arc::downgrade(&self.wake), self.db.location().to_owned());
        tokio::spawn(async move {
            loop {
                match config.connect(NoTls).await {
                    Ok((client, mut connection)) => {
                        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                        let driver = tokio::spawn(async move {
                            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                            while let Some(m) = messages.next().await {
                                match m {
                                    Ok(AsyncMessage::Notification(n)) => {
                                        if tx.send(n.payload().to_owned()).is_err() {
                                            return;
                                        }
                                    }
                                    Ok(_) => {}
                                    Err(_) => return,
                                }
                            }
                        });
                        match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                            Ok(()) => {
                                if let Some(w) = wake.upgrade() {
                                    w.wake_all();
                                }
                                while let Some(queue) = rx.recv().await {
                                    let Some(w) = wake.upgrade() else { return };
                                    w.wake(&queue);
                                }
                            }
                            Err(e) => tracing::debug!(store = %location, error = %e, "cannot LISTEN for queued tasks"),
                        }
                        driver.abort();
                    }
                    Err(e) => {
                        tracing::debug!(store = %location, error = %e, "no connection to LISTEN for queued tasks")
                    }
                }
                if wake.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn claim_of(row: &Row) -> PgResult<Claim> {
    let flow: String = get(row, "flow")?;
    let run: String = get(row, "run_id")?;
    let bad = |what: &str, reason: String| Fail::Store(Error::Invalid { what: what.to_owned(), reason });
    let payload: String = get(row, "payload")?;
    let mut task = QueuedTask::new(
        get::<String>(row, "queue")?,
        FlowName::new(&flow).map_err(|e| bad("a queued task's flow", e.to_string()))?,
        run.parse::<RunId>().map_err(|e| bad("a queued task's run", e.to_string()))?,
        TaskId(get::<i64>(row, "task_id")? as u64),
    );
    task.priority = get(row, "priority")?;
    task.payload = serde_json::from_str(&payload).map_err(|e| bad("a queued task's payload", e.to_string()))?;
    Ok(Claim {
        task,
        token: get::<i64>(row, "token")? as u64,
        worker: get(row, "worker")?,
        lease_deadline: Timestamp::from_micros(get(row, "lease_deadline")?),
        dispatches: get::<i32>(row, "dispatches")? as u32,
    })
}

#[async_trait]
impl TaskQueue for PgQueue {
    async fn enqueue(&self, tasks: Vec<QueuedTask>) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let mut cols: (Vec<String>, Vec<String>, Vec<i64>, Vec<String>, Vec<i32>, Vec<String>) = Default::default();
        for t in &tasks {
            let payload = serde_json::to_string(&t.payload).map_err(|e| Error::Invalid {
                what: format!("the payload of task {}", t.task),
                reason: e.to_string(),
            })?;
            cols.0.push(t.flow.to_string());
            cols.1.push(t.run.to_string());
            cols.2.push(t.task.0 as i64);
            cols.3.push(t.queue.clone());
            cols.4.push(t.priority);
            cols.5.push(payload);
        }
        let n = tasks.len();
        let cols = &cols;
        retry!(self, || format!("queue {n} tasks"), |c| {
            let stmt = c
                .prepare_cached(
                    "WITH added AS ( \
                       INSERT INTO task_queue (flow, run_id, task_id, queue, priority, payload) \
                       SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::int[], $6::text[]) \
                       ORDER BY 1 ON CONFLICT DO NOTHING RETURNING queue) \
                     SELECT pg_notify('braid_queue', q) FROM (SELECT DISTINCT queue AS q FROM added) d",
                )
                .await?;
            c.query(&stmt, &[&cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5]).await?;
            Ok(())
        })
    }

    async fn claim(
        &self,
        queue: &str,
        worker: &str,
        max: usize,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<Claim>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.wake.claiming(queue);
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let (now_us, deadline) = (now.as_micros(), now.as_micros().saturating_add(micros(lease)));
        retry!(self, || format!("claim tasks of queue {queue}"), |c| {
            // A capped queue: the cap's row is locked first, in a statement of its own,
            // so that the count of what is claimed (read by the next statement, with a
            // fresh snapshot) includes every claim committed before ours.
            let tx = c.transaction().await?;
            let capped = tx
                .query_opt(
                    &tx.prepare_cached("SELECT max_claimed FROM task_queue_limits WHERE queue = $1 FOR UPDATE").await?,
                    &[&queue],
                )
                .await?;
            let limit = match capped {
                None => limit,
                Some(row) => {
                    let cap: i32 = get(&row, "max_claimed")?;
                    let held = tx
                        .query_one(
                            "SELECT count(*) AS n FROM task_queue \
                             WHERE queue = $1 AND token IS NOT NULL AND lease_deadline >= $2",
                            &[&queue, &now_us],
                        )
                        .await?;
                    let held: i64 = get(&held, "n")?;
                    limit.min((i64::from(cap) - held).max(0))
                }
            };
            if limit == 0 {
                tx.commit().await?;
                return Ok(Vec::new());
            }
            // Expired leases first (few, and waiting longest), then ready rows by
            // priority: each statement walks its own partial index in its order and
            // stops at the limit. A hot queue table is mostly dead rows between
            // vacuums, and its statistics (empty when created) make the planner scan it
            // whole and sort: measured, five 10,000-task runs on one database took 5.2,
            // 6.5, 8.8, 11.1 and 14.5 s, each claim reading every dead row of the runs
            // before. Hence no sequential or bitmap scans in this transaction.
            tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off").await?;
            let update = |pick: &str| {
                format!(
                    "WITH picked AS ({pick} FOR UPDATE SKIP LOCKED) \
                     UPDATE task_queue q SET token = nextval('task_queue_tokens'), worker = $3, \
                       lease_deadline = $4, dispatches = q.dispatches + 1 \
                     FROM picked WHERE q.flow = picked.flow AND q.run_id = picked.run_id AND q.task_id = picked.task_id \
                     RETURNING q.flow, q.run_id, q.task_id, q.queue, q.priority, q.payload, q.seq, q.token, \
                       q.worker, q.lease_deadline, q.dispatches"
                )
            };
            let expired = tx
                .prepare_cached(&update(
                    "SELECT flow, run_id, task_id FROM task_queue \
                     WHERE queue = $1 AND token IS NOT NULL AND lease_deadline < $5 \
                     ORDER BY lease_deadline LIMIT $2",
                ))
                .await?;
            let mut rows = tx.query(&expired, &[&queue, &limit, &worker, &deadline, &now_us]).await?;
            let rest = limit - rows.len() as i64;
            if rest > 0 {
                let ready = tx
                    .prepare_cached(&update(
                        "SELECT flow, run_id, task_id FROM task_queue \
                         WHERE queue = $1 AND token IS NULL ORDER BY priority DESC, seq LIMIT $2",
                    ))
                    .await?;
                rows.extend(tx.query(&ready, &[&queue, &rest, &worker, &deadline]).await?);
            }
            tx.commit().await?;
            let mut claims: Vec<(i32, i64, Claim)> = Vec::with_capacity(rows.len());
            for r in &rows {
                claims.push((get(r, "priority")?, get(r, "seq")?, claim_of(r)?));
            }
            claims.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            Ok(claims.into_iter().map(|(_, _, c)| c).collect())
        })
    }

    async fn extend(&self, worker: &str, tokens: &[u64], lease: Duration, now: Timestamp) -> Result<Vec<u64>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = tokens.iter().map(|t| *t as i64).collect();
        let (now_us, deadline) = (now.as_micros(), now.as_micros().saturating_add(micros(lease)));
        let ids = &ids;
        retry!(self, || format!("extend the leases of worker {worker}"), |c| {
            let stmt = c
                .prepare_cached(
                    "UPDATE task_queue SET lease_deadline = $1 \
                     WHERE token = ANY($2) AND worker = $3 AND lease_deadline >= $4 RETURNING token",
                )
                .await?;
            let rows = c.query(&stmt, &[&deadline, ids, &worker, &now_us]).await?;
            let mut out =
                rows.iter().map(|r| get::<i64>(r, "token").map(|t| t as u64)).collect::<PgResult<Vec<_>>>()?;
            out.sort_unstable();
            Ok(out)
        })
    }

    async fn finish(&self, token: u64) -> Result<bool> {
        let id = token as i64;
        retry!(self, || format!("finish the queued task of claim {token}"), |c| {
            let stmt = c.prepare_cached("DELETE FROM task_queue WHERE token = $1").await?;
            Ok(c.execute(&stmt, &[&id]).await? == 1)
        })
    }

    async fn release(&self, token: u64) -> Result<bool> {
        let id = token as i64;
        retry!(self, || format!("hand back the queued task of claim {token}"), |c| {
            let stmt = c
                .prepare_cached(
                    "WITH back AS (UPDATE task_queue SET token = NULL, worker = NULL, lease_deadline = NULL, \
                       dispatches = greatest(dispatches - 1, 0) WHERE token = $1 RETURNING queue) \
                     SELECT pg_notify('braid_queue', queue) FROM back",
                )
                .await?;
            Ok(c.query(&stmt, &[&id]).await?.len() == 1)
        })
    }

    async fn complete(&self, token: u64, body: serde_json::Value) -> Result<bool> {
        let id = token as i64;
        let body = serde_json::to_string(&body)
            .map_err(|e| Error::Invalid { what: format!("the reply of claim {token}"), reason: e.to_string() })?;
        let body = &body;
        retry!(self, || format!("complete the queued task of claim {token}"), |c| {
            // One statement: the claim's row goes and its reply comes, or neither.
            let stmt = c
                .prepare_cached(
                    "WITH done AS (DELETE FROM task_queue WHERE token = $1 RETURNING run_id, task_id, token), \
                     added AS (INSERT INTO task_replies (run_id, task_id, token, body) \
                       SELECT run_id, task_id, token, $2 FROM done RETURNING run_id) \
                     SELECT pg_notify('braid_queue', 'reply/' || run_id) FROM added",
                )
                .await?;
            Ok(c.query(&stmt, &[&id, body]).await?.len() == 1)
        })
    }

    async fn complete_many(&self, done: Vec<(u64, serde_json::Value)>) -> Result<Vec<bool>> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<i64> = done.iter().map(|(t, _)| *t as i64).collect();
        let mut bodies = Vec::with_capacity(done.len());
        for (token, body) in &done {
            bodies.push(
                serde_json::to_string(body).map_err(|e| Error::Invalid {
                    what: format!("the reply of claim {token}"),
                    reason: e.to_string(),
                })?,
            );
        }
        let n = done.len();
        let (tokens, bodies) = (&tokens, &bodies);
        let applied: std::collections::HashSet<i64> = retry!(self, || format!("complete {n} queued tasks"), |c| {
            // One statement: each current claim's row goes and its reply comes; one
            // notification per run that got replies.
            let stmt = c
                .prepare_cached(
                    "WITH input AS (SELECT * FROM unnest($1::int8[], $2::text[]) AS i(token, body)), \
                         done AS (DELETE FROM task_queue q USING input i WHERE q.token = i.token \
                           RETURNING q.run_id, q.task_id, q.token, i.body), \
                         added AS (INSERT INTO task_replies (run_id, task_id, token, body) \
                           SELECT run_id, task_id, token, body FROM done RETURNING run_id, token), \
                         notified AS (SELECT count(pg_notify('braid_queue', 'reply/' || r)) AS n \
                           FROM (SELECT DISTINCT run_id AS r FROM added) d) \
                         SELECT a.token FROM added a CROSS JOIN notified",
                )
                .await?;
            let rows = c.query(&stmt, &[tokens, bodies]).await?;
            rows.iter().map(|r| get::<i64>(r, "token")).collect::<PgResult<_>>()
        })?;
        Ok(tokens.iter().map(|t| applied.contains(t)).collect())
    }

    async fn replies(&self, run: RunId, max: usize) -> Result<Vec<Reply>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.wake.claiming(&reply_key(run));
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let run_s = run.to_string();
        retry!(self, || format!("read the replies of run {run}"), |c| {
            // Through the index, in its order: a run's acknowledged replies stay as dead
            // rows until a vacuum, and a bitmap scan and sort of them (the plan chosen
            // for a table without statistics) made each read cost 1.7 ms by the end of
            // a 10,000-task run, a tenth of the server's time.
            let tx = c.transaction().await?;
            tx.batch_execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off").await?;
            let stmt = tx
                .prepare_cached(
                    "SELECT seq, task_id, token, body FROM task_replies WHERE run_id = $1 ORDER BY seq LIMIT $2",
                )
                .await?;
            let rows = tx.query(&stmt, &[&run_s, &limit]).await?;
            tx.commit().await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let body: String = get(r, "body")?;
                let body = serde_json::from_str(&body).map_err(|e| {
                    Fail::Store(Error::Invalid { what: format!("a reply of run {run}"), reason: e.to_string() })
                })?;
                out.push(Reply {
                    run,
                    task: TaskId(get::<i64>(r, "task_id")? as u64),
                    token: get::<i64>(r, "token")? as u64,
                    seq: get::<i64>(r, "seq")? as u64,
                    body,
                });
            }
            Ok(out)
        })
    }

    async fn ack_replies(&self, run: RunId, seqs: &[u64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = seqs.iter().map(|s| *s as i64).collect();
        let ids = &ids;
        retry!(self, || format!("remove {} replies of run {run}", ids.len()), |c| {
            let stmt = c.prepare_cached("DELETE FROM task_replies WHERE seq = ANY($1)").await?;
            c.execute(&stmt, &[ids]).await?;
            Ok(())
        })
    }

    async fn wait_replies(&self, run: RunId, timeout: Duration) {
        self.listen();
        self.wake.wait(&reply_key(run), timeout).await;
    }

    async fn clear_run(&self, run: RunId) -> Result<u64> {
        let run_s = run.to_string();
        let run_s = &run_s;
        retry!(self, || format!("clear the queue of run {run}"), |c| {
            let tasks = c.execute("DELETE FROM task_queue WHERE run_id = $1", &[run_s]).await?;
            c.execute("DELETE FROM task_replies WHERE run_id = $1", &[run_s]).await?;
            Ok(tasks)
        })
    }

    async fn set_limit(&self, queue: &str, limit: Option<u32>) -> Result<()> {
        retry!(self, || format!("set the cap of queue {queue}"), |c| {
            match limit {
                Some(l) => {
                    let l = i32::try_from(l).unwrap_or(i32::MAX);
                    c.execute(
                        "INSERT INTO task_queue_limits (queue, max_claimed) VALUES ($1, $2) \
                         ON CONFLICT (queue) DO UPDATE SET max_claimed = EXCLUDED.max_claimed",
                        &[&queue, &l],
                    )
                    .await?;
                }
                None => {
                    c.execute("DELETE FROM task_queue_limits WHERE queue = $1", &[&queue]).await?;
                }
            }
            // A raised cap may let waiting workers claim at once.
            c.execute("SELECT pg_notify('braid_queue', $1)", &[&queue]).await?;
            Ok(())
        })
    }

    async fn queues(&self, now: Timestamp) -> Result<Vec<QueueInfo>> {
        let now_us = now.as_micros();
        read!(self, "list the queues".to_owned(), |c| {
            let rows = c
                .query(
                    "SELECT coalesce(q.queue, l.queue) AS name, coalesce(q.ready, 0) AS ready, \
                            coalesce(q.claimed, 0) AS claimed, l.max_claimed \
                     FROM (SELECT queue, \
                             count(*) FILTER (WHERE token IS NULL OR lease_deadline < $1) AS ready, \
                             count(*) FILTER (WHERE token IS NOT NULL AND lease_deadline >= $1) AS claimed \
                           FROM task_queue GROUP BY queue) q \
                     FULL JOIN task_queue_limits l ON l.queue = q.queue ORDER BY 1",
                    &[&now_us],
                )
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(QueueInfo {
                    name: get(r, "name")?,
                    counts: QueueCounts {
                        ready: get::<i64>(r, "ready")? as u64,
                        claimed: get::<i64>(r, "claimed")? as u64,
                    },
                    limit: get::<Option<i32>>(r, "max_claimed")?.map(|l| l.max(0) as u32),
                });
            }
            Ok(out)
        })
    }

    async fn counts(&self, queue: &str, now: Timestamp) -> Result<QueueCounts> {
        let now_us = now.as_micros();
        read!(self, format!("count the tasks of queue {queue}"), |c| {
            let row = c
                .query_one(
                    "SELECT count(*) FILTER (WHERE token IS NULL OR lease_deadline < $2) AS ready, \
                            count(*) FILTER (WHERE token IS NOT NULL AND lease_deadline >= $2) AS claimed \
                     FROM task_queue WHERE queue = $1",
                    &[&queue, &now_us],
                )
                .await?;
            Ok(QueueCounts { ready: get::<i64>(&row, "ready")? as u64, claimed: get::<i64>(&row, "claimed")? as u64 })
        })
    }

    async fn wait(&self, queue: &str, timeout: Duration) {
        self.listen();
        self.wake.wait(queue, timeout).await;
    }
}
