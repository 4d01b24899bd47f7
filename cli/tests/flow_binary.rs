#![allow(clippy::unwrap_used)]
//! A flow binary end to end: `flow_main_from` runs real flows on an fs store, and the
//! client reads back what they produced, foreach branches included.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use braid_client::{Client, RunStatus, TaskStatus};
use braid_runtime::{Flow, Param, ParamType};

mod child;

mod braid_cmd;

#[path = "../examples/fanout/flow.rs"]
mod fanout_flow;
use fanout_flow::fanout;

fn cli(store: &Path, args: &[&str], flows: Vec<braid_runtime::Result<Flow>>) -> ExitCode {
    let mut all = vec!["flowbin".to_owned()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    all.push("--store".into());
    all.push(store.display().to_string());
    all.push("--quiet".into());
    if !matches!(args.first(), Some(&"run") | Some(&"resume")) {
        all.pop();
    }
    braid_cli::flow_main_from(all, flows)
}

#[test]
fn foreach_branches_are_readable_from_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    assert_eq!(cli(&store, &["run", "--param", "n=50"], vec![fanout()]), ExitCode::SUCCESS);

    let client = Client::open(store.to_str().unwrap()).unwrap();
    let run = client.flow("fanout").unwrap().latest_run().unwrap();
    assert_eq!(run.status(), RunStatus::Succeeded);
    let work = run.step("work").unwrap();
    // Every branch, one by one through the index...
    for i in 0..50u64 {
        let task = work.task_by_index(i).unwrap();
        assert_eq!(task.data::<u64>("out").unwrap(), i * i);
        assert_eq!(task.input::<u64>().unwrap(), i);
        assert_eq!(task.status(), TaskStatus::Succeeded);
    }
    // ...and all at once, in index order.
    let all: Vec<(u64, u64)> = work.artifact_values("out").unwrap();
    assert_eq!(all, (0..50).map(|i| (i, i * i)).collect::<Vec<_>>());
    let join = client.task_at("fanout/latest/join").unwrap();
    assert_eq!(join.data::<u64>("total").unwrap(), (0..50u64).map(|i| i * i).sum::<u64>());
    // A name that exists only in the branches says so, and where to look.
    let e = join.data::<u64>("out").unwrap_err().to_string();
    assert!(e.contains("`out`") && e.contains("inputs()") && e.contains("merge_artifacts"), "{e}");
    assert!(join.input_only_names().unwrap().iter().any(|n| n.as_str() == "out"));
}

#[test]
fn run_id_file_is_written_before_any_step_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let id_file = dir.path().join("run-id");
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let (file, seen2) = (id_file.clone(), seen.clone());
    let flow = Flow::builder("early")
        .step("start", move |ctx| {
            let (file, seen) = (file.clone(), seen2.clone());
            async move {
                let text = std::fs::read_to_string(&file)?;
                assert_eq!(text.trim(), ctx.run_id().to_string());
                *seen.lock().unwrap() = text;
                Ok(())
            }
        })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build();
    let args = ["run", "--run-id-file", id_file.to_str().unwrap()];
    assert_eq!(cli(&store, &args, vec![flow]), ExitCode::SUCCESS);
    assert!(!seen.lock().unwrap().is_empty(), "the step saw the file");
}

/// Every command picks its flows one way: a broken flow is reported, and the command goes
/// on only when `--flow` names a sibling that built.
#[test]
fn a_broken_flow_stops_only_the_commands_that_do_not_name_a_flow_that_built() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let broken = || Flow::builder("broken").step("start", |_| async { Ok(()) }).next("missing").build();
    for args in [&["check"][..], &["run"], &["scheduler", "--once"], &["--flow", "broken", "check"]] {
        assert_eq!(cli(&store, args, vec![broken(), hello()]), ExitCode::from(2), "{args:?}");
    }
    for args in
        [&["--flow", "hello", "check"][..], &["--flow", "hello", "run"], &["--flow", "hello", "scheduler", "--once"]]
    {
        assert_eq!(cli(&store, args, vec![broken(), hello()]), ExitCode::SUCCESS, "{args:?}");
    }
    let runs = Client::open(store.to_str().unwrap()).unwrap().flow("hello").unwrap().runs().unwrap();
    assert_eq!(runs.len(), 1);
}

