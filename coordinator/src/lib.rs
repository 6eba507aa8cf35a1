//! The coordinator: for each rule, iterations of list -> diff -> plan -> shard -> dispatch,
//! then waiting until every task is acked or dead, and recording the outcome.

pub mod diff;
mod iteration;
mod leader;
mod planner;
mod uploads;

use std::sync::Arc;

use ferry_common::config::{Config, Rule, Stop};
use ferry_common::queue::{Queue, QueueError};
use ferry_common::storage::{StorageError, Stores};
use ferry_common::telemetry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use ferry_common::policy;
pub use iteration::run_iteration;

/// Why the coordinator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Listing a bucket failed for good.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Shutdown was requested mid-iteration.
    #[error("shutdown requested")]
    Cancelled,
    /// One or more rules failed.
    #[error("{0}")]
    Rules(String),
}

/// What the coordinator shares with every rule it runs.
#[derive(Clone)]
pub struct Context {
    /// The validated config.
    pub config: Arc<Config>,
    /// Connected stores by endpoint name.
    pub stores: Stores,
    /// The Redis queue.
    pub queue: Queue,
    /// Cancelled on shutdown.
    pub cancel: CancellationToken,
    /// This coordinator's id, as its leader leases name it.
    pub id: String,
    /// Length of a rule's leader lease.
    pub leader_lease: std::time::Duration,
    /// Unfinished tasks per rule before planning pauses (Redis holds at most this plus one
    /// batch of 1,000 per rule).
    pub max_outstanding: u64,
}

/// Runs every rule until its stop condition holds or shutdown is requested.
/// Returns an error naming each rule that failed.
pub async fn run(ctx: Context) -> Result<(), CoordinatorError> {
    let mut handles = Vec::new();
    let publishers: Vec<_> = ctx
        .config
        .rules
        .iter()
        .map(|rule| tokio::spawn(publish_queue_metrics(ctx.clone(), rule.name.clone())))
        .collect();
    for rule in ctx.config.rules.clone() {
        let ctx = ctx.clone();
        handles.push(tokio::spawn(async move {
            let name = rule.name.clone();
            (name, run_rule(&ctx, &rule).await)
        }));
    }
    let mut failures = Vec::new();
    for handle in handles {
        match handle.await {
            Ok((_, Ok(()))) | Ok((_, Err(CoordinatorError::Cancelled))) => {}
            Ok((name, Err(e))) => failures.push(format!("rule {name}: {e}")),
            Err(e) => failures.push(format!("a rule task panicked: {e}")),
        }
    }
    publishers.iter().for_each(tokio::task::JoinHandle::abort);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CoordinatorError::Rules(failures.join("; ")))
    }
}

/// How often the queue gauges are read from Redis.
const QUEUE_METRICS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes, every few seconds, each shard's tasks by state and the rule's replication lag
/// as gauges (any coordinator does, leader or standby: they all read the same Redis).
async fn publish_queue_metrics(ctx: Context, rule: String) {
    loop {
        if let Ok(views) = ctx.queue.shard_views(&rule).await {
            for v in views {
                let shard = v.shard.to_string();
                for (state, n) in [
                    ("pending", v.pending),
                    ("leased", v.leased),
                    ("retrying", v.retrying),
                    ("dead", v.dead),
                ] {
                    metrics::gauge!(telemetry::TASKS, "rule" => rule.clone(),
                        "shard" => shard.clone(), "state" => state)
                    .set(n as f64);
                }
            }
        }
        if let Ok(oldest) = ctx.queue.oldest_pending_ms(&rule).await {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let lag = oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0);
            metrics::gauge!(telemetry::REPLICATION_LAG, "rule" => rule.clone()).set(lag);
        }
        tokio::select! {
            _ = tokio::time::sleep(QUEUE_METRICS_EVERY) => {}
            _ = ctx.cancel.cancelled() => return,
        }
    }
}

/// Runs one rule while this coordinator leads it: waits for the leader lease, iterates, and
/// goes back to standing by if the lease is lost.
pub async fn run_rule(ctx: &Context, rule: &Rule) -> Result<(), CoordinatorError> {
    loop {
        let lead = leader::acquire(
            &ctx.queue,
            &rule.name,
            &ctx.id,
            ctx.leader_lease,
            &ctx.cancel,
        )
        .await?;
        let result = iterate(ctx, rule, &lead.lost).await;
        lead.release().await;
        match result {
            Err(CoordinatorError::Cancelled) if !ctx.cancel.is_cancelled() => {
                warn!(rule = %rule.name, "lost the leader lease; standing by");
            }
            Ok(()) => {
                let state = "stopped";
                ctx.queue.set_rule_state(&rule.name, state).await?;
                return Ok(());
            }
            Err(e @ CoordinatorError::Rules(_)) => {
                ctx.queue.set_rule_state(&rule.name, "failed").await?;
                return Err(e);
            }
            other => return other,
        }
    }
}

/// Iterates according to the rule's `stop` and `interval` until it stops or `cancel` fires.
///
/// A failed iteration (dead-lettered tasks) does not stop a rule that iterates again; with
/// `stop = "once"` it is reported as the rule's failure.
async fn iterate(
    ctx: &Context,
    rule: &Rule,
    cancel: &CancellationToken,
) -> Result<(), CoordinatorError> {
    let mut empty_streak = 0u32;
    loop {
        let record = run_iteration(ctx, rule, cancel).await?;
        let succeeded = record.state == "succeeded";
        let seconds = record.ended_ms.saturating_sub(record.started_ms) as f64 / 1000.0;
        metrics::gauge!(telemetry::ITERATION_DURATION, "rule" => rule.name.clone()).set(seconds);
        metrics::gauge!(telemetry::ITERATION_EMPTY, "rule" => rule.name.clone())
            .set(if record.is_empty() { 1.0 } else { 0.0 });
        info!(
            rule = %rule.name, iteration = record.number, state = %record.state,
            listed = record.listed, skipped = record.skipped, copied = record.copied,
            bytes = record.copied_bytes, failed = record.dead, seconds,
            "iteration finished"
        );
        if succeeded && record.is_empty() {
            empty_streak += 1;
        } else {
            empty_streak = 0;
        }
        match rule.stop {
            Stop::Once if succeeded => return Ok(()),
            Stop::Once => {
                return Err(CoordinatorError::Rules(format!(
                    "iteration {} failed: {} task(s) in dead letters",
                    record.number, record.dead
                )));
            }
            Stop::Empty(n) if empty_streak >= n => {
                info!(rule = %rule.name, empty_iterations = n, "stop condition reached");
                return Ok(());
            }
            _ => {}
        }
        if !succeeded {
            warn!(rule = %rule.name, iteration = record.number, dead = record.dead,
                "iteration failed; the next one retries what is still missing");
        }
        ctx.queue.set_rule_state(&rule.name, "waiting").await?;
        tokio::select! {
            _ = tokio::time::sleep(rule.interval) => {}
            _ = cancel.cancelled() => return Err(CoordinatorError::Cancelled),
        }
    }
}
