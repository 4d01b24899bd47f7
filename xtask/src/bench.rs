//! `cargo xtask bench [--quick] [--json FILE] [--peer metaflow]`.
//!
//! Builds every bench in [`crate::BENCHES`] with one `cargo bench --no-run` (release
//! profile), runs each executable with `--json-out FILE` (and `--quick`), merges the rows
//! into one table and prints it; `--json FILE` also writes the table as JSON.
//!
//! `--peer metaflow` creates a virtual environment under `target/peer/` (python3 -m venv,
//! pip install of `xtask/peer/metaflow/requirements.txt`) unless one is there, runs the
//! equivalent flows of `xtask/peer/metaflow/` with Metaflow's local runtime and datastore
//! (`bench.py`, with `--max-workers` equal to braid's) and adds Metaflow's figure and the
//! ratio braid/Metaflow to every row both measured. The peer runs the same set in quick
//! and full mode (linear, foreach of 100 and 1,000, a client read of 1,000 artifacts):
//! about four minutes on 2 cores.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};

use crate::{BENCHES, cargo, root};

/// The table's sections, in order; a row of another section goes after them.
const SECTIONS: &[(&str, &str)] = &[
    ("orchestration", "1. per-task orchestration (each run in its own process, fresh fs store)"),
    ("store", "2. store"),
    ("client", "3. client"),
    ("progress", "4. progress"),
    ("scheduler", "5. scheduler"),
    ("isolation", "6. isolated steps (each attempt in its own process)"),
    ("remote", "7. PostgreSQL + S3 beside fs (throwaway servers on this machine; not in --quick)"),
    ("reads", "8. reads through `braid` over a wide step (each command in its own process, stdout to /dev/null)"),
    ("workers", "9. runs on workers through PostgreSQL (worker processes on this machine; not in --quick)"),
];

/// The scheduler's figure; a placeholder row says it is missing until a bench measures it.
const SCHEDULER_ROW: &str = "one pass over 10,000 plans × 10 parameter sets";

const PEERS: &[&str] = &["metaflow"];

struct Options {
    quick: bool,
    json: Option<PathBuf>,
    peer: Option<String>,
}

fn options(args: &[String]) -> Result<Options, String> {
    let usage = "usage: cargo xtask bench [--quick] [--json FILE] [--peer metaflow]";
    let mut o = Options { quick: false, json: None, peer: None };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json = Some(it.next().ok_or(format!("--json needs a FILE; {usage}"))?.into()),
            "--peer" => {
                let p = it.next().ok_or(format!("--peer needs a name; {usage}"))?;
                if !PEERS.contains(&p.as_str()) {
                    return Err(format!("unknown peer {p:?}: known peers are {}", PEERS.join(", ")));
                }
                o.peer = Some(p.clone());
            }
            "--" => {}
            other => return Err(format!("unknown bench flag {other:?}; {usage}")),
        }
    }
    Ok(o)
}

pub fn bench(args: &[String]) -> Result<(), String> {
    let o = options(args)?;
    let started = Instant::now();
    let root = root();
    let work = root.join("target").join("bench");
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());

    let exes = build()?;
    let mut rows: Vec<Value> = Vec::new();
    let mut other_output: Vec<(String, String)> = Vec::new();
    for (package, name) in BENCHES {
        let exe = exes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .ok_or(format!("cargo built no executable for bench {name} of {package}"))?;
        let out_file = work.join(format!("rows-{name}.json"));
        let _ = std::fs::remove_file(&out_file);
        let mut cmd = Command::new(&exe);
        cmd.current_dir(&work).arg("--json-out").arg(&out_file).stderr(Stdio::inherit()).stdout(Stdio::piped());
        if o.quick {
            cmd.arg("--quick");
        }
        eprintln!("xtask: running bench {name} ({package})");
        let t0 = Instant::now();
        let out = cmd.output().map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!("bench {name} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stdout)));
        }
        eprintln!("xtask: bench {name} took {:.1} s", t0.elapsed().as_secs_f64());
        match std::fs::read(&out_file) {
            Ok(bytes) => rows.extend(parse_rows(&bytes, &out_file)?),
            Err(_) => other_output.push((name.to_string(), String::from_utf8_lossy(&out.stdout).into_owned())),
        }
    }

    if !rows.iter().any(|r| r["section"] == "scheduler") {
        rows.push(json!({
            "section": "scheduler", "name": SCHEDULER_ROW, "value": null, "unit": "ms",
            "note": "not measured: no bench in xtask BENCHES writes a `scheduler` row yet",
        }));
    }

    let peer = match o.peer.as_deref() {
        Some("metaflow") => Some(metaflow(&root, &work, workers)?),
        _ => None,
    };
    if let Some(p) = &peer {
        attach_peer(&mut rows, p);
    }
    rows.sort_by_key(|r| section_rank(r["section"].as_str().unwrap_or("")));

    let machine = machine();
    let mode = if o.quick { "quick" } else { "full" };
    let elapsed = started.elapsed().as_secs_f64();
    print_table(&rows, &machine, mode, peer.as_ref());
    for (name, text) in &other_output {
        println!("\noutput of bench {name} (it wrote no rows):\n{text}");
    }
    println!("\n(bench took {:.0} s)", elapsed);

    if let Some(path) = &o.json {
        let doc = json!({
            "mode": mode,
            "machine": machine,
            "peer": peer.as_ref().map(|p| json!({ "name": p.name, "version": p.version, "max_workers": p.max_workers })),
            "elapsed_secs": elapsed,
            "rows": rows,
            "other_output": other_output.iter().map(|(n, t)| json!({ "bench": n, "text": t })).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| format!("cannot encode the JSON: {e}"))?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("xtask: wrote {}", path.display());
    }
    Ok(())
}

