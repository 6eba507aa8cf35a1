//! The version operations on the SDK: versioning, the version listing read in the order the
//! server wrote it, and the reads and writes of one version.
//!
//! The SDK parses a ListObjectVersions answer into two lists, versions and delete markers,
//! and so loses how they interleave within a key (aws-sdk-go-v2 #3164, aws-sdk-java-v2
//! #1620). Last-Modified alone cannot put them back in order: it has whole seconds on some
//! stores, and versions written within one second tie. Where the store keeps it (AWS, Ceph
//! RGW), the answer's own document order is the true order, so the listing keeps the
//! answer's bytes (an interceptor reads them once the SDK has them) and reads its `Version`
//! and `DeleteMarker` elements in the order they come; [`crate::ByKey`] then orders a key's
//! entries by time with that order as the tie-break, for stores that list markers apart.

use std::sync::Mutex;

use aws_sdk_s3::client::customize::CustomizableOperation;
use aws_sdk_s3::config::interceptors::AfterDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::operation::put_object::{PutObjectError, PutObjectOutput};
use aws_sdk_s3::types::BucketVersioningStatus;
use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};

use super::convert::*;
use super::*;
use crate::versions::{VersionCursor, VersionEntry, VersionPage, VersionWritten, Versioning};

/// Keeps a copy of the answer's body once the SDK has read it.
#[derive(Clone, Debug, Default)]
struct RawAnswer(Arc<Mutex<Option<bytes::Bytes>>>);

impl Intercept for RawAnswer {
    fn name(&self) -> &'static str {
        "ferry-raw-answer"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(bytes) = context.response().body().bytes() {
            *self.0.lock().expect("raw answer lock") = Some(bytes::Bytes::copy_from_slice(bytes));
        }
        Ok(())
    }
}

impl S3Store {
    /// A PutObject with `options`, ready to send (what [`ObjectStore::put`] and
    /// [`ObjectStore::put_version`] send on the SDK).
    pub(super) fn put_operation(
        &self,
        bucket: &str,
        key: &str,
        body: BodyStream,
        length: u64,
        options: &PutOptions<'_>,
        progress: Arc<Progress>,
    ) -> CustomizableOperation<PutObjectOutput, PutObjectError, PutObjectFluentBuilder> {
        let req = self
            .uploads
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(length as i64)
            .body(to_sdk_body(body, length, progress))
            .set_tagging(options.tagging.map(str::to_string));
        let req = match options.content_md5.and_then(|h| hex::decode(h).ok()) {
            Some(md5) => req.content_md5(aws_smithy_types::base64::encode(md5)),
            None => req,
        };
        let req = match options.checksum {
            Some(c) => {
                let v = c.value.clone();
                match c.algorithm {
                    ChecksumKind::Crc32 => req.checksum_crc32(v),
                    ChecksumKind::Crc32c => req.checksum_crc32_c(v),
                    ChecksumKind::Crc64Nvme => req.checksum_crc64_nvme(v),
                    ChecksumKind::Sha1 => req.checksum_sha1(v),
                    ChecksumKind::Sha256 => req.checksum_sha256(v),
                }
            }
            None if options.content_md5.is_none() && options.trailer => {
                req.checksum_algorithm(ChecksumAlgorithm::Crc32C)
            }
            None => req,
        };
        let req = apply_condition!(req, options.condition);
        let mut op = apply_attrs!(req, options.attrs)
            .customize()
            // The body is a stream: signing its SHA-256 would need it whole in memory.
            .disable_payload_signing();
        if options.attrs.content_type.is_none() {
            op = op.mutate_request(strip_default_content_type);
        }
        op
    }

    pub(super) async fn bucket_versioning(&self, bucket: &str) -> Result<Versioning, StorageError> {
        Self::count("GetBucketVersioning");
        let raw = RawAnswer::default();
        let sent = self
            .client
            .get_bucket_versioning()
            .bucket(bucket)
            .customize()
            .interceptor(raw.clone())
            .send()
            .await;
        match sent {
            Ok(out) => Ok(match out.status() {
                Some(BucketVersioningStatus::Enabled) => Versioning::Enabled,
                Some(BucketVersioningStatus::Suspended) => Versioning::Suspended,
                _ => Versioning::Off,
            }),
            Err(e) => {
                // moto answers a bucket never versioned with an empty
                // `<GetBucketVersioningResponse/>`, which the SDK refuses as the wrong root.
                let answered = raw.0.lock().expect("raw answer lock").take();
                match answered.as_deref().and_then(versioning_of) {
                    Some(state) => Ok(state),
                    None => Err(self.error("GetBucketVersioning", self.target(bucket, ""), e)),
                }
            }
        }
    }

