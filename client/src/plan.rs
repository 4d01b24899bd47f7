//! Launch plans, read-only: what is registered, its versions, its launches (each a
//! (plan, tick, parameter set) and the run it started) and the running schedulers.

use braid_core::PlanName;
use braid_store::{
    LaunchQuery, LaunchRecord, ParamSetState, PlanQuery, PlanRecord, PlanVersion, SchedulerRecord, TickFailure,
};

use crate::error::{Error, Result};
use crate::{Client, rt};

impl Client {
    /// Registered plans matching `query`, by name.
    pub fn plans(&self, query: &PlanQuery) -> Result<Vec<PlanRecord>> {
        rt::call(|| "cannot list launch plans".to_owned(), self.store().plans.list_plans(query))
    }

    /// A plan's latest version and state; the error lists the registered plans.
    pub fn plan(&self, name: &str) -> Result<PlanRecord> {
        let plan = PlanName::new(name)?;
        let found = rt::call(|| format!("cannot read plan `{name}`"), self.store().plans.get_plan(&plan))?;
        found.ok_or_else(|| Error::UnknownPlan {
            plan: name.to_owned(),
            location: self.location().to_owned(),
            known: self
                .plans(&PlanQuery { without_spec: true, ..Default::default() })
                .map(|p| p.into_iter().map(|p| p.name.to_string()).collect())
                .unwrap_or_default(),
        })
    }

    /// Every version of a plan, oldest first.
    pub fn plan_versions(&self, name: &str) -> Result<Vec<PlanVersion>> {
        let plan = PlanName::new(name)?;
        rt::call(|| format!("cannot list the versions of plan `{name}`"), self.store().plans.list_plan_versions(&plan))
    }

    /// Launches matching `query` (newest tick first unless it says otherwise).
    pub fn launches(&self, query: &LaunchQuery) -> Result<Vec<LaunchRecord>> {
        rt::call(|| "cannot list launches".to_owned(), self.store().plans.list_launches(query))
    }

    /// The recorded parameter set states (paused after failures, last resumed) of one
    /// plan, or of every plan; only the paused ones with `paused_only`.
    pub fn set_states(&self, plan: Option<&str>, paused_only: bool) -> Result<Vec<ParamSetState>> {
        let plan = plan.map(PlanName::new).transpose()?;
        rt::call(
            || "cannot list the parameter sets' states".to_owned(),
            self.store().plans.list_set_states(plan.as_ref(), paused_only),
        )
    }

    /// The ticks whose parameter sets could not be produced (the plan's `matrix_command`
    /// or `matrix_fn` failed) of one plan, or of every plan: newest tick first, at most
    /// `limit` (0: 1000).
    pub fn tick_failures(&self, plan: Option<&str>, limit: usize) -> Result<Vec<TickFailure>> {
        let plan = plan.map(PlanName::new).transpose()?;
        rt::call(
            || "cannot list the failed ticks".to_owned(),
            self.store().plans.list_tick_failures(plan.as_ref(), limit),
        )
    }

    /// Schedulers and launchers that have sent a heartbeat (live or not: compare
    /// `seen_at` with now).
    pub fn schedulers(&self) -> Result<Vec<SchedulerRecord>> {
        rt::call(|| "cannot list schedulers".to_owned(), self.store().plans.list_schedulers())
    }
}
