#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Runs on workers, as a user runs them: PostgreSQL records and S3 blobs on throwaway
//! servers (`braid_store::test_servers`; a machine without them skips these), worker
//! processes of a flow binary (this test binary, started again as one), and `run`
//! launched from another process. Every test kills something: a worker (`kill -9`), a
//! worker's clock (SIGSTOP past its lease, then SIGCONT), or the process that launched
//! the run; the run must still finish with each task's result committed once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use braid_runtime::{Flow, Param, ParamType};
use serde_json::Value;

#[allow(dead_code)]
mod child;

#[path = "../examples/fanout/flow.rs"]
mod fanout_flow;

#[test]
fn as_flow_binary() {
    child::serve(|| vec![fanout_flow::fanout(), slow(), big()]);
}

/// One step that sets a value too big to travel inline in its artifact row (over 1 KiB),
/// so the worker running it must put a blob.
fn big() -> braid_runtime::Result<Flow> {
    Flow::builder("big")
        .step("start", |ctx| async move {
            ctx.set("payload", &"x".repeat(4096))?;
            Ok(())
        })
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

/// A foreach over `0..n` whose `work` tasks take `ms` each, reporting progress as they
/// go from a blocking thread (so a stopped-and-resumed worker keeps writing after its
/// claim is gone), under a 2 s lease; the join sums the squares.
fn slow() -> braid_runtime::Result<Flow> {
    Flow::builder("slow")
        .param(Param::new("n", ParamType::UInt).default(12u64))
        .param(Param::new("ms", ParamType::UInt).default(300u64))
        .step("start", |ctx| async move {
            let n: u64 = ctx.param("n")?;
            ctx.set("items", &(0..n).collect::<Vec<u64>>())?;
            Ok(())
        })
        .foreach("items", "work")
        .step_blocking("work", |ctx| {
            let x: u64 = ctx.input()?;
            let ms: u64 = ctx.param("ms")?;
            for k in 0..10u8 {
                ctx.progress(f32::from(k) * 10.0, format!("squaring {x}"))?;
                std::thread::sleep(Duration::from_millis(ms / 10));
            }
            ctx.set("out", &(x * x))?;
            Ok(())
        })
        .lease(Duration::from_secs(2))
        .next("join")
        .join("join", |ctx| async move {
            let mut total = 0u64;
            for input in ctx.inputs_iter()? {
                total += input.get::<u64>("out").await?;
            }
            ctx.set("total", &total)?;
            Ok(())
        })
        .next("end")
        .step("end", |_ctx| async move { Ok(()) })
        .end()
        .build()
}

fn squares(n: u64) -> u64 {
    (0..n).map(|x| x * x).sum()
}

/// A fresh database and bucket on the test servers, and the processes started on them.
struct Cluster {
    db: String,
    bucket: String,
    env: Vec<(&'static str, String)>,
    dir: tempfile::TempDir,
    workers: Vec<(Child, PathBuf)>,
}

impl Cluster {
    fn new() -> Option<Cluster> {
        Cluster::on(braid_store::test_servers::postgres()?)
    }

    /// A cluster whose database is on `pg`.
    fn on(pg: &braid_store::test_servers::PgServer) -> Option<Cluster> {
        let s3 = braid_store::test_servers::s3()?;
        Some(Cluster {
            db: pg.fresh_database(),
            bucket: s3.fresh_bucket(),
            env: s3.env(),
            dir: tempfile::tempdir().unwrap(),
            workers: Vec::new(),
        })
    }

    /// The flow binary with `args` after `--store DB --blobs BUCKET`.
    fn flow_binary(&self, args: &[&str]) -> Command {
        self.flow_binary_with(&self.bucket, args)
    }

    /// [`Cluster::flow_binary`] with blobs at `blobs`.
    fn flow_binary_with(&self, blobs: &str, args: &[&str]) -> Command {
        let mut all = vec!["flowbin".to_owned(), "--store".into(), self.db.clone(), "--blobs".into(), blobs.to_owned()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["as_flow_binary", "--exact", "--nocapture", "--test-threads=1", "--quiet"])
            .env(child::CHILD_ARGS, serde_json::to_string(&all).unwrap())
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("BRAID_STORE")
            .env_remove("BRAID_BLOBS");
        c
    }

    /// Starts a worker (`worker ARGS`) logging to its own file; returns its index.
    fn worker(&mut self, args: &[&str]) -> usize {
        self.start_worker(&self.bucket.clone(), &[], args)
    }

    /// [`Cluster::worker`] with more environment variables.
    fn worker_env(&mut self, env: &[(&str, &str)], args: &[&str]) -> usize {
        self.start_worker(&self.bucket.clone(), env, args)
    }

    fn start_worker(&mut self, blobs: &str, env: &[(&str, &str)], args: &[&str]) -> usize {
        let i = self.workers.len();
        let log = self.dir.path().join(format!("worker-{i}.log"));
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        let child = self
            .flow_binary_with(blobs, &all)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.workers.push((child, log));
        i
    }

    fn worker_pid(&self, i: usize) -> String {
        self.workers[i].0.id().to_string()
    }

    fn worker_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.workers[i].1).unwrap_or_default()
    }

    /// Starts `run ARGS` in the background; returns it and its run id, once known.
    fn launch(&self, args: &[&str]) -> (Child, String) {
        let file = self.dir.path().join(format!("run-id-{}", braid_store::test_servers::unique("r")));
        let file_s = file.display().to_string();
        let mut all = args.to_vec();
        all.extend(["--run-id-file", &file_s]);
        let child = self.flow_binary(&all).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        self.wait_for("the run id", 30, || !read(&file).is_empty());
        (child, read(&file))
    }

    /// Sends `signal` to worker `i`.
    fn signal(&self, i: usize, signal: &str) {
        let ok = Command::new("kill").args([signal, &self.worker_pid(i)]).status().unwrap().success();
        assert!(ok, "kill {signal} worker {i}");
    }

    /// SIGTERMs every worker still running and waits for each: a drained worker exits 0.
    fn drain_all(&mut self) -> Vec<String> {
        let mut logs = Vec::new();
        for i in 0..self.workers.len() {
            if self.workers[i].0.try_wait().unwrap().is_none() {
                self.signal(i, "-TERM");
                let status = self.workers[i].0.wait().unwrap();
                assert!(status.success(), "a drained worker exits 0: {status}\n{}", self.worker_log(i));
            }
            logs.push(self.worker_log(i));
        }
        logs
    }

    /// `braid ARGS` on the cluster's store.
    fn braid(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_braid"))
            .args(["--store", &self.db, "--blobs", &self.bucket])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    }

    fn braid_json(&self, args: &[&str]) -> Value {
        let out = self.braid(args);
        assert!(out.status.success(), "braid {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The run's status as `braid runs` sees it.
    fn run_status(&self, flow: &str, run: &str) -> String {
        let v = self.braid_json(&["show", &format!("{flow}/{run}"), "--json"]);
        v["status"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits until `f` holds (checked every 100 ms), at most `secs`.
    fn wait_for(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            if Instant::now() >= deadline {
                let logs: Vec<String> = (0..self.workers.len()).map(|i| self.worker_log(i)).collect();
                panic!("timed out after {secs}s waiting for {what}; the workers said: {logs:#?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The `work` tasks of a run, from `braid show FLOW/RUN/work --json`.
    /// (None yet while the run has not reached `work`.)
    fn work_tasks(&self, flow: &str, run: &str) -> Vec<Value> {
        let out = self.braid(&["show", &format!("{flow}/{run}/work"), "--json"]);
        if !out.status.success() {
            return Vec::new();
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["tasks"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (c, _) in &mut self.workers {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).stderr(Stdio::null()).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_id(out: &Output) -> String {
    let text = stdout(out);
    let line = text.lines().find(|l| l.ends_with(" started")).unwrap_or_else(|| panic!("no run started: {text}"));
    line.trim_end_matches(" started").rsplit('/').next().unwrap().to_owned()
}

fn total(c: &Cluster, flow: &str, run: &str) -> u64 {
    let v = c.braid_json(&["artifact", &format!("{flow}/{run}/join"), "total", "--json"]);
    v["value"].as_u64().or_else(|| v.as_u64()).unwrap_or_else(|| panic!("no total in {v}"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default().trim().to_owned()
}

#[test]
fn a_foreach_of_1000_tasks_over_3_workers_runs_every_task_once_and_the_join_total_is_right() {
    let Some(mut c) = Cluster::new() else { return };
    for _ in 0..3 {
        c.worker(&["--concurrency", "8"]);
    }
    // On PostgreSQL a run goes to the workers unless told otherwise.
    let out = c.flow_binary(&["run", "--quiet", "--flow", "fanout", "--param", "n=1000"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("on workers"), "{}", String::from_utf8_lossy(&out.stderr));
    let run = run_id(&out);
    assert_eq!(total(&c, "fanout", &run), squares(1000));
    let tasks = c.work_tasks("fanout", &run);
    assert_eq!(tasks.len(), 1000);
    let mut workers = std::collections::BTreeSet::new();
    for t in &tasks {
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["attempt"], 1, "{t}");
        assert_eq!(t["lost_dispatches"], 0, "{t}");
        workers.insert(t["worker"].as_str().expect("a worker ran it").to_owned());
    }
    assert_eq!(workers.len(), 3, "the three workers shared the tasks: {workers:?}");
    // Each worker completed what it claimed, and together exactly the run's 1,003 tasks.
    let logs = c.drain_all();
    let mut completed = 0;
    for log in &logs {
        let line = log.lines().find(|l| l.starts_with("worker stopped:")).unwrap_or_else(|| panic!("{log}"));
        let n = |what: &str| -> u64 {
            let at = line.find(what).unwrap_or_else(|| panic!("{what} in {line}"));
            line[..at].trim_end().rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(n(" claimed"), n(" completed"), "{line}");
        assert_eq!(n(" stale results"), 0, "{line}");
        completed += n(" completed");
    }
    assert_eq!(completed, 1003, "start, 1,000 branches, join and end, each once: {logs:?}");
}

#[test]
fn a_worker_killed_mid_task_loses_its_tasks_to_another_and_nothing_is_committed_twice() {
    let Some(mut c) = Cluster::new() else { return };
    let doomed = c.worker(&["--concurrency", "4"]);
    let (launcher, run) = c.launch(&["run", "--quiet", "--flow", "slow", "--param", "n=16"]);
    // Once the doomed worker holds running branches, kill it and start another.
    c.wait_for("branches running on the first worker", 30, || {
        c.work_tasks("slow", &run).iter().any(|t| t["status"] == "running")
    });
    c.signal(doomed, "-KILL");
    let _ = c.workers[doomed].0.wait();
    let killed_at = Instant::now();
    c.worker(&["--concurrency", "4"]);
    let out = launcher.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(total(&c, "slow", &run), squares(16));
    let tasks = c.work_tasks("slow", &run);
    assert_eq!(tasks.len(), 16, "no branch was made twice");
    let redispatched: Vec<&Value> = tasks.iter().filter(|t| t["lost_dispatches"] == 1).collect();
    assert!(!redispatched.is_empty(), "the killed worker's branches ran again elsewhere: {tasks:?}");
    for t in &tasks {
        assert_eq!(t["status"], "succeeded", "{t}");
        assert_eq!(t["attempt"], 1, "a lost dispatch is not a retry of the step: {t}");
    }
    // Each branch's `out` is stored once.
    let outs = c.braid_json(&["artifact", &format!("slow/{run}/work"), "out", "--json"]);
    let outs = outs.as_array().or_else(|| outs["values"].as_array()).cloned().unwrap_or_default();
    assert_eq!(outs.len(), 16, "{outs:?}");
    let show = c.braid(&["show", &format!("slow/{run}/work/{}", redispatched[0]["id"])]);
    let text = stdout(&show);
    assert!(text.contains("redispatched") && text.contains("1 time"), "{text}");
    assert!(killed_at.elapsed() < Duration::from_secs(60), "the run finished soon after the kill");
    c.drain_all();
}

#[test]
fn a_worker_stopped_past_its_lease_finds_its_late_writes_refused_and_counted() {
    let Some(mut c) = Cluster::new() else { return };
    let stopped = c.worker(&["--concurrency", "1", "--metrics-addr", "127.0.0.1:0"]);
    let (launcher, run) = c.launch(&["run", "--quiet", "--flow", "slow", "--param", "n=1", "--param", "ms=6000"]);
    c.wait_for("the branch running", 30, || c.work_tasks("slow", &run).iter().any(|t| t["status"] == "running"));
    std::thread::sleep(Duration::from_millis(300));
    c.signal(stopped, "-STOP");
    // Its 2 s lease runs out; another worker claims the branch and runs it to the end.
    c.worker(&["--concurrency", "1"]);
    let out = launcher.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(total(&c, "slow", &run), 0);
    let task = &c.work_tasks("slow", &run)[0];
    assert_eq!(task["lost_dispatches"], 1, "{task}");
    // The stopped worker comes back: its thread goes on reporting progress, and every
    // write is refused by the fencing check, logged in the task's log and counted.
    c.signal(stopped, "-CONT");
    let addr = {
        let log = c.worker_log(stopped);
        let line = log.lines().find(|l| l.starts_with("metrics at http://")).unwrap_or_else(|| panic!("{log}"));
        line.trim_start_matches("metrics at http://").trim_end_matches("/metrics").to_owned()
    };
    let scrape = |name: &str| -> f64 {
        let body = ureq_get(&addr);
        body.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    c.wait_for("the late writes counted", 30, || scrape("braid_worker_stale_writes_total") >= 1.0);
    // Whichever it notices first: its heartbeat finds the claim gone (the attempt is
    // stopped), or its attempt ends and its result is refused.
    c.wait_for("the lost claim or the refused result counted", 30, || {
        scrape("braid_worker_claims_lost_total") >= 1.0 || scrape("braid_worker_stale_results_total") >= 1.0
    });
    let logs = c.braid(&["logs", &format!("slow/{run}/work/{}", task["id"])]);
    let logs = stdout(&logs);
    assert!(logs.contains("late write from attempt 1 rejected"), "{logs}");
    // Nothing it wrote landed: the task is as the other worker ended it.
    let after = &c.work_tasks("slow", &run)[0];
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["worker"], task["worker"], "{after}");
    assert_eq!(after["progress"], task["progress"], "{after}");
    c.drain_all();
}

#[test]
fn killing_the_process_that_launched_a_run_leaves_it_to_a_worker_that_finishes_it() {
    let Some(mut c) = Cluster::new() else { return };
    c.worker(&["--concurrency", "4"]);
    c.worker(&["--concurrency", "4"]);
    let (launcher, run) = c.launch(&["run", "--quiet", "--flow", "slow", "--param", "n=24", "--param", "ms=200"]);
    c.wait_for("branches done", 30, || c.work_tasks("slow", &run).iter().any(|t| t["status"] == "succeeded"));
    let mut launcher = launcher;
    launcher.kill().unwrap();
    let _ = launcher.wait();
    c.wait_for("the run to finish without its launcher", 60, || c.run_status("slow", &run) == "succeeded");
    assert_eq!(total(&c, "slow", &run), squares(24));
    let tasks = c.work_tasks("slow", &run);
    let succeeded: Vec<u64> = {
        let mut v: Vec<u64> =
            tasks.iter().filter(|t| t["status"] == "succeeded").map(|t| t["index"].as_u64().unwrap()).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(succeeded, (0..24).collect::<Vec<u64>>(), "each branch succeeded exactly once");
    let show = c.braid_json(&["show", &format!("slow/{run}"), "--json"]);
    let adopted = &show["meta"]["adopted"];
    assert!(adopted.as_array().is_some_and(|a| a.len() == 1), "the run says who adopted it: {show}");
    c.drain_all();
}

#[test]
fn a_postgresql_restart_mid_run_is_ridden_out_by_the_workers_and_the_launcher_and_the_run_finishes() {
    // A server of this test's own: a restart cuts every client of the server.
    let Some(pg) = braid_store::test_servers::private_postgres() else { return };
    let Some(mut c) = Cluster::on(&pg) else { return };
    c.worker(&["--concurrency", "4"]);
    c.worker(&["--concurrency", "4"]);
    let (launcher, run) = c.launch(&["run", "--quiet", "--flow", "slow", "--param", "n=400", "--param", "ms=40"]);
    c.wait_for("branches done", 30, || c.work_tasks("slow", &run).iter().any(|t| t["status"] == "succeeded"));
    // Twice, so that the second restart meets connections made again after the first
    // (the driver's, the workers', their LISTEN connections).
    for _ in 0..2 {
        pg.restart();
        std::thread::sleep(Duration::from_millis(700));
    }
    let out = launcher.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the run went on after PostgreSQL restarted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(total(&c, "slow", &run), squares(400));
    let tasks = c.work_tasks("slow", &run);
    assert_eq!(tasks.len(), 400);
    assert!(tasks.iter().all(|t| t["status"] == "succeeded"), "{tasks:?}");
    c.drain_all();
}

#[test]
fn a_worker_whose_blob_put_fails_fails_the_attempt_cleanly_naming_it() {
    let Some(mut c) = Cluster::new() else { return };
    // Every blob put of this worker's attempts fails (after the blob store's own retries
    // of transient errors, which a fault injected here skips).
    c.worker_env(&[("FAILPOINTS", "attempt_blob_put=return")], &["--concurrency", "2"]);
    let out = c.flow_binary(&["run", "--quiet", "--flow", "big"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let run = run_id(&out);
    let t = c.braid_json(&["show", &format!("big/{run}/start"), "--json"]);
    let task = t["tasks"].as_array().map_or(&t, |a| &a[0]).clone();
    assert_eq!(task["status"], "failed", "{task}");
    let message = task["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("storing the artifacts the step set failed"), "{task}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("step `start`") && err.contains("storing the artifacts"), "{err}");
    // The worker is fine and took nothing else down: it drains and exits 0.
    c.drain_all();
}

#[test]
fn a_capped_queue_runs_at_most_its_limit_at_once_over_every_worker() {
    let Some(mut c) = Cluster::new() else { return };
    let set = c.braid(&["queue", "limit", "default", "1"]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let queues = c.braid_json(&["queues", "--json"]);
    assert_eq!(queues["queues"][0]["name"], "default", "{queues}");
    assert_eq!(queues["queues"][0]["limit"], 1, "{queues}");
    c.worker(&["--concurrency", "4"]);
    c.worker(&["--concurrency", "4"]);
    let out =
        c.flow_binary(&["run", "--quiet", "--flow", "slow", "--param", "n=4", "--param", "ms=200"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = run_id(&out);
    // Seconds of the day, from `…THH:MM:SS.ffffffZ` (the run is seconds long).
    let secs = |v: &Value| -> f64 {
        let t = v.as_str().unwrap().split('T').nth(1).unwrap().trim_end_matches('Z');
        t.split(':').map(|p| p.parse::<f64>().unwrap()).fold(0.0, |acc, p| acc * 60.0 + p)
    };
    let mut spans: Vec<(f64, f64)> =
        c.work_tasks("slow", &run).iter().map(|t| (secs(&t["started_at"]), secs(&t["ended_at"]))).collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(spans.len(), 4);
    for w in spans.windows(2) {
        // Each body sleeps 200 ms, and the next may start only once its claim is
        // completed: with two at once, two starts would be milliseconds apart. (The
        // recorded end is the launching process's, once the reply is in: later.)
        assert!(w[1].0 - w[0].0 >= 0.19, "two tasks of a queue capped at 1 ran at once: {spans:?}");
    }
    let bad = c.braid(&["queue", "limit", "default", "many"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`none` to lift the cap"));
    c.drain_all();
}

#[test]
fn a_draining_worker_hands_back_what_outlasts_its_grace_and_exits_0() {
    let Some(mut c) = Cluster::new() else { return };
    let draining = c.worker(&["--concurrency", "1", "--grace", "1"]);
    let (launcher, run) = c.launch(&["run", "--quiet", "--flow", "slow", "--param", "n=1", "--param", "ms=3000"]);
    c.wait_for("the branch running", 30, || c.work_tasks("slow", &run).iter().any(|t| t["status"] == "running"));
    c.signal(draining, "-TERM");
    let stopped = Instant::now();
    let status = c.workers[draining].0.wait().unwrap();
    assert!(status.success(), "{status}: {}", c.worker_log(draining));
    assert!(stopped.elapsed() < Duration::from_secs(10), "it left within its grace: {:?}", stopped.elapsed());
    let log = c.worker_log(draining);
    assert!(log.contains("1 handed back"), "{log}");
    // Another worker takes the handed-back task at once, not after a lease.
    c.worker(&["--concurrency", "1"]);
    let out = launcher.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(total(&c, "slow", &run), 0);
    let task = &c.work_tasks("slow", &run)[0];
    assert_eq!(task["attempt"], 1, "handing back is not a failure: {task}");
    assert_eq!(task["lost_dispatches"], 0, "nor a lost dispatch: {task}");
    c.drain_all();
}

/// `GET http://ADDR/metrics`, with nothing but std.
fn ureq_get(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return String::new() };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}
