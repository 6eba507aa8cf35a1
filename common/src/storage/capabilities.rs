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

/// The probe object's key: one per process, so that a probe cut short by a fault (and so
/// not deleted) is overwritten and deleted by the next try, not left behind beside others.
fn probe_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| format!(".ferry-probe/{:016x}", rand::random::<u64>()))
}

/// Attempts at deleting the probe object before it is left (with a warning).
const DELETE_ATTEMPTS: u32 = 5;

/// Writes, conditionally rewrites, and deletes a probe object in `bucket` to find out what the
/// store does. A store that accepts a failing condition has no conditional writes.
pub async fn probe(store: &dyn ObjectStore, bucket: &str) -> Result<Capabilities, StorageError> {
    let found = try_probe(store, bucket).await;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match store.delete(bucket, probe_key()).await {
            Ok(()) => break,
            Err(e) if e.kind.is_retryable() && attempt < DELETE_ATTEMPTS => {
                tokio::time::sleep(crate::retry::RetryPolicy::TRANSIENT.delay(attempt)).await;
            }
            Err(e) => {
                tracing::warn!(bucket, key = probe_key(), error = %e,
                    "could not delete the capability probe object");
                break;
            }
        }
    }
    found
}

async fn try_probe(store: &dyn ObjectStore, bucket: &str) -> Result<Capabilities, StorageError> {
    let key = probe_key();
    let attrs = ObjectAttrs::default();
    let put = |condition: WriteCondition| {
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
                .put(bucket, key, body(), PROBE_BODY.len() as u64, options)
                .await
        }
    };
    // Plain: an earlier, interrupted probe of this process may have left the object.
    let first = put(WriteCondition::None).await?;
    let md5 = hex::encode(Md5::digest(PROBE_BODY));
    let etags_are_md5 = first.etag_may_be_md5 && first.etag.eq_ignore_ascii_case(&md5);
    let refused = |r: Result<_, StorageError>| -> Result<bool, StorageError> {
        match r {
            Ok(_) => Ok(false),
            Err(e) if e.kind == ErrorKind::PreconditionFailed => Ok(true),
            Err(e) => Err(e),
        }
    };
    let absent_refused = refused(put(WriteCondition::IfAbsent).await)?;
    let match_refused = refused(
        put(WriteCondition::IfMatch(
            "00000000000000000000000000000000".into(),
        ))
        .await,
    )?;
    Ok(Capabilities {
        conditional_writes: absent_refused && match_refused,
        etags_are_md5,
    })
}
