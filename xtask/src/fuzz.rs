//! `cargo xtask fuzz [--smoke] [--seconds N] [TARGET...]`: runs the cargo-fuzz targets
//! in `fuzz/` (a standalone cargo-fuzz project, not a workspace member).
//!
//! - Without `--smoke`, each target fuzzes for `--seconds` (default 600), growing its
//!   corpus in `fuzz/corpus/<target>/`; minimise it afterwards with
//!   `cargo fuzz cmin <target>` (run in `fuzz/`) before committing it.
//! - `--smoke` (what CI runs): each target first replays its committed corpus once, then
//!   fuzzes for `--seconds` (default 20) into a scratch corpus under `fuzz/target/`, so
//!   the committed corpus is left as it is. The smoke builds at `opt-level = 1`
//!   (`CARGO_PROFILE_RELEASE_OPT_LEVEL=1`, in `fuzz/target/smoke/`): the build is most of
//!   CI's time here, and 20 s of somewhat slower fuzzing still replays every committed
//!   input and explores past it.
//!
//! Any crash, panic, timeout (`-timeout`) or out-of-memory fails the command; libFuzzer
//! leaves the input that did it in `fuzz/artifacts/<target>/`. The targets are built
//! without a sanitizer: braid denies `unsafe` code, and the C it links (SQLite, zstd)
//! is not instrumented by cargo fuzz either, so AddressSanitizer would only halve the
//! speed. Without a sanitizer cargo fuzz needs no nightly-only flag, so the stable
//! toolchain builds the targets.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::root;

/// Every target in `fuzz/fuzz_targets/`, in the order they run.
pub const TARGETS: &[&str] = &["envelope_decode", "pathspec_parse", "plan_file", "flow_spec", "damaged_store"];

const USAGE: &str = "usage: cargo xtask fuzz [--smoke] [--seconds N] [TARGET...]";
/// Seconds one input may take before libFuzzer reports it as a hang.
const TIMEOUT_SECS: u32 = 10;

#[derive(Debug)]
struct Options {
    smoke: bool,
    seconds: u64,
    targets: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut smoke = false;
    let mut seconds = None;
    let mut targets = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => smoke = true,
            "--seconds" => {
                let v = it.next().ok_or_else(|| format!("--seconds needs a number; {USAGE}"))?;
                let n = v.parse::<u64>().ok().filter(|n| *n > 0);
                seconds = Some(n.ok_or_else(|| format!("--seconds {v:?}: give a whole number of seconds above 0"))?);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            t if TARGETS.contains(&t) => targets.push(t.to_owned()),
            other => {
                return Err(format!(
                    "unknown fuzz target or option {other:?}; targets: {}; {USAGE}",
                    TARGETS.join(", ")
                ));
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    Ok(Options { smoke, seconds: seconds.unwrap_or(if smoke { 20 } else { 600 }), targets })
}

/// What one libFuzzer run reported.
#[derive(Debug, Default)]
struct Stats {
    executions: Option<u64>,
    execs_per_sec: Option<u64>,
    coverage: Option<u64>,
    features: Option<u64>,
    corpus: Option<String>,
    new_units: Option<u64>,
    peak_rss_mb: Option<u64>,
}

impl Stats {
    fn read(&mut self, line: &str) {
        let stat = |name: &str| line.strip_prefix(name).and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(v) = stat("stat::number_of_executed_units:") {
            self.executions = Some(v);
        } else if let Some(v) = stat("stat::average_exec_per_sec:") {
            self.execs_per_sec = Some(v);
        } else if let Some(v) = stat("stat::new_units_added:") {
            self.new_units = Some(v);
        } else if let Some(v) = stat("stat::peak_rss_mb:") {
            self.peak_rss_mb = Some(v);
        }
        // Status lines: `#1234 NEW cov: 567 ft: 890 corp: 12/3456b ...`.
        if line.starts_with('#') {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                match w {
                    "cov:" => self.coverage = words.next().and_then(|v| v.parse().ok()).or(self.coverage),
                    "ft:" => self.features = words.next().and_then(|v| v.parse().ok()).or(self.features),
                    "corp:" => self.corpus = words.next().map(str::to_owned).or(self.corpus.take()),
                    _ => {}
                }
            }
        }
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Runs `cargo fuzz run TARGET DIRS... -- FLAGS...` in `fuzz/`, echoing libFuzzer's
/// output (without its per-input lines in a smoke) and collecting its figures.
fn libfuzzer(target: &str, dirs: &[PathBuf], flags: &[String], smoke: bool) -> (Stats, Result<(), String>) {
    let quiet = smoke;
    let mut cmd = fuzz_command("run", smoke);
    cmd.arg(target);
    cmd.args(dirs);
    cmd.arg("--");
    cmd.args(flags);
    cmd.stderr(Stdio::piped());
    let what = format!("cargo fuzz run {target} -- {}", flags.join(" "));
    eprintln!("xtask: {what}");
    let mut stats = Stats::default();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (stats, Err(format!("{what}: cannot start: {e}"))),
    };
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            stats.read(&line);
            let per_input = [" NEW ", " REDUCE ", " pulse "].iter().any(|w| line.contains(w));
            if !(quiet && per_input) {
                eprintln!("{line}");
            }
        }
    }
    let result = match child.wait() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "{what} failed ({status}): the input that did it is in fuzz/artifacts/{target}/; \
             reproduce with `cargo fuzz run --sanitizer none {target} fuzz/artifacts/{target}/<file>` in fuzz/"
        )),
        Err(e) => Err(format!("{what}: {e}")),
    };
    (stats, result)
}

