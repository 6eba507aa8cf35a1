//! An in-memory [`ObjectStore`] for unit tests of the coordinator and the worker, which with
//! the embedded queue need no server at all. It behaves as S3 does where ferry depends on it:
//! keys listed in order, 1,000 a page; MD5 ETags (multipart: MD5 of the part MD5s, `-N`);
//! `If-Match` / `If-None-Match: *` refused with 412; ranged reads; tags; multipart uploads.
//! It counts requests by operation, so a test can check what a run did, and can be told to
//! fail writes, as a store that denies access would.
//!
//! Integration tests use it only to hold it to the storage contract ([`crate::contract`])
//! that moto and Garage pass; behind the `testing` feature.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{
    BodyStream, ByteRange, ErrorKind, GetObject, ListPage, ObjectAttrs, ObjectHead, ObjectMeta,
    ObjectStore, OpenUpload, PartHead, PutOptions, StorageError, UploadedPart, WriteCondition,
    Written,
};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use md5::{Digest, Md5};

#[derive(Clone, Debug)]
struct Object {
    body: Bytes,
    etag: String,
    last_modified_ms: i64,
    attrs: ObjectAttrs,
    tagging: Option<String>,
    /// Part lengths, for a multipart object.
    parts: Vec<u64>,
}

#[derive(Debug)]
struct Upload {
    bucket: String,
    key: String,
    attrs: ObjectAttrs,
    tagging: Option<String>,
    parts: BTreeMap<u32, (Bytes, String)>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct MemStore {
    name: String,
    objects: Mutex<BTreeMap<(String, String), Object>>,
    uploads: Mutex<HashMap<String, Upload>>,
    requests: Mutex<BTreeMap<&'static str, u64>>,
    clock: AtomicU64,
    next_upload: AtomicU64,
    deny_writes: AtomicBool,
    refuse_tag_headers: AtomicBool,
    /// The buckets there are, when the store was made with [`MemStore::with_buckets`];
    /// otherwise every bucket is there.
    buckets: Option<std::collections::BTreeSet<String>>,
}

fn md5_hex(b: &[u8]) -> String {
    hex::encode(Md5::digest(b))
}

async fn collect(mut body: BodyStream) -> Result<Bytes, StorageError> {
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}

impl MemStore {
    /// An empty store, named as an endpoint.
    pub fn new(name: &str) -> MemStore {
        MemStore {
            name: name.to_string(),
            clock: AtomicU64::new(1_700_000_000_000),
            ..MemStore::default()
        }
    }

    /// An empty store with only `buckets`: listing any other answers NoSuchBucket, as S3
    /// does.
    pub fn with_buckets(name: &str, buckets: &[&str]) -> MemStore {
        MemStore {
            buckets: Some(buckets.iter().map(|b| b.to_string()).collect()),
            ..MemStore::new(name)
        }
    }

