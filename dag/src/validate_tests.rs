use super::ValidationError as E;
use crate::{FlowBuilder, FlowGraph, Next, Param, ParamType};

fn flow() -> FlowBuilder {
    FlowBuilder::new("f")
}

/// Builds, expects failure, checks that every needle is in the message; returns the
/// problems.
fn fails(b: FlowBuilder, needles: &[&str]) -> Vec<E> {
    let errs = b.build().unwrap_err();
    let text = errs.to_string();
    for n in needles {
        assert!(text.contains(n), "{n:?} not in:\n{text}");
    }
    assert_eq!(text.lines().count(), errs.len(), "one problem per line:\n{text}");
    errs.0
}

fn only(b: FlowBuilder, needles: &[&str]) -> E {
    let errs = fails(b, needles);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

// ---- valid graphs ----------------------------------------------------------------

#[test]
fn linear() {
    let g = flow().step("start", Next::to("a")).step("a", Next::to("end")).step("end", Next::End).build().unwrap();
    assert_eq!(g.parents("a"), ["start"]);
    assert!(g.parents("start").is_empty());
    assert_eq!(g.topological_order(), ["start", "a", "end"]);
    assert_eq!(g.foreach_depth("a"), 0);
    assert!(g.fanout_stack("a").is_empty());
    assert!(g.join_of("start").is_none());
    assert!(g.parents("nope").is_empty());
}

#[test]
fn foreach_with_join() {
    let g = flow()
        .step("start", Next::foreach("items", "work"))
        .step("work", Next::to("join"))
        .join("join", Next::to("end"))
        .step("end", Next::End)
        .build()
        .unwrap();
    assert_eq!(g.join_of("start").unwrap(), "join");
    assert_eq!(g.fanout_of("join").unwrap(), "start");
    assert_eq!(g.foreach_depth("work"), 1);
    assert_eq!(g.foreach_depth("join"), 0);
    assert_eq!(g.foreach_depth("start"), 0);
    assert_eq!(g.fanout_stack("work"), ["start"]);
    assert_eq!(g.parents("join"), ["work"]);
}

#[test]
fn nested_foreach() {
    let g = flow()
        .step("start", Next::foreach("xs", "outer"))
        .step("outer", Next::foreach("ys", "inner"))
        .step("inner", Next::to("inner_join"))
        .join("inner_join", Next::to("outer_join"))
        .join("outer_join", Next::to("end"))
        .step("end", Next::End)
        .build()
        .unwrap();
    assert_eq!(g.foreach_depth("inner"), 2);
    assert_eq!(g.fanout_stack("inner"), ["start", "outer"]);
    assert_eq!(g.foreach_depth("inner_join"), 1);
    assert_eq!(g.join_of("outer").unwrap(), "inner_join");
    assert_eq!(g.join_of("start").unwrap(), "outer_join");
    assert_eq!(g.fanout_of("outer_join").unwrap(), "start");
}

#[test]
fn static_split() {
    let g = flow()
        .step("start", Next::split(["a", "b"]))
        .step("a", Next::to("join"))
        .step("b", Next::to("join"))
        .join("join", Next::to("end"))
        .step("end", Next::End)
        .build()
        .unwrap();
    assert_eq!(g.parents("join"), ["a", "b"]);
    assert_eq!(g.join_of("start").unwrap(), "join");
    assert_eq!(g.fanout_stack("b"), ["start"]);
    assert_eq!(g.foreach_depth("b"), 0);
}

#[test]
fn switch_cases_converge_on_a_normal_step() {
    let g = flow()
        .step("start", Next::switch("choice", [("left", "a"), ("right", "b")]))
        .step("a", Next::to("c"))
        .step("b", Next::to("c"))
        .step("c", Next::to("end"))
        .step("end", Next::End)
        .build()
        .unwrap();
    assert_eq!(g.parents("c"), ["a", "b"]);
    assert!(!g.is_loop_back("start", "a"));
}

/// Metaflow 2.19's `"miss" -> [clip, face] -> join_miss` next to a case of one step:
/// both paths meet at `end`, which runs once from whichever path ran.
fn fanout_case_flow() -> FlowBuilder {
    flow()
        .step("start", Next::switch_cases("verdict", [("hit", vec!["fast"]), ("miss", vec!["clip", "face"])]))
        .step("fast", Next::to("end"))
        .step("clip", Next::to("join_miss"))
        .step("face", Next::to("join_miss"))
        .join("join_miss", Next::to("end"))
        .step("end", Next::End)
}

#[test]
fn a_switch_case_fans_out_and_its_join_meets_the_other_case() {
    let g = fanout_case_flow().build().unwrap();
    assert_eq!(g.join_of_case("start", "miss").unwrap(), "join_miss");
    assert!(g.join_of_case("start", "hit").is_none());
    assert!(g.join_of("start").is_none());
    assert_eq!(g.fanout_of("join_miss").unwrap(), "start");
    assert_eq!(g.fanout_stack("clip"), ["start"]);
    assert!(g.fanout_stack("fast").is_empty());
    assert!(g.fanout_stack("join_miss").is_empty());
    assert_eq!(g.parents("end"), ["fast", "join_miss"]);
    // The spec writes a fan-out case as a list and a single case as a name, and reads both.
    let text = g.to_json().unwrap();
    let back = FlowGraph::from_json(&text).unwrap();
    assert_eq!(back.spec(), g.spec());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["steps"][0]["next"]["cases"], serde_json::json!({"hit": "fast", "miss": ["clip", "face"]}));
}

