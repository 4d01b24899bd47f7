//! Parameter sets produced at each tick: by a command of the plan file
//! (`matrix_command = ["./list-sites"]`) or by a function of the binary that declared the
//! plan ([`LaunchPlanBuilder::matrix_fn`](super::LaunchPlanBuilder::matrix_fn)).
//!
//! Either prints (returns) JSON in one of two shapes: an array of parameter sets,
//! `[{"site_id": "site1"}, {"site_id": "site2"}]`, or a matrix, `{"site_id": ["site1",
//! "site2"]}` (every combination). What comes back is checked like a plan file's
//! `parameter_sets` or `matrix`: parameter names, the flow's types, duplicates, at most
//! 10,000 sets, every required parameter covered; any problem, a non-zero exit, a
//! timeout or output past [`MAX_MATRIX_OUTPUT`] fails the tick, and the caller records
//! that failure ([`braid_store::TickFailure`]) instead of launching nothing in silence.
//!
//! The command runs without a shell: `argv[0]` is looked up on `PATH`, or, when it
//! contains a `/`, taken relative to the plan file's directory (its working directory
//! too). It gets `BRAID_PLAN`, `BRAID_PLAN_VERSION`, `BRAID_FLOW` and `BRAID_TICK` (RFC
//! 3339, UTC) in its environment, no stdin, and is killed when it runs past its timeout
//! (30 s unless `matrix_command_timeout` says otherwise). A function runs on a blocking
//! thread under the same timeout.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use braid_core::PlanName;
use braid_dag::FlowSpec;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::model::{LaunchPlan, ParamSet, PlanSpec, Problems, check_flow_spec, expand_sets};
use super::schedule::format_duration;

/// Most bytes a `matrix_command` may print on stdout (1 MiB: 10,000 sets of ~100 bytes).
pub const MAX_MATRIX_OUTPUT: usize = 1 << 20;
/// How much of a failed command's stderr its failure keeps: the end of it.
const STDERR_TAIL: usize = 2048;
/// How long a command or function may take unless the plan says otherwise.
pub(crate) const DEFAULT_MATRIX_TIMEOUT: Duration = Duration::from_secs(30);

/// A plan's parameter set function: given the tick, the sets as JSON (an array of
/// objects, or an object of parameter -> values), or why it could not produce them.
pub(crate) type MatrixFnInner = dyn Fn(jiff::Timestamp) -> Result<Value, String> + Send + Sync;

/// A [`LaunchPlanBuilder::matrix_fn`](super::LaunchPlanBuilder::matrix_fn), shared.
#[derive(Clone)]
pub(crate) struct MatrixFn(pub(crate) Arc<MatrixFnInner>);

impl fmt::Debug for MatrixFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MatrixFn")
    }
}

/// The functions of the plans declared in this binary's code, by plan name.
pub(crate) type MatrixFns = HashMap<PlanName, MatrixFn>;

/// Where a plan's parameter sets come from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SetSource {
    /// The plan's own `matrix` or `parameter_sets`, the same at every tick.
    Static,
    /// A command, run at each tick.
    Command {
        /// Program and arguments (no shell).
        argv: Vec<String>,
        /// Where it runs (and where a relative program is found); `None`: the
        /// scheduler's working directory.
        dir: Option<PathBuf>,
        /// How long it may take.
        timeout: Duration,
    },
    /// A function of the binary that declared the plan, called at each tick.
    Function {
        /// How long it may take.
        timeout: Duration,
    },
}

impl fmt::Display for SetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetSource::Static => f.write_str("the plan's matrix"),
            SetSource::Command { argv, .. } => write!(f, "command {}", shown_argv(argv)),
            SetSource::Function { .. } => f.write_str("the plan's matrix_fn"),
        }
    }
}

fn shown_argv(argv: &[String]) -> String {
    let words: Vec<String> = argv
        .iter()
        .map(|a| if a.is_empty() || a.contains(char::is_whitespace) { format!("{a:?}") } else { a.clone() })
        .collect();
    format!("`{}`", words.join(" "))
}

