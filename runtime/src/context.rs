//! The task context a step function gets: artifacts, parameters, foreach input, join
//! inputs, logs and progress.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use braid_core::codec::{self, EncodedArtifact};
use braid_core::{ArtifactName, Attempt, Pathspec, Progress, ProgressUnits, RunId, StepName, TaskId, Timestamp};
use braid_store::{ArtifactRecord, ElementsRef, ForeachFrame, LogLine, TaskRecord};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::executor::RunShared;
use crate::namespace::{ArtRef, Namespace};
use crate::progress::ProgressState;

/// A foreach level the task sits in, with the items it fanned out over.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) record: ForeachFrame,
    /// The items, from item `first` on: all of them (`first` 0) in the process that
    /// fanned out; only the task's own in an isolated step's process.
    pub(crate) elements: Arc<Vec<Vec<u8>>>,
    pub(crate) first: u64,
}

impl Frame {
    /// The task's item at this level.
    pub(crate) fn item(&self) -> Option<&Vec<u8>> {
        let at = self.record.index.checked_sub(self.first)?;
        self.elements.get(usize::try_from(at).ok()?)
    }
}

/// A branch arriving at a join: the task, and everything it saw when it ended.
#[derive(Debug, Clone)]
pub(crate) struct Branch {
    pub(crate) task: TaskId,
    pub(crate) step: StepName,
    pub(crate) index: u64,
    pub(crate) ns: BranchNs,
    pub(crate) reused: bool,
}

/// What a join keeps of a branch's namespace until it runs.
#[derive(Debug, Clone)]
pub(crate) enum BranchNs {
    /// All of it, in memory: joins of up to `join_inputs_in_memory` branches, and
    /// branches of more than one task.
    Held(Arc<Namespace>),
    /// The names the branch's one task set (sorted); their records and values are read
    /// from the store when asked for, over what the fanning task's namespace
    /// ([`JoinInputs::inherited`]) holds. About 100 bytes a branch, where a held
    /// namespace is several hundred.
    Stored(Arc<[ArtifactName]>),
}

impl Branch {
    /// Whether the branch sees `name`.
    pub(crate) fn has(&self, name: &str, inherited: &Namespace) -> bool {
        match &self.ns {
            BranchNs::Held(ns) => ns.contains_key(name),
            BranchNs::Stored(own) => {
                own.binary_search_by(|n| n.as_str().cmp(name)).is_ok() || inherited.contains_key(name)
            }
        }
    }

    /// Every name the branch sees.
    pub(crate) fn names(&self, inherited: &Namespace) -> BTreeSet<ArtifactName> {
        match &self.ns {
            BranchNs::Held(ns) => ns.names(),
            BranchNs::Stored(own) => {
                let mut all = inherited.names();
                all.extend(own.iter().cloned());
                all
            }
        }
    }
}

/// What a join reads its branches from: the branches in index (or declared) order, the
/// namespace the branches of a foreach inherited, and the window of stored branches'
/// artifacts read last.
pub(crate) struct JoinInputs {
    pub(crate) branches: Vec<Branch>,
    pub(crate) inherited: Arc<Namespace>,
    window: tokio::sync::Mutex<Window>,
}

/// The own artifacts of the tasks `first..=last`, read in one store call.
#[derive(Default)]
struct Window {
    first: u64,
    last: u64,
    flushed: bool,
    artifacts: std::collections::HashMap<TaskId, Vec<ArtifactRecord>>,
}

/// How many task ids one window read covers: the branches of a foreach have consecutive
/// ids, so a join reading its inputs in order makes one store read per this many.
const WINDOW: u64 = 1024;

impl JoinInputs {
    pub(crate) fn new(branches: Vec<Branch>, inherited: Arc<Namespace>) -> Self {
        JoinInputs { branches, inherited, window: tokio::sync::Mutex::new(Window::default()) }
    }

    /// The stored record of artifact `name`, which `branch` (held in the store) set.
    async fn stored(&self, shared: &RunShared, branch: &Branch, name: &str) -> Result<Option<Arc<ArtRef>>> {
        let mut w = self.window.lock().await;
        if !w.flushed {
            // The branches' records were queued before the join started: make them durable.
            shared.persister.flush().await;
            w.flushed = true;
        }
        let id = branch.task.0;
        if w.artifacts.is_empty() || id < w.first || id > w.last {
            let last = id.saturating_add(WINDOW - 1);
            let rows = shared
                .store
                .records
                .artifacts_of_tasks(shared.flow.name(), shared.run_id, branch.task, TaskId(last))
                .await?;
            w.artifacts.clear();
            for (task, a) in rows {
                w.artifacts.entry(task).or_default().push(a);
            }
            (w.first, w.last) = (id, last);
        }
        let found = w.artifacts.get(&branch.task).and_then(|arts| arts.iter().find(|a| a.name.as_str() == name));
        Ok(found.map(|a| Arc::new(ArtRef::new(a.clone()))))
    }
}

