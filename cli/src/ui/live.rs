//! Live updates as server-sent events. Each stream polls the store (reads never block
//! the writer) and sends an event only when something changed:
//!
//! - `/events/runs`: `change` when the newest runs of any flow change;
//! - `/events/runs/{flow}/{run}`: `change` with the run's status and step counts, then
//!   `end` once the run has ended;
//! - `/events/runs/{flow}/{run}/tasks/{task}?after=SEQ`: `task` (status, progress, ETA,
//!   warnings), `log` (new lines after SEQ), then `end` once the task has ended.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use braid_client::{RunQuery, Task};
use futures_util::stream::{self, Stream};
use serde_json::{Value, json};

use super::api;
use super::error::UiResult;
use super::server::{Q, Seg, Shared, blocking};
use super::view;

const RUNS_POLL: Duration = Duration::from_millis(1000);
const RUN_POLL: Duration = Duration::from_millis(500);
const TASK_POLL: Duration = Duration::from_millis(300);
/// Newest runs per flow watched by the runs-list stream.
const WATCHED_RUNS: usize = 20;

/// Counts an open stream in the metrics while it lives.
struct Open(Shared);

impl Open {
    fn new(st: Shared) -> Self {
        st.metrics.live_streams.inc();
        Open(st)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics.live_streams.dec();
    }
}

type Events = Response;

fn sse(s: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Events {
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

fn event(name: &str, data: &Value) -> Result<Event, Infallible> {
    Ok(Event::default().event(name).data(data.to_string()))
}

pub async fn runs(State(st): State<Shared>) -> Events {
    struct S {
        open: Open,
        last: Option<String>,
    }
    let state = S { open: Open::new(st), last: None };
    sse(stream::unfold(state, |mut s| async move {
        loop {
            let st = s.open.0.clone();
            let print = blocking(move || {
                let mut out = String::new();
                for f in st.client.flows()? {
                    let page = f.runs_page(&RunQuery { limit: WATCHED_RUNS, ..Default::default() })?;
                    for r in page.items {
                        out.push_str(&format!("{}:{}:{};", r.id(), r.status(), r.record().revision));
                    }
                }
                Ok(out)
            })
            .await
            .unwrap_or_default();
            let changed = s.last.as_ref().is_some_and(|l| *l != print);
            s.last = Some(print);
            if changed {
                return Some((event("change", &json!({})), s));
            }
            tokio::time::sleep(RUNS_POLL).await;
        }
    }))
}

pub async fn run(State(st): State<Shared>, Seg((flow, run)): Seg<(String, String)>) -> UiResult<Events> {
    // Resolved once, so a bad path is a 400/404 before the stream starts.
    let r = {
        let st = st.clone();
        blocking(move || api::find_run(&st.client, &flow, &run)).await?
    };
    struct S {
        _open: Open,
        run: braid_client::Run,
        last: Option<String>,
        done: bool,
    }
    let state = S { _open: Open::new(st), run: r, last: None, done: false };
    Ok(sse(stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let r = s.run.clone();
            let started = std::time::Instant::now();
            let now = blocking(move || {
                let r = r.refresh()?;
                let steps = r.steps()?;
                let doc = json!({
                    "status": r.status().as_str(),
                    "steps": steps.iter().map(|s| json!({
                        "name": s.name().as_str(),
                        "total": s.task_count(),
                        "counts": s.counts().iter().map(|(k, v)| (k.as_str().to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    })).collect::<Vec<_>>(),
                });
                Ok((doc, r.is_finished()))
            })
            .await;
            let Ok((doc, finished)) = now else {
                tokio::time::sleep(RUN_POLL).await;
                continue;
            };
            let print = doc.to_string();
            let first = s.last.is_none();
            let changed = s.last.as_ref() != Some(&print);
            s.last = Some(print);
            if finished && !changed && !first {
                s.done = true;
                return Some((event("end", &doc), s));
            }
            if changed && !first {
                return Some((event("change", &doc), s));
            }
            if first && finished {
                s.done = true;
                return Some((event("end", &doc), s));
            }
            // A wide run takes a while to summarise: poll it less often.
            tokio::time::sleep(RUN_POLL.max(started.elapsed() * 4)).await;
        }
    })))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct TaskEventsQuery {
    /// Send log lines with `seq` above this.
    pub after: Option<u64>,
}

/// What the task page shows live.
pub fn task_live(t: &Task) -> Value {
    json!({
        "status": t.status().as_str(),
        "attempt": t.attempt().0,
        "percent": t.progress().map(|p| p.percent),
        "message": t.progress().map(|p| p.message.clone()),
        "text": t.progress().map(view::progress_line),
        "details": t.progress().and_then(|p| p.details.as_ref()).map(view::pretty),
        "eta": view::duration_opt(t.eta()),
        "age": t.progress_age().map(|d| format!("{} ago", view::duration(d))),
        "warnings": t.warnings().iter().map(|w| json!({
            "at": view::time(w.at),
            "attempt": w.attempt.0,
            "kind": format!("{:?}", w.kind),
            "message": w.message,
        })).collect::<Vec<_>>(),
        "revision": t.record().revision,
    })
}

pub async fn task(
    State(st): State<Shared>,
    Seg((flow, run, task)): Seg<(String, String, String)>,
    Q(q): Q<TaskEventsQuery>,
) -> UiResult<Events> {
    let t = {
        let st = st.clone();
        blocking(move || api::find_task(&st.client, &flow, &run, &task)).await?
    };
    struct S {
        _open: Open,
        task: Task,
        after: u64,
        revision: Option<u64>,
        pending: Vec<Result<Event, Infallible>>,
        done: bool,
    }
    let state = S {
        _open: Open::new(st),
        task: t,
        after: q.after.unwrap_or(0),
        revision: None,
        pending: Vec::new(),
        done: false,
    };
    Ok(sse(stream::unfold(state, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop() {
                return Some((e, s));
            }
            if s.done {
                return None;
            }
            let t = s.task.clone();
            let after = s.after;
            let read = blocking(move || {
                let t = t.refresh()?;
                let lines = t.logs_after(after, api::LOG_PAGE)?;
                Ok((t, lines))
            })
            .await;
            let Ok((t, lines)) = read else {
                tokio::time::sleep(TASK_POLL).await;
                continue;
            };
            let mut out = Vec::new();
            if s.revision != Some(t.record().revision) {
                s.revision = Some(t.record().revision);
                out.push(event("task", &task_live(&t)));
            }
            if let Some(last) = lines.last() {
                s.after = last.seq;
                let v: Vec<Value> = lines
                    .iter()
                    .map(|l| json!({"seq": l.seq, "at": view::time(l.at), "level": l.level, "line": l.line}))
                    .collect();
                out.push(event("log", &Value::Array(v)));
            }
            if t.status().is_terminal() && lines.is_empty() {
                s.done = true;
                out.push(event("end", &json!({"status": t.status().as_str()})));
            }
            if out.is_empty() {
                tokio::time::sleep(TASK_POLL).await;
                continue;
            }
            out.reverse();
            s.pending = out;
            s.task = t;
        }
    })))
}