#[test]
fn exit_codes_distinguish_success_failure_and_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    assert_eq!(cli(&store, &["check"], vec![fanout()]), ExitCode::SUCCESS);
    assert_eq!(cli(&store, &["show", "--mermaid"], vec![fanout()]), ExitCode::SUCCESS);
    assert_eq!(cli(&store, &["run", "--param", "n=abc"], vec![fanout()]), ExitCode::from(2));
    assert_eq!(cli(&store, &["run", "--param", "m=1"], vec![fanout()]), ExitCode::from(2));
    assert_eq!(cli(&store, &["run", "--param", "n"], vec![fanout()]), ExitCode::from(2));
    assert_eq!(cli(&store, &["run", "--bogus"], vec![fanout()]), ExitCode::from(2));
    let broken = Flow::builder("broken").step("start", |_| async { Ok(()) }).next("missing").build();
    assert_eq!(cli(&store, &["check"], vec![broken]), ExitCode::from(2));
    let failing = Flow::builder("failing")
        .step("start", |_| async { Err("no luck".into()) })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build();
    assert_eq!(cli(&store, &["run"], vec![failing]), ExitCode::from(1));
    // Several flows in one binary: pick with --flow.
    assert_eq!(cli(&store, &["check"], vec![fanout(), hello()]), ExitCode::from(2));
    assert_eq!(cli(&store, &["--flow", "hello", "run"], vec![fanout(), hello()]), ExitCode::SUCCESS);
    assert_eq!(cli(&store, &["--flow", "nope", "run"], vec![fanout(), hello()]), ExitCode::from(2));
}

fn hello() -> braid_runtime::Result<Flow> {
    Flow::builder("hello")
        .step("start", |ctx| async move {
            ctx.set("greeting", "hello")?;
            Ok(())
        })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build()
}

#[test]
fn resume_from_the_command_line_reuses_finished_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let runs = Arc::new(AtomicU64::new(0));
    let make = |fail: bool, runs: Arc<AtomicU64>| {
        Flow::builder("again")
            .step("start", |ctx| async move {
                ctx.set("xs", &vec![1u64, 2, 3])?;
                Ok(())
            })
            .foreach("xs", "work")
            .step("work", move |ctx| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    if fail && ctx.input::<u64>()? == 3 {
                        return Err("three is not ready".into());
                    }
                    Ok(())
                }
            })
            .next("join")
            .join("join", |_| async { Ok(()) })
            .next("end")
            .step("end", |_| async { Ok(()) })
            .end()
            .build()
    };
    // Every bad tag is named at once, and nothing runs.
    let bad = cli(&store, &["run", "--tag", "a\nb", "--tag", "ok", "--tag", " x"], vec![make(true, runs.clone())]);
    assert_eq!(bad, ExitCode::from(2));
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let run = ["run", "--max-workers", "1", "--tag", "owner: data team", "--tag", "刺身 means sashimi"];
    assert_eq!(cli(&store, &run, vec![make(true, runs.clone())]), ExitCode::from(1));
    let before = runs.swap(0, Ordering::SeqCst);
    // Which branches finished before the failure stopped the run depends on the order
    // the branches got the one worker: the resume runs exactly the others again.
    let client = Client::open(store.to_str().unwrap()).unwrap();
    let first = client.flow("again").unwrap().latest_run().unwrap();
    let finished = first.step("work").unwrap().tasks_with_status(TaskStatus::Succeeded).unwrap().len() as u64;
    assert!(finished < 3, "item 3 failed");
    assert_eq!(cli(&store, &["resume", "--tag", "retried"], vec![make(false, runs.clone())]), ExitCode::SUCCESS);
    assert_eq!(runs.load(Ordering::SeqCst), 3 - finished, "only what did not finish ran again (first run: {before})");
    let runs = client.flow("again").unwrap().runs().unwrap();
    assert_eq!(runs[0].origin_run(), Some(runs[1].id()));
    let tags: Vec<&str> = runs[0].tags().iter().map(|t| t.as_str()).collect();
    assert_eq!(
        tags,
        ["owner: data team", "retried", "刺身 means sashimi"],
        "the origin's tags carried, and the new one"
    );
    assert_eq!(cli(&store, &["resume", "--from", "nope"], vec![make(false, Arc::default())]), ExitCode::from(2));
}

