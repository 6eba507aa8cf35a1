//! The per-rule leader lease: two coordinators never plan the same rule at once. A standby
//! coordinator waits and takes over when the leader's lease runs out.

use std::time::Duration;

use ferry_common::queue::{LeaderOp, Queue};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::CoordinatorError;

/// A held leader lease; `lost` fires when it can no longer be renewed (or on shutdown).
pub(crate) struct Leadership {
    pub(crate) lost: CancellationToken,
    renewer: tokio::task::JoinHandle<()>,
    queue: Queue,
    rule: String,
    id: String,
    lease: Duration,
}

/// Waits until coordinator `id` leads `rule`, polling a few times per lease.
pub(crate) async fn acquire(
    queue: &Queue,
    rule: &str,
    id: &str,
    lease: Duration,
    shutdown: &CancellationToken,
) -> Result<Leadership, CoordinatorError> {
    let mut announced = false;
    loop {
        if queue.leader(rule, id, LeaderOp::Acquire, lease).await? {
            break;
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
    }
    info!(rule, coordinator = id, "leading rule");
    let lost = shutdown.child_token();
    let renewer = tokio::spawn(renew(
        queue.clone(),
        rule.to_string(),
        id.to_string(),
        lease,
        lost.clone(),
    ));
    Ok(Leadership {
        lost,
        renewer,
        queue: queue.clone(),
        rule: rule.to_string(),
        id: id.to_string(),
        lease,
    })
}

async fn renew(queue: Queue, rule: String, id: String, lease: Duration, lost: CancellationToken) {
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease / 3) => {}
            _ = lost.cancelled() => return,
        }
        match queue.leader(&rule, &id, LeaderOp::Renew, lease).await {
            Ok(true) => failing_since = None,
            Ok(false) => {
                warn!(rule = %rule, "leader lease lost to another coordinator");
                lost.cancel();
                return;
            }
            Err(e) => {
                // The lease may still be ours; give up only once it must have run out.
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                warn!(rule = %rule, error = %e, "leader lease renewal failed");
                if since.elapsed() >= lease {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

impl Leadership {
    /// Stops renewing and frees the lease for a standby coordinator.
    pub(crate) async fn release(self) {
        self.renewer.abort();
        let _ = self
            .queue
            .leader(&self.rule, &self.id, LeaderOp::Release, self.lease)
            .await;
    }
}
