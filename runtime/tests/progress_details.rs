//! Progress in units with details: stored with the lease, shown by readers, exported as
//! metrics, and read back by the attempt after a failed or lost one (and by a resumed run).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use braid_core::{FlowName, RunStatus, TaskStatus};
use braid_runtime::{Flow, Resume, RunOptions};
use common::*;
use serde_json::json;

fn one_step(name: &str, build: impl FnOnce(braid_runtime::FlowBuilder) -> braid_runtime::StepBuilder) -> Arc<Flow> {
    Arc::new(build(Flow::builder(name)).next("end").step("end", |_| async { Ok(()) }).end().build().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_give_the_percent_and_a_rate_and_details_are_stored_with_the_task() {
    let (store, _d) = fs_store();
    let flow = one_step("units", |f| {
        f.step("start", |ctx| async move {
            ctx.progress(0.0, "copying")?;
            for done in (0..=10_000u64).step_by(2_500) {
                ctx.progress_units(done, 10_000, "rows")?;
                ctx.progress_details(json!({"file": "part-3.csv", "offset": done * 64}))?;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            Ok(())
        })
        .progress_coalescing(Duration::from_millis(1), 1.0)
    });
    let s = run(&flow, &store, &[]).await;
    assert_ok(&s);
    let t = only_task(&store, "units", s.run_id, "start").await;
    let p = t.progress.unwrap();
    assert_eq!(p.percent, 100.0);
    assert_eq!(p.message, "copying", "a report in units keeps the last message");
    let u = p.units.unwrap();
    assert_eq!((u.done, u.total, u.unit.as_str()), (10_000, 10_000, "rows"));
    let rate = u.rate.expect("a rate after 120 ms of reports");
    assert!((10_000.0..200_000.0).contains(&rate), "about 2,500 rows per 30 ms, got {rate}");
    assert_eq!(p.details, Some(json!({"file": "part-3.csv", "offset": 640_000})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_units_and_oversized_details_are_errors_naming_the_step() {
    let (store, _d) = fs_store();
    let flow = one_step("badunits", |f| {
        f.step("start", |ctx| async move {
            let e = ctx.progress_units(11, 10, "").unwrap_err().to_string();
            assert!(e.contains("`start`") || e.contains("start"), "{e}");
            assert!(e.contains("done (11) is more than total (10)") && e.contains("the unit is empty"), "{e}");
            let e = ctx.progress_details(json!({"blob": "x".repeat(10_000)})).unwrap_err().to_string();
            assert!(e.contains("start") && e.contains("at most 8192"), "{e}");
            let e = ctx.progress_details(vec![1, 2, 3]).unwrap_err().to_string();
            assert!(e.contains("must be a JSON object"), "{e}");
            assert!(ctx.last_progress().is_none(), "a first attempt has no predecessor");
            Ok(())
        })
    });
    let s = run(&flow, &store, &[]).await;
    assert_ok(&s);
    let t = only_task(&store, "badunits", s.run_id, "start").await;
    assert!(t.progress.is_none(), "refused reports change nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_failure_reads_the_details_its_predecessor_reported() {
    let (store, _d) = fs_store();
    let flow = one_step("retry_details", |f| {
        f.step("start", |ctx| async move {
            let from = ctx.last_progress().and_then(|p| p.details.as_ref()).and_then(|d| d["offset"].as_u64());
            ctx.set("resumed_from", &from)?;
            let start = from.unwrap_or(0);
            for offset in (start..=1_000).step_by(100) {
                ctx.progress_units(offset, 1_000, "rows")?;
                // Coalesced: not every one of these is written, the latest is kept.
                ctx.progress_details(json!({ "offset": offset }))?;
                if ctx.attempt().0 == 1 && offset == 600 {
                    return Err("the source hung up".into());
                }
            }
            Ok(())
        })
        .retries(1)
        .progress_coalescing(Duration::from_secs(60), 50.0)
    });
    let s = run(&flow, &store, &[]).await;
    assert_ok(&s);
    let from: Option<u64> = output(&store, &s, "start", "resumed_from").await;
    assert_eq!(from, Some(600), "the retry picks up at the failed attempt's last offset");
    let t = only_task(&store, "retry_details", s.run_id, "start").await;
    assert_eq!(t.attempt.0, 2);
    assert_eq!(t.progress.unwrap().details, Some(json!({"offset": 1_000})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_attempt_reads_its_last_details() {
    let (store, _d) = fs_store();
    let flow = one_step("lost_details", |f| {
        f.step("start", |ctx| async move {
            let seen = ctx.last_progress().cloned();
            // Artifacts take typed values; details travel here as their JSON text.
            ctx.set("seen", &seen.map(|p| (p.percent, p.details.map(|d| d.to_string()))))?;
            if ctx.attempt().0 == 1 {
                ctx.progress_units(300, 1_000, "files")?;
                ctx.progress_details(json!({"cursor": "f-0300"}))?;
                // Hangs without heartbeats: the lease runs out.
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok(())
        })
        .lease(Duration::from_millis(300))
        .retries(1)
    });
    let s = run(&flow, &store, &[]).await;
    assert_ok(&s);
    let seen: Option<(f32, Option<String>)> = output(&store, &s, "start", "seen").await;
    assert_eq!(seen, Some((30.0, Some(r#"{"cursor":"f-0300"}"#.to_owned()))));
    let task = only_task(&store, "lost_details", s.run_id, "start").await.key.task;
    let attempts = store.records.list_attempts(&FlowName::new("lost_details").unwrap(), s.run_id, task).await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.status).collect::<Vec<_>>(), [TaskStatus::Lost, TaskStatus::Succeeded]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_reads_the_stored_details_of_the_origin_runs_failed_task() {
    let (store, _d) = fs_store();
    let fail = Arc::new(AtomicU64::new(1));
    let f2 = fail.clone();
    let flow = one_step("resume_details", move |f| {
        f.step("start", move |ctx| {
            let f2 = f2.clone();
            async move {
                let from = ctx.last_progress().and_then(|p| p.details.as_ref()).map(|d| d.to_string());
                ctx.set("from", &from)?;
                ctx.progress_details(json!({"page": 7}))?;
                if f2.swap(0, Ordering::SeqCst) == 1 {
                    return Err("crashed on page 7".into());
                }
                Ok(())
            }
        })
    });
    let first = run(&flow, &store, &[]).await;
    assert_eq!(first.status, RunStatus::Failed);
    let opts = RunOptions {
        resume: Some(Resume { origin: Some(first.run_id), from: None, force: false }),
        env_params: false,
        ..Default::default()
    };
    let second = braid_runtime::run(flow.clone(), store.clone(), opts).await.unwrap();
    assert_ok(&second);
    let from: Option<String> = output(&store, &second, "start", "from").await;
    assert_eq!(from.as_deref(), Some(r#"{"page":7}"#), "read back from the store, not from memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_are_exported_as_done_and_total_while_the_task_runs() {
    let (store, _d) = fs_store();
    let metrics = Arc::new(braid_runtime::Metrics::new());
    let m2 = metrics.clone();
    let flow = one_step("metered_units", |f| {
        f.step("start", move |ctx| {
            let m2 = m2.clone();
            async move {
                ctx.progress_units(250, 1_000, "rows")?;
                let text = m2.encode();
                for (of, n) in [("done", 250), ("total", 1000)] {
                    let series = format!(
                        "braid_task_progress_units{{flow=\"metered_units\",step=\"start\",task=\"{}\",unit=\"rows\",of=\"{of}\"}} {n}",
                        ctx.task_id()
                    );
                    assert!(text.contains(&series), "{series} not in {text}");
                }
                Ok(())
            }
        })
    });
    let opts = RunOptions { metrics: Some(metrics.clone()), env_params: false, ..Default::default() };
    assert_ok(&braid_runtime::run(flow, store, opts).await.unwrap());
    let text = metrics.encode();
    assert!(!text.contains("braid_task_progress_units{"), "finished tasks leave no units series: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_that_extends_the_lease_carries_details_not_yet_written() {
    let (store, _d) = fs_store();
    let flow = one_step("beat_details", |f| {
        f.step("start", |ctx| async move {
            ctx.progress(10.0, "scanning")?;
            // Same percent and message, within the interval: coalesced, not written yet.
            ctx.progress_details(json!({"cursor": 41}))?;
            tokio::time::sleep(Duration::from_millis(150)).await;
            ctx.heartbeat();
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(())
        })
        .progress_coalescing(Duration::from_millis(100), 50.0)
    });
    let store2 = store.clone();
    let running = tokio::spawn(async move { run(&flow, &store2, &[]).await });
    let mut seen = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let runs = store.records.list_runs(&FlowName::new("beat_details").unwrap(), &Default::default()).await.unwrap();
        let Some(r) = runs.items.first() else { continue };
        let ts = tasks(&store, "beat_details", r.id, "start").await;
        if let Some(t) = ts.first().filter(|t| t.status == TaskStatus::Running) {
            let details = t.progress.as_ref().and_then(|p| p.details.clone());
            if details.is_some() {
                assert_eq!(details, Some(json!({"cursor": 41})));
                assert!(t.lease_deadline.is_some());
                seen = true;
                break;
            }
        }
    }
    assert_ok(&running.await.unwrap());
    assert!(seen, "the heartbeat's write carried the details while the task ran");
}
