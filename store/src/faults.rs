//! Faults injected where a test cannot easily cause them (the `faults` feature, for
//! tests only): a [`Store`] whose blob puts, blob reads, record writes or plan writes
//! fail on chosen calls, as an I/O error, a failed fsync, a full disk, or a short read.
//!
//! ```
//! # use braid_store::{Store, faults::{Faults, Fault, Op}};
//! let faults = Faults::new();
//! // The 3rd record write (and only it) fails as if the disk were full.
//! faults.inject(Op::RecordWrite, 3, Fault::DiskFull);
//! let store = faults.wrap(Store::memory());
//! # let _ = store;
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use braid_core::{ArtifactName, FlowName, PlanName, RunId, StepName, Tag, TaskId, Timestamp};
use tokio::io::AsyncRead;

use crate::Store;
use crate::blob::{BlobInfo, BlobKey, BlobReader, BlobStore, verify};
use crate::error::{Error, Result};
use crate::plan::*;
use crate::record::*;

/// A kind of store call a fault can hit. Each kind counts its calls from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `BlobStore::put`, `put_many`, `put_stream`.
    BlobPut,
    /// `BlobStore::get`, `get_many`, `get_stream`.
    BlobRead,
    /// Every `RecordStore` write: flows, runs, tasks, tags, logs, claims, leases.
    RecordWrite,
    /// Every `PlanStore` write: registrations, activation, cursors, launches, heartbeats.
    PlanWrite,
    /// Every `RecordStore` read: flows, runs, tasks, summaries, artifacts, logs, claims, blob
    /// references. Counted so a test can bound how many queries a read makes.
    RecordRead,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The call fails with an I/O error.
    Io,
    /// The call fails as a failed fsync does (`EIO` from `fsync`).
    Fsync,
    /// The call fails with "no space left on device".
    DiskFull,
    /// A read returns fewer bytes than stored: the verification every read does reports
    /// the blob corrupted (only for [`Op::BlobRead`]; elsewhere it is [`Fault::Io`]).
    ShortRead,
}

/// Which calls a rule counts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Op(Op),
    /// One call of the traits by what it writes: "task records", "launch claims", ...
    Call(&'static str),
}

#[derive(Debug)]
struct Rule {
    target: Target,
    nth: u64,
    fault: Fault,
}

/// Which calls fail, and how many of each kind were made. Shared by the wrappers of one
/// store (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<Rule>>>,
    counts: Arc<[AtomicU64; 5]>,
    calls: Arc<Mutex<std::collections::HashMap<&'static str, u64>>>,
    fired: Arc<AtomicU64>,
}

impl Faults {
    /// No fault yet.
    pub fn new() -> Self {
        Faults::default()
    }

    /// The `nth` call (from 1) of kind `op` fails with `fault`.
    pub fn inject(&self, op: Op, nth: u64, fault: Fault) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).push(Rule { target: Target::Op(op), nth, fault });
    }

    /// The `nth` call (from 1) that writes or reads `what` fails with `fault`: one of
    /// "blob put", "blob read", "flow record", "run record", "run lease", "run tags",
    /// "task records", "log lines", "claim", "run deletion", "blob delete",
    /// "plan registration", "plan activation",
    /// "plan cursors", "launch claims", "launch record", "launch adoption",
    /// "launch release", "scheduler heartbeat", "scheduler record", "record read" (any
    /// `RecordStore` read).
    pub fn inject_call(&self, what: &'static str, nth: u64, fault: Fault) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).push(Rule { target: Target::Call(what), nth, fault });
    }

    /// Removes every fault not fired yet.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// How many calls of kind `op` were made so far.
    pub fn calls(&self, op: Op) -> u64 {
        self.counts[op as usize].load(Ordering::SeqCst)
    }

    /// How many faults fired so far.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::SeqCst)
    }

    /// `store` with its blobs, records and plans behind these faults.
    pub fn wrap(&self, store: Store) -> Store {
        let location = format!("faulty:{}", store.location());
        Store::from_parts(
            Arc::new(FaultyBlobs { inner: store.blobs.clone(), faults: self.clone() }),
            Arc::new(FaultyRecords { inner: store.records.clone(), faults: self.clone() }),
            Arc::new(FaultyPlans { inner: store.plans.clone(), faults: self.clone() }),
            location,
            store.blobs_location().map(str::to_owned),
        )
    }

    /// Counts a call; the fault to apply, if a rule names this call.
    fn hit(&self, op: Op, what: &'static str) -> Option<Fault> {
        let n = self.counts[op as usize].fetch_add(1, Ordering::SeqCst) + 1;
        let m = {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            let c = calls.entry(what).or_default();
            *c += 1;
            *c
        };
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let i = rules.iter().position(|r| match r.target {
            Target::Op(o) => o == op && r.nth == n,
            Target::Call(w) => w == what && r.nth == m,
        })?;
        self.fired.fetch_add(1, Ordering::SeqCst);
        Some(rules.remove(i).fault)
    }

    /// Fails a call that `hit` says must fail (a short read is an I/O error here).
    fn check(&self, op: Op, what: &'static str) -> Result<()> {
        match self.hit(op, what) {
            None => Ok(()),
            Some(f) => Err(error(f, op, what)),
        }
    }
}

