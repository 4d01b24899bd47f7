//! `braid --store STORE ARGS...` as a user runs it (the built binary, `BRAID_STORE`
//! unset): its stdout, after asserting that it succeeded.

use std::path::Path;
use std::process::Command;

/// Runs `braid` on `store` with `args`; panics with its stderr unless it exits 0.
pub fn braid(store: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("BRAID_STORE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run braid: {e}"));
    assert!(out.status.success(), "braid {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("braid {args:?} printed non-UTF-8: {e}"))
}
