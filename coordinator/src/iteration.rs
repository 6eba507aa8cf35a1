//! One iteration of one rule, resumable after a coordinator restart.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::config::{Rule, Stop};
use ferry_core::telemetry::Metric;
use ferry_queue::{IterationRecord, QueueError, RuleState};
use ferry_storage::{ListPage, ObjectStore, StorageError, list_pages};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::diff::{MergeJoin, Step};
use crate::leader::Leadership;
use crate::marks::Marks;
use crate::planner::{DryRun, DrySink, Planner};
use crate::ranges::KeyRange;
use crate::{Context, CoordinatorError};
use ferry_core::policy::Policy;
use ferry_core::task::Task;
use ferry_queue::LeaderToken;
use ferry_queue::STRAY_HORIZON;

/// How long the sequencer of an applied event is kept past the next successful iteration.
const SEQUENCER_MEMORY: Duration = Duration::from_secs(3600);

/// Listing pages fetched ahead of the diff, per side.
const PREFETCH_PAGES: usize = 2;

/// Runs one iteration of `rule`, or finishes the one a previous coordinator left running:
/// lists and diffs both sides (from the checkpoint on), enqueues the work, waits until every
/// task is acked or dead, and records the outcome. Every write is fenced by `lead`.
///
/// A listing that fails for good leaves the iteration running, to be resumed from its
/// checkpoint by the next attempt, except with `stop = "once"`, where it fails the
/// iteration.
pub(crate) async fn run_iteration(
    ctx: &Context,
    rule: &Rule,
    lead: &Leadership,
) -> Result<IterationRecord, CoordinatorError> {
    loop {
        match attempt_iteration(ctx, rule, lead).await {
            // Redis came back from a restart without its last writes: what it holds is what
            // was planned; plan again from there (nothing lost is counted, nothing twice).
            Err(CoordinatorError::Queue(e @ QueueError::Stale { .. })) => {
                warn!(rule = %rule.name, error = %e, "planning again from what redis holds");
            }
            other => return other,
        }
    }
}

async fn attempt_iteration(
    ctx: &Context,
    rule: &Rule,
    lead: &Leadership,
) -> Result<IterationRecord, CoordinatorError> {
    let (queue, token, cancel) = (&ctx.queue, &lead.token, &lead.lost);
    let (n, resumed) = match queue.latest_iteration(&rule.name).await? {
        Some(record) if record.is_running() => {
            info!(rule = %rule.name, iteration = record.number, sealed = record.sealed,
                checkpoint = ?record.checkpoint, "resuming an unfinished iteration");
            (record.number, Some(record))
        }
        _ => (queue.begin_iteration(&rule.name, token).await?, None),
    };
    Metric::Iteration
        .gauge(&[("rule", rule.name.clone())])
        .set(n as f64);
    queue
        .set_rule_state(&rule.name, token, RuleState::Running, None, false)
        .await?;
    debug!(rule = %rule.name, iteration = n, "iteration started");

    if !resumed.as_ref().is_some_and(|r| r.sealed) {
        if let Err(e) = plan(ctx, rule, (n, resumed.as_ref()), (token, cancel), None).await {
            if matches!(e, CoordinatorError::Storage(_)) {
                warn!(rule = %rule.name, iteration = n, error = %e, "planning failed");
                if rule.stop == Stop::Once {
                    queue.finish_iteration(&rule.name, n, false, token).await?;
                }
            }
            return Err(e);
        }
        queue.seal_iteration(&rule.name, n, token).await?;
    }
    let record = wait_until_settled(ctx, rule, n, cancel).await?;
    crate::uploads::abort_abandoned(ctx, rule).await?;
    let finished = queue
        .finish_iteration(&rule.name, n, record.dead == 0, token)
        .await?;
    if finished.succeeded() {
        // This iteration saw (and repaired) every key written before it began; intents
        // older than the horizon before that can go.
        let cutoff = finished
            .started_ms
            .saturating_sub(STRAY_HORIZON.as_millis() as u64);
        let pruned = queue.prune_intents(&rule.name, cutoff).await?;
        if pruned > 0 {
            debug!(rule = %rule.name, pruned, "forgot old write intents");
        }
        // An event older than this iteration's start, by more than any delivery takes, is
        // no longer expected; what it would have changed, this iteration saw.
        if rule.events.is_some() {
            let forgotten = finished
                .started_ms
                .saturating_sub(SEQUENCER_MEMORY.as_millis() as u64);
            queue.prune_sequencers(&rule.name, forgotten).await?;
        }
    }
    Ok(finished)
}

/// Lists and diffs every rule prefix as a new iteration would, reporting each task it would
/// plan to `each`, and writes nothing: no iteration, no task, no ledger change.
pub(crate) async fn dry_run(
    ctx: &Context,
    rule: &Rule,
    each: &mut (dyn FnMut(&Task) + Send),
) -> Result<DryRun, CoordinatorError> {
    let sink = DrySink {
        found: DryRun::default(),
        each,
    };
    let unfenced = LeaderToken::unfenced();
    plan(ctx, rule, (0, None), (&unfenced, &ctx.cancel), Some(sink))
        .await
        .map(|found| found.unwrap_or_default())
}

