#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Parameter sets produced at each tick, by a plan file's `matrix_command` or a Rust
//! plan's `matrix_fn`: what they print is what launches, checked like static sets; a
//! failure is a recorded failed tick (store, metric, event), never a silent skip; and a
//! (tick, set) still launches exactly once with two schedulers.

mod plan_env;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use braid_core::PlanName;
use braid_runtime::plan::{
    BackfillOptions, LaunchEvent, LaunchPlan, PlanMetrics, Scheduler, SchedulerOptions, SetSource, backfill,
    check_plan_file, parse_plans,
};
use braid_runtime::{Flow, Param, ParamType};
use braid_store::{LaunchKind, TickFailure};
use plan_env::*;
use serde_json::json;

fn data_sync() -> Arc<Flow> {
    Arc::new(
        Flow::builder("data_sync")
            .param(Param::new("site_id", ParamType::String))
            .param(Param::new("full", ParamType::Bool).default(false))
            .step("start", |_ctx| async move { Ok(()) })
            .next("end")
            .step("end", |_ctx| async move { Ok(()) })
            .end()
            .build()
            .unwrap(),
    )
}

/// Writes an executable shell script `name` in `dir`.
fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A plan file in `dir` whose sites come from `./list-sites`, hourly; checked and read.
fn command_plan(env: &Env, dir: &Path, extra: &str) -> LaunchPlan {
    let file = dir.join("plans.toml");
    std::fs::write(
        &file,
        format!(
            "[[plan]]\nname = \"dyn\"\nflow = \"data_sync\"\nevery = \"1h\"\nmatrix_command = [\"./list-sites\", \"--region\", \"eu\"]\n{extra}\n"
        ),
    )
    .unwrap();
    check_plan_file(&file, &env.flows).unwrap().remove(0)
}

async fn failures(env: &Env, plan: &str) -> Vec<TickFailure> {
    env.store.plans.list_tick_failures(Some(&PlanName::new(plan).unwrap()), 0).await.unwrap()
}

