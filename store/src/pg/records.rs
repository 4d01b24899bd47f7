//! `RecordStore` over PostgreSQL.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use braid_core::{ArtifactName, Attempt, FlowName, RunId, RunStatus, StepName, Tag, TaskId, TaskStatus, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use super::{Db, Fail, PgResult};
use crate::error::{Error, Result};
use crate::record::*;
use crate::rows::{
    ArtifactRow, BlobRefRow, RunRow, StepCountRow, TaskRow, blob_ref_page, parse_artifact_cursor, step_summaries,
    task_extra_json,
};

/// Records of a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgRecords {
    pub(crate) db: Db,
    pub(crate) stats: Arc<Stats>,
}

/// When to refresh the planner's statistics. A table filled by one bulk run has none
/// until autovacuum gets to it (a minute or more), and without them PostgreSQL plans the
/// join of a step's tasks with their artifacts as a scan per task (17 s for 10,000
/// tasks instead of 20 ms). So each time the tasks this handle inserted double (2,000,
/// 4,000, 8,000, ...) it looks, in the background, for a table with more than twice the
/// rows its statistics say, and `ANALYZE`s it.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    inserted: AtomicU64,
    next_analyze: AtomicU64,
    running: AtomicBool,
}

impl PgRecords {
    /// The task queue in the same database.
    pub fn queue(&self) -> super::PgQueue {
        super::PgQueue::new(self.db.clone())
    }

    pub(crate) fn new(db: Db) -> Self {
        PgRecords { db, stats: Arc::new(Stats { next_analyze: AtomicU64::new(2_000), ..Default::default() }) }
    }

    fn inserted(&self, n: u64) {
        let total = self.stats.inserted.fetch_add(n, Ordering::Relaxed) + n;
        if total < self.stats.next_analyze.load(Ordering::Relaxed) || self.stats.running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stats.next_analyze.store(total.saturating_mul(2), Ordering::Relaxed);
        let (db, stats) = (self.db.clone(), self.stats.clone());
        tokio::spawn(async move {
            match db.conn().await {
                Ok(c) => {
                    // Only a table that has outgrown its statistics (by more than twice):
                    // in a database holding many runs, the next run changes nothing a
                    // plan depends on, and `ANALYZE` (a sample of 30,000 rows) cost up to
                    // 0.9 s of the server's CPU each time, three times per 10,000-task run.
                    let stale = c
                        .query(
                            "SELECT c.relname::text AS name FROM pg_class c \
                             JOIN pg_stat_user_tables s ON s.relid = c.oid \
                             WHERE c.relname IN ('tasks', 'artifacts') \
                               AND (c.reltuples < 0 OR s.n_live_tup > 2 * c.reltuples + 1000)",
                            &[],
                        )
                        .await;
                    let names: Vec<String> = match stale {
                        Ok(rows) => rows.iter().filter_map(|r| r.try_get::<_, String>("name").ok()).collect(),
                        Err(e) => {
                            tracing::debug!(store = %db.location(), error = %e, "cannot read table statistics");
                            Vec::new()
                        }
                    };
                    if !names.is_empty()
                        && let Err(e) = c.batch_execute(&format!("ANALYZE {}", names.join(", "))).await
                    {
                        // Statistics are an optimisation: a role that may not analyze
                        // leaves them to autovacuum.
                        tracing::debug!(store = %db.location(), error = %e, "cannot analyze");
                    }
                }
                Err(e) => tracing::debug!(store = %db.location(), error = ?e, "no connection to analyze"),
            }
            stats.running.store(false, Ordering::Release);
        });
    }
}

pub(crate) fn get<'a, T: FromSql<'a>>(row: &'a Row, column: &str) -> PgResult<T> {
    row.try_get(column).map_err(Fail::Pg)
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_micros)
}

fn id_i64(t: TaskId) -> i64 {
    t.0 as i64
}

type Param<'a> = &'a (dyn ToSql + Sync);

/// Runs `$body` with `$c`, a pooled connection; errors name `$ctx`. A body whose
/// connection was lost runs again on a new one (see `Fail::connection_lost`).
macro_rules! read {
    ($self:ident, $ctx:expr, |$c:ident| $body:block) => {{
        let (mut lost, mut since) = (0u32, None);
        loop {
            let r: PgResult<_> = match $self.db.conn().await {
                Err(e) => Err(e),
                Ok(conn) => {
                    let $c = &conn;
                    async { $body }.await
                }
            };
            match r {
                Err(e) if e.connection_lost() => {
                    lost += 1;
                    if !super::reconnect_backoff(&$self.db, &mut since, lost).await {
                        break Err($self.db.err($ctx, e));
                    }
                }
                r => break r.map_err(|e| $self.db.err($ctx, e)),
            }
        }
    }};
}

/// Runs `$body` with `$c`, a pooled connection (`&mut`), again when it failed in a way
/// a second run can cure: a deadlock or a lost unique race (see `Fail::retryable`), or
/// a lost connection (see `Fail::connection_lost`), on a new one. The body does its
/// writes in one transaction, so a failed run left nothing behind. `$ctx` is a closure
/// naming the operation for errors.
macro_rules! retry {
    ($self:ident, $ctx:expr, |$c:ident| $body:block) => {{
        let (mut tries, mut lost, mut since) = (0u32, 0u32, None);
        loop {
            let r: PgResult<_> = match $self.db.conn().await {
                Err(e) => Err(e),
                Ok(mut conn) => {
                    let $c = &mut conn;
                    async { $body }.await
                }
            };
            match r {
                Err(e) if e.retryable() && tries < super::MAX_RETRIES => {
                    tries += 1;
                    super::backoff(&$self.db, tries).await;
                }
                Err(e) if e.connection_lost() => {
                    lost += 1;
                    if !super::reconnect_backoff(&$self.db, &mut since, lost).await {
                        break Err($self.db.err(($ctx)(), e));
                    }
                }
                r => break r.map_err(|e| $self.db.err(($ctx)(), e)),
            }
        }
    }};
}
pub(crate) use {read, retry};

fn json_err(what: String, e: serde_json::Error) -> Fail {
    Fail::Store(Error::Invalid { what, reason: e.to_string() })
}

fn extra_json(t: &TaskRecord) -> PgResult<Option<String>> {
    task_extra_json(t).map_err(|e| json_err(format!("task {}", t.key), e))
}

const TASK_COLUMNS: &str = "run_id, task_id, flow, step, status, attempt, iteration, parent, created_at, started_at, \
    ended_at, lease_deadline, progress_pct, progress_msg, progress_at, extra, revision";
const ARTIFACT_COLUMNS: &str = "name, blob_key, type_name, size, preview, preview_cut, elements_key, elements_len, \
    inline_value";
const RUN_COLUMNS: &str = "run_id, flow, status, created_at, started_at, ended_at, origin_run, name, error, params, \
    tags, meta, revision, lease_holder, lease_renewed, lease_deadline";

