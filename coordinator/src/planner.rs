//! Turns joined listings into tasks: batched ledger lookups, the decision table, and one
//! atomic `plan` call per batch that enqueues, counts and moves the resume checkpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_core::codec::slot_bytes;
use ferry_core::config::Rule;
use ferry_core::policy::{Action, Policy, Reason, decide, is_managed};
use ferry_core::report::{ReportLine, ReportOutcome};
use ferry_core::shard::{ShardId, shard_of, shard_of_range};
use ferry_core::task::{Expected, ObjectVersion, SourceVersion, Task};
use ferry_core::telemetry::Metric;
use ferry_queue::{CoordinatorQueue, LeaderToken, LedgerView, PlanBatch, SkipCategory};
use ferry_storage::{ObjectMeta, VersionEntry};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::CoordinatorError;
use crate::diff::Joined;

/// Keys decided per batch: one ledger round trip and one plan round trip each.
pub(crate) const BATCH: usize = 1000;

/// The most versions of one key a task carries (`versions = "all"`); a key with more pending
/// goes on in the next iteration.
pub(crate) const VERSIONS_PER_TASK: usize = 1000;

/// What a dry run found: the work an iteration would plan now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DryRun {
    /// Source objects listed.
    pub listed: u64,
    /// Source objects the diff skipped.
    pub skipped: u64,
    /// Those, by why.
    pub skipped_by: BTreeMap<SkipCategory, u64>,
    /// Objects it would copy.
    pub copies: u64,
    /// Bytes those copies would move.
    pub copy_bytes: u64,
    /// Destination objects it would delete.
    pub deletes: u64,
    /// Destination objects listed.
    pub destination_listed: u64,
    /// Listing pages (ListObjectsV2 requests) of the source.
    pub source_pages: u64,
    /// Listing pages of the destination.
    pub destination_pages: u64,
}

/// Where a dry run's planned tasks go instead of the queue.
pub(crate) struct DrySink<'a> {
    pub(crate) found: DryRun,
    pub(crate) each: &'a mut (dyn FnMut(&Task) + Send),
}

pub(crate) struct Planner<'a> {
    queue: &'a dyn CoordinatorQueue,
    /// Set for a dry run: tasks are reported here, and nothing is written.
    dry: Option<DrySink<'a>>,
    rule: &'a Rule,
    iteration: u64,
    leader: &'a LeaderToken,
    /// The checkpoint the next batch follows.
    after: Option<(usize, String)>,
    policy: Policy,
    cancel: &'a CancellationToken,
    max_outstanding: u64,
    batch: Vec<Joined>,
    /// A rule with `versions = "all"`: keys with their listed versions, oldest first.
    versions: Vec<Vec<VersionEntry>>,
    prefix_index: usize,
    prefix: String,
    /// Set for a planner of one key range of the prefix: (range index, ranges). Its
    /// checkpoint is the range's own, and its tasks take their shards from the range.
    range: Option<(usize, usize)>,
    enqueued: u64,
    settled_floor: u64,
    /// Write intents made before this (ms, Redis clock) can no longer land; they are
    /// forgotten for keys found just as the ledger says.
    prune_before_ms: u64,
    /// For a rule with events, after its first success: source changes made in this window
    /// (ms, from..to) that the iteration finds to copy were missed by the events.
    missed_window: Option<(u64, u64)>,
    /// The clock the rule's age filters read (ms since the epoch, this machine's).
    now_ms: i64,
}

/// How long after a change its event may still be on its way: an iteration that finds a
/// change younger than this does not count it as missed.
pub(crate) const MISSED_GRACE: Duration = Duration::from_secs(10);

