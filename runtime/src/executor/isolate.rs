//! Isolated steps: an attempt run in a child process of the same binary, so that a crash
//! of the step's code (a segfault in a native library, `abort()`, the out-of-memory
//! killer) fails that attempt and nothing else.
//!
//! The parent (the process running the flow) binds a Unix socket, starts
//! `current_exe()` with its own arguments and `BRAID_ISOLATED_TASK` naming the socket,
//! and sends one line: the [`TaskSpec`] (what the task sees: parameters, the records of
//! its inherited artifacts, its foreach items, a join's branches, where the store is).
//! The child (`serve_isolated_task`, called by the flow binary's entry point before it
//! reads its arguments) opens the same store to read artifact values, runs the step's
//! body exactly as the executor does in-process (`run_body`: timeout, lease watch, log
//! capture), puts the blobs of what it set, and sends back [`Message`]s, one JSON line
//! each: the task's record whenever the attempt writes it (progress, heartbeats,
//! warnings), log lines as they are made (written to the socket at once, so a crash
//! right after a line keeps it), and at the end how the attempt ended with the records
//! of the artifacts it set. The parent alone writes the task's records; it also logs
//! what the child prints on stdout and stderr. A child that dies before saying how it
//! ended is a failed attempt whose error names the signal (or exit status), with the
//! last lines it printed on stderr.
//!
//! The parent's lease watch runs on the records the child sends, so a child that stops
//! (SIGSTOP, a hang in native code) without heartbeats is declared lost and killed, as
//! an in-process attempt would be.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_core::{ArtifactName, Attempt, FlowName, Progress, RunId, StepName, TaskId};
use braid_store::{ArtifactRecord, ForeachFrame, LogLine, TaskError, TaskRecord, TaskWrite};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::task::{AttemptEnd, run_body};
use super::{RunProgress, RunShared, lock};
use crate::context::{Branch, BranchNs, Ctx, CtxInner, Frame, JoinInputs, LocalSet};
use crate::flow::{Flow, StepPolicy};
use crate::namespace::{ArtRef, Namespace};
use crate::persist::{Forwarded, Persister};
use crate::progress::ProgressState;

/// The environment variable that makes a process an isolated step's child: the path of
/// the socket to its parent.
pub(crate) const TASK_ENV: &str = "BRAID_ISOLATED_TASK";

/// How long a started child has to connect before the attempt fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of the child's stderr kept for the error of an attempt that crashed: the first
/// ones (what a panic or an abort says) and the last ones.
const STDERR_KEPT: usize = 4;

/// What the error of a crashed attempt quotes of the child's stderr.
#[derive(Debug, Default)]
struct StderrKept {
    head: Vec<String>,
    tail: std::collections::VecDeque<String>,
    lines: usize,
    /// The line Rust's allocator prints before it aborts on a failed allocation.
    allocation_failed: Option<String>,
}

impl StderrKept {
    fn push(&mut self, line: &str) {
        self.lines += 1;
        if line.starts_with("memory allocation of") && self.allocation_failed.is_none() {
            self.allocation_failed = Some(line.to_owned());
        }
        if self.head.len() < STDERR_KEPT {
            self.head.push(line.to_owned());
            return;
        }
        if self.tail.len() == STDERR_KEPT {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_owned());
    }

    fn text(&self) -> String {
        let mut parts = self.head.clone();
        let skipped = self.lines - self.head.len() - self.tail.len();
        if skipped > 0 {
            parts.push(format!("… ({skipped} lines)"));
        }
        parts.extend(self.tail.iter().cloned());
        parts.join(" | ")
    }
}

