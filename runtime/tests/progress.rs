//! Progress, heartbeats, leases, stall and timeout-prediction warnings.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use braid_core::{FlowName, TaskStatus};
use braid_runtime::{Flow, RunOptions};
use braid_store::TaskEventKind;
use common::*;

fn one_step(name: &str, build: impl FnOnce(braid_runtime::FlowBuilder) -> braid_runtime::StepBuilder) -> Arc<Flow> {
    Arc::new(build(Flow::builder(name)).next("end").step("end", |_| async { Ok(()) }).end().build().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_coalesced_and_the_last_one_is_kept() {
    let (store, _d) = fs_store();
    let counts = Arc::new(std::sync::Mutex::new((0, 0)));
    let c2 = counts.clone();
    let flow = one_step("coalesce", |f| {
        f.step("start", move |ctx| {
            let c2 = c2.clone();
            async move {
                for i in 0..100_000u32 {
                    ctx.progress(i as f32 / 1000.0, "crunching")?;
                }
                // Same percent and message again and again: nothing new to write.
                for _ in 0..10_000 {
                    ctx.progress(99.999, "crunching")?;
                }
                ctx.progress(100.0, "done")?;
                *c2.lock().unwrap() = ctx.progress_counts();
                Ok(())
            }
        })
        .progress_coalescing(Duration::from_secs(60), 1.0)
    });
    let s = run(&flow, &store, &[]).await;
    assert_ok(&s);
    let (reports, writes) = *counts.lock().unwrap();
    assert_eq!(reports, 110_001);
    assert!((95..=105).contains(&writes), "about one write per percentage point, got {writes}");
    let t = only_task(&store, "coalesce", s.run_id, "start").await;
    let p = t.progress.unwrap();
    assert_eq!((p.percent, p.message.as_str()), (100.0, "done"));
    assert!(t.events.len() <= braid_store::MAX_TASK_EVENTS);
    assert_eq!(t.events.last().unwrap().message, "done");
    // Out of range and non-finite values are clear errors.
    let bad = one_step("badprogress", |f| {
        f.step("start", |ctx| async move {
            let e = ctx.progress(120.0, "x").unwrap_err().to_string();
            assert!(e.contains("0 to 100") && e.contains("start"), "{e}");
            assert!(ctx.progress(f32::NAN, "x").is_err());
            Ok(())
        })
    });
    assert_ok(&run(&bad, &store, &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_extends_the_lease_and_travels_with_it() {
    let (store, _d) = fs_store();
    let flow = one_step("extend", |f| {
        f.step("start", |ctx| async move {
            for i in 0..12 {
                ctx.progress(i as f32 * 8.0, format!("chunk {i}"))?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        })
        .lease(Duration::from_millis(400))
        .progress_coalescing(Duration::from_millis(1), 1.0)
    });
    let store2 = store.clone();
    let run_task = tokio::spawn(async move { run(&flow, &store2, &[]).await });
    // While it runs, every stored record has the progress and a lease in the future.
    let mut checked = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let runs = store.records.list_runs(&FlowName::new("extend").unwrap(), &Default::default()).await.unwrap();
        let Some(r) = runs.items.first() else { continue };
        let tasks = tasks(&store, "extend", r.id, "start").await;
        if let Some(t) = tasks.first().filter(|t| t.status == TaskStatus::Running && t.progress.is_some()) {
            assert!(t.lease_deadline.unwrap() > t.progress_at.unwrap());
            checked += 1;
        }
        if run_task.is_finished() {
            break;
        }
    }
    let s = run_task.await.unwrap();
    assert_ok(&s);
    assert!(checked >= 3, "saw the running record {checked} times");
    let t = only_task(&store, "extend", s.run_id, "start").await;
    assert_eq!(t.attempt.0, 1, "1.2 s of work under a 0.4 s lease: never lost, progress extended it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_lost_and_retried() {
    let (store, _d) = fs_store();
    let flow = one_step("lease", |f| {
        f.step("start", |ctx| async move {
            ctx.progress(50.0, "half way")?;
            if ctx.attempt().0 == 1 {
                // Hangs without heartbeats.
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            ctx.progress(100.0, "finished by the retry")?;
            Ok(())
        })
        .lease(Duration::from_millis(300))
        .retries(1)
    });
    let t0 = Instant::now();
    let s = run(&flow, &store, &[]).await;
    assert_ok(&s);
    assert!(t0.elapsed() < Duration::from_secs(5));
    let t = only_task(&store, "lease", s.run_id, "start").await;
    let attempts = store.records.list_attempts(&FlowName::new("lease").unwrap(), s.run_id, t.key.task).await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.status).collect::<Vec<_>>(), [TaskStatus::Lost, TaskStatus::Succeeded]);
    assert_eq!(attempts[0].error.as_ref().unwrap().kind, "lost");
    assert!(t.events.iter().any(|e| e.kind == TaskEventKind::Lost && e.attempt.0 == 1), "{:?}", t.events);
    assert_eq!(t.progress.unwrap().message, "finished by the retry");

    // Without retries, a lost task fails the run and says why.
    let flow = one_step("lease_fail", |f| {
        f.step("start", |_ctx| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        })
        .lease(Duration::from_millis(200))
    });
    let s = run(&flow, &store, &[]).await;
    assert_eq!(s.status, braid_core::RunStatus::Failed);
    let e = s.error.unwrap();
    assert!(e.contains("lost") && e.contains("lease expired"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_write_from_a_lost_attempt_is_rejected() {
    let (store, _d) = fs_store();
    let wrote = Arc::new(AtomicU64::new(0));
    let w2 = wrote.clone();
    let flow = one_step("stale", |f| {
        f.step_blocking("start", move |ctx| {
            if ctx.attempt().0 == 1 {
                ctx.progress(10.0, "first")?;
                // Blocks past its lease; the retry has started when this wakes up.
                std::thread::sleep(Duration::from_millis(700));
                ctx.progress(99.0, "stale")?;
                w2.fetch_add(1, Ordering::SeqCst);
                return Ok(());
            }
            ctx.progress(20.0, "second")?;
            for _ in 0..9 {
                std::thread::sleep(Duration::from_millis(100));
                ctx.heartbeat();
            }
            ctx.progress(100.0, "second done")?;
            Ok(())
        })
        .lease(Duration::from_millis(250))
        .retries(1)
        .progress_coalescing(Duration::from_millis(1), 1.0)
    });
    let s = run(&flow, &store, &[]).await;
    assert_ok(&s);
    assert_eq!(wrote.load(Ordering::SeqCst), 1, "the lost attempt did try to write");
    let t = only_task(&store, "stale", s.run_id, "start").await;
    assert_eq!(t.attempt.0, 2);
    assert_eq!(t.progress.as_ref().unwrap().message, "second done");
    assert!(t.events.iter().all(|e| e.message != "stale"), "{:?}", t.events);
    let logs = store.records.read_logs(&FlowName::new("stale").unwrap(), s.run_id, t.key.task, 0, 0).await.unwrap();
    assert!(logs.iter().any(|l| l.line.contains("late write from attempt 1 rejected")), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_and_timeout_prediction_warn_before_the_timeout() {
    let (store, _d) = fs_store();
    let flow = one_step("warnings", |f| {
        f.step("start", |ctx| async move {
            // Stuck at 10% while heartbeating: alive, but stalled.
            ctx.progress(10.0, "loading")?;
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                ctx.heartbeat();
            }
            // Then too slow: 5 points per 100 ms needs ~2 s more, the timeout is 1.5 s.
            for i in 0..30 {
                ctx.progress(10.0 + i as f32 * 5.0, "crunching")?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        })
        .stall_after(Duration::from_millis(200))
        .timeout(Duration::from_millis(1500))
        .lease(Duration::from_secs(2))
        .progress_coalescing(Duration::from_millis(1), 1.0)
    });
    let s = run(&flow, &store, &[]).await;
    assert_eq!(s.status, braid_core::RunStatus::Failed, "the timeout did hit");
    let t = only_task(&store, "warnings", s.run_id, "start").await;
    assert_eq!(t.error.as_ref().unwrap().kind, "timeout");
    let stall = t.events.iter().find(|e| e.kind == TaskEventKind::Stalled).expect("stall warning");
    assert!(stall.message.contains("10%"), "{}", stall.message);
    let predicted = t.events.iter().find(|e| e.kind == TaskEventKind::TimeoutPredicted).expect("timeout predicted");
    assert!(predicted.at < t.ended_at.unwrap(), "warned before the timeout hit");
    let logs = store.records.read_logs(&FlowName::new("warnings").unwrap(), s.run_id, t.key.task, 0, 0).await.unwrap();
    assert!(logs.iter().any(|l| l.level == "WARN" && l.line.starts_with("timeout predicted")), "{logs:?}");
    // Many progress reports followed the warnings; the bounded history kept the warnings.
    assert!(t.events.len() <= braid_store::MAX_TASK_EVENTS);
    assert!(t.eta.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_tasks_progress_and_leases() {
    let (store, _d) = fs_store();
    let metrics = Arc::new(braid_runtime::Metrics::new());
    let m2 = metrics.clone();
    let flow = one_step("metered", |f| {
        f.step("start", move |ctx| {
            let m2 = m2.clone();
            async move {
                ctx.progress(42.0, "answering")?;
                let text = m2.encode();
                assert!(
                    text.contains(&format!(
                        "braid_task_progress_percent{{flow=\"metered\",step=\"start\",task=\"{}\"}} 42.0",
                        ctx.task_id()
                    )),
                    "{text}"
                );
                if ctx.attempt().0 == 1 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                Ok(())
            }
        })
        .lease(Duration::from_millis(200))
        .retries(1)
    });
    let opts = RunOptions { metrics: Some(metrics.clone()), env_params: false, ..Default::default() };
    let s = braid_runtime::run(flow, store, opts).await.unwrap();
    assert_ok(&s);
    let text = metrics.encode();
    assert!(text.contains("braid_lease_expirations_total{flow=\"metered\",step=\"start\"} 1"), "{text}");
    assert!(text.contains("braid_task_retries_total{flow=\"metered\",step=\"start\"} 1"), "{text}");
    assert!(text.contains("braid_tasks{flow=\"metered\",step=\"start\",status=\"succeeded\"} 1"), "{text}");
    assert!(!text.contains("braid_task_progress_percent{"), "finished tasks leave no progress series: {text}");
    assert!(text.contains("braid_task_duration_seconds_count{flow=\"metered\",step=\"end\"} 1"), "{text}");
}
