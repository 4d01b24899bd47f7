//! Prometheus metrics of launch plans, per plan and parameter set: launches by outcome,
//! runs by final status, consecutive failures, the last success, the next tick, launch
//! lag and failures to produce a tick's parameter sets.
//!
//! Labels are bounded by plans × parameter sets: `plan` everywhere, plus `set` (the
//! set's values rendered by [`set_label`], e.g. `site_id=site2`) on the per-set series.
//! A scheduler given a [`PlanMetrics`] ([`LaunchEnv::with_plan_metrics`]) updates it as
//! launches happen; the last success and the consecutive failures of every set are read
//! back from the store's finished launches on the scheduler's first pass, so they
//! survive a restart. [`PlanMetrics::encode_with`] serves them in one document with the
//! task metrics of the runs the scheduler starts.
//!
//! [`LaunchEnv::with_plan_metrics`]: super::LaunchEnv::with_plan_metrics

use std::sync::atomic::AtomicU64;

use braid_core::{RunStatus, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanLabels {
    plan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SetLabels {
    plan: String,
    set: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    plan: String,
    set: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    plan: String,
    set: String,
    status: String,
}

/// What became of a claimed launch, as `braid_plan_launches_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LaunchOutcomeKind {
    /// Its run started.
    Started,
    /// Not started on purpose: an overlap policy (`skip`, a `buffer_one` tick dropped
    /// because one was already waiting, a `cancel_other` tick superseded), a paused set,
    /// a deactivated or deleted plan, or a tick left out by the catch-up policy.
    Skipped,
    /// Its run could not be created.
    FailedToStart,
}

impl LaunchOutcomeKind {
    /// The label value: `started`, `skipped` or `failed_to_start`.
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchOutcomeKind::Started => "started",
            LaunchOutcomeKind::Skipped => "skipped",
            LaunchOutcomeKind::FailedToStart => "failed_to_start",
        }
    }
}

/// Buckets of the launch lag, 10 ms to about 3 hours.
fn lag_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 11))
}

/// The `set` label of a parameter set, from its canonical JSON key: `k=v` pairs sorted
/// by name and joined with `,` (string values bare, others as JSON), e.g.
/// `{"site_id":"site2"}` → `site_id=site2`, `{"full":true,"site_id":"a"}` →
/// `full=true,site_id=a`; a plan without a matrix has the set `""`. A key that is not
/// a JSON object is used as it is.
pub fn set_label(set_key: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(set_key) else {
        return set_key.to_owned();
    };
    let mut pairs: Vec<(String, String)> = map
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    pairs.sort();
    pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn seconds(t: Timestamp) -> f64 {
    t.as_micros() as f64 / 1e6
}

/// The launch-plan metrics of a scheduler process (`braid_plan_` prefix). Share one with
/// `Arc`; see the module docs.
pub struct PlanMetrics {
    registry: Registry,
    launches: Family<OutcomeLabels, Counter>,
    runs: Family<StatusLabels, Counter>,
    consecutive_failures: Family<SetLabels, Gauge>,
    last_success: Family<SetLabels, Gauge<f64, AtomicU64>>,
    next_tick: Family<PlanLabels, Gauge<f64, AtomicU64>>,
    lag: Family<PlanLabels, Histogram, fn() -> Histogram>,
    matrix_failures: Family<PlanLabels, Counter>,
}

impl std::fmt::Debug for PlanMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlanMetrics")
    }
}

