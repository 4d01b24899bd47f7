//! The PostgreSQL backend: records ([`PgRecords`]) and plans ([`PgPlans`]) in a
//! database server several machines share, for `--store postgres://user@host:port/db`.
//!
//! - **Schema**: embedded, versioned migrations ([`MIGRATIONS`]) applied on open, in one
//!   transaction under an advisory lock, so two processes opening a new database at once
//!   neither race nor half-apply; `braid_schema` records the version. A database of an
//!   older version is upgraded; a newer one is refused with the version to upgrade to.
//! - **Conditional writes** are correct under concurrent writers on different machines:
//!   inserts-if-absent are `INSERT … ON CONFLICT DO NOTHING`, revision and attempt checks
//!   run against rows locked `FOR UPDATE` in the writing transaction (or in the `WHERE`
//!   of a single `UPDATE … RETURNING`), claims are `ON CONFLICT DO NOTHING`. A
//!   transaction that deadlocks or loses a unique race with another writer is retried
//!   whole.
//! - **Bulk writes** are batched: `write_tasks` of thousands of records is a handful of
//!   statements over `UNNEST`ed arrays, not a round trip per row.
//! - **Connections** come from a pool ([`POOL_SIZE`]); connecting gives up after
//!   [`CONNECT_TIMEOUT`] with the host and port it tried. A call whose connection the
//!   server dropped (a restart, a failover) runs again on a new one, for up to
//!   [`RECONNECT_FOR`]: every transaction is whole or absent, and the writes run again
//!   are conditional (inserts-if-absent, fenced by a claim token), so a second run does
//!   not write twice.
//!
//! Timestamps are stored as microseconds since the epoch (`BIGINT`), ids and keys as in
//! the fs backend, so both backends read the same values back bit for bit.

mod plans;
mod queue;
mod records;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls};

pub use plans::PgPlans;
pub use queue::PgQueue;
pub use records::PgRecords;

use crate::error::{Error, Result};

/// How long connecting to the server may take before the open fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections a store keeps at most: enough for a run's writer, its readers and a
/// scheduler at once, without exhausting a server's `max_connections` (100 by default)
/// when a dozen workers share it.
pub const POOL_SIZE: usize = 16;
/// How many times a transaction that deadlocked or lost a race is run again.
const MAX_RETRIES: u32 = 16;
/// How long a call goes on trying when the server dropped its connections (a restart,
/// a failover, `pg_terminate_backend`) before it fails: long enough for a server to
/// restart, short enough that a server that is gone for good is reported.
pub const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// The advisory lock key migrations hold (any constant; "braid" in ASCII).
const MIGRATION_LOCK: i64 = 0x0062_7261_6964;

