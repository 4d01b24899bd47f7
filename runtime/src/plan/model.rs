//! The launch plan: its serde form ([`PlanSpec`], what a TOML file and the store hold),
//! the validated [`LaunchPlan`], its builder, and its parameter sets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use braid_core::{FlowName, Label, LabelPart, ParamName, PlanName};
use braid_dag::{FlowSpec, ParamCheck, ParamProblem};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{PlanError, PlanProblem, PlanResult};
use super::matrix::{DEFAULT_MATRIX_TIMEOUT, MatrixFn, SetSource};
use super::schedule::{Schedule, format_duration, parse_duration};

/// Most parameter sets one plan may expand to.
pub(crate) const MAX_PARAMETER_SETS: usize = 10_000;
/// The catch-up limit when `catch_up = "all"` names none.
pub(crate) const DEFAULT_CATCH_UP_LIMIT: u32 = 100;
/// How late a tick may be and still launch under `catch_up = "none"`, by default.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// What happens to a tick of a parameter set whose previous run is still going.
/// Policies may be added: a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Concurrency {
    /// Launch it anyway.
    #[default]
    Allow,
    /// Do not launch it (the launch is recorded as skipped, with the reason).
    Skip,
    /// Launch it when the previous run ends, ticks in order.
    Queue,
    /// Like `queue`, but at most one tick waits while a run goes: later ticks are
    /// recorded as skipped, with the reason.
    BufferOne,
    /// Cancel the running run (it ends `cancelled`), then launch this tick. Of several
    /// waiting ticks only the latest launches; the older ones are recorded as skipped.
    CancelOther,
}

impl fmt::Display for Concurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Concurrency::Allow => "allow",
            Concurrency::Skip => "skip",
            Concurrency::Queue => "queue",
            Concurrency::BufferOne => "buffer_one",
            Concurrency::CancelOther => "cancel_other",
        })
    }
}

/// What a scheduler does with ticks that came due while no scheduler was running (or
/// while it could not keep up), as a plan file names it (`catch_up = "all"`); its
/// parameter is a key of its own. Policies may be added: a `match` needs a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CatchUpKind {
    /// Skip missed ticks: launch only ticks at most `grace` late.
    None,
    /// Launch only the most recent missed tick.
    #[default]
    Latest,
    /// Launch every missed tick, the most recent `catch_up_limit` of them, oldest first.
    All,
}

/// The catch-up policy with its parameter, as a validated plan holds it and
/// [`LaunchPlanBuilder::catch_up`] takes it. Policies may be added: a `match` needs a
/// `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CatchUp {
    /// Skip missed ticks; a tick at most `grace` late still launches.
    None {
        /// How late a tick may be and still launch (default 1 minute).
        grace: Duration,
    },
    /// Launch only the most recent missed tick.
    Latest,
    /// Launch every missed tick, oldest first, at most the `limit` most recent.
    All {
        /// Most missed ticks launched (default 100).
        limit: u32,
    },
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatchUp::None { grace } => write!(f, "none (ticks up to {} late still launch)", format_duration(*grace)),
            CatchUp::Latest => f.write_str("latest"),
            CatchUp::All { limit } => write!(f, "all (up to {limit})"),
        }
    }
}

/// A launch plan as written in a TOML file (one `[[plan]]` table) and as stored: a flow,
/// fixed inputs, default inputs, a matrix or explicit parameter sets, a schedule,
/// labels and policies. Unknown keys are errors (a typo is not silently ignored).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
/// Fields may be added: build one from `PlanSpec::default()`, or through
/// [`LaunchPlan::builder`].
pub struct PlanSpec {
    /// The plan's name (runs are named `<name>_<values>`).
    pub name: String,
    /// The flow it launches.
    pub flow: String,
    /// What the plan is for, shown by `braid plan show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A cron expression: 5 fields, or 6 with seconds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA time zone of `cron` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A fixed rate instead of cron, e.g. `15m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// Inputs every run gets; a launch cannot override them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fixed: BTreeMap<String, Value>,
    /// Inputs every run gets unless a manual launch overrides them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults: BTreeMap<String, Value>,
    /// Parameter -> values; one parameter set per combination (cartesian product).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub matrix: BTreeMap<String, Vec<Value>>,
    /// Or an explicit list of parameter sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameter_sets: Vec<BTreeMap<String, Value>>,
    /// Or a command (program and arguments, no shell) run at each tick, printing the
    /// parameter sets as JSON: an array of sets, or an object of parameter -> values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matrix_command: Vec<String>,
    /// Where `matrix_command` runs and a relative program is found: the plan file's
    /// directory (an absolute path filled in when the file is read; a relative one is
    /// taken against the plan file's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix_command_dir: Option<String>,
    /// How long `matrix_command` (or a `matrix_fn`) may take, e.g. `10s` (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix_timeout: Option<String>,
    /// Set by [`LaunchPlanBuilder::matrix_fn`]: the sets come from a function of the
    /// binary that declared the plan. Not for plan files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub matrix_fn: bool,
    /// Labels, `key = "value"`, to select plans by (`braid plan activate --label`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Whether the plan is active when first registered (default true). Not part of
    /// the plan's content: later, `braid plan activate|deactivate` owns the flag.
    #[serde(default = "yes", skip_serializing)]
    pub active: bool,
    /// What a tick does while the previous run of its parameter set goes.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// What happens to ticks missed while no scheduler ran.
    #[serde(default)]
    pub catch_up: CatchUpKind,
    /// With `catch_up = "all"`: at most this many missed ticks (the most recent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_limit: Option<u32>,
    /// With `catch_up = "none"`: how late a tick may be and still launch (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<String>,
    /// After this many consecutive failed runs of a parameter set, the set stops
    /// launching (its ticks are recorded as skipped) until `braid plan resume-set` or a
    /// new version of the plan. `None`: never paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after_failures: Option<u32>,
}

