//! The authoring API: a flow is the `dag` graph plus one Rust function per step and the
//! step's policies.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use braid_core::{ArtifactName, FlowName, ParamName, StepName};
use braid_dag::{FlowGraph, FlowSpec, Next, Param, StepKind, Transition};

use crate::context::Ctx;
use crate::error::{Error, Result, StepResult};

pub(crate) type StepFuture = Pin<Box<dyn Future<Output = StepResult> + Send + 'static>>;

/// The code of a step.
#[derive(Clone)]
pub(crate) enum StepBody {
    Async(Arc<dyn Fn(Ctx) -> StepFuture + Send + Sync>),
    /// Runs on tokio's blocking pool, off the async workers.
    Blocking(Arc<dyn Fn(Ctx) -> StepResult + Send + Sync>),
}

/// How long to wait between attempts. Kinds may be added: a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed(Duration),
    /// `base`, then `2 × base`, `4 × base`, ... capped at `max`.
    Exponential {
        /// The delay before the first retry.
        base: Duration,
        /// The longest delay.
        max: Duration,
    },
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first retry).
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        match *self {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { base, max } => {
                let factor = 2u32.saturating_pow(retry.saturating_sub(1));
                base.saturating_mul(factor).min(max)
            }
        }
    }
}

/// Per-step policies: retries, timeout, catch, loop bound, lease and progress coalescing.
/// Set through [`StepBuilder`]; read with [`Flow::policy`].
#[derive(Debug, Clone)]
pub struct StepPolicy {
    /// Retries after the first attempt fails.
    pub retries: u32,
    /// How long to wait before each retry.
    pub backoff: Backoff,
    /// An attempt running longer is cancelled and fails (and is retried if it may).
    pub timeout: Option<Duration>,
    /// When set, a task that fails its last attempt records the failure in this
    /// artifact (a `TaskError`) and the flow goes on.
    pub catch: Option<ArtifactName>,
    /// For a switch that loops: how many times it may loop back.
    pub max_iterations: u32,
    /// How long an attempt's lease lasts without a heartbeat or progress report.
    pub lease: Duration,
    /// Progress is written at most once per this interval unless it moved enough.
    pub progress_interval: Duration,
    /// ... where "enough" is this many percentage points, or a new message.
    pub progress_min_step: f32,
    /// A task whose percent does not move for this long gets a stall warning.
    pub stall_after: Option<Duration>,
    /// Whether each attempt runs in a child process of the same binary, so that a crash
    /// (a segfault, an abort, the out-of-memory killer) fails only that attempt. `None`
    /// while declaring means the flow's default ([`FlowBuilder::isolated_steps`]); a
    /// built flow has it decided for every step.
    pub isolated: Option<bool>,
    /// For an isolated step: the address space its process may use, in bytes (like
    /// `ulimit -v`); going past it fails the attempt, saying so.
    pub memory_limit: Option<u64>,
    /// For a run on workers: the queue its tasks wait in (`worker --queue Q` claims
    /// from one); `None` is the run's queue (`default` unless `run --queue` says).
    pub queue: Option<String>,
    /// For a run on workers: among the tasks waiting in a queue, higher first.
    pub priority: i32,
}

impl Default for StepPolicy {
    fn default() -> Self {
        StepPolicy {
            retries: 0,
            backoff: Backoff::Fixed(Duration::ZERO),
            timeout: None,
            catch: None,
            max_iterations: 1000,
            lease: Duration::from_secs(60),
            progress_interval: Duration::from_secs(1),
            progress_min_step: 1.0,
            stall_after: None,
            isolated: None,
            memory_limit: None,
            queue: None,
            priority: 0,
        }
    }
}

impl StepPolicy {
    /// Whether the step's attempts run in their own process.
    pub fn is_isolated(&self) -> bool {
        self.isolated == Some(true)
    }
}

/// A computed default for a parameter, evaluated once per run.
pub(crate) type ComputedDefault = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

pub(crate) struct StepImpl {
    pub(crate) body: StepBody,
    pub(crate) policy: StepPolicy,
}

