//! The lean path's requests and answers in HTTP terms: headers written and read, error
//! bodies and body streams.

use super::*;

/// Counts a failed request, as the SDK path counts its own.
pub(super) fn counted(e: StorageError) -> StorageError {
    if crate::capabilities::probing() {
        return e;
    }
    Metric::S3Errors
        .counter(&[
            ("operation", e.operation.into()),
            (
                "status",
                e.status
                    .map_or_else(|| "none".to_string(), |s| s.to_string()),
            ),
        ])
        .increment(1);
    e
}

pub(super) const USER_AGENT: &str = concat!("ferry/", env!("CARGO_PKG_VERSION"));

pub(super) fn build(
    method: Method,
    url: &str,
    headers: HeaderMap,
    body: RequestBody,
    op: Op<'_>,
) -> Result<Request<RequestBody>, StorageError> {
    let mut request = Request::builder()
        .method(method)
        .uri(url)
        .body(body)
        .map_err(|e| op.error(ErrorKind::Permanent, format!("building the request: {e}")))?;
    *request.headers_mut() = headers;
    Ok(request)
}

/// The preserved headers, metadata and storage class of a write.
pub(super) fn put_attrs(
    headers: &mut HeaderMap,
    attrs: &ObjectAttrs,
    op: Op<'_>,
) -> Result<(), StorageError> {
    let fields = [
        ("content-type", &attrs.content_type),
        ("content-encoding", &attrs.content_encoding),
        ("content-language", &attrs.content_language),
        ("content-disposition", &attrs.content_disposition),
        ("cache-control", &attrs.cache_control),
        ("x-amz-storage-class", &attrs.storage_class),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            headers.insert(name, op.header(v)?);
        }
    }
    // Sent as the SDK sends it: parsed, and written again as an HTTP date; left out when it
    // does not parse.
    if let Some(expires) = attrs
        .expires
        .as_deref()
        .and_then(|s| DateTime::from_str(s, Format::HttpDate).ok())
        .and_then(|d| d.fmt(Format::HttpDate).ok())
    {
        headers.insert("expires", op.header(&expires)?);
    }
    for (name, value) in &attrs.metadata {
        let name =
            HeaderName::from_bytes(format!("x-amz-meta-{name}").as_bytes()).map_err(|_| {
                op.error(
                    ErrorKind::Permanent,
                    format!("user metadata {name:?} cannot be sent as an HTTP header"),
                )
            })?;
        headers.append(name, op.header(value)?);
    }
    Ok(())
}

pub(super) fn checksum_header(c: &Checksum) -> &'static str {
    match c.algorithm {
        ChecksumKind::Crc32 => "x-amz-checksum-crc32",
        ChecksumKind::Crc32c => "x-amz-checksum-crc32c",
        ChecksumKind::Crc64Nvme => "x-amz-checksum-crc64nvme",
        ChecksumKind::Sha1 => "x-amz-checksum-sha1",
        ChecksumKind::Sha256 => "x-amz-checksum-sha256",
    }
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_str(headers, name).and_then(|v| v.trim().parse().ok())
}

/// Whether the answer's encryption headers say its ETag is not an MD5 of the bytes.
pub(super) fn encrypted(headers: &HeaderMap) -> bool {
    headers.contains_key("x-amz-server-side-encryption-customer-algorithm")
        || header_str(headers, "x-amz-server-side-encryption")
            .is_some_and(|s| s.starts_with("aws:kms"))
}

