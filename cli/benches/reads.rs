//! Reads through the real `braid` binary over a wide step: wall time and peak RSS of
//! the `braid` process (its own, from `wait4`), with stdout to /dev/null.
//!
//! One fanout run of 100,000 branches is made in a child process of this binary on a
//! fresh fs store (as `orchestration` makes its runs), 1,000 runs of a two-step flow in
//! another; then `braid show STEP --json`, `braid artifact STEP NAME --json`, `braid
//! show STEP` (text) and `braid runs --limit 0 --json` run over them, each in its own
//! process.
//!
//! Run through `cargo xtask bench [--quick]`, which passes `--json-out FILE` and merges
//! the rows into one table; alone (`cargo bench -p braidflow-cli --bench reads`) it
//! prints its own rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/fanout/flow.rs"]
mod fanout_flow;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_core::RunStatus;
use braid_runtime::{Flow, RunOptions};
use braid_store::Store;

#[path = "support/rows.rs"]
mod rows;
use rows::{emit, row};

/// Branches of the fanout run the step reads go over.
const WIDTH: u64 = 100_000;
/// Runs `braid runs` lists.
const RUNS: u64 = 1_000;

#[path = "support/args.rs"]
mod args;
use args::args;

fn main() {
    let a = args();
    if let Some((kind, n, store)) = &a.child {
        child(kind, *n, store);
        return;
    }
    let dir = tempfile::Builder::new().prefix("braid-bench-").tempdir_in(".").or_else(|_| tempfile::tempdir()).unwrap();
    let reps = if a.quick { 1 } else { 3 };
    let wide = dir.path().join("fanout");
    let many = dir.path().join("runs");
    eprintln!("reads: making a fanout run of {}", thousands(WIDTH));
    make(&wide, "fanout", WIDTH);
    eprintln!("reads: making {} runs", thousands(RUNS));
    make(&many, "runs", RUNS);

    let w = thousands(WIDTH);
    let r = thousands(RUNS);
    let cases: Vec<(String, &Path, Vec<&str>)> = vec![
        (format!("`braid show STEP --json` at {w} tasks"), &wide, vec!["show", "fanout/latest/work", "--json"]),
        (
            format!("`braid artifact STEP NAME --json` at {w}"),
            &wide,
            vec!["artifact", "fanout/latest/work", "out", "--json"],
        ),
        (format!("`braid show STEP` (text) at {w} tasks"), &wide, vec!["show", "fanout/latest/work"]),
        (format!("`braid runs --json` over {r} runs"), &many, vec!["runs", "tiny", "--limit", "0", "--json"]),
    ];
    let mut out = Vec::new();
    for (label, store, cmd) in &cases {
        eprintln!("reads: {label} ({reps}x)");
        let bytes = printed_bytes(store, cmd);
        let mut m: Vec<Measured> = (0..reps).map(|_| braid(store, cmd)).collect();
        m.sort_by_key(|m| m.wall);
        let med = &m[m.len() / 2];
        let spread = if m.len() > 1 {
            format!(
                ", median of {} ({:.3}–{:.3} s)",
                m.len(),
                m[0].wall.as_secs_f64(),
                m[m.len() - 1].wall.as_secs_f64()
            )
        } else {
            String::new()
        };
        let s = "reads";
        out.push(row(
            s,
            format!("{label} · wall"),
            Some(med.wall.as_secs_f64()),
            "s",
            format!("`braid {}`, stdout {:.1} MB to /dev/null{spread}", cmd.join(" "), bytes as f64 / 1e6),
        ));
        out.push(row(
            s,
            format!("{label} · peak RSS"),
            Some(med.maxrss_kib as f64 / 1024.0),
            "MiB",
            "ru_maxrss of the braid process (wait4)",
        ));
    }
    emit(&out, a.json_out.as_deref());
}

/// 1234567 -> "1,234,567".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---- the stores, each made in a child process ----