fn yes() -> bool {
    true
}

/// One parameter set of a plan: its own values (the matrix combination or the explicit
/// set), the claim key made of them, and the run name suffix.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSet {
    /// Canonical JSON of `values`, e.g. `{"site_id":"site1"}`; `{}` for a plan without
    /// a matrix.
    pub key: String,
    /// The set's values by parameter name (not the plan's fixed or default inputs:
    /// [`LaunchPlan::params_for`] gives all of a run's inputs).
    pub values: BTreeMap<String, Value>,
}

impl ParamSet {
    pub(crate) fn new(values: BTreeMap<String, Value>) -> Self {
        let key = canonical_json(&Value::Object(values.clone().into_iter().collect()));
        ParamSet { key, values }
    }

    /// The set whose key ([`ParamSet::key`], as a launch records it) is `key`; `None`
    /// when `key` is not a JSON object.
    pub fn from_key(key: &str) -> Option<Self> {
        match serde_json::from_str::<Value>(key) {
            Ok(Value::Object(m)) => Some(ParamSet::new(m.into_iter().collect())),
            _ => None,
        }
    }

    /// The readable run name: `<plan>_<values>` in parameter name order, e.g.
    /// `data_sync_hourly_site1`; just the plan's name without values.
    pub fn run_name(&self, plan: &PlanName) -> String {
        let mut name = plan.to_string();
        for v in self.values.values() {
            name.push('_');
            let text = match v {
                Value::String(s) => s.clone(),
                v => canonical_json(v),
            };
            name.extend(text.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' }));
        }
        name
    }
}

/// JSON with object keys sorted at every depth, whatever serde_json's map order is.
pub(crate) fn canonical_json(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sort(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            v => v.clone(),
        }
    }
    // Serializing a Value cannot fail (keys are strings).
    serde_json::to_string(&sort(v)).unwrap_or_default()
}

/// A validated launch plan.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    spec: PlanSpec,
    name: PlanName,
    flow: FlowName,
    schedule: Option<Schedule>,
    labels: BTreeSet<Label>,
    catch_up: CatchUp,
    sets: Vec<ParamSet>,
    source: SetSource,
    /// The function of a plan declared with [`LaunchPlanBuilder::matrix_fn`] (a plan read
    /// back from the store has none: the scheduler's environment supplies it).
    func: Option<MatrixFn>,
}

impl LaunchPlan {
    /// Starts a plan for `flow` in code (for flows that compute their parameter sets).
    pub fn builder(name: &str, flow: &str) -> LaunchPlanBuilder {
        LaunchPlanBuilder {
            spec: PlanSpec { name: name.to_owned(), flow: flow.to_owned(), active: true, ..Default::default() },
            problems: Vec::new(),
            func: None,
        }
    }

    /// Validates a spec on its own (names, schedule, labels, matrix, policies); the
    /// flow's parameters are checked by [`LaunchPlan::check_flow`]. Every problem is
    /// reported at once.
    pub(crate) fn from_spec(spec: PlanSpec) -> PlanResult<LaunchPlan> {
        let shown = shown_name(&spec.name);
        Self::validate(spec).map_err(|problems| PlanError::Invalid { plan: shown, problems })
    }

