//! Validation of a declared flow: every problem is collected (never stop at the first),
//! and a valid graph yields the precomputed facts the executor queries.
//!
//! The algorithm: resolve names and targets; find loop-back edges (a switch case whose
//! target dominates the switch step, i.e. every path from `start` to the switch passes
//! through it); the rest of the graph must be acyclic. Then walk it in topological
//! order carrying each step's stack of open fan-out frames `(fan-out step, branch)`:
//! a split or foreach pushes a frame for its targets, a join pops the top one, and all
//! paths into a step must agree on the stack. A switch case that fans out is a fan-out
//! of its own (one per case, so two such cases of one switch have two joins), pushed
//! for the case's targets only.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt;

use braid_core::{ArtifactName, FlowName, ParamName, StepName};

use crate::builder::{Decl, Next};
use crate::{Param, StepKind};

/// One problem found in a flow declaration. Every message names the step (or parameter)
/// and says how to fix it; tools that act on a problem decide on the variant. New checks
/// bring new variants, so a `match` outside this crate needs a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidationError {
    /// A flow, step, artifact or parameter name breaks the naming rules.
    InvalidName {
        /// Where the name appears, e.g. ``a target of step `a` ``.
        context: String,
        /// The name as written.
        input: String,
        /// The full naming error (quotes the input and states the rule).
        reason: String,
    },
    /// A spec with a format version this build does not understand.
    FormatVersion {
        /// The spec's `format_version`.
        found: u32,
    },
    /// No step is named `start`, where every run begins.
    MissingStart,
    /// No step is named `end`, where every run finishes.
    MissingEnd,
    /// Two or more steps share a name.
    DuplicateStep {
        /// The shared name.
        step: String,
        /// How many steps have it.
        count: usize,
    },
    /// Two or more parameters share a name.
    DuplicateParam {
        /// The shared name.
        param: String,
        /// How many parameters have it.
        count: usize,
    },
    /// The default cannot be serialized or does not have the parameter's type.
    InvalidDefault {
        /// The parameter.
        param: String,
        /// What is wrong with its default.
        reason: String,
    },
    /// A doc comment attached to a step that is not declared.
    DocForUnknownStep {
        /// The name the doc was attached to.
        step: String,
    },
    /// A transition names a step that is not declared.
    UnknownTarget {
        /// The step whose transition it is.
        step: String,
        /// The undeclared name.
        target: String,
        /// The closest declared name, if one is close (see [`suggest`]).
        suggestion: Option<String>,
        /// Every declared step, for the message.
        declared: Vec<String>,
    },
    /// The `end` step has a transition other than `End`.
    EndNotFinal {
        /// The kind of transition it has, e.g. `next`.
        transition: &'static str,
    },
    /// A step other than `end` has the `End` transition.
    EndOutsideEnd {
        /// That step.
        step: String,
    },
    /// A split with fewer than two distinct branches.
    SplitTooFew {
        /// The splitting step.
        step: String,
        /// How many distinct branches it has.
        count: usize,
    },
    /// A split lists one branch twice.
    DuplicateTarget {
        /// The splitting step.
        step: String,
        /// The branch listed twice.
        target: String,
    },
    /// A switch has one case key twice.
    DuplicateCase {
        /// The switch step.
        step: String,
        /// The repeated case key.
        case: String,
    },
    /// A switch without cases.
    EmptySwitch {
        /// The switch step.
        step: String,
    },
    /// A switch case that goes nowhere (an empty list of steps).
    EmptyCase {
        /// The switch step.
        step: String,
        /// The case key.
        case: String,
    },
    /// A step that starts a branch of a fan-out case and is also where another case of
    /// the same switch goes: the step could not tell which it is.
    SharedCaseTarget {
        /// The switch step.
        step: String,
        /// The step named by both cases.
        target: String,
        /// The cases that name it.
        cases: Vec<String>,
    },
    /// A fan-out case that loops back: a loop goes to one step.
    FanoutCaseLoops {
        /// The switch step.
        switch: String,
        /// The case that fans out.
        case: String,
        /// The step it loops back to.
        target: String,
    },
    /// Steps on a cycle that is not a switch loop.
    Cycle {
        /// The steps on the cycle.
        steps: Vec<String>,
    },
    /// No path from `start` leads to a step.
    Unreachable {
        /// That step.
        step: String,
    },
    /// A step from which no path reaches `end`.
    NoPathToEnd {
        /// That step.
        step: String,
    },
    /// A split or foreach whose branches reach `end` without a join.
    UnclosedFanout {
        /// The fan-out step.
        fanout: String,
        /// `split` or `foreach`.
        kind: &'static str,
    },
    /// A join reached from a step that has no open split or foreach.
    JoinWithoutFanout {
        /// The join step.
        join: String,
        /// The step it is reached from, when known.
        from: Option<String>,
    },
    /// A join receiving branches of different fan-outs: `(fan-out, via step)`.
    JoinOfDifferentFanouts {
        /// The join step.
        join: String,
        /// Each fan-out it receives, with the step its branch arrives from.
        fanouts: Vec<(String, String)>,
    },
    /// Different branches of one split meet at a step that is not a join.
    BranchesMeet {
        /// Where they meet.
        step: String,
        /// The split whose branches they are.
        fanout: String,
        /// The two steps they arrive from.
        from: [String; 2],
    },
    /// Paths into a step disagree on the open fan-outs.
    MismatchedNesting {
        /// The step the paths meet at.
        step: String,
        /// The two steps the paths arrive from.
        from: [String; 2],
        /// The fan-outs open on each path, outermost first.
        open: [Vec<String>; 2],
    },
    /// The branches of one fan-out reach different joins.
    FanoutClosedTwice {
        /// The fan-out step.
        fanout: String,
        /// `split` or `foreach`.
        kind: &'static str,
        /// The joins its branches reach.
        joins: Vec<String>,
    },
    /// A join closes a split but some branches (named by their first step) never reach it.
    MissingBranches {
        /// The join step.
        join: String,
        /// The split it closes.
        split: String,
        /// The first step of each branch that does not reach the join.
        missing: Vec<String>,
    },
    /// A split or foreach goes straight to a join.
    EmptyBranch {
        /// The fan-out step.
        fanout: String,
        /// The join it goes straight to.
        join: String,
    },
    /// A loop-back edge that jumps into or out of a split or foreach.
    LoopAcrossFanout {
        /// The switch step that loops.
        switch: String,
        /// The step it loops back to.
        target: String,
        /// The fan-outs open at the switch.
        switch_open: Vec<String>,
        /// The fan-outs open at the target.
        target_open: Vec<String>,
    },
    /// A loop-back edge into a join, which would re-enter it without its branches.
    LoopIntoJoin {
        /// The switch step that loops.
        switch: String,
        /// The join it loops back to.
        target: String,
    },
}

