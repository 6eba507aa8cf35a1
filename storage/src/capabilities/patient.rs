//! The store as the probe sees it: retried while an answer says nothing about the store.

use super::*;

/// Attempts at each of the probe's requests while the answer says nothing about the store.
const PROBE_ATTEMPTS: u32 = 6;

/// The store as the probe sees it: each request retried while its answer says nothing about
/// the store (no answer, a 5xx, throttling), and answered as if it had been sent once. A
/// write whose answer was lost but which landed is recognised: a retried `If-None-Match: *`
/// PUT refused because the first attempt wrote the key, and a retried completion whose upload
/// the first attempt completed, both answer as the first attempt would have. Bodies are
/// gathered first (the probe's are a few bytes), so they can be sent again. Whether any retry
/// happened is kept: such a probe is trusted for less long, and not shared.
pub(super) struct Patient<'a> {
    pub(super) inner: &'a dyn ObjectStore,
    pub(super) disturbed: std::sync::atomic::AtomicBool,
}

fn transient(e: &StorageError) -> bool {
    e.kind == ErrorKind::Throttled
        || (e.kind == ErrorKind::Retryable
            && (e.status.is_none() || e.status.is_some_and(|s| s >= 500 && s != 501)))
}

impl Patient<'_> {
    /// Runs `call` until its answer is not transient, at most [`PROBE_ATTEMPTS`] times;
    /// returns the answer and whether an attempt before it failed.
    async fn retry<T, F, Fut>(&self, mut call: F) -> (Result<T, StorageError>, bool)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StorageError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match call().await {
                Err(e) if transient(&e) && attempt < PROBE_ATTEMPTS => {
                    self.disturbed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(ferry_core::retry::RetryPolicy::TRANSIENT.delay(attempt))
                        .await;
                }
                other => return (other, attempt > 1),
            }
        }
    }

    pub(super) fn disturbed(&self) -> bool {
        self.disturbed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The object at `key`, when it is the one a lost answer's write made (`etag`).
    async fn landed(&self, bucket: &str, key: &str, etag: Option<&str>) -> Option<Written> {
        let head = self
            .retry(|| self.inner.head(bucket, key, None))
            .await
            .0
            .ok()?;
        etag.is_none_or(|e| head.etag.eq_ignore_ascii_case(e))
            .then_some(Written {
                etag: head.etag,
                etag_may_be_md5: head.etag_is_md5,
            })
    }
}

fn once(bytes: Bytes) -> BodyStream {
    Box::pin(futures::stream::once(async move {
        Ok::<_, StorageError>(bytes)
    }))
}

async fn gather(mut body: BodyStream) -> Result<Bytes, StorageError> {
    use futures::StreamExt;
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}

#[async_trait::async_trait]
impl ObjectStore for Patient<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<String>,
    ) -> Result<crate::ListPage, StorageError> {
        let call = || {
            self.inner
                .list_page(bucket, prefix, start_after, token.clone())
        };
        self.retry(call).await.0
    }

    async fn head(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<crate::ObjectHead, StorageError> {
        self.retry(|| self.inner.head(bucket, key, if_match))
            .await
            .0
    }

    async fn head_part(
        &self,
        bucket: &str,
        key: &str,
        number: u32,
    ) -> Result<crate::PartHead, StorageError> {
        self.retry(|| self.inner.head_part(bucket, key, number))
            .await
            .0
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<crate::ByteRange>,
        if_match: Option<&str>,
    ) -> Result<crate::GetObject, StorageError> {
        self.retry(|| self.inner.get(bucket, key, range, if_match))
            .await
            .0
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: BodyStream,
        length: u64,
        options: PutOptions<'_>,
    ) -> Result<Written, StorageError> {
        let bytes = gather(body).await?;
        let call = || {
            self.inner
                .put(bucket, key, once(bytes.clone()), length, options)
        };
        match self.retry(call).await {
            (Err(e), true)
                if e.kind == ErrorKind::PreconditionFailed
                    && *options.condition == WriteCondition::IfAbsent =>
            {
                let md5 = hex::encode(Md5::digest(&bytes));
                self.landed(bucket, key, Some(&md5)).await.ok_or(e)
            }
            (answer, _) => answer,
        }
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
        let call = || {
            self.inner.copy(
                source_bucket,
                source_key,
                if_match,
                bucket,
                key,
                storage_class,
                condition,
            )
        };
        self.retry(call).await.0
    }

    async fn get_tagging(&self, bucket: &str, key: &str) -> Result<Option<String>, StorageError> {
        self.retry(|| self.inner.get_tagging(bucket, key)).await.0
    }

    async fn put_tagging(
        &self,
        bucket: &str,
        key: &str,
        tagging: &str,
    ) -> Result<(), StorageError> {
        self.retry(|| self.inner.put_tagging(bucket, key, tagging))
            .await
            .0
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        self.retry(|| self.inner.delete(bucket, key)).await.0
    }

    async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        attrs: &ObjectAttrs,
        tagging: Option<&str>,
    ) -> Result<String, StorageError> {
        self.retry(|| self.inner.create_multipart(bucket, key, attrs, tagging))
            .await
            .0
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
        let bytes = gather(body).await?;
        let call = || {
            let body = once(bytes.clone());
            self.inner
                .upload_part(bucket, key, upload_id, number, body, length, trailer)
        };
        self.retry(call).await.0
    }

    async fn upload_part_copy(
        &self,
        source_bucket: &str,
        source_key: &str,
        if_match: &str,
        range: crate::ByteRange,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
    ) -> Result<String, StorageError> {
        let call = || {
            self.inner.upload_part_copy(
                source_bucket,
                source_key,
                if_match,
                range,
                bucket,
                key,
                upload_id,
                number,
            )
        };
        self.retry(call).await.0
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        condition: &WriteCondition,
    ) -> Result<Written, StorageError> {
        let call = || {
            self.inner
                .complete_multipart(bucket, key, upload_id, parts, condition)
        };
        match self.retry(call).await {
            // The first attempt completed the upload; its object is there, with the ETag
            // these parts make.
            (Err(e), true) if e.code.as_deref() == Some("NoSuchUpload") => {
                let etag = ferry_core::parts::multipart_etag(parts.iter().map(|p| p.etag.as_str()));
                // The answer's ETag is unknown: it was lost.
                let landed = self.landed(bucket, key, etag.as_deref()).await.ok_or(e)?;
                Ok(Written {
                    etag: String::new(),
                    ..landed
                })
            }
            // A retry may have completed an upload completed already, which some stores
            // answer otherwise than a first completion (RGW 16 then shows the ETag): what the
            // first answer carried is unknown.
            (Ok(w), true) => Ok(Written {
                etag: String::new(),
                ..w
            }),
            (answer, _) => answer,
        }
    }

    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        self.retry(|| self.inner.abort_multipart(bucket, key, upload_id))
            .await
            .0
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<UploadedPart>, StorageError> {
        self.retry(|| self.inner.list_parts(bucket, key, upload_id))
            .await
            .0
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<crate::OpenUpload>, StorageError> {
        self.retry(|| self.inner.list_uploads(bucket, prefix))
            .await
            .0
    }
}
