//! Prometheus metrics of the runs in this process: tasks by status, durations, progress
//! of running tasks (percent, and units done/total), lease expirations, retries,
//! timeout predictions and stalls.
//!
//! Label sets are bounded: `flow` and `step` everywhere, plus `task` (and `unit`) only on
//! the progress gauges, whose series are removed when the task ends, so finished tasks
//! leave nothing behind. The flow binary serves [`Metrics::encode`] on `--metrics-addr`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    flow: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    flow: String,
    step: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    flow: String,
    step: String,
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabels {
    flow: String,
    step: String,
    task: String,
    unit: String,
    /// `done` or `total`.
    of: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

/// The metrics registry of a process. Share one across runs with `Arc`.
pub struct Metrics {
    registry: Registry,
    tasks: Family<StatusLabels, Gauge>,
    durations: Family<StepLabels, Histogram, fn() -> Histogram>,
    progress: Family<TaskLabels, Gauge<f64, AtomicU64>>,
    progress_units: Family<UnitLabels, Gauge>,
    /// The unit each running task last reported in, so its series go when it ends.
    units_in_use: Mutex<HashMap<TaskLabels, String>>,
    lease_expirations: Family<StepLabels, Counter>,
    retries: Family<StepLabels, Counter>,
    timeout_predictions: Family<StepLabels, Counter>,
    stalls: Family<StepLabels, Counter>,
    worker: WorkerCounters,
}

/// What a worker process counts (`worker --metrics-addr`).
#[derive(Default)]
struct WorkerCounters {
    claimed: Counter,
    held: Gauge,
    completed: Counter,
    stale_results: Counter,
    stale_writes: Counter,
    claims_lost: Counter,
    handed_back: Counter,
    runs_adopted: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every braid metric at zero (`braid_` prefix).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("braid");
        let tasks = Family::<StatusLabels, Gauge>::default();
        registry.register("tasks", "Tasks by status, per flow and step", tasks.clone());
        let durations = Family::<StepLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_histogram);
        registry.register("task_duration_seconds", "Duration of finished task attempts", durations.clone());
        let progress = Family::<TaskLabels, Gauge<f64, AtomicU64>>::default();
        registry.register("task_progress_percent", "Last reported progress of running tasks", progress.clone());
        let progress_units = Family::<UnitLabels, Gauge>::default();
        registry.register(
            "task_progress_units",
            "Units done (of=\"done\") and in all (of=\"total\") last reported by running tasks",
            progress_units.clone(),
        );
        let lease_expirations = Family::<StepLabels, Counter>::default();
        registry.register(
            "lease_expirations",
            "Task attempts declared lost when their lease expired",
            lease_expirations.clone(),
        );
        let retries = Family::<StepLabels, Counter>::default();
        registry.register("task_retries", "Task attempts started after a failed or lost one", retries.clone());
        let timeout_predictions = Family::<StepLabels, Counter>::default();
        registry.register(
            "timeout_predictions",
            "Attempts predicted to exceed their timeout",
            timeout_predictions.clone(),
        );
        let stalls = Family::<StepLabels, Counter>::default();
        registry.register("task_stalls", "Attempts whose progress stopped moving for the stall time", stalls.clone());
        let worker = WorkerCounters::default();
        registry.register("worker_claims", "Task attempts this worker claimed from the queue", worker.claimed.clone());
        registry.register("worker_tasks_held", "Task attempts this worker holds now", worker.held.clone());
        registry.register(
            "worker_completed",
            "Task attempts this worker ran and completed its claim of",
            worker.completed.clone(),
        );
        registry.register(
            "worker_stale_results",
            "Results refused because the claim had been taken over (its lease expired first)",
            worker.stale_results.clone(),
        );
        registry.register(
            "worker_stale_writes",
            "Record writes refused by their fencing check (a lost or taken-over attempt writing late)",
            worker.stale_writes.clone(),
        );
        registry.register(
            "worker_claims_lost",
            "Claims a heartbeat found taken over or expired (the attempt was stopped)",
            worker.claims_lost.clone(),
        );
        registry.register(
            "worker_handed_back",
            "Claims handed back to the queue unfinished (a worker draining)",
            worker.handed_back.clone(),
        );
        registry.register(
            "worker_runs_adopted",
            "Runs whose driving process died and that this worker took over",
            worker.runs_adopted.clone(),
        );
        Metrics {
            worker,
            registry,
            tasks,
            durations,
            progress,
            progress_units,
            units_in_use: Mutex::new(HashMap::new()),
            lease_expirations,
            retries,
            timeout_predictions,
            stalls,
        }
    }

    pub(crate) fn worker_claimed(&self, n: u64) {
        self.worker.claimed.inc_by(n);
    }

    pub(crate) fn worker_held(&self, n: usize) {
        self.worker.held.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn worker_completed(&self) {
        self.worker.completed.inc();
    }

    pub(crate) fn worker_stale_result(&self) {
        self.worker.stale_results.inc();
    }

    /// Sets the count of fenced writes to `total` (the worker's writer counts them).
    pub(crate) fn worker_stale_writes(&self, total: u64) {
        let now = self.worker.stale_writes.get();
        if total > now {
            self.worker.stale_writes.inc_by(total - now);
        }
    }

    pub(crate) fn worker_claims_lost(&self, n: u64) {
        self.worker.claims_lost.inc_by(n);
    }

    pub(crate) fn worker_handed_back(&self) {
        self.worker.handed_back.inc();
    }

    pub(crate) fn worker_run_adopted(&self) {
        self.worker.runs_adopted.inc();
    }

    /// The metrics in the OpenMetrics text format (which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn step(flow: &str, step: &str) -> StepLabels {
        StepLabels { flow: flow.to_owned(), step: step.to_owned() }
    }

    pub(crate) fn attempt_started(&self, flow: &str, step: &str, retry: bool) {
        self.tasks
            .get_or_create(&StatusLabels { flow: flow.into(), step: step.into(), status: "running".into() })
            .inc();
        if retry {
            self.retries.get_or_create(&Self::step(flow, step)).inc();
        }
    }

    pub(crate) fn attempt_ended(&self, flow: &str, step: &str, task: &str, status: &str, seconds: f64, last: bool) {
        self.tasks
            .get_or_create(&StatusLabels { flow: flow.into(), step: step.into(), status: "running".into() })
            .dec();
        if last {
            self.tasks
                .get_or_create(&StatusLabels { flow: flow.into(), step: step.into(), status: status.into() })
                .inc();
        }
        self.durations.get_or_create(&Self::step(flow, step)).observe(seconds);
        let labels = TaskLabels { flow: flow.into(), step: step.into(), task: task.into() };
        self.progress.remove(&labels);
        let unit = self.units_in_use.lock().unwrap_or_else(|e| e.into_inner()).remove(&labels);
        if let Some(unit) = unit {
            self.remove_units(&labels, unit);
        }
    }

    fn unit_labels(t: &TaskLabels, unit: String, of: &'static str) -> UnitLabels {
        UnitLabels { flow: t.flow.clone(), step: t.step.clone(), task: t.task.clone(), unit, of }
    }

    fn remove_units(&self, t: &TaskLabels, unit: String) {
        self.progress_units.remove(&Self::unit_labels(t, unit.clone(), "done"));
        self.progress_units.remove(&Self::unit_labels(t, unit, "total"));
    }

    pub(crate) fn progress_units(&self, flow: &str, step: &str, task: &str, unit: &str, done: u64, total: u64) {
        let labels = TaskLabels { flow: flow.into(), step: step.into(), task: task.into() };
        let before =
            self.units_in_use.lock().unwrap_or_else(|e| e.into_inner()).insert(labels.clone(), unit.to_owned());
        if let Some(old) = before.filter(|old| old != unit) {
            self.remove_units(&labels, old);
        }
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.progress_units.get_or_create(&Self::unit_labels(&labels, unit.to_owned(), "done")).set(gauge(done));
        self.progress_units.get_or_create(&Self::unit_labels(&labels, unit.to_owned(), "total")).set(gauge(total));
    }

    pub(crate) fn progress(&self, flow: &str, step: &str, task: &str, percent: f32) {
        self.progress
            .get_or_create(&TaskLabels { flow: flow.into(), step: step.into(), task: task.into() })
            .set(f64::from(percent));
    }

    pub(crate) fn lease_expired(&self, flow: &str, step: &str) {
        self.lease_expirations.get_or_create(&Self::step(flow, step)).inc();
    }

    pub(crate) fn timeout_predicted(&self, flow: &str, step: &str) {
        self.timeout_predictions.get_or_create(&Self::step(flow, step)).inc();
    }

    pub(crate) fn stalled(&self, flow: &str, step: &str) {
        self.stalls.get_or_create(&Self::step(flow, step)).inc();
    }
}
