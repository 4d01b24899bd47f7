//! `PlanStore` over PostgreSQL (tables `plans`, `plan_versions`, `plan_labels`,
//! `launches`, `schedulers`, `plan_sets`, `plan_tick_failures`, and `claims` for launch claims). Every
//! multi-row change is one transaction.

use std::collections::HashSet;

use async_trait::async_trait;
use braid_core::{FlowName, Label, PlanName, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::records::{get, read, retry};
use super::{Db, Fail, PgResult};
use crate::error::{Error, Result};
use crate::plan::*;
use crate::record::effective_limit;
use crate::rows::{LaunchRow, PlanRow, PlanVersionRow, SetStateRow, TickFailureRow, pause_runs_json};

/// The migration (see `MIGRATIONS` in `mod.rs`) adding parameter set states (pauses and
/// resumes) and plan deletion.
pub(crate) const PLAN_SETS_MIGRATION: &str = r#"
ALTER TABLE plans ADD COLUMN deleted_at BIGINT;
CREATE TABLE plan_sets (
    plan        TEXT NOT NULL,
    set_key     TEXT NOT NULL,
    version     BIGINT NOT NULL,
    paused_at   BIGINT,
    failures    BIGINT,
    runs        TEXT,
    resumed_at  BIGINT,
    PRIMARY KEY (plan, set_key)
);
"#;

/// The migration adding failed ticks (plans whose parameter sets a command or a
/// function produces at each tick).
pub(crate) const TICK_FAILURES_MIGRATION: &str = r#"
CREATE TABLE plan_tick_failures (
    plan        TEXT NOT NULL,
    tick        BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    holder      TEXT NOT NULL,
    error       TEXT NOT NULL,
    failures    BIGINT NOT NULL,
    first_at    BIGINT NOT NULL,
    last_at     BIGINT NOT NULL,
    PRIMARY KEY (plan, tick)
);
"#;

/// Plans of a PostgreSQL store; shares the records' pool.
#[derive(Debug, Clone)]
pub struct PgPlans {
    pub(crate) db: Db,
}

type Param<'a> = &'a (dyn ToSql + Sync);

fn json_err(what: String, e: serde_json::Error) -> Fail {
    Fail::Store(Error::Invalid { what, reason: e.to_string() })
}

const PLAN_COLUMNS: &str =
    "name, flow, version, hash, spec, labels, active, created_at, updated_at, active_since, cursor, deleted_at";
const PLAN_COLUMNS_NO_SPEC: &str =
    "name, flow, version, hash, labels, active, created_at, updated_at, active_since, cursor, deleted_at";
const SET_COLUMNS: &str = "plan, set_key, version, paused_at, failures, runs, resumed_at";
const LAUNCH_COLUMNS: &str = "key, plan, version, flow, kind, tick, set_key, params, name, state, holder, run_id, \
    status, note, created_at, updated_at";

impl PgPlans {
    fn plan_from_row(&self, row: &Row, with_spec: bool) -> PgResult<PlanRecord> {
        let raw = PlanRow {
            name: get(row, "name")?,
            flow: get(row, "flow")?,
            version: get(row, "version")?,
            hash: get(row, "hash")?,
            spec: if with_spec { Some(get(row, "spec")?) } else { None },
            labels: get(row, "labels")?,
            active: get(row, "active")?,
            created_at: get(row, "created_at")?,
            updated_at: get(row, "updated_at")?,
            active_since: get(row, "active_since")?,
            cursor: get(row, "cursor")?,
            deleted_at: get(row, "deleted_at")?,
        };
        Ok(raw.decode(self.db.location())?)
    }

    fn set_row(row: &Row) -> PgResult<SetStateRow> {
        Ok(SetStateRow {
            plan: get(row, "plan")?,
            set_key: get(row, "set_key")?,
            version: get(row, "version")?,
            paused_at: get(row, "paused_at")?,
            failures: get(row, "failures")?,
            runs: get(row, "runs")?,
            resumed_at: get(row, "resumed_at")?,
        })
    }

    fn corrupt_name(&self, n: &str, e: impl ToString) -> Error {
        Error::Corrupt { what: format!("plan row {n}"), path: self.db.location().to_owned(), reason: e.to_string() }
    }

    fn version_from_row(&self, row: &Row) -> PgResult<PlanVersion> {
        let raw = PlanVersionRow {
            name: get(row, "name")?,
            version: get(row, "version")?,
            hash: get(row, "hash")?,
            spec: get(row, "spec")?,
            labels: get(row, "labels")?,
            created_at: get(row, "created_at")?,
        };
        Ok(raw.decode(self.db.location())?)
    }

    fn launch_from_row(&self, row: &Row) -> PgResult<LaunchRecord> {
        let raw = LaunchRow {
            key: get(row, "key")?,
            plan: get(row, "plan")?,
            version: get(row, "version")?,
            flow: get(row, "flow")?,
            kind: get(row, "kind")?,
            tick: get(row, "tick")?,
            set_key: get(row, "set_key")?,
            params: get(row, "params")?,
            name: get(row, "name")?,
            state: get(row, "state")?,
            holder: get(row, "holder")?,
            run: get(row, "run_id")?,
            status: get(row, "status")?,
            note: get(row, "note")?,
            created_at: get(row, "created_at")?,
            updated_at: get(row, "updated_at")?,
        };
        Ok(raw.decode(self.db.location())?)
    }
}

/// The columns of many launches, as arrays for one `UNNEST`.
#[derive(Default)]
struct LaunchColumns {
    key: Vec<String>,
    plan: Vec<String>,
    version: Vec<i64>,
    flow: Vec<String>,
    kind: Vec<String>,
    tick: Vec<i64>,
    set_key: Vec<String>,
    params: Vec<String>,
    name: Vec<String>,
    state: Vec<String>,
    holder: Vec<Option<String>>,
    run: Vec<Option<String>>,
    status: Vec<Option<String>>,
    note: Vec<Option<String>>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
}

impl LaunchColumns {
    fn push(&mut self, l: &LaunchRecord) -> PgResult<()> {
        self.key.push(l.key.clone());
        self.plan.push(l.plan.to_string());
        self.version.push(i64::from(l.version));
        self.flow.push(l.flow.to_string());
        self.kind.push(l.kind.as_str().to_owned());
        self.tick.push(l.tick.as_micros());
        self.set_key.push(l.set_key.clone());
        self.params.push(serde_json::to_string(&l.params).map_err(|e| json_err(format!("launch {}", l.key), e))?);
        self.name.push(l.name.clone());
        self.state.push(l.state.as_str().to_owned());
        self.holder.push(l.holder.clone());
        self.run.push(l.run.map(|r| r.to_string()));
        self.status.push(l.status.map(|s| s.as_str().to_owned()));
        self.note.push(l.note.clone());
        self.created_at.push(l.created_at.as_micros());
        self.updated_at.push(l.updated_at.as_micros());
        Ok(())
    }

    fn params(&self) -> [Param<'_>; 16] {
        [
            &self.key,
            &self.plan,
            &self.version,
            &self.flow,
            &self.kind,
            &self.tick,
            &self.set_key,
            &self.params,
            &self.name,
            &self.state,
            &self.holder,
            &self.run,
            &self.status,
            &self.note,
            &self.created_at,
            &self.updated_at,
        ]
    }
}

/// `name IN (plans with every label)` as SQL, its parameters appended to `args`.
fn label_filter(labels: &[Label], keys: &mut Vec<String>, values: &mut Vec<String>) -> String {
    // Every label as a (key, value) pair; a plan qualifies when it carries all of them.
    for l in labels {
        keys.push(l.key.to_string());
        values.push(l.value.to_string());
    }
    if labels.is_empty() {
        String::new()
    } else {
        " AND name IN (SELECT pl.name FROM plan_labels pl JOIN unnest($1::text[], $2::text[]) AS w(key, value) \
         ON pl.key = w.key AND pl.value = w.value GROUP BY pl.name HAVING COUNT(*) = cardinality($1::text[]))"
            .to_owned()
    }
}

#[async_trait]
impl PlanStore for PgPlans {
    async fn register_plans(&self, drafts: Vec<PlanDraft>, now: Timestamp) -> Result<Vec<Registration>> {
        let now = now.as_micros();
        let mut prepared = Vec::with_capacity(drafts.len());
        for d in &drafts {
            let spec = serde_json::to_string(&d.spec)
                .map_err(|e| Error::Invalid { what: format!("plan {}", d.name), reason: e.to_string() })?;
            let labels = serde_json::to_string(&d.labels)
                .map_err(|e| Error::Invalid { what: format!("plan {}", d.name), reason: e.to_string() })?;
            prepared.push((d, spec, labels));
        }
        let prepared = &prepared;
        retry!(self, || "register plans".to_owned(), |c| {
            let tx = c.transaction().await?;
            let mut out = Vec::with_capacity(prepared.len());
            for (d, spec, labels) in prepared {
                let name = d.name.as_str();
                let stmt = tx
                    .prepare_cached(
                        "SELECT version, hash, deleted_at IS NOT NULL AS deleted FROM plans WHERE name = $1 FOR UPDATE",
                    )
                    .await?;
                let current = match tx.query_opt(&stmt, &[&name]).await? {
                    Some(r) => {
                        Some((get::<i64>(&r, "version")?, get::<String>(&r, "hash")?, get::<bool>(&r, "deleted")?))
                    }
                    None => None,
                };
                let reg = match current {
                    Some((v, _, true)) => {
                        // A new history under the old name: created anew, numbering continues.
                        let stmt = tx
                            .prepare_cached(
                                "UPDATE plans SET flow = $2, version = $3, hash = $4, spec = $5, labels = $6, \
                                 active = $7, created_at = $8, updated_at = $8, active_since = $9, cursor = NULL, \
                                 deleted_at = NULL WHERE name = $1",
                            )
                            .await?;
                        let since = d.active.then_some(now);
                        tx.execute(
                            &stmt,
                            &[&name, &d.flow.as_str(), &(v + 1), &d.hash, spec, labels, &d.active, &now, &since],
                        )
                        .await?;
                        Registration::Created { version: v as u32 + 1 }
                    }
                    Some((v, hash, false)) if hash == d.hash => {
                        out.push(Registration::Unchanged { version: v as u32 });
                        continue;
                    }
                    Some((v, _, false)) => {
                        let stmt = tx
                            .prepare_cached(
                                "UPDATE plans SET flow = $2, version = $3, hash = $4, spec = $5, labels = $6, \
                                 updated_at = $7 WHERE name = $1",
                            )
                            .await?;
                        tx.execute(&stmt, &[&name, &d.flow.as_str(), &(v + 1), &d.hash, spec, labels, &now]).await?;
                        Registration::Updated { version: v as u32 + 1, previous: v as u32 }
                    }
                    None => {
                        // A concurrent registration of the same new plan loses on the
                        // primary key, and the transaction runs again.
                        let stmt = tx
                            .prepare_cached(
                                "INSERT INTO plans (name, flow, version, hash, spec, labels, active, created_at, \
                                 updated_at, active_since, cursor) VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $7, $8, NULL)",
                            )
                            .await?;
                        let since = d.active.then_some(now);
                        tx.execute(&stmt, &[&name, &d.flow.as_str(), &d.hash, spec, labels, &d.active, &now, &since])
                            .await?;
                        Registration::Created { version: 1 }
                    }
                };
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO plan_versions (name, version, hash, spec, labels, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .await?;
                tx.execute(&stmt, &[&name, &i64::from(reg.version()), &d.hash, spec, labels, &now]).await?;
                let stmt = tx.prepare_cached("DELETE FROM plan_labels WHERE name = $1").await?;
                tx.execute(&stmt, &[&name]).await?;
                let keys: Vec<String> = d.labels.iter().map(|l| l.key.to_string()).collect();
                let values: Vec<String> = d.labels.iter().map(|l| l.value.to_string()).collect();
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO plan_labels (key, value, name) SELECT k, v, $3 FROM unnest($1::text[], $2::text[]) \
                         AS l(k, v) ON CONFLICT DO NOTHING",
                    )
                    .await?;
                tx.execute(&stmt, &[&keys, &values, &name]).await?;
                // A new version (or history) starts its parameter sets afresh.
                let stmt = tx.prepare_cached("DELETE FROM plan_sets WHERE plan = $1").await?;
                tx.execute(&stmt, &[&name]).await?;
                out.push(reg);
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    async fn get_plan(&self, name: &PlanName) -> Result<Option<PlanRecord>> {
        read!(self, "read plan", |c| {
            let stmt = c.prepare_cached(&format!("SELECT {PLAN_COLUMNS} FROM plans WHERE name = $1")).await?;
            match c.query_opt(&stmt, &[&name.as_str()]).await? {
                Some(r) => Ok(Some(self.plan_from_row(&r, true)?)),
                None => Ok(None),
            }
        })
    }

    async fn get_plan_version(&self, name: &PlanName, version: u32) -> Result<Option<PlanVersion>> {
        read!(self, "read plan version", |c| {
            let stmt = c
                .prepare_cached(
                    "SELECT name, version, hash, spec, labels, created_at FROM plan_versions WHERE name = $1 AND version = $2",
                )
                .await?;
            match c.query_opt(&stmt, &[&name.as_str(), &i64::from(version)]).await? {
                Some(r) => Ok(Some(self.version_from_row(&r)?)),
                None => Ok(None),
            }
        })
    }

    async fn list_plan_versions(&self, name: &PlanName) -> Result<Vec<PlanVersion>> {
        read!(self, "list plan versions", |c| {
            let stmt = c
                .prepare_cached(
                    "SELECT name, version, hash, spec, labels, created_at FROM plan_versions WHERE name = $1 ORDER BY version",
                )
                .await?;
            c.query(&stmt, &[&name.as_str()]).await?.iter().map(|r| self.version_from_row(r)).collect()
        })
    }

    async fn list_plans(&self, query: &PlanQuery) -> Result<Vec<PlanRecord>> {
        let columns = if query.without_spec { PLAN_COLUMNS_NO_SPEC } else { PLAN_COLUMNS };
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        let labels = label_filter(&query.labels, &mut keys, &mut values);
        let flows: Vec<String> = query.flows.iter().map(|f| f.to_string()).collect();
        let mut sql = format!("SELECT {columns} FROM plans WHERE TRUE{labels}");
        let mut params: Vec<Param<'_>> = Vec::new();
        if !labels.is_empty() {
            params.push(&keys);
            params.push(&values);
        }
        if !flows.is_empty() {
            params.push(&flows);
            sql.push_str(&format!(" AND flow = ANY(${}::text[])", params.len()));
        }
        if let Some(a) = query.active {
            sql.push_str(if a { " AND active" } else { " AND NOT active" });
        }
        if !query.include_deleted {
            sql.push_str(" AND deleted_at IS NULL");
        }
        sql.push_str(" ORDER BY name");
        read!(self, "list plans", |c| {
            let stmt = c.prepare_cached(&sql).await?;
            c.query(&stmt, &params).await?.iter().map(|r| self.plan_from_row(r, !query.without_spec)).collect()
        })
    }

    async fn set_plans_active(
        &self,
        selector: &PlanSelector,
        active: bool,
        now: Timestamp,
    ) -> Result<Vec<(PlanName, bool)>> {
        check_selector(selector)?;
        let now = now.as_micros();
        let rows: std::result::Result<Vec<(String, bool)>, Vec<PlanName>> =
            retry!(self, || "activate plans".to_owned(), |c| {
                let tx = c.transaction().await?;
                let found_rows = match lock_selected(&tx, selector, "active", false).await? {
                    Ok(found) => found,
                    Err(missing) => return Ok(Err(missing)),
                };
                let upd = tx.prepare_cached("UPDATE plans SET active = $2, active_since = $3 WHERE name = $1").await?;
                let mut out = Vec::with_capacity(found_rows.len());
                let since = active.then_some(now);
                for (name, was) in found_rows {
                    let changed = was != active;
                    if changed {
                        tx.execute(&upd, &[&name, &active, &since]).await?;
                    }
                    out.push((name, changed));
                }
                tx.commit().await?;
                Ok(Ok(out))
            })?;
        match rows {
            Ok(rows) => rows
                .into_iter()
                .map(|(n, changed)| {
                    let name = PlanName::new(&n).map_err(|e| Error::Corrupt {
                        what: format!("plan row {n}"),
                        path: self.db.location().to_owned(),
                        reason: e.to_string(),
                    })?;
                    Ok((name, changed))
                })
                .collect(),
            Err(missing) => Err(unknown_plans(&missing)),
        }
    }

    async fn advance_cursors(&self, cursors: Vec<(PlanName, Timestamp)>) -> Result<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = cursors.iter().map(|(n, _)| n.to_string()).collect();
        let ats: Vec<i64> = cursors.iter().map(|(_, t)| t.as_micros()).collect();
        let (names, ats) = (&names, &ats);
        retry!(self, || "advance plan cursors".to_owned(), |c| {
            // Several cursors of one plan in a batch: the latest wins (never backwards).
            let stmt = c
                .prepare_cached(
                    "UPDATE plans SET cursor = v.at FROM (SELECT name, MAX(at) AS at FROM unnest($1::text[], $2::int8[]) \
                     AS u(name, at) GROUP BY name) AS v WHERE plans.name = v.name AND (plans.cursor IS NULL OR plans.cursor < v.at)",
                )
                .await?;
            c.execute(&stmt, &[names, ats]).await?;
            Ok(())
        })
    }

    async fn delete_plans(&self, selector: &PlanSelector, now: Timestamp) -> Result<Vec<(PlanName, bool)>> {
        check_selector(selector)?;
        let now = now.as_micros();
        let rows: std::result::Result<Vec<(String, bool)>, Vec<PlanName>> =
            retry!(self, || "delete plans".to_owned(), |c| {
                let tx = c.transaction().await?;
                let found_rows = match lock_selected(&tx, selector, "deleted_at IS NULL", true).await? {
                    Ok(found) => found,
                    Err(missing) => return Ok(Err(missing)),
                };
                let upd = tx
                    .prepare_cached(
                        "UPDATE plans SET deleted_at = $2, active = FALSE, active_since = NULL WHERE name = $1",
                    )
                    .await?;
                let sets = tx.prepare_cached("DELETE FROM plan_sets WHERE plan = $1").await?;
                for (name, live) in &found_rows {
                    if *live {
                        tx.execute(&upd, &[name, &now]).await?;
                        tx.execute(&sets, &[name]).await?;
                    }
                }
                tx.commit().await?;
                Ok(Ok(found_rows))
            })?;
        match rows {
            Ok(rows) => rows
                .into_iter()
                .map(|(n, changed)| Ok((PlanName::new(&n).map_err(|e| self.corrupt_name(&n, e))?, changed)))
                .collect(),
            Err(missing) => Err(unknown_plans(&missing)),
        }
    }

    async fn pause_set(&self, plan: &PlanName, set_key: &str, version: u32, pause: SetPause) -> Result<bool> {
        let runs = pause_runs_json(&pause);
        let (plan_s, version, at, failures) =
            (plan.to_string(), i64::from(version), pause.at.as_micros(), i64::from(pause.failures));
        let (plan_s, runs) = (&plan_s, &runs);
        retry!(self, || format!("pause parameter set {set_key} of plan {plan}"), |c| {
            let tx = c.transaction().await?;
            // The plan row locked: a concurrent new version or deletion waits, or wins.
            let stmt = tx
                .prepare_cached("SELECT version FROM plans WHERE name = $1 AND deleted_at IS NULL FOR UPDATE")
                .await?;
            let live = match tx.query_opt(&stmt, &[plan_s]).await? {
                Some(r) => Some(get::<i64>(&r, "version")?),
                None => None,
            };
            if live != Some(version) {
                return Ok(false);
            }
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO plan_sets (plan, set_key, version, paused_at, failures, runs, resumed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, NULL) ON CONFLICT (plan, set_key) DO UPDATE SET \
                     version = EXCLUDED.version, paused_at = EXCLUDED.paused_at, failures = EXCLUDED.failures, \
                     runs = EXCLUDED.runs WHERE plan_sets.paused_at IS NULL",
                )
                .await?;
            let n = tx.execute(&stmt, &[plan_s, &set_key, &version, &at, &failures, runs]).await?;
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    async fn resume_sets(
        &self,
        plan: &PlanName,
        set_keys: &[String],
        now: Timestamp,
    ) -> Result<Vec<(String, Option<SetPause>)>> {
        let plan_s = plan.to_string();
        let now = now.as_micros();
        let (plan_s, set_keys) = (&plan_s, set_keys);
        let rows: Option<Vec<(String, Option<SetStateRow>)>> =
            retry!(self, || format!("resume parameter sets of plan {plan}"), |c| {
                let tx = c.transaction().await?;
                let stmt = tx
                    .prepare_cached("SELECT version FROM plans WHERE name = $1 AND deleted_at IS NULL FOR UPDATE")
                    .await?;
                let version = match tx.query_opt(&stmt, &[plan_s]).await? {
                    Some(r) => get::<i64>(&r, "version")?,
                    None => return Ok(None),
                };
                let read = tx
                    .prepare_cached(&format!(
                        "SELECT {SET_COLUMNS} FROM plan_sets WHERE plan = $1 AND set_key = $2 FOR UPDATE"
                    ))
                    .await?;
                let put = tx
                    .prepare_cached(
                        "INSERT INTO plan_sets (plan, set_key, version, paused_at, failures, runs, resumed_at) \
                         VALUES ($1, $2, $3, NULL, NULL, NULL, $4) ON CONFLICT (plan, set_key) DO UPDATE SET \
                         version = EXCLUDED.version, paused_at = NULL, failures = NULL, runs = NULL, \
                         resumed_at = EXCLUDED.resumed_at",
                    )
                    .await?;
                let mut out = Vec::with_capacity(set_keys.len());
                for k in set_keys {
                    let before = match tx.query_opt(&read, &[plan_s, k]).await? {
                        Some(r) => Some(Self::set_row(&r)?),
                        None => None,
                    };
                    tx.execute(&put, &[plan_s, k, &version, &now]).await?;
                    out.push((k.clone(), before));
                }
                tx.commit().await?;
                Ok(Some(out))
            })?;
        let Some(rows) = rows else {
            return Err(unknown_plans(std::slice::from_ref(plan)));
        };
        rows.into_iter()
            .map(|(k, row)| {
                let paused = match row {
                    Some(r) => r.decode(self.db.location())?.paused,
                    None => None,
                };
                Ok((k, paused))
            })
            .collect()
    }

    async fn list_set_states(&self, plan: Option<&PlanName>, paused_only: bool) -> Result<Vec<ParamSetState>> {
        let plan_s = plan.map(|p| p.to_string());
        let sql = format!(
            "SELECT {SET_COLUMNS} FROM plan_sets WHERE ($1::text IS NULL OR plan = $1){} ORDER BY plan, set_key",
            if paused_only { " AND paused_at IS NOT NULL" } else { "" }
        );
        let (sql, plan_s) = (&sql, &plan_s);
        let rows: Vec<SetStateRow> = read!(self, "list parameter set states", |c| {
            let stmt = c.prepare_cached(sql).await?;
            c.query(&stmt, &[plan_s]).await?.iter().map(Self::set_row).collect()
        })?;
        rows.into_iter().map(|r| r.decode(self.db.location())).collect()
    }

    async fn record_tick_failure(&self, failure: &TickFailure) -> Result<bool> {
        let (plan, tick, version) = (failure.plan.to_string(), failure.tick.as_micros(), i64::from(failure.version));
        let (failures, first_at, last_at) =
            (i64::from(failure.failures), failure.first_at.as_micros(), failure.last_at.as_micros());
        let (plan, kind, holder, error) = (&plan, failure.kind.as_str(), &failure.holder, &failure.error);
        retry!(self, || format!("record the failed tick {} of plan {}", failure.tick, failure.plan), |c| {
            // `xmax = 0` only for a row this statement inserted.
            let stmt = c
                .prepare_cached(
                    "INSERT INTO plan_tick_failures \
                     (plan, tick, version, kind, holder, error, failures, first_at, last_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (plan, tick) DO UPDATE SET \
                     version = EXCLUDED.version, kind = EXCLUDED.kind, holder = EXCLUDED.holder, \
                     error = EXCLUDED.error, failures = plan_tick_failures.failures + 1, \
                     last_at = EXCLUDED.last_at RETURNING (xmax = 0) AS inserted",
                )
                .await?;
            let row = c
                .query_one(&stmt, &[plan, &tick, &version, &kind, holder, error, &failures, &first_at, &last_at])
                .await?;
            get::<bool>(&row, "inserted")
        })
    }

    async fn list_tick_failures(&self, plan: Option<&PlanName>, limit: usize) -> Result<Vec<TickFailure>> {
        let plan_s = plan.map(|p| p.to_string());
        let limit = i64::try_from(effective_limit(limit, 1000)).unwrap_or(i64::MAX);
        let (plan_s, limit) = (&plan_s, &limit);
        let rows: Vec<TickFailureRow> = read!(self, "list failed ticks", |c| {
            let stmt = c
                .prepare_cached(
                    "SELECT plan, tick, version, kind, holder, error, failures, first_at, last_at \
                     FROM plan_tick_failures WHERE ($1::text IS NULL OR plan = $1) \
                     ORDER BY tick DESC, plan DESC LIMIT $2",
                )
                .await?;
            c.query(&stmt, &[plan_s, limit])
                .await?
                .iter()
                .map(|r| {
                    Ok(TickFailureRow {
                        plan: get(r, "plan")?,
                        tick: get(r, "tick")?,
                        version: get(r, "version")?,
                        kind: get(r, "kind")?,
                        holder: get(r, "holder")?,
                        error: get(r, "error")?,
                        failures: get(r, "failures")?,
                        first_at: get(r, "first_at")?,
                        last_at: get(r, "last_at")?,
                    })
                })
                .collect()
        })?;
        rows.into_iter().map(|r| r.decode(self.db.location())).collect()
    }

    async fn claim_launches(&self, launches: Vec<LaunchRecord>) -> Result<Vec<bool>> {
        if launches.is_empty() {
            return Ok(Vec::new());
        }
        // A key given twice in one batch: only its first launch can win.
        let mut firsts = HashSet::new();
        let candidate: Vec<bool> = launches.iter().map(|l| firsts.insert(l.key.clone())).collect();
        let mut cols = LaunchColumns::default();
        for (l, first) in launches.iter().zip(&candidate) {
            if *first {
                cols.push(l).map_err(Fail::into_store)?;
            }
        }
        let holders: Vec<String> = cols.holder.iter().map(|h| h.clone().unwrap_or_default()).collect();
        let (cols, holders) = (&cols, &holders);
        let won: HashSet<String> = retry!(self, || "claim launches".to_owned(), |c| {
            let tx = c.transaction().await?;
            let claim = tx
                .prepare_cached(
                    "INSERT INTO claims (scope, key, holder, claimed_at) SELECT $1, k, h, t \
                     FROM unnest($2::text[], $3::text[], $4::int8[]) AS v(k, h, t) \
                     ON CONFLICT (scope, key) DO NOTHING RETURNING key",
                )
                .await?;
            let mut won = HashSet::new();
            for r in tx.query(&claim, &[&LAUNCH_CLAIM_SCOPE, &cols.key, holders, &cols.created_at]).await? {
                won.insert(get::<String>(&r, "key")?);
            }
            // Only the launches whose claim this transaction won are inserted.
            let stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO launches ({LAUNCH_COLUMNS}) SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], \
                     $4::text[], $5::text[], $6::int8[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                     $12::text[], $13::text[], $14::text[], $15::int8[], $16::int8[]) AS v({LAUNCH_COLUMNS}) \
                     WHERE v.key = ANY($17::text[]) ON CONFLICT (key) DO NOTHING"
                ))
                .await?;
            let won_list: Vec<String> = won.iter().cloned().collect();
            let mut params: Vec<Param<'_>> = cols.params().to_vec();
            params.push(&won_list);
            tx.execute(&stmt, &params).await?;
            tx.commit().await?;
            Ok(won)
        })?;
        let mut taken = HashSet::new();
        Ok(launches
            .iter()
            .zip(candidate)
            .map(|(l, first)| first && won.contains(&l.key) && taken.insert(l.key.clone()))
            .collect())
    }

    async fn update_launch(
        &self,
        launch: &LaunchRecord,
        expect_state: LaunchState,
        expect_holder: Option<&str>,
    ) -> Result<bool> {
        let mut cols = LaunchColumns::default();
        cols.push(launch).map_err(Fail::into_store)?;
        let expect = expect_state.as_str();
        let cols = &cols;
        retry!(self, || format!("update launch {}", launch.key), |c| {
            let stmt = c
                .prepare_cached(
                    "UPDATE launches SET plan = $2, version = $3, flow = $4, kind = $5, tick = $6, set_key = $7, \
                     params = $8, name = $9, state = $10, holder = $11, run_id = $12, status = $13, note = $14, \
                     created_at = $15, updated_at = $16 \
                     WHERE key = $1 AND state = $17 AND holder IS NOT DISTINCT FROM $18",
                )
                .await?;
            let p: [Param<'_>; 18] = [
                &cols.key[0],
                &cols.plan[0],
                &cols.version[0],
                &cols.flow[0],
                &cols.kind[0],
                &cols.tick[0],
                &cols.set_key[0],
                &cols.params[0],
                &cols.name[0],
                &cols.state[0],
                &cols.holder[0],
                &cols.run[0],
                &cols.status[0],
                &cols.note[0],
                &cols.created_at[0],
                &cols.updated_at[0],
                &expect,
                &expect_holder,
            ];
            Ok(c.execute(&stmt, &p).await? == 1)
        })
    }

    async fn get_launch(&self, key: &str) -> Result<Option<LaunchRecord>> {
        read!(self, "read launch", |c| {
            let stmt = c.prepare_cached(&format!("SELECT {LAUNCH_COLUMNS} FROM launches WHERE key = $1")).await?;
            match c.query_opt(&stmt, &[&key]).await? {
                Some(r) => Ok(Some(self.launch_from_row(&r)?)),
                None => Ok(None),
            }
        })
    }

    async fn list_launches(&self, query: &LaunchQuery) -> Result<Vec<LaunchRecord>> {
        let limit = effective_limit(query.limit, 1000) as i64;
        let plan = query.plan.as_ref().map(|p| p.to_string());
        let before = query.before_tick.map(Timestamp::as_micros);
        let states: Vec<String> = query.states.iter().map(|s| s.as_str().to_owned()).collect();
        let flows: Vec<String> = query.flows.iter().map(|f| f.to_string()).collect();
        let mut sql = format!("SELECT {LAUNCH_COLUMNS} FROM launches WHERE TRUE");
        let mut params: Vec<Param<'_>> = vec![&limit];
        let mut conds: Vec<(&str, Param<'_>)> = Vec::new();
        if let Some(p) = &plan {
            conds.push(("plan =", p));
        }
        if let Some(s) = &query.set_key {
            conds.push(("set_key =", s));
        }
        if let Some(h) = &query.holder {
            conds.push(("holder =", h));
        }
        if let Some(b) = &before {
            conds.push(("tick <", b));
        }
        for (cond, v) in conds {
            params.push(v);
            sql.push_str(&format!(" AND {cond} ${}", params.len()));
        }
        if !states.is_empty() {
            params.push(&states);
            sql.push_str(&format!(" AND state = ANY(${}::text[])", params.len()));
        }
        if !flows.is_empty() {
            params.push(&flows);
            sql.push_str(&format!(" AND flow = ANY(${}::text[])", params.len()));
        }
        let dir = if query.oldest_first { "ASC" } else { "DESC" };
        sql.push_str(&format!(" ORDER BY tick {dir}, plan {dir}, set_key {dir}, key {dir} LIMIT $1"));
        read!(self, "list launches", |c| {
            let stmt = c.prepare_cached(&sql).await?;
            c.query(&stmt, &params).await?.iter().map(|r| self.launch_from_row(r)).collect()
        })
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
        let flows: Vec<String> = flows.iter().map(|f| f.to_string()).collect();
        let limit = limit as i64;
        let (flows, live) = (&flows, &live.to_vec());
        // Rows another scheduler is adopting right now are skipped, not waited for.
        let mut out: Vec<LaunchRecord> = retry!(self, || "adopt launches".to_owned(), |c| {
            let stmt = c
                .prepare_cached(&format!(
                    "UPDATE launches SET holder = $3 WHERE key IN (SELECT key FROM launches \
                     WHERE state = 'pending' AND flow = ANY($1::text[]) AND (holder IS NULL OR holder <> ALL($2::text[])) \
                     ORDER BY tick LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {LAUNCH_COLUMNS}"
                ))
                .await?;
            c.query(&stmt, &[flows, live, &holder, &limit]).await?.iter().map(|r| self.launch_from_row(r)).collect()
        })?;
        out.sort_by(|a, b| (a.tick, &a.key).cmp(&(b.tick, &b.key)));
        Ok(out)
    }

    async fn release_launches(&self, holder: &str) -> Result<u64> {
        retry!(self, || "release launches".to_owned(), |c| {
            let stmt =
                c.prepare_cached("UPDATE launches SET holder = NULL WHERE state = 'pending' AND holder = $1").await?;
            Ok(c.execute(&stmt, &[&holder]).await?)
        })
    }

    async fn heartbeat(&self, scheduler: &SchedulerRecord) -> Result<()> {
        let info = serde_json::to_string(scheduler)
            .map_err(|e| Error::Invalid { what: format!("scheduler {}", scheduler.id), reason: e.to_string() })?;
        let (id, seen) = (&scheduler.id, scheduler.seen_at.as_micros());
        let info = &info;
        retry!(self, || "record scheduler heartbeat".to_owned(), |c| {
            let stmt = c
                .prepare_cached(
                    "INSERT INTO schedulers (id, info, seen_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET info = EXCLUDED.info, seen_at = EXCLUDED.seen_at",
                )
                .await?;
            c.execute(&stmt, &[id, info, &seen]).await?;
            Ok(())
        })
    }

    async fn list_schedulers(&self) -> Result<Vec<SchedulerRecord>> {
        read!(self, "list schedulers", |c| {
            let stmt = c.prepare_cached("SELECT id, info FROM schedulers ORDER BY id").await?;
            let mut out = Vec::new();
            for r in c.query(&stmt, &[]).await? {
                let id: String = get(&r, "id")?;
                let info: String = get(&r, "info")?;
                out.push(serde_json::from_str(&info).map_err(|e| self.db.corrupt(format!("scheduler row {id}"), e))?);
            }
            Ok(out)
        })
    }

    async fn remove_scheduler(&self, id: &str) -> Result<()> {
        retry!(self, || "remove scheduler".to_owned(), |c| {
            let stmt = c.prepare_cached("DELETE FROM schedulers WHERE id = $1").await?;
            c.execute(&stmt, &[&id]).await?;
            Ok(())
        })
    }
}

/// Plans a selector picked, each with a flag, or the names it gave that match no plan.
type Selected = std::result::Result<Vec<(String, bool)>, Vec<PlanName>>;

/// The plans `selector` picks (live ones; by name, deleted ones too when
/// `names_include_deleted`), locked for update in `tx`, each with the boolean expression
/// `flag`, in name order; `Err` lists every name given that matches no plan.
async fn lock_selected(
    tx: &deadpool_postgres::Transaction<'_>,
    selector: &PlanSelector,
    flag: &str,
    names_include_deleted: bool,
) -> PgResult<Selected> {
    let found = match selector {
        PlanSelector::Names(names) => {
            let live = if names_include_deleted { "" } else { " AND deleted_at IS NULL" };
            let sql = format!(
                "SELECT name, {flag} AS flag FROM plans WHERE name = ANY($1::text[]){live} ORDER BY name FOR UPDATE"
            );
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            tx.query(&tx.prepare_cached(&sql).await?, &[&names]).await?
        }
        PlanSelector::Labels(labels) => {
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            let filter = label_filter(labels, &mut keys, &mut values);
            let sql = format!(
                "SELECT name, {flag} AS flag FROM plans WHERE deleted_at IS NULL{filter} ORDER BY name FOR UPDATE"
            );
            tx.query(&tx.prepare_cached(&sql).await?, &[&keys, &values]).await?
        }
    };
    let mut rows = Vec::with_capacity(found.len());
    for r in &found {
        rows.push((get::<String>(r, "name")?, get::<bool>(r, "flag")?));
    }
    if let PlanSelector::Names(wanted) = selector {
        let missing: Vec<PlanName> =
            wanted.iter().filter(|n| !rows.iter().any(|(f, _)| f == n.as_str())).cloned().collect();
        if !missing.is_empty() {
            return Ok(Err(missing));
        }
    }
    Ok(Ok(rows))
}
