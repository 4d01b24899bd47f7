#![allow(clippy::unwrap_used)]
//! `braid plan resume-set` and `braid plan delete` end to end on an fs store, with the
//! paused sets and deletions that `plan show` and `plan list` (text and `--json`) report.

use std::path::Path;
use std::process::ExitCode;

use braid_runtime::{Flow, Param, ParamType};
use serde_json::{Value, json};

mod plan_cli;
use plan_cli::*;

fn flowbin(store: &Path, args: &[&str]) -> ExitCode {
    flowbin_of(data_sync, store, args)
}

/// `data_sync(site_id)`: site2 is unreachable (its runs fail).
fn data_sync() -> braid_runtime::Result<Flow> {
    Flow::builder("data_sync")
        .param(Param::new("site_id", ParamType::String))
        .step("start", |ctx| async move {
            let site: String = ctx.param("site_id")?;
            if site == "site2" {
                return Err("site2 is unreachable".into());
            }
            Ok(())
        })
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

const PLANS: &str = r#"
[[plan]]
name = "sync"
flow = "data_sync"
cron = "0 * * * *"
labels = { team = "sync" }
matrix = { site_id = ["site1", "site2", "site3"] }
pause_after_failures = 2

[[plan]]
name = "other"
flow = "data_sync"
every = "1h"
labels = { team = "other" }
fixed = { site_id = "site1" }
"#;

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".braid");
    let file = dir.path().join("plans.toml");
    std::fs::write(&file, PLANS).unwrap();
    assert_eq!(flowbin(&store, &["plans", "apply", file.to_str().unwrap()]), ExitCode::SUCCESS);
    (dir, store, file)
}

