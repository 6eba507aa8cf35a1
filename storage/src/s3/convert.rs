//! Between the SDK's types and ferry's: keys, bodies, tags, headers and checksums.

use super::*;

pub(super) fn strip_quotes(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

pub(super) fn millis(dt: Option<&DateTime>) -> i64 {
    dt.and_then(|d| d.to_millis().ok()).unwrap_or(0)
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` and unreserved characters.
pub(super) fn encode_copy_source(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(bucket.len() + key.len() + 1);
    out.push_str(bucket);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn to_sdk_body(body: BodyStream, length: u64, progress: Arc<Progress>) -> ByteStream {
    ByteStream::from_body_1_x(SizedBody::new(body, length, progress))
}

pub(super) fn from_sdk_body(
    body: ByteStream,
    operation: &'static str,
    target: String,
) -> BodyStream {
    Box::pin(futures::stream::try_unfold(body, move |mut body| {
        let target = target.clone();
        async move {
            match body.try_next().await {
                Ok(Some(chunk)) => Ok(Some((chunk, body))),
                Ok(None) => Ok(None),
                Err(e) => Err(StorageError {
                    kind: ErrorKind::Retryable,
                    operation,
                    target,
                    status: None,
                    code: None,
                    message: format!("reading the body: {}", error_chain(&e)),
                }),
            }
        }
    }))
}

/// Decodes a key from a listing made with `encoding-type=url` (`%XX` escapes, `+` for a
/// space, as S3 and botocore do it).
pub(super) fn url_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes tags as `x-amz-tagging` carries them (`k1=v1&k2=v2`, percent-encoded).
pub(super) fn encode_tags<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let enc = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    tags.map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub(super) fn metadata_map(
    m: Option<&HashMap<String, String>>,
) -> std::collections::BTreeMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

pub(super) fn parse_expires(value: &Option<String>) -> Option<DateTime> {
    value
        .as_deref()
        .and_then(|s| DateTime::from_str(s, DateTimeFormat::HttpDate).ok())
}

/// Whether a response's encryption headers say its ETag is not an MD5 of the bytes.
pub(super) fn encrypted(sse: Option<&ServerSideEncryption>, sse_customer: Option<&str>) -> bool {
    sse_customer.is_some() || sse.is_some_and(|s| s.as_str().starts_with("aws:kms"))
}

/// Whether an object's bytes are in an archive, unreadable until restored.
pub(super) fn archived(
    class: Option<&StorageClass>,
    status: Option<&ArchiveStatus>,
    restore: Option<&str>,
) -> bool {
    archived_str(
        class.map(StorageClass::as_str),
        status.map(ArchiveStatus::as_str),
        restore,
    )
}

/// The full-object checksum a HEAD or GET returned (composite checksums of multipart objects
/// describe parts, not the object, and are left out).
pub(super) fn full_checksum(
    kind: Option<&ChecksumType>,
    values: [(ChecksumKind, Option<&str>); 5],
) -> Option<Checksum> {
    if matches!(kind, Some(ChecksumType::Composite)) {
        return None;
    }
    values.into_iter().find_map(|(algorithm, value)| {
        value.filter(|v| !v.contains('-')).map(|v| Checksum {
            algorithm,
            value: v.to_string(),
        })
    })
}

/// Removes the SDK's default `Content-Type: application/octet-stream`, so an object without
/// a Content-Type is copied without one.
pub(super) fn strip_default_content_type(req: &mut aws_sdk_s3::config::http::HttpRequest) {
    req.headers_mut().remove("content-type");
}

/// Says `Content-Length: 0` on a request that has no body and no length.
pub(super) fn empty_body_length(req: &mut aws_sdk_s3::config::http::HttpRequest) {
    if req.headers().get("content-length").is_none() {
        req.headers_mut().insert("content-length", "0");
    }
}

/// Applies the preserved headers to any request builder with the standard setters.
macro_rules! apply_attrs {
    ($req:expr, $attrs:expr) => {{
        let attrs: &ObjectAttrs = $attrs;
        #[allow(deprecated)]
        let req = $req
            .set_content_type(attrs.content_type.clone())
            .set_content_encoding(attrs.content_encoding.clone())
            .set_content_language(attrs.content_language.clone())
            .set_content_disposition(attrs.content_disposition.clone())
            .set_cache_control(attrs.cache_control.clone())
            .set_expires(parse_expires(&attrs.expires))
            .set_storage_class(attrs.storage_class.as_deref().map(StorageClass::from));
        if attrs.metadata.is_empty() {
            req
        } else {
            req.set_metadata(Some(
                attrs
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ))
        }
    }};
}

/// Sets a write condition on any request builder with `if_none_match` and `if_match`.
macro_rules! apply_condition {
    ($req:expr, $condition:expr) => {{
        match $condition {
            WriteCondition::None => $req,
            WriteCondition::IfAbsent => $req.if_none_match("*"),
            WriteCondition::IfMatch(etag) => $req.if_match(quoted(etag)),
            WriteCondition::IfMatchUnquoted(etag) => $req.if_match(etag.trim_matches('"')),
        }
    }};
}

/// Reads the preserved headers out of a HEAD or GET output (they share accessor names).
macro_rules! read_head {
    ($out:expr, $archive_status:expr) => {{
        let out = &$out;
        let etag = strip_quotes(out.e_tag().unwrap_or_default());
        ObjectHead {
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag_is_md5: etag_is_md5(&etag)
                && !encrypted(out.server_side_encryption(), out.sse_customer_algorithm()),
            etag,
            last_modified_ms: millis(out.last_modified()),
            tag_count: out.tag_count().map_or(0, |n| n.max(0) as u32),
            archived: archived(out.storage_class(), $archive_status, out.restore()),
            checksum: full_checksum(
                out.checksum_type(),
                [
                    (ChecksumKind::Crc64Nvme, out.checksum_crc64_nvme()),
                    (ChecksumKind::Crc32c, out.checksum_crc32_c()),
                    (ChecksumKind::Crc32, out.checksum_crc32()),
                    (ChecksumKind::Sha256, out.checksum_sha256()),
                    (ChecksumKind::Sha1, out.checksum_sha1()),
                ],
            ),
            attrs: ObjectAttrs {
                content_type: out.content_type().map(str::to_string),
                content_encoding: out.content_encoding().map(str::to_string),
                content_language: out.content_language().map(str::to_string),
                content_disposition: out.content_disposition().map(str::to_string),
                cache_control: out.cache_control().map(str::to_string),
                expires: out.expires_string().map(str::to_string),
                metadata: metadata_map(out.metadata()),
                storage_class: out.storage_class().map(|c| c.as_str().to_string()),
            },
        }
    }};
}

/// Sends an upload (`op`, a customized PutObject or UploadPart) under the upload watchdog,
/// and reads its answer as [`Written`]: the two answer alike.
macro_rules! send_upload {
    ($store:expr, $op:expr, $operation:literal, $progress:expr, $bucket:expr, $key:expr) => {{
        let store = $store;
        let sent = async {
            $op.send()
                .await
                .map_err(|e| store.error($operation, store.target($bucket, $key), e))
        };
        let target = || store.target($bucket, $key);
        let out = watch_upload(sent, &$progress, store.timeouts, $operation, target).await?;
        Written {
            etag: strip_quotes(out.e_tag().unwrap_or_default()),
            etag_may_be_md5: !encrypted(out.server_side_encryption(), out.sse_customer_algorithm()),
        }
    }};
}

pub(super) use {apply_attrs, apply_condition, read_head, send_upload};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_are_url_decoded() {
        assert_eq!(url_decode("a%01b"), "a\u{1}b");
        assert_eq!(url_decode("plain%20key%2Bx"), "plain key+x");
        assert_eq!(url_decode("with+space"), "with space");
        assert_eq!(url_decode("%E6%97%A5%E6%9C%AC"), "日本");
        assert_eq!(url_decode("odd%zz%"), "odd%zz%");
        assert_eq!(url_decode("end%41"), "endA");
    }

    #[test]
    fn tags_are_encoded_for_the_tagging_header() {
        let tags = [("k1", "v1"), ("k 2", "v+2&x=y")];
        assert_eq!(encode_tags(tags.into_iter()), "k1=v1&k%202=v%2B2%26x%3Dy");
    }

    #[test]
    fn archived_needs_an_archive_class_and_no_finished_restore() {
        assert!(archived(Some(&StorageClass::Glacier), None, None));
        assert!(archived(
            Some(&StorageClass::DeepArchive),
            None,
            Some("ongoing-request=\"true\"")
        ));
        assert!(!archived(
            Some(&StorageClass::Glacier),
            None,
            Some("ongoing-request=\"false\", expiry-date=\"Wed, 02 Dec 2026 20:49:08 GMT\"")
        ));
        assert!(!archived(Some(&StorageClass::GlacierIr), None, None));
        assert!(archived(
            Some(&StorageClass::IntelligentTiering),
            Some(&ArchiveStatus::DeepArchiveAccess),
            None
        ));
        assert!(!archived(None, None, None));
    }

    #[test]
    fn copy_source_is_percent_encoded_but_keeps_slashes() {
        assert_eq!(
            encode_copy_source("b", "a/b c+%#ü"),
            "b/a/b%20c%2B%25%23%C3%BC"
        );
    }
}
