#![allow(clippy::unwrap_used)]
//! A plan whose sites come from a command, end to end: the example plan file
//! `cli/examples/sites_inventory.toml` and its `list-sites` script, applied and backfilled
//! by the flow binary (through `flow_main_from`); a failing command recorded as a failed
//! tick that `braid plan show` (text and `--json`) shows, and the backfill exits 1.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use braid_runtime::Flow;
use serde_json::Value;

mod plan_cli;
use plan_cli::*;

fn flowbin(store: &Path, args: &[&str]) -> ExitCode {
    flowbin_of(data_sync, store, args)
}

/// The `sites` example's flow.
fn data_sync() -> braid_runtime::Result<Flow> {
    sites_flow()
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn the_example_script_is_executable_in_a_fresh_clone() {
    let mode = std::fs::metadata(examples().join("list-sites")).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "cli/examples/list-sites must keep mode 755 (git keeps the bit)");
}

#[test]
fn a_plan_whose_sites_come_from_a_command_and_a_failing_command_recorded_as_a_failed_tick() {
    // The example's plan file and script, copied so the test owns `sites.txt`.
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("plans");
    std::fs::create_dir(&work).unwrap();
    for f in ["sites_inventory.toml", "list-sites", "sites.txt"] {
        std::fs::copy(examples().join(f), work.join(f)).unwrap();
    }
    let store = dir.path().join(".braid");
    let file = work.join("sites_inventory.toml");
    assert_eq!(flowbin(&store, &["plans", "apply", file.to_str().unwrap()]), ExitCode::SUCCESS);

    let show = braid_json(&store, &["plan", "show", "data_sync_inventory"]);
    assert_eq!(show["parameter_sets"], Value::Null, "not fixed: produced at each tick");
    assert_eq!(show["sets_from"]["kind"], "command");
    assert_eq!(show["sets_from"]["command"], serde_json::json!(["./list-sites"]));
    assert_eq!(show["sets_from"]["dir"], work.display().to_string());
    assert_eq!(show["sets_from"]["timeout"], "10s");

    // Two hours x the three sites of sites.txt, launched from wherever the binary runs.
    let bf = ["backfill", "data_sync_inventory", "--from", "2026-03-02T09:00", "--to", "2026-03-02T11:00"];
    assert_eq!(flowbin(&store, &bf), ExitCode::SUCCESS);
    let runs = braid_json(&store, &["runs", "data_sync", "--limit", "0"]);
    let mut names: Vec<&str> = runs.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "data_sync_inventory_site1",
            "data_sync_inventory_site1",
            "data_sync_inventory_site2",
            "data_sync_inventory_site2",
            "data_sync_inventory_site3",
            "data_sync_inventory_site3"
        ]
    );

    // A site added is a line in sites.txt: the next tick launches it, no `plans apply`.
    std::fs::write(work.join("sites.txt"), "site1\nsite4\n").unwrap();
    let bf2 = ["backfill", "data_sync_inventory", "--from", "2026-03-02T11:00", "--to", "2026-03-02T12:00"];
    assert_eq!(flowbin(&store, &bf2), ExitCode::SUCCESS);
    let show = braid_json(&store, &["plan", "show", "data_sync_inventory"]);
    let sets: Vec<&str> =
        show["parameter_set_details"].as_array().unwrap().iter().map(|s| s["run_name"].as_str().unwrap()).collect();
    assert!(sets.contains(&"data_sync_inventory_site4"), "{sets:?}");

    // The inventory goes away: the tick fails, is recorded, and the backfill says so.
    std::fs::remove_file(work.join("sites.txt")).unwrap();
    let bf3 = ["backfill", "data_sync_inventory", "--from", "2026-03-02T12:00", "--to", "2026-03-02T13:00"];
    assert_eq!(flowbin(&store, &bf3), ExitCode::from(1));
    let show = braid_json(&store, &["plan", "show", "data_sync_inventory"]);
    let failed = show["failed_ticks"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{show}");
    assert_eq!(failed[0]["tick"], "2026-03-02T17:00:00Z");
    assert_eq!(failed[0]["tick_local"], "2026-03-02 12:00:00 EST");
    assert_eq!(failed[0]["kind"], "backfill");
    assert_eq!(failed[0]["failures"], 1);
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("`./list-sites` exited with status 1"), "{error}");
    assert!(error.contains("cannot read sites.txt"), "the script's own words are kept: {error}");
    assert_eq!(braid_json(&store, &["runs", "data_sync", "--limit", "0"]).as_array().unwrap().len(), 8);

    let text = braid(&store, &["plan", "show", "data_sync_inventory"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("printed by command `./list-sites` at each tick"), "{text}");
    assert!(text.contains("failed ticks (1)"), "{text}");
    assert!(text.contains("cannot read sites.txt"), "{text}");
    let list = braid(&store, &["plan", "list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("per tick (command)"));

    // The same tick again fails again: counted on the same row.
    assert_eq!(flowbin(&store, &bf3), ExitCode::from(1));
    let show = braid_json(&store, &["plan", "show", "data_sync_inventory"]);
    assert_eq!(show["failed_ticks"][0]["failures"], 2);

    // `braid plan launch` cannot run the command (it runs no flow code): it says which does.
    let out = braid(&store, &["plan", "launch", "data_sync_inventory"]);
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("only the flow's binary runs") && e.contains("plans launch data_sync_inventory"), "{e}");
}

#[test]
fn a_binary_declaring_a_plan_in_code_serves_its_matrix_fn() {
    use braid_runtime::plan::LaunchPlan;
    let code = || {
        LaunchPlan::builder("data_sync_code", "data_sync")
            .cron("0 * * * *", "UTC")
            .matrix_fn(|tick: jiff::Timestamp| {
                // The sites of the hour: as many as the hour is odd or even, say.
                let n = if tick.as_second() % 7200 == 0 { 2 } else { 1 };
                Ok::<_, String>(serde_json::json!({"site_id": (1..=n).map(|i| format!("s{i}")).collect::<Vec<_>>()}))
            })
            .build()
            .unwrap()
    };
    let run = |store: &Path, args: &[&str], with_code: bool| {
        let mut all = vec!["sites".to_owned(), "--store".into(), store.display().to_string()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let plans = if with_code { vec![code()] } else { Vec::new() };
        braid_cli::FlowBinary::new(vec![data_sync()]).plans(plans).main_from(all)
    };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".braid");
    assert_eq!(run(&store, &["plans", "apply", "--code", "--dry-run"], true), ExitCode::SUCCESS);
    assert!(!store.exists(), "a dry run registers nothing (not even a store)");
    assert_eq!(run(&store, &["plans", "apply", "--code"], false), ExitCode::from(2), "declares none");
    assert_eq!(run(&store, &["plans", "apply", "--code"], true), ExitCode::SUCCESS);
    assert_eq!(run(&store, &["plans", "apply", "--code"], true), ExitCode::SUCCESS, "same content: a no-op");
    let show = braid_json(&store, &["plan", "show", "data_sync_code"]);
    assert_eq!((show["version"].as_u64(), show["sets_from"]["kind"].as_str()), (Some(1), Some("function")));

    let bf = ["backfill", "data_sync_code", "--from", "2026-03-02T10:00Z", "--to", "2026-03-02T12:00Z"];
    assert_eq!(run(&store, &bf, true), ExitCode::SUCCESS);
    let runs = braid_json(&store, &["runs", "data_sync", "--limit", "0"]);
    let mut names: Vec<&str> = runs.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["data_sync_code_s1", "data_sync_code_s1", "data_sync_code_s2"]);

    // A binary without the function (an older build) records the tick as failed.
    let bf = ["backfill", "data_sync_code", "--from", "2026-03-02T12:00Z", "--to", "2026-03-02T13:00Z"];
    assert_eq!(run(&store, &bf, false), ExitCode::from(1));
    let show = braid_json(&store, &["plan", "show", "data_sync_code"]);
    let error = show["failed_ticks"][0]["error"].as_str().unwrap();
    assert!(error.contains("this binary does not declare"), "{error}");
}