#[test]
fn a_set_paused_after_failures_is_shown_by_plan_show_and_list_and_resumed_with_resume_set() {
    let (_dir, store, _file) = setup();
    // Three hours of ticks: site2 fails three times, so it pauses after the second.
    let code = flowbin(&store, &["backfill", "sync", "--from", "2026-03-02T09:00Z", "--to", "2026-03-02T12:00Z"]);
    assert_eq!(code, ExitCode::from(1), "site2's runs failed");

    let show = braid_json(&store, &["plan", "show", "sync"]);
    let paused = show["paused_sets"].as_array().unwrap();
    assert_eq!(paused.len(), 1, "{show:#}");
    let p = &paused[0];
    assert_eq!(p["run_name"], "sync_site2");
    assert_eq!(p["values"], json!({"site_id": "site2"}));
    assert_eq!(p["failures"], 2);
    assert_eq!(p["version"], 1);
    assert!(p["reason"].as_str().unwrap().starts_with("paused after 2 consecutive failures"), "{p}");
    assert!(p["reason"].as_str().unwrap().contains("braid plan resume-set sync --param site_id=site2"), "{p}");
    // The failed runs it names are site2's failed runs.
    let runs = braid_json(&store, &["runs", "data_sync", "--name", "sync_site2", "--limit", "0"]);
    let failed: Vec<&str> = runs.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(p["runs"].as_array().unwrap().len(), 2);
    assert!(p["runs"].as_array().unwrap().iter().all(|r| failed.contains(&r.as_str().unwrap())), "{p} {failed:?}");
    let details = show["parameter_set_details"].as_array().unwrap();
    assert!(details[0]["paused"].is_null() && details[1]["paused"]["failures"] == 2, "{details:#?}");
    assert_eq!(show["pause_after_failures"], 2);

    let list = braid_json(&store, &["plan", "list"]);
    let sync = list.as_array().unwrap().iter().find(|p| p["name"] == "sync").unwrap();
    assert_eq!(sync["paused_sets"].as_array().unwrap().len(), 1);
    assert_eq!(sync["paused_sets"][0]["run_name"], "sync_site2");
    let other = list.as_array().unwrap().iter().find(|p| p["name"] == "other").unwrap();
    assert_eq!(other["paused_sets"], json!([]));
    let text = stdout(&braid(&store, &["plan", "show", "sync"]));
    assert!(text.contains("paused") && text.contains("sync_site2 since"), "{text}");
    assert!(stdout(&braid(&store, &["plan", "list"])).contains("3 (1 paused)"));

    // Resume it: the pause is gone, and the command says what it resumed.
    let bad = braid(&store, &["plan", "resume-set", "sync", "--param", "site_id=site9"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("no parameter set has site_id = site9; its values are site1, site2, site3"),
        "{}",
        stderr(&bad)
    );
    let unknown = braid(&store, &["plan", "resume-set", "ghost", "--param", "site_id=site2"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("`ghost` is not registered"), "{}", stderr(&unknown));
    let resumed = braid_json(&store, &["plan", "resume-set", "sync", "--param", "site_id=site2"]);
    assert_eq!(resumed["plan"], "sync");
    let r = &resumed["resumed"][0];
    assert_eq!(
        (r["run_name"].as_str(), r["was_paused"].as_bool(), r["failures"].as_i64()),
        (Some("sync_site2"), Some(true), Some(2))
    );
    assert_eq!(braid_json(&store, &["plan", "show", "sync"])["paused_sets"], json!([]));
    let again = braid(&store, &["plan", "resume-set", "sync", "--param", "site_id=site2"]);
    assert!(again.status.success());
    assert!(stdout(&again).contains("resumed 0 paused parameter set(s)") && stdout(&again).contains("1 not paused"));
}

#[test]
fn plan_delete_retires_plans_refuses_unknown_names_and_a_reapplied_plan_starts_a_new_history() {
    let (_dir, store, file) = setup();
    assert_eq!(flowbin(&store, &["plans", "launch", "other"]), ExitCode::SUCCESS);

    // Every unknown name at once; nothing deleted.
    let out = braid(&store, &["plan", "delete", "other", "ghost1", "ghost2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`ghost1`") && stderr(&out).contains("`ghost2`"), "{}", stderr(&out));
    assert_eq!(braid_json(&store, &["plan", "list"]).as_array().unwrap().len(), 2);
    assert_eq!(braid(&store, &["plan", "delete"]).status.code(), Some(2));

    let deleted = braid_json(&store, &["plan", "delete", "other"]);
    assert_eq!(deleted, json!({"deleted": [{"plan": "other", "changed": true}]}));
    let names =
        |v: Value| v.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(braid_json(&store, &["plan", "list"])), ["sync"]);
    let all = braid_json(&store, &["plan", "list", "--all"]);
    assert_eq!(names(all.clone()), ["other", "sync"]);
    assert!(all[0]["deleted_at"].is_string() && all[0]["active"] == false && all[1]["deleted_at"].is_null());
    assert!(stdout(&braid(&store, &["plan", "list", "--all"])).contains("deleted "));
    assert!(braid_json(&store, &["plan", "show", "other"])["deleted_at"].is_string());
    // Its runs keep naming it; it launches nothing.
    assert_eq!(braid_json(&store, &["runs", "--plan", "other"]).as_array().unwrap().len(), 1);
    let launch = braid(&store, &["plan", "launch", "other"]);
    assert_eq!(launch.status.code(), Some(2));
    assert!(stderr(&launch).contains("was deleted"), "{}", stderr(&launch));
    assert_eq!(flowbin(&store, &["plans", "launch", "other"]), ExitCode::from(2));
    // Deleting it again changes nothing; by label, the live ones.
    assert_eq!(
        braid_json(&store, &["plan", "delete", "other"]),
        json!({"deleted": [{"plan": "other", "changed": false}]})
    );
    let text = braid(&store, &["plan", "delete", "--label", "team=sync"]);
    assert!(stdout(&text).contains("deleted 1 plan(s): sync"), "{}", stdout(&text));
    assert_eq!(braid_json(&store, &["plan", "list"]), json!([]));
    assert_eq!(braid_json(&store, &["plan", "delete", "--label", "team=sync"]), json!({"deleted": []}));

    // Applied again: each is created anew, with the next version number.
    assert_eq!(flowbin(&store, &["plans", "apply", file.to_str().unwrap()]), ExitCode::SUCCESS);
    let list = braid_json(&store, &["plan", "list"]);
    let v: Vec<(String, i64, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["version"].as_i64().unwrap(), p["deleted_at"].is_null()))
        .collect();
    assert_eq!(v, [("other".to_owned(), 2, true), ("sync".to_owned(), 2, true)]);
    assert_eq!(braid_json(&store, &["plan", "show", "other"])["versions"].as_array().unwrap().len(), 2);
}
