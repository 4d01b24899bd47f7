//! Captures `tracing` events emitted inside a step into that task's log in the store.
//!
//! The executor runs each attempt inside a `braid_task` span carrying a sink id; the
//! [`TaskLogLayer`] finds that span for every event and hands the formatted line to the
//! run's writer. Install the layer in the process's subscriber (the flow binary's entry
//! point does); without it, `ctx.log` still works.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use braid_core::{Attempt, RunId, TaskId, Timestamp};
use braid_store::LogLine;
use dashmap::DashMap;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::persist::Persister;

pub(crate) const SINK_FIELD: &str = "braid_sink";

struct Sink {
    persister: Persister,
    run: RunId,
    task: TaskId,
    attempt: Attempt,
}

static SINKS: LazyLock<DashMap<u64, Sink>> = LazyLock::new(DashMap::new);
static NEXT_SINK: AtomicU64 = AtomicU64::new(1);

/// Where a task attempt's log lines go, while it runs.
pub(crate) struct SinkGuard(pub(crate) u64);

impl SinkGuard {
    pub(crate) fn register(persister: &Persister, run: RunId, task: TaskId, attempt: Attempt) -> Self {
        let id = NEXT_SINK.fetch_add(1, Ordering::Relaxed);
        SINKS.insert(id, Sink { persister: persister.clone(), run, task, attempt });
        SinkGuard(id)
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        SINKS.remove(&self.0);
    }
}

#[derive(Clone, Copy)]
struct SinkId(u64);

/// A `tracing_subscriber` layer that stores events emitted inside steps in their task's
/// log (`braid logs`, the client's `task.logs()`).
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskLogLayer;

/// The layer to add to a subscriber so `tracing` events inside steps reach task logs.
pub fn task_log_layer() -> TaskLogLayer {
    TaskLogLayer
}

struct SinkVisitor(Option<u64>);

impl Visit for SinkVisitor {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == SINK_FIELD {
            self.0 = Some(value);
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

/// Collects an event's fields into one line (`write!` to a `String` cannot fail).
struct LineVisitor(String);

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TaskLogLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut v = SinkVisitor(None);
        attrs.record(&mut v);
        if let (Some(sink), Some(span)) = (v.0, ctx.span(id)) {
            span.extensions_mut().insert(SinkId(sink));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        let Some(sink) = scope.from_root().filter_map(|s| s.extensions().get::<SinkId>().copied()).last() else {
            return;
        };
        let Some(target) = SINKS.get(&sink.0) else { return };
        let mut line = LineVisitor(String::new());
        event.record(&mut line);
        target.persister.logs(vec![LogLine {
            run: target.run,
            task: target.task,
            attempt: target.attempt,
            seq: 0,
            at: Timestamp::now(),
            level: event.metadata().level().to_string(),
            line: line.0,
        }]);
    }
}
