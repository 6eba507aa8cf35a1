//! Each [`ObjectStore`] operation as an SDK request.

use super::convert::*;
use super::*;
use crate::versions::{VersionCursor, VersionPage, VersionWritten, Versioning};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;

#[async_trait]
impl ObjectStore for S3Store {
    fn name(&self) -> &str {
        &self.name
    }

    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        token: Option<String>,
    ) -> Result<ListPage, StorageError> {
        Self::count("ListObjectsV2");
        let start_after = start_after.filter(|_| token.is_none()).map(str::to_string);
        // URL-encoded keys: XML 1.0 cannot carry some characters S3 allows in keys.
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1000)
            .encoding_type(EncodingType::Url)
            .set_start_after(start_after)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| self.error("ListObjectsV2", self.target(bucket, prefix), e))?;
        let malformed = |why: String| StorageError {
            kind: ErrorKind::Retryable,
            operation: "ListObjectsV2",
            target: self.target(bucket, prefix),
            status: Some(200),
            code: None,
            message: format!("the listing page is incomplete or malformed: {why}"),
        };
        checked_page(&out).map_err(malformed)
    }

    async fn head(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<ObjectHead, StorageError> {
        Self::count("HeadObject");
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_if_match(if_match.map(quoted))
            // The object's full-object checksum, where the store keeps one: what `verify`
            // compares when the ETags cannot be.
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| self.error("HeadObject", self.target(bucket, key), e))?;
        Ok(read_head!(out, out.archive_status()))
    }

    async fn head_part(
        &self,
        bucket: &str,
        key: &str,
        number: u32,
    ) -> Result<PartHead, StorageError> {
        Self::count("HeadObject");
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .part_number(number as i32)
            .send()
            .await
            .map_err(|e| self.error("HeadObject", self.target(bucket, key), e))?;
        Ok(PartHead {
            etag: strip_quotes(out.e_tag().unwrap_or_default()),
            parts_count: out.parts_count().and_then(|n| u64::try_from(n).ok()),
            length: out.content_length().unwrap_or(0).max(0) as u64,
        })
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
        if_match: Option<&str>,
    ) -> Result<GetObject, StorageError> {
        Self::count("GetObject");
        if let Some(direct) = &self.direct
            && let Some(b) = direct.bucket(bucket).await
        {
            return direct
                .get(&b, key, range, if_match, self.target(bucket, key))
                .await;
        }
        // Checksum mode returns the source's own checksum, which the destination then
        // verifies, and lets the SDK check the bytes read against it.
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.first, r.last)))
            .set_if_match(if_match.map(quoted))
            .set_checksum_mode(range.is_none().then_some(ChecksumMode::Enabled))
            .send()
            .await
            .map_err(|e| self.error("GetObject", self.target(bucket, key), e))?;
        let content_length = out.content_length().unwrap_or(0).max(0) as u64;
        let mut head = read_head!(out, None);
        // For a ranged GET, Content-Length is the range's; the object size is in Content-Range.
        if let Some(total) = out
            .content_range()
            .and_then(|r| r.rsplit('/').next())
            .and_then(|t| t.parse::<u64>().ok())
        {
            head.size = total;
        }
        let body = from_sdk_body(out.body, "GetObject", self.target(bucket, key));
        Ok(GetObject {
            head,
            content_length,
            body,
        })
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: BodyStream,
        length: u64,
        options: PutOptions<'_>,
    ) -> Result<Written, StorageError> {
        Self::count("PutObject");
        // The lean path sends no streamed checksum trailer: it takes bodies whose integrity
        // Content-MD5 or the source's checksum covers.
        if (options.content_md5.is_some() || options.checksum.is_some())
            && let Some(direct) = &self.direct
            && let Some(b) = direct.bucket(bucket).await
        {
            return direct
                .put(&b, key, body, length, options, self.target(bucket, key))
                .await;
        }
        let progress = Progress::new();
        let op = self.put_operation(bucket, key, body, length, &options, progress.clone());
        Ok(send_upload!(self, op, "PutObject", progress, bucket, key))
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
        Self::count("CopyObject");
        let req = self
            .client
            .copy_object()
            .copy_source(encode_copy_source(source_bucket, source_key))
            .set_copy_source_if_match(if_match.map(quoted))
            .bucket(bucket)
            .key(key)
            .metadata_directive(MetadataDirective::Copy)
            .tagging_directive(TaggingDirective::Copy)
            .set_storage_class(storage_class.map(StorageClass::from));
        let out = apply_condition!(req, condition)
            .send()
            .await
            .map_err(|e| self.error("CopyObject", self.target(bucket, key), e))?;
        Ok(Written {
            etag: strip_quotes(
                out.copy_object_result()
                    .and_then(|r| r.e_tag())
                    .unwrap_or_default(),
            ),
            etag_may_be_md5: !encrypted(out.server_side_encryption(), out.sse_customer_algorithm()),
        })
    }

    async fn get_tagging(&self, bucket: &str, key: &str) -> Result<Option<String>, StorageError> {
        self.tagging(bucket, key, None).await
    }

    async fn put_tagging(
        &self,
        bucket: &str,
        key: &str,
        tagging: &str,
    ) -> Result<(), StorageError> {
        Self::count("PutObjectTagging");
        let unsendable = |e: aws_sdk_s3::error::BuildError| StorageError {
            kind: ErrorKind::Permanent,
            operation: "PutObjectTagging",
            target: self.target(bucket, key),
            status: None,
            code: None,
            message: format!("the tags cannot be sent: {e}"),
        };
        let mut tags = Vec::new();
        for pair in tagging.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            tags.push(
                Tag::builder()
                    .key(url_decode(k))
                    .value(url_decode(v))
                    .build()
                    .map_err(unsendable)?,
            );
        }
        let set = Tagging::builder()
            .set_tag_set(Some(tags))
            .build()
            .map_err(unsendable)?;
        self.client
            .put_object_tagging()
            .bucket(bucket)
            .key(key)
            .tagging(set)
            .send()
            .await
            .map_err(|e| self.error("PutObjectTagging", self.target(bucket, key), e))?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        Self::count("DeleteObject");
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", self.target(bucket, key), e))?;
        Ok(())
    }

    async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        attrs: &ObjectAttrs,
        tagging: Option<&str>,
    ) -> Result<String, StorageError> {
        Self::count("CreateMultipartUpload");
        let req = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .set_tagging(tagging.map(str::to_string));
        let mut op = apply_attrs!(req, attrs).customize();
        if attrs.content_type.is_none() {
            op = op.mutate_request(strip_default_content_type);
        }
        let out = op
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", self.target(bucket, key), e))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| StorageError {
                kind: ErrorKind::Retryable,
                operation: "CreateMultipartUpload",
                target: self.target(bucket, key),
                status: None,
                code: None,
                message: "the response has no upload id".into(),
            })
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
        Self::count("UploadPart");
        let progress = Progress::new();
        let op = self
            .uploads
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .content_length(length as i64)
            .set_checksum_algorithm(trailer.then_some(ChecksumAlgorithm::Crc32C))
            .body(to_sdk_body(body, length, progress.clone()))
            .customize()
            .disable_payload_signing();
        Ok(send_upload!(self, op, "UploadPart", progress, bucket, key))
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
        Self::count("UploadPartCopy");
        let out = self
            .client
            .upload_part_copy()
            .copy_source(encode_copy_source(source_bucket, source_key))
            .copy_source_if_match(quoted(if_match))
            .copy_source_range(format!("bytes={}-{}", range.first, range.last))
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .customize()
            // A PUT without a body: Ceph RGW 16 refuses it with 411 unless told its length.
            .mutate_request(empty_body_length)
            .send()
            .await
            .map_err(|e| self.error("UploadPartCopy", self.target(bucket, key), e))?;
        Ok(strip_quotes(
            out.copy_part_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default(),
        ))
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        condition: &WriteCondition,
    ) -> Result<Written, StorageError> {
        Self::count("CompleteMultipartUpload");
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number as i32)
                            .e_tag(format!("\"{}\"", p.etag))
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let req = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed);
        let out = apply_condition!(req, condition)
            .send()
            .await
            .map_err(|e| self.error("CompleteMultipartUpload", self.target(bucket, key), e))?;
        Ok(Written {
            etag: strip_quotes(out.e_tag().unwrap_or_default()),
            etag_may_be_md5: !encrypted(out.server_side_encryption(), None),
        })
    }

    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        Self::count("AbortMultipartUpload");
        self.client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.error("AbortMultipartUpload", self.target(bucket, key), e))?;
        Ok(())
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<UploadedPart>, StorageError> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            Self::count("ListParts");
            let out = self
                .client
                .list_parts()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(|e| self.error("ListParts", self.target(bucket, key), e))?;
            parts.extend(out.parts().iter().map(|p| UploadedPart {
                number: p.part_number().unwrap_or(0).max(0) as u32,
                etag: strip_quotes(p.e_tag().unwrap_or_default()),
                size: p.size().unwrap_or(0).max(0) as u64,
            }));
            match (out.is_truncated(), out.next_part_number_marker()) {
                (Some(true), Some(next)) => marker = Some(next.to_string()),
                _ => break,
            }
        }
        Ok(parts)
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<OpenUpload>, StorageError> {
        let mut uploads = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            Self::count("ListMultipartUploads");
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .encoding_type(EncodingType::Url)
                .set_key_marker(markers.0.clone())
                .set_upload_id_marker(markers.1.clone())
                .send()
                .await
                .map_err(|e| self.error("ListMultipartUploads", self.target(bucket, prefix), e))?;
            let encoded = out.encoding_type() == Some(&EncodingType::Url);
            let decode = |k: &str| {
                if encoded {
                    url_decode(k)
                } else {
                    k.to_string()
                }
            };
            uploads.extend(out.uploads().iter().map(|u| OpenUpload {
                key: decode(u.key().unwrap_or_default()),
                upload_id: u.upload_id().unwrap_or_default().to_string(),
                initiated_ms: millis(u.initiated()),
            }));
            match (out.is_truncated(), out.next_key_marker()) {
                (Some(true), Some(key)) => {
                    markers = (
                        Some(decode(key)),
                        out.next_upload_id_marker().map(str::to_string),
                    )
                }
                _ => break,
            }
        }
        Ok(uploads)
    }

    async fn versioning(&self, bucket: &str) -> Result<Versioning, StorageError> {
        self.bucket_versioning(bucket).await
    }

    async fn list_versions_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        cursor: Option<VersionCursor>,
    ) -> Result<VersionPage, StorageError> {
        self.versions_page(bucket, prefix, start_after, cursor)
            .await
    }

    async fn get_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<GetObject, StorageError> {
        self.version_get(bucket, key, version_id).await
    }

    async fn get_version_tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<String>, StorageError> {
        self.tagging(bucket, key, Some(version_id)).await
    }

    async fn put_version(
        &self,
        bucket: &str,
        key: &str,
        body: BodyStream,
        length: u64,
        options: PutOptions<'_>,
    ) -> Result<VersionWritten, StorageError> {
        self.version_put(bucket, key, body, length, options).await
    }

    async fn delete_marker(&self, bucket: &str, key: &str) -> Result<Option<String>, StorageError> {
        self.marker_put(bucket, key).await
    }
}