/// A flow ready to run: its validated graph, its step functions and policies.
pub struct Flow {
    pub(crate) graph: Arc<FlowGraph>,
    pub(crate) steps: HashMap<StepName, StepImpl>,
    pub(crate) computed: BTreeMap<ParamName, ComputedDefault>,
    /// Artifacts some foreach fans out over: setting one also stores its elements.
    pub(crate) foreach_names: HashSet<ArtifactName>,
    pub(crate) max_num_splits: u64,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow").field("name", self.graph.name()).finish_non_exhaustive()
    }
}

/// The default bound on a foreach's width.
pub(crate) const DEFAULT_MAX_NUM_SPLITS: u64 = 1_000_000;

impl Flow {
    /// Starts declaring a flow.
    pub fn builder(name: &str) -> FlowBuilder {
        FlowBuilder {
            graph: braid_dag::FlowBuilder::new(name),
            name: name.to_owned(),
            bodies: Vec::new(),
            computed: Vec::new(),
            problems: Vec::new(),
            max_num_splits: DEFAULT_MAX_NUM_SPLITS,
            isolated_steps: false,
        }
    }

    /// The flow's name.
    pub fn name(&self) -> &FlowName {
        self.graph.name()
    }

    /// The validated graph: steps, transitions, joins, loops.
    pub fn graph(&self) -> &FlowGraph {
        &self.graph
    }

    /// The graph's serializable form, as the store keeps it.
    pub fn spec(&self) -> &FlowSpec {
        self.graph.spec()
    }

    /// The policies of `step` (retries, timeout, ...), if the flow has that step.
    pub fn policy(&self, step: &StepName) -> Option<&StepPolicy> {
        self.steps.get(step).map(|s| &s.policy)
    }
}

/// Declares a flow step by step; `build` validates the whole graph and reports every
/// problem at once.
pub struct FlowBuilder {
    graph: braid_dag::FlowBuilder,
    name: String,
    bodies: Vec<(String, StepImpl)>,
    computed: Vec<(String, ComputedDefault)>,
    problems: Vec<String>,
    max_num_splits: u64,
    isolated_steps: bool,
}

impl std::fmt::Debug for FlowBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowBuilder").field("name", &self.name).finish_non_exhaustive()
    }
}

impl FlowBuilder {
    /// Declares a parameter: `Param::new("n", ParamType::UInt).default(100).help("...")`.
    pub fn param(mut self, param: impl Into<Param>) -> Self {
        self.graph = self.graph.param(param);
        self
    }

    /// Declares a parameter whose default is computed once per run, when no value is
    /// given on the command line or in the environment.
    pub fn param_computed<V, F>(mut self, name: &str, ty: braid_dag::ParamType, help: &str, f: F) -> Self
    where
        V: serde::Serialize,
        F: Fn() -> V + Send + Sync + 'static,
    {
        self.graph = self.graph.param(Param::new(name, ty).help(help));
        self.computed
            .push((name.to_owned(), Arc::new(move || serde_json::to_value(f()).unwrap_or(serde_json::Value::Null))));
        self
    }

    /// Runs every step isolated ([`StepBuilder::isolated`]) unless it says
    /// [`StepBuilder::in_process`]: each attempt in its own process, as Metaflow runs
    /// every task.
    pub fn isolated_steps(mut self) -> Self {
        self.isolated_steps = true;
        self
    }

    /// Bounds the width of any foreach (default 1,000,000).
    pub fn max_num_splits(mut self, max: u64) -> Self {
        self.max_num_splits = max;
        self
    }