/// The columns of many task rows, as arrays for one `UNNEST` statement.
#[derive(Default)]
struct TaskColumns {
    run: Vec<String>,
    task: Vec<i64>,
    flow: Vec<String>,
    step: Vec<String>,
    status: Vec<String>,
    attempt: Vec<i64>,
    foreach_index: Vec<Option<i64>>,
    iteration: Vec<i64>,
    parent: Vec<Option<i64>>,
    created_at: Vec<i64>,
    started_at: Vec<Option<i64>>,
    ended_at: Vec<Option<i64>>,
    lease_deadline: Vec<Option<i64>>,
    progress_pct: Vec<Option<f64>>,
    progress_msg: Vec<Option<String>>,
    progress_at: Vec<Option<i64>>,
    extra: Vec<Option<String>>,
    revision: Vec<i64>,
}

impl TaskColumns {
    fn push(&mut self, t: &TaskRecord, revision: u64) -> PgResult<()> {
        self.run.push(t.key.run.to_string());
        self.task.push(id_i64(t.key.task));
        self.flow.push(t.key.flow.to_string());
        self.step.push(t.key.step.to_string());
        self.status.push(t.status.as_str().to_owned());
        self.attempt.push(i64::from(t.attempt.0));
        self.foreach_index.push(t.foreach_index().map(|i| i as i64));
        self.iteration.push(i64::from(t.iteration));
        self.parent.push(t.parent.map(id_i64));
        self.created_at.push(t.created_at.as_micros());
        self.started_at.push(t.started_at.map(Timestamp::as_micros));
        self.ended_at.push(t.ended_at.map(Timestamp::as_micros));
        self.lease_deadline.push(t.lease_deadline.map(Timestamp::as_micros));
        self.progress_pct.push(t.progress.as_ref().map(|p| f64::from(p.percent)));
        self.progress_msg.push(t.progress.as_ref().map(|p| p.message.clone()));
        self.progress_at.push(t.progress_at.map(Timestamp::as_micros));
        self.extra.push(extra_json(t)?);
        self.revision.push(revision as i64);
        Ok(())
    }

    fn params(&self) -> [Param<'_>; 18] {
        [
            &self.run,
            &self.task,
            &self.flow,
            &self.step,
            &self.status,
            &self.attempt,
            &self.foreach_index,
            &self.iteration,
            &self.parent,
            &self.created_at,
            &self.started_at,
            &self.ended_at,
            &self.lease_deadline,
            &self.progress_pct,
            &self.progress_msg,
            &self.progress_at,
            &self.extra,
            &self.revision,
        ]
    }
}

const TASK_UNNEST: &str = "unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[], \
    $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::float8[], \
    $15::text[], $16::int8[], $17::text[], $18::int8[]) AS v(run_id, task_id, flow, step, status, attempt, \
    foreach_index, iteration, parent, created_at, started_at, ended_at, lease_deadline, progress_pct, progress_msg, \
    progress_at, extra, revision)";

const INSERT_TASKS: &str = "INSERT INTO tasks (run_id, task_id, flow, step, status, attempt, foreach_index, \
    iteration, parent, created_at, started_at, ended_at, lease_deadline, progress_pct, progress_msg, progress_at, \
    extra, revision) SELECT * FROM ";

const UPDATE_TASKS: &str = "UPDATE tasks SET flow = v.flow, step = v.step, status = v.status, attempt = v.attempt, \
    foreach_index = v.foreach_index, iteration = v.iteration, parent = v.parent, created_at = v.created_at, \
    started_at = v.started_at, ended_at = v.ended_at, lease_deadline = v.lease_deadline, \
    progress_pct = v.progress_pct, progress_msg = v.progress_msg, progress_at = v.progress_at, extra = v.extra, \
    revision = v.revision FROM ";

/// The artifact rows of many tasks, as arrays.
#[derive(Default)]
struct ArtifactColumns {
    run: Vec<String>,
    task: Vec<i64>,
    name: Vec<String>,
    key: Vec<Vec<u8>>,
    type_name: Vec<String>,
    size: Vec<i64>,
    preview: Vec<String>,
    cut: Vec<bool>,
    elements_key: Vec<Option<Vec<u8>>>,
    elements_len: Vec<Option<i64>>,
    inline: Vec<Option<Vec<u8>>>,
}

impl ArtifactColumns {
    fn push(&mut self, run: &str, task: i64, a: &ArtifactRecord) {
        self.run.push(run.to_owned());
        self.task.push(task);
        self.name.push(a.name.to_string());
        self.key.push(a.key.0.to_vec());
        self.type_name.push(a.type_name.clone());
        self.size.push(a.size as i64);
        self.preview.push(a.preview.text.clone());
        self.cut.push(a.preview.truncated);
        self.elements_key.push(a.elements.as_ref().map(|e| e.key.0.to_vec()));
        self.elements_len.push(a.elements.as_ref().map(|e| e.len as i64));
        self.inline.push(a.inline.clone());
    }
}

/// The attempt rows of many tasks, as arrays.
#[derive(Default)]
struct AttemptColumns {
    run: Vec<String>,
    task: Vec<i64>,
    attempt: Vec<i64>,
    status: Vec<String>,
    started_at: Vec<i64>,
    ended_at: Vec<Option<i64>>,
    error: Vec<Option<String>>,
}

struct Stored {
    revision: u64,
    attempt: Attempt,
    status: TaskStatus,
    token: Option<u64>,
}

/// A task write as it was decided: rejected, or applied as an insert or an update.
enum Decision {
    Rejected(Rejection),
    Insert,
    Update { revision: u64 },
}

