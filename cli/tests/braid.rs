#![allow(clippy::unwrap_used)]
//! The built `braid` binary against fabricated fs stores: every command, the `--json`
//! shapes, exit codes and error messages.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use braid_client::fixtures::{self, FanoutRun, RunWriter, TaskSpec};
use braid_client::{RunStatus, TaskStatus};
use braid_store::Store;
use serde_json::{Value, json};
use tempfile::TempDir;

/// A store with a failed `fanout` run, then a succeeded one with 50 items (the latest),
/// and a flow `other` with one run still going.
struct Fixture {
    dir: TempDir,
    store: Store,
    ok: FanoutRun,
    failed: braid_client::RunId,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path()).unwrap();
    let mut params = BTreeMap::new();
    params.insert("n".to_owned(), json!(3));
    let mut w = RunWriter::start(&store, "fanout", Some(fixtures::fanout_spec()), params).unwrap();
    w.task(TaskSpec::new("start").error("panic", "attempt to divide by zero").log("about to divide")).unwrap();
    w.finish(RunStatus::Failed, Some("start/1 attempt 1: panic: attempt to divide by zero".into())).unwrap();
    let failed = w.run_id();
    let ok = fixtures::fanout(&store, 50).unwrap();
    let other = json!({"format_version": 1, "name": "other", "steps": [
        {"name": "start", "next": {"type": "next", "to": "end"}},
        {"name": "end", "next": {"type": "end"}}
    ]});
    RunWriter::start(&store, "other", Some(other), BTreeMap::new()).unwrap();
    Fixture { dir, store, ok, failed }
}

fn braid_in(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("BRAID_STORE")
        .env_remove("NO_COLOR")
        .output()
        .unwrap()
}

impl Fixture {
    fn braid(&self, args: &[&str]) -> Output {
        braid_in(self.dir.path(), args)
    }

    /// Runs a command that must succeed and print one JSON document.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.braid(&all);
        assert!(out.status.success(), "braid {args:?} failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("braid {args:?} printed no single JSON document ({e}): {}", stdout(&out)))
    }

    /// Runs a command that must succeed; returns stdout.
    fn text(&self, args: &[&str]) -> String {
        let out = self.braid(args);
        assert!(out.status.success(), "braid {args:?} failed: {}", stderr(&out));
        let text = stdout(&out);
        assert!(!text.contains('\u{1b}'), "colour in piped output of {args:?}: {text}");
        text
    }

    /// Runs a command that must fail with `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.braid(args);
        assert_eq!(out.status.code(), Some(code), "braid {args:?}: stdout {} stderr {}", stdout(&out), stderr(&out));
        assert!(out.stdout.is_empty(), "braid {args:?} printed to stdout on error: {}", stdout(&out));
        stderr(&out)
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn flows_lists_each_flow_with_its_latest_run() {
    let f = fixture();
    let v = f.json(&["flows"]);
    let flows = v.as_array().unwrap();
    assert_eq!(flows.len(), 2, "{v}");
    assert_eq!(flows[1]["name"], "other");
    assert_eq!(flows[1]["latest_run"]["status"], "running");
    assert_eq!(flows[0]["name"], "fanout");
    assert_eq!(flows[0]["steps"], json!(["start", "work", "join", "end"]));
    assert_eq!(flows[0]["latest_run"]["id"], f.ok.run.to_string());
    assert_eq!(flows[0]["latest_run"]["status"], "succeeded");
    assert_eq!(flows[0]["params"][0]["name"], "n");
    let text = f.text(&["flows"]);
    assert!(text.contains("FLOW") && text.contains("fanout") && text.contains(&f.ok.run.to_string()), "{text}");
}

#[test]
fn runs_newest_first_with_filters() {
    let f = fixture();
    let v = f.json(&["runs", "fanout"]);
    let runs = v.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["id"], f.ok.run.to_string());
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["flow"], "fanout");
    assert_eq!(runs[0]["params"]["n"], 50);
    assert!(runs[0]["duration_s"].is_number());
    assert_eq!(runs[1]["id"], f.failed.to_string());
    assert_eq!(runs[1]["status"], "failed");
    assert!(runs[1]["error"].as_str().unwrap().contains("divide by zero"));

    let v = f.json(&["runs", "fanout", "--status", "failed"]);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], f.failed.to_string());
    assert_eq!(f.json(&["runs", "fanout", "--limit", "1"]).as_array().unwrap().len(), 1);
    assert_eq!(f.json(&["runs", "fanout", "--tag", "nightly"]), json!([]));

    // Every flow's runs, merged newest first.
    let v = f.json(&["runs"]);
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0]["flow"], "other");
    assert_eq!(all[1]["id"], f.ok.run.to_string());

    let text = f.text(&["runs", "fanout"]);
    assert!(
        text.contains("RUN") && text.contains("succeeded") && text.contains("failed") && text.contains("n=50"),
        "{text}"
    );
    let text = f.text(&["runs", "fanout", "--status", "cancelled"]);
    assert!(text.contains("no runs of `fanout` with status cancelled"), "{text}");
}

