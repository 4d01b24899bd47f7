//! The SQLite half of the fs backend: one writer thread batching every write of this
//! process into few transactions, and a pool of read connections.
//!
//! Why one writer thread: SQLite admits one writer at a time, and a transaction costs
//! a WAL append plus (in FULL mode) an fsync. Batching whatever is queued into one
//! transaction turns ~80 µs per record into a few µs. Each job runs inside its own
//! savepoint, so one job's failure (a rejected precondition is not a failure) rolls back
//! only that job.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// The schema. `user_version` says which one a database has: 1 first; 2 added the
/// run lease (`runs.lease_*`, see [`COLUMNS_SINCE_V1`]); 3 leaves out the attempt row of
/// a task written succeeded in one write (its row implies it: `records::implied_attempt`),
/// which an older braid would read as a task with no attempts, so it refuses a format-3
/// store instead. Upgrading changes no row.
const SCHEMA_VERSION: i64 = 3;
/// Columns added to existing tables after version 1, created on open where missing
/// (a table in [`SCHEMA`] is only created when absent, so it cannot add them itself).
const COLUMNS_SINCE_V1: &[(&str, &str, &str)] =
    &[("runs", "lease_holder", "TEXT"), ("runs", "lease_renewed", "INTEGER"), ("runs", "lease_deadline", "INTEGER")];
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS flows (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    flow        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    ended_at    INTEGER,
    origin_run  TEXT,
    name        TEXT,
    error       TEXT,
    params      TEXT NOT NULL,
    tags        TEXT NOT NULL,
    meta        TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    lease_holder   TEXT,
    lease_renewed  INTEGER,
    lease_deadline INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_flow ON runs (flow, run_id);
CREATE TABLE IF NOT EXISTS run_tags (
    run_id  TEXT NOT NULL,
    tag     TEXT NOT NULL,
    PRIMARY KEY (run_id, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_tags_by_tag ON run_tags (tag, run_id);
CREATE TABLE IF NOT EXISTS tasks (
    run_id          TEXT NOT NULL,
    task_id         INTEGER NOT NULL,
    flow            TEXT NOT NULL,
    step            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    foreach_index   INTEGER,
    iteration       INTEGER NOT NULL,
    parent          INTEGER,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    ended_at        INTEGER,
    lease_deadline  INTEGER,
    progress_pct    REAL,
    progress_msg    TEXT,
    progress_at     INTEGER,
    extra           TEXT,
    revision        INTEGER NOT NULL,
    PRIMARY KEY (run_id, task_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_step ON tasks (run_id, step, foreach_index);
CREATE INDEX IF NOT EXISTS tasks_of_step ON tasks (run_id, step, task_id);
CREATE TABLE IF NOT EXISTS attempts (
    run_id      TEXT NOT NULL,
    task_id     INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    error       TEXT,
    PRIMARY KEY (run_id, task_id, attempt)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
    run_id      TEXT NOT NULL,
    task_id     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    blob_key    BLOB NOT NULL,
    type_name   TEXT NOT NULL,
    size        INTEGER NOT NULL,
    preview     TEXT NOT NULL,
    preview_cut INTEGER NOT NULL,
    elements_key BLOB,
    elements_len INTEGER,
    inline_value BLOB,
    PRIMARY KEY (run_id, task_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    run_id   TEXT NOT NULL,
    task_id  INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    level    TEXT NOT NULL,
    line     TEXT NOT NULL,
    PRIMARY KEY (run_id, task_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs (
    blob_key  BLOB PRIMARY KEY,
    data      BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS claims (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    holder      TEXT NOT NULL,
    claimed_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS plans (
    name         TEXT PRIMARY KEY,
    flow         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    hash         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    labels       TEXT NOT NULL,
    active       INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    active_since INTEGER,
    cursor       INTEGER
);
CREATE TABLE IF NOT EXISTS plan_versions (
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    labels      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS plan_labels (
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    name   TEXT NOT NULL,
    PRIMARY KEY (key, value, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS launches (
    key         TEXT PRIMARY KEY,
    plan        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    flow        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    tick        INTEGER NOT NULL,
    set_key     TEXT NOT NULL,
    params      TEXT NOT NULL,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL,
    holder      TEXT,
    run_id      TEXT,
    status      TEXT,
    note        TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS launches_by_plan ON launches (plan, set_key, tick);
CREATE INDEX IF NOT EXISTS launches_by_tick ON launches (tick);
CREATE INDEX IF NOT EXISTS launches_by_state ON launches (state, flow, tick);
CREATE TABLE IF NOT EXISTS schedulers (
    id       TEXT PRIMARY KEY,
    info     TEXT NOT NULL,
    seen_at  INTEGER NOT NULL
);
"#;

/// Brings a database of any older version (or a new, empty one) to [`SCHEMA_VERSION`]
/// in one transaction: a crash leaves the old version or the new one.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| {
        conn.execute_batch(SCHEMA)?;
        for (table, column, ty) in COLUMNS_SINCE_V1 {
            let present: bool = conn.query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                [table, column],
                |r| r.get(0),
            )?;
            if !present {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))?;
            }
        }
        conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
    })();
    match r {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            // The error that matters is `e`; a failed rollback leaves SQLite to roll back
            // the open transaction when the connection closes.
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Most jobs one transaction takes.
const MAX_BATCH: usize = 4096;

trait Job: Send {
    /// Runs inside the batch's transaction; false if it failed (its savepoint is rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Delivers the result once the transaction committed, or the commit error.
    fn finish(self: Box<Self>, commit: std::result::Result<(), Arc<rusqlite::Error>>);
}

struct TypedJob<T, F> {
    f: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send, F: FnOnce(&Connection) -> Result<T> + Send> Job for TypedJob<T, F> {
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else { return false };
        let r = f(conn);
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn finish(self: Box<Self>, commit: std::result::Result<(), Arc<rusqlite::Error>>) {
        let r = match (commit, self.result) {
            (Ok(()), Some(r)) => r,
            (Ok(()), None) => Err(Error::Closed),
            (Err(e), Some(Err(job_err))) => Err(Error::Database {
                path: String::new(),
                context: format!("commit failed after the job failed ({job_err})"),
                source: e,
            }),
            (Err(e), _) => Err(Error::Database { path: String::new(), context: "commit".into(), source: e }),
        };
        // A caller that stopped waiting (its future was dropped) needs no answer: the
        // outcome is in the database either way.
        let _ = self.reply.send(r);
    }
}

/// The record database of one store, shared by its blob and record halves.
#[derive(Debug)]
pub(crate) struct Db {
    path: PathBuf,
    writer: mpsc::Sender<Box<dyn Job>>,
    readers: Mutex<Vec<Connection>>,
    /// The writer thread, joined when the last handle goes (see `Drop`).
    thread: Option<std::thread::JoinHandle<()>>,
}

pub(crate) fn db_err(path: &Path, context: impl Into<String>, e: rusqlite::Error) -> Error {
    let corrupt =
        matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase));
    if corrupt {
        Error::Corrupt { what: "record database".into(), path: path.display().to_string(), reason: e.to_string() }
    } else {
        Error::Database { path: path.display().to_string(), context: context.into(), source: Arc::new(e) }
    }
}

fn configure(conn: &Connection, path: &Path) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(30)).map_err(|e| db_err(path, "set busy timeout", e))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF; PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 16384;")
        .map_err(|e| db_err(path, "configure", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    super::check::register(conn).map_err(|e| db_err(path, "register the row checksum function", e))?;
    Ok(())
}

impl Db {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|e| db_err(path, "open", e))?;
        // A new, empty file: free pages can later be given back to the file system
        // (`braid gc`) without a full VACUUM that would stall running flows. Must be set
        // before anything (even the WAL switch) writes the first page.
        let fresh =
            conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0)).map_err(|e| db_err(path, "open", e))? == 0;
        if fresh {
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;").map_err(|e| db_err(path, "configure", e))?;
        }
        configure(&conn, path)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| db_err(path, "read schema version", e))?;
        if version > SCHEMA_VERSION {
            return Err(Error::UnsupportedFormat {
                path: path.display().to_string(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: SCHEMA_VERSION as u32,
            });
        }
        // Tables and indexes added since a database was made (launch plans, the index of a
        // step's tasks in id order) are created on open:
        // every statement of the schema is `IF NOT EXISTS`.
        let missing_tables = version == SCHEMA_VERSION
            && conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE (type = 'table' AND name = 'launches') \
                     OR (type = 'index' AND name = 'tasks_of_step')",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(|e| db_err(path, "read schema", e))?
                < 2;
        if version < SCHEMA_VERSION || missing_tables {
            migrate(&conn).map_err(|e| db_err(path, format!("upgrade the schema from version {version}"), e))?;
        }
        super::check::migrate(&conn).map_err(|e| db_err(path, "add the columns of row checksums", e))?;
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(MAX_BATCH * 4);
        let thread_path = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("braid-store-writer".into())
            .spawn(move || writer_loop(conn, rx, thread_path))
            .map_err(|e| Error::io("start writer thread for", path, e))?;
        Ok(Db { path: path.to_owned(), writer: tx, readers: Mutex::new(Vec::new()), thread: Some(thread) })
    }

    /// Gives free pages back to the file system (the database was made with
    /// `auto_vacuum = INCREMENTAL`) in short transactions, so running flows' writes
    /// interleave; then truncates the WAL if nobody else is using it. A database made
    /// before that setting (auto_vacuum NONE) is left as is: converting it takes a full
    /// VACUUM, which would block every writer for as long as it runs. Returns the bytes
    /// given back, or `None` for such a database.
    pub(crate) async fn compact(&self) -> Result<Option<u64>> {
        let path = self.path.clone();
        let (mode, page_size): (i64, i64) = self.read(|c| {
            c.query_row("SELECT * FROM pragma_auto_vacuum, pragma_page_size", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| db_err(&path, "read auto_vacuum", e))
        })?;
        if mode != 2 {
            return Ok(None);
        }
        let mut freed = 0u64;
        loop {
            let p = path.clone();
            let n: u64 = self
                .write(move |c| {
                    let before: i64 = c
                        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                        .map_err(|e| db_err(&p, "count free pages", e))?;
                    // 2048 pages (8 MiB) per transaction: milliseconds of the writer.
                    c.execute_batch("PRAGMA incremental_vacuum(2048);")
                        .map_err(|e| db_err(&p, "give free pages back", e))?;
                    let after: i64 = c
                        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                        .map_err(|e| db_err(&p, "count free pages", e))?;
                    Ok(before.saturating_sub(after).max(0) as u64)
                })
                .await?;
            freed += n;
            if n == 0 {
                break;
            }
        }
        // Outside any transaction: a checkpoint cannot run inside one. No busy wait.
        let p = path.clone();
        let c = Connection::open(&path).map_err(|e| db_err(&p, "open", e))?;
        let _ = c.busy_timeout(Duration::ZERO);
        let _ = c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        Ok(Some(freed * page_size.max(0) as u64))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The database's path, as errors name it.
    pub(crate) fn location(&self) -> String {
        self.path.display().to_string()
    }

    /// The error for a row of this database that does not decode.
    pub(crate) fn corrupt(&self, what: String, reason: impl ToString) -> Error {
        crate::rows::corrupt(&self.location(), what, reason)
    }

    /// [`Db::read`] of a query whose SQLite errors name `context` and the database.
    pub(crate) fn query<T>(&self, context: &str, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.read(|c| f(c).map_err(|e| db_err(&self.path, context, e)))
    }

    /// Runs `f` in the writer's next transaction and returns its result after commit.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(TypedJob { f: Some(f), result: None, reply });
        self.writer.send(job).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?.map_err(|e| match e {
            Error::Database { path, context, source } if path.is_empty() => {
                Error::Database { path: self.path.display().to_string(), context, source }
            }
            e => e,
        })
    }

    /// Runs `f` on a pooled read connection. Reads in WAL mode see the last commit and
    /// never block the writer, so they run inline: they take microseconds.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = {
            let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
            pool.pop()
        };
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
                )
                .map_err(|e| db_err(&self.path, "open for reading", e))?;
                c.busy_timeout(Duration::from_secs(30)).map_err(|e| db_err(&self.path, "set busy timeout", e))?;
                c.set_prepared_statement_cache_capacity(64);
                super::check::register(&c).map_err(|e| db_err(&self.path, "register the row checksum function", e))?;
                c
            }
        };
        let r = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        r
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<Box<dyn Job>>, path: PathBuf) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = run_batch(&conn, &mut batch);
        if let Err(e) = &outcome {
            tracing::error!(db = %path.display(), error = %e, jobs = batch.len(), "record batch failed");
        }
        for job in batch.drain(..) {
            job.finish(outcome.clone());
        }
    }
    // Channel closed: every handle is gone. Fold what the WAL holds back into the
    // database and truncate the WAL, so a cleanly closed store is its database file
    // alone (copy or archive it as is). With no busy wait: if another process is
    // reading or writing, TRUNCATE degrades to PASSIVE (copies what it can, waits for
    // nobody), so a short `braid show` exiting never stalls a live run; that process
    // checkpoints when it closes.
    let _ = conn.busy_timeout(Duration::ZERO);
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::debug!(db = %path.display(), error = %e, "WAL not checkpointed at close");
    }
}

