//! Object storage: the [`ObjectStore`] trait the coordinator and workers use, its S3
//! implementation ([`S3Store`]), [`StorageError`] with the one error classifier, and the
//! per-destination [`Capabilities`] probe.

mod capabilities;
#[cfg(feature = "testing")]
pub mod contract;
mod direct;
mod error;
mod limited;
#[cfg(feature = "testing")]
pub mod memstore;
mod s3;
mod sigv4;
mod stores;
mod tls;
mod versions;
mod wire;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub use capabilities::{probe, probe_patiently};
pub use error::{ErrorKind, StorageError, classify};
pub use limited::LimitedStore;
pub use s3::{RequestPath, S3Store, Timeouts, sdk_config};
pub use stores::{PROBE_LIFETIME, Stores};
pub use tls::{Authorities, CA_BUNDLE_VAR, Trust, TrustError};
pub use versions::{ByKey, VersionCursor, VersionEntry, VersionPage, VersionWritten, Versioning};

pub use ferry_core::capabilities::{Capabilities, Conditions, EtagForm};
pub use ferry_core::object::{
    ByteRange, Checksum, ChecksumKind, ObjectAttrs, ObjectMeta, WriteCondition, etag_is_md5,
};

/// A streamed object body. `Sync` because the SDK's request bodies must be.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send + Sync>>;

/// One page of a listing, in key order.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// The objects of this page.
    pub objects: Vec<ObjectMeta>,
    /// Token for the next page; `None` on the last one.
    pub next_token: Option<String>,
}

/// What HEAD (or the headers of a GET) tells about one object.
#[derive(Clone, Debug)]
pub struct ObjectHead {
    /// Size in bytes (of the whole object).
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// Last-Modified in milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    /// Preserved headers and metadata.
    pub attrs: ObjectAttrs,
    /// Whether the ETag is the MD5 of the whole object: a single-request upload, and the
    /// response shows no SSE-KMS or SSE-C (whose ETags are not MD5s).
    pub etag_is_md5: bool,
    /// Tags on the object (`x-amz-tagging-count`); 0 when the server does not say.
    pub tag_count: u32,
    /// In an archive class (GLACIER, DEEP_ARCHIVE, an archive tier) and not restored: its
    /// bytes cannot be read.
    pub archived: bool,
    /// The object's full-object checksum, when the server keeps one and returned it.
    pub checksum: Option<Checksum>,
}

/// What a single-request write sends besides the body.
#[derive(Clone, Copy, Debug)]
pub struct PutOptions<'a> {
    /// Headers, metadata and storage class.
    pub attrs: &'a ObjectAttrs,
    /// The MD5 the bytes must have (hex): the server refuses other bytes (Content-MD5).
    pub content_md5: Option<&'a str>,
    /// The source's full-object checksum: the server refuses bytes that do not have it.
    /// Without it (and without `content_md5`), a streamed CRC32C trailer covers the upload.
    pub checksum: Option<&'a Checksum>,
    /// The condition on the destination key.
    pub condition: &'a WriteCondition,
    /// Tags, URL-encoded (`k1=v1&k2=v2`), for `x-amz-tagging`.
    pub tagging: Option<&'a str>,
    /// Without `content_md5` or `checksum`: send a streamed CRC32C trailer (aws-chunked) for
    /// the server to verify. False where the store refuses trailers (the probe says); then
    /// the caller checks the returned ETag against the MD5 of what it sent.
    pub trailer: bool,
}

impl<'a> PutOptions<'a> {
    /// A write with these headers under `condition`, with nothing else: no MD5, checksum,
    /// tags or trailer.
    pub fn new(attrs: &'a ObjectAttrs, condition: &'a WriteCondition) -> Self {
        PutOptions {
            attrs,
            content_md5: None,
            checksum: None,
            condition,
            tagging: None,
            trailer: false,
        }
    }
}

/// What a write returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The new object's (or part's) ETag, without quotes.
    pub etag: String,
    /// Whether that ETag can be an MD5 of the bytes: false when the response shows SSE-KMS
    /// or SSE-C, whose ETags are not.
    pub etag_may_be_md5: bool,
}

/// A GET in progress: the object's headers and its body as a stream.
pub struct GetObject {
    /// Headers of the object.
    pub head: ObjectHead,
    /// Bytes in `body` (the range's length for a ranged GET).
    pub content_length: u64,
    /// The body, read as it arrives.
    pub body: BodyStream,
}

/// A part already uploaded to a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadedPart {
    /// 1-based part number.
    pub number: u32,
    /// The part's ETag without quotes.
    pub etag: String,
    /// Part size in bytes.
    pub size: u64,
}

