#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Overlap policies `buffer_one` and `cancel_other`, pause on failure with
//! `resume-set`, and deleted plans, on an injected clock.

mod plan_env;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use braid_core::{PlanName, RunStatus};
use braid_runtime::plan::{Concurrency, DispatchOptions, LaunchPlan, PlanError, delete_plans, launch_now, resume_sets};
use braid_runtime::{Flow, Param, ParamType};
use braid_store::{LaunchRecord, LaunchState, PlanQuery, PlanSelector, Registration};
use plan_env::*;
use tokio::sync::Semaphore;

/// `data_sync(site_id)`: waits for a permit of `gate` (if given), then fails if `fail`
/// is set and the site is `bad`.
fn data_sync(gate: Option<Arc<Semaphore>>, fail: Arc<AtomicBool>) -> Arc<Flow> {
    Arc::new(
        Flow::builder("data_sync")
            .param(Param::new("site_id", ParamType::String))
            .step("start", move |ctx| {
                let gate = gate.clone();
                let fail = fail.clone();
                async move {
                    let site: String = ctx.param("site_id")?;
                    if let Some(g) = gate {
                        g.acquire().await?.forget();
                    }
                    if site == "bad" && fail.load(Ordering::SeqCst) {
                        return Err(format!("site {site} is unreachable").into());
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

fn states(ls: &[LaunchRecord]) -> Vec<LaunchState> {
    ls.iter().map(|l| l.state).collect()
}

fn hourly(name: &str, c: Concurrency) -> braid_runtime::plan::LaunchPlanBuilder {
    LaunchPlan::builder(name, "data_sync").every(Duration::from_secs(3600)).fixed("site_id", "s").concurrency(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_one_keeps_one_tick_waiting_and_records_later_ones_as_skipped() {
    let gate = Arc::new(Semaphore::new(0));
    let env = Env::new(data_sync(Some(gate.clone()), Arc::default()), "2026-03-02T00:30:00Z", false);
    env.register(vec![hourly("buf", Concurrency::BufferOne).build().unwrap()]).await;
    let s = env.scheduler();
    for at in ["2026-03-02T01:00:00Z", "2026-03-02T02:00:00Z", "2026-03-02T03:00:00Z", "2026-03-02T04:00:00Z"] {
        env.clock.set(t(at));
        s.pass().await.unwrap();
    }
    let l = env.launches("buf").await;
    use LaunchState::*;
    assert_eq!(states(&l), [Started, Pending, Skipped, Skipped], "{l:#?}");
    assert!(l[2].note.as_deref().unwrap().contains("buffer_one"), "{:?}", l[2].note);
    assert_eq!((s.running(), s.queued()), (1, 1));

    // The run ends: the waiting tick (02:00) starts; the skipped ones never do.
    gate.add_permits(10);
    s.drain().await.unwrap();
    let l = env.launches("buf").await;
    assert_eq!(states(&l), [Finished, Finished, Skipped, Skipped]);
    assert_eq!(l[1].tick.to_jiff(), t("2026-03-02T02:00:00Z"));
    assert_eq!(env.runs().await.len(), 2);

    // With nothing going, a tick starts at once again.
    env.pass_at(&s, "2026-03-02T05:00:00Z").await;
    assert_eq!(states(&env.launches("buf").await).last(), Some(&Finished));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_other_cancels_the_running_run_then_starts_the_new_tick() {
    let gate = Arc::new(Semaphore::new(0));
    let env = Env::new(data_sync(Some(gate.clone()), Arc::default()), "2026-03-02T00:30:00Z", false);
    env.register(vec![hourly("co", Concurrency::CancelOther).build().unwrap()]).await;
    let s = env.scheduler();
    env.clock.set(t("2026-03-02T01:00:00Z"));
    s.pass().await.unwrap();
    assert_eq!(s.running(), 1);
    env.clock.set(t("2026-03-02T02:00:00Z"));
    s.pass().await.unwrap();
    // The 01:00 run is cancelled; once it has ended, the 02:00 tick starts.
    wait_for("the new tick to start", async || {
        env.launches("co").await.last().is_some_and(|l| l.state == LaunchState::Started)
    })
    .await;
    let l = env.launches("co").await;
    assert_eq!((l[0].state, l[0].status), (LaunchState::Finished, Some(RunStatus::Cancelled)));
    assert!(l[0].note.as_deref().unwrap().contains("cancel_other"), "{:?}", l[0].note);
    let first = env.runs().await.into_iter().find(|r| Some(r.id) == l[0].run).unwrap();
    assert_eq!(first.status, RunStatus::Cancelled);

    gate.add_permits(10);
    s.drain().await.unwrap();
    let l = env.launches("co").await;
    assert_eq!((l[1].state, l[1].status), (LaunchState::Finished, Some(RunStatus::Succeeded)));

    // Two ticks due at once (catch-up of all missed ones): only the latest starts.
    let all = hourly("co_all", Concurrency::CancelOther)
        .catch_up(braid_runtime::plan::CatchUp::All { limit: 10 })
        .build()
        .unwrap();
    env.register(vec![all]).await;
    env.clock.set(t("2026-03-02T05:00:00Z"));
    s.pass().await.unwrap();
    s.drain().await.unwrap();
    let l = env.launches("co_all").await;
    assert_eq!(states(&l), [LaunchState::Skipped, LaunchState::Skipped, LaunchState::Finished], "{l:#?}");
    assert!(l[0].note.as_deref().unwrap().contains("later tick"), "{:?}", l[0].note);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_other_across_replicas_the_running_replica_cancels_its_run_and_the_other_starts_the_tick() {
    let gate = Arc::new(Semaphore::new(0));
    let env = Env::new(data_sync(Some(gate.clone()), Arc::default()), "2026-03-02T00:30:00Z", false);
    env.register(vec![hourly("co", Concurrency::CancelOther).build().unwrap()]).await;
    let (a, b) = (env.scheduler(), env.scheduler());
    env.clock.set(t("2026-03-02T01:00:00Z"));
    a.pass().await.unwrap();
    assert_eq!(a.running(), 1);
    // A says it is alive just before the tick; B claims the 02:00 tick.
    env.clock.set(t("2026-03-02T01:59:55Z"));
    a.pass().await.unwrap();
    env.clock.set(t("2026-03-02T02:00:00Z"));
    b.pass().await.unwrap();
    let l = env.launches("co").await;
    assert_eq!(states(&l), [LaunchState::Started, LaunchState::Pending], "B waits for A's run");
    assert_eq!(l[1].holder.as_deref(), Some(b.id()));
    // A's next pass sees the later tick pending and cancels its own run.
    env.clock.set(t("2026-03-02T02:00:02Z"));
    a.pass().await.unwrap();
    wait_for("A's run to end cancelled", async || env.launches("co").await[0].status == Some(RunStatus::Cancelled))
        .await;
    assert_eq!(a.running(), 0);
    // B's next pass starts the tick.
    env.clock.set(t("2026-03-02T02:00:04Z"));
    b.pass().await.unwrap();
    gate.add_permits(10);
    b.drain().await.unwrap();
    let l = env.launches("co").await;
    assert_eq!((l[1].state, l[1].status), (LaunchState::Finished, Some(RunStatus::Succeeded)));
    assert_eq!(env.runs().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_pauses_after_consecutive_failures_across_restarts_until_resumed_or_a_new_version() {
    let fail = Arc::new(AtomicBool::new(true));
    let env = Env::new(data_sync(None, fail.clone()), "2026-03-02T00:30:00Z", true);
    let plan = |sites: &[&str]| {
        LaunchPlan::builder("sync", "data_sync")
            .every(Duration::from_secs(3600))
            .matrix("site_id", sites.to_vec())
            .pause_after_failures(2)
            .build()
            .unwrap()
    };
    env.register(vec![plan(&["bad", "good"])]).await;
    let s = env.scheduler();
    env.pass_at(&s, "2026-03-02T01:00:00Z").await;
    assert!(env.store.plans.list_set_states(None, true).await.unwrap().is_empty(), "one failure is not two");
    env.pass_at(&s, "2026-03-02T02:00:00Z").await;
    let paused = env.store.plans.list_set_states(None, true).await.unwrap();
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].set_key, r#"{"site_id":"bad"}"#);
    let pause = paused[0].paused.clone().unwrap();
    let bad = env.set_launches("sync", "bad").await;
    assert_eq!(pause.failures, 2);
    assert_eq!(pause.runs, [bad[1].run.unwrap(), bad[0].run.unwrap()], "the failed runs, newest first");

    // Paused: its tick is claimed and recorded as skipped; the other set goes on.
    env.pass_at(&s, "2026-03-02T03:00:00Z").await;
    let bad = env.set_launches("sync", "bad").await;
    assert_eq!(bad[2].state, LaunchState::Skipped);
    let note = bad[2].note.clone().unwrap();
    assert!(note.starts_with("paused after 2 consecutive failures"), "{note}");
    assert!(note.contains("braid plan resume-set sync --param site_id=bad"), "{note}");
    assert_eq!(env.set_launches("sync", "good").await[2].status, Some(RunStatus::Succeeded));

    // A restart keeps the pause (it is in the store).
    s.shutdown(false).await.unwrap();
    drop(s);
    let s = env.scheduler();
    env.pass_at(&s, "2026-03-02T04:00:00Z").await;
    assert_eq!(env.set_launches("sync", "bad").await[3].state, LaunchState::Skipped);

    // Resumed: it launches again, and its failures count afresh (one is not a pause).
    let select = [("site_id".to_owned(), "bad".to_owned())];
    let resumed = resume_sets(&env.store, "sync", &select, env.now()).await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].run_name, "sync_bad");
    assert_eq!(resumed[0].pause.as_ref().unwrap().runs, pause.runs);
    env.pass_at(&s, "2026-03-02T05:00:00Z").await;
    assert_eq!(env.set_launches("sync", "bad").await[4].status, Some(RunStatus::Failed));
    assert!(env.store.plans.list_set_states(None, true).await.unwrap().is_empty());
    env.pass_at(&s, "2026-03-02T06:00:00Z").await;
    assert_eq!(env.store.plans.list_set_states(None, true).await.unwrap().len(), 1, "two failures since the resume");

    // A success in between breaks the streak; a new version clears the pause.
    assert_eq!(
        env.register(vec![plan(&["bad", "good", "new"])]).await,
        [Registration::Updated { version: 2, previous: 1 }]
    );
    assert!(env.store.plans.list_set_states(None, true).await.unwrap().is_empty());
    fail.store(false, Ordering::SeqCst);
    env.pass_at(&s, "2026-03-02T07:00:00Z").await;
    assert_eq!(env.set_launches("sync", "bad").await[6].status, Some(RunStatus::Succeeded));

    // Selecting a value the plan does not have is refused, naming it and the values.
    let e = resume_sets(&env.store, "sync", &[("site_id".into(), "nope".into())], env.now()).await.unwrap_err();
    assert!(matches!(e, PlanError::BadSelection { .. }) && e.to_string().contains("bad, good, new"), "{e}");
    let e = resume_sets(&env.store, "sync", &[("region".into(), "x".into())], env.now()).await.unwrap_err();
    assert!(e.to_string().contains("`region` is not a parameter"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_plan_stops_launching_keeps_its_runs_and_starts_a_new_history_when_applied_again() {
    let gate = Arc::new(Semaphore::new(0));
    let env = Env::new(data_sync(Some(gate.clone()), Arc::default()), "2026-03-02T00:30:00Z", true);
    env.register(vec![hourly("gone", Concurrency::Queue).build().unwrap()]).await;
    let s = env.scheduler();
    env.clock.set(t("2026-03-02T01:00:00Z"));
    s.pass().await.unwrap();
    env.clock.set(t("2026-03-02T02:00:00Z"));
    s.pass().await.unwrap();
    assert_eq!(states(&env.launches("gone").await), [LaunchState::Started, LaunchState::Pending]);

    let name = PlanName::new("gone").unwrap();
    let deleted = delete_plans(&env.store, &PlanSelector::Names(vec![name.clone()]), env.now()).await.unwrap();
    assert_eq!(deleted, [(name.clone(), true)]);
    // The queued tick is skipped at the next pass; no new tick is claimed.
    env.clock.set(t("2026-03-02T03:00:00Z"));
    s.pass().await.unwrap();
    gate.add_permits(10);
    s.drain().await.unwrap();
    let l = env.launches("gone").await;
    assert_eq!(states(&l), [LaunchState::Finished, LaunchState::Skipped], "{l:#?}");
    assert!(l[1].note.as_deref().unwrap().contains("deleted"), "{:?}", l[1].note);
    assert!(env.store.plans.list_plans(&PlanQuery::default()).await.unwrap().is_empty());
    // Its run keeps naming it.
    let runs = env.runs().await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].meta["plan"], "gone");
    // Launching it by hand is refused with how to bring it back.
    let e = launch_now(&env.launch_env(), "gone", &[], DispatchOptions::default()).await.unwrap_err();
    assert!(matches!(e, PlanError::Deleted { .. }) && e.to_string().contains("apply its plan file again"), "{e}");

    // Applied again: a new history, version numbering continued; ticks count from now.
    env.clock.set(t("2026-03-02T05:30:00Z"));
    let regs = env.register(vec![hourly("gone", Concurrency::Queue).build().unwrap()]).await;
    assert_eq!(regs, [Registration::Created { version: 2 }]);
    env.pass_at(&s, "2026-03-02T06:00:00Z").await;
    let l = env.launches("gone").await;
    assert_eq!(l.len(), 3, "04:00 and 05:00 were while it was deleted: not caught up");
    assert_eq!((l[2].version, l[2].status), (2, Some(RunStatus::Succeeded)));
}
