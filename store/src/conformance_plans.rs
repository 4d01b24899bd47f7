//! Conformance checks of [`PlanStore`](crate::PlanStore), part of the suite in
//! [`conformance`](crate::conformance).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use braid_core::{FlowName, Label, PlanName, RunId, RunStatus, Timestamp};
use serde_json::json;

use crate::*;

fn plan_name(s: &str) -> PlanName {
    PlanName::new(s).unwrap()
}

fn labels(list: &[&str]) -> BTreeSet<Label> {
    list.iter().map(|l| l.parse().unwrap()).collect()
}

fn draft(name: &str, content: u32, l: &[&str], active: bool) -> PlanDraft {
    PlanDraft {
        name: plan_name(name),
        flow: FlowName::new("conf").unwrap(),
        labels: labels(l),
        spec: json!({"name": name, "content": content}),
        hash: format!("hash-{name}-{content}"),
        active,
    }
}

fn launch(plan: &str, tick: i64, set: &str, holder: Option<&str>) -> LaunchRecord {
    LaunchRecord {
        key: format!("{plan}/{tick}/{set}"),
        plan: plan_name(plan),
        version: 1,
        flow: FlowName::new("conf").unwrap(),
        kind: LaunchKind::Scheduled,
        tick: Timestamp::from_micros(tick),
        set_key: set.to_owned(),
        params: BTreeMap::from([("site".to_owned(), json!(set))]),
        name: format!("{plan}_{set}"),
        state: LaunchState::Pending,
        holder: holder.map(str::to_owned),
        run: None,
        status: None,
        note: None,
        created_at: Timestamp::from_micros(tick + 1),
        updated_at: Timestamp::from_micros(tick + 1),
    }
}

/// Conformance check: Registering a plan makes version 1, new content a new version and the same
/// content nothing; labels follow the latest version.
pub async fn plans_versioned_by_content(store: &Store) {
    let p = &store.plans;
    let t1 = Timestamp::from_micros(1_000);
    let regs = p.register_plans(vec![draft("a", 1, &["team=x"], true), draft("b", 1, &[], false)], t1).await.unwrap();
    assert_eq!(regs, vec![Registration::Created { version: 1 }, Registration::Created { version: 1 }]);
    let a = p.get_plan(&plan_name("a")).await.unwrap().unwrap();
    assert_eq!((a.version, a.active, a.active_since, a.cursor), (1, true, Some(t1), None));
    assert_eq!(a.spec, json!({"name": "a", "content": 1}));
    assert_eq!(a.labels, labels(&["team=x"]));
    let b = p.get_plan(&plan_name("b")).await.unwrap().unwrap();
    assert_eq!((b.active, b.active_since), (false, None));

    // Same content: nothing changes.
    let t2 = Timestamp::from_micros(2_000);
    let regs = p.register_plans(vec![draft("a", 1, &["team=x"], false)], t2).await.unwrap();
    assert_eq!(regs, vec![Registration::Unchanged { version: 1 }]);
    assert_eq!(p.get_plan(&plan_name("a")).await.unwrap().unwrap(), a);

    // Other content: a new version; the active flag and its start stay.
    let regs = p.register_plans(vec![draft("a", 2, &["team=y"], false)], t2).await.unwrap();
    assert_eq!(regs, vec![Registration::Updated { version: 2, previous: 1 }]);
    let a2 = p.get_plan(&plan_name("a")).await.unwrap().unwrap();
    assert_eq!((a2.version, a2.active, a2.active_since, a2.created_at, a2.updated_at), (2, true, Some(t1), t1, t2));
    assert_eq!(a2.labels, labels(&["team=y"]));
    let versions = p.list_plan_versions(&plan_name("a")).await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(versions[0].spec, json!({"name": "a", "content": 1}));
    let v1 = p.get_plan_version(&plan_name("a"), 1).await.unwrap().unwrap();
    assert_eq!(v1, versions[0]);
    assert!(p.get_plan_version(&plan_name("a"), 3).await.unwrap().is_none());
    assert!(p.get_plan(&plan_name("zz")).await.unwrap().is_none());

    // Two versions in one batch.
    let regs = p.register_plans(vec![draft("c", 1, &[], true), draft("c", 2, &[], true)], t2).await.unwrap();
    assert_eq!(regs, vec![Registration::Created { version: 1 }, Registration::Updated { version: 2, previous: 1 }]);

    // Labels follow the latest version in queries.
    let q = PlanQuery { labels: vec!["team=x".parse().unwrap()], ..Default::default() };
    assert!(p.list_plans(&q).await.unwrap().is_empty());
    let q = PlanQuery { labels: vec!["team=y".parse().unwrap()], ..Default::default() };
    assert_eq!(p.list_plans(&q).await.unwrap().len(), 1);
}