/// Applies `writes` (at most one per task) in the open transaction `tx`; `out[i]` gets
/// the outcome of `writes[i]`.
async fn write_round(
    tx: &deadpool_postgres::Transaction<'_>,
    writes: &[&TaskWrite],
    out: &mut [Option<WriteOutcome>],
) -> PgResult<()> {
    let mut pending: Vec<usize> = (0..writes.len()).collect();
    // Lock order is (run, task) for every writer, so two batches never deadlock on rows.
    pending.sort_by(|&a, &b| {
        let (ka, kb) = (&writes[a].task.key, &writes[b].task.key);
        (ka.run.to_string(), ka.task).cmp(&(kb.run.to_string(), kb.task))
    });
    let lock = tx
        .prepare_cached(
            "SELECT t.run_id, t.task_id, t.revision, t.attempt, t.status, \
             (t.extra::jsonb -> 'dispatch' ->> 'token')::int8 AS claim_token FROM tasks t \
             JOIN unnest($1::text[], $2::int8[]) AS k(run_id, task_id) ON t.run_id = k.run_id AND t.task_id = k.task_id \
             ORDER BY t.run_id, t.task_id FOR UPDATE OF t",
        )
        .await?;
    // A task inserted by another writer between our lock and our insert makes the
    // insert a no-op; those writes go round again, now seeing the stored row.
    for _ in 0..8 {
        if pending.is_empty() {
            return Ok(());
        }
        let runs: Vec<String> = pending.iter().map(|&i| writes[i].task.key.run.to_string()).collect();
        let tasks: Vec<i64> = pending.iter().map(|&i| id_i64(writes[i].task.key.task)).collect();
        let mut stored: HashMap<(String, i64), Stored> = HashMap::new();
        for row in tx.query(&lock, &[&runs, &tasks]).await? {
            let status: String = get(&row, "status")?;
            stored.insert(
                (get(&row, "run_id")?, get(&row, "task_id")?),
                Stored {
                    revision: get::<i64>(&row, "revision")? as u64,
                    attempt: Attempt(get::<i64>(&row, "attempt")? as u32),
                    status: status.parse().unwrap_or(TaskStatus::Failed),
                    token: get::<Option<i64>>(&row, "claim_token")?.map(|t| t as u64),
                },
            );
        }
        let mut inserts = TaskColumns::default();
        let mut insert_idx = Vec::new();
        let mut updates = TaskColumns::default();
        let mut applied: Vec<(usize, u64, bool)> = Vec::new();
        for (&i, (run, task)) in pending.iter().zip(runs.iter().zip(&tasks)) {
            let w = writes[i];
            let s = stored.get(&(run.clone(), *task));
            let check =
                s.map(|s| StoredTask { revision: s.revision, attempt: s.attempt, status: s.status, token: s.token });
            let decision = match check_precondition(&w.task.key, check, w.precondition) {
                Some(reason) => Decision::Rejected(reason),
                None => match s {
                    Some(s) => Decision::Update { revision: s.revision + 1 },
                    None => Decision::Insert,
                },
            };
            match decision {
                Decision::Rejected(reason) => out[i] = Some(WriteOutcome::Rejected { reason }),
                Decision::Insert => {
                    inserts.push(&w.task, 1)?;
                    insert_idx.push(i);
                }
                Decision::Update { revision } => {
                    updates.push(&w.task, revision)?;
                    applied.push((i, revision, true));
                }
            }
        }
        let mut again = Vec::new();
        if !insert_idx.is_empty() {
            let stmt = tx
                .prepare_cached(&format!(
                    "{INSERT_TASKS}{TASK_UNNEST} ON CONFLICT (run_id, task_id) DO NOTHING RETURNING run_id, task_id"
                ))
                .await?;
            let mut inserted: BTreeSet<(String, i64)> = BTreeSet::new();
            for row in tx.query(&stmt, &inserts.params()).await? {
                inserted.insert((get(&row, "run_id")?, get(&row, "task_id")?));
            }
            for (n, &i) in insert_idx.iter().enumerate() {
                if inserted.contains(&(inserts.run[n].clone(), inserts.task[n])) {
                    applied.push((i, 1, false));
                } else {
                    again.push(i);
                }
            }
        }
        if !updates.run.is_empty() {
            let stmt = tx
                .prepare_cached(&format!(
                    "{UPDATE_TASKS}{TASK_UNNEST} WHERE tasks.run_id = v.run_id AND tasks.task_id = v.task_id"
                ))
                .await?;
            tx.execute(&stmt, &updates.params()).await?;
        }
        write_side_rows(tx, writes, &applied).await?;
        for (i, revision, _) in applied {
            out[i] = Some(WriteOutcome::Applied { revision });
        }
        pending = again;
    }
    // Eight rounds of losing insert races to others: give up on this transaction; the
    // caller runs it again.
    Err(Fail::Store(Error::Conflict {
        what: "task batch".into(),
        reason: "other writers kept creating the same tasks; try again".into(),
    }))
}

/// Artifact and attempt rows of the applied writes `(index, revision, existed)`.
async fn write_side_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    writes: &[&TaskWrite],
    applied: &[(usize, u64, bool)],
) -> PgResult<()> {
    let mut replace_runs = Vec::new();
    let mut replace_tasks = Vec::new();
    let mut arts = ArtifactColumns::default();
    let mut atts = AttemptColumns::default();
    for &(i, _, existed) in applied {
        let w = writes[i];
        let run = w.task.key.run.to_string();
        let task = id_i64(w.task.key.task);
        if let Some(list) = &w.artifacts {
            if existed {
                replace_runs.push(run.clone());
                replace_tasks.push(task);
            }
            for a in list {
                arts.push(&run, task, a);
            }
        }
        if let Some(a) = &w.attempt {
            atts.run.push(run.clone());
            atts.task.push(task);
            atts.attempt.push(i64::from(a.attempt.0));
            atts.status.push(a.status.as_str().to_owned());
            atts.started_at.push(a.started_at.as_micros());
            atts.ended_at.push(a.ended_at.map(Timestamp::as_micros));
            atts.error.push(
                a.error
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| json_err(format!("attempt of task {}", w.task.key), e))?,
            );
        }
    }
    if !replace_runs.is_empty() {
        let stmt = tx
            .prepare_cached(
                "DELETE FROM artifacts a USING unnest($1::text[], $2::int8[]) AS k(run_id, task_id) \
                 WHERE a.run_id = k.run_id AND a.task_id = k.task_id",
            )
            .await?;
        tx.execute(&stmt, &[&replace_runs, &replace_tasks]).await?;
    }
    if !arts.run.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO artifacts (run_id, task_id, name, blob_key, type_name, size, preview, preview_cut, \
                 elements_key, elements_len, inline_value) SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], \
                 $4::bytea[], $5::text[], $6::int8[], $7::text[], $8::bool[], $9::bytea[], $10::int8[], $11::bytea[]) \
                 ON CONFLICT (run_id, task_id, name) DO UPDATE SET blob_key = EXCLUDED.blob_key, \
                 type_name = EXCLUDED.type_name, size = EXCLUDED.size, preview = EXCLUDED.preview, \
                 preview_cut = EXCLUDED.preview_cut, elements_key = EXCLUDED.elements_key, \
                 elements_len = EXCLUDED.elements_len, inline_value = EXCLUDED.inline_value",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &arts.run,
                &arts.task,
                &arts.name,
                &arts.key,
                &arts.type_name,
                &arts.size,
                &arts.preview,
                &arts.cut,
                &arts.elements_key,
                &arts.elements_len,
                &arts.inline,
            ],
        )
        .await?;
    }
    if !atts.run.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO attempts (run_id, task_id, attempt, status, started_at, ended_at, error) \
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::int8[], $6::int8[], \
                 $7::text[]) ON CONFLICT (run_id, task_id, attempt) DO UPDATE SET status = EXCLUDED.status, \
                 started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at, error = EXCLUDED.error",
            )
            .await?;
        tx.execute(
            &stmt,
            &[&atts.run, &atts.task, &atts.attempt, &atts.status, &atts.started_at, &atts.ended_at, &atts.error],
        )
        .await?;
    }
    Ok(())
}

