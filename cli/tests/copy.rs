#![allow(clippy::unwrap_used)]
//! `braid copy`: an embedded store into PostgreSQL + S3 and back, everything kept, a
//! second copy changing nothing, an interrupted copy finished by running it again.
//! Against throwaway servers (`braid_store::test_servers`); a machine without them
//! prints one `skipped:` line and passes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use braid_client::RunStatus;
use braid_client::fixtures::{self, RunWriter, TaskSpec};
use braid_store::Store;
use braid_store::test_servers;
use serde_json::{Value, json};

fn braid(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_braid"));
    c.args(args).env_remove("BRAID_STORE").env_remove("BRAID_BLOBS");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn ok_json(args: &[&str], env: &[(&str, String)]) -> Value {
    let out = braid(args, env);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What a reader sees of a store: runs, the fanout's values, a failed task's logs.
fn view(store: &[&str], env: &[(&str, String)]) -> Value {
    let with = |args: &[&str]| {
        let mut all: Vec<&str> = store.to_vec();
        all.extend_from_slice(args);
        all.push("--json");
        ok_json(&all, env)
    };
    let mut runs = with(&["runs", "fanout"]);
    for r in runs.as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("duration");
    }
    json!({
        "runs": runs,
        "total": with(&["artifact", "fanout/latest/join", "total"]),
        "work": with(&["show", "fanout/latest/work"])["tasks"].as_array().unwrap().len(),
        "big": with(&["artifact", "big/latest/start", "blob"]),
    })
}

#[test]
fn an_embedded_store_copies_into_postgres_and_s3_and_back_whole_and_once() {
    let (Some(pg), Some(s3)) = (test_servers::postgres(), test_servers::s3()) else { return };
    let env = s3.env();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    {
        let store = Store::open_fs(&src).unwrap();
        let mut w = RunWriter::start(&store, "fanout", Some(fixtures::fanout_spec()), BTreeMap::new()).unwrap();
        w.task(TaskSpec::new("start").error("panic", "boom").log("about to fail")).unwrap();
        w.finish(RunStatus::Failed, Some("start/1: panic: boom".into())).unwrap();
        fixtures::fanout(&store, 300).unwrap();
        // A value large enough to be a blob file, not an inline row.
        let spec = json!({"format_version": 1, "name": "big", "steps": [
            {"name": "start", "next": {"type": "next", "to": "end"}},
            {"name": "end", "next": {"type": "end"}}
        ]});
        let mut w = RunWriter::start(&store, "big", Some(spec), BTreeMap::new()).unwrap();
        w.task(TaskSpec::new("start").set("blob", &"x".repeat(200_000)).unwrap()).unwrap();
        w.finish(RunStatus::Succeeded, None).unwrap();
    }
    let db = pg.fresh_database();
    let bucket = s3.fresh_bucket();
    let src_s = src.display().to_string();
    let before = view(&["--store", &src_s], &env);

    let first = ok_json(&["copy", "--from", &src_s, "--to", &db, "--blobs", &bucket, "--json"], &env);
    assert_eq!(first["copied"]["runs"], 3, "{first}");
    assert!(!first.to_string().contains(test_servers::PG_PASSWORD), "the password is never shown: {first}");
    assert!(first["copied"]["blobs"].as_u64().unwrap() >= 1, "{first}");
    assert_eq!(view(&["--store", &db, "--blobs", &bucket], &env), before, "the copy reads like the original");

    let again = ok_json(&["copy", "--from", &src_s, "--to", &db, "--blobs", &bucket, "--json"], &env);
    assert_eq!(again["copied"]["runs"], 0, "{again}");
    assert_eq!(again["copied"]["runs_unchanged"], 3, "{again}");
    assert_eq!(again["copied"]["tasks"], 0, "a second copy changes nothing: {again}");
    assert_eq!(again["copied"]["blobs"], 0, "{again}");

    // Interrupted after the tasks, before the run records (which go last): running the
    // copy again finishes it without writing the tasks again.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(braid_store::pg::execute_batch(&db, "DELETE FROM runs; DELETE FROM run_tags")).unwrap();
    let resumed = ok_json(&["copy", "--from", &src_s, "--to", &db, "--blobs", &bucket, "--json"], &env);
    assert_eq!(
        (resumed["copied"]["runs"].as_u64(), resumed["copied"]["tasks"].as_u64()),
        (Some(3), Some(0)),
        "{resumed}"
    );
    assert_eq!(view(&["--store", &db, "--blobs", &bucket], &env), before);

    // And back into a new embedded store.
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let back_s = back.display().to_string();
    let out = ok_json(&["copy", "--from", &db, "--from-blobs", &bucket, "--to", &back_s, "--json"], &env);
    assert_eq!(out["copied"]["runs"], 3, "{out}");
    assert_eq!(view(&["--store", &back_s], &env), before);
}

#[test]
fn a_copy_without_a_source_store_or_with_blobs_for_an_fs_destination_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing").display().to_string();
    let out = braid(&["copy", "--from", &missing, "--to", "memory:"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no braid store there"), "{out:?}");
    let src = dir.path().join("src");
    drop(Store::open_fs(&src).unwrap());
    let to = dir.path().join("to").display().to_string();
    let out = braid(&["copy", "--from", &src.display().to_string(), "--to", &to, "--blobs", "s3://b/x"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a postgres:// store takes"), "{out:?}");
    assert!(!Path::new(&to).exists(), "nothing was created");
}

#[test]
fn gc_on_postgres_and_s3_deletes_old_runs_and_only_their_unshared_blobs() {
    let (Some(pg), Some(s3)) = (test_servers::postgres(), test_servers::s3()) else { return };
    let env = s3.env();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let spec = json!({"format_version": 1, "name": "big", "steps": [
        {"name": "start", "next": {"type": "next", "to": "end"}},
        {"name": "end", "next": {"type": "end"}}
    ]});
    {
        let store = Store::open_fs(&src).unwrap();
        // Three runs: the oldest's blob is its own, the other two share one.
        for seed in [1, 2, 2] {
            let mut w = RunWriter::start(&store, "big", Some(spec.clone()), BTreeMap::new()).unwrap();
            w.task(TaskSpec::new("start").set("blob", &noise(seed)).unwrap()).unwrap();
            w.finish(RunStatus::Succeeded, None).unwrap();
        }
    }
    let (db, bucket) = (pg.fresh_database(), s3.fresh_bucket());
    let src_s = src.display().to_string();
    ok_json(&["copy", "--from", &src_s, "--to", &db, "--blobs", &bucket, "--json"], &env);
    let at = ["--store", db.as_str(), "--blobs", bucket.as_str()];
    let with = |args: &[&str]| {
        let mut all: Vec<&str> = at.to_vec();
        all.extend_from_slice(args);
        all.push("--json");
        ok_json(&all, &env)
    };

    let gc = with(&["gc", "--keep-last", "1", "--grace", "0s"]);
    assert_eq!(gc["runs"]["collected"], 2, "{gc}");
    assert_eq!(gc["blobs"]["deleted"], 1, "only the blob no remaining run references: {gc}");
    let runs = with(&["runs", "big"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    let blob = with(&["artifact", "big/latest/start", "blob"]);
    // `--json` prints the stored preview: the value's JSON, cut.
    let preview = blob.as_str().unwrap_or_default();
    assert!(preview.starts_with(&format!("\"{}", &noise(2)[..1000])), "the kept run's shared blob still reads");

    let again = with(&["gc", "--keep-last", "1", "--grace", "0s"]);
    assert_eq!(
        (again["runs"]["collected"].as_u64(), again["blobs"]["deleted"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );
}

/// 200,000 letters that do not compress: a value stored as a blob of its own.
fn noise(seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}
