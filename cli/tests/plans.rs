#![allow(clippy::unwrap_used)]
//! Launch plans end to end on an fs store (and the scheduler crash points on PostgreSQL
//! too): the flow binary's `plans apply`, `backfill`,
//! `plans launch` and `scheduler --once` (through `flow_main_from`), and the `braid`
//! binary's `plan list|show|activate|deactivate|launch` and `runs --name/--plan`, with
//! the example plan file `cli/examples/sites.toml`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use braid_runtime::Flow;
use serde_json::{Value, json};

mod child;

mod plan_cli;
use plan_cli::*;

fn flowbin(store: &Path, args: &[&str]) -> ExitCode {
    flowbin_of(data_sync, store, args)
}

/// The `sites` example's flow.
fn data_sync() -> braid_runtime::Result<Flow> {
    sites_flow()
}

fn sites_toml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sites.toml")
}

const FROM: &str = "2026-03-02T09:00";
const TO: &str = "2026-03-02T12:00";

#[test]
fn apply_backfill_twice_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".braid");
    let file = sites_toml();
    let file = file.to_str().unwrap();
    assert_eq!(flowbin(&store, &["plans", "apply", file]), ExitCode::SUCCESS);
    assert_eq!(flowbin(&store, &["plans", "apply", file]), ExitCode::SUCCESS, "same content: a no-op");

    let list = braid_json(&store, &["plan", "list"]);
    let plans = list.as_array().unwrap();
    assert_eq!(plans.len(), 1);
    let p = &plans[0];
    assert_eq!(p["name"], "data_sync_hourly");
    assert_eq!(p["flow"], "data_sync");
    assert_eq!(p["version"], 1);
    assert_eq!(p["active"], true);
    assert_eq!(p["labels"], serde_json::json!({"team": "sync"}));
    assert_eq!(p["schedule"], serde_json::json!({"cron": "0 * * * *", "timezone": "America/New_York"}));
    assert_eq!(p["parameter_sets"], 3);
    assert!(p["next_tick_local"].as_str().unwrap().ends_with("[America/New_York]"));
    assert_eq!(braid_json(&store, &["plan", "list", "--label", "team=other"]), serde_json::json!([]));
    assert_eq!(braid_json(&store, &["plan", "list", "--label", "team=sync"]).as_array().unwrap().len(), 1);

    // Three hours: 3 ticks x 3 sites.
    assert_eq!(flowbin(&store, &["backfill", "data_sync_hourly", "--from", FROM, "--to", TO]), ExitCode::SUCCESS);
    let runs = braid_json(&store, &["runs", "data_sync", "--limit", "0"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 9);
    let mut names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["data_sync_hourly_site1", "data_sync_hourly_site2", "data_sync_hourly_site3"]);
    assert!(runs.iter().all(|r| r["status"] == "succeeded" && r["meta"]["plan"] == "data_sync_hourly"));
    let ticks: std::collections::BTreeSet<&str> = runs.iter().map(|r| r["meta"]["tick"].as_str().unwrap()).collect();
    assert_eq!(
        ticks.into_iter().collect::<Vec<_>>(),
        ["2026-03-02T14:00:00Z", "2026-03-02T15:00:00Z", "2026-03-02T16:00:00Z"]
    );

    // The same backfill again launches none.
    assert_eq!(flowbin(&store, &["backfill", "data_sync_hourly", "--from", FROM, "--to", TO]), ExitCode::SUCCESS);
    assert_eq!(braid_json(&store, &["runs", "data_sync", "--limit", "0"]).as_array().unwrap().len(), 9);

    // Names and plans filter runs.
    let site1 = braid_json(&store, &["runs", "data_sync", "--name", "data_sync_hourly_site1"]);
    assert_eq!(site1.as_array().unwrap().len(), 3);
    let all = braid_json(&store, &["runs", "--name", "data_sync_hourly_*", "--limit", "0"]);
    assert_eq!(all.as_array().unwrap().len(), 9);
    assert_eq!(
        braid_json(&store, &["runs", "--plan", "data_sync_hourly", "--limit", "4"]).as_array().unwrap().len(),
        4
    );
    assert_eq!(braid_json(&store, &["runs", "--plan", "other"]), serde_json::json!([]));
    let text = braid(&store, &["runs", "data_sync", "--name", "data_sync_hourly_site2"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("data_sync_hourly_site2"));

    // `plan show`: versions, next ticks, recent launches per set.
    let show = braid_json(&store, &["plan", "show", "data_sync_hourly", "--ticks", "3"]);
    assert_eq!(show["versions"].as_array().unwrap().len(), 1);
    assert_eq!(show["next_ticks"].as_array().unwrap().len(), 3);
    let sets = show["parameter_set_details"].as_array().unwrap();
    assert_eq!(sets.len(), 3);
    assert_eq!(sets[0]["run_name"], "data_sync_hourly_site1");
    assert_eq!(sets[0]["recent"].as_array().unwrap().len(), 3);
    assert_eq!(sets[0]["recent"][0]["tick"], "2026-03-02T16:00:00Z");
    assert_eq!(sets[0]["recent"][0]["status"], "succeeded");
    assert_eq!(sets[0]["recent"][0]["kind"], "backfill");
    let text = String::from_utf8_lossy(&braid(&store, &["plan", "show", "data_sync_hourly"]).stdout).into_owned();
    assert!(text.contains("next ticks (America/New_York)") && text.contains("data_sync_hourly_site3"), "{text}");
}

