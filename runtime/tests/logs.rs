//! `tracing` events inside a step land in that task's log in the store.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use braid_core::FlowName;
use braid_runtime::Flow;
use common::*;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_events_are_captured_per_task() {
    let subscriber = tracing_subscriber::registry().with(braid_runtime::task_log_layer());
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let (store, _d) = fs_store();
    let flow = Arc::new(
        Flow::builder("logged")
            .step("start", |ctx| async move {
                tracing::info!(rows = 42, "loaded the table");
                ctx.log("plain line");
                Ok(())
            })
            .next("end")
            .step_blocking("end", |_ctx| {
                tracing::warn!("blocking step says hi");
                Ok(())
            })
            .end()
            .build()
            .unwrap(),
    );
    let s = run(&flow, &store, &[]).await;
    assert_ok(&s);
    let f = FlowName::new("logged").unwrap();
    let start = only_task(&store, "logged", s.run_id, "start").await;
    let lines = store.records.read_logs(&f, s.run_id, start.key.task, 0, 0).await.unwrap();
    let text: Vec<String> = lines.iter().map(|l| format!("{} {}", l.level, l.line)).collect();
    assert!(text.contains(&"INFO loaded the table rows=42".to_string()), "{text:?}");
    assert!(text.contains(&"INFO plain line".to_string()), "{text:?}");
    let end = only_task(&store, "logged", s.run_id, "end").await;
    let lines = store.records.read_logs(&f, s.run_id, end.key.task, 0, 0).await.unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].line, "blocking step says hi");
    assert_eq!(lines[0].level, "WARN");
}