/// A listing page, read and checked. The SDK accepts a page cut short (no IsTruncated, a half
/// key); taken as the last page it would end the listing early, and deletions would follow.
/// So every page must say whether more follow, count what it holds, and be in key order;
/// the `Err` says which it failed.
fn checked_page(out: &ListObjectsV2Output) -> Result<ListPage, String> {
    let encoded = out.encoding_type() == Some(&EncodingType::Url);
    let objects: Vec<ObjectMeta> = out
        .contents()
        .iter()
        .filter_map(|o| {
            let key = o.key()?;
            Some(ObjectMeta {
                key: if encoded {
                    url_decode(key)
                } else {
                    key.to_string()
                },
                size: o.size().unwrap_or(0).max(0) as u64,
                etag: strip_quotes(o.e_tag().unwrap_or_default()),
                last_modified_ms: millis(o.last_modified()),
                storage_class: o
                    .storage_class()
                    .map(|c| c.as_str())
                    .filter(|c| *c != "STANDARD")
                    .map(str::to_string),
            })
        })
        .collect();
    let truncated = out
        .is_truncated()
        .ok_or("it does not say whether it is the last")?;
    let held = out.contents().len() + out.common_prefixes().len();
    if let Some(count) = out.key_count()
        && count.max(0) as usize != held
    {
        return Err(format!("KeyCount is {count}, but it holds {held}"));
    }
    if objects.len() != out.contents().len() {
        return Err("an entry has no key".into());
    }
    if let Some(w) = objects.windows(2).find(|w| w[0].key >= w[1].key) {
        return Err(format!(
            "keys out of order ({:?} before {:?})",
            w[0].key, w[1].key
        ));
    }
    let next_token = match truncated {
        true => Some(
            out.next_continuation_token()
                .ok_or("it is truncated but has no continuation token")?
                .to_string(),
        ),
        false => None,
    };
    Ok(ListPage {
        objects,
        next_token,
    })
}
