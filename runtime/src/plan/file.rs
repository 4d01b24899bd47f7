//! Plan files: TOML with one `[[plan]]` table per plan.
//!
//! ```toml
//! [[plan]]
//! name = "data_sync_hourly"
//! flow = "data_sync"
//! cron = "0 * * * *"
//! timezone = "America/New_York"
//! labels = { team = "sync" }
//! matrix = { site_id = ["site1", "site2", "site3"] }
//! defaults = { full = false }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::error::{PlanError, PlanProblem, PlanResult};
use super::model::{LaunchPlan, PlanSpec, Problems, check_flow_spec};
use crate::flow::Flow;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    plan: Vec<toml::Value>,
}

/// The keys of a `[[plan]]` table, as [`PlanSpec`] names its fields.
pub(crate) const PLAN_KEYS: &[&str] = &[
    "name",
    "flow",
    "description",
    "cron",
    "timezone",
    "every",
    "fixed",
    "defaults",
    "matrix",
    "parameter_sets",
    "matrix_command",
    "matrix_command_dir",
    "matrix_timeout",
    "matrix_fn",
    "labels",
    "active",
    "concurrency",
    "catch_up",
    "catch_up_limit",
    "grace",
    "pause_after_failures",
];

/// Parses plan file text (`source` names it in errors) and validates every plan on its
/// own (names, schedule, labels, matrix, policies). If any plan is invalid, the error
/// lists every problem of every plan, each naming the plan and the key.
pub fn parse_plans(text: &str, source: &str) -> PlanResult<Vec<LaunchPlan>> {
    check(text, source, None, None)
}

/// [`parse_plans`], and every plan checked against the flows of this binary too (its flow
/// is hosted; its inputs exist, have their types and cover the required parameters),
/// even a plan that has other problems: one error lists every problem of the file.
pub fn check_plan_text(text: &str, source: &str, flows: &[Arc<Flow>]) -> PlanResult<Vec<LaunchPlan>> {
    check(text, source, Some(flows), None)
}

/// Reads a plan file and checks it ([`check_plan_text`]). A plan's `matrix_command`
/// runs in the file's directory (or in `matrix_command_dir` taken against it), recorded
/// as an absolute path, so a scheduler started anywhere finds `./list-sites`.
pub fn check_plan_file(path: &Path, flows: &[Arc<Flow>]) -> PlanResult<Vec<LaunchPlan>> {
    let text = read(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let base = std::path::absolute(&parent).map_err(|e| PlanError::File {
        path: path.display().to_string(),
        reason: format!("cannot tell its directory: {e}"),
    })?;
    check(&text, &path.display().to_string(), Some(flows), Some(&base))
}

fn read(path: &Path) -> PlanResult<String> {
    std::fs::read_to_string(path)
        .map_err(|e| PlanError::File { path: path.display().to_string(), reason: format!("cannot read it: {e}") })
}

fn check(
    text: &str,
    source: &str,
    flows: Option<&[Arc<Flow>]>,
    base_dir: Option<&Path>,
) -> PlanResult<Vec<LaunchPlan>> {
    // A syntax error stops here: one error, with its line and column.
    let file: PlanFile = toml::from_str(text).map_err(|e| PlanError::File {
        path: source.to_owned(),
        reason: e.to_string().trim_end().replace('\n', "\n  "),
    })?;
    if file.plan.is_empty() {
        return Err(PlanError::File {
            path: source.to_owned(),
            reason: "no plans in it; declare each with a `[[plan]]` table (name, flow, ...)".into(),
        });
    }
    let total = file.plan.len();
    let mut plans = Vec::with_capacity(total);
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, raw) in file.plan.into_iter().enumerate() {
        let label = match raw.get("name").and_then(|n| n.as_str()) {
            Some(n) if !n.is_empty() => {
                if let Some(first) = seen.insert(n.to_owned(), i) {
                    problems.push(PlanProblem::new(
                        n,
                        "name",
                        format!("declared twice in the file (tables {} and {}); keep one", first + 1, i + 1),
                    ));
                }
                n.to_owned()
            }
            _ => format!("#{} (unnamed)", i + 1),
        };
        let mut found = Problems::new(label.clone());
        let Some(mut spec) = spec_from_toml(raw, &mut found) else {
            problems.extend(found.list);
            continue;
        };
        if spec.matrix_fn {
            found.add(
                "matrix_fn",
                "is set by `LaunchPlanBuilder::matrix_fn` in Rust; a plan file gives `matrix_command = [\"./list-sites\"]`",
            );
        }
        if let Some(base) = base_dir
            && !spec.matrix_command.is_empty()
        {
            let dir = match &spec.matrix_command_dir {
                Some(d) => base.join(d),
                None => base.to_path_buf(),
            };
            spec.matrix_command_dir = Some(dir.display().to_string());
        }
        // The schema and the flow are both checked, whatever the other finds.
        let checked = match LaunchPlan::validate(spec.clone()) {
            Ok(plan) => Some(plan),
            Err(schema) => {
                found.list.extend(schema.into_iter().map(|p| PlanProblem { plan: label.clone(), ..p }));
                None
            }
        };
        if let Some(flows) = flows {
            match flows.iter().find(|f| f.name().as_str() == spec.flow) {
                Some(f) => found.list.extend(check_flow_spec(&spec, &label, f.spec())),
                // An invalid flow name is reported by the schema check already.
                None if braid_core::FlowName::new(&spec.flow).is_ok() => found.add(
                    "flow",
                    format!(
                        "`{}` is not hosted by this binary (it hosts {}); apply the plan with the binary that runs `{}`",
                        spec.flow,
                        flows.iter().map(|f| format!("`{}`", f.name())).collect::<Vec<_>>().join(", "),
                        spec.flow
                    ),
                ),
                None => {}
            }
        }
        match checked {
            Some(p) if found.list.is_empty() => plans.push(p),
            _ => problems.extend(found.list),
        }
    }
    if !problems.is_empty() {
        return Err(PlanError::rejected(source, total, problems));
    }
    Ok(plans)
}