/// What the child needs to run one attempt.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct TaskSpec {
    pub(super) flow: FlowName,
    pub(super) step: StepName,
    pub(super) run: RunId,
    pub(super) task: TaskId,
    pub(super) attempt: Attempt,
    pub(super) iteration: u32,
    pub(super) params: BTreeMap<String, serde_json::Value>,
    pub(super) store: String,
    pub(super) blobs: Option<String>,
    pub(super) origin_run: Option<RunId>,
    /// The records of every artifact the task inherits.
    pub(super) parent_ns: Vec<ArtifactRecord>,
    /// Each foreach level's record and the task's item at that level.
    pub(super) frames: Vec<(ForeachFrame, Vec<u8>)>,
    inputs: Option<InputsSpec>,
    pub(super) record: TaskRecord,
    pub(super) last_progress: Option<Progress>,
    pub(super) max_num_splits: u64,
    pub(super) join_inputs_in_memory: usize,
    pub(super) memory_limit: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct InputsSpec {
    pub(super) inherited: Vec<ArtifactRecord>,
    pub(super) branches: Vec<BranchSpec>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BranchSpec {
    task: TaskId,
    step: StepName,
    index: u64,
    reused: bool,
    /// A branch held whole: every artifact it sees.
    held: Option<Vec<ArtifactRecord>>,
    /// A branch in the store: the names it set (read from the store when asked for).
    stored: Option<Vec<ArtifactName>>,
}

/// From the child to the parent, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Message {
    /// The task's record as the attempt wrote it.
    Task { record: Box<TaskRecord> },
    /// Log lines of the attempt.
    Logs { lines: Vec<LogLine> },
    /// How the attempt ended, with the records of what it set (their blobs are stored).
    Done { end: End, sets: Vec<ArtifactRecord> },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(super) enum End {
    Ok,
    Failed { error: TaskError },
    Cancelled,
    Lost,
}

fn records_of(ns: &Namespace) -> Vec<ArtifactRecord> {
    ns.names().iter().filter_map(|n| ns.get(n.as_str()).map(|a| a.record.clone())).collect()
}

/// The records of `ns` for a task that only reads them, without their previews: the
/// task reads values by key, and routing on a value (a switch) happens where the run is
/// driven, on its own records. A preview is up to 2 KB of the value's JSON (a foreach's
/// list is one), and every branch of a foreach carries its parent's records: without
/// them a trivial branch's queued payload is 1 KB instead of 3.3 KB, under PostgreSQL's
/// 2 KB threshold for compressing and moving a row's values out of line.
fn records_to_read(ns: &Namespace) -> Vec<ArtifactRecord> {
    let mut records = records_of(ns);
    for r in &mut records {
        r.preview = braid_core::codec::Preview { text: String::new(), truncated: true };
    }
    records
}

pub(super) fn namespace_of(records: Vec<ArtifactRecord>) -> Arc<Namespace> {
    let own = records.into_iter().map(|r| (r.name.clone(), Arc::new(ArtRef::new(r)))).collect();
    Namespace::extend(&Arc::new(Namespace::new()), own)
}

pub(super) fn failed(kind: &str, message: String) -> AttemptEnd {
    AttemptEnd::Failed(TaskError { kind: kind.to_owned(), message })
}

/// Removes the socket file when the attempt is over.
struct SocketPath(PathBuf);

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

static NEXT_SOCKET: AtomicU64 = AtomicU64::new(0);

// ---- the parent ------------------------------------------------------------------

/// Runs one attempt of `ctx`'s task in a child process and says how it ended.
pub(super) async fn run_isolated(ctx: &Ctx, policy: &StepPolicy, cancel: &CancellationToken) -> AttemptEnd {
    let shared = &ctx.inner.shared;
    let Some(store_location) = shared.store.reopen_location().map(str::to_owned) else {
        return failed(
            "isolation",
            format!(
                "step `{}` is isolated: its attempts run in another process, which opens this run's store, and a \
                 memory store lives only in this process; run with a store directory (--store DIR) or PostgreSQL",
                ctx.step()
            ),
        );
    };
    // What the task inherits (and a join's branches) must be readable by the child.
    shared.persister.flush().await;
    let spec = match spec_of(ctx, policy, store_location).await {
        Ok(s) => s,
        Err(e) => return failed("isolation", format!("preparing the isolated attempt failed: {e}")),
    };
    let line = match serde_json::to_string(&spec) {
        Ok(l) => l,
        Err(e) => return failed("isolation", format!("the isolated attempt's task could not be encoded: {e}")),
    };
    let path = std::env::temp_dir().join(format!(
        "braid-{}-{}.sock",
        std::process::id(),
        NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            return failed("isolation", format!("cannot listen on {} for the isolated attempt: {e}", path.display()));
        }
    };
    let _cleanup = SocketPath(path.clone());
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return failed("isolation", format!("cannot find this program to start the isolated attempt: {e}")),
    };
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.args(std::env::args_os().skip(1))
        .env(TASK_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if policy.memory_limit.is_some() {
        // Fewer malloc arenas: each reserves 64 MiB of address space per thread.
        cmd.env("MALLOC_ARENA_MAX", "2");
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed("isolation", format!("cannot start {} for the isolated attempt: {e}", exe.display())),
    };
    let stderr_tail = Arc::new(Mutex::new(StderrKept::default()));
    let mut pipes = Vec::new();
    if let Some(out) = child.stdout.take() {
        pipes.push(tokio::spawn(pipe_to_log(ctx.clone(), out, "STDOUT", None)));
    }
    if let Some(err) = child.stderr.take() {
        pipes.push(tokio::spawn(pipe_to_log(ctx.clone(), err, "STDERR", Some(stderr_tail.clone()))));
    }
    let end = converse(ctx, policy, cancel, &listener, &mut child, line, &stderr_tail).await;
    let _ = child.start_kill();
    let status = child.wait().await.ok();
    for p in pipes {
        // A grandchild may hold the pipes open: do not wait for it.
        let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
    }
    match end {
        Some(end) => end,
        None => crashed(ctx, policy, status, &stderr_tail),
    }
}

/// Talks with the child until it says how the attempt ended (`Some`), dies first
/// (`None`), or the attempt is cancelled, lost or past its timeout.
async fn converse(
    ctx: &Ctx,
    policy: &StepPolicy,
    cancel: &CancellationToken,
    listener: &tokio::net::UnixListener,
    child: &mut tokio::process::Child,
    spec: String,
    stderr_tail: &Mutex<StderrKept>,
) -> Option<AttemptEnd> {
    let accepted = tokio::select! {
        a = tokio::time::timeout(CONNECT_TIMEOUT, listener.accept()) => a,
        _ = child.wait() => return None,
        _ = cancel.cancelled() => return Some(AttemptEnd::Cancelled),
    };
    let mut stream = match accepted {
        Ok(Ok((s, _))) => s,
        Ok(Err(e)) => return Some(failed("isolation", format!("the isolated attempt's process did not connect: {e}"))),
        Err(_) => {
            let tail = lock(stderr_tail).text();
            return Some(failed(
                "isolation",
                format!(
                    "the isolated attempt's process did not connect within {}s; is it a flow binary (`FlowBinary`, \
                     `flow_main`) or does its main call `braid_runtime::serve_isolated_task` first?{}",
                    CONNECT_TIMEOUT.as_secs(),
                    if tail.is_empty() { String::new() } else { format!(" It printed: {tail}") }
                ),
            ));
        }
    };
    let sent = async {
        stream.write_all(spec.as_bytes()).await?;
        stream.write_all(b"\n").await?;
        stream.flush().await
    };
    if let Err(e) = sent.await {
        tracing::warn!(step = %ctx.step(), error = %e, "could not send the isolated attempt its task");
        return None;
    }
    let mut lines = tokio::io::BufReader::new(stream).lines();
    // The child applies the step's timeout itself; this is the backstop for one that
    // cannot (stopped, or stuck in native code).
    let backstop = async {
        match policy.timeout {
            Some(t) => tokio::time::sleep(t + Duration::from_secs(10)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(backstop);
    let watch = crate::progress::watch(ctx.clone());
    tokio::pin!(watch);
    let mut done = None;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if let Some(end) = receive(ctx, &line) {
                        done = Some(end);
                    }
                }
                // The child closed its end: it has ended (or is about to).
                Ok(None) | Err(_) => return done,
            },
            _ = cancel.cancelled() => return Some(AttemptEnd::Cancelled),
            _ = &mut watch, if done.is_none() => return Some(AttemptEnd::Lost),
            _ = &mut backstop, if done.is_none() => {
                let t = policy.timeout.unwrap_or_default();
                return Some(failed("timeout", format!("attempt exceeded its timeout of {t:?} (its process did not stop by itself and was killed)")));
            }
        }
    }
}