fn ticks(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

fn open(frames: &[String]) -> String {
    if frames.is_empty() { "outside any split or foreach".to_owned() } else { format!("inside {}", ticks(frames)) }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ValidationError as E;
        match self {
            E::InvalidName { context, reason, .. } => {
                write!(f, "{context}: {reason}; rename it")
            }
            E::FormatVersion { found } => write!(
                f,
                "the spec has format version {found}, this build of braid reads version {}; \
                 upgrade braid or re-export the spec",
                crate::FORMAT_VERSION
            ),
            E::MissingStart => f.write_str(
                "the flow has no `start` step; every run begins at a step named `start`: \
                 declare it, e.g. `.step(\"start\", Next::to(\"...\"))`",
            ),
            E::MissingEnd => f.write_str(
                "the flow has no `end` step; every run finishes at a step named `end`: \
                 declare it with `.step(\"end\", Next::End)`",
            ),
            E::DuplicateStep { step, count } => write!(
                f,
                "step `{step}` is declared {count} times; step names must be unique: \
                 rename or remove the extra declarations"
            ),
            E::DuplicateParam { param, count } => {
                write!(f, "parameter `{param}` is declared {count} times; rename or remove the extra declarations")
            }
            E::InvalidDefault { param, reason } => write!(
                f,
                "the default of parameter `{param}` is invalid: {reason}; change the default or the parameter's type"
            ),
            E::DocForUnknownStep { step } => write!(
                f,
                "a doc is attached to step `{step}`, which is not declared; declare the step or fix the name in `.doc(...)`"
            ),
            E::UnknownTarget { step, target, suggestion, declared } => {
                write!(f, "step `{step}` goes to `{target}`, which is not declared; ")?;
                if let Some(s) = suggestion {
                    write!(f, "did you mean `{s}`? ")?;
                }
                const SHOWN: usize = 12;
                let more = if declared.len() > SHOWN { ", ..." } else { "" };
                let shown = &declared[..declared.len().min(SHOWN)];
                write!(f, "fix the name or declare the step (declared steps: {}{more})", ticks(shown))
            }
            E::EndNotFinal { transition } => write!(
                f,
                "step `end` has a `{transition}` transition, but `end` finishes the flow: \
                 give it `Next::End` and move the transition to another step"
            ),
            E::EndOutsideEnd { step } => write!(
                f,
                "step `{step}` finishes the flow (`Next::End`), but only the step named `end` may: \
                 point it at a successor, e.g. `Next::to(\"end\")`"
            ),
            E::SplitTooFew { step, count } => write!(
                f,
                "step `{step}` splits into {count} distinct branch(es), a split needs at least 2: \
                 add a branch, or use `Next::to` for a single successor"
            ),
            E::DuplicateTarget { step, target } => write!(
                f,
                "the split of step `{step}` lists `{target}` more than once; \
                 every branch must start at a different step: remove the duplicate"
            ),
            E::DuplicateCase { step, case } => write!(
                f,
                "the switch of step `{step}` has case {case:?} more than once; remove or rename the duplicate case"
            ),
            E::EmptySwitch { step } => write!(
                f,
                "the switch of step `{step}` has no cases; add at least one, \
                 e.g. `Next::switch(\"choice\", [(\"yes\", \"a\"), (\"no\", \"b\")])`"
            ),
            E::EmptyCase { step, case } => write!(
                f,
                "case `{case}` of the switch of step `{step}` lists no steps; give it one step, \
                 or several to run as branches that a join closes"
            ),
            E::SharedCaseTarget { step, target, cases } => write!(
                f,
                "step `{target}` is named by cases {} of the switch of step `{step}`, and one of them fans \
                 out; a branch of a fan-out case cannot also be where another case goes: give that case \
                 its own step",
                ticks(cases)
            ),
            E::FanoutCaseLoops { switch, case, target } => write!(
                f,
                "case `{case}` of switch `{switch}` fans out and loops back to `{target}`; a case that loops \
                 goes to one step: loop back to a single step, and fan out from there"
            ),
            E::Cycle { steps } => write!(
                f,
                "steps {} form a cycle that is not a switch loop; only a switch case may go back, \
                 and only to the switch step itself or to a step every path to the switch passes through: \
                 make the step that goes back a switch with one case that loops and one that leaves, \
                 or remove the edge back",
                ticks(steps)
            ),
            E::Unreachable { step } => write!(
                f,
                "step `{step}` is unreachable: no path from `start` leads to it; \
                 make it the target of another step's transition, or remove it"
            ),
            E::NoPathToEnd { step } => write!(
                f,
                "step `{step}` has no path to `end`; every path must finish at `end`: change its transition \
                 (inside a loop, give the switch a case that leaves the loop)"
            ),
            E::UnclosedFanout { fanout, kind } => write!(
                f,
                "{kind} `{fanout}` is never closed by a join: its branches reach `end` still open; \
                 add a join step (`.join(...)`) that the branches go to, and close nested fan-outs first"
            ),
            E::JoinWithoutFanout { join, from } => {
                write!(f, "join step `{join}`")?;
                if let Some(from) = from {
                    write!(f, " (reached from `{from}`)")?;
                }
                write!(
                    f,
                    " has no open split or foreach to close; a join must come after the branches of a \
                     `Next::split` or `Next::foreach`: declare `{join}` with `.step` instead of `.join`, \
                     or put a fan-out before it"
                )
            }
            E::JoinOfDifferentFanouts { join, fanouts } => {
                let list: Vec<String> = fanouts.iter().map(|(fan, via)| format!("`{fan}` (via `{via}`)")).collect();
                write!(
                    f,
                    "join `{join}` receives branches of different fan-outs: {}; a join closes exactly one \
                     split or foreach: give each fan-out its own join, closing the inner one first",
                    list.join(", ")
                )
            }
            E::BranchesMeet { step, fanout, from } => write!(
                f,
                "different branches of split `{fanout}` meet at step `{step}` (via `{}` and `{}`), \
                 which is not a join; declare `{step}` with `.join` or keep the branches apart until their join",
                from[0], from[1]
            ),
            E::MismatchedNesting { step, from, open: o } => write!(
                f,
                "step `{step}` is reached {} (via `{}`) and {} (via `{}`); paths that meet must be inside \
                 the same splits and foreaches: add the missing join, or close inner fan-outs before `{step}`",
                open(&o[0]),
                from[0],
                open(&o[1]),
                from[1]
            ),
            E::FanoutClosedTwice { fanout, kind, joins } => write!(
                f,
                "the branches of {kind} `{fanout}` reach different joins {}; all branches of a fan-out \
                 must meet at one join: route them to the same join step",
                ticks(joins)
            ),
            E::MissingBranches { join, split, missing } => write!(
                f,
                "join `{join}` closes split `{split}`, but the branch(es) starting at {} never reach it; \
                 route every branch of the split to `{join}`",
                ticks(missing)
            ),
            E::EmptyBranch { fanout, join } => write!(
                f,
                "step `{fanout}` fans out straight into join `{join}`; every branch needs at least one \
                 step before its join: add a step in between, or drop the fan-out"
            ),
            E::LoopAcrossFanout { switch, target, switch_open, target_open } => write!(
                f,
                "switch `{switch}` loops back to `{target}`, but `{switch}` is {} and `{target}` is {}; \
                 a loop cannot jump into or out of a split or foreach: loop back to a step in the same \
                 branch, or put the whole fan-out and its join inside the loop",
                open(switch_open),
                open(target_open)
            ),
            E::LoopIntoJoin { switch, target } => write!(
                f,
                "switch `{switch}` loops back to join `{target}`; a loop cannot re-enter a join: \
                 loop back to the fan-out step before it, or to a step after the join"
            ),
        }
    }
}

