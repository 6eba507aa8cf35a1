//! Which certificate authorities ferry trusts: the system's root store, plus the
//! certificates of the PEM file that `AWS_CA_BUNDLE` names (the variable the AWS CLI and the
//! other AWS SDKs read for a private CA; the Rust SDK does not read it, so ferry does).
//!
//! This module only reads and checks the files; the storage crate builds its HTTP clients
//! from [`Authorities`], and the queue hands them to the Redis client as PEM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The environment variable naming a PEM file of extra certificate authorities.
pub const CA_BUNDLE_VAR: &str = "AWS_CA_BUNDLE";

/// The extra certificate authorities trusted besides the system's. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Authorities {
    bundle: Option<Arc<Bundle>>,
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

impl Authorities {
    /// The system's root store alone.
    pub fn system() -> Authorities {
        Authorities::default()
    }

    /// The system's root store, plus the certificates in the file `AWS_CA_BUNDLE` names when
    /// it is set and not empty.
    pub fn from_env() -> Result<Authorities, TrustError> {
        match std::env::var_os(CA_BUNDLE_VAR) {
            Some(path) if !path.is_empty() => Authorities::with_bundle(Path::new(&path)),
            _ => Ok(Authorities::system()),
        }
    }

    /// The system's root store, plus every certificate in the PEM file at `path`.
    ///
    /// A file that cannot be read, holds no certificate, or holds a certificate that is not
    /// a usable authority is refused whole: a half-loaded bundle would fail later, on the
    /// first connection to the endpoint it was meant for, far from its cause.
    pub fn with_bundle(path: &Path) -> Result<Authorities, TrustError> {
        let pem = read(CA_BUNDLE_VAR, path)?;
        let certs = authorities(CA_BUNDLE_VAR, path, &pem)?;
        let bundle = Bundle {
            path: path.to_path_buf(),
            pem,
            certs,
        };
        Ok(Authorities {
            bundle: Some(Arc::new(bundle)),
        })
    }

    /// The bundle file trusted besides the system's roots, if any.
    pub fn bundle(&self) -> Option<&Path> {
        self.bundle.as_deref().map(|b| b.path.as_path())
    }

    /// The bundle as read, PEM text, if any.
    pub fn bundle_pem(&self) -> Option<&[u8]> {
        self.bundle.as_deref().map(|b| b.pem.as_slice())
    }

    /// The system's certificate authorities and the bundle's.
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a system CA certificate could not be loaded");
        }
        let mut certs = native.certs;
        if let Some(bundle) = &self.bundle {
            certs.extend(bundle.certs.iter().cloned());
        }
        certs
    }

    /// Every certificate authority trusted, the system's and the bundle's, plus those of the
    /// PEM file `extra` (a `[redis] ca_file`), as one PEM text: what the Redis client takes
    /// (it trusts only the roots it is given, so the system's are written out too).
    pub fn roots_pem(&self, extra: Option<&Path>) -> Result<Vec<u8>, TrustError> {
        use base64::Engine as _;
        let mut certs = self.certificates();
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
}

fn read(named: &'static str, path: &Path) -> Result<Vec<u8>, TrustError> {
    std::fs::read(path).map_err(|e| TrustError {
        named,
        path: path.to_path_buf(),
        reason: format!("cannot be read: {e}"),
    })
}

/// The certificate authorities of the PEM file at `path`, every one usable (see
/// [`Authorities::with_bundle`]); `named` says where the file was named.
pub fn read_authorities(
    named: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let pem = read(named, path)?;
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
        let err = Authorities::with_bundle(&missing).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "AWS_CA_BUNDLE={}: cannot be read",
                missing.display()
            )),
            "{text}"
        );

        let empty = write(&dir, "empty.pem", b"");
        let text = Authorities::with_bundle(&empty).unwrap_err().to_string();
        assert!(text.contains("holds no certificate"), "{text}");

        let key_only = write(
            &dir,
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let text = Authorities::with_bundle(&key_only).unwrap_err().to_string();
        assert!(text.contains("holds no certificate"), "{text}");

        let garbage = write(
            &dir,
            "garbage.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let text = Authorities::with_bundle(&garbage).unwrap_err().to_string();
        assert!(
            text.contains("certificate 1 of 1 cannot be a certificate authority"),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
