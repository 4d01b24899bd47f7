//! Runs this test binary again as a flow binary, so a test can read what a user sees:
//! stderr, stdout and the exit code. The child is the test `as_flow_binary` of the same
//! file, which does nothing unless `CHILD_ARGS` is set.

use std::path::Path;
use std::process::{Command, ExitCode, Output};

pub const CHILD_ARGS: &str = "BRAID_TEST_FLOW_BINARY_ARGS";

/// `flowbin --store STORE ARGS...` in a child process.
pub fn flow_binary(store: &Path, args: &[&str]) -> Output {
    let mut all = vec!["flowbin".to_owned(), "--store".into(), store.display().to_string()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    Command::new(std::env::current_exe().unwrap())
        .args(["as_flow_binary", "--exact", "--nocapture", "--test-threads=1", "--quiet"])
        .env(CHILD_ARGS, serde_json::to_string(&all).unwrap())
        .env_remove("BRAID_STORE")
        .output()
        .unwrap()
}

/// In the child: runs `flows` with the arguments the parent gave and exits with the
/// flow binary's exit code. In a normal test run: returns at once.
pub fn serve(flows: impl FnOnce() -> Vec<braid_runtime::Result<braid_runtime::Flow>>) {
    let Ok(args) = std::env::var(CHILD_ARGS) else { return };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let code = braid_cli::flow_main_from(args, flows());
    let n = (0..=255u8).find(|n| ExitCode::from(*n) == code).unwrap();
    std::process::exit(n.into());
}
