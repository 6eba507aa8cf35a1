//! The probe's conditional writes and checksums: each refused where it should be and
//! accepted where it should be.

use super::probe::Completions;
use super::*;

impl Probe<'_> {
    /// Whether a wrong SHA-256 checksum header is refused and the right one accepted.
    pub(super) async fn checksums_verified(&mut self) -> Result<bool, StorageError> {
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
                checksum: Some(&checksum),
                ..PutOptions::new(&attrs, &WriteCondition::None)
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
    pub(super) async fn put_conditions(&mut self, etag: &str) -> Result<Conditions, StorageError> {
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
    pub(super) async fn complete_conditions(
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
}
