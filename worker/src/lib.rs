//! The worker: claim tasks under leases, keep the leases alive while copying, and report each
//! outcome (ack, retry later, or dead letter). Bounded by a semaphore of `concurrency` permits.

mod acks;
mod copy;
mod leases;
mod multipart;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ferry_core::config::{Config, DEFAULT_MAX_ATTEMPTS, Rule};
use ferry_core::retry::RetryPolicy;
use ferry_core::task::Task;
use ferry_core::telemetry::Metric;
use ferry_queue::{
    Abandon, Claimed, FailOutcome, HEARTBEAT, LedgerOp, QueueError, WorkerInfo, WorkerQueue,
};
use ferry_storage::{ErrorKind, StorageError, Stores};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use copy::Outcome;
use copy::delete_object;
use leases::Leases;

/// Most tasks claimed in one round trip.
const CLAIM_BATCH: usize = 32;

/// How long a claim waits for more of the worker's slots to free up while its tasks finish,
/// so one round trip claims for several slots (at most a quarter of them, at most
/// [`CLAIM_BATCH`]). A worker with nothing in flight claims at once.
const CLAIM_WINDOW: Duration = Duration::from_millis(10);

/// How long a task this worker cannot decode waits before it is claimed again.
const UNDECODABLE_DELAY: Duration = Duration::from_secs(30);

/// How long a task of a rule this worker does not know waits before it is claimed again.
const UNKNOWN_RULE_DELAY: Duration = Duration::from_secs(5);

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
    /// Most multipart part tasks worked on at once (within `concurrency`), so the parts of
    /// one large object spread over every worker rather than queue up behind one.
    pub part_concurrency: usize,
}

/// Default for [`WorkerOptions::part_concurrency`].
pub const DEFAULT_PART_CONCURRENCY: usize = 8;

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Everything a task needs, shared by all of a worker's tasks.
struct Shared {
    /// Where finished tasks are acked, in batches.
    acks: acks::Acker,
    config: Arc<Config>,
    stores: Stores,
    queue: Arc<dyn WorkerQueue>,
    options: WorkerOptions,
    leases: Leases,
    /// Part tasks held now.
    parts_held: AtomicUsize,
    /// What the heartbeat reports: tasks in flight, finished and failed.
    in_flight: Arc<AtomicU64>,
    completed: AtomicU64,
    failed: AtomicU64,
}

/// One claimed task being worked on.
struct Job<'a> {
    shared: &'a Shared,
    rule: &'a Rule,
    claimed: &'a Claimed,
    /// Set once a request that writes to the destination is sent: from then on, this
    /// attempt may have written even if it fails, and its write intent must stay.
    wrote: AtomicBool,
}

impl Job<'_> {
    /// Notes that a destination write is about to be sent.
    fn wrote(&self) {
        self.wrote.store(true, Ordering::Relaxed);
    }

    fn may_have_written(&self) -> bool {
        self.wrote.load(Ordering::Relaxed)
    }
}

/// Why a task attempt failed.
#[derive(Debug, thiserror::Error)]
enum TaskError {
    /// The object store failed; retried or buried by its kind.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A conditional write was refused: the destination changed since planning. Decided
    /// again; left over only when it keeps changing, and then retried.
    #[error("the destination changed since planning: {0}")]
    DestinationChanged(StorageError),
    /// Redis failed; the lease runs out and the task is redone.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

fn is_part(claimed: &Claimed) -> bool {
    claimed.id.is_part()
}

/// Claims and copies until `shutdown` is cancelled, then drains: in-flight tasks get
/// `options.drain` to finish, after which the rest are released back to their queues.
/// `queue` is any backend (Redis: `Arc::new(queue)` of a [`ferry_queue::Queue`]).
pub async fn run(
    config: Arc<Config>,
    stores: Stores,
    queue: Arc<dyn WorkerQueue>,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let in_flight = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Shared {
        acks: acks::Acker::start(queue.clone(), options.id.clone(), in_flight.clone()),
        leases: Leases::new(queue.clone(), options.id.clone(), options.lease),
        parts_held: AtomicUsize::new(0),
        in_flight,
        completed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        config,
        stores,
        queue,
        options,
    });
    let semaphore = Arc::new(Semaphore::new(shared.options.concurrency));
    let tracker = TaskTracker::new();
    let renewer = tokio::spawn(shared.leases.clone().renew_forever());
    let heartbeat = tokio::spawn(heartbeat_forever(shared.clone()));
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
    heartbeat.abort();
    if let Err(e) = shared.queue.deregister(&shared.options.id).await {
        warn!(worker = %shared.options.id, error = %e, "could not deregister; shown as dead until it expires");
    }
    info!(worker = %shared.options.id, "worker stopped");
    result
}

