//! One iteration of one rule, resumable after a coordinator restart.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::config::{Rule, Stop, Versions};
use ferry_core::telemetry::Metric;
use ferry_queue::{IterationRecord, ListingMarks, QueueError, RuleState};
use ferry_storage::{
    ByKey, ListPage, ObjectStore, StorageError, VersionPage, list_pages, list_version_pages,
};
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
    let report = crate::report::Report::of(ctx, rule, n);
    let record = wait_until_settled(ctx, rule, n, (token, cancel), report.as_ref()).await?;
    crate::uploads::abort_abandoned(ctx, rule).await?;
    if let Some(report) = &report {
        report.finish(ctx, token, &record).await?;
    }
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
/// them is planned; each range is a lane, listed, diffed and planned on its own, in parallel,
/// from its own checkpoint. The ranges are cut from the marks the previous iteration's listing
/// of the prefix left (see `marks.rs`), else from sampled pages (see `ranges.rs`); a prefix
/// listed whole leaves its marks for the next. A dry run lists every prefix as one stream.
async fn plan<'a>(
    ctx: &'a Context,
    rule: &'a Rule,
    (n, resumed): (u64, Option<&'a IterationRecord>),
    (token, cancel): (&'a LeaderToken, &'a CancellationToken),
    dry: Option<DrySink<'a>>,
) -> Result<Option<DryRun>, CoordinatorError> {
    let conductor = Conductor::new(ctx, rule, (n, resumed), (token, cancel), dry.is_none()).await?;
    let checkpoint = resumed.and_then(|r| r.checkpoint.clone());
    let mut planner = conductor.planner(checkpoint.clone());
    if let Some(sink) = dry {
        planner = planner.dry(sink);
    }
    for (index, prefix) in rule.listing_prefixes().into_iter().enumerate() {
        let start_after = match &checkpoint {
            Some((done, _)) if *done > index => continue,
            Some((done, key)) if *done == index => Some(key.clone()).filter(|k| !k.is_empty()),
            _ => None,
        };
        planner.set_prefix(index, &prefix);
        let boundaries = conductor
            .boundaries(index, &prefix, start_after.is_none())
            .await?;
        if boundaries.is_empty() {
            conductor
                .plan_whole(&mut planner, index, &prefix, start_after)
                .await?;
        } else {
            conductor.plan_ranges(index, &prefix, &boundaries).await?;
            // Every range is planned: the prefix is done.
            planner.advance((index + 1, String::new())).await?;
        }
    }
    Ok(planner.dry_found())
}

/// Where a prefix's key ranges come from.
#[derive(Debug, PartialEq, Eq)]
enum RangesFrom<'r> {
    /// The iteration being resumed recorded them.
    Record(&'r [String]),
    /// The previous iteration's listing of the prefix left its marks.
    Marks,
    /// A few sampled pages.
    Sample,
    /// None: the prefix is listed whole.
    Whole,
}

/// Which ranges a prefix is planned in: those on record for a resumed iteration; for a
/// prefix planned from its start (`fresh`), with ranges allowed (`in_ranges`), those its last
/// listing's marks give, else those sampled pages give when the rule is large enough to be
/// worth the sampling's requests (`sample`); else none.
fn ranges_from<'r>(
    on_record: Option<&'r [String]>,
    in_ranges: bool,
    fresh: bool,
    has_marks: bool,
    sample: bool,
) -> RangesFrom<'r> {
    match on_record {
        Some(recorded) => RangesFrom::Record(recorded),
        None if !(in_ranges && fresh) => RangesFrom::Whole,
        None if has_marks => RangesFrom::Marks,
        None if sample => RangesFrom::Sample,
        None => RangesFrom::Whole,
    }
}

/// What every lane of one iteration's planning shares: the rule, its policy and sides, the
/// iteration, what the previous one left, and where ranges may come from.
struct Conductor<'a> {
    ctx: &'a Context,
    rule: &'a Rule,
    n: u64,
    resumed: Option<&'a IterationRecord>,
    token: &'a LeaderToken,
    cancel: &'a CancellationToken,
    policy: Policy,
    prune_before: u64,
    missed_window: Option<(u64, u64)>,
    previous: Option<IterationRecord>,
    /// Prefixes may be listed in key ranges (not in a dry run, nor with `list_ranges = 1`).
    in_ranges: bool,
    /// Ranges may be sampled for (a first iteration, or a rule large enough for two).
    sample: bool,
    sides: Sides<'a>,
}

