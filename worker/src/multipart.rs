//! Object tasks and multipart copies.
//!
//! An object task decides how its object is copied. Below the rule's `multipart_threshold`
//! it is one request. At or above it, or when the source is itself a multipart object, the
//! worker creates one multipart upload, records it in Redis, and replaces the object task by
//! one part task per part, which any worker may claim. Each part is a ranged GET pinned to
//! the source ETag streamed into UploadPart (or an UploadPartCopy on the same endpoint). The
//! worker whose part is recorded last completes the upload and writes the ledger.
//!
//! Where the source's own part sizes can be read (HEAD with `partNumber`), they are kept, so
//! the destination gets the source's ETag. If the source changes mid-copy, a part's pinned
//! read fails with 412: the upload is aborted and the object re-planned with its new version.
//! If the destination changes mid-copy, the conditional completion fails with 412: the key is
//! decided again against what is there now, and completed under the new condition, or left.

use std::sync::{Arc, Mutex};

use ferry_core::config::Archived;
use ferry_core::ledger::LedgerEntry;
use ferry_core::parts::{
    Layout, MAX_PART, PartHasher, candidate_part_sizes, etag_parts, multipart_etag,
};
use ferry_core::task::{Expected, ObjectVersion, PartTask, Task, UploadRecord};
use ferry_core::telemetry::Metric;
use ferry_queue::{Counted, PartRecorded};
use ferry_storage::{ByteRange, ErrorKind, ObjectHead, StorageError, UploadedPart, Written};
use futures::TryStreamExt;
use md5::{Digest, Md5};
use tracing::{debug, warn};

use crate::copy::{
    Outcome, Replanned, capabilities, copy_single, current_version, destination_error,
    replan_destination, restore_tags, verify_etag,
};
use crate::{Job, TaskError};

/// Times an object task follows its source (or destination) to a newer version before
/// trying again later.
const MAX_REPLANS: u32 = 3;

/// Copies the planned version of one object, in one request or by splitting it into part
/// tasks. If the source changed since planning, its current version is copied instead (never
/// a mix of two versions); if the destination changed, the key is decided again.
pub(crate) async fn copy_object(
    job: &Job<'_>,
    planned: &ObjectVersion,
    expected: &Expected,
) -> Result<Outcome, TaskError> {
    let mut version = planned.clone();
    let mut expected = expected.clone();
    let mut replans = 0;
    loop {
        let attempt = match layout(job, &version).await {
            Ok(None) => copy_single(job, &version, &expected).await,
            Ok(Some(layout)) => split(job, &version, &layout, &expected).await,
            Err(e) => Err(e.into()),
        };
        match attempt {
            Err(TaskError::Storage(e))
                if e.kind == ErrorKind::PreconditionFailed && replans < MAX_REPLANS =>
            {
                replans += 1;
                match current_version(job, &planned.key).await? {
                    Some(current) => {
                        debug!(key = %planned.key, old = %version.etag, new = %current.etag,
                            "source changed since planning; copying its current version");
                        version = current;
                    }
                    None => return Ok(Outcome::Gone),
                }
            }
            Err(TaskError::DestinationChanged(e)) if replans < MAX_REPLANS => {
                replans += 1;
                debug!(key = %planned.key, error = %e, "destination changed since planning");
                match replan_destination(job, &version).await? {
                    Replanned::Copy(now) => expected = now,
                    Replanned::AlreadyThere(written) => {
                        return Ok(Outcome::Copied {
                            bytes: version.size,
                            entry: LedgerEntry {
                                source_etag: version.etag.clone(),
                                size: version.size,
                                source_last_modified_ms: version.last_modified_ms,
                                destination_etag: written.etag,
                            },
                        });
                    }
                    Replanned::Skip(reason) => {
                        return Ok(Outcome::Skipped {
                            reason,
                            upload: None,
                        });
                    }
                }
            }
            Err(TaskError::Storage(e)) if e.kind == ErrorKind::NotFound => {
                return Ok(Outcome::Gone);
            }
            Err(TaskError::Storage(e)) if e.kind == ErrorKind::Archived => {
                return archived(job, e);
            }
            other => return other,
        }
    }
}

