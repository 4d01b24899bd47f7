//! `cargo xtask <command>`: developer automation as Rust code (matklad's xtask pattern),
//! run through the alias in `.cargo/config.toml`.
//!
//! - `ci`: formatting, clippy with warnings denied, `cargo doc` with warnings denied (every
//!   public item documented), the whole test suite, and `cargo package --workspace`.
//! - `bench [--quick] [--json FILE] [--peer metaflow]`: builds braid's benchmarks in
//!   release mode, runs them all and prints one table (see `bench.rs`).
//! - `chaos [--runs N] [--n ITEMS] [--seed S]`: kills braid processes with SIGKILL at
//!   random moments, resumes, and checks totals and stores (see `chaos.rs`).
//! - `fuzz [--smoke] [--seconds N] [TARGET...]`: runs the cargo-fuzz targets in `fuzz/`
//!   (see `fuzz.rs`); `--smoke` is CI's short pass.
//! - `dev-servers`: starts a throwaway PostgreSQL and S3 server (moto) on 127.0.0.1 and
//!   prints the `BRAID_STORE` / `BRAID_BLOBS` / `AWS_*` exports that point braid at them;
//!   they stop with Ctrl-C. Shells out to the store crate's `dev_servers` example.
//! - `cluster [--workers N] [--example NAME]`: those servers plus N workers of a flow
//!   example (`fanout`), with the commands to try a run on them (see `cluster.rs`).

mod bench;
mod chaos;
mod cluster;
mod fuzz;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <ci | bench [--quick] [--json FILE] [--peer metaflow] | chaos [--runs N] [--n ITEMS] [--seed S] | fuzz [--smoke] [--seconds N] [TARGET...] | dev-servers | cluster [--workers N] [--example NAME]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::bench(&args[1..]),
        Some("chaos") => chaos::chaos(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("dev-servers") => dev_servers(),
        Some("cluster") => cluster::cluster(&args[1..]),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}; {USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(PathBuf::from).unwrap_or(dir)
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(what: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = cmd.status().map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{what} failed ({status})")) }
}

fn dev_servers() -> Result<(), String> {
    let mut c = cargo();
    c.args([
        "run",
        "-q",
        "-p",
        "braidflow-store",
        "--features",
        "test-servers,postgres,s3",
        "--example",
        "dev_servers",
    ]);
    run("start throwaway PostgreSQL and S3 servers (needs postgresql and moto[server] installed)", c)
}

fn ci() -> Result<(), String> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", fmt)?;
    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    run("cargo clippy", clippy)?;
    // Every public item documented (each lib.rs has `#![warn(missing_docs)]`) and every
    // intra-doc link resolving: rustdoc's warnings are errors here.
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--all-features"]).env("RUSTDOCFLAGS", "-D warnings");
    run("cargo doc", doc)?;
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run("cargo test --workspace", test)?;
    // Each crate builds alone from the files it would publish, against its siblings as
    // packaged (not the workspace's paths): what a user of one crate gets.
    let mut package = cargo();
    package.args(["package", "--workspace", "--exclude", "xtask"]);
    run("cargo package --workspace", package)
}

/// Every benchmark `cargo xtask bench` runs, as (package, bench target), in this order.
/// Each is a `harness = false` bench that takes `--quick` and `--json-out FILE` and
/// writes its results there as a JSON array of rows `{section, name, value, unit, note}`
/// (`section`: orchestration, store, client, progress, scheduler, isolation or reads; `value` a number or
/// null). A bench that writes no file has its printed output shown under the table.
const BENCHES: &[(&str, &str)] = &[
    ("braidflow-cli", "orchestration"),
    ("braidflow-store", "store"),
    ("braidflow-runtime", "progress"),
    ("braidflow-runtime", "scheduler"),
    ("braidflow-runtime", "isolation"),
    ("braidflow-cli", "remote"),
    ("braidflow-cli", "reads"),
    ("braidflow-cli", "workers"),
];
