#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Per-plan metrics of a scheduler on an injected clock: launch outcomes (overlap skips,
//! paused sets, catch-up), launch lag, runs by status, consecutive failures, the last
//! success read back by a new scheduler, and the next tick.

mod plan_env;

use std::sync::Arc;
use std::time::Duration;

use braid_core::Timestamp;
use braid_runtime::plan::{CatchUp, Clock, Concurrency, LaunchPlan, PlanMetrics, Scheduler, SchedulerOptions};
use braid_runtime::{Flow, Param, ParamType};
use plan_env::*;
use tokio::sync::Semaphore;

/// `data_sync(site_id)`: waits for a permit of `gate` (if given); fails for the site `bad`.
fn data_sync(gate: Option<Arc<Semaphore>>) -> Arc<Flow> {
    Arc::new(
        Flow::builder("data_sync")
            .param(Param::new("site_id", ParamType::String))
            .step("start", move |ctx| {
                let gate = gate.clone();
                async move {
                    let site: String = ctx.param("site_id")?;
                    if let Some(g) = gate {
                        g.acquire().await?.forget();
                    }
                    if site == "bad" {
                        return Err("site bad is unreachable".into());
                    }
                    Ok(())
                }
            })
            .next("end")
            .step("end", |_ctx| async move { Ok(()) })
            .end()
            .build()
            .unwrap(),
    )
}

/// A scheduler of `env` that counts into `metrics` (and starts runs with task metrics).
fn scheduler(env: &Env, metrics: &Arc<PlanMetrics>) -> Scheduler {
    let launch =
        env.launch_env().with_plan_metrics(metrics.clone()).with_metrics(Arc::new(braid_runtime::Metrics::new()));
    Scheduler::new(&launch, SchedulerOptions::default())
}

/// The value of the series `series` (name and labels exactly), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

