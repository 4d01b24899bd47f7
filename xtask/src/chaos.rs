//! `cargo xtask chaos [--runs N] [--n ITEMS] [--seed S]`: kills braid processes with
//! SIGKILL at random moments and checks that what they leave behind is whole.
//!
//! - **fanout**: `N` times (default 20), runs the `fanout` example over `ITEMS` items
//!   (default 100,000) on a fresh store, kills it at a random moment, resumes it (the
//!   killed run must show as `lost` and resume without `--force`), and checks the
//!   join's total, that the resume reused exactly the tasks the killed run had
//!   committed (none ran twice after being committed), and that `braid verify` finds
//!   the store whole.
//! - **scheduler**: kills a `scheduler` serving three launch requests at a random
//!   moment, starts another (`scheduler --once`), and checks each launch ran once.
//! - **plans apply**: kills `plans apply` of a file of 2,000 plans mid-write, and checks
//!   that the store has all of them or none, and that the apply then succeeds.
//!
//! Prints one summary line; fails on any wrong total, duplicate run or damaged store.
//! It shells out to the release binaries (it depends on no braid crate).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{cargo, root, run};

struct Options {
    runs: usize,
    items: u64,
    seed: u64,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options { runs: 20, items: 100_000, seed: fastrand::u64(..) };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name} {v:?}: expected a whole number"))
        };
        match a.as_str() {
            "--runs" => o.runs = value("--runs")? as usize,
            "--n" => o.items = value("--n")?,
            "--seed" => o.seed = value("--seed")?,
            other => {
                return Err(format!(
                    "chaos: unknown argument {other:?}; usage: cargo xtask chaos [--runs N] [--n ITEMS] [--seed S]"
                ));
            }
        }
    }
    Ok(o)
}

fn bin(name: &str, example: bool) -> PathBuf {
    let dir = root().join("target/release");
    if example { dir.join("examples").join(name) } else { dir.join(name) }
}

/// Runs a command to its end; its stdout, or an error with its stderr.
fn output(what: &str, cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{what}: cannot start: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn braid(store: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin("braid", false));
    c.arg("--store").arg(store).args(args).env_remove("BRAID_STORE");
    c
}

fn json(what: &str, cmd: &mut Command) -> Result<Value, String> {
    let text = output(what, cmd)?;
    serde_json::from_str(&text).map_err(|e| format!("{what}: not JSON ({e}): {text:.200}"))
}

/// Starts `cmd`, kills it with SIGKILL after `after` (if it is still going); whether
/// it was killed (false: it had ended by itself).
fn kill_after(what: &str, cmd: &mut Command, after: Duration) -> Result<bool, String> {
    let mut child =
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().map_err(|e| format!("{what}: cannot start: {e}"))?;
    let start = Instant::now();
    while start.elapsed() < after {
        if child.try_wait().map_err(|e| format!("{what}: {e}"))?.is_some() {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(2).min(after.saturating_sub(start.elapsed())));
    }
    child.kill().map_err(|e| format!("{what}: cannot kill: {e}"))?;
    child.wait().map_err(|e| format!("{what}: {e}"))?;
    Ok(true)
}

fn verify(store: &Path) -> Result<(), String> {
    output("braid verify", &mut braid(store, &["verify"])).map(|_| ())
}

/// Succeeded tasks of a run, over all its steps (from `braid show RUN --json`).
fn succeeded(store: &Path, pathspec: &str) -> Result<(u64, String), String> {
    let v = json("braid show", &mut braid(store, &["show", pathspec, "--json"]))?;
    let n = v["steps"]
        .as_array()
        .ok_or("braid show: no steps")?
        .iter()
        .map(|s| s["counts"]["succeeded"].as_u64().unwrap_or(0))
        .sum();
    Ok((n, v["status"].as_str().unwrap_or("?").to_owned()))
}

/// One kill of the fanout example and its resume; what was observed.
struct FanoutRound {
    killed: bool,
    committed: u64,
}

