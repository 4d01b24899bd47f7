//! The memory backend's [`PlanStore`]: maps behind one lock, claims through the
//! memory record store's claims.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use braid_core::{FlowName, PlanName, Timestamp};

use crate::error::Result;
use crate::plan::*;
use crate::record::{RecordStore, effective_limit};

#[derive(Debug, Default)]
struct Tables {
    plans: BTreeMap<PlanName, PlanRecord>,
    versions: BTreeMap<(PlanName, u32), PlanVersion>,
    launches: HashMap<String, LaunchRecord>,
    schedulers: BTreeMap<String, SchedulerRecord>,
    sets: BTreeMap<(PlanName, String), ParamSetState>,
    failed_ticks: BTreeMap<(PlanName, Timestamp), TickFailure>,
}

/// Plans in memory. Claims go through the record store it was made with, so
/// `claim_holder(LAUNCH_CLAIM_SCOPE, key)` sees them as on disk.
#[derive(Debug)]
pub struct MemoryPlans {
    records: Arc<dyn RecordStore>,
    tables: Mutex<Tables>,
}

impl MemoryPlans {
    /// Empty plans whose launch claims go to `records` (the store's record half).
    pub fn new(records: Arc<dyn RecordStore>) -> Self {
        MemoryPlans { records, tables: Mutex::new(Tables::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn matches(l: &LaunchRecord, q: &LaunchQuery) -> bool {
    q.plan.as_ref().is_none_or(|p| &l.plan == p)
        && q.set_key.as_ref().is_none_or(|s| &l.set_key == s)
        && (q.states.is_empty() || q.states.contains(&l.state))
        && (q.flows.is_empty() || q.flows.contains(&l.flow))
        && q.holder.as_ref().is_none_or(|h| l.holder.as_ref() == Some(h))
        && q.before_tick.is_none_or(|b| l.tick < b)
}

fn sort_launches(v: &mut [LaunchRecord], oldest_first: bool) {
    v.sort_by(|a, b| (a.tick, &a.plan, &a.set_key, &a.key).cmp(&(b.tick, &b.plan, &b.set_key, &b.key)));
    if !oldest_first {
        v.reverse();
    }
}

#[async_trait]
impl PlanStore for MemoryPlans {
    async fn register_plans(&self, drafts: Vec<PlanDraft>, now: Timestamp) -> Result<Vec<Registration>> {
        let mut t = self.lock();
        let mut out = Vec::with_capacity(drafts.len());
        let mut staged: BTreeMap<PlanName, PlanRecord> = BTreeMap::new();
        let mut new_versions = Vec::new();
        for d in drafts {
            let current = staged.get(&d.name).or_else(|| t.plans.get(&d.name)).cloned();
            let (record, reg) = match current {
                Some(p) if p.deleted_at.is_some() => {
                    // A new history under the old name: created anew, numbering continues.
                    let version = p.version + 1;
                    (new_plan(&d, version, now), Registration::Created { version })
                }
                Some(p) if p.hash == d.hash => {
                    out.push(Registration::Unchanged { version: p.version });
                    continue;
                }
                Some(p) => {
                    let version = p.version + 1;
                    let rec = PlanRecord {
                        flow: d.flow.clone(),
                        version,
                        hash: d.hash.clone(),
                        spec: d.spec.clone(),
                        labels: d.labels.clone(),
                        updated_at: now,
                        ..p.clone()
                    };
                    (rec, Registration::Updated { version, previous: p.version })
                }
                None => (new_plan(&d, 1, now), Registration::Created { version: 1 }),
            };
            new_versions.push(PlanVersion {
                name: d.name.clone(),
                version: record.version,
                hash: d.hash,
                spec: d.spec,
                labels: d.labels,
                created_at: now,
            });
            staged.insert(d.name, record);
            out.push(reg);
        }
        for name in staged.keys() {
            t.sets.retain(|(plan, _), _| plan != name);
        }
        t.plans.extend(staged);
        for v in new_versions {
            t.versions.insert((v.name.clone(), v.version), v);
        }
        Ok(out)
    }

    async fn get_plan(&self, name: &PlanName) -> Result<Option<PlanRecord>> {
        Ok(self.lock().plans.get(name).cloned())
    }

    async fn get_plan_version(&self, name: &PlanName, version: u32) -> Result<Option<PlanVersion>> {
        Ok(self.lock().versions.get(&(name.clone(), version)).cloned())
    }

    async fn list_plan_versions(&self, name: &PlanName) -> Result<Vec<PlanVersion>> {
        let t = self.lock();
        Ok(t.versions.range((name.clone(), 0)..=(name.clone(), u32::MAX)).map(|(_, v)| v.clone()).collect())
    }

    async fn list_plans(&self, query: &PlanQuery) -> Result<Vec<PlanRecord>> {
        Ok(self
            .lock()
            .plans
            .values()
            .filter(|p| query.flows.is_empty() || query.flows.contains(&p.flow))
            .filter(|p| has_labels(&p.labels, &query.labels))
            .filter(|p| query.active.is_none_or(|a| p.active == a))
            .filter(|p| query.include_deleted || p.deleted_at.is_none())
            .map(|p| {
                let mut p = p.clone();
                if query.without_spec {
                    p.spec = serde_json::Value::Null;
                }
                p
            })
            .collect())
    }

    async fn set_plans_active(
        &self,
        selector: &PlanSelector,
        active: bool,
        now: Timestamp,
    ) -> Result<Vec<(PlanName, bool)>> {
        check_selector(selector)?;
        let mut t = self.lock();
        let names = selected(&t, selector, false)?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Some(p) = t.plans.get_mut(&n) {
                let changed = p.active != active;
                if changed {
                    p.active = active;
                    p.active_since = active.then_some(now);
                }
                out.push((n, changed));
            }
        }
        Ok(out)
    }

    async fn advance_cursors(&self, cursors: Vec<(PlanName, Timestamp)>) -> Result<()> {
        let mut t = self.lock();
        for (name, at) in cursors {
            if let Some(p) = t.plans.get_mut(&name) {
                p.cursor = Some(p.cursor.map_or(at, |c| c.max(at)));
            }
        }
        Ok(())
    }

    async fn delete_plans(&self, selector: &PlanSelector, now: Timestamp) -> Result<Vec<(PlanName, bool)>> {
        check_selector(selector)?;
        let mut t = self.lock();
        let names = selected(&t, selector, true)?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if let Some(p) = t.plans.get_mut(&n) {
                let changed = p.deleted_at.is_none();
                if changed {
                    p.deleted_at = Some(now);
                    p.active = false;
                    p.active_since = None;
                }
                t.sets.retain(|(plan, _), _| plan != &n);
                out.push((n, changed));
            }
        }
        Ok(out)
    }

    async fn pause_set(&self, plan: &PlanName, set_key: &str, version: u32, pause: SetPause) -> Result<bool> {
        let mut t = self.lock();
        if !t.plans.get(plan).is_some_and(|p| p.deleted_at.is_none() && p.version == version) {
            return Ok(false);
        }
        let key = (plan.clone(), set_key.to_owned());
        let state = t.sets.entry(key).or_insert_with(|| ParamSetState {
            plan: plan.clone(),
            set_key: set_key.to_owned(),
            version,
            paused: None,
            resumed_at: None,
        });
        if state.paused.is_some() {
            return Ok(false);
        }
        state.version = version;
        state.paused = Some(pause);
        Ok(true)
    }

    async fn resume_sets(
        &self,
        plan: &PlanName,
        set_keys: &[String],
        now: Timestamp,
    ) -> Result<Vec<(String, Option<SetPause>)>> {
        let mut t = self.lock();
        let Some(version) = t.plans.get(plan).filter(|p| p.deleted_at.is_none()).map(|p| p.version) else {
            return Err(unknown_plans(std::slice::from_ref(plan)));
        };
        let mut out = Vec::with_capacity(set_keys.len());
        for k in set_keys {
            let state = t.sets.entry((plan.clone(), k.clone())).or_insert_with(|| ParamSetState {
                plan: plan.clone(),
                set_key: k.clone(),
                version,
                paused: None,
                resumed_at: None,
            });
            state.version = version;
            state.resumed_at = Some(now);
            out.push((k.clone(), state.paused.take()));
        }
        Ok(out)
    }

    async fn list_set_states(&self, plan: Option<&PlanName>, paused_only: bool) -> Result<Vec<ParamSetState>> {
        Ok(self
            .lock()
            .sets
            .values()
            .filter(|s| plan.is_none_or(|p| &s.plan == p))
            .filter(|s| !paused_only || s.paused.is_some())
            .cloned()
            .collect())
    }

    async fn record_tick_failure(&self, failure: &TickFailure) -> Result<bool> {
        let mut t = self.lock();
        match t.failed_ticks.get_mut(&(failure.plan.clone(), failure.tick)) {
            Some(f) => {
                *f = TickFailure { failures: f.failures.saturating_add(1), first_at: f.first_at, ..failure.clone() };
                Ok(false)
            }
            None => {
                t.failed_ticks.insert((failure.plan.clone(), failure.tick), failure.clone());
                Ok(true)
            }
        }
    }

    async fn list_tick_failures(&self, plan: Option<&PlanName>, limit: usize) -> Result<Vec<TickFailure>> {
        let t = self.lock();
        let mut out: Vec<TickFailure> =
            t.failed_ticks.values().filter(|f| plan.is_none_or(|p| &f.plan == p)).cloned().collect();
        out.sort_by(|a, b| (b.tick, &b.plan).cmp(&(a.tick, &a.plan)));
        out.truncate(effective_limit(limit, 1000));
        Ok(out)
    }

    async fn claim_launches(&self, launches: Vec<LaunchRecord>) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(launches.len());
        for l in launches {
            let holder = l.holder.clone().unwrap_or_default();
            let won = self.records.try_claim(LAUNCH_CLAIM_SCOPE, &l.key, &holder).await?;
            if won {
                self.lock().launches.insert(l.key.clone(), l);
            }
            out.push(won);
        }
        Ok(out)
    }

    async fn update_launch(
        &self,
        launch: &LaunchRecord,
        expect_state: LaunchState,
        expect_holder: Option<&str>,
    ) -> Result<bool> {
        let mut t = self.lock();
        match t.launches.get_mut(&launch.key) {
            Some(stored) if stored.state == expect_state && stored.holder.as_deref() == expect_holder => {
                *stored = launch.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_launch(&self, key: &str) -> Result<Option<LaunchRecord>> {
        Ok(self.lock().launches.get(key).cloned())
    }

    async fn list_launches(&self, query: &LaunchQuery) -> Result<Vec<LaunchRecord>> {
        let limit = effective_limit(query.limit, 1000);
        let mut v: Vec<LaunchRecord> = self.lock().launches.values().filter(|l| matches(l, query)).cloned().collect();
        sort_launches(&mut v, query.oldest_first);
        v.truncate(limit);
        Ok(v)
    }

    async fn adopt_launches(
        &self,
        flows: &[FlowName],
        live: &[String],
        holder: &str,
        limit: usize,
    ) -> Result<Vec<LaunchRecord>> {
        let mut t = self.lock();
        let mut keys: Vec<(Timestamp, String)> = t
            .launches
            .values()
            .filter(|l| l.state == LaunchState::Pending && flows.contains(&l.flow))
            .filter(|l| l.holder.as_ref().is_none_or(|h| !live.contains(h)))
            .map(|l| (l.tick, l.key.clone()))
            .collect();
        keys.sort();
        keys.truncate(limit);
        let mut out = Vec::with_capacity(keys.len());
        for (_, k) in keys {
            if let Some(l) = t.launches.get_mut(&k) {
                l.holder = Some(holder.to_owned());
                out.push(l.clone());
            }
        }
        Ok(out)
    }

    async fn release_launches(&self, holder: &str) -> Result<u64> {
        let mut t = self.lock();
        let mut n = 0;
        for l in t.launches.values_mut() {
            if l.state == LaunchState::Pending && l.holder.as_deref() == Some(holder) {
                l.holder = None;
                n += 1;
            }
        }
        Ok(n)
    }

    async fn heartbeat(&self, scheduler: &SchedulerRecord) -> Result<()> {
        self.lock().schedulers.insert(scheduler.id.clone(), scheduler.clone());
        Ok(())
    }

    async fn list_schedulers(&self) -> Result<Vec<SchedulerRecord>> {
        Ok(self.lock().schedulers.values().cloned().collect())
    }

    async fn remove_scheduler(&self, id: &str) -> Result<()> {
        self.lock().schedulers.remove(id);
        Ok(())
    }
}

/// The names of the plans `selector` picks (live ones; by name, deleted ones too when
/// `names_include_deleted`), in name order; an error lists every name that matches none.
fn selected(t: &Tables, selector: &PlanSelector, names_include_deleted: bool) -> Result<Vec<PlanName>> {
    Ok(match selector {
        PlanSelector::Names(names) => {
            let missing: Vec<PlanName> = names
                .iter()
                .filter(|n| t.plans.get(*n).is_none_or(|p| p.deleted_at.is_some() && !names_include_deleted))
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(unknown_plans(&missing));
            }
            let mut n = names.clone();
            n.sort();
            n.dedup();
            n
        }
        PlanSelector::Labels(labels) => t
            .plans
            .values()
            .filter(|p| p.deleted_at.is_none() && has_labels(&p.labels, labels))
            .map(|p| p.name.clone())
            .collect(),
    })
}

/// The record of a plan registered afresh (new, or its name re-applied after a delete)
/// as `version`.
fn new_plan(d: &PlanDraft, version: u32, now: Timestamp) -> PlanRecord {
    PlanRecord {
        name: d.name.clone(),
        flow: d.flow.clone(),
        version,
        hash: d.hash.clone(),
        spec: d.spec.clone(),
        labels: d.labels.clone(),
        active: d.active,
        created_at: now,
        updated_at: now,
        active_since: d.active.then_some(now),
        cursor: None,
        deleted_at: None,
    }
}