impl<'a> Planner<'a> {
    /// A planner for `iteration` of `rule`, writing as `leader`; `resume` is the intent
    /// pruning cutoff and the checkpoint planning resumes after.
    pub(crate) fn new(
        queue: &'a dyn CoordinatorQueue,
        rule: &'a Rule,
        (iteration, leader): (u64, &'a LeaderToken),
        policy: Policy,
        cancel: &'a CancellationToken,
        max_outstanding: u64,
        (prune_before_ms, after): (u64, Option<(usize, String)>),
    ) -> Self {
        Planner {
            queue,
            dry: None,
            rule,
            iteration,
            leader,
            after,
            policy,
            cancel,
            max_outstanding,
            batch: Vec::with_capacity(BATCH),
            versions: Vec::new(),
            prefix_index: 0,
            prefix: String::new(),
            range: None,
            enqueued: 0,
            settled_floor: 0,
            prune_before_ms,
            missed_window: None,
            now_ms: ferry_core::filter::now_ms(),
        }
    }

    /// Counts what this iteration plans that events should have copied: changes made in
    /// `window` (see [`Planner::missed_window`]), and deletions.
    pub(crate) fn count_missed(mut self, window: Option<(u64, u64)>) -> Self {
        self.missed_window = window;
        self
    }

    /// Makes this planner one key range's: range `range` of `ranges` of the prefix set next.
    pub(crate) fn in_range(mut self, range: usize, ranges: usize) -> Self {
        self.range = Some((range, ranges));
        self
    }

    /// Moves the checkpoint to `checkpoint` without planning anything: every range of a
    /// prefix listed in ranges is planned.
    pub(crate) async fn advance(
        &mut self,
        checkpoint: (usize, String),
    ) -> Result<(), CoordinatorError> {
        let batch = PlanBatch {
            checkpoint: Some(checkpoint.clone()),
            after: self.after.take(),
            prune_before_ms: self.prune_before_ms,
            ..PlanBatch::default()
        };
        self.queue
            .plan(&self.rule.name, self.iteration, &batch, self.leader)
            .await?;
        self.after = Some(checkpoint);
        Ok(())
    }

    /// Makes this planner a dry run's: tasks go to `sink`, nothing to the queue.
    pub(crate) fn dry(mut self, sink: DrySink<'a>) -> Self {
        self.dry = Some(sink);
        self
    }

    /// Counts a listing page of `objects` keys (a dry run's alone).
    pub(crate) fn listed_page(&mut self, source: bool, objects: usize) {
        if let Some(dry) = &mut self.dry {
            if source {
                dry.found.source_pages += 1;
            } else {
                dry.found.destination_pages += 1;
                dry.found.destination_listed += objects as u64;
            }
        }
    }

    /// What the dry run found so far.
    pub(crate) fn dry_found(&self) -> Option<DryRun> {
        self.dry.as_ref().map(|d| d.found.clone())
    }

    /// Starts a rule prefix (flush the previous one first).
    pub(crate) fn set_prefix(&mut self, index: usize, prefix: &str) {
        self.prefix_index = index;
        self.prefix = prefix.to_string();
    }

    pub(crate) async fn push(&mut self, joined: Joined) -> Result<(), CoordinatorError> {
        self.batch.push(joined);
        if self.batch.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Takes one key's versions and delete markers, oldest first (`versions = "all"`).
    pub(crate) async fn push_versions(
        &mut self,
        versions: Vec<VersionEntry>,
    ) -> Result<(), CoordinatorError> {
        if !versions.is_empty() {
            self.versions.push(versions);
        }
        if self.versions.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Decides and enqueues the batch, with its counts and checkpoint, in one atomic step.
    pub(crate) async fn flush(&mut self) -> Result<(), CoordinatorError> {
        if !self.versions.is_empty() {
            return self.flush_versions().await;
        }
        let Some(last) = self.batch.last() else {
            return Ok(());
        };
        let checkpoint = (self.prefix_index, last.key().to_string());
        let needs_ledger: Vec<&str> = self
            .batch
            .iter()
            .filter(|j| !matches!(j, Joined::SourceOnly(_)))
            .map(Joined::key)
            .collect();
        let views = self
            .queue
            .ledger_get(&self.rule.name, &needs_ledger)
            .await?;
        let tally = self.tally(views);
        if self.dry.is_some() {
            self.found(&tally);
            return Ok(());
        }
        self.enqueue(tally, checkpoint).await
    }

    /// A batch of keys with their versions: a task per key with the versions the ledger does
    /// not record, oldest first (at most [`VERSIONS_PER_TASK`]; the rest follow in the next
    /// iteration).
    async fn flush_versions(&mut self) -> Result<(), CoordinatorError> {
        let batch = std::mem::take(&mut self.versions);
        let last_key = batch.last().map(|v| v[0].key.clone()).unwrap_or_default();
        let checkpoint = (self.prefix_index, last_key);
        let keys: Vec<&str> = batch.iter().map(|v| v[0].key.as_str()).collect();
        let views = self.queue.ledger_get(&self.rule.name, &keys).await?;
        let mut tally = Tally::default();
        for (versions, view) in batch.into_iter().zip(views) {
            if let Some(at) = self.rule.at_ms {
                self.plan_at(at, versions, &view, &mut tally);
                continue;
            }
            tally.listed += 1;
            let newest = versions.last().expect("a key has a version");
            let key = newest.key.clone();
            let relative = key.strip_prefix(self.prefix.as_str()).unwrap_or(&key);
            if !self.rule.filter.is_empty()
                && !self.rule.filter.admits(
                    relative,
                    newest.size,
                    newest.last_modified_ms,
                    self.now_ms,
                )
            {
                tally.skip("excluded", SkipCategory::Excluded);
                self.report_versions_skip(&mut tally, &key, SkipCategory::Excluded);
                continue;
            }
            let recorded = view.versions.unwrap_or_default();
            let pending: Vec<SourceVersion> = versions
                .into_iter()
                .filter(|v| !recorded.has(&v.version_id))
                .take(VERSIONS_PER_TASK)
                .map(|v| SourceVersion {
                    version_id: v.version_id,
                    delete_marker: v.delete_marker,
                    size: v.size,
                    etag: v.etag,
                    last_modified_ms: v.last_modified_ms,
                })
                .collect();
            if pending.is_empty() {
                tally.skip("unchanged", SkipCategory::Unchanged);
                self.report_versions_skip(&mut tally, &key, SkipCategory::Unchanged);
                continue;
            }
            let task = Task::CopyVersions {
                key,
                versions: pending,
            };
            let shard = match self.range {
                Some((range, ranges)) => {
                    shard_of_range(&self.prefix, range as u32, ranges as u32, task.key())
                }
                None => shard_of(&self.prefix, task.key()),
            };
            tally.tasks.entry(shard).or_default().push(task);
        }
        if self.dry.is_some() {
            self.found(&tally);
            return Ok(());
        }
        self.enqueue(tally, checkpoint).await
    }

    /// `sync --at`: the key's version current at `at`, unless the ledger says it is what
    /// ferry last wrote. A key absent or deleted then is not listed as it was.
    fn plan_at(&self, at: i64, versions: Vec<VersionEntry>, view: &LedgerView, tally: &mut Tally) {
        let Some(then) = versions
            .into_iter()
            .rev()
            .find(|v| v.last_modified_ms <= at)
            .filter(|v| !v.delete_marker)
        else {
            return;
        };
        tally.listed += 1;
        let relative = then
            .key
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(&then.key);
        if !self.rule.filter.is_empty()
            && !self
                .rule
                .filter
                .admits(relative, then.size, then.last_modified_ms, self.now_ms)
        {
            tally.skip("excluded", SkipCategory::Excluded);
            self.report_versions_skip(tally, &then.key, SkipCategory::Excluded);
            return;
        }
        let copied = view.entry.as_ref().is_some_and(|e| {
            e.source_etag == then.etag
                && e.size == then.size
                && e.source_last_modified_ms == then.last_modified_ms
        });
        if copied {
            tally.skip("unchanged", SkipCategory::Unchanged);
            self.report_versions_skip(tally, &then.key, SkipCategory::Unchanged);
            return;
        }
        let task = Task::CopyVersion {
            key: then.key,
            version: SourceVersion {
                version_id: then.version_id,
                delete_marker: false,
                size: then.size,
                etag: then.etag,
                last_modified_ms: then.last_modified_ms,
            },
        };
        let shard = match self.range {
            Some((range, ranges)) => {
                shard_of_range(&self.prefix, range as u32, ranges as u32, task.key())
            }
            None => shard_of(&self.prefix, task.key()),
        };
        tally.tasks.entry(shard).or_default().push(task);
    }

    /// The report line of a key whose versions are all copied, or that the filters leave out.
    fn report_versions_skip(&self, tally: &mut Tally, key: &str, category: SkipCategory) {
        if self.rule.report.is_none() || self.dry.is_some() {
            return;
        }
        let line = ReportLine {
            key: key.to_string(),
            outcome: ReportOutcome::Skipped,
            reason: Some(category.as_str().to_string()),
            error: None,
            bytes: 0,
            source_etag: None,
            destination_etag: None,
        };
        tally.report.push(line.to_json());
    }

    /// Decides every key of the batch, given its ledger views (one per key not only at the
    /// source, in order).
    fn tally(&mut self, views: Vec<LedgerView>) -> Tally {
        let mut views = views.into_iter();
        let mut tally = Tally::default();
        // Taken out and put back, drained, so its allocation serves the next batch.
        let mut batch = std::mem::take(&mut self.batch);
        for joined in batch.drain(..) {
            let view = match joined {
                Joined::SourceOnly(_) => LedgerView::default(),
                _ => views.next().unwrap_or_default(),
            };
            if !matches!(joined, Joined::DestinationOnly(_)) {
                tally.listed += 1;
            }
            // Filters first, before the ledger's view is weighed: an excluded source object
            // is counted as such, and an excluded destination object is never deleted.
            if let Some(source_side) = self.excluded(&joined) {
                if source_side {
                    tally.skip("excluded", SkipCategory::Excluded);
                    self.report_skip(&mut tally, &joined, SkipCategory::Excluded);
                }
                continue;
            }
            if let Some(task) = self.decide(joined, &view, &mut tally) {
                let shard = match self.range {
                    Some((range, ranges)) => {
                        shard_of_range(&self.prefix, range as u32, ranges as u32, task.key())
                    }
                    None => shard_of(&self.prefix, task.key()),
                };
                tally.tasks.entry(shard).or_default().push(task);
            }
        }
        self.batch = batch;
        tally
    }

    /// `Some(whether it is the source's)` when the rule's filters leave the object out.
    fn excluded(&self, joined: &Joined) -> Option<bool> {
        if self.rule.filter.is_empty() {
            return None;
        }
        let (object, source_side) = match joined {
            Joined::SourceOnly(s) | Joined::Both { source: s, .. } => (s, true),
            Joined::DestinationOnly(d) => (d, false),
        };
        let relative = object
            .key
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(&object.key);
        let admitted =
            self.rule
                .filter
                .admits(relative, object.size, object.last_modified_ms, self.now_ms);
        (!admitted).then_some(source_side)
    }

    /// Applies the decision table to one key: its task, if any (a skip is counted, stale
    /// intents are marked to prune, and a change no event announced is counted as missed).
    fn decide(&self, joined: Joined, view: &LedgerView, tally: &mut Tally) -> Option<Task> {
        let stray = view.stray_besides(None);
        let action = decide(&joined, view.entry.as_ref(), stray, &self.policy);
        debug!(rule = %self.rule.name, key = joined.key(), ?action, stray, "decided");
        // A key just as the ledger says, whose intents are past the horizon: those writes
        // did not land, and no longer can.
        if let Joined::Both { destination, .. } | Joined::DestinationOnly(destination) = &joined
            && stray
            && is_managed(destination, view.entry.as_ref())
            && view
                .intents
                .iter()
                .all(|i| i.claimed_ms < self.prune_before_ms)
        {
            tally.prune.push(slot_bytes(&destination.key));
        }
        if let Some((from, to)) = self.missed_window {
            tally.missed += u64::from(match (&action, &joined) {
                (Action::Copy(_), Joined::SourceOnly(s) | Joined::Both { source: s, .. }) => {
                    (from..=to).contains(&(s.last_modified_ms.max(0) as u64))
                }
                (Action::Delete, _) => true,
                _ => false,
            });
        }
        match (action, joined) {
            (Action::Copy(_), Joined::SourceOnly(source)) => {
                Some(copy_task(source, Expected::Absent))
            }
            (
                Action::Copy(_),
                Joined::Both {
                    source,
                    destination,
                },
            ) => Some(copy_task(source, Expected::Etag(destination.etag))),
            (Action::Delete, Joined::DestinationOnly(destination)) => Some(Task::DeleteObject {
                key: destination.key,
                destination_etag: destination.etag,
            }),
            (Action::Skip(reason), joined) => {
                let category = category(reason, &joined);
                tally.skip(reason.label(), category);
                self.report_skip(tally, &joined, category);
                None
            }
            _ => None,
        }
    }

    /// The report line of a skipped key, for a rule with a `report`.
    fn report_skip(&self, tally: &mut Tally, joined: &Joined, category: SkipCategory) {
        if self.rule.report.is_none() || self.dry.is_some() {
            return;
        }
        let (source, destination) = match joined {
            Joined::Both {
                source,
                destination,
            } => (Some(source), Some(destination)),
            Joined::SourceOnly(s) => (Some(s), None),
            Joined::DestinationOnly(d) => (None, Some(d)),
        };
        let line = ReportLine {
            key: joined.key().to_string(),
            outcome: ReportOutcome::Skipped,
            reason: Some(category.as_str().to_string()),
            error: None,
            bytes: source.or(destination).map_or(0, |o| o.size),
            source_etag: source.map(|o| o.etag.clone()),
            destination_etag: destination.map(|o| o.etag.clone()),
        };
        tally.report.push(line.to_json());
    }

    /// A dry run's batch: counted, and each task shown.
    fn found(&mut self, tally: &Tally) {
        let Some(dry) = &mut self.dry else {
            return;
        };
        dry.found.listed += tally.listed;
        dry.found.skipped += tally.skipped;
        for (c, n) in &tally.skipped_by {
            *dry.found.skipped_by.entry(*c).or_default() += n;
        }
        for task in tally.tasks.values().flatten() {
            match task {
                Task::DeleteObject { .. } => dry.found.deletes += 1,
                _ => {
                    dry.found.copies += 1;
                    dry.found.copy_bytes += task.bytes();
                }
            }
            (dry.each)(task);
        }
    }

    /// Enqueues the batch's tasks with its counts and checkpoint (`plan.lua`), once there is
    /// room, and counts it in the metrics.
    async fn enqueue(
        &mut self,
        tally: Tally,
        checkpoint: (usize, String),
    ) -> Result<(), CoordinatorError> {
        self.wait_for_room().await?;
        let Tally {
            tasks,
            listed,
            skipped,
            missed,
            skip_reasons,
            skipped_by,
            prune,
            report,
        } = tally;
        let batch = PlanBatch {
            tasks: tasks.into_iter().collect(),
            listed,
            skipped,
            skipped_by: skipped_by.iter().map(|(c, n)| (c.field(), *n)).collect(),
            checkpoint: Some(checkpoint.clone()),
            after: self.after.take(),
            range: self.range.map(|(range, _)| range),
            prune,
            prune_before_ms: self.prune_before_ms,
            missed,
            report,
        };
        // `None`: the batch was applied already, and its reply lost in a Redis outage.
        let applied = self
            .queue
            .plan(&self.rule.name, self.iteration, &batch, self.leader)
            .await?;
        self.enqueued += applied.unwrap_or(0) as u64;
        self.after = Some(checkpoint);
        let rule = self.rule.name.clone();
        Metric::ObjectsListed
            .counter(&[("rule", rule.clone())])
            .increment(listed);
        if missed > 0 {
            Metric::EventsMissed
                .counter(&[("rule", rule.clone())])
                .increment(missed);
        }
        for (reason, n) in skip_reasons {
            Metric::ObjectsSkipped
                .counter(&[("rule", rule.clone()), ("reason", reason.into())])
                .increment(n);
        }
        Ok(())
    }

    /// Waits while `max_outstanding` tasks or more are unfinished, so Redis holds at most that
    /// plus one batch per rule however large the bucket; reads Redis only when the local count
    /// says it might be needed.
    async fn wait_for_room(&mut self) -> Result<(), CoordinatorError> {
        while self.enqueued.saturating_sub(self.settled_floor) >= self.max_outstanding {
            let record = self
                .queue
                .iteration(&self.rule.name, self.iteration)
                .await?;
            // Tasks planned by an earlier coordinator of this iteration count too.
            self.enqueued = self.enqueued.max(record.planned);
            self.settled_floor = record.done + record.dead;
            if self.enqueued.saturating_sub(self.settled_floor) < self.max_outstanding {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.cancel.cancelled() => return Err(CoordinatorError::Cancelled),
            }
        }
        Ok(())
    }
}

pub(crate) fn copy_task(object: ObjectMeta, destination: Expected) -> Task {
    Task::CopyObject {
        source: ObjectVersion {
            key: object.key,
            size: object.size,
            etag: object.etag,
            last_modified_ms: object.last_modified_ms,
            storage_class: object.storage_class,
        },
        destination,
    }
}

/// Why a skipped key was skipped, as users read it. An object ferry did not write that is
/// the source's very version (same ETag and size) is unchanged, not an unmanaged conflict.
fn category(reason: Reason, joined: &Joined) -> SkipCategory {
    match reason {
        Reason::NotNewer => SkipCategory::DestinationNewer,
        Reason::NeverOverwrite => SkipCategory::OverwriteNever,
        Reason::Unmanaged => match joined {
            Joined::Both {
                source,
                destination,
            } if source.etag == destination.etag && source.size == destination.size => {
                SkipCategory::Unchanged
            }
            _ => SkipCategory::Unmanaged,
        },
        _ => SkipCategory::Unchanged,
    }
}

/// What one batch came to: its tasks by shard, and its counts.
#[derive(Default)]
struct Tally {
    tasks: BTreeMap<ShardId, Vec<Task>>,
    /// Report lines of the skipped keys (rules with a `report`).
    report: Vec<String>,
    listed: u64,
    skipped: u64,
    missed: u64,
    skip_reasons: BTreeMap<&'static str, u64>,
    skipped_by: BTreeMap<SkipCategory, u64>,
    prune: Vec<Vec<u8>>,
}

impl Tally {
    fn skip(&mut self, reason: &'static str, category: SkipCategory) {
        self.skipped += 1;
        *self.skip_reasons.entry(reason).or_default() += 1;
        *self.skipped_by.entry(category).or_default() += 1;
    }
}