/// Conformance check: Plans list by flow, label and activity, and activate or deactivate by names
/// or labels in one write (unknown names change nothing); cursors only move forward.
pub async fn plans_listed_and_activated_by_label(store: &Store) {
    let p = &store.plans;
    let t = Timestamp::from_micros(10);
    p.register_plans(
        vec![
            draft("p1", 1, &["team=sync", "tier=gold"], false),
            draft("p2", 1, &["team=sync"], false),
            draft("p3", 1, &["team=other"], true),
        ],
        t,
    )
    .await
    .unwrap();
    let names = |v: Vec<PlanRecord>| v.into_iter().map(|p| p.name.to_string()).collect::<Vec<_>>();
    assert_eq!(names(p.list_plans(&PlanQuery::default()).await.unwrap()), ["p1", "p2", "p3"]);
    let sync = vec!["team=sync".parse::<Label>().unwrap()];
    let q = PlanQuery { labels: sync.clone(), ..Default::default() };
    assert_eq!(names(p.list_plans(&q).await.unwrap()), ["p1", "p2"]);
    let q =
        PlanQuery { labels: vec!["team=sync".parse().unwrap(), "tier=gold".parse().unwrap()], ..Default::default() };
    assert_eq!(names(p.list_plans(&q).await.unwrap()), ["p1"]);
    let q = PlanQuery { active: Some(true), ..Default::default() };
    assert_eq!(names(p.list_plans(&q).await.unwrap()), ["p3"]);
    let q = PlanQuery { flows: vec![FlowName::new("nope").unwrap()], ..Default::default() };
    assert!(p.list_plans(&q).await.unwrap().is_empty());
    let q = PlanQuery { without_spec: true, ..Default::default() };
    let light = p.list_plans(&q).await.unwrap();
    assert!(light.iter().all(|p| p.spec.is_null() && p.version == 1 && !p.hash.is_empty()));

    // Every plan with the label changes in one write.
    let t2 = Timestamp::from_micros(20);
    let changed = p.set_plans_active(&PlanSelector::Labels(sync.clone()), true, t2).await.unwrap();
    assert_eq!(changed, vec![(plan_name("p1"), true), (plan_name("p2"), true)]);
    let q = PlanQuery { active: Some(true), ..Default::default() };
    assert_eq!(names(p.list_plans(&q).await.unwrap()), ["p1", "p2", "p3"]);
    assert_eq!(p.get_plan(&plan_name("p1")).await.unwrap().unwrap().active_since, Some(t2));
    // Again: selected, unchanged.
    let again = p.set_plans_active(&PlanSelector::Labels(sync.clone()), true, t2).await.unwrap();
    assert_eq!(again, vec![(plan_name("p1"), false), (plan_name("p2"), false)]);

    // By name; an unknown name changes nothing and is named in the error.
    let sel = PlanSelector::Names(vec![plan_name("p1"), plan_name("ghost")]);
    let e = p.set_plans_active(&sel, false, t2).await.unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("`ghost`"), "{e}");
    assert!(p.get_plan(&plan_name("p1")).await.unwrap().unwrap().active);
    let sel = PlanSelector::Names(vec![plan_name("p1"), plan_name("p3")]);
    let off = p.set_plans_active(&sel, false, t2).await.unwrap();
    assert_eq!(off, vec![(plan_name("p1"), true), (plan_name("p3"), true)]);
    let p1 = p.get_plan(&plan_name("p1")).await.unwrap().unwrap();
    assert_eq!((p1.active, p1.active_since), (false, None));
    assert!(p.set_plans_active(&PlanSelector::Labels(vec![]), true, t2).await.is_err());
    let none = p.set_plans_active(&PlanSelector::Labels(vec!["team=none".parse().unwrap()]), true, t2).await.unwrap();
    assert!(none.is_empty());

    // Cursors only move forward.
    p.advance_cursors(vec![(plan_name("p2"), Timestamp::from_micros(500))]).await.unwrap();
    p.advance_cursors(vec![(plan_name("p2"), Timestamp::from_micros(400))]).await.unwrap();
    assert_eq!(p.get_plan(&plan_name("p2")).await.unwrap().unwrap().cursor, Some(Timestamp::from_micros(500)));
}