    /// Declares a step whose body is an async function.
    pub fn step<F, Fut>(self, name: &str, f: F) -> StepBuilder
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        let body = StepBody::Async(Arc::new(move |ctx| Box::pin(f(ctx)) as StepFuture));
        StepBuilder::new(self, name, StepKind::Normal, body)
    }

    /// Declares a step whose body blocks (CPU work, blocking I/O); it runs on the
    /// blocking pool, off the async workers.
    pub fn step_blocking<F>(self, name: &str, f: F) -> StepBuilder
    where
        F: Fn(Ctx) -> StepResult + Send + Sync + 'static,
    {
        StepBuilder::new(self, name, StepKind::Normal, StepBody::Blocking(Arc::new(f)))
    }

    /// Declares a join: it closes the innermost open split or foreach and sees each
    /// branch through `ctx.inputs()`.
    pub fn join<F, Fut>(self, name: &str, f: F) -> StepBuilder
    where
        F: Fn(Ctx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        let body = StepBody::Async(Arc::new(move |ctx| Box::pin(f(ctx)) as StepFuture));
        StepBuilder::new(self, name, StepKind::Join, body)
    }

    /// Validates the graph and freezes the flow.
    pub fn build(self) -> Result<Flow> {
        let invalid = |problems: Vec<String>| Error::InvalidFlow {
            flow: self.name.clone(),
            problems: problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"),
        };
        let mut problems = self.problems.clone();
        let graph = match self.graph.build() {
            Ok(g) => Some(g),
            Err(errs) => {
                problems.extend(errs.iter().map(|e| e.to_string()));
                None
            }
        };
        let Some(graph) = graph.filter(|_| problems.is_empty()) else {
            return Err(invalid(problems));
        };
        let mut steps = HashMap::new();
        for (name, mut imp) in self.bodies {
            imp.policy.isolated = Some(imp.policy.isolated.unwrap_or(self.isolated_steps));
            if let Ok(n) = StepName::new(&name) {
                steps.entry(n).or_insert(imp);
            }
        }
        let mut foreach_names = HashSet::new();
        for s in graph.steps() {
            if let Transition::Foreach { over, .. } = &s.next {
                foreach_names.insert(over.clone());
            }
        }
        let computed = self.computed.into_iter().filter_map(|(n, f)| ParamName::new(&n).ok().map(|n| (n, f))).collect();
        Ok(Flow { graph: Arc::new(graph), steps, computed, foreach_names, max_num_splits: self.max_num_splits })
    }
}

/// One step being declared: set its policies, then its transition.
pub struct StepBuilder {
    flow: FlowBuilder,
    name: String,
    kind: StepKind,
    body: StepBody,
    policy: StepPolicy,
    doc: Option<String>,
}

impl std::fmt::Debug for StepBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepBuilder").field("name", &self.name).finish_non_exhaustive()
    }
}

impl StepBuilder {
    fn new(flow: FlowBuilder, name: &str, kind: StepKind, body: StepBody) -> Self {
        StepBuilder { flow, name: name.to_owned(), kind, body, policy: StepPolicy::default(), doc: None }
    }

    /// Retries after a failed attempt (default 0).
    pub fn retries(mut self, n: u32) -> Self {
        self.policy.retries = n;
        self
    }

    /// How long to wait before each retry (default: none).
    pub fn backoff(mut self, b: Backoff) -> Self {
        self.policy.backoff = b;
        self
    }