#[test]
fn show_a_step_lists_every_task_with_index_and_status() {
    let f = fixture();
    let v = f.json(&["show", "fanout/latest/work"]);
    assert_eq!(v["name"], "work");
    assert_eq!(v["run"], f.ok.run.to_string());
    assert_eq!(v["total"], 50);
    assert_eq!(v["counts"]["succeeded"], 50);
    let tasks = v["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 50);
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t["index"], i as u64);
        assert_eq!(t["status"], "succeeded");
        assert_eq!(t["id"], f.ok.work[i].0);
        assert!(t["duration_s"].is_number());
        assert_eq!(t["progress"]["percent"], 100.0);
    }
    assert_eq!(tasks[1]["attempt"], 2);

    let text = f.text(&["show", "fanout/latest/work"]);
    assert!(text.contains("TASK") && text.contains("INDEX") && text.contains("100% done"), "{text}");
}

#[test]
fn show_a_run_a_flow_and_a_task() {
    let f = fixture();
    let v = f.json(&["show", "fanout/latest"]);
    assert_eq!(v["id"], f.ok.run.to_string());
    let steps = v["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["start", "work", "join", "end"]);
    assert_eq!(steps[1]["counts"]["succeeded"], 50);
    assert!(steps[1]["duration_s"].is_number());
    let text = f.text(&["show", &format!("fanout/{}", f.failed)]);
    assert!(text.contains("failed") && text.contains("divide by zero") && text.contains("STEP"), "{text}");

    let v = f.json(&["show", "fanout"]);
    assert_eq!(v["name"], "fanout");
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
    let text = f.text(&["show", "fanout"]);
    assert!(text.contains("start → work → join → end") && text.contains("n: uint = 1000"), "{text}");

    // A task by id, and the same task by foreach index.
    let id = f.ok.work[1].0;
    let v = f.json(&["show", &format!("fanout/latest/work/{id}")]);
    assert_eq!(v, f.json(&["show", "fanout/latest/work", "--index", "1"]));
    assert_eq!(v["index"], 1);
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["foreach_stack"][0]["over"], "items");
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], "failed");
    assert!(attempts[0]["error"]["message"].as_str().unwrap().contains("transient"));
    let arts = v["artifacts"].as_array().unwrap();
    let out = arts.iter().find(|a| a["name"] == "out").unwrap();
    assert_eq!(
        (out["type_name"].as_str(), out["preview"].as_u64(), out["inherited"].as_bool()),
        (Some("u64"), Some(1), Some(false))
    );
    let items = arts.iter().find(|a| a["name"] == "items").unwrap();
    assert_eq!((items["inherited"].as_bool(), items["set_by"].as_u64()), (Some(true), Some(f.ok.start.0)));
    assert_eq!(v["logs"][1]["line"], "1 squared is 1");
    assert_eq!(v["input_only"], json!([]));

    let text = f.text(&["show", &format!("fanout/latest/work/{id}")]);
    for needle in ["attempts", "transient", "artifacts", "Vec<u64>", "this task", "squaring 1", "1 of 50"] {
        assert!(text.contains(needle), "{needle:?} missing: {text}");
    }

    // A join lists the names that exist only in its inputs.
    let join = f.json(&["show", &format!("fanout/latest/join/{}", f.ok.join.0)]);
    assert_eq!(join["input_only"], json!(["items", "label", "n", "note", "out"]));
    assert_eq!(join["inputs"].as_array().unwrap().len(), 50);
    let text = f.text(&["show", &format!("fanout/latest/join/{}", f.ok.join.0)]);
    assert!(text.contains("only in the inputs") && text.contains("(50 in all"), "{text}");

    // A failed task shows its error.
    let text = f.text(&["show", &format!("fanout/{}/start/1", f.failed)]);
    assert!(text.contains("panic: attempt to divide by zero") && text.contains("about to divide"), "{text}");
}

