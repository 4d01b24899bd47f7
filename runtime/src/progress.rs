//! Progress, heartbeats and leases of a running attempt.
//!
//! Reports are coalesced in memory: the store is written at most once per
//! `progress_interval` unless the percent moved by `progress_min_step` or the message
//! changed; the latest report is always kept and the final one is written with the
//! task's result. Every write carries the whole task record — status, progress and lease
//! deadline together — so extending the lease can never drop progress. A watcher per
//! attempt declares the attempt lost when its lease runs out, and records a warning
//! when its percent stalls or its rate predicts it will miss its timeout.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use braid_core::{Progress, ProgressUnits, Timestamp};
use braid_store::{TaskEvent, TaskEventKind, TaskWrite};

use crate::context::Ctx;

/// What an attempt reported, and what was last written.
#[derive(Debug)]
pub(crate) struct ProgressState {
    pub(crate) latest: Option<Progress>,
    pub(crate) latest_at: Option<Timestamp>,
    last_write: Instant,
    written: Option<Progress>,
    /// First report of the attempt: the origin of the rate of progress.
    first: Option<(Instant, f32)>,
    /// First report in units of the attempt (the unit, and units done then): the origin
    /// of the rate in units per second.
    first_units: Option<(Instant, String, u64)>,
    /// When the percent last moved (or the attempt started).
    last_move: Instant,
    stall_warned: bool,
    timeout_warned: bool,
    started: Instant,
    /// Reports made and reports written (for tests and benchmarks).
    pub(crate) reports: u64,
    pub(crate) writes: u64,
}

impl ProgressState {
    pub(crate) fn new() -> Self {
        let now = Instant::now();
        ProgressState {
            latest: None,
            latest_at: None,
            last_write: now,
            written: None,
            first: None,
            first_units: None,
            last_move: now,
            stall_warned: false,
            timeout_warned: false,
            started: now,
            reports: 0,
            writes: 0,
        }
    }