    pub(crate) fn validate(mut spec: PlanSpec) -> Result<LaunchPlan, Vec<PlanProblem>> {
        let mut problems = Problems::new(shown_name(&spec.name));
        let name = PlanName::new(&spec.name).map_err(|e| problems.add("name", e)).ok();
        let flow = FlowName::new(&spec.flow).map_err(|e| problems.add("flow", e)).ok();

        let schedule = match (&spec.cron, &spec.every) {
            (Some(_), Some(_)) => {
                problems.add("every", "give either `cron` or `every`, not both");
                None
            }
            (Some(expr), None) => {
                let tz = spec.timezone.clone().unwrap_or_else(|| "UTC".to_owned());
                spec.timezone = Some(tz.clone());
                match Schedule::cron(expr, &tz) {
                    Ok(s) => {
                        if let Schedule::Cron { expr, .. } = &s {
                            spec.cron = Some(expr.clone());
                        }
                        Some(s)
                    }
                    Err(e) => {
                        // Both the expression and the zone are checked: two problems, two lines.
                        if let Some(c) = e.cron {
                            problems.add("cron", c);
                        }
                        if let Some(t) = e.timezone {
                            problems.add("timezone", t);
                        }
                        None
                    }
                }
            }
            (None, Some(every)) => {
                if spec.timezone.is_some() {
                    problems.add(
                        "timezone",
                        "applies to `cron`; a fixed rate (`every`) ticks on multiples of it since the Unix epoch (UTC)",
                    );
                }
                match parse_duration(every) {
                    Ok(d) => Schedule::every(d).map_err(|e| problems.add("every", e)).ok(),
                    Err(e) => {
                        problems.add("every", e);
                        None
                    }
                }
            }
            (None, None) => {
                if spec.timezone.is_some() {
                    problems.add("timezone", "without `cron`: add a cron expression or drop the time zone");
                }
                None
            }
        };

        let mut labels = BTreeSet::new();
        for (k, v) in &spec.labels {
            match (LabelPart::new(k), LabelPart::new(v)) {
                (Ok(key), Ok(value)) => {
                    labels.insert(Label { key, value });
                }
                (Err(e), _) | (_, Err(e)) => problems.add(format!("labels.{k}"), format!("label {k}={v}: {e}")),
            }
        }

        let grace = match &spec.grace {
            Some(g) if spec.catch_up == CatchUpKind::None => match parse_duration(g) {
                Ok(d) => d,
                Err(e) => {
                    problems.add("grace", e);
                    DEFAULT_GRACE
                }
            },
            Some(_) => {
                problems.add("grace", "applies to `catch_up = \"none\"` only");
                DEFAULT_GRACE
            }
            None => DEFAULT_GRACE,
        };
        let catch_up = match spec.catch_up {
            CatchUpKind::None => CatchUp::None { grace },
            CatchUpKind::Latest => CatchUp::Latest,
            CatchUpKind::All => CatchUp::All { limit: spec.catch_up_limit.unwrap_or(DEFAULT_CATCH_UP_LIMIT) },
        };
        match spec.catch_up_limit {
            Some(_) if spec.catch_up != CatchUpKind::All => {
                problems.add("catch_up_limit", "applies to `catch_up = \"all\"` only");
            }
            Some(0) => problems.add("catch_up_limit", "must be at least 1"),
            _ => {}
        }
        if spec.pause_after_failures == Some(0) {
            problems.add("pause_after_failures", "must be at least 1; leave it out to never pause a parameter set");
        }

        for (section, values) in [("fixed", &spec.fixed), ("defaults", &spec.defaults)] {
            for (k, v) in values {
                check_param_name(&format!("{section}.{k}"), k, &mut problems);
                check_toml_value(&format!("{section}.{k}"), v, &mut problems);
            }
        }
        let source = set_source(&spec, &mut problems);
        let sets = if source == SetSource::Static { expand_sets(&spec, &mut problems) } else { Vec::new() };

        let (Some(name), Some(flow), true) = (name, flow, problems.list.is_empty()) else {
            return Err(problems.list);
        };
        Ok(LaunchPlan { spec, name, flow, schedule, labels, catch_up, sets, source, func: None })
    }

    /// Checks the plan against its flow's parameters: each exists, each value has its
    /// type, no parameter is given twice (fixed, default, matrix), and every required
    /// parameter is covered. Returns every problem.
    pub fn check_flow(&self, flow: &FlowSpec) -> Vec<PlanProblem> {
        check_flow_spec(&self.spec, self.name.as_str(), flow)
    }

    /// The plan's name.
    pub fn name(&self) -> &PlanName {
        &self.name
    }

    /// The flow it launches.
    pub fn flow(&self) -> &FlowName {
        &self.flow
    }

    /// The plan as written (and stored).
    pub fn spec(&self) -> &PlanSpec {
        &self.spec
    }

    /// When it launches; `None` for a plan launched only by hand.
    pub fn schedule(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }

    /// Its labels, validated.
    pub fn labels(&self) -> &BTreeSet<Label> {
        &self.labels
    }

    /// What a tick does while the previous run of its parameter set goes.
    pub fn concurrency(&self) -> Concurrency {
        self.spec.concurrency
    }