/// What HEAD with `partNumber` tells about one part of a multipart object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartHead {
    /// The whole object's ETag, without quotes (compare it with the planned one: some
    /// servers refuse `partNumber` together with If-Match).
    pub etag: String,
    /// Parts in the object (`x-amz-mp-parts-count`); `None` when the server did not say, or
    /// the object is not multipart.
    pub parts_count: Option<u64>,
    /// Bytes in the part asked for.
    pub length: u64,
}

/// A multipart upload still open at a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenUpload {
    /// The key being uploaded.
    pub key: String,
    /// The upload's id.
    pub upload_id: String,
    /// When it was started, ms since the Unix epoch (0 when the server does not say).
    pub initiated_ms: i64,
}

/// An S3-compatible bucket service. Every error carries a [`ErrorKind`] to branch on.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// The endpoint's name in the config, for messages.
    fn name(&self) -> &str;

    /// One page (up to 1000 keys) of the objects under `prefix`, in key order: the first page
    /// (no `token`) starts after `start_after` when given; later pages follow `token`.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StorageError>;

    /// Headers of one object; with `if_match`, fails with `PreconditionFailed` unless the
    /// object still has that ETag.
    async fn head(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<ObjectHead, StorageError>;

    /// Headers of part `number` of a multipart object (HEAD with `partNumber`). It carries no
    /// If-Match, which moto refuses with `partNumber`: the caller compares [`PartHead::etag`].
    async fn head_part(
        &self,
        bucket: &str,
        key: &str,
        number: u32,
    ) -> Result<PartHead, StorageError>;

    /// Reads an object (or a range of it) as a stream, pinned to an ETag with `if_match`.
    async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
        if_match: Option<&str>,
    ) -> Result<GetObject, StorageError>;

    /// Writes an object from a stream of exactly `length` bytes (see [`PutOptions`]).
    ///
    /// With `content_md5` (a source's MD5 ETag) or `checksum` (the source's own), the server
    /// checks the bytes against what the source holds, which covers the whole way from the
    /// source. Without either, a streamed CRC32C trailer covers the upload.
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: BodyStream,
        length: u64,
        options: PutOptions<'_>,
    ) -> Result<Written, StorageError>;

    /// Server-side copy within this endpoint (objects up to 5 GiB), keeping headers, metadata
    /// and tags; `storage_class` overrides the source's; `condition` applies to the
    /// destination key where the server honours it.
    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &self,
        source_bucket: &str,
        source_key: &str,
        if_match: Option<&str>,
        bucket: &str,
        key: &str,
        storage_class: Option<&str>,
        condition: &WriteCondition,
    ) -> Result<Written, StorageError>;

    /// The object's tags, URL-encoded (`k1=v1&k2=v2`); `None` when it has none or the server
    /// does not implement tagging.
    async fn get_tagging(&self, bucket: &str, key: &str) -> Result<Option<String>, StorageError>;

    /// Replaces the object's tags (`k1=v1&k2=v2`, URL-encoded): for write paths on which a
    /// store drops them (the probe says which).
    async fn put_tagging(&self, bucket: &str, key: &str, tagging: &str)
    -> Result<(), StorageError>;

    /// Deletes an object (absent objects are not an error).
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError>;

    /// Starts a multipart upload with these headers and tags; returns its upload id.
    async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        attrs: &ObjectAttrs,
        tagging: Option<&str>,
    ) -> Result<String, StorageError>;

    /// Uploads one part from a stream of exactly `length` bytes; with `trailer`, with a
    /// streamed CRC32C checksum the server verifies (not where the store refuses trailers).
    #[allow(clippy::too_many_arguments)]
    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: BodyStream,
        length: u64,
        trailer: bool,
    ) -> Result<Written, StorageError>;

    /// Uploads one part by server-side copy of `range` of a source object on this endpoint,
    /// pinned to the source ETag with `if_match`; returns the part's ETag.
    #[allow(clippy::too_many_arguments)]
    async fn upload_part_copy(
        &self,
        source_bucket: &str,
        source_key: &str,
        if_match: &str,
        range: ByteRange,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
    ) -> Result<String, StorageError>;

    /// Completes a multipart upload from its parts in order, under `condition` on the key.
    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        condition: &WriteCondition,
    ) -> Result<Written, StorageError>;

    /// Aborts a multipart upload.
    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError>;

    /// The parts already uploaded to a multipart upload.
    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<UploadedPart>, StorageError>;

    /// The multipart uploads open under `prefix` (all pages).
    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<OpenUpload>, StorageError>;

    /// Whether `bucket` keeps versions (GetBucketVersioning).
    async fn versioning(&self, bucket: &str) -> Result<Versioning, StorageError> {
        Err(versions::unsupported(
            self.name(),
            "GetBucketVersioning",
            bucket,
        ))
    }

    /// One page (up to 1000 entries) of the versions and delete markers under `prefix`, in
    /// the server's order (keys ascending, each key's entries newest first): the first page
    /// (no `cursor`) starts after the key `start_after`; later pages follow `cursor`.
    async fn list_versions_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        cursor: Option<VersionCursor>,
    ) -> Result<VersionPage, StorageError> {
        let _ = (start_after, cursor);
        Err(versions::unsupported(
            self.name(),
            "ListObjectVersions",
            &format!("s3://{bucket}/{prefix}"),
        ))
    }

    /// Reads one version of an object, whole, as a stream.
    async fn get_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<GetObject, StorageError> {
        let _ = version_id;
        Err(versions::unsupported(
            self.name(),
            "GetObject",
            &format!("s3://{bucket}/{key}"),
        ))
    }

    /// The tags of one version (as [`ObjectStore::get_tagging`]).
    async fn get_version_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<String>, StorageError> {
        let _ = version_id;
        Err(versions::unsupported(
            self.name(),
            "GetObjectTagging",
            &format!("s3://{bucket}/{key}"),
        ))
    }

    /// Writes an object as [`ObjectStore::put`] does, and says which version it made.
    async fn put_version(
        &self,
        bucket: &str,
        key: &str,
        body: BodyStream,
        length: u64,
        options: PutOptions<'_>,
    ) -> Result<VersionWritten, StorageError> {
        let _ = (body, length, options);
        Err(versions::unsupported(
            self.name(),
            "PutObject",
            &format!("s3://{bucket}/{key}"),
        ))
    }

    /// Puts a delete marker on `key` (DeleteObject without a version id) and returns the
    /// marker's version id; `None` when the bucket did not make one.
    async fn delete_marker(&self, bucket: &str, key: &str) -> Result<Option<String>, StorageError> {
        Err(versions::unsupported(
            self.name(),
            "DeleteObject",
            &format!("s3://{bucket}/{key}"),
        ))
    }
}

