#![allow(clippy::unwrap_used)]
//! `scheduler --metrics-addr`: a real scheduler process (this test binary run as the
//! flow binary) serving per-plan metrics, scraped over plain HTTP while it launches a
//! plan every second, then restarted with the plan deactivated to show the last success
//! is read back from the store.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use braid_runtime::{Flow, Param, ParamType};

#[allow(dead_code)] // `flow_binary` is for other tests.
mod child;

/// `data_sync` of the `sites` example, failing for the site `bad`.
fn data_sync() -> braid_runtime::Result<Flow> {
    Flow::builder("data_sync")
        .param(Param::new("site_id", ParamType::String))
        .step("start", |ctx| async move {
            let site: String = ctx.param("site_id")?;
            if site == "bad" {
                return Err("site bad is unreachable".into());
            }
            ctx.set("site", &site)?;
            Ok(())
        })
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

#[test]
fn as_flow_binary() {
    child::serve(|| vec![data_sync()]);
}

const PLAN: &str = r#"
[[plan]]
name = "data_sync_fast"
flow = "data_sync"
every = "1s"

[plan.matrix]
site_id = ["site2", "bad"]
"#;

fn flowbin(store: &Path, args: &[&str]) -> ExitCode {
    let mut all = vec!["sites".to_owned(), "--store".into(), store.display().to_string()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    braid_cli::flow_main_from(all, vec![data_sync()])
}

/// Starts `scheduler --metrics-addr 127.0.0.1:0` in a child process; returns it and the
/// address it printed on stderr.
fn start_scheduler(store: &Path) -> (Child, String) {
    let args = serde_json::to_string(&[
        "flowbin",
        "--store",
        store.to_str().unwrap(),
        "scheduler",
        "--poll",
        "0.2",
        "--metrics-addr",
        "127.0.0.1:0",
    ])
    .unwrap();
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["as_flow_binary", "--exact", "--nocapture", "--test-threads=1", "--quiet"])
        .env(child::CHILD_ARGS, args)
        .env_remove("BRAID_STORE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(c.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "the scheduler exited without printing its metrics address");
        if let Some(rest) = line.trim().strip_prefix("metrics at http://") {
            break rest.trim_end_matches("/metrics").to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    (c, addr)
}

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the series `series` (name and labels exactly), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

fn stop(mut c: Child) {
    c.kill().unwrap();
    c.wait().unwrap();
}

#[test]
fn scheduler_metrics_count_launches_runs_failures_and_the_last_success_which_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join(".braid");
    let file = dir.path().join("fast.toml");
    std::fs::write(&file, PLAN).unwrap();
    assert_eq!(flowbin(&store, &["plans", "apply", file.to_str().unwrap()]), ExitCode::SUCCESS);

    let (child, addr) = start_scheduler(&store);
    let ok = r#"set="site_id=site2""#;
    let bad = r#"set="site_id=bad""#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = scrape(&addr);
        let succeeded =
            value(&text, &format!(r#"braid_plan_runs_total{{plan="data_sync_fast",{ok},status="succeeded"}}"#));
        let failures = value(&text, &format!(r#"braid_plan_consecutive_failures{{plan="data_sync_fast",{bad}}}"#));
        if succeeded.is_some_and(|n| n >= 1.0) && failures.is_some_and(|n| n >= 2.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "no succeeded run and two failures within a minute:\n{text}");
        std::thread::sleep(Duration::from_millis(300));
    };
    stop(child);

    let started =
        value(&text, &format!(r#"braid_plan_launches_total{{plan="data_sync_fast",{ok},outcome="started"}}"#));
    assert!(started.is_some_and(|n| n >= 1.0), "{text}");
    let failed = value(&text, &format!(r#"braid_plan_runs_total{{plan="data_sync_fast",{bad},status="failed"}}"#));
    assert!(failed.is_some_and(|n| n >= 2.0), "{text}");
    assert_eq!(value(&text, &format!(r#"braid_plan_consecutive_failures{{plan="data_sync_fast",{ok}}}"#)), Some(0.0));
    let now = jiff::Timestamp::now().as_second() as f64;
    let last =
        value(&text, &format!(r#"braid_plan_last_success_timestamp_seconds{{plan="data_sync_fast",{ok}}}"#)).unwrap();
    assert!((now - 120.0..=now + 1.0).contains(&last), "last success {last}, now {now}");
    assert!(!text.contains(&format!(r#"braid_plan_last_success_timestamp_seconds{{plan="data_sync_fast",{bad}}}"#)));
    let next = value(&text, r#"braid_plan_next_tick_timestamp_seconds{plan="data_sync_fast"}"#).unwrap();
    assert!((now - 120.0..=now + 60.0).contains(&next), "next tick {next}");
    assert!(value(&text, r#"braid_plan_launch_lag_seconds_count{plan="data_sync_fast"}"#).is_some_and(|n| n >= 1.0));
    // The task metrics of the runs it started, on the same endpoint.
    assert!(text.contains(r#"braid_tasks{flow="data_sync",step="start",status="succeeded"}"#), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);

    // Restarted with the plan deactivated (nothing launches): the gauges come from the store.
    let out = Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("--store")
        .arg(&store)
        .args(["plan", "deactivate", "data_sync_fast"])
        .env_remove("BRAID_STORE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (child, addr) = start_scheduler(&store);
    let deadline = Instant::now() + Duration::from_secs(30);
    let series = format!(r#"braid_plan_last_success_timestamp_seconds{{plan="data_sync_fast",{ok}}}"#);
    let text = loop {
        let text = scrape(&addr);
        if value(&text, &series).is_some() {
            break text;
        }
        assert!(Instant::now() < deadline, "the last success was not read back:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    stop(child);
    let restored = value(&text, &series).unwrap();
    assert!(restored >= last, "restored {restored} < scraped before {last}");
    let failures = value(&text, &format!(r#"braid_plan_consecutive_failures{{plan="data_sync_fast",{bad}}}"#));
    assert!(failures.is_some_and(|n| n >= 2.0), "{text}");
    assert!(value(&text, r#"braid_plan_next_tick_timestamp_seconds{plan="data_sync_fast"}"#).is_none(), "inactive");
}