    /// What happens to ticks missed while no scheduler ran.
    pub fn catch_up(&self) -> CatchUp {
        self.catch_up
    }

    /// After how many consecutive failed runs a parameter set pauses; `None`: never.
    pub fn pause_after_failures(&self) -> Option<u32> {
        self.spec.pause_after_failures
    }

    /// Whether the plan is active when first registered.
    pub fn initially_active(&self) -> bool {
        self.spec.active
    }

    /// Inputs every run gets and no launch can override.
    pub fn fixed(&self) -> &BTreeMap<String, Value> {
        &self.spec.fixed
    }

    /// Inputs every run gets unless a manual launch overrides them.
    pub fn defaults(&self) -> &BTreeMap<String, Value> {
        &self.spec.defaults
    }

    /// The parameter sets, in matrix order (the last parameter varies fastest) or as
    /// listed; empty for a plan whose sets are produced at each tick ([`Self::set_source`]).
    pub fn parameter_sets(&self) -> &[ParamSet] {
        &self.sets
    }

    /// Where the parameter sets come from: the plan itself, or a command or function
    /// run at each tick.
    pub fn set_source(&self) -> SetSource {
        self.source.clone()
    }

    /// Whether the parameter sets are produced at each tick (by a command or a function).
    pub fn has_dynamic_sets(&self) -> bool {
        self.source != SetSource::Static
    }

    /// The function of a plan declared with [`LaunchPlanBuilder::matrix_fn`].
    pub(crate) fn matrix_fn(&self) -> Option<&MatrixFn> {
        self.func.as_ref()
    }

    /// Every value a run of `set` starts with: fixed, then defaults, then the set's own.
    /// Parameters the plan does not mention take the flow's defaults.
    pub fn params_for(&self, set: &ParamSet) -> BTreeMap<String, Value> {
        let mut out = self.spec.fixed.clone();
        for (k, v) in self.spec.defaults.iter().chain(&set.values) {
            out.insert(k.clone(), v.clone());
        }
        out
    }

    /// The content as stored: JSON without the initial `active` flag.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(&self.spec).unwrap_or(Value::Null)
    }

    /// A hash of the content: equal hashes, equal plans (re-registering is a no-op).
    pub fn content_hash(&self) -> String {
        blake3::hash(canonical_json(&self.to_json()).as_bytes()).to_hex()[..32].to_owned()
    }

    /// Reads a stored plan back.
    pub fn from_json(value: &Value) -> PlanResult<LaunchPlan> {
        let spec: PlanSpec = serde_json::from_value(value.clone()).map_err(|e| {
            let plan = value.get("name").and_then(Value::as_str).unwrap_or("(unnamed)").to_owned();
            PlanError::Invalid {
                problems: vec![PlanProblem::new(
                    plan.clone(),
                    "",
                    format!("the stored plan does not parse ({e}); re-apply its plan file"),
                )],
                plan,
            }
        })?;
        Self::from_spec(spec)
    }
}

/// A plan's name as problems show it.
pub(crate) fn shown_name(name: &str) -> String {
    if name.is_empty() { "(unnamed)".to_owned() } else { name.to_owned() }
}

/// The problems of one plan, as they are found.
pub(crate) struct Problems {
    plan: String,
    pub(crate) list: Vec<PlanProblem>,
}

impl Problems {
    pub(crate) fn new(plan: impl Into<String>) -> Self {
        Problems { plan: plan.into(), list: Vec::new() }
    }

    pub(crate) fn add(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        self.list.push(PlanProblem::new(self.plan.clone(), key, message));
    }
}

/// Values of one matrix parameter shown with a wrong type before the rest are counted.
const SHOWN_PER_KEY: usize = 3;