fn tiny() -> Flow {
    Flow::builder("tiny")
        .step("start", |_| async { Ok(()) })
        .next("end")
        .step("end", |_| async { Ok(()) })
        .end()
        .build()
        .unwrap()
}

/// Makes `store` in a child process of this binary.
fn make(store: &Path, kind: &str, n: u64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", kind, &n.to_string()])
        .arg(store)
        .output()
        .unwrap();
    assert!(out.status.success(), "making {kind} {n}: {}", String::from_utf8_lossy(&out.stderr));
}

/// In the child: one fanout run of `n` branches, or `n` runs of `tiny`, on a fresh store.
fn child(kind: &str, n: u64, store: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open_fs(store).unwrap();
        match kind {
            "fanout" => {
                let flow = Arc::new(fanout_flow::fanout().expect("the fanout flow is valid"));
                let opts = RunOptions {
                    params: vec![("n".to_owned(), n.to_string())],
                    max_num_splits: Some(n.max(1)),
                    env_params: false,
                    ..Default::default()
                };
                let s = braid_runtime::run(flow, store, opts).await.unwrap();
                assert_eq!(s.status, RunStatus::Succeeded, "{:?}", s.error);
            }
            "runs" => {
                let flow = Arc::new(tiny());
                for _ in 0..n {
                    let opts = RunOptions { env_params: false, ..Default::default() };
                    let s = braid_runtime::run(flow.clone(), store.clone(), opts).await.unwrap();
                    assert_eq!(s.status, RunStatus::Succeeded);
                }
            }
            other => panic!("unknown store kind {other}"),
        }
    });
}

// ---- one braid process ----

struct Measured {
    wall: Duration,
    maxrss_kib: u64,
}

fn command(store: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_braid"));
    c.arg("--store").arg(store).args(args).env_remove("BRAID_STORE").env("NO_COLOR", "1").stdin(Stdio::null());
    c
}

/// Runs `braid --store STORE ARGS` with stdout to /dev/null: wall time from spawn to
/// exit, and the process's peak RSS.
#[allow(clippy::zombie_processes)] // Reaped by `wait4`, which std's `Child` does not know.
fn braid(store: &Path, args: &[&str]) -> Measured {
    let err_path = store.with_extension("stderr");
    let stderr = std::fs::File::create(&err_path).unwrap();
    let start = Instant::now();
    let child = command(store, args)
        .stdout(Stdio::from(std::fs::File::create("/dev/null").unwrap()))
        .stderr(stderr)
        .spawn()
        .unwrap();
    let (status, maxrss_kib) = wait4(child.id());
    let wall = start.elapsed();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status == 0, "braid {args:?} exited with status {status:#x}: {err}");
    let _ = std::fs::remove_file(&err_path);
    Measured { wall, maxrss_kib }
}

/// How many bytes `braid --store STORE ARGS` prints (a separate, unmeasured run).
fn printed_bytes(store: &Path, args: &[&str]) -> u64 {
    let mut child = command(store, args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let n = std::io::copy(&mut child.stdout.take().unwrap(), &mut std::io::sink()).unwrap();
    assert!(child.wait().unwrap().success(), "braid {args:?} failed");
    n
}

/// Waits for the child `pid` and returns its wait status and its own peak RSS in KiB
/// (`ru_maxrss` of `wait4`: this child only, not every child this process waited for;
/// sampling /proc/PID/status instead would miss a peak between samples or at exit).
/// std has no safe `wait4`, so this is the one `unsafe` of the bench: two plain libc
/// calls on locals.
#[allow(unsafe_code)]
fn wait4(pid: u32) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: `rusage` is a plain C struct that wait4 fills in; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = libc::pid_t::try_from(pid).unwrap();
    loop {
        // SAFETY: both pointers are to live locals of the right types.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "wait4 on braid: {e}");
    }
    (status, u64::try_from(usage.ru_maxrss).unwrap_or(0))
}
