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

mod convert;
mod failure;
mod store;
mod versions;
