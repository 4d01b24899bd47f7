#![allow(clippy::unwrap_used)]
//! The `detect` example end to end: a switch case that fans out, run by the flow binary,
//! drawn by `braid dag FLOW`, navigated by `braid show TASK` and the client.

use std::process::ExitCode;

use braid_client::Client;

mod braid_cmd;

#[allow(dead_code)]
#[path = "../examples/detect.rs"]
mod detect_example;

fn run_flow(store: &std::path::Path, verdict: &str) {
    let mut all: Vec<String> = ["flowbin", "run", "--quiet", "--param"].iter().map(|s| (*s).to_owned()).collect();
    all.push(format!("verdict={verdict}"));
    all.push("--store".into());
    all.push(store.display().to_string());
    assert_eq!(braid_cli::flow_main_from(all, vec![detect_example::detect()]), ExitCode::SUCCESS);
}

#[test]
fn a_fanout_case_runs_both_branches_and_braid_shows_them_as_the_switch_tasks_children() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    run_flow(&store, "miss");
    let braid = |args: &[&str]| braid_cmd::braid(&store, args);
    let graph = braid(&["dag", "detect"]);
    assert!(graph.contains("hit → fast, miss → [clip, face]"), "{graph}");

    let client = Client::open(store.to_str().unwrap()).unwrap();
    let run = client.flow("detect").unwrap().latest_run().unwrap();
    assert_eq!(run.step("end").unwrap().single_task().unwrap().data::<String>("summary").unwrap(), "clip+face");
    let start = client.task_at("detect/latest/start").unwrap();
    let mut children: Vec<String> = start.children().unwrap().iter().map(|c| c.step_name().to_string()).collect();
    children.sort();
    assert_eq!(children, ["clip", "face"]);
    assert!(run.step("fast").map_or(true, |s| s.tasks().unwrap().is_empty()), "the hit path did not run");

    let text = braid(&["show", &start.pathspec()]);
    let line = text.lines().find(|l| l.starts_with("children")).unwrap_or_default().to_owned();
    assert!(line.contains("/clip/") && line.contains("/face/"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&braid(&["show", &start.pathspec(), "--json"])).unwrap();
    let task = if v["task"].is_object() { &v["task"] } else { &v };
    let mut steps: Vec<&str> =
        task["children"].as_array().unwrap().iter().map(|c| c["step"].as_str().unwrap()).collect();
    steps.sort_unstable();
    assert_eq!(steps, ["clip", "face"]);

    // The other case: one step, and `end` once.
    run_flow(&store, "hit");
    let hit = client.flow("detect").unwrap().latest_run().unwrap();
    let start = client.task_at(&format!("detect/{}/start", hit.id())).unwrap();
    let children: Vec<String> = start.children().unwrap().iter().map(|c| c.step_name().to_string()).collect();
    assert_eq!(children, ["fast"]);
}
