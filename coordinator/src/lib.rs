//! The coordinator: for each rule, iterations of list -> diff -> plan -> shard -> dispatch,
//! then waiting until every task is acked or dead, and recording the outcome.

pub mod diff;
pub mod estimate;
pub mod events;
mod iteration;
mod leader;
mod marks;
mod planner;
mod ranges;
pub mod report;
mod uploads;
pub mod verify;

use std::sync::Arc;

use ferry_core::config::{Config, Rule, Stop};
use ferry_core::telemetry::Metric;
use ferry_queue::{CoordinatorQueue, QueueError, RuleState};
use ferry_storage::{StorageError, Stores};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::iteration::run_iteration;

pub use crate::planner::DryRun;

/// Lists and diffs `rule` as its next iteration would, and reports each task that
/// iteration would plan (copies and deletes) to `each`; changes nothing anywhere.
pub async fn dry_run(
    ctx: &Context,
    rule: &Rule,
    mut each: impl FnMut(&ferry_core::task::Task) + Send,
) -> Result<DryRun, CoordinatorError> {
    iteration::dry_run(ctx, rule, &mut each).await
}

pub use ferry_core::policy;

/// Why the coordinator stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// Redis failed (not merely unreachable: the queue rides that out).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Listing a bucket failed for good.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Shutdown was requested, or the leader lease was lost, mid-iteration.
    #[error("shutdown requested")]
    Cancelled,
    /// An iteration's report could not be written.
    #[error("report: {0}")]
    Report(String),
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
    pub queue: Arc<dyn CoordinatorQueue>,
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

/// How a rule ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RuleEnd {
    /// Its stop condition held.
    Stopped,
    /// Its stop condition held, and its last iteration failed, for this reason.
    Failed(String),
}

/// Runs every rule until its stop condition holds or shutdown is requested. A rule that fails
/// does not stop the others: it is marked failed, with the reason, and tried again at its
/// interval. Returns an error only once every rule has stopped and one of them failed.
pub async fn run(ctx: Context) -> Result<(), CoordinatorError> {
    // This run's start on the Redis clock: a rule whose stop condition held after it was
    // already done by another coordinator of this run.
    let started_ms = ctx.queue.redis_time_ms().await?;
    let mut handles = Vec::new();
    let publishers: Vec<_> = ctx
        .config
        .rules
        .iter()
        .map(|rule| tokio::spawn(publish_queue_metrics(ctx.clone(), rule.name.clone())))
        .collect();
    // Events need no leader lease: every coordinator follows them (the sequencer check makes
    // a second delivery harmless).
    let followers: Vec<_> = ctx
        .config
        .rules
        .iter()
        .filter(|r| matches!(r.events, Some(ferry_core::config::Events::Sqs { .. })))
        .map(|rule| tokio::spawn(events::follow_queue(ctx.clone(), rule.clone())))
        .collect();
    for rule in ctx.config.rules.clone() {
        let ctx = ctx.clone();
        handles.push(tokio::spawn(async move {
            let name = rule.name.clone();
            (name, run_rule(&ctx, &rule, started_ms).await)
        }));
    }
    let mut failures = Vec::new();
    for handle in handles {
        match handle.await {
            Ok((_, Ok(RuleEnd::Stopped))) | Ok((_, Err(CoordinatorError::Cancelled))) => {}
            Ok((name, Ok(RuleEnd::Failed(reason)))) => {
                failures.push(format!("rule {name}: {reason}"))
            }
            Ok((name, Err(e))) => failures.push(format!("rule {name}: {e}")),
            Err(e) => failures.push(format!("a rule task panicked: {e}")),
        }
    }
    publishers.iter().for_each(tokio::task::JoinHandle::abort);
    followers.iter().for_each(tokio::task::JoinHandle::abort);
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
                Metric::ShardLimit
                    .gauge(&[("rule", rule.clone()), ("shard", shard.clone())])
                    .set(f64::from(v.limit.unwrap_or(0)));
                for (state, n) in [
                    ("pending", v.pending),
                    ("leased", v.leased),
                    ("retrying", v.retrying),
                    ("dead", v.dead),
                ] {
                    Metric::Tasks
                        .gauge(&[
                            ("rule", rule.clone()),
                            ("shard", shard.clone()),
                            ("state", state.into()),
                        ])
                        .set(n as f64);
                }
            }
        }
        if let Ok(oldest) = ctx.queue.oldest_pending_ms(&rule).await {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let lag = oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0);
            Metric::ReplicationLag
                .gauge(&[("rule", rule.clone())])
                .set(lag);
        }
        tokio::select! {
            _ = tokio::time::sleep(QUEUE_METRICS_EVERY) => {}
            _ = ctx.cancel.cancelled() => return,
        }
    }
}

