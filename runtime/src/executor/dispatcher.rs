//! The run's routing loop: the [`Dispatcher`] owns the ready queue and the join
//! barriers, starts ready tasks and routes each finished task's outcome.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use braid_core::{Attempt, StepName, TaskId};
use braid_dag::StepKind;
use braid_store::ForeachFrame;
use tokio::task::JoinSet;

use super::messages::{Fanout, NextMove, Outcome, ReadyTask};
use super::task::run_task;
use super::{RunShared, TaskIdentity};
use crate::context::{Branch, BranchNs, Frame, JoinInputs};
use crate::error::{Error, Result};
use crate::namespace::Namespace;

/// Where a new task sits in the flow and what it starts from.
struct NewTask {
    step: StepName,
    parent: Option<TaskId>,
    parent_ns: Arc<Namespace>,
    fanouts: Arc<Vec<Fanout>>,
    frames: Arc<Vec<Frame>>,
    iteration: u32,
    inputs: Option<Arc<JoinInputs>>,
    upstream_reused: bool,
}

/// A foreach's children not created yet. They are made as room opens in flight, so a
/// million-branch foreach holds one cursor here rather than a million queued tasks;
/// their ids were reserved when the foreach routed (`first_id + index`), so ids still
/// follow the order in which tasks were decided.
struct PendingForeach {
    to: StepName,
    parent: TaskId,
    parent_ns: Arc<Namespace>,
    fanouts: Arc<Vec<Fanout>>,
    frames: Arc<Vec<Frame>>,
    barrier: u64,
    over: ForeachFrame,
    elements: Arc<Vec<Vec<u8>>>,
    next: usize,
    first_id: u64,
    iteration: u32,
    reused: bool,
}

struct Barrier {
    join: StepName,
    arrived: Vec<Option<Branch>>,
    /// The task that fanned out, and the namespace its branches start from.
    fanning: TaskId,
    inherited: Arc<Namespace>,
    /// Whether arriving branches are held in memory whole (see `BranchNs`).
    hold: bool,
    /// The names the last stored branch set: the next one that set the same shares them
    /// (the branches of a foreach nearly always do), so a branch costs no allocation.
    last_names: Option<Arc<[braid_core::ArtifactName]>>,
    count: usize,
    outer_fanouts: Arc<Vec<Fanout>>,
    outer_frames: Arc<Vec<Frame>>,
    iteration: u32,
    reused: bool,
}

/// The run's routing loop: owns the ready queue and the join barriers, starts ready
/// tasks (at most `max_workers` step bodies at once), and routes each finished task's
/// outcome to the tasks that come next. (Launch plans have their own `plan::Scheduler`.)
pub(super) struct Dispatcher {
    shared: Arc<RunShared>,
    ready: VecDeque<ReadyTask>,
    /// Foreach fan-outs whose children are still to be created, oldest first.
    pending: VecDeque<PendingForeach>,
    barriers: HashMap<u64, Barrier>,
    next_barrier: u64,
    running: JoinSet<(ReadyTask, Outcome, Chained)>,
    max_workers: usize,
    /// The first error: it ends the run.
    pub(super) failure: Option<Error>,
    /// Tasks executed (attempted at least once).
    pub(super) executed: u64,
    /// Tasks reused from the origin run.
    pub(super) reused: u64,
    /// Whether a task reached `end`.
    pub(super) ended: bool,
}

impl Dispatcher {
    /// A dispatcher for the run of `shared`, nothing started yet.
    pub(super) fn new(shared: Arc<RunShared>, max_workers: usize) -> Self {
        Dispatcher {
            shared,
            ready: VecDeque::new(),
            pending: VecDeque::new(),
            barriers: HashMap::new(),
            next_barrier: 0,
            running: JoinSet::new(),
            max_workers,
            failure: None,
            executed: 0,
            reused: 0,
            ended: false,
        }
    }

