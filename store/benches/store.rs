//! Store benchmark: task-record writes per second and blob streaming throughput.
//! Run through `cargo xtask bench [--quick]`, which passes `--json-out FILE` (rows of
//! `{section, name, value, unit, note}`) and merges them into one table; alone it prints
//! its rows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use braid_core::{ArtifactName, FlowName, RunId, StepName, TaskId, TaskStatus, codec};
use braid_store::{ArtifactRecord, RunRecord, Store, TaskKey, TaskRecord, TaskWrite};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

fn row(name: impl Into<String>, value: f64, unit: &str, note: impl Into<String>) -> Value {
    json!({ "section": "store", "name": name.into(), "value": value, "unit": unit, "note": note.into() })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_out = args.iter().position(|a| a == "--json-out").map(|i| args[i + 1].clone());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::Builder::new().prefix("braid-bench-").tempdir_in(".").or_else(|_| tempfile::tempdir()).unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        let n_tasks: u64 = if quick { 20_000 } else { 100_000 };
        rows.extend(record_writes(&dir.path().join("records"), n_tasks).await);
        let blob_mib: u64 = if quick { 256 } else { 1024 };
        rows.extend(blob_throughput(&dir.path().join("blobs"), blob_mib).await);
    });
    match json_out {
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(&rows).unwrap()).unwrap(),
        None => {
            println!("\nbraid store benchmark ({} mode)", if quick { "quick" } else { "full" });
            for r in &rows {
                println!(
                    "  {:<58} {:>14.1} {:<10} {}",
                    r["name"].as_str().unwrap(),
                    r["value"].as_f64().unwrap(),
                    r["unit"].as_str().unwrap(),
                    r["note"].as_str().unwrap()
                );
            }
        }
    }
}

fn task_write(run: RunId, t: u64, art: &ArtifactRecord) -> TaskWrite {
    let mut rec = TaskRecord::new(TaskKey {
        flow: FlowName::new("bench").unwrap(),
        run,
        step: StepName::new("work").unwrap(),
        task: TaskId(t),
    });
    rec.status = TaskStatus::Succeeded;
    TaskWrite { artifacts: Some(vec![art.clone()]), ..TaskWrite::new(rec) }
}

