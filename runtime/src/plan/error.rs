use thiserror::Error;

/// What can go wrong with launch plans. Messages name the plan, the parameter, the
/// cron expression or the file concerned, and say how to fix it.
#[derive(Debug, Error)]
pub enum PlanError {
    /// One plan is not valid; `problems` lists every problem, one per line.
    #[error("plan `{plan}` is not valid:\n{problems}")]
    Invalid { plan: String, problems: String },

    /// A batch (a plan file) with invalid plans: none of it was registered.
    #[error("{bad} of {total} plans in {source_name} are not valid, so none was registered:\n{problems}")]
    Rejected { source_name: String, bad: usize, total: usize, problems: String },

    /// A plan file that cannot be read or parsed.
    #[error("plan file {path}: {reason}")]
    File { path: String, reason: String },

    #[error(
        "plan `{plan}` is not registered{hint}; `braid plan list` shows the registered plans, `plans apply FILE` registers more"
    )]
    UnknownPlan { plan: String, hint: String },

    /// Arguments that do not fit (a backfill range, a fixed parameter overridden, ...).
    #[error("{0}")]
    Usage(String),

    #[error(transparent)]
    Store(#[from] braid_store::Error),

    #[error(transparent)]
    Run(#[from] crate::Error),

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
                | PlanError::File { .. }
                | PlanError::UnknownPlan { .. }
                | PlanError::Usage(_)
                | PlanError::Core(_)
        )
    }

    pub(crate) fn invalid(plan: impl Into<String>, problems: &[String]) -> Self {
        PlanError::Invalid {
            plan: plan.into(),
            problems: problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"),
        }
    }
}

pub type PlanResult<T, E = PlanError> = std::result::Result<T, E>;