/// Lists and diffs every rule prefix in order, resuming after the checkpoints of `resumed`
/// (the record of the iteration being resumed), for iteration `n` (or, with `dry`, for a dry
/// run: returns what it found).
///
/// A large prefix is split into key ranges, recorded in the iteration record before any of
/// them is planned; each range is listed, diffed and planned on its own, in parallel, from its
/// own checkpoint. The ranges are cut from the marks the previous iteration's listing of the
/// prefix left (see `marks.rs`), else from sampled pages (see `ranges.rs`); a prefix listed
/// whole leaves its marks for the next. A dry run lists every prefix as one stream.
async fn plan<'a>(
    ctx: &'a Context,
    rule: &'a Rule,
    (n, resumed): (u64, Option<&'a IterationRecord>),
    (token, cancel): (&'a LeaderToken, &'a CancellationToken),
    dry: Option<DrySink<'a>>,
) -> Result<Option<DryRun>, CoordinatorError> {
    let checkpoint = resumed.and_then(|r| r.checkpoint.clone());
    let policy = Policy {
        overwrite: rule.overwrite,
        overwrite_unmanaged: rule.overwrite_unmanaged,
        delete: rule.delete,
        last_success_start_ms: ctx.queue.last_success_start(&rule.name).await?,
    };
    let last_success = policy.last_success_start_ms;
    let source = ctx.stores.source(rule);
    let destination = ctx.stores.destination(rule);
    let now = ctx.queue.redis_time_ms().await?;
    let prune_before = now.saturating_sub(STRAY_HORIZON.as_millis() as u64);
    let planner_for = |after: Option<(usize, String)>| {
        Planner::new(
            ctx.queue.as_ref(),
            rule,
            (n, token),
            policy,
            cancel,
            ctx.max_outstanding,
            (prune_before, after),
        )
    };
    // After the first success, a change an iteration finds to copy, made since the last
    // success began (less 2 s for stores with whole-second times) and older than the grace,
    // was missed by the events.
    let missed_window = match (rule.events.is_some(), last_success) {
        (true, Some(start)) => Some((
            (start.max(0) as u64).saturating_sub(2000),
            now.saturating_sub(crate::planner::MISSED_GRACE.as_millis() as u64),
        )),
        _ => None,
    };
    // Ranges are sampled for when the rule's last iteration listed enough keys for two (or
    // on a first iteration): sampling costs listing requests that a small rule should not pay.
    let previous = match n.checked_sub(1).filter(|last| *last > 0) {
        Some(last) => Some(ctx.queue.iteration(&rule.name, last).await?),
        None => None,
    }
    .filter(|record| record.state.is_some());
    let min_keys = rule.list_range_min_keys;
    let in_ranges = dry.is_none() && rule.list_ranges > 1;
    let sample = in_ranges && previous.as_ref().is_none_or(|r| r.listed >= 2 * min_keys);
    let marks_of = |index: usize, prefix: &str| {
        let marks = previous.as_ref()?.marks.get(&index)?;
        (marks.prefix == prefix).then_some(marks)
    };
    let mut planner = planner_for(checkpoint.clone()).count_missed(missed_window);
    if let Some(sink) = dry {
        planner = planner.dry(sink);
    }
    let sides = Sides {
        source,
        destination,
        rule,
        cancel,
    };
    for (index, prefix) in rule.listing_prefixes().into_iter().enumerate() {
        let start_after = match &checkpoint {
            Some((done, _)) if *done > index => continue,
            Some((done, key)) if *done == index => Some(key.clone()).filter(|k| !k.is_empty()),
            _ => None,
        };
        planner.set_prefix(index, &prefix);
        // The ranges on record for a resumed iteration, or, for a prefix planned from its
        // start, those a few sampled pages suggest.
        let boundaries = match resumed.and_then(|r| r.ranges.get(&index)) {
            Some(on_record) => on_record.clone(),
            None if in_ranges && start_after.is_none() => {
                let found = match marks_of(index, &prefix) {
                    Some(marks) => crate::marks::boundaries(marks, rule.list_ranges, min_keys),
                    None if sample => {
                        crate::ranges::split(
                            &sides.source,
                            &rule.source.bucket,
                            &prefix,
                            rule.list_ranges,
                            min_keys,
                        )
                        .await?
                    }
                    None => Vec::new(),
                };
                if found.is_empty() {
                    found
                } else {
                    ctx.queue
                        .record_ranges(&rule.name, n, index, &found, token)
                        .await?
                }
            }
            None => Vec::new(),
        };
        // Marks are kept of a prefix listed whole from its start, and large enough for ranges.
        let record_marks = async |lanes: Vec<Marks>| {
            let listed: u64 = lanes.iter().map(Marks::listed).sum();
            if !in_ranges || listed < 2 * min_keys {
                return Ok::<_, CoordinatorError>(());
            }
            let marks = crate::marks::quantiles(&prefix, &lanes);
            ctx.queue
                .record_marks(&rule.name, n, index, &marks, token)
                .await?;
            Ok(())
        };
        if boundaries.is_empty() {
            let fresh = start_after.is_none();
            let whole = KeyRange {
                after: start_after,
                through: None,
            };
            let mut marks = Marks::default();
            sides
                .list_and_plan(&mut planner, &prefix, whole, &mut marks)
                .await?;
            if fresh {
                record_marks(vec![marks]).await?;
            }
            continue;
        }
        let ranges = crate::ranges::ranges_of(&boundaries);
        info!(rule = %rule.name, iteration = n, prefix = %prefix, ranges = ranges.len(),
            "listing the prefix in key ranges");
        let count = ranges.len();
        let lanes = ranges.into_iter().enumerate().map(|(r, range)| {
            let resume = resumed.and_then(|rec| rec.range_checkpoints.get(&(index, r)).cloned());
            let fresh = resume.is_none();
            let mut lane = planner_for(resume.clone().map(|key| (index, key)))
                .count_missed(missed_window)
                .in_range(r, count);
            lane.set_prefix(index, &prefix);
            let range = KeyRange {
                after: resume.or(range.after),
                through: range.through,
            };
            let (sides, prefix) = (&sides, &prefix);
            async move {
                let mut marks = Marks::default();
                sides
                    .list_and_plan(&mut lane, prefix, range, &mut marks)
                    .await?;
                Ok::<_, CoordinatorError>(fresh.then_some(marks))
            }
        });
        let listed = futures::future::try_join_all(lanes).await?;
        // Only a prefix listed from the start of every range has marks for all its keys.
        if let Some(lanes) = listed.into_iter().collect::<Option<Vec<Marks>>>() {
            record_marks(lanes).await?;
        }
        // Every range is planned: the prefix is done.
        planner.advance((index + 1, String::new())).await?;
    }
    Ok(planner.dry_found())
}

