//! Splitting an object task: how the object is cut into parts (the source's own part sizes
//! where they can be read or inferred, so the copy keeps its ETag), one multipart upload
//! created and recorded, and the object task replaced by one part task per part, which any
//! worker may claim.

use ferry_core::parts::{Layout, MAX_PART, PartHasher, candidate_part_sizes, etag_parts};
use ferry_core::task::{Expected, ObjectVersion, PartTask, Task, UploadRecord};
use ferry_queue::Counted;
use ferry_storage::{ErrorKind, ObjectHead};
use futures::TryStreamExt;
use tracing::{debug, warn};

use crate::error::{CopyError, Failure};
use crate::outcome::Outcome;
use crate::runner::Job;

/// How `version` is cut into parts, or `None` to copy it in one request.
pub(crate) async fn layout(
    job: &Job<'_>,
    version: &ObjectVersion,
) -> Result<Option<Layout>, CopyError> {
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
        .map_err(|message| {
            CopyError::Impossible(Failure::new(
                "CreateMultipartUpload",
                format!("s3://{}/{}", rule.destination.bucket, version.key),
                message,
            ))
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
) -> Result<Option<Layout>, CopyError> {
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
) -> Result<Option<u64>, CopyError> {
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
async fn source_layout(job: &Job<'_>, version: &ObjectVersion) -> Result<SourceLayout, CopyError> {
    let source = job.shared.stores.source(job.rule);
    let (bucket, key, etag) = (&job.rule.source.bucket, &version.key, &version.etag);
    // Without If-Match (moto refuses it with partNumber): the ETag is compared here.
    let changed = |found: &str| {
        CopyError::SourceChanged(Failure::new(
            "HeadObject",
            format!("s3://{bucket}/{key}"),
            format!("the source's ETag is {found}, not the planned {etag}"),
        ))
    };
    let first = match source.head_part(bucket, key, 1).await {
        Ok(head) => head,
        // Changed or gone: the caller re-plans. Throttled or failing: retry the task later
        // rather than settle for a layout that changes the ETag.
        Err(e) if e.kind != ErrorKind::Permanent => return Err(e.into()),
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
pub(crate) async fn split(
    job: &Job<'_>,
    version: &ObjectVersion,
    layout: &Layout,
    expected: &Expected,
) -> Result<Outcome, CopyError> {
    let (shared, rule, claimed) = (job.shared, job.rule, job.claimed);
    let source = shared.stores.source(rule);
    let key = &version.key;
    let head: ObjectHead = source
        .head(&rule.source.bucket, key, Some(&version.etag))
        .await?;
    if head.archived {
        return Err(CopyError::Archived(Failure {
            operation: "HeadObject",
            target: format!(
                "s3://{}/{key} on endpoint {}",
                rule.source.bucket, rule.source.endpoint
            ),
            status: Some(403),
            message: "InvalidObjectState: the object is in an archive storage class".into(),
        }));
    }

    let Some(upload_id) = open_upload(job, version, layout, head).await? else {
        return Ok(Outcome::LeaseLost);
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

/// The multipart upload of `version`: the one recorded for this task (an earlier attempt's,
/// resumed) if it is of this version and layout; else a new one, created and recorded (an
/// earlier one aborted, with any a dead worker left unrecorded). `None` when the lease was
/// lost before it could be recorded.
async fn open_upload(
    job: &Job<'_>,
    version: &ObjectVersion,
    layout: &Layout,
    head: ObjectHead,
) -> Result<Option<String>, CopyError> {
    let (shared, rule, claimed) = (job.shared, job.rule, job.claimed);
    let source = shared.stores.source(rule);
    let destination = shared.stores.destination(rule);
    let (bucket, key) = (&rule.destination.bucket, &version.key);
    let recorded = shared.queue.upload(&rule.name, claimed.id.as_str()).await?;
    let upload_id = match recorded {
        Some(r) if r.source_etag == version.etag && r.parts as usize == layout.count() => {
            r.upload_id
        }
        stale => {
            if let Some(r) = stale {
                job.abort_upload(&r.key, &r.upload_id).await?;
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
            let tagging = if head.tag_count > 0 && job.capabilities().await?.tags_on_multipart {
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
                job.abort_upload(key, &upload_id).await?;
                return Ok(None);
            }
            upload_id
        }
    };
    Ok(Some(upload_id))
}

/// Aborts uploads of `key` at the destination that no record in Redis knows: left by a worker
/// that died between creating an upload and recording it.
async fn abort_strays(job: &Job<'_>, key: &str) -> Result<(), CopyError> {
    let destination = job.shared.stores.destination(job.rule);
    let open = destination
        .list_uploads(&job.rule.destination.bucket, key)
        .await?;
    for upload in open.iter().filter(|u| u.key == key) {
        warn!(key = %key, upload = %upload.upload_id, "aborting an unrecorded upload left by a dead worker");
        job.abort_upload(key, &upload.upload_id).await?;
    }
    Ok(())
}