#[test]
fn artifact_prints_the_value() {
    let f = fixture();
    assert_eq!(f.json(&["artifact", "fanout/latest/join", "total"]), json!(40425));
    assert_eq!(f.text(&["artifact", "fanout/latest/join", "total"]).trim(), "40425");
    assert_eq!(f.json(&["artifact", "fanout/latest/work", "out", "--index", "7"]), json!(49));
    assert_eq!(f.json(&["artifact", &format!("fanout/latest/work/{}", f.ok.work[3].0), "note"]), json!("item 3"));
    assert_eq!(f.json(&["artifact", "fanout/latest/start", "items"]).as_array().unwrap().len(), 50);

    // A step with many tasks: every value, in index order.
    let v = f.json(&["artifact", "fanout/latest/work", "out"]);
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 50);
    assert_eq!(all[9], json!({"task": f.ok.work[9].0, "index": 9, "value": 81}));
    let text = f.text(&["artifact", "fanout/latest/work", "out"]);
    assert!(text.contains("INDEX") && text.contains("2401"), "{text}");

    // The raw envelope.
    let out = f.braid(&["artifact", "fanout/latest/join", "total", "--raw"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(&out.stdout[..4], b"BRAF");
    assert_eq!(braid_core::codec::decode::<u64>(&out.stdout).unwrap(), 40425);
    let e = f.fails(&["artifact", "fanout/latest/work", "out", "--raw"], 2);
    assert!(e.contains("--index"), "{e}");
}

#[test]
fn logs_print_a_tasks_lines() {
    let f = fixture();
    let text = f.text(&["logs", "fanout/latest/work", "--index", "4"]);
    assert!(text.contains("squaring 4") && text.contains("4 squared is 16"), "{text}");
    let v = f.json(&["logs", &format!("fanout/latest/work/{}", f.ok.work[4].0)]);
    let lines = v.as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["seq"].as_u64(), lines[0]["line"].as_str()), (Some(1), Some("squaring 4")));
    assert_eq!(lines[0]["level"], "info");
    // Following a finished task prints what there is and returns.
    let text = f.text(&["logs", "fanout/latest/start", "--follow"]);
    assert!(text.contains("splitting into items"), "{text}");
    let e = f.fails(&["logs", "fanout/latest/work"], 1);
    assert!(e.contains("50 tasks, not one"), "{e}");
}