#[test]
fn the_client_reads_a_run_while_it_is_going() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let flow = Flow::builder("slow")
        .step("start", |ctx| async move {
            ctx.set("items", &vec![0u64, 1, 2, 3])?;
            Ok(())
        })
        .foreach("items", "work")
        .step("work", |ctx| async move {
            let i: u64 = ctx.input()?;
            ctx.set("out", &i)?;
            if i == 3 {
                for p in 0..=10 {
                    ctx.progress(p as f32 * 10.0, format!("tick {p}"))?;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            }
            Ok(())
        })
        .progress_coalescing(Duration::from_millis(10), 1.0)
        .next("join")
        .join("join", |_| async { Ok(()) })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build();
    let s2 = store.clone();
    let runner = std::thread::spawn(move || cli(&s2, &["run", "--max-workers", "4"], vec![flow]));
    let mut saw_running = false;
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(20));
        let Ok(client) = Client::open(store.to_str().unwrap()) else { continue };
        let Ok(run) = client.flow("slow").and_then(|f| f.latest_run()) else { continue };
        if run.status() != RunStatus::Running {
            continue;
        }
        let Ok(step) = run.step("work") else { continue };
        let Ok(tasks) = step.tasks() else { continue };
        let done: Vec<_> = tasks.iter().filter(|t| t.status() == TaskStatus::Succeeded).collect();
        let running = tasks.iter().find(|t| t.status() == TaskStatus::Running);
        if let Some(r) = running
            && done.len() == 3
            && r.progress().is_some()
        {
            // Finished branches are readable while another one still runs.
            assert_eq!(done.iter().map(|t| t.data::<u64>("out").unwrap()).sum::<u64>(), 3);
            saw_running = true;
            break;
        }
    }
    assert_eq!(runner.join().unwrap(), ExitCode::SUCCESS);
    assert!(saw_running, "saw the run going, with progress on the running task");
}

#[test]
fn metrics_are_scraped_over_http_while_a_task_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r2 = release.clone();
    let flow = Flow::builder("metered")
        .step("start", move |ctx| {
            let r2 = r2.clone();
            async move {
                ctx.progress(37.0, "scraping me")?;
                while !r2.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    ctx.heartbeat();
                }
                ctx.progress(100.0, "released")?;
                Ok(())
            }
        })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build();
    let addr = format!("127.0.0.1:{port}");
    let (s2, a2) = (store.clone(), addr.clone());
    let runner = std::thread::spawn(move || cli(&s2, &["run", "--metrics-addr", &a2], vec![flow]));
    let url = format!("http://{addr}/metrics");
    let mut percent = None;
    for _ in 0..250 {
        std::thread::sleep(Duration::from_millis(20));
        let Ok(mut resp) = ureq::get(&url).call() else { continue };
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body = resp.body_mut().read_to_string().unwrap();
        // Parse the exposition format: `name{labels} value` lines, `#` comments.
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            if series.starts_with("braid_task_progress_percent{") && series.contains("flow=\"metered\"") {
                assert!(series.contains("step=\"start\"") && series.contains("task=\"1\""), "{series}");
                assert!(
                    content_type.contains("openmetrics-text") || content_type.contains("text/plain"),
                    "{content_type}"
                );
                percent = Some(value.parse::<f64>().unwrap());
            }
        }
        if percent.is_some() {
            break;
        }
    }
    release.store(true, Ordering::SeqCst);
    assert_eq!(runner.join().unwrap(), ExitCode::SUCCESS);
    assert_eq!(percent, Some(37.0), "the running task's percent was served");
}