/// Applies a whole batch in one transaction: writes of the same task go in rounds, in
/// the order given, so a later write sees the earlier one.
async fn write_batch(conn: &mut deadpool_postgres::Object, writes: &[TaskWrite]) -> PgResult<Vec<WriteOutcome>> {
    let tx = conn.transaction().await?;
    let mut out: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
    let mut seen: HashMap<(RunId, TaskId), usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        let n = seen.entry((w.task.key.run, w.task.key.task)).or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(i);
        *n += 1;
    }
    for round in rounds {
        let ws: Vec<&TaskWrite> = round.iter().map(|&i| &writes[i]).collect();
        let mut res: Vec<Option<WriteOutcome>> = vec![None; ws.len()];
        write_round(&tx, &ws, &mut res).await?;
        for (slot, r) in round.into_iter().zip(res) {
            out[slot] = r;
        }
    }
    tx.commit().await?;
    out.into_iter()
        .map(|o| {
            o.ok_or_else(|| {
                Fail::Store(Error::Invalid { what: "task batch".into(), reason: "a write got no outcome".into() })
            })
        })
        .collect()
}

impl PgRecords {
    fn run_from_row(&self, row: &Row) -> PgResult<RunRecord> {
        let raw = RunRow {
            id: get(row, "run_id")?,
            flow: get(row, "flow")?,
            status: get(row, "status")?,
            params: get(row, "params")?,
            tags: get(row, "tags")?,
            meta: get(row, "meta")?,
            origin_run: get(row, "origin_run")?,
            created_at: get(row, "created_at")?,
            started_at: get(row, "started_at")?,
            ended_at: get(row, "ended_at")?,
            name: get(row, "name")?,
            error: get(row, "error")?,
            revision: get(row, "revision")?,
            lease_holder: get(row, "lease_holder")?,
            lease_renewed: get(row, "lease_renewed")?,
            lease_deadline: get(row, "lease_deadline")?,
        };
        Ok(raw.decode(self.db.location())?)
    }

    fn task_from_row(&self, flow_hint: &FlowName, row: &Row) -> PgResult<TaskRecord> {
        let raw = TaskRow {
            run: get(row, "run_id")?,
            task: get(row, "task_id")?,
            flow: get(row, "flow")?,
            step: get(row, "step")?,
            status: get(row, "status")?,
            attempt: get(row, "attempt")?,
            iteration: get(row, "iteration")?,
            parent: get(row, "parent")?,
            created_at: get(row, "created_at")?,
            started_at: get(row, "started_at")?,
            ended_at: get(row, "ended_at")?,
            lease_deadline: get(row, "lease_deadline")?,
            progress_pct: get(row, "progress_pct")?,
            progress_msg: get(row, "progress_msg")?,
            progress_at: get(row, "progress_at")?,
            extra: get(row, "extra")?,
            revision: get(row, "revision")?,
        };
        Ok(raw.decode(Some(flow_hint), self.db.location())?)
    }

    fn artifact_from_row(&self, row: &Row, what: &dyn Fn() -> String) -> PgResult<ArtifactRecord> {
        let raw = ArtifactRow {
            name: get(row, "name")?,
            blob_key: get(row, "blob_key")?,
            type_name: get(row, "type_name")?,
            size: get(row, "size")?,
            preview: get(row, "preview")?,
            preview_cut: get(row, "preview_cut")?,
            elements_key: get(row, "elements_key")?,
            elements_len: get(row, "elements_len")?,
            inline_value: get(row, "inline_value")?,
        };
        Ok(raw.decode(what, self.db.location())?)
    }
}

/// Writes a run's row and its tag rows (replacing any) in the open transaction.
async fn put_run(tx: &deadpool_postgres::Transaction<'_>, r: &RunRecord, insert: bool) -> PgResult<u64> {
    let json = |v: serde_json::Result<String>| v.map_err(|e| json_err(format!("run {}/{}", r.flow, r.id), e));
    let params = json(serde_json::to_string(&r.params))?;
    let tags = json(serde_json::to_string(&r.tags))?;
    let meta = json(serde_json::to_string(&r.meta))?;
    let id = r.id.to_string();
    let origin = r.origin_run.map(|o| o.to_string());
    let revision = if insert { 1 } else { r.revision as i64 };
    let values: [Param<'_>; 16] = [
        &id,
        &r.flow.as_str(),
        &r.status.as_str(),
        &r.created_at.as_micros(),
        &r.started_at.map(Timestamp::as_micros),
        &r.ended_at.map(Timestamp::as_micros),
        &origin,
        &r.name,
        &r.error,
        &params,
        &tags,
        &meta,
        &revision,
        &r.lease.as_ref().map(|l| l.holder.as_str()),
        &r.lease.as_ref().map(|l| l.renewed_at.as_micros()),
        &r.lease.as_ref().map(|l| l.deadline.as_micros()),
    ];
    let n = if insert {
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT (run_id) DO NOTHING"
            ))
            .await?;
        tx.execute(&stmt, &values).await?
    } else {
        let stmt = tx
            .prepare_cached(
                "UPDATE runs SET status = $3, created_at = $4, started_at = $5, ended_at = $6, origin_run = $7, \
                 name = $8, error = $9, params = $10, tags = $11, meta = $12, revision = revision + 1, \
                 lease_holder = $14, lease_renewed = $15, lease_deadline = $16 \
                 WHERE run_id = $1 AND flow = $2 AND revision = $13",
            )
            .await?;
        tx.execute(&stmt, &values).await?
    };
    if n == 0 {
        return Ok(0);
    }
    let del = tx.prepare_cached("DELETE FROM run_tags WHERE run_id = $1").await?;
    if !insert {
        tx.execute(&del, &[&id]).await?;
    }
    if !r.tags.is_empty() {
        let tag_list: Vec<String> = r.tags.iter().map(|t| t.to_string()).collect();
        let ins =
            tx.prepare_cached("INSERT INTO run_tags (run_id, tag) SELECT $1, t FROM unnest($2::text[]) AS t").await?;
        tx.execute(&ins, &[&id, &tag_list]).await?;
    }
    Ok(n)
}

#[async_trait]
impl RecordStore for PgRecords {
    async fn put_flow(&self, flow: FlowRecord) -> Result<()> {
        let spec = serde_json::to_string(&flow.spec)
            .map_err(|e| Error::Invalid { what: format!("spec of flow {}", flow.name), reason: e.to_string() })?;
        let (name, at) = (flow.name.to_string(), flow.updated_at.as_micros());
        retry!(self, || format!("write flow {name}"), |c| {
            let (name, spec) = (&name, &spec);

            let stmt = c
                            .prepare_cached(
                                "INSERT INTO flows (name, spec, updated_at) VALUES ($1, $2, $3) \
                                 ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, updated_at = EXCLUDED.updated_at",
                            )
                            .await?;
            c.execute(&stmt, &[name, spec, &at]).await?;
            Ok(())
        })
    }

