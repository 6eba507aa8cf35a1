//! The requests that settle one key found on both sides: HEAD for checksums and headers,
//! GET Object Tagging for tags, and, deep, both objects read in full and digested.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_core::object::ObjectMeta;
use ferry_storage::{ErrorKind, ObjectHead, ObjectStore, StorageError};
use futures::TryStreamExt;
use md5::{Digest, Md5};

use super::verdict::{
    Listed, Verdict, archive_class, by_checksum, by_listing, header_differences, tag_difference,
};
use super::{Finding, Options, Seen};

/// The two buckets a key is checked in, and how deep.
pub(super) struct Checker {
    pub(super) source: Arc<dyn ObjectStore>,
    pub(super) destination: Arc<dyn ObjectStore>,
    pub(super) source_bucket: String,
    pub(super) destination_bucket: String,
    pub(super) options: Options,
    /// The class the rule gives every copy, if it does.
    pub(super) expected_class: Option<String>,
    /// Bytes read by deep comparisons, both sides.
    pub(super) bytes_read: AtomicU64,
}

impl Checker {
    /// Whether a key on both sides needs no request: its listing decides, and neither the
    /// headers nor the bytes are asked for.
    pub(super) fn by_listing_alone(
        &self,
        source: &ObjectMeta,
        destination: &ObjectMeta,
    ) -> Option<Finding> {
        if self.options.headers || self.options.deep {
            return None;
        }
        let finding =
            |verdict, how, differs| Some(Finding::both(source, destination, verdict, how, differs));
        match by_listing(source, destination) {
            Listed::Same(how) => finding(Verdict::Match, Some(how), Vec::new()),
            // A different size needs nothing more; different MD5s are checked by HEAD, which
            // says whether they are MD5s (SSE-KMS ETags look like them and are not).
            Listed::Differs(d) if d[0].starts_with("size") => {
                if archive_class(source.storage_class.as_deref()) {
                    return Some(archived(source, destination));
                }
                finding(Verdict::Differs, None, d)
            }
            _ => None,
        }
    }

    /// The finding for a key on both sides, with the requests it takes; `deep` reads both.
    pub(super) async fn both(
        &self,
        source: ObjectMeta,
        destination: ObjectMeta,
        deep: bool,
    ) -> Result<Finding, StorageError> {
        if deep && !self.options.headers && source.size == destination.size {
            return self.by_bytes(&source, &destination).await;
        }
        let heads = match self.heads(&source, &destination).await? {
            Ok(heads) => heads,
            Err(vanished) => return Ok(vanished),
        };
        let (mut verdict, mut how, mut differs, mut why) = (Verdict::Match, None, Vec::new(), None);
        let listed = match by_listing(&source, &destination) {
            // Two different "MD5s" are different bytes only if both really are MD5s.
            Listed::Differs(d)
                if d[0].starts_with("etag") && !(heads.0.etag_is_md5 && heads.1.etag_is_md5) =>
            {
                Listed::Undecided(
                    "one of the ETags is not an MD5 of the bytes (SSE-KMS or SSE-C)".into(),
                )
            }
            other => other,
        };
        let size_differs = matches!(&listed, Listed::Differs(d) if d[0].starts_with("size"));
        if deep && !size_differs && !heads.0.archived {
            let (s, d) = futures::try_join!(
                self.digest(&self.source, &self.source_bucket, &source.key),
                self.digest(
                    &self.destination,
                    &self.destination_bucket,
                    &destination.key
                ),
            )?;
            how = Some("bytes");
            if s != d {
                verdict = Verdict::Differs;
                differs.push("bytes: the contents differ at the same size".to_string());
            }
        } else {
            let settled = match listed {
                Listed::Undecided(listing) => {
                    by_checksum(heads.0.checksum.as_ref(), heads.1.checksum.as_ref()).map_err(
                        |checksums| {
                            format!("{listing}, and {checksums}; --deep compares the bytes")
                        },
                    )
                }
                other => Ok(other),
            };
            match settled {
                Ok(Listed::Same(h)) => how = Some(h),
                Ok(Listed::Differs(d)) => {
                    verdict = Verdict::Differs;
                    differs = d;
                }
                Ok(Listed::Undecided(w)) | Err(w) => {
                    verdict = Verdict::Unverifiable;
                    why = Some(w);
                }
            }
        }
        if self.options.headers {
            let found = self.header_differences(&source.key, &heads).await?;
            if !found.is_empty() {
                verdict = Verdict::Differs;
                differs.extend(found);
            }
        }
        if verdict != Verdict::Match
            && heads.0.archived
            && differs.iter().all(|d| !d.starts_with("tags"))
        {
            return Ok(archived(&source, &destination));
        }
        let mut finding = Finding::both(&source, &destination, verdict, how, differs);
        finding.why = why;
        Ok(finding)
    }

