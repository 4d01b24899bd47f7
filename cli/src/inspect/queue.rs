//! `braid queues` (what each task queue holds, and its cap) and `braid queue limit`
//! (cap how many of a queue's tasks run at once over every worker).

use braid_core::Timestamp;
use braid_store::Store;
use comfy_table::Cell;
use serde_json::json;

use super::error::{Error, Result};
use super::output::Out;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
    Ok(rt.block_on(f))
}

fn queue_of(store: &Store) -> Result<&std::sync::Arc<dyn braid_store::TaskQueue>> {
    store.queue().ok_or_else(|| {
        Error::Usage(format!(
            "the store at {} has no task queue: queues live in PostgreSQL (--store postgres://...)",
            store.location()
        ))
    })
}

/// `braid queues`: every queue with tasks or a cap.
pub(crate) fn queues(store: &Store, out: &Out) -> Result<()> {
    let q = queue_of(store)?;
    let list = block_on(q.queues(Timestamp::now()))?
        .map_err(|source| Error::Store { context: "cannot list the queues".into(), source })?;
    if out.json {
        let v: Vec<_> = list
            .iter()
            .map(|i| json!({"name": i.name, "ready": i.counts.ready, "claimed": i.counts.claimed, "limit": i.limit}))
            .collect();
        return out.json(&json!({ "queues": v }));
    }
    if list.is_empty() {
        return out.line("no queue holds a task, and none is capped");
    }
    let mut t = out.table(&["QUEUE", "READY", "CLAIMED", "LIMIT"]);
    for i in &list {
        t.add_row(vec![
            Cell::new(&i.name),
            Cell::new(i.counts.ready),
            Cell::new(i.counts.claimed),
            Cell::new(i.limit.map_or_else(|| "none".to_owned(), |l| l.to_string())),
        ]);
    }
    out.table_out(&t)
}

/// `braid queue limit QUEUE N|none`.
pub(crate) fn limit(store: &Store, out: &Out, queue: &str, limit: &str) -> Result<()> {
    if !valid_queue_name(queue) {
        return Err(Error::Usage(format!(
            "queue {queue:?}: a queue name is 1 to 64 ASCII letters, digits, `-` or `_`"
        )));
    }
    let cap = match limit {
        "none" => None,
        n => Some(n.parse::<u32>().map_err(|_| {
            Error::Usage(format!("limit {n:?}: give a number of tasks (e.g. 4), or `none` to lift the cap"))
        })?),
    };
    let q = queue_of(store)?;
    block_on(q.set_limit(queue, cap))?
        .map_err(|source| Error::Store { context: format!("cannot cap queue {queue}"), source })?;
    if out.json {
        return out.json(&json!({ "queue": queue, "limit": cap }));
    }
    match cap {
        Some(n) => out.line(&format!("queue {queue}: at most {n} task(s) claimed at once, over every worker")),
        None => out.line(&format!("queue {queue}: no cap")),
    }
}

/// The runtime's rule for queue names (`braid` does not depend on the runtime here).
fn valid_queue_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
