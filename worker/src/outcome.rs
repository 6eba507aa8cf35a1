//! What becomes of a task attempt: an outcome is acked (in batches) with its ledger change
//! and counted; a failure is retried later, throttled, or buried in dead letters, as its
//! [`CopyError::disposition`] says.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ferry_core::config::Rule;
use ferry_core::ledger::{LedgerEntry, VersionsEntry};
use ferry_core::parts::etag_parts;
use ferry_core::policy::Reason;
use ferry_core::report::{ReportLine, ReportOutcome};
use ferry_core::retry::RetryPolicy;
use ferry_core::task::Task;
use ferry_core::telemetry::Metric;
use ferry_queue::{Abandon, Claimed, Counted, FailOutcome, LedgerOp, QueueError};
use tracing::{debug, warn};

use crate::error::{CopyError, Disposition};
use crate::runner::{Job, Shared};

/// What a task achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The object was written to the destination.
    Copied {
        /// Bytes written.
        bytes: u64,
        /// What the ledger records: the version copied and the destination's ETag.
        entry: LedgerEntry,
    },
    /// The last part of a multipart copy was recorded and the upload completed.
    Completed {
        /// The object's size.
        bytes: u64,
        /// What the ledger records.
        entry: LedgerEntry,
        /// The upload record to forget.
        upload: String,
    },
    /// Versions of a key were copied in order (`versions = "all"`).
    VersionsCopied {
        /// Bytes written.
        bytes: u64,
        /// What the ledger records for the key now: every copied version and its copy.
        entry: VersionsEntry,
    },
    /// The source object was deleted before it could be copied.
    Gone,
    /// A managed destination object whose source is gone was deleted (or was already gone).
    Deleted,
    /// The destination object changed since planning; a deletion left it alone.
    Kept,
    /// The destination moved on since planning, and the decision table, applied to what is
    /// there now, says to leave it (the upload to forget, for a multipart copy).
    Skipped {
        /// Why.
        reason: Reason,
        /// The multipart upload record to forget (it was aborted).
        upload: Option<String>,
    },
    /// The source object is archived and not restored; skipped (`archived = "skip"`).
    Archived,
    /// The part's upload had been abandoned; there is nothing left to do.
    Cancelled,
    /// A script already recorded the outcome (a split, a part, a re-plan), as this.
    Recorded(Counted),
    /// The lease was lost before the outcome could be recorded; another worker redoes it.
    LeaseLost,
}

impl Outcome {
    /// What it counts as in the iteration record; `None` for a lost lease, which counts
    /// nothing (another worker redoes the task).
    pub fn counted(&self) -> Option<Counted> {
        Some(match self {
            Outcome::Copied { entry, .. } | Outcome::Completed { entry, .. } => {
                if etag_differs(entry) {
                    Counted::CopiedEtagDiffers
                } else {
                    Counted::Copied
                }
            }
            Outcome::VersionsCopied { .. } => Counted::Copied,
            Outcome::Gone => Counted::Gone,
            Outcome::Deleted => Counted::Deleted,
            Outcome::Kept => Counted::Kept,
            Outcome::Skipped { .. } => Counted::Skipped,
            Outcome::Archived => Counted::Archived,
            Outcome::Cancelled => Counted::Cancelled,
            Outcome::Recorded(counted) => *counted,
            Outcome::LeaseLost => return None,
        })
    }

    /// Bytes moved.
    pub fn bytes(&self) -> u64 {
        match self {
            Outcome::Copied { bytes, .. }
            | Outcome::Completed { bytes, .. }
            | Outcome::VersionsCopied { bytes, .. } => *bytes,
            _ => 0,
        }
    }
}

/// Whether a copy of a multipart source has another ETag than the source's: its part sizes
/// could not be read nor inferred (or the destination's ETags are not MD5s). The bytes were
/// verified all the same.
pub(crate) fn etag_differs(entry: &LedgerEntry) -> bool {
    etag_parts(&entry.source_etag).is_some()
        && !entry
            .destination_etag
            .eq_ignore_ascii_case(&entry.source_etag)
}