/// Conformance check: Of many schedulers claiming the same launches at once, each launch is won
/// once, and its claim is recorded.
pub async fn launches_claimed_once_under_concurrency(store: &Store) {
    let plans = store.plans.clone();
    let mut handles = Vec::new();
    for w in 0..8 {
        let plans = plans.clone();
        handles.push(tokio::spawn(async move {
            let batch: Vec<LaunchRecord> = (0..50)
                .flat_map(|tick| ["s1", "s2"].map(|s| launch("hourly", tick * 1000, s, Some(&format!("w{w}")))))
                .collect();
            let won = plans.claim_launches(batch.clone()).await.unwrap();
            batch.into_iter().zip(won).filter(|(_, won)| *won).map(|(l, _)| l.key).collect::<Vec<_>>()
        }));
    }
    let mut won: Vec<String> = Vec::new();
    for h in handles {
        won.extend(h.await.unwrap());
    }
    won.sort();
    let before = won.len();
    won.dedup();
    assert_eq!(before, won.len(), "a launch was claimed twice");
    assert_eq!(won.len(), 100, "every launch claimed once");
    let all = plans.list_launches(&LaunchQuery { limit: 500, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 100);
    // The claim is visible through the record store's claims too.
    let l = &all[0];
    let holder = store.records.claim_holder(LAUNCH_CLAIM_SCOPE, &l.key).await.unwrap();
    assert_eq!(holder, l.holder);
    assert!(!store.records.try_claim(LAUNCH_CLAIM_SCOPE, &l.key, "late").await.unwrap());
    let _: Arc<dyn PlanStore> = plans;
}

/// Conformance check: Launches update only in their expected state and holder, list by query, and
/// are adopted from dead holders and released.
pub async fn launches_updated_conditionally_listed_and_adopted(store: &Store) {
    let p = &store.plans;
    let won = p
        .claim_launches(vec![
            launch("a", 3000, "s1", Some("sched1")),
            launch("a", 1000, "s1", Some("sched1")),
            launch("a", 2000, "s2", None),
            launch("b", 1500, "s1", Some("dead")),
        ])
        .await
        .unwrap();
    assert_eq!(won, [true; 4]);
    assert_eq!(p.claim_launches(vec![launch("a", 1000, "s1", Some("x"))]).await.unwrap(), [false]);
    let got = p.get_launch("a/1000/s1").await.unwrap().unwrap();
    assert_eq!(got, launch("a", 1000, "s1", Some("sched1")));
    assert!(p.get_launch("nope").await.unwrap().is_none());

    // Newest tick first by default, filters combine.
    let keys = |v: Vec<LaunchRecord>| v.into_iter().map(|l| l.key).collect::<Vec<_>>();
    let q = LaunchQuery { plan: Some(plan_name("a")), ..Default::default() };
    assert_eq!(keys(p.list_launches(&q).await.unwrap()), ["a/3000/s1", "a/2000/s2", "a/1000/s1"]);
    let q = LaunchQuery {
        plan: Some(plan_name("a")),
        set_key: Some("s1".into()),
        oldest_first: true,
        ..Default::default()
    };
    assert_eq!(keys(p.list_launches(&q).await.unwrap()), ["a/1000/s1", "a/3000/s1"]);
    let q = LaunchQuery { before_tick: Some(Timestamp::from_micros(2000)), ..Default::default() };
    assert_eq!(keys(p.list_launches(&q).await.unwrap()), ["b/1500/s1", "a/1000/s1"]);
    let q = LaunchQuery { holder: Some("sched1".into()), limit: 1, ..Default::default() };
    assert_eq!(keys(p.list_launches(&q).await.unwrap()), ["a/3000/s1"]);

    // A conditional update applies only from the expected state and holder.
    let run = RunId::generate();
    let mut started = got.clone();
    started.state = LaunchState::Started;
    started.run = Some(run);
    assert!(!p.update_launch(&started, LaunchState::Pending, Some("other")).await.unwrap());
    assert!(!p.update_launch(&started, LaunchState::Started, Some("sched1")).await.unwrap());
    assert!(p.update_launch(&started, LaunchState::Pending, Some("sched1")).await.unwrap());
    assert!(!p.update_launch(&started, LaunchState::Pending, Some("sched1")).await.unwrap(), "applied twice");
    let mut finished = started.clone();
    finished.state = LaunchState::Finished;
    finished.status = Some(RunStatus::Succeeded);
    finished.note = Some("done".into());
    assert!(p.update_launch(&finished, LaunchState::Started, Some("sched1")).await.unwrap());
    assert_eq!(p.get_launch("a/1000/s1").await.unwrap().unwrap(), finished);
    let q = LaunchQuery { states: vec![LaunchState::Finished, LaunchState::Started], ..Default::default() };
    assert_eq!(keys(p.list_launches(&q).await.unwrap()), ["a/1000/s1"]);

    // Adoption: pending launches without a live holder, oldest first.
    let conf = [FlowName::new("conf").unwrap()];
    let live = vec!["sched1".to_owned()];
    let adopted = p.adopt_launches(&conf, &live, "sched2", 10).await.unwrap();
    assert_eq!(keys(adopted.clone()), ["b/1500/s1", "a/2000/s2"]);
    assert!(adopted.iter().all(|l| l.holder.as_deref() == Some("sched2")));
    let both = vec!["sched1".to_owned(), "sched2".to_owned()];
    assert!(p.adopt_launches(&conf, &both, "sched3", 10).await.unwrap().is_empty());
    assert!(p.adopt_launches(&[FlowName::new("other").unwrap()], &[], "s", 10).await.unwrap().is_empty());
    assert_eq!(p.adopt_launches(&conf, &[], "sched3", 1).await.unwrap().len(), 1);
    assert_eq!(p.release_launches("sched3").await.unwrap(), 1);
    assert_eq!(p.release_launches("sched2").await.unwrap(), 1);
    let free = LaunchQuery { states: vec![LaunchState::Pending], ..Default::default() };
    let pending = p.list_launches(&free).await.unwrap();
    assert_eq!(pending.iter().filter(|l| l.holder.is_none()).count(), 2);

    // Heartbeats.
    let mut s = SchedulerRecord {
        id: "sched1".into(),
        flows: conf.to_vec(),
        host: "h".into(),
        pid: 7,
        started_at: Timestamp::from_micros(1),
        seen_at: Timestamp::from_micros(2),
    };
    p.heartbeat(&s).await.unwrap();
    s.seen_at = Timestamp::from_micros(3);
    p.heartbeat(&s).await.unwrap();
    assert_eq!(p.list_schedulers().await.unwrap(), vec![s.clone()]);
    p.remove_scheduler("sched1").await.unwrap();
    assert!(p.list_schedulers().await.unwrap().is_empty());
}

/// Conformance check: Deleting plans (by name or label) retires them from listings and
/// activation, keeps their versions and launches, refuses unknown names all at once, and
/// registering a deleted name starts a new history whose version numbers continue.
pub async fn plans_deleted_and_registered_again(store: &Store) {
    let p = &store.plans;
    let t = Timestamp::from_micros(100);
    p.register_plans(
        vec![
            draft("d1", 1, &["team=sync"], true),
            draft("d2", 1, &["team=sync"], true),
            draft("d3", 1, &["team=other"], true),
        ],
        t,
    )
    .await
    .unwrap();
    p.register_plans(vec![draft("d1", 2, &["team=sync"], true)], t).await.unwrap();
    assert!(p.claim_launches(vec![launch("d1", 50, "s1", Some("x"))]).await.unwrap()[0]);
    let sel = PlanSelector::Names(vec![plan_name("d1"), plan_name("nope"), plan_name("gone")]);
    let e = p.delete_plans(&sel, t).await.unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("`nope`") && e.to_string().contains("`gone`"), "{e}");
    assert!(p.get_plan(&plan_name("d1")).await.unwrap().unwrap().deleted_at.is_none(), "nothing changed");

    let t2 = Timestamp::from_micros(200);
    let del = p.delete_plans(&PlanSelector::Labels(vec!["team=sync".parse().unwrap()]), t2).await.unwrap();
    assert_eq!(del, vec![(plan_name("d1"), true), (plan_name("d2"), true)]);
    let d1 = p.get_plan(&plan_name("d1")).await.unwrap().unwrap();
    assert_eq!((d1.deleted_at, d1.active, d1.active_since, d1.version), (Some(t2), false, None, 2));
    let names = |v: Vec<PlanRecord>| v.into_iter().map(|p| p.name.to_string()).collect::<Vec<_>>();
    assert_eq!(names(p.list_plans(&PlanQuery::default()).await.unwrap()), ["d3"]);
    let all =
        p.list_plans(&PlanQuery { include_deleted: true, without_spec: true, ..Default::default() }).await.unwrap();
    assert_eq!(names(all.clone()), ["d1", "d2", "d3"]);
    assert_eq!(all[0].deleted_at, Some(t2));
    // Deleted again by name: selected, unchanged; labels no longer select it.
    let again = p.delete_plans(&PlanSelector::Names(vec![plan_name("d2")]), t2).await.unwrap();
    assert_eq!(again, vec![(plan_name("d2"), false)]);
    let none = p.delete_plans(&PlanSelector::Labels(vec!["team=sync".parse().unwrap()]), t2).await.unwrap();
    assert!(none.is_empty());
    // A deleted plan cannot be activated; its launches and versions stay.
    let e = p.set_plans_active(&PlanSelector::Names(vec![plan_name("d1")]), true, t2).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(p.get_launch("d1/50/s1").await.unwrap().is_some());
    assert_eq!(p.list_plan_versions(&plan_name("d1")).await.unwrap().len(), 2);

    // Registering the name again: a new history, numbering continues, state afresh.
    let t3 = Timestamp::from_micros(300);
    let regs = p.register_plans(vec![draft("d1", 2, &["team=sync"], true)], t3).await.unwrap();
    assert_eq!(regs, vec![Registration::Created { version: 3 }]);
    let d1 = p.get_plan(&plan_name("d1")).await.unwrap().unwrap();
    assert_eq!(
        (d1.deleted_at, d1.active, d1.active_since, d1.created_at, d1.cursor, d1.version),
        (None, true, Some(t3), t3, None, 3)
    );
    assert_eq!(names(p.list_plans(&PlanQuery::default()).await.unwrap()), ["d1", "d3"]);
}

