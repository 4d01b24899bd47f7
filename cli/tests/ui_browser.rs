#![allow(clippy::unwrap_used)]
//! `braid ui` in a real headless Chromium, driven over WebDriver (chromedriver): every
//! page of a real run, a running task's progress bar moving, a plan's activation toggled
//! and persisted, a jump to foreach branch 7, hostile values shown as text, and a
//! cross-site form post refused. Saves screenshots of the run page, the foreach grid and
//! the matrix view under the target directory, or under docs/ (the README's) with
//! `BRAID_UPDATE_SCREENSHOTS=1`, so a test run leaves the work tree as it was. Without chromium and chromedriver installed, each test
//! says so on one line and passes.

mod ui_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, Once};
use std::time::Duration;

use braid_client::Client;
use braid_runtime::Flow;
use serde_json::Value;
use ui_support::webdriver::{Browser, browser};
use ui_support::*;

static ONE_BROWSER_AT_A_TIME: Mutex<()> = Mutex::new(());
static SKIP: Once = Once::new();

/// Runs `f` with a fresh headless Chromium, one test at a time; without the binaries,
/// prints the skip line once (past the test harness's capture) and returns.
fn with_browser(f: impl FnOnce(&Browser)) {
    let Some((chromium, driver)) = browser() else {
        SKIP.call_once(|| {
            let _ = writeln!(std::io::stderr(), "skipped: install chromium and chromium-driver");
        });
        return;
    };
    let _one = ONE_BROWSER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let b = Browser::start(&chromium, &driver);
    f(&b);
}