/// Acks a finished task with its ledger change (and, for a completed multipart copy, drops
/// the upload's record).
pub(crate) async fn acknowledge(
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
        Outcome::VersionsCopied { entry, .. } => {
            LedgerOp::PutVersions(task.key().to_string(), entry.clone())
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
        report: rule
            .report
            .is_some()
            .then(|| report_line(task, &outcome).map(|l| l.to_json()))
            .flatten(),
    };
    let acked = shared.acks.ack(&claimed.rule, item).await;
    match acked {
        Ok(true) => {
            shared.completed.fetch_add(1, Ordering::Relaxed);
            record_acked(shared, rule, claimed, task, outcome).await;
        }
        Ok(false) => {
            warn!(task = %claimed.id, "lease lost before ack; another worker redoes it")
        }
        Err(e) => {
            warn!(task = %claimed.id, error = %e, "ack failed; the lease will expire and the task is redone")
        }
    }
}

/// The iteration report's line for a task's outcome; `None` for a step that is not the
/// key's end (a split, a part, a cancelled part, a lost lease).
fn report_line(task: &Task, outcome: &Outcome) -> Option<ReportLine> {
    let (source_etag, destination_etag, size) = match task {
        Task::CopyObject { source, .. } => (Some(source.etag.clone()), None, source.size),
        Task::CopyPart(part) => (Some(part.source.etag.clone()), None, part.source.size),
        Task::DeleteObject {
            destination_etag, ..
        } => (None, Some(destination_etag.clone()), 0),
        Task::CopyVersions { versions, .. } => {
            (versions.last().map(|v| v.etag.clone()), None, task.bytes())
        }
        Task::CopyVersion { version, .. } => (Some(version.etag.clone()), None, version.size),
    };
    let mut line = ReportLine {
        key: task.key().to_string(),
        outcome: ReportOutcome::Skipped,
        reason: None,
        error: None,
        bytes: size,
        source_etag,
        destination_etag,
    };
    match outcome {
        Outcome::Copied { bytes, entry } | Outcome::Completed { bytes, entry, .. } => {
            line.outcome = ReportOutcome::Copied;
            line.bytes = *bytes;
            line.destination_etag = Some(entry.destination_etag.clone());
        }
        Outcome::VersionsCopied { bytes, .. } => {
            line.outcome = ReportOutcome::Copied;
            line.bytes = *bytes;
        }
        Outcome::Deleted => line.outcome = ReportOutcome::Deleted,
        Outcome::Skipped { reason, .. } => line.reason = Some(reason.label().to_string()),
        Outcome::Archived => line.reason = Some("archived".into()),
        Outcome::Gone => line.reason = Some("source_gone".into()),
        Outcome::Kept => line.reason = Some("kept".into()),
        Outcome::Cancelled | Outcome::Recorded(_) | Outcome::LeaseLost => return None,
    }
    Some(line)
}

/// Counts an acked outcome in the metrics (and names an archived key for the summary).
async fn record_acked(
    shared: &Shared,
    rule: &Rule,
    claimed: &Claimed,
    task: &Task,
    outcome: Outcome,
) {
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

/// Reports a failed attempt as its [`CopyError::disposition`] says.
pub(crate) async fn report(job: &Job<'_>, task: &Task, error: CopyError) {
    let permanent = match error.disposition() {
        Disposition::LeaseRunsOut => {
            warn!(task = %job.claimed.id, error = %error, "redis failed; the lease will expire and the task is redone");
            return;
        }
        Disposition::Throttle => return report_throttle(job, &error.to_string()).await,
        Disposition::Dead => true,
        // A precondition that keeps failing (a key that keeps changing) is retried later,
        // never buried at once: it means "decide again", not "impossible".
        Disposition::Retry | Disposition::Replan => false,
    };
    report_failure(job, task, &error.to_string(), permanent).await;
}

/// Records a failed attempt: retried later, or buried in dead letters when `permanent` or
/// at `max_attempts`. A buried part first aborts its upload, and its dead letter holds the
/// whole object, which is what a retry must copy again.
async fn report_failure(job: &Job<'_>, task: &Task, error: &str, permanent: bool) {
    let (shared, claimed) = (job.shared, job.claimed);
    shared.failed.fetch_add(1, Ordering::Relaxed);
    let max_attempts = job.rule.max_attempts;
    let attempts = claimed.attempts + 1;
    let delay = RetryPolicy::TRANSIENT.delay(attempts);
    let mut abandon = Abandon::default();
    if let Task::CopyPart(part) = task
        && (permanent || attempts >= max_attempts)
    {
        match job.abort_upload(&part.source.key, &part.upload_id).await {
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
pub(crate) fn unheld(result: Result<impl Sized, QueueError>, task: &impl std::fmt::Display) {
    if let Err(e) = result {
        debug!(%task, error = %e, "cannot hand the task back; its lease will run out");
    }
}