    async fn get_flow(&self, name: &FlowName) -> Result<Option<FlowRecord>> {
        read!(self, "read flow", |c| {
            let stmt = c.prepare_cached("SELECT spec, updated_at FROM flows WHERE name = $1").await?;
            let Some(row) = c.query_opt(&stmt, &[&name.as_str()]).await? else { return Ok(None) };
            let spec: String = get(&row, "spec")?;
            Ok(Some(FlowRecord {
                name: name.clone(),
                spec: serde_json::from_str(&spec).map_err(|e| self.db.corrupt(format!("flow row {name}"), e))?,
                updated_at: Timestamp::from_micros(get(&row, "updated_at")?),
            }))
        })
    }

    async fn list_flows(&self) -> Result<Vec<FlowRecord>> {
        read!(self, "list flows", |c| {
            let stmt = c.prepare_cached("SELECT name, spec, updated_at FROM flows ORDER BY name").await?;
            let mut out = Vec::new();
            for row in c.query(&stmt, &[]).await? {
                let name: String = get(&row, "name")?;
                let spec: String = get(&row, "spec")?;
                let what = || format!("flow row {name}");
                out.push(FlowRecord {
                    name: FlowName::new(&name).map_err(|e| self.db.corrupt(what(), e))?,
                    spec: serde_json::from_str(&spec).map_err(|e| self.db.corrupt(what(), e))?,
                    updated_at: Timestamp::from_micros(get(&row, "updated_at")?),
                });
            }
            Ok(out)
        })
    }

    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        let what = format!("run {}/{}", run.flow, run.id);
        retry!(self, || format!("create {what}"), |c| {
            let tx = c.transaction().await?;
            if let Some(origin) = run.origin_run.filter(|o| *o != run.id) {
                // Shared with other resumes of the origin, exclusive with `delete_run` of it.
                let stmt = tx
                    .prepare_cached("SELECT pg_advisory_xact_lock_shared(hashtextextended('braid-origin:' || $1, 0))")
                    .await?;
                tx.execute(&stmt, &[&origin.to_string()]).await?;
            }
            if put_run(&tx, run, true).await? == 0 {
                return Err(Fail::Store(Error::Conflict {
                    what: format!("run {}/{}", run.flow, run.id),
                    reason: "a run with this id exists".into(),
                }));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn update_run(&self, run: &RunRecord) -> Result<RunRecord> {
        let what = format!("run {}/{}", run.flow, run.id);
        retry!(self, || format!("update {what}"), |c| {
            let what = &what;

            let tx = c.transaction().await?;
            if put_run(&tx, run, false).await? == 1 {
                tx.commit().await?;
                return Ok(RunRecord { revision: run.revision + 1, ..run.clone() });
            }
            let stmt = tx.prepare_cached("SELECT revision FROM runs WHERE run_id = $1 AND flow = $2").await?;
            let row = tx.query_opt(&stmt, &[&run.id.to_string(), &run.flow.as_str()]).await?;
            Err(Fail::Store(match row {
                None => Error::NotFound { what: what.clone() },
                Some(r) => Error::Conflict {
                    what: what.clone(),
                    reason: format!("expected revision {}, stored is {}", run.revision, get::<i64>(&r, "revision")?),
                },
            }))
        })
    }

    async fn get_run(&self, flow: &FlowName, id: RunId) -> Result<Option<RunRecord>> {
        read!(self, "read run", |c| {
            let stmt =
                c.prepare_cached(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1 AND flow = $2")).await?;
            match c.query_opt(&stmt, &[&id.to_string(), &flow.as_str()]).await? {
                Some(row) => Ok(Some(self.run_from_row(&row)?)),
                None => Ok(None),
            }
        })
    }

    async fn list_runs(&self, flow: &FlowName, query: &RunQuery) -> Result<Page<RunRecord>> {
        let limit = effective_limit(query.limit, 100);
        let after: Option<RunId> = parse_cursor(&query.after, "run")?;
        // Any id sorts below "~", so no cursor means "from the newest".
        let after = after.map_or_else(|| "~".to_owned(), |a| a.to_string());
        let status = query.status.map(|s| s.as_str().to_owned());
        let tag = query.tag.as_ref().map(|t| t.to_string());
        let now = Timestamp::now().as_micros();
        let lim = (limit + 1) as i64;
        let flow_s = flow.to_string();
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE flow = $1 AND run_id < $2");
        let mut params: Vec<Param<'_>> = vec![&flow_s, &after, &lim];
        // By observed status: a live record whose lease ran out is `lost`.
        if let Some(s) = &status {
            params.push(s);
            let n = params.len();
            match query.status {
                Some(RunStatus::Lost) => {
                    params.push(&now);
                    sql.push_str(&format!(
                        " AND (status = ${n} OR (status IN ('pending', 'running') AND lease_deadline < ${}))",
                        n + 1
                    ));
                }
                Some(st) if st.is_live() => {
                    params.push(&now);
                    sql.push_str(&format!(
                        " AND status = ${n} AND (lease_deadline IS NULL OR lease_deadline >= ${})",
                        n + 1
                    ));
                }
                _ => sql.push_str(&format!(" AND status = ${n}")),
            }
        }
        if let Some(t) = &tag {
            params.push(t);
            sql.push_str(&format!(" AND run_id IN (SELECT run_id FROM run_tags WHERE tag = ${})", params.len()));
        }
        sql.push_str(" ORDER BY run_id DESC LIMIT $3");
        let items = read!(self, "list runs", |c| {
            let stmt = c.prepare_cached(&sql).await?;
            c.query(&stmt, &params).await?.iter().map(|r| self.run_from_row(r)).collect::<PgResult<Vec<_>>>()
        })?;
        Ok(page(items, limit, |r| r.id.to_string()))
    }

    async fn renew_run_lease(&self, flow: &FlowName, id: RunId, lease: &RunLease) -> Result<bool> {
        let (flow_s, id_s) = (flow.to_string(), id.to_string());
        let (renewed, deadline) = (lease.renewed_at.as_micros(), lease.deadline.as_micros());
        retry!(self, || format!("renew the lease of run {flow}/{id}"), |c| {
            let (flow_s, id_s) = (&flow_s, &id_s);

            let stmt = c
                            .prepare_cached(
                                "UPDATE runs SET lease_renewed = $2, lease_deadline = $3 \
                                 WHERE run_id = $4 AND flow = $5 AND status IN ('pending', 'running') AND lease_holder = $1",
                            )
                            .await?;
            Ok(c.execute(&stmt, &[&lease.holder, &renewed, &deadline, id_s, flow_s]).await? > 0)
        })
    }

    async fn update_tags(&self, flow: &FlowName, id: RunId, add: &[Tag], remove: &[Tag]) -> Result<RunRecord> {
        update_tags_by_revision(self, flow, id, add, remove).await
    }

    async fn write_tasks(&self, writes: Vec<TaskWrite>) -> Result<Vec<WriteOutcome>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let n = writes.len();
        let writes = &writes;
        let out: Vec<WriteOutcome> =
            retry!(self, || format!("write {n} task records"), |c| { write_batch(c, writes).await })?;
        let inserted = out.iter().filter(|o| matches!(o, WriteOutcome::Applied { revision: 1 })).count();
        if inserted > 0 {
            self.inserted(inserted as u64);
        }
        Ok(out)
    }

    async fn get_task(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Option<TaskRecord>> {
        read!(self, "read task", |c| {
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = $1 AND task_id = $2 AND flow = $3"
                ))
                .await?;
            match c.query_opt(&stmt, &[&run.to_string(), &id_i64(task), &flow.as_str()]).await? {
                Some(row) => Ok(Some(self.task_from_row(flow, &row)?)),
                None => Ok(None),
            }
        })
    }

    async fn list_tasks(&self, flow: &FlowName, run: RunId, query: &TaskQuery) -> Result<Page<TaskRecord>> {
        let limit = effective_limit(query.limit, 1000);
        let after: Option<u64> = parse_cursor(&query.after, "task")?;
        let after = after.map_or(-1, |a| a as i64);
        let (run_s, flow_s, lim) = (run.to_string(), flow.to_string(), (limit + 1) as i64);
        let step = query.step.as_ref().map(|s| s.to_string());
        let status = query.status.map(|s| s.as_str().to_owned());
        let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = $1 AND flow = $2 AND task_id > $3");
        let mut params: Vec<Param<'_>> = vec![&run_s, &flow_s, &after, &lim];
        if let Some(s) = &step {
            params.push(s);
            sql.push_str(&format!(" AND step = ${}", params.len()));
        }
        if let Some(s) = &status {
            params.push(s);
            sql.push_str(&format!(" AND status = ${}", params.len()));
        }
        sql.push_str(" ORDER BY task_id LIMIT $4");
        let items = read!(self, "list tasks", |c| {
            let stmt = c.prepare_cached(&sql).await?;
            c.query(&stmt, &params).await?.iter().map(|r| self.task_from_row(flow, r)).collect::<PgResult<Vec<_>>>()
        })?;
        Ok(page(items, limit, |t| t.key.task.to_string()))
    }

    async fn tasks_by_index(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        index: u64,
    ) -> Result<Vec<TaskRecord>> {
        read!(self, "find task by index", |c| {
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = $1 AND step = $2 AND foreach_index = $3 \
                         AND flow = $4 ORDER BY task_id"
                ))
                .await?;
            c.query(&stmt, &[&run.to_string(), &step.as_str(), &(index as i64), &flow.as_str()])
                .await?
                .iter()
                .map(|r| self.task_from_row(flow, r))
                .collect()
        })
    }

