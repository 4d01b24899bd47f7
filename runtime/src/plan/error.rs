use std::fmt;

use thiserror::Error;

/// One problem of one plan: which plan, which key of it (`cron`, `timezone`,
/// `matrix.site_id[0]`, `fixed.region`; empty for the plan as a whole), what is wrong
/// and, where there is one, the fix. Shown as `plan NAME: KEY: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanProblem {
    /// The plan's name as written (`#2 (unnamed)` for a table without one).
    pub plan: String,
    /// The key of the plan concerned (`cron`, `matrix.site_id[0]`); empty for the plan
    /// as a whole.
    pub key: String,
    /// What is wrong and, where there is one, the fix.
    pub message: String,
}

impl PlanProblem {
    pub(crate) fn new(plan: impl Into<String>, key: impl Into<String>, message: impl fmt::Display) -> Self {
        PlanProblem { plan: plan.into(), key: key.into(), message: message.to_string() }
    }
}

impl fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "plan {}: {}", self.plan, self.message)
        } else {
            write!(f, "plan {}: {}: {}", self.plan, self.key, self.message)
        }
    }
}

/// The problems, one indented line each.
fn lines(problems: &[PlanProblem]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

/// What can go wrong with launch plans. Messages name the plan, the key, the parameter,
/// the cron expression or the file concerned, and say how to fix it. Decide on the
/// variant (or [`PlanError::is_usage`]), never on the message; variants may be added.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PlanError {
    /// One plan is not valid; `problems` lists every problem.
    #[error("plan `{plan}` is not valid:\n{}", lines(.problems))]
    Invalid {
        /// The plan's name as written.
        plan: String,
        /// Every problem of it.
        problems: Vec<PlanProblem>,
    },

    /// A batch (a plan file) with invalid plans: none of it was registered. `problems`
    /// lists every problem of every bad plan.
    #[error("{bad} of {total} plans in {source_name} are not valid, so none was registered:\n{}", lines(.problems))]
    Rejected {
        /// The batch's source: a file path, or `code`.
        source_name: String,
        /// How many of its plans have problems.
        bad: usize,
        /// How many plans it has.
        total: usize,
        /// Every problem of every bad plan.
        problems: Vec<PlanProblem>,
    },

    /// A registered plan that its flow's current parameters no longer accept.
    #[error("plan `{plan}` (version {version}) no longer fits flow `{flow}`; fix the plan file and apply it again:\n{}", lines(.problems))]
    NoLongerFits {
        /// The plan.
        plan: String,
        /// Its registered version.
        version: u32,
        /// Its flow.
        flow: String,
        /// Every input that no longer fits.
        problems: Vec<PlanProblem>,
    },

    /// A manual launch whose `--param`s do not fit the plan: every problem at once.
    #[error("cannot launch plan `{plan}`:\n{}", lines(.problems))]
    BadLaunch {
        /// The plan.
        plan: String,
        /// Every `--param` that does not fit, each naming it.
        problems: Vec<PlanProblem>,
    },

    /// `--param`s selecting parameter sets of a plan (`braid plan resume-set`) that do
    /// not fit it: every problem at once.
    #[error("cannot select parameter sets of plan `{plan}`:\n{}", lines(.problems))]
    BadSelection {
        /// The plan.
        plan: String,
        /// Every `--param` that does not fit, each naming it.
        problems: Vec<PlanProblem>,
    },

    /// The parameter sets of a plan could not be produced for a launch (its
    /// `matrix_command` or `matrix_fn` failed, or printed sets that do not fit); the
    /// failure is recorded as a failed tick.
    #[error("the parameter sets of plan `{plan}` for {tick} could not be produced: {reason}")]
    Matrix {
        /// The plan.
        plan: String,
        /// The tick (for a manual launch, when it was asked for).
        tick: jiff::Timestamp,
        /// What went wrong.
        reason: String,
    },

    /// A plan that was deleted (`braid plan delete`): it launches nothing until its plan
    /// file is applied again.
    #[error("plan `{plan}` was deleted at {at}; apply its plan file again (`plans apply FILE`) to register it anew")]
    Deleted {
        /// The plan.
        plan: String,
        /// When it was deleted.
        at: jiff::Timestamp,
    },

    /// A plan file that cannot be read or parsed.
    #[error("plan file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why it cannot be read or parsed.
        reason: String,
    },

    /// A plan name that no registered plan has.
    #[error(
        "plan `{plan}` is not registered{hint}; `braid plan list` shows the registered plans, `plans apply FILE` registers more"
    )]
    UnknownPlan {
        /// The name asked for.
        plan: String,
        /// The registered plans, as a parenthesis (or that none is).
        hint: String,
    },

    /// Arguments that do not fit (a backfill range, a fixed parameter overridden, ...).
    #[error("{0}")]
    Usage(String),

    /// The store failed.
    #[error(transparent)]
    Store(#[from] braid_store::Error),

    /// A launched run could not be prepared or run.
    #[error(transparent)]
    Run(#[from] crate::Error),

    /// A name `braid_core` refuses (a plan name, a label).
    #[error(transparent)]
    Core(#[from] braid_core::Error),
}

impl PlanError {
    /// A mistake of the caller (a bad plan, file or argument), as opposed to a store or
    /// run failure: command lines exit with 2 for these.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            PlanError::Invalid { .. }
                | PlanError::Rejected { .. }
                | PlanError::NoLongerFits { .. }
                | PlanError::BadLaunch { .. }
                | PlanError::BadSelection { .. }
                | PlanError::Deleted { .. }
                | PlanError::File { .. }
                | PlanError::UnknownPlan { .. }
                | PlanError::Usage(_)
                | PlanError::Core(_)
        )
    }

    /// The problems of a batch of `total` plans from `source`; `bad` counts the plans
    /// they name.
    pub fn rejected(source: impl Into<String>, total: usize, problems: Vec<PlanProblem>) -> Self {
        let bad = problems.iter().map(|p| p.plan.as_str()).collect::<std::collections::BTreeSet<_>>().len();
        PlanError::Rejected { source_name: source.into(), bad, total, problems }
    }
}

/// The result of the launch-plan calls.
pub type PlanResult<T, E = PlanError> = std::result::Result<T, E>;