fn error(fault: Fault, op: Op, what: &str) -> Error {
    let path = format!("(injected fault, {op:?} call)");
    match fault {
        Fault::Io | Fault::ShortRead => Error::Io {
            action: "injected I/O error in",
            path: format!("{what} {path}"),
            source: std::io::Error::other("injected I/O error"),
        },
        Fault::Fsync => Error::Io {
            action: "fsync",
            path: format!("{what} {path}"),
            source: std::io::Error::other("injected fsync failure (EIO)"),
        },
        Fault::DiskFull => Error::Io {
            action: "write",
            path: format!("{what} {path}"),
            source: std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device (injected)"),
        },
    }
}

#[derive(Debug)]
struct FaultyBlobs {
    inner: Arc<dyn BlobStore>,
    faults: Faults,
}

impl FaultyBlobs {
    /// A read through the fault: a short read hands the verification fewer bytes.
    fn read(&self, key: &BlobKey, bytes: Vec<u8>) -> Result<Vec<u8>> {
        match self.faults.hit(Op::BlobRead, "blob read") {
            None => Ok(bytes),
            Some(Fault::ShortRead) => {
                let short = &bytes[..bytes.len() / 2];
                verify(key, short, "an injected short read")?;
                Ok(short.to_vec())
            }
            Some(f) => Err(error(f, Op::BlobRead, &format!("blob {key}"))),
        }
    }
}

