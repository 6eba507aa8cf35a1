//! [`ObjectStore`] on aws-sdk-s3, for any S3-compatible endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use aws_sdk_s3::types::{
    ArchiveStatus, ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload,
    CompletedPart, EncodingType, MetadataDirective, ServerSideEncryption, StorageClass, Tag,
    Tagging, TaggingDirective,
};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use super::direct::Direct;
use super::error::{error_chain, transport_words, untrusted_certificate};
use super::wire::{Progress, SizedBody, address, archived_str, quoted, status_text, watch_upload};
use super::{
    BodyStream, ByteRange, Checksum, ChecksumKind, ErrorKind, GetObject, ListPage, ObjectAttrs,
    ObjectHead, ObjectMeta, ObjectStore, OpenUpload, PartHead, PutOptions, StorageError, Trust,
    UploadedPart, WriteCondition, Written, classify, etag_is_md5,
};
use ferry_core::config::{Credentials, Endpoint};
use ferry_core::telemetry::Metric;

/// How long S3 requests may take, in the ways that matter on a slow or lossy link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Setting up a connection.
    pub connect: Duration,
    /// A request without a body, and an upload whose body is all sent: until the answer's
    /// first byte.
    pub first_byte: Duration,
    /// An upload: the longest time without a byte of progress. A slow upload that keeps
    /// moving is never cut off, however long it takes in all.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// Which way GetObject and PutObject go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestPath {
    /// Plain signed HTTP requests ([`super::direct`]) where the endpoint allows them: a
    /// fraction of the SDK's CPU per request. PutObject takes it only with Content-MD5 or
    /// the source's checksum.
    Lean,
    /// Every request through the AWS SDK.
    Sdk,
}

/// The AWS SDK's shared config for `endpoint`: its region, credentials and HTTP client,
/// which trusts `trust`'s certificate authorities (any AWS SDK client, S3's or SQS's, and the
/// credential providers that call STS or SSO, are built from it).
pub async fn sdk_config(endpoint: &Endpoint, trust: &Trust) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(endpoint.region.clone()))
        .http_client(trust.sdk_http_client());
    match &endpoint.credentials {
        Credentials::Static {
            access_key_id,
            secret_access_key,
        } => {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key_id.clone(),
                secret_access_key.expose().to_string(),
                None,
                None,
                "ferry-config",
            ));
        }
        Credentials::Profile(profile) => loader = loader.profile_name(profile),
        Credentials::DefaultChain => {}
    }
    loader.load().await
}

/// An S3-compatible endpoint reached through aws-sdk-s3, with GetObject and PutObject on a
/// lean path of their own (see [`RequestPath`]).
#[derive(Clone, Debug)]
pub struct S3Store {
    name: String,
    /// The endpoint's URL, for errors.
    address: String,
    client: Client,
    /// The same client for uploads (PutObject, UploadPart): the SDK's first-byte timeout
    /// would cap a whole upload (the answer comes only after the last byte), so these run
    /// without it, under [`watch_upload`]'s idle timeout instead. A client of its own, not a
    /// per-request config override: an override rebuilds the request's runtime components
    /// every time, a cost a small object pays twice over. Both share one connection pool.
    uploads: Client,
    /// The lean path for GetObject and PutObject (see [`Direct`]); `None` where it cannot be
    /// built, or with `FERRY_S3_SDK_ONLY=1`: then the SDK serves every request.
    direct: Option<Arc<Direct>>,
    timeouts: Timeouts,
}

impl S3Store {
    /// Builds a client for `endpoint`: its URL, region, addressing and credentials.
    ///
    /// The SDK's own retries are off: ferry's retry layer (per task, in Redis, with its
    /// attempt count and backoff) is the only one, so a throttled prefix is not hit again
    /// behind ferry's back and `max_attempts` means what it says.
    ///
    /// Request checksums are only sent where S3 requires them, because several S3-compatible
    /// servers reject the aws-chunked encoding the SDK would otherwise use for streamed bodies;
    /// ferry checks integrity itself (Content-MD5, the source's checksum, CRC32C trailers,
    /// ETag comparison).
    ///
    /// GetObject and PutObject take the lean path ([`RequestPath::Lean`]) unless
    /// `FERRY_S3_SDK_ONLY=1` is set.
    pub async fn connect(endpoint: &Endpoint, timeouts: Timeouts, trust: &Trust) -> S3Store {
        let sdk_only = std::env::var("FERRY_S3_SDK_ONLY").is_ok_and(|v| v == "1" || v == "true");
        let path = if sdk_only {
            RequestPath::Sdk
        } else {
            RequestPath::Lean
        };
        S3Store::connect_via(endpoint, timeouts, trust, path).await
    }

