//! Store benchmark: task-record writes per second and blob streaming throughput.
//! Run through `cargo xtask bench [--quick]`; prints one table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use braid_core::{ArtifactName, FlowName, RunId, StepName, TaskId, TaskStatus, codec};
use braid_store::{ArtifactRecord, RunRecord, Store, TaskKey, TaskRecord, TaskWrite};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

struct Row {
    what: String,
    value: String,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::Builder::new().prefix("braid-bench-").tempdir_in(".").or_else(|_| tempfile::tempdir()).unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        let n_tasks: u64 = if quick { 20_000 } else { 100_000 };
        rows.extend(record_writes(&dir.path().join("records"), n_tasks).await);
        let blob_mib: u64 = if quick { 256 } else { 1024 };
        rows.extend(blob_throughput(&dir.path().join("blobs"), blob_mib).await);
    });
    println!(
        "\nbraid store benchmark ({} mode, {} cores)",
        if quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let w = rows.iter().map(|r| r.what.len()).max().unwrap_or(10);
    for r in &rows {
        println!("  {:<w$}  {}", r.what, r.value);
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

async fn record_writes(root: &Path, n: u64) -> Vec<Row> {
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
    rows.push(Row {
        what: format!("task records, 1 per call, {callers} callers ({n} tasks + {n} artifact rows)"),
        value: format!(
            "{:>10.0} records/s  ({:.2} µs each, {:.2} s)",
            n as f64 / el.as_secs_f64(),
            el.as_micros() as f64 / n as f64,
            el.as_secs_f64()
        ),
    });

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
    rows.push(Row {
        what: format!("task records, batches of 1000 ({n} tasks)"),
        value: format!(
            "{:>10.0} records/s  ({:.2} µs each)",
            n as f64 / el.as_secs_f64(),
            el.as_micros() as f64 / n as f64
        ),
    });

    // One caller, one write at a time: the latency of a lone commit.
    let run = RunRecord::new(FlowName::new("bench").unwrap(), RunId::generate());
    store.records.create_run(&run).await.unwrap();
    let m = 2000u64;
    let start = Instant::now();
    for i in 1..=m {
        store.records.write_tasks(vec![task_write(run.id, i, &art)]).await.unwrap();
    }
    let el = start.elapsed();
    rows.push(Row {
        what: "task records, 1 caller awaiting each (commit latency)".into(),
        value: format!(
            "{:>10.0} records/s  ({:.1} µs each)",
            m as f64 / el.as_secs_f64(),
            el.as_micros() as f64 / m as f64
        ),
    });
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

fn mbps(bytes: u64, d: Duration) -> String {
    format!("{:>8.0} MB/s", bytes as f64 / 1e6 / d.as_secs_f64())
}

async fn blob_throughput(root: &Path, mib: u64) -> Vec<Row> {
    let bytes = mib * 1024 * 1024;
    let mut rows = Vec::new();
    std::fs::create_dir_all(root).unwrap();

    // Baseline: plain sequential write of the same bytes, fsynced.
    let plain = root.join("plain.bin");
    let start = Instant::now();
    {
        let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&plain).unwrap());
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
    let plain_t = start.elapsed();
    std::fs::remove_file(&plain).unwrap();

    let store = Store::open_fs(root.join("store")).unwrap();
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

    let start = Instant::now();
    let (key2, _) = store.blobs.put_stream(&mut NoiseReader { left: bytes, state: 7 }).await.unwrap();
    let again_t = start.elapsed();
    assert_eq!(key, key2);
    let used_after = dir_bytes(&root.join("store"));

    rows.push(Row { what: format!("plain sequential write + fsync, {mib} MiB"), value: mbps(bytes, plain_t) });
    rows.push(Row {
        what: format!("blob put_stream (hash + write + fsync + rename), {mib} MiB"),
        value: format!(
            "{}  ({:.0}% of plain)",
            mbps(bytes, put_t),
            100.0 * plain_t.as_secs_f64() / put_t.as_secs_f64()
        ),
    });
    rows.push(Row { what: format!("blob get_stream (read + verify), {mib} MiB"), value: mbps(bytes, get_t) });
    rows.push(Row {
        what: "same value stored again (dedupe)".into(),
        value: format!("{:>8} bytes added  ({:.2} s to hash)", used_after as i64 - used as i64, again_t.as_secs_f64()),
    });
    rows
}