#[async_trait]
impl BlobStore for FaultyBlobs {
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobKey> {
        self.faults.check(Op::BlobPut, "blob put")?;
        self.inner.put(bytes).await
    }
    async fn put_many(&self, blobs: Vec<Vec<u8>>) -> Result<Vec<BlobKey>> {
        self.faults.check(Op::BlobPut, "blob put")?;
        self.inner.put_many(blobs).await
    }
    async fn put_stream(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<(BlobKey, u64)> {
        self.faults.check(Op::BlobPut, "blob put")?;
        self.inner.put_stream(reader).await
    }
    async fn get(&self, key: &BlobKey) -> Result<Vec<u8>> {
        let bytes = self.inner.get(key).await?;
        self.read(key, bytes)
    }
    async fn get_stream(&self, key: &BlobKey) -> Result<BlobReader> {
        match self.faults.hit(Op::BlobRead, "blob read") {
            None => self.inner.get_stream(key).await,
            Some(f) => Err(error(f, Op::BlobRead, &format!("blob {key}"))),
        }
    }
    async fn size(&self, key: &BlobKey) -> Result<Option<u64>> {
        self.inner.size(key).await
    }
    async fn list(&self, after: Option<String>, limit: usize) -> Result<Page<BlobInfo>> {
        self.inner.list(after, limit).await
    }
    async fn delete_if_older(&self, keys: &[BlobKey], put_before: Timestamp) -> Result<Vec<Option<u64>>> {
        self.faults.check(Op::BlobPut, "blob delete")?;
        self.inner.delete_if_older(keys, put_before).await
    }
    async fn get_many(&self, keys: &[BlobKey]) -> Result<Vec<Vec<u8>>> {
        let all = self.inner.get_many(keys).await?;
        keys.iter().zip(all).map(|(k, b)| self.read(k, b)).collect()
    }
}

#[derive(Debug)]
struct FaultyRecords {
    inner: Arc<dyn RecordStore>,
    faults: Faults,
}

#[async_trait]
impl RecordStore for FaultyRecords {
    async fn put_flow(&self, flow: FlowRecord) -> Result<()> {
        self.faults.check(Op::RecordWrite, "flow record")?;
        self.inner.put_flow(flow).await
    }
    async fn get_flow(&self, name: &FlowName) -> Result<Option<FlowRecord>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.get_flow(name).await
    }
    async fn list_flows(&self) -> Result<Vec<FlowRecord>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.list_flows().await
    }
    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        self.faults.check(Op::RecordWrite, "run record")?;
        self.inner.create_run(run).await
    }
    async fn update_run(&self, run: &RunRecord) -> Result<RunRecord> {
        self.faults.check(Op::RecordWrite, "run record")?;
        self.inner.update_run(run).await
    }
    async fn get_run(&self, flow: &FlowName, id: RunId) -> Result<Option<RunRecord>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.get_run(flow, id).await
    }
    async fn list_runs(&self, flow: &FlowName, query: &RunQuery) -> Result<Page<RunRecord>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.list_runs(flow, query).await
    }
    async fn renew_run_lease(&self, flow: &FlowName, id: RunId, lease: &RunLease) -> Result<bool> {
        self.faults.check(Op::RecordWrite, "run lease")?;
        self.inner.renew_run_lease(flow, id, lease).await
    }
    async fn update_tags(&self, flow: &FlowName, id: RunId, add: &[Tag], remove: &[Tag]) -> Result<RunRecord> {
        self.faults.check(Op::RecordWrite, "run tags")?;
        self.inner.update_tags(flow, id, add, remove).await
    }
    async fn write_tasks(&self, writes: Vec<TaskWrite>) -> Result<Vec<WriteOutcome>> {
        self.faults.check(Op::RecordWrite, "task records")?;
        self.inner.write_tasks(writes).await
    }
    async fn get_task(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Option<TaskRecord>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.get_task(flow, run, task).await
    }
    async fn list_tasks(&self, flow: &FlowName, run: RunId, query: &TaskQuery) -> Result<Page<TaskRecord>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.list_tasks(flow, run, query).await
    }
    async fn tasks_by_index(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        index: u64,
    ) -> Result<Vec<TaskRecord>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.tasks_by_index(flow, run, step, index).await
    }
    async fn step_summaries(&self, flow: &FlowName, run: RunId) -> Result<Vec<StepSummary>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.step_summaries(flow, run).await
    }
    async fn list_attempts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<AttemptRecord>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.list_attempts(flow, run, task).await
    }
    async fn task_artifacts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<ArtifactRecord>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.task_artifacts(flow, run, task).await
    }
    async fn artifacts_of_tasks(
        &self,
        flow: &FlowName,
        run: RunId,
        first: TaskId,
        last: TaskId,
    ) -> Result<Vec<(TaskId, ArtifactRecord)>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.artifacts_of_tasks(flow, run, first, last).await
    }
    async fn visible_artifacts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<VisibleArtifact>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.visible_artifacts(flow, run, task).await
    }
    async fn step_artifacts(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        name: &ArtifactName,
    ) -> Result<Vec<StepArtifact>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.step_artifacts(flow, run, step, name).await
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
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.step_artifacts_page(flow, run, step, name, after, limit).await
    }
    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        self.faults.check(Op::RecordWrite, "log lines")?;
        self.inner.append_logs(lines).await
    }
    async fn read_logs(
        &self,
        flow: &FlowName,
        run: RunId,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.read_logs(flow, run, task, after, limit).await
    }
    async fn try_claim(&self, scope: &str, key: &str, holder: &str) -> Result<bool> {
        self.faults.check(Op::RecordWrite, "claim")?;
        self.inner.try_claim(scope, key, holder).await
    }
    async fn claim_holder(&self, scope: &str, key: &str) -> Result<Option<String>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.claim_holder(scope, key).await
    }
    async fn delete_run(&self, flow: &FlowName, id: RunId, revision: u64) -> Result<RunDeletion> {
        self.faults.check(Op::RecordWrite, "run deletion")?;
        self.inner.delete_run(flow, id, revision).await
    }
    async fn artifact_blob_refs(&self, after: Option<String>, limit: usize) -> Result<Page<BlobRef>> {
        self.faults.check(Op::RecordRead, "record read")?;
        self.inner.artifact_blob_refs(after, limit).await
    }
}

#[derive(Debug)]
struct FaultyPlans {
    inner: Arc<dyn PlanStore>,
    faults: Faults,
}