/// What a GET's (or HEAD's) headers tell about the object, as the SDK path reads them.
pub(crate) fn head_from(headers: &HeaderMap, with_archive_status: bool) -> ObjectHead {
    let text = |name: &str| header_str(headers, name).map(str::to_string);
    let etag = header_str(headers, "etag")
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    let storage_class = text("x-amz-storage-class");
    let archive_status = if with_archive_status {
        header_str(headers, "x-amz-archive-status")
    } else {
        None
    };
    let checksum = if header_str(headers, "x-amz-checksum-type") == Some("COMPOSITE") {
        None
    } else {
        [
            (ChecksumKind::Crc64Nvme, "x-amz-checksum-crc64nvme"),
            (ChecksumKind::Crc32c, "x-amz-checksum-crc32c"),
            (ChecksumKind::Crc32, "x-amz-checksum-crc32"),
            (ChecksumKind::Sha256, "x-amz-checksum-sha256"),
            (ChecksumKind::Sha1, "x-amz-checksum-sha1"),
        ]
        .into_iter()
        .find_map(|(algorithm, name)| {
            header_str(headers, name)
                .filter(|v| !v.contains('-'))
                .map(|v| Checksum {
                    algorithm,
                    value: v.to_string(),
                })
        })
    };
    let metadata = headers
        .iter()
        .filter_map(|(name, value)| {
            let suffix = name.as_str().strip_prefix("x-amz-meta-")?;
            Some((suffix.to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    ObjectHead {
        size: header_u64(headers, "content-length").unwrap_or(0),
        etag_is_md5: etag_is_md5(&etag) && !encrypted(headers),
        etag,
        last_modified_ms: header_str(headers, "last-modified")
            .and_then(|d| DateTime::from_str(d, Format::HttpDate).ok())
            .and_then(|d| d.to_millis().ok())
            .unwrap_or(0),
        tag_count: header_str(headers, "x-amz-tagging-count")
            .and_then(|n| n.trim().parse::<i64>().ok())
            .map_or(0, |n| n.max(0) as u32),
        archived: crate::wire::archived_str(
            storage_class.as_deref(),
            archive_status,
            header_str(headers, "x-amz-restore"),
        ),
        checksum,
        attrs: ObjectAttrs {
            content_type: text("content-type"),
            content_encoding: text("content-encoding"),
            content_language: text("content-language"),
            content_disposition: text("content-disposition"),
            cache_control: text("cache-control"),
            expires: text("expires"),
            metadata,
            storage_class,
        },
    }
}

/// The text of the first `<tag>...</tag>` in an XML error body, unescaped.
pub(super) fn xml_text(body: &[u8], tag: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find(&format!("</{tag}>"))?;
    let text = body[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&");
    Some(text)
}

/// Reads up to `limit` bytes of a body, then stops (the rest is dropped with it).
pub(super) async fn read_limited(mut body: Incoming, limit: usize) -> Bytes {
    let mut out = BytesMut::new();
    while out.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    out.freeze()
}

/// An answer's body as a [`BodyStream`]; a transport error mid-body is retryable.
pub(super) fn body_stream(body: Incoming, operation: &'static str, target: String) -> BodyStream {
    Box::pin(http_body_util::BodyDataStream::new(body).map(move |chunk| {
        chunk.map_err(|e| StorageError {
            kind: ErrorKind::Retryable,
            operation,
            target: target.clone(),
            status: None,
            code: None,
            message: format!("reading the body: {}", error_chain(&e)),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_and_messages_are_read_from_the_xml_body() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
            <Message>no &amp; never</Message></Error>";
        assert_eq!(xml_text(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(xml_text(body, "Message").as_deref(), Some("no & never"));
        assert_eq!(xml_text(b"<Error></Error>", "Code"), None);
        assert_eq!(xml_text(b"\xff\xfe", "Code"), None);
    }

    #[test]
    fn a_head_reads_every_preserved_header() {
        let mut h = HeaderMap::new();
        h.insert(
            "etag",
            HeaderValue::from_static("\"0123456789abcdef0123456789abcdef\""),
        );
        h.insert("content-length", HeaderValue::from_static("42"));
        h.insert(
            "last-modified",
            HeaderValue::from_static("Wed, 02 Dec 2026 20:49:08 GMT"),
        );
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("cache-control", HeaderValue::from_static("max-age=60"));
        h.insert("x-amz-meta-owner", HeaderValue::from_static("ops"));
        h.insert("x-amz-tagging-count", HeaderValue::from_static("2"));
        h.insert("x-amz-storage-class", HeaderValue::from_static("GLACIER"));
        h.insert(
            "x-amz-checksum-crc32c",
            HeaderValue::from_static("yZRlqg=="),
        );
        let head = head_from(&h, true);
        assert_eq!(head.size, 42);
        assert_eq!(head.etag, "0123456789abcdef0123456789abcdef");
        assert!(head.etag_is_md5);
        assert_eq!(head.last_modified_ms, 1_796_244_548_000);
        assert_eq!(head.attrs.content_type.as_deref(), Some("text/plain"));
        assert_eq!(head.attrs.cache_control.as_deref(), Some("max-age=60"));
        assert_eq!(
            head.attrs.metadata.get("owner").map(String::as_str),
            Some("ops")
        );
        assert_eq!(head.tag_count, 2);
        assert!(head.archived);
        assert_eq!(
            head.checksum,
            Some(Checksum {
                algorithm: ChecksumKind::Crc32c,
                value: "yZRlqg==".into()
            })
        );
        h.insert(
            "x-amz-server-side-encryption",
            HeaderValue::from_static("aws:kms"),
        );
        h.insert("x-amz-checksum-type", HeaderValue::from_static("COMPOSITE"));
        let head = head_from(&h, true);
        assert!(!head.etag_is_md5);
        assert_eq!(head.checksum, None);
    }

    #[test]
    fn urls_put_the_encoded_key_after_the_bucket_path() {
        let bucket = Bucket {
            base: "http://127.0.0.1:3900/photos".into(),
            host: HeaderValue::from_static("127.0.0.1:3900"),
            region: "garage".into(),
            service: "s3".into(),
        };
        let (path, url) = Direct::url(&bucket, "2024/a b+c.jpg");
        assert_eq!(path, "/photos/2024/a%20b%2Bc.jpg");
        assert_eq!(url, "http://127.0.0.1:3900/photos/2024/a%20b%2Bc.jpg");
        let virtual_host = Bucket {
            base: "https://photos.s3.eu-west-1.amazonaws.com".into(),
            ..bucket
        };
        let (path, url) = Direct::url(&virtual_host, "/lead");
        assert_eq!(path, "//lead");
        assert_eq!(url, "https://photos.s3.eu-west-1.amazonaws.com//lead");
    }
}