    pub(super) async fn versions_page(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        cursor: Option<VersionCursor>,
    ) -> Result<VersionPage, StorageError> {
        Self::count("ListObjectVersions");
        let raw = RawAnswer::default();
        let (key_marker, version_marker) = match cursor {
            Some(c) => (Some(c.key), Some(c.version_id)),
            None => (start_after.map(str::to_string), None),
        };
        self.client
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1000)
            .encoding_type(EncodingType::Url)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .customize()
            .interceptor(raw.clone())
            .send()
            .await
            .map_err(|e| self.error("ListObjectVersions", self.target(bucket, prefix), e))?;
        let malformed = |why: String| StorageError {
            kind: ErrorKind::Retryable,
            operation: "ListObjectVersions",
            target: self.target(bucket, prefix),
            status: Some(200),
            code: None,
            message: format!("the version listing is incomplete or malformed: {why}"),
        };
        let bytes = raw
            .0
            .lock()
            .expect("raw answer lock")
            .take()
            .ok_or_else(|| malformed("its body was not kept".to_string()))?;
        parse_versions(&bytes).map_err(malformed)
    }

    pub(super) async fn version_get(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<GetObject, StorageError> {
        Self::count("GetObject");
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .version_id(version_id)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| self.error("GetObject", self.target(bucket, key), e))?;
        let content_length = out.content_length().unwrap_or(0).max(0) as u64;
        let head = read_head!(out, None);
        let body = from_sdk_body(out.body, "GetObject", self.target(bucket, key));
        Ok(GetObject {
            head,
            content_length,
            body,
        })
    }

    /// The tags of an object, or of one of its versions, URL-encoded; `None` when it has
    /// none or the store does not implement tagging.
    pub(super) async fn tagging(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<String>, StorageError> {
        Self::count("GetObjectTagging");
        let out = match self
            .client
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("GetObjectTagging", self.target(bucket, key), e))
        {
            Ok(out) => out,
            // A store without tagging (Garage) cannot have tags to copy.
            Err(e) if e.code.as_deref() == Some("NotImplemented") => return Ok(None),
            // Ceph RGW 16 answers an object without tags with an empty 200.
            Err(e) if e.status == Some(200) && e.code.is_none() => return Ok(None),
            Err(e) => return Err(e),
        };
        let tags = out.tag_set();
        Ok((!tags.is_empty()).then(|| encode_tags(tags.iter().map(|t| (t.key(), t.value())))))
    }

    pub(super) async fn version_put(
        &self,
        bucket: &str,
        key: &str,
        body: BodyStream,
        length: u64,
        options: PutOptions<'_>,
    ) -> Result<VersionWritten, StorageError> {
        Self::count("PutObject");
        let progress = Progress::new();
        let op = self.put_operation(bucket, key, body, length, &options, progress.clone());
        let sent = async {
            op.send()
                .await
                .map_err(|e| self.error("PutObject", self.target(bucket, key), e))
        };
        let target = || self.target(bucket, key);
        let out = watch_upload(sent, &progress, self.timeouts, "PutObject", target).await?;
        Ok(VersionWritten {
            written: Written {
                etag: strip_quotes(out.e_tag().unwrap_or_default()),
                etag_may_be_md5: !encrypted(
                    out.server_side_encryption(),
                    out.sse_customer_algorithm(),
                ),
            },
            version_id: out.version_id().map(str::to_string),
        })
    }

    pub(super) async fn marker_put(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<String>, StorageError> {
        Self::count("DeleteObject");
        let out = self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", self.target(bucket, key), e))?;
        Ok(out
            .version_id()
            .filter(|_| out.delete_marker() != Some(false))
            .map(str::to_string))
    }
}

/// The state in a GetBucketVersioning answer whatever its root element is called, or `None`
/// when it is not one.
fn versioning_of(body: &[u8]) -> Option<Versioning> {
    let text = std::str::from_utf8(body).ok()?;
    let mut doc = Document::new(text);
    let mut root = doc.root_element().ok()?;
    if !root.start_el().local().contains("Versioning") {
        return None;
    }
    let mut state = Versioning::Off;
    while let Some(mut tag) = root.next_tag() {
        if tag.start_el().local() == "Status" {
            state = match text_of(&mut tag).ok()?.as_str() {
                "Enabled" => Versioning::Enabled,
                "Suspended" => Versioning::Suspended,
                _ => Versioning::Off,
            };
        }
    }
    Some(state)
}

/// Reads a ListObjectVersions answer (`ListVersionsResult`), keeping the order of its
/// `Version` and `DeleteMarker` elements. Keys and markers are URL-encoded (the request asks
/// for `encoding-type=url`).
pub(super) fn parse_versions(body: &[u8]) -> Result<VersionPage, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut doc = Document::new(text);
    let mut root = doc.root_element().map_err(|e| e.to_string())?;
    if !root.start_el().matches("ListVersionsResult") {
        return Err(format!("the answer is a {}", root.start_el().local()));
    }
    let mut page = VersionPage::default();
    let (mut truncated, mut next_key, mut next_version) = (false, None, None);
    while let Some(mut tag) = root.next_tag() {
        let name = tag.start_el().local().to_string();
        match name.as_str() {
            "IsTruncated" => truncated = text_of(&mut tag)? == "true",
            "NextKeyMarker" => next_key = Some(url_decode(&text_of(&mut tag)?)),
            "NextVersionIdMarker" => next_version = Some(text_of(&mut tag)?),
            "Version" | "DeleteMarker" => {
                page.entries
                    .push(parse_entry(&mut tag, name == "DeleteMarker")?);
            }
            _ => {}
        }
    }
    if truncated {
        let key = next_key.ok_or("IsTruncated without NextKeyMarker")?;
        page.next = Some(VersionCursor {
            key,
            version_id: next_version.unwrap_or_default(),
        });
    }
    Ok(page)
}

