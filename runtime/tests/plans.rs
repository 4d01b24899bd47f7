#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Launch plans and the scheduler, on an injected clock: policies, versioning,
//! validation, atomic registration, label activation, exactly-once under restart and
//! with two schedulers on one store, DST days, backfill and manual launches.

mod plan_env;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use braid_core::{FlowName, PlanName, RunStatus, Timestamp};
use braid_runtime::plan::{
    BackfillOptions, CatchUp, Concurrency, DispatchOptions, LaunchEnv, LaunchPlan, ManualClock, PlanError, Schedule,
    Scheduler, SchedulerOptions, backfill, check_plan_text, launch_now, parse_plans, register_plans_at, request_launch,
    set_active,
};
use braid_runtime::{Flow, Param, ParamType};
use braid_store::{LaunchKind, LaunchRecord, LaunchState, PlanQuery, PlanSelector, Registration, RunQuery, Store};
use plan_env::*;
use tokio::sync::Semaphore;

/// `data_sync(site_id: String, full: bool = false)`; when `gate` is given, each run
/// waits for a permit of it before ending.
fn data_sync(gate: Option<Arc<Semaphore>>) -> Arc<Flow> {
    Arc::new(
        Flow::builder("data_sync")
            .param(Param::new("site_id", ParamType::String))
            .param(Param::new("full", ParamType::Bool).default(false))
            .step("start", move |ctx| {
                let gate = gate.clone();
                async move {
                    let site: String = ctx.param("site_id")?;
                    let full: bool = ctx.param("full")?;
                    if let Some(g) = gate {
                        g.acquire().await?.forget();
                    }
                    ctx.set("synced", &format!("{site} full={full}"))?;
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

fn hourly(name: &str) -> braid_runtime::plan::LaunchPlanBuilder {
    LaunchPlan::builder(name, "data_sync")
        .cron("0 * * * *", "America/New_York")
        .matrix("site_id", ["site1", "site2", "site3"])
        .label("team", "sync")
}

fn ticks(launches: &[LaunchRecord]) -> Vec<String> {
    let set: BTreeSet<String> = launches.iter().map(|l| l.tick.to_jiff().to_string()).collect();
    set.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_ticks_launch_every_parameter_set_once_with_names_and_meta() {
    let env = Env::memory(data_sync(None), "2026-03-02T13:30:00Z");
    env.register(vec![hourly("data_sync_hourly").build().unwrap()]).await;
    let s = env.scheduler();
    let r = env.pass_at(&s, "2026-03-02T13:59:59Z").await;
    assert_eq!((r.plans, r.due_plans, r.claims), (1, 0, 0));
    assert_eq!(r.next_tick, Some(t("2026-03-02T14:00:00Z")));
    let r = env.pass_at(&s, "2026-03-02T14:00:01Z").await;
    assert_eq!((r.due_plans, r.claims, r.won, r.lost), (1, 3, 3, 0));
    // Again at the same time, and later within the hour: nothing new.
    let r = env.pass_at(&s, "2026-03-02T14:00:01Z").await;
    assert_eq!(r.claims, 0);
    env.pass_at(&s, "2026-03-02T14:59:00Z").await;

    let runs = env.runs().await;
    assert_eq!(runs.len(), 3);
    let mut names: Vec<&str> = runs.iter().map(|r| r.name.as_deref().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["data_sync_hourly_site1", "data_sync_hourly_site2", "data_sync_hourly_site3"]);
    let run = runs.iter().find(|r| r.name.as_deref() == Some("data_sync_hourly_site2")).unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.params["site_id"], "site2");
    assert_eq!(run.params["full"], false);
    assert_eq!(run.meta["plan"], "data_sync_hourly");
    assert_eq!(run.meta["plan_version"], 1);
    assert_eq!(run.meta["tick"], "2026-03-02T14:00:00Z");
    assert_eq!(run.meta["tick_local"], "2026-03-02T09:00:00-05:00[America/New_York]");
    assert_eq!(run.meta["parameter_set"], serde_json::json!({"site_id": "site2"}));
    assert_eq!(run.meta["launch"], "scheduled");
    let launches = env.launches("data_sync_hourly").await;
    assert!(launches.iter().all(|l| l.state == LaunchState::Finished && l.status == Some(RunStatus::Succeeded)));
    assert!(launches.iter().all(|l| l.run.is_some_and(|id| runs.iter().any(|r| r.id == id))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_policies_on_start() {
    let env = Env::memory(data_sync(None), "2026-03-02T05:30:00Z");
    let plan = |name: &str, c: CatchUp| {
        LaunchPlan::builder(name, "data_sync")
            .cron("0 * * * *", "UTC")
            .fixed("site_id", "s")
            .catch_up(c)
            .build()
            .unwrap()
    };
    env.register(vec![
        plan("latest", CatchUp::Latest),
        plan("all3", CatchUp::All { limit: 3 }),
        plan("all", CatchUp::All { limit: 100 }),
        plan("none", CatchUp::None { grace: Duration::from_secs(60) }),
        plan("none_late", CatchUp::None { grace: Duration::from_secs(60) }),
    ])
    .await;
    // The scheduler was down from 05:30 until 10:00:30: ticks 06:00 .. 10:00 were missed.
    let s = env.scheduler();
    env.clock.set(t("2026-03-02T10:00:30Z"));
    // Deactivate `none_late` so it does not pass now; it passes at 10:05, 5 minutes late.
    let sel = PlanSelector::Names(vec![PlanName::new("none_late").unwrap()]);
    env.store.plans.set_plans_active(&sel, false, Timestamp::from_jiff(t("2026-03-02T05:30:00Z"))).await.unwrap();
    let r = s.pass().await.unwrap();
    s.drain().await.unwrap();
    // latest leaves out 4, all3 leaves out 2, all none, none 4.
    assert_eq!(r.missed, 4 + 2 + 4, "{r:?}");
    assert_eq!(ticks(&env.launches("latest").await), ["2026-03-02T10:00:00Z"]);
    assert_eq!(
        ticks(&env.launches("all3").await),
        ["2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z"]
    );
    assert_eq!(env.launches("all").await.len(), 5);
    assert_eq!(ticks(&env.launches("none").await), ["2026-03-02T10:00:00Z"], "30 s late is within the grace");

    // `none`: a tick more than the grace late is skipped; cursors moved, nothing piles up.
    let sel = PlanSelector::Names(vec![PlanName::new("none_late").unwrap()]);
    env.store.plans.set_plans_active(&sel, true, Timestamp::from_jiff(t("2026-03-02T09:30:00Z"))).await.unwrap();
    env.pass_at(&s, "2026-03-02T10:05:00Z").await;
    assert!(env.launches("none_late").await.is_empty(), "10:00 was 5 minutes late");
    env.pass_at(&s, "2026-03-02T11:00:10Z").await;
    assert_eq!(ticks(&env.launches("none_late").await), ["2026-03-02T11:00:00Z"]);
    for p in ["latest", "all3", "all", "none"] {
        assert_eq!(ticks(&env.launches(p).await).last().unwrap(), "2026-03-02T11:00:00Z", "{p}");
    }
    assert_eq!(env.launches("all").await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_policies_per_parameter_set() {
    let gate = Arc::new(Semaphore::new(0));
    let env = Env::memory(data_sync(Some(gate.clone())), "2026-03-02T00:30:00Z");
    let plan = |name: &str, c: Concurrency| {
        LaunchPlan::builder(name, "data_sync").every(Duration::from_secs(3600)).fixed("site_id", name).concurrency(c)
    };
    env.register(vec![
        plan("allow", Concurrency::Allow).build().unwrap(),
        plan("skip", Concurrency::Skip).build().unwrap(),
        plan("queue", Concurrency::Queue).build().unwrap(),
    ])
    .await;
    let s = env.scheduler();
    env.clock.set(t("2026-03-02T01:00:00Z"));
    s.pass().await.unwrap();
    assert_eq!(s.running(), 3, "the first tick of each plan runs");
    env.clock.set(t("2026-03-02T02:00:00Z"));
    s.pass().await.unwrap();
    let state = |ls: Vec<LaunchRecord>| ls.into_iter().map(|l| l.state).collect::<Vec<_>>();
    assert_eq!(state(env.launches("allow").await), [LaunchState::Started, LaunchState::Started]);
    assert_eq!(state(env.launches("skip").await), [LaunchState::Started, LaunchState::Skipped]);
    let skipped = env.launches("skip").await.pop().unwrap();
    assert!(skipped.note.as_deref().unwrap().contains("still going"), "{skipped:?}");
    assert_eq!(state(env.launches("queue").await), [LaunchState::Started, LaunchState::Pending]);
    assert_eq!(s.running(), 4);

    // Let the four running runs end (one permit each: with fewer, the permits may go to
    // the other plans' runs and the queue's first run never ends): the queued tick
    // starts, in order.
    gate.add_permits(4);
    wait_for("the queued tick to start", async || {
        env.launches("queue").await.iter().all(|l| l.state != LaunchState::Pending)
    })
    .await;
    let q = env.launches("queue").await;
    assert_eq!(q[0].state, LaunchState::Finished);
    assert!(q[1].state == LaunchState::Started || q[1].state == LaunchState::Finished);
    gate.add_permits(10);
    s.drain().await.unwrap();
    assert_eq!(state(env.launches("queue").await), [LaunchState::Finished, LaunchState::Finished]);
    assert_eq!(env.runs().await.len(), 5, "allow 2 + skip 1 + queue 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_limit_bounds_runs_and_queues_the_rest() {
    let gate = Arc::new(Semaphore::new(0));
    let env = Env::memory(data_sync(Some(gate.clone())), "2026-03-02T00:30:00Z");
    env.register(vec![hourly("p").build().unwrap()]).await;
    let opts =
        SchedulerOptions { dispatch: DispatchOptions { max_runs: 2, ..Default::default() }, ..Default::default() };
    let s = Scheduler::new(&env.launch_env(), opts);
    env.clock.set(t("2026-03-02T01:00:00Z"));
    s.pass().await.unwrap();
    assert_eq!((s.running(), s.queued()), (2, 1));
    gate.add_permits(100);
    s.drain().await.unwrap();
    assert_eq!((s.running(), s.queued()), (0, 0));
    assert_eq!(env.runs().await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_follow_content_and_runs_record_theirs() {
    let env = Env::memory(data_sync(None), "2026-03-02T13:30:00Z");
    assert_eq!(env.register(vec![hourly("p").build().unwrap()]).await, [Registration::Created { version: 1 }]);
    assert_eq!(
        env.register(vec![hourly("p").active(false).build().unwrap()]).await,
        [Registration::Unchanged { version: 1 }]
    );
    let s = env.scheduler();
    env.pass_at(&s, "2026-03-02T14:00:00Z").await;
    // A fourth site: a new version; the next tick launches it, site1..3 are not re-run.
    let v2 = hourly("p").matrix("site_id", ["site1", "site2", "site3", "site4"]).build().unwrap();
    assert_eq!(env.register(vec![v2]).await, [Registration::Updated { version: 2, previous: 1 }]);
    env.pass_at(&s, "2026-03-02T14:30:00Z").await;
    assert_eq!(env.runs().await.len(), 3);
    env.pass_at(&s, "2026-03-02T15:00:00Z").await;
    let runs = env.runs().await;
    assert_eq!(runs.len(), 7);
    let v: BTreeMap<String, usize> = runs.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.meta["plan_version"].to_string()).or_default() += 1;
        m
    });
    assert_eq!(v, BTreeMap::from([("1".to_owned(), 3), ("2".to_owned(), 4)]));
    let versions = env.store.plans.list_plan_versions(&PlanName::new("p").unwrap()).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].spec["matrix"]["site_id"].as_array().unwrap().len(), 4);
    assert!(env.store.plans.get_plan(&PlanName::new("p").unwrap()).await.unwrap().unwrap().active);
}

#[tokio::test]
async fn validation_errors_name_plan_parameter_and_fix() {
    let env = Env::memory(data_sync(None), "2026-03-02T13:30:00Z");
    let check = async |plan: braid_runtime::plan::LaunchPlanBuilder, needles: &[&str]| {
        let e = match plan.build() {
            Err(e) => e,
            Ok(p) => register_plans_at(&env.store, &env.flows, vec![p], "test", Timestamp::now()).await.unwrap_err(),
        };
        let text = e.to_string();
        assert!(e.is_usage(), "{text}");
        for n in needles {
            assert!(text.contains(n), "{n:?} missing from: {text}");
        }
    };
    check(
        LaunchPlan::builder("p", "data_sync").matrix("site", ["a"]),
        &["plan p: matrix.site: ", "no parameter `site`", "`site_id` (string)"],
    )
    .await;
    check(
        LaunchPlan::builder("p", "data_sync").fixed("site_id", 3),
        &["plan p: fixed.site_id: 3 is an integer, the flow's parameter `site_id` is a string"],
    )
    .await;
    check(
        LaunchPlan::builder("p", "data_sync").default_input("full", true),
        &["requires parameter `site_id`", "`fixed`, `defaults` or the matrix"],
    )
    .await;
    check(
        LaunchPlan::builder("p", "data_sync").fixed("site_id", "a").matrix("site_id", ["b"]),
        &["`site_id` is given in both `fixed` and `matrix`"],
    )
    .await;
    check(
        LaunchPlan::builder("p", "other_flow").fixed("site_id", "a"),
        &["plan p: flow: `other_flow` is not hosted", "`data_sync`"],
    )
    .await;
    check(
        LaunchPlan::builder("p", "data_sync").cron("0 0 * * 8", "UTC").fixed("site_id", "a"),
        &["\"0 0 * * 8\"", "day of week"],
    )
    .await;
    check(
        LaunchPlan::builder("p", "data_sync").cron("@hourly", "Europe/Atlantis").fixed("site_id", "a"),
        &["\"Europe/Atlantis\"", "IANA"],
    )
    .await;
    check(
        LaunchPlan::builder("p", "data_sync").parameter_set([("site_id", "a")]).parameter_set([("full", true)]),
        &["missing from parameter_sets 1"],
    )
    .await;
    assert!(env.store.plans.list_plans(&PlanQuery::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_file_with_one_bad_plan_registers_none_and_names_it() {
    let env = Env::memory(data_sync(None), "2026-03-02T13:30:00Z");
    let file = |third: &str| {
        format!(
            r#"
[[plan]]
name = "a"
flow = "data_sync"
cron = "0 * * * *"
fixed = {{ site_id = "a" }}

[[plan]]
name = "b"
flow = "data_sync"
every = "15m"
matrix = {{ site_id = ["x", "y"] }}

[[plan]]
name = "c"
flow = "data_sync"
{third}
"#
        )
    };
    // Valid on its own, wrong for the flow: caught at registration, before any write.
    let plans = parse_plans(&file("matrix = { site_id = [1, 2] }"), "plans.toml").unwrap();
    let e = register_plans_at(&env.store, &env.flows, plans, "plans.toml", Timestamp::now()).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, PlanError::Rejected { bad: 1, total: 3, .. }), "{text}");
    assert!(text.contains("none was registered") && text.contains("plan c: matrix.site_id[0]: "), "{text}");
    assert!(!text.contains("plan a") && !text.contains("plan b"), "{text}");
    assert!(env.store.plans.list_plans(&PlanQuery::default()).await.unwrap().is_empty());
    // Invalid on its own: caught at parse time, named too.
    let e = parse_plans(&file("cron = \"every hour\"\nfixed = { site_id = \"c\" }"), "plans.toml").unwrap_err();
    assert!(e.to_string().contains("plan c: cron: \"every hour\""), "{e}");
    // Fixed: all three, atomically.
    let plans = parse_plans(&file("fixed = { site_id = \"c\" }"), "plans.toml").unwrap();
    let regs = register_plans_at(&env.store, &env.flows, plans, "plans.toml", Timestamp::now()).await.unwrap();
    assert_eq!(regs.len(), 3);
    assert_eq!(env.store.plans.list_plans(&PlanQuery::default()).await.unwrap().len(), 3);
    // The flow's spec is stored, so `braid` can validate manual launches without the binary.
    assert!(env.store.records.get_flow(&FlowName::new("data_sync").unwrap()).await.unwrap().is_some());
}

/// The issue's plan file: one plan, four problems, all reported by one attempt.
const FOUR_PROBLEMS: &str = include_str!("fixtures/four_problems.toml");

#[tokio::test]
async fn a_plan_with_four_problems_is_rejected_with_all_four_listed() {
    let env = Env::memory(data_sync(None), "2026-03-02T13:30:00Z");
    let e = check_plan_text(FOUR_PROBLEMS, "four_problems.toml", &env.flows).unwrap_err();
    let text = e.to_string();
    let PlanError::Rejected { bad: 1, total: 1, problems, .. } = &e else { panic!("{text}") };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["cron", "timezone", "fixed.region", "matrix.site_id[0]", "matrix.site_id[1]"], "{text}");
    assert!(problems.iter().all(|p| p.plan == "data_sync_hourly"), "{text}");
    for line in [
        "plan data_sync_hourly: cron: \"61 * * * *\" does not parse",
        "plan data_sync_hourly: timezone: \"Mars/Base\" is not a known time zone",
        "plan data_sync_hourly: matrix.site_id[0]: 1 is an integer, the flow's parameter `site_id` is a string",
        "plan data_sync_hourly: matrix.site_id[1]: 2 is an integer",
        "plan data_sync_hourly: fixed.region: the flow has no parameter `region`; it has: `site_id` (string), `full` (bool)",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    // Without the flows (schema only), the two schedule problems are still both there.
    let e = parse_plans(FOUR_PROBLEMS, "four_problems.toml").unwrap_err().to_string();
    assert!(e.contains("plan data_sync_hourly: cron: ") && e.contains("plan data_sync_hourly: timezone: "), "{e}");
    // Nothing registered.
    assert!(env.store.plans.list_plans(&PlanQuery::default()).await.unwrap().is_empty());
}

#[tokio::test]
async fn every_plan_of_a_file_is_checked_and_a_toml_syntax_error_stays_one_error() {
    let env = Env::memory(data_sync(None), "2026-03-02T13:30:00Z");
    let text = r#"
[[plan]]
name = "a"
flow = "data_sync"
every = "soon"
fixed = { site_id = "x", ful = true }

[[plan]]
name = "b"
flow = "elsewhere"
cron = "0 * * * *"

[[plan]]
name = "c"
flow = "data_sync"
cron = "0 * * * *"
"#;
    let e = check_plan_text(text, "p.toml", &env.flows).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PlanError::Rejected { bad: 3, total: 3, .. }), "{msg}");
    assert!(msg.contains("plan a: every: duration \"soon\""), "{msg}");
    assert!(msg.contains("plan a: fixed.ful: the flow has no parameter `ful` (did you mean `full`?)"), "{msg}");
    assert!(msg.contains("plan b: flow: `elsewhere` is not hosted by this binary"), "{msg}");
    assert!(msg.contains("plan c: the flow requires parameter `site_id` (string, no default)"), "{msg}");
    let e = check_plan_text("[[plan]]\nname = \"a\"\nflow = \n", "p.toml", &env.flows).unwrap_err();
    assert!(matches!(e, PlanError::File { .. }), "{e}");
    assert!(e.to_string().contains("line 3"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_activate_and_deactivate_many_plans_at_once() {
    let env = Env::memory(data_sync(None), "2026-03-02T13:30:00Z");
    env.register(vec![
        hourly("s1").build().unwrap(),
        hourly("s2").build().unwrap(),
        LaunchPlan::builder("other", "data_sync")
            .cron("0 * * * *", "UTC")
            .fixed("site_id", "o")
            .label("team", "other")
            .build()
            .unwrap(),
    ])
    .await;
    let off = set_active(
        &env.store,
        &PlanSelector::Labels(vec!["team=sync".parse().unwrap()]),
        false,
        Timestamp::from_jiff(t("2026-03-02T13:40:00Z")),
    )
    .await
    .unwrap();
    assert_eq!(off.iter().filter(|(_, changed)| *changed).count(), 2);
    let s = env.scheduler();
    env.pass_at(&s, "2026-03-02T14:00:00Z").await;
    assert!(env.launches("s1").await.is_empty() && env.launches("s2").await.is_empty());
    assert_eq!(env.launches("other").await.len(), 1);
    // Back on at 16:30: the ticks while off were not missed, they were off.
    set_active(
        &env.store,
        &PlanSelector::Labels(vec!["team=sync".parse().unwrap()]),
        true,
        Timestamp::from_jiff(t("2026-03-02T16:30:00Z")),
    )
    .await
    .unwrap();
    env.pass_at(&s, "2026-03-02T16:30:00Z").await;
    assert!(env.launches("s1").await.is_empty());
    env.pass_at(&s, "2026-03-02T17:00:00Z").await;
    assert_eq!(ticks(&env.launches("s1").await), ["2026-03-02T17:00:00Z"]);
    assert_eq!(env.launches("s2").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_a_restart_and_a_crash() {
    exactly_once_across_a_restart_and_a_crash_in(Env::fs(data_sync(None), "2026-03-02T13:30:00Z")).await;
}

/// The same on PostgreSQL: the schedulers could be on different machines, and the one
/// that died is seen dead by its heartbeat's age alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_a_restart_and_a_crash_on_postgres() {
    let Some(env) = Env::postgres(data_sync(None), "2026-03-02T13:30:00Z").await else { return };
    exactly_once_across_a_restart_and_a_crash_in(env).await;
}

async fn exactly_once_across_a_restart_and_a_crash_in(env: Env) {
    env.register(vec![hourly("p").catch_up(CatchUp::All { limit: 10 }).build().unwrap()]).await;
    let first = env.scheduler();
    env.pass_at(&first, "2026-03-02T14:00:05Z").await;
    first.shutdown(false).await.unwrap();
    drop(first);
    // A new scheduler on the same store, at the same time and an hour later.
    let second = env.scheduler();
    let r = env.pass_at(&second, "2026-03-02T14:00:05Z").await;
    assert_eq!(r.won, 0);
    env.pass_at(&second, "2026-03-02T15:00:05Z").await;
    assert_eq!(env.runs().await.len(), 6);

    // A scheduler that claimed the 16:00 tick and died before starting it: its launches
    // stay pending until its heartbeat is old, then exactly one scheduler adopts them.
    let crashed = env.scheduler();
    env.clock.set(t("2026-03-02T16:00:01Z"));
    // (No dispatch: claim through the store the way a pass does, then "crash".)
    let plan =
        LaunchPlan::from_json(&env.store.plans.get_plan(&PlanName::new("p").unwrap()).await.unwrap().unwrap().spec)
            .unwrap();
    let claims: Vec<LaunchRecord> = plan
        .parameter_sets()
        .iter()
        .map(|set| LaunchRecord {
            key: braid_runtime::plan::launch_key(plan.name(), t("2026-03-02T16:00:00Z"), &set.key),
            plan: plan.name().clone(),
            version: 1,
            flow: plan.flow().clone(),
            kind: LaunchKind::Scheduled,
            tick: Timestamp::from_jiff(t("2026-03-02T16:00:00Z")),
            set_key: set.key.clone(),
            params: plan.params_for(set),
            name: set.run_name(plan.name()),
            state: LaunchState::Pending,
            holder: Some(crashed.id().to_owned()),
            run: None,
            status: None,
            note: None,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        })
        .collect();
    assert_eq!(env.store.plans.claim_launches(claims).await.unwrap(), [true; 3]);
    env.store
        .plans
        .heartbeat(&braid_store::SchedulerRecord {
            id: crashed.id().to_owned(),
            flows: vec![FlowName::new("data_sync").unwrap()],
            host: "h".into(),
            pid: 1,
            started_at: Timestamp::from_jiff(t("2026-03-02T16:00:00Z")),
            seen_at: Timestamp::from_jiff(t("2026-03-02T16:00:01Z")),
        })
        .await
        .unwrap();
    // Still alive (heartbeat 10 s ago): not adopted; the tick itself is claimed.
    let r = env.pass_at(&second, "2026-03-02T16:00:11Z").await;
    assert_eq!((r.won, r.lost, r.adopted), (0, 3, 0));
    // 31 s of silence: dead. Both live schedulers race to adopt; one wins each launch.
    let third = env.scheduler();
    env.clock.set(t("2026-03-02T16:00:32Z"));
    let (a, b) = tokio::join!(second.pass(), third.pass());
    assert_eq!(a.unwrap().adopted + b.unwrap().adopted, 3);
    second.drain().await.unwrap();
    third.drain().await.unwrap();
    let runs = env.runs().await;
    assert_eq!(runs.len(), 9);
    let mut per: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &runs {
        *per.entry((r.name.clone().unwrap(), r.meta["tick"].to_string())).or_default() += 1;
    }
    assert!(per.values().all(|n| *n == 1), "{per:?}");
    assert!(env.launches("p").await.iter().all(|l| l.state == LaunchState::Finished));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_one_store_launch_each_tick_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // Two opens of the store: two writers, as two processes would have.
    two_schedulers_launch_each_tick_once(Store::open_fs(&path).unwrap(), Store::open_fs(&path).unwrap()).await;
}

/// Two scheduler replicas on PostgreSQL, each with its own connections, as on two
/// machines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_on_postgres_launch_each_tick_once() {
    let (Some(pg), Some(s3)) = (braid_store::test_servers::postgres(), braid_store::test_servers::s3()) else {
        return;
    };
    let (db, bucket) = (pg.fresh_database(), s3.fresh_bucket());
    let a = plan_env::postgres_store(Some((&db, &bucket))).await.unwrap();
    let b = plan_env::postgres_store(Some((&db, &bucket))).await.unwrap();
    two_schedulers_launch_each_tick_once(a, b).await;
}

async fn two_schedulers_launch_each_tick_once(a_store: Store, b_store: Store) {
    let flow = data_sync(None);
    let clock = Arc::new(ManualClock::new(t("2026-03-02T00:30:00Z")));
    register_plans_at(
        &a_store,
        std::slice::from_ref(&flow),
        vec![hourly("p").build().unwrap(), hourly("q").concurrency(Concurrency::Skip).build().unwrap()],
        "test",
        Timestamp::from_jiff(t("2026-03-02T00:30:00Z")),
    )
    .await
    .unwrap();
    // Both stay alive: the clock jumps 20 minutes between passes, where real schedulers
    // heartbeat every few seconds, so a 30 s liveness window would make each see the
    // other as dead mid-pass (adoption has its own tests).
    let live = || SchedulerOptions {
        dispatch: DispatchOptions { dead_after: Duration::from_secs(2 * 3600), ..Default::default() },
        ..Default::default()
    };
    let a = Scheduler::new(&LaunchEnv::new(a_store.clone(), vec![flow.clone()]).with_clock(clock.clone()), live());
    let b = Scheduler::new(&LaunchEnv::new(b_store, vec![flow]).with_clock(clock.clone()), live());
    let mut won = (0, 0);
    for hour in 1..=24 {
        for minute in [0, 20, 40] {
            let at = t("2026-03-02T00:00:00Z") + jiff::SignedDuration::from_mins(hour * 60 + minute);
            clock.set(at);
            let (ra, rb) = tokio::join!(a.pass(), b.pass());
            won.0 += ra.unwrap().won;
            won.1 += rb.unwrap().won;
        }
        a.drain().await.unwrap();
        b.drain().await.unwrap();
    }
    assert_eq!(won.0 + won.1, 2 * 24 * 3, "{won:?}");
    let flow = FlowName::new("data_sync").unwrap();
    let runs = a_store.records.list_runs(&flow, &RunQuery { limit: 10_000, ..Default::default() }).await.unwrap().items;
    assert_eq!(runs.len(), 2 * 24 * 3);
    let distinct: BTreeSet<(String, String)> =
        runs.iter().map(|r| (r.name.clone().unwrap(), r.meta["tick"].to_string())).collect();
    assert_eq!(distinct.len(), runs.len(), "a (name, tick) ran twice");
    assert!(runs.iter().all(|r| r.status == RunStatus::Succeeded));
}

/// Ticks of `expr` in `tz` during the local day `date`.
fn day_ticks(expr: &str, tz: &str, date: &str) -> Vec<String> {
    let s = Schedule::cron(expr, tz).unwrap();
    let zone = jiff::tz::TimeZone::get(tz).unwrap();
    let day: jiff::civil::Date = date.parse().unwrap();
    let from = day.to_zoned(zone.clone()).unwrap().timestamp();
    let to = day.tomorrow().unwrap().to_zoned(zone.clone()).unwrap().timestamp();
    s.ticks_between(from, to, 1000).unwrap().into_iter().map(|t| t.to_zoned(zone.clone()).to_string()).collect()
}

#[test]
fn dst_days_run_a_daily_job_once() {
    // New York springs forward at 02:00 on 2026-03-08: 02:30 does not exist; it runs
    // once, at the first instant after the gap.
    assert_eq!(
        day_ticks("30 2 * * *", "America/New_York", "2026-03-08"),
        ["2026-03-08T03:00:00-04:00[America/New_York]"]
    );
    // ... and falls back at 02:00 on 2026-11-01: 01:30 happens twice, it runs once.
    assert_eq!(
        day_ticks("30 1 * * *", "America/New_York", "2026-11-01"),
        ["2026-11-01T01:30:00-04:00[America/New_York]"]
    );
    assert_eq!(
        day_ticks("30 2 * * *", "America/New_York", "2026-11-01"),
        ["2026-11-01T02:30:00-05:00[America/New_York]"]
    );
    // Berlin: 02:30 is missing on 2026-03-29 and doubled on 2026-10-25; once each.
    assert_eq!(day_ticks("30 2 * * *", "Europe/Berlin", "2026-03-29"), ["2026-03-29T03:00:00+02:00[Europe/Berlin]"]);
    assert_eq!(day_ticks("30 2 * * *", "Europe/Berlin", "2026-10-25"), ["2026-10-25T02:30:00+02:00[Europe/Berlin]"]);
    // An hourly job follows real hours: 23 on the short day, 25 on the long one.
    assert_eq!(day_ticks("0 * * * *", "America/New_York", "2026-03-08").len(), 23);
    assert_eq!(day_ticks("0 * * * *", "America/New_York", "2026-11-01").len(), 25);
    assert_eq!(day_ticks("0 * * * *", "America/New_York", "2026-03-09").len(), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_a_0230_job_once_on_each_dst_day() {
    for (tz, spring, fall) in
        [("America/New_York", "2026-03-08", "2026-11-01"), ("Europe/Berlin", "2026-03-29", "2026-10-25")]
    {
        for day in [spring, fall] {
            let zone = jiff::tz::TimeZone::get(tz).unwrap();
            let date: jiff::civil::Date = day.parse().unwrap();
            let start = date.yesterday().unwrap().at(12, 0, 0, 0).to_zoned(zone.clone()).unwrap().timestamp();
            let env = Env::memory(data_sync(None), &start.to_string());
            let plan = LaunchPlan::builder("nightly", "data_sync")
                .cron("30 2 * * *", tz)
                .fixed("site_id", "s")
                .catch_up(CatchUp::None { grace: Duration::from_secs(60) })
                .build()
                .unwrap();
            env.register(vec![plan]).await;
            let s = env.scheduler();
            // Every 10 minutes for two days, as a live scheduler would see time pass.
            let mut now = start;
            for _ in 0..(48 * 6) {
                now = now.checked_add(jiff::SignedDuration::from_mins(10)).unwrap();
                env.clock.set(now);
                s.pass().await.unwrap();
            }
            s.drain().await.unwrap();
            let launched: Vec<String> = env
                .launches("nightly")
                .await
                .iter()
                .map(|l| l.tick.to_jiff().to_zoned(zone.clone()).to_string())
                .collect();
            let on_day: Vec<&String> = launched.iter().filter(|l| l.starts_with(day)).collect();
            assert_eq!(on_day.len(), 1, "{tz} {day}: {launched:?}");
            assert_eq!(launched.len(), 2, "{tz} {day}: the DST day and the next: {launched:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_launches_past_ticks_once() {
    let env = Env::fs(data_sync(None), "2026-03-01T00:00:00Z");
    env.register(vec![hourly("data_sync_hourly").build().unwrap()]).await;
    env.clock.set(t("2026-03-03T00:00:00Z"));
    let opts = BackfillOptions::default();
    let le = env.launch_env();
    let r = backfill(&le, "data_sync_hourly", "2026-03-02T09:00", "2026-03-02T12:00", opts.clone()).await.unwrap();
    assert_eq!(r.ticks.len(), 3);
    assert_eq!(r.ticks[0], t("2026-03-02T14:00:00Z"), "09:00 in New York");
    assert_eq!((r.launched.len(), r.already.len(), r.sets), (9, 0, 3));
    assert!(r.launched.iter().all(|o| o.status == Some(RunStatus::Succeeded)));
    let runs = env.runs().await;
    assert_eq!(runs.len(), 9);
    let names: BTreeSet<&str> = runs.iter().map(|r| r.name.as_deref().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["data_sync_hourly_site1", "data_sync_hourly_site2", "data_sync_hourly_site3"]));
    assert!(runs.iter().all(|r| r.meta["launch"] == "backfill"));

    // Again: nothing; overlapping: only the new tick.
    let r = backfill(&le, "data_sync_hourly", "2026-03-02T09:00", "2026-03-02T12:00", opts.clone()).await.unwrap();
    assert_eq!((r.launched.len(), r.already.len()), (0, 9));
    let dry = BackfillOptions { dry_run: true, ..opts.clone() };
    let r = backfill(&le, "data_sync_hourly", "2026-03-02T10:00", "2026-03-02T13:00", dry).await.unwrap();
    assert_eq!((r.would_launch.len(), r.already.len()), (3, 6));
    let r = backfill(&le, "data_sync_hourly", "2026-03-02T10:00", "2026-03-02T13:00", opts.clone()).await.unwrap();
    assert_eq!((r.launched.len(), r.already.len()), (3, 6));
    assert_eq!(env.runs().await.len(), 12);

    // A scheduler whose catch-up reaches those ticks does not launch them again.
    env.store
        .plans
        .set_plans_active(
            &PlanSelector::Names(vec![PlanName::new("data_sync_hourly").unwrap()]),
            false,
            Timestamp::from_jiff(t("2026-03-02T13:00:00Z")),
        )
        .await
        .unwrap();
    set_active(
        &env.store,
        &PlanSelector::Names(vec![PlanName::new("data_sync_hourly").unwrap()]),
        true,
        Timestamp::from_jiff(t("2026-03-02T13:30:00Z")),
    )
    .await
    .unwrap();
    let all = hourly("data_sync_hourly").catch_up(CatchUp::All { limit: 100 }).build().unwrap();
    env.register(vec![all]).await;
    let s = env.scheduler();
    let r = env.pass_at(&s, "2026-03-02T18:30:00Z").await;
    assert_eq!((r.claims, r.lost), (15, 12), "14:00 .. 18:00 claimed, 14:00 .. 17:00 were backfilled");
    assert_eq!(env.runs().await.len(), 15);

    // Errors say what to do.
    let e = backfill(&le, "data_sync_hourly", "2026-03-02T12:00", "2026-03-02T09:00", opts.clone()).await.unwrap_err();
    assert!(e.to_string().contains("is not before"), "{e}");
    let e = backfill(&le, "data_sync_hourly", "2026-03-02T12:00", "2027-01-01", opts.clone()).await.unwrap_err();
    assert!(e.to_string().contains("in the future") && e.to_string().contains("scheduler launches the rest"), "{e}");
    let e = backfill(&le, "nope", "2026-03-02", "2026-03-03", opts.clone()).await.unwrap_err();
    assert!(e.to_string().contains("`nope` is not registered") && e.to_string().contains("data_sync_hourly"), "{e}");
    let e = backfill(&le, "data_sync_hourly", "noon", "2026-03-03", opts).await.unwrap_err();
    assert!(e.to_string().starts_with("--from"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_launches_in_process_and_by_request() {
    let env = Env::memory(data_sync(None), "2026-03-02T13:30:00Z");
    let plan = hourly("p").fixed("full", false).build().unwrap();
    env.register(vec![plan]).await;
    let le = env.launch_env();
    let all = launch_now(&le, "p", &[], DispatchOptions::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    let one = launch_now(&le, "p", &[("site_id".into(), "site2".into())], DispatchOptions::default()).await.unwrap();
    assert_eq!((one.len(), one[0].name.as_str()), (1, "p_site2"));
    let e = launch_now(&le, "p", &[("full".into(), "true".into())], DispatchOptions::default()).await.unwrap_err();
    assert!(
        e.to_string().contains("plan p: --param full=true: parameter `full` is fixed by the plan")
            && e.to_string().contains("cannot be overridden"),
        "{e}"
    );
    let e = launch_now(&le, "p", &[("site_id".into(), "site9".into())], DispatchOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("no parameter set with site_id = \"site9\""), "{e}");
    let e = launch_now(&le, "p", &[("nope".into(), "1".into())], DispatchOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("has no parameter `nope`"), "{e}");
    // Every bad --param at once.
    let bad = [("nope".into(), "1".into()), ("full".into(), "yes".into()), ("site_id".into(), "site9".into())];
    let e = launch_now(&le, "p", &bad, DispatchOptions::default()).await.unwrap_err().to_string();
    for line in [
        "plan p: --param nope=1: the flow has no parameter `nope`",
        "plan p: --param full=yes: parameter `full` expects a boolean (true or false), got \"yes\"",
        "plan p: --param site_id=site9: the plan has no parameter set with site_id = \"site9\"",
    ] {
        assert!(e.contains(line), "{line:?} missing from {e}");
    }
    assert_eq!(env.runs().await.len(), 4);

    // A request, as `braid plan launch` records it: the next pass of a scheduler starts it.
    let (reqs, live) = request_launch(
        &env.store,
        "p",
        &[("site_id".into(), "site3".into())],
        env.now().to_jiff(),
        braid_runtime::plan::DEAD_AFTER,
    )
    .await
    .unwrap();
    assert_eq!((reqs.len(), live.len()), (1, 0));
    assert_eq!(reqs[0].holder, None);
    let s = env.scheduler();
    let r = env.pass_at(&s, "2026-03-02T13:31:00Z").await;
    assert_eq!(r.adopted, 1);
    let runs = env.runs().await;
    assert_eq!(runs.len(), 5);
    assert_eq!(runs.iter().filter(|r| r.meta["launch"] == "manual").count(), 5);
    let l = env.store.plans.get_launch(&reqs[0].key).await.unwrap().unwrap();
    assert_eq!((l.state, l.status), (LaunchState::Finished, Some(RunStatus::Succeeded)));
}