impl std::error::Error for ValidationError {}

/// Every problem found in a flow declaration; displays one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    /// The problems, in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, ValidationError> {
        self.0.iter()
    }
    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there are none (a `build()` never returns an empty one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a ValidationError;
    type IntoIter = std::slice::Iter<'a, ValidationError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Turns a naming error into a validation problem that says where the name appears.
pub(crate) fn checked<T>(r: braid_core::Result<T>, input: &str, context: String) -> Result<T, ValidationError> {
    r.map_err(|e| ValidationError::InvalidName { context, input: input.to_owned(), reason: e.to_string() })
}

/// The facts a valid graph precomputes, by step index (declaration order).
#[derive(Debug, Clone, Default)]
pub(crate) struct Analysis {
    pub parents: Vec<Vec<usize>>,
    pub stacks: Vec<Vec<usize>>,
    pub fanout_of: Vec<Option<usize>>,
    pub join_of: Vec<Option<usize>>,
    /// `(switch, case, join)` for each fan-out case.
    pub case_joins: Vec<(usize, String, usize)>,
    pub loop_backs: BTreeSet<(usize, usize)>,
    pub topo: Vec<usize>,
}

/// Validates a declaration; `errors` holds problems found earlier (e.g. by the builder).
pub(crate) fn analyze(
    flow: &str,
    params: &[Param],
    decls: &[Decl],
    mut errors: Vec<ValidationError>,
) -> Result<Analysis, ValidationErrors> {
    if let Err(e) = checked(FlowName::new(flow), flow, "the flow's name".into()) {
        errors.push(e);
    }
    check_params(params, &mut errors);
    let graph = Graph::new(decls, &mut errors);
    let analysis = graph.analyze(&mut errors);
    if errors.is_empty() { Ok(analysis) } else { Err(ValidationErrors(errors)) }
}

fn check_params(params: &[Param], errors: &mut Vec<ValidationError>) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for p in params {
        if let Err(e) = checked(ParamName::new(&p.name), &p.name, "a parameter's name".into()) {
            errors.push(e);
        }
        match counts.iter_mut().find(|(n, _)| *n == p.name) {
            Some((_, c)) => *c += 1,
            None => counts.push((&p.name, 1)),
        }
        let list = p.list.is_some();
        let bad_default = match &p.default {
            Some(Err(reason)) => Some(reason.clone()),
            Some(Ok(v)) if !crate::param::shape_accepts(p.ty, p.optional, list, v) => {
                let got = crate::param::shorten(v.to_string());
                Some(format!("expected {}, got {got}", crate::param::shape_expected(p.ty, p.optional, list)))
            }
            _ => None,
        };
        if let Some(reason) = bad_default {
            errors.push(ValidationError::InvalidDefault { param: p.name.clone(), reason });
        }
    }
    for (param, count) in counts {
        if count > 1 {
            errors.push(ValidationError::DuplicateParam { param: param.to_owned(), count });
        }
    }
}