#[test]
fn versions_activation_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".braid");
    let good = dir.path().join("plans.toml");
    let write = |extra: &str| {
        std::fs::write(
            &good,
            format!(
                "[[plan]]\nname = \"a\"\nflow = \"data_sync\"\ncron = \"0 * * * *\"\nlabels = {{ team = \"sync\" }}\nfixed = {{ site_id = \"x\" }}\n{extra}\n\
                 [[plan]]\nname = \"b\"\nflow = \"data_sync\"\nevery = \"15m\"\nlabels = {{ team = \"sync\" }}\nmatrix = {{ site_id = [\"p\", \"q\"] }}\n"
            ),
        )
        .unwrap();
    };
    write("");
    let path = good.to_str().unwrap();
    assert_eq!(flowbin(&store, &["plans", "apply", path]), ExitCode::SUCCESS);
    write("defaults = { full = true }");
    assert_eq!(flowbin(&store, &["plans", "apply", path]), ExitCode::SUCCESS);
    let list = braid_json(&store, &["plan", "list"]);
    let versions: Vec<(String, i64)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(versions, [("a".to_owned(), 2), ("b".to_owned(), 1)]);

    // Both by label, in one write.
    let off = braid_json(&store, &["plan", "deactivate", "--label", "team=sync"]);
    assert_eq!(off["plans"].as_array().unwrap().len(), 2);
    assert!(braid_json(&store, &["plan", "list"]).as_array().unwrap().iter().all(|p| p["active"] == false));
    let on = braid_json(&store, &["plan", "activate", "b"]);
    assert_eq!(on["plans"], serde_json::json!([{"plan": "b", "changed": true}]));
    let out = braid(&store, &["plan", "activate", "b", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`ghost`"), "{}", stderr(&out));
    let out = braid(&store, &["plan", "activate"]);
    assert_eq!(out.status.code(), Some(2));

    // A bad file registers nothing and names the bad plan; exit 2.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[plan]]\nname = \"c\"\nflow = \"data_sync\"\nfixed = { site_id = \"x\" }\n\
         [[plan]]\nname = \"d\"\nflow = \"data_sync\"\ncron = \"0 * * *\"\nmatrix = { site_id = [1] }\n",
    )
    .unwrap();
    assert_eq!(flowbin(&store, &["plans", "apply", bad.to_str().unwrap()]), ExitCode::from(2));
    let names: Vec<String> = braid_json(&store, &["plan", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(flowbin(&store, &["plans", "apply", "--dry-run", bad.to_str().unwrap()]), ExitCode::from(2));
    assert_eq!(flowbin(&store, &["plans", "apply", "/nonexistent/plans.toml"]), ExitCode::from(2));
}

#[test]
fn manual_launches_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".braid");
    assert_eq!(flowbin(&store, &["plans", "apply", sites_toml().to_str().unwrap()]), ExitCode::SUCCESS);

    // In-process: one site, a default overridden.
    let code =
        flowbin(&store, &["plans", "launch", "data_sync_hourly", "--param", "site_id=site2", "--param", "full=true"]);
    assert_eq!(code, ExitCode::SUCCESS);
    let runs = braid_json(&store, &["runs", "data_sync"]);
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["name"], "data_sync_hourly_site2");
    assert_eq!(runs[0]["params"]["full"], true);
    assert_eq!(runs[0]["meta"]["launch"], "manual");

    // Recorded by `braid`, started by the next scheduler pass.
    let req = braid_json(&store, &["plan", "launch", "data_sync_hourly", "--param", "site_id=site3"]);
    assert_eq!(req["launches"].as_array().unwrap().len(), 1);
    assert_eq!(req["schedulers"], serde_json::json!([]));
    let text = braid(&store, &["plan", "launch", "data_sync_hourly"]);
    assert!(text.status.success());
    assert!(stderr(&text).contains("no scheduler of flow `data_sync` is running"), "{}", stderr(&text));
    assert_eq!(flowbin(&store, &["scheduler", "--once"]), ExitCode::SUCCESS);
    let runs = braid_json(&store, &["runs", "data_sync"]);
    assert_eq!(runs.as_array().unwrap().len(), 5, "1 in-process + 1 + 3 requested");

    // Usage errors: exit 2, with what to do.
    let out = braid(&store, &["plan", "launch", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`nope` is not registered") && stderr(&out).contains("data_sync_hourly"));
    let out = braid(&store, &["plan", "launch", "data_sync_hourly", "--param", "site_id=site9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no parameter set with site_id = \"site9\""), "{}", stderr(&out));
    let out = braid(&store, &["plan", "show", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("launch plan `nope` not found"), "{}", stderr(&out));
    let future = flowbin(&store, &["backfill", "data_sync_hourly", "--from", "2026-03-02", "--to", "2099-01-01"]);
    assert_eq!(future, ExitCode::from(2));
    assert_eq!(flowbin(&store, &["backfill", "nope", "--from", FROM, "--to", TO]), ExitCode::from(2));
    assert_eq!(flowbin(&store, &["backfill", "data_sync_hourly", "--from", "noon", "--to", TO]), ExitCode::from(2));
    assert_eq!(flowbin(&store, &["scheduler", "--max-runs", "0", "--once"]), ExitCode::from(2));
    // Dry run: lists, claims nothing.
    let dry = flowbin(&store, &["backfill", "data_sync_hourly", "--from", FROM, "--to", TO, "--dry-run"]);
    assert_eq!(dry, ExitCode::SUCCESS);
    assert_eq!(braid_json(&store, &["runs", "data_sync"]).as_array().unwrap().len(), 5);
}

const CRASH_STORE_ENV: &str = "BRAID_TEST_CRASH_SCHEDULER_STORE";
/// Arguments before and after `scheduler --once` in the crash test's child (JSON: two
/// lists), e.g. `--blobs` and `--on`.
const CRASH_ARGS_ENV: &str = "BRAID_TEST_CRASH_SCHEDULER_ARGS";

/// Entry point of the child process of the scheduler crash test; does nothing otherwise.
#[test]
fn crash_scheduler_child() {
    let Ok(store) = std::env::var(CRASH_STORE_ENV) else { return };
    let (mut args, after): (Vec<String>, Vec<String>) =
        std::env::var(CRASH_ARGS_ENV).map(|a| serde_json::from_str(&a).unwrap()).unwrap_or_default();
    args.extend(["scheduler", "--once", "--max-runs", "1"].map(str::to_owned));
    args.extend(after);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = flowbin(Path::new(&store), &args);
    // Reaching here means the crash point did not fire: say so through the exit code.
    std::process::exit(if code == ExitCode::SUCCESS { 10 } else { 11 });
}

#[test]
fn a_scheduler_killed_between_claiming_and_starting_leaves_a_launch_started_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".braid");
    killed_scheduler_replicas(&store, &[], &[]);
}