impl std::fmt::Debug for JoinInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinInputs({} branches)", self.branches.len())
    }
}

/// An artifact this task set (or took by reference in a merge).
#[derive(Debug)]
pub(crate) struct LocalSet {
    pub(crate) art: Arc<ArtRef>,
    /// Bytes to store: the envelope, and the elements manifest if there is one. Empty
    /// when the value is already stored (merged by reference).
    pub(crate) new_blobs: Vec<Vec<u8>>,
}

pub(crate) struct CtxInner {
    pub(crate) shared: Arc<RunShared>,
    pub(crate) step: StepName,
    pub(crate) task: TaskId,
    pub(crate) attempt: Attempt,
    pub(crate) iteration: u32,
    pub(crate) parent_ns: Arc<Namespace>,
    pub(crate) sets: Mutex<BTreeMap<ArtifactName, LocalSet>>,
    pub(crate) frames: Arc<Vec<Frame>>,
    pub(crate) inputs: Option<Arc<JoinInputs>>,
    pub(crate) record: Arc<Mutex<TaskRecord>>,
    pub(crate) progress: Mutex<ProgressState>,
    /// The last report of the attempt before this one (or, in a resumed run, of this
    /// task's twin in the origin run when that did not succeed).
    pub(crate) last_progress: Option<Progress>,
    pub(crate) policy: crate::flow::StepPolicy,
    /// For an attempt a worker runs: its queue claim's fencing token, named by every
    /// write of the attempt ([`CtxInner::precondition`]).
    pub(crate) claim: Option<u64>,
}

impl CtxInner {
    /// What every write of this attempt's task record must satisfy: the attempt is
    /// still the task's current one (and, on a worker, its claim is).
    pub(crate) fn precondition(&self) -> braid_store::Precondition {
        match self.claim {
            Some(token) => braid_store::Precondition::Claim { attempt: self.attempt, token },
            None => braid_store::Precondition::Attempt(self.attempt),
        }
    }
}

/// The context of one attempt at a task. Cheap to clone; move it into async blocks.
#[derive(Clone)]
pub struct Ctx {
    pub(crate) inner: Arc<CtxInner>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ctx({})", self.pathspec())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Ctx {
    /// The run this task belongs to.
    pub fn run_id(&self) -> RunId {
        self.inner.shared.run_id
    }

    /// The step this task runs.
    pub fn step(&self) -> &StepName {
        &self.inner.step
    }