/// An archived source object: skipped and counted, or (with `archived = "fail"`) a failure
/// that goes straight to dead letters with the reason.
fn archived(job: &Job<'_>, e: StorageError) -> Result<Outcome, TaskError> {
    match job.rule.archived {
        Archived::Skip => Ok(Outcome::Archived),
        Archived::Fail => Err(StorageError {
            kind: ErrorKind::Permanent,
            message: format!(
                "{}: the object is archived and not restored (restore it, or set archived = \"skip\")",
                e.message
            ),
            ..e
        }
        .into()),
    }
}

/// The error an archived object gives, for one found by HEAD before any read.
fn archived_error(job: &Job<'_>, key: &str) -> StorageError {
    StorageError {
        kind: ErrorKind::Archived,
        operation: "HeadObject",
        target: format!(
            "s3://{}/{key} on endpoint {}",
            job.rule.source.bucket, job.rule.source.endpoint
        ),
        status: Some(403),
        code: Some("InvalidObjectState".into()),
        message: "InvalidObjectState: the object is in an archive storage class".into(),
    }
}

/// How `version` is cut into parts, or `None` to copy it in one request.
async fn layout(job: &Job<'_>, version: &ObjectVersion) -> Result<Option<Layout>, StorageError> {
    let rule = job.rule;
    if let Some(count) = etag_parts(&version.etag) {
        match source_layout(job, version).await? {
            SourceLayout::Read(layout) => return Ok(Some(layout)),
            SourceLayout::Untold => {
                if let Some(layout) = inferred_layout(job, version, count).await? {
                    return Ok(Some(layout));
                }
            }
            SourceLayout::Irregular => {}
        }
    }
    if version.size < rule.multipart_threshold.0 && version.size <= MAX_PART {
        return Ok(None);
    }
    Layout::uniform(version.size, rule.part_size.0)
        .map(Some)
        .map_err(|message| StorageError {
            kind: ErrorKind::Permanent,
            operation: "CreateMultipartUpload",
            target: format!("s3://{}/{}", rule.destination.bucket, version.key),
            status: None,
            code: None,
            message,
        })
}

/// What the source says of a multipart object's parts.
enum SourceLayout {
    /// Equal parts (the last one shorter), read with HEAD `partNumber`.
    Read(Layout),
    /// Parts of other sizes: no layout of equal parts gives the source's ETag.
    Irregular,
    /// Nothing: the store ignores `partNumber` (Ceph RGW 16).
    Untold,
}

/// The part sizes of a multipart source, inferred from what its ETag says (the part count)
/// and its size, where its store does not tell them: the one part size that fits, or, where
/// several fit, the one whose ETag, computed from the bytes as they stream by, is the
/// source's. `None` when none is: the copy then has ferry's own part sizes, and an ETag that
/// differs from the source's.
async fn inferred_layout(
    job: &Job<'_>,
    version: &ObjectVersion,
    count: u64,
) -> Result<Option<Layout>, StorageError> {
    let candidates = candidate_part_sizes(version.size, count);
    let chosen = match candidates.as_slice() {
        [] => None,
        // The completion checks the ETag it gives.
        [only] => Some(*only),
        _ => matching_part_size(job, version, &candidates).await?,
    };
    let Some(part) = chosen else {
        debug!(key = %version.key, count, size = version.size, "no part size gives the source's ETag");
        return Ok(None);
    };
    debug!(key = %version.key, count, part, "inferred the source's part size");
    Ok(Layout::uniform(version.size, part).ok().map(|mut layout| {
        layout.from_source = true;
        layout
    }))
}

/// Reads the source once, pinned to its ETag, hashing the bytes as each candidate part size
/// would cut them; the part size whose ETag is the source's.
async fn matching_part_size(
    job: &Job<'_>,
    version: &ObjectVersion,
    candidates: &[u64],
) -> Result<Option<u64>, StorageError> {
    let source = job.shared.stores.source(job.rule);
    let get = source
        .get(
            &job.rule.source.bucket,
            &version.key,
            None,
            Some(&version.etag),
        )
        .await?;
    let mut hashers: Vec<PartHasher> = candidates.iter().map(|p| PartHasher::new(*p)).collect();
    let mut body = get.body;
    while let Some(chunk) = body.try_next().await? {
        for h in &mut hashers {
            h.update(&chunk);
        }
    }
    Ok(hashers.into_iter().find_map(|h| {
        let part = h.part_size();
        h.etag().eq_ignore_ascii_case(&version.etag).then_some(part)
    }))
}

