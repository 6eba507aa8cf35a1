//! Copying one object in one request: streamed GET into PUT, or a server-side copy on the
//! same endpoint; deleting one; what a task achieved; and what to do when a conditional write
//! finds the destination changed.

use ferry_core::config::Rule;
use ferry_core::ledger::LedgerEntry;
use ferry_core::parts::etag_parts;
use ferry_core::policy::{Action, Joined, Policy, Reason, decide};
use ferry_core::telemetry::Metric;
use ferry_queue::Counted;
use std::sync::{Arc, Mutex};

use ferry_core::task::{Expected, ObjectVersion};
use ferry_storage::{
    BodyStream, Capabilities, ErrorKind, ObjectMeta, PutOptions, StorageError, Written, etag_is_md5,
};
use futures::TryStreamExt;
use md5::{Digest, Md5};
use tracing::debug;

use crate::{Job, TaskError};

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
            Outcome::Copied { bytes, .. } | Outcome::Completed { bytes, .. } => *bytes,
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

/// Copies a version of an object below the multipart threshold in one request: a streamed
/// GET into a PUT, or CopyObject on the same endpoint. Reads are pinned to the version's
/// ETag; the write is conditional on `expected` where the destination honours conditions.
pub(crate) async fn copy_single(
    job: &Job<'_>,
    version: &ObjectVersion,
    expected: &Expected,
) -> Result<Outcome, TaskError> {
    let rule = job.rule;
    let (bytes, written) = if rule.source.endpoint == rule.destination.endpoint {
        copy_server_side(job, version, expected).await?
    } else {
        copy_streamed(job, version, expected).await?
    };
    let entry = LedgerEntry {
        source_etag: version.etag.clone(),
        size: bytes,
        source_last_modified_ms: version.last_modified_ms,
        destination_etag: written.etag,
    };
    if etag_differs(&entry) {
        tracing::warn!(rule = %rule.name, key = %version.key, source = %entry.source_etag,
            destination = %entry.destination_etag, "ETag differs: source layout unknown");
        Metric::EtagDiffers
            .counter(&[("rule", rule.name.clone())])
            .increment(1);
    }
    Ok(Outcome::Copied { bytes, entry })
}

/// What the destination bucket does with writes (probed once per process and lifetime).
pub(crate) async fn capabilities(job: &Job<'_>) -> Result<Capabilities, StorageError> {
    let rule = job.rule;
    job.shared
        .stores
        .capabilities(&rule.destination.endpoint, &rule.destination.bucket)
        .await
}

