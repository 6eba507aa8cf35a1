//! Copying one object: streamed GET into PUT, or a server-side copy on the same endpoint.

use ferry_common::config::Rule;
use ferry_common::ledger::LedgerEntry;
use ferry_common::storage::{ErrorKind, StorageError, Stores, etag_is_md5};
use ferry_common::task::ObjectVersion;
use tracing::debug;

/// Largest object one PUT or CopyObject may write.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;
/// Times a copy is re-planned when the source changes under it.
const MAX_REPLANS: u32 = 3;

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
    /// The source object was deleted before it could be copied.
    Gone,
    /// A managed destination object whose source is gone was deleted (or was already gone).
    Deleted,
    /// The destination object changed since planning; a deletion left it alone.
    Kept,
}

impl Outcome {
    /// The name counted in the iteration record.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Copied { .. } => "copied",
            Outcome::Gone => "gone",
            Outcome::Deleted => "deleted",
            Outcome::Kept => "kept",
        }
    }

    /// Bytes moved.
    pub fn bytes(&self) -> u64 {
        match self {
            Outcome::Copied { bytes, .. } => *bytes,
            _ => 0,
        }
    }
}

/// Copies the planned version of one object. Reads are pinned to the planned ETag; if the
/// source changed meanwhile, the copy is re-planned against its current version (never a mix
/// of two versions).
pub async fn copy_object(
    stores: &Stores,
    rule: &Rule,
    planned: &ObjectVersion,
) -> Result<Outcome, StorageError> {
    let mut etag = planned.etag.clone();
    let mut size = planned.size;
    let mut last_modified_ms = planned.last_modified_ms;
    let mut replans = 0;
    loop {
        let attempt = if rule.source.endpoint == rule.destination.endpoint {
            copy_server_side(stores, rule, &planned.key, &etag, size).await
        } else {
            copy_streamed(stores, rule, &planned.key, &etag, size).await
        };
        match attempt {
            Ok((bytes, destination_etag)) => {
                return Ok(Outcome::Copied {
                    bytes,
                    entry: LedgerEntry {
                        source_etag: etag,
                        size: bytes,
                        source_last_modified_ms: last_modified_ms,
                        destination_etag,
                    },
                });
            }
            Err(e) if e.kind == ErrorKind::PreconditionFailed && replans < MAX_REPLANS => {
                replans += 1;
                let source = stores.get(&rule.source.endpoint);
                match source.head(&rule.source.bucket, &planned.key, None).await {
                    Ok(head) => {
                        debug!(key = %planned.key, old = %etag, new = %head.etag,
                            "source changed since planning; copying its current version");
                        etag = head.etag;
                        size = head.size;
                        last_modified_ms = head.last_modified_ms;
                    }
                    Err(e) if e.kind == ErrorKind::NotFound => return Ok(Outcome::Gone),
                    Err(e) => return Err(e),
                }
            }
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(Outcome::Gone),
            Err(e) => return Err(e),
        }
    }
}

/// Deletes a managed destination object whose source is gone, unless it changed since
/// planning (then it is no longer what ferry wrote, and is left alone).
pub async fn delete_object(
    stores: &Stores,
    rule: &Rule,
    key: &str,
    destination_etag: &str,
) -> Result<Outcome, StorageError> {
    let destination = stores.get(&rule.destination.endpoint);
    match destination.head(&rule.destination.bucket, key, None).await {
        Ok(head) if head.etag != destination_etag => return Ok(Outcome::Kept),
        Ok(_) => {}
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(Outcome::Deleted),
        Err(e) => return Err(e),
    }
    destination.delete(&rule.destination.bucket, key).await?;
    Ok(Outcome::Deleted)
}

fn too_large(rule: &Rule, key: &str, size: u64) -> StorageError {
    StorageError {
        kind: ErrorKind::Permanent,
        operation: "PutObject",
        target: format!("s3://{}/{key}", rule.destination.bucket),
        status: None,
        message: format!(
            "object of {size} bytes exceeds the 5 GiB single-request limit; \
             multipart copies are not supported yet"
        ),
    }
}

async fn copy_streamed(
    stores: &Stores,
    rule: &Rule,
    key: &str,
    etag: &str,
    size: u64,
) -> Result<(u64, String), StorageError> {
    if size > MAX_SINGLE_PUT {
        return Err(too_large(rule, key, size));
    }
    let source = stores.get(&rule.source.endpoint);
    let destination = stores.get(&rule.destination.endpoint);
    let get = source
        .get(&rule.source.bucket, key, None, Some(etag))
        .await?;
    let mut attrs = get.head.attrs.clone();
    if let Some(class) = rule.destination.storage_class {
        attrs.storage_class = Some(class.as_str().to_string());
    }
    let length = get.content_length;
    let written = destination
        .put(&rule.destination.bucket, key, get.body, length, &attrs)
        .await?;
    verify_etag(rule, key, &get.head.etag, &written)?;
    Ok((length, written))
}

async fn copy_server_side(
    stores: &Stores,
    rule: &Rule,
    key: &str,
    etag: &str,
    size: u64,
) -> Result<(u64, String), StorageError> {
    if size > MAX_SINGLE_PUT {
        return Err(too_large(rule, key, size));
    }
    let store = stores.get(&rule.source.endpoint);
    let class = rule.destination.storage_class.map(|c| c.as_str());
    let written = store
        .copy(
            &rule.source.bucket,
            key,
            Some(etag),
            &rule.destination.bucket,
            key,
            class,
        )
        .await?;
    verify_etag(rule, key, etag, &written)?;
    Ok((size, written))
}

/// End-to-end integrity: where the source ETag is the MD5 of the bytes, the destination must
/// report the same MD5 for what it received.
fn verify_etag(rule: &Rule, key: &str, source: &str, written: &str) -> Result<(), StorageError> {
    if etag_is_md5(source) && etag_is_md5(written) && !source.eq_ignore_ascii_case(written) {
        return Err(StorageError {
            kind: ErrorKind::Retryable,
            operation: "PutObject",
            target: format!("s3://{}/{key}", rule.destination.bucket),
            status: None,
            message: format!(
                "integrity check failed: destination md5 {written} differs from source {source}"
            ),
        });
    }
    Ok(())
}
