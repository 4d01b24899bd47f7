//! A store directory damaged on disk (a bad disk, a half-copied backup, a hand edit):
//! once per process a real fs store is written by running a small flow through the
//! runtime (a foreach, a join, a value large enough to be a blob file, logs, a retried
//! attempt, a launch plan); each input then edits a copy of its files — flips bits,
//! truncates, overwrites, inserts, deletes, adds stray files — and the copy is opened,
//! read through the client the way `braid show` reads it, and checked with
//! `braid_store::fs::verify`. Properties: no panic and no hang, only errors; an input
//! that damages nothing reads back every value and verifies clean.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[path = "../../cli/examples/fanout/flow.rs"]
mod fanout_flow;

use braid_client::Client;
use braid_runtime::plan::{LaunchPlan, register_plans};
use braid_runtime::{Flow, RunOptions};
use braid_store::{PlanQuery, Store};
use libfuzzer_sys::fuzz_target;

/// The files of the pristine store, relative path -> bytes, sorted by path.
struct Pristine {
    files: Vec<(PathBuf, Vec<u8>)>,
    /// How many artifact values an undamaged copy reads whole.
    artifacts: usize,
}

const SCRATCH_PREFIX: &str = "braid-fuzz-store-";

/// Where this process's stores go: tmpfs when there is one, so an execution costs no disk.
fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() }
}

fn scratch_root() -> PathBuf {
    scratch_base().join(format!("{SCRATCH_PREFIX}{}", std::process::id()))
}

/// Removes what earlier fuzzing processes left behind (they end by `exit`, or crash).
fn remove_stale_scratch() {
    if !Path::new("/proc/self").exists() {
        return; // No way to tell a live process from a dead one.
    }
    for entry in std::fs::read_dir(scratch_base()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(SCRATCH_PREFIX) else { continue };
        if pid != std::process::id().to_string() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a tokio runtime")
    })
}

/// The `fanout` example's flow under another name, over 3 items, with a value large
/// enough to be a blob file and a small label.
fn flow() -> braid_runtime::Result<Flow> {
    fanout_flow::Fanout::new()
        .name("fuzzed")
        .default_n(3)
        .start_also(|ctx| {
            // Over the 32 KiB inline limit: a blob file under blobs/.
            ctx.set("big", &(0..40_000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<u8>>())?;
            ctx.set("label", "fuzz")?;
            Ok(())
        })
        .build()
}

/// Writes the pristine store with the real runtime, then snapshots its files.
fn pristine() -> &'static Pristine {
    static P: OnceLock<Pristine> = OnceLock::new();
    P.get_or_init(|| {
        remove_stale_scratch();
        let root = scratch_root().join("pristine");
        let _ = std::fs::remove_dir_all(&root);
        // `Store::open_fs` creates the store's own directory but refuses a missing parent.
        std::fs::create_dir_all(scratch_root()).expect("create the scratch directory");
        let flow = Arc::new(flow().expect("the fuzz flow is valid"));
        runtime().block_on(async {
            let store = Store::open_fs(&root).expect("open the pristine store");
            braid_runtime::run(flow.clone(), store.clone(), RunOptions { max_workers: 2, ..RunOptions::default() })
                .await
                .expect("the fuzz flow runs");
            let plans = LaunchPlan::builder("fuzzed_hourly", "fuzzed")
                .cron("0 * * * *", "Europe/Berlin")
                .label("team", "fuzz")
                .build()
                .expect("a valid plan");
            register_plans(&store, &[flow], vec![plans], "fuzz").await.expect("register the plan");
        });
        // The writer thread folds the WAL into the database when the last handle goes.
        let wal = root.join("records.sqlite-wal");
        let deadline = Instant::now() + Duration::from_secs(10);
        while wal.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut files = Vec::new();
        collect(&root, &root, &mut files);
        files.sort();
        let _ = std::fs::remove_dir_all(&root);
        let copy = materialize(&files);
        let artifacts = read_all(&copy).expect("the pristine store reads");
        assert!(artifacts >= 10, "the pristine store has only {artifacts} artifacts");
        let _ = std::fs::remove_dir_all(&copy);
        Pristine { files, artifacts }
    })
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).expect("list the pristine store").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).expect("under the root").to_owned();
            out.push((rel, std::fs::read(&path).expect("read a pristine file")));
        }
    }
}

/// Writes `files` into a fresh directory and returns it.
fn materialize(files: &[(PathBuf, Vec<u8>)]) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = scratch_root().join(format!("case-{}", N.fetch_add(1, Ordering::Relaxed)));
    for (rel, bytes) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a directory in the scratch store");
        }
        std::fs::write(&path, bytes).expect("write a scratch file");
    }
    std::fs::create_dir_all(&dir).expect("create the scratch store");
    dir
}

/// Stray files an input may add, besides editing the store's own.
const STRAY: &[&str] = &[
    "records.sqlite-wal",
    "records.sqlite-shm",
    "tmp/0123.tmp",
    "blobs/zz/not-a-blob",
    "blobs/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    "blobs/af/af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
];

