//! SNS messages are believed only once their signature holds.
//!
//! SNS signs each message it posts (SignatureVersion 1: RSA with SHA-1; 2: RSA with SHA-256)
//! with the key of a certificate it serves at `SigningCertURL`. That URL, and a
//! confirmation's `SubscribeURL`, are fetched only when they are `https` on an SNS host
//! (`sns.REGION.amazonaws.com`, `.amazonaws.com.cn` in China; GovCloud's regions have the same
//! form), so a forged message cannot make the coordinator reach anything else: not a cloud
//! metadata service, not an internal admin API. The HTTPS connection checks SNS's server
//! certificate against the system's authorities (and `AWS_CA_BUNDLE`'s), which is what makes
//! the certificate it serves SNS's own. Certificates are kept by URL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::events::notice::SnsEnvelope;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// How long fetching a certificate or confirming a subscription may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from SNS (a certificate is about 2 KiB).
const MAX_ANSWER: usize = 64 * 1024;
/// Certificates kept; past this many, the cache starts again (SNS rotates a few a year).
const MAX_CACHED: usize = 64;

/// Checks SNS signatures and confirms subscriptions, reaching SNS hosts only.
pub struct SnsCheck {
    tls: Arc<rustls::ClientConfig>,
    /// Where an SNS host is reached instead of through DNS (tests alone set it).
    resolve: HashMap<String, SocketAddr>,
    /// The RSA public key of each certificate fetched, by its URL.
    keys: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl SnsCheck {
    /// Trusts the authorities of `tls` (the system's and `AWS_CA_BUNDLE`'s in the product) on
    /// connections to SNS.
    pub fn new(tls: rustls::ClientConfig) -> SnsCheck {
        SnsCheck {
            tls: Arc::new(tls),
            resolve: HashMap::new(),
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Reaches the SNS host `host` at `addr` instead of through DNS: for tests, which serve a
    /// certificate under a test authority. Only SNS hosts are ever fetched from, so this
    /// cannot open another door.
    pub fn resolving(mut self, host: &str, addr: SocketAddr) -> SnsCheck {
        self.resolve.insert(host.to_ascii_lowercase(), addr);
        self
    }

    /// Whether the message's signature holds, against the certificate at its
    /// `SigningCertURL`; the reason when it does not.
    pub async fn verify(&self, message: &SnsEnvelope) -> Result<(), String> {
        let field = |name: &str| {
            message
                .field(name)
                .ok_or_else(|| format!("the message has no {name}"))
        };
        let algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm =
            match field("SignatureVersion")? {
                "1" => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                "2" => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                other => return Err(format!("SignatureVersion {other:?} is neither 1 nor 2")),
            };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(field("Signature")?.trim())
            .map_err(|e| format!("Signature is not base64: {e}"))?;
        let signed = message.string_to_sign().map_err(|e| e.0)?;
        let key = self.key(field("SigningCertURL")?).await?;
        aws_lc_rs::signature::UnparsedPublicKey::new(algorithm, key.as_slice())
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| "the signature does not match the message".to_string())
    }

    /// Confirms a subscription by fetching its `SubscribeURL`, when that is SNS's.
    pub async fn confirm(&self, subscribe_url: &str) -> Result<(), String> {
        let url = sns_url("SubscribeURL", subscribe_url)?;
        let (status, _) = self.get(&url).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("SubscribeURL answered {status}"))
        }
    }

    /// The RSA public key of the certificate at `url`, fetched once.
    async fn key(&self, url: &str) -> Result<Arc<Vec<u8>>, String> {
        if let Some(key) = self.lock().get(url) {
            return Ok(key.clone());
        }
        let uri = sns_url("SigningCertURL", url)?;
        let (status, body) = self.get(&uri).await?;
        if !status.is_success() {
            return Err(format!("SigningCertURL answered {status}"));
        }
        let key = Arc::new(public_key(&body)?);
        let mut keys = self.lock();
        if keys.len() >= MAX_CACHED {
            keys.clear();
        }
        keys.insert(url.to_string(), key.clone());
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Vec<u8>>>> {
        // Only whole inserts and clears under the lock: a poisoned map is still valid.
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// GETs `url` (an SNS URL, checked by the caller) over HTTPS: its status and at most
    /// [`MAX_ANSWER`] bytes of its body. Redirects are not followed.
    async fn get(&self, url: &Uri) -> Result<(hyper::StatusCode, Bytes), String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get_now(url))
            .await
            .map_err(|_| format!("{url}: timed out"))?
            .map_err(|e| format!("{url}: {e}"))
    }

