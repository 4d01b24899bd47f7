//! `RecordStore` over the SQLite database.

use std::sync::Arc;

use async_trait::async_trait;
use braid_core::{ArtifactName, Attempt, FlowName, RunId, RunStatus, StepName, Tag, TaskId, TaskStatus, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::db::{Db, db_err};
use crate::error::{Error, Result};
use crate::record::*;
use crate::rows::{
    ArtifactRow, BlobRefRow, RunRow, StepCountRow, TaskRow, blob_ref_page, parse_artifact_cursor, step_summaries,
    task_extra_json,
};

/// Records of an fs store.
#[derive(Debug, Clone)]
pub struct FsRecords {
    pub(crate) db: Arc<Db>,
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp::from_micros)
}

fn id_i64(t: TaskId) -> i64 {
    t.0 as i64
}

impl FsRecords {
    fn run_from_row(&self, row: &Row<'_>) -> rusqlite::Result<Result<RunRecord>> {
        let raw = RunRow {
            id: row.get("run_id")?,
            flow: row.get("flow")?,
            status: row.get("status")?,
            params: row.get("params")?,
            tags: row.get("tags")?,
            meta: row.get("meta")?,
            origin_run: row.get("origin_run")?,
            created_at: row.get("created_at")?,
            started_at: row.get("started_at")?,
            ended_at: row.get("ended_at")?,
            name: row.get("name")?,
            error: row.get("error")?,
            revision: row.get("revision")?,
            lease_holder: row.get("lease_holder")?,
            lease_renewed: row.get("lease_renewed")?,
            lease_deadline: row.get("lease_deadline")?,
        };
        Ok(raw.decode(&self.db.location()))
    }

    /// [`FsRecords::task_from_row`] with the columns' places and the database's
    /// location (for errors) found once per statement, not per row.
    fn task_from_row_at(
        &self,
        flow_hint: Option<&FlowName>,
        at: &TaskColumnsAt,
        location: &str,
        row: &Row<'_>,
    ) -> rusqlite::Result<Result<TaskRecord>> {
        let c = &at.0;
        let raw = TaskRow {
            run: row.get(c[0])?,
            task: row.get(c[1])?,
            flow: row.get(c[2])?,
            step: row.get(c[3])?,
            status: row.get(c[4])?,
            attempt: row.get(c[5])?,
            iteration: row.get(c[6])?,
            parent: row.get(c[7])?,
            created_at: row.get(c[8])?,
            started_at: row.get(c[9])?,
            ended_at: row.get(c[10])?,
            lease_deadline: row.get(c[11])?,
            progress_pct: row.get(c[12])?,
            progress_msg: row.get(c[13])?,
            progress_at: row.get(c[14])?,
            extra: row.get(c[15])?,
            revision: row.get(c[16])?,
        };
        Ok(raw.decode(flow_hint, location))
    }

    fn task_from_row(&self, flow_hint: Option<&FlowName>, row: &Row<'_>) -> rusqlite::Result<Result<TaskRecord>> {
        let raw = TaskRow {
            run: row.get("run_id")?,
            task: row.get("task_id")?,
            flow: row.get("flow")?,
            step: row.get("step")?,
            status: row.get("status")?,
            attempt: row.get("attempt")?,
            iteration: row.get("iteration")?,
            parent: row.get("parent")?,
            created_at: row.get("created_at")?,
            started_at: row.get("started_at")?,
            ended_at: row.get("ended_at")?,
            lease_deadline: row.get("lease_deadline")?,
            progress_pct: row.get("progress_pct")?,
            progress_msg: row.get("progress_msg")?,
            progress_at: row.get("progress_at")?,
            extra: row.get("extra")?,
            revision: row.get("revision")?,
        };
        Ok(raw.decode(flow_hint, &self.db.location()))
    }

    /// [`FsRecords::artifact_from_row`] with the columns' places and the database's
    /// location (for errors) found once per statement, not per row.
    fn artifact_from_row_at(
        &self,
        row: &Row<'_>,
        at: &ArtifactColumnsAt,
        location: &str,
        what: &dyn Fn() -> String,
    ) -> rusqlite::Result<Result<ArtifactRecord>> {
        let c = &at.0;
        let raw = ArtifactRow {
            name: row.get(c[0])?,
            blob_key: row.get(c[1])?,
            type_name: row.get(c[2])?,
            size: row.get(c[3])?,
            preview: row.get(c[4])?,
            preview_cut: row.get(c[5])?,
            elements_key: row.get(c[6])?,
            elements_len: row.get(c[7])?,
            inline_value: row.get(c[8])?,
        };
        Ok(raw.decode(what, location))
    }

    fn artifact_from_row(&self, row: &Row<'_>, what: &dyn Fn() -> String) -> rusqlite::Result<Result<ArtifactRecord>> {
        let raw = ArtifactRow {
            name: row.get("name")?,
            blob_key: row.get("blob_key")?,
            type_name: row.get("type_name")?,
            size: row.get("size")?,
            preview: row.get("preview")?,
            preview_cut: row.get("preview_cut")?,
            elements_key: row.get("elements_key")?,
            elements_len: row.get("elements_len")?,
            inline_value: row.get("inline_value")?,
        };
        Ok(raw.decode(what, &self.db.location()))
    }
}

/// A page of [`RecordStore::step_artifacts_page`] among a step's tasks without a foreach
/// index, after task `?4`, at most `?5`. A range of `tasks_by_step`, whose entries end in
/// the table's key (so are in task id order within an index): no sort, no scan, and no
/// visit to the task's row but for the parent of a task that did not set the name (the
/// run's flow is checked once per page, not per task).
const STEP_ARTIFACTS_UNINDEXED: &str = "SELECT t.task_id AS tid, t.foreach_index AS fi, \
     CASE WHEN a.name IS NULL THEN (SELECT p.parent FROM tasks p WHERE p.run_id = t.run_id AND p.task_id = t.task_id) \
     END AS par, a.* \
     FROM tasks t INDEXED BY tasks_by_step \
     LEFT JOIN artifacts a ON a.run_id = t.run_id AND a.task_id = t.task_id AND a.name = ?3 \
     WHERE t.run_id = ?1 AND t.step = ?2 AND t.foreach_index IS NULL AND t.task_id > ?4 \
     ORDER BY t.foreach_index, t.task_id LIMIT ?5";
/// The same among the tasks with an index, after (index `?4`, task `?5`), at most `?6`.
const STEP_ARTIFACTS_INDEXED: &str = "SELECT t.task_id AS tid, t.foreach_index AS fi, \
     CASE WHEN a.name IS NULL THEN (SELECT p.parent FROM tasks p WHERE p.run_id = t.run_id AND p.task_id = t.task_id) \
     END AS par, a.* \
     FROM tasks t INDEXED BY tasks_by_step \
     LEFT JOIN artifacts a ON a.run_id = t.run_id AND a.task_id = t.task_id AND a.name = ?3 \
     WHERE t.run_id = ?1 AND t.step = ?2 AND (t.foreach_index, t.task_id) > (?4, ?5) \
     ORDER BY t.foreach_index, t.task_id LIMIT ?6";

