//! The lease a process holds on each run it moves forward.
//!
//! A run's record carries a lease (holder `run@host:pid`, deadline) from the moment the
//! run is created; a keeper task renews it every third of its length until the run ends.
//! If the process dies or hangs, renewals stop and every reader sees the run as `lost`
//! once the deadline passes (`RunRecord::observed_status`): no run stays `running`
//! because nobody is left to say otherwise.

use std::time::Duration;

use braid_core::{FlowName, RunId};
use braid_store::{RunLease, Store};

/// How long a run's lease lasts without a renewal. Renewed every third of it, so a busy
/// process has two renewals' slack before readers call its run lost; short, because a
/// reader must see a dead process's run as `lost` within seconds.
pub const RUN_LEASE: Duration = Duration::from_secs(3);

/// Renews a run's lease until dropped.
#[derive(Debug)]
pub(crate) struct LeaseKeeper {
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// Starts renewing `lease` (already stored with the run) every third of `duration`.
    pub(crate) fn start(store: Store, flow: FlowName, run: RunId, holder: String, duration: Duration) -> Self {
        let task = tokio::spawn(async move {
            let every = (duration / 3).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(every).await;
                let lease = RunLease::new(holder.clone(), duration);
                match store.records.renew_run_lease(&flow, run, &lease).await {
                    Ok(true) => {}
                    // The run ended (or someone marked it lost): nothing left to hold.
                    Ok(false) => return,
                    // A missed renewal is retried at the next one; if they keep failing the
                    // run shows as lost, which is then the truth for every reader.
                    Err(e) => tracing::warn!(%flow, %run, error = %e, "cannot renew the run's lease"),
                }
            }
        });
        LeaseKeeper { task }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
