//! A part task: one part read (a ranged GET pinned to the source's ETag, streamed into
//! UploadPart, or an UploadPartCopy on the same endpoint), its MD5 checked, and its ETag
//! recorded; the worker whose part is recorded last completes the upload
//! ([`crate::complete`]).

use std::sync::{Arc, Mutex};

use ferry_core::task::PartTask;
use ferry_core::telemetry::Metric;
use ferry_queue::{Counted, PartRecorded};
use ferry_storage::{ByteRange, ErrorKind, Written};
use futures::TryStreamExt;
use md5::{Digest, Md5};
use tracing::debug;

use crate::complete::complete;
use crate::error::CopyError;
use crate::outcome::Outcome;
use crate::replan::replan;
use crate::runner::Job;
use crate::verify::verify_etag;

/// Copies one part, records its ETag, and completes the upload if it was the last one.
pub(crate) async fn copy_part(job: &Job<'_>, part: &PartTask) -> Result<Outcome, CopyError> {
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
async fn reusable_part(job: &Job<'_>, part: &PartTask) -> Result<Option<String>, CopyError> {
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
async fn upload_part(job: &Job<'_>, part: &PartTask) -> Result<String, CopyError> {
    upload_part_written(job, part).await.map(|w| w.etag)
}

async fn upload_part_written(job: &Job<'_>, part: &PartTask) -> Result<Written, CopyError> {
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
            })
            .map_err(CopyError::from);
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
    let trailer = job.capabilities().await?.checksum_trailer;
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
    error: CopyError,
) -> Result<Outcome, CopyError> {
    match error {
        CopyError::SourceChanged(_) => {
            debug!(key = %part.source.key, "source changed mid-copy; re-planning the object");
            replan(job, part).await
        }
        CopyError::Storage(e) if e.kind == ErrorKind::NotFound => {
            if job
                .shared
                .queue
                .upload(&job.rule.name, &part.upload)
                .await?
                .is_none()
            {
                return Ok(Outcome::Cancelled);
            }
            debug!(key = %part.source.key, error = %e, "source or upload gone; re-planning");
            replan(job, part).await
        }
        other => Err(other),
    }
}