    /// When the attempt will reach 100% at its rate so far.
    fn eta(&self, now: Instant) -> Option<Instant> {
        let (t0, p0) = self.first?;
        let p = self.latest.as_ref()?.percent;
        let dt = now.checked_duration_since(t0)?.as_secs_f64();
        let rate = f64::from(p - p0) / dt;
        if rate.is_nan() || rate <= 0.0 || dt < 0.05 {
            return None;
        }
        let left = f64::from(100.0 - p) / rate;
        Duration::try_from_secs_f64(left).ok().map(|d| now + d)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn to_timestamp(at: Instant) -> Timestamp {
    let now = Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => Timestamp::now().plus(ahead),
        None => Timestamp::from_micros(Timestamp::now().as_micros() - now.duration_since(at).as_micros() as i64),
    }
}

/// Units per second since the attempt's first report in the same unit, once 50 ms have
/// passed (before that a rate is noise).
fn units_rate(first: &mut Option<(Instant, String, u64)>, now: Instant, u: &ProgressUnits) -> Option<f64> {
    match first {
        Some((t0, unit, d0)) if *unit == u.unit => {
            let dt = now.duration_since(*t0).as_secs_f64();
            (dt >= 0.05 && u.done >= *d0).then(|| (u.done - *d0) as f64 / dt)
        }
        _ => {
            *first = Some((now, u.unit.clone(), u.done));
            None
        }
    }
}

/// A report of units done out of a total: percent derived, the rate filled in, the
/// latest message and details kept.
pub(crate) fn report_units(ctx: &Ctx, mut units: ProgressUnits) -> braid_core::Result<()> {
    let (message, details) = {
        let mut st = lock(&ctx.inner.progress);
        units.rate = units_rate(&mut st.first_units, Instant::now(), &units);
        st.latest.as_ref().map(|l| (l.message.clone(), l.details.clone())).unwrap_or_default()
    };
    let mut p = Progress::of_units(units, message)?;
    p.details = details;
    report(ctx, Some(p));
    Ok(())
}

/// New details for the latest report (percent, message and units kept): written with
/// the next write that is due, which also extends the lease.
pub(crate) fn report_details(ctx: &Ctx, details: serde_json::Value) -> braid_core::Result<()> {
    Progress::check_details(&details)?;
    let mut p = lock(&ctx.inner.progress).latest.clone().unwrap_or_default();
    p.details = Some(details);
    report(ctx, Some(p));
    Ok(())
}

/// The latest report and when it was made: what an attempt that ends without success
/// leaves in its record, even if it was not yet written.
pub(crate) fn latest(ctx: &Ctx) -> (Option<Progress>, Option<Timestamp>) {
    let st = lock(&ctx.inner.progress);
    (st.latest.clone(), st.latest_at)
}

/// Records a report (or a heartbeat when `p` is `None`) and writes it if it is due.
/// Every write carries the latest report, details included: a heartbeat that extends
/// the lease never drops what the step said last.
pub(crate) fn report(ctx: &Ctx, p: Option<Progress>) {
    let inner = &ctx.inner;
    let policy = &inner.policy;
    let mut st = lock(&inner.progress);
    st.reports += 1;
    let now = Instant::now();
    let due_by_time = now.duration_since(st.last_write) >= policy.progress_interval;
    let is_progress = p.is_some();
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
        if st.latest.as_ref().is_none_or(|l| l.percent != p.percent) {
            st.last_move = now;
            st.stall_warned = false;
        }
        if st.first.is_none() {
            st.first = Some((now, p.percent));
        }
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
    let eta = st.eta(now).map(to_timestamp);
    drop(st);
    let mut rec = lock(&inner.record);
    rec.lease_deadline = Some(Timestamp::now().plus(policy.lease));
    if latest.is_some() {
        rec.progress = latest.clone();
        rec.progress_at = latest_at;
    }
    if is_progress {
        rec.eta = eta;
        if let Some(p) = &latest {
            rec.push_event(TaskEvent {
                at: latest_at.unwrap_or_else(Timestamp::now),
                attempt: inner.attempt,
                kind: TaskEventKind::Progress,
                percent: Some(p.percent),
                message: p.message.clone(),
            });
        }
    }
    let write = TaskWrite { precondition: inner.precondition(), ..TaskWrite::new(rec.clone()) };
    drop(rec);
    if let (Some(m), Some(p)) = (&inner.shared.metrics, &latest) {
        let (flow, step, task) = (inner.shared.flow.name().as_str(), inner.step.as_str(), inner.task.to_string());
        m.progress(flow, step, &task, p.percent);
        if let Some(u) = &p.units {
            m.progress_units(flow, step, &task, &u.unit, u.done, u.total);
        }
    }
    inner.shared.persister.write_later(Vec::new(), write);
}

/// Records a warning event on the task, in its log and its record.
fn warn(ctx: &Ctx, kind: TaskEventKind, message: String) {
    let inner = &ctx.inner;
    ctx.log_at("WARN", message.clone());
    let mut rec = lock(&inner.record);
    let percent = rec.progress.as_ref().map(|p| p.percent);
    rec.push_event(TaskEvent { at: Timestamp::now(), attempt: inner.attempt, kind, percent, message });
    let write = TaskWrite { precondition: inner.precondition(), ..TaskWrite::new(rec.clone()) };
    drop(rec);
    inner.shared.persister.write_later(Vec::new(), write);
}

/// Watches a running attempt; returns when its lease has expired (the attempt is lost).
/// Meanwhile records stall and timeout-prediction warnings, once each.
pub(crate) async fn watch(ctx: Ctx) {
    let inner = &ctx.inner;
    let policy = &inner.policy;
    let mut tick = policy.lease / 4;
    if let Some(s) = policy.stall_after {
        tick = tick.min(s / 4);
    }
    let tick = tick.clamp(Duration::from_millis(10), Duration::from_secs(1));
    let flow = inner.shared.flow.name().as_str();
    loop {
        tokio::time::sleep(tick).await;
        let deadline = lock(&inner.record).lease_deadline;
        if deadline.is_some_and(|d| Timestamp::now() >= d) {
            return;
        }
        let now = Instant::now();
        let (stalled, predicted) = {
            let mut st = lock(&inner.progress);
            let stalled = match policy.stall_after {
                Some(s) if !st.stall_warned && st.latest.is_some() && now.duration_since(st.last_move) >= s => {
                    st.stall_warned = true;
                    let p = st.latest.as_ref().map_or(0.0, |p| p.percent);
                    Some(format!(
                        "stalled: progress has not moved from {p}% for {:.1}s",
                        now.duration_since(st.last_move).as_secs_f64()
                    ))
                }
                _ => None,
            };
            let predicted = match (policy.timeout, st.eta(now)) {
                (Some(t), Some(eta)) if !st.timeout_warned && eta > st.started + t => {
                    st.timeout_warned = true;
                    Some(format!(
                        "timeout predicted: at the rate so far the attempt needs {:.1}s in all, its timeout is {:.1}s",
                        eta.duration_since(st.started).as_secs_f64(),
                        t.as_secs_f64()
                    ))
                }
                _ => None,
            };
            (stalled, predicted)
        };
        if let Some(m) = stalled {
            if let Some(metrics) = &inner.shared.metrics {
                metrics.stalled(flow, inner.step.as_str());
            }
            warn(&ctx, TaskEventKind::Stalled, m);
        }
        if let Some(m) = predicted {
            if let Some(metrics) = &inner.shared.metrics {
                metrics.timeout_predicted(flow, inner.step.as_str());
            }
            warn(&ctx, TaskEventKind::TimeoutPredicted, m);
        }
    }
}
