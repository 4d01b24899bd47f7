//! Launch plans as the store keeps them, and the [`PlanStore`] trait every backend
//! implements.
//!
//! The store does not interpret a plan's content: the runtime validates it and hands
//! over its JSON and a content hash. The store versions it (same hash: no-op; another
//! hash: a new version), keeps labels and the active flag queryable, and keeps the
//! scheduler's state: a cursor per plan (the latest tick evaluated), one
//! [`LaunchRecord`] per launched (plan, tick, parameter set) — created by an
//! insert-if-absent claim, so a tick launches at most once whoever races for it — and a
//! heartbeat per running scheduler, so launches held by a dead one can be adopted.
//!
//! Two pieces of per-plan state outlive a scheduler: a plan's deletion (`delete_plans`:
//! it stops launching and leaves listings, its record stays so its runs keep naming it,
//! and registering the name again starts a new history whose version numbers continue)
//! and each parameter set's state ([`ParamSetState`]: paused after consecutive failures,
//! and when it was last resumed). A new version of a plan clears its sets' states.
//!
//! A plan whose parameter sets are produced at each tick (by a command or a function)
//! can fail to produce them: each such tick is kept as a [`TickFailure`], so the failure
//! is visible (`braid plan show`) and not a silent gap in the plan's launches.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use async_trait::async_trait;
use braid_core::{FlowName, Label, PlanName, RunId, RunStatus, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The claim scope of launches: `claim_holder(LAUNCH_CLAIM_SCOPE, key)` names the
/// scheduler that claimed a launch key.
pub const LAUNCH_CLAIM_SCOPE: &str = "plan-launch";

/// A plan to register: its content as JSON, and a hash of that content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDraft {
    /// The plan's name, unique in the store.
    pub name: PlanName,
    /// The flow it launches.
    pub flow: FlowName,
    /// Labels to select it by (`team=sync`).
    pub labels: BTreeSet<Label>,
    /// The plan's content (the runtime's plan spec); what versions are made of.
    pub spec: serde_json::Value,
    /// A hash of `spec`: equal hashes mean equal content (re-registering is a no-op).
    pub hash: String,
    /// Whether the plan is active when first registered. Registering a new version
    /// never changes the active flag: activation is `set_plans_active`'s job.
    pub active: bool,
}

/// A registered plan: its latest version and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// The plan's name.
    pub name: PlanName,
    /// The flow it launches.
    pub flow: FlowName,
    /// The latest version, from 1.
    pub version: u32,
    /// The content hash of the latest version.
    pub hash: String,
    /// The latest version's content; `null` when listed `without_spec`.
    pub spec: serde_json::Value,
    /// The latest version's labels.
    pub labels: BTreeSet<Label>,
    /// Whether its schedule fires.
    pub active: bool,
    /// When version 1 was registered.
    pub created_at: Timestamp,
    /// When the latest version was registered.
    pub updated_at: Timestamp,
    /// When the plan was last activated; `None` while inactive. Ticks before it are not
    /// "missed" (the plan was off), so catch-up never goes back further.
    pub active_since: Option<Timestamp>,
    /// The latest tick the scheduler has evaluated (launched or skipped).
    pub cursor: Option<Timestamp>,
    /// When the plan was deleted ([`PlanStore::delete_plans`]); `None` while it is live.
    /// A deleted plan is inactive, listed only with [`PlanQuery::include_deleted`], and
    /// registering its name again starts a new history (created anew, with the next
    /// version number).
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
}

/// One version of a plan's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanVersion {
    /// The plan's name.
    pub name: PlanName,
    /// The version number, from 1.
    pub version: u32,
    /// The content hash.
    pub hash: String,
    /// The content.
    pub spec: serde_json::Value,
    /// The labels of this version.
    pub labels: BTreeSet<Label>,
    /// When this version was registered.
    pub created_at: Timestamp,
}

/// What registering one plan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Registration {
    /// A new plan, version 1.
    Created {
        /// The version made: 1.
        version: u32,
    },
    /// Other content: a new version.
    Updated {
        /// The version made.
        version: u32,
        /// The latest version before.
        previous: u32,
    },
    /// The same content as the latest version: nothing written.
    Unchanged {
        /// The latest version, which stays.
        version: u32,
    },
}

impl Registration {
    /// The plan's latest version after the registration.
    pub fn version(self) -> u32 {
        match self {
            Registration::Created { version }
            | Registration::Updated { version, .. }
            | Registration::Unchanged { version } => version,
        }
    }
}

