//! Completing a multipart upload once every part is in: conditional where the destination
//! honours it (decided again if the destination moved on), its ETag checked against the one
//! the parts make, and the source's tags set where the upload dropped them.

use ferry_core::ledger::LedgerEntry;
use ferry_core::parts::{etag_parts, multipart_etag};
use ferry_core::task::{PartTask, UploadRecord};
use ferry_core::telemetry::Metric;
use ferry_storage::{ErrorKind, UploadedPart, Written};
use tracing::{debug, warn};

use crate::error::{CopyError, Failure};
use crate::object::MAX_REPLANS;
use crate::outcome::Outcome;
use crate::replan::{Replanned, replan, replan_destination};
use crate::runner::Job;
use crate::verify::restore_tags;

/// Completes the upload once every part is in, and checks the ETag that came out.
pub(crate) async fn complete(
    job: &Job<'_>,
    part: &PartTask,
    record: &UploadRecord,
    parts: Vec<(u32, String)>,
) -> Result<Outcome, CopyError> {
    let expected = multipart_etag(parts.iter().map(|(_, e)| e.as_str()));
    let uploaded: Vec<UploadedPart> = parts
        .into_iter()
        .map(|(number, etag)| UploadedPart {
            number,
            etag,
            size: 0,
        })
        .collect();
    match completed(job, part, &uploaded, expected.as_deref()).await? {
        Completion::Written(written) => checked(job, part, record, written, expected).await,
        Completion::Settled(outcome) => Ok(outcome),
    }
}

/// What a completion came to.
enum Completion {
    /// The object is there, written by this upload.
    Written(Written),
    /// Nothing more to do for this upload: left (skipped), or planned again.
    Settled(Outcome),
}

/// Sends CompleteMultipartUpload, under the condition the destination honours, deciding the
/// key again when the destination moved on, and telling an earlier attempt's completion
/// (whose ack was lost) from a lost upload.
async fn completed(
    job: &Job<'_>,
    part: &PartTask,
    uploaded: &[UploadedPart],
    expected: Option<&str>,
) -> Result<Completion, CopyError> {
    let rule = job.rule;
    let destination = job.shared.stores.destination(rule);
    let (bucket, key) = (&rule.destination.bucket, &part.source.key);
    let caps = job.capabilities().await?;
    let mut wanted = part.destination.clone();
    let mut replans = 0;
    let written = loop {
        let condition = caps.complete.apply(wanted.condition());
        job.wrote();
        match destination
            .complete_multipart(bucket, key, &part.upload_id, uploaded, &condition)
            .await
            .map_err(CopyError::on_write)
        {
            Ok(written) => break written,
            // The destination moved on: decide the key again, and complete under the new
            // condition, with the parts already uploaded, or leave it.
            Err(CopyError::DestinationChanged(e)) if replans < MAX_REPLANS => {
                replans += 1;
                debug!(key = %key, error = %e, "destination changed while the parts were copied");
                match replan_destination(job, &part.source).await? {
                    Replanned::Copy(now) => wanted = now,
                    Replanned::AlreadyThere(written) => break written,
                    Replanned::Skip(reason) => {
                        job.abort_upload(key, &part.upload_id).await?;
                        return Ok(Completion::Settled(Outcome::Skipped {
                            reason,
                            upload: Some(part.upload.clone()),
                        }));
                    }
                }
            }
            // Completed by an earlier attempt whose ack was lost, or completed with a reply
            // the SDK cannot read (moto's), if the object there is exactly what these parts
            // make; if the upload is gone otherwise, the object starts over.
            Err(CopyError::Storage(e))
                if e.kind == ErrorKind::NotFound || e.status.is_some_and(|s| s < 300) =>
            {
                match destination.head(bucket, key, None).await {
                    Ok(head) if expected == Some(head.etag.as_str()) => {
                        break Written {
                            etag: head.etag,
                            etag_may_be_md5: head.etag_is_md5,
                        };
                    }
                    _ if e.kind == ErrorKind::NotFound => {
                        return replan(job, part).await.map(Completion::Settled);
                    }
                    _ => return Err(e.into()),
                }
            }
            // The parts there are not the ones recorded: a part's upload, interrupted after
            // its lease ran out while another worker had already uploaded it again, replaced
            // the good part on servers (Garage) that keep the latest attempt. Start over.
            Err(CopyError::Storage(e)) if e.code.as_deref() == Some("InvalidPart") => {
                warn!(key = %key, error = %e, "uploaded parts do not match the recorded ones; re-planning");
                return replan(job, part).await.map(Completion::Settled);
            }
            Err(e) => return Err(e),
        }
    };
    Ok(Completion::Written(written))
}

/// Checks the completed object's ETag against the one its parts make (and notes one that
/// differs from the source's), and sets the source's tags where the upload dropped them.
async fn checked(
    job: &Job<'_>,
    part: &PartTask,
    record: &UploadRecord,
    written: Written,
    expected: Option<String>,
) -> Result<Outcome, CopyError> {
    let rule = job.rule;
    let destination = job.shared.stores.destination(rule);
    let (bucket, key) = (&rule.destination.bucket, &part.source.key);
    let caps = job.capabilities().await?;
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
        return Err(CopyError::Integrity(Failure::new(
            "CompleteMultipartUpload",
            format!("s3://{bucket}/{key}"),
            format!(
                "integrity check failed: the upload's ETag {etag} is not the one its parts \
                 make ({expected})"
            ),
        )));
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
