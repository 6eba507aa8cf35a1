//! What every write is held to before it counts: the destination's ETag against the MD5 of
//! what was read, and tags read back after they were set.

use ferry_storage::{Written, etag_is_md5};

use crate::error::{CopyError, Failure};
use crate::runner::Job;

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
) -> Result<(), CopyError> {
    if !written.etag_may_be_md5 || !etag_is_md5(source) || !etag_is_md5(&written.etag) {
        return Ok(());
    }
    if source.eq_ignore_ascii_case(&written.etag) {
        return Ok(());
    }
    let rule = job.rule;
    if !job.capabilities().await?.etags_are_md5 {
        return Ok(());
    }
    Err(CopyError::Integrity(Failure::new(
        operation,
        format!("s3://{}/{key}", rule.destination.bucket),
        format!(
            "integrity check failed: destination md5 {} differs from source {source}",
            written.etag
        ),
    )))
}

/// Sets `tags` on a destination object whose write path dropped them, and reads them back:
/// a copy is not done until its tags are there.
pub(crate) async fn restore_tags(
    job: &Job<'_>,
    key: &str,
    tags: Option<&str>,
) -> Result<(), CopyError> {
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
    Err(CopyError::Integrity(Failure::new(
        "PutObjectTagging",
        format!("s3://{bucket}/{key}"),
        format!(
            "the destination's tags are {:?} after setting {tags:?}",
            now.unwrap_or_default()
        ),
    )))
}