/// Produces the parameter sets of `plan` (at `version`, of `flow`) for `tick`: the
/// static ones, or what its command or function gives, checked. The error says what
/// went wrong in words a tick failure keeps.
pub(crate) async fn produce_sets(
    plan: &LaunchPlan,
    version: u32,
    flow: &FlowSpec,
    tick: jiff::Timestamp,
    fns: &MatrixFns,
) -> Result<Vec<ParamSet>, String> {
    let value = match plan.set_source() {
        SetSource::Static => return Ok(plan.parameter_sets().to_vec()),
        SetSource::Command { argv, dir, timeout } => {
            let env = [
                ("BRAID_PLAN", plan.name().to_string()),
                ("BRAID_PLAN_VERSION", version.to_string()),
                ("BRAID_FLOW", plan.flow().to_string()),
                ("BRAID_TICK", tick.to_string()),
            ];
            let out = run_command(&argv, dir.as_deref(), timeout, &env).await?;
            serde_json::from_slice::<Value>(&out).map_err(|e| {
                format!(
                    "{} printed something that is not JSON ({e}); print an array of parameter sets, \
                     [{{\"site_id\": \"site1\"}}, ...], or an object of parameter -> values",
                    shown_argv(&argv)
                )
            })?
        }
        SetSource::Function { timeout } => {
            let f = fns.get(plan.name()).cloned().ok_or_else(|| {
                format!(
                    "the plan's parameter sets come from a function (`matrix_fn`) that this binary does not declare; \
                     run the scheduler from the binary whose code declares plan `{}`",
                    plan.name()
                )
            })?;
            let call = tokio::task::spawn_blocking(move || (f.0)(tick));
            match tokio::time::timeout(timeout, call).await {
                Err(_) => {
                    return Err(format!(
                        "matrix_fn did not return within {}; make it faster or raise `.matrix_timeout(..)`",
                        format_duration(timeout)
                    ));
                }
                Ok(Err(panic)) => return Err(format!("matrix_fn panicked: {panic}")),
                Ok(Ok(Err(e))) => return Err(format!("matrix_fn failed: {e}")),
                Ok(Ok(Ok(v))) => v,
            }
        }
    };
    check_sets(plan, flow, value)
}

/// What a command or function gave, as the plan's sets: checked like a plan file's
/// `parameter_sets` (an array) or `matrix` (an object), every problem at once.
pub(crate) fn check_sets(plan: &LaunchPlan, flow: &FlowSpec, value: Value) -> Result<Vec<ParamSet>, String> {
    let mut spec = PlanSpec {
        name: plan.name().to_string(),
        flow: plan.flow().to_string(),
        fixed: plan.fixed().clone(),
        defaults: plan.defaults().clone(),
        ..Default::default()
    };
    let shape = "print an array of parameter sets, [{\"site_id\": \"site1\"}, ...], or an object of parameter -> values, {\"site_id\": [\"site1\", ...]}";
    match value {
        Value::Array(items) => {
            let mut bad = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::Object(m) => spec.parameter_sets.push(m.into_iter().collect()),
                    other => bad.push(format!("parameter_sets[{i}]: is {other}, not an object of parameter -> value")),
                }
            }
            if !bad.is_empty() {
                return Err(format!("the parameter sets do not fit:\n  {}\n  ({shape})", bad.join("\n  ")));
            }
            if spec.parameter_sets.is_empty() {
                return Ok(Vec::new());
            }
        }
        Value::Object(m) => {
            let mut bad = Vec::new();
            for (k, v) in m {
                match v {
                    Value::Array(values) => {
                        spec.matrix.insert(k, values);
                    }
                    other => bad.push(format!("matrix.{k}: is {other}, not a list of values")),
                }
            }
            if !bad.is_empty() {
                return Err(format!("the parameter sets do not fit:\n  {}\n  ({shape})", bad.join("\n  ")));
            }
        }
        other => {
            let what = match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                _ => "a string",
            };
            return Err(format!("the parameter sets are {what}; {shape}"));
        }
    }
    let mut problems = Problems::new(plan.name().as_str());
    let sets = expand_sets(&spec, &mut problems);
    problems.list.extend(check_flow_spec(&spec, plan.name().as_str(), flow));
    if problems.list.is_empty() {
        return Ok(sets);
    }
    let lines: Vec<String> = problems
        .list
        .iter()
        .map(|p| if p.key.is_empty() { p.message.clone() } else { format!("{}: {}", p.key, p.message) })
        .collect();
    Err(format!("the parameter sets do not fit flow `{}`:\n  {}", plan.flow(), lines.join("\n  ")))
}

