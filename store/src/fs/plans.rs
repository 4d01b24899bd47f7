//! `PlanStore` over the SQLite database (tables `plans`, `plan_versions`,
//! `plan_labels`, `launches`, `schedulers`; see `db.rs`). Every multi-row change is one
//! job of the writer, so it commits whole or not at all.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use braid_core::{FlowName, Label, PlanName, Timestamp};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use super::db::{Db, db_err};
use super::records::FsRecords;
use crate::error::{Error, Result};
use crate::plan::*;
use crate::record::effective_limit;
use crate::rows::{LaunchRow, PlanRow, PlanVersionRow};

/// Plans of an fs store; shares the record database.
#[derive(Debug, Clone)]
pub struct FsPlans {
    db: Arc<Db>,
}

impl FsPlans {
    pub(crate) fn new(records: &FsRecords) -> Self {
        FsPlans { db: records.db.clone() }
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
                        let current: Option<(i64, String)> = c
                            .prepare_cached("SELECT version, hash FROM plans WHERE name = ?1")?
                            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()?;
                        let spec = serde_json::to_string(&d.spec).map_err(to_sql_err)?;
                        let labels = labels_json(&d.labels)?;
                        let reg = match current {
                            Some((v, hash)) if hash == d.hash => return Ok(Registration::Unchanged { version: v as u32 }),
                            Some((v, _)) => {
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
            "name, flow, version, hash, labels, active, created_at, updated_at, active_since, cursor"
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
                    let mut args: Vec<Sql> = Vec::new();
                    let sql = match &selector {
                        PlanSelector::Names(names) => {
                            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                            format!("SELECT name, active FROM plans WHERE 1 = 1{}", in_list("name", &names, &mut args))
                        }
                        PlanSelector::Labels(labels) => {
                            format!("SELECT name, active FROM plans WHERE 1 = 1{}", label_filter(labels, &mut args))
                        }
                    };
                    let found: Vec<(String, bool)> = c
                        .prepare(&format!("{sql} ORDER BY name"))?
                        .query_map(params_from_iter(args.iter()), |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<rusqlite::Result<_>>()?;
                    if let PlanSelector::Names(names) = &selector {
                        let missing: Vec<PlanName> =
                            names.iter().filter(|n| !found.iter().any(|(f, _)| f == n.as_str())).cloned().collect();
                        if !missing.is_empty() {
                            return Ok(Err(missing));
                        }
                    }
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
        rows.into_iter()
            .map(|(n, changed)| {
                Ok((PlanName::new(&n).map_err(|e| self.db.corrupt(format!("plan row {n}"), e))?, changed))
            })
            .collect()
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