/// Registers the worker and reports its counts every [`HEARTBEAT`], so `ferry queues` and
/// `ferry status` can list the fleet.
async fn heartbeat_forever(shared: Arc<Shared>) {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    loop {
        let info = WorkerInfo {
            id: shared.options.id.clone(),
            host: host.clone(),
            pid: std::process::id(),
            started_ms,
            in_flight: shared.in_flight.load(Ordering::Relaxed),
            completed: shared.completed.load(Ordering::Relaxed),
            failed: shared.failed.load(Ordering::Relaxed),
        };
        if let Err(e) = shared.queue.heartbeat(&info).await {
            debug!(error = %e, "heartbeat failed");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
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
    loop {
        let first = tokio::select! {
            permit = semaphore.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return Ok(()),
            },
            _ = shutdown.cancelled() => return Ok(()),
        };
        let mut permits = vec![first];
        gather_permits(semaphore, shared.options.concurrency, &mut permits).await;
        let want = permits.len();
        let parts = shared
            .options
            .part_concurrency
            .saturating_sub(shared.parts_held.load(Ordering::Relaxed));
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
                    (want, parts),
                    max_attempts,
                )
                .await
            {
                Ok(c) => claimed = c,
                // The queue rides out an unreachable Redis itself; this is Redis refusing the
                // claim (or the process giving up on shutdown): back off, never die.
                Err(e) => {
                    warn!(error = %e, "claim failed; retrying");
                    break;
                }
            }
            if !claimed.is_empty() {
                next_rule = (next_rule + i + 1) % rules.len();
                break;
            }
        }
        if claimed.is_empty() {
            drop(permits);
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
            idle = (idle * 2).min(Duration::from_millis(500));
            continue;
        }
        idle = Duration::from_millis(50);
        for task in claimed {
            let Some(permit) = permits.pop() else {
                // Cannot happen (we claimed no more than the permits held), but if it did,
                // handing the task back is always safe.
                unheld(
                    shared.queue.release(&shared.options.id, &task, false).await,
                    &task.id,
                );
                continue;
            };
            let shared = shared.clone();
            let part = is_part(&task);
            if part {
                shared.parts_held.fetch_add(1, Ordering::Relaxed);
            }
            tracker.spawn(async move {
                process(&shared, task, permit).await;
                if part {
                    shared.parts_held.fetch_sub(1, Ordering::Relaxed);
                }
            });
        }
    }
}

/// Adds to `permits` (holding one) the worker's other free slots, up to [`CLAIM_BATCH`].
/// While tasks are in flight and fewer than a quarter of the `concurrency` slots are free,
/// waits up to [`CLAIM_WINDOW`] for more to free up, so claims come in batches.
async fn gather_permits(
    semaphore: &Arc<Semaphore>,
    concurrency: usize,
    permits: &mut Vec<tokio::sync::OwnedSemaphorePermit>,
) {
    let enough = (concurrency / 4).clamp(1, CLAIM_BATCH);
    let deadline = tokio::time::Instant::now() + CLAIM_WINDOW;
    while permits.len() < CLAIM_BATCH {
        if let Ok(p) = semaphore.clone().try_acquire_owned() {
            permits.push(p);
            continue;
        }
        let in_flight = concurrency - permits.len() - semaphore.available_permits();
        if permits.len() >= enough || in_flight == 0 {
            return;
        }
        match tokio::time::timeout_at(deadline, semaphore.clone().acquire_owned()).await {
            Ok(Ok(p)) => permits.push(p),
            _ => return,
        }
    }
}