/// Builds every bench in one cargo call; (bench name, executable).
fn build() -> Result<Vec<(String, PathBuf)>, String> {
    let mut cmd = cargo();
    cmd.args(["bench", "--no-run", "--message-format=json-render-diagnostics"]);
    let mut packages: Vec<&str> = BENCHES.iter().map(|(p, _)| *p).collect();
    packages.sort_unstable();
    packages.dedup();
    for package in packages {
        cmd.args(["-p", package]);
    }
    for (_, name) in BENCHES {
        cmd.args(["--bench", name]);
    }
    eprintln!("xtask: building the benches (release)");
    let out = cmd.stderr(Stdio::inherit()).output().map_err(|e| format!("cannot start cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("building the benches failed ({})", out.status));
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else { continue };
        let is_bench = msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bench"));
        if msg["reason"] == "compiler-artifact" && is_bench {
            if let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str()) {
                exes.push((name.to_owned(), PathBuf::from(exe)));
            }
        }
    }
    Ok(exes)
}

fn parse_rows(bytes: &[u8], from: &Path) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("{}: not JSON: {e}", from.display()))?;
    let rows = v.as_array().ok_or(format!("{}: not a JSON array of rows", from.display()))?;
    for r in rows {
        if !r["section"].is_string() || !r["name"].is_string() || !(r["value"].is_number() || r["value"].is_null()) {
            return Err(format!("{}: a row needs section, name and value: {r}", from.display()));
        }
    }
    Ok(rows.clone())
}

fn section_rank(section: &str) -> usize {
    SECTIONS.iter().position(|(s, _)| *s == section).unwrap_or(SECTIONS.len())
}

// ---- the peer ----

struct Peer {
    name: String,
    version: String,
    max_workers: usize,
    rows: Vec<Value>,
}