/// The closest of `declared` to `target`, for "did you mean": within an edit distance of a
/// third of its length (at least 1), case ignored.
pub fn suggest(target: &str, declared: &[String]) -> Option<String> {
    /// Edit distance with adjacent transpositions (optimal string alignment).
    fn distance(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        d[0] = (0..=b.len()).collect();
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[i - 2][j - 2] + 1);
                }
                d[i][j] = best;
            }
        }
        d[a.len()][b.len()]
    }
    let limit = (target.chars().count() / 3).max(1);
    declared
        .iter()
        .map(|d| (distance(&target.to_lowercase(), &d.to_lowercase()), d))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, d)| d.clone())
}

/// Iterative depth-first post-order from `root` over `adj`, skipping visited nodes.
fn postorder(adj: &[Vec<usize>], root: usize, visited: &mut [bool], out: &mut Vec<usize>) {
    if visited[root] {
        return;
    }
    visited[root] = true;
    let mut stack = vec![(root, 0usize)];
    while let Some(top) = stack.last_mut() {
        let (v, k) = *top;
        if let Some(&w) = adj[v].get(k) {
            top.1 += 1;
            if !visited[w] {
                visited[w] = true;
                stack.push((w, 0));
            }
        } else {
            out.push(v);
            stack.pop();
        }
    }
}

fn flood(adj: &[Vec<usize>], seeds: impl IntoIterator<Item = usize>, n: usize) -> Vec<bool> {
    let mut seen = vec![false; n];
    let mut todo: Vec<usize> = seeds.into_iter().collect();
    for &s in &todo {
        seen[s] = true;
    }
    while let Some(v) = todo.pop() {
        for &w in &adj[v] {
            if !seen[w] {
                seen[w] = true;
                todo.push(w);
            }
        }
    }
    seen
}

const NONE: usize = usize::MAX;

/// A frame of open fan-out: the fan-out (a split or foreach step's index, or `n + k` for
/// the `k`th fan-out switch case) and the branch taken.
type Frame = (usize, usize);

struct Graph<'a> {
    decls: &'a [Decl],
    /// First declaration of its name; later duplicates are ignored by the analysis.
    first: Vec<bool>,
    succ: Vec<Vec<usize>>,
    pred: Vec<Vec<usize>>,
    /// Steps whose own transition is wrong (unknown target, `End` outside `end`): they
    /// count as reaching `end` so the problem is not reported again upstream.
    broken: Vec<bool>,
    start: Option<usize>,
    end: Option<usize>,
    /// The switch cases that fan out; fan-out `n + k` is `case_fans[k]`.
    case_fans: Vec<CaseFan>,
}

/// A switch case that fans out.
struct CaseFan {
    switch: usize,
    case: String,
    targets: Vec<usize>,
}