/// Works on one claimed task and reports its outcome. Never commits without the lease: if the
/// lease is lost the copy future is dropped, which aborts the upload in flight.
async fn process(shared: &Shared, claimed: Claimed, slot: tokio::sync::OwnedSemaphorePermit) {
    let worker = &shared.options.id;
    let Some(rule) = shared.config.rule(&claimed.rule) else {
        // A task of a rule this worker's config does not know: let a worker that knows it
        // take it, without counting an attempt.
        unheld(
            shared
                .queue
                .release_after(worker, &claimed, false, UNKNOWN_RULE_DELAY)
                .await,
            &claimed.id,
        );
        return;
    };
    let job = Job {
        shared,
        rule,
        claimed: &claimed,
        wrote: AtomicBool::new(false),
    };
    let task = match &claimed.task {
        Ok(task) => task.clone(),
        // Written by a newer ferry (a rolling upgrade): leave it for a worker that reads it,
        // without counting an attempt; burying it would lose it.
        Err(e) => {
            warn!(task = %claimed.id, error = %e, "cannot decode this task; leaving it for a newer worker");
            Metric::TasksUndecodable
                .counter(&[("rule", claimed.rule.clone())])
                .increment(1);
            unheld(
                shared
                    .queue
                    .release_after(worker, &claimed, false, UNDECODABLE_DELAY)
                    .await,
                &claimed.id,
            );
            return;
        }
    };
    let guard = shared.leases.hold(&claimed);
    Metric::WorkerInFlight.gauge(&[]).increment(1.0);
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let result = tokio::select! {
        r = run_task(&job, &task) => Some(r),
        _ = guard.token.cancelled() => None,
    };
    Metric::WorkerInFlight.gauge(&[]).decrement(1.0);
    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    let reason = guard.finish();
    // The slot is free once the work is done: the ack (batched) or the failure report goes
    // out while the worker already claims the next task.
    drop(slot);
    match result {
        None if reason == leases::Stop::Release => {
            unheld(
                shared
                    .queue
                    .release(worker, &claimed, job.may_have_written())
                    .await,
                &claimed.id,
            );
            debug!(task = %claimed.id, "released on shutdown");
        }
        None | Some(Ok(Outcome::LeaseLost)) => {
            warn!(task = %claimed.id, "lease lost; abandoned without committing")
        }
        Some(Ok(Outcome::Recorded(_))) => {
            shared.completed.fetch_add(1, Ordering::Relaxed);
        }
        Some(Ok(outcome)) => acknowledge(shared, rule, &claimed, &task, outcome).await,
        Some(Err(TaskError::Queue(e))) => {
            warn!(task = %claimed.id, error = %e, "redis failed; the lease will expire and the task is redone")
        }
        Some(Err(TaskError::Storage(e))) => {
            report_failure(&job, Some(&task), &e.to_string(), e.kind).await;
        }
        Some(Err(e @ TaskError::DestinationChanged(_))) => {
            report_failure(
                &job,
                Some(&task),
                &e.to_string(),
                ErrorKind::PreconditionFailed,
            )
            .await;
        }
    }
}