/// The flow the kill -9 test runs in a child process: 40 branches, each a little slow.
fn slow_fanout(marker: std::path::PathBuf) -> braid_runtime::Result<Flow> {
    Flow::builder("crashy")
        .step("start", |ctx| async move {
            ctx.set("items", &(0..40u64).collect::<Vec<_>>())?;
            Ok(())
        })
        .foreach("items", "work")
        .step("work", move |ctx| {
            let marker = marker.clone();
            async move {
                let x: u64 = ctx.input()?;
                // One file per execution: which branches ran, in which process.
                std::fs::write(marker.join(format!("{x}-{}", std::process::id())), b"")?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                ctx.set("out", &(x + 1))?;
                Ok(())
            }
        })
        .next("join")
        .join("join", |ctx| async move {
            let mut t = 0u64;
            for i in ctx.inputs()? {
                t += i.get::<u64>("out").await?;
            }
            ctx.set("total", &t)?;
            Ok(())
        })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build()
}

const CRASH_CHILD_ENV: &str = "BRAID_TEST_CRASH_CHILD";

/// Entry point of the child process of the kill -9 test; does nothing otherwise.
#[test]
fn crash_child_entry() {
    let Ok(store) = std::env::var(CRASH_CHILD_ENV) else { return };
    let Ok(marker) = std::env::var("BRAID_TEST_EXECUTED_DIR") else { return };
    let args = ["flowbin", "run", "--max-workers", "2", "--quiet", "--store", &store];
    let _ = braid_cli::flow_main_from(args, vec![slow_fanout(marker.into())]);
}

