//! Copying one object in one request: a streamed GET into a PUT, or a server-side CopyObject
//! on the same endpoint. Reads are pinned to the planned ETag; the write is conditional where
//! the destination honours conditions, and checked ([`crate::verify`]) before it counts.

use std::sync::{Arc, Mutex};

use ferry_core::config::Rule;
use ferry_core::ledger::LedgerEntry;
use ferry_core::task::{Expected, ObjectVersion};
use ferry_core::telemetry::Metric;
use ferry_storage::{
    BodyStream, Capabilities, Checksum, ErrorKind, GetObject, ObjectAttrs, PutOptions,
    WriteCondition, Written,
};
use futures::TryStreamExt;
use md5::{Digest, Md5};

use crate::error::CopyError;
use crate::outcome::{Outcome, etag_differs};
use crate::runner::Job;
use crate::verify::{restore_tags, verify_etag};

/// Copies a version of an object below the multipart threshold in one request: a streamed
/// GET into a PUT, or CopyObject on the same endpoint. Reads are pinned to the version's
/// ETag; the write is conditional on `expected` where the destination honours conditions.
pub(crate) async fn copy_single(
    job: &Job<'_>,
    version: &ObjectVersion,
    expected: &Expected,
) -> Result<Outcome, CopyError> {
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

async fn copy_streamed(
    job: &Job<'_>,
    version: &ObjectVersion,
    expected: &Expected,
) -> Result<(u64, Written), CopyError> {
    let rule = job.rule;
    let key = &version.key;
    let source = job.shared.stores.source(rule);
    let destination = job.shared.stores.destination(rule);
    let caps = job.capabilities().await?;
    let condition = caps.put.apply(expected.condition());
    let get = source
        .get(&rule.source.bucket, key, None, Some(&version.etag))
        .await?;
    let tagging = if get.head.tag_count > 0 {
        source.get_tagging(&rule.source.bucket, key).await?
    } else {
        None
    };
    let attrs = destination_attrs(rule, &get.head.attrs);
    let length = get.content_length;
    let (body, check) = Checked::prepare(get, &caps);
    let options = check.options(&attrs, &condition, tagging.as_deref(), &caps);
    job.wrote();
    let written = destination
        .put(&rule.destination.bucket, key, body, length, options)
        .await
        .map_err(CopyError::on_write)?;
    check
        .after(job, key, &written, tagging.as_deref(), &caps)
        .await?;
    Ok((length, written))
}

/// A source object's headers as the destination is to have them: the rule's storage class
/// replaces the source's.
pub(crate) fn destination_attrs(rule: &Rule, source: &ObjectAttrs) -> ObjectAttrs {
    let mut attrs = source.clone();
    if let Some(class) = rule.destination.storage_class {
        attrs.storage_class = Some(class.as_str().to_string());
    }
    attrs
}

/// How a streamed write is checked: by the source's MD5 (Content-MD5) or checksum, which
/// the destination verifies, or by a CRC32C trailer, or else by the MD5 of the bytes sent,
/// computed on the way, against the destination's ETag.
pub(crate) struct Checked {
    md5: Option<String>,
    checksum: Option<Checksum>,
    hashed: Option<Arc<Mutex<Md5>>>,
    source_etag: String,
}

impl Checked {
    /// The body of `get`, to send, and how its write is checked on a destination that does
    /// what `caps` says.
    pub(crate) fn prepare(get: GetObject, caps: &Capabilities) -> (BodyStream, Checked) {
        let md5 = get.head.etag_is_md5.then(|| get.head.etag.clone());
        // The source's checksum only where the destination checks checksums.
        let checksum = get.head.checksum.filter(|_| caps.checksums_verified);
        // With neither the source's MD5 nor a checksum the destination checks, and no
        // trailer, the MD5 of the bytes sent is what the destination's ETag is checked
        // against.
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
        let check = Checked {
            md5,
            checksum,
            hashed,
            source_etag: get.head.etag,
        };
        (body, check)
    }

    /// The write's options: these headers, under `condition`, with `tagging` where the
    /// destination keeps tags sent with a write.
    pub(crate) fn options<'a>(
        &'a self,
        attrs: &'a ObjectAttrs,
        condition: &'a WriteCondition,
        tagging: Option<&'a str>,
        caps: &Capabilities,
    ) -> PutOptions<'a> {
        PutOptions {
            attrs,
            content_md5: self.md5.as_deref(),
            checksum: self.checksum.as_ref(),
            condition,
            // Only where the store keeps tags sent with the write (some refuse them outright).
            tagging: tagging.filter(|_| caps.tags_on_put),
            trailer: caps.checksum_trailer,
        }
    }

    /// Checks what the destination answered, and sets the tags where the write dropped them.
    pub(crate) async fn after(
        &self,
        job: &Job<'_>,
        key: &str,
        written: &Written,
        tagging: Option<&str>,
        caps: &Capabilities,
    ) -> Result<(), CopyError> {
        let sent = match &self.hashed {
            Some(hasher) => hex::encode(hasher.lock().expect("md5 hasher lock").clone().finalize()),
            None => self.source_etag.clone(),
        };
        verify_etag(job, "PutObject", key, &sent, written).await?;
        if caps.tagging && !caps.tags_on_put {
            restore_tags(job, key, tagging).await?;
        }
        Ok(())
    }
}

async fn copy_server_side(
    job: &Job<'_>,
    version: &ObjectVersion,
    expected: &Expected,
) -> Result<(u64, Written), CopyError> {
    let rule = job.rule;
    let key = &version.key;
    let store = job.shared.stores.source(rule);
    // CopyObject writes STANDARD unless told the class: the rule's, else the source's.
    let class = rule
        .destination
        .storage_class
        .map(|c| c.as_str())
        .or(version.storage_class.as_deref());
    let caps = job.capabilities().await?;
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
                Ok(_) => Err(CopyError::DestinationChanged(e)),
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
