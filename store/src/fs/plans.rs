//! `PlanStore` over the SQLite database (tables `plans`, `plan_versions`,
//! `plan_labels`, `launches`, `schedulers`; see `db.rs`; and `plan_sets`,
//! `plan_tick_failures` and the column `plans.deleted_at`, added here on open: see [`migrate`]). Every multi-row change is one
//! job of the writer, so it commits whole or not at all.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use braid_core::{FlowName, Label, PlanName, Timestamp};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::db::{Db, db_err};
use super::records::FsRecords;
use crate::error::{Error, Result};
use crate::plan::*;
use crate::record::effective_limit;
use crate::rows::{LaunchRow, PlanRow, PlanVersionRow, SetStateRow, TickFailureRow, pause_runs_json};

/// What the plan store added to the schema of `db.rs`: a table of parameter set states
/// (pauses, resumes) and the deletion time of a plan. Created on open where missing, so a
/// store made by an older braid opens (and an older braid ignores both).
const PLAN_SETS_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS plan_sets (
    plan        TEXT NOT NULL,
    set_key     TEXT NOT NULL,
    version     INTEGER NOT NULL,
    paused_at   INTEGER,
    failures    INTEGER,
    runs        TEXT,
    resumed_at  INTEGER,
    PRIMARY KEY (plan, set_key)
) WITHOUT ROWID;
"#;
/// Failed ticks of plans whose parameter sets are produced per tick (added with the
/// same migration as `plan_sets`, checked for on its own).
const TICK_FAILURES_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS plan_tick_failures (
    plan        TEXT NOT NULL,
    tick        INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    holder      TEXT NOT NULL,
    error       TEXT NOT NULL,
    failures    INTEGER NOT NULL,
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    PRIMARY KEY (plan, tick)
) WITHOUT ROWID;
"#;
/// The tables the plan store adds: (name, its `CREATE TABLE IF NOT EXISTS`).
const PLAN_TABLES_ADDED: &[(&str, &str)] =
    &[("plan_sets", PLAN_SETS_TABLE), ("plan_tick_failures", TICK_FAILURES_TABLE)];
/// Columns added to `db.rs`'s plan tables: (table, column, type).
const PLAN_COLUMNS_ADDED: &[Column] = &[("plans", "deleted_at", "INTEGER")];

