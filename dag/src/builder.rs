//! Declaring a flow: [`FlowBuilder`] with unvalidated `&str` names and [`Next`]
//! transition descriptions; `build()` validates everything at once.

use std::collections::BTreeMap;

use braid_core::{ArtifactName, FlowName, ParamName, StepName};

use crate::validate::{self, ValidationError, ValidationErrors};
use crate::{CaseTarget, FORMAT_VERSION, FlowGraph, FlowSpec, Param, ParamSpec, StepKind, StepSpec, Transition};

/// Where a step goes, as written by the flow author: like [`Transition`] but with plain
/// strings, so declaring cannot fail; `FlowBuilder::build` validates the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Finish the flow (only for the `end` step).
    End,
    /// Go to one step.
    To(String),
    /// Run every listed step as a branch; close the branches with a join.
    Split(Vec<String>),
    /// Run `to` once per item of the artifact `over`; close with a join.
    Foreach {
        /// The artifact holding the items (a sequence the task set).
        over: String,
        /// The step that runs once per item.
        to: String,
    },
    /// Take the case named by the string value of artifact `on`, as `(case, steps)`
    /// pairs: one step, or several that run as a static split closed by a join.
    Switch {
        /// The artifact whose string value picks the case.
        on: String,
        /// `(case key, steps)` pairs, in declaration order.
        cases: Vec<(String, Vec<String>)>,
    },
}

impl Next {
    /// `Next::To`: a linear transition.
    pub fn to(step: &str) -> Self {
        Next::To(step.to_owned())
    }

    /// `Next::Split`, e.g. `Next::split(["a", "b"])`.
    pub fn split<I>(steps: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        Next::Split(steps.into_iter().map(|s| s.as_ref().to_owned()).collect())
    }

    /// `Next::Foreach`, e.g. `Next::foreach("items", "work")`.
    pub fn foreach(over: &str, to: &str) -> Self {
        Next::Foreach { over: over.to_owned(), to: to.to_owned() }
    }

    /// `Next::Switch`, e.g. `Next::switch("choice", [("left", "a"), ("right", "b")])`.
    pub fn switch<I, K, T>(on: &str, cases: I) -> Self
    where
        I: IntoIterator<Item = (K, T)>,
        K: AsRef<str>,
        T: AsRef<str>,
    {
        Next::Switch {
            on: on.to_owned(),
            cases: cases.into_iter().map(|(k, t)| (k.as_ref().to_owned(), vec![t.as_ref().to_owned()])).collect(),
        }
    }

    /// A switch whose cases may fan out: each case lists its steps, one, or several that
    /// run as the branches of a static split and meet at a join, e.g.
    /// `Next::switch_cases("verdict", [("hit", vec!["fast"]), ("miss", vec!["clip", "face"])])`.
    pub fn switch_cases<I, K, T, S>(on: &str, cases: I) -> Self
    where
        I: IntoIterator<Item = (K, T)>,
        K: AsRef<str>,
        T: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Next::Switch {
            on: on.to_owned(),
            cases: cases
                .into_iter()
                .map(|(k, t)| (k.as_ref().to_owned(), t.into_iter().map(|s| s.as_ref().to_owned()).collect()))
                .collect(),
        }
    }
}

impl Next {
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            Next::End => "end",
            Next::To(_) => "next",
            Next::Split(_) => "split",
            Next::Foreach { .. } => "foreach",
            Next::Switch { .. } => "switch",
        }
    }
}

impl From<&Transition> for Next {
    fn from(t: &Transition) -> Self {
        let s = |n: &StepName| n.as_str().to_owned();
        match t {
            Transition::End => Next::End,
            Transition::Next { to } => Next::To(s(to)),
            Transition::Split { to } => Next::Split(to.iter().map(s).collect()),
            Transition::Foreach { over, to } => Next::Foreach { over: over.as_str().to_owned(), to: s(to) },
            Transition::Switch { on, cases } => Next::Switch {
                on: on.as_str().to_owned(),
                cases: cases.iter().map(|(k, v)| (k.clone(), v.steps().iter().map(s).collect())).collect(),
            },
        }
    }
}

/// One declared step, before validation.
#[derive(Debug, Clone)]
pub(crate) struct Decl {
    pub name: String,
    pub kind: StepKind,
    pub next: Next,
    pub doc: Option<String>,
}

