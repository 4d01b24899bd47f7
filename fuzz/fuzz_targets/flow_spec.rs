//! Flow specs as stored and as `braid dag` reads them: `FlowSpec::from_json`, the graph
//! validation of `FlowGraph::from_spec`, the lookups the executor makes, and rendering to
//! Mermaid and DOT. Properties: no panic and no hang; a spec that validates writes to
//! JSON that reads back to the same graph; the renderings quote every label.
#![no_main]

use braid_dag::{FlowGraph, FlowSpec, Transition};
use libfuzzer_sys::fuzz_target;

/// Each line of a DOT rendering has its double quotes paired (escaped ones aside).
fn dot_quotes_balanced(dot: &str) -> bool {
    dot.lines().all(|line| {
        let mut open = false;
        let mut escaped = false;
        for c in line.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' if open => escaped = true,
                '"' => open = !open,
                _ => {}
            }
        }
        !open
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spec) = FlowSpec::from_json(text) else { return };
    let graph = match FlowGraph::from_spec(spec.clone()) {
        Ok(g) => g,
        Err(errors) => {
            assert!(!errors.is_empty(), "an invalid spec names at least one problem");
            assert!(!errors.to_string().is_empty());
            return;
        }
    };

    let json = graph.to_json().expect("a valid spec writes to JSON");
    let again = FlowGraph::from_json(&json).unwrap_or_else(|e| panic!("{json} does not read back: {e}"));
    assert_eq!(again.spec(), graph.spec());

    let order = graph.topological_order();
    assert_eq!(order.len(), graph.steps().len(), "topological order misses steps");
    for step in graph.steps() {
        let name = step.name.as_str();
        assert!(graph.step(name).is_some());
        for parent in graph.parents(name) {
            assert!(graph.step(parent.as_str()).is_some(), "parent {parent} of {name} is not a step");
        }
        for target in step.next.targets() {
            let _ = graph.is_loop_back(name, target.as_str());
        }
        if matches!(step.next, Transition::Split { .. } | Transition::Foreach { .. }) {
            assert!(graph.join_of(name).is_some(), "fan-out {name} has no join");
        }
        let _ = graph.fanout_stack(name);
        let _ = graph.foreach_depth(name);
        let _ = graph.fanout_of(name);
    }
    for p in graph.params() {
        assert!(graph.param(p.name.as_str()).is_some());
    }

    let mermaid = graph.to_mermaid();
    assert!(mermaid.starts_with("flowchart TD\n"));
    for line in mermaid.lines().skip(1) {
        assert!(line.starts_with("    s_"), "{line:?}");
        assert!(line.matches('"').count() <= 2, "unescaped quote in {line:?}");
    }
    let dot = graph.to_dot();
    assert!(dot.starts_with("digraph \"") && dot.ends_with("}\n"));
    assert!(dot_quotes_balanced(&dot), "unbalanced quotes in\n{dot}");
});
