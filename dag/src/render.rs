//! Drawing a [`FlowGraph`] as Mermaid or Graphviz DOT. Foreach edges are labelled with
//! their artifact, switch edges with their case; loop-back edges are dashed.

// Rendering writes into a `String` with `writeln!`, which cannot fail: its results
// are dropped with `let _`.
use std::fmt::Write as _;

use crate::{FlowGraph, StepKind, StepSpec, Transition};

/// One drawn edge: target, label, dashed.
fn edges(step: &StepSpec) -> Vec<(&str, String)> {
    match &step.next {
        Transition::End => Vec::new(),
        Transition::Next { to } => vec![(to.as_str(), String::new())],
        Transition::Split { to } => to.iter().map(|t| (t.as_str(), String::new())).collect(),
        Transition::Foreach { over, to } => vec![(to.as_str(), format!("foreach {over}"))],
        Transition::Switch { on, cases } => cases
            .iter()
            .flat_map(|(case, to)| to.steps().iter().map(move |t| (t.as_str(), format!("{on} = {case}"))))
            .collect(),
    }
}

/// Escapes text inside a quoted Mermaid label.
fn mermaid_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '|' => out.push_str("#124;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text inside a quoted DOT string.
fn dot_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl FlowGraph {
    /// A Mermaid `flowchart`. Node ids are prefixed (`s_end`) because `end` is a Mermaid
    /// keyword; start and end are rounded, joins are hexagons.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for step in self.steps() {
            let name = step.name.as_str();
            let (open, close) = match (step.kind, name) {
                (StepKind::Join, _) => ("{{", "}}"),
                (_, "start" | "end") => ("([", "])"),
                _ => ("[", "]"),
            };
            let _ = writeln!(out, "    s_{name}{open}\"{name}\"{close}");
        }
        for step in self.steps() {
            let from = step.name.as_str();
            for (to, label) in edges(step) {
                let arrow = if self.is_loop_back(from, to) { "-.->" } else { "-->" };
                if label.is_empty() {
                    let _ = writeln!(out, "    s_{from} {arrow} s_{to}");
                } else {
                    let label = mermaid_text(&label);
                    let _ = writeln!(out, "    s_{from} {arrow}|\"{label}\"| s_{to}");
                }
            }
        }
        out
    }

    /// A Graphviz `digraph`.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph \"{}\" {{", dot_text(self.name().as_str()));
        out.push_str("    node [shape=box, style=rounded];\n");
        for step in self.steps() {
            let name = step.name.as_str();
            let shape = match (step.kind, name) {
                (StepKind::Join, _) => ", shape=hexagon",
                (_, "start" | "end") => ", shape=oval",
                _ => "",
            };
            let tooltip = step.doc.as_deref().map(|d| format!(", tooltip=\"{}\"", dot_text(d))).unwrap_or_default();
            let _ = writeln!(out, "    \"{name}\" [label=\"{name}\"{shape}{tooltip}];");
        }
        for step in self.steps() {
            let from = step.name.as_str();
            for (to, label) in edges(step) {
                let mut attrs = Vec::new();
                if !label.is_empty() {
                    attrs.push(format!("label=\"{}\"", dot_text(&label)));
                }
                if self.is_loop_back(from, to) {
                    attrs.push("style=dashed".to_owned());
                }
                let attrs = if attrs.is_empty() { String::new() } else { format!(" [{}]", attrs.join(", ")) };
                let _ = writeln!(out, "    \"{from}\" -> \"{to}\"{attrs};");
            }
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::{FlowBuilder, FlowGraph, Next};

    fn graph() -> FlowGraph {
        FlowBuilder::new("render")
            .step("start", Next::foreach("items", "work"))
            .step("work", Next::to("join"))
            .join("join", Next::to("check"))
            .step("check", Next::switch("state", [("again", "check"), ("done|\"x\"", "end")]))
            .step("end", Next::End)
            .doc("work", "line1\n\"quoted\"")
            .build()
            .unwrap()
    }

    #[test]
    fn mermaid_has_every_step_and_edge() {
        let m = graph().to_mermaid();
        assert!(m.starts_with("flowchart TD\n"), "{m}");
        for node in
            ["s_start([\"start\"])", "s_work[\"work\"]", "s_join{{\"join\"}}", "s_check[\"check\"]", "s_end([\"end\"])"]
        {
            assert!(m.contains(node), "{node} missing:\n{m}");
        }
        for edge in [
            "s_start -->|\"foreach items\"| s_work",
            "s_work --> s_join",
            "s_join --> s_check",
            "s_check -.->|\"state = again\"| s_check",
            "s_check -->|\"state = done#124;#quot;x#quot;\"| s_end",
        ] {
            assert!(m.contains(edge), "{edge} missing:\n{m}");
        }
    }

    #[test]
    fn dot_has_every_step_and_edge() {
        let d = graph().to_dot();
        assert!(d.starts_with("digraph \"render\" {\n") && d.ends_with("}\n"), "{d}");
        for node in ["\"start\" [label=\"start\", shape=oval]", "\"join\" [label=\"join\", shape=hexagon]"] {
            assert!(d.contains(node), "{node} missing:\n{d}");
        }
        assert!(d.contains("tooltip=\"line1\\n\\\"quoted\\\"\""), "{d}");
        for edge in [
            "\"start\" -> \"work\" [label=\"foreach items\"];",
            "\"work\" -> \"join\";",
            "\"join\" -> \"check\";",
            "\"check\" -> \"check\" [label=\"state = again\", style=dashed];",
            "\"check\" -> \"end\" [label=\"state = done|\\\"x\\\"\"];",
        ] {
            assert!(d.contains(edge), "{edge} missing:\n{d}");
        }
    }
}