impl<'a> Conductor<'a> {
    async fn new(
        ctx: &'a Context,
        rule: &'a Rule,
        (n, resumed): (u64, Option<&'a IterationRecord>),
        (token, cancel): (&'a LeaderToken, &'a CancellationToken),
        may_split: bool,
    ) -> Result<Conductor<'a>, CoordinatorError> {
        let policy = Policy {
            overwrite: rule.overwrite,
            overwrite_unmanaged: rule.overwrite_unmanaged,
            delete: rule.delete,
            last_success_start_ms: ctx.queue.last_success_start(&rule.name).await?,
        };
        let now = ctx.queue.redis_time_ms().await?;
        // After the first success, a change an iteration finds to copy, made since the last
        // success began (less 2 s for stores with whole-second times) and older than the
        // grace, was missed by the events.
        let missed_window = match (rule.events.is_some(), policy.last_success_start_ms) {
            (true, Some(start)) => Some((
                (start.max(0) as u64).saturating_sub(2000),
                now.saturating_sub(crate::planner::MISSED_GRACE.as_millis() as u64),
            )),
            _ => None,
        };
        let previous = match n.checked_sub(1).filter(|last| *last > 0) {
            Some(last) => Some(ctx.queue.iteration(&rule.name, last).await?),
            None => None,
        }
        .filter(|record| record.state.is_some());
        let in_ranges = may_split && rule.list_ranges > 1;
        // Sampling costs listing requests that a small rule should not pay.
        let min_keys = rule.list_range_min_keys;
        let sample = in_ranges && previous.as_ref().is_none_or(|r| r.listed >= 2 * min_keys);
        Ok(Conductor {
            ctx,
            rule,
            n,
            resumed,
            token,
            cancel,
            policy,
            prune_before: now.saturating_sub(STRAY_HORIZON.as_millis() as u64),
            missed_window,
            previous,
            in_ranges,
            sample,
            sides: Sides {
                source: ctx.stores.source(rule),
                destination: ctx.stores.destination(rule),
                rule,
                cancel,
            },
        })
    }

