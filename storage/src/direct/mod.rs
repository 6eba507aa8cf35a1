//! The lean request path: GetObject and PutObject as plain signed HTTP requests on hyper,
//! without the AWS SDK's per-request machinery.
//!
//! A small object costs a worker two requests, a GET and a PUT, and through the SDK most of
//! the worker's CPU went into that machinery (its interceptors, config layers, endpoint
//! rules and a signing key derived for every request), not into moving bytes. Here the
//! endpoint is resolved once per bucket (by the SDK's own endpoint rules), credentials come
//! from the SDK's provider and are kept until they are about to expire, and the day's
//! signing key is derived once a day. Everything else S3 does stays on the SDK.
//!
//! The requests carry what the SDK's would (every preserved header, Content-MD5 or the
//! source's checksum, the write condition), and the answers are read into the same
//! [`ObjectHead`], [`Written`] and [`StorageError`]: a contract test runs both paths
//! against the same servers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials as SdkCredentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_smithy_types::Document;
use aws_smithy_types::date_time::{DateTime, Format};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::error::{error_chain, transport_words, untrusted_certificate};
use super::sigv4::{self, DayKey, Scope, Stamp};
use super::wire::{Progress, SizedBody, quoted, status_text, watch_upload};
use super::{
    BodyStream, ByteRange, Checksum, ChecksumKind, ErrorKind, GetObject, ObjectAttrs, ObjectHead,
    PutOptions, StorageError, Timeouts, Trust, WriteCondition, Written, classify, etag_is_md5,
};
use ferry_core::telemetry::Metric;

/// The SHA-256 of an empty body: the payload hash of a request without one.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Credentials are fetched again this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// Credentials fetched with less than [`REFRESH_BEFORE`] left are fetched again after this.
const REFETCH_AFTER: Duration = Duration::from_secs(10);

/// The most of an error answer's body that is read for its code and message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

type RequestBody = Either<Empty<Bytes>, SizedBody>;

/// The request being made, for its errors: which operation, on what.
#[derive(Clone, Copy)]
struct Op<'a> {
    name: &'static str,
    target: &'a str,
}

impl Op<'_> {
    /// An error of this request that the server did not answer with.
    fn error(&self, kind: ErrorKind, message: String) -> StorageError {
        StorageError {
            kind,
            operation: self.name,
            target: self.target.to_string(),
            status: None,
            code: None,
            message,
        }
    }

    /// A value that cannot be sent as a header: permanent (the SDK refuses the same).
    fn header(&self, value: &str) -> Result<HeaderValue, StorageError> {
        HeaderValue::from_str(value).map_err(|_| {
            self.error(
                ErrorKind::Permanent,
                format!("{value:?} cannot be sent as an HTTP header value"),
            )
        })
    }
}
type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, RequestBody>;

/// Where requests for one bucket go, and how they are signed.
#[derive(Debug)]
pub(crate) struct Bucket {
    /// `scheme://authority`, then the path up to the key (`/bucket` for path-style).
    base: String,
    /// The `host` header: the authority, without a default port.
    host: HeaderValue,
    region: String,
    service: String,
}

/// What the endpoint rules need besides the bucket.
#[derive(Debug)]
struct EndpointParams {
    region: String,
    use_fips: bool,
    use_dual_stack: bool,
    path_style: bool,
    url: Option<String>,
}

/// Credentials with the signing key of the day they last signed for.
struct Keyed {
    credentials: SdkCredentials,
    fetched: std::time::Instant,
    /// The day's key, derived on the first request of each day.
    key: Mutex<Option<DayKey>>,
}

/// The lean path of one endpoint. Built only where its pieces are available (credentials, a
/// TLS trust store); [`Direct::bucket`] says per bucket whether the endpoint's rules allow
/// it (plain SigV4, no extra headers), and everything else goes through the SDK.
pub(crate) struct Direct {
    name: String,
    /// The endpoint's URL, for errors.
    address: String,
    client: HttpsClient,
    provider: SharedCredentialsProvider,
    credentials: tokio::sync::RwLock<Option<Arc<Keyed>>>,
    /// The endpoint rules' parameters, without the bucket.
    params: EndpointParams,
    buckets: Mutex<HashMap<String, Option<Arc<Bucket>>>>,
    timeouts: Timeouts,
    /// The server's clock minus ours, in seconds, learnt from a RequestTimeTooSkewed answer.
    skew_secs: AtomicI64,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").field("name", &self.name).finish()
    }
}