/// Which plans to list, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanQuery {
    /// Only plans of these flows (empty: every flow).
    pub flows: Vec<FlowName>,
    /// Only plans carrying every one of these labels.
    pub labels: Vec<Label>,
    /// Only active (`Some(true)`) or inactive plans.
    pub active: Option<bool>,
    /// Leave [`PlanRecord::spec`] as `null`: for callers that cache content by version
    /// (a scheduler listing thousands of plans every pass).
    pub without_spec: bool,
    /// List deleted plans too (their `deleted_at` is set); by default they are left out.
    pub include_deleted: bool,
}

/// Which plans an activation changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanSelector {
    /// These plans; every one must exist.
    Names(Vec<PlanName>),
    /// Every plan carrying all of these labels (at least one label).
    Labels(Vec<Label>),
}

/// Why a parameter set stopped launching: its last `failures` runs failed in a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPause {
    /// How many consecutive failed runs paused it (the plan's `pause_after_failures`).
    pub failures: u32,
    /// The failed runs, newest first.
    pub runs: Vec<RunId>,
    /// When it was paused.
    pub at: Timestamp,
}

/// The state of one parameter set of a plan, kept across scheduler restarts: whether it
/// is paused (and why), and when it was last resumed (failures before that do not count
/// towards a pause). Cleared when the plan gets a new version or is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSetState {
    /// The plan.
    pub plan: PlanName,
    /// The parameter set's key ([`LaunchRecord::set_key`]).
    pub set_key: String,
    /// The plan version the state was recorded under.
    pub version: u32,
    /// Set while the set is paused: its ticks are recorded as skipped, not launched.
    pub paused: Option<SetPause>,
    /// When it was last resumed (`braid plan resume-set`).
    pub resumed_at: Option<Timestamp>,
}

/// A tick of a plan whose parameter sets could not be produced (its `matrix_command`
/// failed, timed out or printed something that is not a list of sets; its `matrix_fn`
/// returned an error): nothing launched for it, and this record says why. One per
/// (plan, tick): a later failure of the same tick (another scheduler replica, a
/// backfill) counts up `failures` and replaces the error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickFailure {
    /// The plan.
    pub plan: PlanName,
    /// The plan version whose parameter sets were asked for.
    pub version: u32,
    /// The tick.
    pub tick: Timestamp,
    /// What asked for them: a scheduler's pass, a backfill or a manual launch.
    pub kind: LaunchKind,
    /// The scheduler (or command) that asked, last.
    pub holder: String,
    /// What went wrong, last: the command's exit status and the tail of its stderr, the
    /// problems of what it printed, or the function's error.
    pub error: String,
    /// How many times producing this tick's sets failed.
    pub failures: u32,
    /// When it first failed.
    pub first_at: Timestamp,
    /// When it last failed.
    pub last_at: Timestamp,
}

/// The `FromStr` error of [`LaunchKind`] and [`LaunchState`]: `Invalid`, naming the type.
fn invalid_word(what: &'static str, input: &str, reason: String) -> Error {
    Error::Invalid { what: format!("{what} {input:?}"), reason }
}

braid_core::string_enum!(
    /// Why a launch exists. Stored as its word (`as_str`); more kinds may come, so a
    /// `match` outside this crate needs a `_` arm.
    #[non_exhaustive]
    pub enum LaunchKind, "LaunchKind", Error = invalid_word; {
        /// A tick of the plan's schedule, launched by a scheduler.
        Scheduled = "scheduled",
        /// A past tick, launched by `backfill`.
        Backfill = "backfill",
        /// Launched by hand (`plans launch`, `braid plan launch`).
        Manual = "manual",
    }
);

braid_core::string_enum!(
    /// Where a launch is. Stored as its word (`as_str`); more states may come, so a
    /// `match` outside this crate needs a `_` arm.
    #[non_exhaustive]
    pub enum LaunchState, "LaunchState", Error = invalid_word; {
        /// Claimed, its run not started yet (waiting for its turn, a worker, or a scheduler).
        Pending = "pending",
        /// Its run started (`run` is set) and has not ended.
        Started = "started",
        /// Its run ended (`status` says how).
        Finished = "finished",
        /// Never launched, on purpose (`note` says why: the concurrency policy, the plan
        /// deactivated, ...).
        Skipped = "skipped",
    }
);

