//! Which certificate authorities ferry trusts on HTTPS endpoints.
//!
//! The system's root store, plus the certificates of the PEM file that `AWS_CA_BUNDLE` names:
//! the variable the AWS CLI and the other AWS SDKs read for a private CA. The Rust SDK does
//! not read it, so ferry does, once per process, and hands the same set to both request paths
//! (the SDK's HTTP client and the lean path's) and to the SQS client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The environment variable naming a PEM file of extra certificate authorities.
pub const CA_BUNDLE_VAR: &str = "AWS_CA_BUNDLE";

/// The certificate authorities HTTPS endpoints are checked against. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Trust {
    /// The extra authorities, if a bundle was given.
    bundle: Option<Arc<Bundle>>,
    /// The lean path's TLS settings: system roots plus the bundle's.
    rustls: Arc<rustls::ClientConfig>,
    /// The SDK's HTTP client, trusting the same roots (one connection pool per process).
    sdk: SharedHttpClient,
}

#[derive(Debug)]
struct Bundle {
    path: PathBuf,
    /// The file as read (the SDK's trust store takes PEM).
    pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
}

/// A file of certificate authorities that cannot be used: where it was named, which file,
/// and why.
#[derive(Debug, thiserror::Error)]
#[error("{named}={}: {reason}", path.display())]
pub struct TrustError {
    /// Where the file was named: `AWS_CA_BUNDLE`, or `redis.ca_file`.
    pub named: &'static str,
    /// The file named.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

impl Trust {
    /// The system's root store alone.
    pub fn system() -> Trust {
        Trust::build(None)
    }

    /// The system's root store, plus the certificates in the file `AWS_CA_BUNDLE` names when
    /// it is set and not empty.
    pub fn from_env() -> Result<Trust, TrustError> {
        match std::env::var_os(CA_BUNDLE_VAR) {
            Some(path) if !path.is_empty() => Trust::with_bundle(Path::new(&path)),
            _ => Ok(Trust::system()),
        }
    }

    /// The system's root store, plus every certificate in the PEM file at `path`.
    ///
    /// A file that cannot be read, holds no certificate, or holds a certificate that is not
    /// a usable authority is refused whole: a half-loaded bundle would fail later, on the
    /// first connection to the endpoint it was meant for, far from its cause.
    pub fn with_bundle(path: &Path) -> Result<Trust, TrustError> {
        let pem = std::fs::read(path).map_err(|e| TrustError {
            named: CA_BUNDLE_VAR,
            path: path.to_path_buf(),
            reason: format!("cannot be read: {e}"),
        })?;
        let certs = authorities(CA_BUNDLE_VAR, path, &pem)?;
        let bundle = Bundle {
            path: path.to_path_buf(),
            pem,
            certs,
        };
        Ok(Trust::build(Some(Arc::new(bundle))))
    }

    fn build(bundle: Option<Arc<Bundle>>) -> Trust {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a system CA certificate could not be loaded");
        }
        roots.add_parsable_certificates(native.certs);
        // The SDK's trust store adds the system's roots itself and takes the bundle as PEM.
        let mut store = TrustStore::default();
        if let Some(bundle) = &bundle {
            roots.add_parsable_certificates(bundle.certs.iter().cloned());
            store = store.with_pem_certificate(bundle.pem.clone());
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let rustls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();

        let context = TlsContext::builder()
            .with_trust_store(store)
            .build()
            .expect("a TLS context with a trust store always builds");
        let sdk = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https();
        Trust {
            bundle,
            rustls: Arc::new(rustls),
            sdk,
        }
    }

    /// The bundle file trusted besides the system's roots, if any.
    pub fn bundle(&self) -> Option<&Path> {
        self.bundle.as_deref().map(|b| b.path.as_path())
    }

    /// Every certificate authority trusted, the system's and the bundle's, plus those of the
    /// PEM file `extra` (a `[redis] ca_file`), as one PEM text: what the Redis client takes
    /// (it trusts only the roots it is given, so the system's are written out too).
    pub fn roots_pem(&self, extra: Option<&Path>) -> Result<Vec<u8>, TrustError> {
        use base64::Engine as _;
        let mut certs = rustls_native_certs::load_native_certs().certs;
        if let Some(bundle) = &self.bundle {
            certs.extend(bundle.certs.iter().cloned());
        }
        if let Some(path) = extra {
            certs.extend(read_authorities("redis.ca_file", path)?);
        }
        let mut pem = Vec::new();
        for cert in &certs {
            pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
            let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            for line in text.as_bytes().chunks(64) {
                pem.extend_from_slice(line);
                pem.push(b'\n');
            }
            pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
        }
        Ok(pem)
    }

    /// TLS settings trusting these authorities (the lean request path's; SNS certificates).
    pub fn rustls_config(&self) -> rustls::ClientConfig {
        (*self.rustls).clone()
    }

    /// The HTTP client every SDK client (S3, SQS, credential providers) is built with.
    pub fn sdk_http_client(&self) -> SharedHttpClient {
        self.sdk.clone()
    }
}

/// The certificate authorities of the PEM file at `path`, every one usable (see
/// [`Trust::with_bundle`]).
pub(crate) fn read_authorities(
    named: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let pem = std::fs::read(path).map_err(|e| TrustError {
        named,
        path: path.to_path_buf(),
        reason: format!("cannot be read: {e}"),
    })?;
    authorities(named, path, &pem)
}

fn authorities(
    named: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let fail = |reason: String| TrustError {
        named,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("is not a PEM file of certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no certificate (no -----BEGIN CERTIFICATE----- block)".to_string(),
        ));
    }
    let mut check = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        check.add(cert.clone()).map_err(|e| {
            fail(format!(
                "certificate {} of {} cannot be a certificate authority: {e}",
                i + 1,
                certs.len()
            ))
        })?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferry-tls-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_bundle_that_is_missing_empty_or_not_pem_is_refused_naming_the_file_and_why() {
        let dir = temp_dir("refused");
        let missing = dir.join("missing.pem");
        let err = Trust::with_bundle(&missing).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "AWS_CA_BUNDLE={}: cannot be read",
                missing.display()
            )),
            "{text}"
        );

        let empty = write(&dir, "empty.pem", b"");
        let text = Trust::with_bundle(&empty).unwrap_err().to_string();
        assert!(text.contains("holds no certificate"), "{text}");

        let key_only = write(
            &dir,
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let text = Trust::with_bundle(&key_only).unwrap_err().to_string();
        assert!(text.contains("holds no certificate"), "{text}");

        let garbage = write(
            &dir,
            "garbage.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let text = Trust::with_bundle(&garbage).unwrap_err().to_string();
        assert!(
            text.contains("certificate 1 of 1 cannot be a certificate authority"),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