/// Sets `tags` on a destination object whose write path dropped them, and reads them back:
/// a copy is not done until its tags are there.
pub(crate) async fn restore_tags(
    job: &Job<'_>,
    key: &str,
    tags: Option<&str>,
) -> Result<(), StorageError> {
    let Some(tags) = tags else {
        return Ok(());
    };
    let rule = job.rule;
    let destination = job.shared.stores.destination(rule);
    let bucket = &rule.destination.bucket;
    destination.put_tagging(bucket, key, tags).await?;
    let now = destination.get_tagging(bucket, key).await?;
    if now.as_deref() == Some(tags) {
        return Ok(());
    }
    Err(StorageError {
        kind: ErrorKind::Retryable,
        operation: "PutObjectTagging",
        target: format!("s3://{bucket}/{key}"),
        status: None,
        code: None,
        message: format!(
            "the destination's tags are {:?} after setting {tags:?}",
            now.unwrap_or_default()
        ),
    })
}

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
) -> Result<Replanned, TaskError> {
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

/// Deletes a managed destination object whose source is gone, unless it changed since
/// planning (then it is no longer what ferry wrote, and is left alone).
pub(crate) async fn delete_object(
    job: &Job<'_>,
    key: &str,
    destination_etag: &str,
) -> Result<Outcome, StorageError> {
    let rule: &Rule = job.rule;
    let destination = job.shared.stores.destination(rule);
    match destination.head(&rule.destination.bucket, key, None).await {
        Ok(head) if head.etag != destination_etag => return Ok(Outcome::Kept),
        Ok(_) => {}
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(Outcome::Deleted),
        Err(e) => return Err(e),
    }
    job.wrote();
    destination.delete(&rule.destination.bucket, key).await?;
    Ok(Outcome::Deleted)
}

async fn copy_streamed(
    job: &Job<'_>,
    version: &ObjectVersion,
    expected: &Expected,
) -> Result<(u64, Written), TaskError> {
    let rule = job.rule;
    let key = &version.key;
    let source = job.shared.stores.source(rule);
    let destination = job.shared.stores.destination(rule);
    let caps = capabilities(job).await?;
    let condition = caps.put.apply(expected.condition());
    let get = source
        .get(&rule.source.bucket, key, None, Some(&version.etag))
        .await?;
    let tagging = if get.head.tag_count > 0 {
        source.get_tagging(&rule.source.bucket, key).await?
    } else {
        None
    };
    let mut attrs = get.head.attrs.clone();
    if let Some(class) = rule.destination.storage_class {
        attrs.storage_class = Some(class.as_str().to_string());
    }
    let length = get.content_length;
    let md5 = get.head.etag_is_md5.then_some(get.head.etag.as_str());
    // The source's checksum only where the destination checks checksums.
    let checksum = get
        .head
        .checksum
        .as_ref()
        .filter(|_| caps.checksums_verified);
    // With neither the source's MD5 nor a checksum the destination checks, and no trailer,
    // the MD5 of the bytes sent is what the destination's ETag is checked against.
    let hashed = (md5.is_none() && checksum.is_none() && !caps.checksum_trailer)
        .then(|| Arc::new(Mutex::new(Md5::new())));
    let body: BodyStream = match &hashed {
        Some(hasher) => {
            let feed = hasher.clone();
            Box::pin(get.body.inspect_ok(move |chunk| {
                feed.lock().expect("md5 hasher lock").update(chunk);
            }))
        }
        None => get.body,
    };
    let options = PutOptions {
        attrs: &attrs,
        content_md5: md5,
        checksum,
        condition: &condition,
        // Only where the store keeps tags sent with the write (some refuse them outright).
        tagging: tagging.as_deref().filter(|_| caps.tags_on_put),
        trailer: caps.checksum_trailer,
    };
    job.wrote();
    let written = destination
        .put(&rule.destination.bucket, key, body, length, options)
        .await
        .map_err(destination_error)?;
    let sent = match &hashed {
        Some(hasher) => hex::encode(hasher.lock().expect("md5 hasher lock").clone().finalize()),
        None => get.head.etag.clone(),
    };
    verify_etag(job, "PutObject", key, &sent, &written).await?;
    if caps.tagging && !caps.tags_on_put {
        restore_tags(job, key, tagging.as_deref()).await?;
    }
    Ok((length, written))
}

async fn copy_server_side(
    job: &Job<'_>,
    version: &ObjectVersion,
    expected: &Expected,
) -> Result<(u64, Written), TaskError> {
    let rule = job.rule;
    let key = &version.key;
    let store = job.shared.stores.source(rule);
    // CopyObject writes STANDARD unless told the class: the rule's, else the source's.
    let class = rule
        .destination
        .storage_class
        .map(|c| c.as_str())
        .or(version.storage_class.as_deref());
    let caps = capabilities(job).await?;
    let condition = caps.put.apply(expected.condition());
    job.wrote();
    let written = match store
        .copy(
            &rule.source.bucket,
            key,
            Some(&version.etag),
            &rule.destination.bucket,
            key,
            class,
            &condition,
        )
        .await
    {
        Ok(w) => w,
        // The source's If-Match and the destination's condition both answer 412: the
        // source tells which one failed.
        Err(e) if e.kind == ErrorKind::PreconditionFailed => {
            return match store
                .head(&rule.source.bucket, key, Some(&version.etag))
                .await
            {
                Ok(_) => Err(TaskError::DestinationChanged(e)),
                Err(source) => Err(source.into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    verify_etag(job, "CopyObject", key, &version.etag, &written).await?;
    if caps.tagging && !caps.tags_on_copy {
        let tags = store.get_tagging(&rule.source.bucket, key).await?;
        restore_tags(job, key, tags.as_deref()).await?;
    }
    Ok((version.size, written))
}

/// A refused condition on a destination write means the destination moved on.
pub(crate) fn destination_error(e: StorageError) -> TaskError {
    if e.kind == ErrorKind::PreconditionFailed {
        TaskError::DestinationChanged(e)
    } else {
        e.into()
    }
}

/// End-to-end integrity: where the expected ETag is the MD5 of the bytes (the source's, or
/// the one computed while streaming a part), the destination must report the same MD5 for
/// what it received. Only where its ETags are MD5s: not with SSE-KMS or SSE-C (as its answer
/// says), nor on a bucket whose probe showed other ETags; there, Content-MD5, the source's
/// checksum or the CRC32C trailer, which the destination verified, stand for it. A mismatch
/// is retried.
pub(crate) async fn verify_etag(
    job: &Job<'_>,
    operation: &'static str,
    key: &str,
    source: &str,
    written: &Written,
) -> Result<(), StorageError> {
    if !written.etag_may_be_md5 || !etag_is_md5(source) || !etag_is_md5(&written.etag) {
        return Ok(());
    }
    if source.eq_ignore_ascii_case(&written.etag) {
        return Ok(());
    }
    let rule = job.rule;
    if !capabilities(job).await?.etags_are_md5 {
        return Ok(());
    }
    Err(StorageError {
        kind: ErrorKind::Retryable,
        operation,
        target: format!("s3://{}/{key}", rule.destination.bucket),
        status: None,
        code: None,
        message: format!(
            "integrity check failed: destination md5 {} differs from source {source}",
            written.etag
        ),
    })
}