/// One launch of a plan: a (plan, tick, parameter set), or a manual launch. Created by
/// [`PlanStore::claim_launches`] (insert-if-absent on `key`), then moved along by
/// conditional updates ([`PlanStore::update_launch`]). Fields may be added in a minor
/// release (new ones optional); move one along with struct update syntax from the stored one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchRecord {
    /// The claim key: unique per (plan, tick, parameter set) for scheduled and backfill
    /// launches, per request for manual ones.
    pub key: String,
    /// The plan it launches.
    pub plan: PlanName,
    /// The plan version that claimed it (and that its run records).
    pub version: u32,
    /// The flow its run is of.
    pub flow: FlowName,
    /// Why it exists.
    pub kind: LaunchKind,
    /// The tick (the schedule's time) it is for; for a manual launch, when it was asked for.
    pub tick: Timestamp,
    /// The parameter set's own values as canonical JSON, e.g. `{"site_id":"site1"}`.
    pub set_key: String,
    /// Every parameter value the run starts with.
    pub params: BTreeMap<String, serde_json::Value>,
    /// The run's readable name, e.g. `data_sync_hourly_site1`.
    pub name: String,
    /// Where it is.
    pub state: LaunchState,
    /// The scheduler (or command) responsible for starting it; `None`: anyone may adopt it.
    pub holder: Option<String>,
    /// The run it started, once it has.
    pub run: Option<RunId>,
    /// How the run ended, once it has.
    pub status: Option<RunStatus>,
    /// Why it was skipped, or what went wrong starting it.
    pub note: Option<String>,
    /// When it was claimed.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// Which launches to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchQuery {
    /// Only launches of this plan.
    pub plan: Option<PlanName>,
    /// Only launches of this parameter set (its `set_key`).
    pub set_key: Option<String>,
    /// Only launches in one of these states (empty: any).
    pub states: Vec<LaunchState>,
    /// Only launches of these flows (empty: any).
    pub flows: Vec<FlowName>,
    /// Only launches held by this scheduler.
    pub holder: Option<String>,
    /// Only launches with a tick before this one (a cursor for paging newest first).
    pub before_tick: Option<Timestamp>,
    /// Oldest tick first instead of newest first.
    pub oldest_first: bool,
    /// At most this many (0 means a backend default of 1000).
    pub limit: usize,
}

/// A running scheduler, as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerRecord {
    /// The scheduler's id (`role@host:pid`).
    pub id: String,
    /// The flows it serves.
    pub flows: Vec<FlowName>,
    /// Host and process, for people.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started.
    pub started_at: Timestamp,
    /// Its last heartbeat.
    pub seen_at: Timestamp,
}

/// Plans, their versions and activation, and the scheduler's state: the plans half of a
/// store, implemented by each backend (and by out-of-tree ones, checked by the
/// `conformance` suite).
#[async_trait]
pub trait PlanStore: Send + Sync + fmt::Debug {
    /// Registers plans in one atomic write: each becomes version 1, a new version (other
    /// content) or stays as is (same hash). A failure registers none of them.
    async fn register_plans(&self, drafts: Vec<PlanDraft>, now: Timestamp) -> Result<Vec<Registration>>;
    /// A plan's latest version and state.
    async fn get_plan(&self, name: &PlanName) -> Result<Option<PlanRecord>>;
    /// One version of a plan, if both exist.
    async fn get_plan_version(&self, name: &PlanName, version: u32) -> Result<Option<PlanVersion>>;
    /// Every version of a plan, oldest first.
    async fn list_plan_versions(&self, name: &PlanName) -> Result<Vec<PlanVersion>>;
    /// Plans matching the query, by name.
    async fn list_plans(&self, query: &PlanQuery) -> Result<Vec<PlanRecord>>;
    /// Activates or deactivates every selected plan in one atomic write; returns the
    /// selected plans with whether each changed. Naming a plan that does not exist is
    /// `NotFound` and changes nothing. Activating sets `active_since` to `now`.
    async fn set_plans_active(
        &self,
        selector: &PlanSelector,
        active: bool,
        now: Timestamp,
    ) -> Result<Vec<(PlanName, bool)>>;
    /// Moves each plan's cursor forward to the given tick (never backwards).
    async fn advance_cursors(&self, cursors: Vec<(PlanName, Timestamp)>) -> Result<()>;
    /// Deletes every selected plan in one atomic write: `deleted_at` set to `now`, made
    /// inactive, its parameter sets' states removed; its versions and launches stay (its
    /// runs keep naming it). Returns the selected plans with whether each changed (false:
    /// deleted before). Naming a plan never registered is `NotFound` naming every such
    /// name, and changes nothing; labels select live plans only.
    async fn delete_plans(&self, selector: &PlanSelector, now: Timestamp) -> Result<Vec<(PlanName, bool)>>;