async fn record_writes(root: &Path, n: u64) -> Vec<Value> {
    let store = Store::open_fs(root).unwrap();
    let enc = codec::encode(&42u64).unwrap();
    let size = enc.bytes.len() as u64;
    let key = store.blobs.put(enc.bytes).await.unwrap();
    let art = ArtifactRecord {
        name: ArtifactName::new("out").unwrap(),
        key,
        type_name: enc.type_name,
        size,
        preview: enc.preview,
        elements: None,
        inline: None,
    };
    let mut rows = Vec::new();

    // One write per call, many callers at once: how the executor's tasks write.
    let run = RunRecord::new(FlowName::new("bench").unwrap(), RunId::generate());
    store.records.create_run(&run).await.unwrap();
    let store = Arc::new(store);
    let callers = 256u64;
    let start = Instant::now();
    let mut handles = Vec::new();
    for c in 0..callers {
        let store = store.clone();
        let art = art.clone();
        handles.push(tokio::spawn(async move {
            let mut t = c + 1;
            while t <= n {
                store.records.write_tasks(vec![task_write(run.id, t, &art)]).await.unwrap();
                t += callers;
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let el = start.elapsed();
    rows.push(row(
        format!("task records, 1 per call, {callers} callers"),
        n as f64 / el.as_secs_f64(),
        "records/s",
        format!("{n} tasks + {n} artifact rows; {:.2} µs each", el.as_micros() as f64 / n as f64),
    ));

    // Batches of 1000 per call.
    let run = RunRecord::new(FlowName::new("bench").unwrap(), RunId::generate());
    store.records.create_run(&run).await.unwrap();
    let start = Instant::now();
    let mut t = 0;
    while t < n {
        let batch: Vec<TaskWrite> = (t + 1..=(t + 1000).min(n)).map(|i| task_write(run.id, i, &art)).collect();
        t += batch.len() as u64;
        store.records.write_tasks(batch).await.unwrap();
    }
    let el = start.elapsed();
    rows.push(row(
        "task records, batches of 1,000",
        n as f64 / el.as_secs_f64(),
        "records/s",
        format!("{n} tasks; {:.2} µs each", el.as_micros() as f64 / n as f64),
    ));

    // One caller, one write at a time: the latency of a lone commit.
    let run = RunRecord::new(FlowName::new("bench").unwrap(), RunId::generate());
    store.records.create_run(&run).await.unwrap();
    let m = 2000u64;
    let start = Instant::now();
    for i in 1..=m {
        store.records.write_tasks(vec![task_write(run.id, i, &art)]).await.unwrap();
    }
    let el = start.elapsed();
    rows.push(row(
        "task records, 1 caller awaiting each",
        m as f64 / el.as_secs_f64(),
        "records/s",
        format!("commit latency {:.1} µs", el.as_micros() as f64 / m as f64),
    ));
    rows
}

/// Incompressible pseudo-random bytes, generated as read.
struct NoiseReader {
    left: u64,
    state: u64,
}

impl AsyncRead for NoiseReader {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize / 8 * 8;
        let n = if n == 0 { (buf.remaining() as u64).min(self.left) as usize } else { n };
        let mut out = vec![0u8; n];
        for chunk in out.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let b = self.state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.left -= n as u64;
        buf.put_slice(&out);
        Poll::Ready(Ok(()))
    }
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
    }
    total
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// Plain sequential write of `bytes` noise bytes to a new file, fsynced; then removed.
async fn plain_write(path: &Path, bytes: u64) -> Duration {
    let start = Instant::now();
    {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
        let mut r = NoiseReader { left: bytes, state: 7 };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).unwrap();
        }
        f.into_inner().unwrap().sync_all().unwrap();
    }
    let t = start.elapsed();
    std::fs::remove_file(path).unwrap();
    t
}

/// Resets the process's peak RSS (Linux: `5` to `/proc/self/clear_refs`); false if it cannot.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_rss_mib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line["VmHWM:".len()..].split_whitespace().next()?.parse::<f64>().ok()? / 1024.0)
}

async fn blob_throughput(root: &Path, mib: u64) -> Vec<Value> {
    let bytes = mib * 1024 * 1024;
    let mut rows = Vec::new();
    std::fs::create_dir_all(root).unwrap();
    let plain = root.join("plain.bin");

    // Baseline: a plain sequential write of the same bytes, fsynced, measured before
    // and after the store's writes; the faster of the two is the baseline, so neither
    // a cold start nor the store's leftover writeback flatters the store.
    let plain_before = plain_write(&plain, bytes).await;

    let store = Store::open_fs(root.join("store")).unwrap();
    let rss_reset = reset_peak_rss();
    let start = Instant::now();
    let (key, n) = store.blobs.put_stream(&mut NoiseReader { left: bytes, state: 7 }).await.unwrap();
    let put_t = start.elapsed();
    assert_eq!(n, bytes);
    let used = dir_bytes(&root.join("store"));

    let start = Instant::now();
    let mut r = store.blobs.get_stream(&key).await.unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let get_t = start.elapsed();
    assert_eq!(read, bytes);
    let peak = if rss_reset { peak_rss_mib() } else { None };

    let start = Instant::now();
    let (key2, _) = store.blobs.put_stream(&mut NoiseReader { left: bytes, state: 7 }).await.unwrap();
    let again_t = start.elapsed();
    assert_eq!(key, key2);
    let used_after = dir_bytes(&root.join("store"));

    let plain_after = plain_write(&plain, bytes).await;
    let plain_t = plain_before.min(plain_after);

    rows.push(row(
        format!("plain sequential write + fsync, {mib} MiB"),
        mb_s(bytes, plain_t),
        "MB/s",
        format!(
            "best of before/after the store ({:.0} and {:.0} MB/s)",
            mb_s(bytes, plain_before),
            mb_s(bytes, plain_after)
        ),
    ));
    rows.push(row(
        format!("blob put_stream, {mib} MiB"),
        mb_s(bytes, put_t),
        "MB/s",
        format!("hash + write + fsync + rename; {:.0}% of plain", 100.0 * plain_t.as_secs_f64() / put_t.as_secs_f64()),
    ));
    rows.push(row(
        format!("blob get_stream, {mib} MiB"),
        mb_s(bytes, get_t),
        "MB/s",
        "read + verify (from the page cache)",
    ));
    if let Some(peak) = peak {
        rows.push(row(
            format!("peak RSS while streaming {mib} MiB in and out"),
            peak,
            "MiB",
            "VmHWM of the bench process, reset before put_stream",
        ));
    }
    rows.push(row(
        format!("same {mib} MiB stored again (dedupe)"),
        used_after as f64 - used as f64,
        "B added",
        format!("{:.2} s to hash", again_t.as_secs_f64()),
    ));
    rows
}