/// Installs Metaflow into `target/peer/metaflow-venv` if needed and runs its side.
fn metaflow(root: &Path, work: &Path, workers: usize) -> Result<Peer, String> {
    let dir = root.join("xtask").join("peer").join("metaflow");
    let venv = root.join("target").join("peer").join("metaflow-venv");
    let python = venv.join("bin").join("python");
    let has_metaflow = |python: &Path| {
        Command::new(python)
            .args(["-c", "import metaflow"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_metaflow(&python) {
        if !python.exists() {
            let mut c = Command::new("python3");
            c.arg("-m").arg("venv").arg(&venv);
            crate::run(&format!("python3 -m venv {}", venv.display()), c).map_err(|e| {
                format!("{e}: the Metaflow peer needs python3 with venv (apt-get install python3-venv)")
            })?;
        }
        let mut c = Command::new(venv.join("bin").join("pip"));
        c.args(["install", "--quiet", "-r"]).arg(dir.join("requirements.txt"));
        crate::run("pip install metaflow (into target/peer/metaflow-venv)", c)?;
    }
    let version = Command::new(&python)
        .args(["-c", "import metaflow; print(metaflow.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let out_file = work.join("rows-peer-metaflow.json");
    let _ = std::fs::remove_file(&out_file);
    let mut c = Command::new(&python);
    c.arg(dir.join("bench.py")).arg("--json-out").arg(&out_file).args(["--max-workers", &workers.to_string()]);
    let t0 = Instant::now();
    crate::run(&format!("Metaflow {version} peer (--max-workers {workers}; a few minutes)"), c)?;
    eprintln!("xtask: the Metaflow peer took {:.0} s", t0.elapsed().as_secs_f64());
    let bytes = std::fs::read(&out_file).map_err(|e| format!("{}: {e}", out_file.display()))?;
    let rows = parse_rows(&bytes, &out_file)?;
    Ok(Peer { name: "metaflow".into(), version, max_workers: workers, rows })
}

/// Puts each peer row next to braid's row of the same section and name (`peer`, and
/// `ratio` = braid / peer); a peer row braid has no match for is added on its own.
fn attach_peer(rows: &mut Vec<Value>, peer: &Peer) {
    for p in &peer.rows {
        let found = rows.iter_mut().find(|r| r["section"] == p["section"] && r["name"] == p["name"]);
        match found {
            Some(r) => {
                let ratio = match (r["value"].as_f64(), p["value"].as_f64()) {
                    (Some(b), Some(m)) if m > 0.0 => json!(b / m),
                    _ => Value::Null,
                };
                r["peer"] = json!({ "name": peer.name, "value": p["value"], "unit": p["unit"], "note": p["note"] });
                r["ratio"] = ratio;
            }
            None => rows.push(json!({
                "section": p["section"], "name": p["name"], "value": null, "unit": p["unit"],
                "note": "braid has no such row",
                "peer": { "name": peer.name, "value": p["value"], "unit": p["unit"], "note": p["note"] },
                "ratio": null,
            })),
        }
    }
}

// ---- the table ----

fn print_table(rows: &[Value], machine: &Value, mode: &str, peer: Option<&Peer>) {
    println!(
        "\nbraid bench, {mode} mode — {} cores ({}), {:.0} GiB RAM, {}",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["memory_gib"].as_f64().unwrap_or(0.0),
        machine["os"].as_str().unwrap_or("?"),
    );
    if let Some(p) = peer {
        println!("peer: {} {} (local runtime, local datastore, --max-workers {})", p.name, p.version, p.max_workers);
    }
    let str_of = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let name_w = rows.iter().map(|r| str_of(&r["name"]).chars().count()).max().unwrap_or(10) + 2;
    let unit_w = rows.iter().map(|r| str_of(&r["unit"]).chars().count()).max().unwrap_or(4);
    let mut header = format!("{:<name_w$} {:>12} {:<unit_w$}", "", "braid", "");
    if let Some(p) = peer {
        header += &format!(" {:>12} {:>12}", p.name, format!("braid/{}", p.name));
    }
    header += "  note";
    println!("\n{header}");
    let mut section = String::new();
    for r in rows {
        let s = str_of(&r["section"]);
        if s != section {
            let title = SECTIONS.iter().find(|(k, _)| *k == s).map_or(s.clone(), |(_, t)| t.to_string());
            println!("{title}");
            section = s;
        }
        let mut line = format!(
            "  {:<w$} {:>12} {:<unit_w$}",
            str_of(&r["name"]),
            fmt_value(r["value"].as_f64()),
            str_of(&r["unit"]),
            w = name_w - 2
        );
        if peer.is_some() {
            line += &format!(" {:>12} {:>12}", fmt_value(r["peer"]["value"].as_f64()), fmt_ratio(r["ratio"].as_f64()));
        }
        let note = str_of(&r["note"]);
        if !note.is_empty() {
            line += "  ";
            line += &note;
        }
        println!("{}", line.trim_end());
    }
}

/// Three significant digits below 100, whole numbers with thousands separators above.
fn fmt_value(v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 100.0 {
        return thousands(v.round() as i64);
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 9) as usize;
    format!("{v:.digits$}")
}

/// A ratio below 1 as `1/N` (braid is N times less), else with two decimals.
fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        None => "-".into(),
        Some(r) if r <= 0.0 => "0".into(),
        Some(r) if r < 1.0 => format!("1/{}", fmt_value(Some(1.0 / r))),
        Some(r) => format!("{r:.2}"),
    }
}

fn thousands(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown cpu".to_owned(), |s| s.trim().to_owned());
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let release = read("/proc/sys/kernel/osrelease");
    json!({
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": cpu,
        "memory_gib": mem_kib / 1024.0 / 1024.0,
        "os": format!("{} {}", std::env::consts::OS, release.trim()).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_ratios_read_well() {
        assert_eq!(fmt_value(None), "-");
        assert_eq!(fmt_value(Some(0.0)), "0");
        assert_eq!(fmt_value(Some(17.777)), "17.8");
        assert_eq!(fmt_value(Some(1.788)), "1.79");
        assert_eq!(fmt_value(Some(0.0004)), "0.000400");
        assert_eq!(fmt_value(Some(123_456.7)), "123,457");
        assert_eq!(fmt_ratio(Some(0.5)), "1/2.00");
        assert_eq!(fmt_ratio(Some(1.0 / 8_824.0)), "1/8,824");
        assert_eq!(fmt_ratio(Some(2.5)), "2.50");
    }

    #[test]
    fn peer_rows_sit_next_to_braids() {
        let mut rows = vec![json!({"section": "client", "name": "a", "value": 1.0, "unit": "s", "note": ""})];
        let peer = Peer {
            name: "metaflow".into(),
            version: "x".into(),
            max_workers: 2,
            rows: vec![
                json!({"section": "client", "name": "a", "value": 4.0, "unit": "s", "note": ""}),
                json!({"section": "client", "name": "b", "value": 3.0, "unit": "s", "note": ""}),
            ],
        };
        attach_peer(&mut rows, &peer);
        assert_eq!(rows[0]["ratio"], json!(0.25));
        assert_eq!(rows[0]["peer"]["value"], json!(4.0));
        assert_eq!(rows[1]["name"], "b");
        assert!(rows[1]["value"].is_null());
    }

    #[test]
    fn options_parse() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = options(&a(&["--quick", "--json", "x.json", "--peer", "metaflow"])).unwrap();
        assert!(o.quick && o.json.is_some() && o.peer.as_deref() == Some("metaflow"));
        assert!(options(&a(&["--peer", "airflow"])).is_err());
        assert!(options(&a(&["--frobnicate"])).is_err());
    }
}