/// Where screenshots go: docs/ when asked to update the README's, else the target dir.
fn docs() -> PathBuf {
    if std::env::var_os("BRAID_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
    } else {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn latest_run(store: &Path, flow: &str) -> String {
    braid_json(store, &["runs", flow])[0]["id"].as_str().unwrap().to_owned()
}

#[test]
fn every_page_of_a_real_run_loads_and_draws() {
    with_browser(|b| {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 200);
        let base = serve(&store, None);
        let run = latest_run(&store, "fanout");

        b.goto(&format!("{base}/"));
        b.wait_for("the runs table", "return document.querySelectorAll('table.runs tbody tr').length == 11", WAIT);

        b.goto(&format!("{base}/runs/fanout/{run}"));
        b.wait_for("the DAG", "return document.querySelectorAll('svg.dag g.node').length == 4", WAIT);
        assert_eq!(b.js("return document.querySelectorAll('svg.timeline rect.span').length"), 4);
        assert_eq!(
            b.js("return document.querySelector('svg.dag g.node[data-step=work]').getAttribute('class')"),
            "node st st-succeeded"
        );
        b.screenshot(&docs().join("ui-run.png"));

        b.goto(&format!("{base}/runs/fanout/{run}/work"));
        b.wait_for("the grid drawn", "return document.getElementById('grid').dataset.drawn == '200'", WAIT);
        b.goto(&format!("{base}/runs/fanout/{run}/join"));
        b.wait_for("the join's page", "return document.querySelectorAll('table.tasks tbody tr').length == 1", WAIT);
        b.click("table.tasks tbody a");
        b.wait_for("the task page", "return !!document.getElementById('live-task')", WAIT);
        let text = b.js("return document.body.innerText").as_str().unwrap().to_owned();
        assert!(text.contains("total") && text.contains("Attempts"), "{text}");

        b.goto(&format!("{base}/plans"));
        b.wait_for("the plans table", "return document.querySelectorAll('table.plans tbody tr').length == 1", WAIT);
        b.goto(&format!("{base}/plans/data_sync_hourly"));
        b.wait_for("the matrix", "return document.querySelectorAll('#matrix td.cell').length == 9", WAIT);
        assert_eq!(b.js("return document.querySelectorAll('#matrix td.cell.st-succeeded').length"), 9);
    });
}

/// A run whose one task reports progress for a few seconds.
fn progress_demo() -> braid_runtime::Result<Flow> {
    Flow::builder("progress_demo")
        .step("start", |_ctx| async move { Ok(()) })
        .next("work")
        .step("work", |ctx| async move {
            for i in 0..=40 {
                ctx.progress(i as f32 * 2.5, format!("chunk {i} of 40"))?;
                ctx.progress_units(i, 40, "chunks")?;
                ctx.progress_details(serde_json::json!({ "next_chunk": i + 1 }))?;
                tracing::info!("chunk {i} done");
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            Ok(())
        })
        .progress_coalescing(Duration::from_millis(10), 0.5)
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

#[test]
fn a_running_tasks_progress_bar_moves() {
    with_browser(|b| {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join(".braid");
        let s2 = store.clone();
        let runner = std::thread::spawn(move || flowbin("progress_demo", &s2, &["run"], vec![progress_demo()]));
        // Wait for the task to run and report.
        let mut task = None;
        for _ in 0..400 {
            std::thread::sleep(Duration::from_millis(10));
            let Ok(client) = Client::open(store.to_str().unwrap()) else { continue };
            let Ok(step) = client.flow("progress_demo").and_then(|f| f.latest_run()).and_then(|r| r.step("work"))
            else {
                continue;
            };
            if let Ok(t) = step.single_task()
                && t.progress().is_some()
            {
                task = Some((t.run_id().to_string(), t.id().0));
                break;
            }
        }
        let (run, task) = task.expect("the work task started and reported progress");
        let base = serve(&store, None);
        b.goto(&format!("{base}/runs/progress_demo/{run}/work/{task}"));
        let first = b.js("return document.getElementById('progress').value").as_f64().unwrap();
        assert!(first < 90.0, "the task is still early: {first}");
        b.wait_for(
            "the bar to move by 10 points",
            &format!("return document.getElementById('progress').value >= {}", first + 10.0),
            WAIT,
        );
        let text = b.js("return document.getElementById('progress-text').textContent").as_str().unwrap().to_owned();
        assert!(text.contains("chunk") && text.contains("/40 chunks"), "units on the live line: {text}");
        b.wait_for(
            "the details, live",
            "return document.getElementById('progress-details').textContent.includes('next_chunk')",
            WAIT,
        );
        b.wait_for(
            "new log lines",
            "return document.getElementById('log').textContent.includes('chunk 20 done')",
            WAIT,
        );
        assert_eq!(runner.join().unwrap(), ExitCode::SUCCESS);
        b.wait_for(
            "the page to show the end",
            "return document.querySelector('#task-status .st').textContent == 'succeeded'",
            WAIT,
        );
    });
}

#[test]
fn a_plans_activation_is_toggled_and_persisted() {
    with_browser(|b| {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 2);
        let base = serve(&store, None);
        let active = || braid_json(&store, &["plan", "list"])[0]["active"].as_bool().unwrap();
        assert!(active());
        b.goto(&format!("{base}/plans/data_sync_hourly"));
        b.click("button.toggle");
        b.wait_for("the redirect back", "return location.search.includes('done=')", WAIT);
        assert_eq!(b.js("return document.getElementById('plan-active').textContent"), "inactive");
        assert!(!active(), "`braid plan list` shows it inactive");
        b.click("button.toggle");
        b.wait_for("active again", "return document.getElementById('plan-active').textContent == 'active'", WAIT);
        assert!(active());
        b.goto(&format!("{base}/plans"));
        b.type_into("form[action='/plans/actions'] input[name=label]", "team=sync");
        b.click("form[action='/plans/actions'] button[value=deactivate]");
        b.wait_for("the notice", "return !!document.querySelector('.notice')", WAIT);
        assert!(!active(), "deactivated by label");
    });
}

#[test]
fn jump_to_foreach_branch_7_by_index() {
    with_browser(|b| {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 50);
        let base = serve(&store, None);
        b.goto(&format!("{base}/runs/fanout/latest/work"));
        b.type_into("#jump-index", "7");
        b.click("form.jump button");
        b.wait_for("the task page", "return !!document.getElementById('live-task')", WAIT);
        let text = b.js("return document.body.innerText").as_str().unwrap().to_owned();
        assert!(text.contains("start[7 of 50]"), "{text}");
        assert!(text.contains("49"), "its artifact out = 7 * 7");
    });
}

#[test]
fn hostile_values_render_as_text() {
    with_browser(|b| {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 2);
        let base = serve(&store, None);
        let run = latest_run(&store, "evil");
        let task = braid_json(&store, &["show", &format!("evil/{run}/start")])["tasks"][0]["id"].as_u64().unwrap();
        for path in [
            "/".to_owned(),
            format!("/runs/evil/{run}"),
            format!("/runs/evil/{run}/start/{task}"),
            "/plans".into(),
            "/plans/data_sync_hourly".into(),
        ] {
            b.goto(&format!("{base}{path}"));
            b.wait_for("the page", "return document.readyState == 'complete'", WAIT);
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(b.alert(), None, "{path}: no dialog opened");
            let injected =
                b.js("return document.querySelectorAll('img[src=x], script:not([src=\"/assets/app.js\"])').length");
            assert_eq!(injected, 0, "{path}: no injected node");
            let text = b.js("return document.body.innerText").as_str().unwrap().to_owned();
            assert!(text.contains(XSS), "{path}: the markup shows as text");
        }
    });
}