/// [`RecordStore::step_summaries`]: the run's rows read in order through the table's own
/// key (the `WITHOUT ROWID` primary key, `sqlite_autoindex_tasks_1`). Left to itself
/// SQLite walks `tasks_of_step` and looks every task's row up from there: 270 ms instead
/// of 160 ms at 100,000 tasks, paid by every read that resolves a step.
/// Counted as the rows come, not with `GROUP BY` (a sort of every row: a quarter of
/// `braid artifact STEP NAME --json` at 100,000 tasks).
const STEP_SUMMARIES: &str = "SELECT step, status, started_at, ended_at, task_id \
     FROM tasks INDEXED BY sqlite_autoindex_tasks_1 WHERE run_id = ?1 AND flow = ?2";

/// Where each column of [`TASK_COLUMNS`] is in a statement's rows, looked up once per
/// statement: finding a column by name on every row compares it with every column's
/// name (a fifth of the time of listing 100,000 tasks).
struct TaskColumnsAt([usize; 17]);

impl TaskColumnsAt {
    const NAMES: [&'static str; 17] = [
        "run_id",
        "task_id",
        "flow",
        "step",
        "status",
        "attempt",
        "iteration",
        "parent",
        "created_at",
        "started_at",
        "ended_at",
        "lease_deadline",
        "progress_pct",
        "progress_msg",
        "progress_at",
        "extra",
        "revision",
    ];

    fn of(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Self> {
        let mut at = [0; 17];
        for (i, name) in Self::NAMES.iter().enumerate() {
            at[i] = stmt.column_index(name)?;
        }
        Ok(TaskColumnsAt(at))
    }
}

/// Where the columns an artifact row is made of are in a statement's rows (and the
/// task id, foreach index and parent of [`STEP_ARTIFACTS_INDEXED`]), looked up once.
struct ArtifactColumnsAt([usize; 12]);

impl ArtifactColumnsAt {
    const NAMES: [&'static str; 12] = [
        "name",
        "blob_key",
        "type_name",
        "size",
        "preview",
        "preview_cut",
        "elements_key",
        "elements_len",
        "inline_value",
        "tid",
        "fi",
        "par",
    ];

    fn of(stmt: &rusqlite::Statement<'_>) -> rusqlite::Result<Self> {
        let mut at = [0; 12];
        for (i, name) in Self::NAMES.iter().enumerate() {
            at[i] = stmt.column_index(name)?;
        }
        Ok(ArtifactColumnsAt(at))
    }
}

const TASK_COLUMNS: &str = "run_id, task_id, flow, step, status, attempt, iteration, parent, created_at, started_at, \
    ended_at, lease_deadline, progress_pct, progress_msg, progress_at, extra, revision";

/// The values of a task's row, in the order of `check::SUMMED` (and of every statement
/// below that writes it).
struct TaskValues<'a> {
    run: &'a str,
    task: i64,
    flow: &'a str,
    step: &'a str,
    status: &'static str,
    attempt: u32,
    foreach_index: Option<i64>,
    iteration: u32,
    parent: Option<i64>,
    created_at: i64,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    lease_deadline: Option<i64>,
    progress_pct: Option<f64>,
    progress_msg: Option<&'a str>,
    progress_at: Option<i64>,
    extra: Option<&'a str>,
    revision: i64,
}

impl<'a> TaskValues<'a> {
    fn of(t: &'a TaskRecord, run: &'a str, extra: Option<&'a str>, revision: u64) -> Self {
        TaskValues {
            run,
            task: id_i64(t.key.task),
            flow: t.key.flow.as_str(),
            step: t.key.step.as_str(),
            status: t.status.as_str(),
            attempt: t.attempt.0,
            foreach_index: t.foreach_index().map(|i| i as i64),
            iteration: t.iteration,
            parent: t.parent.map(id_i64),
            created_at: t.created_at.as_micros(),
            started_at: t.started_at.map(Timestamp::as_micros),
            ended_at: t.ended_at.map(Timestamp::as_micros),
            lease_deadline: t.lease_deadline.map(Timestamp::as_micros),
            progress_pct: t.progress.as_ref().map(|p| f64::from(p.percent)),
            progress_msg: t.progress.as_ref().map(|p| p.message.as_str()),
            progress_at: t.progress_at.map(Timestamp::as_micros),
            extra,
            revision: revision as i64,
        }
    }

    fn params(&self) -> [&dyn rusqlite::ToSql; 18] {
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

/// The values of an artifact's row: the ten summed (`check::SUMMED`), then the inline value.
struct ArtifactValues<'a> {
    run: &'a str,
    task: i64,
    name: &'a str,
    key: &'a [u8],
    type_name: &'a str,
    size: i64,
    preview: &'a str,
    truncated: bool,
    elements_key: Option<&'a [u8]>,
    elements_len: Option<i64>,
    inline: Option<&'a [u8]>,
}

impl<'a> ArtifactValues<'a> {
    fn of(run: &'a str, task: i64, a: &'a ArtifactRecord) -> Self {
        ArtifactValues {
            run,
            task,
            name: a.name.as_str(),
            key: &a.key.0[..],
            type_name: &a.type_name,
            size: a.size as i64,
            preview: &a.preview.text,
            truncated: a.preview.truncated,
            elements_key: a.elements.as_ref().map(|e| &e.key.0[..]),
            elements_len: a.elements.as_ref().map(|e| e.len as i64),
            inline: a.inline.as_deref(),
        }
    }

    fn params(&self) -> [&dyn rusqlite::ToSql; 11] {
        [
            &self.run,
            &self.task,
            &self.name,
            &self.key,
            &self.type_name,
            &self.size,
            &self.preview,
            &self.truncated,
            &self.elements_key,
            &self.elements_len,
            &self.inline,
        ]
    }
}

/// The values of an attempt's row, in the order of `check::SUMMED`.
struct AttemptValues<'a> {
    run: &'a str,
    task: i64,
    attempt: u32,
    status: &'static str,
    started_at: i64,
    ended_at: Option<i64>,
    error: Option<&'a str>,
}

impl<'a> AttemptValues<'a> {
    fn of(run: &'a str, task: i64, a: &'a AttemptRecord, error: Option<&'a str>) -> Self {
        AttemptValues {
            run,
            task,
            attempt: a.attempt.0,
            status: a.status.as_str(),
            started_at: a.started_at.as_micros(),
            ended_at: a.ended_at.map(Timestamp::as_micros),
            error,
        }
    }

    fn params(&self) -> [&dyn rusqlite::ToSql; 7] {
        [&self.run, &self.task, &self.attempt, &self.status, &self.started_at, &self.ended_at, &self.error]
    }
}

/// Executes `stmt` with `values` and then the row sum as the last parameter.
fn put_row(stmt: &mut rusqlite::Statement<'_>, values: &[&dyn rusqlite::ToSql], sum: i64) -> rusqlite::Result<usize> {
    stmt.execute(rusqlite::params_from_iter(values.iter().copied().chain([&sum as &dyn rusqlite::ToSql])))
}

/// A task write with everything that needs no database computed before it reaches the
/// writer thread: the run id as text, the task's extra JSON, the attempt's error JSON,
/// and the row checksums of the task (as a new row: revision 1), its attempt and its
/// artifacts. Measured (callgrind, 3,000-branch foreach): the writer thread spent
/// 74,000 instructions per task write, 10,000 of them hashing row sums inside SQLite's
/// function calls and 2,000 writing JSON; it is the one thread a wide foreach waits for.
pub(crate) struct PreparedWrite {
    w: TaskWrite,
    d: Derived,
}