/// A column added to a table: (table, column, type).
type Column = (&'static str, &'static str, &'static str);

/// Brings the plan tables of the database at `path` up to date in one transaction (a
/// crash leaves them as they were or done): on its own connection, before the store's
/// first plan query. Nothing is written when they already are.
fn migrate(path: &Path) -> Result<()> {
    let conn = Connection::open(path).map_err(|e| db_err(path, "open to add the plan tables", e))?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(|e| db_err(path, "set busy timeout", e))?;
    let missing = |conn: &Connection| -> rusqlite::Result<(Vec<&'static str>, Vec<Column>)> {
        let mut tables = Vec::new();
        for &(name, create) in PLAN_TABLES_ADDED {
            let absent: bool = conn.query_row(
                "SELECT COUNT(*) = 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get(0),
            )?;
            if absent {
                tables.push(create);
            }
        }
        let mut columns = Vec::new();
        for &(t, c, ty) in PLAN_COLUMNS_ADDED {
            let present: bool =
                conn.query_row("SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2", [t, c], |r| r.get(0))?;
            if !present {
                columns.push((t, c, ty));
            }
        }
        Ok((tables, columns))
    };
    let (tables, columns) = missing(&conn).map_err(|e| db_err(path, "read the plan tables' schema", e))?;
    if tables.is_empty() && columns.is_empty() {
        return Ok(());
    }
    let r: rusqlite::Result<()> = (|| {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        // Another process may have added them meanwhile: look again under the lock.
        let (tables, columns) = missing(&conn)?;
        for create in tables {
            conn.execute_batch(create)?;
        }
        for (t, c, ty) in columns {
            conn.execute_batch(&format!("ALTER TABLE {t} ADD COLUMN {c} {ty}"))?;
        }
        conn.execute_batch("COMMIT")
    })();
    r.map_err(|e| {
        // The error that matters is `e`; an open transaction rolls back when the
        // connection closes.
        let _ = conn.execute_batch("ROLLBACK");
        db_err(path, "add the plan tables (parameter set states, failed ticks, plan deletion)", e)
    })
}

/// Plans of an fs store; shares the record database.
#[derive(Debug, Clone)]
pub struct FsPlans {
    db: Arc<Db>,
}

impl FsPlans {
    /// Plan names read back from rows, each with its flag; a name that is not a plan
    /// name is a corrupt row.
    fn named(&self, rows: Vec<(String, bool)>) -> Result<Vec<(PlanName, bool)>> {
        rows.into_iter()
            .map(|(n, flag)| Ok((PlanName::new(&n).map_err(|e| self.db.corrupt(format!("plan row {n}"), e))?, flag)))
            .collect()
    }

    /// The plans of the store whose records are `records`; adds the plan tables an
    /// older store lacks ([`migrate`]).
    pub(crate) fn open(records: &FsRecords) -> Result<Self> {
        migrate(records.db.path())?;
        Ok(FsPlans { db: records.db.clone() })
    }

    fn plan_from_row(&self, row: &Row<'_>, with_spec: bool) -> rusqlite::Result<Result<PlanRecord>> {
        let raw = PlanRow {
            name: row.get("name")?,
            flow: row.get("flow")?,
            version: row.get("version")?,
            hash: row.get("hash")?,
            spec: if with_spec { Some(row.get("spec")?) } else { None },
            labels: row.get("labels")?,
            active: row.get("active")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
            active_since: row.get("active_since")?,
            cursor: row.get("cursor")?,
            deleted_at: row.get("deleted_at")?,
        };
        Ok(raw.decode(&self.db.location()))
    }

    fn set_state_from_row(&self, row: &Row<'_>) -> rusqlite::Result<Result<ParamSetState>> {
        let raw = SetStateRow {
            plan: row.get("plan")?,
            set_key: row.get("set_key")?,
            version: row.get("version")?,
            paused_at: row.get("paused_at")?,
            failures: row.get("failures")?,
            runs: row.get("runs")?,
            resumed_at: row.get("resumed_at")?,
        };
        Ok(raw.decode(&self.db.location()))
    }

    fn version_from_row(&self, row: &Row<'_>) -> rusqlite::Result<Result<PlanVersion>> {
        let raw = PlanVersionRow {
            name: row.get("name")?,
            version: row.get("version")?,
            hash: row.get("hash")?,
            spec: row.get("spec")?,
            labels: row.get("labels")?,
            created_at: row.get("created_at")?,
        };
        Ok(raw.decode(&self.db.location()))
    }

    fn launch_from_row(&self, row: &Row<'_>) -> rusqlite::Result<Result<LaunchRecord>> {
        let raw = LaunchRow {
            key: row.get("key")?,
            plan: row.get("plan")?,
            version: row.get("version")?,
            flow: row.get("flow")?,
            kind: row.get("kind")?,
            tick: row.get("tick")?,
            set_key: row.get("set_key")?,
            params: row.get("params")?,
            name: row.get("name")?,
            state: row.get("state")?,
            holder: row.get("holder")?,
            run: row.get("run_id")?,
            status: row.get("status")?,
            note: row.get("note")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        };
        Ok(raw.decode(&self.db.location()))
    }
}

fn to_sql_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn labels_json(labels: &BTreeSet<Label>) -> rusqlite::Result<String> {
    serde_json::to_string(labels).map_err(to_sql_err)
}

const LAUNCH_COLUMNS: &str = "key, plan, version, flow, kind, tick, set_key, params, name, state, holder, run_id, \
    status, note, created_at, updated_at";

fn put_launch(c: &Connection, l: &LaunchRecord, insert_only: bool) -> rusqlite::Result<usize> {
    let verb = if insert_only { "INSERT OR IGNORE" } else { "INSERT OR REPLACE" };
    let params_json = serde_json::to_string(&l.params).map_err(to_sql_err)?;
    c.prepare_cached(&format!(
        "{verb} INTO launches ({LAUNCH_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    ))?
    .execute(params![
        l.key,
        l.plan.as_str(),
        l.version,
        l.flow.as_str(),
        l.kind.as_str(),
        l.tick.as_micros(),
        l.set_key,
        params_json,
        l.name,
        l.state.as_str(),
        l.holder,
        l.run.map(|r| r.to_string()),
        l.status.map(|s| s.as_str()),
        l.note,
        l.created_at.as_micros(),
        l.updated_at.as_micros(),
    ])
}

fn put_plan_labels(c: &Connection, name: &str, labels: &BTreeSet<Label>) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM plan_labels WHERE name = ?1")?.execute([name])?;
    let mut ins = c.prepare_cached("INSERT OR IGNORE INTO plan_labels (key, value, name) VALUES (?1, ?2, ?3)")?;
    for l in labels {
        ins.execute(params![l.key.as_str(), l.value.as_str(), name])?;
    }
    Ok(())
}

/// `name IN (plans with every label)` as SQL, with its parameters appended to `args`.
fn label_filter(labels: &[Label], args: &mut Vec<Sql>) -> String {
    let mut sql = String::new();
    for l in labels {
        let k = args.len() + 1;
        sql.push_str(&format!(" AND name IN (SELECT name FROM plan_labels WHERE key = ?{k} AND value = ?{})", k + 1));
        args.push(Sql::Text(l.key.to_string()));
        args.push(Sql::Text(l.value.to_string()));
    }
    sql
}

fn in_list(column: &str, values: &[String], args: &mut Vec<Sql>) -> String {
    if values.is_empty() {
        return String::new();
    }
    let start = args.len() + 1;
    let marks: Vec<String> = (0..values.len()).map(|i| format!("?{}", start + i)).collect();
    args.extend(values.iter().map(|v| Sql::Text(v.clone())));
    format!(" AND {column} IN ({})", marks.join(", "))
}

#[async_trait]
impl PlanStore for FsPlans {
    async fn register_plans(&self, drafts: Vec<PlanDraft>, now: Timestamp) -> Result<Vec<Registration>> {
        let path = self.db.path().to_owned();
        self.db
            .write(move |c| {
                let mut out = Vec::with_capacity(drafts.len());
                for d in drafts {
                    let name = d.name.as_str();
                    let context = || format!("register plan {name}");
                    let res: rusqlite::Result<Registration> = (|| {
                        let current: Option<(i64, String, bool)> = c
                            .prepare_cached("SELECT version, hash, deleted_at IS NOT NULL FROM plans WHERE name = ?1")?
                            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                            .optional()?;
                        let spec = serde_json::to_string(&d.spec).map_err(to_sql_err)?;
                        let labels = labels_json(&d.labels)?;
                        let reg = match current {
                            Some((v, _, true)) => {
                                // A new history under the old name: created anew, numbering continues.
                                c.prepare_cached(
                                    "UPDATE plans SET flow = ?2, version = ?3, hash = ?4, spec = ?5, labels = ?6, \
                                     active = ?7, created_at = ?8, updated_at = ?8, active_since = ?9, cursor = NULL, \
                                     deleted_at = NULL WHERE name = ?1",
                                )?
                                .execute(params![
                                    name,
                                    d.flow.as_str(),
                                    v + 1,
                                    d.hash,
                                    spec,
                                    labels,
                                    d.active,
                                    now.as_micros(),
                                    d.active.then_some(now.as_micros()),
                                ])?;
                                Registration::Created { version: v as u32 + 1 }
                            }
                            Some((v, hash, false)) if hash == d.hash => {
                                return Ok(Registration::Unchanged { version: v as u32 });
                            }
                            Some((v, _, false)) => {
                                c.prepare_cached(
                                    "UPDATE plans SET flow = ?2, version = ?3, hash = ?4, spec = ?5, labels = ?6, \
                                     updated_at = ?7 WHERE name = ?1",
                                )?
                                .execute(params![name, d.flow.as_str(), v + 1, d.hash, spec, labels, now.as_micros()])?;
                                Registration::Updated { version: v as u32 + 1, previous: v as u32 }
                            }
                            None => {
                                c.prepare_cached(
                                    "INSERT INTO plans (name, flow, version, hash, spec, labels, active, created_at, \
                                     updated_at, active_since, cursor) VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?7, ?8, NULL)",
                                )?
                                .execute(params![
                                    name,
                                    d.flow.as_str(),
                                    d.hash,
                                    spec,
                                    labels,
                                    d.active,
                                    now.as_micros(),
                                    d.active.then_some(now.as_micros()),
                                ])?;
                                Registration::Created { version: 1 }
                            }
                        };
                        c.prepare_cached(
                            "INSERT INTO plan_versions (name, version, hash, spec, labels, created_at) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        )?
                        .execute(params![name, reg.version(), d.hash, spec, labels, now.as_micros()])?;
                        put_plan_labels(c, name, &d.labels)?;
                        // A new version (or history) starts its parameter sets afresh.
                        c.prepare_cached("DELETE FROM plan_sets WHERE plan = ?1")?.execute([name])?;
                        Ok(reg)
                    })();
                    // An error fails the whole job: the writer rolls every plan back.
                    out.push(res.map_err(|e| db_err(&path, context(), e))?);
                }
                Ok(out)
            })
            .await
    }

    async fn get_plan(&self, name: &PlanName) -> Result<Option<PlanRecord>> {
        self.db
            .query("read plan", |c| {
                c.prepare_cached("SELECT * FROM plans WHERE name = ?1")?
                    .query_row([name.as_str()], |r| self.plan_from_row(r, true))
                    .optional()
            })?
            .transpose()
    }

    async fn get_plan_version(&self, name: &PlanName, version: u32) -> Result<Option<PlanVersion>> {
        self.db
            .query("read plan version", |c| {
                c.prepare_cached("SELECT * FROM plan_versions WHERE name = ?1 AND version = ?2")?
                    .query_row(params![name.as_str(), version], |r| self.version_from_row(r))
                    .optional()
            })?
            .transpose()
    }

    async fn list_plan_versions(&self, name: &PlanName) -> Result<Vec<PlanVersion>> {
        let rows: Vec<Result<PlanVersion>> = self.db.query("list plan versions", |c| {
            c.prepare_cached("SELECT * FROM plan_versions WHERE name = ?1 ORDER BY version")?
                .query_map([name.as_str()], |r| self.version_from_row(r))?
                .collect()
        })?;
        rows.into_iter().collect()
    }

    async fn list_plans(&self, query: &PlanQuery) -> Result<Vec<PlanRecord>> {
        let mut args: Vec<Sql> = Vec::new();
        let columns = if query.without_spec {
            "name, flow, version, hash, labels, active, created_at, updated_at, active_since, cursor, deleted_at"
        } else {
            "*"
        };
        let mut sql = format!("SELECT {columns} FROM plans WHERE 1 = 1");
        let flows: Vec<String> = query.flows.iter().map(|f| f.to_string()).collect();
        sql.push_str(&in_list("flow", &flows, &mut args));
        sql.push_str(&label_filter(&query.labels, &mut args));
        if let Some(a) = query.active {
            sql.push_str(if a { " AND active = 1" } else { " AND active = 0" });
        }
        if !query.include_deleted {
            sql.push_str(" AND deleted_at IS NULL");
        }
        sql.push_str(" ORDER BY name");
        let rows: Vec<Result<PlanRecord>> = self.db.query("list plans", |c| {
            c.prepare_cached(&sql)?
                .query_map(params_from_iter(args.iter()), |r| self.plan_from_row(r, !query.without_spec))?
                .collect()
        })?;
        rows.into_iter().collect()
    }

    async fn set_plans_active(
        &self,
        selector: &PlanSelector,
        active: bool,
        now: Timestamp,
    ) -> Result<Vec<(PlanName, bool)>> {
        check_selector(selector)?;
        let path = self.db.path().to_owned();
        let selector = selector.clone();
        let rows: Vec<(String, bool)> = self
            .db
            .write(move |c| {
                let res: rusqlite::Result<std::result::Result<Vec<(String, bool)>, Vec<PlanName>>> = (|| {
                    let found = match select_plans(c, &selector, "active", false)? {
                        Ok(found) => found,
                        Err(missing) => return Ok(Err(missing)),
                    };
                    let mut upd =
                        c.prepare_cached("UPDATE plans SET active = ?2, active_since = ?3 WHERE name = ?1")?;
                    let mut out = Vec::with_capacity(found.len());
                    for (name, was) in found {
                        let changed = was != active;
                        if changed {
                            upd.execute(params![name, active, active.then_some(now.as_micros())])?;
                        }
                        out.push((name, changed));
                    }
                    Ok(Ok(out))
                })(
                );
                match res.map_err(|e| db_err(&path, "activate plans", e))? {
                    Ok(rows) => Ok(rows),
                    Err(missing) => Err(unknown_plans(&missing)),
                }
            })
            .await?;
        self.named(rows)
    }

    async fn advance_cursors(&self, cursors: Vec<(PlanName, Timestamp)>) -> Result<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        let path = self.db.path().to_owned();
        self.db
            .write(move |c| {
                let res: rusqlite::Result<()> = (|| {
                    let mut upd = c.prepare_cached(
                        "UPDATE plans SET cursor = ?2 WHERE name = ?1 AND (cursor IS NULL OR cursor < ?2)",
                    )?;
                    for (name, at) in &cursors {
                        upd.execute(params![name.as_str(), at.as_micros()])?;
                    }
                    Ok(())
                })();
                res.map_err(|e| db_err(&path, "advance plan cursors", e))
            })
            .await
    }

    async fn delete_plans(&self, selector: &PlanSelector, now: Timestamp) -> Result<Vec<(PlanName, bool)>> {
        check_selector(selector)?;
        let path = self.db.path().to_owned();
        let selector = selector.clone();
        let rows: Vec<(String, bool)> = self
            .db
            .write(move |c| {
                let res: rusqlite::Result<std::result::Result<Vec<(String, bool)>, Vec<PlanName>>> = (|| {
                    let found = match select_plans(c, &selector, "deleted_at IS NULL", true)? {
                        Ok(found) => found,
                        Err(missing) => return Ok(Err(missing)),
                    };
                    let mut upd = c.prepare_cached(
                        "UPDATE plans SET deleted_at = ?2, active = 0, active_since = NULL WHERE name = ?1",
                    )?;
                    let mut sets = c.prepare_cached("DELETE FROM plan_sets WHERE plan = ?1")?;
                    for (name, live) in &found {
                        if *live {
                            upd.execute(params![name, now.as_micros()])?;
                            sets.execute([name])?;
                        }
                    }
                    Ok(Ok(found))
                })(
                );
                match res.map_err(|e| db_err(&path, "delete plans", e))? {
                    Ok(rows) => Ok(rows),
                    Err(missing) => Err(unknown_plans(&missing)),
                }
            })
            .await?;
        self.named(rows)
    }

    async fn pause_set(&self, plan: &PlanName, set_key: &str, version: u32, pause: SetPause) -> Result<bool> {
        let path = self.db.path().to_owned();
        let (plan, set_key) = (plan.to_string(), set_key.to_owned());
        let runs = pause_runs_json(&pause);
        self.db
            .write(move |c| {
                let res: rusqlite::Result<bool> = (|| {
                    let live: Option<i64> = c
                        .prepare_cached("SELECT version FROM plans WHERE name = ?1 AND deleted_at IS NULL")?
                        .query_row([&plan], |r| r.get(0))
                        .optional()?;
                    if live != Some(i64::from(version)) {
                        return Ok(false);
                    }
                    let paused: Option<Option<i64>> = c
                        .prepare_cached("SELECT paused_at FROM plan_sets WHERE plan = ?1 AND set_key = ?2")?
                        .query_row([&plan, &set_key], |r| r.get(0))
                        .optional()?;
                    if paused.flatten().is_some() {
                        return Ok(false);
                    }
                    c.prepare_cached(
                        "INSERT INTO plan_sets (plan, set_key, version, paused_at, failures, runs, resumed_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL) ON CONFLICT (plan, set_key) DO UPDATE SET \
                         version = excluded.version, paused_at = excluded.paused_at, failures = excluded.failures, \
                         runs = excluded.runs",
                    )?
                    .execute(params![
                        plan,
                        set_key,
                        version,
                        pause.at.as_micros(),
                        pause.failures,
                        runs
                    ])?;
                    Ok(true)
                })();
                res.map_err(|e| db_err(&path, format!("pause parameter set {set_key} of plan {plan}"), e))
            })
            .await
    }

    async fn resume_sets(
        &self,
        plan: &PlanName,
        set_keys: &[String],
        now: Timestamp,
    ) -> Result<Vec<(String, Option<SetPause>)>> {
        let path = self.db.path().to_owned();
        let name = plan.clone();
        let set_keys = set_keys.to_vec();
        let location = self.db.location();
        self.db
            .write(move |c| {
                let plan = name.as_str();
                let res: rusqlite::Result<Option<Vec<(String, SetStateRow)>>> = (|| {
                    let Some(version): Option<i64> = c
                        .prepare_cached("SELECT version FROM plans WHERE name = ?1 AND deleted_at IS NULL")?
                        .query_row([plan], |r| r.get(0))
                        .optional()?
                    else {
                        return Ok(None);
                    };
                    let mut read = c.prepare_cached(
                        "SELECT plan, set_key, version, paused_at, failures, runs, resumed_at FROM plan_sets \
                         WHERE plan = ?1 AND set_key = ?2",
                    )?;
                    let mut put = c.prepare_cached(
                        "INSERT INTO plan_sets (plan, set_key, version, paused_at, failures, runs, resumed_at) \
                         VALUES (?1, ?2, ?3, NULL, NULL, NULL, ?4) ON CONFLICT (plan, set_key) DO UPDATE SET \
                         version = excluded.version, paused_at = NULL, failures = NULL, runs = NULL, \
                         resumed_at = excluded.resumed_at",
                    )?;
                    let mut out = Vec::with_capacity(set_keys.len());
                    for k in &set_keys {
                        let before = read
                            .query_row([plan, k.as_str()], |r| {
                                Ok(SetStateRow {
                                    plan: r.get(0)?,
                                    set_key: r.get(1)?,
                                    version: r.get(2)?,
                                    paused_at: r.get(3)?,
                                    failures: r.get(4)?,
                                    runs: r.get(5)?,
                                    resumed_at: r.get(6)?,
                                })
                            })
                            .optional()?;
                        put.execute(params![plan, k, version, now.as_micros()])?;
                        if let Some(b) = before {
                            out.push((k.clone(), b));
                        } else {
                            out.push((
                                k.clone(),
                                SetStateRow {
                                    plan: plan.to_owned(),
                                    set_key: k.clone(),
                                    version,
                                    paused_at: None,
                                    failures: None,
                                    runs: None,
                                    resumed_at: None,
                                },
                            ));
                        }
                    }
                    Ok(Some(out))
                })();
                match res.map_err(|e| db_err(&path, format!("resume parameter sets of plan {plan}"), e))? {
                    None => Err(unknown_plans(std::slice::from_ref(&name))),
                    Some(rows) => rows
                        .into_iter()
                        .map(|(k, row)| Ok((k, row.decode(&location)?.paused)))
                        .collect::<Result<Vec<_>>>(),
                }
            })
            .await
    }

    async fn list_set_states(&self, plan: Option<&PlanName>, paused_only: bool) -> Result<Vec<ParamSetState>> {
        let mut args: Vec<Sql> = Vec::new();
        let mut sql = String::from("SELECT * FROM plan_sets WHERE 1 = 1");
        if let Some(p) = plan {
            args.push(Sql::Text(p.to_string()));
            sql.push_str(" AND plan = ?1");
        }
        if paused_only {
            sql.push_str(" AND paused_at IS NOT NULL");
        }
        sql.push_str(" ORDER BY plan, set_key");
        let rows: Vec<Result<ParamSetState>> = self.db.query("list parameter set states", |c| {
            c.prepare_cached(&sql)?.query_map(params_from_iter(args.iter()), |r| self.set_state_from_row(r))?.collect()
        })?;
        rows.into_iter().collect()
    }

    async fn record_tick_failure(&self, failure: &TickFailure) -> Result<bool> {
        let path = self.db.path().to_owned();
        let f = failure.clone();
        self.db
            .write(move |c| {
                let res: rusqlite::Result<bool> = (|| {
                    let inserted =
                        c.prepare_cached(
                            "INSERT OR IGNORE INTO plan_tick_failures \
                             (plan, tick, version, kind, holder, error, failures, first_at, last_at) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        )?
                        .execute(params![
                            f.plan.as_str(),
                            f.tick.as_micros(),
                            f.version,
                            f.kind.as_str(),
                            f.holder,
                            f.error,
                            f.failures,
                            f.first_at.as_micros(),
                            f.last_at.as_micros()
                        ])? == 1;
                    if !inserted {
                        c.prepare_cached(
                            "UPDATE plan_tick_failures SET version = ?3, kind = ?4, holder = ?5, error = ?6, \
                             failures = failures + 1, last_at = ?7 WHERE plan = ?1 AND tick = ?2",
                        )?
                        .execute(params![
                            f.plan.as_str(),
                            f.tick.as_micros(),
                            f.version,
                            f.kind.as_str(),
                            f.holder,
                            f.error,
                            f.last_at.as_micros()
                        ])?;
                    }
                    Ok(inserted)
                })();
                res.map_err(|e| db_err(&path, format!("record the failed tick {} of plan {}", f.tick, f.plan), e))
            })
            .await
    }

    async fn list_tick_failures(&self, plan: Option<&PlanName>, limit: usize) -> Result<Vec<TickFailure>> {
        let mut args: Vec<Sql> = Vec::new();
        let mut sql = String::from("SELECT * FROM plan_tick_failures");
        if let Some(p) = plan {
            args.push(Sql::Text(p.to_string()));
            sql.push_str(" WHERE plan = ?1");
        }
        sql.push_str(&format!(" ORDER BY tick DESC, plan DESC LIMIT {}", effective_limit(limit, 1000)));
        let rows: Vec<TickFailureRow> = self.db.query("list failed ticks", |c| {
            c.prepare_cached(&sql)?
                .query_map(params_from_iter(args.iter()), |r| {
                    Ok(TickFailureRow {
                        plan: r.get("plan")?,
                        tick: r.get("tick")?,
                        version: r.get("version")?,
                        kind: r.get("kind")?,
                        holder: r.get("holder")?,
                        error: r.get("error")?,
                        failures: r.get("failures")?,
                        first_at: r.get("first_at")?,
                        last_at: r.get("last_at")?,
                    })
                })?
                .collect()
        })?;
        let location = self.db.location();
        rows.into_iter().map(|r| r.decode(&location)).collect()
    }

    async fn claim_launches(&self, launches: Vec<LaunchRecord>) -> Result<Vec<bool>> {
        if launches.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.db.path().to_owned();
        self.db
            .write(move |c| {
                let res: rusqlite::Result<Vec<bool>> = (|| {
                    let mut claim = c.prepare_cached(
                        "INSERT OR IGNORE INTO claims (scope, key, holder, claimed_at) VALUES (?1, ?2, ?3, ?4)",
                    )?;
                    let mut out = Vec::with_capacity(launches.len());
                    for l in &launches {
                        let holder = l.holder.as_deref().unwrap_or("");
                        let won =
                            claim.execute(params![LAUNCH_CLAIM_SCOPE, l.key, holder, l.created_at.as_micros()])? == 1;
                        if won {
                            put_launch(c, l, true)?;
                        }
                        out.push(won);
                    }
                    Ok(out)
                })();
                res.map_err(|e| db_err(&path, "claim launches", e))
            })
            .await
    }

    async fn update_launch(
        &self,
        launch: &LaunchRecord,
        expect_state: LaunchState,
        expect_holder: Option<&str>,
    ) -> Result<bool> {
        let path = self.db.path().to_owned();
        let launch = launch.clone();
        let expect_holder = expect_holder.map(str::to_owned);
        self.db
            .write(move |c| {
                let res: rusqlite::Result<bool> = (|| {
                    let stored: Option<(String, Option<String>)> = c
                        .prepare_cached("SELECT state, holder FROM launches WHERE key = ?1")?
                        .query_row([&launch.key], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    match stored {
                        Some((state, holder)) if state == expect_state.as_str() && holder == expect_holder => {
                            put_launch(c, &launch, false)?;
                            Ok(true)
                        }
                        _ => Ok(false),
                    }
                })();
                res.map_err(|e| db_err(&path, format!("update launch {}", launch.key), e))
            })
            .await
    }

    async fn get_launch(&self, key: &str) -> Result<Option<LaunchRecord>> {
        self.db
            .query("read launch", |c| {
                c.prepare_cached(&format!("SELECT {LAUNCH_COLUMNS} FROM launches WHERE key = ?1"))?
                    .query_row([key], |r| self.launch_from_row(r))
                    .optional()
            })?
            .transpose()
    }

    async fn list_launches(&self, query: &LaunchQuery) -> Result<Vec<LaunchRecord>> {
        let limit = effective_limit(query.limit, 1000);
        let mut args: Vec<Sql> = Vec::new();
        let mut sql = format!("SELECT {LAUNCH_COLUMNS} FROM launches WHERE 1 = 1");
        let mut push = |cond: &str, v: Sql, args: &mut Vec<Sql>| {
            args.push(v);
            sql.push_str(&format!(" AND {cond} ?{}", args.len()));
        };
        if let Some(p) = &query.plan {
            push("plan =", Sql::Text(p.to_string()), &mut args);
        }
        if let Some(s) = &query.set_key {
            push("set_key =", Sql::Text(s.clone()), &mut args);
        }
        if let Some(h) = &query.holder {
            push("holder =", Sql::Text(h.clone()), &mut args);
        }
        if let Some(b) = query.before_tick {
            push("tick <", Sql::Integer(b.as_micros()), &mut args);
        }
        let states: Vec<String> = query.states.iter().map(|s| s.as_str().to_owned()).collect();
        sql.push_str(&in_list("state", &states, &mut args));
        let flows: Vec<String> = query.flows.iter().map(|f| f.to_string()).collect();
        sql.push_str(&in_list("flow", &flows, &mut args));
        let dir = if query.oldest_first { "ASC" } else { "DESC" };
        sql.push_str(&format!(" ORDER BY tick {dir}, plan {dir}, set_key {dir}, key {dir} LIMIT {limit}"));
        let values = args;
        let rows: Vec<Result<LaunchRecord>> = self.db.query("list launches", |c| {
            c.prepare_cached(&sql)?.query_map(params_from_iter(values.iter()), |r| self.launch_from_row(r))?.collect()
        })?;
        rows.into_iter().collect()
    }

    async fn adopt_launches(
        &self,
        flows: &[FlowName],
        live: &[String],
        holder: &str,
        limit: usize,
    ) -> Result<Vec<LaunchRecord>> {
        if flows.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let path = self.db.path().to_owned();
        let flows: Vec<String> = flows.iter().map(|f| f.to_string()).collect();
        let live = live.to_vec();
        let holder = holder.to_owned();
        let keys: Vec<String> = self
            .db
            .write(move |c| {
                let res: rusqlite::Result<Vec<String>> = (|| {
                    let mut args: Vec<Sql> = Vec::new();
                    let mut sql = String::from("SELECT key FROM launches WHERE state = 'pending'");
                    sql.push_str(&in_list("flow", &flows, &mut args));
                    let not_live = in_list("holder", &live, &mut args).replacen(" AND holder IN", " holder NOT IN", 1);
                    if !not_live.is_empty() {
                        sql.push_str(&format!(" AND (holder IS NULL OR{not_live})"));
                    }
                    sql.push_str(&format!(" ORDER BY tick LIMIT {limit}"));
                    let keys: Vec<String> = c
                        .prepare(&sql)?
                        .query_map(params_from_iter(args.iter()), |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    let mut upd = c.prepare_cached("UPDATE launches SET holder = ?2 WHERE key = ?1")?;
                    for key in &keys {
                        upd.execute(params![key, holder])?;
                    }
                    Ok(keys)
                })();
                res.map_err(|e| db_err(&path, "adopt launches", e))
            })
            .await?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(l) = self.get_launch(&k).await? {
                out.push(l);
            }
        }
        Ok(out)
    }

    async fn release_launches(&self, holder: &str) -> Result<u64> {
        let path = self.db.path().to_owned();
        let holder = holder.to_owned();
        self.db
            .write(move |c| {
                c.prepare_cached("UPDATE launches SET holder = NULL WHERE state = 'pending' AND holder = ?1")
                    .and_then(|mut s| s.execute([&holder]))
                    .map(|n| n as u64)
                    .map_err(|e| db_err(&path, "release launches", e))
            })
            .await
    }

    async fn heartbeat(&self, scheduler: &SchedulerRecord) -> Result<()> {
        let path = self.db.path().to_owned();
        let info = serde_json::to_string(scheduler)
            .map_err(|e| Error::Invalid { what: format!("scheduler {}", scheduler.id), reason: e.to_string() })?;
        let (id, seen) = (scheduler.id.clone(), scheduler.seen_at.as_micros());
        self.db
            .write(move |c| {
                c.prepare_cached("INSERT OR REPLACE INTO schedulers (id, info, seen_at) VALUES (?1, ?2, ?3)")
                    .and_then(|mut s| s.execute(params![id, info, seen]))
                    .map(|_| ())
                    .map_err(|e| db_err(&path, "record scheduler heartbeat", e))
            })
            .await
    }

    async fn list_schedulers(&self) -> Result<Vec<SchedulerRecord>> {
        let rows: Vec<(String, String)> = self.db.query("list schedulers", |c| {
            c.prepare_cached("SELECT id, info FROM schedulers ORDER BY id")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })?;
        rows.into_iter()
            .map(|(id, info)| {
                serde_json::from_str(&info).map_err(|e| self.db.corrupt(format!("scheduler row {id}"), e))
            })
            .collect()
    }

    async fn remove_scheduler(&self, id: &str) -> Result<()> {
        let path = self.db.path().to_owned();
        let id = id.to_owned();
        self.db
            .write(move |c| {
                c.prepare_cached("DELETE FROM schedulers WHERE id = ?1")
                    .and_then(|mut s| s.execute([&id]))
                    .map(|_| ())
                    .map_err(|e| db_err(&path, "remove scheduler", e))
            })
            .await
    }
}

/// Plans a selector picked, each with a flag, or the names it gave that match no plan.
type Selected = std::result::Result<Vec<(String, bool)>, Vec<PlanName>>;

/// The plans `selector` picks (live ones; by name, deleted ones too when
/// `names_include_deleted`), each with the boolean column expression `flag`, in name
/// order; `Err` lists every name given that matches no plan.
fn select_plans(
    c: &Connection,
    selector: &PlanSelector,
    flag: &str,
    names_include_deleted: bool,
) -> rusqlite::Result<Selected> {
    let mut args: Vec<Sql> = Vec::new();
    let sql = match selector {
        PlanSelector::Names(names) => {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let live = if names_include_deleted { "1 = 1" } else { "deleted_at IS NULL" };
            format!("SELECT name, {flag} FROM plans WHERE {live}{}", in_list("name", &names, &mut args))
        }
        PlanSelector::Labels(labels) => {
            format!("SELECT name, {flag} FROM plans WHERE deleted_at IS NULL{}", label_filter(labels, &mut args))
        }
    };
    let found: Vec<(String, bool)> = c
        .prepare(&format!("{sql} ORDER BY name"))?
        .query_map(params_from_iter(args.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if let PlanSelector::Names(names) = selector {
        let missing: Vec<PlanName> =
            names.iter().filter(|n| !found.iter().any(|(f, _)| f == n.as_str())).cloned().collect();
        if !missing.is_empty() {
            return Ok(Err(missing));
        }
    }
    Ok(Ok(found))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Store;

    fn draft(content: u32) -> PlanDraft {
        PlanDraft {
            name: PlanName::new("old").unwrap(),
            flow: FlowName::new("f").unwrap(),
            labels: BTreeSet::new(),
            spec: serde_json::json!({"content": content}),
            hash: format!("h{content}"),
            active: true,
        }
    }

    #[tokio::test]
    async fn a_store_made_before_plan_deletion_and_pauses_opens_with_its_plans_and_gains_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let t = Timestamp::from_micros(10);
        {
            let store = Store::open_fs(&root).unwrap();
            store.plans.register_plans(vec![draft(1)], t).await.unwrap();
        }
        // What an older braid made: no `plan_sets`, no `plan_tick_failures`, no `plans.deleted_at`.
        let c = Connection::open(root.join(super::super::DB_FILE)).unwrap();
        c.execute_batch(
            "DROP TABLE plan_sets; DROP TABLE plan_tick_failures; ALTER TABLE plans DROP COLUMN deleted_at;",
        )
        .unwrap();
        drop(c);

        let store = Store::open_fs(&root).unwrap();
        let name = PlanName::new("old").unwrap();
        let plan = store.plans.get_plan(&name).await.unwrap().unwrap();
        assert_eq!((plan.version, plan.deleted_at, plan.active), (1, None, true));
        let pause = SetPause { failures: 1, runs: vec![], at: t };
        assert!(store.plans.pause_set(&name, "{}", 1, pause).await.unwrap());
        assert_eq!(store.plans.list_set_states(None, true).await.unwrap().len(), 1);
        let failure = TickFailure {
            plan: name.clone(),
            version: 1,
            tick: t,
            kind: LaunchKind::Scheduled,
            holder: "s".into(),
            error: "e".into(),
            failures: 1,
            first_at: t,
            last_at: t,
        };
        assert!(store.plans.record_tick_failure(&failure).await.unwrap());
        let deleted = store.plans.delete_plans(&PlanSelector::Names(vec![name.clone()]), t).await.unwrap();
        assert_eq!(deleted, vec![(name.clone(), true)]);
        drop(store);
        // Opening again changes nothing more.
        let store = Store::open_fs(&root).unwrap();
        assert_eq!(store.plans.get_plan(&name).await.unwrap().unwrap().deleted_at, Some(t));
    }
}