fn secs(s: &str) -> f64 {
    t(s).as_second() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_one_counts_the_dropped_tick_as_skipped_and_the_lag_from_tick_to_start() {
    let gate = Arc::new(Semaphore::new(0));
    let env = Env::memory(data_sync(Some(gate.clone())), "2026-03-02T00:30:00Z");
    env.register(vec![
        LaunchPlan::builder("buf", "data_sync")
            .every(Duration::from_secs(3600))
            .matrix("site_id", ["s1"])
            .concurrency(Concurrency::BufferOne)
            .build()
            .unwrap(),
    ])
    .await;
    let m = Arc::new(PlanMetrics::new());
    let s = scheduler(&env, &m);
    // The 01:00 tick starts 5 minutes late; 02:00 waits; 03:00 is dropped.
    for at in ["2026-03-02T01:05:00Z", "2026-03-02T02:00:00Z", "2026-03-02T03:00:00Z"] {
        env.clock.set(t(at));
        s.pass().await.unwrap();
    }
    let text = m.encode();
    let set = r#"plan="buf",set="site_id=s1""#;
    assert_eq!(value(&text, &format!(r#"braid_plan_launches_total{{{set},outcome="started"}}"#)), Some(1.0), "{text}");
    assert_eq!(value(&text, &format!(r#"braid_plan_launches_total{{{set},outcome="skipped"}}"#)), Some(1.0), "{text}");
    assert_eq!(value(&text, r#"braid_plan_launch_lag_seconds_sum{plan="buf"}"#), Some(300.0), "{text}");
    assert_eq!(
        value(&text, r#"braid_plan_next_tick_timestamp_seconds{plan="buf"}"#),
        Some(secs("2026-03-02T04:00:00Z")),
        "{text}"
    );
    assert!(value(&text, &format!(r#"braid_plan_runs_total{{{set},status="succeeded"}}"#)).is_none());

    // The run ends at 03:10; the buffered 02:00 tick starts then (lag 70 minutes) and ends too.
    env.clock.set(t("2026-03-02T03:10:00Z"));
    gate.add_permits(10);
    s.drain().await.unwrap();
    let text = m.encode();
    assert_eq!(value(&text, &format!(r#"braid_plan_runs_total{{{set},status="succeeded"}}"#)), Some(2.0), "{text}");
    assert_eq!(value(&text, &format!(r#"braid_plan_launches_total{{{set},outcome="started"}}"#)), Some(2.0));
    assert_eq!(value(&text, r#"braid_plan_launch_lag_seconds_count{plan="buf"}"#), Some(2.0));
    assert_eq!(value(&text, r#"braid_plan_launch_lag_seconds_sum{plan="buf"}"#), Some(300.0 + 70.0 * 60.0));
    assert_eq!(
        value(&text, &format!(r#"braid_plan_last_success_timestamp_seconds{{{set}}}"#)),
        Some(secs("2026-03-02T03:10:00Z"))
    );
    assert_eq!(value(&text, &format!(r#"braid_plan_consecutive_failures{{{set}}}"#)), Some(0.0));

    // Deactivated: the plan has no next tick any more.
    let sel = braid_store::PlanSelector::Names(vec![braid_core::PlanName::new("buf").unwrap()]);
    braid_runtime::plan::set_active(&env.store, &sel, false, Timestamp::from_jiff(env.clock.now())).await.unwrap();
    s.pass().await.unwrap();
    assert!(value(&m.encode(), r#"braid_plan_next_tick_timestamp_seconds{plan="buf"}"#).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_set_counts_skipped_launches_and_a_new_scheduler_reads_failures_and_last_success_back() {
    let env = Env::memory(data_sync(None), "2026-03-02T00:30:00Z");
    env.register(vec![
        LaunchPlan::builder("sync", "data_sync")
            .every(Duration::from_secs(3600))
            .matrix("site_id", ["bad", "good"])
            .pause_after_failures(2)
            .build()
            .unwrap(),
    ])
    .await;
    let m = Arc::new(PlanMetrics::new());
    let s = scheduler(&env, &m);
    for at in ["2026-03-02T01:00:00Z", "2026-03-02T02:00:00Z", "2026-03-02T03:00:00Z"] {
        env.clock.set(t(at));
        s.pass().await.unwrap();
        s.drain().await.unwrap();
    }
    let text = m.encode();
    let (bad, good) = (r#"plan="sync",set="site_id=bad""#, r#"plan="sync",set="site_id=good""#);
    assert_eq!(value(&text, &format!(r#"braid_plan_runs_total{{{bad},status="failed"}}"#)), Some(2.0), "{text}");
    assert_eq!(value(&text, &format!(r#"braid_plan_launches_total{{{bad},outcome="skipped"}}"#)), Some(1.0), "paused");
    assert_eq!(value(&text, &format!(r#"braid_plan_consecutive_failures{{{bad}}}"#)), Some(2.0));
    assert_eq!(value(&text, &format!(r#"braid_plan_runs_total{{{good},status="succeeded"}}"#)), Some(3.0));
    assert_eq!(
        value(&text, &format!(r#"braid_plan_last_success_timestamp_seconds{{{good}}}"#)),
        Some(secs("2026-03-02T03:00:00Z"))
    );
    assert!(value(&text, &format!(r#"braid_plan_last_success_timestamp_seconds{{{bad}}}"#)).is_none());

    // A restarted scheduler with fresh metrics: the gauges come back from the store.
    s.shutdown(false).await.unwrap();
    drop(s);
    let m = Arc::new(PlanMetrics::new());
    let s = scheduler(&env, &m);
    s.pass().await.unwrap();
    let text = m.encode();
    assert_eq!(value(&text, &format!(r#"braid_plan_consecutive_failures{{{bad}}}"#)), Some(2.0), "{text}");
    assert_eq!(value(&text, &format!(r#"braid_plan_consecutive_failures{{{good}}}"#)), Some(0.0), "{text}");
    assert_eq!(
        value(&text, &format!(r#"braid_plan_last_success_timestamp_seconds{{{good}}}"#)),
        Some(secs("2026-03-02T03:00:00Z")),
        "{text}"
    );
    assert!(value(&text, &format!(r#"braid_plan_runs_total{{{good},status="succeeded"}}"#)).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_left_out_by_catch_up_count_as_skipped_for_every_set() {
    let env = Env::memory(data_sync(None), "2026-03-02T00:30:00Z");
    env.register(vec![
        LaunchPlan::builder("late", "data_sync")
            .every(Duration::from_secs(3600))
            .matrix("site_id", ["a", "b"])
            .catch_up(CatchUp::Latest)
            .build()
            .unwrap(),
    ])
    .await;
    let m = Arc::new(PlanMetrics::new());
    let s = scheduler(&env, &m);
    // Ticks 01:00 .. 05:00 are due: the latest launches, four are left out.
    env.clock.set(t("2026-03-02T05:30:00Z"));
    s.pass().await.unwrap();
    s.drain().await.unwrap();
    let text = m.encode();
    for set in ["a", "b"] {
        let l = format!(r#"plan="late",set="site_id={set}""#);
        assert_eq!(
            value(&text, &format!(r#"braid_plan_launches_total{{{l},outcome="skipped"}}"#)),
            Some(4.0),
            "{text}"
        );
        assert_eq!(value(&text, &format!(r#"braid_plan_launches_total{{{l},outcome="started"}}"#)), Some(1.0));
    }
    assert_eq!(value(&text, r#"braid_plan_launch_lag_seconds_sum{plan="late"}"#), Some(2.0 * 30.0 * 60.0));
}