/// What [`PreparedWrite`] computes from its write.
struct Derived {
    run: String,
    extra: Option<String>,
    new_task_sum: i64,
    attempt_error: Option<String>,
    attempt_sum: Option<i64>,
    artifact_sums: Vec<i64>,
}

impl PreparedWrite {
    /// Prepares `w`; an error names the task and the database at `path`.
    pub(crate) fn new(w: TaskWrite, path: &std::path::Path) -> Result<Self> {
        match Self::prepare(&w) {
            Ok(d) => Ok(PreparedWrite { w, d }),
            Err(e) => Err(db_err(path, format!("write task {}", w.task.key), e)),
        }
    }

    fn prepare(w: &TaskWrite) -> rusqlite::Result<Derived> {
        use super::check::sum_params;
        let conv = |e: serde_json::Error| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
        let run = w.task.key.run.to_string();
        let extra = task_extra_json(&w.task).map_err(conv)?;
        let new_task_sum = sum_params(&TaskValues::of(&w.task, &run, extra.as_deref(), 1).params())?;
        let attempt_error =
            w.attempt.as_ref().and_then(|a| a.error.as_ref()).map(serde_json::to_string).transpose().map_err(conv)?;
        let task = id_i64(w.task.key.task);
        let attempt_sum = w
            .attempt
            .as_ref()
            .map(|a| sum_params(&AttemptValues::of(&run, task, a, attempt_error.as_deref()).params()))
            .transpose()?;
        let artifact_sums = w
            .artifacts
            .iter()
            .flatten()
            .map(|a| sum_params(&ArtifactValues::of(&run, task, a).params()[..10]))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Derived { run, extra, new_task_sum, attempt_error, attempt_sum, artifact_sums })
    }
}

/// The statements of task writes, prepared once per batch (`prepare_cached` hashes the
/// statement's text at each call: 8 hashes of a few hundred bytes per task otherwise).
struct WriteStatements<'c> {
    insert_new: rusqlite::CachedStatement<'c>,
    replace: rusqlite::CachedStatement<'c>,
    lookup: rusqlite::CachedStatement<'c>,
    delete_artifacts: rusqlite::CachedStatement<'c>,
    insert_artifact: rusqlite::CachedStatement<'c>,
    put_attempt: rusqlite::CachedStatement<'c>,
    materialize_attempt: rusqlite::CachedStatement<'c>,
}

const TASK_INSERT_COLUMNS: &str = "run_id, task_id, flow, step, status, attempt, foreach_index, iteration, parent, \
    created_at, started_at, ended_at, lease_deadline, progress_pct, progress_msg, progress_at, extra, revision, row_sum";
const NINETEEN_VALUES: &str = "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)";

impl<'c> WriteStatements<'c> {
    fn prepare(c: &'c Connection) -> rusqlite::Result<Self> {
        Ok(WriteStatements {
            insert_new: c.prepare_cached(&format!(
                "INSERT INTO tasks ({TASK_INSERT_COLUMNS}) VALUES {NINETEEN_VALUES} ON CONFLICT (run_id, task_id) DO NOTHING"
            ))?,
            replace: c.prepare_cached(&format!("INSERT OR REPLACE INTO tasks ({TASK_INSERT_COLUMNS}) VALUES {NINETEEN_VALUES}"))?,
            lookup: c.prepare_cached("SELECT revision, attempt, status, json_extract(extra, '$.dispatch.token') FROM tasks \
                 WHERE run_id = ?1 AND task_id = ?2")?,
            delete_artifacts: c.prepare_cached("DELETE FROM artifacts WHERE run_id = ?1 AND task_id = ?2")?,
            insert_artifact: c.prepare_cached(
                "INSERT INTO artifacts (run_id, task_id, name, blob_key, type_name, size, preview, preview_cut, \
                 elements_key, elements_len, inline_value, row_sum) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?,
            put_attempt: c.prepare_cached(
                "INSERT OR REPLACE INTO attempts (run_id, task_id, attempt, status, started_at, ended_at, error, row_sum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?,
            // The attempt a succeeded task's row implies (see `implied_attempt`), made a
            // row of its own before that task's row changes.
            materialize_attempt: c.prepare_cached(
                "INSERT INTO attempts (run_id, task_id, attempt, status, started_at, ended_at, error, row_sum) \
                 SELECT run_id, task_id, attempt, status, started_at, ended_at, NULL, \
                 braid_row_sum(run_id, task_id, attempt, status, started_at, ended_at, NULL) FROM tasks \
                 WHERE run_id = ?1 AND task_id = ?2 AND status = 'succeeded' AND started_at IS NOT NULL \
                 AND (extra IS NULL OR (json_extract(extra, '$.origin') IS NULL AND json_extract(extra, '$.error') IS NULL)) \
                 AND NOT EXISTS (SELECT 1 FROM attempts WHERE run_id = ?1 AND task_id = ?2)",
            )?,
        })
    }
}

fn stored_task_with(
    lookup: &mut rusqlite::Statement<'_>,
    run: &str,
    task: TaskId,
) -> rusqlite::Result<Option<crate::record::StoredTask>> {
    lookup
        .query_row(params![run, id_i64(task)], |r| {
            let status: String = r.get(2)?;
            Ok(crate::record::StoredTask {
                revision: r.get::<_, i64>(0)? as u64,
                attempt: Attempt(r.get::<_, i64>(1)? as u32),
                status: status.parse().unwrap_or(TaskStatus::Failed),
                token: r.get::<_, Option<i64>>(3)?.map(|t| t as u64),
            })
        })
        .optional()
}

/// Applies one prepared write. A write that may create its task (no precondition, or
/// "absent") first tries to insert it as new, which needs no lookup and, nearly always
/// for a task's first write, succeeds; otherwise (or when the task exists) it reads the
/// stored revision, checks the precondition and replaces the row.
fn write_one(st: &mut WriteStatements<'_>, p: &PreparedWrite) -> rusqlite::Result<WriteOutcome> {
    let (w, p) = (&p.w, &p.d);
    let run = p.run.as_str();
    let task = id_i64(w.task.key.task);
    let may_create = matches!(w.precondition, Precondition::None | Precondition::Absent);
    let created = may_create
        && put_row(&mut st.insert_new, &TaskValues::of(&w.task, run, p.extra.as_deref(), 1).params(), p.new_task_sum)?
            == 1;
    let revision = if created {
        1
    } else {
        let stored = stored_task_with(&mut st.lookup, run, w.task.key.task)?;
        if let Some(reason) = check_precondition(&w.task.key, stored, w.precondition) {
            return Ok(WriteOutcome::Rejected { reason });
        }
        let revision = stored.map_or(1, |s| s.revision + 1);
        if stored.is_some_and(|s| s.status == TaskStatus::Succeeded) {
            // Rewriting a succeeded task (rare: a store user, never the executor): the
            // attempt its row implied, if it had no row of its own, keeps one.
            st.materialize_attempt.execute(params![run, task])?;
        }
        let values = TaskValues::of(&w.task, run, p.extra.as_deref(), revision);
        let params = values.params();
        let sum = super::check::sum_params(&params)?;
        put_row(&mut st.replace, &params, sum)?;
        if w.artifacts.is_some() && stored.is_some() {
            // A new task has no artifacts to replace; skip the delete.
            st.delete_artifacts.execute(params![run, task])?;
        }
        revision
    };
    for (a, sum) in w.artifacts.iter().flatten().zip(&p.artifact_sums) {
        put_row(&mut st.insert_artifact, &ArtifactValues::of(run, task, a).params(), *sum)?;
    }
    if let (Some(a), Some(sum)) = (&w.attempt, p.attempt_sum) {
        // A task written succeeded in its first write, with the attempt its row implies,
        // needs no attempt row (read back by `list_attempts`): most tasks of a wide
        // foreach, 84 B of store and one b-tree insert each (format 3).
        let implied = created && implied_attempt(&w.task).as_ref() == Some(a);
        if !implied {
            put_row(&mut st.put_attempt, &AttemptValues::of(run, task, a, p.attempt_error.as_deref()).params(), sum)?;
        }
    }
    Ok(WriteOutcome::Applied { revision })
}

/// The one attempt a task's row implies when it has no attempt rows (format 3): a task
/// that succeeded, was executed here (not reused from an origin run) and carries no
/// caught error has had exactly the attempt its row describes.
fn implied_attempt(t: &TaskRecord) -> Option<AttemptRecord> {
    let started_at = t.started_at?;
    (t.status == TaskStatus::Succeeded && t.origin.is_none() && t.error.is_none()).then_some(AttemptRecord {
        attempt: t.attempt,
        status: TaskStatus::Succeeded,
        started_at,
        ended_at: t.ended_at,
        error: None,
    })
}

fn put_run(conn: &Connection, r: &RunRecord, revision: u64) -> rusqlite::Result<()> {
    let json = |v: &dyn erased::Json| v.to_json().map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)));
    conn.prepare_cached(
        "INSERT OR REPLACE INTO runs (run_id, flow, status, created_at, started_at, ended_at, origin_run, name, error, \
         params, tags, meta, revision, lease_holder, lease_renewed, lease_deadline, row_sum) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
         braid_row_sum(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13))",
    )?
    .execute(params![
        r.id.to_string(),
        r.flow.as_str(),
        r.status.as_str(),
        r.created_at.as_micros(),
        r.started_at.map(Timestamp::as_micros),
        r.ended_at.map(Timestamp::as_micros),
        r.origin_run.map(|o| o.to_string()),
        r.name,
        r.error,
        json(&r.params)?,
        json(&r.tags)?,
        json(&r.meta)?,
        revision as i64,
        r.lease.as_ref().map(|l| l.holder.as_str()),
        r.lease.as_ref().map(|l| l.renewed_at.as_micros()),
        r.lease.as_ref().map(|l| l.deadline.as_micros()),
    ])?;
    let id = r.id.to_string();
    conn.prepare_cached("DELETE FROM run_tags WHERE run_id = ?1")?.execute([&id])?;
    let mut ins = conn.prepare_cached("INSERT INTO run_tags (run_id, tag) VALUES (?1, ?2)")?;
    for t in &r.tags {
        ins.execute(params![id, t.as_str()])?;
    }
    Ok(())
}

