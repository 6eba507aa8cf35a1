//! A rule's shared budgets (`max_requests_per_second`, `max_bandwidth`): token buckets in
//! Redis that every worker and coordinator of the rule draws from, in small batches so that
//! a small object costs no extra round trip.
//!
//! The bucket holds at most a tenth of a second of budget, and a process takes at most a
//! twentieth at a time, so that the whole fleet overshoots a limit over any window by at
//! most a fifth of a second's worth of it, however many workers come and go.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_core::capabilities::Capabilities;
use ferry_core::fleet::{BudgetKind, Fleet, FleetError, RateBudget};
use tokio::sync::Mutex;

use super::{Queue, QueueError};

/// One budget of one rule, as one process draws from it.
#[derive(Debug)]
pub struct Budget {
    queue: Queue,
    key: String,
    rate: u64,
    capacity: u64,
    batch: u64,
    /// Tokens this process took and has not spent.
    local: Mutex<u64>,
}

impl Budget {
    /// A budget of `rate` per second for `rule`.
    pub fn new(queue: Queue, rule: &str, kind: BudgetKind, rate: u64) -> Budget {
        let capacity = (rate / 10).max(1);
        Budget {
            key: queue.keys.rule(rule).budget(kind.name()),
            queue,
            rate: rate.max(1),
            capacity,
            batch: (rate / 20).clamp(1, capacity),
            local: Mutex::new(0),
        }
    }

    /// Waits until `n` tokens are this process's to spend, and spends them.
    pub async fn take(&self, mut n: u64) -> Result<(), QueueError> {
        // One fetch at a time per process: the others wait for what it brings.
        let mut local = self.local.lock().await;
        loop {
            let spent = n.min(*local);
            *local -= spent;
            n -= spent;
            if n == 0 {
                return Ok(());
            }
            let wanted = n.max(self.batch).min(self.capacity);
            let (granted, wait) = self.fetch(wanted).await?;
            *local += granted;
            if granted == 0 {
                tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
            }
        }
    }

    async fn fetch(&self, wanted: u64) -> Result<(u64, u64), QueueError> {
        let mut inv = self.queue.scripts.tokens.prepare_invoke();
        inv.key(&self.key)
            .arg(self.rate)
            .arg(self.capacity)
            .arg(wanted);
        let reply: Vec<u64> = self.queue.invoke(inv).await?;
        Ok((
            reply.first().copied().unwrap_or(0),
            reply.get(1).copied().unwrap_or(100),
        ))
    }
}

#[async_trait]
impl RateBudget for Budget {
    async fn take(&self, n: u64) -> Result<(), FleetError> {
        Budget::take(self, n).await.map_err(Into::into)
    }
}

/// The queue keeps the fleet's budgets and shared probes.
#[async_trait]
impl Fleet for Queue {
    fn budget(&self, rule: &str, kind: BudgetKind, rate: u64) -> Arc<dyn RateBudget> {
        Arc::new(Budget::new(self.clone(), rule, kind, rate))
    }

    async fn probed(
        &self,
        endpoint: &str,
        bucket: &str,
    ) -> Result<Option<(u64, Capabilities)>, FleetError> {
        Queue::probed(self, endpoint, bucket)
            .await
            .map_err(Into::into)
    }

    async fn share_probe(
        &self,
        endpoint: &str,
        bucket: &str,
        at_ms: u64,
        capabilities: &Capabilities,
    ) -> Result<(), FleetError> {
        Queue::share_probe(self, endpoint, bucket, at_ms, capabilities)
            .await
            .map_err(Into::into)
    }
}
