//! A rule's view of a store under its `max_requests_per_second` and `max_bandwidth`: every
//! request takes a token from the rule's shared request budget, and the bytes the rule
//! copies take tokens from its bandwidth budget as they flow (a streamed copy counts its
//! bytes once, as they are read from the source; a server-side copy counts them when it is
//! sent). Both budgets are shared by every worker through Redis (see `ferry_core::fleet`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use super::{
    BodyStream, ByteRange, ErrorKind, GetObject, ListPage, ObjectAttrs, ObjectHead, ObjectStore,
    OpenUpload, PartHead, PutOptions, StorageError, UploadedPart, VersionCursor, VersionPage,
    VersionWritten, Versioning, WriteCondition, Written,
};
use ferry_core::fleet::{FleetError, RateBudget};

/// A store whose requests and bytes are drawn from a rule's budgets.
pub struct LimitedStore {
    inner: Arc<dyn ObjectStore>,
    requests: Option<Arc<dyn RateBudget>>,
    bytes: Option<Arc<dyn RateBudget>>,
}

impl LimitedStore {
    /// `inner`, limited by whichever budgets are given.
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        requests: Option<Arc<dyn RateBudget>>,
        bytes: Option<Arc<dyn RateBudget>>,
    ) -> LimitedStore {
        LimitedStore {
            inner,
            requests,
            bytes,
        }
    }

    fn budget_error(&self, operation: &'static str, e: FleetError) -> StorageError {
        StorageError {
            kind: ErrorKind::Retryable,
            operation,
            target: format!("the rule's budget on endpoint {}", self.inner.name()),
            status: None,
            code: None,
            message: e.to_string(),
        }
    }

    async fn request(&self, operation: &'static str) -> Result<(), StorageError> {
        match &self.requests {
            Some(b) => b.take(1).await.map_err(|e| self.budget_error(operation, e)),
            None => Ok(()),
        }
    }

    async fn copied(&self, operation: &'static str, n: u64) -> Result<(), StorageError> {
        match &self.bytes {
            Some(b) => b.take(n).await.map_err(|e| self.budget_error(operation, e)),
            None => Ok(()),
        }
    }

    /// `body` drawing its bytes from the bandwidth budget as it is read.
    fn metered(&self, body: BodyStream) -> BodyStream {
        let Some(budget) = self.bytes.clone() else {
            return body;
        };
        Box::pin(Metered {
            inner: body,
            budget,
            name: self.inner.name().to_string(),
            waiting: std::sync::Mutex::new(None),
        })
    }
}

type Taking = Pin<Box<dyn Future<Output = Result<(), FleetError>> + Send>>;

/// A body whose chunks wait for their bytes' tokens before they are handed on.
struct Metered {
    inner: BodyStream,
    budget: Arc<dyn RateBudget>,
    name: String,
    /// The chunk waiting for its tokens. Behind a mutex only to make the body `Sync` (the
    /// SDK requires it); it is reached through `get_mut`, never locked.
    waiting: std::sync::Mutex<Option<(Bytes, Taking)>>,
}

impl Stream for Metered {
    type Item = Result<Bytes, StorageError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let waiting = this.waiting.get_mut().unwrap_or_else(|p| p.into_inner());
        if waiting.is_none() {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let budget = this.budget.clone();
                    let n = chunk.len() as u64;
                    *waiting = Some((chunk, Box::pin(async move { budget.take(n).await })));
                }
                other => return other,
            }
        }
        let Some((_, taking)) = waiting.as_mut() else {
            return Poll::Pending;
        };
        match taking.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                let (chunk, _) = waiting
                    .take()
                    .unwrap_or_else(|| unreachable!("checked above"));
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(StorageError {
                kind: ErrorKind::Retryable,
                operation: "GetObject",
                target: format!("the rule's budget on endpoint {}", this.name),
                status: None,
                code: None,
                message: e.to_string(),
            }))),
        }
    }
}

#[async_trait]
impl ObjectStore for LimitedStore {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StorageError> {
        self.request("ListObjectsV2").await?;
        self.inner
            .list_page(bucket, prefix, start_after, token)
            .await
    }