#[test]
fn a_cross_site_form_post_is_refused() {
    with_browser(|b| {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 2);
        let base = serve(&store, None);
        let page = get(&agent(), &format!("{base}/plans/data_sync_hourly")).1;
        let csrf = csrf_of(&page);
        // Another origin (another port) whose page posts to the UI on load, even with
        // the real CSRF token.
        let evil = format!(
            "<!DOCTYPE html><form method=post action='{base}/plans/data_sync_hourly/deactivate'>\
             <input name=csrf value='{csrf}'></form><script>document.forms[0].submit()</script>"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                let app = axum::Router::new()
                    .route("/", axum::routing::get(move || async move { axum::response::Html(evil) }));
                axum::serve(l, app).await.unwrap();
            });
        });
        let other = rx.recv().unwrap();
        b.goto(&format!("http://{other}/"));
        b.wait_for("the post to land", &format!("return location.href.startsWith('{base}')"), WAIT);
        b.wait_for("the refusal", "return document.body.innerText.includes('403')", WAIT);
        let text = b.js("return document.body.innerText").as_str().unwrap().to_owned();
        assert!(text.contains("refused"), "{text}");
        assert_eq!(braid_json(&store, &["plan", "list"])[0]["active"], Value::Bool(true), "nothing changed");
    });
}

/// A site that fails on the 10:00 and 13:00 ticks (for the matrix screenshot).
fn sometimes_fails(site: &str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    site == "site2" && n % 4 == 1
}

#[test]
fn screenshots_of_the_foreach_grid_and_the_matrix_view() {
    with_browser(|b| {
        let dir = tempfile::tempdir().unwrap();
        let sync = || data_sync_failing(sometimes_fails);
        let store = store_described(dir.path(), 5, sync, "2026-03-03T09:00", "Sync every site's changes, hourly");
        grid_demo(&braid_store::Store::open_fs(&store).unwrap(), 3000);
        let base = serve(&store, None);
        b.goto(&format!("{base}/runs/grid_demo/latest/work"));
        b.wait_for("the grid drawn", "return document.getElementById('grid').dataset.drawn == '3000'", WAIT);
        b.screenshot(&docs().join("ui-grid.png"));
        b.goto(&format!("{base}/plans/data_sync_hourly?ticks=24"));
        b.wait_for("the matrix", "return document.querySelectorAll('#matrix td.cell').length == 72", WAIT);
        assert!(b.js("return document.querySelectorAll('#matrix td.cell.st-failed').length").as_u64().unwrap() > 0);
        b.screenshot(&docs().join("ui-matrix.png"));
    });
}

/// A running foreach of `n` branches in every state, written through the store API.
fn grid_demo(store: &braid_store::Store, n: u64) {
    use braid_client::TaskStatus;
    use braid_client::fixtures::{RunWriter, TaskSpec};
    let mut spec = braid_client::fixtures::fanout_spec();
    spec["name"] = serde_json::json!("grid_demo");
    let mut w = RunWriter::start(store, "grid_demo", Some(spec), Default::default()).unwrap();
    let start = w.task(TaskSpec::new("start").set_sequence("items", &(0..n).collect::<Vec<u64>>()).unwrap()).unwrap();
    let specs = (0..n)
        .map(|i| {
            let status = match i {
                _ if i % 211 == 17 => TaskStatus::Failed,
                _ if i % 503 == 100 => TaskStatus::Lost,
                _ if i >= n - 300 => TaskStatus::Pending,
                _ if i >= n - 420 => TaskStatus::Running,
                _ => TaskStatus::Succeeded,
            };
            TaskSpec::new("work").foreach("start", start, "items", i, n).parent(start).status(status)
        })
        .collect();
    w.tasks(specs).unwrap();
}