/// Applies one message of the child; returns how the attempt ended when it says so.
fn receive(ctx: &Ctx, line: &str) -> Option<AttemptEnd> {
    let inner = &ctx.inner;
    let shared = &inner.shared;
    let msg: Message = match serde_json::from_str(line) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(step = %inner.step, error = %e, "an isolated attempt sent a message that does not read");
            return None;
        }
    };
    match msg {
        Message::Logs { lines } => {
            shared.persister.logs(lines);
            None
        }
        Message::Task { record } => {
            let mut rec = lock(&inner.record);
            rec.progress = record.progress;
            rec.progress_at = record.progress_at;
            rec.eta = record.eta;
            rec.events = record.events;
            rec.lease_deadline = record.lease_deadline;
            if let (Some(m), Some(p)) = (&shared.metrics, &rec.progress) {
                m.progress(shared.flow.name().as_str(), inner.step.as_str(), &inner.task.to_string(), p.percent);
            }
            let write = TaskWrite { precondition: inner.precondition(), ..TaskWrite::new(rec.clone()) };
            drop(rec);
            shared.persister.write_later(Vec::new(), write);
            None
        }
        Message::Done { end, sets } => {
            let mut own = lock(&inner.sets);
            for r in sets {
                own.insert(r.name.clone(), LocalSet { art: Arc::new(ArtRef::new(r)), new_blobs: Vec::new() });
            }
            Some(match end {
                End::Ok => AttemptEnd::Ok,
                End::Failed { error } => AttemptEnd::Failed(error),
                End::Cancelled => AttemptEnd::Cancelled,
                End::Lost => AttemptEnd::Lost,
            })
        }
    }
}