impl<'a> Graph<'a> {
    fn new(decls: &'a [Decl], errors: &mut Vec<ValidationError>) -> Self {
        use ValidationError as E;
        let n = decls.len();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut first = vec![false; n];
        let mut counts = vec![0usize; n];
        for (i, d) in decls.iter().enumerate() {
            if let Err(e) = checked(StepName::new(&d.name), &d.name, "a step's name".into()) {
                errors.push(e);
            }
            let at = *index.entry(&d.name).or_insert(i);
            first[i] = at == i;
            counts[at] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            if c > 1 {
                errors.push(E::DuplicateStep { step: decls[i].name.clone(), count: c });
            }
        }
        let start = index.get("start").copied();
        let end = index.get("end").copied();
        if start.is_none() {
            errors.push(E::MissingStart);
        }
        if end.is_none() {
            errors.push(E::MissingEnd);
        }
        let declared: Vec<String> = (0..n).filter(|&i| first[i]).map(|i| decls[i].name.clone()).collect();
        let mut succ = vec![Vec::new(); n];
        let mut broken = vec![false; n];
        let mut pending_fans: Vec<(usize, String, Vec<String>)> = Vec::new();
        for i in (0..n).filter(|&i| first[i]) {
            let d = &decls[i];
            let step = &d.name;
            let is_end = step == "end";
            let artifact = |a: &str, what: &str| {
                checked(ArtifactName::new(a), a, format!("the {what} artifact of step `{step}`")).err()
            };
            let targets: Vec<&str> = match &d.next {
                Next::End => {
                    if !is_end {
                        errors.push(E::EndOutsideEnd { step: step.clone() });
                        broken[i] = true;
                    }
                    Vec::new()
                }
                Next::To(to) => vec![to],
                Next::Split(to) => {
                    let mut distinct: Vec<&str> = Vec::new();
                    let mut dups: Vec<&str> = Vec::new();
                    for t in to {
                        if !distinct.contains(&t.as_str()) {
                            distinct.push(t);
                        } else if !dups.contains(&t.as_str()) {
                            dups.push(t);
                        }
                    }
                    if distinct.len() < 2 {
                        errors.push(E::SplitTooFew { step: step.clone(), count: distinct.len() });
                    }
                    for t in dups {
                        errors.push(E::DuplicateTarget { step: step.clone(), target: t.to_owned() });
                    }
                    distinct
                }
                Next::Foreach { over, to } => {
                    errors.extend(artifact(over, "foreach"));
                    vec![to]
                }
                Next::Switch { on, cases } => {
                    errors.extend(artifact(on, "switch"));
                    if cases.is_empty() {
                        errors.push(E::EmptySwitch { step: step.clone() });
                    }
                    let mut keys: Vec<&str> = Vec::new();
                    for (k, to) in cases {
                        if keys.contains(&k.as_str()) {
                            errors.push(E::DuplicateCase { step: step.clone(), case: k.clone() });
                        }
                        keys.push(k);
                        if to.is_empty() {
                            errors.push(E::EmptyCase { step: step.clone(), case: k.clone() });
                        }
                        let mut seen: Vec<&str> = Vec::new();
                        for t in to {
                            if seen.contains(&t.as_str()) {
                                errors.push(E::DuplicateTarget { step: step.clone(), target: t.clone() });
                            }
                            seen.push(t);
                        }
                    }
                    for (k, to) in cases.iter().filter(|(_, to)| to.len() > 1) {
                        for t in to {
                            let named: Vec<String> = cases
                                .iter()
                                .filter(|(_, other)| other.contains(t))
                                .map(|(case, _)| case.clone())
                                .collect();
                            if named.len() > 1 && named.first() == Some(k) {
                                errors.push(E::SharedCaseTarget {
                                    step: step.clone(),
                                    target: t.clone(),
                                    cases: named,
                                });
                            }
                        }
                        pending_fans.push((i, k.clone(), to.clone()));
                    }
                    cases.iter().flat_map(|(_, t)| t.iter().map(String::as_str)).collect()
                }
            };
            if is_end && !matches!(d.next, Next::End) {
                errors.push(E::EndNotFinal { transition: d.next.kind_name() });
                continue;
            }
            for t in targets {
                match index.get(t) {
                    Some(&j) => {
                        if !succ[i].contains(&j) {
                            succ[i].push(j);
                        }
                    }
                    None => {
                        broken[i] = true;
                        let context = format!("a target of step `{step}`");
                        if let Err(e) = checked(StepName::new(t), t, context) {
                            errors.push(e);
                        } else {
                            errors.push(E::UnknownTarget {
                                step: step.clone(),
                                target: t.to_owned(),
                                suggestion: suggest(t, &declared),
                                declared: declared.clone(),
                            });
                        }
                    }
                }
            }
        }
        let mut pred = vec![Vec::new(); n];
        for (i, ts) in succ.iter().enumerate() {
            for &t in ts {
                pred[t].push(i);
            }
        }
        // A fan-out case whose targets are not all known is left out: the unknown target
        // is reported, and its branches are not checked.
        let case_fans = pending_fans
            .into_iter()
            .filter_map(|(switch, case, to)| {
                let targets = to.iter().map(|t| index.get(t.as_str()).copied()).collect::<Option<Vec<usize>>>()?;
                Some(CaseFan { switch, case, targets })
            })
            .collect();
        Graph { decls, first, succ, pred, broken, start, end, case_fans }
    }

