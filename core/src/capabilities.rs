//! What a bucket's store does with ferry's requests, as the storage crate's probe measured
//! it: the answers ([`Capabilities`]) and what ferry does about each. The fleet shares them
//! through the queue, so they are plain data.

use serde::{Deserialize, Serialize};

use crate::object::WriteCondition;

/// How an `If-Match` header must carry the ETag for a store to honour it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EtagForm {
    /// In double quotes, as RFC 9110 has it.
    Quoted,
    /// Bare (Ceph RGW 16 refuses the quoted form even when it matches).
    Unquoted,
}

impl EtagForm {
    /// The condition `If-Match: etag` in this form.
    pub fn if_match(self, etag: &str) -> WriteCondition {
        match self {
            EtagForm::Quoted => WriteCondition::IfMatch(etag.to_string()),
            EtagForm::Unquoted => WriteCondition::IfMatchUnquoted(etag.to_string()),
        }
    }
}

/// A conditional write, as a store honours it (or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditions {
    /// `If-None-Match: *` is refused on an existing key and accepted on a new one.
    pub if_none_match: bool,
    /// The form in which `If-Match` is refused with a wrong ETag and accepted with the right
    /// one; `None` when neither is.
    pub if_match: Option<EtagForm>,
}

impl Conditions {
    /// Whether both conditions hold, so a write that lands late cannot replace a newer one.
    pub fn honoured(&self) -> bool {
        self.if_none_match && self.if_match.is_some()
    }

    /// `wanted` as this store must receive it, or no condition where it does not honour
    /// conditions (write intents in Redis stand for them there).
    pub fn apply(&self, wanted: WriteCondition) -> WriteCondition {
        if !self.honoured() {
            return WriteCondition::None;
        }
        match (wanted, self.if_match) {
            (WriteCondition::IfMatch(e) | WriteCondition::IfMatchUnquoted(e), Some(form)) => {
                form.if_match(&e)
            }
            (other, _) => other,
        }
    }
}

/// What a bucket's store does, as measured by [`probe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// A plain single-request write's ETag is the MD5 of its bytes, so ETags can be compared
    /// with the source's (false with default SSE-KMS, and on some stores).
    pub etags_are_md5: bool,
    /// Conditions on PutObject (and CopyObject).
    pub put: Conditions,
    /// Conditions on CompleteMultipartUpload.
    pub complete: Conditions,
    /// PutObjectTagging works and GetObjectTagging returns what it set.
    pub tagging: bool,
    /// Tags sent with PutObject (`x-amz-tagging`) are kept.
    pub tags_on_put: bool,
    /// Tags sent with CreateMultipartUpload are kept on the completed object.
    pub tags_on_multipart: bool,
    /// CopyObject with the tagging directive COPY keeps the source's tags.
    pub tags_on_copy: bool,
    /// CopyObject refuses a wrong `x-amz-copy-source-if-match`.
    pub copy_source_if_match: bool,
    /// HEAD with `partNumber` tells a multipart object's part count and the part's length.
    pub part_number: bool,
    /// CompleteMultipartUpload's answer carries the new object's ETag.
    pub complete_etag: bool,
    /// A PutObject whose `x-amz-checksum-sha256` does not match its bytes is refused, and one
    /// that matches is accepted: the store checks checksums.
    pub checksums_verified: bool,
    /// Streamed uploads with a trailing checksum (aws-chunked) are accepted, by PutObject and
    /// UploadPart, and store the bytes sent; counted only where checksums are verified, since
    /// a trailer the store does not check protects nothing.
    pub checksum_trailer: bool,
}

impl Capabilities {
    /// Whether PutObject refuses writes whose condition fails (both kinds).
    pub fn conditional_writes(&self) -> bool {
        self.put.honoured()
    }