    /// This task's id in the run (ids follow creation order).
    pub fn task_id(&self) -> TaskId {
        self.inner.task
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> Attempt {
        self.inner.attempt
    }

    /// How many times the flow looped back before this task (0 outside loops).
    pub fn iteration(&self) -> u32 {
        self.inner.iteration
    }

    /// The run this run resumes (`resume RUN`), if it is a resumed run: the origin's
    /// succeeded tasks were cloned, the rest run again here.
    pub fn origin_run(&self) -> Option<RunId> {
        self.inner.shared.origin.as_ref().map(|o| o.run)
    }

    /// Whether this run resumes another ([`Ctx::origin_run`]).
    pub fn is_resumed(&self) -> bool {
        self.inner.shared.origin.is_some()
    }

    /// Tags this task's run with `tag` (printable text, see [`braid_core::Tag`]), at
    /// once: `braid runs --tag` finds the run while it still goes. Tagging twice is
    /// one tag. A tag that is not valid is an error naming the step and why.
    pub async fn add_tag(&self, tag: &str) -> Result<()> {
        self.update_tags(tag, true).await
    }

    /// Removes `tag` from this task's run, if it has it.
    pub async fn remove_tag(&self, tag: &str) -> Result<()> {
        self.update_tags(tag, false).await
    }

    async fn update_tags(&self, tag: &str, add: bool) -> Result<()> {
        let tag = braid_core::Tag::new(tag).map_err(|e| Error::Tag { step: self.inner.step.clone(), source: e })?;
        let (add, remove) = if add { (vec![tag], Vec::new()) } else { (Vec::new(), vec![tag]) };
        let shared = &self.inner.shared;
        shared.store.records.update_tags(shared.flow.name(), shared.run_id, &add, &remove).await?;
        Ok(())
    }

    /// `flow/run/step/task` of this task.
    pub fn pathspec(&self) -> Pathspec {
        Pathspec::task(
            self.inner.shared.flow.name().clone(),
            self.inner.shared.run_id,
            self.inner.step.clone(),
            self.inner.task,
        )
    }

    fn lookup(&self, name: &str) -> Option<Arc<ArtRef>> {
        if let Some(s) = lock(&self.inner.sets).get(name) {
            return Some(s.art.clone());
        }
        self.inner.parent_ns.get(name).cloned()
    }

    /// The names this task sees now: inherited and set.
    pub fn names(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = self.inner.parent_ns.names().into_iter().map(|k| k.to_string()).collect();
        all.extend(lock(&self.inner.sets).keys().map(|k| k.to_string()));
        all.into_iter().collect()
    }

    fn missing(&self, name: &str) -> Error {
        if let Some(inputs) = &self.inner.inputs
            && let Ok(n) = ArtifactName::new(name)
        {
            let branches = inputs.branches.iter().filter(|b| b.has(name, &inputs.inherited)).count();
            if branches > 0 {
                return Error::BranchOnly { step: self.inner.step.clone(), name: n, branches };
            }
        }
        let names = self.names();
        let existing = if names.is_empty() {
            "this task sees no artifacts".to_owned()
        } else {
            format!("the artifacts it sees are: {}", names.join(", "))
        };
        Error::ArtifactMissing { step: self.inner.step.clone(), name: name.to_owned(), existing }
    }

    /// Reads artifact `name` as `T`: set by this task, or inherited from its ancestors.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let art = self.lookup(name).ok_or_else(|| self.missing(name))?;
        let bytes = art.bytes(&*self.inner.shared.store.blobs).await?;
        codec::decode(&bytes).map_err(|source| Error::Codec {
            step: self.inner.step.clone(),
            name: name.to_owned(),
            source,
        })
    }

    /// Whether artifact `name` is visible to this task.
    pub fn has(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// Sets artifact `name` for this task and its descendants. The value is encoded
    /// now and stored when the task succeeds; a failed attempt's values are dropped.
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        let n = ArtifactName::new(name)?;
        let wrap = |source| Error::Codec { step: self.inner.step.clone(), name: name.to_owned(), source };
        let EncodedArtifact { bytes, type_name, preview } = codec::encode(value).map_err(wrap)?;
        let mut new_blobs = Vec::with_capacity(2);
        let mut elements = None;
        let mut elements_ref = None;
        if self.inner.shared.flow.foreach_names.contains(&n) {
            // A foreach may fan out over this name: keep each element in its own envelope.
            let parts = codec::encode_elements(value).map_err(wrap)?;
            let manifest = codec::encode_manifest(&parts).map_err(wrap)?;
            elements_ref = Some(ElementsRef { key: braid_store::BlobKey::of(&manifest), len: parts.len() as u64 });
            elements = Some(Arc::new(parts));
            new_blobs.push(manifest);
        }
        let inline = (bytes.len() <= braid_store::INLINE_VALUE_MAX).then(|| bytes.clone());
        let record = ArtifactRecord {
            name: n.clone(),
            key: braid_store::BlobKey::of(&bytes),
            type_name,
            size: bytes.len() as u64,
            preview,
            elements: elements_ref,
            inline: inline.clone(),
        };
        if inline.is_none() {
            new_blobs.insert(0, bytes.clone());
        }
        let mut art = ArtRef::new(record).with_bytes(Arc::new(bytes));
        if let Some(e) = elements {
            art = art.with_elements(e);
        }
        lock(&self.inner.sets).insert(n, LocalSet { art: Arc::new(art), new_blobs });
        Ok(())
    }