    fn name(&self, i: usize) -> String {
        self.decls[i].name.clone()
    }

    /// The step of fan-out `f`: the split or foreach step, or the switch of a case.
    fn fan_step(&self, f: usize) -> usize {
        let n = self.decls.len();
        if f < n { f } else { self.case_fans[f - n].switch }
    }

    /// How fan-out `f` is named in a message: its step, and for a case, the case.
    fn fan_name(&self, f: usize) -> String {
        let n = self.decls.len();
        if f < n {
            self.name(f)
        } else {
            let c = &self.case_fans[f - n];
            format!("{}` case `{}", self.name(c.switch), c.case)
        }
    }

    fn names(&self, frames: &[Frame]) -> Vec<String> {
        frames.iter().map(|&(f, _)| self.fan_name(f)).collect()
    }

    fn fanout_kind(&self, f: usize) -> &'static str {
        if f >= self.decls.len() {
            return "switch";
        }
        match self.decls[f].next {
            Next::Foreach { .. } => "foreach",
            _ => "split",
        }
    }

    /// The fan-out case of switch `s` that `t` starts a branch of: its fan id and branch.
    fn case_branch(&self, s: usize, t: usize) -> Option<(usize, usize)> {
        let n = self.decls.len();
        self.case_fans
            .iter()
            .enumerate()
            .filter(|(_, c)| c.switch == s)
            .find_map(|(k, c)| c.targets.iter().position(|&x| x == t).map(|b| (n + k, b)))
    }

    fn analyze(&self, errors: &mut Vec<ValidationError>) -> Analysis {
        let n = self.decls.len();
        let Some(start) = self.start else {
            self.check_path_to_end(&self.first, errors);
            return Analysis::default();
        };
        let reachable = flood(&self.succ, [start], n);
        for i in (0..n).filter(|&i| self.first[i] && !reachable[i]) {
            errors.push(ValidationError::Unreachable { step: self.name(i) });
        }
        let idom = self.dominators(start);
        let dominates = |t: usize, s: usize| {
            let mut x = s;
            loop {
                if x == t {
                    return true;
                }
                if x == start || idom[x] == NONE {
                    return false;
                }
                x = idom[x];
            }
        };
        let mut loop_backs = BTreeSet::new();
        let mut fwd = vec![Vec::new(); n];
        for s in (0..n).filter(|&s| reachable[s]) {
            let is_switch = matches!(self.decls[s].next, Next::Switch { .. });
            for &t in &self.succ[s] {
                if is_switch && dominates(t, s) {
                    loop_backs.insert((s, t));
                } else {
                    fwd[s].push(t);
                }
            }
        }
        self.check_cycles(&fwd, &reachable, errors);
        self.check_path_to_end(&reachable, errors);
        let topo = topological(&fwd, &reachable);
        let fans = n + self.case_fans.len();
        let mut walk = Walk {
            g: self,
            start,
            incoming: vec![Vec::new(); n],
            stacks: vec![None; n],
            fanout_of: vec![None; n],
            closers: vec![Vec::new(); fans],
            branches_at: vec![BTreeSet::new(); n],
        };
        walk.run(&topo, &fwd, errors);
        walk.finish(&fwd, &loop_backs, errors);

        let mut parents = vec![Vec::new(); n];
        for (s, ts) in fwd.iter().enumerate() {
            for &t in ts {
                parents[t].push(s);
            }
        }
        let mut join_of = vec![None; n];
        let mut case_joins = Vec::new();
        for (f, joins) in walk.closers.iter().enumerate() {
            match (f < n, joins.first()) {
                (true, j) => join_of[f] = j.copied(),
                (false, Some(&j)) => {
                    let c = &self.case_fans[f - n];
                    case_joins.push((c.switch, c.case.clone(), j));
                }
                (false, None) => {}
            }
        }
        Analysis {
            parents,
            stacks: walk
                .stacks
                .into_iter()
                .map(|s| s.unwrap_or_default().into_iter().map(|(f, _)| self.fan_step(f)).collect())
                .collect(),
            fanout_of: walk.fanout_of.into_iter().map(|f| f.map(|f| self.fan_step(f))).collect(),
            join_of,
            case_joins,
            loop_backs,
            topo,
        }
    }

    /// Immediate dominators (Cooper, Harvey, Kennedy); `NONE` for unreachable steps.
    fn dominators(&self, start: usize) -> Vec<usize> {
        let n = self.decls.len();
        let mut post = Vec::new();
        postorder(&self.succ, start, &mut vec![false; n], &mut post);
        let mut number = vec![NONE; n];
        for (k, &v) in post.iter().enumerate() {
            number[v] = k;
        }
        let mut idom = vec![NONE; n];
        idom[start] = start;
        let mut changed = true;
        while changed {
            changed = false;
            for &b in post.iter().rev().filter(|&&b| b != start) {
                let mut new = NONE;
                for &p in self.pred[b].iter().filter(|&&p| idom[p] != NONE) {
                    new = if new == NONE {
                        p
                    } else {
                        let (mut x, mut y) = (p, new);
                        while x != y {
                            while number[x] < number[y] {
                                x = idom[x];
                            }
                            while number[y] < number[x] {
                                y = idom[y];
                            }
                        }
                        x
                    };
                }
                if new != NONE && idom[b] != new {
                    idom[b] = new;
                    changed = true;
                }
            }
        }
        idom
    }

    /// Strongly connected components (Kosaraju) of the graph without loop-back edges.
    fn check_cycles(&self, fwd: &[Vec<usize>], reachable: &[bool], errors: &mut Vec<ValidationError>) {
        let n = fwd.len();
        let mut visited = vec![false; n];
        let mut post = Vec::new();
        for v in (0..n).filter(|&v| reachable[v]) {
            postorder(fwd, v, &mut visited, &mut post);
        }
        let mut rev = vec![Vec::new(); n];
        for (s, ts) in fwd.iter().enumerate() {
            for &t in ts {
                rev[t].push(s);
            }
        }
        let mut assigned = vec![false; n];
        for &root in post.iter().rev() {
            if assigned[root] {
                continue;
            }
            assigned[root] = true;
            let mut members = Vec::new();
            let mut todo = vec![root];
            while let Some(x) = todo.pop() {
                members.push(x);
                for &y in &rev[x] {
                    if !assigned[y] {
                        assigned[y] = true;
                        todo.push(y);
                    }
                }
            }
            if members.len() > 1 || fwd[root].contains(&root) {
                members.sort_unstable();
                errors.push(ValidationError::Cycle { steps: members.into_iter().map(|m| self.name(m)).collect() });
            }
        }
    }

    fn check_path_to_end(&self, considered: &[bool], errors: &mut Vec<ValidationError>) {
        let Some(end) = self.end else { return };
        let n = self.decls.len();
        let seeds = std::iter::once(end).chain((0..n).filter(|&i| self.broken[i]));
        let reaches = flood(&self.pred, seeds, n);
        for i in (0..n).filter(|&i| self.first[i] && considered[i] && !reaches[i]) {
            errors.push(ValidationError::NoPathToEnd { step: self.name(i) });
        }
    }
}

