//! When the world moved on since planning: the source's current version (after a pinned read
//! was refused), the decision table applied again to the destination as it is now (after a
//! conditional write was refused), and a part task's object planned again from scratch.

use ferry_core::policy::{Action, Joined, Policy, Reason, decide};
use ferry_core::task::{Expected, ObjectVersion, PartTask, Task};
use ferry_queue::Counted;
use ferry_storage::{ErrorKind, ObjectMeta, StorageError, Written};
use tracing::debug;

use crate::error::CopyError;
use crate::outcome::Outcome;
use crate::runner::Job;

/// The source object's current version, after a read pinned to an older one was refused;
/// `None` when it is gone.
pub(crate) async fn current_version(
    job: &Job<'_>,
    key: &str,
) -> Result<Option<ObjectVersion>, StorageError> {
    let rule = job.rule;
    let source = job.shared.stores.source(rule);
    match source.head(&rule.source.bucket, key, None).await {
        Ok(head) => Ok(Some(ObjectVersion {
            key: key.to_string(),
            size: head.size,
            etag: head.etag,
            last_modified_ms: head.last_modified_ms,
            storage_class: head.attrs.storage_class,
        })),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What to do after a conditional write found the destination changed since planning:
/// the decision table, applied to what is there now.
pub(crate) enum Replanned {
    /// Write again, under this new expectation.
    Copy(Expected),
    /// The destination already holds exactly this version (an earlier attempt's write that
    /// was never acked): record it as copied.
    AlreadyThere(Written),
    /// Leave the destination as it is.
    Skip(Reason),
}

/// Applies the decision table to the key as it is now: the destination's object, the ledger,
/// and the write intents of other claims (a stray write of ferry's makes the object ferry's
/// to repair, not someone else's).
pub(crate) async fn replan_destination(
    job: &Job<'_>,
    version: &ObjectVersion,
) -> Result<Replanned, CopyError> {
    let rule = job.rule;
    let destination = job.shared.stores.destination(rule);
    let there = match destination
        .head(&rule.destination.bucket, &version.key, None)
        .await
    {
        Ok(head) => Some(head),
        Err(e) if e.kind == ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let view = job
        .shared
        .queue
        .ledger_get(&rule.name, &[version.key.as_str()])
        .await?
        .pop()
        .unwrap_or_default();
    let source = ObjectMeta {
        key: version.key.clone(),
        size: version.size,
        etag: version.etag.clone(),
        last_modified_ms: version.last_modified_ms,
        storage_class: version.storage_class.clone(),
    };
    let Some(head) = there else {
        return Ok(Replanned::Copy(Expected::Absent));
    };
    if head.size == version.size && head.etag == version.etag {
        return Ok(Replanned::AlreadyThere(Written {
            etag: head.etag,
            etag_may_be_md5: head.etag_is_md5,
        }));
    }
    let joined = Joined::Both {
        source,
        destination: ObjectMeta {
            key: version.key.clone(),
            size: head.size,
            etag: head.etag.clone(),
            last_modified_ms: head.last_modified_ms,
            storage_class: head.attrs.storage_class.clone(),
        },
    };
    let stray = view.stray_besides(Some(job.claimed.token));
    let policy = Policy {
        overwrite: rule.overwrite,
        overwrite_unmanaged: rule.overwrite_unmanaged,
        delete: rule.delete,
        last_success_start_ms: None,
    };
    let action = decide(&joined, view.entry.as_ref(), stray, &policy);
    debug!(rule = %rule.name, key = %version.key, ?action, stray, "destination changed since planning");
    Ok(match action {
        Action::Copy(_) => Replanned::Copy(Expected::Etag(head.etag)),
        Action::Skip(reason) => Replanned::Skip(reason),
        // Only destination-only keys are deleted or kept.
        Action::Delete | Action::Keep => Replanned::Skip(Reason::Keep),
    })
}

/// Aborts the part's upload and replaces the part task by an object task for the source's
/// current version (or by nothing, counted as gone, when the source was deleted).
pub(crate) async fn replan(job: &Job<'_>, part: &PartTask) -> Result<Outcome, CopyError> {
    let current = current_version(job, &part.source.key).await?;
    job.abort_upload(&part.source.key, &part.upload_id).await?;
    let (outcome, tasks) = match current {
        Some(source) => (
            Counted::Replanned,
            vec![Task::CopyObject {
                source,
                destination: part.destination.clone(),
            }],
        ),
        None => (Counted::Gone, Vec::new()),
    };
    if !job
        .shared
        .queue
        .replace(
            &job.shared.options.id,
            job.claimed,
            outcome,
            Some(&part.upload),
            &tasks,
        )
        .await?
    {
        return Ok(Outcome::LeaseLost);
    }
    Ok(Outcome::Recorded(outcome))
}