impl Drop for Db {
    /// The last handle of the store: close the read connections, let the writer finish
    /// what is queued and checkpoint, and wait for it, so a process that exits right
    /// after dropping its store leaves no WAL behind.
    fn drop(&mut self) {
        self.readers.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // Closing the channel ends the writer loop once the queue is drained.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.writer, closed));
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// Runs a batch in one transaction. On an error of the transaction itself, the error
/// is what every job is told; the `ROLLBACK` attempted before returning it is
/// best-effort (`let _`): if it fails too, SQLite rolls the open transaction back when
/// the next `BEGIN` fails or the connection closes, and nothing of the batch is kept.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> std::result::Result<(), Arc<rusqlite::Error>> {
    let exec = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([])).map(|_| ());
    exec("BEGIN IMMEDIATE").map_err(Arc::new)?;
    let single = batch.len() == 1;
    for job in batch.iter_mut() {
        // A lone job needs no savepoint: if it fails, the whole transaction rolls back.
        if single {
            if !job.run(conn) {
                let _ = exec("ROLLBACK");
                return Ok(());
            }
            continue;
        }
        if let Err(e) = exec("SAVEPOINT job") {
            let _ = exec("ROLLBACK");
            return Err(Arc::new(e));
        }
        let ok = job.run(conn);
        let end = if ok { exec("RELEASE job") } else { exec("ROLLBACK TO job").and_then(|()| exec("RELEASE job")) };
        if let Err(e) = end {
            let _ = exec("ROLLBACK");
            return Err(Arc::new(e));
        }
    }
    exec("COMMIT").map_err(|e| {
        let _ = exec("ROLLBACK");
        Arc::new(e)
    })
}
