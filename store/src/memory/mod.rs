//! The memory backend: everything in process memory, gone when the process ends. For
//! tests and for trying flows without touching disk. [`Store::memory`](crate::Store::memory)
//! puts the three together; [`MemoryPlans`] takes the record store its launch claims go to.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use braid_core::{ArtifactName, FlowName, RunId, StepName, Tag, TaskId, Timestamp};
use dashmap::DashMap;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::blob::{BlobInfo, BlobKey, BlobReader, BlobStore};
use crate::error::{Error, Result};
use crate::record::*;

mod plans;

pub use plans::MemoryPlans;

/// Blobs in a concurrent map keyed by content hash.
#[derive(Debug, Default)]
pub struct MemoryBlobs {
    blobs: DashMap<BlobKey, std::sync::Arc<Vec<u8>>>,
    /// When each blob was last stored.
    put_at: DashMap<BlobKey, Timestamp>,
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn put(&self, bytes: Vec<u8>) -> Result<BlobKey> {
        let key = BlobKey::of(&bytes);
        // The time first, so a blob is never seen without one.
        self.put_at.insert(key, Timestamp::now());
        self.blobs.entry(key).or_insert_with(|| std::sync::Arc::new(bytes));
        Ok(key)
    }

    async fn put_stream(&self, reader: &mut (dyn AsyncRead + Send + Unpin)) -> Result<(BlobKey, u64)> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.map_err(|e| Error::io("read blob stream for", "memory", e))?;
        let len = bytes.len() as u64;
        Ok((self.put(bytes).await?, len))
    }

    async fn get(&self, key: &BlobKey) -> Result<Vec<u8>> {
        self.blobs.get(key).map(|b| b.as_ref().clone()).ok_or_else(|| Error::NotFound { what: format!("blob {key}") })
    }

    async fn get_stream(&self, key: &BlobKey) -> Result<BlobReader> {
        let bytes = self.get(key).await?;
        Ok(Box::new(std::io::Cursor::new(bytes)))
    }

    async fn size(&self, key: &BlobKey) -> Result<Option<u64>> {
        Ok(self.blobs.get(key).map(|b| b.len() as u64))
    }

    async fn list(&self, after: Option<String>, limit: usize) -> Result<Page<BlobInfo>> {
        let limit = effective_limit(limit, 1000);
        let after = after.as_deref().map(BlobKey::parse).transpose()?;
        let mut items: Vec<BlobInfo> = self
            .blobs
            .iter()
            .filter(|e| after.is_none_or(|a| *e.key() > a))
            .map(|e| BlobInfo {
                key: *e.key(),
                size: e.value().len() as u64,
                put_at: self.put_at.get(e.key()).map_or(Timestamp::from_micros(0), |t| *t),
            })
            .collect();
        items.sort_by_key(|b| b.key);
        items.truncate(limit + 1);
        Ok(page(items, limit, |b| b.key.to_hex()))
    }

    async fn delete_if_older(&self, keys: &[BlobKey], put_before: Timestamp) -> Result<Vec<Option<u64>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            // Holding the time's entry lock makes check and removal one step against `put`.
            let freed = match self.put_at.entry(*k) {
                dashmap::Entry::Occupied(t) if *t.get() < put_before => {
                    let freed = self.blobs.remove(k).map(|(_, b)| b.len() as u64);
                    t.remove();
                    freed
                }
                _ => None,
            };
            out.push(freed);
        }
        Ok(out)
    }
}

#[derive(Debug, Default)]
struct Tables {
    flows: BTreeMap<FlowName, FlowRecord>,
    runs: BTreeMap<RunId, RunRecord>,
    tasks: BTreeMap<(RunId, TaskId), TaskRecord>,
    attempts: BTreeMap<(RunId, TaskId), BTreeMap<u32, AttemptRecord>>,
    artifacts: HashMap<(RunId, TaskId), Vec<ArtifactRecord>>,
    logs: HashMap<(RunId, TaskId), Vec<LogLine>>,
    claims: HashMap<(String, String), String>,
}

