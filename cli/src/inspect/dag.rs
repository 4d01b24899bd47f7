//! `braid dag FLOW [--mermaid|--dot]`: the flow's graph, from its stored spec.

use braid_client::Client;
use braid_dag::{StepKind, Transition};

use super::error::{Error, Result};
use super::output::Out;

pub fn dag(client: &Client, out: &Out, flow: &str, mermaid: bool, dot: bool) -> Result<()> {
    let flow = client.flow(flow)?;
    if out.json {
        return match flow.spec() {
            Some(spec) => out.json(spec),
            None => Err(Error::NoSpec { flow: flow.name().to_string() }),
        };
    }
    let graph = flow.graph()?.ok_or_else(|| Error::NoSpec { flow: flow.name().to_string() })?;
    if mermaid {
        return out.print(&with_newline(graph.to_mermaid()));
    }
    if dot {
        return out.print(&with_newline(graph.to_dot()));
    }
    // Text: one line per step, in declaration order.
    let label = |s: &braid_dag::StepSpec| {
        if s.kind == StepKind::Join { format!("{} (join)", s.name) } else { s.name.to_string() }
    };
    let width = graph.steps().iter().map(|s| label(s).len()).max().unwrap_or(0);
    let mut text = format!("flow {}\n", graph.name());
    for p in graph.params() {
        let default = match &p.default {
            Some(d) => format!(" = {d}"),
            None if p.optional => String::new(),
            None => " (required)".to_owned(),
        };
        text.push_str(&format!("  param {}: {}{default}\n", p.name, p.type_text()));
    }
    for s in graph.steps() {
        let next = match &s.next {
            Transition::End => "end of flow".to_owned(),
            Transition::Next { to } => format!("→ {to}"),
            Transition::Split { to } => {
                format!("→ split: {}", to.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", "))
            }
            Transition::Foreach { over, to } => format!("→ foreach item of `{over}`: {to}"),
            Transition::Switch { on, cases } => format!(
                "→ switch on `{on}`: {}",
                cases.iter().map(|(k, v)| format!("{k} → {v}")).collect::<Vec<_>>().join(", ")
            ),
        };
        text.push_str(&format!("  {:<width$}  {next}\n", label(s)));
    }
    out.print(&text)
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}
