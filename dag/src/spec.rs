//! The serializable description of a flow graph: the JSON spec a flow binary exports and
//! the CLI, client and UI read back.

use std::collections::BTreeMap;

use braid_core::{ArtifactName, FlowName, StepName};
use serde::{Deserialize, Serialize};

use crate::{Error, ParamSpec};

/// The spec format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Where a step goes when its task finishes. Serialized as a tagged object, e.g.
/// `{"type":"next","to":"a"}` or `{"type":"foreach","over":"items","to":"work"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Transition {
    /// The flow finishes; only the `end` step has it.
    End,
    /// Linear: one successor.
    Next {
        /// The successor.
        to: StepName,
    },
    /// A static split: one branch per target, all closed by one join.
    Split {
        /// The first step of each branch.
        to: Vec<StepName>,
    },
    /// One task of `to` per item of the artifact `over`, closed by a join.
    Foreach {
        /// The sequence artifact whose items are fanned out over.
        over: ArtifactName,
        /// The step run once per item.
        to: StepName,
    },
    /// The task sets the artifact `on` to a string; the case with that key is taken.
    /// A case that goes back to the switch step or to a step every path to it passes
    /// through forms a loop. A case may fan out ([`CaseTarget::Split`]): its steps run as
    /// the branches of a static split, closed by a join.
    Switch {
        /// The artifact whose string value picks the case.
        on: ArtifactName,
        /// Case key to where it goes.
        cases: BTreeMap<String, CaseTarget>,
    },
}

/// Where a switch case goes. Serialized as a step name (`"a"`) or, for a case that
/// fans out, a list of them (`["clip", "face"]`), so specs without fan-out cases read
/// as they always did.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum CaseTarget {
    /// One step.
    Step(StepName),
    /// At least two steps, run as the branches of a static split that one join closes
    /// (Metaflow's `"miss" -> [clip, face] -> join_miss`).
    Split(Vec<StepName>),
}

impl CaseTarget {
    /// The case's steps: one, or the first step of each branch.
    pub fn steps(&self) -> &[StepName] {
        match self {
            CaseTarget::Step(s) => std::slice::from_ref(s),
            CaseTarget::Split(to) => to,
        }
    }

    /// Whether the case fans out.
    pub fn is_split(&self) -> bool {
        matches!(self, CaseTarget::Split(_))
    }
}

/// `a`, or `[clip, face]` for a case that fans out.
impl std::fmt::Display for CaseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CaseTarget::Step(s) => write!(f, "{s}"),
            CaseTarget::Split(to) => {
                write!(f, "[{}]", to.iter().map(StepName::as_str).collect::<Vec<_>>().join(", "))
            }
        }
    }
}

impl From<StepName> for CaseTarget {
    fn from(s: StepName) -> Self {
        CaseTarget::Step(s)
    }
}

impl Transition {
    /// The distinct target steps, in declaration order (case-key order for switches).
    pub fn targets(&self) -> Vec<&StepName> {
        let all: Vec<&StepName> = match self {
            Transition::End => Vec::new(),
            Transition::Next { to } | Transition::Foreach { to, .. } => vec![to],
            Transition::Split { to } => to.iter().collect(),
            Transition::Switch { cases, .. } => cases.values().flat_map(CaseTarget::steps).collect(),
        };
        let mut out: Vec<&StepName> = Vec::with_capacity(all.len());
        for s in all {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// `end`, `next`, `split`, `foreach` or `switch`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Transition::End => "end",
            Transition::Next { .. } => "next",
            Transition::Split { .. } => "split",
            Transition::Foreach { .. } => "foreach",
            Transition::Switch { .. } => "switch",
        }
    }
}

/// Whether a step is an ordinary step or a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Starts from its parent task's artifacts.
    #[default]
    Normal,
    /// Receives the branches of the innermost open split or foreach.
    Join,
}

/// One step of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepSpec {
    /// The step's name, unique in the flow.
    pub name: StepName,
    /// Ordinary step or join.
    #[serde(default)]
    pub kind: StepKind,
    /// Where the flow goes when the step's task finishes.
    pub next: Transition,
    /// What the step does, for people (shown by `braid show` and the UI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
}

/// The whole flow graph as data. Deserializing refuses a `format_version` other than
/// [`FORMAT_VERSION`]; build a validated [`FlowGraph`](crate::FlowGraph) with
/// [`FlowGraph::from_spec`](crate::FlowGraph::from_spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SpecRepr")]
pub struct FlowSpec {
    /// The spec format, [`FORMAT_VERSION`] (anything else is refused on reading).
    pub format_version: u32,
    /// The flow's name.
    pub name: FlowName,
    /// The declared parameters, in declaration order.
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    /// The steps, in declaration order.
    pub steps: Vec<StepSpec>,
}

#[derive(Deserialize)]
struct SpecRepr {
    format_version: u32,
    name: FlowName,
    #[serde(default)]
    params: Vec<ParamSpec>,
    steps: Vec<StepSpec>,
}

impl TryFrom<SpecRepr> for FlowSpec {
    type Error = Error;
    fn try_from(r: SpecRepr) -> Result<Self, Error> {
        check_version(r.format_version.into())?;
        Ok(FlowSpec { format_version: r.format_version, name: r.name, params: r.params, steps: r.steps })
    }
}

fn check_version(found: u64) -> Result<(), Error> {
    if found == u64::from(FORMAT_VERSION) {
        Ok(())
    } else {
        Err(Error::UnsupportedFormatVersion { found, supported: FORMAT_VERSION })
    }
}

impl FlowSpec {
    /// Reads a JSON spec. The format version is checked before the rest, so a spec from
    /// a newer braid gets a clear "upgrade" error rather than a shape mismatch.
    pub fn from_json(text: &str) -> Result<FlowSpec, Error> {
        #[derive(Deserialize)]
        struct Probe {
            format_version: Option<u64>,
        }
        if let Ok(Probe { format_version: Some(v) }) = serde_json::from_str::<Probe>(text) {
            check_version(v)?;
        }
        Ok(serde_json::from_str(text)?)
    }

    /// Writes the spec as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, Error> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_json_shape() {
        let t = Transition::Next { to: StepName::new("a").unwrap() };
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"type":"next","to":"a"}"#);
        let t: Transition = serde_json::from_str(r#"{"type":"foreach","over":"items","to":"work"}"#).unwrap();
        assert_eq!(t.kind_name(), "foreach");
        assert_eq!(t.targets(), [&StepName::new("work").unwrap()]);
        assert_eq!(serde_json::to_string(&Transition::End).unwrap(), r#"{"type":"end"}"#);
        let bad = serde_json::from_str::<Transition>(r#"{"type":"next","to":"a/b"}"#);
        assert!(bad.unwrap_err().to_string().contains("step name"));
    }

    #[test]
    fn newer_format_version_is_refused() {
        let text = r#"{"format_version": 2, "name": "f", "steps": [], "new_field": {"x": 1}}"#;
        let e = FlowSpec::from_json(text).unwrap_err().to_string();
        assert!(e.contains("format version 2") && e.contains("upgrade braid"), "{e}");
        // also through plain serde, e.g. when the spec is embedded in another document
        let text = r#"{"format_version": 7, "name": "f", "steps": []}"#;
        let e = serde_json::from_str::<FlowSpec>(text).unwrap_err().to_string();
        assert!(e.contains("format version 7"), "{e}");
        let e = FlowSpec::from_json("{").unwrap_err().to_string();
        assert!(e.contains("invalid flow spec JSON"), "{e}");
    }
}