    pub(super) async fn run(&mut self) {
        let start = StepName::start();
        self.make_ready(NewTask {
            step: start,
            parent: None,
            parent_ns: Arc::new(Namespace::new()),
            fanouts: Arc::new(Vec::new()),
            frames: Arc::new(Vec::new()),
            iteration: 0,
            inputs: None,
            upstream_reused: true,
        });
        loop {
            // Many more tasks than workers are kept in flight (each waits for a worker
            // permit before its code runs), so finishing tasks are handed back in batches
            // instead of one thread wake-up per task.
            let in_flight = (self.max_workers * 64).max(512);
            while self.failure.is_none() && self.running.len() < in_flight {
                if self.shared.cancel.is_cancelled() {
                    self.fail(Error::Cancelled);
                    break;
                }
                let Some(task) = self.ready.pop_front().or_else(|| self.next_pending()) else {
                    break;
                };
                let shared = self.shared.clone();
                self.shared.progress.update(&task.step, |c| c.running += 1);
                self.running.spawn(async move { run_chain(&shared, task).await });
            }
            if self.running.is_empty() {
                break;
            }
            let joined = tokio::select! {
                j = self.running.join_next() => j,
                _ = self.shared.cancel.cancelled(), if self.failure.is_none() => {
                    self.fail(Error::Cancelled);
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let mut batch = vec![joined];
            while let Some(more) = self.running.try_join_next() {
                batch.push(more);
            }
            if let Some(e) = self.shared.persister.failure() {
                self.fail(Error::Records(e));
            }
            for joined in batch {
                match joined {
                    Ok((task, outcome, chained)) => {
                        self.executed += chained.executed;
                        self.reused += chained.reused;
                        self.handle(task, outcome);
                    }
                    Err(e) => self.fail(Error::TaskFailed {
                        step: StepName::start(),
                        task: TaskId(0),
                        attempt: Attempt::FIRST,
                        cause: format!("executor task crashed: {e}"),
                    }),
                }
            }
        }
    }

    pub(super) fn fail(&mut self, e: Error) {
        if self.failure.is_none() {
            self.failure = Some(e);
        }
        // Tasks still running see the token and stop; nothing new starts.
        self.shared.cancel.cancel();
        self.ready.clear();
        self.pending.clear();
    }

    /// Creates the next child of the oldest foreach still fanning out.
    fn next_pending(&mut self) -> Option<ReadyTask> {
        let p = self.pending.front_mut()?;
        let i = p.next;
        p.next += 1;
        let mut fanouts = Vec::with_capacity(p.fanouts.len() + 1);
        fanouts.extend_from_slice(&p.fanouts);
        fanouts.push(Fanout { barrier: p.barrier, branch: i });
        let mut frames = Vec::with_capacity(p.frames.len() + 1);
        frames.extend_from_slice(&p.frames);
        frames.push(Frame {
            record: ForeachFrame { index: i as u64, ..p.over.clone() },
            elements: p.elements.clone(),
            first: 0,
        });
        let id = TaskId(p.first_id + i as u64);
        let (to, parent, parent_ns, iteration, reused) =
            (p.to.clone(), p.parent, p.parent_ns.clone(), p.iteration, p.reused);
        if p.next >= p.elements.len() {
            self.pending.pop_front();
        }
        Some(ready_task(
            &self.shared,
            id,
            NewTask {
                step: to,
                parent: Some(parent),
                parent_ns,
                fanouts: Arc::new(fanouts),
                frames: Arc::new(frames),
                iteration,
                inputs: None,
                upstream_reused: reused,
            },
        ))
    }

    /// Creates the next task (the next id) and queues it.
    fn make_ready(&mut self, new: NewTask) {
        let id = TaskId(self.shared.reserve_ids(1));
        let task = ready_task(&self.shared, id, new);
        self.ready.push_back(task);
    }

    fn handle(&mut self, task: ReadyTask, outcome: Outcome) {
        let step = task.step.clone();
        match outcome {
            Outcome::Failed(e) => {
                self.executed += 1;
                self.shared.progress.update(&step, |c| {
                    c.running -= 1;
                    c.failed += 1;
                });
                self.fail(e);
            }
            Outcome::Cancelled => {
                self.shared.progress.update(&step, |c| c.running -= 1);
                self.fail(Error::Cancelled);
            }
            Outcome::Succeeded { ns, next, reused } => {
                if reused {
                    self.reused += 1;
                } else {
                    self.executed += 1;
                }
                self.shared.progress.update(&step, |c| {
                    c.running -= 1;
                    c.done += 1;
                });
                if self.failure.is_some() {
                    return;
                }
                if let Err(e) = self.route(task, ns, next, reused) {
                    self.fail(e);
                }
            }
        }
    }

    fn route(&mut self, task: ReadyTask, ns: Arc<Namespace>, next: NextMove, reused: bool) -> Result<()> {
        let graph = self.shared.flow.graph.clone();
        match next {
            NextMove::End => {
                self.ended = true;
                Ok(())
            }
            NextMove::Go { to, loop_back } => {
                let iteration = if loop_back {
                    let max = self.shared.flow.policy(&task.step).map_or(1000, |p| p.max_iterations);
                    if task.iteration + 1 > max {
                        return Err(Error::LoopLimit { step: task.step.clone(), max });
                    }
                    task.iteration + 1
                } else {
                    task.iteration
                };
                let is_join = graph.step(to.as_str()).is_some_and(|s| s.kind == StepKind::Join);
                if is_join {
                    self.arrive(&task, ns, reused);
                } else {
                    self.make_ready(NewTask {
                        step: to,
                        parent: Some(task.id),
                        parent_ns: ns,
                        fanouts: task.fanouts.clone(),
                        frames: task.frames.clone(),
                        iteration,
                        inputs: None,
                        upstream_reused: reused,
                    });
                }
                Ok(())
            }
            NextMove::Split { to: targets, join } => {
                let b = self.open_barrier(&task, &ns, join, targets.len(), reused);
                for (i, t) in targets.into_iter().enumerate() {
                    let mut fanouts = (*task.fanouts).clone();
                    fanouts.push(Fanout { barrier: b, branch: i });
                    self.make_ready(NewTask {
                        step: t,
                        parent: Some(task.id),
                        parent_ns: ns.clone(),
                        fanouts: Arc::new(fanouts),
                        frames: task.frames.clone(),
                        iteration: task.iteration,
                        inputs: None,
                        upstream_reused: reused,
                    });
                }
                Ok(())
            }
            NextMove::Foreach { to, over, elements } => {
                let len = elements.len() as u64;
                let join = graph.join_of(task.step.as_str()).cloned().ok_or_else(|| Error::InvalidFlow {
                    flow: graph.name().to_string(),
                    problems: format!("foreach `{}` has no join", task.step),
                })?;
                let b = self.open_barrier(&task, &ns, join, elements.len(), reused);
                if !elements.is_empty() {
                    let first_id = self.shared.reserve_ids(len);
                    self.pending.push_back(PendingForeach {
                        to,
                        parent: task.id,
                        parent_ns: ns,
                        fanouts: task.fanouts.clone(),
                        frames: task.frames.clone(),
                        barrier: b,
                        over: ForeachFrame { step: task.step.clone(), task: task.id, over, index: 0, len },
                        elements: elements.clone(),
                        next: 0,
                        first_id,
                        iteration: task.iteration,
                        reused,
                    });
                }
                if elements.is_empty() {
                    self.close_barrier(b);
                }
                Ok(())
            }
        }
    }

    fn open_barrier(&mut self, task: &ReadyTask, ns: &Arc<Namespace>, join: StepName, n: usize, reused: bool) -> u64 {
        self.next_barrier += 1;
        let id = self.next_barrier;
        self.barriers.insert(
            id,
            Barrier {
                join,
                arrived: vec![None; n],
                fanning: task.id,
                inherited: ns.clone(),
                hold: n <= self.shared.join_inputs_in_memory,
                last_names: None,
                count: 0,
                outer_fanouts: task.fanouts.clone(),
                outer_frames: task.frames.clone(),
                iteration: task.iteration,
                reused,
            },
        );
        id
    }

    fn arrive(&mut self, task: &ReadyTask, ns: Arc<Namespace>, reused: bool) {
        let Some(fanout) = task.fanouts.last().copied() else {
            self.fail(Error::InvalidFlow {
                flow: self.shared.flow.name().to_string(),
                problems: format!("step `{}` reaches a join outside any split or foreach", task.step),
            });
            return;
        };
        let full = match self.barriers.get_mut(&fanout.barrier) {
            Some(b) => {
                if b.arrived[fanout.branch].is_none() {
                    b.count += 1;
                }
                let own = if b.hold || task.parent != Some(b.fanning) { None } else { ns.own_names_over(&b.inherited) };
                let ns = match own {
                    Some(names) => {
                        let shared = match &b.last_names {
                            Some(last) if **last == names[..] => last.clone(),
                            _ => {
                                let fresh: Arc<[braid_core::ArtifactName]> = names.into();
                                b.last_names = Some(fresh.clone());
                                fresh
                            }
                        };
                        BranchNs::Stored(shared)
                    }
                    None => BranchNs::Held(ns),
                };
                b.arrived[fanout.branch] =
                    Some(Branch { task: task.id, step: task.step.clone(), index: fanout.branch as u64, ns, reused });
                b.count == b.arrived.len()
            }
            None => false,
        };
        if full {
            self.close_barrier(fanout.barrier);
        }
    }

    fn close_barrier(&mut self, id: u64) {
        let Some(b) = self.barriers.remove(&id) else {
            return;
        };
        let branches: Vec<Branch> = b.arrived.into_iter().flatten().collect();
        let all_reused = b.reused && branches.iter().all(|br| br.reused);
        self.make_ready(NewTask {
            step: b.join,
            parent: None,
            parent_ns: Arc::new(Namespace::new()),
            fanouts: b.outer_fanouts,
            frames: b.outer_frames,
            iteration: b.iteration,
            inputs: Some(Arc::new(JoinInputs::new(branches, b.inherited))),
            upstream_reused: all_reused,
        });
    }
}

/// Task `id`, with its twin in the origin run to reuse when resuming and everything
/// upstream was reused.
fn ready_task(shared: &RunShared, id: TaskId, new: NewTask) -> ReadyTask {
    let NewTask { step, parent, parent_ns, fanouts, frames, iteration, inputs, upstream_reused } = new;
    let reuse = match &shared.origin {
        Some(o) if upstream_reused && o.from.as_ref() != Some(&step) => o
            .tasks
            .get(&TaskIdentity { step: step.clone(), path: frames.iter().map(|f| f.record.index).collect(), iteration })
            .map(|r| Box::new(r.clone())),
        _ => None,
    };
    // A run taken over from its dead driver reuses its own tasks in place, by their ids
    // (the id reserved for it is left unused).
    let id = match (&reuse, &shared.origin) {
        (Some(r), Some(o)) if o.run == shared.run_id => r.key.task,
        _ => id,
    };
    ReadyTask { id, step, parent, parent_ns, fanouts, frames, iteration, inputs, reuse }
}

/// Tasks a chain ran before the one it hands back (see [`run_chain`]).
#[derive(Debug, Default)]
pub(super) struct Chained {
    executed: u64,
    reused: u64,
}

/// Runs `task`, then, while the next move is a plain step that is not a join (a
/// linear successor: nothing of the dispatcher's state decides it but a fresh id), runs
/// that step too, in the same tokio task. Hands back the last task and its outcome for
/// the dispatcher to route, with how many ran before it. Without this, each step of a
/// linear chain was two hand-offs between tokio tasks (spawn, join) and a dispatcher
/// wake-up; a foreach branch of several steps now runs them back to back as well.
/// Loop-backs (their iteration limit is checked when routed), joins, splits, foreach
/// and the end go back to the dispatcher, as does everything once the run is failing.
async fn run_chain(shared: &Arc<RunShared>, mut task: ReadyTask) -> (ReadyTask, Outcome, Chained) {
    let mut chained = Chained::default();
    loop {
        let outcome = run_task(shared, &task).await;
        let Outcome::Succeeded { ns, next: NextMove::Go { to, loop_back: false }, reused } = outcome else {
            return (task, outcome, chained);
        };
        let is_join = shared.flow.graph.step(to.as_str()).is_none_or(|s| s.kind == StepKind::Join);
        if is_join || shared.cancel.is_cancelled() || shared.persister.failure().is_some() {
            let outcome = Outcome::Succeeded { ns, next: NextMove::Go { to, loop_back: false }, reused };
            return (task, outcome, chained);
        }
        if reused {
            chained.reused += 1;
        } else {
            chained.executed += 1;
        }
        shared.progress.update(&task.step, |c| {
            c.running -= 1;
            c.done += 1;
        });
        shared.progress.update(&to, |c| c.running += 1);
        let id = TaskId(shared.reserve_ids(1));
        task = ready_task(
            shared,
            id,
            NewTask {
                step: to,
                parent: Some(task.id),
                parent_ns: ns,
                fanouts: task.fanouts.clone(),
                frames: task.frames.clone(),
                iteration: task.iteration,
                inputs: None,
                upstream_reused: reused,
            },
        );
    }
}