    async fn step_summaries(&self, flow: &FlowName, run: RunId) -> Result<Vec<StepSummary>> {
        let rows = read!(self, "summarise steps", |c| {
            let stmt = c
                .prepare_cached(
                    "SELECT step, status, COUNT(*) AS n, MIN(started_at) AS started, MAX(ended_at) AS ended, \
                             MIN(task_id) AS first FROM tasks WHERE run_id = $1 AND flow = $2 GROUP BY step, status",
                )
                .await?;
            let mut out: Vec<StepCountRow> = Vec::new();
            for r in c.query(&stmt, &[&run.to_string(), &flow.as_str()]).await? {
                out.push((
                    get::<String>(&r, "step")?,
                    get::<String>(&r, "status")?,
                    get::<i64>(&r, "n")?,
                    get::<Option<i64>>(&r, "started")?,
                    get::<Option<i64>>(&r, "ended")?,
                    get::<i64>(&r, "first")?,
                ));
            }
            Ok(out)
        })?;
        step_summaries(rows, flow, run, self.db.location())
    }

    async fn list_attempts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<AttemptRecord>> {
        read!(self, "list attempts", |c| {
            let stmt = c
                .prepare_cached(
                    "SELECT a.attempt, a.status, a.started_at, a.ended_at, a.error FROM attempts a \
                         JOIN tasks t ON t.run_id = a.run_id AND t.task_id = a.task_id \
                         WHERE a.run_id = $1 AND a.task_id = $2 AND t.flow = $3 ORDER BY a.attempt",
                )
                .await?;
            let mut out = Vec::new();
            for r in c.query(&stmt, &[&run.to_string(), &id_i64(task), &flow.as_str()]).await? {
                let attempt: i64 = get(&r, "attempt")?;
                let what = || format!("attempt row {run}/{task}/{attempt}");
                let status: String = get(&r, "status")?;
                let error: Option<String> = get(&r, "error")?;
                out.push(AttemptRecord {
                    attempt: Attempt(attempt as u32),
                    status: status.parse().map_err(|e| self.db.corrupt(what(), e))?,
                    started_at: Timestamp::from_micros(get(&r, "started_at")?),
                    ended_at: ts(get(&r, "ended_at")?),
                    error: error
                        .map(|e| serde_json::from_str(&e))
                        .transpose()
                        .map_err(|e| self.db.corrupt(what(), e))?,
                });
            }
            Ok(out)
        })
    }