    /// Cancels and fails an attempt that runs longer than `d`.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.policy.timeout = Some(d);
        self
    }

    /// On final failure, record the error in artifact `name` and go on.
    pub fn catch(mut self, name: &str) -> Self {
        match ArtifactName::new(name) {
            Ok(n) => self.policy.catch = Some(n),
            Err(e) => self.flow.problems.push(format!("step `{}`: catch: {e}", self.name)),
        }
        self
    }

    /// How many times a looping switch may loop back (default 1,000).
    pub fn max_iterations(mut self, n: u32) -> Self {
        self.policy.max_iterations = n;
        self
    }

    /// Lease duration of each attempt (default 60 s).
    pub fn lease(mut self, d: Duration) -> Self {
        self.policy.lease = d;
        self
    }

    /// Progress coalescing: at most one write per `interval` unless the percent moved
    /// by `min_step` points or the message changed.
    pub fn progress_coalescing(mut self, interval: Duration, min_step: f32) -> Self {
        self.policy.progress_interval = interval;
        self.policy.progress_min_step = min_step;
        self
    }

    /// Runs each attempt of this step in a child process of the same binary (the flow
    /// binary's entry point, or [`crate::serve_isolated_task`], serves it): a crash of the
    /// step's code (a segfault in a native library, `abort()`, the out-of-memory killer)
    /// fails only that attempt, with the signal named in the task's error and its log
    /// lines up to the crash kept; retries and `catch` apply as to any failure. Needs a
    /// store another process can open (a directory or PostgreSQL, not `memory:`).
    pub fn isolated(mut self) -> Self {
        self.policy.isolated = Some(true);
        self
    }

    /// Runs this step in the flow's process even when the flow isolates its steps.
    pub fn in_process(mut self) -> Self {
        self.policy.isolated = Some(false);
        self
    }

    /// Isolates this step ([`StepBuilder::isolated`]) and limits its process's address
    /// space to `bytes` (like `ulimit -v`; thread stacks and the binary count too, so
    /// leave room): an attempt that goes past it fails with an error saying it exceeded
    /// its memory limit.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.policy.isolated = Some(true);
        self.policy.memory_limit = Some(bytes);
        self
    }

    /// On workers, this step's tasks wait in queue `name` (e.g. `gpu`), claimed only by
    /// workers started with `--queue name`.
    pub fn queue(mut self, name: &str) -> Self {
        self.policy.queue = Some(name.to_owned());
        self
    }

    /// On workers, this step's waiting tasks are claimed before those of lower priority
    /// in the same queue (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.policy.priority = priority;
        self
    }

    /// Warn when a task's percent has not moved for `d`.
    pub fn stall_after(mut self, d: Duration) -> Self {
        self.policy.stall_after = Some(d);
        self
    }

    /// A description shown by `show` and the CLI.
    pub fn doc(mut self, text: &str) -> Self {
        self.doc = Some(text.to_owned());
        self
    }

    fn finish(self, next: Next) -> FlowBuilder {
        let mut flow = self.flow;
        flow.graph = match self.kind {
            StepKind::Join => flow.graph.join(&self.name, next),
            StepKind::Normal => flow.graph.step(&self.name, next),
        };
        if let Some(doc) = &self.doc {
            flow.graph = flow.graph.doc(&self.name, doc);
        }
        flow.bodies.push((self.name, StepImpl { body: self.body, policy: self.policy }));
        flow
    }

    /// Goes on to step `to`.
    pub fn next(self, to: &str) -> FlowBuilder {
        self.finish(Next::to(to))
    }

    /// Runs every step of `to` in parallel; a join closes them.
    pub fn split(self, to: &[&str]) -> FlowBuilder {
        self.finish(Next::split(to))
    }

    /// Runs one task of `to` per element of the sequence artifact `over`; a join
    /// closes them.
    pub fn foreach(self, over: &str, to: &str) -> FlowBuilder {
        self.finish(Next::foreach(over, to))
    }

    /// Goes to the step of the case named by the value this step sets in artifact
    /// `on` (a string, or a value whose JSON form is a string, number or bool). A case
    /// that targets this step or an earlier one loops.
    pub fn switch(self, on: &str, cases: &[(&str, &str)]) -> FlowBuilder {
        self.finish(Next::switch(on, cases.iter().copied()))
    }

    /// A switch whose cases may fan out: each case lists one step, or several that run
    /// as the branches of a static split and meet at a join, as in
    /// `.switch_cases("verdict", &[("hit", &["fast"]), ("miss", &["clip", "face"])])`
    /// with `clip` and `face` going to a join. The step after both paths runs once,
    /// from whichever path ran.
    pub fn switch_cases(self, on: &str, cases: &[(&str, &[&str])]) -> FlowBuilder {
        self.finish(Next::switch_cases(on, cases.iter().map(|(k, to)| (*k, to.iter().copied()))))
    }

    /// Ends the flow (only the `end` step).
    pub fn end(self) -> FlowBuilder {
        self.finish(Next::End)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::Exponential { base: Duration::from_millis(10), max: Duration::from_millis(50) };
        assert_eq!(b.delay(1), Duration::from_millis(10));
        assert_eq!(b.delay(2), Duration::from_millis(20));
        assert_eq!(b.delay(3), Duration::from_millis(40));
        assert_eq!(b.delay(4), Duration::from_millis(50));
        assert_eq!(Backoff::Fixed(Duration::from_millis(3)).delay(9), Duration::from_millis(3));
    }
}