/// The same on PostgreSQL, with the scheduler's runs in its own process: replicas on
/// one database, one dying at each crash point, the next adopting what it claimed.
#[test]
fn a_scheduler_replica_killed_mid_tick_on_postgres_leaves_each_launch_started_exactly_once() {
    let Some(pg) = braid_store::test_servers::postgres() else { return };
    let blobs = tempfile::tempdir().unwrap();
    let blobs = format!("file://{}", blobs.path().display());
    let db = pg.fresh_database();
    killed_scheduler_replicas(Path::new(&db), &["--blobs", &blobs], &["--on", "process"]);
}

/// For each crash point of a launch: a scheduler process (`FLOW_ARGS scheduler --once
/// SCHEDULER_ARGS`) dies there, and the next scheduler pass starts the launch exactly once.
fn killed_scheduler_replicas(store: &Path, flow_args: &[&str], scheduler_args: &[&str]) {
    let points = ["launch-claimed", "launch-run-id-recorded", "launch-run-created", "launch-started"];
    let with = |args: &[&str]| -> Vec<String> {
        flow_args
            .iter()
            .chain(args)
            .chain(scheduler_args.iter().filter(|_| args[0] == "scheduler"))
            .map(|s| (*s).to_owned())
            .collect()
    };
    let flowbin_with = |args: &[&str]| {
        let all = with(args);
        flowbin(store, &all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let braid_with = |args: &[&str]| {
        let mut all: Vec<&str> = flow_args.to_vec();
        all.extend_from_slice(args);
        braid_json(store, &all)
    };
    let sites = sites_toml();
    assert_eq!(flowbin_with(&["plans", "apply", sites.to_str().unwrap()]), ExitCode::SUCCESS);
    for (round, point) in points.into_iter().enumerate() {
        braid_with(&["plan", "launch", "data_sync_hourly", "--param", "site_id=site1"]);

        // A scheduler process dies (abort: no destructor runs) at the crash point.
        let child_args = (flow_args, scheduler_args);
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_scheduler_child", "--test-threads", "1", "--nocapture"])
            .env(CRASH_STORE_ENV, store)
            .env(CRASH_ARGS_ENV, serde_json::to_string(&child_args).unwrap())
            .env("FAILPOINTS", format!("{point}=return"))
            .output()
            .unwrap();
        assert!(
            child.status.code().is_none(),
            "{point}: the child was killed by its crash point: {:?} {}",
            child.status,
            String::from_utf8_lossy(&child.stderr)
        );

        // Restarted, a scheduler on the same machine sees that process gone, adopts the
        // launch at once and starts it exactly once.
        assert_eq!(flowbin_with(&["scheduler", "--once"]), ExitCode::SUCCESS, "{point}");
        let runs = braid_with(&["runs", "data_sync", "--limit", "0"]);
        let runs = runs.as_array().unwrap();
        assert_eq!(runs.len(), round + 1, "{point}: one more run, started once: {runs:?}");
        let newest = &runs[0];
        assert_eq!(
            (newest["name"].as_str(), newest["status"].as_str()),
            (Some("data_sync_hourly_site1"), Some("succeeded")),
            "{point}"
        );
        let show = braid_with(&["plan", "show", "data_sync_hourly"]);
        let recent = &show["parameter_set_details"][0]["recent"];
        // The latest few launches, newest first, each started once and finished.
        assert!(
            recent
                .as_array()
                .unwrap()
                .iter()
                .all(|l| (&l["state"], &l["status"]) == (&json!("finished"), &json!("succeeded"))),
            "{point}: {recent}"
        );
        assert_eq!(recent[0]["run"].as_str(), newest["id"].as_str(), "{point}: the launch names its run");

        // Another pass starts nothing more.
        assert_eq!(flowbin_with(&["scheduler", "--once"]), ExitCode::SUCCESS);
        let again = braid_with(&["runs", "data_sync", "--limit", "0"]);
        assert_eq!(again.as_array().unwrap().len(), round + 1, "{point}");
    }
}

#[test]
fn as_flow_binary() {
    child::serve(|| vec![data_sync()]);
}

/// The plan file of issue 11: a bad cron expression, an unknown time zone, integers in
/// the matrix for a string parameter and an unknown fixed parameter.
fn four_problems() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/fixtures/four_problems.toml")
}

#[test]
fn plans_apply_lists_all_four_problems_of_a_plan_and_registers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".braid");
    let file = four_problems();
    for dry_run in [true, false] {
        let mut args = vec!["plans", "apply", file.to_str().unwrap()];
        if dry_run {
            args.push("--dry-run");
        }
        let out = child::flow_binary(&store, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.starts_with("error: 1 of 1 plans in "), "{err}");
        for line in [
            "\n  plan data_sync_hourly: cron: \"61 * * * *\" does not parse",
            "\n  plan data_sync_hourly: timezone: \"Mars/Base\" is not a known time zone",
            "\n  plan data_sync_hourly: matrix.site_id[0]: 1 is an integer, the flow's parameter `site_id` is a string",
            "\n  plan data_sync_hourly: fixed.region: the flow has no parameter `region`; it has: `site_id` (string), `full` (bool)",
        ] {
            assert!(err.contains(line), "{line:?} missing from:\n{err}");
        }
    }
    // Nothing was registered (the store holds no plan).
    let out = braid(&store, &["plan", "list", "--json"]);
    if out.status.success() {
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list, serde_json::json!([]));
    } else {
        assert!(stderr(&out).contains("no braid store"), "{}", stderr(&out));
    }
}