impl Default for PlanMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PlanMetrics {
    /// A registry with every plan metric registered and no series yet.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("braid_plan");
        let launches = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "launches",
            "Claimed launches by outcome (started, skipped, failed_to_start), per plan and parameter set",
            launches.clone(),
        );
        let runs = Family::<StatusLabels, Counter>::default();
        registry.register("runs", "Launched runs by final status, per plan and parameter set", runs.clone());
        let consecutive_failures = Family::<SetLabels, Gauge>::default();
        registry.register(
            "consecutive_failures",
            "Failed runs (or failed starts) of the parameter set since its last success",
            consecutive_failures.clone(),
        );
        let last_success = Family::<SetLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time the last succeeded run of the parameter set ended",
            last_success.clone(),
        );
        let next_tick = Family::<PlanLabels, Gauge<f64, AtomicU64>>::default();
        registry.register("next_tick_timestamp_seconds", "Unix time of the plan's next tick", next_tick.clone());
        let lag = Family::<PlanLabels, Histogram, fn() -> Histogram>::new_with_constructor(lag_histogram);
        registry.register("launch_lag_seconds", "Time from a scheduled tick to its run's start", lag.clone());
        let matrix_failures = Family::<PlanLabels, Counter>::default();
        registry.register(
            "matrix_failures",
            "Ticks whose parameter sets could not be produced (matrix_fn or matrix_command)",
            matrix_failures.clone(),
        );
        PlanMetrics { registry, launches, runs, consecutive_failures, last_success, next_tick, lag, matrix_failures }
    }

    /// The plan metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The task metrics of `tasks` followed by these, as one OpenMetrics document (one
    /// `# EOF` at its end): what `scheduler --metrics-addr` serves.
    pub fn encode_with(&self, tasks: &crate::Metrics) -> String {
        let mut out = tasks.encode();
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        out.push_str(&self.encode());
        out
    }

    fn set(plan: &str, set_key: &str) -> SetLabels {
        SetLabels { plan: plan.to_owned(), set: set_label(set_key) }
    }

    /// Counts a launch of `plan`'s set `set_key` by its outcome.
    pub(crate) fn launch(&self, plan: &str, set_key: &str, outcome: LaunchOutcomeKind) {
        let l = OutcomeLabels { plan: plan.to_owned(), set: set_label(set_key), outcome: outcome.as_str().to_owned() };
        self.launches.get_or_create(&l).inc();
        if outcome == LaunchOutcomeKind::FailedToStart {
            self.consecutive_failures.get_or_create(&Self::set(plan, set_key)).inc();
        }
    }

    /// Counts `n` skipped launches of each of `sets` (ticks left out by catch-up).
    pub(crate) fn skipped(&self, plan: &str, sets: impl Iterator<Item = String>, n: u64) {
        for key in sets {
            let l = OutcomeLabels { plan: plan.to_owned(), set: set_label(&key), outcome: "skipped".to_owned() };
            self.launches.get_or_create(&l).inc_by(n);
        }
    }

    /// Observes the lag of a scheduled launch that started at `started`, ticked at `tick`.
    pub(crate) fn lag(&self, plan: &str, tick: Timestamp, started: Timestamp) {
        let lag = (seconds(started) - seconds(tick)).max(0.0);
        self.lag.get_or_create(&PlanLabels { plan: plan.to_owned() }).observe(lag);
    }

    /// Counts a run that ended with `status` at `at`, once, when the scheduler saw it end.
    pub(crate) fn run_ended(&self, plan: &str, set_key: &str, status: RunStatus, at: Timestamp) {
        let set = set_label(set_key);
        let l = StatusLabels { plan: plan.to_owned(), set: set.clone(), status: status.as_str().to_owned() };
        self.runs.get_or_create(&l).inc();
        let s = SetLabels { plan: plan.to_owned(), set };
        match status {
            RunStatus::Succeeded => {
                self.consecutive_failures.get_or_create(&s).set(0);
                self.last_success.get_or_create(&s).set(seconds(at));
            }
            RunStatus::Failed => {
                self.consecutive_failures.get_or_create(&s).inc();
            }
            _ => {}
        }
    }

    /// Sets what the store says about a set (a scheduler's first pass): its consecutive
    /// failures and, if it ever succeeded, when its last success ended.
    pub(crate) fn restore(&self, plan: &str, set_key: &str, failures: i64, last_success: Option<Timestamp>) {
        let s = Self::set(plan, set_key);
        self.consecutive_failures.get_or_create(&s).set(failures);
        if let Some(t) = last_success {
            self.last_success.get_or_create(&s).set(seconds(t));
        }
    }

    /// Sets the plan's next tick (`None`: it has none, the series is removed).
    pub(crate) fn next_tick(&self, plan: &str, next: Option<jiff::Timestamp>) {
        let l = PlanLabels { plan: plan.to_owned() };
        match next {
            Some(t) => {
                self.next_tick.get_or_create(&l).set(t.as_microsecond() as f64 / 1e6);
            }
            None => {
                self.next_tick.remove(&l);
            }
        }
    }

    /// Counts a tick whose parameter sets could not be produced.
    pub fn matrix_failed(&self, plan: &str) {
        self.matrix_failures.get_or_create(&PlanLabels { plan: plan.to_owned() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn set_label_is_sorted_key_value_pairs_with_bare_strings() {
        assert_eq!(set_label(r#"{"site_id":"site2"}"#), "site_id=site2");
        assert_eq!(set_label(r#"{"site_id":"a","full":true,"n":3}"#), "full=true,n=3,site_id=a");
        assert_eq!(set_label("{}"), "");
        assert_eq!(set_label("not json"), "not json");
    }

    #[test]
    fn launches_are_counted_by_outcome_per_set() {
        let m = PlanMetrics::new();
        m.launch("p", r#"{"site_id":"s1"}"#, LaunchOutcomeKind::Started);
        m.launch("p", r#"{"site_id":"s1"}"#, LaunchOutcomeKind::Started);
        m.launch("p", r#"{"site_id":"s1"}"#, LaunchOutcomeKind::Skipped);
        m.skipped("p", [r#"{"site_id":"s2"}"#.to_owned()].into_iter(), 3);
        let text = m.encode();
        assert!(text.contains(r#"braid_plan_launches_total{plan="p",set="site_id=s1",outcome="started"} 2"#), "{text}");
        assert!(text.contains(r#"braid_plan_launches_total{plan="p",set="site_id=s1",outcome="skipped"} 1"#), "{text}");
        assert!(text.contains(r#"braid_plan_launches_total{plan="p",set="site_id=s2",outcome="skipped"} 3"#), "{text}");
    }

    #[test]
    fn a_success_resets_consecutive_failures_and_sets_the_last_success_time() {
        let m = PlanMetrics::new();
        let k = r#"{"site_id":"s1"}"#;
        m.run_ended("p", k, RunStatus::Failed, Timestamp::from_micros(1_000_000));
        m.launch("p", k, LaunchOutcomeKind::FailedToStart);
        let text = m.encode();
        assert!(text.contains(r#"braid_plan_consecutive_failures{plan="p",set="site_id=s1"} 2"#), "{text}");
        assert!(line(&text, "braid_plan_last_success_timestamp_seconds{").is_none(), "{text}");
        m.run_ended("p", k, RunStatus::Succeeded, Timestamp::from_micros(1_700_000_000_500_000));
        m.run_ended("p", k, RunStatus::Cancelled, Timestamp::from_micros(1_700_000_100_000_000));
        let text = m.encode();
        assert!(text.contains(r#"braid_plan_consecutive_failures{plan="p",set="site_id=s1"} 0"#), "{text}");
        assert!(
            text.contains(r#"braid_plan_last_success_timestamp_seconds{plan="p",set="site_id=s1"} 1700000000.5"#),
            "{text}"
        );
        assert!(text.contains(r#"braid_plan_runs_total{plan="p",set="site_id=s1",status="failed"} 1"#), "{text}");
        assert!(text.contains(r#"braid_plan_runs_total{plan="p",set="site_id=s1",status="succeeded"} 1"#), "{text}");
        assert!(text.contains(r#"braid_plan_runs_total{plan="p",set="site_id=s1",status="cancelled"} 1"#), "{text}");
    }

    #[test]
    fn restore_sets_what_the_store_says() {
        let m = PlanMetrics::new();
        m.restore("p", r#"{"site_id":"s1"}"#, 4, Some(Timestamp::from_micros(2_000_000)));
        m.restore("p", r#"{"site_id":"s2"}"#, 0, None);
        let text = m.encode();
        assert!(text.contains(r#"braid_plan_consecutive_failures{plan="p",set="site_id=s1"} 4"#), "{text}");
        assert!(text.contains(r#"braid_plan_last_success_timestamp_seconds{plan="p",set="site_id=s1"} 2.0"#), "{text}");
        assert!(!text.contains(r#"braid_plan_last_success_timestamp_seconds{plan="p",set="site_id=s2"}"#), "{text}");
    }

    #[test]
    fn next_tick_lag_and_matrix_failures_are_per_plan() {
        let m = PlanMetrics::new();
        m.next_tick("p", Some(jiff::Timestamp::from_second(1_800_000_000).unwrap()));
        m.next_tick("gone", Some(jiff::Timestamp::from_second(1).unwrap()));
        m.next_tick("gone", None);
        m.lag("p", Timestamp::from_micros(0), Timestamp::from_micros(250_000));
        m.matrix_failed("p");
        let text = m.encode();
        assert!(text.contains(r#"braid_plan_next_tick_timestamp_seconds{plan="p"} 1800000000.0"#), "{text}");
        assert!(!text.contains(r#"plan="gone""#), "{text}");
        assert!(text.contains(r#"braid_plan_launch_lag_seconds_count{plan="p"} 1"#), "{text}");
        assert!(text.contains(r#"braid_plan_launch_lag_seconds_sum{plan="p"} 0.25"#), "{text}");
        assert!(text.contains(r#"braid_plan_matrix_failures_total{plan="p"} 1"#), "{text}");
    }

    #[test]
    fn encode_with_task_metrics_is_one_document_with_one_eof() {
        let m = PlanMetrics::new();
        m.matrix_failed("p");
        let tasks = crate::Metrics::new();
        tasks.attempt_started("f", "s", false);
        let text = m.encode_with(&tasks);
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains(r#"braid_tasks{flow="f",step="s",status="running"} 1"#), "{text}");
        assert!(text.contains(r#"braid_plan_matrix_failures_total{plan="p"} 1"#), "{text}");
    }
}