async fn pipe_to_log(
    ctx: Ctx,
    pipe: impl tokio::io::AsyncRead + Unpin,
    level: &'static str,
    tail: Option<Arc<Mutex<StderrKept>>>,
) {
    let mut lines = tokio::io::BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(t) = &tail {
            lock(t).push(&line);
        }
        ctx.log_at(level, line);
    }
}

/// A signal's name and what it usually means.
fn signal_text(sig: i32) -> String {
    let (name, meaning) = match sig {
        1 => ("SIGHUP", "hang-up"),
        2 => ("SIGINT", "interrupted"),
        3 => ("SIGQUIT", "quit"),
        4 => ("SIGILL", "illegal instruction"),
        5 => ("SIGTRAP", "trace trap"),
        6 => ("SIGABRT", "aborted"),
        7 => ("SIGBUS", "bus error"),
        8 => ("SIGFPE", "arithmetic error"),
        9 => ("SIGKILL", "killed: by the out-of-memory killer or `kill -9`"),
        11 => ("SIGSEGV", "segmentation fault"),
        13 => ("SIGPIPE", "broken pipe"),
        14 => ("SIGALRM", "alarm"),
        15 => ("SIGTERM", "terminated"),
        24 => ("SIGXCPU", "CPU time limit exceeded"),
        25 => ("SIGXFSZ", "file size limit exceeded"),
        _ => return format!("signal {sig}"),
    };
    format!("signal {sig} ({name}, {meaning})")
}

