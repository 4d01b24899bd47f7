#![allow(clippy::unwrap_used)]
//! `braid verify` and `braid gc` on stores made by running a real flow through
//! `flow_main_from`: damage in a copied store is named, old runs go while the kept run
//! still reads completely, and a finished flow binary leaves no WAL behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Output};

use braid_client::{Client, RunStatus};
use braid_runtime::{Flow, Param, ParamType};
use serde_json::Value;

#[path = "../examples/fanout/flow.rs"]
mod fanout_flow;

/// The fanout flow (`n` = 10 unless given), plus a large artifact (`big`, `size`
/// pseudo-random numbers from `seed`: a blob file when `size` is large) and a small one
/// whose preview is known.
fn fanout() -> braid_runtime::Result<Flow> {
    fanout_flow::Fanout::new()
        .default_n(10)
        .param(Param::new("size", ParamType::UInt).default(0u64))
        .param(Param::new("seed", ParamType::UInt).default(0u64))
        .start_also(|ctx| {
            let size: u64 = ctx.param("size")?;
            let seed: u64 = ctx.param("seed")?;
            let big: Vec<u64> = (0..size)
                .map(|i| (i ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03)).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect();
            ctx.set("big", &big)?;
            ctx.set("note", "needle-in-the-preview")?;
            Ok(())
        })
        .build()
}