/// Conformance check: A parameter set is paused only for the plan's current version and
/// once; resuming returns the pause and records the resume; a new version or a deletion
/// clears the states; pauses of unknown plans are refused.
pub async fn parameter_sets_paused_and_resumed(store: &Store) {
    let p = &store.plans;
    let t = Timestamp::from_micros(1_000);
    p.register_plans(vec![draft("ps", 1, &[], true), draft("other", 1, &[], true)], t).await.unwrap();
    let (r1, r2) = (RunId::generate(), RunId::generate());
    let pause = SetPause { failures: 2, runs: vec![r2, r1], at: Timestamp::from_micros(1_500) };
    let ps = plan_name("ps");
    assert!(!p.pause_set(&ps, "s1", 2, pause.clone()).await.unwrap(), "not the current version");
    assert!(!p.pause_set(&plan_name("ghost"), "s1", 1, pause.clone()).await.unwrap());
    assert!(p.pause_set(&ps, "s1", 1, pause.clone()).await.unwrap());
    assert!(!p.pause_set(&ps, "s1", 1, pause.clone()).await.unwrap(), "paused already");
    assert!(p.pause_set(&plan_name("other"), "s9", 1, pause.clone()).await.unwrap());
    let states = p.list_set_states(Some(&ps), true).await.unwrap();
    assert_eq!(
        states,
        vec![ParamSetState {
            plan: ps.clone(),
            set_key: "s1".into(),
            version: 1,
            paused: Some(pause.clone()),
            resumed_at: None
        }]
    );
    assert_eq!(p.list_set_states(None, true).await.unwrap().len(), 2);

    // Resume: the pause comes back, the resume is recorded, a set never paused too.
    let t2 = Timestamp::from_micros(2_000);
    let resumed = p.resume_sets(&ps, &["s1".into(), "s2".into()], t2).await.unwrap();
    assert_eq!(resumed, vec![("s1".to_owned(), Some(pause.clone())), ("s2".to_owned(), None)]);
    assert!(p.list_set_states(Some(&ps), true).await.unwrap().is_empty());
    let all = p.list_set_states(Some(&ps), false).await.unwrap();
    assert_eq!(
        all.iter().map(|s| (s.set_key.as_str(), s.resumed_at)).collect::<Vec<_>>(),
        [("s1", Some(t2)), ("s2", Some(t2))]
    );
    assert!(all.iter().all(|s| s.paused.is_none()));
    let e = p.resume_sets(&plan_name("ghost"), &["s1".into()], t2).await.unwrap_err();
    assert!(e.is_not_found() && e.to_string().contains("`ghost`"), "{e}");

    // Paused again, then a new version clears every state of the plan (not the other's).
    assert!(p.pause_set(&ps, "s1", 1, pause.clone()).await.unwrap());
    p.register_plans(vec![draft("ps", 1, &[], true)], t2).await.unwrap();
    assert_eq!(p.list_set_states(Some(&ps), false).await.unwrap().len(), 2, "same content: no new version");
    p.register_plans(vec![draft("ps", 2, &[], true)], t2).await.unwrap();
    assert!(p.list_set_states(Some(&ps), false).await.unwrap().is_empty());
    assert!(p.pause_set(&ps, "s1", 2, pause.clone()).await.unwrap());
    // Deleting clears them too, and a deleted plan neither pauses nor resumes.
    let other = plan_name("other");
    p.delete_plans(&PlanSelector::Names(vec![ps.clone(), other.clone()]), t2).await.unwrap();
    assert!(p.list_set_states(None, false).await.unwrap().is_empty());
    assert!(!p.pause_set(&ps, "s1", 2, pause).await.unwrap());
    assert!(p.resume_sets(&ps, &["s1".into()], t2).await.unwrap_err().is_not_found());
}

