#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use braid_core::{ArtifactName, FlowName, RunId, RunStatus, StepName, TaskId};
use braid_runtime::{Ctx, Flow, RunOptions, RunSummary, StepBuilder, StepResult};
use braid_store::{Store, TaskQuery, TaskRecord};

/// A fresh fs store in a temp dir (kept alive by the guard).
pub fn fs_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path().join("store")).unwrap();
    (store, dir)
}

pub async fn run(flow: &Arc<Flow>, store: &Store, params: &[(&str, &str)]) -> RunSummary {
    let opts = RunOptions {
        params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        env_params: false,
        ..Default::default()
    };
    braid_runtime::run(flow.clone(), store.clone(), opts).await.unwrap()
}

pub fn assert_ok(s: &RunSummary) {
    assert_eq!(s.status, RunStatus::Succeeded, "run failed: {:?}", s.error);
}

pub async fn tasks(store: &Store, flow: &str, run: RunId, step: &str) -> Vec<TaskRecord> {
    let q = TaskQuery { step: Some(StepName::new(step).unwrap()), limit: 1_000_000, ..Default::default() };
    store.records.list_tasks(&FlowName::new(flow).unwrap(), run, &q).await.unwrap().items
}

pub async fn value<T: serde::de::DeserializeOwned>(
    store: &Store,
    flow: &str,
    run: RunId,
    task: TaskId,
    name: &str,
) -> T {
    let arts = store.records.visible_artifacts(&FlowName::new(flow).unwrap(), run, task).await.unwrap();
    let a = arts
        .iter()
        .find(|a| a.artifact.name == ArtifactName::new(name).unwrap())
        .unwrap_or_else(|| panic!("task {task} has no artifact {name}: {arts:?}"));
    braid_core::codec::decode(&store.artifact_bytes(&a.artifact).await.unwrap()).unwrap()
}

pub async fn only_task(store: &Store, flow: &str, run: RunId, step: &str) -> TaskRecord {
    let mut t = tasks(store, flow, run, step).await;
    assert_eq!(t.len(), 1, "step {step} has {} tasks", t.len());
    t.remove(0)
}

#[path = "../../../cli/examples/fanout/flow.rs"]
mod fanout_flow;

/// The `fanout` flow of the examples (its one definition, in cli's example), with a counter
/// of `work` executions.
pub fn fanout(work_runs: Arc<AtomicU64>) -> Arc<Flow> {
    Arc::new(fanout_flow::Fanout::new().count_work(work_runs).build().unwrap())
}

/// The end of most test flows: on to an `end` step that does nothing, then build.
pub trait ThenEnd {
    fn then_end(self) -> Arc<Flow>;
}

impl ThenEnd for StepBuilder {
    fn then_end(self) -> Arc<Flow> {
        Arc::new(self.next("end").step("end", |_| async { Ok(()) }).end().build().unwrap())
    }
}

/// Runs `flow` with `params` (as `--param` text) and asserts it succeeded.
pub async fn run_ok(flow: &Arc<Flow>, store: &Store, params: &[(&str, &str)]) -> RunSummary {
    let s = run(flow, store, params).await;
    assert_ok(&s);
    s
}

/// Artifact `name` as the only task of `step` in run `s` sees it.
pub async fn output<T: serde::de::DeserializeOwned>(store: &Store, s: &RunSummary, step: &str, name: &str) -> T {
    let task = only_task(store, s.flow.as_str(), s.run_id, step).await;
    value(store, s.flow.as_str(), s.run_id, task.key.task, name).await
}

/// A join's body: sets `into` to the list of every branch's `from`, in branch order.
pub async fn gather<T: serde::de::DeserializeOwned + serde::Serialize>(ctx: Ctx, from: &str, into: &str) -> StepResult {
    let mut all = Vec::new();
    for input in ctx.inputs()? {
        all.push(input.get::<T>(from).await?);
    }
    ctx.set(into, &all)?;
    Ok(())
}