/// A `[[plan]]` table as a [`PlanSpec`]. Unknown keys and keys whose value has the wrong
/// shape are each a problem (with the closest known key for a typo); the other keys are
/// still read, so the plan is checked as far as it can be. `None` only when what is
/// left still does not make a spec.
fn spec_from_toml(raw: toml::Value, problems: &mut Problems) -> Option<PlanSpec> {
    let toml::Value::Table(mut table) = raw else {
        problems.add("", "is not a table; write each plan as a `[[plan]]` table with keys name, flow, ...");
        return None;
    };
    let known: Vec<String> = PLAN_KEYS.iter().map(|k| (*k).to_owned()).collect();
    let unknown: Vec<String> = table.keys().filter(|k| !PLAN_KEYS.contains(&k.as_str())).cloned().collect();
    for k in unknown {
        table.remove(&k);
        let hint = match braid_dag::suggest(&k, &known) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("the keys are {}", PLAN_KEYS.join(", ")),
        };
        problems.add(k, format!("unknown key; {hint}"));
    }
    if let Ok(spec) = table.clone().try_into::<PlanSpec>() {
        return Some(spec);
    }
    // Find each key whose value does not fit, on its own beside placeholders.
    for (k, v) in table.clone() {
        let mut alone = toml::Table::new();
        alone.insert("name".into(), toml::Value::String("x".into()));
        alone.insert("flow".into(), toml::Value::String("x".into()));
        alone.insert(k.clone(), v);
        if let Err(e) = alone.try_into::<PlanSpec>() {
            table.remove(&k);
            problems.add(k, e.to_string().trim_end());
        }
    }
    for required in ["name", "flow"] {
        if !table.contains_key(required) {
            problems.add(required, "missing; every plan needs `name` and `flow`");
        }
    }
    match table.try_into::<PlanSpec>() {
        Ok(spec) => Some(spec),
        Err(e) if problems.list.is_empty() => {
            problems.add("", e.to_string().trim_end());
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_file_and_names_bad_plans() {
        let text = r#"
[[plan]]
name = "ok"
flow = "f"
cron = "0 * * * *"
matrix = { site = ["a", "b"] }

[[plan]]
name = "typo"
flow = "f"
crn = "0 * * * *"

[[plan]]
name = "badcron"
flow = "f"
cron = "61 * * * *"
"#;
        let e = parse_plans(text, "plans.toml").unwrap_err().to_string();
        assert!(e.contains("2 of 3 plans in plans.toml"), "{e}");
        assert!(e.contains("plan typo: crn: unknown key; did you mean `cron`?"), "{e}");
        assert!(e.contains("plan badcron: cron: \"61 * * * *\""), "{e}");
        assert!(!e.contains("plan ok"), "{e}");
        let ok = parse_plans(&text[..text.find("[[plan]]\nname = \"typo\"").unwrap()], "x").unwrap();
        assert_eq!(ok[0].parameter_sets().len(), 2);
        let e = parse_plans("plan = 3", "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml"), "{e}");
        let e = parse_plans("", "x.toml").unwrap_err().to_string();
        assert!(e.contains("[[plan]]"), "{e}");
    }

    #[test]
    fn keys_of_the_wrong_shape_are_each_named_and_the_rest_still_checked() {
        let text = r#"
[[plan]]
name = "p"
flow = "f"
cron = 5
concurrency = "sometimes"
timezone = "Mars/Base"
every = "15m"
"#;
        let e = parse_plans(text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("plan p: cron: ") && e.contains("integer"), "{e}");
        assert!(e.contains("plan p: concurrency: ") && e.contains("sometimes"), "{e}");
        // Read without the bad keys: `timezone` with `every` is still found.
        assert!(e.contains("plan p: timezone: applies to `cron`"), "{e}");
    }

    #[test]
    fn plan_keys_match_the_spec() {
        let spec = PlanSpec {
            description: Some("d".into()),
            cron: Some("c".into()),
            timezone: Some("t".into()),
            every: Some("e".into()),
            fixed: [("a".to_owned(), serde_json::json!(1))].into(),
            defaults: [("a".to_owned(), serde_json::json!(1))].into(),
            matrix: [("a".to_owned(), vec![serde_json::json!(1)])].into(),
            parameter_sets: vec![[("a".to_owned(), serde_json::json!(1))].into()],
            matrix_command: vec!["x".into()],
            matrix_command_dir: Some("d".into()),
            matrix_timeout: Some("1s".into()),
            matrix_fn: true,
            labels: [("a".to_owned(), "b".to_owned())].into(),
            catch_up_limit: Some(1),
            grace: Some("1m".into()),
            pause_after_failures: Some(2),
            ..Default::default()
        };
        let serde_json::Value::Object(m) = serde_json::to_value(&spec).unwrap() else { panic!() };
        let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
        keys.push("active"); // never serialized: not part of the content
        keys.sort_unstable();
        let mut expected = PLAN_KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }
}