    async fn task_artifacts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<ArtifactRecord>> {
        let what = || format!("artifact rows of {flow}/{run}/{task}");
        read!(self, "list artifacts", |c| {
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {} FROM artifacts a JOIN tasks t ON t.run_id = a.run_id AND t.task_id = a.task_id \
                         WHERE a.run_id = $1 AND a.task_id = $2 AND t.flow = $3 ORDER BY a.name",
                    prefixed("a", ARTIFACT_COLUMNS)
                ))
                .await?;
            c.query(&stmt, &[&run.to_string(), &id_i64(task), &flow.as_str()])
                .await?
                .iter()
                .map(|r| self.artifact_from_row(r, &what))
                .collect()
        })
    }

    async fn artifacts_of_tasks(
        &self,
        flow: &FlowName,
        run: RunId,
        first: TaskId,
        last: TaskId,
    ) -> Result<Vec<(TaskId, ArtifactRecord)>> {
        let what = || format!("artifact rows of {flow}/{run}/{first}..={last}");
        read!(self, "list artifacts of tasks", |c| {
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT a.task_id AS of_task, {} FROM artifacts a JOIN tasks t ON t.run_id = a.run_id AND t.task_id = a.task_id \
                         WHERE a.run_id = $1 AND a.task_id BETWEEN $2 AND $3 AND t.flow = $4 ORDER BY a.task_id, a.name",
                    prefixed("a", ARTIFACT_COLUMNS)
                ))
                .await?;
            c.query(&stmt, &[&run.to_string(), &id_i64(first), &id_i64(last), &flow.as_str()])
                .await?
                .iter()
                .map(|r| {
                    let t: i64 = get(r, "of_task")?;
                    Ok((TaskId(t.max(0) as u64), self.artifact_from_row(r, &what)?))
                })
                .collect()
        })
    }

    async fn visible_artifacts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<VisibleArtifact>> {
        let what = || format!("artifact rows seen by {flow}/{run}/{task}");
        // Walk the parent chain in SQL; `DISTINCT ON (name)` keeps the nearest setter.
        let rows = read!(self, "resolve artifacts", |c| {
            let stmt = c
                .prepare_cached(&format!(
                    "WITH RECURSIVE chain(run_id, task_id, depth) AS ( \
                                 SELECT run_id, task_id, 0 FROM tasks WHERE run_id = $1 AND task_id = $2 AND flow = $3 \
                                 UNION ALL \
                                 SELECT t.run_id, t.parent, chain.depth + 1 FROM chain \
                                 JOIN tasks t ON t.run_id = chain.run_id AND t.task_id = chain.task_id \
                                 WHERE t.parent IS NOT NULL AND chain.depth < 1000000 \
                             ) \
                             SELECT DISTINCT ON (a.name) a.task_id AS set_by, {} FROM chain \
                             JOIN artifacts a ON a.run_id = chain.run_id AND a.task_id = chain.task_id \
                             ORDER BY a.name, chain.depth",
                    prefixed("a", ARTIFACT_COLUMNS)
                ))
                .await?;
            let mut out = Vec::new();
            for r in c.query(&stmt, &[&run.to_string(), &id_i64(task), &flow.as_str()]).await? {
                let set_by: i64 = get(&r, "set_by")?;
                out.push(VisibleArtifact {
                    artifact: self.artifact_from_row(&r, &what)?,
                    set_by: TaskId(set_by as u64),
                });
            }
            Ok(out)
        })?;
        Ok(rows)
    }

    async fn step_artifacts(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        name: &ArtifactName,
    ) -> Result<Vec<StepArtifact>> {
        let what = || format!("artifact {name} of {flow}/{run}/{step}");
        read!(self, "read artifact across step", |c| {
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT t.task_id AS tid, t.foreach_index AS fi, {} FROM tasks t \
                         JOIN artifacts a ON a.run_id = t.run_id AND a.task_id = t.task_id AND a.name = $3 \
                         WHERE t.run_id = $1 AND t.step = $2 AND t.flow = $4 \
                         ORDER BY t.foreach_index NULLS FIRST, t.task_id",
                    prefixed("a", ARTIFACT_COLUMNS)
                ))
                .await?;
            let mut out = Vec::new();
            for r in c.query(&stmt, &[&run.to_string(), &step.as_str(), &name.as_str(), &flow.as_str()]).await? {
                out.push(StepArtifact {
                    task: TaskId(get::<i64>(&r, "tid")? as u64),
                    foreach_index: get::<Option<i64>>(&r, "fi")?.map(|i| i as u64),
                    artifact: self.artifact_from_row(&r, &what)?,
                });
            }
            Ok(out)
        })
    }

    async fn step_artifacts_page(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        name: &ArtifactName,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<StepArtifactRow>> {
        let limit = effective_limit(limit, 1000);
        let after = StepCursor::parse(&after)?;
        let what = || format!("artifact {name} of {flow}/{run}/{step}");
        let run_s = run.to_string();
        // Tasks without a foreach index first (PostgreSQL sorts NULL last), each part a
        // range of `tasks_by_step` (run_id, step, foreach_index).
        let select = format!(
            "SELECT t.task_id AS tid, t.foreach_index AS fi, t.parent AS par, {} FROM tasks t \
             LEFT JOIN artifacts a ON a.run_id = t.run_id AND a.task_id = t.task_id AND a.name = $3 \
             WHERE t.run_id = $1 AND t.step = $2 AND t.flow = $4",
            prefixed("a", ARTIFACT_COLUMNS)
        );
        let unindexed = format!("{select} AND t.foreach_index IS NULL AND t.task_id > $5 ORDER BY t.task_id LIMIT $6");
        let indexed = format!(
            "{select} AND (t.foreach_index, t.task_id) > ($5, $6) ORDER BY t.foreach_index, t.task_id LIMIT $7"
        );
        let rows = read!(self, "read a page of an artifact across a step", |c| {
            let want = (limit + 1) as i64;
            let mut out: Vec<StepArtifactRow> = Vec::new();
            let fixed: [Param<'_>; 4] = [&run_s, &step.as_str(), &name.as_str(), &flow.as_str()];
            let mut found = Vec::new();
            if after.is_none_or(|a| a.index.is_none()) {
                let from = after.map_or(-1, |a| a.task as i64);
                let stmt = c.prepare_cached(&unindexed).await?;
                let params: Vec<Param<'_>> = fixed.iter().copied().chain([&from as Param<'_>, &want]).collect();
                found.extend(c.query(&stmt, &params).await?);
            }
            let left = want - found.len() as i64;
            if left > 0 {
                let (i, t) = match after {
                    Some(StepCursor { index: Some(i), task }) => (i as i64, task as i64),
                    _ => (-1, -1),
                };
                let stmt = c.prepare_cached(&indexed).await?;
                let params: Vec<Param<'_>> = fixed.iter().copied().chain([&i as Param<'_>, &t, &left]).collect();
                found.extend(c.query(&stmt, &params).await?);
            }
            for r in &found {
                let artifact = match get::<Option<String>>(r, "name")? {
                    Some(_) => Some(self.artifact_from_row(r, &what)?),
                    None => None,
                };
                let parent = get::<Option<i64>>(r, "par")?.map(|p| TaskId(p as u64));
                out.push(StepArtifactRow {
                    task: TaskId(get::<i64>(r, "tid")? as u64),
                    foreach_index: get::<Option<i64>>(r, "fi")?.map(|i| i as u64),
                    parent: if artifact.is_none() { parent } else { None },
                    artifact,
                });
            }
            Ok(out)
        })?;
        Ok(page(rows, limit, |r| StepCursor::after(r).to_string()))
    }

    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut runs = Vec::with_capacity(lines.len());
        let mut tasks = Vec::with_capacity(lines.len());
        let mut attempts = Vec::with_capacity(lines.len());
        let mut ats = Vec::with_capacity(lines.len());
        let mut levels = Vec::with_capacity(lines.len());
        let mut texts = Vec::with_capacity(lines.len());
        let mut ords = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            runs.push(l.run.to_string());
            tasks.push(id_i64(l.task));
            attempts.push(i64::from(l.attempt.0));
            ats.push(l.at.as_micros());
            levels.push(l.level.clone());
            texts.push(l.line.clone());
            ords.push(i as i64);
        }
        // Sequence numbers continue each task's: the current maximum plus the line's
        // place among this batch's lines of the task. Two writers appending to one task
        // at once collide on the primary key, and the loser runs again.
        retry!(self, || "append logs".to_owned(), |c| {
            let p: [Param<'_>; 7] = [&runs, &tasks, &attempts, &ats, &levels, &texts, &ords];

            let stmt = c
                            .prepare_cached(
                                "INSERT INTO logs (run_id, task_id, seq, attempt, at, level, line) \
                                 SELECT v.run_id, v.task_id, \
                                   COALESCE((SELECT MAX(l.seq) FROM logs l WHERE l.run_id = v.run_id AND l.task_id = v.task_id), 0) \
                                   + row_number() OVER (PARTITION BY v.run_id, v.task_id ORDER BY v.ord), \
                                   v.attempt, v.at, v.level, v.line \
                                 FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::int8[]) \
                                   AS v(run_id, task_id, attempt, at, level, line, ord)",
                            )
                            .await?;
            c.execute(&stmt, &p).await?;
            Ok(())
        })
    }

    async fn read_logs(
        &self,
        flow: &FlowName,
        run: RunId,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        let limit = if limit == 0 { i64::MAX } else { limit as i64 };
        read!(self, "read logs", |c| {
            let stmt = c
                .prepare_cached(
                    "SELECT l.seq, l.attempt, l.at, l.level, l.line FROM logs l \
                         JOIN tasks t ON t.run_id = l.run_id AND t.task_id = l.task_id \
                         WHERE l.run_id = $1 AND l.task_id = $2 AND l.seq > $3 AND t.flow = $4 ORDER BY l.seq LIMIT $5",
                )
                .await?;
            let mut out = Vec::new();
            for r in c.query(&stmt, &[&run.to_string(), &id_i64(task), &(after as i64), &flow.as_str(), &limit]).await?
            {
                out.push(LogLine {
                    run,
                    task,
                    attempt: Attempt(get::<i64>(&r, "attempt")? as u32),
                    seq: get::<i64>(&r, "seq")? as u64,
                    at: Timestamp::from_micros(get(&r, "at")?),
                    level: get(&r, "level")?,
                    line: get(&r, "line")?,
                });
            }
            Ok(out)
        })
    }

    async fn delete_run(&self, flow: &FlowName, id: RunId, revision: u64) -> Result<RunDeletion> {
        let (flow_s, run) = (flow.as_str(), id.to_string());
        let what = || format!("run {flow}/{id}");
        retry!(self, || format!("delete {}", what()), |c| {
            let run = &run;
            let tx = c.transaction().await?;
            // The row lock orders this against every other writer of the run (an update,
            // a tag, a lease renewal); the transaction-scoped advisory lock against
            // `create_run` of a run resumed from it, which takes the same lock shared.
            let stmt =
                tx.prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended('braid-origin:' || $1, 0))").await?;
            tx.execute(&stmt, &[run]).await?;
            let stmt = tx.prepare_cached("SELECT revision, flow FROM runs WHERE run_id = $1 FOR UPDATE").await?;
            let Some(row) =
                tx.query_opt(&stmt, &[run]).await?.filter(|r| get::<String>(r, "flow").is_ok_and(|f| f == flow_s))
            else {
                return Err(Fail::Store(Error::NotFound { what: what() }));
            };
            let stored: i64 = get(&row, "revision")?;
            if stored as u64 != revision {
                return Err(Fail::Store(Error::Conflict {
                    what: what(),
                    reason: format!("expected revision {revision}, stored is {stored}"),
                }));
            }
            let stmt = tx
                .prepare_cached("SELECT flow, run_id FROM runs WHERE origin_run = $1 AND run_id <> $1 LIMIT 1")
                .await?;
            if let Some(r) = tx.query_opt(&stmt, &[run]).await? {
                return Err(Fail::Store(Error::Conflict {
                    what: what(),
                    reason: format!(
                        "run {}/{} was resumed from it and remains",
                        get::<String>(&r, "flow")?,
                        get::<String>(&r, "run_id")?
                    ),
                }));
            }
            let mut counts = [0u64; 6];
            for (i, table) in ["logs", "artifacts", "attempts", "tasks", "run_tags", "runs"].iter().enumerate() {
                let stmt = tx.prepare_cached(&format!("DELETE FROM {table} WHERE run_id = $1")).await?;
                counts[i] = tx.execute(&stmt, &[run]).await?;
            }
            tx.commit().await?;
            Ok(RunDeletion { log_lines: counts[0], artifacts: counts[1], attempts: counts[2], tasks: counts[3] })
        })
    }

    async fn artifact_blob_refs(&self, after: Option<String>, limit: usize) -> Result<Page<BlobRef>> {
        let limit = effective_limit(limit, 10_000);
        let after = parse_artifact_cursor(after.as_deref())?;
        let rows: Vec<BlobRefRow> = read!(self, "list blob references", |c| {
            // A row comparison on the primary key: an index range scan, page after page.
            let stmt = c
                .prepare_cached(
                    "SELECT run_id, task_id, name, blob_key, elements_key FROM artifacts \
                     WHERE (run_id, task_id, name) > ($1, $2, $3) ORDER BY run_id, task_id, name LIMIT $4",
                )
                .await?;
            let mut out = Vec::new();
            for row in c.query(&stmt, &[&after.0, &after.1, &after.2, &((limit + 1) as i64)]).await? {
                out.push((
                    get(&row, "run_id")?,
                    get(&row, "task_id")?,
                    get(&row, "name")?,
                    get(&row, "blob_key")?,
                    get(&row, "elements_key")?,
                ));
            }
            Ok(out)
        })?;
        blob_ref_page(rows, limit, self.db.location())
    }

    async fn try_claim(&self, scope: &str, key: &str, holder: &str) -> Result<bool> {
        let now = Timestamp::now().as_micros();
        retry!(self, || format!("claim {scope}/{key}"), |c| {
            let stmt = c
                .prepare_cached(
                    "INSERT INTO claims (scope, key, holder, claimed_at) VALUES ($1, $2, $3, $4) \
                                 ON CONFLICT (scope, key) DO NOTHING",
                )
                .await?;
            Ok(c.execute(&stmt, &[&scope, &key, &holder, &now]).await? == 1)
        })
    }

    async fn claim_holder(&self, scope: &str, key: &str) -> Result<Option<String>> {
        read!(self, "read claim", |c| {
            let stmt = c.prepare_cached("SELECT holder FROM claims WHERE scope = $1 AND key = $2").await?;
            match c.query_opt(&stmt, &[&scope, &key]).await? {
                Some(r) => Ok(Some(get(&r, "holder")?)),
                None => Ok(None),
            }
        })
    }
}

/// `a.x, a.y` from `x, y`.
fn prefixed(table: &str, columns: &str) -> String {
    columns.split(',').map(|c| format!("{table}.{}", c.trim())).collect::<Vec<_>>().join(", ")
}
