//! The per-rule leader lease: two coordinators never plan the same rule at once. A standby
//! coordinator waits and takes over when the leader's lease runs out. The lease's token fences
//! every write of the leader, so one that lost the lease (paused, partitioned) cannot write.

use std::time::Duration;

use std::sync::Arc;

use ferry_queue::{CoordinatorQueue, LeaderToken};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::CoordinatorError;

/// A held leader lease; `lost` fires when it can no longer be renewed (or on shutdown).
pub(crate) struct Leadership {
    pub(crate) lost: CancellationToken,
    pub(crate) token: LeaderToken,
    renewer: tokio::task::JoinHandle<()>,
    queue: Arc<dyn CoordinatorQueue>,
    rule: String,
}

/// Waits until coordinator `id` leads `rule`, polling a few times per lease.
pub(crate) async fn acquire(
    queue: &Arc<dyn CoordinatorQueue>,
    rule: &str,
    id: &str,
    lease: Duration,
    shutdown: &CancellationToken,
) -> Result<Leadership, CoordinatorError> {
    let mut announced = false;
    let token = loop {
        if let Some(token) = queue.acquire_leader(rule, id, lease).await? {
            break token;
        }
        if !announced {
            let holder = queue.leader_of(rule).await?.unwrap_or_default();
            info!(rule, leader = %holder, "another coordinator leads this rule; standing by");
            announced = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(lease / 4) => {}
            _ = shutdown.cancelled() => return Err(CoordinatorError::Cancelled),
        }
    };
    info!(rule, coordinator = id, token = %token, "leading rule");
    let lost = shutdown.child_token();
    let renewer = tokio::spawn(renew(
        queue.clone(),
        rule.to_string(),
        token.clone(),
        lease,
        lost.clone(),
    ));
    Ok(Leadership {
        lost,
        token,
        renewer,
        queue: queue.clone(),
        rule: rule.to_string(),
    })
}

async fn renew(
    queue: Arc<dyn CoordinatorQueue>,
    rule: String,
    token: LeaderToken,
    lease: Duration,
    lost: CancellationToken,
) {
    let started = tokio::time::Instant::now();
    let mut renewed = started;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease / 3) => {}
            _ = lost.cancelled() => return,
        }
        // A renewal that takes too long (Redis unreachable) is given up on once the lease
        // must have run out: a standby may lead by then.
        let renewal = queue.renew_leader(&rule, &token, lease);
        let deadline = (renewed + lease).saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(deadline, renewal).await {
            Ok(Ok(true)) => renewed = tokio::time::Instant::now(),
            Ok(Ok(false)) => {
                warn!(rule = %rule, "leader lease lost to another coordinator");
                lost.cancel();
                return;
            }
            Ok(Err(e)) => {
                warn!(rule = %rule, error = %e, "leader lease renewal failed");
                if renewed.elapsed() >= lease {
                    lost.cancel();
                    return;
                }
            }
            Err(_) => {
                warn!(rule = %rule, "the leader lease ran out while Redis was unreachable");
                lost.cancel();
                return;
            }
        }
    }
}

impl Leadership {
    /// Stops renewing and frees the lease for a standby coordinator.
    pub(crate) async fn release(self) {
        self.renewer.abort();
        // Unreleased, the lease still frees itself when it runs out.
        if let Err(e) = self.queue.release_leader(&self.rule, &self.token).await {
            tracing::debug!(rule = %self.rule, error = %e, "cannot release the leader lease; it will expire");
        }
    }
}