    /// NoSuchBucket, unless `bucket` is there.
    fn bucket_is_there(&self, operation: &'static str, bucket: &str) -> Result<(), StorageError> {
        match &self.buckets {
            Some(there) if !there.contains(bucket) => Err(StorageError {
                kind: ErrorKind::Permanent,
                operation,
                target: format!("s3://{bucket}/ on endpoint {}", self.name),
                status: Some(404),
                code: Some("NoSuchBucket".into()),
                message: "NoSuchBucket: The specified bucket does not exist".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Puts an object directly (not counted as a request), with a fresh Last-Modified.
    pub fn insert(&self, bucket: &str, key: &str, body: &[u8]) {
        let object = Object {
            body: Bytes::copy_from_slice(body),
            etag: md5_hex(body),
            last_modified_ms: self.tick(),
            attrs: ObjectAttrs::default(),
            tagging: None,
            parts: Vec::new(),
        };
        self.lock_objects()
            .insert((bucket.to_string(), key.to_string()), object);
    }

    /// Every object of `bucket`: key -> (body, ETag).
    pub fn contents(&self, bucket: &str) -> BTreeMap<String, (Bytes, String)> {
        self.lock_objects()
            .iter()
            .filter(|((b, _), _)| b == bucket)
            .map(|((_, k), o)| (k.clone(), (o.body.clone(), o.etag.clone())))
            .collect()
    }

    /// Requests served so far, by operation.
    pub fn requests(&self) -> BTreeMap<&'static str, u64> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Multipart uploads open now.
    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Puts an object with tags (`k=v&...`) directly (not counted as a request).
    pub fn insert_tagged(&self, bucket: &str, key: &str, body: &[u8], tagging: &str) {
        self.insert(bucket, key, body);
        if let Some(o) = self
            .lock_objects()
            .get_mut(&(bucket.to_string(), key.to_string()))
        {
            o.tagging = Some(tagging.to_string());
        }
    }

    /// The tags of an object (`k=v&...`), if it has any.
    pub fn tags(&self, bucket: &str, key: &str) -> Option<String> {
        self.lock_objects()
            .get(&(bucket.to_string(), key.to_string()))
            .and_then(|o| o.tagging.clone())
    }

    /// From now on, tags sent with PutObject or CreateMultipartUpload are refused with 400,
    /// as Backblaze B2 documents; PutObjectTagging still works.
    pub fn refuse_tag_headers(&self) {
        self.refuse_tag_headers.store(true, Ordering::SeqCst);
    }

    fn check_tag_header(
        &self,
        operation: &'static str,
        target: &str,
        tagging: Option<&str>,
    ) -> Result<(), StorageError> {
        if tagging.is_some() && self.refuse_tag_headers.load(Ordering::SeqCst) {
            return Err(self.error(
                operation,
                target,
                400,
                "InvalidArgument",
                ErrorKind::Permanent,
            ));
        }
        Ok(())
    }

    /// From now on, every write is refused with 403 AccessDenied.
    pub fn deny_writes(&self) {
        self.deny_writes.store(true, Ordering::SeqCst);
    }

    fn tick(&self) -> i64 {
        self.clock.fetch_add(1000, Ordering::SeqCst) as i64
    }

    fn lock_objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Object>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, operation: &'static str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(operation)
            .or_default() += 1;
    }

    fn error(
        &self,
        operation: &'static str,
        target: &str,
        status: u16,
        code: &str,
        kind: ErrorKind,
    ) -> StorageError {
        StorageError {
            kind,
            operation,
            target: format!("s3://{target} on endpoint {}", self.name),
            status: Some(status),
            code: Some(code.to_string()),
            message: code.to_string(),
        }
    }

    /// A copy of `bucket/key`, or 404 for `operation`.
    fn object(
        &self,
        operation: &'static str,
        bucket: &str,
        key: &str,
    ) -> Result<Object, StorageError> {
        self.lock_objects()
            .get(&(bucket.to_string(), key.to_string()))
            .cloned()
            .ok_or_else(|| self.not_found(operation, bucket, key))
    }

    fn precondition_failed(
        &self,
        operation: &'static str,
        bucket: &str,
        key: &str,
    ) -> StorageError {
        self.error(
            operation,
            &format!("{bucket}/{key}"),
            412,
            "PreconditionFailed",
            ErrorKind::PreconditionFailed,
        )
    }

    fn not_found(&self, operation: &'static str, bucket: &str, key: &str) -> StorageError {
        self.error(
            operation,
            &format!("{bucket}/{key}"),
            404,
            "NoSuchKey",
            ErrorKind::NotFound,
        )
    }

    fn check_write(
        &self,
        operation: &'static str,
        bucket: &str,
        key: &str,
    ) -> Result<(), StorageError> {
        if self.deny_writes.load(Ordering::SeqCst) && !key.starts_with(".ferry-probe/") {
            return Err(self.error(
                operation,
                &format!("{bucket}/{key}"),
                403,
                "AccessDenied",
                ErrorKind::Permanent,
            ));
        }
        Ok(())
    }

    /// Checks `condition` against what `bucket/key` holds now.
    fn check_condition(
        &self,
        operation: &'static str,
        objects: &BTreeMap<(String, String), Object>,
        bucket: &str,
        key: &str,
        condition: &WriteCondition,
    ) -> Result<(), StorageError> {
        let current = objects.get(&(bucket.to_string(), key.to_string()));
        let holds = match condition {
            WriteCondition::None => true,
            WriteCondition::IfAbsent => current.is_none(),
            WriteCondition::IfMatch(etag) | WriteCondition::IfMatchUnquoted(etag) => {
                current.is_some_and(|o| &o.etag == etag)
            }
        };
        if holds {
            Ok(())
        } else {
            Err(self.precondition_failed(operation, bucket, key))
        }
    }

    fn head_of(o: &Object) -> ObjectHead {
        ObjectHead {
            size: o.body.len() as u64,
            etag: o.etag.clone(),
            last_modified_ms: o.last_modified_ms,
            attrs: o.attrs.clone(),
            etag_is_md5: o.parts.is_empty(),
            tag_count: o
                .tagging
                .as_deref()
                .map_or(0, |t| t.split('&').filter(|s| !s.is_empty()).count() as u32),
            archived: false,
            checksum: None,
        }
    }

    fn store(&self, bucket: &str, key: &str, object: Object) -> Written {
        let etag = object.etag.clone();
        let multipart = !object.parts.is_empty();
        self.lock_objects()
            .insert((bucket.to_string(), key.to_string()), object);
        Written {
            etag,
            etag_may_be_md5: !multipart,
        }
    }
}

#[async_trait]
impl ObjectStore for MemStore {
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
        self.count("ListObjectsV2");
        self.bucket_is_there("ListObjectsV2", bucket)?;
        let after = token.as_deref().or(start_after).unwrap_or("");
        let objects = self.lock_objects();
        let mut page: Vec<ObjectMeta> = objects
            .iter()
            .filter(|((b, k), _)| b == bucket && k.starts_with(prefix) && k.as_str() > after)
            .take(1001)
            .map(|((_, k), o)| ObjectMeta {
                key: k.clone(),
                size: o.body.len() as u64,
                etag: o.etag.clone(),
                last_modified_ms: o.last_modified_ms,
                storage_class: None,
            })
            .collect();
        let next_token = (page.len() > 1000).then(|| {
            page.truncate(1000);
            page.last().map(|o| o.key.clone()).unwrap_or_default()
        });
        Ok(ListPage {
            objects: page,
            next_token,
        })
    }

    async fn head(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<ObjectHead, StorageError> {
        self.count("HeadObject");
        let o = self.object("HeadObject", bucket, key)?;
        if if_match.is_some_and(|e| e != o.etag) {
            return Err(self.precondition_failed("HeadObject", bucket, key));
        }
        Ok(MemStore::head_of(&o))
    }

    async fn head_part(
        &self,
        bucket: &str,
        key: &str,
        number: u32,
    ) -> Result<PartHead, StorageError> {
        self.count("HeadObject");
        let o = self.object("HeadObject", bucket, key)?;
        let length = match o.parts.get(number.saturating_sub(1) as usize) {
            Some(len) => *len,
            None if number == 1 => o.body.len() as u64,
            None => {
                return Err(self.error(
                    "HeadObject",
                    &format!("{bucket}/{key}"),
                    416,
                    "InvalidPartNumber",
                    ErrorKind::Permanent,
                ));
            }
        };
        Ok(PartHead {
            etag: o.etag.clone(),
            parts_count: (!o.parts.is_empty()).then_some(o.parts.len() as u64),
            length,
        })
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
        if_match: Option<&str>,
    ) -> Result<GetObject, StorageError> {
        self.count("GetObject");
        let o = self.object("GetObject", bucket, key)?;
        if if_match.is_some_and(|e| e != o.etag) {
            return Err(self.precondition_failed("GetObject", bucket, key));
        }
        let head = MemStore::head_of(&o);
        let body = o.body;
        let body = match range {
            Some(r) => body.slice(r.first as usize..=(r.last as usize).min(body.len() - 1)),
            None => body,
        };
        let content_length = body.len() as u64;
        Ok(GetObject {
            head,
            content_length,
            body: Box::pin(futures::stream::once(async move { Ok(body) })),
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
        self.count("PutObject");
        self.check_write("PutObject", bucket, key)?;
        self.check_tag_header("PutObject", &format!("{bucket}/{key}"), options.tagging)?;
        let body = collect(body).await?;
        let target = format!("{bucket}/{key}");
        if body.len() as u64 != length {
            return Err(self.error(
                "PutObject",
                &target,
                400,
                "IncompleteBody",
                ErrorKind::Retryable,
            ));
        }
        let etag = md5_hex(&body);
        if options.content_md5.is_some_and(|m| m != etag) {
            return Err(self.error("PutObject", &target, 400, "BadDigest", ErrorKind::Retryable));
        }
        let objects = self.lock_objects();
        self.check_condition("PutObject", &objects, bucket, key, options.condition)?;
        drop(objects);
        Ok(self.store(
            bucket,
            key,
            Object {
                body,
                etag,
                last_modified_ms: self.tick(),
                attrs: options.attrs.clone(),
                tagging: options.tagging.map(str::to_string),
                parts: Vec::new(),
            },
        ))
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
        self.count("CopyObject");
        self.check_write("CopyObject", bucket, key)?;
        let source = self.object("CopyObject", source_bucket, source_key)?;
        if if_match.is_some_and(|e| e != source.etag) {
            return Err(self.precondition_failed("CopyObject", source_bucket, source_key));
        }
        let objects = self.lock_objects();
        self.check_condition("CopyObject", &objects, bucket, key, condition)?;
        drop(objects);
        let mut copy = source;
        copy.last_modified_ms = self.tick();
        if let Some(class) = storage_class {
            copy.attrs.storage_class = Some(class.to_string());
        }
        Ok(self.store(bucket, key, copy))
    }

    async fn get_tagging(&self, bucket: &str, key: &str) -> Result<Option<String>, StorageError> {
        self.count("GetObjectTagging");
        Ok(self.object("GetObjectTagging", bucket, key)?.tagging)
    }

    async fn put_tagging(
        &self,
        bucket: &str,
        key: &str,
        tagging: &str,
    ) -> Result<(), StorageError> {
        self.count("PutObjectTagging");
        self.check_write("PutObjectTagging", bucket, key)?;
        let mut objects = self.lock_objects();
        match objects.get_mut(&(bucket.to_string(), key.to_string())) {
            Some(o) => {
                o.tagging = (!tagging.is_empty()).then(|| tagging.to_string());
                Ok(())
            }
            None => Err(self.error(
                "PutObjectTagging",
                &format!("{bucket}/{key}"),
                404,
                "NoSuchKey",
                ErrorKind::NotFound,
            )),
        }
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        self.count("DeleteObject");
        self.check_write("DeleteObject", bucket, key)?;
        self.lock_objects()
            .remove(&(bucket.to_string(), key.to_string()));
        Ok(())
    }

    async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        attrs: &ObjectAttrs,
        tagging: Option<&str>,
    ) -> Result<String, StorageError> {
        self.count("CreateMultipartUpload");
        self.check_write("CreateMultipartUpload", bucket, key)?;
        self.check_tag_header("CreateMultipartUpload", &format!("{bucket}/{key}"), tagging)?;
        let id = format!("upload-{}", self.next_upload.fetch_add(1, Ordering::SeqCst));
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.clone(),
                Upload {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    attrs: attrs.clone(),
                    tagging: tagging.map(str::to_string),
                    parts: BTreeMap::new(),
                },
            );
        Ok(id)
    }

    async fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: u32,
        body: BodyStream,
        length: u64,
        _trailer: bool,
    ) -> Result<Written, StorageError> {
        self.count("UploadPart");
        let body = collect(body).await?;
        if body.len() as u64 != length {
            return Err(self.error(
                "UploadPart",
                &format!("{bucket}/{key}"),
                400,
                "IncompleteBody",
                ErrorKind::Retryable,
            ));
        }
        let etag = md5_hex(&body);
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let upload = uploads.get_mut(upload_id).ok_or_else(|| {
            self.error(
                "UploadPart",
                &format!("{bucket}/{key}"),
                404,
                "NoSuchUpload",
                ErrorKind::Permanent,
            )
        })?;
        upload.parts.insert(number, (body, etag.clone()));
        Ok(Written {
            etag,
            etag_may_be_md5: true,
        })
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
        let got = self
            .get(source_bucket, source_key, Some(range), Some(if_match))
            .await?;
        let length = got.content_length;
        self.upload_part(bucket, key, upload_id, number, got.body, length, true)
            .await
            .map(|w| w.etag)
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        condition: &WriteCondition,
    ) -> Result<Written, StorageError> {
        self.count("CompleteMultipartUpload");
        let target = format!("{bucket}/{key}");
        // A refused completion leaves the upload open, as S3 does.
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let upload = uploads.get(upload_id).ok_or_else(|| {
            self.error(
                "CompleteMultipartUpload",
                &target,
                404,
                "NoSuchUpload",
                ErrorKind::Permanent,
            )
        })?;
        let mut body = BytesMut::new();
        let mut digests = Vec::new();
        let mut lengths = Vec::new();
        for p in parts {
            let Some((bytes, etag)) = upload.parts.get(&p.number) else {
                return Err(self.error(
                    "CompleteMultipartUpload",
                    &target,
                    400,
                    "InvalidPart",
                    ErrorKind::Permanent,
                ));
            };
            if etag != &p.etag {
                return Err(self.error(
                    "CompleteMultipartUpload",
                    &target,
                    400,
                    "InvalidPart",
                    ErrorKind::Permanent,
                ));
            }
            body.extend_from_slice(bytes);
            digests.extend(hex::decode(etag).unwrap_or_default());
            lengths.push(bytes.len() as u64);
        }
        let objects = self.lock_objects();
        self.check_condition("CompleteMultipartUpload", &objects, bucket, key, condition)?;
        drop(objects);
        let upload = uploads.remove(upload_id).expect("the upload is there");
        drop(uploads);
        let etag = format!("{}-{}", md5_hex(&digests), parts.len());
        Ok(self.store(
            &upload.bucket,
            &upload.key,
            Object {
                body: body.freeze(),
                etag,
                last_modified_ms: self.tick(),
                attrs: upload.attrs,
                tagging: upload.tagging,
                parts: lengths,
            },
        ))
    }

    async fn abort_multipart(
        &self,
        _bucket: &str,
        _key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        self.count("AbortMultipartUpload");
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(upload_id);
        Ok(())
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<UploadedPart>, StorageError> {
        self.count("ListParts");
        let uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let upload = uploads.get(upload_id).ok_or_else(|| {
            self.error(
                "ListParts",
                &format!("{bucket}/{key}"),
                404,
                "NoSuchUpload",
                ErrorKind::Permanent,
            )
        })?;
        Ok(upload
            .parts
            .iter()
            .map(|(n, (b, e))| UploadedPart {
                number: *n,
                etag: e.clone(),
                size: b.len() as u64,
            })
            .collect())
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<OpenUpload>, StorageError> {
        self.count("ListMultipartUploads");
        Ok(self
            .uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, u)| u.bucket == bucket && u.key.starts_with(prefix))
            .map(|(id, u)| OpenUpload {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated_ms: self.clock.load(Ordering::SeqCst) as i64,
            })
            .collect())
    }
}
