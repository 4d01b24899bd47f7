#![allow(clippy::unwrap_used, dead_code)]
//! Shared by the UI tests: stores with real runs and plans, and an in-process server.

pub mod webdriver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;

use braid_client::fixtures::{RunWriter, TaskSpec};
use braid_client::{RunStatus, TaskStatus};
use braid_runtime::{Flow, Param, ParamType};
use braid_store::Store;
use serde_json::json;

/// What a hostile value looks like; every page must show it as text.
pub const XSS: &str = "<script>alert(1)</script>";
pub const XSS_IMG: &str = "<img src=x onerror=alert(2)>";

#[path = "../../examples/fanout/flow.rs"]
mod fanout_flow;

/// The `fanout` example's flow (`n` = 10 unless given), each `work` task logging a line.
pub fn fanout() -> braid_runtime::Result<Flow> {
    fanout_flow::Fanout::new().default_n(10).log_work().build()
}

/// The `sites` example's flow.
pub fn data_sync() -> braid_runtime::Result<Flow> {
    data_sync_failing(|_| false)
}

/// The `sites` example's flow, whose runs fail where `fails(site)` says so.
pub fn data_sync_failing(fails: fn(&str) -> bool) -> braid_runtime::Result<Flow> {
    Flow::builder("data_sync")
        .param(Param::new("site_id", ParamType::String))
        .param(Param::new("full", ParamType::Bool).default(false))
        .step("start", move |ctx| async move {
            let site: String = ctx.param("site_id")?;
            ctx.set("site", &site)?;
            if fails(&site) {
                return Err(format!("cannot reach {site}").into());
            }
            Ok(())
        })
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

pub fn flowbin(name: &str, store: &Path, args: &[&str], flows: Vec<braid_runtime::Result<Flow>>) -> ExitCode {
    let mut all = vec![name.to_owned(), "--store".into(), store.display().to_string()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    braid_cli::flow_main_from(all, flows)
}

/// The sites plan file with a description (hostile unless told otherwise).
pub fn plan_file(dir: &Path) -> PathBuf {
    plan_file_described(dir, XSS)
}

pub fn plan_file_described(dir: &Path, description: &str) -> PathBuf {
    let path = dir.join("plans.toml");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sites.toml")).unwrap();
    let text = text
        .replace("description = \"Sync every site's changes, hourly\"", &format!("description = \"{description}\""));
    std::fs::write(&path, text).unwrap();
    path
}

/// A store with: a real fanout run of `n` items, the sites plan with three hours of
/// backfilled runs (9 runs), and a fabricated run whose values are all hostile text.
pub fn store(dir: &Path, n: u64) -> PathBuf {
    store_with(dir, n, data_sync, "2026-03-02T12:00")
}

/// Like [`store`], with another `data_sync` flow and backfill end.
pub fn store_with(dir: &Path, n: u64, sync: fn() -> braid_runtime::Result<Flow>, to: &str) -> PathBuf {
    store_described(dir, n, sync, to, XSS)
}

pub fn store_described(
    dir: &Path,
    n: u64,
    sync: fn() -> braid_runtime::Result<Flow>,
    to: &str,
    description: &str,
) -> PathBuf {
    let store = dir.join(".braid");
    let n_param = format!("n={n}");
    assert_eq!(flowbin("fanout", &store, &["run", "--param", &n_param], vec![fanout()]), ExitCode::SUCCESS);
    let plans = plan_file_described(dir, description);
    assert_eq!(flowbin("sites", &store, &["plans", "apply", plans.to_str().unwrap()], vec![sync()]), ExitCode::SUCCESS);
    let backfill = ["backfill", "data_sync_hourly", "--from", "2026-03-02T09:00", "--to", to];
    // A flow whose runs fail makes the backfill exit 1; its runs are stored all the same.
    let _ = flowbin("sites", &store, &backfill, vec![sync()]);
    hostile_run(&Store::open_fs(&store).unwrap());
    store
}

/// A failed run of flow `evil` whose params, name, meta, error, artifact, log line and
/// progress message hold markup.
pub fn hostile_run(store: &Store) {
    let spec = json!({
        "format_version": 1, "name": "evil",
        "steps": [{"name": "start", "next": {"type": "next", "to": "end"}}, {"name": "end", "next": {"type": "end"}}]
    });
    let mut params = BTreeMap::new();
    params.insert("who".to_owned(), json!(XSS));
    let mut w = RunWriter::start(store, "evil", Some(spec), params).unwrap();
    w.update_run(|r| {
        r.name = Some(XSS.to_owned());
        r.meta.insert("note".into(), json!(XSS_IMG));
    })
    .unwrap();
    let spec = TaskSpec::new("start")
        .set("payload", &XSS.to_owned())
        .unwrap()
        .log(XSS)
        .progress(40.0, XSS_IMG)
        .status(TaskStatus::Failed)
        .error("error", XSS);
    w.task(spec).unwrap();
    w.finish(RunStatus::Failed, Some(XSS.to_owned())).unwrap();
}

/// A UI server on 127.0.0.1 (a free port) over `store`, running until the test process ends.
pub fn serve(store: &Path, token: Option<&str>) -> String {
    let store = braid_client::open_store(store.to_str().unwrap(), None).unwrap();
    let security = braid_cli::ui::Security::new(token.map(str::to_owned));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, braid_cli::ui::router(store, security)).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// An HTTP agent that returns every status as a response and follows no redirect.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into()
}

/// `(status, body)` of a GET.
pub fn get(agent: &ureq::Agent, url: &str) -> (u16, String) {
    let mut r = agent.get(url).call().unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

/// Runs `braid ARGS --json` on the store.
pub fn braid_json(store: &Path, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("--store")
        .arg(store)
        .args(args)
        .arg("--json")
        .env_remove("BRAID_STORE")
        .output()
        .unwrap();
    assert!(out.status.success(), "braid {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The CSRF token in a page's forms.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}