#[test]
fn logs_follow_a_running_task_until_it_ends() {
    let f = fixture();
    let mut w = RunWriter::start(&f.store, "fanout", None, BTreeMap::new()).unwrap();
    let id = w.task(TaskSpec::new("start").status(TaskStatus::Running).log("first")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["--store", f.dir.path().to_str().unwrap(), "logs", "fanout/latest/start", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    w.task(TaskSpec::new("start").id(id).status(TaskStatus::Running).log("second")).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    w.task(TaskSpec::new("start").id(id).log("third")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    let order: Vec<usize> = ["first", "second", "third"].iter().map(|w| text.find(w).unwrap()).collect();
    assert!(order.windows(2).all(|p| p[0] < p[1]), "{text}");
}

#[test]
fn watch_follows_a_run_until_it_ends() {
    let f = fixture();
    // A finished run: its summary at once.
    let text = f.text(&["watch", "fanout/latest"]);
    assert!(text.contains("succeeded") && text.contains("work"), "{text}");
    let v = f.json(&["watch", "fanout"]);
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["steps"].as_array().unwrap().len(), 4);
    // A failed run exits 1 and says why.
    let out = f.braid(&["watch", &format!("fanout/{}", f.failed)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ended failed") && stderr(&out).contains("divide by zero"), "{}", stderr(&out));

    // A run that is still going: watch until it ends.
    let mut w = RunWriter::start(&f.store, "fanout", None, BTreeMap::new()).unwrap();
    let start = fixtures::fanout_start(&mut w, 4).unwrap().start;
    let child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["--store", f.dir.path().to_str().unwrap(), "watch", "fanout/latest", "--interval", "0.1", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(w.task(fixtures::fanout_work(start, i, 4).unwrap()).unwrap());
        std::thread::sleep(Duration::from_millis(150));
    }
    w.task(TaskSpec::new("join").inputs(ids).set("total", &14u64).unwrap()).unwrap();
    w.finish(RunStatus::Succeeded, None).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["steps"][1]["total"], 4);
    // Not a terminal: progress comes as lines on stderr.
    assert!(stderr(&out).contains("work:"), "{}", stderr(&out));
}

#[test]
fn dag_draws_the_stored_spec() {
    let f = fixture();
    let text = f.text(&["dag", "fanout"]);
    assert!(text.contains("foreach item of `items`: work") && text.contains("(join)"), "{text}");
    let mermaid = f.text(&["dag", "fanout", "--mermaid"]);
    assert!(mermaid.contains("work") && mermaid.contains("join"), "{mermaid}");
    let dot = f.text(&["dag", "fanout", "--dot"]);
    assert!(dot.contains("digraph"), "{dot}");
    assert_eq!(f.json(&["dag", "fanout"])["name"], "fanout");
    assert!(f.text(&["dag", "other"]).contains("start  → end"));
    RunWriter::start(&f.store, "bare", None, BTreeMap::new()).unwrap();
    let e = f.fails(&["dag", "bare"], 1);
    assert!(e.contains("no stored spec"), "{e}");
    f.fails(&["dag", "fanout", "--mermaid", "--dot"], 2);
}

#[test]
fn tags_are_added_and_removed() {
    let f = fixture();
    let v = f.json(&["tag", "add", "fanout/latest", "nightly", "v1.2"]);
    assert_eq!(v["tags"], json!(["nightly", "v1.2"]));
    let v = f.json(&["runs", "fanout", "--tag", "nightly"]);
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], f.ok.run.to_string());
    let text = f.text(&["tag", "remove", &format!("fanout/{}", f.ok.run), "nightly"]);
    assert!(text.contains("tags v1.2"), "{text}");
    // Tags are text people write, in any language; only what corrupts text is refused.
    let v = f.json(&["tag", "add", "fanout/latest", "刺身 means sashimi", "owner: data team"]);
    assert_eq!(v["tags"], json!(["owner: data team", "v1.2", "刺身 means sashimi"]));
    let v = f.json(&["runs", "fanout", "--tag", "刺身 means sashimi"]);
    assert_eq!(v[0]["id"], f.ok.run.to_string());
    let text = f.text(&["show", &format!("fanout/{}", f.ok.run)]);
    assert!(text.contains(r#""owner: data team", v1.2, "刺身 means sashimi""#), "{text}");
    let e = f.fails(&["tag", "add", "fanout/latest", "bad\ttag", " padded"], 2);
    assert!(e.contains("control character U+0009") && e.contains("printable text in any language"), "{e}");
    let e = f.fails(&["tag", "add", "fanout/latest", &"x".repeat(257)], 2);
    assert!(e.contains("257 bytes long, the limit is 256"), "{e}");
    let e = f.fails(&["tag", "add", "fanout/latest/work", "x"], 2);
    assert!(e.contains("tags belong to runs"), "{e}");
}

#[test]
fn errors_name_what_was_missing_and_exit_1() {
    let f = fixture();
    let run = f.ok.run;
    let e = f.fails(&["show", "fanuot"], 1);
    assert!(e.starts_with("error: ") && e.contains("`fanuot` not found") && e.contains("fanout"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    let e = f.fails(&["runs", "nope"], 1);
    assert!(e.contains("`nope` not found"), "{e}");

    let missing = braid_client::RunId::generate();
    let e = f.fails(&["show", &format!("fanout/{missing}")], 1);
    assert!(e.contains(&missing.to_string()) && e.contains(&run.to_string()), "{e}");

    let e = f.fails(&["show", "fanout/latest/wrok"], 1);
    assert!(e.contains("`wrok` not found") && e.contains("start, work, join, end"), "{e}");

    let e = f.fails(&["show", "fanout/latest/work/9999"], 1);
    assert!(e.contains("task 9999 not found") && e.contains("--index"), "{e}");

    let e = f.fails(&["show", "fanout/latest/work", "--index", "77"], 1);
    assert!(e.contains("index 77") && e.contains("50 items"), "{e}");

    let e = f.fails(&["artifact", "fanout/latest/join", "totl"], 1);
    assert!(e.contains("`totl` not found") && e.contains("total"), "{e}");

    let e = f.fails(&["artifact", "fanout/latest/join", "out"], 1);
    assert!(e.contains("exists only in the inputs") && e.contains("merge_artifacts()"), "{e}");

    let e = f.fails(&["artifact", "fanout/latest", "total"], 1);
    assert!(e.contains("names a run") && e.contains("task"), "{e}");

    let e = f.fails(&["show", "fanout/latest", "--index", "2"], 2);
    assert!(e.contains("--index"), "{e}");
}

#[test]
fn malformed_input_is_a_usage_error() {
    let f = fixture();
    for (args, needle) in [
        (vec!["show", "fanout/notarun"], "run part"),
        (vec!["show", "fan out"], "flow part"),
        (vec!["show", "fanout/latest/work/x"], "task part"),
        (vec!["show", "a/b/c/d/e"], "at most 4"),
        (vec!["artifact", "fanout/latest/../x", "total"], "step part"),
        (vec!["runs", "fanout", "--status", "done"], "expected one of"),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ] {
        let e = f.fails(&args, 2);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    let e = f.fails(&["artifact", "fanout/latest/join", "not-a-name"], 1);
    assert!(e.contains("artifact name"), "{e}");
}

#[test]
fn the_store_comes_from_the_flag_or_the_environment() {
    let f = fixture();
    let out = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["artifact", "fanout/latest/join", "total", "--json"])
        .env("BRAID_STORE", f.dir.path())
        .current_dir(f.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "40425");

    // No store here: a clear error, and nothing created.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(["flows"])
        .env_remove("BRAID_STORE")
        .current_dir(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("no braid store at .braid") && e.contains("--store"), "{e}");
    assert!(!empty.path().join(".braid").exists());

    let e = braid_in(&empty.path().join("missing"), &["runs"]);
    assert_eq!(e.status.code(), Some(1));
    assert!(stderr(&e).contains("does not exist"), "{}", stderr(&e));

    // Help and version succeed.
    let out = braid_in(f.dir.path(), &["--help"]);
    assert!(out.status.success() && stdout(&out).contains("artifact"));
    let out = braid_in(f.dir.path(), &["--version"]);
    assert!(out.status.success() && stdout(&out).contains("braid"));
}

/// The issue's "done when" commands, on a fabricated run of the same shape as
/// `fanout -- run --param n=1000`.
#[test]
fn done_when_commands_on_a_thousand_item_fanout() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path()).unwrap();
    fixtures::fanout(&store, 1000).unwrap();
    let f =
        Fixture { failed: braid_client::RunId::generate(), ok: fixtures::fanout(&store, 1000).unwrap(), dir, store };
    let runs = f.json(&["runs", "fanout"]);
    assert_eq!(runs[0]["id"], f.ok.run.to_string());
    assert!(runs.as_array().unwrap().iter().all(|r| r["status"] == "succeeded"));
    let step = f.json(&["show", "fanout/latest/work"]);
    let tasks = step["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1000);
    assert!(tasks.iter().enumerate().all(|(i, t)| t["index"] == i as u64 && t["status"] == "succeeded"));
    assert_eq!(f.text(&["artifact", "fanout/latest/join", "total", "--json"]).trim(), "332833500");
}

#[test]
fn a_store_url_braid_has_no_store_for_says_what_a_store_can_be() {
    let out = braid_in(Path::new("s3://bucket/braid"), &["flows"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: cannot open the store at s3://bucket/braid: store location "), "{err}");
    assert!(err.contains("holds blobs, not records") && err.contains("--store postgres://"), "{err}");
    assert_eq!(err.lines().count(), 1, "the cause is in the message already, not repeated: {err}");
}

/// A finished run whose `work` step has 3,000 tasks: 2,990 succeeded, 7 failed, 3
/// cancelled; the failed and cancelled ones late in id order.
fn wide_step(store: &Store) -> braid_client::RunId {
    let mut w = RunWriter::start(store, "wide", None, BTreeMap::new()).unwrap();
    let start = w.task(TaskSpec::new("start")).unwrap();
    let specs = (0..3_000u64)
        .map(|i| {
            let t = TaskSpec::new("work").parent(start).foreach("start", start, "items", i, 3_000);
            let t = match i {
                2_900..2_907 => t.status(TaskStatus::Failed).error("panic", &format!("item {i} broke")),
                2_950..2_953 => t.status(TaskStatus::Cancelled),
                _ => t,
            };
            t.set("out", &(i * 2)).unwrap()
        })
        .collect();
    w.tasks(specs).unwrap();
    w.finish(RunStatus::Failed, Some("work failed".into())).unwrap();
    w.run_id()
}

#[test]
fn show_a_wide_step_streams_every_task_as_json_and_summarises_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path()).unwrap();
    let run = wide_step(&store);
    let f = Fixture { failed: run, ok: fixtures::fanout(&store, 1).unwrap(), dir, store };
    let step = format!("wide/{run}/work");
    let tasks = braid_client::Client::from_store(f.store.clone()).step(&step).unwrap().tasks().unwrap();

    // JSON: every task, in id order, as the client reads them.
    let v = f.json(&["show", &step]);
    assert_eq!(v["total"], 3_000);
    assert_eq!(v["counts"], json!({"cancelled": 3, "failed": 7, "succeeded": 2_990}));
    assert_eq!((v["flow"].as_str(), v["run"].as_str()), (Some("wide"), Some(run.to_string().as_str())));
    let printed = v["tasks"].as_array().unwrap();
    assert_eq!(printed.len(), 3_000);
    for (p, t) in printed.iter().zip(&tasks) {
        assert_eq!(p["id"], t.id().0);
        assert_eq!(p["index"], json!(t.index()));
        assert_eq!(p["status"], t.status().as_str());
        assert_eq!(p["pathspec"], t.pathspec());
        assert_eq!(p["error"]["message"], json!(t.error().map(|e| e.message.clone())));
    }
    assert_eq!(f.json(&["show", &step, "--all"]), v, "--all changes nothing in JSON");

    // Text: counts, the tasks that did not succeed first, the first rows, how to get all.
    let text = f.text(&["show", &step]);
    assert!(text.lines().count() < 100, "a summary, not 3,000 lines: {text}");
    assert!(text.contains("3000 (2990 succeeded, 7 failed, 3 cancelled)"), "{text}");
    let failed = text.find("\n7 failed\n").unwrap();
    let cancelled = text.find("\n3 cancelled\n").unwrap();
    let first = text.find("the first 20 of 3000 tasks").unwrap();
    assert!(failed < cancelled && cancelled < first, "failed, then cancelled, then the first ones: {text}");
    assert!(text[failed..cancelled].contains("item 2903 broke"), "{text}");
    assert!(text.contains(&format!("\n  braid show wide/{run}/work --all       every task, a row each\n")), "{text}");
    assert!(text.contains(&format!("\n  braid show wide/{run}/work --json      every task as JSON\n")), "{text}");

    // --all: every task, one header, columns aligned across pages.
    let all = f.text(&["show", &step, "--all"]);
    let rows: Vec<&str> = all.lines().skip_while(|l| !l.starts_with("TASK")).collect();
    assert_eq!(rows.len(), 1 + 3_000, "a header and every task");
    assert_eq!(all.matches("TASK").count(), 1);
    let status_at = rows[0].find("STATUS").unwrap();
    for (row, t) in rows[1..].iter().zip(&tasks) {
        assert!(row.starts_with(&format!("{} ", t.id())), "{row}");
        assert_eq!(row.get(status_at..status_at + t.status().as_str().len()), Some(t.status().as_str()), "{row}");
    }
    let e = f.fails(&["show", &format!("wide/{run}"), "--all"], 2);
    assert!(e.contains("--all lists every task of a step"), "{e}");
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_fs(dir.path()).unwrap();
    let run = wide_step(&store);
    for args in [
        vec!["show".to_owned(), format!("wide/{run}/work"), "--json".to_owned()],
        vec!["artifact".to_owned(), format!("wide/{run}/work"), "out".to_owned(), "--json".to_owned()],
        vec!["show".to_owned(), format!("wide/{run}/work"), "--all".to_owned()],
    ] {
        // `| head -c 100`: read 100 bytes, then close the pipe.
        let mut child = Command::new(env!("CARGO_BIN_EXE_braid"))
            .arg("--store")
            .arg(dir.path())
            .args(&args)
            .env_remove("BRAID_STORE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut head = [0u8; 100];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "braid {args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "braid {args:?} says nothing about the closed pipe");
    }
}

#[test]
fn show_task_names_its_parents_and_children_as_pathspecs() {
    let f = fixture();
    let run = f.ok.run;
    let spec = |step: &str, id: braid_client::TaskId| format!("fanout/{run}/{step}/{id}");
    let start = f.json(&["show", &spec("start", f.ok.start)]);
    let children = start["children"].as_array().unwrap();
    assert_eq!(children.len(), 50, "every branch the foreach started");
    assert_eq!(children[0], json!({"pathspec": spec("work", f.ok.work[0]), "step": "work", "id": f.ok.work[0].0}));
    assert_eq!(start["parents"], json!([]));
    let text = f.text(&["show", &spec("start", f.ok.start)]);
    assert!(
        text.contains(&format!("children  {}", spec("work", f.ok.work[0]))) && text.contains("(50 in all"),
        "{text}"
    );

    let branch = f.json(&["show", &spec("work", f.ok.work[3])]);
    assert_eq!(branch["parents"], json!([spec("start", f.ok.start)]));
    assert_eq!(branch["children"][0]["pathspec"], spec("join", f.ok.join), "the join it fed");
    let join = f.json(&["show", &spec("join", f.ok.join)]);
    assert_eq!(join["parents"].as_array().unwrap().len(), 50, "a join's parents are its inputs");
    assert_eq!(join["children"][0]["pathspec"], spec("end", f.ok.end));
    let text = f.text(&["show", &spec("join", f.ok.join)]);
    assert!(text.contains(&format!("inputs    {}", spec("work", f.ok.work[0]))), "{text}");
    let end = f.text(&["show", &spec("end", f.ok.end)]);
    assert!(end.contains("children  none"), "{end}");
}
