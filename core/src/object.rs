//! Objects as ferry speaks of them, whatever store holds them: what a listing shows, what a
//! copy preserves, which bytes, and on what condition a write may land.

use std::collections::BTreeMap;

/// One object as a listing shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// Last-Modified in milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    /// Storage class as listed; `None` is STANDARD.
    pub storage_class: Option<String>,
}

/// The headers and metadata ferry preserves on copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectAttrs {
    /// Content-Type.
    pub content_type: Option<String>,
    /// Content-Encoding.
    pub content_encoding: Option<String>,
    /// Content-Language.
    pub content_language: Option<String>,
    /// Content-Disposition.
    pub content_disposition: Option<String>,
    /// Cache-Control.
    pub cache_control: Option<String>,
    /// Expires, as the HTTP date the server sent.
    pub expires: Option<String>,
    /// User metadata (`x-amz-meta-*`), names lower-case.
    pub metadata: BTreeMap<String, String>,
    /// Storage class; `None` is STANDARD.
    pub storage_class: Option<String>,
}

/// A full-object checksum as S3 stores it (`x-amz-checksum-*`, base64).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    /// Which algorithm.
    pub algorithm: ChecksumKind,
    /// The value, base64 as S3 sends it.
    pub value: String,
}

/// The checksum algorithms S3 keeps per object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumKind {
    /// CRC32 (`x-amz-checksum-crc32`).
    Crc32,
    /// CRC32C (`x-amz-checksum-crc32c`).
    Crc32c,
    /// CRC64NVME (`x-amz-checksum-crc64nvme`).
    Crc64Nvme,
    /// SHA-1 (`x-amz-checksum-sha1`).
    Sha1,
    /// SHA-256 (`x-amz-checksum-sha256`).
    Sha256,
}

/// What a write asks of the object already at the destination key (conditional writes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WriteCondition {
    /// Write whatever is there.
    #[default]
    None,
    /// Only if no object has the key (`If-None-Match: *`).
    IfAbsent,
    /// Only if the object there has this ETag (`If-Match`, the ETag in double quotes as
    /// RFC 9110 has it).
    IfMatch(String),
    /// [`WriteCondition::IfMatch`] with the ETag sent bare, for stores that refuse the
    /// quoted form even when it matches (Ceph RGW 16); the probe finds which form works.
    IfMatchUnquoted(String),
}

/// An inclusive byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub first: u64,
    /// Last byte (inclusive).
    pub last: u64,
}

/// Whether an ETag is a plain MD5 of the content (not multipart, not SSE-KMS style).
pub fn etag_is_md5(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}
