//! HTTPS in front of a plain-HTTP S3 server, under a private certificate authority.
//!
//! [`PrivateCa`] makes a throwaway authority and a server certificate for `127.0.0.1` and
//! `localhost`; [`TlsFront`] accepts TLS with that certificate and passes the decrypted bytes
//! to the server unchanged (the `Host` header too, so SigV4 signatures still verify). Tests
//! use it to check what a user with an endpoint behind a private CA sees.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// A certificate authority made for one test, and a server certificate it signed.
pub struct PrivateCa {
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
}

impl PrivateCa {
    /// A new authority named `name`, and a certificate for `127.0.0.1` and `localhost`.
    pub fn new(name: &str) -> PrivateCa {
        PrivateCa::for_names(name, &["127.0.0.1", "localhost"])
    }

    /// A new authority named `name`, and a server certificate for `names` (hosts or IPs).
    pub fn for_names(name: &str, names: &[&str]) -> PrivateCa {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test server"));
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        PrivateCa {
            ca_pem: ca_cert.pem(),
            server_cert: cert.der().clone(),
            server_key: key.serialize_der(),
        }
    }

    /// Writes the authority's certificate as PEM (what `AWS_CA_BUNDLE` names).
    pub fn write_ca_pem(&self, path: &Path) {
        std::fs::write(path, &self.ca_pem).expect("writing the CA certificate");
    }

    /// Writes the server's certificate and key as PEM (what `redis-server --tls-cert-file`
    /// and `--tls-key-file` read).
    pub fn write_server_pem(&self, cert: &Path, key: &Path) {
        let body = |der: &[u8]| {
            use std::fmt::Write;
            let text = base64(der);
            let mut out = String::new();
            for line in text.as_bytes().chunks(64) {
                let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
            }
            out
        };
        std::fs::write(
            cert,
            format!(
                "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----\n",
                body(self.server_cert.as_ref())
            ),
        )
        .expect("writing the server certificate");
        std::fs::write(
            key,
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}-----END PRIVATE KEY-----\n",
                body(&self.server_key)
            ),
        )
        .expect("writing the server key");
    }

    /// Accepts TLS with the server certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.server_cert.clone()], key)
            .expect("server certificate and key");
        TlsAcceptor::from(Arc::new(config))
    }
}

/// Standard base64, padded.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Counts of the TLS front's connections.
#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// A TLS listener on 127.0.0.1 that forwards each connection to a plain-HTTP server. Stops
/// when dropped.
pub struct TlsFront {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    /// Serves HTTPS with `ca`'s server certificate, forwarding to `upstream` (`host:port`).
    pub async fn start(ca: &PrivateCa, upstream: &str) -> std::io::Result<TlsFront> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = ca.acceptor();
        let counts = Arc::new(Counts::default());
        let upstream = upstream.to_string();
        let task = tokio::spawn({
            let counts = counts.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, counts, upstream) =
                        (acceptor.clone(), counts.clone(), upstream.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            // The client hung up mid-handshake, or refused the certificate.
                            counts.refused.fetch_add(1, Ordering::Relaxed);
                            return;
                        };
                        counts.accepted.fetch_add(1, Ordering::Relaxed);
                        let Ok(mut server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
                    });
                }
            }
        });
        Ok(TlsFront { addr, counts, task })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Connections whose TLS handshake completed.
    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// Connections whose TLS handshake failed (a client that does not trust the certificate
    /// aborts it).
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }
}