#[async_trait]
impl PlanStore for FaultyPlans {
    async fn register_plans(&self, drafts: Vec<PlanDraft>, now: Timestamp) -> Result<Vec<Registration>> {
        self.faults.check(Op::PlanWrite, "plan registration")?;
        self.inner.register_plans(drafts, now).await
    }
    async fn get_plan(&self, name: &PlanName) -> Result<Option<PlanRecord>> {
        self.inner.get_plan(name).await
    }
    async fn get_plan_version(&self, name: &PlanName, version: u32) -> Result<Option<PlanVersion>> {
        self.inner.get_plan_version(name, version).await
    }
    async fn list_plan_versions(&self, name: &PlanName) -> Result<Vec<PlanVersion>> {
        self.inner.list_plan_versions(name).await
    }
    async fn list_plans(&self, query: &PlanQuery) -> Result<Vec<PlanRecord>> {
        self.inner.list_plans(query).await
    }
    async fn set_plans_active(
        &self,
        selector: &PlanSelector,
        active: bool,
        now: Timestamp,
    ) -> Result<Vec<(PlanName, bool)>> {
        self.faults.check(Op::PlanWrite, "plan activation")?;
        self.inner.set_plans_active(selector, active, now).await
    }
    async fn advance_cursors(&self, cursors: Vec<(PlanName, Timestamp)>) -> Result<()> {
        self.faults.check(Op::PlanWrite, "plan cursors")?;
        self.inner.advance_cursors(cursors).await
    }
    async fn delete_plans(&self, selector: &PlanSelector, now: Timestamp) -> Result<Vec<(PlanName, bool)>> {
        self.faults.check(Op::PlanWrite, "plan deletion")?;
        self.inner.delete_plans(selector, now).await
    }
    async fn pause_set(&self, plan: &PlanName, set_key: &str, version: u32, pause: SetPause) -> Result<bool> {
        self.faults.check(Op::PlanWrite, "parameter set pause")?;
        self.inner.pause_set(plan, set_key, version, pause).await
    }
    async fn resume_sets(
        &self,
        plan: &PlanName,
        set_keys: &[String],
        now: Timestamp,
    ) -> Result<Vec<(String, Option<SetPause>)>> {
        self.faults.check(Op::PlanWrite, "parameter set resume")?;
        self.inner.resume_sets(plan, set_keys, now).await
    }
    async fn list_set_states(&self, plan: Option<&PlanName>, paused_only: bool) -> Result<Vec<ParamSetState>> {
        self.inner.list_set_states(plan, paused_only).await
    }
    async fn record_tick_failure(&self, failure: &TickFailure) -> Result<bool> {
        self.faults.check(Op::PlanWrite, "failed tick")?;
        self.inner.record_tick_failure(failure).await
    }
    async fn list_tick_failures(&self, plan: Option<&PlanName>, limit: usize) -> Result<Vec<TickFailure>> {
        self.inner.list_tick_failures(plan, limit).await
    }
    async fn claim_launches(&self, launches: Vec<LaunchRecord>) -> Result<Vec<bool>> {
        self.faults.check(Op::PlanWrite, "launch claims")?;
        self.inner.claim_launches(launches).await
    }
    async fn update_launch(
        &self,
        launch: &LaunchRecord,
        expect_state: LaunchState,
        expect_holder: Option<&str>,
    ) -> Result<bool> {
        self.faults.check(Op::PlanWrite, "launch record")?;
        self.inner.update_launch(launch, expect_state, expect_holder).await
    }
    async fn get_launch(&self, key: &str) -> Result<Option<LaunchRecord>> {
        self.inner.get_launch(key).await
    }
    async fn list_launches(&self, query: &LaunchQuery) -> Result<Vec<LaunchRecord>> {
        self.inner.list_launches(query).await
    }
    async fn adopt_launches(
        &self,
        flows: &[FlowName],
        live: &[String],
        holder: &str,
        limit: usize,
    ) -> Result<Vec<LaunchRecord>> {
        self.faults.check(Op::PlanWrite, "launch adoption")?;
        self.inner.adopt_launches(flows, live, holder, limit).await
    }
    async fn release_launches(&self, holder: &str) -> Result<u64> {
        self.faults.check(Op::PlanWrite, "launch release")?;
        self.inner.release_launches(holder).await
    }
    async fn heartbeat(&self, scheduler: &SchedulerRecord) -> Result<()> {
        self.faults.check(Op::PlanWrite, "scheduler heartbeat")?;
        self.inner.heartbeat(scheduler).await
    }
    async fn list_schedulers(&self) -> Result<Vec<SchedulerRecord>> {
        self.inner.list_schedulers().await
    }
    async fn remove_scheduler(&self, id: &str) -> Result<()> {
        self.faults.check(Op::PlanWrite, "scheduler record")?;
        self.inner.remove_scheduler(id).await
    }
}
