//! [`FlowGraph`]: a validated, immutable flow graph with the lookups the executor needs.

use std::collections::HashMap;

use braid_core::{FlowName, StepName};
use serde::{Deserialize, Serialize};

use crate::builder::Decl;
use crate::validate::{self, Analysis, ValidationError, ValidationErrors};
use crate::{Error, FORMAT_VERSION, FlowSpec, Param, ParamSpec, StepSpec};

/// A validated flow graph. Built by [`FlowBuilder::build`](crate::FlowBuilder::build) or
/// [`FlowGraph::from_spec`]; all structural queries are precomputed lookups.
/// Serializes as its [`FlowSpec`] and re-validates when deserialized.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "FlowSpec", try_from = "FlowSpec")]
pub struct FlowGraph {
    spec: FlowSpec,
    index: HashMap<StepName, usize>,
    info: Vec<StepInfo>,
    topo: Vec<StepName>,
}

#[derive(Debug, Clone, Default)]
struct StepInfo {
    parents: Vec<StepName>,
    fanout_stack: Vec<StepName>,
    foreach_depth: usize,
    join_of: Option<StepName>,
    fanout_of: Option<StepName>,
    /// Targets of this step's loop-back switch cases.
    loops_to: Vec<StepName>,
    /// For a switch: the join that closes each case that fans out.
    case_joins: Vec<(String, StepName)>,
}

impl FlowGraph {
    /// Validates a spec (e.g. one read from JSON) and freezes it.
    pub fn from_spec(spec: FlowSpec) -> Result<FlowGraph, ValidationErrors> {
        let mut errors = Vec::new();
        if spec.format_version != FORMAT_VERSION {
            errors.push(ValidationError::FormatVersion { found: spec.format_version });
        }
        let params: Vec<Param> = spec.params.iter().cloned().map(Param::from).collect();
        let decls: Vec<Decl> = spec
            .steps
            .iter()
            .map(|s| Decl {
                name: s.name.as_str().to_owned(),
                kind: s.kind,
                next: (&s.next).into(),
                doc: s.doc.clone(),
            })
            .collect();
        let analysis = validate::analyze(spec.name.as_str(), &params, &decls, errors)?;
        Ok(FlowGraph::assemble(spec, analysis))
    }

    /// Reads and validates a JSON spec.
    pub fn from_json(text: &str) -> Result<FlowGraph, Error> {
        Ok(FlowGraph::from_spec(FlowSpec::from_json(text)?)?)
    }

    /// The spec as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, Error> {
        self.spec.to_json()
    }

    pub(crate) fn assemble(spec: FlowSpec, a: Analysis) -> FlowGraph {
        let names: Vec<StepName> = spec.steps.iter().map(|s| s.name.clone()).collect();
        let name = |i: usize| names[i].clone();
        let info = (0..names.len())
            .map(|i| {
                let stack = a.stacks.get(i).cloned().unwrap_or_default();
                StepInfo {
                    parents: a.parents.get(i).into_iter().flatten().map(|&p| name(p)).collect(),
                    foreach_depth: stack
                        .iter()
                        .filter(|&&f| matches!(spec.steps[f].next, crate::Transition::Foreach { .. }))
                        .count(),
                    fanout_stack: stack.into_iter().map(name).collect(),
                    join_of: a.join_of.get(i).copied().flatten().map(name),
                    fanout_of: a.fanout_of.get(i).copied().flatten().map(name),
                    loops_to: a.loop_backs.iter().filter(|&&(s, _)| s == i).map(|&(_, t)| name(t)).collect(),
                    case_joins: a
                        .case_joins
                        .iter()
                        .filter(|(s, _, _)| *s == i)
                        .map(|(_, case, j)| (case.clone(), name(*j)))
                        .collect(),
                }
            })
            .collect();
        FlowGraph {
            index: names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect(),
            info,
            topo: a.topo.iter().map(|&i| name(i)).collect(),
            spec,
        }
    }

    /// The validated graph as data, e.g. to export it as JSON.
    pub fn spec(&self) -> &FlowSpec {
        &self.spec
    }

    /// The flow's name.
    pub fn name(&self) -> &FlowName {
        &self.spec.name
    }

    /// The steps in declaration order.
    pub fn steps(&self) -> &[StepSpec] {
        &self.spec.steps
    }

    /// The step named `name`, if the flow has one.
    pub fn step(&self, name: &str) -> Option<&StepSpec> {
        self.index.get(name).map(|&i| &self.spec.steps[i])
    }

    /// The declared parameters, in declaration order.
    pub fn params(&self) -> &[ParamSpec] {
        &self.spec.params
    }

    /// The parameter named `name`, if the flow declares one.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.spec.params.iter().find(|p| p.name == name)
    }

    fn info(&self, step: &str) -> Option<&StepInfo> {
        self.index.get(step).map(|&i| &self.info[i])
    }

    /// The steps with an edge into `step`, in declaration order, loop-back edges excluded
    /// (so `start` and loop heads have only their forward parents). Empty when unknown.
    pub fn parents(&self, step: &str) -> &[StepName] {
        self.info(step).map_or(&[], |i| &i.parents)
    }

    /// The join that closes a split or foreach step.
    pub fn join_of(&self, fanout: &str) -> Option<&StepName> {
        self.info(fanout)?.join_of.as_ref()
    }

    /// The join that closes case `case` of switch `switch`, when that case fans out.
    pub fn join_of_case(&self, switch: &str, case: &str) -> Option<&StepName> {
        self.info(switch)?.case_joins.iter().find(|(c, _)| c == case).map(|(_, j)| j)
    }

    /// The split, foreach or switch step a join closes (a switch for the join of a case
    /// that fans out).
    pub fn fanout_of(&self, join: &str) -> Option<&StepName> {
        self.info(join)?.fanout_of.as_ref()
    }

    /// How many foreach frames are open at `step` (its nesting level; 0 outside any).
    pub fn foreach_depth(&self, step: &str) -> usize {
        self.info(step).map_or(0, |i| i.foreach_depth)
    }

    /// The split and foreach steps open at `step`, outermost first. A fan-out step is not
    /// inside its own frame; a join is outside the frame it closes.
    pub fn fanout_stack(&self, step: &str) -> &[StepName] {
        self.info(step).map_or(&[], |i| &i.fanout_stack)
    }

    /// Whether `from -> to` is a switch case that closes a loop.
    pub fn is_loop_back(&self, from: &str, to: &str) -> bool {
        self.info(from).is_some_and(|i| i.loops_to.iter().any(|t| *t == to))
    }

    /// All steps, parents before children (loop-back edges ignored); ties follow
    /// declaration order.
    pub fn topological_order(&self) -> &[StepName] {
        &self.topo
    }
}