/// The two sides of a rule, listed and diffed for planning.
struct Sides<'a> {
    source: Arc<dyn ObjectStore>,
    destination: Arc<dyn ObjectStore>,
    rule: &'a Rule,
    cancel: &'a CancellationToken,
}

impl Sides<'_> {
    /// Lists `range` of `prefix` on both sides, merge-joins the listings and plans every
    /// joined key with `planner`, flushing at the end; `marks` counts the source's keys.
    async fn list_and_plan(
        &self,
        planner: &mut Planner<'_>,
        prefix: &str,
        range: KeyRange,
        marks: &mut Marks,
    ) -> Result<(), CoordinatorError> {
        let mut src = spawn_listing(
            self.source.clone(),
            self.rule.source.bucket.clone(),
            prefix.to_string(),
            range.clone(),
        );
        let mut dst = spawn_listing(
            self.destination.clone(),
            self.rule.destination.bucket.clone(),
            prefix.to_string(),
            range,
        );
        let mut join = MergeJoin::new();
        loop {
            match join.next() {
                Step::NeedSource => match src.recv().await {
                    Some(page) => {
                        let objects = page?.objects;
                        objects.iter().for_each(|o| marks.push(&o.key));
                        join.push_source(objects)
                    }
                    None => join.finish_source(),
                },
                Step::NeedDestination => match dst.recv().await {
                    Some(page) => join.push_destination(page?.objects),
                    None => join.finish_destination(),
                },
                Step::Item(joined) => planner.push(joined).await?,
                Step::Done => break,
            }
            if self.cancel.is_cancelled() {
                return Err(CoordinatorError::Cancelled);
            }
        }
        planner.flush().await
    }
}

/// Polls the iteration record until every planned task is acked or dead, doing the queue's
/// upkeep meanwhile so expired leases are requeued even when no worker is claiming.
async fn wait_until_settled(
    ctx: &Context,
    rule: &Rule,
    n: u64,
    cancel: &CancellationToken,
) -> Result<IterationRecord, CoordinatorError> {
    loop {
        let record = ctx.queue.iteration(&rule.name, n).await?;
        if record.settled() {
            return Ok(record);
        }
        ctx.queue.upkeep(&rule.name, rule.max_attempts).await?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = cancel.cancelled() => return Err(CoordinatorError::Cancelled),
        }
    }
}

/// Runs [`list_pages`] over `range` in a background task, a few pages ahead of the diff, so
/// listing latency overlaps with diffing and planning; the listing stops at the range's end.
fn spawn_listing(
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    range: KeyRange,
) -> mpsc::Receiver<Result<ListPage, StorageError>> {
    let (tx, rx) = mpsc::channel(PREFETCH_PAGES);
    tokio::spawn(async move {
        let pages = list_pages(store, bucket, prefix, range.after);
        futures::pin_mut!(pages);
        while let Some(mut page) = pages.next().await {
            let mut ended = false;
            if let (Ok(listed), Some(through)) = (&mut page, &range.through) {
                let inside = listed
                    .objects
                    .partition_point(|o| o.key.as_str() <= through.as_str());
                if inside < listed.objects.len() || listed.next_token.is_none() {
                    listed.objects.truncate(inside);
                    ended = true;
                }
            }
            if tx.send(page).await.is_err() || ended {
                return;
            }
        }
    });
    rx
}
