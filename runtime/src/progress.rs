//! Progress reports and heartbeats: coalesced in memory, written with the lease.

use std::sync::MutexGuard;
use std::time::Instant;

use braid_core::{Progress, Timestamp};
use braid_store::{Precondition, TaskWrite};

use crate::context::Ctx;

/// What a task reported and what was last written.
#[derive(Debug)]
pub(crate) struct ProgressState {
    pub(crate) latest: Option<Progress>,
    pub(crate) latest_at: Option<Timestamp>,
    last_write: Instant,
    written: Option<Progress>,
    /// Reports made, and reports written (for tests and metrics).
    pub(crate) reports: u64,
    pub(crate) writes: u64,
}

impl ProgressState {
    pub(crate) fn new() -> Self {
        ProgressState {
            latest: None,
            latest_at: None,
            last_write: Instant::now(),
            written: None,
            reports: 0,
            writes: 0,
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records a report (or a heartbeat when `p` is `None`) and writes it if it is due.
pub(crate) fn report(ctx: &Ctx, p: Option<Progress>) {
    let inner = &ctx.inner;
    let policy = inner.shared.flow.policy(&inner.step).cloned().unwrap_or_default();
    let mut st = lock(&inner.progress);
    st.reports += 1;
    let now = Instant::now();
    let due_by_time = now.duration_since(st.last_write) >= policy.progress_interval;
    let due = match &p {
        None => due_by_time,
        Some(p) => {
            due_by_time
                || match &st.written {
                    None => true,
                    Some(w) => (p.percent - w.percent).abs() >= policy.progress_min_step || p.message != w.message,
                }
        }
    };
    if let Some(p) = p {
        st.latest = Some(p);
        st.latest_at = Some(Timestamp::now());
    }
    if !due {
        return;
    }
    st.last_write = now;
    st.written = st.latest.clone();
    st.writes += 1;
    let latest = st.latest.clone();
    let latest_at = st.latest_at;
    drop(st);
    let mut rec = lock(&inner.record);
    rec.progress = latest;
    rec.progress_at = latest_at;
    rec.lease_deadline = Some(Timestamp::now().plus(policy.lease));
    let write = TaskWrite { precondition: Precondition::Attempt(inner.attempt), ..TaskWrite::new(rec.clone()) };
    drop(rec);
    inner.shared.persister.write_later(Vec::new(), write);
}