/// Runs the flow binary's command line in this process; returns the new run's id.
fn flow_bin(store: &Path, args: &[&str]) -> String {
    let id_file = store.with_extension("run-id");
    let mut all = vec!["flowbin".to_owned()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    for extra in ["--store", &store.display().to_string(), "--quiet", "--run-id-file", &id_file.display().to_string()] {
        all.push(extra.to_owned());
    }
    assert_eq!(braid_cli::flow_main_from(all, vec![fanout()]), ExitCode::SUCCESS, "flow binary {args:?}");
    std::fs::read_to_string(&id_file).unwrap().trim().to_owned()
}

fn braid(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("BRAID_STORE")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(store: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = braid(store, &all);
    assert!(o.status.success(), "braid {args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn blob_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in std::fs::read_dir(root.join("blobs")).unwrap() {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    // A letter for another letter where it matters to a reader: same length, still text.
    bytes[at] = if bytes[at] == b'N' { b'M' } else { b'N' };
    std::fs::write(path, bytes).unwrap();
}

fn wal_len(root: &Path) -> u64 {
    std::fs::metadata(root.join("records.sqlite-wal")).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn verify_names_a_flipped_byte_in_a_blob_file_and_in_a_row_of_a_copied_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    flow_bin(&store, &["run", "--param", "n=5", "--param", "size=20000"]);
    assert_eq!(wal_len(&store), 0, "a finished flow binary leaves the database file alone, no WAL");
    let o = braid(&store, &["verify"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(": ok: "), "{}", stdout(&o));
    assert_eq!(wal_len(&store), 0, "braid closes the store cleanly too");

    // An untouched copy verifies.
    let copy = dir.path().join("copy");
    copy_dir(&store, &copy);
    assert!(braid(&copy, &["verify"]).status.success());

    // A byte flipped in the middle of a blob file.
    let damaged = dir.path().join("blob-flipped");
    copy_dir(&store, &damaged);
    let files = blob_files(&damaged);
    assert!(!files.is_empty(), "the large artifact is a blob file");
    let file = &files[0];
    flip(file, std::fs::metadata(file).unwrap().len() as usize / 2);
    let o = braid(&damaged, &["verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.lines().any(|l| l.starts_with(&file.display().to_string())), "names the blob file: {text}");
    assert!(text.contains("1 problem in 1 file"), "{text}");
    assert!(stderr(&o).contains("damaged"), "{}", stderr(&o));

    // A byte flipped inside a row of the record database: well-formed, but not what was written.
    let damaged = dir.path().join("row-flipped");
    copy_dir(&store, &damaged);
    let db = damaged.join("records.sqlite");
    let bytes = std::fs::read(&db).unwrap();
    let needle = b"needle-in-the-preview";
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the known string is in the database file");
    flip(&db, at);
    let o = braid(&damaged, &["verify", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().unwrap();
    assert!(!problems.is_empty());
    for p in problems {
        assert_eq!(p["path"], db.display().to_string(), "{p}");
    }
    assert!(problems.iter().any(|p| p["what"].as_str().unwrap().contains("artifact note")), "{problems:?}");
}

#[test]
fn verify_of_a_memory_store_has_nothing_to_check() {
    let o = Command::new(env!("CARGO_BIN_EXE_braid")).args(["--store", "memory:", "verify"]).output().unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("nothing to verify"), "{}", stdout(&o));
    let dir = tempfile::tempdir().unwrap();
    let o = braid(&dir.path().join("absent"), &["verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist") || stderr(&o).contains("not a directory"), "{}", stderr(&o));
}

/// Every artifact of every task of the run reads back, foreach inputs included.
fn reads_completely(client: &Client, id: &str) -> usize {
    let run = client.get(&format!("fanout/{id}")).unwrap();
    let braid_client::Object::Run(run) = run else { panic!("not a run") };
    assert_eq!(run.status(), RunStatus::Succeeded);
    let mut read = 0;
    for task in run.tasks().unwrap() {
        for a in task.artifacts().unwrap() {
            a.bytes().unwrap_or_else(|e| panic!("{} {}: {e}", task.pathspec(), a.name()));
            read += 1;
        }
        if task.step_name().as_str() == "work" {
            task.input::<u64>().unwrap();
        }
    }
    let join = run.step("join").unwrap().single_task().unwrap();
    assert_eq!(join.data::<u64>("total").unwrap(), (0..10u64).map(|x| x * x).sum::<u64>());
    read
}

#[test]
fn gc_keep_last_frees_old_runs_and_their_blobs_while_kept_and_pinned_runs_read_completely() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    // Oldest: a run still going (its process died): never collected.
    {
        let s = braid_store::Store::open_fs(&store).unwrap();
        let mut params = BTreeMap::new();
        params.insert("n".to_owned(), serde_json::json!(1));
        braid_client::fixtures::RunWriter::start(&s, "fanout", None, params).unwrap();
    }
    let big = ["--param", "size=20000"];
    let run = |seed: u64, extra: &[&str]| {
        let seed = format!("seed={seed}");
        let mut args = vec!["run", "--param", seed.as_str()];
        args.extend(big);
        args.extend(extra);
        flow_bin(&store, &args)
    };
    let keep = run(100, &["--tag", "keep"]);
    let old: Vec<String> = (1..=16).map(|seed| run(seed, &[])).collect();
    let origin = run(17, &[]);
    let resumed = flow_bin(&store, &["resume", &origin]);
    assert!(braid(&store, &["tag", "add", &format!("fanout/{resumed}"), "keep"]).status.success());
    // The newest run shares its big blob with old run 5 (same seed, same content).
    let newest = run(5, &[]);
    let files_before = blob_files(&store);
    assert_eq!(files_before.len(), 18, "one big blob file per seed: 100, 1..=16, 17 (5 twice)");

    let fresh = json(&store, &["gc", "--older-than", "1h"]);
    assert_eq!(fresh["runs"]["collected"], 0, "every run is younger than an hour: {fresh}");

    let dry = json(&store, &["gc", "--keep-last", "1", "--grace", "0s", "--dry-run"]);
    let out = json(&store, &["gc", "--keep-last", "1", "--grace", "0s"]);
    assert_eq!(dry["dry_run"], true);
    for field in [&["runs", "collected"][..], &["tasks"], &["blobs", "deleted"], &["blobs", "bytes"]] {
        let pick = |v: &Value| field.iter().fold(v.clone(), |v, k| v[*k].clone());
        assert_eq!(pick(&dry), pick(&out), "a dry run reports the same {field:?}: {dry} vs {out}");
    }
    let runs = &out["runs"];
    assert_eq!(runs["collected"], 16, "{out}");
    assert_eq!((runs["kept_by_policy"].as_u64(), runs["tagged_keep"].as_u64()), (Some(1), Some(2)), "{out}");
    assert_eq!((runs["unfinished"].as_u64(), runs["resumed_from"].as_u64()), (Some(1), Some(1)), "{out}");
    let collected: Vec<&str> = out["collected"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for id in &old {
        assert!(collected.contains(&format!("fanout/{id}").as_str()), "{id} collected: {collected:?}");
    }
    assert_eq!(out["tasks"], 16 * 13, "start, 10 branches, join, end per run");
    // 15 big blob files (seed 5's is shared with the newest run) and every collected
    // run's elements manifest... all runs have n=10, so their manifests are shared: kept.
    assert_eq!(out["blobs"]["deleted"], 15, "{out}");
    assert!(out["size_after"].as_u64().unwrap() < out["size_before"].as_u64().unwrap(), "{out}");
    assert_eq!(blob_files(&store).len(), 3, "the blobs of the kept, keep-tagged and resumed-from runs");

    let client = Client::open(store.to_str().unwrap()).unwrap();
    for id in [&newest, &keep, &resumed, &origin] {
        assert!(reads_completely(&client, id) >= 16, "{id}");
    }
    let left = client.flow("fanout").unwrap().runs().unwrap();
    assert_eq!(left.len(), 5, "newest, keep-tagged, resumed, its origin, the unfinished one");
    drop(client);
    let o = braid(&store, &["verify"]);
    assert!(o.status.success(), "{}", stdout(&o));

    // Nothing left to collect: a second gc changes nothing.
    let again = json(&store, &["gc", "--keep-last", "1", "--grace", "0s"]);
    assert_eq!((again["runs"]["collected"].as_u64(), again["blobs"]["deleted"].as_u64()), (Some(0), Some(0)));
}

#[test]
fn gc_says_what_is_wrong_with_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    flow_bin(&store, &["run"]);
    let o = braid(&store, &["gc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--keep-last") && stderr(&o).contains("--older-than"), "{}", stderr(&o));
    let o = braid(&store, &["gc", "--older-than", "3 fortnights"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("e.g. 30d"), "{}", stderr(&o));
    let o = braid(&store, &["gc", "--older-than", "2mo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fixed length"), "{}", stderr(&o));
    let text = stdout(&braid(&store, &["gc", "--keep-last", "0", "--dry-run", "--flow", "fanout"]));
    assert!(text.contains("would collect 1 run"), "{text}");
    let runs = json(&store, &["runs", "fanout"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "a dry run deletes nothing: {runs}");
}
