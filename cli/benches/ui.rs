//! Figures of the web UI (`braid ui`): server time and time to screen in headless
//! Chromium of the run page and the foreach grid of a 100,000-branch foreach, and of the
//! runs list over 10,000 runs; the server's memory (RSS) while it serves them.
//!
//! `cargo bench -p braidflow-cli --bench ui` (add `-- --quick` for 10,000 branches and
//! 1,000 runs). The store is built first (a real run of the `fanout` flow, and runs
//! written through the store API), then `braid ui` runs as its own process, so its RSS is
//! the server's alone. Server time: the median of 5 GETs (the first grid read, before
//! the server caches a finished step's grid, is shown apart). Browser time: navigation
//! start to the page's load event (run page, runs list) or to the grid drawn on its
//! canvas (step page), median of 3, in a fresh headless Chromium over chromedriver;
//! skipped when chromium and chromedriver are not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/ui_support/webdriver.rs"]
mod webdriver;

#[path = "../examples/fanout/flow.rs"]
mod fanout_flow;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_client::fixtures::RunWriter;
use braid_core::RunStatus;
use braid_runtime::{Flow, RunOptions};
use braid_store::Store;

/// The `fanout` example's flow (`n` = 100 unless given).
fn fanout() -> Flow {
    fanout_flow::fanout().expect("the fanout flow is valid")
}

fn proc_kib(pid: u32, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (branches, runs) = if quick { (10_000u64, 1_000usize) } else { (100_000, 10_000) };
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join(".braid");

    let t = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let summary = rt.block_on(async {
        let store = Store::open_fs(&store_path).unwrap();
        let opts = RunOptions {
            params: vec![("n".to_owned(), branches.to_string())],
            max_num_splits: Some(branches),
            env_params: false,
            ..Default::default()
        };
        braid_runtime::run(Arc::new(fanout()), store, opts).await.unwrap()
    });
    drop(rt);
    assert_eq!(summary.status, RunStatus::Succeeded);
    let run = summary.run_id.to_string();
    let store = Store::open_fs(&store_path).unwrap();
    let spec = serde_json::json!({
        "format_version": 1, "name": "many",
        "steps": [{"name": "start", "next": {"type": "next", "to": "end"}}, {"name": "end", "next": {"type": "end"}}]
    });
    for i in 0..runs {
        let spec = (i == 0).then(|| spec.clone());
        let mut w = RunWriter::start(&store, "many", spec, Default::default()).unwrap();
        w.finish(RunStatus::Succeeded, None).unwrap();
    }
    drop(store);
    eprintln!("store: {branches}-branch fanout run and {runs} runs of `many` in {:.1}s", t.elapsed().as_secs_f64());

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("--store")
        .arg(&store_path)
        .args(["ui", "--addr", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .expect("start braid ui");
    let pid = child.id();
    let server = Server(child);
    let base = format!("http://127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let get = |path: &str| -> (f64, usize) {
        let t = Instant::now();
        let mut r = agent.get(&format!("{base}{path}")).call().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let n = r.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap().len();
        (t.elapsed().as_secs_f64() * 1000.0, n)
    };
    for _ in 0..200 {
        if agent.get(&format!("{base}/metrics")).call().is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let rss_idle = proc_kib(pid, "VmRSS:");

    let run_page = format!("/runs/fanout/{run}");
    let step_page = format!("/runs/fanout/{run}/work");
    let grid_api = format!("/api/v1/runs/fanout/{run}/steps/work/grid");
    let (grid_first, grid_bytes) = get(&grid_api);
    let rows: Vec<(String, String, usize)> = [
        (format!("run page of a {branches}-branch foreach"), run_page.clone()),
        (format!("step page ({branches} branches)"), step_page.clone()),
        (format!("grid document, {branches} tasks (cached)"), grid_api.clone()),
        (format!("runs list page, {} runs", runs + 1), "/".to_owned()),
        (format!("runs API page, {} runs", runs + 1), "/api/v1/runs".to_owned()),
        ("task page (branch 7)".to_owned(), format!("/runs/fanout/{run}/work/index/7")),
    ]
    .into_iter()
    .map(|(label, path)| {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let (ms, n) = get(&path);
            times.push(ms);
            bytes = n;
        }
        (label, format!("{:.1} ms", median(times)), bytes)
    })
    .collect();
    println!("braid ui figures (server time: median of 5 GETs over loopback)");
    println!(
        "  {:<48} {:>10}  {:>9} bytes",
        format!("grid document, {branches} tasks (first read)"),
        format!("{grid_first:.1} ms"),
        grid_bytes
    );
    for (label, time, bytes) in &rows {
        println!("  {label:<48} {time:>10}  {bytes:>9} bytes");
    }

    match webdriver::browser() {
        None => println!("  browser: skipped (install chromium and chromium-driver)"),
        Some((chromium, driver)) => {
            let b = webdriver::Browser::start(&chromium, &driver);
            let load = "return performance.getEntriesByType('navigation')[0].loadEventEnd";
            let measure = |label: &str, path: &str, script: &str, ready: &str| {
                let mut v = Vec::new();
                for _ in 0..3 {
                    b.goto(&format!("{base}{path}"));
                    b.wait_for(label, ready, Duration::from_secs(30));
                    v.push(b.js(script).as_f64().unwrap_or(f64::NAN));
                }
                println!("  {:<48} {:>10}", format!("in Chromium: {label}"), format!("{:.0} ms", median(v)));
            };
            let loaded = "return document.readyState == 'complete' && performance.getEntriesByType('navigation')[0].loadEventEnd > 0";
            measure(&format!("run page, {branches} branches"), &run_page, load, loaded);
            measure(
                &format!("foreach grid drawn, {branches} cells"),
                &step_page,
                "return Number(document.getElementById('grid').dataset.drawnAt)",
                "return !!document.getElementById('grid').dataset.drawnAt",
            );
            measure(&format!("runs list, {} runs", runs + 1), "/", load, loaded);
        }
    }
    println!(
        "  server RSS: {} MiB idle, {} MiB after serving these, peak {} MiB",
        rss_idle / 1024,
        proc_kib(pid, "VmRSS:") / 1024,
        proc_kib(pid, "VmHWM:") / 1024
    );
    drop(server);
}