/// Checks a plan's inputs against its flow's parameters (see [`LaunchPlan::check_flow`]),
/// on the spec alone, so a plan with other problems is checked too.
pub(crate) fn check_flow_spec(spec: &PlanSpec, plan: &str, flow: &FlowSpec) -> Vec<PlanProblem> {
    let check = ParamCheck::new(&flow.params);
    let mut problems = Problems::new(plan);
    // Where each parameter is given first (`fixed`, `defaults`, `matrix`, `parameter_sets`).
    let mut first: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut given_in = |param: &str, section: &'static str, key: &str, problems: &mut Problems| match first.get(param) {
        Some(s) if *s != section => {
            problems.add(key, format!("parameter `{param}` is given in both `{s}` and `{section}`; keep it in one"))
        }
        Some(_) => {}
        None => {
            first.insert(param.to_owned(), section);
        }
    };
    for (section, values) in [("fixed", &spec.fixed), ("defaults", &spec.defaults)] {
        for (k, v) in values {
            let key = format!("{section}.{k}");
            given_in(k, section, &key, &mut problems);
            if let Err(p) = check.check(k, v) {
                problems.add(key, p);
            }
        }
    }
    for (k, values) in &spec.matrix {
        let key = format!("matrix.{k}");
        given_in(k, "matrix", &key, &mut problems);
        let p = match check.declared(k) {
            Ok(p) => p,
            Err(unknown) => {
                problems.add(key, unknown);
                continue;
            }
        };
        let mut bad = 0;
        for (i, v) in values.iter().enumerate() {
            if let Err(e) = check.check(k, v) {
                bad += 1;
                if bad <= SHOWN_PER_KEY {
                    problems.add(format!("{key}[{i}]"), e);
                }
            }
        }
        if bad > SHOWN_PER_KEY {
            problems.add(key, format!("{} more values are not {}", bad - SHOWN_PER_KEY, p.ty.expected()));
        }
    }
    let mut unknown = BTreeSet::new();
    for (i, set) in spec.parameter_sets.iter().enumerate() {
        for (k, v) in set {
            let key = format!("parameter_sets[{i}].{k}");
            given_in(k, "parameter_sets", &key, &mut problems);
            match check.check(k, v) {
                Ok(_) => {}
                Err(e @ ParamProblem::Unknown { .. }) => {
                    if unknown.insert(k) {
                        problems.add(key, e);
                    }
                }
                Err(e) => problems.add(key, e),
            }
        }
    }
    // Sets produced at each tick are checked when they are: what they must cover is not
    // known before.
    let dynamic = !spec.matrix_command.is_empty() || spec.matrix_fn;
    let covered = |name: &str| {
        dynamic
            || spec.fixed.contains_key(name)
            || spec.defaults.contains_key(name)
            || if spec.matrix.is_empty() {
                !spec.parameter_sets.is_empty() && spec.parameter_sets.iter().all(|s| s.contains_key(name))
            } else {
                spec.matrix.contains_key(name)
            }
    };
    for missing in check.missing(|p| covered(p.name.as_str())) {
        let ParamProblem::Missing { param, .. } = &missing else { continue };
        let which = if spec.parameter_sets.is_empty() || !spec.matrix.is_empty() {
            String::new()
        } else {
            let sets: Vec<String> = spec
                .parameter_sets
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.contains_key(param.as_str()))
                .map(|(i, _)| i.to_string())
                .collect();
            format!(" (missing from parameter_sets {})", sets.join(", "))
        };
        problems.add("", format!("{missing}{which}; add it to `fixed`, `defaults` or the matrix"));
    }
    problems.list
}

fn check_param_name(key: &str, k: &str, problems: &mut Problems) {
    if let Err(e) = ParamName::new(k) {
        problems.add(key, e);
    }
}

/// TOML dates have no JSON form a flow could read; say so instead of passing a map.
fn check_toml_value(key: &str, v: &Value, problems: &mut Problems) {
    let is_datetime = |v: &Value| v.as_object().is_some_and(|m| m.keys().any(|k| k.contains("toml_private_datetime")));
    if is_datetime(v) || v.as_array().is_some_and(|a| a.iter().any(is_datetime)) {
        problems.add(key, "TOML dates and times are not parameter values; quote them as a string");
    }
}

/// Where a spec's parameter sets come from; every problem of the dynamic keys.
fn set_source(spec: &PlanSpec, problems: &mut Problems) -> SetSource {
    let command = !spec.matrix_command.is_empty();
    let statics = !spec.matrix.is_empty() || !spec.parameter_sets.is_empty();
    let timeout = match &spec.matrix_timeout {
        Some(t) => match parse_duration(t) {
            Ok(d) if d.is_zero() || d > Duration::from_secs(3600) => {
                problems.add("matrix_timeout", format!("{t:?} is not between 1s and 1h"));
                DEFAULT_MATRIX_TIMEOUT
            }
            Ok(d) => d,
            Err(e) => {
                problems.add("matrix_timeout", e);
                DEFAULT_MATRIX_TIMEOUT
            }
        },
        None => DEFAULT_MATRIX_TIMEOUT,
    };
    if command && spec.matrix_fn {
        problems.add("matrix_command", "give either `matrix_command` or `matrix_fn`, not both");
    }
    if (command || spec.matrix_fn) && statics {
        let which = if command { "matrix_command" } else { "matrix_fn" };
        problems.add(
            which,
            format!(
                "give either `{which}` (sets produced at each tick) or `matrix`/`parameter_sets` (fixed sets), not both"
            ),
        );
    }
    if !command && spec.matrix_command_dir.is_some() {
        problems.add("matrix_command_dir", "applies to `matrix_command` only");
    }
    if !command && !spec.matrix_fn && spec.matrix_timeout.is_some() {
        problems.add("matrix_timeout", "applies to `matrix_command` or `matrix_fn` only");
    }
    if command {
        if spec.matrix_command[0].trim().is_empty() {
            problems.add("matrix_command", "its first word, the program, is empty; write e.g. [\"./list-sites\"]");
        }
        for (i, arg) in spec.matrix_command.iter().enumerate() {
            if arg.contains('\0') {
                problems.add(format!("matrix_command[{i}]"), "contains a NUL byte");
            }
        }
        return SetSource::Command {
            argv: spec.matrix_command.clone(),
            dir: spec.matrix_command_dir.as_ref().map(std::path::PathBuf::from),
            timeout,
        };
    }
    if spec.matrix_fn {
        return SetSource::Function { timeout };
    }
    SetSource::Static
}