    /// Reads parameter `name` as `T`. Parameters are fixed for the run and visible in
    /// every step.
    pub fn param<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let params = &self.inner.shared.params;
        let v = params.get(name).ok_or_else(|| Error::Param {
            param: name.to_owned(),
            reason: format!(
                "not declared by flow `{}`; declared: {}",
                self.inner.shared.flow.name(),
                params.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
        serde_json::from_value(v.clone()).map_err(|e| Error::Param {
            param: name.to_owned(),
            reason: format!("value {v} does not read as `{}`: {e}", std::any::type_name::<T>()),
        })
    }

    /// In a foreach task: its item.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T> {
        let frame = self.inner.frames.last().ok_or_else(|| Error::WrongPlace {
            step: self.inner.step.clone(),
            what: "`input()`",
            where_: "a task inside a foreach",
        })?;
        let bytes = frame.item().ok_or_else(|| Error::Foreach {
            step: frame.record.step.clone(),
            over: frame.record.over.clone(),
            reason: format!("item {} is missing from the stored items", frame.record.index),
        })?;
        codec::decode(bytes).map_err(|source| Error::Codec {
            step: self.inner.step.clone(),
            name: format!("{} (item {})", frame.record.over, frame.record.index),
            source,
        })
    }

    /// In a foreach task: its index in the innermost foreach.
    pub fn index(&self) -> Option<u64> {
        self.inner.frames.last().map(|f| f.record.index)
    }

    /// Every foreach level this task sits in, outermost first.
    pub fn foreach_stack(&self) -> Vec<ForeachFrame> {
        self.inner.frames.iter().map(|f| f.record.clone()).collect()
    }

    /// In a foreach task: the item of the foreach `depth` levels out (0 = innermost).
    pub fn outer_input<T: DeserializeOwned>(&self, depth: usize) -> Result<T> {
        let frames = &self.inner.frames;
        let frame =
            frames.len().checked_sub(depth + 1).and_then(|i| frames.get(i)).ok_or_else(|| Error::WrongPlace {
                step: self.inner.step.clone(),
                what: "`outer_input(depth)`",
                where_: "a task nested at least depth+1 foreach levels deep",
            })?;
        let bytes = frame.item().ok_or_else(|| Error::Foreach {
            step: frame.record.step.clone(),
            over: frame.record.over.clone(),
            reason: format!("item {} is missing", frame.record.index),
        })?;
        codec::decode(bytes).map_err(|source| Error::Codec {
            step: self.inner.step.clone(),
            name: frame.record.over.to_string(),
            source,
        })
    }

    /// In a join: one entry per branch, in foreach index order (or declared branch
    /// order for a split).
    pub fn inputs(&self) -> Result<Vec<Input>> {
        Ok(self.inputs_iter()?.collect())
    }

    /// In a join: the branches one at a time, in the order of [`Ctx::inputs`], without
    /// making them all first (for a join of a million branches, a `Vec` of inputs is
    /// tens of MiB). Reading each input's artifacts in this order reads a wide join's
    /// stored branches a window at a time.
    pub fn inputs_iter(&self) -> Result<impl ExactSizeIterator<Item = Input> + use<>> {
        let join = self.join_inputs("`inputs_iter()`")?.clone();
        let shared = self.inner.shared.clone();
        Ok((0..join.branches.len()).map(move |i| Input { pos: i, join: join.clone(), shared: shared.clone() }))
    }

    fn join_inputs(&self, what: &'static str) -> Result<&Arc<JoinInputs>> {
        self.inner.inputs.as_ref().ok_or_else(|| Error::WrongPlace {
            step: self.inner.step.clone(),
            what,
            where_: "a join step",
        })
    }

    /// In a join: sets every artifact whose value is the same in all branches that have
    /// it (compared by content key, nothing decoded). See [`Merge`].
    pub fn merge_artifacts(&self, merge: Merge) -> Result<()> {
        let step = self.inner.step.clone();
        let inputs = self.join_inputs("`merge_artifacts()`")?.clone();
        let fail = |reason: String| Error::Merge { step: step.clone(), reason };
        if !merge.include.is_empty() && !merge.exclude.is_empty() {
            return Err(fail("give either an include list or an exclude list, not both".into()));
        }
        if inputs.branches.iter().any(|b| matches!(b.ns, BranchNs::Stored(_))) {
            return Err(fail(format!(
                "its {} branches are more than the {} whose artifacts a join holds in memory, and merging compares \
                 every branch's values; read them with `ctx.inputs_iter()` and set what you need, or raise \
                 `RunOptions::join_inputs_in_memory`",
                inputs.branches.len(),
                self.inner.shared.join_inputs_in_memory
            )));
        }
        let held = |b: &Branch| match &b.ns {
            BranchNs::Held(ns) => Some(ns.clone()),
            BranchNs::Stored(_) => None,
        };
        let namespaces: Vec<(StepName, Arc<Namespace>)> =
            inputs.branches.iter().filter_map(|b| held(b).map(|ns| (b.step.clone(), ns))).collect();
        let mut all: BTreeSet<ArtifactName> = BTreeSet::new();
        for (_, ns) in &namespaces {
            all.extend(ns.names());
        }
        let candidates: Vec<ArtifactName> = if merge.include.is_empty() {
            let exclude: BTreeSet<&str> = merge.exclude.iter().map(String::as_str).collect();
            all.iter().filter(|n| !exclude.contains(n.as_str())).cloned().collect()
        } else {
            let missing: Vec<&str> =
                merge.include.iter().map(String::as_str).filter(|n| !all.iter().any(|a| a == n)).collect();
            if !missing.is_empty() {
                return Err(fail(format!("include names artifacts no branch has: {}", missing.join(", "))));
            }
            merge.include.iter().filter_map(|n| ArtifactName::new(n).ok()).collect()
        };
        let already: BTreeSet<ArtifactName> = lock(&self.inner.sets).keys().cloned().collect();
        let mut taken = Vec::new();
        let mut conflicts = Vec::new();
        for name in candidates {
            if already.contains(&name) {
                continue; // Set in the join itself: the join's value wins.
            }
            let mut first: Option<&Arc<ArtRef>> = None;
            let mut conflict = false;
            for (_, ns) in &namespaces {
                if let Some(a) = ns.get(name.as_str()) {
                    match first {
                        None => first = Some(a),
                        Some(f) if f.record.key != a.record.key => conflict = true,
                        Some(_) => {}
                    }
                }
            }
            if conflict {
                let steps: BTreeSet<String> = namespaces
                    .iter()
                    .filter(|(_, ns)| ns.contains_key(name.as_str()))
                    .map(|(step, _)| step.to_string())
                    .collect();
                conflicts.push(format!(
                    "`{name}` (differs between branches of {})",
                    steps.into_iter().collect::<Vec<_>>().join(", ")
                ));
            } else if let Some(f) = first {
                taken.push((name, f.clone()));
            }
        }
        if !conflicts.is_empty() {
            return Err(fail(format!(
                "these artifacts have different values in different branches: {}; set them in the join, or exclude them",
                conflicts.join(", ")
            )));
        }
        let mut sets = lock(&self.inner.sets);
        for (name, art) in taken {
            sets.insert(name, LocalSet { art, new_blobs: Vec::new() });
        }
        Ok(())
    }

    /// Adds a line to this task's log (kept in the store, shown by `braid logs`).
    pub fn log(&self, line: impl Into<String>) {
        self.log_at("INFO", line.into());
    }

    pub(crate) fn log_at(&self, level: &str, line: String) {
        self.inner.shared.persister.logs(vec![LogLine {
            run: self.inner.shared.run_id,
            task: self.inner.task,
            attempt: self.inner.attempt,
            seq: 0,
            at: Timestamp::now(),
            level: level.to_owned(),
            line,
        }]);
    }

    /// Reports progress: `percent` from 0 to 100 and a message (the units and details of
    /// earlier reports are kept). Cheap in a hot loop: reports are coalesced, and each one
    /// written also extends the task's lease.
    pub fn progress(&self, percent: f32, message: impl Into<String>) -> Result<()> {
        let mut p = Progress::new(percent, message)
            .map_err(|source| Error::Progress { step: self.inner.step.clone(), source })?;
        // Units and details stay until new ones are reported: a step that sets its message
        // with `progress` and its counts with `progress_units` keeps both in every write.
        if let Some(l) = lock(&self.inner.progress).latest.as_ref() {
            p.units = l.units.clone();
            p.details = l.details.clone();
        }
        crate::progress::report(self, Some(p));
        Ok(())
    }

    /// Reports units done out of a total (`ctx.progress_units(4_500, 10_000, "rows")`):
    /// the percent is derived from them, the rate (units per second) and the ETA from
    /// their pace, and the message and details of the last report are kept. Coalesced
    /// like [`Ctx::progress`]. Fails, naming the step, when `done > total` or the unit is
    /// empty, longer than 64 bytes, or holds control characters.
    pub fn progress_units(&self, done: u64, total: u64, unit: &str) -> Result<()> {
        let err = |source| Error::Progress { step: self.inner.step.clone(), source };
        let units = ProgressUnits::new(done, total, unit).map_err(err)?;
        crate::progress::report_units(self, units).map_err(err)
    }

    /// Reports details of where the attempt is (a JSON object of at most
    /// [`braid_core::MAX_PROGRESS_DETAILS`] bytes: a cursor, the file being read), kept
    /// in the same record as the lease, so a heartbeat never drops them, and read back by
    /// the next attempt with [`Ctx::last_progress`]. Written with the next write that is
    /// due (at most one per `progress_interval`) and with the task's end.
    pub fn progress_details(&self, details: impl Serialize) -> Result<()> {
        let err = |source| Error::Progress { step: self.inner.step.clone(), source };
        let value = serde_json::to_value(details).map_err(|e| {
            err(braid_core::Error::InvalidProgress { reason: format!("progress details cannot be serialised: {e}") })
        })?;
        crate::progress::report_details(self, value).map_err(err)
    }

    /// The last progress report (percent, message, units, details) of the attempt before
    /// this one, when this attempt is a retry of a failed or lost one, or, in a resumed
    /// run, of the origin run's same task when it did not succeed: where a long job
    /// picks up (Temporal's heartbeat details). `None` on a first attempt of a fresh run.
    pub fn last_progress(&self) -> Option<&Progress> {
        self.inner.last_progress.as_ref()
    }

    /// Says "still alive" without new progress: extends the lease.
    pub fn heartbeat(&self) {
        crate::progress::report(self, None);
    }

    /// How many progress reports and heartbeats this attempt made, and how many of them
    /// were written to the store (the rest were coalesced).
    pub fn progress_counts(&self) -> (u64, u64) {
        let st = lock(&self.inner.progress);
        (st.reports, st.writes)
    }
}

/// Which artifacts `merge_artifacts` considers: all (default), all but `exclude`, or
/// only `include`.
#[derive(Debug, Clone, Default)]
pub struct Merge {
    /// Only these names (empty: every name); not together with `exclude`.
    pub include: Vec<String>,
    /// Every name but these.
    pub exclude: Vec<String>,
}

impl Merge {
    /// Every artifact the branches agree on.
    pub fn all() -> Self {
        Merge::default()
    }

