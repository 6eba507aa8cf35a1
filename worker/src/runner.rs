//! The runner: claims tasks under leases, as many at once as the worker has slots, keeps the
//! leases alive while each is worked on, and hands each result to [`crate::outcome`]. A task
//! whose lease is lost is dropped mid-copy, which aborts its requests in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use ferry_core::config::{Config, DEFAULT_MAX_ATTEMPTS, Rule};
use ferry_core::task::Task;
use ferry_core::telemetry::Metric;
use ferry_queue::{Claimed, HEARTBEAT, WorkerInfo, WorkerQueue};
use ferry_storage::{Capabilities, ErrorKind, StorageError, Stores};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::error::CopyError;
use crate::leases::{self, Leases};
use crate::outcome::{self, Outcome, unheld};
use crate::{WorkerError, WorkerOptions, acks, delete, object, part};

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

/// Everything a task needs, shared by all of a worker's tasks.
pub(crate) struct Shared {
    /// Where finished tasks are acked, in batches.
    pub(crate) acks: acks::Acker,
    pub(crate) config: Arc<Config>,
    pub(crate) stores: Stores,
    pub(crate) queue: Arc<dyn WorkerQueue>,
    pub(crate) options: WorkerOptions,
    pub(crate) leases: Leases,
    /// Part tasks held now.
    pub(crate) parts_held: AtomicUsize,
    /// What the heartbeat reports: tasks in flight, finished and failed.
    pub(crate) in_flight: Arc<AtomicU64>,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// One claimed task being worked on.
pub(crate) struct Job<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) rule: &'a Rule,
    pub(crate) claimed: &'a Claimed,
    /// Set once a request that writes to the destination is sent: from then on, this
    /// attempt may have written even if it fails, and its write intent must stay.
    pub(crate) wrote: AtomicBool,
}

impl Job<'_> {
    /// Notes that a destination write is about to be sent.
    pub(crate) fn wrote(&self) {
        self.wrote.store(true, Ordering::Relaxed);
    }

    /// Whether a destination write was sent by this attempt.
    pub(crate) fn may_have_written(&self) -> bool {
        self.wrote.load(Ordering::Relaxed)
    }

    /// What the destination bucket does with writes (probed once per process and lifetime).
    pub(crate) async fn capabilities(&self) -> Result<Capabilities, StorageError> {
        let rule = self.rule;
        self.shared
            .stores
            .capabilities(&rule.destination.endpoint, &rule.destination.bucket)
            .await
    }

    /// Aborts one upload at the destination (an upload already gone is fine).
    pub(crate) async fn abort_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        let destination = self.shared.stores.destination(self.rule);
        match destination
            .abort_multipart(&self.rule.destination.bucket, key, upload_id)
            .await
        {
            Ok(()) => {
                Metric::UploadsAborted
                    .counter(&[("rule", self.rule.name.clone())])
                    .increment(1);
                Ok(())
            }
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
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
        let claimed = claim(shared, &rules, &mut next_rule, (want, parts)).await;
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

/// Claims up to `want` tasks (`parts` of them part tasks at most) of the first rule, from
/// `next_rule` on, that has any; the rule after it goes first next time.
async fn claim(
    shared: &Shared,
    rules: &[String],
    next_rule: &mut usize,
    (want, parts): (usize, usize),
) -> Vec<Claimed> {
    for i in 0..rules.len() {
        let rule = &rules[(*next_rule + i) % rules.len()];
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
            Ok(claimed) if !claimed.is_empty() => {
                *next_rule = (*next_rule + i + 1) % rules.len();
                return claimed;
            }
            Ok(_) => {}
            // The queue rides out an unreachable Redis itself; this is Redis refusing the
            // claim (or the process giving up on shutdown): back off, never die.
            Err(e) => {
                warn!(error = %e, "claim failed; retrying");
                break;
            }
        }
    }
    Vec::new()
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
        Some(Ok(outcome)) => outcome::acknowledge(shared, rule, &claimed, &task, outcome).await,
        Some(Err(error)) => outcome::report(&job, &task, error).await,
    }
}

async fn run_task(job: &Job<'_>, task: &Task) -> Result<Outcome, CopyError> {
    match task {
        Task::CopyObject {
            source,
            destination,
        } => object::copy_object(job, source, destination).await,
        Task::CopyPart(task) => part::copy_part(job, task).await,
        Task::DeleteObject {
            key,
            destination_etag,
        } => Ok(delete::delete_object(job, key, destination_etag).await?),
        Task::CopyVersions { key, versions } => {
            crate::versions::copy_versions(job, key, versions).await
        }
        Task::CopyVersion { key, version } => {
            crate::versions::copy_as_object(job, key, version).await
        }
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
