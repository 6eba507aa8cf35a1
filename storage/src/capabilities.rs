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

/// The uploads of the completion probes.
struct Completions {
    /// An upload whose completion was refused, for the next try.
    open: Option<(String, UploadedPart)>,
    /// The key's ETag now.
    current: String,
    /// The answer of the last completion that went through.
    completed: Option<Written>,
    trailer: bool,
}

struct Probe<'a> {
    store: &'a dyn ObjectStore,
    bucket: &'a str,
    /// CreateMultipartUpload refused the tags sent with it.
    multipart_tags_refused: bool,
    /// A CompleteMultipartUpload's answer carried an ETag.
    complete_etag: bool,
    written: Vec<String>,
    uploads: Vec<(String, String)>,
}

impl Probe<'_> {
    fn key(&mut self, name: &str) -> String {
        let key = format!("{}{name}", probe_prefix());
        if !self.written.contains(&key) {
            self.written.push(key.clone());
        }
        key
    }

    async fn put(
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
    async fn upload(
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

    async fn complete(
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

    async fn tags(&mut self, name: &str) -> Result<Option<String>, StorageError> {
        let key = self.key(name);
        self.store.get_tagging(self.bucket, &key).await
    }

    async fn run(&mut self) -> Result<Capabilities, StorageError> {
        let md5 = hex::encode(Md5::digest(BODY));
        // A plain write, with tags: an earlier, interrupted probe may have left the object.
        // A store may refuse tags on PutObject outright (Backblaze B2 documents so): then
        // the plain write goes without them.
        let (first, tags_sent) = match self
            .put("plain", BODY, WriteCondition::None, Some(TAGS), false)
            .await?
        {
            Answer::Accepted(w) => (w, true),
            _ => match self
                .put("plain", BODY, WriteCondition::None, None, false)
                .await?
            {
                Answer::Accepted(w) => (w, false),
                Answer::Failed(e) => return Err(e),
                Answer::Refused => {
                    return Err(self.unexpected("PutObject", "a plain write was refused"));
                }
            },
        };
        let etags_are_md5 = first.etag_may_be_md5 && first.etag.eq_ignore_ascii_case(&md5);
        let tags_on_put = tags_sent && self.tags("plain").await?.as_deref() == Some(TAGS);
        let key = self.key("plain");
        let tagging = match answer(
            self.store
                .put_tagging(self.bucket, &key, "ferry-probe=2")
                .await,
        )? {
            Answer::Accepted(()) => self.tags("plain").await?.as_deref() == Some("ferry-probe=2"),
            _ => false,
        };

        let (source, copied) = (self.key("plain"), self.key("copied"));
        let tags_on_copy = match answer(
            self.store
                .copy(
                    self.bucket,
                    &source,
                    Some(&first.etag),
                    self.bucket,
                    &copied,
                    None,
                    &WriteCondition::None,
                )
                .await,
        )? {
            Answer::Accepted(_) => self.tags("copied").await?.as_deref() == Some("ferry-probe=2"),
            _ => false,
        };
        let copy_source_if_match = matches!(
            answer(
                self.store
                    .copy(
                        self.bucket,
                        &source,
                        Some(WRONG_ETAG),
                        self.bucket,
                        &copied,
                        None,
                        &WriteCondition::None,
                    )
                    .await
            )?,
            Answer::Refused
        );

        let put = self.put_conditions(&first.etag).await?;
        let checksums_verified = self.checksums_verified().await?;

        // A trailer counts only when both kinds of upload take it and keep the bytes sent.
        let mut checksum_trailer = checksums_verified
            && match self
                .put("trailer", OTHER_BODY, WriteCondition::None, None, true)
                .await?
            {
                Answer::Accepted(w) => {
                    let key = self.key("trailer");
                    let head = self.store.head(self.bucket, &key, None).await?;
                    head.size == OTHER_BODY.len() as u64
                        && (!etags_are_md5
                            || w.etag
                                .eq_ignore_ascii_case(&hex::encode(Md5::digest(OTHER_BODY))))
                }
                _ => false,
            };
        // The key exists for If-Match and If-None-Match: * to be tried on it; written first,
        // since a write drops the uploads of its key on some stores (Garage).
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

    /// Whether a wrong SHA-256 checksum header is refused and the right one accepted.
    async fn checksums_verified(&mut self) -> Result<bool, StorageError> {
        let sha256 =
            |b: &[u8]| aws_smithy_types::base64::encode(<Sha256 as sha2::Digest>::digest(b));
        let mut answers = Vec::with_capacity(2);
        for value in [sha256(OTHER_BODY), sha256(BODY)] {
            let key = self.key("checksum");
            let checksum = Checksum {
                algorithm: ChecksumKind::Sha256,
                value,
            };
            let attrs = ObjectAttrs::default();
            let options = PutOptions {
                attrs: &attrs,
                content_md5: None,
                checksum: Some(&checksum),
                condition: &WriteCondition::None,
                tagging: None,
                trailer: false,
            };
            let put = self
                .store
                .put(self.bucket, &key, body(BODY), BODY.len() as u64, options)
                .await;
            // A wrong checksum is refused as a bad digest (400), retryable to a client.
            answers.push(match put {
                Ok(_) => Some(true),
                Err(e) if e.status.is_some_and(|s| (400..500).contains(&s)) => Some(false),
                Err(e) => return Err(e),
            });
        }
        Ok(answers == [Some(false), Some(true)])
    }

    /// PutObject's conditions: each refused when it fails and accepted when it holds.
    async fn put_conditions(&mut self, etag: &str) -> Result<Conditions, StorageError> {
        // Other bytes than the object's, so a write that landed is told from one refused.
        let refused = matches!(
            self.put("plain", OTHER_BODY, WriteCondition::IfAbsent, None, false)
                .await?,
            Answer::Refused
        );
        let accepted = matches!(
            self.put("absent", BODY, WriteCondition::IfAbsent, None, false)
                .await?,
            Answer::Accepted(_)
        );
        let mut if_match = None;
        for form in [EtagForm::Quoted, EtagForm::Unquoted] {
            let wrong = self
                .put("plain", BODY, form.if_match(WRONG_ETAG), None, false)
                .await?;
            if !matches!(wrong, Answer::Refused) {
                continue;
            }
            let right = self
                .put("plain", BODY, form.if_match(etag), None, false)
                .await?;
            if matches!(right, Answer::Accepted(_)) {
                if_match = Some(form);
                break;
            }
        }
        Ok(Conditions {
            if_none_match: refused && accepted,
            if_match,
        })
    }

    /// CompleteMultipartUpload's conditions, and the answer of a completion of key
    /// `multipart` from an upload started with tags.
    async fn complete_conditions(
        &mut self,
        etag: String,
        upload: (String, UploadedPart),
        trailer: bool,
    ) -> Result<(Conditions, Written), StorageError> {
        let mut state = Completions {
            open: Some(upload),
            current: etag,
            completed: None,
            trailer,
        };
        let absent_refused = self
            .complete_once(&mut state, |_| WriteCondition::IfAbsent)
            .await?;
        let mut if_match = None;
        for form in [EtagForm::Quoted, EtagForm::Unquoted] {
            if !self
                .complete_once(&mut state, |_| form.if_match(WRONG_ETAG))
                .await?
            {
                continue;
            }
            let refused = self
                .complete_once(&mut state, |current| form.if_match(current))
                .await?;
            if !refused && state.open.is_none() {
                if_match = Some(form);
                break;
            }
        }
        let completed = match (state.completed, state.open.take()) {
            (Some(w), _) => w,
            // Nothing completed: complete plainly, for the answer and the tags.
            (None, Some(u)) => match self.complete("multipart", &u, WriteCondition::None).await? {
                Answer::Accepted(w) => w,
                Answer::Failed(e) => return Err(e),
                Answer::Refused => {
                    return Err(self
                        .unexpected("CompleteMultipartUpload", "a plain completion was refused"));
                }
            },
            (None, None) => return Err(self.unexpected("CompleteMultipartUpload", "no upload")),
        };
        // If-None-Match: * on a new key completes.
        let fresh = self
            .upload("fresh", None, trailer)
            .await?
            .ok_or_else(|| self.unexpected("UploadPart", "the part was refused"))?;
        let absent_accepted = matches!(
            self.complete("fresh", &fresh, WriteCondition::IfAbsent)
                .await?,
            Answer::Accepted(_)
        );
        Ok((
            Conditions {
                if_none_match: absent_refused && absent_accepted,
                if_match,
            },
            completed,
        ))
    }

    /// Completes an upload of `multipart` (the open one, or a new one) under the condition
    /// made from the key's current ETag; true when it was refused (412). A refused or failed
    /// upload stays open for the next try; a completed one changes the current ETag.
    async fn complete_once(
        &mut self,
        state: &mut Completions,
        condition: impl FnOnce(&str) -> WriteCondition,
    ) -> Result<bool, StorageError> {
        let upload = match state.open.take() {
            Some(u) => u,
            None => self
                .upload("multipart", Some(TAGS), state.trailer)
                .await?
                .ok_or_else(|| self.unexpected("UploadPart", "the part was refused"))?,
        };
        let condition = condition(&state.current);
        let mut upload = upload;
        let mut done = self
            .complete("multipart", &upload, condition.clone())
            .await?;
        // An earlier refusal that dropped the upload (some stores do): once more, afresh.
        if let Answer::Failed(e) = &done
            && e.code.as_deref() == Some("NoSuchUpload")
        {
            upload = self
                .upload("multipart", Some(TAGS), state.trailer)
                .await?
                .ok_or_else(|| self.unexpected("UploadPart", "the part was refused"))?;
            done = self.complete("multipart", &upload, condition).await?;
        }
        Ok(match done {
            Answer::Accepted(w) => {
                let key = self.key("multipart");
                state.current = self.store.head(self.bucket, &key, None).await?.etag;
                state.completed = Some(w);
                false
            }
            Answer::Refused => {
                state.open = Some(upload);
                true
            }
            Answer::Failed(_) => {
                state.open = Some(upload);
                false
            }
        })
    }

    fn unexpected(&self, operation: &'static str, what: &str) -> StorageError {
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
    async fn clean_up(&mut self) {
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

/// Attempts at each of the probe's requests while the answer says nothing about the store.
const PROBE_ATTEMPTS: u32 = 6;

/// The store as the probe sees it: each request retried while its answer says nothing about
/// the store (no answer, a 5xx, throttling), and answered as if it had been sent once. A
/// write whose answer was lost but which landed is recognised: a retried `If-None-Match: *`
/// PUT refused because the first attempt wrote the key, and a retried completion whose upload
/// the first attempt completed, both answer as the first attempt would have. Bodies are
/// gathered first (the probe's are a few bytes), so they can be sent again. Whether any retry
/// happened is kept: such a probe is trusted for less long, and not shared.
struct Patient<'a> {
    inner: &'a dyn ObjectStore,
    disturbed: std::sync::atomic::AtomicBool,
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

    fn disturbed(&self) -> bool {
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
    ) -> Result<super::ListPage, StorageError> {
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
    ) -> Result<super::ObjectHead, StorageError> {
        self.retry(|| self.inner.head(bucket, key, if_match))
            .await
            .0
    }

    async fn head_part(
        &self,
        bucket: &str,
        key: &str,
        number: u32,
    ) -> Result<super::PartHead, StorageError> {
        self.retry(|| self.inner.head_part(bucket, key, number))
            .await
            .0
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<super::ByteRange>,
        if_match: Option<&str>,
    ) -> Result<super::GetObject, StorageError> {
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
        range: super::ByteRange,
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
    ) -> Result<Vec<super::OpenUpload>, StorageError> {
        self.retry(|| self.inner.list_uploads(bucket, prefix))
            .await
            .0
    }
}