/// The schema, one migration per version: `MIGRATIONS[i]` brings version `i` to `i + 1`.
/// Never edit a released migration; add one.
pub const MIGRATIONS: &[&str] = &[
    // 1: every table and index of the fs backend's schema.
    r#"
CREATE TABLE flows (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY,
    flow        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    started_at  BIGINT,
    ended_at    BIGINT,
    origin_run  TEXT,
    name        TEXT,
    error       TEXT,
    params      TEXT NOT NULL,
    tags        TEXT NOT NULL,
    meta        TEXT NOT NULL,
    revision    BIGINT NOT NULL
);
CREATE INDEX runs_by_flow ON runs (flow, run_id);
CREATE TABLE run_tags (
    run_id  TEXT NOT NULL,
    tag     TEXT NOT NULL,
    PRIMARY KEY (run_id, tag)
);
CREATE INDEX run_tags_by_tag ON run_tags (tag, run_id);
CREATE TABLE tasks (
    run_id          TEXT NOT NULL,
    task_id         BIGINT NOT NULL,
    flow            TEXT NOT NULL,
    step            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempt         BIGINT NOT NULL,
    foreach_index   BIGINT,
    iteration       BIGINT NOT NULL,
    parent          BIGINT,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    ended_at        BIGINT,
    lease_deadline  BIGINT,
    progress_pct    DOUBLE PRECISION,
    progress_msg    TEXT,
    progress_at     BIGINT,
    extra           TEXT,
    revision        BIGINT NOT NULL,
    PRIMARY KEY (run_id, task_id)
);
CREATE INDEX tasks_by_step ON tasks (run_id, step, foreach_index);
CREATE INDEX tasks_of_step ON tasks (run_id, step, task_id);
CREATE TABLE attempts (
    run_id      TEXT NOT NULL,
    task_id     BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    status      TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    error       TEXT,
    PRIMARY KEY (run_id, task_id, attempt)
);
CREATE TABLE artifacts (
    run_id       TEXT NOT NULL,
    task_id      BIGINT NOT NULL,
    name         TEXT NOT NULL,
    blob_key     BYTEA NOT NULL,
    type_name    TEXT NOT NULL,
    size         BIGINT NOT NULL,
    preview      TEXT NOT NULL,
    preview_cut  BOOLEAN NOT NULL,
    elements_key BYTEA,
    elements_len BIGINT,
    inline_value BYTEA,
    PRIMARY KEY (run_id, task_id, name)
);
CREATE TABLE logs (
    run_id   TEXT NOT NULL,
    task_id  BIGINT NOT NULL,
    seq      BIGINT NOT NULL,
    attempt  BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    level    TEXT NOT NULL,
    line     TEXT NOT NULL,
    PRIMARY KEY (run_id, task_id, seq)
);
CREATE TABLE claims (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    holder      TEXT NOT NULL,
    claimed_at  BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE plans (
    name         TEXT PRIMARY KEY,
    flow         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    hash         TEXT NOT NULL,
    spec         TEXT NOT NULL,
    labels       TEXT NOT NULL,
    active       BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    active_since BIGINT,
    cursor       BIGINT
);
CREATE TABLE plan_versions (
    name        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    labels      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE plan_labels (
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    name   TEXT NOT NULL,
    PRIMARY KEY (key, value, name)
);
CREATE INDEX plan_labels_by_name ON plan_labels (name);
CREATE TABLE launches (
    key         TEXT PRIMARY KEY,
    plan        TEXT NOT NULL,
    version     BIGINT NOT NULL,
    flow        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    tick        BIGINT NOT NULL,
    set_key     TEXT NOT NULL,
    params      TEXT NOT NULL,
    name        TEXT NOT NULL,
    state       TEXT NOT NULL,
    holder      TEXT,
    run_id      TEXT,
    status      TEXT,
    note        TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX launches_by_plan ON launches (plan, set_key, tick);
CREATE INDEX launches_by_tick ON launches (tick);
CREATE INDEX launches_by_state ON launches (state, flow, tick);
CREATE TABLE schedulers (
    id       TEXT PRIMARY KEY,
    info     TEXT NOT NULL,
    seen_at  BIGINT NOT NULL
);
"#,
    // 2: run leases (who moves a live run forward, and until when).
    r#"
ALTER TABLE runs ADD COLUMN lease_holder TEXT;
ALTER TABLE runs ADD COLUMN lease_renewed BIGINT;
ALTER TABLE runs ADD COLUMN lease_deadline BIGINT;
"#,
    // 3: the runs resumed from a run, found without a scan (`delete_run` refuses while one remains).
    r#"
CREATE INDEX runs_by_origin ON runs (origin_run);
"#,
    // 4: parameter set states (paused after failures, resumed) and plan deletion.
    plans::PLAN_SETS_MIGRATION,
    // 5: failed ticks of plans whose parameter sets are produced per tick.
    plans::TICK_FAILURES_MIGRATION,
    // 6: the task queue workers claim from.
    queue::QUEUE_MIGRATION,
    queue::REPLIES_MIGRATION,
    queue::LIMITS_MIGRATION,
    // 9: room in each page for a row's next version, so that updating a task or an
    // attempt (running, then ended: two updates of each row) is a HOT update that
    // writes no index entry. Measured on a 10,000-task run on workers: 21% of the
    // task updates were HOT at the default of 100, 54% at 80. And the queue's tables,
    // where every row dies within seconds, vacuumed after every 1,000 dead rows, not
    // after 20% of the table, without the cost-based pauses.
    r#"
ALTER TABLE tasks SET (fillfactor = 80);
ALTER TABLE attempts SET (fillfactor = 80);
ALTER TABLE task_queue SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE task_replies SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0);
"#,
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// A connection pool to one database, with the location it was opened from (password
/// hidden) for messages.
#[derive(Clone)]
pub(crate) struct Db {
    pool: Pool,
    location: Arc<str>,
    /// For a connection of its own outside the pool (the queue's `LISTEN`).
    config: Config,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("location", &self.location).finish_non_exhaustive()
    }
}

/// Why a database call failed: the server said no (or the connection broke), or the
/// store refused (a record that does not parse, a precondition, ...).
#[derive(Debug)]
pub(crate) enum Fail {
    Pg(tokio_postgres::Error),
    Pool(PoolError),
    Store(Error),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl Fail {
    /// The store error inside, or a server error without its location (for code that
    /// has no `Db` at hand and only ever fails with a store error).
    pub(crate) fn into_store(self) -> Error {
        match self {
            Fail::Store(e) => e,
            other => Error::Invalid { what: "record".into(), reason: format!("{other:?}") },
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Store(e)
    }
}

pub(crate) type PgResult<T> = std::result::Result<T, Fail>;

impl Fail {
    /// A failure that running the same transaction again can cure: a deadlock, a
    /// serialization failure, or a unique race lost to a concurrent writer.
    fn retryable(&self) -> bool {
        let code = match self {
            Fail::Pg(e) => e.code(),
            _ => None,
        };
        matches!(
            code,
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::UNIQUE_VIOLATION
        )
    }

    /// A failure of the connection rather than of the statement: the server closed it
    /// or is shutting down or starting up, or the socket broke. Running the call again
    /// on a new connection can cure it.
    pub(crate) fn connection_lost(&self) -> bool {
        match self {
            Fail::Pg(e) | Fail::Pool(PoolError::Backend(e)) => pg_connection_lost(e),
            // Making a new connection timed out: the server is not back yet.
            Fail::Pool(PoolError::Timeout(deadpool_postgres::TimeoutType::Create)) => true,
            _ => false,
        }
    }
}

fn pg_connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        // Class 08: connection exceptions; 57P01-03: the server shuts down or starts.
        return code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW;
    }
    // No server code: a broken or refused socket is an I/O error underneath.
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// When a call that lost its connection is run again: soon, then less often, until
/// [`RECONNECT_FOR`] has passed since the first loss (`false`: give up).
pub(crate) async fn reconnect_backoff(db: &Db, since: &mut Option<std::time::Instant>, lost: u32) -> bool {
    let first = *since.get_or_insert_with(std::time::Instant::now);
    if first.elapsed() >= RECONNECT_FOR {
        return false;
    }
    if lost == 1 {
        tracing::warn!(store = %db.location, "the connection to PostgreSQL was lost; connecting again");
    }
    let wait = Duration::from_millis(50u64.saturating_mul(1 << lost.min(5))).min(Duration::from_secs(1));
    tokio::time::sleep(wait).await;
    true
}

impl Db {
    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// The error for a failed call: a record that does not parse stays what it is; a
    /// server error keeps the driver's error as its cause.
    pub(crate) fn err(&self, context: impl Into<String>, fail: Fail) -> Error {
        match fail {
            Fail::Store(e) => e,
            Fail::Pg(e) => {
                Error::Postgres { location: self.location.to_string(), context: context.into(), source: Arc::new(e) }
            }
            Fail::Pool(e) => pool_error(&self.location, &context.into(), e),
        }
    }

    pub(crate) fn corrupt(&self, what: String, reason: impl ToString) -> Fail {
        Fail::Store(Error::Corrupt { what, path: self.location.to_string(), reason: reason.to_string() })
    }

    pub(crate) async fn conn(&self) -> PgResult<Object> {
        self.pool.get().await.map_err(Fail::Pool)
    }
}

/// Waits a little before running a transaction again, more each time, so racing
/// writers spread out.
pub(crate) async fn backoff(db: &Db, tries: u32) {
    tracing::debug!(store = %db.location, tries, "transaction raced another writer; running it again");
    tokio::time::sleep(Duration::from_millis(u64::from(tries) * 2)).await;
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`: a location is
/// shown in messages and listings, its password never.
pub fn redact(location: &str) -> String {
    match url::Url::parse(location) {
        Ok(mut u) if u.password().is_some() => {
            // Setting a password fails only for URLs that cannot have one.
            if u.set_password(Some("***")).is_ok() { u.to_string() } else { location.to_owned() }
        }
        _ => location.to_owned(),
    }
}

/// Where a config points, for messages: `host:port` of the first host.
fn target(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => format!("socket {}", p.display()),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

fn location_error(location: &str, problem: String) -> Error {
    Error::Location { location: location.to_owned(), problems: vec![problem] }
}

/// What a connection failure means for the person who gave the location.
fn connect_problem(config: &Config, e: &tokio_postgres::Error) -> String {
    let at = target(config);
    let user = config.get_user().unwrap_or("(none)");
    let db = config.get_dbname().unwrap_or(user);
    match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => format!(
            "was refused by PostgreSQL at {at}: authentication failed for user `{user}` ({e}); check the user and password (in the location, or PGPASSWORD)"
        ),
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => format!(
            "names database `{db}`, which does not exist on the PostgreSQL server at {at}; create it (`createdb -h HOST -p PORT -U USER {db}`) or name another"
        ),
        Some(c) if *c == SqlState::TOO_MANY_CONNECTIONS => {
            format!("cannot be used now: the PostgreSQL server at {at} has no free connections ({e})")
        }
        Some(_) => format!("was refused by PostgreSQL at {at}: {e}"),
        None => {
            let cause = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
            format!(
                "cannot be reached: no PostgreSQL server answered at {at} within {} s ({cause}); check the host and port, and that the server is running and accepts TCP connections",
                CONNECT_TIMEOUT.as_secs()
            )
        }
    }
}

fn pool_error(location: &str, context: &str, e: PoolError) -> Error {
    match e {
        PoolError::Closed => Error::Closed,
        e => Error::Postgres { location: location.to_owned(), context: context.to_owned(), source: Arc::new(e) },
    }
}

/// Reads a `postgres://` location into a driver config: the connect timeout defaults to
/// [`CONNECT_TIMEOUT`], the password to `PGPASSWORD` when the location has none.
fn config(location: &str) -> Result<Config> {
    let shown = redact(location);
    let mut config: Config = location.parse().map_err(|e| {
        location_error(
            &shown,
            format!("is not a PostgreSQL location ({e}); write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"),
        )
    })?;
    if config.get_user().is_none() {
        return Err(location_error(
            &shown,
            "names no user; write postgres://USER@HOST[:PORT]/DATABASE (the password in the location or PGPASSWORD)"
                .to_owned(),
        ));
    }
    if config.get_password().is_none()
        && let Ok(p) = std::env::var("PGPASSWORD")
    {
        config.password(p);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("braid");
    }
    Ok(config)
}

/// Opens the database at `location` (`postgres://…`), creating or upgrading its schema.
/// Refused, each with what to do: a location that does not parse, a server that does not
/// answer within [`CONNECT_TIMEOUT`] (host and port named), a failed authentication, a
/// missing database, a schema newer than this build knows.
pub async fn open(location: &str) -> Result<(PgRecords, PgPlans)> {
    let shown = redact(location);
    let config = config(location)?;
    let db = tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(5), connect(&shown, config)).await.map_err(
        |_| {
            location_error(
                &shown,
                format!(
                    "cannot be reached: opening the database took longer than {} s; check the server",
                    CONNECT_TIMEOUT.as_secs() + 5
                ),
            )
        },
    )??;
    Ok((PgRecords::new(db.clone()), PgPlans { db }))
}

async fn connect(shown: &str, config: Config) -> Result<Db> {
    // One direct connection first: its error says precisely what is wrong, and it runs
    // the migrations before any pooled connection exists.
    let (client, connection) =
        config.connect(NoTls).await.map_err(|e| location_error(shown, connect_problem(&config, &e)))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "migration connection ended");
        }
    });
    let migrated = migrate(&client, SCHEMA_VERSION).await;
    drop(client);
    // The connection task ends once the client is dropped; the result of the migration
    // is what matters.
    let _ = driver.await;
    match migrated {
        Ok(_) => {}
        Err(MigrateError::Newer(found)) => {
            return Err(Error::UnsupportedFormat { path: shown.to_owned(), found, supported: SCHEMA_VERSION });
        }
        Err(MigrateError::Pg(e)) => {
            return Err(Error::Postgres {
                location: shown.to_owned(),
                context: "create or upgrade the schema".into(),
                source: Arc::new(e),
            });
        }
    }
    let manager =
        Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(60)))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| location_error(shown, format!("cannot be used: {e}")))?;
    Ok(Db { pool, location: shown.into(), config })
}

