//! What passes between the dispatcher and the execution of one task: the task to run
//! ([`ReadyTask`]) and how it went ([`Outcome`], with the [`NextMove`] it decided).

use std::sync::Arc;

use braid_core::{ArtifactName, StepName, TaskId};
use braid_store::TaskRecord;

use crate::context::{Frame, JoinInputs};
use crate::error::Error;
use crate::namespace::Namespace;

/// An open fan-out a task sits in: which barrier, which branch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fanout {
    pub(super) barrier: u64,
    pub(super) branch: usize,
}

/// A task the dispatcher has created and will start: its place in the flow (step,
/// parent, open fan-outs, foreach frames, loop iteration) and what it starts from.
/// (Not a launch plan: those are `plan::LaunchPlan`.)
pub(super) struct ReadyTask {
    pub(super) id: TaskId,
    pub(super) step: StepName,
    pub(super) parent: Option<TaskId>,
    pub(super) parent_ns: Arc<Namespace>,
    pub(super) fanouts: Arc<Vec<Fanout>>,
    pub(super) frames: Arc<Vec<Frame>>,
    pub(super) iteration: u32,
    pub(super) inputs: Option<Arc<JoinInputs>>,
    /// The task in the origin run to reuse instead of running this one.
    /// (Boxed: a record is most of a `ReadyTask`'s size, and most tasks reuse nothing.)
    pub(super) reuse: Option<Box<TaskRecord>>,
}

pub(super) enum NextMove {
    End,
    Go {
        to: StepName,
        loop_back: bool,
    },
    /// A static split, or a switch case that fans out, and the join that closes it.
    Split {
        to: Vec<StepName>,
        join: StepName,
    },
    Foreach {
        to: StepName,
        over: ArtifactName,
        elements: Arc<Vec<Vec<u8>>>,
    },
}

pub(super) enum Outcome {
    Succeeded { ns: Arc<Namespace>, next: NextMove, reused: bool },
    Failed(Error),
    Cancelled,
}
