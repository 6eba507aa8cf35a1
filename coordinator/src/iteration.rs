//! One iteration of one rule.

use std::sync::Arc;
use std::time::Duration;

use ferry_common::config::Rule;
use ferry_common::queue::IterationRecord;
use ferry_common::retry::RetryPolicy;
use ferry_common::shard::shard_of;
use ferry_common::storage::{ListPage, ObjectMeta, ObjectStore, StorageError};
use ferry_common::task::{ObjectVersion, Task};
use ferry_common::telemetry;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::diff::{Decision, Joined, MergeJoin, Step, decide};
use crate::dispatch::Dispatcher;
use crate::{Context, CoordinatorError};

/// Listing pages fetched ahead of the diff, per side.
const PREFETCH_PAGES: usize = 2;
/// Attempts per listing page before the iteration fails.
const LIST_ATTEMPTS: u32 = 6;

/// Runs one iteration of `rule`: lists and diffs both sides, enqueues the copies, waits until
/// every task is acked or dead, and records the outcome.
pub async fn run_iteration(
    ctx: &Context,
    rule: &Rule,
) -> Result<IterationRecord, CoordinatorError> {
    let queue = &ctx.queue;
    let n = queue.begin_iteration(&rule.name).await?;
    metrics::gauge!(telemetry::ITERATION, "rule" => rule.name.clone()).set(n as f64);
    debug!(rule = %rule.name, iteration = n, "iteration started");

    let source = ctx.stores.get(&rule.source.endpoint);
    let destination = ctx.stores.get(&rule.destination.endpoint);
    let mut dispatcher = Dispatcher::new(queue, &rule.name, n, &ctx.cancel);
    let (mut listed, mut skipped) = (0u64, 0u64);

    let planned = async {
        for prefix in rule.listing_prefixes() {
            let mut src = spawn_listing(source.clone(), rule.source.bucket.clone(), prefix.clone());
            let mut dst = spawn_listing(
                destination.clone(),
                rule.destination.bucket.clone(),
                prefix.clone(),
            );
            let mut join = MergeJoin::new();
            loop {
                match join.next() {
                    Step::NeedSource => match src.recv().await {
                        Some(page) => join.push_source(page?.objects),
                        None => join.finish_source(),
                    },
                    Step::NeedDestination => match dst.recv().await {
                        Some(page) => join.push_destination(page?.objects),
                        None => join.finish_destination(),
                    },
                    Step::Item(Joined::SourceOnly(object)) => {
                        listed += 1;
                        dispatcher
                            .add(shard_of(&prefix, &object.key), copy_task(object))
                            .await?;
                    }
                    Step::Item(Joined::Both {
                        source,
                        destination,
                    }) => {
                        listed += 1;
                        match decide(&source, Some(&destination)) {
                            Decision::Copy => {
                                dispatcher
                                    .add(shard_of(&prefix, &source.key), copy_task(source))
                                    .await?
                            }
                            Decision::Skip => skipped += 1,
                        }
                    }
                    // Deletions are never propagated yet (delete = false is the default).
                    Step::Item(Joined::DestinationOnly(_)) => {}
                    Step::Done => break,
                }
                if ctx.cancel.is_cancelled() {
                    return Err(CoordinatorError::Cancelled);
                }
            }
        }
        dispatcher.flush().await
    };
    let planning = planned.await;
    metrics::counter!(telemetry::OBJECTS_LISTED, "rule" => rule.name.clone()).increment(listed);
    metrics::counter!(telemetry::OBJECTS_SKIPPED, "rule" => rule.name.clone()).increment(skipped);
    queue
        .set_iteration_counts(&rule.name, n, &[("listed", listed), ("skipped", skipped)])
        .await?;
    if let Err(e) = planning {
        if !matches!(e, CoordinatorError::Cancelled) {
            warn!(rule = %rule.name, iteration = n, error = %e, "planning failed");
            queue.finish_iteration(&rule.name, n, false).await?;
        }
        return Err(e);
    }
    queue
        .set_iteration_counts(&rule.name, n, &[("sealed", 1)])
        .await?;
    let record = wait_until_settled(ctx, rule, n).await?;
    Ok(queue
        .finish_iteration(&rule.name, n, record.dead == 0)
        .await?)
}

fn copy_task(object: ObjectMeta) -> Task {
    Task::CopyObject {
        source: ObjectVersion {
            key: object.key,
            size: object.size,
            etag: object.etag,
            last_modified_ms: object.last_modified_ms,
        },
    }
}

/// Polls the iteration record until every planned task is acked or dead, doing the queue's
/// upkeep meanwhile so expired leases are requeued even when no worker is claiming.
async fn wait_until_settled(
    ctx: &Context,
    rule: &Rule,
    n: u64,
) -> Result<IterationRecord, CoordinatorError> {
    loop {
        let record = ctx.queue.iteration(&rule.name, n).await?;
        if record.settled() {
            return Ok(record);
        }
        ctx.queue.upkeep(&rule.name, rule.max_attempts).await?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = ctx.cancel.cancelled() => return Err(CoordinatorError::Cancelled),
        }
    }
}

/// Lists `bucket` under `prefix` in a background task, a few pages ahead of the diff.
/// Transient listing errors are retried with backoff; the channel closes at the end.
fn spawn_listing(
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
) -> mpsc::Receiver<Result<ListPage, StorageError>> {
    let (tx, rx) = mpsc::channel(PREFETCH_PAGES);
    tokio::spawn(async move {
        let mut token: Option<String> = None;
        loop {
            let mut attempt = 0;
            let page = loop {
                attempt += 1;
                match store.list_page(&bucket, &prefix, token.clone()).await {
                    Err(e) if e.kind.is_retryable() && attempt < LIST_ATTEMPTS => {
                        warn!(error = %e, attempt, "listing failed; retrying");
                        tokio::time::sleep(RetryPolicy::TRANSIENT.delay(attempt)).await;
                    }
                    other => break other,
                }
            };
            let next = page.as_ref().ok().and_then(|p| p.next_token.clone());
            let failed = page.is_err();
            if tx.send(page).await.is_err() || failed {
                return;
            }
            match next {
                Some(t) => token = Some(t),
                None => return,
            }
        }
    });
    rx
}