fn fuzz_cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.arg("fuzz");
    c.current_dir(root().join("fuzz"));
    c
}

/// `cargo fuzz SUBCOMMAND --sanitizer none`; for a smoke, less optimised, in its own
/// target dir (so it never rebuilds the release one).
fn fuzz_command(subcommand: &str, smoke: bool) -> Command {
    let mut c = fuzz_cargo();
    c.args([subcommand, "--sanitizer", "none"]);
    if smoke {
        c.env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1");
        c.arg("--target-dir").arg(root().join("fuzz/target/smoke"));
    }
    c
}

pub fn fuzz(args: &[String]) -> Result<(), String> {
    let opts = parse(args)?;
    let probe = fuzz_cargo().arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Err("cargo fuzz is not installed: run `cargo install cargo-fuzz --locked`".into());
    }
    let fuzz_dir = root().join("fuzz");
    let started = Instant::now();
    // Every target at once (`cargo fuzz build` takes one or all): they share all the
    // dependencies, so the others cost seconds.
    let build = fuzz_command("build", opts.smoke);
    let what = if opts.smoke { "opt-level 1 for a smoke" } else { "release" };
    crate::run(&format!("cargo fuzz build ({what}, debug assertions, no sanitizer)"), build)?;
    let built = started.elapsed();

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for target in &opts.targets {
        let corpus = fuzz_dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("create {}: {e}", corpus.display()))?;
        let t0 = Instant::now();
        let timeout = format!("-timeout={TIMEOUT_SECS}");
        let mut result = Ok(());
        let dirs = if opts.smoke {
            // One pass over the committed corpus; then fuzz into a scratch corpus seeded by it.
            let replay = ["-runs=0".to_owned(), timeout.clone()];
            result = libfuzzer(target, std::slice::from_ref(&corpus), &replay, true).1;
            let scratch = fuzz_dir.join("target").join("smoke-corpus").join(target);
            let _ = std::fs::remove_dir_all(&scratch);
            std::fs::create_dir_all(&scratch).map_err(|e| format!("create {}: {e}", scratch.display()))?;
            vec![scratch, corpus]
        } else {
            vec![corpus]
        };
        let mut stats = Stats::default();
        if result.is_ok() {
            let flags = [format!("-max_total_time={}", opts.seconds), timeout, "-print_final_stats=1".into()];
            (stats, result) = libfuzzer(target, &dirs, &flags, opts.smoke);
        }
        let outcome = match &result {
            Ok(()) => "ok".to_owned(),
            Err(_) => "FAILED".to_owned(),
        };
        if let Err(e) = result {
            failures.push(e);
        }
        rows.push(format!(
            "{target:<16} {:>6.0}s {:>11} {:>8} {:>6} {:>7} {:>12} {:>5} {:>6}  {outcome}",
            t0.elapsed().as_secs_f64(),
            show(stats.executions),
            show(stats.execs_per_sec),
            show(stats.coverage),
            show(stats.features),
            stats.corpus.as_deref().unwrap_or("-"),
            show(stats.new_units),
            show(stats.peak_rss_mb),
        ));
    }
    eprintln!("\nxtask fuzz: built in {:.0}s; {} s of fuzzing per target", built.as_secs_f64(), opts.seconds);
    eprintln!(
        "{:<16} {:>7} {:>11} {:>8} {:>6} {:>7} {:>12} {:>5} {:>6}  result",
        "target", "time", "executions", "execs/s", "cov", "ft", "corpus", "new", "rss MB"
    );
    for row in &rows {
        eprintln!("{row}");
    }
    eprintln!("total {:.0}s", started.elapsed().as_secs_f64());
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_every_target_and_the_mode_s_duration() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.targets, TARGETS);
        assert_eq!((o.smoke, o.seconds), (false, 600));
        let o = parse(&["--smoke".into(), "plan_file".into()]).unwrap();
        assert_eq!((o.smoke, o.seconds, o.targets), (true, 20, vec!["plan_file".to_owned()]));
        let o = parse(&["--seconds".into(), "5".into()]).unwrap();
        assert_eq!(o.seconds, 5);
    }

    #[test]
    fn bad_options_name_the_problem() {
        assert!(parse(&["nope".into()]).unwrap_err().contains("envelope_decode"));
        assert!(parse(&["--seconds".into(), "0".into()]).unwrap_err().contains("above 0"));
        assert!(parse(&["--seconds".into()]).unwrap_err().contains("needs a number"));
    }

    #[test]
    fn stats_are_read_from_libfuzzer_output() {
        let mut s = Stats::default();
        s.read("#4096\tpulse  cov: 120 ft: 300 corp: 20/1024b lim: 43 exec/s: 2048 rss: 40Mb");
        s.read("#9000\tDONE   cov: 130 ft: 310 corp: 22/1100b lim: 43 exec/s: 3000 rss: 41Mb");
        s.read("stat::number_of_executed_units: 9000");
        s.read("stat::average_exec_per_sec:     3000");
        s.read("stat::new_units_added:          2");
        assert_eq!(
            (s.coverage, s.features, s.executions, s.execs_per_sec),
            (Some(130), Some(310), Some(9000), Some(3000))
        );
        assert_eq!(s.corpus.as_deref(), Some("22/1100b"));
        assert_eq!(s.new_units, Some(2));
    }

    #[test]
    fn every_target_has_a_source_file() {
        for t in TARGETS {
            assert!(root().join("fuzz/fuzz_targets").join(format!("{t}.rs")).is_file(), "{t}");
        }
    }
}