fn text_of(tag: &mut ScopedDecoder<'_, '_>) -> Result<String, String> {
    try_data(tag)
        .map(|t| t.into_owned())
        .map_err(|e| e.to_string())
}

fn parse_entry(
    tag: &mut ScopedDecoder<'_, '_>,
    delete_marker: bool,
) -> Result<VersionEntry, String> {
    let mut entry = VersionEntry {
        delete_marker,
        ..VersionEntry::default()
    };
    let mut keyed = false;
    while let Some(mut field) = tag.next_tag() {
        let name = field.start_el().local().to_string();
        match name.as_str() {
            "Key" => {
                entry.key = url_decode(&text_of(&mut field)?);
                keyed = true;
            }
            "VersionId" => entry.version_id = text_of(&mut field)?,
            "IsLatest" => entry.latest = text_of(&mut field)? == "true",
            "ETag" => entry.etag = strip_quotes(&text_of(&mut field)?),
            "Size" => {
                let size = text_of(&mut field)?;
                entry.size = size.parse().map_err(|_| format!("Size {size:?}"))?;
            }
            "LastModified" => {
                let when = text_of(&mut field)?;
                let parsed = DateTime::from_str(&when, DateTimeFormat::DateTime)
                    .map_err(|_| format!("LastModified {when:?}"))?;
                entry.last_modified_ms = millis(Some(&parsed));
            }
            _ => {}
        }
    }
    if !keyed || entry.version_id.is_empty() {
        return Err("an entry without a Key or VersionId".to_string());
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_delete_markers_keep_the_answers_order() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix></Prefix><KeyMarker></KeyMarker><VersionIdMarker></VersionIdMarker>
  <MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <NextKeyMarker>k%2Fb</NextKeyMarker><NextVersionIdMarker>v2</NextVersionIdMarker>
  <DeleteMarker><Key>k%2Fa</Key><VersionId>m2</VersionId><IsLatest>true</IsLatest>
    <LastModified>2026-12-07T10:00:02.000Z</LastModified></DeleteMarker>
  <Version><Key>k%2Fa</Key><VersionId>v3</VersionId><IsLatest>false</IsLatest>
    <LastModified>2026-12-07T10:00:02.000Z</LastModified><ETag>&quot;abc&quot;</ETag>
    <Size>7</Size><StorageClass>STANDARD</StorageClass></Version>
  <DeleteMarker><Key>k%2Fa</Key><VersionId>m1</VersionId><IsLatest>false</IsLatest>
    <LastModified>2026-12-07T10:00:02.000Z</LastModified></DeleteMarker>
  <Version><Key>k%2Fb</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest>
    <LastModified>2026-12-07T10:00:01.500Z</LastModified><ETag>"def"</ETag>
    <Size>0</Size></Version>
</ListVersionsResult>"#;
        let page = parse_versions(body).expect("parses");
        let seen: Vec<(&str, &str, bool)> = page
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.version_id.as_str(), e.delete_marker))
            .collect();
        // Three entries of one key in the same second: only the document says their order.
        assert_eq!(
            seen,
            [
                ("k/a", "m2", true),
                ("k/a", "v3", false),
                ("k/a", "m1", true),
                ("k/b", "v2", false)
            ]
        );
        assert_eq!(page.entries[1].etag, "abc");
        assert_eq!(page.entries[1].size, 7);
        assert!(page.entries[0].latest && !page.entries[1].latest);
        assert_eq!(page.entries[3].last_modified_ms % 1000, 500);
        assert_eq!(
            page.next,
            Some(VersionCursor {
                key: "k/b".into(),
                version_id: "v2".into()
            })
        );
    }

    #[test]
    fn a_versioning_answer_is_read_whatever_its_root_is_called() {
        let moto = br#"<?xml version="1.0" encoding="utf-8"?>
<GetBucketVersioningResponse xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>"#;
        assert_eq!(versioning_of(moto), Some(Versioning::Off));
        let enabled =
            b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>";
        assert_eq!(versioning_of(enabled), Some(Versioning::Enabled));
        let suspended =
            b"<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>";
        assert_eq!(versioning_of(suspended), Some(Versioning::Suspended));
        assert_eq!(
            versioning_of(b"<Error><Code>AccessDenied</Code></Error>"),
            None
        );
    }

    #[test]
    fn a_version_listing_that_is_not_one_is_refused() {
        assert!(parse_versions(b"<Error><Code>X</Code></Error>").is_err());
        assert!(parse_versions(b"not xml").is_err());
        let keyless =
            b"<ListVersionsResult><Version><VersionId>v</VersionId></Version></ListVersionsResult>";
        assert!(parse_versions(keyless).is_err());
    }
}