    /// A planner for this iteration, resuming after `after`.
    fn planner(&self, after: Option<(usize, String)>) -> Planner<'a> {
        Planner::new(
            self.ctx.queue.as_ref(),
            self.rule,
            (self.n, self.token),
            self.policy,
            self.cancel,
            self.ctx.max_outstanding,
            (self.prune_before, after),
        )
        .count_missed(self.missed_window)
    }

    /// The marks the previous iteration's listing of prefix `index` left, if it was this
    /// prefix.
    fn marks_of(&self, index: usize, prefix: &str) -> Option<&ListingMarks> {
        let marks = self.previous.as_ref()?.marks.get(&index)?;
        (marks.prefix == prefix).then_some(marks)
    }

    /// The boundaries of prefix `index`'s key ranges (none: listed whole), recorded before
    /// any range is planned.
    async fn boundaries(
        &self,
        index: usize,
        prefix: &str,
        fresh: bool,
    ) -> Result<Vec<String>, CoordinatorError> {
        let (rule, min_keys) = (self.rule, self.rule.list_range_min_keys);
        let on_record = self
            .resumed
            .and_then(|r| r.ranges.get(&index))
            .map(Vec::as_slice);
        let marks = self.marks_of(index, prefix);
        let found = match ranges_from(
            on_record,
            self.in_ranges,
            fresh,
            marks.is_some(),
            self.sample,
        ) {
            RangesFrom::Record(recorded) => return Ok(recorded.to_vec()),
            RangesFrom::Whole => return Ok(Vec::new()),
            RangesFrom::Marks => marks
                .map(|m| crate::marks::boundaries(m, rule.list_ranges, min_keys))
                .unwrap_or_default(),
            RangesFrom::Sample => {
                let (source, bucket) = (&self.sides.source, &rule.source.bucket);
                crate::ranges::split(source, bucket, prefix, rule.list_ranges, min_keys).await?
            }
        };
        if found.is_empty() {
            return Ok(found);
        }
        Ok(self
            .ctx
            .queue
            .record_ranges(&rule.name, self.n, index, &found, self.token)
            .await?)
    }

    /// Keeps the marks of a prefix listed whole from its start, when it is large enough for
    /// ranges, for the next iteration to cut them from.
    async fn record_marks(
        &self,
        index: usize,
        prefix: &str,
        lanes: Vec<Marks>,
    ) -> Result<(), CoordinatorError> {
        let listed: u64 = lanes.iter().map(Marks::listed).sum();
        if !self.in_ranges || listed < 2 * self.rule.list_range_min_keys {
            return Ok(());
        }
        let marks = crate::marks::quantiles(prefix, &lanes);
        self.ctx
            .queue
            .record_marks(&self.rule.name, self.n, index, &marks, self.token)
            .await?;
        Ok(())
    }

    /// Plans prefix `index` as one lane, with the iteration's own `planner`.
    async fn plan_whole(
        &self,
        planner: &mut Planner<'_>,
        index: usize,
        prefix: &str,
        start_after: Option<String>,
    ) -> Result<(), CoordinatorError> {
        let fresh = start_after.is_none();
        let whole = KeyRange {
            after: start_after,
            through: None,
        };
        let mut marks = Marks::default();
        self.sides
            .list_and_plan(planner, prefix, whole, &mut marks)
            .await?;
        if fresh {
            self.record_marks(index, prefix, vec![marks]).await?;
        }
        Ok(())
    }

    /// Plans prefix `index` as one lane per key range, in parallel, each from its own
    /// checkpoint.
    async fn plan_ranges(
        &self,
        index: usize,
        prefix: &str,
        boundaries: &[String],
    ) -> Result<(), CoordinatorError> {
        let ranges = crate::ranges::ranges_of(boundaries);
        info!(rule = %self.rule.name, iteration = self.n, prefix = %prefix, ranges = ranges.len(),
            "listing the prefix in key ranges");
        let count = ranges.len();
        let lanes = ranges.into_iter().enumerate().map(|(r, range)| {
            let resume = self
                .resumed
                .and_then(|rec| rec.range_checkpoints.get(&(index, r)).cloned());
            let fresh = resume.is_none();
            let mut lane = self
                .planner(resume.clone().map(|key| (index, key)))
                .in_range(r, count);
            lane.set_prefix(index, prefix);
            let range = KeyRange {
                after: resume.or(range.after),
                through: range.through,
            };
            async move {
                let mut marks = Marks::default();
                self.sides
                    .list_and_plan(&mut lane, prefix, range, &mut marks)
                    .await?;
                Ok::<_, CoordinatorError>(fresh.then_some(marks))
            }
        });
        let listed = futures::future::try_join_all(lanes).await?;
        // Only a prefix listed from the start of every range has marks for all its keys.
        if let Some(lanes) = listed.into_iter().collect::<Option<Vec<Marks>>>() {
            self.record_marks(index, prefix, lanes).await?;
        }
        Ok(())
    }
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
        if self.rule.versions == Versions::All || self.rule.at_ms.is_some() {
            return self
                .list_versions_and_plan(planner, prefix, range, marks)
                .await;
        }
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
                        planner.listed_page(true, objects.len());
                        objects.iter().for_each(|o| marks.push(&o.key));
                        join.push_source(objects)
                    }
                    None => join.finish_source(),
                },
                Step::NeedDestination => match dst.recv().await {
                    Some(page) => {
                        let objects = page?.objects;
                        planner.listed_page(false, objects.len());
                        join.push_destination(objects)
                    }
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

    /// A rule with `versions = "all"`: the source's versions and delete markers, grouped by
    /// key, go to the planner, which checks them against the ledger alone (nothing is ever
    /// deleted at the destination, so its listing is not needed).
    async fn list_versions_and_plan(
        &self,
        planner: &mut Planner<'_>,
        prefix: &str,
        range: KeyRange,
        marks: &mut Marks,
    ) -> Result<(), CoordinatorError> {
        let mut src = spawn_version_listing(
            self.source.clone(),
            self.rule.source.bucket.clone(),
            prefix.to_string(),
            range,
        );
        let mut by_key = ByKey::default();
        while let Some(page) = src.recv().await {
            let page = page?;
            planner.listed_page(true, page.entries.len());
            let next = page.next.as_ref().map(|c| c.key.as_str());
            for versions in by_key.push(page.entries, next) {
                marks.push(&versions[0].key);
                planner.push_versions(versions).await?;
            }
            if self.cancel.is_cancelled() {
                return Err(CoordinatorError::Cancelled);
            }
        }
        for versions in by_key.finish() {
            marks.push(&versions[0].key);
            planner.push_versions(versions).await?;
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
    (token, cancel): (&LeaderToken, &CancellationToken),
    report: Option<&crate::report::Report>,
) -> Result<IterationRecord, CoordinatorError> {
    loop {
        let record = ctx.queue.iteration(&rule.name, n).await?;
        if record.settled() {
            return Ok(record);
        }
        // The report's full parts, written as they fill, keep its backlog in Redis small.
        if let Some(report) = report {
            report.drain(ctx, token, false).await?;
        }
        ctx.queue.upkeep(&rule.name, rule.max_attempts).await?;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = cancel.cancelled() => return Err(CoordinatorError::Cancelled),
        }
    }
}

/// A listing page that can be cut at the end of a key range.
pub(crate) trait RangePage: Send + 'static {
    /// Drops the entries after `through`; true when the range ends in this page (entries
    /// were dropped, or it is the listing's last page).
    fn cut_through(&mut self, through: &str) -> bool;
}