/// Applies the edits the input describes. Each edit is 5 bytes — op, file, offset (3
/// bytes, little-endian, taken modulo the file's length) — then its operands.
fn damage(files: &mut Vec<(PathBuf, Vec<u8>)>, mut input: &[u8]) -> bool {
    let mut damaged = false;
    fn take(n: usize, input: &mut &[u8]) -> Vec<u8> {
        let (head, rest) = input.split_at(n.min(input.len()));
        *input = rest;
        head.to_vec()
    }
    fn byte(input: &mut &[u8]) -> u8 {
        take(1, input).first().copied().unwrap_or(0)
    }
    while input.len() >= 5 {
        let (op, sel) = (input[0], input[1]);
        let raw_off = usize::from(input[2]) | usize::from(input[3]) << 8 | usize::from(input[4]) << 16;
        input = &input[5..];
        if files.is_empty() && op % 7 != 6 {
            continue;
        }
        let i = if files.is_empty() { 0 } else { usize::from(sel) % files.len() };
        damaged = true;
        match op % 7 {
            // Flip bits of one byte.
            0 => {
                let mask = byte(&mut input).max(1);
                let f = &mut files[i].1;
                if !f.is_empty() {
                    let at = raw_off % f.len();
                    f[at] ^= mask;
                }
            }
            // Truncate.
            1 => {
                let f = &mut files[i].1;
                let at = raw_off % (f.len() + 1);
                f.truncate(at);
            }
            // Overwrite `n` bytes (extending the file if needed).
            2 => {
                let n = byte(&mut input);
                let bytes = take(usize::from(n), &mut input);
                let f = &mut files[i].1;
                let at = raw_off % (f.len() + 1);
                let end = at + bytes.len();
                if f.len() < end {
                    f.resize(end, 0);
                }
                f[at..end].copy_from_slice(&bytes);
            }
            // Insert `n` bytes.
            3 => {
                let n = byte(&mut input);
                let bytes = take(usize::from(n), &mut input);
                let f = &mut files[i].1;
                let at = raw_off % (f.len() + 1);
                f.splice(at..at, bytes);
            }
            // Delete the file.
            4 => {
                files.remove(i);
            }
            // Zero a whole 4 KiB page (a torn write).
            5 => {
                let f = &mut files[i].1;
                let start = (raw_off % (f.len() / 4096 + 1)) * 4096;
                let end = (start + 4096).min(f.len());
                if start < end {
                    f[start..end].fill(0);
                }
            }
            // Add a stray file with the next `n` bytes as content.
            _ => {
                let n = byte(&mut input);
                let bytes = take(usize::from(n), &mut input);
                let name = PathBuf::from(STRAY[usize::from(sel) % STRAY.len()]);
                files.retain(|(p, _)| *p != name);
                files.push((name, bytes));
            }
        }
    }
    damaged
}

/// Opens the store at `dir` and reads all of it as `braid show`, `braid artifact` and
/// `braid plan list` do; returns how many artifact values were read whole.
fn read_all(dir: &Path) -> Result<usize, String> {
    let store = Store::open_fs(dir).map_err(|e| e.to_string())?;
    let client = Client::from_store(store.clone());
    let mut values = 0;
    for flow in client.flows().map_err(|e| e.to_string())? {
        let _ = flow.graph();
        for run in flow.runs().map_err(|e| e.to_string())? {
            let _ = run.params();
            for step in run.steps().map_err(|e| e.to_string())?.iter().take(8) {
                let tasks = step.tasks().map_err(|e| e.to_string())?;
                for task in tasks.iter().take(8) {
                    let _ = task.attempts();
                    let _ = task.logs();
                    let _ = task.inputs();
                    let _ = task.input::<u64>();
                    for artifact in task.artifacts().map_err(|e| e.to_string())?.iter().take(8) {
                        let _ = artifact.preview();
                        let read = match artifact.type_name() {
                            "u64" => artifact.data::<u64>().map(drop),
                            "alloc::string::String" => artifact.data::<String>().map(drop),
                            "alloc::vec::Vec<u64>" => artifact.data::<Vec<u64>>().map(drop),
                            "alloc::vec::Vec<u8>" => artifact.data::<Vec<u8>>().map(drop),
                            _ => artifact.bytes().map(drop),
                        };
                        if read.is_ok() {
                            values += 1;
                        }
                    }
                }
            }
        }
    }
    for plan in client.plans(&PlanQuery::default()).map_err(|e| e.to_string())? {
        let _ = client.plan_versions(plan.name.as_str());
        let _ = LaunchPlan::from_json(&plan.spec);
    }
    drop(client);
    drop(store);
    Ok(values)
}

fn verify(dir: &Path) -> Result<Vec<braid_store::fs::Problem>, String> {
    runtime().block_on(braid_store::fs::verify(dir)).map_err(|e| e.to_string())
}

fuzz_target!(|data: &[u8]| {
    let pristine = pristine();
    let mut files = pristine.files.clone();
    let damaged = damage(&mut files, data);
    let dir = materialize(&files);
    let read = read_all(&dir);
    let problems = verify(&dir);
    if !damaged {
        assert_eq!(read, Ok(pristine.artifacts), "an undamaged store reads whole");
        assert_eq!(problems, Ok(Vec::new()), "an undamaged store verifies clean");
    }
    let _ = std::fs::remove_dir_all(&dir);
});