/// Acks a finished task with its ledger change (and, for a completed multipart copy, drops
/// the upload's record).
async fn acknowledge(
    shared: &Shared,
    rule: &Rule,
    claimed: &Claimed,
    task: &Task,
    outcome: Outcome,
) {
    let ledger = match &outcome {
        Outcome::Copied { entry, .. } | Outcome::Completed { entry, .. } => {
            LedgerOp::Put(task.key().to_string(), entry.clone())
        }
        Outcome::Deleted => LedgerOp::Delete(task.key().to_string()),
        _ => LedgerOp::None,
    };
    let upload = match &outcome {
        Outcome::Completed { upload, .. } => Some(upload.as_str()),
        Outcome::Skipped { upload, .. } => upload.as_deref(),
        _ => None,
    };
    let Some(counted) = outcome.counted() else {
        warn!(task = %claimed.id, "lease lost; abandoned without committing");
        return;
    };
    let item = ferry_queue::AckItem {
        id: claimed.id.clone(),
        token: claimed.token,
        outcome: counted,
        bytes: outcome.bytes(),
        ledger,
        upload: upload.map(str::to_string),
    };
    let acked = shared.acks.ack(&claimed.rule, item).await;
    match acked {
        Ok(true) => {
            shared.completed.fetch_add(1, Ordering::Relaxed);
            let name = rule.name.clone();
            // An event's copy: its id carries the event's time.
            if claimed.id.iteration() == ferry_queue::EVENTS_ITERATION
                && matches!(outcome, Outcome::Copied { .. } | Outcome::Completed { .. })
                && let Some(event_ms) = claimed.id.enqueued_ms()
            {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                Metric::EventLag
                    .histogram(&[("rule", name.clone())])
                    .record(now_ms.saturating_sub(event_ms) as f64 / 1000.0);
            }
            match outcome {
                Outcome::Copied { bytes, .. } => {
                    Metric::ObjectsCopied
                        .counter(&[("rule", name.clone())])
                        .increment(1);
                    Metric::BytesCopied
                        .counter(&[("rule", name)])
                        .increment(bytes);
                }
                // Its bytes were counted part by part, by whichever worker copied each.
                Outcome::Completed { .. } => Metric::ObjectsCopied
                    .counter(&[("rule", name)])
                    .increment(1),
                Outcome::Skipped { reason, .. } => Metric::ObjectsSkipped
                    .counter(&[("rule", name), ("reason", reason.label().into())])
                    .increment(1),
                Outcome::Archived => {
                    Metric::ObjectsSkipped
                        .counter(&[("rule", name), ("reason", "archived".into())])
                        .increment(1);
                    // Named, so a summary and a report can say which (the count is the
                    // ack's; a name lost here loses no object).
                    if let Err(e) = shared
                        .queue
                        .note_archived(&claimed.rule, claimed.id.iteration(), task.key())
                        .await
                    {
                        warn!(task = %claimed.id, error = %e, "could not name an archived key");
                    }
                }
                _ => {}
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

async fn run_task(job: &Job<'_>, task: &Task) -> Result<Outcome, TaskError> {
    match task {
        Task::CopyObject {
            source,
            destination,
        } => multipart::copy_object(job, source, destination).await,
        Task::CopyPart(part) => multipart::copy_part(job, part).await,
        Task::DeleteObject {
            key,
            destination_etag,
        } => Ok(delete_object(job, key, destination_etag).await?),
    }
}

/// Reports a SlowDown or 429: the shard's fleet-wide limit is cut and the task goes back
/// without an attempt counted (a throttle is not a failure), claimable again once the shard
/// admits it (a short jitter spreads the returns).
async fn report_throttle(job: &Job<'_>, error: &str) {
    let (shared, claimed) = (job.shared, job.claimed);
    let shard = claimed.id.shard().to_string();
    Metric::Throttled
        .counter(&[("rule", claimed.rule.clone()), ("shard", shard.clone())])
        .increment(1);
    let delay = Duration::from_millis(rand::random_range(0..500));
    match shared
        .queue
        .throttle(
            &shared.options.id,
            claimed,
            error,
            delay,
            job.may_have_written(),
        )
        .await
    {
        Ok(Some((limit, probing))) => {
            debug!(rule = %claimed.rule, shard, task = %claimed.id, limit, probing, error,
                "throttled; the shard is slowed down")
        }
        Ok(None) => warn!(task = %claimed.id, "lease lost before reporting the throttle"),
        Err(e) => {
            warn!(task = %claimed.id, error = %e, "could not report the throttle; the lease will expire")
        }
    }
}

/// Records a failed attempt: retried later, or buried in dead letters after a permanent
/// error or `max_attempts`. A buried part first aborts its upload, and its dead letter holds
/// the whole object, which is what a retry must copy again.
async fn report_failure(job: &Job<'_>, task: Option<&Task>, error: &str, kind: ErrorKind) {
    let (shared, claimed) = (job.shared, job.claimed);
    if kind == ErrorKind::Throttled {
        return report_throttle(job, error).await;
    }
    shared.failed.fetch_add(1, Ordering::Relaxed);
    let max_attempts = job.rule.max_attempts;
    let attempts = claimed.attempts + 1;
    let delay = match kind {
        ErrorKind::Throttled => RetryPolicy::THROTTLED.delay(attempts),
        _ => RetryPolicy::TRANSIENT.delay(attempts),
    };
    // A precondition that keeps failing (a key that keeps changing) is retried later, never
    // buried at once: it means "decide again", not "impossible".
    let permanent = !kind.is_retryable() && kind != ErrorKind::PreconditionFailed;
    let mut abandon = Abandon::default();
    if let Some(Task::CopyPart(part)) = task
        && (permanent || attempts >= max_attempts)
    {
        match multipart::abort(job, &part.source.key, &part.upload_id).await {
            Ok(()) => abandon.upload = Some(part.upload.clone()),
            // Left recorded: the coordinator aborts it once the iteration settles.
            Err(e) => warn!(task = %claimed.id, error = %e, "could not abort the upload"),
        }
        abandon.replacement = Some(Task::CopyObject {
            source: part.source.clone(),
            destination: part.destination.clone(),
        });
    }
    let outcome = shared
        .queue
        .fail(
            &shared.options.id,
            claimed,
            error,
            delay,
            max_attempts,
            permanent,
            &abandon,
            job.may_have_written(),
        )
        .await;
    let rule = claimed.rule.clone();
    match outcome {
        Ok(FailOutcome::Dead) => {
            warn!(rule = %rule, task = %claimed.id, attempts, error, "task failed; moved to dead letters");
            Metric::ObjectsFailed
                .counter(&[("rule", rule.clone())])
                .increment(1);
            Metric::TaskFailures
                .counter(&[("rule", rule), ("outcome", "dead".into())])
                .increment(1);
        }
        Ok(FailOutcome::Retry) => {
            debug!(rule = %rule, task = %claimed.id, attempts, error, ?delay, "task failed; will retry");
            Metric::TaskFailures
                .counter(&[("rule", rule), ("outcome", "retry".into())])
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

/// A task handed back whose release failed is claimed again when its lease runs out: later,
/// and (for a release that counts an attempt) without that attempt counted.
fn unheld(result: Result<impl Sized, QueueError>, task: &impl std::fmt::Display) {
    if let Err(e) = result {
        debug!(%task, error = %e, "cannot hand the task back; its lease will run out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A semaphore of `concurrency` slots with all but `free` taken by tasks in flight, and
    /// the claim's first slot taken from the free ones.
    fn slots(
        concurrency: usize,
        free: usize,
    ) -> (
        Arc<Semaphore>,
        tokio::sync::OwnedSemaphorePermit,
        Vec<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let semaphore = Arc::new(Semaphore::new(concurrency));
        let busy = (0..concurrency - free)
            .map(|_| semaphore.clone().try_acquire_owned().unwrap())
            .collect();
        let first = semaphore.clone().try_acquire_owned().unwrap();
        (semaphore, first, busy)
    }

    /// Frees `n` task slots after `after`.
    fn finish(
        busy: &mut Vec<tokio::sync::OwnedSemaphorePermit>,
        n: usize,
        after: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let done: Vec<_> = busy.drain(..n).collect();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            drop(done);
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_worker_claims_for_every_free_slot_at_once() {
        let (semaphore, first, _busy) = slots(32, 32);
        let started = tokio::time::Instant::now();
        let mut permits = vec![first];
        gather_permits(&semaphore, 32, &mut permits).await;
        assert_eq!(permits.len(), CLAIM_BATCH);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_worker_waits_for_a_quarter_of_its_slots_then_claims_for_them() {
        let (semaphore, first, mut busy) = slots(32, 1);
        let a = finish(&mut busy, 3, Duration::from_millis(3));
        let b = finish(&mut busy, 4, Duration::from_millis(6));
        let started = tokio::time::Instant::now();
        let mut permits = vec![first];
        gather_permits(&semaphore, 32, &mut permits).await;
        assert_eq!(permits.len(), 8, "a quarter of 32 slots");
        assert_eq!(started.elapsed(), Duration::from_millis(6));
        a.await.unwrap();
        b.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_worker_claims_what_freed_up_once_the_window_closes() {
        let (semaphore, first, mut busy) = slots(32, 1);
        let a = finish(&mut busy, 2, Duration::from_millis(4));
        let started = tokio::time::Instant::now();
        let mut permits = vec![first];
        gather_permits(&semaphore, 32, &mut permits).await;
        assert_eq!(permits.len(), 3);
        assert_eq!(started.elapsed(), CLAIM_WINDOW);
        a.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_of_few_slots_claims_at_once() {
        // A quarter of 3 slots rounds up to one: the slot in hand is enough.
        let (semaphore, first, _busy) = slots(3, 1);
        let mut permits = vec![first];
        gather_permits(&semaphore, 3, &mut permits).await;
        assert_eq!(permits.len(), 1);
    }
}
