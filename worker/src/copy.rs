//! Copying one object in one request: streamed GET into PUT, or a server-side copy on the
//! same endpoint; deleting one; and what a task achieved.

use ferry_common::config::Rule;
use ferry_common::ledger::LedgerEntry;
use ferry_common::storage::{ErrorKind, StorageError, Stores, etag_is_md5};
use ferry_common::task::ObjectVersion;

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
    /// The part's upload had been abandoned; there is nothing left to do.
    Cancelled,
    /// A script already recorded the outcome (a split, a part, a re-plan), under this name.
    Recorded(&'static str),
    /// The lease was lost before the outcome could be recorded; another worker redoes it.
    LeaseLost,
}

impl Outcome {
    /// The name counted in the iteration record.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Copied { .. } | Outcome::Completed { .. } => "copied",
            Outcome::Gone => "gone",
            Outcome::Deleted => "deleted",
            Outcome::Kept => "kept",
            Outcome::Cancelled => "cancelled",
            Outcome::Recorded(name) => name,
            Outcome::LeaseLost => "lost",
        }
    }

    /// Bytes moved.
    pub fn bytes(&self) -> u64 {
        match self {
            Outcome::Copied { bytes, .. } | Outcome::Completed { bytes, .. } => *bytes,
            _ => 0,
        }
    }
}

/// Copies a version of an object below the multipart threshold in one request: a streamed
/// GET into a PUT, or CopyObject on the same endpoint. Reads are pinned to the version's ETag.
pub(crate) async fn copy_single(
    stores: &Stores,
    rule: &Rule,
    version: &ObjectVersion,
) -> Result<Outcome, StorageError> {
    let (bytes, destination_etag) = if rule.source.endpoint == rule.destination.endpoint {
        copy_server_side(stores, rule, &version.key, &version.etag, version.size).await?
    } else {
        copy_streamed(stores, rule, &version.key, &version.etag).await?
    };
    Ok(Outcome::Copied {
        bytes,
        entry: LedgerEntry {
            source_etag: version.etag.clone(),
            size: bytes,
            source_last_modified_ms: version.last_modified_ms,
            destination_etag,
        },
    })
}

/// The source object's current version, after a read pinned to an older one was refused;
/// `None` when it is gone.
pub(crate) async fn current_version(
    stores: &Stores,
    rule: &Rule,
    key: &str,
) -> Result<Option<ObjectVersion>, StorageError> {
    let source = stores.get(&rule.source.endpoint);
    match source.head(&rule.source.bucket, key, None).await {
        Ok(head) => Ok(Some(ObjectVersion {
            key: key.to_string(),
            size: head.size,
            etag: head.etag,
            last_modified_ms: head.last_modified_ms,
        })),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes a managed destination object whose source is gone, unless it changed since
/// planning (then it is no longer what ferry wrote, and is left alone).
pub(crate) async fn delete_object(
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

async fn copy_streamed(
    stores: &Stores,
    rule: &Rule,
    key: &str,
    etag: &str,
) -> Result<(u64, String), StorageError> {
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
    let md5 = get.head.etag_is_md5.then_some(get.head.etag.as_str());
    let written = destination
        .put(&rule.destination.bucket, key, get.body, length, &attrs, md5)
        .await?;
    verify_etag("PutObject", rule, key, &get.head.etag, &written)?;
    Ok((length, written))
}

async fn copy_server_side(
    stores: &Stores,
    rule: &Rule,
    key: &str,
    etag: &str,
    size: u64,
) -> Result<(u64, String), StorageError> {
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
    verify_etag("CopyObject", rule, key, etag, &written)?;
    Ok((size, written))
}

/// End-to-end integrity: where the expected ETag is the MD5 of the bytes (the source's, or
/// the one computed while streaming a part), the destination must report the same MD5 for
/// what it received. A mismatch is retried.
pub(crate) fn verify_etag(
    operation: &'static str,
    rule: &Rule,
    key: &str,
    source: &str,
    written: &str,
) -> Result<(), StorageError> {
    if etag_is_md5(source) && etag_is_md5(written) && !source.eq_ignore_ascii_case(written) {
        return Err(StorageError {
            kind: ErrorKind::Retryable,
            operation,
            target: format!("s3://{}/{key}", rule.destination.bucket),
            status: None,
            code: None,
            message: format!(
                "integrity check failed: destination md5 {written} differs from source {source}"
            ),
        });
    }
    Ok(())
}