/// Conformance check: A tick whose parameter sets could not be produced is recorded once
/// per (plan, tick): a second failure of that tick counts up and replaces the error,
/// keeping when it first failed; listing is newest tick first, per plan or for all,
/// within the limit, and survives the plan's deletion (its history).
pub async fn failed_ticks_recorded_once_per_tick(store: &Store) {
    let p = &store.plans;
    let t = Timestamp::from_micros(1_000);
    p.register_plans(vec![draft("dyn", 1, &[], true), draft("dyn2", 1, &[], true)], t).await.unwrap();
    let failure = |plan: &str, tick: i64, error: &str, at: i64| TickFailure {
        plan: plan_name(plan),
        version: 1,
        tick: Timestamp::from_micros(tick),
        kind: LaunchKind::Scheduled,
        holder: "scheduler@a".into(),
        error: error.into(),
        failures: 1,
        first_at: Timestamp::from_micros(at),
        last_at: Timestamp::from_micros(at),
    };
    assert!(p.record_tick_failure(&failure("dyn", 3_600, "exit status 3: no sites", 3_601)).await.unwrap());
    assert!(p.record_tick_failure(&failure("dyn", 7_200, "timed out after 30s", 7_201)).await.unwrap());
    assert!(p.record_tick_failure(&failure("dyn2", 5_000, "bad json", 5_001)).await.unwrap());
    // The same tick again, from another replica and a backfill: counted, error replaced.
    let mut again = failure("dyn", 3_600, "exit status 4: still no sites", 9_000);
    again.holder = "backfill@b".into();
    again.kind = LaunchKind::Backfill;
    assert!(!p.record_tick_failure(&again).await.unwrap());

    let list = p.list_tick_failures(Some(&plan_name("dyn")), 0).await.unwrap();
    assert_eq!(list.iter().map(|f| f.tick.as_micros()).collect::<Vec<_>>(), [7_200, 3_600], "newest tick first");
    let first = &list[1];
    assert_eq!(
        (first.failures, first.error.as_str(), first.holder.as_str(), first.kind),
        (2, "exit status 4: still no sites", "backfill@b", LaunchKind::Backfill)
    );
    assert_eq!((first.first_at.as_micros(), first.last_at.as_micros()), (3_601, 9_000));
    assert_eq!(list[0], failure("dyn", 7_200, "timed out after 30s", 7_201), "every field kept");
    let all = p.list_tick_failures(None, 0).await.unwrap();
    assert_eq!(all.iter().map(|f| f.tick.as_micros()).collect::<Vec<_>>(), [7_200, 5_000, 3_600]);
    assert_eq!(p.list_tick_failures(None, 2).await.unwrap().len(), 2, "the limit holds");
    assert!(p.list_tick_failures(Some(&plan_name("ghost")), 0).await.unwrap().is_empty());

    p.delete_plans(&PlanSelector::Names(vec![plan_name("dyn")]), t).await.unwrap();
    assert_eq!(p.list_tick_failures(Some(&plan_name("dyn")), 0).await.unwrap().len(), 2, "kept as history");
}