pub(crate) fn expand_sets(spec: &PlanSpec, problems: &mut Problems) -> Vec<ParamSet> {
    if !spec.matrix.is_empty() && !spec.parameter_sets.is_empty() {
        problems.add(
            "parameter_sets",
            "give either `matrix` (every combination) or `parameter_sets` (an explicit list), not both",
        );
        return Vec::new();
    }
    if !spec.parameter_sets.is_empty() {
        let mut sets = Vec::new();
        let mut seen = BTreeMap::new();
        for (i, values) in spec.parameter_sets.iter().enumerate() {
            for (k, v) in values {
                let key = format!("parameter_sets[{i}].{k}");
                check_param_name(&key, k, problems);
                check_toml_value(&key, v, problems);
            }
            let set = ParamSet::new(values.clone());
            if let Some(first) = seen.insert(set.key.clone(), i) {
                problems.add(
                    format!("parameter_sets[{i}]"),
                    format!(
                        "repeats `parameter_sets[{first}]` ({}); each set launches once per tick, drop the copy",
                        set.key
                    ),
                );
            }
            sets.push(set);
        }
        if sets.len() > MAX_PARAMETER_SETS {
            problems.add("parameter_sets", format!("{} parameter sets, more than {MAX_PARAMETER_SETS}", sets.len()));
        }
        return sets;
    }
    let mut total: usize = 1;
    for (k, values) in &spec.matrix {
        let key = format!("matrix.{k}");
        check_param_name(&key, k, problems);
        if values.is_empty() {
            problems.add(&*key, "is empty; give at least one value or remove it");
        }
        let mut seen = BTreeSet::new();
        for v in values {
            check_toml_value(&key, v, problems);
            if !seen.insert(canonical_json(v)) {
                problems.add(&*key, format!("lists {} twice; each value launches once per tick", canonical_json(v)));
            }
        }
        total = total.saturating_mul(values.len());
    }
    if total > MAX_PARAMETER_SETS {
        problems.add(
            "matrix",
            format!(
                "expands to {total} parameter sets, more than {MAX_PARAMETER_SETS}; split the plan or use `parameter_sets`"
            ),
        );
        return Vec::new();
    }
    let mut sets: Vec<BTreeMap<String, Value>> = vec![BTreeMap::new()];
    for (k, values) in &spec.matrix {
        let mut next = Vec::with_capacity(sets.len() * values.len());
        for partial in &sets {
            for v in values {
                let mut s = partial.clone();
                s.insert(k.clone(), v.clone());
                next.push(s);
            }
        }
        sets = next;
    }
    sets.into_iter().map(ParamSet::new).collect()
}

/// Declares a plan in code; `build` validates it like a plan file would.
///
/// ```
/// use braid_runtime::plan::{Concurrency, LaunchPlan};
/// let plan = LaunchPlan::builder("data_sync_hourly", "data_sync")
///     .cron("0 * * * *", "America/New_York")
///     .matrix("site_id", ["site1", "site2", "site3"])
///     .default_input("full", false)
///     .label("team", "sync")
///     .concurrency(Concurrency::Skip)
///     .build()
///     .unwrap();
/// assert_eq!(plan.parameter_sets().len(), 3);
/// assert_eq!(plan.parameter_sets()[0].run_name(plan.name()), "data_sync_hourly_site1");
/// ```
#[derive(Debug, Clone)]
pub struct LaunchPlanBuilder {
    spec: PlanSpec,
    /// (key, message) of values that could not be made JSON.
    problems: Vec<(String, String)>,
    func: Option<MatrixFn>,
}

impl LaunchPlanBuilder {
    fn value(&mut self, key: String, v: impl Serialize) -> Value {
        serde_json::to_value(v).unwrap_or_else(|e| {
            self.problems.push((key, format!("cannot be made JSON: {e}")));
            Value::Null
        })
    }

    /// What the plan is for, shown by `braid plan show`.
    pub fn description(mut self, text: &str) -> Self {
        self.spec.description = Some(text.to_owned());
        self
    }