    /// Deep, headers aside: both objects read in full and their digests compared, with no
    /// HEAD (the reads say what a HEAD would: gone, or archived).
    async fn by_bytes(
        &self,
        source: &ObjectMeta,
        destination: &ObjectMeta,
    ) -> Result<Finding, StorageError> {
        let (s, d) = futures::join!(
            self.digest(&self.source, &self.source_bucket, &source.key),
            self.digest(
                &self.destination,
                &self.destination_bucket,
                &destination.key
            ),
        );
        let same = match (s, d) {
            (Ok(s), Ok(d)) => s == d,
            (Err(e), _) if e.kind == ErrorKind::NotFound => return Ok(gone_at_source(destination)),
            (_, Err(e)) if e.kind == ErrorKind::NotFound => {
                return Ok(gone_at_destination(source));
            }
            (Err(e), _) if e.kind == ErrorKind::Archived => {
                return Ok(archived(source, destination));
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        Ok(if same {
            Finding::both(
                source,
                destination,
                Verdict::Match,
                Some("bytes"),
                Vec::new(),
            )
        } else {
            let differs = vec!["bytes: the contents differ at the same size".to_string()];
            Finding::both(source, destination, Verdict::Differs, None, differs)
        })
    }

    /// Both objects' heads; `Err` with the finding when one of them is gone by now.
    async fn heads(
        &self,
        source: &ObjectMeta,
        destination: &ObjectMeta,
    ) -> Result<Result<(ObjectHead, ObjectHead), Finding>, StorageError> {
        let (s, d) = futures::join!(
            self.source.head(&self.source_bucket, &source.key, None),
            self.destination
                .head(&self.destination_bucket, &destination.key, None),
        );
        match (s, d) {
            (Ok(s), Ok(d)) => Ok(Ok((s, d))),
            (Err(e), _) if e.kind == ErrorKind::NotFound => Ok(Err(gone_at_source(destination))),
            (_, Err(e)) if e.kind == ErrorKind::NotFound => Ok(Err(gone_at_destination(source))),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    async fn header_differences(
        &self,
        key: &str,
        (source, destination): &(ObjectHead, ObjectHead),
    ) -> Result<Vec<String>, StorageError> {
        let mut found = header_differences(
            &source.attrs,
            &destination.attrs,
            self.expected_class.as_deref(),
        );
        let (s, d) = futures::try_join!(
            self.source.get_tagging(&self.source_bucket, key),
            self.destination.get_tagging(&self.destination_bucket, key),
        )?;
        found.extend(tag_difference(s.as_deref(), d.as_deref()));
        Ok(found)
    }

    /// The MD5 of an object's bytes, read as they arrive.
    async fn digest(
        &self,
        store: &Arc<dyn ObjectStore>,
        bucket: &str,
        key: &str,
    ) -> Result<[u8; 16], StorageError> {
        let object = store.get(bucket, key, None, None).await?;
        let mut md5 = Md5::new();
        let mut body = object.body;
        while let Some(chunk) = body.try_next().await? {
            self.bytes_read
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            md5.update(&chunk);
        }
        Ok(md5.finalize().into())
    }
}

/// A key deleted at the source between its listing and its check: extra now.
fn gone_at_source(destination: &ObjectMeta) -> Finding {
    let mut gone = Finding::one(Seen::Destination, destination, Verdict::Extra);
    gone.why = Some("deleted at the source while verifying".into());
    gone
}

/// A key deleted at the destination between its listing and its check: missing now.
fn gone_at_destination(source: &ObjectMeta) -> Finding {
    let mut gone = Finding::one(Seen::Source, source, Verdict::Missing);
    gone.why = Some("deleted at the destination while verifying".into());
    gone
}

/// The finding for an archived source object the destination does not hold as it is.
pub(super) fn archived(source: &ObjectMeta, destination: &ObjectMeta) -> Finding {
    let mut finding = Finding::both(source, destination, Verdict::Archived, None, Vec::new());
    finding.why = Some(format!(
        "the source is in {}: its bytes cannot be read until it is restored",
        source.storage_class.as_deref().unwrap_or("an archive tier")
    ));
    finding
}
