//! The bench the launch-plan tests share: a store (memory, or fs in a temp dir), the flows
//! the scheduler knows and an injected clock; registering plans, passing at a time, and
//! reading back launches and runs.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use braid_core::{FlowName, PlanName, Timestamp};
use braid_runtime::Flow;
use braid_runtime::plan::{
    Clock, LaunchEnv, LaunchPlan, ManualClock, PassReport, Scheduler, SchedulerOptions, register_plans_at,
};
use braid_store::{LaunchQuery, LaunchRecord, Registration, RunQuery, Store};

/// An RFC 3339 time.
pub fn t(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

/// A store, the flows, and a clock that only moves when told.
pub struct Env {
    pub store: Store,
    pub flows: Vec<Arc<Flow>>,
    pub clock: Arc<ManualClock>,
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    /// On an in-memory store, the clock at `start`.
    pub fn memory(flow: Arc<Flow>, start: &str) -> Env {
        Env { store: Store::memory(), flows: vec![flow], clock: Arc::new(ManualClock::new(t(start))), _dir: None }
    }

    /// On an fs store in a temp dir, the clock at `start`.
    pub fn fs(flow: Arc<Flow>, start: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_fs(dir.path().join("store")).unwrap();
        Env { store, flows: vec![flow], clock: Arc::new(ManualClock::new(t(start))), _dir: Some(dir) }
    }

    /// On a fresh database of the throwaway PostgreSQL server with blobs in a fresh bucket
    /// of the throwaway S3 server (`braid_store::test_servers`); `None` when this machine
    /// has neither (a `skipped:` line says so).
    pub async fn postgres(flow: Arc<Flow>, start: &str) -> Option<Env> {
        let store = postgres_store(None).await?;
        Some(Env { store, flows: vec![flow], clock: Arc::new(ManualClock::new(t(start))), _dir: None })
    }

    /// [`Env::fs`] when `fs`, else [`Env::memory`].
    pub fn new(flow: Arc<Flow>, start: &str, fs: bool) -> Env {
        if fs { Env::fs(flow, start) } else { Env::memory(flow, start) }
    }

    /// What a scheduler launches with: this store, these flows, this clock.
    pub fn launch_env(&self) -> LaunchEnv {
        LaunchEnv::new(self.store.clone(), self.flows.clone()).with_clock(self.clock.clone())
    }

    /// A scheduler with the default options.
    pub fn scheduler(&self) -> Scheduler {
        Scheduler::new(&self.launch_env(), SchedulerOptions::default())
    }

    /// The clock's time, as the store keeps it.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_jiff(self.clock.now())
    }

    /// Registers `plans` at the clock's time; what became of each.
    pub async fn register(&self, plans: Vec<LaunchPlan>) -> Vec<Registration> {
        register_plans_at(&self.store, &self.flows, plans, "test", self.now())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.outcome)
            .collect()
    }

    /// Every launch of `plan`, oldest first.
    pub async fn launches(&self, plan: &str) -> Vec<LaunchRecord> {
        let q = LaunchQuery {
            plan: Some(PlanName::new(plan).unwrap()),
            oldest_first: true,
            limit: 10_000,
            ..Default::default()
        };
        self.store.plans.list_launches(&q).await.unwrap()
    }

    /// The launches of `plan` for the parameter set `site_id = site`.
    pub async fn set_launches(&self, plan: &str, site: &str) -> Vec<LaunchRecord> {
        let key = format!("{{\"site_id\":\"{site}\"}}");
        self.launches(plan).await.into_iter().filter(|l| l.set_key == key).collect()
    }

    /// Every run of `data_sync`.
    pub async fn runs(&self) -> Vec<braid_store::RunRecord> {
        let flow = FlowName::new("data_sync").unwrap();
        self.store.records.list_runs(&flow, &RunQuery { limit: 10_000, ..Default::default() }).await.unwrap().items
    }

    /// One pass at `at`, then waits for the runs it started.
    pub async fn pass_at(&self, s: &Scheduler, at: &str) -> PassReport {
        self.clock.set(t(at));
        let r = s.pass().await.unwrap();
        s.drain().await.unwrap();
        r
    }
}

/// Waits (up to 10 s) until `cond` holds.
pub async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A PostgreSQL + S3 store on the throwaway servers: a fresh database and bucket, or
/// another connection to `same` (`(database, bucket)`), as a second process would open.
pub async fn postgres_store(same: Option<(&str, &str)>) -> Option<Store> {
    use braid_store::test_servers;
    let (pg, s3) = (test_servers::postgres()?, test_servers::s3()?);
    let (db, bucket) = match same {
        Some((db, bucket)) => (db.to_owned(), bucket.to_owned()),
        None => (pg.fresh_database(), s3.fresh_bucket()),
    };
    Some(braid_store::conformance::pg_s3_store(&db, &bucket).await)
}