/// The part sizes of a multipart source, read with HEAD `partNumber=1` (and the last part, to
/// confirm the parts are equal).
async fn source_layout(
    job: &Job<'_>,
    version: &ObjectVersion,
) -> Result<SourceLayout, StorageError> {
    let source = job.shared.stores.source(job.rule);
    let (bucket, key, etag) = (&job.rule.source.bucket, &version.key, &version.etag);
    // Without If-Match (moto refuses it with partNumber): the ETag is compared here.
    let changed = |found: &str| StorageError {
        kind: ErrorKind::PreconditionFailed,
        operation: "HeadObject",
        target: format!("s3://{bucket}/{key}"),
        status: None,
        code: None,
        message: format!("the source's ETag is {found}, not the planned {etag}"),
    };
    let first = match source.head_part(bucket, key, 1).await {
        Ok(head) => head,
        // Changed or gone: the caller re-plans. Throttled or failing: retry the task later
        // rather than settle for a layout that changes the ETag.
        Err(e) if e.kind != ErrorKind::Permanent => return Err(e),
        Err(e) => {
            debug!(key = %key, error = %e, "the source does not tell its part sizes");
            return Ok(SourceLayout::Untold);
        }
    };
    // moto answers with the part's own ETag: only an object ETag can show a change here
    // (the HEAD before the upload and every part read are pinned to the planned ETag).
    let differs = |found: &str| etag_parts(found).is_some() && found != etag;
    if differs(&first.etag) {
        return Err(changed(&first.etag));
    }
    // A store that ignores partNumber answers with the whole object and no parts count.
    let Some(count) = first.parts_count else {
        return Ok(SourceLayout::Untold);
    };
    let Some(layout) = Layout::from_source(version.size, count, first.length) else {
        debug!(key = %key, count, first = first.length, "source parts are not of equal size");
        return Ok(SourceLayout::Irregular);
    };
    if count > 2 {
        let last = source.head_part(bucket, key, count as u32).await?;
        if differs(&last.etag) {
            return Err(changed(&last.etag));
        }
        if last.length != layout.last_len() {
            debug!(key = %key, "source parts are not of equal size");
            return Ok(SourceLayout::Irregular);
        }
    }
    Ok(SourceLayout::Read(layout))
}

/// Starts (or, on a retry, resumes) the multipart upload of `version` and replaces the object
/// task by its part tasks.
async fn split(
    job: &Job<'_>,
    version: &ObjectVersion,
    layout: &Layout,
    expected: &Expected,
) -> Result<Outcome, TaskError> {
    let (shared, rule, claimed) = (job.shared, job.rule, job.claimed);
    let source = shared.stores.source(rule);
    let destination = shared.stores.destination(rule);
    let (bucket, key) = (&rule.destination.bucket, &version.key);
    let head: ObjectHead = source
        .head(&rule.source.bucket, key, Some(&version.etag))
        .await?;
    if head.archived {
        return Err(archived_error(job, key).into());
    }

    let recorded = shared.queue.upload(&rule.name, claimed.id.as_str()).await?;
    let upload_id = match recorded {
        Some(r) if r.source_etag == version.etag && r.parts as usize == layout.count() => {
            r.upload_id
        }
        stale => {
            if let Some(r) = stale {
                abort(job, &r.key, &r.upload_id).await?;
            }
            if claimed.attempts > 0 {
                abort_strays(job, key).await?;
            }
            let mut attrs = head.attrs;
            if let Some(class) = rule.destination.storage_class {
                attrs.storage_class = Some(class.as_str().to_string());
            }
            // UploadPartCopy copies no tags, and a multipart HEAD says only how many there are.
            // Where the store drops (or refuses) tags on the upload, the completion sets them.
            let tagging = if head.tag_count > 0 && capabilities(job).await?.tags_on_multipart {
                source.get_tagging(&rule.source.bucket, key).await?
            } else {
                None
            };
            let upload_id = destination
                .create_multipart(bucket, key, &attrs, tagging.as_deref())
                .await?;
            let record = UploadRecord {
                key: key.clone(),
                upload_id: upload_id.clone(),
                source_etag: version.etag.clone(),
                parts: layout.count() as u32,
                layout_from_source: layout.from_source,
            };
            if !shared
                .queue
                .record_upload(&shared.options.id, claimed, &record)
                .await?
            {
                abort(job, key, &upload_id).await?;
                return Ok(Outcome::LeaseLost);
            }
            upload_id
        }
    };

    let parts = layout.count() as u32;
    let tasks: Vec<Task> = (1..)
        .zip(&layout.ranges)
        .map(|(number, range)| {
            Task::CopyPart(Box::new(PartTask {
                upload: claimed.id.to_string(),
                upload_id: upload_id.clone(),
                source: version.clone(),
                number,
                parts,
                first: range.first,
                last: range.last,
                destination: expected.clone(),
            }))
        })
        .collect();
    debug!(key = %key, parts, from_source = layout.from_source, "split into part tasks");
    if !shared
        .queue
        .replace(&shared.options.id, claimed, Counted::Split, None, &tasks)
        .await?
    {
        // The upload stays recorded: whoever holds the object task now resumes it.
        return Ok(Outcome::LeaseLost);
    }
    Ok(Outcome::Recorded(Counted::Split))
}