    /// Only the artifacts `names`, each of which must exist.
    pub fn only(names: &[&str]) -> Self {
        Merge { include: names.iter().map(|s| (*s).to_owned()).collect(), exclude: Vec::new() }
    }

    /// Every artifact but `names`.
    pub fn except(names: &[&str]) -> Self {
        Merge { include: Vec::new(), exclude: names.iter().map(|s| (*s).to_owned()).collect() }
    }
}

/// One branch as a join sees it.
#[derive(Clone)]
pub struct Input {
    pos: usize,
    join: Arc<JoinInputs>,
    shared: Arc<RunShared>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Input({}/{})", self.branch().step, self.branch().task)
    }
}

impl Input {
    fn branch(&self) -> &Branch {
        &self.join.branches[self.pos]
    }

    /// The step the branch ended at.
    pub fn step(&self) -> &StepName {
        &self.branch().step
    }

    /// The branch's last task (the one that reached the join).
    pub fn task_id(&self) -> TaskId {
        self.branch().task
    }

    /// The branch's foreach index (or its position in a split).
    pub fn index(&self) -> u64 {
        self.branch().index
    }

    /// The artifact names this branch sees, sorted.
    pub fn names(&self) -> Vec<String> {
        self.branch().names(&self.join.inherited).into_iter().map(|n| n.to_string()).collect()
    }

    /// Whether this branch sees artifact `name`.
    pub fn has(&self, name: &str) -> bool {
        self.branch().has(name, &self.join.inherited)
    }

    /// Reads artifact `name` of this branch as `T`.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        let branch = self.branch();
        let art = match &branch.ns {
            BranchNs::Held(ns) => ns.get(name).cloned(),
            BranchNs::Stored(own) if own.binary_search_by(|n| n.as_str().cmp(name)).is_ok() => {
                self.join.stored(&self.shared, branch, name).await?
            }
            BranchNs::Stored(_) => self.join.inherited.get(name).cloned(),
        };
        let art = art.ok_or_else(|| Error::ArtifactMissing {
            step: branch.step.clone(),
            name: name.to_owned(),
            existing: format!("branch task {} has: {}", branch.task, self.names().join(", ")),
        })?;
        let bytes = art.bytes(&*self.shared.store.blobs).await?;
        codec::decode(&bytes).map_err(|source| Error::Codec {
            step: branch.step.clone(),
            name: name.to_owned(),
            source,
        })
    }
}