#[test]
fn resume_after_kill_9_reuses_what_finished() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let executed = dir.path().join("executed");
    std::fs::create_dir_all(&executed).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_entry", "--test-threads", "1"])
        .env(CRASH_CHILD_ENV, &store)
        .env("BRAID_TEST_EXECUTED_DIR", &executed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it without warning once some branches are done and some are not.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = Client::open(store.to_str().unwrap())
            .and_then(|c| c.flow("crashy"))
            .and_then(|f| f.latest_run())
            .and_then(|r| r.step("work"))
            .map(|s| s.count(TaskStatus::Succeeded))
            .unwrap_or(0);
        if done >= 10 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let killed_at = std::time::Instant::now();
    let client = Client::open(store.to_str().unwrap()).unwrap();
    // Nothing renews the dead process's lease: within the lease and a second, every
    // reader sees the run and the tasks it was running as lost, never as running.
    let crashed = loop {
        let run = client.flow("crashy").unwrap().latest_run().unwrap();
        if run.status() != RunStatus::Running || killed_at.elapsed() > braid_runtime::RUN_LEASE * 3 {
            break run;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(crashed.status(), RunStatus::Lost, "killed mid-run: lost, not running");
    assert!(killed_at.elapsed() <= braid_runtime::RUN_LEASE + Duration::from_secs(1), "{:?}", killed_at.elapsed());
    assert_eq!(crashed.record().status, RunStatus::Running, "the record itself was never marked finished");
    let reason = crashed.lost_reason().unwrap();
    assert!(reason.contains(&format!(":{}", child.id())), "names the process that held it: {reason}");
    let running = client.flow("crashy").unwrap();
    assert!(
        running.runs_matching(&braid_client::RunFilter::default().status(RunStatus::Running)).unwrap().is_empty(),
        "`--status running` does not list it"
    );
    let work = crashed.step("work").unwrap();
    assert_eq!(work.count(TaskStatus::Running), 0, "{work:?}");
    let lost_tasks = work.tasks().unwrap().into_iter().filter(|t| t.record().status == TaskStatus::Running);
    for t in lost_tasks {
        assert_eq!(t.status(), TaskStatus::Lost, "{}", t.pathspec());
        assert!(t.lost_reason().unwrap().contains("its run is lost"), "{:?}", t.lost_reason());
    }
    let finished = crashed.step("work").unwrap().count(TaskStatus::Succeeded);
    assert!((10..40).contains(&finished), "{finished} branches finished before the kill");

    let before: std::collections::HashSet<String> =
        std::fs::read_dir(&executed).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let id = crashed.id().to_string();
    assert_eq!(cli(&store, &["resume", &id], vec![slow_fanout(executed.clone())]), ExitCode::SUCCESS);
    let after: Vec<String> = std::fs::read_dir(&executed)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !before.contains(n))
        .collect();
    assert_eq!(after.len() as u64, 40 - finished, "only the branches that had not finished ran again");
    let run = client.flow("crashy").unwrap().latest_run().unwrap();
    assert_eq!(run.status(), RunStatus::Succeeded);
    assert_eq!(run.origin_run(), Some(crashed.id()));
    let origin = client.flow("crashy").unwrap().run(&id).unwrap();
    assert_eq!((origin.record().status, origin.status()), (RunStatus::Lost, RunStatus::Lost), "resume stored it");
    assert!(origin.error().unwrap().contains("lost: its lease"), "{:?}", origin.error());
    let join = run.step("join").unwrap().single_task().unwrap();
    assert_eq!(join.data::<u64>("total").unwrap(), (1..=40u64).sum::<u64>());
}

/// `greet(count: uint, name: string, loud: bool = false)`.
fn greet() -> braid_runtime::Result<Flow> {
    Flow::builder("greet")
        .param(Param::new("count", ParamType::UInt))
        .param(Param::new("name", ParamType::String))
        .param(Param::new("loud", ParamType::Bool).default(false))
        .step("start", |_ctx| async move { Ok(()) })
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

#[test]
fn as_flow_binary() {
    child::serve(|| vec![greet()]);
}

#[test]
fn every_bad_param_is_listed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = child::flow_binary(
        &store,
        &["run", "--quiet", "--param", "cuont=3", "--param", "loud=yes", "--param", "name", "--param", "name=a"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let expected = "error: flow `greet`: 4 problems with its parameters:
  --param name: \"name\" is not NAME=VALUE; write it like --param count=10
  --param cuont=3: the flow has no parameter `cuont` (did you mean `count`?); it has: `count` (uint), `name` (string), `loud` (bool)
  --param loud=yes: parameter `loud` expects a boolean (true or false), got \"yes\"
  the flow requires parameter `count` (uint, no default) and it is not given; pass --param count=VALUE
";
    assert_eq!(err, expected);
    assert!(!store.exists(), "nothing was started, so no store was made");
    // Given twice is a problem too, named with both places.
    let out = child::flow_binary(
        &store,
        &["run", "--quiet", "--param", "count=1", "--param", "count=2", "--param", "name=a"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--param count=2: parameter `count` is given twice (first as --param count=1)"), "{err}");
}

#[test]
fn a_bad_store_location_is_printed_as_an_error_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "x").unwrap();
    let out = child::flow_binary(&file, &["run", "--quiet", "--param", "count=1", "--param", "name=a"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let f = file.display();
    assert_eq!(
        err,
        format!(
            "error: cannot open the store at {f}\n  caused by: store location \"{f}\" is a file, not a directory; a store is a directory: give a directory path (e.g. ./.braid) or `memory:`\n"
        )
    );
    let out = child::flow_binary(Path::new("postgres://localhost/braid"), &["scheduler", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: cannot open the store at postgres://localhost/braid\n  caused by: "), "{err}");
    assert!(err.contains("keeps records only: say where its blobs go with --blobs"), "{err}");
}

#[test]
fn a_caught_failure_is_shown_as_caught_and_the_run_says_who_ran_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let flow = || {
        Flow::builder("catching")
            .step("start", |_ctx| async move { Err("the API said 503".into()) })
            .retries(1)
            .catch("end_ex")
            .next("end")
            .step("end", |_ctx| async move { Ok(()) })
            .end()
            .build()
    };
    assert_eq!(cli(&store, &["run"], vec![flow()]), ExitCode::SUCCESS);
    let braid = |args: &[&str]| braid_cmd::braid(&store, args);
    // The step's rows (streamed) and the task's own document say the same.
    let step: serde_json::Value = serde_json::from_str(&braid(&["show", "catching/latest/start", "--json"])).unwrap();
    let row = &step["tasks"][0];
    let id = row["id"].as_u64().unwrap();
    let pathspec = format!("catching/latest/start/{id}");
    let v: serde_json::Value = serde_json::from_str(&braid(&["show", &pathspec, "--json"])).unwrap();
    let task = if v["task"].is_object() { &v["task"] } else { &v };
    for t in [row, task] {
        assert_eq!(t["status"], "succeeded");
        assert_eq!(t["error"], serde_json::Value::Null, "a caught failure is not the task's error");
        assert_eq!(
            t["caught"],
            serde_json::json!({"artifact": "end_ex", "attempt": 2, "kind": "error", "message": "the API said 503"})
        );
    }
    let text = braid(&["show", &pathspec]);
    assert!(text.contains("caught") && text.contains("attempt 2 failed (error: the API said 503)"), "{text}");
    assert!(text.contains("the task succeeded with it in `end_ex`"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("error")), "{text}");
    // Who ran it: the user and host are in the run's meta, and `braid runs --user` filters by them.
    let user = ["BRAID_USER", "USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    let runs: serde_json::Value =
        serde_json::from_str(&braid(&["runs", "catching", "--user", &user, "--json"])).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["meta"]["user"], user.as_str());
    assert!(runs[0]["meta"]["host"].as_str().is_some_and(|h| !h.is_empty()));
    let none: serde_json::Value =
        serde_json::from_str(&braid(&["runs", "catching", "--user", "someone-else", "--json"])).unwrap();
    assert_eq!(none, serde_json::json!([]));
    let run_text = braid(&["show", "catching/latest"]);
    assert!(run_text.contains(&format!("launched by  {user} on ")), "{run_text}");
    let client = Client::open(store.to_str().unwrap()).unwrap();
    let t = client.task(&pathspec).unwrap();
    assert_eq!(t.caught().unwrap().error.message, "the API said 503");
    assert!(t.error().is_none());
}

#[test]
fn optional_and_list_parameters_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let flow = || {
        Flow::builder("lists")
            .param(Param::new("since", ParamType::String).optional())
            .param(Param::new("sites", ParamType::String).list())
            .step("start", |ctx| async move {
                let since: Option<String> = ctx.param("since")?;
                let sites: Vec<String> = ctx.param("sites")?;
                ctx.set("got", &(since, sites))?;
                Ok(())
            })
            .next("end")
            .step("end", |_| async { Ok(()) })
            .end()
            .build()
    };
    let run = ["run", "--param", "sites=a,b", "--param", "sites=c"];
    assert_eq!(cli(&store, &run, vec![flow()]), ExitCode::SUCCESS);
    let client = Client::open(store.to_str().unwrap()).unwrap();
    let start = client.task_at("lists/latest/start").unwrap();
    let got: (Option<String>, Vec<String>) = start.data("got").unwrap();
    assert_eq!(got, (None, vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]));
    assert_eq!(cli(&store, &["run"], vec![flow()]), ExitCode::from(2), "a required list is required");
}