/// Declares a flow graph. Names are plain `&str`; nothing fails until [`build`](Self::build),
/// which reports every problem (invalid names included) at once.
///
/// ```
/// use braid_dag::{FlowBuilder, Next, Param, ParamType};
/// let graph = FlowBuilder::new("fanout")
///     .param(Param::new("n", ParamType::UInt).default(10))
///     .step("start", Next::foreach("items", "work"))
///     .step("work", Next::to("gather"))
///     .join("gather", Next::to("end"))
///     .step("end", Next::End)
///     .build()
///     .unwrap();
/// assert_eq!(graph.join_of("start").unwrap(), "gather");
/// ```
#[derive(Debug, Clone)]
pub struct FlowBuilder {
    name: String,
    params: Vec<Param>,
    steps: Vec<Decl>,
    docs: Vec<(String, String)>,
}

impl FlowBuilder {
    /// A flow named `name` with no steps yet; the name is checked by `build()`.
    pub fn new(name: &str) -> Self {
        FlowBuilder { name: name.to_owned(), params: Vec::new(), steps: Vec::new(), docs: Vec::new() }
    }

    /// Declares a parameter (a [`Param`] or an already validated [`ParamSpec`]).
    pub fn param(mut self, param: impl Into<Param>) -> Self {
        self.params.push(param.into());
        self
    }

    /// Declares a normal step.
    pub fn step(self, name: &str, next: Next) -> Self {
        self.declare(name, StepKind::Normal, next)
    }

    /// Declares a join step: it receives the branches of the innermost open split or
    /// foreach.
    pub fn join(self, name: &str, next: Next) -> Self {
        self.declare(name, StepKind::Join, next)
    }

    /// Attaches documentation to a step (declared before or after this call).
    pub fn doc(mut self, step: &str, text: &str) -> Self {
        self.docs.push((step.to_owned(), text.to_owned()));
        self
    }

    fn declare(mut self, name: &str, kind: StepKind, next: Next) -> Self {
        self.steps.push(Decl { name: name.to_owned(), kind, next, doc: None });
        self
    }

    /// Validates the declaration and freezes it into a [`FlowGraph`].
    pub fn build(mut self) -> Result<FlowGraph, ValidationErrors> {
        let mut errors = Vec::new();
        for (step, text) in self.docs {
            match self.steps.iter_mut().find(|d| d.name == step) {
                Some(d) => d.doc = Some(text),
                None => errors.push(ValidationError::DocForUnknownStep { step }),
            }
        }
        let analysis = validate::analyze(&self.name, &self.params, &self.steps, errors)?;
        let spec = to_spec(&self.name, self.params, self.steps).map_err(|e| ValidationErrors(vec![e]))?;
        Ok(FlowGraph::assemble(spec, analysis))
    }
}

/// Converts a validated declaration; the errors cannot happen after `analyze` succeeded
/// but are still reported rather than unwrapped.
fn to_spec(name: &str, params: Vec<Param>, steps: Vec<Decl>) -> Result<FlowSpec, ValidationError> {
    let ctx = |what: &str| what.to_owned();
    let step = |s: &str| validate::checked(StepName::new(s), s, ctx("step"));
    let artifact = |s: &str| validate::checked(ArtifactName::new(s), s, ctx("artifact"));
    let params = params
        .into_iter()
        .map(|p| {
            Ok(ParamSpec {
                name: validate::checked(ParamName::new(&p.name), &p.name, ctx("parameter"))?,
                ty: p.ty,
                default: match p.default {
                    None => None,
                    Some(Ok(v)) => Some(v),
                    Some(Err(reason)) => {
                        return Err(ValidationError::InvalidDefault { param: p.name, reason });
                    }
                },
                help: p.help,
                optional: p.optional,
                list: p.list,
            })
        })
        .collect::<Result<_, _>>()?;
    let steps = steps
        .into_iter()
        .map(|d| {
            let next = match &d.next {
                Next::End => Transition::End,
                Next::To(to) => Transition::Next { to: step(to)? },
                Next::Split(to) => Transition::Split { to: to.iter().map(|s| step(s)).collect::<Result<_, _>>()? },
                Next::Foreach { over, to } => Transition::Foreach { over: artifact(over)?, to: step(to)? },
                Next::Switch { on, cases } => Transition::Switch {
                    on: artifact(on)?,
                    cases: cases
                        .iter()
                        .map(|(k, v)| {
                            let mut to = v.iter().map(|s| step(s)).collect::<Result<Vec<_>, _>>()?;
                            let target = match to.len() {
                                1 => CaseTarget::Step(to.remove(0)),
                                _ => CaseTarget::Split(to),
                            };
                            Ok((k.clone(), target))
                        })
                        .collect::<Result<BTreeMap<_, _>, _>>()?,
                },
            };
            Ok(StepSpec { name: step(&d.name)?, kind: d.kind, next, doc: d.doc })
        })
        .collect::<Result<_, _>>()?;
    Ok(FlowSpec {
        format_version: FORMAT_VERSION,
        name: validate::checked(FlowName::new(name), name, ctx("flow"))?,
        params,
        steps,
    })
}
