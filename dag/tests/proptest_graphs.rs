//! Property tests: composed valid graphs always validate (and their derived facts are
//! consistent); random and mutated graphs never panic and every problem names something.

use braid_core::ParamName;
use braid_dag::{FlowBuilder, FlowGraph, Next, Param, ParamCheck, ParamSpec, ParamType, StepKind};
use proptest::prelude::*;

/// A single-entry, single-exit piece of a flow.
#[derive(Debug, Clone)]
enum Block {
    Chain(usize),
    Seq(Vec<Block>),
    Split(Vec<Block>),
    Foreach(Box<Block>),
    /// Cases converging after the switch; `true` adds a case that skips straight ahead.
    Switch(Vec<Block>, bool),
    /// A switch with one case of a single block and one that fans out into branches
    /// closed by a join; both continue at the same step.
    SwitchFan(Box<Block>, Vec<Block>),
    /// The body, then a switch looping back to the body's entry.
    Loop(Box<Block>),
    SelfLoop,
}

fn block() -> impl Strategy<Value = Block> {
    let leaf = prop_oneof![3 => (1usize..3).prop_map(Block::Chain), 1 => Just(Block::SelfLoop)];
    leaf.prop_recursive(4, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..4).prop_map(Block::Seq),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Block::Split),
            inner.clone().prop_map(|b| Block::Foreach(Box::new(b))),
            (prop::collection::vec(inner.clone(), 1..4), any::<bool>())
                .prop_map(|(cases, skip)| Block::Switch(cases, skip)),
            (inner.clone(), prop::collection::vec(inner.clone(), 2..4))
                .prop_map(|(one, fan)| Block::SwitchFan(Box::new(one), fan)),
            inner.prop_map(|b| Block::Loop(Box::new(b))),
        ]
    })
}

type Decl = (String, StepKind, Next);

#[derive(Default)]
struct Emit {
    steps: Vec<Decl>,
    n: usize,
}

impl Emit {
    fn fresh(&mut self) -> String {
        self.n += 1;
        format!("s{}", self.n)
    }

    fn push(&mut self, name: &str, kind: StepKind, next: Next) {
        self.steps.push((name.to_owned(), kind, next));
    }

    /// Emits `b` so that it continues at `next`; returns its entry step.
    fn emit(&mut self, b: &Block, next: &str) -> String {
        match b {
            Block::Chain(k) => {
                let names: Vec<String> = (0..*k).map(|_| self.fresh()).collect();
                for (i, name) in names.iter().enumerate() {
                    let to = names.get(i + 1).map_or(next, String::as_str);
                    self.push(name, StepKind::Normal, Next::to(to));
                }
                names[0].clone()
            }
            Block::Seq(blocks) => {
                let mut to = next.to_owned();
                for b in blocks.iter().rev() {
                    to = self.emit(b, &to);
                }
                to
            }
            Block::Split(branches) => {
                let join = self.fresh();
                self.push(&join, StepKind::Join, Next::to(next));
                let entries: Vec<String> = branches.iter().map(|b| self.emit(b, &join)).collect();
                let split = self.fresh();
                self.push(&split, StepKind::Normal, Next::split(entries));
                split
            }
            Block::Foreach(body) => {
                let join = self.fresh();
                self.push(&join, StepKind::Join, Next::to(next));
                let entry = self.emit(body, &join);
                let f = self.fresh();
                self.push(&f, StepKind::Normal, Next::foreach("items", &entry));
                f
            }
            Block::Switch(cases, skip) => {
                let mut targets: Vec<String> = cases.iter().map(|b| self.emit(b, next)).collect();
                if *skip {
                    targets.push(next.to_owned());
                }
                let s = self.fresh();
                let cases = targets.iter().enumerate().map(|(i, t)| (format!("k{i}"), t.clone()));
                self.push(&s, StepKind::Normal, Next::switch("choice", cases));
                s
            }
            Block::SwitchFan(one, fan) => {
                let single = self.emit(one, next);
                let join = self.fresh();
                self.push(&join, StepKind::Join, Next::to(next));
                let entries: Vec<String> = fan.iter().map(|b| self.emit(b, &join)).collect();
                let s = self.fresh();
                self.push(
                    &s,
                    StepKind::Normal,
                    Next::switch_cases("choice", [("one", vec![single]), ("fan", entries)]),
                );
                s
            }
            Block::Loop(body) => {
                let l = self.fresh();
                let entry = self.emit(body, &l);
                let cases = [("again", entry.as_str()), ("done", next)];
                self.push(&l, StepKind::Normal, Next::switch("more", cases));
                entry
            }
            Block::SelfLoop => {
                let l = self.fresh();
                let cases = [("again", l.as_str()), ("done", next)];
                self.push(&l, StepKind::Normal, Next::switch("more", cases));
                l
            }
        }
    }
}