    /// [`S3Store::connect`], with GetObject and PutObject on the path given.
    pub async fn connect_via(
        endpoint: &Endpoint,
        timeouts: Timeouts,
        trust: &Trust,
        path: RequestPath,
    ) -> S3Store {
        let shared = sdk_config(endpoint, trust).await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(endpoint.path_style)
            .retry_config(RetryConfig::disabled())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // Workers stream GET bodies into PUTs; the upload's own idle timeout covers a
            // source that stops sending.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if let Some(url) = &endpoint.url {
            builder = builder.endpoint_url(url);
        }
        let client = builder.clone().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .read_timeout(timeouts.first_byte)
                .build(),
        );
        let uploads = builder.timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(timeouts.connect)
                .disable_read_timeout()
                .disable_operation_timeout()
                .disable_operation_attempt_timeout()
                .build(),
        );
        let direct = match path {
            RequestPath::Sdk => None,
            RequestPath::Lean => Direct::new(
                &endpoint.name,
                &shared,
                trust,
                endpoint.url.as_deref(),
                endpoint.path_style,
                timeouts,
            )
            .map(Arc::new),
        };
        S3Store {
            name: endpoint.name.clone(),
            address: address(
                endpoint.url.as_deref(),
                &shared.region().map(|r| r.to_string()).unwrap_or_default(),
            ),
            client: Client::from_conf(client.build()),
            uploads: Client::from_conf(uploads.build()),
            direct,
            timeouts,
        }
    }

    /// Creates a bucket (for `ferry probe` without one).
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        Self::count("CreateBucket");
        self.client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| self.error("CreateBucket", self.target(bucket, ""), e))?;
        Ok(())
    }

    /// Deletes an empty bucket.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<(), StorageError> {
        Self::count("DeleteBucket");
        self.client
            .delete_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| self.error("DeleteBucket", self.target(bucket, ""), e))?;
        Ok(())
    }

    /// Whether GetObject and PutObject on `bucket` take the lean path.
    pub async fn lean(&self, bucket: &str) -> bool {
        match &self.direct {
            Some(direct) => direct.bucket(bucket).await.is_some(),
            None => false,
        }
    }

    fn target(&self, bucket: &str, key: &str) -> String {
        format!("s3://{bucket}/{key} on endpoint {}", self.name)
    }

    /// Turns an SDK error into a [`StorageError`], classified, and counts it.
    fn error<E>(
        &self,
        operation: &'static str,
        target: String,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_string);
        let (status, kind, message) = match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let message = match (code.as_deref(), err.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_string(),
                    _ if status < 300 => {
                        let mut detail = format!("{}", DisplayErrorContext(&err));
                        detail.truncate(detail.floor_char_boundary(300));
                        format!("unreadable response: {detail}")
                    }
                    _ => status_text(status),
                };
                // A 2xx whose body does not parse (a truncated or garbled listing page) is a
                // transport fault: the next try usually reads it whole.
                let kind = if status < 300 {
                    ErrorKind::Retryable
                } else {
                    classify(Some(status), code.as_deref())
                };
                (Some(status), kind, message)
            }
            SdkError::ConstructionFailure(_) => (
                None,
                credentials_fault(&err).unwrap_or(ErrorKind::Permanent),
                error_chain(&err),
            ),
            _ if matches!(&err, SdkError::TimeoutError(_))
                || matches!(&err, SdkError::DispatchFailure(d) if d.is_timeout()) =>
            {
                (
                    None,
                    ErrorKind::Retryable,
                    format!(
                        "no answer within {:?} ({})",
                        self.timeouts.first_byte, self.address
                    ),
                )
            }
            _ => match untrusted_certificate(&err) {
                Some(message) => (None, ErrorKind::Permanent, message),
                None => (
                    None,
                    credentials_fault(&err).unwrap_or_else(|| classify(None, None)),
                    match credentials_fault(&err) {
                        Some(_) => credentials_words(&err),
                        None => transport_words(&err, &self.address),
                    },
                ),
            },
        };
        if !super::capabilities::probing() {
            Metric::S3Errors
                .counter(&[
                    ("operation", operation.into()),
                    (
                        "status",
                        status.map_or_else(|| "none".to_string(), |s| s.to_string()),
                    ),
                ])
                .increment(1);
        }
        StorageError {
            kind,
            operation,
            target,
            status,
            code,
            message,
        }
    }

    fn count(operation: &'static str) {
        let name = if super::capabilities::probing() {
            Metric::ProbeRequests
        } else {
            Metric::S3Requests
        };
        name.counter(&[("operation", operation.into())])
            .increment(1);
    }
}