/// The failure of an attempt whose process ended without saying how the attempt did.
fn crashed(
    ctx: &Ctx,
    policy: &StepPolicy,
    status: Option<std::process::ExitStatus>,
    stderr_tail: &Mutex<StderrKept>,
) -> AttemptEnd {
    use std::os::unix::process::ExitStatusExt;
    let kept = lock(stderr_tail);
    let how = match status {
        Some(s) => match (s.signal(), s.code()) {
            (Some(sig), _) => format!("was killed by {}", signal_text(sig)),
            (None, Some(code)) => format!("exited with status {code} before saying how the attempt ended"),
            (None, None) => "ended".to_owned(),
        },
        None => "ended, and its status could not be read".to_owned(),
    };
    let printed = if kept.lines == 0 { String::new() } else { format!("; it printed on stderr: {}", kept.text()) };
    if let (Some(limit), Some(line)) = (policy.memory_limit, &kept.allocation_failed) {
        return failed(
            "memory_limit",
            format!(
                "the attempt exceeded its memory limit of {limit} bytes ({:.0} MiB): {line}, and its process {how}",
                limit as f64 / (1024.0 * 1024.0)
            ),
        );
    }
    tracing::warn!(step = %ctx.step(), task = %ctx.task_id(), "isolated attempt crashed: its process {how}");
    failed("crash", format!("the step's process {how}{printed}"))
}

pub(super) async fn spec_of(ctx: &Ctx, policy: &StepPolicy, store: String) -> crate::error::Result<TaskSpec> {
    let inner = &ctx.inner;
    let shared = &inner.shared;
    let mut frames = Vec::with_capacity(inner.frames.len());
    for f in inner.frames.iter() {
        frames.push((f.record.clone(), f.item().cloned().unwrap_or_default()));
    }
    let inputs = inner.inputs.as_ref().map(|i| InputsSpec {
        inherited: records_of(&i.inherited),
        branches: i
            .branches
            .iter()
            .map(|b| BranchSpec {
                task: b.task,
                step: b.step.clone(),
                index: b.index,
                reused: b.reused,
                held: match &b.ns {
                    BranchNs::Held(ns) => Some(records_of(ns)),
                    BranchNs::Stored(_) => None,
                },
                stored: match &b.ns {
                    BranchNs::Stored(names) => Some(names.to_vec()),
                    BranchNs::Held(_) => None,
                },
            })
            .collect(),
    });
    Ok(TaskSpec {
        flow: shared.flow.name().clone(),
        step: inner.step.clone(),
        run: shared.run_id,
        task: inner.task,
        attempt: inner.attempt,
        iteration: inner.iteration,
        params: shared.params.clone(),
        store,
        blobs: shared.store.blobs_location().map(str::to_owned),
        origin_run: ctx.origin_run(),
        parent_ns: records_to_read(&inner.parent_ns),
        frames,
        inputs,
        record: lock(&inner.record).clone(),
        last_progress: inner.last_progress.clone(),
        max_num_splits: shared.max_num_splits,
        join_inputs_in_memory: shared.join_inputs_in_memory,
        memory_limit: policy.memory_limit,
    })
}

// ---- the child -------------------------------------------------------------------

/// Whether this process was started to run one attempt of an isolated step (see
/// [`serve_isolated_task`]).
pub fn is_isolated_task() -> bool {
    std::env::var_os(TASK_ENV).is_some()
}

/// In a process started for an isolated step's attempt ([`is_isolated_task`]): runs
/// that attempt with the step of `flows` it names, reports to the process running the
/// flow, and ends the process (so that, in a test binary, no other test goes on in it).
/// A flow binary's entry point
/// (`braid_cli::FlowBinary`, `flow_main`) calls it before reading its arguments; a
/// program of your own that runs flows with isolated steps does the same first thing in
/// `main`:
///
/// ```no_run
/// use braid_runtime::Flow;
///
/// fn my_flow() -> braid_runtime::Result<Flow> {
///     Flow::builder("native")
///         .step_blocking("start", |_ctx| Ok(())) // calls into a C library
///         .isolated()
///         .next("end")
///         .step("end", |_ctx| async move { Ok(()) })
///         .end()
///         .build()
/// }
///
/// fn main() -> std::process::ExitCode {
///     if braid_runtime::is_isolated_task() {
///         braid_runtime::serve_isolated_task(my_flow().into_iter().collect());
///     }
///     // ... run the flow as usual
///     std::process::ExitCode::SUCCESS
/// }
/// ```
pub fn serve_isolated_task(flows: Vec<Flow>) -> ! {
    // Only one caller serves: a second (another test of the same binary) waits for the
    // exit below.
    static SERVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _only = SERVING.lock();
    match child_main(flows) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: isolated attempt: {e}");
            std::process::exit(70)
        }
    }
}