    /// One row per capability: its name, what was measured, and what ferry does about it.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = self.condition_rows();
        rows.extend(self.integrity_rows());
        rows.extend(self.tag_rows());
        rows
    }

    /// Conditional writes: what guards a late write.
    fn condition_rows(&self) -> Vec<Row> {
        let form = |f: Option<EtagForm>| match f {
            Some(EtagForm::Quoted) => "yes (quoted ETag)".to_string(),
            Some(EtagForm::Unquoted) => "yes (bare ETag only)".to_string(),
            None => "no".to_string(),
        };
        let intents = "writes unconditionally; Redis write intents guard late writes";
        vec![
            (
                "PutObject If-None-Match: *",
                yes(self.put.if_none_match),
                choose(self.put.honoured(), "conditional writes", intents),
            ),
            (
                "PutObject If-Match",
                form(self.put.if_match),
                choose(
                    self.put.honoured(),
                    "sends If-Match in the form that works",
                    intents,
                ),
            ),
            (
                "CompleteMultipartUpload If-None-Match: *",
                yes(self.complete.if_none_match),
                choose(self.complete.honoured(), "conditional completion", intents),
            ),
            (
                "CompleteMultipartUpload If-Match",
                form(self.complete.if_match),
                choose(
                    self.complete.honoured(),
                    "sends If-Match in the form that works",
                    intents,
                ),
            ),
        ]
    }

    /// ETags and checksums: how each copy is checked.
    fn integrity_rows(&self) -> Vec<Row> {
        vec![
            (
                "single-request ETag is the MD5",
                yes(self.etags_are_md5),
                choose(
                    self.etags_are_md5,
                    "checks every copy's ETag against the source's MD5",
                    "relies on Content-MD5 and checksums, not ETags",
                ),
            ),
            (
                "CompleteMultipartUpload answers the ETag",
                yes(self.complete_etag),
                choose(
                    self.complete_etag,
                    "checks it against the parts' ETags",
                    "reads the ETag with one HEAD, then checks it",
                ),
            ),
            (
                "HEAD with partNumber",
                yes(self.part_number),
                choose(
                    self.part_number,
                    "as a source: copies with the source's part sizes",
                    "as a source: infers part sizes from the ETag's part count",
                ),
            ),
            (
                "checksum headers verified",
                yes(self.checksums_verified),
                choose(
                    self.checksums_verified,
                    "sends the source's checksum for the store to check",
                    "checks the MD5 of the bytes sent against the ETag instead",
                ),
            ),
            (
                "streamed checksum trailer (aws-chunked)",
                yes(self.checksum_trailer),
                choose(
                    self.checksum_trailer,
                    "CRC32C trailer where no Content-MD5 applies",
                    "no trailer: checks the MD5 of the bytes sent against the ETag",
                ),
            ),
        ]
    }

    /// Tags, and pinning server-side copies.
    fn tag_rows(&self) -> Vec<Row> {
        vec![
            (
                "object tagging",
                yes(self.tagging),
                choose(
                    self.tagging,
                    "copies tags",
                    "cannot keep tags (none to copy)",
                ),
            ),
            (
                "tags on PutObject",
                tag_path(self.tagging, self.tags_on_put),
                choose(
                    self.tags_on_put || !self.tagging,
                    "sends tags with the write",
                    "sets tags with PutObjectTagging after the write",
                ),
            ),
            (
                "tags on CreateMultipartUpload",
                tag_path(self.tagging, self.tags_on_multipart),
                choose(
                    self.tags_on_multipart || !self.tagging,
                    "sends tags with the upload",
                    "sets tags with PutObjectTagging after completing",
                ),
            ),
            (
                "tags on CopyObject",
                tag_path(self.tagging, self.tags_on_copy),
                choose(
                    self.tags_on_copy || !self.tagging,
                    "copies tags with the object",
                    "sets tags with PutObjectTagging after the copy",
                ),
            ),
            (
                "CopyObject x-amz-copy-source-if-match",
                yes(self.copy_source_if_match),
                choose(
                    self.copy_source_if_match,
                    "pins server-side copies to the planned version",
                    "checks the copy's ETag against the planned version",
                ),
            ),
        ]
    }
}

/// A capability's row: its name, what was measured, and what ferry does about it.
pub type Row = (&'static str, String, &'static str);

fn yes(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn choose(b: bool, then: &'static str, otherwise: &'static str) -> &'static str {
    if b { then } else { otherwise }
}

/// Whether a write path keeps tags, on a store that may have no tagging at all.
fn tag_path(tagging: bool, kept: bool) -> String {
    match (tagging, kept) {
        (false, _) => "n/a (no tagging)".into(),
        (true, true) => "yes".into(),
        (true, false) => "no".into(),
    }
}