fn fanout_round(tmp: &Path, o: &Options, i: usize, typical: Duration) -> Result<FanoutRound, String> {
    let store = tmp.join(format!("fanout-{i}"));
    let id_file = tmp.join(format!("fanout-{i}.id"));
    let n = o.items.to_string();
    let mut first = Command::new(bin("fanout", true));
    first.args(["run", "--quiet", "--param", &format!("n={n}"), "--run-id-file"]).arg(&id_file);
    first.arg("--store").arg(&store).env_remove("BRAID_STORE");
    // Anywhere from start-up to a little past the typical end.
    let after = Duration::from_micros(fastrand::u64(0..=(typical.as_micros() as u64 * 11 / 10).max(1)));
    let killed = kill_after("fanout run", &mut first, after)?;
    let Ok(id) = std::fs::read_to_string(&id_file) else {
        // Killed before the run existed: nothing to resume, the store must still open.
        if store.exists() {
            verify(&store)?;
        }
        return Ok(FanoutRound { killed, committed: 0 });
    };
    let pathspec = format!("fanout/{}", id.trim());
    let (committed, status) = succeeded(&store, &pathspec)?;
    if killed && status == "running" {
        return Err(format!("{pathspec}: killed, and still shown as running"));
    }
    if status == "succeeded" {
        verify(&store)?;
        return Ok(FanoutRound { killed, committed });
    }
    // Resume without --force: the killed run is lost (its holder exited).
    let mut resume = Command::new(bin("fanout", true));
    resume.args(["resume", id.trim(), "--quiet"]).arg("--store").arg(&store).env_remove("BRAID_STORE");
    let text = output(&format!("resume of {pathspec}"), &mut resume)?;
    // The last line: `fanout/ID succeeded in 1.2s (N tasks run, M reused)`.
    let reused: u64 = text
        .lines()
        .last()
        .and_then(|l| l.trim().strip_suffix(" reused)"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if reused != committed {
        return Err(format!(
            "{pathspec}: the killed run had committed {committed} tasks, the resume reused {reused}: {text}"
        ));
    }
    let total = json("braid artifact", &mut braid(&store, &["artifact", "fanout/latest/join", "total", "--json"]))?;
    let m = o.items;
    let expect = (0..m).map(|x| x * x).sum::<u64>();
    let got = total.as_u64().or_else(|| total["value"].as_u64());
    if got != Some(expect) {
        return Err(format!("{pathspec}: resumed total {total}, expected {expect}"));
    }
    let (_, origin) = succeeded(&store, &pathspec)?;
    if origin != "lost" {
        return Err(format!("{pathspec}: killed and resumed, but shown as {origin}, not lost"));
    }
    verify(&store)?;
    Ok(FanoutRound { killed, committed })
}

fn scheduler_round(tmp: &Path, i: usize) -> Result<bool, String> {
    let store = tmp.join(format!("sched-{i}"));
    let sites = bin("sites", true);
    let plans = root().join("cli/examples/sites.toml");
    let mut apply = Command::new(&sites);
    apply.args(["plans", "apply"]).arg(&plans).arg("--store").arg(&store).env_remove("BRAID_STORE");
    output("sites plans apply", &mut apply)?;
    output("braid plan launch", &mut braid(&store, &["plan", "launch", "data_sync_hourly"]))?;
    let mut sched = Command::new(&sites);
    sched.args(["scheduler"]).arg("--store").arg(&store).env_remove("BRAID_STORE");
    let killed = kill_after("sites scheduler", &mut sched, Duration::from_micros(fastrand::u64(0..300_000)))?;
    let mut once = Command::new(&sites);
    once.args(["scheduler", "--once"]).arg("--store").arg(&store).env_remove("BRAID_STORE");
    output("sites scheduler --once", &mut once)?;
    let runs = json("braid runs", &mut braid(&store, &["runs", "data_sync", "--limit", "0", "--json"]))?;
    let mut names: Vec<String> = runs
        .as_array()
        .ok_or("braid runs: not a list")?
        .iter()
        .filter(|r| r["status"] != "cancelled")
        .map(|r| format!("{} {}", r["name"].as_str().unwrap_or("?"), r["status"].as_str().unwrap_or("?")))
        .collect();
    names.sort();
    let lost_ok = |n: &str| n.ends_with(" succeeded") || n.ends_with(" lost");
    let distinct: std::collections::BTreeSet<&str> = names.iter().map(|n| n.split(' ').next().unwrap_or("")).collect();
    if names.len() != 3 || distinct.len() != 3 || !names.iter().all(|n| lost_ok(n)) {
        return Err(format!("scheduler killed after claiming: expected each of 3 launches run once, got {names:?}"));
    }
    verify(&store)?;
    Ok(killed)
}

fn apply_round(tmp: &Path, i: usize, file: &Path) -> Result<bool, String> {
    let store = tmp.join(format!("apply-{i}"));
    let sites = bin("sites", true);
    let cmd = || {
        let mut c = Command::new(&sites);
        c.args(["plans", "apply"]).arg(file).arg("--store").arg(&store).env_remove("BRAID_STORE");
        c
    };
    let killed = kill_after("sites plans apply", &mut cmd(), Duration::from_micros(fastrand::u64(0..400_000)))?;
    if store.exists() {
        let list = json("braid plan list", &mut braid(&store, &["plan", "list", "--json"]))?;
        let n = list.as_array().map_or(0, Vec::len);
        if n != 0 && n != 2000 {
            return Err(format!("plans apply killed mid-write left {n} of 2000 plans (all or none)"));
        }
    }
    output("sites plans apply (again)", &mut cmd())?;
    let n = json("braid plan list", &mut braid(&store, &["plan", "list", "--json"]))?.as_array().map_or(0, Vec::len);
    if n != 2000 {
        return Err(format!("after a second apply, {n} of 2000 plans"));
    }
    verify(&store)?;
    Ok(killed)
}

pub fn chaos(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    fastrand::seed(o.seed);
    let started = Instant::now();
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "braidflow-cli",
        "--bin",
        "braid",
        "--example",
        "fanout",
        "--example",
        "sites",
    ]);
    run("cargo build --release (braid, fanout, sites)", build)?;
    let tmp = tempdir()?;

    // How long an unkilled run takes, so kills land all over it.
    let t0 = Instant::now();
    let mut whole = Command::new(bin("fanout", true));
    whole.args(["run", "--quiet", "--param", &format!("n={}", o.items)]).arg("--store").arg(tmp.join("whole"));
    output("fanout run (unkilled, for timing)", whole.env_remove("BRAID_STORE"))?;
    let typical = t0.elapsed();

    let mut killed = 0;
    let mut committed = Vec::new();
    for i in 0..o.runs {
        let r = fanout_round(&tmp, &o, i, typical).map_err(|e| format!("chaos (seed {}): round {i}: {e}", o.seed))?;
        killed += usize::from(r.killed);
        committed.push(r.committed);
        eprintln!("xtask: chaos fanout round {i}: killed={} committed={}", r.killed, r.committed);
    }
    let mut sched_killed = 0;
    for i in 0..5 {
        sched_killed += usize::from(scheduler_round(&tmp, i).map_err(|e| format!("chaos (seed {}): {e}", o.seed))?);
    }
    let file = tmp.join("plans.toml");
    let mut text = String::new();
    for p in 0..2000 {
        text.push_str(&format!(
            "[[plan]]\nname = \"p{p}\"\nflow = \"data_sync\"\nevery = \"1h\"\nlabels = {{ n = \"v{p}\" }}\nfixed = {{ site_id = \"s{p}\" }}\n\n"
        ));
    }
    std::fs::write(&file, text).map_err(|e| format!("write {}: {e}", file.display()))?;
    let mut apply_killed = 0;
    for i in 0..5 {
        apply_killed += usize::from(apply_round(&tmp, i, &file).map_err(|e| format!("chaos (seed {}): {e}", o.seed))?);
    }
    let _ = std::fs::remove_dir_all(&tmp).map_err(|e| eprintln!("xtask: cannot remove {}: {e}", tmp.display()));
    committed.sort_unstable();
    println!(
        "chaos (seed {}): fanout n={} killed {killed}/{} mid-run (committed before the kill: min {}, median {}, max {}), every resume exact and every store whole; scheduler killed {sched_killed}/5, each launch once; plans apply killed {apply_killed}/5, all or none; {:.0} s",
        o.seed,
        o.items,
        o.runs,
        committed.first().unwrap_or(&0),
        committed.get(committed.len() / 2).unwrap_or(&0),
        committed.last().unwrap_or(&0),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn tempdir() -> Result<PathBuf, String> {
    let dir = root().join("target/chaos").join(format!("run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}