/// Writes each message as one line to the parent, at once. A write that fails means the
/// parent is gone: nothing this process does can be kept, so it ends.
#[derive(Clone)]
struct ToParent(Arc<Mutex<std::os::unix::net::UnixStream>>);

impl ToParent {
    fn send(&self, msg: &Message) {
        let Ok(mut line) = serde_json::to_vec(msg) else { return };
        line.push(b'\n');
        let mut s = lock(&self.0);
        if s.write_all(&line).and_then(|()| s.flush()).is_err() {
            std::process::exit(71);
        }
    }
}

fn child_main(flows: Vec<Flow>) -> std::result::Result<(), String> {
    let path = std::env::var_os(TASK_ENV).ok_or_else(|| format!("{TASK_ENV} is not set"))?;
    let stream = std::os::unix::net::UnixStream::connect(&path)
        .map_err(|e| format!("cannot connect to {}: {e}", PathBuf::from(&path).display()))?;
    let mut first = String::new();
    BufReader::new(stream.try_clone().map_err(|e| e.to_string())?)
        .read_line(&mut first)
        .map_err(|e| format!("cannot read the task: {e}"))?;
    let spec: TaskSpec = serde_json::from_str(&first).map_err(|e| format!("the task does not read: {e}"))?;
    if let Some(limit) = spec.memory_limit {
        let limit = rustix::process::Rlimit { current: Some(limit), maximum: Some(limit) };
        rustix::process::setrlimit(rustix::process::Resource::As, limit)
            .map_err(|e| format!("cannot set the memory limit: {e}"))?;
    }
    let flow = flows
        .into_iter()
        .find(|f| *f.name() == spec.flow)
        .ok_or_else(|| format!("this program does not host flow `{}`", spec.flow))?;
    let to_parent = ToParent(Arc::new(Mutex::new(stream)));
    {
        use tracing_subscriber::layer::SubscriberExt;
        let _ =
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(crate::logs::task_log_layer()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let end = runtime.block_on(child_attempt(Arc::new(flow), spec, to_parent.clone()))?;
    to_parent.send(&end);
    Ok(())
}

async fn child_attempt(flow: Arc<Flow>, spec: TaskSpec, to_parent: ToParent) -> std::result::Result<Message, String> {
    let store = braid_store::Store::connect(&spec.store, spec.blobs.as_deref())
        .await
        .map_err(|e| format!("cannot open the run's store: {e}"))?;
    let forward = to_parent.clone();
    let persister = Persister::forwarding(move |f| match f {
        Forwarded::Task(record) => forward.send(&Message::Task { record }),
        Forwarded::Logs(lines) => forward.send(&Message::Logs { lines }),
    });
    let cancel = CancellationToken::new();
    let ctx = attempt_ctx(flow.clone(), spec, store.clone(), persister, None, None, &cancel)?;
    let (end, sets) = run_attempt(&flow, &ctx, &store, &cancel, false).await;
    Ok(Message::Done { end, sets })
}

/// The context of one attempt of `spec`'s task, run in this process for another that
/// runs the flow: an isolated step's child, or a worker (with its claim's token).
pub(super) fn attempt_ctx(
    flow: Arc<Flow>,
    spec: TaskSpec,
    store: braid_store::Store,
    persister: Persister,
    claim: Option<u64>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    cancel: &CancellationToken,
) -> std::result::Result<Ctx, String> {
    let step_impl =
        flow.steps.get(&spec.step).ok_or_else(|| format!("flow `{}` has no step `{}`", spec.flow, spec.step))?;
    let policy = step_impl.policy.clone();
    let shared = Arc::new(RunShared {
        flow: flow.clone(),
        store,
        run_id: spec.run,
        params: spec.params,
        persister,
        cancel: cancel.clone(),
        progress: Arc::new(RunProgress::default()),
        origin: spec.origin_run.map(|run| super::Origin {
            run,
            from: None,
            tasks: Default::default(),
            unfinished: Default::default(),
        }),
        max_num_splits: spec.max_num_splits,
        join_inputs_in_memory: spec.join_inputs_in_memory,
        workers: Arc::new(tokio::sync::Semaphore::new(1)),
        metrics,
        lease: Mutex::new(None),
        holder: braid_store::process_holder("isolated"),
        run_lease: crate::RUN_LEASE,
        last_id: AtomicU64::new(0),
        remote: None,
    });
    let frames = spec
        .frames
        .into_iter()
        .map(|(record, item)| Frame { first: record.index, record, elements: Arc::new(vec![item]) })
        .collect();
    let inputs = spec.inputs.map(|i| {
        let branches = i
            .branches
            .into_iter()
            .map(|b| Branch {
                task: b.task,
                step: b.step,
                index: b.index,
                reused: b.reused,
                ns: match (b.held, b.stored) {
                    (Some(held), _) => BranchNs::Held(namespace_of(held)),
                    (None, stored) => BranchNs::Stored(stored.unwrap_or_default().into()),
                },
            })
            .collect();
        Arc::new(JoinInputs::new(branches, namespace_of(i.inherited)))
    });
    Ok(Ctx {
        inner: Arc::new(CtxInner {
            shared,
            step: spec.step,
            task: spec.task,
            attempt: spec.attempt,
            iteration: spec.iteration,
            parent_ns: namespace_of(spec.parent_ns),
            sets: Mutex::new(BTreeMap::new()),
            frames: Arc::new(frames),
            inputs,
            record: Arc::new(Mutex::new(spec.record)),
            progress: Mutex::new(ProgressState::new()),
            last_progress: spec.last_progress,
            policy,
            claim,
        }),
    })
}

/// Runs the body of `ctx`'s attempt (in a child process when `isolate` and the step is
/// isolated) and, when it succeeded, stores the blobs of what it set; says how it ended,
/// with the records of what it set.
pub(super) async fn run_attempt(
    flow: &Flow,
    ctx: &Ctx,
    store: &braid_store::Store,
    cancel: &CancellationToken,
    isolate: bool,
) -> (End, Vec<ArtifactRecord>) {
    let Some(step_impl) = flow.steps.get(&ctx.inner.step) else {
        let error = TaskError { kind: "error".into(), message: format!("step `{}` has no function", ctx.inner.step) };
        return (End::Failed { error }, Vec::new());
    };
    let end = if isolate && step_impl.policy.is_isolated() {
        run_isolated(ctx, &step_impl.policy, cancel).await
    } else {
        run_body(&step_impl.body, ctx.clone(), step_impl.policy.timeout, cancel).await
    };
    let end = match end {
        AttemptEnd::Ok => End::Ok,
        AttemptEnd::Failed(error) => End::Failed { error },
        AttemptEnd::Cancelled => End::Cancelled,
        AttemptEnd::Lost => End::Lost,
    };
    let sets: BTreeMap<ArtifactName, LocalSet> = std::mem::take(&mut *lock(&ctx.inner.sets));
    if !matches!(end, End::Ok) {
        return (end, Vec::new());
    }
    let mut blobs = Vec::new();
    let mut records = Vec::with_capacity(sets.len());
    for (_, set) in sets {
        blobs.extend(set.new_blobs);
        records.push(set.art.record.clone());
    }
    if !blobs.is_empty() {
        // (Transient S3 failures are retried by the blob store; what gets here is not.)
        let put = match injected_put_failure() {
            Some(why) => Err(why),
            None => store.blobs.put_many(blobs).await.map(drop).map_err(|e| e.to_string()),
        };
        if let Err(e) = put {
            let error =
                TaskError { kind: "error".into(), message: format!("storing the artifacts the step set failed: {e}") };
            return (End::Failed { error }, Vec::new());
        }
    }
    (End::Ok, records)
}

/// A test's way to make the blob put of an attempt run out of process fail
/// (`FAILPOINTS=attempt_blob_put=return`, `failpoints` feature).
fn injected_put_failure() -> Option<String> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("attempt_blob_put", |_| Some("injected failure (FAILPOINTS=attempt_blob_put)".to_owned()));
    None
}
