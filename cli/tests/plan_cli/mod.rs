//! What the launch-plan command tests share: the flow binary run in-process over a
//! store (`flow_main_from`), and the `braid` binary run on it, its output read as text or
//! JSON.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, ExitCode, Output};

use braid_runtime::{Flow, Param, ParamType};
use serde_json::Value;

/// The `sites` example's flow, `data_sync(site_id, full = false)`: its start step sets
/// `site`.
pub fn sites_flow() -> braid_runtime::Result<Flow> {
    Flow::builder("data_sync")
        .param(Param::new("site_id", ParamType::String))
        .param(Param::new("full", ParamType::Bool).default(false))
        .step("start", |ctx| async move {
            let site: String = ctx.param("site_id")?;
            ctx.set("site", &site)?;
            Ok(())
        })
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

/// The flow binary `sites` hosting `flow`, on `store`, with `args`.
pub fn flowbin_of(flow: fn() -> braid_runtime::Result<Flow>, store: &Path, args: &[&str]) -> ExitCode {
    let mut all = vec!["sites".to_owned(), "--store".into(), store.display().to_string()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    braid_cli::flow_main_from(all, vec![flow()])
}

/// `braid --store STORE ARGS`.
pub fn braid(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("BRAID_STORE")
        .output()
        .unwrap()
}

/// `braid --store STORE ARGS --json`, which must succeed, parsed.
pub fn braid_json(store: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = braid(store, &a);
    assert!(out.status.success(), "braid {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