#[test]
fn two_fanout_cases_of_one_switch_have_a_join_each() {
    let g = flow()
        .step("start", Next::switch_cases("v", [("a", vec!["a1", "a2"]), ("b", vec!["b1", "b2"])]))
        .step("a1", Next::to("ja"))
        .step("a2", Next::to("ja"))
        .join("ja", Next::to("end"))
        .step("b1", Next::to("jb"))
        .step("b2", Next::to("jb"))
        .join("jb", Next::to("end"))
        .step("end", Next::End)
        .build()
        .unwrap();
    assert_eq!(g.join_of_case("start", "a").unwrap(), "ja");
    assert_eq!(g.join_of_case("start", "b").unwrap(), "jb");
    // One step listed alone is a plain case.
    let single =
        flow().step("start", Next::switch_cases("v", [("x", ["end"])])).step("end", Next::End).build().unwrap();
    assert!(matches!(
        &single.step("start").unwrap().next,
        crate::Transition::Switch { cases, .. } if cases["x"] == crate::CaseTarget::Step("end".parse().unwrap())
    ));
}

#[test]
fn fanout_case_problems_are_named() {
    // A branch of the case that never reaches the join, and an empty case.
    let errs = fails(
        flow()
            .step("start", Next::switch_cases("v", [("a", vec!["a1", "a2"]), ("none", vec![])]))
            .step("a1", Next::to("ja"))
            .step("a2", Next::to("end"))
            .join("ja", Next::to("end"))
            .step("end", Next::End),
        &["case `none` of the switch of step `start` lists no steps", "`a2`"],
    );
    assert!(errs.contains(&E::EmptyCase { step: "start".into(), case: "none".into() }), "{errs:#?}");
    // A case's branches that are never joined.
    let e = only(
        flow()
            .step("start", Next::switch_cases("v", [("a", vec!["a1", "a2"])]))
            .step("a1", Next::to("end"))
            .step("a2", Next::to("end"))
            .step("end", Next::End),
        &["branches of split `start` case `a` meet at step `end`", "not a join"],
    );
    assert!(matches!(e, E::BranchesMeet { .. }), "{e:?}");
    // A step both a branch of a fan-out case and another case's target.
    let errs = fails(
        flow()
            .step("start", Next::switch_cases("v", [("a", vec!["a1", "a2"]), ("b", vec!["a1"])]))
            .step("a1", Next::to("ja"))
            .step("a2", Next::to("ja"))
            .join("ja", Next::to("end"))
            .step("end", Next::End),
        &["step `a1` is named by cases `a`, `b`"],
    );
    assert!(errs.iter().any(|e| matches!(e, E::SharedCaseTarget { target, .. } if target == "a1")), "{errs:#?}");
    // A fan-out case that loops back.
    let errs = fails(
        flow()
            .step("start", Next::to("head"))
            .step("head", Next::to("body"))
            .step("body", Next::switch_cases("v", [("again", vec!["head", "other"]), ("done", vec!["end"])]))
            .step("other", Next::to("end"))
            .step("end", Next::End),
        &["case `again` of switch `body` fans out and loops back to `head`"],
    );
    assert!(errs.iter().any(|e| matches!(e, E::FanoutCaseLoops { .. })), "{errs:#?}");
    // The same branch twice in a case.
    let errs = fails(
        flow()
            .step("start", Next::switch_cases("v", [("a", vec!["a1", "a1"])]))
            .step("a1", Next::to("end"))
            .step("end", Next::End),
        &["`a1` more than once"],
    );
    assert!(errs.iter().any(|e| matches!(e, E::DuplicateTarget { .. })), "{errs:#?}");
}

