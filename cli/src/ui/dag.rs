//! The flow graph and the run timeline, drawn server-side as SVG (no script, no CDN).
//!
//! Layout: steps are put in layers by their longest path from `start` (loop-back edges
//! ignored), ordered inside a layer by the mean position of their parents (one
//! barycenter pass, enough for the graphs flows have); edges are curves from the bottom
//! of a step to the top of the next; a loop-back edge curves up along the right side.

use std::collections::HashMap;

use braid_client::{TaskStatus, Timestamp};
use braid_dag::{FlowGraph, Transition};
use maud::{Markup, html};

use super::view::{sclass, seg};

/// What the run did in one step, for colouring its node.
#[derive(Debug, Clone, Default)]
pub struct StepState {
    pub counts: Vec<(String, u64)>,
    pub total: u64,
}

impl StepState {
    fn count(&self, status: &str) -> u64 {
        self.counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n)
    }

    /// The word the node is coloured by: the most urgent status any task has.
    pub fn state(&self) -> &'static str {
        if self.total == 0 {
            return "not_started";
        }
        for s in ["failed", "lost", "running", "pending", "cancelled"] {
            if self.count(s) > 0 {
                return s;
            }
        }
        if self.count("succeeded") == self.total { "succeeded" } else { "mixed" }
    }

    fn label(&self) -> String {
        if self.total == 0 {
            return "not started".to_owned();
        }
        let done = self.count(TaskStatus::Succeeded.as_str());
        let mut parts = vec![format!("{done}/{} ok", self.total)];
        for s in ["running", "failed", "lost", "pending", "cancelled"] {
            let n = self.count(s);
            if n > 0 {
                parts.push(format!("{n} {s}"));
            }
        }
        parts.join(" · ")
    }
}

const W: i64 = 170;
const H: i64 = 52;
const GX: i64 = 36;
const GY: i64 = 58;
const PAD: i64 = 20;
const LOOP_SPACE: i64 = 90;

struct Placed {
    x: i64,
    y: i64,
}

/// Step name -> (layer, position in its layer).
type Positions = HashMap<String, (usize, usize)>;

/// The layers of the graph: each step's position, and the step names of each layer.
fn layout(g: &FlowGraph) -> (Positions, Vec<Vec<String>>) {
    let mut layer: HashMap<String, usize> = HashMap::new();
    for s in g.topological_order() {
        let l = g
            .parents(s.as_str())
            .iter()
            .filter(|p| !g.is_loop_back(p.as_str(), s.as_str()))
            .filter_map(|p| layer.get(p.as_str()))
            .map(|l| l + 1)
            .max()
            .unwrap_or(0);
        layer.insert(s.to_string(), l);
    }
    let depth = layer.values().copied().max().map_or(0, |m| m + 1);
    let mut layers: Vec<Vec<String>> = vec![Vec::new(); depth];
    for s in g.topological_order() {
        if let Some(&l) = layer.get(s.as_str()) {
            layers[l].push(s.to_string());
        }
    }
    let mut pos: Positions = HashMap::new();
    for (li, names) in layers.iter_mut().enumerate() {
        if li > 0 {
            let key = |n: &String| {
                let ps: Vec<f64> = g
                    .parents(n)
                    .iter()
                    .filter_map(|p| pos.get(p.as_str()))
                    .filter(|(pl, _)| *pl < li)
                    .map(|(_, i)| *i as f64)
                    .collect();
                if ps.is_empty() { f64::MAX } else { ps.iter().sum::<f64>() / ps.len() as f64 }
            };
            let mut keyed: Vec<(f64, usize, String)> =
                names.iter().enumerate().map(|(i, n)| (key(n), i, n.clone())).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *names = keyed.into_iter().map(|(_, _, n)| n).collect();
        }
        for (i, n) in names.iter().enumerate() {
            pos.insert(n.clone(), (li, i));
        }
    }
    (pos, layers)
}