fn names(ls: &[braid_store::LaunchRecord]) -> Vec<String> {
    ls.iter().map(|l| l.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_whose_sites_come_from_a_command_launches_what_it_prints_at_each_tick() {
    let env = Env::fs(data_sync(), "2026-03-02T00:30:00Z");
    let dir = tempfile::tempdir().unwrap();
    // It sees its arguments, the plan and the tick, and runs in the plan file's directory.
    script(
        dir.path(),
        "list-sites",
        r#"echo "$1 $2 $BRAID_PLAN $BRAID_PLAN_VERSION $BRAID_FLOW $BRAID_TICK" >> calls.txt
cat sites.json"#,
    );
    std::fs::write(dir.path().join("sites.json"), r#"[{"site_id": "site1"}, {"site_id": "site2", "full": true}]"#)
        .unwrap();
    let plan = command_plan(&env, dir.path(), "");
    match plan.set_source() {
        SetSource::Command { argv, dir: Some(d), timeout } => {
            assert_eq!(argv, ["./list-sites", "--region", "eu"]);
            assert_eq!(d, std::path::absolute(dir.path()).unwrap(), "recorded as the plan file's directory");
            assert_eq!(timeout, Duration::from_secs(30));
        }
        other => panic!("{other:?}"),
    }
    assert!(plan.parameter_sets().is_empty());
    env.register(vec![plan]).await;

    // The scheduler runs elsewhere: the command is still found by the recorded directory.
    let s = env.scheduler();
    let r = env.pass_at(&s, "2026-03-02T01:00:00Z").await;
    assert_eq!((r.won, r.failed_ticks), (2, 0));
    let mut ls = env.launches("dyn").await;
    ls.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(names(&ls), ["dyn_site1", "dyn_true_site2"]);
    // The sets used are recorded on each launch.
    assert_eq!(ls[1].set_key, r#"{"full":true,"site_id":"site2"}"#);
    assert_eq!(ls[1].params.get("full"), Some(&json!(true)));
    assert_eq!(ls[0].params.get("full"), None, "not given: the flow's default applies");
    assert_eq!(env.runs().await.len(), 2);

    // The team's list changes: the next tick launches what it prints then.
    std::fs::write(dir.path().join("sites.json"), r#"{"site_id": ["site1", "site3"]}"#).unwrap();
    let r = env.pass_at(&s, "2026-03-02T02:00:00Z").await;
    assert_eq!(r.won, 2);
    let at2: Vec<String> = env
        .launches("dyn")
        .await
        .into_iter()
        .filter(|l| l.tick.to_jiff() == t("2026-03-02T02:00:00Z"))
        .map(|l| l.name)
        .collect();
    assert_eq!(at2, ["dyn_site1", "dyn_site3"]);
    let calls = std::fs::read_to_string(dir.path().join("calls.txt")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        ["--region eu dyn 1 data_sync 2026-03-02T01:00:00Z", "--region eu dyn 1 data_sync 2026-03-02T02:00:00Z"]
    );
    assert!(failures(&env, "dyn").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_a_recorded_failed_tick_with_a_metric_and_an_event() {
    let env = Env::fs(data_sync(), "2026-03-02T00:30:00Z");
    let dir = tempfile::tempdir().unwrap();
    script(dir.path(), "list-sites", "echo 'connecting to inventory...' >&2\necho 'inventory is down' >&2\nexit 3");
    env.register(vec![command_plan(&env, dir.path(), "")]).await;
    let metrics = Arc::new(PlanMetrics::new());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let lenv = env.launch_env().with_plan_metrics(metrics.clone()).with_events(tx);
    let s = Scheduler::new(&lenv, SchedulerOptions::default());

    let r = env.pass_at(&s, "2026-03-02T01:00:00Z").await;
    assert_eq!((r.claims, r.failed_ticks), (0, 1));
    assert!(env.launches("dyn").await.is_empty());
    let f = failures(&env, "dyn").await;
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].tick.to_jiff(), f[0].kind, f[0].failures, f[0].version),
        (t("2026-03-02T01:00:00Z"), LaunchKind::Scheduled, 1, 1)
    );
    assert!(f[0].error.contains("`./list-sites --region eu` exited with status 3"), "{}", f[0].error);
    assert!(f[0].error.contains("inventory is down"), "the stderr's tail is kept: {}", f[0].error);
    assert_eq!(f[0].holder, s.id());
    assert!(metrics.encode().contains("braid_plan_matrix_failures_total{plan=\"dyn\"} 1"), "{}", metrics.encode());
    let mut failed = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let LaunchEvent::MatrixFailed { plan, tick, error } = e {
            failed.push((plan.to_string(), tick, error));
        }
    }
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].0.as_str(), failed[0].1), ("dyn", t("2026-03-02T01:00:00Z")));

    // The cursor moved on: the failed tick is not retried by every pass, the next one
    // runs the command again and launches.
    let r = env.pass_at(&s, "2026-03-02T01:30:00Z").await;
    assert_eq!((r.claims, r.failed_ticks), (0, 0));
    script(dir.path(), "list-sites", r#"echo '[{"site_id": "site1"}]'"#);
    let r = env.pass_at(&s, "2026-03-02T02:00:00Z").await;
    assert_eq!((r.won, r.failed_ticks), (1, 0));

    // A backfill of the failed tick runs the command again and launches it now.
    let bf = backfill(&lenv, "dyn", "2026-03-02T01:00:00Z", "2026-03-02T01:30:00Z", BackfillOptions::default())
        .await
        .unwrap();
    assert_eq!((bf.launched.len(), bf.failed_ticks.len(), bf.sets), (1, 0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_command_prints_is_checked_like_a_plan_files_sets_every_problem_at_once() {
    let env = Env::memory(data_sync(), "2026-03-02T00:30:00Z");
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            r#"echo '[{"site_id": 5}, {"sitee": "x"}, 3, {"site_id": "a"}, {"site_id": "a"}]'"#,
            &["parameter_sets[2]: is 3, not an object"],
        ),
        (
            r#"echo '[{"site_id": 5}, {"sitee": "x"}, {"site_id": "a"}, {"site_id": "a"}]'"#,
            &["parameter_sets[0].site_id", "parameter_sets[1].sitee", "repeats `parameter_sets[2]`"],
        ),
        ("echo 'site1 site2'", &["printed something that is not JSON", "print an array of parameter sets"]),
        (r#"echo '"site1"'"#, &["the parameter sets are a string"]),
        ("sleep 5", &["did not finish within 1s; it was killed", "matrix_command_timeout"]),
        ("head -c 1100000 /dev/zero | tr '\\0' ' '", &["printed more than 1024 KiB"]),
    ];
    let s = env.scheduler();
    for (i, (body, needles)) in cases.iter().enumerate() {
        script(dir.path(), "list-sites", body);
        // One plan per case, so each failure is its own row.
        let text = format!(
            "[[plan]]\nname = \"dyn{i}\"\nflow = \"data_sync\"\nevery = \"1h\"\nmatrix_command = [\"./list-sites\"]\nmatrix_command_dir = {:?}\nmatrix_timeout = \"1s\"\n",
            dir.path().display().to_string()
        );
        env.register(parse_plans(&text, "t.toml").unwrap()).await;
        let hour = format!("2026-03-02T{:02}:00:00Z", i + 1);
        let started = std::time::Instant::now();
        let r = env.pass_at(&s, &hour).await;
        assert!(started.elapsed() < Duration::from_secs(4), "a timeout kills the command");
        // The earlier cases' plans tick too (and fail with this case's script).
        assert_eq!(r.failed_ticks, i + 1, "case {i}");
        let f = failures(&env, &format!("dyn{i}")).await;
        assert_eq!(f[0].tick.to_jiff(), t(&hour));
        for n in *needles {
            assert!(f[0].error.contains(n), "case {i}: {n:?} missing from {}", f[0].error);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_fn_gives_the_sets_of_each_tick_and_its_error_fails_the_tick() {
    let env = Env::fs(data_sync(), "2026-03-02T00:30:00Z");
    let plan = LaunchPlan::builder("code", "data_sync")
        .every(Duration::from_secs(3600))
        .matrix_fn(|tick: jiff::Timestamp| {
            let hour = tick.to_zoned(jiff::tz::TimeZone::UTC).hour();
            match hour {
                2 => Err("the inventory service answered 503".to_owned()),
                3 => Ok(json!([{"site_id": 7}])),
                _ => Ok(json!({"site_id": (0..hour).map(|i| format!("s{i}")).collect::<Vec<_>>()})),
            }
        })
        .build()
        .unwrap();
    assert_eq!(plan.set_source(), SetSource::Function { timeout: Duration::from_secs(30) });
    assert_eq!(plan.to_json()["matrix_fn"], json!(true), "the stored plan says where its sets come from");
    env.register(vec![plan.clone()]).await;

    // A scheduler of a binary that does not declare the plan cannot call it: a failed
    // tick that says so.
    let stranger = env.scheduler();
    let r = env.pass_at(&stranger, "2026-03-02T01:00:00Z").await;
    assert_eq!(r.failed_ticks, 1);
    assert!(failures(&env, "code").await[0].error.contains("this binary does not declare"));
    stranger.shutdown(false).await.unwrap();

    let s = Scheduler::new(&env.launch_env().with_plans(&[plan]), SchedulerOptions::default());
    let r = env.pass_at(&s, "2026-03-02T01:00:00Z").await;
    assert_eq!(r.claims, 0, "the failed tick was passed already");
    let r = env.pass_at(&s, "2026-03-02T02:00:00Z").await;
    assert_eq!(r.failed_ticks, 1);
    let r = env.pass_at(&s, "2026-03-02T03:00:00Z").await;
    assert_eq!(r.failed_ticks, 1, "sets that do not fit the flow fail the tick too");
    let r = env.pass_at(&s, "2026-03-02T04:00:00Z").await;
    assert_eq!((r.won, r.failed_ticks), (4, 0));
    assert_eq!(names(&env.launches("code").await), ["code_s0", "code_s1", "code_s2", "code_s3"]);
    let f = failures(&env, "code").await;
    let errors: Vec<(String, &str)> = f.iter().map(|f| (f.tick.to_jiff().to_string(), f.error.as_str())).collect();
    assert_eq!(errors.len(), 3);
    assert!(errors[0].1.contains("parameter_sets[0].site_id"), "{errors:?}");
    assert_eq!(errors[1], ("2026-03-02T02:00:00Z".to_owned(), "matrix_fn failed: the inventory service answered 503"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_launch_each_tick_and_produced_set_exactly_once() {
    let env = Env::fs(data_sync(), "2026-03-02T00:30:00Z");
    let dir = tempfile::tempdir().unwrap();
    // Each call may see a different list (a site added between the two replicas'
    // calls): the union launches, each set once.
    script(
        dir.path(),
        "list-sites",
        r#"n=0; while ! mkdir "call$n" 2>/dev/null; do n=$((n + 1)); done
if [ $((n % 2)) -eq 0 ]; then echo '[{"site_id": "a"}, {"site_id": "b"}]'; else echo '[{"site_id": "a"}, {"site_id": "b"}, {"site_id": "c"}]'; fi"#,
    );
    env.register(vec![command_plan(&env, dir.path(), "")]).await;
    let (a, b) = (env.scheduler(), env.scheduler());
    for h in 1..=5 {
        env.clock.set(t(&format!("2026-03-02T{h:02}:00:00Z")));
        let (ra, rb) = tokio::join!(a.pass(), b.pass());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.won + rb.won, 3, "tick {h}: every set of the union once");
        assert_eq!(ra.failed_ticks + rb.failed_ticks, 0);
    }
    a.drain().await.unwrap();
    b.drain().await.unwrap();
    let ls = env.launches("dyn").await;
    assert_eq!(ls.len(), 15);
    let mut keys: Vec<String> = ls.iter().map(|l| l.key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 15);
    assert_eq!(env.runs().await.len(), 15, "one run per (tick, set)");
}

#[test]
fn dynamic_sets_are_declared_one_way_and_refused_with_every_problem() {
    let text = r#"
[[plan]]
name = "both"
flow = "data_sync"
matrix_command = ["./list-sites"]
matrix = { site_id = ["a"] }
matrix_timeout = "2h"

[[plan]]
name = "stray"
flow = "data_sync"
matrix_command_dir = "scripts"
matrix_timeout = "10s"

[[plan]]
name = "empty"
flow = "data_sync"
matrix_command = [""]

[[plan]]
name = "code"
flow = "data_sync"
matrix_fn = true
"#;
    let e = braid_runtime::plan::check_plan_text(text, "p.toml", &[data_sync()]).unwrap_err().to_string();
    for needle in [
        "plan both: matrix_command: give either `matrix_command` (sets produced at each tick) or `matrix`/`parameter_sets`",
        "plan both: matrix_timeout: \"2h\" is not between 1s and 1h",
        "plan stray: matrix_command_dir: applies to `matrix_command` only",
        "plan stray: matrix_timeout: applies to `matrix_command` or `matrix_fn` only",
        "plan empty: matrix_command: its first word, the program, is empty",
        "plan code: matrix_fn: is set by `LaunchPlanBuilder::matrix_fn` in Rust",
    ] {
        assert!(e.contains(needle), "{needle:?} missing from {e}");
    }
    assert!(!e.contains("missing"), "required parameters are checked at each tick, not before: {e}");
}