#[test]
fn recursive_switch_loop() {
    let g = flow()
        .step("start", Next::to("loop"))
        .step("loop", Next::switch("state", [("again", "loop"), ("done", "end")]))
        .step("end", Next::End)
        .build()
        .unwrap();
    assert!(g.is_loop_back("loop", "loop"));
    assert!(!g.is_loop_back("loop", "end"));
    assert_eq!(g.parents("loop"), ["start"]);
    assert_eq!(g.topological_order(), ["start", "loop", "end"]);
}

#[test]
fn loop_inside_a_foreach_branch() {
    let g = flow()
        .step("start", Next::foreach("items", "body"))
        .step("body", Next::to("check"))
        .step("check", Next::switch("state", [("again", "body"), ("done", "join")]))
        .join("join", Next::to("end"))
        .step("end", Next::End)
        .build()
        .unwrap();
    assert!(g.is_loop_back("check", "body"));
    assert_eq!(g.parents("body"), ["start"]);
    assert_eq!(g.fanout_stack("check"), ["start"]);
    assert_eq!(g.parents("join"), ["check"]);
}

#[test]
fn loop_around_a_foreach_and_split_after_switch() {
    flow()
        .step("start", Next::switch("mode", [("fan", "s"), ("skip", "z")]))
        .step("s", Next::split(["p", "q"]))
        .step("p", Next::to("j"))
        .step("q", Next::to("j"))
        .join("j", Next::to("f"))
        .step("f", Next::foreach("items", "w"))
        .step("w", Next::to("fj"))
        .join("fj", Next::to("again"))
        .step("again", Next::switch("more", [("yes", "f"), ("no", "z")]))
        .step("z", Next::to("end"))
        .step("end", Next::End)
        .build()
        .unwrap();
}

#[test]
fn switch_inside_split_branch_reaching_join_by_two_paths() {
    let g = flow()
        .step("start", Next::split(["a", "b"]))
        .step("a", Next::switch("c", [("x", "a1"), ("y", "a2")]))
        .step("a1", Next::to("j"))
        .step("a2", Next::to("j"))
        .step("b", Next::to("j"))
        .join("j", Next::to("end"))
        .step("end", Next::End)
        .build()
        .unwrap();
    assert_eq!(g.parents("j"), ["a1", "a2", "b"]);
}

// ---- one test per problem --------------------------------------------------------

#[test]
fn invalid_names_are_quoted_and_do_not_cascade() {
    let errs = fails(
        FlowBuilder::new("1flow")
            .param(Param::new("p q", ParamType::Int))
            .step("start", Next::foreach("it ems", "a b"))
            .step("a b", Next::to("j"))
            .join("j", Next::switch("on/x", [("k", "end"), ("l", "x y")]))
            .step("end", Next::End),
        &[
            "the flow's name: invalid flow name \"1flow\"",
            "a parameter's name: invalid parameter name \"p q\"",
            "the foreach artifact of step `start`: invalid artifact name \"it ems\"",
            "a step's name: invalid step name \"a b\"",
            "the switch artifact of step `j`",
            "a target of step `j`: invalid step name \"x y\"",
            "a letter or `_` first",
            "rename it",
        ],
    );
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert!(errs.iter().all(|e| matches!(e, E::InvalidName { .. })));
}

#[test]
fn missing_start_and_end() {
    let errs = fails(
        flow().step("a", Next::to("b")).step("b", Next::to("a")),
        &["no `start` step", "`.step(\"start\"", "no `end` step", "Next::End"],
    );
    assert!(errs.contains(&E::MissingStart) && errs.contains(&E::MissingEnd));
}

#[test]
fn duplicate_step() {
    let e = only(
        flow().step("start", Next::to("end")).step("start", Next::to("end")).step("end", Next::End),
        &["step `start` is declared 2 times", "unique"],
    );
    assert!(matches!(e, E::DuplicateStep { count: 2, .. }));
}

#[test]
fn duplicate_param_and_bad_defaults() {
    use std::collections::BTreeMap;
    let unserializable: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let errs = fails(
        flow()
            .param(Param::new("n", ParamType::UInt).default(-1))
            .param(Param::new("n", ParamType::UInt))
            .param(Param::new("m", ParamType::Json).default(unserializable))
            .step("start", Next::to("end"))
            .step("end", Next::End),
        &[
            "default of parameter `n` is invalid: expected an unsigned integer (u64), got -1",
            "parameter `n` is declared 2 times",
            "default of parameter `m` is invalid: key must be a string",
            "change the default",
        ],
    );
    assert_eq!(errs.len(), 3);
}

#[test]
fn doc_for_unknown_step() {
    only(
        flow().step("start", Next::to("end")).step("end", Next::End).doc("start", "begins").doc("nope", "?"),
        &["step `nope`, which is not declared", "`.doc(...)`"],
    );
}

