//! [`ObjectStore`] on the maps of a [`MemStore`].

use super::*;

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
