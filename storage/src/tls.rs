//! The HTTP clients that trust ferry's certificate authorities ([`Authorities`]): the
//! system's roots plus `AWS_CA_BUNDLE`'s, built once per process and handed to both request
//! paths (the SDK's HTTP client and the lean path's) and to the SQS client.

use std::path::Path;
use std::sync::Arc;

use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};
pub use ferry_core::trust::{Authorities, CA_BUNDLE_VAR, TrustError};

/// The certificate authorities HTTPS endpoints are checked against, with the clients built
/// on them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Trust {
    authorities: Authorities,
    /// The lean path's TLS settings: system roots plus the bundle's.
    rustls: Arc<rustls::ClientConfig>,
    /// The SDK's HTTP client, trusting the same roots (one connection pool per process).
    sdk: SharedHttpClient,
}

impl Trust {
    /// The system's root store alone.
    pub fn system() -> Trust {
        Trust::build(Authorities::system())
    }

    /// The system's root store, plus the certificates in the file `AWS_CA_BUNDLE` names when
    /// it is set and not empty.
    pub fn from_env() -> Result<Trust, TrustError> {
        Authorities::from_env().map(Trust::build)
    }

    /// The system's root store, plus every certificate in the PEM file at `path` (refused
    /// whole when any of it is unusable: see [`Authorities::with_bundle`]).
    pub fn with_bundle(path: &Path) -> Result<Trust, TrustError> {
        Authorities::with_bundle(path).map(Trust::build)
    }

    fn build(authorities: Authorities) -> Trust {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(authorities.certificates());
        // The SDK's trust store adds the system's roots itself and takes the bundle as PEM.
        let mut store = TrustStore::default();
        if let Some(pem) = authorities.bundle_pem() {
            store = store.with_pem_certificate(pem.to_vec());
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
            authorities,
            rustls: Arc::new(rustls),
            sdk,
        }
    }

    /// The bundle file trusted besides the system's roots, if any.
    pub fn bundle(&self) -> Option<&Path> {
        self.authorities.bundle()
    }

    /// The authorities trusted, as files named them.
    pub fn authorities(&self) -> &Authorities {
        &self.authorities
    }

    /// Every certificate authority trusted plus those of the PEM file `extra`, as one PEM
    /// text (see [`Authorities::roots_pem`]).
    pub fn roots_pem(&self, extra: Option<&Path>) -> Result<Vec<u8>, TrustError> {
        self.authorities.roots_pem(extra)
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