/// Records in maps behind one lock: simple, and every operation is atomic.
#[derive(Debug, Default)]
pub struct MemoryRecords {
    tables: Mutex<Tables>,
}

impl MemoryRecords {
    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn run_of<'a>(t: &'a Tables, flow: &FlowName, id: RunId) -> Option<&'a RunRecord> {
    t.runs.get(&id).filter(|r| &r.flow == flow)
}

#[async_trait]
impl RecordStore for MemoryRecords {
    async fn put_flow(&self, flow: FlowRecord) -> Result<()> {
        self.lock().flows.insert(flow.name.clone(), flow);
        Ok(())
    }

    async fn get_flow(&self, name: &FlowName) -> Result<Option<FlowRecord>> {
        Ok(self.lock().flows.get(name).cloned())
    }

    async fn list_flows(&self) -> Result<Vec<FlowRecord>> {
        Ok(self.lock().flows.values().cloned().collect())
    }

    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        let mut t = self.lock();
        if t.runs.contains_key(&run.id) {
            return Err(Error::Conflict {
                what: format!("run {}/{}", run.flow, run.id),
                reason: "a run with this id exists".into(),
            });
        }
        let mut run = run.clone();
        run.revision = 1;
        t.runs.insert(run.id, run);
        Ok(())
    }

    async fn update_run(&self, run: &RunRecord) -> Result<RunRecord> {
        let mut t = self.lock();
        let stored = t
            .runs
            .get_mut(&run.id)
            .filter(|r| r.flow == run.flow)
            .ok_or_else(|| Error::NotFound { what: format!("run {}/{}", run.flow, run.id) })?;
        if stored.revision != run.revision {
            return Err(Error::Conflict {
                what: format!("run {}/{}", run.flow, run.id),
                reason: format!("expected revision {}, stored is {}", run.revision, stored.revision),
            });
        }
        *stored = run.clone();
        stored.revision += 1;
        Ok(stored.clone())
    }

    async fn get_run(&self, flow: &FlowName, id: RunId) -> Result<Option<RunRecord>> {
        Ok(run_of(&self.lock(), flow, id).cloned())
    }

    async fn list_runs(&self, flow: &FlowName, query: &RunQuery) -> Result<Page<RunRecord>> {
        let limit = effective_limit(query.limit, 100);
        let after: Option<RunId> = parse_cursor(&query.after, "run")?;
        let now = Timestamp::now();
        let t = self.lock();
        let items: Vec<RunRecord> = t
            .runs
            .values()
            .rev()
            .filter(|r| &r.flow == flow)
            .filter(|r| after.is_none_or(|a| r.id < a))
            .filter(|r| query.status.is_none_or(|s| r.observed_status(now) == s))
            .filter(|r| query.tag.as_ref().is_none_or(|tag| r.tags.contains(tag)))
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(page(items, limit, |r| r.id.to_string()))
    }

    async fn renew_run_lease(&self, flow: &FlowName, id: RunId, lease: &RunLease) -> Result<bool> {
        let mut t = self.lock();
        let held = |r: &RunRecord| r.lease.as_ref().is_some_and(|l| l.holder == lease.holder);
        match t.runs.get_mut(&id).filter(|r| &r.flow == flow && r.status.is_live() && held(r)) {
            Some(run) => {
                run.lease = Some(lease.clone());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn update_tags(&self, flow: &FlowName, id: RunId, add: &[Tag], remove: &[Tag]) -> Result<RunRecord> {
        let mut t = self.lock();
        let run = t
            .runs
            .get_mut(&id)
            .filter(|r| &r.flow == flow)
            .ok_or_else(|| Error::NotFound { what: format!("run {flow}/{id}") })?;
        for tag in remove {
            run.tags.remove(tag);
        }
        run.tags.extend(add.iter().cloned());
        run.revision += 1;
        Ok(run.clone())
    }

    async fn write_tasks(&self, writes: Vec<TaskWrite>) -> Result<Vec<WriteOutcome>> {
        let mut t = self.lock();
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            let id = (w.task.key.run, w.task.key.task);
            let stored = t.tasks.get(&id).map(StoredTask::of);
            if let Some(reason) = check_precondition(&w.task.key, stored, w.precondition) {
                out.push(WriteOutcome::Rejected { reason });
                continue;
            }
            let mut task = w.task;
            task.revision = stored.map_or(1, |s| s.revision + 1);
            let revision = task.revision;
            t.tasks.insert(id, task);
            if let Some(arts) = w.artifacts {
                t.artifacts.insert(id, arts);
            }
            if let Some(a) = w.attempt {
                t.attempts.entry(id).or_default().insert(a.attempt.0, a);
            }
            out.push(WriteOutcome::Applied { revision });
        }
        Ok(out)
    }

    async fn get_task(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Option<TaskRecord>> {
        Ok(self.lock().tasks.get(&(run, task)).filter(|t| &t.key.flow == flow).cloned())
    }

    async fn list_tasks(&self, flow: &FlowName, run: RunId, query: &TaskQuery) -> Result<Page<TaskRecord>> {
        let limit = effective_limit(query.limit, 1000);
        let after: Option<u64> = parse_cursor(&query.after, "task")?;
        let start = TaskId(after.map_or(0, |a| a.saturating_add(1)));
        let t = self.lock();
        let items: Vec<TaskRecord> = t
            .tasks
            .range((run, start)..=(run, TaskId(u64::MAX)))
            .map(|(_, v)| v)
            .filter(|v| &v.key.flow == flow)
            .filter(|v| query.step.as_ref().is_none_or(|s| &v.key.step == s))
            .filter(|v| query.status.is_none_or(|s| v.status == s))
            .take(limit + 1)
            .cloned()
            .collect();
        Ok(page(items, limit, |t| t.key.task.to_string()))
    }

    async fn tasks_by_index(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        index: u64,
    ) -> Result<Vec<TaskRecord>> {
        let t = self.lock();
        Ok(t.tasks
            .range((run, TaskId(0))..=(run, TaskId(u64::MAX)))
            .map(|(_, v)| v)
            .filter(|v| &v.key.flow == flow && &v.key.step == step && v.foreach_index() == Some(index))
            .cloned()
            .collect())
    }

    async fn step_summaries(&self, flow: &FlowName, run: RunId) -> Result<Vec<StepSummary>> {
        let t = self.lock();
        let tasks = t.tasks.range((run, TaskId(0))..=(run, TaskId(u64::MAX))).map(|(_, v)| v);
        Ok(summarise_steps(tasks.filter(|v| &v.key.flow == flow).map(|v| StepCount {
            step: v.key.step.clone(),
            status: v.status,
            count: 1,
            first_started: v.started_at,
            last_ended: v.ended_at,
            first_task: v.key.task.0,
        })))
    }

    async fn list_attempts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<AttemptRecord>> {
        let t = self.lock();
        if t.tasks.get(&(run, task)).is_none_or(|v| &v.key.flow != flow) {
            return Ok(Vec::new());
        }
        Ok(t.attempts.get(&(run, task)).map(|m| m.values().cloned().collect()).unwrap_or_default())
    }

    async fn task_artifacts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<ArtifactRecord>> {
        let t = self.lock();
        if t.tasks.get(&(run, task)).is_none_or(|v| &v.key.flow != flow) {
            return Ok(Vec::new());
        }
        let mut arts = t.artifacts.get(&(run, task)).cloned().unwrap_or_default();
        arts.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(arts)
    }

    async fn artifacts_of_tasks(
        &self,
        flow: &FlowName,
        run: RunId,
        first: TaskId,
        last: TaskId,
    ) -> Result<Vec<(TaskId, ArtifactRecord)>> {
        let t = self.lock();
        let mut out = Vec::new();
        for id in first.0..=last.0 {
            let task = TaskId(id);
            if t.tasks.get(&(run, task)).is_none_or(|v| &v.key.flow != flow) {
                continue;
            }
            let mut arts = t.artifacts.get(&(run, task)).cloned().unwrap_or_default();
            arts.sort_by(|a, b| a.name.cmp(&b.name));
            out.extend(arts.into_iter().map(|a| (task, a)));
        }
        Ok(out)
    }

    async fn visible_artifacts(&self, flow: &FlowName, run: RunId, task: TaskId) -> Result<Vec<VisibleArtifact>> {
        let t = self.lock();
        let mut seen: BTreeMap<ArtifactName, VisibleArtifact> = BTreeMap::new();
        let mut current = Some(task);
        let mut hops = 0usize;
        while let Some(id) = current {
            let Some(rec) = t.tasks.get(&(run, id)).filter(|v| &v.key.flow == flow) else {
                break;
            };
            for a in t.artifacts.get(&(run, id)).into_iter().flatten() {
                seen.entry(a.name.clone()).or_insert_with(|| VisibleArtifact { artifact: a.clone(), set_by: id });
            }
            current = rec.parent;
            hops += 1;
            if hops > 1_000_000 {
                return Err(Error::Corrupt {
                    what: format!("task {flow}/{run}/{task}"),
                    path: "memory".into(),
                    reason: "its parent chain has a cycle".into(),
                });
            }
        }
        Ok(seen.into_values().collect())
    }

    async fn step_artifacts(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        name: &ArtifactName,
    ) -> Result<Vec<StepArtifact>> {
        let t = self.lock();
        let mut out: Vec<StepArtifact> = t
            .tasks
            .range((run, TaskId(0))..=(run, TaskId(u64::MAX)))
            .map(|(_, v)| v)
            .filter(|v| &v.key.flow == flow && &v.key.step == step)
            .filter_map(|v| {
                let art = t.artifacts.get(&(run, v.key.task))?.iter().find(|a| &a.name == name)?;
                Some(StepArtifact { task: v.key.task, foreach_index: v.foreach_index(), artifact: art.clone() })
            })
            .collect();
        out.sort_by_key(|s| (s.foreach_index, s.task));
        Ok(out)
    }

    async fn step_artifacts_page(
        &self,
        flow: &FlowName,
        run: RunId,
        step: &StepName,
        name: &ArtifactName,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<StepArtifactRow>> {
        let limit = effective_limit(limit, 1000);
        let after = StepCursor::parse(&after)?;
        let t = self.lock();
        // The `limit + 1` smallest (index, task) after the cursor, in one pass over the
        // run's tasks: a heap of at most that many keys.
        let mut heap: std::collections::BinaryHeap<StepCursor> = std::collections::BinaryHeap::new();
        for (_, v) in t.tasks.range((run, TaskId(0))..=(run, TaskId(u64::MAX))) {
            if &v.key.flow != flow || &v.key.step != step {
                continue;
            }
            let at = StepCursor { index: v.foreach_index(), task: v.key.task.0 };
            if after.is_some_and(|a| at <= a) {
                continue;
            }
            if heap.len() <= limit {
                heap.push(at);
            } else if heap.peek().is_some_and(|top| at < *top) {
                heap.pop();
                heap.push(at);
            }
        }
        let rows = heap
            .into_sorted_vec()
            .into_iter()
            .filter_map(|at| {
                let v = t.tasks.get(&(run, TaskId(at.task)))?;
                let artifact = t.artifacts.get(&(run, v.key.task)).and_then(|a| a.iter().find(|a| &a.name == name));
                Some(StepArtifactRow {
                    task: v.key.task,
                    foreach_index: at.index,
                    parent: if artifact.is_none() { v.parent } else { None },
                    artifact: artifact.cloned(),
                })
            })
            .collect();
        Ok(page(rows, limit, |r| StepCursor::after(r).to_string()))
    }

    async fn append_logs(&self, lines: Vec<LogLine>) -> Result<()> {
        let mut t = self.lock();
        for mut line in lines {
            let v = t.logs.entry((line.run, line.task)).or_default();
            line.seq = v.last().map_or(1, |l| l.seq + 1);
            v.push(line);
        }
        Ok(())
    }

    async fn read_logs(
        &self,
        flow: &FlowName,
        run: RunId,
        task: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<LogLine>> {
        let t = self.lock();
        if t.tasks.get(&(run, task)).is_none_or(|v| &v.key.flow != flow) {
            return Ok(Vec::new());
        }
        let limit = if limit == 0 { usize::MAX } else { limit };
        Ok(t.logs
            .get(&(run, task))
            .map(|v| v.iter().filter(|l| l.seq > after).take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn try_claim(&self, scope: &str, key: &str, holder: &str) -> Result<bool> {
        let mut t = self.lock();
        let k = (scope.to_owned(), key.to_owned());
        if t.claims.contains_key(&k) {
            return Ok(false);
        }
        t.claims.insert(k, holder.to_owned());
        Ok(true)
    }

    async fn claim_holder(&self, scope: &str, key: &str) -> Result<Option<String>> {
        Ok(self.lock().claims.get(&(scope.to_owned(), key.to_owned())).cloned())
    }

    async fn delete_run(&self, flow: &FlowName, id: RunId, revision: u64) -> Result<RunDeletion> {
        let mut t = self.lock();
        let what = || format!("run {flow}/{id}");
        let stored = run_of(&t, flow, id).ok_or_else(|| Error::NotFound { what: what() })?;
        if stored.revision != revision {
            return Err(Error::Conflict {
                what: what(),
                reason: format!("expected revision {revision}, stored is {}", stored.revision),
            });
        }
        if let Some(r) = t.runs.values().find(|r| r.origin_run == Some(id) && r.id != id) {
            return Err(Error::Conflict {
                what: what(),
                reason: format!("run {}/{} was resumed from it and remains", r.flow, r.id),
            });
        }
        t.runs.remove(&id);
        let tasks: Vec<(RunId, TaskId)> =
            t.tasks.range((id, TaskId(0))..=(id, TaskId(u64::MAX))).map(|(k, _)| *k).collect();
        let mut gone = RunDeletion { tasks: tasks.len() as u64, ..Default::default() };
        for k in tasks {
            t.tasks.remove(&k);
            gone.attempts += t.attempts.remove(&k).map_or(0, |a| a.len() as u64);
            gone.artifacts += t.artifacts.remove(&k).map_or(0, |a| a.len() as u64);
            gone.log_lines += t.logs.remove(&k).map_or(0, |l| l.len() as u64);
        }
        Ok(gone)
    }

    async fn artifact_blob_refs(&self, after: Option<String>, limit: usize) -> Result<Page<BlobRef>> {
        let limit = effective_limit(limit, 10_000);
        let after: Option<(RunId, u64)> = after
            .as_deref()
            .map(|s| {
                s.split_once('/')
                    .and_then(|(r, t)| Some((RunId::parse(r).ok()?, t.parse::<u64>().ok()?)))
                    .ok_or_else(|| bad_cursor("blob reference", s))
            })
            .transpose()?;
        let t = self.lock();
        let mut ids: Vec<(RunId, TaskId)> =
            t.artifacts.keys().filter(|(r, k)| after.is_none_or(|a| (*r, k.0) > a)).copied().collect();
        ids.sort();
        // A page ends at a task boundary, so the cursor is the last task included.
        let mut items = Vec::new();
        let mut next = None;
        let count = ids.len();
        for (i, (run, task)) in ids.into_iter().enumerate() {
            for a in &t.artifacts[&(run, task)] {
                items.push(BlobRef { run, key: a.key });
                if let Some(e) = a.elements {
                    items.push(BlobRef { run, key: e.key });
                }
            }
            if items.len() >= limit && i + 1 < count {
                next = Some(format!("{run}/{}", task.0));
                break;
            }
        }
        Ok(Page { items, next })
    }
}