fn compile(b: &Block) -> Vec<Decl> {
    let mut e = Emit::default();
    let entry = e.emit(b, "end");
    e.push("start", StepKind::Normal, Next::to(&entry));
    e.push("end", StepKind::Normal, Next::End);
    e.steps
}

fn builder(name: &str, steps: &[Decl]) -> FlowBuilder {
    steps.iter().fold(FlowBuilder::new(name), |b, (n, kind, next)| match kind {
        StepKind::Normal => b.step(n, next.clone()),
        StepKind::Join => b.join(n, next.clone()),
    })
}

fn valid_flow() -> impl Strategy<Value = Vec<Decl>> {
    block().prop_flat_map(|b| Just(compile(&b)).prop_shuffle())
}

fn check_valid(g: &FlowGraph) -> Result<(), TestCaseError> {
    let topo = g.topological_order();
    prop_assert_eq!(topo.len(), g.steps().len());
    prop_assert_eq!(topo.first().map(|s| s.as_str()), Some("start"));
    let pos = |s: &str| topo.iter().position(|t| t == s);
    for step in g.steps() {
        let name = step.name.as_str();
        for p in g.parents(name) {
            prop_assert!(pos(p.as_str()) < pos(name), "{p} after {name}");
        }
        prop_assert!(g.foreach_depth(name) <= g.fanout_stack(name).len());
        if step.kind == StepKind::Join {
            let fan = g.fanout_of(name).expect("every join closes a fan-out");
            let closes = match &g.step(fan.as_str()).expect("the fan-out is a step").next {
                braid_dag::Transition::Switch { cases, .. } => {
                    cases.keys().any(|c| g.join_of_case(fan.as_str(), c).is_some_and(|j| j == name))
                }
                _ => g.join_of(fan.as_str()).is_some_and(|j| j == name),
            };
            prop_assert!(closes, "`{name}` closes `{fan}`, which does not name it as its join");
        }
        for t in step.next.targets() {
            let back = g.is_loop_back(name, t.as_str());
            prop_assert_eq!(back, g.parents(t.as_str()).iter().all(|p| p != name));
        }
    }
    prop_assert!(g.fanout_stack("end").is_empty());
    let back = FlowGraph::from_json(&g.to_json().expect("serializes")).expect("round trip");
    prop_assert_eq!(back.spec(), g.spec());
    let mermaid = g.to_mermaid();
    let dot = g.to_dot();
    for step in g.steps() {
        let s_id = format!("s_{}", step.name);
        let quoted = format!("\"{}\"", step.name);
        prop_assert!(mermaid.contains(&s_id));
        prop_assert!(dot.contains(&quoted));
    }
    Ok(())
}

const NAMES: &[&str] = &["start", "end", "a", "b", "c", "d", "join", "1x", "a b", "", "é", "x/y"];

/// Every problem message mentions a name from the input (backticked or quoted).
fn names_something(msg: &str, extra: &[String]) -> bool {
    NAMES
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .any(|n| msg.contains(&format!("`{n}`")) || msg.contains(&format!("{n:?}")))
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(NAMES).prop_map(str::to_owned), 1 => "\\PC{0,8}"]
}

fn any_next() -> impl Strategy<Value = Next> {
    let artifact = prop::sample::select(vec!["items", "bad name", ""]);
    prop_oneof![
        Just(Next::End),
        any_name().prop_map(Next::To),
        prop::collection::vec(any_name(), 0..4).prop_map(Next::Split),
        (artifact.clone(), any_name()).prop_map(|(over, to)| Next::Foreach { over: over.to_owned(), to }),
        (artifact, prop::collection::vec((any_name(), prop::collection::vec(any_name(), 0..3)), 0..4))
            .prop_map(|(on, cases)| { Next::Switch { on: on.to_owned(), cases } }),
    ]
}

fn any_kind() -> impl Strategy<Value = StepKind> {
    prop_oneof![3 => Just(StepKind::Normal), 1 => Just(StepKind::Join)]
}

fn any_type() -> impl Strategy<Value = ParamType> {
    prop::sample::select(vec![
        ParamType::String,
        ParamType::Int,
        ParamType::UInt,
        ParamType::Float,
        ParamType::Bool,
        ParamType::Json,
    ])
}