mod erased {
    pub(super) trait Json {
        fn to_json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}

#[async_trait]
impl RecordStore for FsRecords {
    async fn put_flow(&self, flow: FlowRecord) -> Result<()> {
        let path = self.db.path().to_owned();
        let spec = serde_json::to_string(&flow.spec)
            .map_err(|e| Error::Invalid { what: format!("spec of flow {}", flow.name), reason: e.to_string() })?;
        self.db
            .write(move |c| {
                c.prepare_cached("INSERT OR REPLACE INTO flows (name, spec, updated_at, row_sum) VALUES (?1, ?2, ?3, braid_row_sum(?1, ?2, ?3))")
                    .and_then(|mut s| s.execute(params![flow.name.as_str(), spec, flow.updated_at.as_micros()]))
                    .map_err(|e| db_err(&path, format!("write flow {}", flow.name), e))?;
                Ok(())
            })
            .await
    }

    async fn get_flow(&self, name: &FlowName) -> Result<Option<FlowRecord>> {
        let row: Option<(String, i64)> = self.db.query("read flow", |c| {
            c.prepare_cached("SELECT spec, updated_at FROM flows WHERE name = ?1")?
                .query_row([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })?;
        row.map(|(spec, at)| {
            Ok(FlowRecord {
                name: name.clone(),
                spec: serde_json::from_str(&spec).map_err(|e| self.db.corrupt(format!("flow row {name}"), e))?,
                updated_at: Timestamp::from_micros(at),
            })
        })
        .transpose()
    }

    async fn list_flows(&self) -> Result<Vec<FlowRecord>> {
        let rows: Vec<(String, String, i64)> = self.db.query("list flows", |c| {
            c.prepare_cached("SELECT name, spec, updated_at FROM flows ORDER BY name")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })?;
        rows.into_iter()
            .map(|(name, spec, at)| {
                let what = || format!("flow row {name}");
                Ok(FlowRecord {
                    name: FlowName::new(&name).map_err(|e| self.db.corrupt(what(), e))?,
                    spec: serde_json::from_str(&spec).map_err(|e| self.db.corrupt(what(), e))?,
                    updated_at: Timestamp::from_micros(at),
                })
            })
            .collect()
    }

    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        let run = run.clone();
        let path = self.db.path().to_owned();
        self.db
            .write(move |c| {
                let exists = c
                    .prepare_cached("SELECT 1 FROM runs WHERE run_id = ?1")
                    .and_then(|mut s| s.exists([run.id.to_string()]))
                    .map_err(|e| db_err(&path, "check run", e))?;
                if exists {
                    return Err(Error::Conflict {
                        what: format!("run {}/{}", run.flow, run.id),
                        reason: "a run with this id exists".into(),
                    });
                }
                put_run(c, &run, 1).map_err(|e| db_err(&path, format!("create run {}/{}", run.flow, run.id), e))
            })
            .await
    }

    async fn update_run(&self, run: &RunRecord) -> Result<RunRecord> {
        let run = run.clone();
        let path = self.db.path().to_owned();
        self.db
            .write(move |c| {
                let what = format!("run {}/{}", run.flow, run.id);
                let stored: Option<(i64, String)> = c
                    .prepare_cached("SELECT revision, flow FROM runs WHERE run_id = ?1")
                    .and_then(|mut s| s.query_row([run.id.to_string()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(|e| db_err(&path, "read run", e))?;
                let Some(rev) = stored.filter(|(_, f)| f == run.flow.as_str()).map(|(r, _)| r as u64) else {
                    return Err(Error::NotFound { what });
                };
                if rev != run.revision {
                    return Err(Error::Conflict {
                        what,
                        reason: format!("expected revision {}, stored is {rev}", run.revision),
                    });
                }
                let mut run = run;
                run.revision = rev + 1;
                put_run(c, &run, run.revision).map_err(|e| db_err(&path, format!("update {what}"), e))?;
                Ok(run)
            })
            .await
    }

    async fn get_run(&self, flow: &FlowName, id: RunId) -> Result<Option<RunRecord>> {
        self.db
            .query("read run", |c| {
                c.prepare_cached("SELECT * FROM runs WHERE run_id = ?1 AND flow = ?2")?
                    .query_row(params![id.to_string(), flow.as_str()], |r| self.run_from_row(r))
                    .optional()
            })?
            .transpose()
    }

    async fn list_runs(&self, flow: &FlowName, query: &RunQuery) -> Result<Page<RunRecord>> {
        let limit = effective_limit(query.limit, 100);
        let after: Option<RunId> = parse_cursor(&query.after, "run")?;
        // Any id sorts below "~", so no cursor means "from the newest".
        let after = after.map_or_else(|| "~".to_owned(), |a| a.to_string());
        let rows: Vec<Result<RunRecord>> = self.db.query("list runs", |c| {
            let mut sql = String::from("SELECT * FROM runs WHERE flow = ?1 AND run_id < ?2");
            // By observed status: a live record whose lease ran out is `lost`.
            let by_lease = query.status.is_some_and(|s| s.is_live() || s == RunStatus::Lost);
            match query.status {
                Some(RunStatus::Lost) => {
                    sql.push_str(" AND (status = ?3 OR (status IN ('pending', 'running') AND lease_deadline < ?6))")
                }
                Some(s) if s.is_live() => {
                    sql.push_str(" AND status = ?3 AND (lease_deadline IS NULL OR lease_deadline >= ?6)")
                }
                Some(_) => sql.push_str(" AND status = ?3"),
                None => {}
            }
            if query.tag.is_some() {
                sql.push_str(" AND run_id IN (SELECT run_id FROM run_tags WHERE tag = ?4)");
            }
            sql.push_str(" ORDER BY run_id DESC LIMIT ?5");
            let mut stmt = c.prepare_cached(&sql)?;
            let status = query.status.map(|s| s.as_str());
            let tag = query.tag.as_ref().map(|t| t.as_str());
            let flow_s = flow.as_str();
            let mut bind: Vec<(usize, &dyn rusqlite::ToSql)> = vec![(1, &flow_s), (2, &after)];
            let lim = (limit + 1) as i64;
            let now = Timestamp::now().as_micros();
            if let Some(s) = &status {
                bind.push((3, s));
            }
            if by_lease {
                bind.push((6, &now));
            }
            if let Some(t) = &tag {
                bind.push((4, t));
            }
            bind.push((5, &lim));
            for (i, v) in bind {
                stmt.raw_bind_parameter(i, v)?;
            }
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(self.run_from_row(r)?);
            }
            Ok(out)
        })?;
        let items = rows.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(page(items, limit, |r| r.id.to_string()))
    }

    async fn renew_run_lease(&self, flow: &FlowName, id: RunId, lease: &RunLease) -> Result<bool> {
        let (flow, lease) = (flow.clone(), lease.clone());
        let path = self.db.path().to_owned();
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "UPDATE runs SET lease_holder = ?1, lease_renewed = ?2, lease_deadline = ?3 \
                     WHERE run_id = ?4 AND flow = ?5 AND status IN ('pending', 'running') AND lease_holder = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        lease.holder,
                        lease.renewed_at.as_micros(),
                        lease.deadline.as_micros(),
                        id.to_string(),
                        flow.as_str()
                    ])
                })
                .map(|n| n > 0)
                .map_err(|e| db_err(&path, format!("renew the lease of run {flow}/{id}"), e))
            })
            .await
    }

    async fn update_tags(&self, flow: &FlowName, id: RunId, add: &[Tag], remove: &[Tag]) -> Result<RunRecord> {
        update_tags_by_revision(self, flow, id, add, remove).await
    }

    async fn write_tasks(&self, writes: Vec<TaskWrite>) -> Result<Vec<WriteOutcome>> {
        let path = self.db.path().to_owned();
        // Computed here, on the caller's thread, not the writer's (see `PreparedWrite`).
        let prepared = writes.into_iter().map(|w| PreparedWrite::new(w, &path)).collect::<Result<Vec<_>>>()?;
        self.db
            .write(move |c| {
                let mut st = WriteStatements::prepare(c).map_err(|e| db_err(&path, "prepare the task writes", e))?;
                let mut out = Vec::with_capacity(prepared.len());
                for p in &prepared {
                    out.push(
                        write_one(&mut st, p).map_err(|e| db_err(&path, format!("write task {}", p.w.task.key), e))?,
                    );
                }
                Ok(out)
            })
            .await
    }

    async fn get_task(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Option<TaskRecord>> {
        self.db
            .query("read task", |c| {
                c.prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ?1 AND task_id = ?2 AND flow = ?3"
                ))?
                .query_row(params![run.to_string(), id_i64(task), flow.as_str()], |r| self.task_from_row(Some(flow), r))
                .optional()
            })?
            .transpose()
    }

    async fn list_tasks(&self, flow: &FlowName, run: RunId, query: &TaskQuery) -> Result<Page<TaskRecord>> {
        let limit = effective_limit(query.limit, 1000);
        let after: Option<u64> = parse_cursor(&query.after, "task")?;
        let after = after.map_or(-1, |a| a as i64);
        let rows: Vec<Result<TaskRecord>> = self.db.query("list tasks", |c| {
            let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ?1 AND flow = ?2 AND task_id > ?3");
            if query.step.is_some() {
                sql.push_str(" AND step = ?4");
            }
            if query.status.is_some() {
                sql.push_str(" AND status = ?5");
            }
            sql.push_str(" ORDER BY task_id LIMIT ?6");
            let mut stmt = c.prepare_cached(&sql)?;
            let run_s = run.to_string();
            let step = query.step.as_ref().map(|s| s.as_str());
            let status = query.status.map(|s| s.as_str());
            let lim = (limit + 1) as i64;
            let flow_s = flow.as_str();
            let mut bind: Vec<(usize, &dyn rusqlite::ToSql)> = vec![(1, &run_s), (2, &flow_s), (3, &after)];
            if let Some(s) = &step {
                bind.push((4, s));
            }
            if let Some(s) = &status {
                bind.push((5, s));
            }
            bind.push((6, &lim));
            for (i, v) in bind {
                stmt.raw_bind_parameter(i, v)?;
            }
            let at = TaskColumnsAt::of(&stmt)?;
            let location = self.db.location();
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(self.task_from_row_at(Some(flow), &at, &location, r)?);
            }
            Ok(out)
        })?;
        let items = rows.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(page(items, limit, |t| t.key.task.to_string()))
    }

    async fn tasks_by_index(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        index: u64,
    ) -> Result<Vec<TaskRecord>> {
        let rows: Vec<Result<TaskRecord>> = self.db.query("find task by index", |c| {
            // Without statistics SQLite prefers the primary key and scans the whole run
            // (14 ms at 100,000 tasks), so the step index is named. No `ORDER BY`: with
            // it, SQLite marks the plan as depending on the bound values, and a cached
            // statement is then prepared again on every call (50 µs); sorted below.
            c.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks INDEXED BY tasks_by_step \
                 WHERE run_id = ?1 AND step = ?2 AND foreach_index = ?3 AND flow = ?4"
            ))?
            .query_map(params![run.to_string(), step.as_str(), index as i64, flow.as_str()], |r| {
                self.task_from_row(Some(flow), r)
            })?
            .collect()
        })?;
        let mut tasks = rows.into_iter().collect::<Result<Vec<_>>>()?;
        tasks.sort_by_key(|t| t.key.task);
        Ok(tasks)
    }

    async fn step_summaries(&self, flow: &FlowName, run: RunId) -> Result<Vec<StepSummary>> {
        let rows: Vec<StepCountRow> = self.db.query("summarise steps", |c| {
            let mut stmt = c.prepare_cached(STEP_SUMMARIES)?;
            let mut rows = stmt.query(params![run.to_string(), flow.as_str()])?;
            let text = |r: &Row<'_>, i: usize| -> rusqlite::Result<String> { r.get(i) };
            // (step, status) -> its row in `out`; a step's tasks mostly come together, so
            // the row of the previous task is tried first.
            let mut out: Vec<StepCountRow> = Vec::new();
            let mut at: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
            let mut last: Option<usize> = None;
            while let Some(r) = rows.next()? {
                let (step, status) = (r.get_ref(0)?, r.get_ref(1)?);
                let i = match last {
                    Some(i)
                        if step.as_bytes().ok() == Some(out[i].0.as_bytes())
                            && status.as_bytes().ok() == Some(out[i].1.as_bytes()) =>
                    {
                        i
                    }
                    _ => {
                        let key = (text(r, 0)?, text(r, 1)?);
                        *at.entry(key.clone()).or_insert_with(|| {
                            out.push((key.0, key.1, 0, None, None, i64::MAX));
                            out.len() - 1
                        })
                    }
                };
                last = Some(i);
                let (started, ended, task): (Option<i64>, Option<i64>, i64) = (r.get(2)?, r.get(3)?, r.get(4)?);
                let e = &mut out[i];
                e.2 += 1;
                e.3 = match (e.3, started) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                e.4 = e.4.max(ended);
                e.5 = e.5.min(task);
            }
            Ok(out)
        })?;
        step_summaries(rows, flow, run, &self.db.location())
    }

    async fn list_attempts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<AttemptRecord>> {
        type Row = (i64, String, i64, Option<i64>, Option<String>);
        let rows: Vec<Row> = self.db.query("list attempts", |c| {
            c.prepare_cached(
                "SELECT a.attempt, a.status, a.started_at, a.ended_at, a.error FROM attempts a \
                 JOIN tasks t ON t.run_id = a.run_id AND t.task_id = a.task_id \
                 WHERE a.run_id = ?1 AND a.task_id = ?2 AND t.flow = ?3 ORDER BY a.attempt",
            )?
            .query_map(params![run.to_string(), id_i64(task), flow.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })?;
        if rows.is_empty() {
            // No rows: the attempt the task's row implies, if any (see `implied_attempt`).
            let task = self.get_task(flow, run, task).await?;
            return Ok(task.as_ref().and_then(implied_attempt).into_iter().collect());
        }
        rows.into_iter()
            .map(|(attempt, status, started, ended, error)| {
                let what = || format!("attempt row {run}/{task}/{attempt}");
                Ok(AttemptRecord {
                    attempt: Attempt(attempt as u32),
                    status: status.parse().map_err(|e| self.db.corrupt(what(), e))?,
                    started_at: Timestamp::from_micros(started),
                    ended_at: ts(ended),
                    error: error
                        .map(|e| serde_json::from_str(&e))
                        .transpose()
                        .map_err(|e| self.db.corrupt(what(), e))?,
                })
            })
            .collect()
    }

    async fn task_artifacts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<ArtifactRecord>> {
        let what = || format!("artifact rows of {flow}/{run}/{task}");
        let rows: Vec<Result<ArtifactRecord>> = self.db.query("list artifacts", |c| {
            c.prepare_cached(
                "SELECT a.* FROM artifacts a JOIN tasks t ON t.run_id = a.run_id AND t.task_id = a.task_id \
                 WHERE a.run_id = ?1 AND a.task_id = ?2 AND t.flow = ?3 ORDER BY a.name",
            )?
            .query_map(params![run.to_string(), id_i64(task), flow.as_str()], |r| self.artifact_from_row(r, &what))?
            .collect()
        })?;
        rows.into_iter().collect()
    }

    async fn artifacts_of_tasks(
        &self,
        flow: &FlowName,
        run: RunId,
        first: TaskId,
        last: TaskId,
    ) -> Result<Vec<(TaskId, ArtifactRecord)>> {
        let what = || format!("artifact rows of {flow}/{run}/{first}..={last}");
        // A range of the artifacts primary key (run_id, task_id, name), the flow checked once
        // on the run. Written as `>=`/`<=` with the run's flow in `EXISTS`: with `BETWEEN`
        // and a join to `tasks`, the bundled SQLite planned a scan of every artifact row of
        // the run (133 µs per row read at 1,000,000 tasks against 1 µs for this plan).
        let rows: Vec<(i64, Result<ArtifactRecord>)> = self.db.query("list artifacts of tasks", |c| {
            c.prepare_cached(
                "SELECT a.task_id AS of_task, a.* FROM artifacts a \
                 WHERE a.run_id = ?1 AND a.task_id >= ?2 AND a.task_id <= ?3 \
                 AND EXISTS (SELECT 1 FROM runs r WHERE r.run_id = a.run_id AND r.flow = ?4) \
                 ORDER BY a.run_id, a.task_id, a.name",
            )?
            .query_map(params![run.to_string(), id_i64(first), id_i64(last), flow.as_str()], |r| {
                Ok((r.get("of_task")?, self.artifact_from_row(r, &what)?))
            })?
            .collect()
        })?;
        rows.into_iter().map(|(t, a)| Ok((TaskId(t.max(0) as u64), a?))).collect()
    }

    async fn visible_artifacts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<VisibleArtifact>> {
        let what = || format!("artifact rows seen by {flow}/{run}/{task}");
        // Walk the parent chain in SQL: depth orders nearer tasks first, and the first
        // row per name wins. `CROSS JOIN` keeps the chain as the outer loop: left to the
        // planner, SQLite scanned every artifact row of the run and probed the chain
        // (11.7 ms per call at 100,000 tasks). The chain carries run_id so `?1` is used
        // once: a parameter used in several places makes SQLite mark the plan as depending
        // on its value, and a cached statement is then prepared again on every call.
        let rows: Vec<(i64, i64, Result<ArtifactRecord>)> = self.db.query("resolve artifacts", |c| {
            c.prepare_cached(
                "WITH RECURSIVE chain(run_id, task_id, depth) AS ( \
                     SELECT run_id, task_id, 0 FROM tasks WHERE run_id = ?1 AND task_id = ?2 AND flow = ?3 \
                     UNION ALL \
                     SELECT t.run_id, t.parent, chain.depth + 1 FROM chain \
                     JOIN tasks t ON t.run_id = chain.run_id AND t.task_id = chain.task_id \
                     WHERE t.parent IS NOT NULL AND chain.depth < 1000000 \
                 ) \
                 SELECT chain.depth, a.task_id, a.* FROM chain \
                 CROSS JOIN artifacts a ON a.run_id = chain.run_id AND a.task_id = chain.task_id \
                 ORDER BY a.name, chain.depth",
            )?
            .query_map(params![run.to_string(), id_i64(task), flow.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, self.artifact_from_row(r, &what)?))
            })?
            .collect()
        })?;
        let mut out: Vec<VisibleArtifact> = Vec::new();
        for (_, set_by, art) in rows {
            let art = art?;
            if out.last().is_some_and(|l| l.artifact.name == art.name) {
                continue;
            }
            out.push(VisibleArtifact { artifact: art, set_by: TaskId(set_by as u64) });
        }
        Ok(out)
    }

    async fn step_artifacts(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        name: &ArtifactName,
    ) -> Result<Vec<StepArtifact>> {
        let what = || format!("artifact {name} of {flow}/{run}/{step}");
        let rows: Vec<(i64, Option<i64>, Result<ArtifactRecord>)> =
            self.db.query("read artifact across step", |c| {
                c.prepare_cached(
                    "SELECT t.task_id AS tid, t.foreach_index AS fi, a.* FROM tasks t \
                 JOIN artifacts a ON a.run_id = t.run_id AND a.task_id = t.task_id AND a.name = ?3 \
                 WHERE t.run_id = ?1 AND t.step = ?2 AND t.flow = ?4 ORDER BY t.foreach_index, t.task_id",
                )?
                .query_map(params![run.to_string(), step.as_str(), name.as_str(), flow.as_str()], |r| {
                    Ok((r.get("tid")?, r.get("fi")?, self.artifact_from_row(r, &what)?))
                })?
                .collect()
            })?;
        rows.into_iter()
            .map(|(task, fi, art)| {
                Ok(StepArtifact { task: TaskId(task as u64), foreach_index: fi.map(|i| i as u64), artifact: art? })
            })
            .collect()
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
        let rows: Vec<(i64, Option<i64>, Option<i64>, Option<Result<ArtifactRecord>>)> =
            self.db.query("read a page of an artifact across a step", |c| {
                // A run of another flow has no tasks here.
                let of_flow = c
                    .prepare_cached("SELECT 1 FROM runs WHERE run_id = ?1 AND flow = ?2")?
                    .exists(params![run_s, flow.as_str()])?;
                let mut out = Vec::new();
                if !of_flow {
                    return Ok(out);
                }
                let mut read = |sql: &str, from: &[i64]| -> rusqlite::Result<usize> {
                    let mut stmt = c.prepare_cached(sql)?;
                    let fixed: [&dyn rusqlite::ToSql; 3] = [&run_s, &step.as_str(), &name.as_str()];
                    for (i, v) in fixed.into_iter().enumerate() {
                        stmt.raw_bind_parameter(i + 1, v)?;
                    }
                    for (i, v) in from.iter().enumerate() {
                        stmt.raw_bind_parameter(i + 4, v)?;
                    }
                    let at = ArtifactColumnsAt::of(&stmt)?;
                    let location = self.db.location();
                    let c = &at.0;
                    let mut rows = stmt.raw_query();
                    while let Some(r) = rows.next()? {
                        let art = match r.get::<_, Option<String>>(c[0])? {
                            Some(_) => Some(self.artifact_from_row_at(r, &at, &location, &what)?),
                            None => None,
                        };
                        out.push((r.get(c[9])?, r.get(c[10])?, r.get(c[11])?, art));
                    }
                    Ok(out.len())
                };
                // Tasks without a foreach index come first, then the rest by index.
                let want = limit + 1;
                let mut have = 0;
                if after.is_none_or(|a| a.index.is_none()) {
                    let from = after.map_or(-1, |a| a.task as i64);
                    have = read(STEP_ARTIFACTS_UNINDEXED, &[from, want as i64])?;
                }
                if have < want {
                    let (i, t) = match after {
                        Some(StepCursor { index: Some(i), task }) => (i as i64, task as i64),
                        _ => (-1, -1),
                    };
                    read(STEP_ARTIFACTS_INDEXED, &[i, t, (want - have) as i64])?;
                }
                Ok(out)
            })?;
        let rows = rows
            .into_iter()
            .map(|(task, fi, parent, art)| {
                Ok(StepArtifactRow {
                    task: TaskId(task as u64),
                    foreach_index: fi.map(|i| i as u64),
                    parent: parent.map(|p| TaskId(p as u64)),
                    artifact: art.transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(page(rows, limit, |r| StepCursor::after(r).to_string()))
    }

    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let path = self.db.path().to_owned();
        self.db
            .write(move |c| {
                let res: rusqlite::Result<()> = (|| {
                    let mut next =
                        c.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM logs WHERE run_id = ?1 AND task_id = ?2")?;
                    let mut ins = c.prepare_cached(
                        "INSERT INTO logs (run_id, task_id, seq, attempt, at, level, line, row_sum) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, braid_row_sum(?1, ?2, ?3, ?4, ?5, ?6, ?7))",
                    )?;
                    let mut last: Option<(RunId, TaskId, i64)> = None;
                    for l in &lines {
                        let seq = match last {
                            Some((r, t, s)) if r == l.run && t == l.task => s + 1,
                            _ => {
                                next.query_row(params![l.run.to_string(), id_i64(l.task)], |r| r.get::<_, i64>(0))? + 1
                            }
                        };
                        ins.execute(params![
                            l.run.to_string(),
                            id_i64(l.task),
                            seq,
                            l.attempt.0,
                            l.at.as_micros(),
                            l.level,
                            l.line
                        ])?;
                        last = Some((l.run, l.task, seq));
                    }
                    Ok(())
                })();
                res.map_err(|e| db_err(&path, "append logs", e))
            })
            .await
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
        type Row = (i64, i64, i64, String, String);
        let rows: Vec<Row> = self.db.query("read logs", |c| {
            c.prepare_cached(
                "SELECT l.seq, l.attempt, l.at, l.level, l.line FROM logs l \
                 JOIN tasks t ON t.run_id = l.run_id AND t.task_id = l.task_id \
                 WHERE l.run_id = ?1 AND l.task_id = ?2 AND l.seq > ?3 AND t.flow = ?4 ORDER BY l.seq LIMIT ?5",
            )?
            .query_map(params![run.to_string(), id_i64(task), after as i64, flow.as_str(), limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })?;
        Ok(rows
            .into_iter()
            .map(|(seq, attempt, at, level, line)| LogLine {
                run,
                task,
                attempt: Attempt(attempt as u32),
                seq: seq as u64,
                at: Timestamp::from_micros(at),
                level,
                line,
            })
            .collect())
    }

    async fn try_claim(&self, scope: &str, key: &str, holder: &str) -> Result<bool> {
        let (scope, key, holder) = (scope.to_owned(), key.to_owned(), holder.to_owned());
        let path = self.db.path().to_owned();
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "INSERT OR IGNORE INTO claims (scope, key, holder, claimed_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| s.execute(params![scope, key, holder, Timestamp::now().as_micros()]))
                .map(|n| n == 1)
                .map_err(|e| db_err(&path, format!("claim {scope}/{key}"), e))
            })
            .await
    }

    async fn claim_holder(&self, scope: &str, key: &str) -> Result<Option<String>> {
        self.db.query("read claim", |c| {
            c.prepare_cached("SELECT holder FROM claims WHERE scope = ?1 AND key = ?2")?
                .query_row(params![scope, key], |r| r.get(0))
                .optional()
        })
    }
    async fn delete_run(&self, flow: &FlowName, id: RunId, revision: u64) -> Result<RunDeletion> {
        let path = self.db.path().to_owned();
        let (flow, run) = (flow.clone(), id.to_string());
        self.db
            .write(move |c| {
                let what = || format!("run {flow}/{run}");
                let e = |context: &str| {
                    let context = format!("{context} of {flow}/{run}");
                    let path = path.clone();
                    move |e| db_err(&path, context, e)
                };
                let stored: Option<(i64, String)> = c
                    .prepare_cached("SELECT revision, flow FROM runs WHERE run_id = ?1")
                    .and_then(|mut s| s.query_row([&run], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(e("read run"))?;
                let Some((stored, _)) = stored.filter(|(_, f)| f == flow.as_str()) else {
                    return Err(Error::NotFound { what: what() });
                };
                if stored as u64 != revision {
                    return Err(Error::Conflict {
                        what: what(),
                        reason: format!("expected revision {revision}, stored is {stored}"),
                    });
                }
                let resumed: Option<(String, String)> = c
                    .prepare_cached("SELECT flow, run_id FROM runs WHERE origin_run = ?1 AND run_id <> ?1 LIMIT 1")
                    .and_then(|mut s| s.query_row([&run], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                    .map_err(e("find runs resumed from"))?;
                if let Some((f, r)) = resumed {
                    return Err(Error::Conflict {
                        what: what(),
                        reason: format!("run {f}/{r} was resumed from it and remains"),
                    });
                }
                let del = |table: &str| -> Result<u64> {
                    c.prepare_cached(&format!("DELETE FROM {table} WHERE run_id = ?1"))
                        .and_then(|mut s| s.execute([&run]))
                        .map(|n| n as u64)
                        .map_err(e(&format!("delete the {table}")))
                };
                let gone = RunDeletion {
                    log_lines: del("logs")?,
                    artifacts: del("artifacts")?,
                    attempts: del("attempts")?,
                    tasks: del("tasks")?,
                };
                del("run_tags")?;
                del("runs")?;
                Ok(gone)
            })
            .await
    }

    async fn artifact_blob_refs(&self, after: Option<String>, limit: usize) -> Result<Page<BlobRef>> {
        let limit = effective_limit(limit, 10_000);
        let after = parse_artifact_cursor(after.as_deref())?;
        let rows: Vec<BlobRefRow> = self.db.query("list blob references", |c| {
            c.prepare_cached(
                "SELECT run_id, task_id, name, blob_key, elements_key FROM artifacts \
                 WHERE (run_id, task_id, name) > (?1, ?2, ?3) ORDER BY run_id, task_id, name LIMIT ?4",
            )?
            .query_map(params![after.0, after.1, after.2, (limit + 1) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })?;
        blob_ref_page(rows, limit, &self.db.location())
    }

    async fn compact(&self) -> Result<Option<u64>> {
        self.db.compact().await
    }
}

/// A row that does not decode, found by [`FsRecords::decode_all`].
pub(crate) struct Undecodable {
    pub(crate) what: String,
    pub(crate) reason: String,
}

impl FsRecords {
    /// Reads every run, task, attempt and artifact row through the decoders the store
    /// uses, so a value that no longer parses (a status, a name, JSON, a key length) is
    /// named here rather than on some later read. Changes nothing.
    pub(crate) fn decode_all(&self) -> Result<Vec<Undecodable>> {
        let mut out = Vec::new();
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                match e {
                    Error::Corrupt { what, reason, .. } => out.push(Undecodable { what, reason }),
                    other => out.push(Undecodable { what: "a row".into(), reason: other.to_string() }),
                }
            }
        };
        let runs: Vec<Result<RunRecord>> = self.db.query("read every run", |c| {
            c.prepare("SELECT * FROM runs")?.query_map([], |r| self.run_from_row(r))?.collect()
        })?;
        for r in runs {
            note(r.map(|_| ()));
        }
        let tasks: Vec<Result<TaskRecord>> = self.db.query("read every task", |c| {
            c.prepare(&format!("SELECT {TASK_COLUMNS} FROM tasks"))?
                .query_map([], |r| self.task_from_row(None, r))?
                .collect()
        })?;
        for t in tasks {
            note(t.map(|_| ()));
        }
        let arts: Vec<(String, Result<ArtifactRecord>)> = self.db.query("read every artifact", |c| {
            c.prepare("SELECT * FROM artifacts")?
                .query_map([], |r| {
                    let at = format!("{}/{}", r.get::<_, String>("run_id")?, r.get::<_, i64>("task_id")?);
                    let what = || format!("artifact row of task {at}");
                    Ok((at.clone(), self.artifact_from_row(r, &what)?))
                })?
                .collect()
        })?;
        for (at, a) in arts {
            note(a.and_then(|a| match &a.inline {
                Some(bytes) => crate::blob::verify(&a.key, bytes, "").map_err(|e| {
                    self.db.corrupt(
                        format!("inline value of artifact {} of task {at}", a.name),
                        match e {
                            Error::Corrupt { reason, .. } => reason,
                            e => e.to_string(),
                        },
                    )
                }),
                None => Ok(()),
            }));
        }
        type AttemptRow = (String, i64, i64, String, Option<String>);
        let attempts: Vec<AttemptRow> = self.db.query("read every attempt", |c| {
            c.prepare("SELECT run_id, task_id, attempt, status, error FROM attempts")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect()
        })?;
        for (run, task, attempt, status, error) in attempts {
            let what = || format!("attempt row {run}/{task}/{attempt}");
            note(status.parse::<TaskStatus>().map(|_| ()).map_err(|e| self.db.corrupt(what(), e)));
            if let Some(e) = error {
                note(serde_json::from_str::<TaskError>(&e).map(|_| ()).map_err(|e| self.db.corrupt(what(), e)));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The plan SQLite chose for `sql`, one line per step.
    fn plan(records: &FsRecords, sql: &str) -> String {
        records
            .db
            .query("explain", |c| {
                // Parameters left unbound are NULL: the plan does not depend on them.
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let mut rows = stmt.raw_query();
                let mut lines = Vec::new();
                while let Some(r) = rows.next()? {
                    lines.push(r.get::<_, String>(3)?);
                }
                Ok(lines.join("\n"))
            })
            .unwrap()
    }

    #[test]
    fn step_summaries_read_the_runs_rows_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = super::super::open(&dir.path().join("store")).unwrap();
        let p = plan(&records, STEP_SUMMARIES);
        assert!(p.contains("SEARCH tasks USING PRIMARY KEY (run_id=?)"), "{p}");
    }

    #[test]
    fn the_task_columns_read_by_place_are_the_task_columns_selected() {
        let selected: Vec<&str> = TASK_COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(selected, TaskColumnsAt::NAMES);
    }

    #[test]
    fn a_page_of_a_steps_artifact_is_a_range_of_the_step_index_with_no_sort() {
        let dir = tempfile::tempdir().unwrap();
        let (_, records) = super::super::open(&dir.path().join("store")).unwrap();
        for sql in [STEP_ARTIFACTS_UNINDEXED, STEP_ARTIFACTS_INDEXED] {
            let p = plan(&records, sql);
            assert!(p.contains("SEARCH t USING COVERING INDEX tasks_by_step (run_id=? AND step=?"), "{p}");
            assert!(p.contains("SEARCH a USING PRIMARY KEY (run_id=? AND task_id=? AND name=?)"), "{p}");
            assert!(p.contains("SEARCH p USING PRIMARY KEY (run_id=? AND task_id=?)"), "{p}");
            assert!(!p.contains("TEMP B-TREE") && !p.contains("SCAN"), "no sort and no scan: {p}");
        }
    }
}