impl Direct {
    /// The lean path for an endpoint, trusting `trust`'s certificate authorities, or `None`
    /// (everything then goes through the SDK) when it has no credentials provider.
    pub(crate) fn new(
        name: &str,
        shared: &aws_config::SdkConfig,
        trust: &Trust,
        endpoint_url: Option<&str>,
        path_style: bool,
        timeouts: Timeouts,
    ) -> Option<Direct> {
        let provider = shared.credentials_provider()?;
        let region = shared.region()?.to_string();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeouts.connect));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(trust.rustls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(20))
            .build(https);
        let params = EndpointParams {
            region,
            use_fips: shared.use_fips().unwrap_or(false),
            use_dual_stack: shared.use_dual_stack().unwrap_or(false),
            path_style,
            url: endpoint_url.map(str::to_string),
        };
        Some(Direct {
            name: name.to_string(),
            address: super::wire::address(endpoint_url, &params.region),
            client,
            provider,
            credentials: tokio::sync::RwLock::new(None),
            params,
            buckets: Mutex::default(),
            timeouts,
            skew_secs: AtomicI64::new(0),
        })
    }

    /// Where `bucket`'s requests go, resolved once by the SDK's endpoint rules; `None` when
    /// those rules ask for more than plain SigV4 (SigV4a, S3 Express, extra headers): the SDK
    /// then serves the bucket.
    pub(crate) async fn bucket(&self, bucket: &str) -> Option<Arc<Bucket>> {
        if let Some(known) = self.lock_buckets().get(bucket) {
            return known.clone();
        }
        let resolved = self.resolve(bucket).await;
        if resolved.is_none() {
            tracing::debug!(endpoint = %self.name, bucket,
                "the endpoint rules ask for more than SigV4; the bucket's requests use the SDK");
        }
        self.lock_buckets()
            .insert(bucket.to_string(), resolved.clone());
        resolved
    }

    fn lock_buckets(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<Bucket>>>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn resolve(&self, bucket: &str) -> Option<Arc<Bucket>> {
        let p = &self.params;
        let params = Params::builder()
            .bucket(bucket)
            .region(p.region.clone())
            .use_fips(p.use_fips)
            .use_dual_stack(p.use_dual_stack)
            .force_path_style(p.path_style)
            .set_endpoint(p.url.clone())
            .build()
            .ok()?;
        let endpoint = DefaultResolver::new()
            .resolve_endpoint(&params)
            .await
            .ok()?;
        if endpoint.headers().next().is_some() {
            return None;
        }
        let scheme = match endpoint.properties().get("authSchemes") {
            Some(Document::Array(schemes)) => match schemes.first() {
                Some(Document::Object(scheme)) => scheme.clone(),
                _ => return None,
            },
            None => HashMap::new(),
            _ => return None,
        };
        let text = |name: &str| match scheme.get(name) {
            Some(Document::String(s)) => Some(s.clone()),
            _ => None,
        };
        if text("name").is_some_and(|n| n != "sigv4") {
            return None;
        }
        let uri: http::Uri = endpoint.url().parse().ok()?;
        let authority = uri.authority()?;
        let default_port = matches!(
            (uri.scheme_str(), authority.port_u16()),
            (Some("http"), Some(80)) | (Some("https"), Some(443))
        );
        let host = if default_port {
            authority.host()
        } else {
            authority.as_str()
        };
        Some(Arc::new(Bucket {
            base: endpoint.url().trim_end_matches('/').to_string(),
            host: HeaderValue::from_str(host).ok()?,
            region: text("signingRegion").unwrap_or_else(|| p.region.clone()),
            service: text("signingName").unwrap_or_else(|| "s3".into()),
        }))
    }

    /// Credentials, fetched from the provider on first use and again before they expire.
    async fn credentials(&self, op: Op<'_>) -> Result<Arc<Keyed>, StorageError> {
        // Credentials that come with little time left are still used for a while (and not
        // fetched again for every request) until they expire.
        let fresh = |k: &Keyed| {
            let now = SystemTime::now();
            k.credentials.expiry().is_none_or(|at| {
                at > now + REFRESH_BEFORE || (at > now && k.fetched.elapsed() < REFETCH_AFTER)
            })
        };
        if let Some(k) = self.credentials.read().await.as_ref()
            && fresh(k)
        {
            return Ok(k.clone());
        }
        let mut slot = self.credentials.write().await;
        if let Some(k) = slot.as_ref()
            && fresh(k)
        {
            return Ok(k.clone());
        }
        let credentials = self.provider.provide_credentials().await.map_err(|e| {
            use aws_credential_types::provider::error::CredentialsError;
            let kind = match e {
                CredentialsError::InvalidConfiguration(_) => ErrorKind::Permanent,
                _ => ErrorKind::Retryable,
            };
            op.error(kind, format!("loading credentials: {}", error_chain(&e)))
        })?;
        let keyed = Arc::new(Keyed {
            credentials,
            fetched: std::time::Instant::now(),
            key: Mutex::new(None),
        });
        *slot = Some(keyed.clone());
        Ok(keyed)
    }

    /// Adds the date, session token and `Authorization` headers to a request for `path`.
    async fn sign(
        &self,
        bucket: &Bucket,
        method: &Method,
        path: &str,
        headers: &mut HeaderMap,
        payload_hash: &'static str,
        op: Op<'_>,
    ) -> Result<(), StorageError> {
        let keyed = self.credentials(op).await?;
        let skew = self.skew_secs.load(Ordering::Relaxed);
        let now = if skew >= 0 {
            SystemTime::now() + Duration::from_secs(skew as u64)
        } else {
            SystemTime::now() - Duration::from_secs(skew.unsigned_abs())
        };
        let stamp = Stamp::at(now);
        let key = {
            let mut key = keyed.key.lock().unwrap_or_else(|p| p.into_inner());
            match key.as_ref() {
                Some(k) if k.day == stamp.day => k.clone(),
                _ => {
                    let derived = DayKey::derive(
                        keyed.credentials.secret_access_key(),
                        &stamp,
                        &bucket.region,
                        &bucket.service,
                    );
                    *key = Some(derived.clone());
                    derived
                }
            }
        };
        // Secrets never go into a message: these say what was refused, not its value.
        let secret_header = |value: &str, what: &str| {
            HeaderValue::from_str(value)
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
                .map_err(|_| {
                    op.error(
                        ErrorKind::Permanent,
                        format!("the {what} is not a valid header value"),
                    )
                })
        };
        headers.insert("host", bucket.host.clone());
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static(payload_hash),
        );
        headers.insert("x-amz-date", op.header(&stamp.date_time)?);
        if let Some(token) = keyed.credentials.session_token() {
            headers.insert(
                "x-amz-security-token",
                secret_header(token, "session token")?,
            );
        }
        let scope = Scope {
            access_key_id: keyed.credentials.access_key_id(),
            region: &bucket.region,
            service: &bucket.service,
        };
        let request = sigv4::Signable {
            method: method.as_str(),
            path,
            headers,
            payload_hash,
        };
        let authorization = sigv4::authorization(&request, &stamp, &scope, &key);
        headers.insert(
            "authorization",
            secret_header(&authorization, "authorization (check the access key id)")?,
        );
        headers.insert("user-agent", HeaderValue::from_static(USER_AGENT));
        Ok(())
    }

    /// The path and full URL of `key` in `bucket`.
    fn url(bucket: &Bucket, key: &str) -> (String, String) {
        let mut url = String::with_capacity(bucket.base.len() + key.len() + 16);
        url.push_str(&bucket.base);
        let path_start = bucket
            .base
            .find("://")
            .and_then(|s| bucket.base[s + 3..].find('/').map(|p| s + 3 + p))
            .unwrap_or(bucket.base.len());
        url.push('/');
        sigv4::encode_key(&mut url, key);
        let path = url[path_start..].to_string();
        (path, url)
    }

    /// Sends a signed request and waits for the answer's head, within the first-byte timeout
    /// (an upload's is watched by [`watch_upload`] instead).
    async fn send(
        &self,
        request: Request<RequestBody>,
        timeout: Option<Duration>,
        op: Op<'_>,
    ) -> Result<Response<Incoming>, StorageError> {
        let sent = self.client.request(request);
        let answer = match timeout {
            Some(limit) => match tokio::time::timeout(limit, sent).await {
                Ok(answer) => answer,
                Err(_) => {
                    return Err(counted(op.error(
                        ErrorKind::Retryable,
                        format!("no answer within {limit:?}"),
                    )));
                }
            },
            None => sent.await,
        };
        answer.map_err(|e| {
            counted(match untrusted_certificate(&e) {
                Some(message) => op.error(ErrorKind::Permanent, message),
                None => op.error(ErrorKind::Retryable, transport_words(&e, &self.address)),
            })
        })
    }

    /// Reads an error answer into a classified [`StorageError`] (and learns the server's
    /// clock from a RequestTimeTooSkewed).
    async fn failure(&self, answer: Response<Incoming>, op: Op<'_>) -> StorageError {
        let status = answer.status().as_u16();
        let date = answer
            .headers()
            .get("date")
            .and_then(|d| d.to_str().ok())
            .and_then(|d| DateTime::from_str(d, Format::HttpDate).ok());
        let body = read_limited(answer.into_body(), ERROR_BODY_LIMIT).await;
        let code = xml_text(&body, "Code");
        let message = match (code.as_deref(), xml_text(&body, "Message")) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_string(),
            _ => status_text(status),
        };
        if code.as_deref() == Some("RequestTimeTooSkewed")
            && let Some(server) = date
        {
            let ours = DateTime::from(SystemTime::now()).secs();
            self.skew_secs
                .store(server.secs() - ours, Ordering::Relaxed);
        }
        counted(StorageError {
            kind: classify(Some(status), code.as_deref()),
            status: Some(status),
            code,
            ..op.error(ErrorKind::Permanent, message)
        })
    }

    /// GetObject: the whole object (with its full-object checksum) or a range, pinned to an
    /// ETag with `if_match`.
    pub(crate) async fn get(
        &self,
        bucket: &Bucket,
        key: &str,
        range: Option<ByteRange>,
        if_match: Option<&str>,
        target: String,
    ) -> Result<GetObject, StorageError> {
        let op = Op {
            name: "GetObject",
            target: &target,
        };
        let (path, url) = Self::url(bucket, key);
        let mut headers = HeaderMap::new();
        if let Some(r) = range {
            headers.insert(
                "range",
                op.header(&format!("bytes={}-{}", r.first, r.last))?,
            );
        } else {
            headers.insert("x-amz-checksum-mode", HeaderValue::from_static("ENABLED"));
        }
        if let Some(etag) = if_match {
            headers.insert("if-match", op.header(&quoted(etag))?);
        }
        self.sign(bucket, &Method::GET, &path, &mut headers, EMPTY_SHA256, op)
            .await?;
        let request = build(Method::GET, &url, headers, Either::Left(Empty::new()), op)?;
        let answer = self
            .send(request, Some(self.timeouts.first_byte), op)
            .await?;
        if !answer.status().is_success() {
            return Err(self.failure(answer, op).await);
        }
        let mut head = head_from(answer.headers(), false);
        let content_length = header_u64(answer.headers(), "content-length").unwrap_or(0);
        // For a ranged GET, Content-Length is the range's; the object size is in Content-Range.
        if let Some(total) = header_str(answer.headers(), "content-range")
            .and_then(|r| r.rsplit('/').next())
            .and_then(|t| t.parse::<u64>().ok())
        {
            head.size = total;
        }
        Ok(GetObject {
            head,
            content_length,
            body: body_stream(answer.into_body(), op.name, target),
        })
    }

    /// PutObject of a body whose integrity the server checks: `options` must carry
    /// Content-MD5 or the source's checksum (the SDK sends the rest, with a CRC32C trailer).
    pub(crate) async fn put(
        &self,
        bucket: &Bucket,
        key: &str,
        body: BodyStream,
        length: u64,
        options: PutOptions<'_>,
        target: String,
    ) -> Result<Written, StorageError> {
        let op = Op {
            name: "PutObject",
            target: &target,
        };
        let (path, url) = Self::url(bucket, key);
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from(length));
        if let Some(md5) = options.content_md5.and_then(|h| hex::decode(h).ok()) {
            let md5 = aws_smithy_types::base64::encode(md5);
            headers.insert("content-md5", op.header(&md5)?);
        }
        if let Some(c) = options.checksum {
            headers.insert(checksum_header(c), op.header(&c.value)?);
        }
        if let Some(tagging) = options.tagging {
            headers.insert("x-amz-tagging", op.header(tagging)?);
        }
        match options.condition {
            WriteCondition::None => {}
            WriteCondition::IfAbsent => {
                headers.insert("if-none-match", HeaderValue::from_static("*"));
            }
            WriteCondition::IfMatch(etag) => {
                headers.insert("if-match", op.header(&quoted(etag))?);
            }
            WriteCondition::IfMatchUnquoted(etag) => {
                headers.insert("if-match", op.header(etag.trim_matches('"'))?);
            }
        }
        put_attrs(&mut headers, options.attrs, op)?;
        self.sign(
            bucket,
            &Method::PUT,
            &path,
            &mut headers,
            sigv4::UNSIGNED_PAYLOAD,
            op,
        )
        .await?;
        let progress = Progress::new();
        let body = SizedBody::new(body, length, progress.clone());
        let request = build(Method::PUT, &url, headers, Either::Right(body), op)?;
        let sent = async {
            let answer = self.send(request, None, op).await?;
            if !answer.status().is_success() {
                return Err(self.failure(answer, op).await);
            }
            let headers = answer.headers().clone();
            // An empty body; read to its end so the connection goes back to the pool.
            let _ = read_limited(answer.into_body(), ERROR_BODY_LIMIT).await;
            Ok(headers)
        };
        let headers =
            watch_upload(sent, &progress, self.timeouts, op.name, || target.clone()).await?;
        Ok(Written {
            etag: header_str(&headers, "etag")
                .unwrap_or_default()
                .trim_matches('"')
                .to_string(),
            etag_may_be_md5: !encrypted(&headers),
        })
    }
}

mod headers;

pub(crate) use headers::head_from;
use headers::{
    USER_AGENT, body_stream, build, checksum_header, counted, encrypted, header_str, header_u64,
    put_attrs, read_limited, xml_text,
};