/// How to treat a failure that comes from the credentials provider: a provider that timed out
/// or failed (IMDS, STS, a credential process) may well answer next time; a provider that is
/// misconfigured will not.
fn credentials_fault(err: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause = err.source();
    while let Some(e) = cause {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(match c {
                CredentialsError::InvalidConfiguration(_) => ErrorKind::Permanent,
                _ => ErrorKind::Retryable,
            });
        }
        cause = e.source();
    }
    None
}

/// A request that could not be signed, in words: which credentials were missing, and where
/// to give them.
fn credentials_words(err: &(dyn std::error::Error + 'static)) -> String {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause = err.source();
    while let Some(e) = cause {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            let why = match c {
                CredentialsError::CredentialsNotLoaded(_) => "none were found".to_string(),
                other => error_chain(other),
            };
            return format!(
                "no credentials to sign with ({why}): give the endpoint access_key_id and \
                 secret_access_key (or access_key_id_env and secret_access_key_env), or set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            );
        }
        cause = e.source();
    }
    error_chain(err)
}

fn strip_quotes(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

fn millis(dt: Option<&DateTime>) -> i64 {
    dt.and_then(|d| d.to_millis().ok()).unwrap_or(0)
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` and unreserved characters.
fn encode_copy_source(bucket: &str, key: &str) -> String {
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

fn to_sdk_body(body: BodyStream, length: u64, progress: Arc<Progress>) -> ByteStream {
    ByteStream::from_body_1_x(SizedBody::new(body, length, progress))
}

fn from_sdk_body(body: ByteStream, operation: &'static str, target: String) -> BodyStream {
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
fn url_decode(text: &str) -> String {
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
fn encode_tags<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>) -> String {
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

fn metadata_map(m: Option<&HashMap<String, String>>) -> std::collections::BTreeMap<String, String> {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

fn parse_expires(value: &Option<String>) -> Option<DateTime> {
    value
        .as_deref()
        .and_then(|s| DateTime::from_str(s, DateTimeFormat::HttpDate).ok())
}

/// Whether a response's encryption headers say its ETag is not an MD5 of the bytes.
fn encrypted(sse: Option<&ServerSideEncryption>, sse_customer: Option<&str>) -> bool {
    sse_customer.is_some() || sse.is_some_and(|s| s.as_str().starts_with("aws:kms"))
}

/// Whether an object's bytes are in an archive, unreadable until restored.
fn archived(
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
fn full_checksum(
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
fn strip_default_content_type(req: &mut aws_sdk_s3::config::http::HttpRequest) {
    req.headers_mut().remove("content-type");
}

/// Says `Content-Length: 0` on a request that has no body and no length.
fn empty_body_length(req: &mut aws_sdk_s3::config::http::HttpRequest) {
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

#[async_trait]
impl ObjectStore for S3Store {
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
        Self::count("ListObjectsV2");
        let start_after = start_after.filter(|_| token.is_none()).map(str::to_string);
        // URL-encoded keys: XML 1.0 cannot carry some characters S3 allows in keys.
        let out = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(1000)
            .encoding_type(EncodingType::Url)
            .set_start_after(start_after)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| self.error("ListObjectsV2", self.target(bucket, prefix), e))?;
        let encoded = out.encoding_type() == Some(&EncodingType::Url);
        let objects: Vec<ObjectMeta> = out
            .contents()
            .iter()
            .filter_map(|o| {
                let key = o.key()?;
                Some(ObjectMeta {
                    key: if encoded {
                        url_decode(key)
                    } else {
                        key.to_string()
                    },
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: strip_quotes(o.e_tag().unwrap_or_default()),
                    last_modified_ms: millis(o.last_modified()),
                    storage_class: o
                        .storage_class()
                        .map(|c| c.as_str())
                        .filter(|c| *c != "STANDARD")
                        .map(str::to_string),
                })
            })
            .collect();
        let malformed = |why: String| StorageError {
            kind: ErrorKind::Retryable,
            operation: "ListObjectsV2",
            target: self.target(bucket, prefix),
            status: Some(200),
            code: None,
            message: format!("the listing page is incomplete or malformed: {why}"),
        };
        // The SDK accepts a page cut short (no IsTruncated, a half key); taken as the last
        // page it would end the listing early, and deletions would follow. Every page must
        // say whether more follow, count what it holds, and be in key order.
        let truncated = out
            .is_truncated()
            .ok_or_else(|| malformed("it does not say whether it is the last".into()))?;
        let held = out.contents().len() + out.common_prefixes().len();
        if let Some(count) = out.key_count()
            && count.max(0) as usize != held
        {
            return Err(malformed(format!(
                "KeyCount is {count}, but it holds {held}"
            )));
        }
        if objects.len() != out.contents().len() {
            return Err(malformed("an entry has no key".into()));
        }
        if let Some(w) = objects.windows(2).find(|w| w[0].key >= w[1].key) {
            return Err(malformed(format!(
                "keys out of order ({:?} before {:?})",
                w[0].key, w[1].key
            )));
        }
        let next_token = if truncated {
            let token = out
                .next_continuation_token()
                .ok_or_else(|| malformed("it is truncated but has no continuation token".into()))?;
            Some(token.to_string())
        } else {
            None
        };
        Ok(ListPage {
            objects,
            next_token,
        })
    }

    async fn head(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&str>,
    ) -> Result<ObjectHead, StorageError> {
        Self::count("HeadObject");
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_if_match(if_match.map(quoted))
            .send()
            .await
            .map_err(|e| self.error("HeadObject", self.target(bucket, key), e))?;
        Ok(read_head!(out, out.archive_status()))
    }

    async fn head_part(
        &self,
        bucket: &str,
        key: &str,
        number: u32,
    ) -> Result<PartHead, StorageError> {
        Self::count("HeadObject");
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .part_number(number as i32)
            .send()
            .await
            .map_err(|e| self.error("HeadObject", self.target(bucket, key), e))?;
        Ok(PartHead {
            etag: strip_quotes(out.e_tag().unwrap_or_default()),
            parts_count: out.parts_count().and_then(|n| u64::try_from(n).ok()),
            length: out.content_length().unwrap_or(0).max(0) as u64,
        })
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Option<ByteRange>,
        if_match: Option<&str>,
    ) -> Result<GetObject, StorageError> {
        Self::count("GetObject");
        if let Some(direct) = &self.direct
            && let Some(b) = direct.bucket(bucket).await
        {
            return direct
                .get(&b, key, range, if_match, self.target(bucket, key))
                .await;
        }
        // Checksum mode returns the source's own checksum, which the destination then
        // verifies, and lets the SDK check the bytes read against it.
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.first, r.last)))
            .set_if_match(if_match.map(quoted))
            .set_checksum_mode(range.is_none().then_some(ChecksumMode::Enabled))
            .send()
            .await
            .map_err(|e| self.error("GetObject", self.target(bucket, key), e))?;
        let content_length = out.content_length().unwrap_or(0).max(0) as u64;
        let mut head = read_head!(out, None);
        // For a ranged GET, Content-Length is the range's; the object size is in Content-Range.
        if let Some(total) = out
            .content_range()
            .and_then(|r| r.rsplit('/').next())
            .and_then(|t| t.parse::<u64>().ok())
        {
            head.size = total;
        }
        let body = from_sdk_body(out.body, "GetObject", self.target(bucket, key));
        Ok(GetObject {
            head,
            content_length,
            body,
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
        Self::count("PutObject");
        // The lean path sends no streamed checksum trailer: it takes bodies whose integrity
        // Content-MD5 or the source's checksum covers.
        if (options.content_md5.is_some() || options.checksum.is_some())
            && let Some(direct) = &self.direct
            && let Some(b) = direct.bucket(bucket).await
        {
            return direct
                .put(&b, key, body, length, options, self.target(bucket, key))
                .await;
        }
        let progress = Progress::new();
        let req = self
            .uploads
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(length as i64)
            .body(to_sdk_body(body, length, progress.clone()))
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
        let sent = async {
            op.send()
                .await
                .map_err(|e| self.error("PutObject", self.target(bucket, key), e))
        };
        let out = watch_upload(sent, &progress, self.timeouts, "PutObject", || {
            self.target(bucket, key)
        })
        .await?;
        Ok(Written {
            etag: strip_quotes(out.e_tag().unwrap_or_default()),
            etag_may_be_md5: !encrypted(out.server_side_encryption(), out.sse_customer_algorithm()),
        })
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
        Self::count("CopyObject");
        let req = self
            .client
            .copy_object()
            .copy_source(encode_copy_source(source_bucket, source_key))
            .set_copy_source_if_match(if_match.map(quoted))
            .bucket(bucket)
            .key(key)
            .metadata_directive(MetadataDirective::Copy)
            .tagging_directive(TaggingDirective::Copy)
            .set_storage_class(storage_class.map(StorageClass::from));
        let out = apply_condition!(req, condition)
            .send()
            .await
            .map_err(|e| self.error("CopyObject", self.target(bucket, key), e))?;
        Ok(Written {
            etag: strip_quotes(
                out.copy_object_result()
                    .and_then(|r| r.e_tag())
                    .unwrap_or_default(),
            ),
            etag_may_be_md5: !encrypted(out.server_side_encryption(), out.sse_customer_algorithm()),
        })
    }

    async fn get_tagging(&self, bucket: &str, key: &str) -> Result<Option<String>, StorageError> {
        Self::count("GetObjectTagging");
        let out = match self
            .client
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
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
        if tags.is_empty() {
            return Ok(None);
        }
        Ok(Some(encode_tags(tags.iter().map(|t| (t.key(), t.value())))))
    }

    async fn put_tagging(
        &self,
        bucket: &str,
        key: &str,
        tagging: &str,
    ) -> Result<(), StorageError> {
        Self::count("PutObjectTagging");
        let unsendable = |e: aws_sdk_s3::error::BuildError| StorageError {
            kind: ErrorKind::Permanent,
            operation: "PutObjectTagging",
            target: self.target(bucket, key),
            status: None,
            code: None,
            message: format!("the tags cannot be sent: {e}"),
        };
        let mut tags = Vec::new();
        for pair in tagging.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            tags.push(
                Tag::builder()
                    .key(url_decode(k))
                    .value(url_decode(v))
                    .build()
                    .map_err(unsendable)?,
            );
        }
        let set = Tagging::builder()
            .set_tag_set(Some(tags))
            .build()
            .map_err(unsendable)?;
        self.client
            .put_object_tagging()
            .bucket(bucket)
            .key(key)
            .tagging(set)
            .send()
            .await
            .map_err(|e| self.error("PutObjectTagging", self.target(bucket, key), e))?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), StorageError> {
        Self::count("DeleteObject");
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", self.target(bucket, key), e))?;
        Ok(())
    }

    async fn create_multipart(
        &self,
        bucket: &str,
        key: &str,
        attrs: &ObjectAttrs,
        tagging: Option<&str>,
    ) -> Result<String, StorageError> {
        Self::count("CreateMultipartUpload");
        let req = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .set_tagging(tagging.map(str::to_string));
        let mut op = apply_attrs!(req, attrs).customize();
        if attrs.content_type.is_none() {
            op = op.mutate_request(strip_default_content_type);
        }
        let out = op
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", self.target(bucket, key), e))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| StorageError {
                kind: ErrorKind::Retryable,
                operation: "CreateMultipartUpload",
                target: self.target(bucket, key),
                status: None,
                code: None,
                message: "the response has no upload id".into(),
            })
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
        Self::count("UploadPart");
        let progress = Progress::new();
        let op = self
            .uploads
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .content_length(length as i64)
            .set_checksum_algorithm(trailer.then_some(ChecksumAlgorithm::Crc32C))
            .body(to_sdk_body(body, length, progress.clone()))
            .customize()
            .disable_payload_signing();
        let sent = async {
            op.send()
                .await
                .map_err(|e| self.error("UploadPart", self.target(bucket, key), e))
        };
        let out = watch_upload(sent, &progress, self.timeouts, "UploadPart", || {
            self.target(bucket, key)
        })
        .await?;
        Ok(Written {
            etag: strip_quotes(out.e_tag().unwrap_or_default()),
            etag_may_be_md5: !encrypted(out.server_side_encryption(), out.sse_customer_algorithm()),
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
        Self::count("UploadPartCopy");
        let out = self
            .client
            .upload_part_copy()
            .copy_source(encode_copy_source(source_bucket, source_key))
            .copy_source_if_match(quoted(if_match))
            .copy_source_range(format!("bytes={}-{}", range.first, range.last))
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number as i32)
            .customize()
            // A PUT without a body: Ceph RGW 16 refuses it with 411 unless told its length.
            .mutate_request(empty_body_length)
            .send()
            .await
            .map_err(|e| self.error("UploadPartCopy", self.target(bucket, key), e))?;
        Ok(strip_quotes(
            out.copy_part_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default(),
        ))
    }

    async fn complete_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[UploadedPart],
        condition: &WriteCondition,
    ) -> Result<Written, StorageError> {
        Self::count("CompleteMultipartUpload");
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number as i32)
                            .e_tag(format!("\"{}\"", p.etag))
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let req = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed);
        let out = apply_condition!(req, condition)
            .send()
            .await
            .map_err(|e| self.error("CompleteMultipartUpload", self.target(bucket, key), e))?;
        Ok(Written {
            etag: strip_quotes(out.e_tag().unwrap_or_default()),
            etag_may_be_md5: !encrypted(out.server_side_encryption(), None),
        })
    }

    async fn abort_multipart(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        Self::count("AbortMultipartUpload");
        self.client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.error("AbortMultipartUpload", self.target(bucket, key), e))?;
        Ok(())
    }

    async fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<UploadedPart>, StorageError> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            Self::count("ListParts");
            let out = self
                .client
                .list_parts()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(|e| self.error("ListParts", self.target(bucket, key), e))?;
            parts.extend(out.parts().iter().map(|p| UploadedPart {
                number: p.part_number().unwrap_or(0).max(0) as u32,
                etag: strip_quotes(p.e_tag().unwrap_or_default()),
                size: p.size().unwrap_or(0).max(0) as u64,
            }));
            match (out.is_truncated(), out.next_part_number_marker()) {
                (Some(true), Some(next)) => marker = Some(next.to_string()),
                _ => break,
            }
        }
        Ok(parts)
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<OpenUpload>, StorageError> {
        let mut uploads = Vec::new();
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            Self::count("ListMultipartUploads");
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .encoding_type(EncodingType::Url)
                .set_key_marker(markers.0.clone())
                .set_upload_id_marker(markers.1.clone())
                .send()
                .await
                .map_err(|e| self.error("ListMultipartUploads", self.target(bucket, prefix), e))?;
            let encoded = out.encoding_type() == Some(&EncodingType::Url);
            let decode = |k: &str| {
                if encoded {
                    url_decode(k)
                } else {
                    k.to_string()
                }
            };
            uploads.extend(out.uploads().iter().map(|u| OpenUpload {
                key: decode(u.key().unwrap_or_default()),
                upload_id: u.upload_id().unwrap_or_default().to_string(),
                initiated_ms: millis(u.initiated()),
            }));
            match (out.is_truncated(), out.next_key_marker()) {
                (Some(true), Some(key)) => {
                    markers = (
                        Some(decode(key)),
                        out.next_upload_id_marker().map(str::to_string),
                    )
                }
                _ => break,
            }
        }
        Ok(uploads)
    }
}

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