/// Runs one rule while this coordinator leads it: waits for the leader lease, iterates, and
/// goes back to standing by if the lease is lost.
async fn run_rule(
    ctx: &Context,
    rule: &Rule,
    started_ms: u64,
) -> Result<RuleEnd, CoordinatorError> {
    loop {
        let lead = leader::acquire(
            &ctx.queue,
            &rule.name,
            &ctx.id,
            ctx.leader_lease,
            &ctx.cancel,
        )
        .await?;
        // Taking over a rule whose stop condition already held in this run (the leader
        // stopped, or died after stopping): `stop = "once"` means one iteration, whoever
        // leads.
        let record = ctx.queue.rule_record(&rule.name).await?;
        if rule.stop != Stop::Never
            && let Some(stopped) = record.stopped_ms
            && stopped >= started_ms
        {
            lead.release().await;
            info!(rule = %rule.name, "this rule already met its stop condition in this run");
            return Ok(match (record.state, record.reason) {
                (Some(RuleState::Failed), reason) => RuleEnd::Failed(reason.unwrap_or_default()),
                _ => RuleEnd::Stopped,
            });
        }
        let run_start = started_ms.max(record.stopped_ms.unwrap_or(0));
        let result = iterate(ctx, rule, &lead, run_start).await;
        let token = lead.token.clone();
        let end = match result {
            Ok(end) => end,
            Err(
                CoordinatorError::Cancelled | CoordinatorError::Queue(QueueError::Fenced { .. }),
            ) if !ctx.cancel.is_cancelled() => {
                lead.release().await;
                warn!(rule = %rule.name, "lost the leader lease; standing by");
                continue;
            }
            Err(e) => {
                lead.release().await;
                return Err(e);
            }
        };
        let (state, reason) = match &end {
            RuleEnd::Stopped => (RuleState::Stopped, None),
            RuleEnd::Failed(reason) => (RuleState::Failed, Some(reason.as_str())),
        };
        let recorded = ctx
            .queue
            .set_rule_state(&rule.name, &token, state, reason, true)
            .await;
        lead.release().await;
        recorded?;
        return Ok(end);
    }
}

/// Iterates according to the rule's `stop` and `interval` until it stops or `lead` is lost.
///
/// A failed iteration (tasks in dead letters, or a listing that failed for good) marks the
/// rule failed, with the reason, and the next iteration comes at the interval as usual; with
/// `stop = "once"` it is how the rule ends. `empty:N` counts the consecutive empty iterations
/// of this run (begun at `run_start`), whichever coordinator ran them.
async fn iterate(
    ctx: &Context,
    rule: &Rule,
    lead: &leader::Leadership,
    run_start: u64,
) -> Result<RuleEnd, CoordinatorError> {
    let mut empty_streak = ctx
        .queue
        .history(&rule.name)
        .await?
        .iter()
        .take_while(|r| r.started_ms >= run_start && r.succeeded() && r.is_empty())
        .count() as u32;
    loop {
        let failure = match run_iteration(ctx, rule, lead).await {
            Ok(record) => {
                let seconds = record.ended_ms.saturating_sub(record.started_ms) as f64 / 1000.0;
                Metric::IterationDuration
                    .gauge(&[("rule", rule.name.clone())])
                    .set(seconds);
                Metric::IterationEmpty
                    .gauge(&[("rule", rule.name.clone())])
                    .set(if record.is_empty() { 1.0 } else { 0.0 });
                info!(
                    rule = %rule.name, iteration = record.number, state = %record.state_name(),
                    listed = record.listed, skipped = record.skipped, archived = record.archived,
                    copied = record.copied, bytes = record.copied_bytes, failed = record.dead,
                    seconds, "iteration finished"
                );
                if record.succeeded() && record.is_empty() {
                    empty_streak += 1;
                } else {
                    empty_streak = 0;
                }
                (!record.succeeded()).then(|| {
                    format!(
                        "iteration {} failed: {} task(s) in dead letters",
                        record.number, record.dead
                    )
                })
            }
            Err(CoordinatorError::Storage(e)) => {
                empty_streak = 0;
                // A one-shot rule reports its failure once, where it ends; a repeating one
                // says it here, since it goes on.
                if rule.stop != Stop::Once {
                    warn!(rule = %rule.name, error = %e, "the iteration failed; trying again at the next interval");
                }
                Some(e.to_string())
            }
            Err(e) => return Err(e),
        };
        match rule.stop {
            Stop::Once => {
                return Ok(match failure {
                    None => RuleEnd::Stopped,
                    Some(reason) => RuleEnd::Failed(reason),
                });
            }
            Stop::Empty(n) if empty_streak >= n => {
                info!(rule = %rule.name, empty_iterations = n, "stop condition reached");
                return Ok(RuleEnd::Stopped);
            }
            _ => {}
        }
        let (state, reason) = match &failure {
            None => (RuleState::Waiting, None),
            Some(reason) => (RuleState::Failed, Some(reason.as_str())),
        };
        ctx.queue
            .set_rule_state(&rule.name, &lead.token, state, reason, false)
            .await?;
        tokio::select! {
            _ = tokio::time::sleep(rule.interval) => {}
            _ = lead.lost.cancelled() => return Err(CoordinatorError::Cancelled),
        }
    }
}