    /// A cron schedule (5 fields, or 6 with seconds) in an IANA time zone.
    pub fn cron(mut self, expr: &str, timezone: &str) -> Self {
        self.spec.cron = Some(expr.to_owned());
        self.spec.timezone = Some(timezone.to_owned());
        self
    }

    /// A fixed-rate schedule.
    pub fn every(mut self, every: Duration) -> Self {
        self.spec.every = Some(format_duration(every));
        self
    }

    /// An input every run gets and no launch can override.
    pub fn fixed(mut self, param: &str, value: impl Serialize) -> Self {
        let v = self.value(format!("fixed.{param}"), value);
        self.spec.fixed.insert(param.to_owned(), v);
        self
    }

    /// An input every run gets unless a manual launch overrides it.
    pub fn default_input(mut self, param: &str, value: impl Serialize) -> Self {
        let v = self.value(format!("defaults.{param}"), value);
        self.spec.defaults.insert(param.to_owned(), v);
        self
    }

    /// A matrix dimension: one parameter set per combination of every dimension's values.
    pub fn matrix<V: Serialize>(mut self, param: &str, values: impl IntoIterator<Item = V>) -> Self {
        let values: Vec<Value> = values.into_iter().map(|v| self.value(format!("matrix.{param}"), v)).collect();
        self.spec.matrix.insert(param.to_owned(), values);
        self
    }

    /// An explicit parameter set (instead of a matrix).
    pub fn parameter_set<V: Serialize>(mut self, values: impl IntoIterator<Item = (impl Into<String>, V)>) -> Self {
        let mut set = BTreeMap::new();
        let i = self.spec.parameter_sets.len();
        for (k, v) in values {
            let k = k.into();
            let v = self.value(format!("parameter_sets[{i}].{k}"), v);
            set.insert(k, v);
        }
        self.spec.parameter_sets.push(set);
        self
    }

    /// Parameter sets produced at each tick by `f`, given the tick: the team's list of
    /// sites can live in its own system. `f` returns the sets as JSON, an array of sets
    /// (`json!([{"site_id": "site1"}])`) or an object of parameter -> values
    /// (`json!({"site_id": ["site1", "site2"]})`), checked against the flow at each
    /// tick; an error, a panic, a timeout ([`Self::matrix_timeout`]) or sets that do not
    /// fit fail that tick, recorded as a failed tick (`braid plan show`). `f` runs on a
    /// blocking thread, so it may block (a database query, an HTTP call).
    ///
    /// The function lives in this binary: a scheduler calls it only when its
    /// [`LaunchEnv`](super::LaunchEnv) was given the plan (`with_plans`).
    pub fn matrix_fn<F, E>(mut self, f: F) -> Self
    where
        F: Fn(jiff::Timestamp) -> Result<Value, E> + Send + Sync + 'static,
        E: fmt::Display,
    {
        self.spec.matrix_fn = true;
        self.func = Some(MatrixFn(std::sync::Arc::new(move |tick| f(tick).map_err(|e| e.to_string()))));
        self
    }

    /// Parameter sets printed at each tick by a command (program and arguments, no
    /// shell; a relative program with `/` is taken against `dir`, where it also runs).
    /// What it prints is read like a [`Self::matrix_fn`]'s result.
    pub fn matrix_command<S: Into<String>>(
        mut self,
        argv: impl IntoIterator<Item = S>,
        dir: Option<&std::path::Path>,
    ) -> Self {
        self.spec.matrix_command = argv.into_iter().map(Into::into).collect();
        self.spec.matrix_command_dir = dir.map(|d| d.display().to_string());
        self
    }

    /// How long a [`Self::matrix_fn`] or [`Self::matrix_command`] may take (default 30 s).
    pub fn matrix_timeout(mut self, timeout: Duration) -> Self {
        self.spec.matrix_timeout = Some(format_duration(timeout));
        self
    }

    /// A label to select the plan by (`key=value`); checked by `build`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.spec.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// What a tick does while the previous run of its parameter set goes (default
    /// [`Concurrency::Allow`]).
    pub fn concurrency(mut self, c: Concurrency) -> Self {
        self.spec.concurrency = c;
        self
    }

    /// Pauses a parameter set after `n` consecutive failed runs (at least 1): its ticks
    /// are then recorded as skipped until `braid plan resume-set` or a new plan version.
    pub fn pause_after_failures(mut self, n: u32) -> Self {
        self.spec.pause_after_failures = Some(n);
        self
    }

