#![allow(clippy::unwrap_used)]
//! The `progress` example end to end: a step reporting rows done out of a total with
//! details, whose first attempt hangs and is declared lost; the retry reads where it was
//! (`ctx.last_progress()`), and `braid show` prints units, rate and details.

use std::process::ExitCode;

use braid_client::Client;

mod braid_cmd;

#[allow(dead_code)]
#[path = "../examples/progress.rs"]
mod progress_example;

#[test]
fn a_lost_attempt_is_picked_up_at_its_last_row_and_braid_show_prints_units_and_details() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let args = ["flowbin", "run", "--param", "seconds=0.3", "--param", "stall_at=50", "--quiet", "--store"];
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.push(store.display().to_string());
    assert_eq!(braid_cli::flow_main_from(all, vec![progress_example::progress()]), ExitCode::SUCCESS);

    let client = Client::open(store.to_str().unwrap()).unwrap();
    let task = client.task_at("progress/latest/start").unwrap();
    assert_eq!(task.attempt().0, 2, "the first attempt was lost, the retry finished");
    let ticks: u64 = task.data("ticks").unwrap();
    let from: u64 = task.data("started_at_row").unwrap();
    assert_eq!(ticks, 30);
    assert!((14..=15).contains(&from), "the lost attempt stopped at 50%: row 15 of 30, retry began at {from}");
    let p = task.progress().unwrap();
    let units = p.units.as_ref().unwrap();
    assert_eq!((units.done, units.total, units.unit.as_str()), (30, 30, "rows"));
    assert_eq!(p.details.as_ref().unwrap()["row"], 30);

    let braid = |args: &[&str]| braid_cmd::braid(&store, args);
    let path = format!("progress/latest/start/{}", task.id());
    let text = braid(&["show", &path]);
    assert!(text.contains("100% 30/30 rows"), "{text}");
    assert!(text.contains(r#""row":30"#) && text.contains("details"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&braid(&["show", &path, "--json"])).unwrap();
    assert_eq!(v["progress"]["units"]["done"], 30);
    assert_eq!(v["progress"]["units"]["total"], 30);
    assert_eq!(v["progress"]["units"]["unit"], "rows");
    assert!(v["progress"]["units"]["rate_per_s"].is_number(), "{v}");
    assert_eq!(v["progress"]["details"]["stage"], "writing");
    // The step's listing carries the same.
    let v: serde_json::Value = serde_json::from_str(&braid(&["show", "progress/latest/start", "--json"])).unwrap();
    assert_eq!(v["tasks"][0]["progress"]["units"]["done"], 30);
}