    async fn get_now(&self, url: &Uri) -> Result<(hyper::StatusCode, Bytes), String> {
        let host = url.host().unwrap_or_default().to_ascii_lowercase();
        let tcp = match self.resolve.get(&host) {
            Some(addr) => tokio::net::TcpStream::connect(addr).await,
            None => tokio::net::TcpStream::connect((host.as_str(), 443)).await,
        }
        .map_err(|e| format!("connecting: {e}"))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let request = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, "ferry")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let body = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    }
}

/// `url` when it is `https` on an SNS host, with no user and no port but 443; else why not.
pub(crate) fn sns_url(field: &str, url: &str) -> Result<Uri, String> {
    let refuse = |why: &str| Err(format!("{field} {url:?} {why}"));
    let Ok(uri) = url.parse::<Uri>() else {
        return refuse("is not a URL");
    };
    if uri.scheme_str() != Some("https") {
        return refuse("is not https");
    }
    let Some(authority) = uri.authority() else {
        return refuse("has no host");
    };
    if authority.as_str().contains('@') {
        return refuse("carries a user");
    }
    if uri.port_u16().is_some_and(|p| p != 443) {
        return refuse("names a port other than 443");
    }
    if !is_sns_host(authority.host()) {
        return refuse("is not on an SNS host (sns.REGION.amazonaws.com)");
    }
    Ok(uri)
}

/// `sns.REGION.amazonaws.com`, or `sns.REGION.amazonaws.com.cn`; REGION is letters, digits
/// and dashes.
pub(crate) fn is_sns_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    region.is_some_and(|r| {
        r.len() >= 3
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// The RSA public key (PKCS#1) of the PEM certificate `pem`, when it is valid now.
fn public_key(pem: &[u8]) -> Result<Vec<u8>, String> {
    let der = CertificateDer::from_pem_slice(pem)
        .map_err(|e| format!("SigningCertURL is not a PEM certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("SigningCertURL's certificate cannot be read: {e}"))?;
    if !cert.validity().is_valid() {
        return Err("SigningCertURL's certificate is expired or not valid yet".into());
    }
    let key = cert.public_key();
    if key.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err("SigningCertURL's certificate does not hold an RSA key".into());
    }
    Ok(key.subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sns_hosts_are_sns_hosts() {
        for host in [
            "sns.us-east-1.amazonaws.com",
            "SNS.eu-west-3.amazonaws.com",
            "sns.cn-north-1.amazonaws.com.cn",
            "sns.us-gov-west-1.amazonaws.com",
        ] {
            assert!(is_sns_host(host), "{host}");
        }
        for host in [
            "sns.amazonaws.com",
            "sns.evil.example.amazonaws.com",
            "sns.us-east-1.amazonaws.com.evil.example",
            "evil-sns.us-east-1.amazonaws.com",
            "169.254.169.254",
            "127.0.0.1",
            "sns.us-east-1.amazonaws.co",
            "sqs.us-east-1.amazonaws.com",
        ] {
            assert!(!is_sns_host(host), "{host}");
        }
    }

    #[test]
    fn only_https_sns_urls_are_fetched() {
        assert!(
            sns_url(
                "SubscribeURL",
                "https://sns.us-east-1.amazonaws.com/?Token=x"
            )
            .is_ok()
        );
        assert!(sns_url("f", "https://sns.us-east-1.amazonaws.com:443/c.pem").is_ok());
        for (url, why) in [
            ("http://sns.us-east-1.amazonaws.com/c.pem", "is not https"),
            (
                "https://169.254.169.254/latest/meta-data/",
                "is not on an SNS host",
            ),
            (
                "https://sns.us-east-1.amazonaws.com:8443/c.pem",
                "port other than 443",
            ),
            (
                "https://a@sns.us-east-1.amazonaws.com/c.pem",
                "carries a user",
            ),
            ("not a url", "is not a URL"),
        ] {
            let e = sns_url("SigningCertURL", url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
            assert!(e.starts_with("SigningCertURL "), "{e}");
        }
    }
}
