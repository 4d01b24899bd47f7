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

use std::path::Path;

use serde::Deserialize;

use super::error::{PlanError, PlanResult};
use super::model::{LaunchPlan, PlanSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    #[serde(default)]
    plan: Vec<toml::Value>,
}

/// Parses plan file text (`source` names it in errors). Every plan is validated on its
/// own; if any is invalid the error lists each bad plan with its problems.
pub fn parse_plans(text: &str, source: &str) -> PlanResult<Vec<LaunchPlan>> {
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
    let mut bad = Vec::new();
    for (i, raw) in file.plan.into_iter().enumerate() {
        let label = raw
            .get("name")
            .and_then(|n| n.as_str())
            .map(|n| format!("plan `{n}`"))
            .unwrap_or_else(|| format!("plan #{} (unnamed)", i + 1));
        let spec: PlanSpec = match raw.try_into() {
            Ok(s) => s,
            Err(e) => {
                bad.push(format!("{label}:\n  - {}", e.to_string().trim_end()));
                continue;
            }
        };
        match LaunchPlan::validate(spec) {
            Ok(p) => plans.push(p),
            Err((_, problems)) => bad.push(format!(
                "{label}:\n{}",
                problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
            )),
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    for (i, p) in plans.iter().enumerate() {
        if seen.insert(p.name().clone(), i).is_some() {
            bad.push(format!("plan `{}`:\n  - declared twice in the file; keep one", p.name()));
        }
    }
    if !bad.is_empty() {
        return Err(PlanError::Rejected {
            source_name: source.to_owned(),
            bad: bad.len(),
            total,
            problems: bad.join("\n"),
        });
    }
    Ok(plans)
}

/// Reads and parses a plan file.
pub fn load_plan_file(path: &Path) -> PlanResult<Vec<LaunchPlan>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PlanError::File { path: path.display().to_string(), reason: format!("cannot read it: {e}") })?;
    parse_plans(&text, &path.display().to_string())
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
        assert!(e.contains("plan `typo`") && e.contains("crn"), "{e}");
        assert!(e.contains("plan `badcron`") && e.contains("\"61 * * * *\""), "{e}");
        assert!(!e.contains("plan `ok`"), "{e}");
        let ok = parse_plans(&text[..text.find("[[plan]]\nname = \"typo\"").unwrap()], "x").unwrap();
        assert_eq!(ok[0].parameter_sets().len(), 2);
        let e = parse_plans("plan = 3", "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml"), "{e}");
        let e = parse_plans("", "x.toml").unwrap_err().to_string();
        assert!(e.contains("[[plan]]"), "{e}");
    }
}
