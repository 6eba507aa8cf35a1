//! Lease renewal for every task a worker holds, in one Redis round trip per rule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::telemetry::Metric;
use ferry_queue::{Claimed, WorkerQueue};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Why a held task was told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Still running (or finished on its own).
    None,
    /// The lease is gone: do not commit.
    Lost,
    /// Shutdown deadline: hand the task back.
    Release,
}

struct Held {
    rule: String,
    token: u64,
    cancel: CancellationToken,
    stop: Stop,
}

/// The leases a worker holds, renewed together.
#[derive(Clone)]
pub(crate) struct Leases {
    queue: Arc<dyn WorkerQueue>,
    worker: String,
    lease: Duration,
    held: Arc<Mutex<HashMap<String, Held>>>,
}

/// A held task: its cancellation token fires when the lease is lost or on release.
pub(crate) struct Guard {
    leases: Leases,
    id: String,
    pub(crate) token: CancellationToken,
}

impl Guard {
    /// Stops tracking the task and says whether (and why) it was told to stop.
    pub(crate) fn finish(self) -> Stop {
        let mut held = self.leases.lock();
        held.remove(&self.id).map_or(Stop::None, |h| h.stop)
    }
}

impl Leases {
    pub(crate) fn new(queue: Arc<dyn WorkerQueue>, worker: String, lease: Duration) -> Self {
        Leases {
            queue,
            worker,
            lease,
            held: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // A poisoned map only means a task panicked while holding the lock; the map itself
        // is still consistent (every operation is a single insert/remove/update).
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn hold(&self, claimed: &Claimed) -> Guard {
        let token = CancellationToken::new();
        self.lock().insert(
            claimed.id.to_string(),
            Held {
                rule: claimed.rule.clone(),
                token: claimed.token,
                cancel: token.clone(),
                stop: Stop::None,
            },
        );
        Guard {
            leases: self.clone(),
            id: claimed.id.to_string(),
            token,
        }
    }

    /// Tells every held task to stop and be released.
    pub(crate) fn release_all(&self) {
        for held in self.lock().values_mut() {
            held.stop = Stop::Release;
            held.cancel.cancel();
        }
    }

    /// Renews every third of the lease until aborted. A lease that could not be renewed is
    /// reported lost and its task stops before committing.
    pub(crate) async fn renew_forever(self) {
        let period = self.lease / 3;
        loop {
            tokio::time::sleep(period).await;
            let mut by_rule: HashMap<String, Vec<(String, u64)>> = HashMap::new();
            for (id, h) in self.lock().iter() {
                by_rule
                    .entry(h.rule.clone())
                    .or_default()
                    .push((id.clone(), h.token));
            }
            for (rule, ids) in by_rule {
                match self
                    .queue
                    .renew(&rule, &self.worker, self.lease, &ids)
                    .await
                {
                    Ok(lost) => {
                        Metric::LeaseRenewals
                            .counter(&[("outcome", "renewed".into())])
                            .increment((ids.len() - lost.len()) as u64);
                        Metric::LeaseRenewals
                            .counter(&[("outcome", "lost".into())])
                            .increment(lost.len() as u64);
                        let mut held = self.lock();
                        for id in lost {
                            if let Some(h) = held.get_mut(&id) {
                                h.stop = Stop::Lost;
                                h.cancel.cancel();
                            }
                        }
                    }
                    // Keep going: the lease is still valid until its deadline, and the next
                    // renewal may get through.
                    Err(e) => warn!(rule = %rule, error = %e, "lease renewal failed"),
                }
            }
        }
    }
}
