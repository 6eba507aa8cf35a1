//! What a destination bucket can do, found out by trying it, once per process and bucket.
//!
//! Stores differ in ways their answers do not announce: Garage accepts `If-None-Match: *`
//! and writes anyway; a bucket with SSE-KMS by default returns ETags that are not MD5s.
//! Assuming either way is wrong somewhere, so the first write to a destination bucket first
//! writes a small probe object under `.ferry-probe/` and deletes it again.

use bytes::Bytes;
use md5::{Digest, Md5};

use super::{
    BodyStream, ErrorKind, ObjectAttrs, ObjectStore, PutOptions, StorageError, WriteCondition,
};

/// What a destination bucket does with ferry's writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// It refuses (412) a write whose `If-None-Match: *` or `If-Match` does not hold, so a
    /// write that lands late cannot replace a newer one.
    pub conditional_writes: bool,
    /// A plain single-request write's ETag is the MD5 of its bytes, so ETags can be compared
    /// with the source's (false with default SSE-KMS, and on some stores).
    pub etags_are_md5: bool,
}

const PROBE_BODY: &[u8] = b"ferry capability probe\n";

fn body() -> BodyStream {
    Box::pin(futures::stream::once(async {
        Ok::<_, StorageError>(Bytes::from_static(PROBE_BODY))
    }))
}

/// Writes, conditionally rewrites, and deletes a probe object in `bucket` to find out what the
/// store does. A store that accepts a failing condition has no conditional writes.
pub async fn probe(store: &dyn ObjectStore, bucket: &str) -> Result<Capabilities, StorageError> {
    let key = format!(".ferry-probe/{:016x}", rand::random::<u64>());
    let attrs = ObjectAttrs::default();
    let put = |condition: WriteCondition| {
        let key = key.clone();
        let attrs = attrs.clone();
        async move {
            let options = PutOptions {
                attrs: &attrs,
                content_md5: None,
                checksum: None,
                condition: &condition,
                tagging: None,
            };
            store
                .put(bucket, &key, body(), PROBE_BODY.len() as u64, options)
                .await
        }
    };
    let first = put(WriteCondition::IfAbsent).await?;
    let md5 = hex::encode(Md5::digest(PROBE_BODY));
    let etags_are_md5 = first.etag_may_be_md5 && first.etag.eq_ignore_ascii_case(&md5);
    let refused = |r: Result<_, StorageError>| -> Result<bool, StorageError> {
        match r {
            Ok(_) => Ok(false),
            Err(e) if e.kind == ErrorKind::PreconditionFailed => Ok(true),
            Err(e) => Err(e),
        }
    };
    let absent_refused = refused(put(WriteCondition::IfAbsent).await);
    let match_refused = refused(
        put(WriteCondition::IfMatch(
            "00000000000000000000000000000000".into(),
        ))
        .await,
    );
    if let Err(e) = store.delete(bucket, &key).await {
        tracing::warn!(bucket, key = %key, error = %e, "could not delete the capability probe object");
    }
    Ok(Capabilities {
        conditional_writes: absent_refused? && match_refused?,
        etags_are_md5,
    })
}