/// Aborts uploads of `key` at the destination that no record in Redis knows: left by a worker
/// that died between creating an upload and recording it.
async fn abort_strays(job: &Job<'_>, key: &str) -> Result<(), TaskError> {
    let destination = job.shared.stores.destination(job.rule);
    let open = destination
        .list_uploads(&job.rule.destination.bucket, key)
        .await?;
    for upload in open.iter().filter(|u| u.key == key) {
        warn!(key = %key, upload = %upload.upload_id, "aborting an unrecorded upload left by a dead worker");
        abort(job, key, &upload.upload_id).await?;
    }
    Ok(())
}

/// Aborts one upload at the destination (an upload already gone is fine).
pub(crate) async fn abort(job: &Job<'_>, key: &str, upload_id: &str) -> Result<(), StorageError> {
    let destination = job.shared.stores.destination(job.rule);
    match destination
        .abort_multipart(&job.rule.destination.bucket, key, upload_id)
        .await
    {
        Ok(()) => {
            Metric::UploadsAborted
                .counter(&[("rule", job.rule.name.clone())])
                .increment(1);
            Ok(())
        }
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Copies one part, records its ETag, and completes the upload if it was the last one.
pub(crate) async fn copy_part(job: &Job<'_>, part: &PartTask) -> Result<Outcome, TaskError> {
    let (shared, rule, claimed) = (job.shared, job.rule, job.claimed);
    let Some(record) = shared.queue.upload(&rule.name, &part.upload).await? else {
        return Ok(Outcome::Cancelled);
    };
    let etag = match reusable_part(job, part).await {
        Ok(Some(etag)) => {
            Metric::PartsReused
                .counter(&[("rule", rule.name.clone())])
                .increment(1);
            etag
        }
        Ok(None) => match upload_part(job, part).await {
            Ok(etag) => {
                Metric::PartsCopied
                    .counter(&[("rule", rule.name.clone())])
                    .increment(1);
                Metric::BytesCopied
                    .counter(&[("rule", rule.name.clone())])
                    .increment(part.len());
                etag
            }
            Err(e) => return handle_part_error(job, part, e).await,
        },
        Err(e) => return handle_part_error(job, part, e).await,
    };
    match shared
        .queue
        .record_part(&shared.options.id, claimed, part, &etag)
        .await?
    {
        PartRecorded::Lost => Ok(Outcome::LeaseLost),
        PartRecorded::Cancelled => Ok(Outcome::Recorded(Counted::Cancelled)),
        PartRecorded::More => Ok(Outcome::Recorded(Counted::Part)),
        PartRecorded::Last(parts) => complete(job, part, &record, parts).await,
    }
}

/// A part an earlier attempt already uploaded: its ETag, from Redis or from ListParts.
async fn reusable_part(job: &Job<'_>, part: &PartTask) -> Result<Option<String>, StorageError> {
    let (shared, rule) = (job.shared, job.rule);
    if job.claimed.attempts == 0 {
        return Ok(None);
    }
    if let Ok(Some(etag)) = shared
        .queue
        .part_etag(&rule.name, &part.upload, part.number)
        .await
    {
        return Ok(Some(etag));
    }
    let destination = shared.stores.destination(rule);
    // ListParts only saves an upload: a part uploaded again is overwritten with the same
    // bytes. So a ListParts that fails (moto 5 answers it with a `ListPartsResponse` root no
    // SDK parses) means uploading the part again, never a failed task; a real problem with
    // the upload shows in that UploadPart.
    let uploaded = match destination
        .list_parts(&rule.destination.bucket, &part.source.key, &part.upload_id)
        .await
    {
        Ok(uploaded) => uploaded,
        Err(e) => {
            tracing::warn!(rule = %rule.name, key = %part.source.key, part = part.number,
                error = %e, "cannot list the upload's parts; uploading this part again");
            return Ok(None);
        }
    };
    Ok(uploaded
        .into_iter()
        .find(|u| u.number == part.number && u.size == part.len())
        .map(|u| u.etag))
}

/// Uploads one part: UploadPartCopy on the same endpoint, else a ranged GET pinned to the
/// source ETag streamed into UploadPart, with the part's MD5 computed on the way and compared
/// with the ETag the destination returns.
async fn upload_part(job: &Job<'_>, part: &PartTask) -> Result<String, StorageError> {
    upload_part_written(job, part).await.map(|w| w.etag)
}

async fn upload_part_written(job: &Job<'_>, part: &PartTask) -> Result<Written, StorageError> {
    let rule = job.rule;
    let source = job.shared.stores.source(rule);
    let destination = job.shared.stores.destination(rule);
    let key = &part.source.key;
    let range = ByteRange {
        first: part.first,
        last: part.last,
    };
    if rule.source.endpoint == rule.destination.endpoint {
        return destination
            .upload_part_copy(
                &rule.source.bucket,
                key,
                &part.source.etag,
                range,
                &rule.destination.bucket,
                key,
                &part.upload_id,
                part.number,
            )
            .await
            .map(|etag| Written {
                etag,
                etag_may_be_md5: true,
            });
    }
    // An empty object has one empty part; a range cannot express it.
    let range = (!part.is_empty()).then_some(range);
    let get = source
        .get(&rule.source.bucket, key, range, Some(&part.source.etag))
        .await?;
    let hasher = Arc::new(Mutex::new(Md5::new()));
    let feed = hasher.clone();
    let body = Box::pin(get.body.inspect_ok(move |chunk| {
        feed.lock().expect("md5 hasher lock").update(chunk);
    }));
    let trailer = capabilities(job).await?.checksum_trailer;
    let written = destination
        .upload_part(
            &rule.destination.bucket,
            key,
            &part.upload_id,
            part.number,
            body,
            part.len(),
            trailer,
        )
        .await?;
    let md5 = hex::encode(hasher.lock().expect("md5 hasher lock").clone().finalize());
    verify_etag(job, "UploadPart", key, &md5, &written).await?;
    Ok(written)
}

/// What a failed part read or upload means for the object: a changed or vanished source, or
/// a vanished upload, abandons the upload and re-plans the object; anything else is the
/// part's own failure (retried, or buried with the upload aborted; see `report_failure`).
async fn handle_part_error(
    job: &Job<'_>,
    part: &PartTask,
    error: StorageError,
) -> Result<Outcome, TaskError> {
    match error.kind {
        ErrorKind::PreconditionFailed => {
            debug!(key = %part.source.key, "source changed mid-copy; re-planning the object");
            replan(job, part).await
        }
        ErrorKind::NotFound => {
            if job
                .shared
                .queue
                .upload(&job.rule.name, &part.upload)
                .await?
                .is_none()
            {
                return Ok(Outcome::Cancelled);
            }
            debug!(key = %part.source.key, error = %error, "source or upload gone; re-planning");
            replan(job, part).await
        }
        _ => Err(error.into()),
    }
}

/// Aborts the part's upload and replaces the part task by an object task for the source's
/// current version (or by nothing, counted as gone, when the source was deleted).
async fn replan(job: &Job<'_>, part: &PartTask) -> Result<Outcome, TaskError> {
    let current = current_version(job, &part.source.key).await?;
    abort(job, &part.source.key, &part.upload_id).await?;
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

/// Completes the upload once every part is in, and checks the ETag that came out.
async fn complete(
    job: &Job<'_>,
    part: &PartTask,
    record: &UploadRecord,
    parts: Vec<(u32, String)>,
) -> Result<Outcome, TaskError> {
    let rule = job.rule;
    let destination = job.shared.stores.destination(rule);
    let (bucket, key) = (&rule.destination.bucket, &part.source.key);
    let expected = multipart_etag(parts.iter().map(|(_, e)| e.as_str()));
    let uploaded: Vec<UploadedPart> = parts
        .into_iter()
        .map(|(number, etag)| UploadedPart {
            number,
            etag,
            size: 0,
        })
        .collect();
    let caps = capabilities(job).await?;
    let mut wanted = part.destination.clone();
    let mut replans = 0;
    let written = loop {
        let condition = caps.complete.apply(wanted.condition());
        job.wrote();
        match destination
            .complete_multipart(bucket, key, &part.upload_id, &uploaded, &condition)
            .await
            .map_err(destination_error)
        {
            Ok(written) => break written,
            // The destination moved on: decide the key again, and complete under the new
            // condition, with the parts already uploaded, or leave it.
            Err(TaskError::DestinationChanged(e)) if replans < MAX_REPLANS => {
                replans += 1;
                debug!(key = %key, error = %e, "destination changed while the parts were copied");
                match replan_destination(job, &part.source).await? {
                    Replanned::Copy(now) => wanted = now,
                    Replanned::AlreadyThere(written) => break written,
                    Replanned::Skip(reason) => {
                        abort(job, key, &part.upload_id).await?;
                        return Ok(Outcome::Skipped {
                            reason,
                            upload: Some(part.upload.clone()),
                        });
                    }
                }
            }
            // Completed by an earlier attempt whose ack was lost, or completed with a reply
            // the SDK cannot read (moto's), if the object there is exactly what these parts
            // make; if the upload is gone otherwise, the object starts over.
            Err(TaskError::Storage(e))
                if e.kind == ErrorKind::NotFound || e.status.is_some_and(|s| s < 300) =>
            {
                match destination.head(bucket, key, None).await {
                    Ok(head) if expected.as_deref() == Some(head.etag.as_str()) => {
                        break Written {
                            etag: head.etag,
                            etag_may_be_md5: head.etag_is_md5,
                        };
                    }
                    _ if e.kind == ErrorKind::NotFound => return replan(job, part).await,
                    _ => return Err(e.into()),
                }
            }
            // The parts there are not the ones recorded: a part's upload, interrupted after
            // its lease ran out while another worker had already uploaded it again, replaced
            // the good part on servers (Garage) that keep the latest attempt. Start over.
            Err(TaskError::Storage(e)) if e.code.as_deref() == Some("InvalidPart") => {
                warn!(key = %key, error = %e, "uploaded parts do not match the recorded ones; re-planning");
                return replan(job, part).await;
            }
            Err(e) => return Err(e),
        }
    };
    // Some stores (Ceph RGW 16) answer with an empty ETag: the object's HEAD tells it.
    let etag = if written.etag.is_empty() {
        destination.head(bucket, key, None).await?.etag
    } else {
        written.etag
    };
    if let Some(expected) = &expected
        && written.etag_may_be_md5
        && etag_parts(&etag).is_some()
        && !etag.eq_ignore_ascii_case(expected)
    {
        return Err(StorageError {
            kind: ErrorKind::Retryable,
            operation: "CompleteMultipartUpload",
            target: format!("s3://{bucket}/{key}"),
            status: None,
            code: None,
            message: format!(
                "integrity check failed: the upload's ETag {etag} is not the one its parts \
                 make ({expected})"
            ),
        }
        .into());
    }
    if etag_parts(&part.source.etag).is_some() && !etag.eq_ignore_ascii_case(&part.source.etag) {
        // Verified byte for byte all the same (each part's MD5, the parts' ETag).
        let why = if record.layout_from_source {
            "copied with the source's part sizes, yet the ETags differ"
        } else {
            "ETag differs: source layout unknown"
        };
        warn!(rule = %rule.name, key = %key, source = %part.source.etag, destination = %etag, "{why}");
        Metric::EtagDiffers
            .counter(&[("rule", rule.name.clone())])
            .increment(1);
    }
    if caps.tagging && !caps.tags_on_multipart {
        let source = job.shared.stores.source(rule);
        let tags = source
            .get_tagging(&rule.source.bucket, &part.source.key)
            .await?;
        restore_tags(job, key, tags.as_deref()).await?;
    }
    Ok(Outcome::Completed {
        bytes: part.source.size,
        entry: LedgerEntry {
            source_etag: part.source.etag.clone(),
            size: part.source.size,
            source_last_modified_ms: part.source.last_modified_ms,
            destination_etag: etag,
        },
        upload: part.upload.clone(),
    })
}