/// Attempts per listing page before a transient error ends the listing.
pub const LIST_ATTEMPTS: u32 = 6;

/// Lists every object under `prefix` (after `start_after`) as a stream of pages, fetching one
/// page at a time. A transient error is retried with backoff, up to [`LIST_ATTEMPTS`] per
/// page; the stream ends after the last page or after yielding an error.
pub fn list_pages(
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    start_after: Option<String>,
) -> impl Stream<Item = Result<ListPage, StorageError>> + Send {
    // State: None = finished; Some(token) = the next page to fetch (first: Some(None)).
    futures::stream::try_unfold(Some(None::<String>), move |state| {
        let store = store.clone();
        let (bucket, prefix, start_after) = (bucket.clone(), prefix.clone(), start_after.clone());
        async move {
            let Some(token) = state else {
                return Ok(None);
            };
            let page = with_listing_retries(|| {
                store.list_page(&bucket, &prefix, start_after.as_deref(), token.clone())
            })
            .await?;
            let next = page.next_token.clone().map(Some);
            Ok(Some((page, next)))
        }
    })
}

/// Lists every version and delete marker under `prefix` (after the key `start_after`) as a
/// stream of pages in the server's order, retried as [`list_pages`] retries.
pub fn list_version_pages(
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    start_after: Option<String>,
) -> impl Stream<Item = Result<VersionPage, StorageError>> + Send {
    // State: None = finished; Some(cursor) = the next page to fetch (first: Some(None)).
    futures::stream::try_unfold(Some(None::<VersionCursor>), move |state| {
        let store = store.clone();
        let (bucket, prefix, start_after) = (bucket.clone(), prefix.clone(), start_after.clone());
        async move {
            let Some(cursor) = state else {
                return Ok(None);
            };
            let page = with_listing_retries(|| {
                store.list_versions_page(&bucket, &prefix, start_after.as_deref(), cursor.clone())
            })
            .await?;
            let next = page.next.clone().map(Some);
            Ok(Some((page, next)))
        }
    })
}

/// One listing request, tried again after a transient failure (up to [`LIST_ATTEMPTS`]
/// times) and after a throttle (without using up attempts).
async fn with_listing_retries<T, F, Fut>(mut request: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StorageError>>,
{
    let (mut attempt, mut throttled) = (0, 0);
    loop {
        attempt += 1;
        match request().await {
            // Throttling is not failing: wait longer, without using up attempts.
            Err(e) if e.kind == ErrorKind::Throttled => {
                attempt -= 1;
                throttled += 1;
                tracing::debug!(error = %e, throttled, "listing throttled; slowing down");
                tokio::time::sleep(ferry_core::retry::RetryPolicy::THROTTLED.delay(throttled))
                    .await;
            }
            Err(e) if e.kind.is_retryable() && attempt < LIST_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "listing failed; retrying");
                tokio::time::sleep(ferry_core::retry::RetryPolicy::TRANSIENT.delay(attempt)).await;
            }
            other => return other,
        }
    }
}
