//! The rows every bench that `cargo xtask bench` runs writes: JSON with `--json-out FILE`,
//! else one aligned line each. Shared by cli's benches through `#[path]`.
#![allow(dead_code)] // Each includer uses a part.

use std::path::Path;

use serde_json::{Value, json};

/// One figure of a bench section.
pub fn row(section: &str, name: impl Into<String>, value: Option<f64>, unit: &str, note: impl Into<String>) -> Value {
    json!({ "section": section, "name": name.into(), "value": value, "unit": unit, "note": note.into() })
}

/// Writes `rows` to `json_out`, or prints them.
pub fn emit(rows: &[Value], json_out: Option<&Path>) {
    match json_out {
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(rows).unwrap()).unwrap(),
        None => {
            for r in rows {
                println!(
                    "  {:<14} {:<48} {:>14} {:<6} {}",
                    r["section"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or(""),
                    r["value"].as_f64().map_or("-".into(), |v| format!("{v:.3}")),
                    r["unit"].as_str().unwrap_or(""),
                    r["note"].as_str().unwrap_or("")
                );
            }
        }
    }
}
