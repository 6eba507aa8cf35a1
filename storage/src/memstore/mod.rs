//! An in-memory [`ObjectStore`] for unit tests of the coordinator and the worker, which with
//! the embedded queue need no server at all. It behaves as S3 does where ferry depends on it:
//! keys listed in order, 1,000 a page; MD5 ETags (multipart: MD5 of the part MD5s, `-N`);
//! `If-Match` / `If-None-Match: *` refused with 412; ranged reads; tags; multipart uploads.
//! It counts requests by operation, so a test can check what a run did, and can be told to
//! fail writes, as a store that denies access would.
//!
//! Behind the `testing` feature. It keeps the storage contract ([`crate::contract`]) that the
//! S3 path keeps on moto, Garage and RGW (`tests/storage_contract.rs`).

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

mod store;
