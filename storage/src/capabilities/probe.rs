//! The probe's steps: each capability tried both ways, then what it wrote removed.

use super::*;

/// The uploads of the completion probes.
pub(super) struct Completions {
    /// An upload whose completion was refused, for the next try.
    pub(super) open: Option<(String, UploadedPart)>,
    /// The key's ETag now.
    pub(super) current: String,
    /// The answer of the last completion that went through.
    pub(super) completed: Option<Written>,
    pub(super) trailer: bool,
}

pub(super) struct Probe<'a> {
    pub(super) store: &'a dyn ObjectStore,
    pub(super) bucket: &'a str,
    /// CreateMultipartUpload refused the tags sent with it.
    pub(super) multipart_tags_refused: bool,
    /// A CompleteMultipartUpload's answer carried an ETag.
    pub(super) complete_etag: bool,
    pub(super) written: Vec<String>,
    pub(super) uploads: Vec<(String, String)>,
}

impl Probe<'_> {
    pub(super) fn key(&mut self, name: &str) -> String {
        let key = format!("{}{name}", probe_prefix());
        if !self.written.contains(&key) {
            self.written.push(key.clone());
        }
        key
    }

    pub(super) async fn put(
        &mut self,
        name: &str,
        bytes: &'static [u8],
        condition: WriteCondition,
        tagging: Option<&str>,
        trailer: bool,
    ) -> Result<Answer<Written>, StorageError> {
        let key = self.key(name);
        let md5 = hex::encode(Md5::digest(bytes));
        let attrs = ObjectAttrs::default();
        let options = PutOptions {
            attrs: &attrs,
            content_md5: (!trailer).then_some(md5.as_str()),
            checksum: None,
            condition: &condition,
            tagging,
            trailer,
        };
        answer(
            self.store
                .put(self.bucket, &key, body(bytes), bytes.len() as u64, options)
                .await,
        )
    }

    /// Starts an upload of one part (`BODY`) of `name`; `None` when the store refused the
    /// part with a trailer (`trailer`).
    pub(super) async fn upload(
        &mut self,
        name: &str,
        tagging: Option<&str>,
        trailer: bool,
    ) -> Result<Option<(String, UploadedPart)>, StorageError> {
        let key = self.key(name);
        let tagging = tagging.filter(|_| !self.multipart_tags_refused);
        let attrs = ObjectAttrs::default();
        let created = self
            .store
            .create_multipart(self.bucket, &key, &attrs, tagging)
            .await;
        let id = match answer(created)? {
            Answer::Accepted(id) => id,
            // Tags refused with the upload: start it without them.
            Answer::Failed(_) if tagging.is_some() => {
                self.multipart_tags_refused = true;
                self.store
                    .create_multipart(self.bucket, &key, &attrs, None)
                    .await?
            }
            Answer::Failed(e) => return Err(e),
            Answer::Refused => {
                return Err(self.unexpected("CreateMultipartUpload", "a plain upload was refused"));
            }
        };
        self.uploads.push((key.clone(), id.clone()));
        let part = self
            .store
            .upload_part(
                self.bucket,
                &key,
                &id,
                1,
                body(BODY),
                BODY.len() as u64,
                trailer,
            )
            .await;
        match answer(part)? {
            Answer::Accepted(w) => Ok(Some((
                id,
                UploadedPart {
                    number: 1,
                    etag: w.etag,
                    size: BODY.len() as u64,
                },
            ))),
            _ => Ok(None),
        }
    }

    pub(super) async fn complete(
        &mut self,
        name: &str,
        upload: &(String, UploadedPart),
        condition: WriteCondition,
    ) -> Result<Answer<Written>, StorageError> {
        let key = self.key(name);
        let done = self
            .store
            .complete_multipart(
                self.bucket,
                &key,
                &upload.0,
                std::slice::from_ref(&upload.1),
                &condition,
            )
            .await;
        Ok(match answer(done)? {
            // A 2xx answer the client cannot read (moto's, at times) completed the upload.
            Answer::Failed(e) if e.status.is_some_and(|s| s < 300) => Answer::Accepted(Written {
                etag: String::new(),
                etag_may_be_md5: false,
            }),
            Answer::Accepted(w) => {
                self.complete_etag |= !w.etag.is_empty();
                Answer::Accepted(w)
            }
            other => other,
        })
    }

    pub(super) async fn tags(&mut self, name: &str) -> Result<Option<String>, StorageError> {
        let key = self.key(name);
        self.store.get_tagging(self.bucket, &key).await
    }

    pub(super) async fn run(&mut self) -> Result<Capabilities, StorageError> {
        let md5 = hex::encode(Md5::digest(BODY));
        let (first, tags_sent) = self.plain_write().await?;
        let etags_are_md5 = first.etag_may_be_md5 && first.etag.eq_ignore_ascii_case(&md5);
        let tags_on_put = tags_sent && self.tags("plain").await?.as_deref() == Some(TAGS);
        let tagging = self.retagged().await?;
        let (tags_on_copy, copy_source_if_match) = self.copies(&first.etag).await?;
        let put = self.put_conditions(&first.etag).await?;
        let checksums_verified = self.checksums_verified().await?;
        // A trailer counts only when both kinds of upload take it and keep the bytes sent.
        let checksum_trailer = checksums_verified && self.trailer_kept(etags_are_md5).await?;
        let (complete, checksum_trailer, complete_etag) = self.multipart(checksum_trailer).await?;
        let tags_on_multipart = self.tags("multipart").await?.as_deref() == Some(TAGS);
        let key = self.key("multipart");
        let part_number = match answer(self.store.head_part(self.bucket, &key, 1).await)? {
            Answer::Accepted(part) => {
                part.parts_count == Some(1) && part.length == BODY.len() as u64
            }
            _ => false,
        };
        Ok(Capabilities {
            etags_are_md5,
            put,
            complete,
            tagging,
            tags_on_put,
            tags_on_multipart,
            tags_on_copy,
            copy_source_if_match,
            part_number,
            complete_etag,
            checksums_verified,
            checksum_trailer,
        })
    }

    /// A plain write, with tags, and whether the tags went with it: an earlier, interrupted
    /// probe may have left the object. A store may refuse tags on PutObject outright
    /// (Backblaze B2 documents so): then the plain write goes without them.
    async fn plain_write(&mut self) -> Result<(Written, bool), StorageError> {
        if let Answer::Accepted(w) = self
            .put("plain", BODY, WriteCondition::None, Some(TAGS), false)
            .await?
        {
            return Ok((w, true));
        }
        match self
            .put("plain", BODY, WriteCondition::None, None, false)
            .await?
        {
            Answer::Accepted(w) => Ok((w, false)),
            Answer::Failed(e) => Err(e),
            Answer::Refused => Err(self.unexpected("PutObject", "a plain write was refused")),
        }
    }

    /// Whether PutObjectTagging replaces the plain object's tags.
    async fn retagged(&mut self) -> Result<bool, StorageError> {
        let key = self.key("plain");
        let put = self
            .store
            .put_tagging(self.bucket, &key, "ferry-probe=2")
            .await;
        Ok(match answer(put)? {
            Answer::Accepted(()) => self.tags("plain").await?.as_deref() == Some("ferry-probe=2"),
            _ => false,
        })
    }

    /// Whether a server-side copy keeps the source's tags, and whether it refuses a
    /// `x-amz-copy-source-if-match` that does not match.
    async fn copies(&mut self, etag: &str) -> Result<(bool, bool), StorageError> {
        let tags_on_copy = match self.copy_plain(etag).await? {
            Answer::Accepted(_) => self.tags("copied").await?.as_deref() == Some("ferry-probe=2"),
            _ => false,
        };
        let if_match = matches!(self.copy_plain(WRONG_ETAG).await?, Answer::Refused);
        Ok((tags_on_copy, if_match))
    }

    /// Copies the plain object to `copied`, on the condition that its ETag is `if_match`.
    async fn copy_plain(&mut self, if_match: &str) -> Result<Answer<Written>, StorageError> {
        let (source, copied) = (self.key("plain"), self.key("copied"));
        let copy = self
            .store
            .copy(
                self.bucket,
                &source,
                Some(if_match),
                self.bucket,
                &copied,
                None,
                &WriteCondition::None,
            )
            .await;
        answer(copy)
    }

    /// Whether a PutObject with a streamed checksum trailer keeps the bytes sent.
    async fn trailer_kept(&mut self, etags_are_md5: bool) -> Result<bool, StorageError> {
        let written = self
            .put("trailer", OTHER_BODY, WriteCondition::None, None, true)
            .await?;
        let Answer::Accepted(w) = written else {
            return Ok(false);
        };
        let key = self.key("trailer");
        let head = self.store.head(self.bucket, &key, None).await?;
        let md5 = hex::encode(Md5::digest(OTHER_BODY));
        Ok(head.size == OTHER_BODY.len() as u64
            && (!etags_are_md5 || w.etag.eq_ignore_ascii_case(&md5)))
    }

    /// The completion probes on a key that exists (for If-Match and If-None-Match: * to be
    /// tried on it): the conditions a completion honours, whether an upload part takes a
    /// trailer after all, and whether a completion's answer has an ETag.
    async fn multipart(
        &mut self,
        mut checksum_trailer: bool,
    ) -> Result<(Conditions, bool, bool), StorageError> {
        // Written first, since a write drops the uploads of its key on some stores (Garage).
        let existing = match self
            .put("multipart", BODY, WriteCondition::None, None, false)
            .await?
        {
            Answer::Accepted(w) => w.etag,
            _ => return Err(self.unexpected("PutObject", "a plain write was refused")),
        };
        let upload = match self
            .upload("multipart", Some(TAGS), checksum_trailer)
            .await?
        {
            Some(upload) => upload,
            None => {
                checksum_trailer = false;
                self.upload("multipart", Some(TAGS), false)
                    .await?
                    .ok_or_else(|| self.unexpected("UploadPart", "the part was refused"))?
            }
        };
        let (complete, completed) = self
            .complete_conditions(existing, upload, checksum_trailer)
            .await?;
        // Any answer of a completion had an ETag (one the fault storm lost says nothing).
        let complete_etag = self.complete_etag || !completed.etag.is_empty();
        Ok((complete, checksum_trailer, complete_etag))
    }

    pub(super) fn unexpected(&self, operation: &'static str, what: &str) -> StorageError {
        StorageError {
            kind: ErrorKind::Retryable,
            operation,
            target: format!("s3://{}/{}", self.bucket, probe_prefix()),
            status: None,
            code: None,
            message: format!("capability probe: {what}"),
        }
    }

    /// Deletes what probes of processes that died mid-probe left under `.ferry-probe/`, once
    /// it is older than [`STRAY_AGE`] (a probe takes seconds; another process's may be under
    /// way now). Best effort: what fails stays for the next probe.
    async fn clean_strays(&self) {
        let root = ".ferry-probe/";
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let old = |at_ms: i64| at_ms > 0 && now_ms - at_ms > STRAY_AGE.as_millis() as i64;
        if let Ok(uploads) = self.store.list_uploads(self.bucket, root).await {
            for u in uploads.iter().filter(|u| old(u.initiated_ms)) {
                let aborted = self
                    .store
                    .abort_multipart(self.bucket, &u.key, &u.upload_id)
                    .await;
                left_as_stray(aborted, &u.key);
            }
        }
        if let Ok(page) = self.store.list_page(self.bucket, root, None, None).await {
            for o in page.objects.iter().filter(|o| old(o.last_modified_ms)) {
                left_as_stray(self.store.delete(self.bucket, &o.key).await, &o.key);
            }
        }
    }

    /// Deletes what the probe wrote and aborts its uploads, a few times each before leaving
    /// it with a warning.
    pub(super) async fn clean_up(&mut self) {
        self.clean_strays().await;
        for (key, id) in std::mem::take(&mut self.uploads) {
            let aborted = self.store.abort_multipart(self.bucket, &key, &id).await;
            left_as_stray(aborted, &key);
        }
        // Uploads started by a request whose answer was lost: ids the probe never learnt.
        if let Ok(open) = self.store.list_uploads(self.bucket, probe_prefix()).await {
            for u in open {
                let aborted = self
                    .store
                    .abort_multipart(self.bucket, &u.key, &u.upload_id)
                    .await;
                left_as_stray(aborted, &u.key);
            }
        }
        for key in std::mem::take(&mut self.written) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.store.delete(self.bucket, &key).await {
                    Ok(()) => break,
                    Err(e) if e.kind.is_retryable() && attempt < DELETE_ATTEMPTS => {
                        tokio::time::sleep(
                            ferry_core::retry::RetryPolicy::TRANSIENT.delay(attempt),
                        )
                        .await;
                    }
                    Err(e) => {
                        tracing::warn!(bucket = self.bucket, key, error = %e,
                            "could not delete a capability probe object");
                        break;
                    }
                }
            }
        }
    }
}
