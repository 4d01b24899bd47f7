//! `cargo xtask cluster [--workers N] [--example NAME]`: a local cluster in one command,
//! for trying runs on workers and for chaos by hand. Builds (release) the store's
//! `dev_servers` example and the flow example (`fanout` unless `--example` says),
//! starts a throwaway PostgreSQL and S3 server through `dev_servers`, then N workers of
//! the example against them, prints the `--store`/`--blobs` locations, the exports and
//! the commands to try, and stops everything on Ctrl-C (or SIGTERM): the workers are
//! drained with SIGTERM (killed if they are still up 10 s later), then the servers go.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{cargo, root, run};

struct Options {
    workers: usize,
    example: String,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut o = Options { workers: 3, example: "fanout".into() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--workers" => {
                o.workers = value("--workers")?
                    .parse()
                    .map_err(|_| "--workers takes a number of workers, e.g. --workers 3".to_owned())?;
            }
            "--example" => o.example = value("--example")?,
            other => {
                return Err(format!(
                    "cluster: unknown argument {other:?}; usage: cargo xtask cluster [--workers N] [--example NAME]"
                ));
            }
        }
    }
    if o.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    Ok(o)
}

/// Processes this command started, stopped when it ends however it ends.
struct Started {
    servers: Option<Child>,
    workers: Vec<Child>,
}

impl Drop for Started {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = Command::new("kill").args(["-TERM", &w.id().to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for w in &mut self.workers {
            while w.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some(mut s) = self.servers.take() {
            // Closing its input stops `dev_servers`; its watchdogs stop the servers.
            drop(s.stdin.take());
            let _ = s.wait();
        }
    }
}

pub(crate) fn cluster(args: &[String]) -> Result<(), String> {
    let o = options(args)?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-q",
        "-p",
        "braidflow-store",
        "--features",
        "test-servers,postgres,s3",
        "--example",
        "dev_servers",
    ]);
    run("build the throwaway servers (release)", build)?;
    let mut build = cargo();
    build.args(["build", "--release", "-q", "-p", "braidflow-cli", "--example", &o.example, "--bin", "braid"]);
    run(&format!("build the `{}` example and `braid` (release)", o.example), build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let examples = target.join("release").join("examples");
    let logs = target.join("cluster");
    std::fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<()>();
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            stop.store(true, Ordering::SeqCst);
            let _ = tx.send(());
        })
        .map_err(|e| format!("cannot watch for Ctrl-C: {e}"))?;
    }

    let mut started = Started { servers: None, workers: Vec::new() };
    let mut servers = Command::new(examples.join("dev_servers"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group: Ctrl-C in this terminal reaches this command, which
        // then stops the servers after the workers (they need the database to drain).
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start dev_servers: {e}"))?;
    let out = servers.stdout.take().ok_or("dev_servers has no stdout")?;
    started.servers = Some(servers);
    let mut env: Vec<(String, String)> = Vec::new();
    for line in BufReader::new(out).lines() {
        let line = line.map_err(|e| format!("reading dev_servers: {e}"))?;
        if let Some(export) = line.strip_prefix("export ")
            && let Some((k, v)) = export.split_once('=')
        {
            env.push((k.to_owned(), v.trim_matches('\'').to_owned()));
        }
        if line.starts_with("# Stop them") {
            break;
        }
    }
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (Some(store), Some(blobs)) = (get("BRAID_STORE"), get("BRAID_BLOBS")) else {
        return Err("dev_servers did not start the servers (PostgreSQL and moto[server] installed?)".into());
    };

    for i in 0..o.workers {
        let log = logs.join(format!("worker-{i}.log"));
        let file = std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let w = Command::new(examples.join(&o.example))
            .args(["worker", "--metrics-addr", &format!("127.0.0.1:{}", 9470 + i)])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start worker {i}: {e}"))?;
        started.workers.push(w);
    }

    let pids: Vec<String> = started.workers.iter().map(|w| w.id().to_string()).collect();
    let mut text = String::new();
    text.push_str(&format!(
        "\nbraid cluster: PostgreSQL and S3 on 127.0.0.1, {} workers of `{}` (pids {}; logs in {}; metrics on \
         127.0.0.1:{}..{})\n\n",
        o.workers,
        o.example,
        pids.join(", "),
        logs.display(),
        9470,
        9470 + o.workers - 1
    ));
    text.push_str(&format!("  --store {store}\n  --blobs {blobs}\n\nIn another shell:\n\n"));
    for (k, v) in &env {
        text.push_str(&format!("  export {k}='{v}'\n"));
    }
    text.push_str(&format!(
        "  cargo run --release --example {ex} -- run --param n=10000\n  \
         cargo run --release --bin braid -- watch {ex}/latest\n  \
         kill -9 {pid}    # a worker, during the run: the others finish its tasks\n  \
         cargo run --release --bin braid -- artifact {ex}/latest/join total\n\n\
         Ctrl-C here stops the workers, then the servers.\n",
        ex = o.example,
        pid = pids.first().cloned().unwrap_or_default(),
    ));
    print!("{text}");
    let _ = std::io::stdout().flush();

    // Wait for Ctrl-C; say so if a worker dies meanwhile.
    let mut reported = vec![false; started.workers.len()];
    while !stop.load(Ordering::SeqCst) {
        if rx.recv_timeout(Duration::from_secs(1)).is_ok() {
            break;
        }
        for (i, w) in started.workers.iter_mut().enumerate() {
            if !reported[i]
                && let Ok(Some(status)) = w.try_wait()
            {
                reported[i] = true;
                eprintln!("xtask: worker {i} (pid {}) ended: {status}", w.id());
            }
        }
    }
    eprintln!("\nxtask: stopping the workers, then the servers...");
    drop(started);
    eprintln!("xtask: cluster stopped");
    Ok(())
}