    /// Pauses a parameter set of a plan at `version`, if the plan is live, still at that
    /// version, and the set is not paused already; returns whether it was paused by this
    /// call. Atomic: a concurrent new version or deletion wins.
    async fn pause_set(&self, plan: &PlanName, set_key: &str, version: u32, pause: SetPause) -> Result<bool>;
    /// Resumes parameter sets of a live plan in one atomic write: each loses its pause
    /// and gets `resumed_at = now` (failures before it no longer count). Returns each
    /// set with the pause it had (`None`: it was not paused). An unknown or deleted plan
    /// is `NotFound` and changes nothing.
    async fn resume_sets(
        &self,
        plan: &PlanName,
        set_keys: &[String],
        now: Timestamp,
    ) -> Result<Vec<(String, Option<SetPause>)>>;
    /// The recorded parameter set states of one plan (or of every plan), by plan and set
    /// key; only the paused ones with `paused_only`.
    async fn list_set_states(&self, plan: Option<&PlanName>, paused_only: bool) -> Result<Vec<ParamSetState>>;

    /// Records that the parameter sets of `failure.plan` at `failure.tick` could not be
    /// produced: inserted as given, or, when that tick failed before, its `failures`
    /// counted up by one and its version, kind, holder, error and `last_at` replaced
    /// (`first_at` kept). Returns whether this was the tick's first failure.
    async fn record_tick_failure(&self, failure: &TickFailure) -> Result<bool>;
    /// The failed ticks of one plan (or of every plan), newest tick first, at most
    /// `limit` (0 means a backend default of 1000).
    async fn list_tick_failures(&self, plan: Option<&PlanName>, limit: usize) -> Result<Vec<TickFailure>>;

    /// Claims launches: each is inserted only if no launch has its key (the claim is
    /// also recorded in the record store's claims under [`LAUNCH_CLAIM_SCOPE`]). Returns,
    /// in order, whether each claim was won. Batched: one write for many.
    async fn claim_launches(&self, launches: Vec<LaunchRecord>) -> Result<Vec<bool>>;
    /// Replaces a launch if its stored state and holder are the expected ones; false
    /// (and nothing written) otherwise.
    async fn update_launch(
        &self,
        launch: &LaunchRecord,
        expect_state: LaunchState,
        expect_holder: Option<&str>,
    ) -> Result<bool>;
    /// The launch with this claim key.
    async fn get_launch(&self, key: &str) -> Result<Option<LaunchRecord>>;
    /// Launches matching the query, newest tick first (or oldest first), at most its limit.
    async fn list_launches(&self, query: &LaunchQuery) -> Result<Vec<LaunchRecord>>;
    /// Takes over pending launches of `flows` whose holder is none or not in `live`:
    /// sets their holder to `holder` and returns them, oldest tick first, at most `limit`.
    async fn adopt_launches(
        &self,
        flows: &[FlowName],
        live: &[String],
        holder: &str,
        limit: usize,
    ) -> Result<Vec<LaunchRecord>>;
    /// Lets go of `holder`'s pending launches (holder set to none) so another scheduler
    /// adopts them at once; returns how many.
    async fn release_launches(&self, holder: &str) -> Result<u64>;

    /// Records a scheduler's heartbeat (creating or replacing its record).
    async fn heartbeat(&self, scheduler: &SchedulerRecord) -> Result<()>;
    /// Every scheduler's last heartbeat, by id; readers judge liveness from `seen_at`.
    async fn list_schedulers(&self) -> Result<Vec<SchedulerRecord>>;
    /// Removes a scheduler's record (it stopped cleanly); nothing if absent.
    async fn remove_scheduler(&self, id: &str) -> Result<()>;
}

/// Shared by backends: whether a plan carries every label of `labels`.
pub(crate) fn has_labels(plan: &BTreeSet<Label>, labels: &[Label]) -> bool {
    labels.iter().all(|l| plan.contains(l))
}

/// Shared by backends: checks a selector before anything is written.
pub(crate) fn check_selector(selector: &PlanSelector) -> Result<()> {
    match selector {
        PlanSelector::Labels(l) if l.is_empty() => Err(Error::Invalid {
            what: "plan selector".into(),
            reason: "give at least one label (key=value), or plan names".into(),
        }),
        PlanSelector::Names(n) if n.is_empty() => {
            Err(Error::Invalid { what: "plan selector".into(), reason: "give at least one plan name".into() })
        }
        _ => Ok(()),
    }
}

/// Shared by backends: the error for plans named but not registered.
pub(crate) fn unknown_plans(missing: &[PlanName]) -> Error {
    let names = missing.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    Error::NotFound {
        what: format!(
            "plan {names} (nothing was changed; `braid plan list` shows the registered plans, `plans apply FILE` registers more)"
        ),
    }
}