impl From<FlowGraph> for FlowSpec {
    fn from(g: FlowGraph) -> FlowSpec {
        g.spec
    }
}

impl TryFrom<FlowSpec> for FlowGraph {
    type Error = ValidationErrors;
    fn try_from(spec: FlowSpec) -> Result<Self, ValidationErrors> {
        FlowGraph::from_spec(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FlowBuilder, Next, ParamType};

    fn sample() -> FlowGraph {
        FlowBuilder::new("sample")
            .param(crate::Param::new("n", ParamType::UInt).default(3).help("count"))
            .param(crate::Param::new("name", ParamType::String))
            .step("start", Next::split(["a", "b"]))
            .step("a", Next::foreach("items", "work"))
            .step("work", Next::to("wj"))
            .join("wj", Next::to("j"))
            .step("b", Next::to("j"))
            .join("j", Next::to("loop"))
            .step("loop", Next::switch("state", [("again", "loop"), ("done", "end")]))
            .step("end", Next::End)
            .doc("work", "does \"the\" work")
            .build()
            .unwrap()
    }

    #[test]
    fn queries() {
        let g = sample();
        assert_eq!(g.name(), "sample");
        assert_eq!(g.steps().len(), 8);
        assert_eq!(g.step("work").unwrap().doc.as_deref(), Some("does \"the\" work"));
        assert!(g.step("zzz").is_none());
        assert!(g.param("n").is_some_and(|p| !p.is_required()));
        assert!(g.param("name").is_some_and(|p| p.is_required()));
        assert_eq!(g.params().len(), 2);
        assert_eq!(g.fanout_stack("work"), ["start", "a"]);
        assert_eq!(g.foreach_depth("work"), 1);
        assert_eq!(g.fanout_stack("wj"), ["start"]);
        assert_eq!(g.join_of("a").unwrap(), "wj");
        assert_eq!(g.join_of("start").unwrap(), "j");
        assert_eq!(g.fanout_of("j").unwrap(), "start");
        assert_eq!(g.parents("j"), ["wj", "b"]);
        assert_eq!(g.topological_order(), ["start", "a", "work", "wj", "b", "j", "loop", "end"]);
        assert!(g.is_loop_back("loop", "loop"));
        assert!(!g.is_loop_back("j", "loop"));
    }

    #[test]
    fn json_round_trip() {
        let g = sample();
        let text = g.to_json().unwrap();
        assert!(text.contains(r#""type": "foreach""#), "{text}");
        assert!(text.contains(r#""format_version": 1"#), "{text}");
        let back = FlowGraph::from_json(&text).unwrap();
        assert_eq!(back.spec(), g.spec());
        assert_eq!(back.topological_order(), g.topological_order());
        // serde on the graph itself re-validates
        let via_serde: FlowGraph = serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(via_serde.spec(), g.spec());
        let mut broken: serde_json::Value = serde_json::from_str(&text).unwrap();
        broken["steps"][0]["next"] = serde_json::json!({"type": "next", "to": "nowhere"});
        let e = FlowGraph::from_json(&broken.to_string()).unwrap_err().to_string();
        assert!(e.contains("step `start` goes to `nowhere`"), "{e}");
        assert!(serde_json::from_value::<FlowGraph>(broken).is_err());
    }

    #[test]
    fn newer_format_version_refused() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json().unwrap()).unwrap();
        v["format_version"] = 2.into();
        let e = FlowGraph::from_json(&v.to_string()).unwrap_err();
        assert!(matches!(e, Error::UnsupportedFormatVersion { found: 2, .. }), "{e}");
    }
}