/// Runs `argv` in `dir` and returns its stdout, or why it failed.
async fn run_command(
    argv: &[String],
    dir: Option<&Path>,
    timeout: Duration,
    env: &[(&str, String)],
) -> Result<Vec<u8>, String> {
    let shown = shown_argv(argv);
    let Some((program, args)) = argv.split_first() else {
        return Err("matrix_command is empty".to_owned());
    };
    if let Some(d) = dir
        && !d.is_dir()
    {
        return Err(format!(
            "cannot run {shown}: its directory {} does not exist (the plan file's directory when it was applied; \
             apply the plan file again from where it lives now)",
            d.display()
        ));
    }
    // A relative program with a `/` is the plan file's, whatever the scheduler's cwd.
    let program = match dir {
        Some(d) if program.contains('/') && Path::new(program).is_relative() => d.join(program),
        _ => PathBuf::from(program),
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| {
        let place = dir.map(|d| format!(" in {}", d.display())).unwrap_or_default();
        format!(
            "cannot start {shown}{place}: {e}; check that the program exists and is executable \
             (a path with `/` is relative to the plan file's directory, a bare name is looked up on PATH)"
        )
    })?;
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(format!("cannot read the output of {shown}"));
    };
    let work = async {
        let mut out = Vec::new();
        let read_out = async {
            let mut limited = (&mut stdout).take(MAX_MATRIX_OUTPUT as u64 + 1);
            limited.read_to_end(&mut out).await
        };
        let mut tail = Vec::new();
        let read_err = async {
            let mut buf = [0u8; 4096];
            loop {
                let n = stderr.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        };
        let (o, e) = tokio::join!(read_out, read_err);
        o.map_err(|e| format!("cannot read the output of {shown}: {e}"))?;
        e.map_err(|e| format!("cannot read the errors of {shown}: {e}"))?;
        if out.len() > MAX_MATRIX_OUTPUT {
            return Err(format!(
                "{shown} printed more than {} KiB; print at most {} parameter sets, compactly",
                MAX_MATRIX_OUTPUT / 1024,
                super::model::MAX_PARAMETER_SETS
            ));
        }
        let status = child.wait().await.map_err(|e| format!("cannot wait for {shown}: {e}"))?;
        Ok((status, out, tail))
    };
    let (status, out, tail) = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r?,
        Err(_) => {
            // The child is killed on drop too; say so first.
            let _ = child.start_kill();
            return Err(format!(
                "{shown} did not finish within {}; it was killed (make it faster or raise `matrix_command_timeout`)",
                format_duration(timeout)
            ));
        }
    };
    if status.success() {
        return Ok(out);
    }
    let tail = String::from_utf8_lossy(&tail[tail.len().saturating_sub(STDERR_TAIL)..]).trim().to_owned();
    let how = match status.code() {
        Some(c) => format!("exited with status {c}"),
        None => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                format!("was killed by signal {}", status.signal().unwrap_or(0))
            }
            #[cfg(not(unix))]
            {
                "was killed".to_owned()
            }
        }
    };
    Err(if tail.is_empty() {
        format!("{shown} {how} (it printed nothing on stderr)")
    } else {
        format!("{shown} {how}; its stderr ends:\n  {}", tail.replace('\n', "\n  "))
    })
}