    async fn head(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<ObjectHead, StorageError> {
        self.request("HeadObject").await?;
        self.inner.head(bucket, key, if_match).await
    }

    async fn head_part(
        &self,
        bucket: &str,
        key: &str,
        number: u32,
    ) -> Result<PartHead, StorageError> {
        self.request("HeadObject").await?;
        self.inner.head_part(bucket, key, number).await
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
        if_match: Option<&str>,
    ) -> Result<GetObject, StorageError> {
        self.request("GetObject").await?;
        let mut got = self.inner.get(bucket, key, range, if_match).await?;
        got.body = self.metered(got.body);
        Ok(got)
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: BodyStream,
        length: u64,
        options: PutOptions<'_>,
    ) -> Result<Written, StorageError> {
        self.request("PutObject").await?;
        self.inner.put(bucket, key, body, length, options).await
    }

    async fn copy(
        &self,
        source_bucket: &str,
        source_key: &str,
        if_match: Option<&str>,
        bucket: &str,
        key: &str,
        storage_class: Option<&str>,
        condition: &WriteCondition,
    ) -> Result<Written, StorageError> {
        self.request("CopyObject").await?;
        if self.bytes.is_some() {
            // Its size, to count the bytes it copies (only when a bandwidth limit is set).
            self.request("HeadObject").await?;
            let size = self
                .inner
                .head(source_bucket, source_key, if_match)
                .await?
                .size;
            self.copied("CopyObject", size).await?;
        }
        self.inner
            .copy(
                source_bucket,
                source_key,
                if_match,
                bucket,
                key,
                storage_class,
                condition,
            )
            .await
    }

    async fn get_tagging(&self, bucket: &str, key: &str) -> Result<Option<String>, StorageError> {
        self.request("GetObjectTagging").await?;
        self.inner.get_tagging(bucket, key).await
    }

    async fn put_tagging(
        &self,
        bucket: &str,
        key: &str,
        tagging: &str,
    ) -> Result<(), StorageError> {
        self.request("PutObjectTagging").await?;
        self.inner.put_tagging(bucket, key, tagging).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        self.request("DeleteObject").await?;
        self.inner.delete(bucket, key).await
    }

    async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        attrs: &ObjectAttrs,
        tagging: Option<&str>,
    ) -> Result<String, StorageError> {
        self.request("CreateMultipartUpload").await?;
        self.inner
            .create_multipart(bucket, key, attrs, tagging)
            .await
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: BodyStream,
        length: u64,
        trailer: bool,
    ) -> Result<Written, StorageError> {
        self.request("UploadPart").await?;
        self.inner
            .upload_part(bucket, key, upload_id, number, body, length, trailer)
            .await
    }

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
    ) -> Result<String, StorageError> {
        self.request("UploadPartCopy").await?;
        self.copied("UploadPartCopy", range.last + 1 - range.first)
            .await?;
        self.inner
            .upload_part_copy(
                source_bucket,
                source_key,
                if_match,
                range,
                bucket,
                key,
                upload_id,
                number,
            )
            .await
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        condition: &WriteCondition,
    ) -> Result<Written, StorageError> {
        self.request("CompleteMultipartUpload").await?;
        self.inner
            .complete_multipart(bucket, key, upload_id, parts, condition)
            .await
    }

    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        self.request("AbortMultipartUpload").await?;
        self.inner.abort_multipart(bucket, key, upload_id).await
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<UploadedPart>, StorageError> {
        self.request("ListParts").await?;
        self.inner.list_parts(bucket, key, upload_id).await
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<OpenUpload>, StorageError> {
        self.request("ListMultipartUploads").await?;
        self.inner.list_uploads(bucket, prefix).await
    }

    async fn versioning(&self, bucket: &str) -> Result<Versioning, StorageError> {
        self.request("GetBucketVersioning").await?;
        self.inner.versioning(bucket).await
    }

    async fn list_versions_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        cursor: Option<VersionCursor>,
    ) -> Result<VersionPage, StorageError> {
        self.request("ListObjectVersions").await?;
        self.inner
            .list_versions_page(bucket, prefix, start_after, cursor)
            .await
    }

    async fn get_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<GetObject, StorageError> {
        self.request("GetObject").await?;
        let mut got = self.inner.get_version(bucket, key, version_id).await?;
        got.body = self.metered(got.body);
        Ok(got)
    }

    async fn get_version_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<String>, StorageError> {
        self.request("GetObjectTagging").await?;
        self.inner
            .get_version_tagging(bucket, key, version_id)
            .await
    }

    async fn put_version(
        &self,
        bucket: &str,
        key: &str,
        body: BodyStream,
        length: u64,
        options: PutOptions<'_>,
    ) -> Result<VersionWritten, StorageError> {
        self.request("PutObject").await?;
        self.inner
            .put_version(bucket, key, body, length, options)
            .await
    }

    async fn delete_marker(&self, bucket: &str, key: &str) -> Result<Option<String>, StorageError> {
        self.request("DeleteObject").await?;
        self.inner.delete_marker(bucket, key).await
    }
}