/// Kahn's algorithm over the reachable steps, ties broken by declaration order. Steps on
/// or after a cycle are left out (the cycle is reported).
fn topological(fwd: &[Vec<usize>], reachable: &[bool]) -> Vec<usize> {
    let n = fwd.len();
    let mut indegree = vec![0usize; n];
    for ts in fwd {
        for &t in ts {
            indegree[t] += 1;
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&v| reachable[v] && indegree[v] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(v)) = ready.pop() {
        order.push(v);
        for &t in &fwd[v] {
            indegree[t] -= 1;
            if indegree[t] == 0 {
                ready.push(Reverse(t));
            }
        }
    }
    order
}

/// The fan-out stack walk over the acyclic part of the graph.
struct Walk<'g, 'a> {
    g: &'g Graph<'a>,
    start: usize,
    /// Stacks arriving at each step: `(from, stack)`.
    incoming: Vec<Vec<(usize, Vec<Frame>)>>,
    /// The stack at each step; `None` when unknown (after an error, to avoid cascades).
    stacks: Vec<Option<Vec<Frame>>>,
    fanout_of: Vec<Option<usize>>,
    /// The joins that close each fan-out step.
    closers: Vec<Vec<usize>>,
    /// The branches of its fan-out that arrive at each join.
    branches_at: Vec<BTreeSet<usize>>,
}

impl Walk<'_, '_> {
    fn run(&mut self, topo: &[usize], fwd: &[Vec<usize>], errors: &mut Vec<ValidationError>) {
        let mut poisoned = vec![false; fwd.len()];
        for &v in topo {
            let stack = if poisoned[v] {
                None
            } else if self.g.decls[v].kind == StepKind::Join {
                self.close_join(v, errors)
            } else {
                self.merge(v, errors)
            };
            let Some(stack) = stack else {
                for &w in &fwd[v] {
                    poisoned[w] = true;
                }
                continue;
            };
            let fans_out = matches!(self.g.decls[v].next, Next::Split(_) | Next::Foreach { .. });
            for (branch, &w) in fwd[v].iter().enumerate() {
                let mut out = stack.clone();
                let frame = if fans_out { Some((v, branch)) } else { self.g.case_branch(v, w) };
                if let Some(frame) = frame {
                    out.push(frame);
                    if self.g.decls[w].kind == StepKind::Join {
                        errors.push(ValidationError::EmptyBranch {
                            fanout: self.g.fan_name(frame.0),
                            join: self.g.name(w),
                        });
                    }
                }
                self.incoming[w].push((v, out));
            }
            self.stacks[v] = Some(stack);
        }
    }

    fn merge(&mut self, v: usize, errors: &mut Vec<ValidationError>) -> Option<Vec<Frame>> {
        let ins = std::mem::take(&mut self.incoming[v]);
        let Some((from0, first)) = ins.first() else {
            return Some(Vec::new()); // `start`
        };
        for (from, stack) in &ins[1..] {
            if stack != first {
                self.conflict(v, (*from0, first), (*from, stack), errors);
                return None;
            }
        }
        Some(first.clone())
    }

    fn close_join(&mut self, v: usize, errors: &mut Vec<ValidationError>) -> Option<Vec<Frame>> {
        let g = self.g;
        let ins = std::mem::take(&mut self.incoming[v]);
        let without = if ins.is_empty() {
            (v == self.start).then_some(None)
        } else {
            ins.iter().find(|(_, s)| s.is_empty()).map(|(from, _)| Some(g.name(*from)))
        };
        if let Some(from) = without {
            errors.push(ValidationError::JoinWithoutFanout { join: g.name(v), from });
            return None;
        }
        let mut tops: Vec<(usize, usize)> = Vec::new();
        for (from, stack) in &ins {
            let (fan, _) = *stack.last()?;
            if !tops.iter().any(|(f, _)| *f == fan) {
                tops.push((fan, *from));
            }
        }
        if tops.len() > 1 {
            errors.push(ValidationError::JoinOfDifferentFanouts {
                join: g.name(v),
                fanouts: tops.iter().map(|&(f, via)| (g.fan_name(f), g.name(via))).collect(),
            });
            return None;
        }
        let (fan, _) = *tops.first()?;
        let (from0, first) = ins.first()?;
        let rest0 = &first[..first.len() - 1];
        for (from, stack) in &ins[1..] {
            let rest = &stack[..stack.len() - 1];
            if rest != rest0 {
                self.conflict(v, (*from0, rest0), (*from, rest), errors);
                return None;
            }
        }
        self.fanout_of[v] = Some(fan);
        if !self.closers[fan].contains(&v) {
            self.closers[fan].push(v);
        }
        for (_, stack) in &ins {
            if let Some(&(_, branch)) = stack.last() {
                self.branches_at[v].insert(branch);
            }
        }
        Some(rest0.to_vec())
    }

    fn conflict(
        &self,
        v: usize,
        (fa, a): (usize, &[Frame]),
        (fb, b): (usize, &[Frame]),
        errors: &mut Vec<ValidationError>,
    ) {
        let g = self.g;
        let from = [g.name(fa), g.name(fb)];
        let k = a.iter().zip(b).position(|(x, y)| x != y);
        errors.push(match k {
            Some(k) if a[k].0 == b[k].0 => {
                ValidationError::BranchesMeet { step: g.name(v), fanout: g.fan_name(a[k].0), from }
            }
            _ => ValidationError::MismatchedNesting { step: g.name(v), from, open: [g.names(a), g.names(b)] },
        });
    }

    fn finish(&self, fwd: &[Vec<usize>], loop_backs: &BTreeSet<(usize, usize)>, errors: &mut Vec<ValidationError>) {
        let g = self.g;
        let n = g.decls.len();
        for (f, joins) in self.closers.iter().enumerate() {
            if joins.len() > 1 {
                errors.push(ValidationError::FanoutClosedTwice {
                    fanout: g.fan_name(f),
                    kind: g.fanout_kind(f),
                    joins: joins.iter().map(|&j| g.name(j)).collect(),
                });
                continue;
            }
            let Some(&j) = joins.first() else { continue };
            let branches: &[usize] = match (f < n, f.checked_sub(n).and_then(|k| g.case_fans.get(k))) {
                (true, _) if matches!(g.decls[f].next, Next::Split(_)) => &fwd[f],
                (false, Some(c)) => &c.targets,
                _ => continue,
            };
            let missing: Vec<String> =
                (0..branches.len()).filter(|b| !self.branches_at[j].contains(b)).map(|b| g.name(branches[b])).collect();
            if !missing.is_empty() {
                errors.push(ValidationError::MissingBranches { join: g.name(j), split: g.fan_name(f), missing });
            }
        }
        if let Some(Some(stack)) = g.end.map(|e| &self.stacks[e]) {
            for &(f, _) in stack {
                errors.push(ValidationError::UnclosedFanout { fanout: g.fan_name(f), kind: g.fanout_kind(f) });
            }
        }
        for &(s, t) in loop_backs {
            if let Some((f, _)) = g.case_branch(s, t) {
                let case = g.case_fans[f - n].case.clone();
                errors.push(ValidationError::FanoutCaseLoops { switch: g.name(s), case, target: g.name(t) });
            } else if g.decls[t].kind == StepKind::Join {
                errors.push(ValidationError::LoopIntoJoin { switch: g.name(s), target: g.name(t) });
            } else if let (Some(a), Some(b)) = (&self.stacks[s], &self.stacks[t]) {
                if a != b {
                    errors.push(ValidationError::LoopAcrossFanout {
                        switch: g.name(s),
                        target: g.name(t),
                        switch_open: g.names(a),
                        target_open: g.names(b),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
