#![allow(clippy::unwrap_used)]
mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_sums_squares() {
    let (store, _dir) = fs_store();
    let flow = fanout(Arc::new(AtomicU64::new(0)));
    let s = run(&flow, &store, &[("n", "1000")]).await;
    assert_ok(&s);
    let join = only_task(&store, "fanout", s.run_id, "join").await;
    let total: u64 = value(&store, "fanout", s.run_id, join.key.task, "total").await;
    assert_eq!(total, 332833500);
    assert_eq!(tasks(&store, "fanout", s.run_id, "work").await.len(), 1000);
}