    /// What happens to missed ticks (default [`CatchUp::Latest`]).
    pub fn catch_up(mut self, c: CatchUp) -> Self {
        match c {
            CatchUp::None { grace } => {
                self.spec.catch_up = CatchUpKind::None;
                self.spec.grace = (grace != DEFAULT_GRACE).then(|| format_duration(grace));
                self.spec.catch_up_limit = None;
            }
            CatchUp::Latest => {
                self.spec.catch_up = CatchUpKind::Latest;
                self.spec.grace = None;
                self.spec.catch_up_limit = None;
            }
            CatchUp::All { limit } => {
                self.spec.catch_up = CatchUpKind::All;
                self.spec.grace = None;
                self.spec.catch_up_limit = Some(limit);
            }
        }
        self
    }

    /// Whether the plan is active when first registered (default true).
    pub fn active(mut self, active: bool) -> Self {
        self.spec.active = active;
        self
    }

    /// Validates the plan on its own (name, schedule, labels, matrix, policies; its
    /// flow's parameters are checked when it is registered), every problem at once.
    pub fn build(self) -> PlanResult<LaunchPlan> {
        let plan = shown_name(&self.spec.name);
        let mut problems = Problems::new(plan.clone());
        for (key, message) in self.problems {
            problems.add(key, message);
        }
        match LaunchPlan::validate(self.spec) {
            Ok(p) if problems.list.is_empty() => Ok(LaunchPlan { func: self.func, ..p }),
            Ok(_) => Err(PlanError::Invalid { plan, problems: problems.list }),
            Err(mut found) => {
                found.extend(problems.list);
                Err(PlanError::Invalid { plan, problems: found })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matrix_expands_to_the_cartesian_product_in_order() {
        let p = LaunchPlan::builder("p", "f").matrix("b", [1, 2]).matrix("a", ["x", "y", "z"]).build().unwrap();
        let names: Vec<String> = p.parameter_sets().iter().map(|s| s.run_name(p.name())).collect();
        assert_eq!(names, ["p_x_1", "p_x_2", "p_y_1", "p_y_2", "p_z_1", "p_z_2"]);
        assert_eq!(p.parameter_sets()[0].key, r#"{"a":"x","b":1}"#);
        let none = LaunchPlan::builder("p", "f").build().unwrap();
        assert_eq!(none.parameter_sets().len(), 1);
        assert_eq!(none.parameter_sets()[0].key, "{}");
        assert_eq!(none.parameter_sets()[0].run_name(none.name()), "p");
    }

    #[test]
    fn new_policies_read_and_write_as_their_plan_file_words() {
        let text = r#"
            [[plan]]
            name = "p"
            flow = "f"
            concurrency = "cancel_other"
            pause_after_failures = 3
        "#;
        let plans = crate::plan::parse_plans(text, "t.toml").unwrap();
        assert_eq!(plans[0].concurrency(), Concurrency::CancelOther);
        assert_eq!(plans[0].pause_after_failures(), Some(3));
        assert_eq!(plans[0].to_json()["concurrency"], "cancel_other");
        let b = LaunchPlan::builder("p", "f").concurrency(Concurrency::BufferOne).build().unwrap();
        assert_eq!((b.concurrency().to_string(), b.pause_after_failures()), ("buffer_one".to_owned(), None));
        // A plan without the new key keeps the content hash it had.
        assert!(b.to_json().get("pause_after_failures").is_none());
    }

    #[test]
    fn run_names_stay_readable() {
        let p = LaunchPlan::builder("p", "f").parameter_set([("s", json!("a b/c"))]).build().unwrap();
        assert_eq!(p.parameter_sets()[0].run_name(p.name()), "p_a-b-c");
    }

    #[test]
    fn hash_ignores_the_initial_active_flag_and_order() {
        let a = LaunchPlan::builder("p", "f").label("x", "1").label("y", "2").active(false).build().unwrap();
        let b = LaunchPlan::builder("p", "f").label("y", "2").label("x", "1").build().unwrap();
        assert_eq!(a.content_hash(), b.content_hash());
        let c = LaunchPlan::builder("p", "f").label("x", "1").build().unwrap();
        assert_ne!(a.content_hash(), c.content_hash());
        let back = LaunchPlan::from_json(&a.to_json()).unwrap();
        assert_eq!(back.content_hash(), a.content_hash());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = LaunchPlan::builder("1bad", "f")
            .cron("0 * * *", "Nowhere/Land")
            .matrix("site", Vec::<String>::new())
            .catch_up(CatchUp::All { limit: 0 })
            .pause_after_failures(0)
            .label("team", "a b")
            .build()
            .unwrap_err()
            .to_string();
        for needle in [
            "plan 1bad: name: ",
            "plan 1bad: cron: \"0 * * *\" has 4 fields",
            "plan 1bad: timezone: \"Nowhere/Land\"",
            "plan 1bad: matrix.site: is empty",
            "plan 1bad: catch_up_limit: must be at least 1",
            "plan 1bad: pause_after_failures: must be at least 1",
            "plan 1bad: labels.team: label team=a b",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from {e}");
        }
    }
}
