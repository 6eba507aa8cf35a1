//! The worker: claim tasks under leases, keep the leases alive while copying, and report each
//! outcome (ack, retry later, or dead letter). Bounded by a semaphore of `concurrency` permits.

mod copy;
mod leases;

use std::sync::Arc;
use std::time::Duration;

use ferry_common::config::{Config, DEFAULT_MAX_ATTEMPTS};
use ferry_common::queue::{Claimed, FailOutcome, LedgerOp, Queue, QueueError};
use ferry_common::retry::RetryPolicy;
use ferry_common::storage::{ErrorKind, Stores};
use ferry_common::task::Task;
use ferry_common::telemetry;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use copy::{Outcome, copy_object, delete_object};
use leases::Leases;

/// Most tasks claimed in one round trip.
const CLAIM_BATCH: usize = 32;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The worker's name, unique among live workers (it owns leases by this name).
    pub id: String,
    /// Tasks worked on at once.
    pub concurrency: usize,
    /// Lease length; renewed every third of it.
    pub lease: Duration,
    /// On shutdown, how long in-flight tasks may run before they are released.
    pub drain: Duration,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Everything a task needs, shared by all of a worker's tasks.
struct Shared {
    config: Arc<Config>,
    stores: Stores,
    queue: Queue,
    options: WorkerOptions,
    leases: Leases,
}

/// Claims and copies until `shutdown` is cancelled, then drains: in-flight tasks get
/// `options.drain` to finish, after which the rest are released back to their queues.
pub async fn run(
    config: Arc<Config>,
    stores: Stores,
    queue: Queue,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let shared = Arc::new(Shared {
        leases: Leases::new(queue.clone(), options.id.clone(), options.lease),
        config,
        stores,
        queue,
        options,
    });
    let semaphore = Arc::new(Semaphore::new(shared.options.concurrency));
    let tracker = TaskTracker::new();
    let renewer = tokio::spawn(shared.leases.clone().renew_forever());
    info!(worker = %shared.options.id, concurrency = shared.options.concurrency, "worker started");

    let result = claim_loop(&shared, &semaphore, &tracker, &shutdown).await;

    tracker.close();
    let drained = tokio::time::timeout(shared.options.drain, tracker.wait()).await;
    if drained.is_err() {
        warn!(worker = %shared.options.id, "drain deadline reached; releasing in-flight tasks");
        shared.leases.release_all();
        tracker.wait().await;
    }
    renewer.abort();
    info!(worker = %shared.options.id, "worker stopped");
    result
}

async fn claim_loop(
    shared: &Arc<Shared>,
    semaphore: &Arc<Semaphore>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    let rules: Vec<_> = shared.config.rules.iter().map(|r| r.name.clone()).collect();
    let mut next_rule = 0usize;
    let mut idle = Duration::from_millis(50);
    let mut redis_failures = 0u32;
    loop {
        let first = tokio::select! {
            permit = semaphore.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
            _ = shutdown.cancelled() => return Ok(()),
        };
        let want = 1 + semaphore.available_permits().min(CLAIM_BATCH - 1);
        let mut claimed = Vec::new();
        for i in 0..rules.len() {
            let rule = &rules[(next_rule + i) % rules.len()];
            let max_attempts = shared
                .config
                .rule(rule)
                .map_or(DEFAULT_MAX_ATTEMPTS, |r| r.max_attempts);
            match shared
                .queue
                .claim(
                    rule,
                    &shared.options.id,
                    shared.options.lease,
                    want,
                    max_attempts,
                )
                .await
            {
                Ok(c) => claimed = c,
                Err(e) => {
                    // Redis may be restarting: back off rather than die, up to a limit.
                    redis_failures += 1;
                    if redis_failures > 30 {
                        return Err(e.into());
                    }
                    warn!(error = %e, "claim failed; retrying");
                    break;
                }
            }
            if !claimed.is_empty() {
                redis_failures = 0;
                next_rule = (next_rule + i + 1) % rules.len();
                break;
            }
        }
        if claimed.is_empty() {
            drop(first);
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
            idle = (idle * 2).min(Duration::from_millis(500));
            continue;
        }
        idle = Duration::from_millis(50);
        let mut first = Some(first);
        for task in claimed {
            let permit = match first.take() {
                Some(p) => p,
                None => match semaphore.clone().try_acquire_owned() {
                    Ok(p) => p,
                    // Cannot happen (we claimed no more than the free permits), but if it did,
                    // handing the task back is always safe.
                    Err(_) => {
                        let _ = shared.queue.release(&shared.options.id, &task).await;
                        continue;
                    }
                },
            };
            let shared = shared.clone();
            tracker.spawn(async move {
                process(&shared, task).await;
                drop(permit);
            });
        }
    }
}