impl RangePage for ListPage {
    fn cut_through(&mut self, through: &str) -> bool {
        let inside = self.objects.partition_point(|o| o.key.as_str() <= through);
        let ended = inside < self.objects.len() || self.next_token.is_none();
        self.objects.truncate(inside);
        ended
    }
}

impl RangePage for VersionPage {
    fn cut_through(&mut self, through: &str) -> bool {
        // Not by position: a store may list a page's markers after its versions.
        let before = self.entries.len();
        self.entries.retain(|e| e.key.as_str() <= through);
        self.entries.len() < before || self.next.is_none()
    }
}

/// Runs [`list_pages`] over `range` in a background task, a few pages ahead of the diff, so
/// listing latency overlaps with diffing and planning; the listing stops at the range's end.
pub(crate) fn spawn_listing(
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    range: KeyRange,
) -> mpsc::Receiver<Result<ListPage, StorageError>> {
    let pages = list_pages(store, bucket, prefix, range.after.clone());
    spawn_pages(pages, range)
}

/// [`spawn_listing`] for a version listing.
pub(crate) fn spawn_version_listing(
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    range: KeyRange,
) -> mpsc::Receiver<Result<VersionPage, StorageError>> {
    let pages = list_version_pages(store, bucket, prefix, range.after.clone());
    spawn_pages(pages, range)
}

/// Forwards `pages` from a background task, a few ahead, until the end of `range`.
fn spawn_pages<P: RangePage>(
    pages: impl futures::Stream<Item = Result<P, StorageError>> + Send + 'static,
    range: KeyRange,
) -> mpsc::Receiver<Result<P, StorageError>> {
    let (tx, rx) = mpsc::channel(PREFETCH_PAGES);
    tokio::spawn(async move {
        futures::pin_mut!(pages);
        while let Some(mut page) = pages.next().await {
            let ended = match (&mut page, &range.through) {
                (Ok(listed), Some(through)) => listed.cut_through(through),
                _ => false,
            };
            if tx.send(page).await.is_err() || ended {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_come_from_the_record_then_the_marks_then_samples() {
        let recorded = vec!["m".to_string()];
        for bits in 0..16u8 {
            let [in_ranges, fresh, has_marks, sample] = [0, 1, 2, 3].map(|b| bits >> b & 1 == 1);
            // A resumed iteration keeps the ranges it recorded, whatever else holds.
            assert_eq!(
                ranges_from(Some(&recorded), in_ranges, fresh, has_marks, sample),
                RangesFrom::Record(&recorded)
            );
            let found = ranges_from(None, in_ranges, fresh, has_marks, sample);
            let expected = match (in_ranges && fresh, has_marks, sample) {
                // A dry run, `list_ranges = 1`, or a prefix resumed mid-way: listed whole.
                (false, _, _) => RangesFrom::Whole,
                (true, true, _) => RangesFrom::Marks,
                (true, false, true) => RangesFrom::Sample,
                (true, false, false) => RangesFrom::Whole,
            };
            assert_eq!(
                found, expected,
                "in_ranges {in_ranges} fresh {fresh} marks {has_marks} sample {sample}"
            );
        }
    }
}