/// Why migrating failed.
#[derive(Debug)]
pub(crate) enum MigrateError {
    /// The database has this newer version.
    Newer(u32),
    Pg(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Pg(e)
    }
}

/// Brings the database to schema version `target` (at most [`SCHEMA_VERSION`]) in one
/// transaction under an advisory lock: concurrent openers wait for each other, and a
/// crash leaves the old version or the new one. Returns the version found. A database
/// with a newer version than [`SCHEMA_VERSION`] is left alone.
pub(crate) async fn migrate(client: &tokio_postgres::Client, target: u32) -> std::result::Result<u32, MigrateError> {
    client.batch_execute("BEGIN").await?;
    let r = async {
        client.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        client.batch_execute("CREATE TABLE IF NOT EXISTS braid_schema (version BIGINT NOT NULL)").await?;
        let found: Option<i64> = client.query_opt("SELECT version FROM braid_schema", &[]).await?.map(|r| r.get(0));
        let found = found.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX));
        if found > SCHEMA_VERSION {
            return Err(MigrateError::Newer(found));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().take(target as usize).skip(found as usize) {
            tracing::info!(from = i, to = i + 1, "upgrading the PostgreSQL schema");
            client.batch_execute(sql).await?;
        }
        if target > found {
            client.execute("DELETE FROM braid_schema", &[]).await?;
            client.execute("INSERT INTO braid_schema (version) VALUES ($1)", &[&i64::from(target)]).await?;
        }
        Ok(found)
    }
    .await;
    match r {
        Ok(v) => {
            client.batch_execute("COMMIT").await?;
            Ok(v)
        }
        Err(e) => {
            // The error that matters is `e`; the server rolls back when the connection
            // closes if this fails too.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// For tests of upgrades: connects to `location` and brings its schema to `target`
/// (which may be older than [`SCHEMA_VERSION`]); returns the version it had.
#[doc(hidden)]
pub async fn migrate_to(location: &str, target: u32) -> Result<u32> {
    let shown = redact(location);
    let config = config(location)?;
    let (client, connection) =
        config.connect(NoTls).await.map_err(|e| location_error(&shown, connect_problem(&config, &e)))?;
    tokio::spawn(connection);
    match migrate(&client, target.min(SCHEMA_VERSION)).await {
        Ok(v) => Ok(v),
        Err(MigrateError::Newer(found)) => {
            Err(Error::UnsupportedFormat { path: shown, found, supported: SCHEMA_VERSION })
        }
        Err(MigrateError::Pg(e)) => {
            Err(Error::Postgres { location: shown, context: "migrate".into(), source: Arc::new(e) })
        }
    }
}

/// For tests: runs one SQL statement batch on `location` (e.g. to fake a newer schema).
#[doc(hidden)]
pub async fn execute_batch(location: &str, sql: &str) -> Result<()> {
    let shown = redact(location);
    let config = config(location)?;
    let (client, connection) =
        config.connect(NoTls).await.map_err(|e| location_error(&shown, connect_problem(&config, &e)))?;
    tokio::spawn(connection);
    client.batch_execute(sql).await.map_err(|e| Error::Postgres {
        location: shown,
        context: "execute".into(),
        source: Arc::new(e),
    })
}