#[test]
fn unknown_target_suggests() {
    let errs = fails(
        flow().step("start", Next::to("wrok")).step("work", Next::to("end")).step("end", Next::End),
        &["step `start` goes to `wrok`", "did you mean `work`?", "`start`, `work`, `end`"],
    );
    assert!(matches!(errs[0], E::UnknownTarget { .. }));
    // the steps cut off by the typo are reported as unreachable, not as dead ends
    let errs = fails(
        flow().step("start", Next::to("zzz")).step("end", Next::End),
        &["goes to `zzz`", "step `end` is unreachable"],
    );
    assert!(!errs.iter().any(|e| matches!(e, E::NoPathToEnd { .. })), "{errs:?}");
}

#[test]
fn end_must_end_and_only_end() {
    only(
        flow().step("start", Next::to("end")).step("end", Next::to("start")),
        &["step `end` has a `next` transition", "give it `Next::End`"],
    );
    only(
        flow().step("start", Next::switch("x", [("a", "a"), ("b", "end")])).step("a", Next::End).step("end", Next::End),
        &["step `a` finishes the flow", "only the step named `end`", "Next::to(\"end\")"],
    );
}

#[test]
fn split_too_few_and_duplicate_targets() {
    let errs = fails(
        flow()
            .step("start", Next::split(["a", "a"]))
            .step("a", Next::to("j"))
            .join("j", Next::to("end"))
            .step("end", Next::End),
        &[
            "step `start` splits into 1 distinct branch(es)",
            "use `Next::to`",
            "the split of step `start` lists `a` more than once",
        ],
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
}

#[test]
fn switch_without_cases_or_with_duplicate_case() {
    let errs = fails(
        flow()
            .step("start", Next::switch("c", [("x", "a"), ("x", "end")]))
            .step("a", Next::switch("c", Vec::<(&str, &str)>::new()))
            .step("end", Next::End),
        &[
            "switch of step `start` has case \"x\" more than once",
            "switch of step `a` has no cases",
            "add at least one",
        ],
    );
    assert!(errs.contains(&E::EmptySwitch { step: "a".into() }));
}

#[test]
fn cycle_not_closed_by_switch() {
    let errs = fails(
        flow()
            .step("start", Next::to("a"))
            .step("a", Next::to("b"))
            .step("b", Next::split(["a", "end"]))
            .step("end", Next::End),
        &["steps `a`, `b` form a cycle", "make the step that goes back a switch"],
    );
    assert!(errs.contains(&E::Cycle { steps: vec!["a".into(), "b".into()] }));
    // a loop entered in the middle is not a switch loop either
    let errs = fails(
        flow()
            .step("start", Next::switch("x", [("a", "l1"), ("b", "l2")]))
            .step("l1", Next::to("l2"))
            .step("l2", Next::switch("s", [("again", "l1"), ("done", "end")]))
            .step("end", Next::End),
        &["steps `l1`, `l2` form a cycle"],
    );
    assert_eq!(errs.len(), 1);
}

#[test]
fn unreachable_step() {
    only(
        flow().step("start", Next::to("end")).step("orphan", Next::to("end")).step("end", Next::End),
        &["step `orphan` is unreachable", "make it the target"],
    );
}

#[test]
fn no_path_to_end() {
    let errs = fails(
        flow()
            .step("start", Next::to("loop"))
            .step("loop", Next::switch("s", [("again", "loop")]))
            .step("end", Next::End),
        &["step `loop` has no path to `end`", "a case that leaves the loop", "step `end` is unreachable"],
    );
    assert!(errs.contains(&E::NoPathToEnd { step: "start".into() }));
}

#[test]
fn foreach_without_join() {
    only(
        flow().step("start", Next::foreach("items", "work")).step("work", Next::to("end")).step("end", Next::End),
        &["foreach `start` is never closed by a join", "add a join step"],
    );
}

#[test]
fn join_without_fanout() {
    only(
        flow().step("start", Next::to("j")).join("j", Next::to("end")).step("end", Next::End),
        &["join step `j` (reached from `start`) has no open split or foreach", "with `.step` instead"],
    );
    only(flow().join("start", Next::to("end")).step("end", Next::End), &["join step `start` has no open"]);
}

#[test]
fn join_of_different_fanouts() {
    only(
        flow()
            .step("start", Next::split(["a", "f"]))
            .step("f", Next::foreach("items", "w"))
            .step("a", Next::to("j"))
            .step("w", Next::to("j"))
            .join("j", Next::to("end"))
            .step("end", Next::End),
        &[
            "join `j` receives branches of different fan-outs: `start` (via `a`), `f` (via `w`)",
            "closing the inner one first",
        ],
    );
}

#[test]
fn branches_meet_at_a_normal_step() {
    only(
        flow()
            .step("start", Next::split(["a", "b"]))
            .step("a", Next::to("c"))
            .step("b", Next::to("c"))
            .step("c", Next::to("j"))
            .join("j", Next::to("end"))
            .step("end", Next::End),
        &["branches of split `start` meet at step `c` (via `a` and `b`)", "declare `c` with `.join`"],
    );
}

#[test]
fn mismatched_nesting() {
    only(
        flow()
            .step("start", Next::switch("x", [("fan", "f"), ("skip", "c")]))
            .step("f", Next::foreach("items", "w"))
            .step("w", Next::to("c"))
            .step("c", Next::to("end"))
            .step("end", Next::End),
        &[
            "step `c` is reached outside any split or foreach (via `start`) and inside `f` (via `w`)",
            "add the missing join",
        ],
    );
}

#[test]
fn inner_join_must_close_first() {
    // the inner foreach's branches skip its join and reach the outer one
    let errs = fails(
        flow()
            .step("start", Next::foreach("xs", "outer"))
            .step("outer", Next::foreach("ys", "inner"))
            .step("inner", Next::switch("c", [("a", "inner_join"), ("b", "outer_join")]))
            .join("inner_join", Next::to("outer_join"))
            .join("outer_join", Next::to("end"))
            .step("end", Next::End),
        &["join `outer_join`"],
    );
    assert!(
        errs.iter().any(|e| matches!(e, E::MismatchedNesting { .. } | E::JoinOfDifferentFanouts { .. })),
        "{errs:#?}"
    );
}

#[test]
fn branches_reach_different_joins() {
    only(
        flow()
            .step("start", Next::split(["a", "b"]))
            .step("a", Next::to("j1"))
            .step("b", Next::to("j2"))
            .join("j1", Next::to("end"))
            .join("j2", Next::to("end"))
            .step("end", Next::End),
        &["branches of split `start` reach different joins `j1`, `j2`", "the same join step"],
    );
}

#[test]
fn branch_missing_from_join() {
    let errs = fails(
        flow()
            .step("start", Next::split(["a", "b"]))
            .step("a", Next::to("j"))
            .step("b", Next::to("end"))
            .join("j", Next::to("end"))
            .step("end", Next::End),
        &["join `j` closes split `start`, but the branch(es) starting at `b` never reach it"],
    );
    assert!(errs.iter().any(|e| matches!(e, E::MismatchedNesting { step, .. } if step == "end")));
}

#[test]
fn empty_branch() {
    only(
        flow()
            .step("start", Next::split(["a", "j"]))
            .step("a", Next::to("j"))
            .join("j", Next::to("end"))
            .step("end", Next::End),
        &["step `start` fans out straight into join `j`", "add a step in between"],
    );
}

#[test]
fn loop_across_fanout() {
    only(
        flow()
            .step("start", Next::foreach("items", "w"))
            .step("w", Next::switch("s", [("again", "start"), ("done", "j")]))
            .join("j", Next::to("end"))
            .step("end", Next::End),
        &[
            "switch `w` loops back to `start`, but `w` is inside `start` and `start` is outside any split or foreach",
            "cannot jump into or out of",
        ],
    );
}

#[test]
fn loop_into_join() {
    only(
        flow()
            .step("start", Next::split(["a", "b"]))
            .step("a", Next::to("j"))
            .step("b", Next::to("j"))
            .join("j", Next::to("s"))
            .step("s", Next::switch("more", [("again", "j"), ("done", "end")]))
            .step("end", Next::End),
        &["switch `s` loops back to join `j`", "cannot re-enter a join"],
    );
}

#[test]
fn newer_spec_version_refused_by_from_spec() {
    let mut spec = flow().step("start", Next::to("end")).step("end", Next::End).build().unwrap().spec().clone();
    spec.format_version = 2;
    let e = FlowGraph::from_spec(spec).unwrap_err().to_string();
    assert!(e.contains("format version 2") && e.contains("upgrade braid"), "{e}");
}

#[test]
fn every_problem_at_once() {
    let errs = fails(
        flow()
            .step("start", Next::split(["a"]))
            .step("a", Next::to("missing"))
            .step("b", Next::End)
            .join("j", Next::to("end")),
        &["splits into 1", "goes to `missing`", "step `b` finishes", "no `end` step", "`j` is unreachable"],
    );
    assert!(errs.len() >= 5, "{errs:#?}");
}
