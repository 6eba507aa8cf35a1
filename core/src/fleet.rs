//! What the processes of a fleet share besides tasks: each rule's rate budgets, and what each
//! destination bucket's store was probed to do. The queue keeps both (in Redis, or in the
//! state dir); the storage crate draws on them through these traits alone, so it does not
//! know the queue.

use std::sync::Arc;

use async_trait::async_trait;

use crate::capabilities::Capabilities;

/// Why the fleet's shared state could not be reached (the queue's error, in its words).
pub type FleetError = Box<dyn std::error::Error + Send + Sync>;

/// What a budget counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetKind {
    /// S3 requests.
    Requests,
    /// Bytes copied.
    Bytes,
}

impl BudgetKind {
    /// The name the budget's key carries.
    pub fn name(self) -> &'static str {
        match self {
            BudgetKind::Requests => "requests",
            BudgetKind::Bytes => "bytes",
        }
    }
}

/// One budget of one rule (`max_requests_per_second`, `max_bandwidth`), as one process draws
/// from it.
#[async_trait]
pub trait RateBudget: Send + Sync {
    /// Waits until `n` tokens are this process's to spend, and spends them.
    async fn take(&self, n: u64) -> Result<(), FleetError>;
}

/// Where the fleet's budgets and probes live.
#[async_trait]
pub trait Fleet: Send + Sync {
    /// `rule`'s budget of `rate` per second for what `kind` counts.
    fn budget(&self, rule: &str, kind: BudgetKind, rate: u64) -> Arc<dyn RateBudget>;

    /// What a process of the fleet last probed `bucket` on `endpoint` to do, and when (ms
    /// since the Unix epoch); `None` when no process has.
    async fn probed(
        &self,
        endpoint: &str,
        bucket: &str,
    ) -> Result<Option<(u64, Capabilities)>, FleetError>;

    /// Shares what this process probed `bucket` on `endpoint` to do, at `at_ms`.
    async fn share_probe(
        &self,
        endpoint: &str,
        bucket: &str,
        at_ms: u64,
        capabilities: &Capabilities,
    ) -> Result<(), FleetError>;
}