/// A mutation of a valid flow: drop a step, retarget one, or flip join/normal.
#[derive(Debug, Clone)]
enum Mutation {
    Remove(usize),
    Retarget(usize, String),
    Flip(usize),
}

fn mutate(mut steps: Vec<Decl>, m: &Mutation) -> Vec<Decl> {
    let n = steps.len();
    match m {
        Mutation::Remove(i) => {
            steps.remove(i % n);
        }
        Mutation::Retarget(i, to) => {
            let to = if to.is_empty() { steps[(i / 7) % n].0.clone() } else { to.clone() };
            steps[i % n].2 = match &steps[i % n].2 {
                Next::End => Next::To(to),
                Next::To(_) => Next::To(to),
                Next::Split(ts) => Next::Split(ts.iter().skip(1).cloned().chain([to]).collect()),
                Next::Foreach { over, .. } => Next::Foreach { over: over.clone(), to },
                Next::Switch { on, cases } => {
                    let mut cases = cases.clone();
                    cases.push(("extra".into(), vec![to]));
                    Next::Switch { on: on.clone(), cases }
                }
            };
        }
        Mutation::Flip(i) => {
            let k = &mut steps[i % n].1;
            *k = if *k == StepKind::Join { StepKind::Normal } else { StepKind::Join };
        }
    }
    steps
}

proptest! {
    #[test]
    fn composed_graphs_validate(steps in valid_flow()) {
        let g = builder("generated", &steps).build();
        let g = match g {
            Ok(g) => g,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{steps:#?}"))),
        };
        check_valid(&g)?;
    }

    #[test]
    fn random_graphs_never_panic_and_name_a_step(
        flow in prop::sample::select(vec!["f", "1f"]),
        steps in prop::collection::vec((any_name(), any_kind(), any_next()), 0..10),
        params in prop::collection::vec(
            (prop::sample::select(vec!["n", "n", "bad name"]), any_type(),
             prop::option::of(prop::sample::select(vec![
                 serde_json::json!(1), serde_json::json!(-1), serde_json::json!("x"),
                 serde_json::json!(1.5), serde_json::json!(null), serde_json::json!(true)]))),
            0..3),
    ) {
        let mut b = builder(flow, &steps);
        for (name, ty, default) in &params {
            let mut p = Param::new(name, *ty);
            if let Some(d) = default {
                p = p.default(d);
            }
            b = b.param(p);
        }
        let mut extra: Vec<String> = vec![flow.to_owned(), "n".into(), "bad name".into()];
        for (n, _, next) in &steps {
            extra.push(n.clone());
            match next {
                Next::End => {}
                Next::To(t) | Next::Foreach { to: t, .. } => extra.push(t.clone()),
                Next::Split(ts) => extra.extend(ts.iter().cloned()),
                Next::Switch { cases, .. } => extra.extend(cases.iter().flat_map(|(_, t)| t.iter().cloned())),
            }
        }
        match b.build() {
            Ok(g) => check_valid(&g)?,
            Err(errs) => {
                prop_assert!(!errs.is_empty());
                for e in &errs {
                    let msg = e.to_string();
                    prop_assert!(names_something(&msg, &extra), "names nothing: {msg}");
                }
            }
        }
    }

    #[test]
    fn mutated_graphs_never_panic(
        steps in valid_flow(),
        m in prop_oneof![
            any::<usize>().prop_map(Mutation::Remove),
            (any::<usize>(), prop_oneof![Just(String::new()), any_name()])
                .prop_map(|(i, t)| Mutation::Retarget(i, t)),
            any::<usize>().prop_map(Mutation::Flip),
        ],
    ) {
        let steps = mutate(steps, &m);
        let mut extra: Vec<String> = steps.iter().map(|s| s.0.clone()).collect();
        if let Mutation::Retarget(_, t) = &m {
            extra.push(t.clone());
        }
        match builder("mutated", &steps).build() {
            Ok(g) => check_valid(&g)?,
            Err(errs) => {
                for e in &errs {
                    let msg = e.to_string();
                    prop_assert!(names_something(&msg, &extra), "names nothing: {msg}");
                }
            }
        }
    }

    #[test]
    fn parse_value_never_panics(ty in any_type(), text in prop_oneof![any::<String>(), "[-+0-9.eE]{0,24}", "\\PC{0,40}"]) {
        let declared = [ParamSpec::new(ParamName::new("p").expect("valid"), ty)];
        let check = ParamCheck::new(&declared);
        match check.parse("p", &text) {
            Ok(v) => prop_assert!(check.check("p", &v).is_ok(), "{ty}: {text:?} -> {v}"),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("parameter `p` expects "), "{msg}");
            }
        }
    }
}