/// Works on one claimed task and reports its outcome. Never commits without the lease: if the
/// lease is lost the copy future is dropped, which aborts the upload in flight.
async fn process(shared: &Shared, claimed: Claimed) {
    let worker = &shared.options.id;
    let Some(rule) = shared.config.rule(&claimed.rule) else {
        // A task of a rule this worker's config does not know: let a worker that knows it
        // take it, without counting an attempt.
        let _ = shared.queue.release(worker, &claimed).await;
        return;
    };
    let task = match &claimed.task {
        Ok(task) => task.clone(),
        Err(e) => {
            let error = format!("cannot decode task {}: {e}", claimed.id);
            report_failure(
                shared,
                &claimed,
                &error,
                ErrorKind::Permanent,
                rule.max_attempts,
            )
            .await;
            return;
        }
    };
    let guard = shared.leases.hold(&claimed);
    metrics::gauge!(telemetry::WORKER_IN_FLIGHT).increment(1.0);
    let result = tokio::select! {
        r = run_task(shared, rule, &task) => Some(r),
        _ = guard.token.cancelled() => None,
    };
    metrics::gauge!(telemetry::WORKER_IN_FLIGHT).decrement(1.0);
    let reason = guard.finish();
    match result {
        None if reason == leases::Stop::Release => {
            let _ = shared.queue.release(worker, &claimed).await;
            debug!(task = %claimed.id, "released on shutdown");
        }
        None => warn!(task = %claimed.id, "lease lost; abandoned without committing"),
        Some(Ok(outcome)) => {
            let ledger = match (&outcome, &task) {
                (Outcome::Copied { entry, .. }, Task::CopyObject { source }) => {
                    LedgerOp::Put(source.key.clone(), entry.clone())
                }
                (Outcome::Deleted, Task::DeleteObject { key, .. }) => LedgerOp::Delete(key.clone()),
                _ => LedgerOp::None,
            };
            match shared
                .queue
                .ack(worker, &claimed, outcome.name(), outcome.bytes(), &ledger)
                .await
            {
                Ok(true) => {
                    if let Outcome::Copied { bytes, .. } = outcome {
                        let rule = rule.name.clone();
                        metrics::counter!(telemetry::OBJECTS_COPIED, "rule" => rule.clone())
                            .increment(1);
                        metrics::counter!(telemetry::BYTES_COPIED, "rule" => rule).increment(bytes);
                    }
                }
                Ok(false) => {
                    warn!(task = %claimed.id, "lease lost before ack; another worker redoes it")
                }
                Err(e) => {
                    warn!(task = %claimed.id, error = %e, "ack failed; the lease will expire and the task is redone")
                }
            }
        }
        Some(Err(e)) => {
            let error = e.to_string();
            report_failure(shared, &claimed, &error, e.kind, rule.max_attempts).await;
        }
    }
}

async fn run_task(
    shared: &Shared,
    rule: &ferry_common::config::Rule,
    task: &Task,
) -> Result<Outcome, ferry_common::storage::StorageError> {
    match task {
        Task::CopyObject { source } => copy_object(&shared.stores, rule, source).await,
        Task::DeleteObject {
            key,
            destination_etag,
        } => delete_object(&shared.stores, rule, key, destination_etag).await,
    }
}

async fn report_failure(
    shared: &Shared,
    claimed: &Claimed,
    error: &str,
    kind: ErrorKind,
    max_attempts: u32,
) {
    let attempts = claimed.attempts + 1;
    let delay = match kind {
        ErrorKind::Throttled => RetryPolicy::THROTTLED.delay(attempts),
        _ => RetryPolicy::TRANSIENT.delay(attempts),
    };
    let permanent = !kind.is_retryable();
    let outcome = shared
        .queue
        .fail(
            &shared.options.id,
            claimed,
            error,
            delay,
            max_attempts,
            permanent,
        )
        .await;
    let rule = claimed.rule.clone();
    match outcome {
        Ok(FailOutcome::Dead) => {
            warn!(rule = %rule, task = %claimed.id, attempts, error, "task failed; moved to dead letters");
            metrics::counter!(telemetry::OBJECTS_FAILED, "rule" => rule.clone()).increment(1);
            metrics::counter!(telemetry::TASK_FAILURES, "rule" => rule, "outcome" => "dead")
                .increment(1);
        }
        Ok(FailOutcome::Retry) => {
            debug!(rule = %rule, task = %claimed.id, attempts, error, ?delay, "task failed; will retry");
            metrics::counter!(telemetry::TASK_FAILURES, "rule" => rule, "outcome" => "retry")
                .increment(1);
        }
        Ok(FailOutcome::Lost) => {
            warn!(task = %claimed.id, "lease lost before reporting the failure")
        }
        Err(e) => {
            warn!(task = %claimed.id, error = %e, "could not record the failure; the lease will expire")
        }
    }
}
