//! What a bucket's store does with ferry's requests, found out by trying each one both ways.
//!
//! Stores differ in ways their answers do not announce: Garage accepts `If-None-Match: *` and
//! writes anyway; Ceph RGW 16 refuses `If-Match` with a quoted ETag even when it matches,
//! ignores conditions on CompleteMultipartUpload, drops the tags of a multipart upload,
//! answers CompleteMultipartUpload with an empty ETag and refuses streamed checksum
//! trailers; a bucket with SSE-KMS by default returns ETags that are not MD5s. So nothing is
//! assumed, and nothing branches on a store's name: before the first write to a bucket, the
//! probe writes a few small objects under `.ferry-probe/`, and a capability counts only when
//! the store refuses what it should **and** accepts what it should. Then it deletes them.

use bytes::Bytes;
use md5::{Digest, Md5};
use sha2::Sha256;

use ferry_core::capabilities::{Capabilities, Conditions, EtagForm};

use super::{
    BodyStream, Checksum, ChecksumKind, ErrorKind, ObjectAttrs, ObjectStore, PutOptions,
    StorageError, UploadedPart, WriteCondition, Written,
};

const BODY: &[u8] = b"ferry capability probe\n";
const OTHER_BODY: &[u8] = b"ferry capability probe, another version\n";
const TAGS: &str = "ferry-probe=1";
const WRONG_ETAG: &str = "00000000000000000000000000000000";

fn body(bytes: &'static [u8]) -> BodyStream {
    Box::pin(futures::stream::once(async move {
        Ok::<_, StorageError>(Bytes::from_static(bytes))
    }))
}

/// The probe's keys: one folder per process, so that a probe cut short by a fault (and so
/// not cleaned up) is overwritten and cleaned up by the next try, not left beside others.
fn probe_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!(".ferry-probe/{:016x}/", rand::random::<u64>()))
}

/// How old what a probe left (its process died mid-probe) must be before another probe
/// removes it.
const STRAY_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A clean-up that failed leaves a stray the next probe removes (after [`STRAY_AGE`]).
fn left_as_stray<T>(result: Result<T, StorageError>, key: &str) {
    if let Err(e) = result {
        tracing::debug!(key, error = %e, "left for the next probe to clean up");
    }
}

/// Attempts at deleting each probe object before it is left (with a warning).
const DELETE_ATTEMPTS: u32 = 5;

/// How a store answered a probing request.
enum Answer<T> {
    Accepted(T),
    /// 412 Precondition Failed.
    Refused,
    /// Any other answer of the server's (400, 501, ...): not a capability.
    Failed(StorageError),
}

/// Sorts an answer; an error that says nothing about the store (no answer, a 5xx, throttling)
/// ends the probe, to be tried again later.
fn answer<T>(r: Result<T, StorageError>) -> Result<Answer<T>, StorageError> {
    match r {
        Ok(v) => Ok(Answer::Accepted(v)),
        Err(e) if e.kind == ErrorKind::PreconditionFailed => Ok(Answer::Refused),
        Err(e)
            if e.kind == ErrorKind::Throttled
                || e.status.is_none()
                || e.status.is_some_and(|s| s >= 500 && s != 501) =>
        {
            Err(e)
        }
        Err(e) => Ok(Answer::Failed(e)),
    }
}

tokio::task_local! {
    /// Set while a probe runs: its requests are counted apart ([`probing`]).
    static PROBING: ();
}

/// Whether the current task is probing a store: its requests count as
/// `ferry_probe_requests_total`, and the refusals it provokes are not errors.
pub(crate) fn probing() -> bool {
    PROBING.try_with(|_| ()).is_ok()
}

/// Writes, rewrites, completes, copies and tags a few small objects under `.ferry-probe/` in
/// `bucket` to find out what the store does, then deletes them (and aborts the probe's
/// uploads). See [`Capabilities`].
pub async fn probe(store: &dyn ObjectStore, bucket: &str) -> Result<Capabilities, StorageError> {
    probe_patiently(store, bucket).await.map(|(found, _)| found)
}

/// [`probe`], and whether a request of it had to be retried (no answer, a 5xx, throttling):
/// such an answer is right as far as the probe can tell, but is trusted for less long.
pub async fn probe_patiently(
    store: &dyn ObjectStore,
    bucket: &str,
) -> Result<(Capabilities, bool), StorageError> {
    let patient = Patient {
        inner: store,
        disturbed: std::sync::atomic::AtomicBool::new(false),
    };
    let found = PROBING
        .scope((), probe_counted_apart(&patient, bucket))
        .await?;
    Ok((found, patient.disturbed()))
}

async fn probe_counted_apart(
    store: &dyn ObjectStore,
    bucket: &str,
) -> Result<Capabilities, StorageError> {
    let mut probe = Probe {
        store,
        bucket,
        multipart_tags_refused: false,
        complete_etag: false,
        written: Vec::new(),
        uploads: Vec::new(),
    };
    let found = probe.run().await;
    probe.clean_up().await;
    found
}

mod conditions;
mod patient;
mod probe;

use patient::Patient;
use probe::Probe;