/// Steps that sit inside a loop (between a loop-back edge's target and its source in
/// topological order): their task count is the number of iterations.
fn in_loop(g: &FlowGraph) -> Vec<String> {
    let order: Vec<&str> = g.topological_order().iter().map(|s| s.as_str()).collect();
    let at = |n: &str| order.iter().position(|o| *o == n);
    let mut out = Vec::new();
    for s in g.steps() {
        for t in s.next.targets() {
            if g.is_loop_back(s.name.as_str(), t.as_str())
                && let (Some(a), Some(b)) = (at(t.as_str()), at(s.name.as_str()))
            {
                out.extend(order[a.min(b)..=a.max(b)].iter().map(|n| (*n).to_owned()));
            }
        }
    }
    out
}

/// The graph as SVG: each step a box coloured by its state with its counts, linking to
/// the step's page; edges labelled with foreach artifacts and switch cases, the taken
/// branches drawn bold.
pub fn graph_svg(g: &FlowGraph, states: &HashMap<String, StepState>, run_href: &str) -> Markup {
    let (pos, layers) = layout(g);
    let widest = layers.iter().map(Vec::len).max().unwrap_or(1) as i64;
    let width = PAD * 2 + widest * W + (widest - 1).max(0) * GX + LOOP_SPACE;
    let height = PAD * 2 + layers.len() as i64 * H + (layers.len() as i64 - 1).max(0) * GY;
    let place = |name: &str| -> Option<Placed> {
        let (l, i) = *pos.get(name)?;
        let n = layers[l].len() as i64;
        let row_w = n * W + (n - 1) * GX;
        let x0 = PAD + (widest * W + (widest - 1).max(0) * GX - row_w) / 2;
        Some(Placed { x: x0 + i as i64 * (W + GX), y: PAD + l as i64 * (H + GY) })
    };
    let looped = in_loop(g);
    let empty = StepState::default();
    html! {
        svg.dag xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} role="img" aria-label="flow graph" {
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" class="arrowhead" {}
                }
            }
            @for s in g.steps() {
                @let from = s.name.as_str();
                @if let Some(a) = place(from) {
                    @for t in s.next.targets() {
                        @if let Some(b) = place(t.as_str()) {
                            @let back = g.is_loop_back(from, t.as_str());
                            @let taken = states.get(t.as_str()).is_some_and(|x| x.total > 0) && states.get(from).is_some_and(|x| x.total > 0);
                            @let reached = states.get(from).is_some_and(|x| x.total > 0 && x.state() == "succeeded");
                            @let class = if taken { "edge taken" } else if reached && matches!(s.next, Transition::Switch { .. }) { "edge not-taken" } else { "edge" };
                            @let label = edge_label(&s.next, t.as_str());
                            @if back {
                                @let (sx, sy, tx, ty) = (a.x + W, a.y + H / 2, b.x + W, b.y + H / 2);
                                path class={(class) " loop"} marker-end="url(#arrow)"
                                    d={"M " (sx) " " (sy) " C " (sx + 70) " " (sy) ", " (tx + 70) " " (ty) ", " (tx) " " (ty)} {}
                                @if let Some(l) = &label {
                                    text.edge-label x=(sx.max(tx) + 40) y=((sy + ty) / 2) { (l) }
                                }
                            } @else {
                                @let (sx, sy, tx, ty) = (a.x + W / 2, a.y + H, b.x + W / 2, b.y);
                                @let my = (sy + ty) / 2;
                                path class=(class) marker-end="url(#arrow)"
                                    d={"M " (sx) " " (sy) " C " (sx) " " (my) ", " (tx) " " (my) ", " (tx) " " (ty)} {}
                                @if let Some(l) = &label {
                                    text.edge-label x=((sx + tx) / 2 + 6) y=(my) { (l) }
                                }
                            }
                        }
                    }
                }
            }
            @for s in g.steps() {
                @let name = s.name.as_str();
                @if let Some(p) = place(name) {
                    @let state = states.get(name).unwrap_or(&empty);
                    a href={(run_href) "/" (seg(name))} {
                        g class={"node " (sclass(state.state()))} data-step=(name) {
                            title { (name) ": " (state.label()) @if let Some(d) = &s.doc { " — " (d) } }
                            rect x=(p.x) y=(p.y) width=(W) height=(H) rx="8" {}
                            text.name x=(p.x + W / 2) y=(p.y + 21) { (super::view::cut(name, 22)) }
                            text.counts x=(p.x + W / 2) y=(p.y + 39) {
                                (super::view::cut(&state.label(), 28))
                                @if looped.iter().any(|l| l == name) && state.total > 1 { " · ×" (state.total) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn edge_label(t: &Transition, target: &str) -> Option<String> {
    match t {
        Transition::Foreach { over, .. } => Some(format!("foreach {over}")),
        Transition::Switch { on, cases } => {
            let keys: Vec<&str> = cases
                .iter()
                .filter(|(_, v)| v.steps().iter().any(|s| s.as_str() == target))
                .map(|(k, _)| k.as_str())
                .collect();
            Some(format!("{on} = {}", keys.join(" | ")))
        }
        _ => None,
    }
}

/// One task in the timeline.
#[derive(Debug, Clone)]
pub struct Bar {
    pub task: u64,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub status: String,
}

/// One row of the timeline: a step's span, and its tasks when there are few.
#[derive(Debug, Clone)]
pub struct Row {
    pub step: String,
    pub state: String,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
    pub total: u64,
    pub tasks: Option<Vec<Bar>>,
}

/// Lanes per step row; more tasks than lanes at once share the last lane.
const LANES: usize = 8;

/// A Gantt chart of the run: one row per step (its span from first start to last end),
/// with each task as a bar when the step has few.
pub fn timeline_svg(rows: &[Row], run_start: Option<Timestamp>, run_end: Timestamp, run_href: &str) -> Markup {
    let label_w: i64 = 150;
    let chart_w: i64 = 820;
    let start = run_start.or_else(|| rows.iter().filter_map(|r| r.start).min()).unwrap_or(run_end);
    let span = (run_end.as_micros() - start.as_micros()).max(1) as f64;
    let x = |t: Timestamp| label_w + ((t.as_micros() - start.as_micros()) as f64 / span * chart_w as f64) as i64;
    let mut y = 24i64;
    let mut drawn = Vec::new();
    for r in rows {
        let lanes = lanes(r.tasks.as_deref().unwrap_or(&[]), run_end);
        let n = lanes.iter().map(|(l, _)| *l + 1).max().unwrap_or(1) as i64;
        let h = 10 + n * 7;
        drawn.push((r, y, h, lanes));
        y += h + 6;
    }
    let height = y + 4;
    let width = label_w + chart_w + 20;
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} role="img" aria-label="timeline" {
            text.axis x=(label_w) y="14" { "0s" }
            text.axis x=(label_w + chart_w) y="14" text-anchor="end" {
                (super::view::duration(run_end.since(start)))
            }
            @for (r, ry, h, lanes) in &drawn {
                a href={(run_href) "/" (seg(&r.step))} {
                    text.row-label x="4" y=(ry + h / 2 + 4) { (super::view::cut(&r.step, 20)) }
                }
                @if let Some(s) = r.start {
                    @let e = r.end.unwrap_or(run_end);
                    rect class={"span " (sclass(&r.state))} x=(x(s)) y=(ry) width=((x(e) - x(s)).max(2)) height=(h) rx="3" {
                        title { (r.step) ": " (r.total) " task(s), " (super::view::duration(e.since(s))) }
                    }
                }
                @for (lane, b) in lanes {
                    @if let Some(s) = b.start {
                        @let e = b.end.unwrap_or(run_end);
                        rect class={"bar " (sclass(&b.status))} x=(x(s)) y=(ry + 5 + *lane as i64 * 7) width=((x(e) - x(s)).max(2)) height="5" {
                            title { "task " (b.task) " " (b.status) ": " (super::view::duration(e.since(s))) }
                        }
                    }
                }
            }
        }
    }
}

/// Greedy lanes: each task in the first lane free at its start.
fn lanes(bars: &[Bar], now: Timestamp) -> Vec<(usize, Bar)> {
    let mut ends: Vec<i64> = Vec::new();
    let mut sorted: Vec<&Bar> = bars.iter().filter(|b| b.start.is_some()).collect();
    sorted.sort_by_key(|b| b.start.map(|s| s.as_micros()));
    let mut out = Vec::new();
    for b in sorted {
        let s = b.start.map_or(0, |s| s.as_micros());
        let e = b.end.unwrap_or(now).as_micros();
        let lane = match ends.iter().position(|end| *end <= s) {
            Some(l) => l,
            None if ends.len() < LANES => {
                ends.push(0);
                ends.len() - 1
            }
            None => LANES - 1,
        };
        ends[lane] = e;
        out.push((lane, b.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> FlowGraph {
        let spec = serde_json::json!({
            "format_version": 1, "name": "g",
            "steps": [
                {"name": "start", "next": {"type": "split", "to": ["a", "b"]}},
                {"name": "a", "next": {"type": "foreach", "over": "items", "to": "w"}},
                {"name": "w", "next": {"type": "next", "to": "wj"}},
                {"name": "wj", "kind": "join", "next": {"type": "next", "to": "j"}},
                {"name": "b", "next": {"type": "next", "to": "j"}},
                {"name": "j", "kind": "join", "next": {"type": "next", "to": "loop"}},
                {"name": "loop", "next": {"type": "switch", "on": "state", "cases": {"again": "loop", "done": "end"}}},
                {"name": "end", "next": {"type": "end"}}
            ]
        });
        FlowGraph::from_spec(serde_json::from_value(spec).unwrap()).unwrap()
    }

    #[test]
    fn layers_follow_the_longest_path_and_ignore_loop_backs() {
        let (pos, layers) = layout(&graph());
        assert_eq!(pos["start"].0, 0);
        assert_eq!(pos["a"].0, 1);
        assert_eq!(pos["b"].0, 1);
        assert_eq!(pos["w"].0, 2);
        assert_eq!(pos["j"].0, 4, "j waits for the longer branch a -> w -> wj");
        assert_eq!(pos["end"].0, 6);
        assert_eq!(layers.len(), 7);
    }

    #[test]
    fn the_svg_names_every_step_links_it_and_labels_switches_and_foreach() {
        let mut states = HashMap::new();
        states.insert("loop".to_owned(), StepState { counts: vec![("succeeded".into(), 3)], total: 3 });
        let svg = graph_svg(&graph(), &states, "/runs/g/R").into_string();
        for s in ["start", "a", "w", "wj", "b", "j", "loop", "end"] {
            assert!(svg.contains(&format!("href=\"/runs/g/R/{s}\"")), "{s} linked");
        }
        assert!(svg.contains("foreach items"));
        assert!(svg.contains("state = again"));
        assert!(svg.contains("×3"), "loop iterations shown");
        assert!(svg.contains("st-succeeded") && svg.contains("st-not_started"));
    }

    #[test]
    fn node_state_is_the_most_urgent_status() {
        let s = StepState { counts: vec![("succeeded".into(), 5), ("failed".into(), 1)], total: 6 };
        assert_eq!(s.state(), "failed");
        let s = StepState { counts: vec![("succeeded".into(), 5)], total: 5 };
        assert_eq!(s.state(), "succeeded");
        assert_eq!(StepState::default().state(), "not_started");
    }
}
