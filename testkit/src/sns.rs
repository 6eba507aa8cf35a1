//! A stand-in for Amazon SNS's HTTPS side, under a test certificate authority: it serves a
//! signing certificate, answers subscription confirmations (and records them), and signs
//! messages the way SNS does, so tests can check what ferry believes and what it refuses.
//!
//! The signing key is a throwaway RSA key; signatures are made by the `openssl` command (its
//! SHA-1 signing is what SignatureVersion 1 needs), an implementation independent of ferry's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_RSA_SHA256};
use serde_json::{Map, Value};
use tokio::net::TcpListener;

use crate::servers::TempDir;
use crate::tls::{PrivateCa, base64};

/// The host SNS messages name in this test double's URLs.
pub const SNS_HOST: &str = "sns.us-east-1.amazonaws.com";

/// A fake SNS over HTTPS on 127.0.0.1, with a certificate for [`SNS_HOST`] under `ca`.
pub struct FakeSns {
    addr: SocketAddr,
    cert_pem: String,
    key_file: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Drop for FakeSns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSns {
    /// Serves HTTPS with `ca`'s server certificate (which must name [`SNS_HOST`]): `GET
    /// /cert.pem` answers the signing certificate; every request is recorded.
    pub async fn start(ca: &PrivateCa) -> FakeSns {
        FakeSns::start_before(ca, None).await
    }

    /// [`FakeSns::start`], also answering `GET /SimpleNotificationService-*.pem` with what the
    /// moto server at `moto` (`host:port`) holds there: the certificates of the messages its
    /// own SNS signs. (Moto serves them only to a request its router takes for SNS's, which
    /// an AWS signature header makes it.)
    pub async fn start_before(ca: &PrivateCa, moto: Option<String>) -> FakeSns {
        let dir = TempDir::new("fake-sns");
        let key = KeyPair::generate_for(&PKCS_RSA_SHA256).expect("an RSA key");
        let mut params = CertificateParams::new(vec![SNS_HOST.to_string()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "sns.amazonaws.com");
        let cert = params.self_signed(&key).expect("the signing certificate");
        let key_file = dir.path().join("signing.key");
        std::fs::write(&key_file, key.serialize_pem()).expect("writing the key");
        let cert_pem = cert.pem();

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let addr = listener.local_addr().expect("address");
        let acceptor = ca.acceptor();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (requests, cert_pem) = (requests.clone(), cert_pem.clone());
            let moto = moto.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, requests, cert_pem, moto) = (
                        acceptor.clone(),
                        requests.clone(),
                        cert_pem.clone(),
                        moto.clone(),
                    );
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |req: Request<_>| {
                            let path = req
                                .uri()
                                .path_and_query()
                                .map_or("/".to_string(), |p| p.to_string());
                            requests.lock().unwrap().push(path.clone());
                            let (cert_pem, moto) = (cert_pem.clone(), moto.clone());
                            async move {
                                let body = match moto {
                                    Some(moto)
                                        if path.starts_with("/SimpleNotificationService-") =>
                                    {
                                        moto_certificate(&moto, &path).await
                                    }
                                    _ if path == "/cert.pem" => cert_pem,
                                    _ => "<ConfirmSubscriptionResponse/>".to_string(),
                                };
                                Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                    Bytes::from(body),
                                )))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            }
        });
        FakeSns {
            addr,
            cert_pem,
            key_file,
            requests,
            task,
            _dir: dir,
        }
    }

    /// Where it listens (ferry is told to reach [`SNS_HOST`] here).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The signing certificate, as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Every request's path and query, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Signs `message` as SNS does: `SignatureVersion` `version` (1: SHA-1, 2: SHA-256),
    /// `SigningCertURL` `cert_url`, and the `Signature` of its covered fields.
    pub fn sign(&self, message: &mut Map<String, Value>, version: u8, cert_url: &str) {
        let text = string_to_sign(message);
        let digest = if version == 1 { "-sha1" } else { "-sha256" };
        let mut child = std::process::Command::new("openssl")
            .args(["dgst", digest, "-sign"])
            .arg(&self.key_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("running openssl (scripts/deps.sh installs it)");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(text.as_bytes())
                .expect("writing to openssl");
        }
        let out = child.wait_with_output().expect("openssl's signature");
        assert!(out.status.success(), "openssl failed: {:?}", out.status);
        message.insert("SignatureVersion".into(), version.to_string().into());
        message.insert("SigningCertURL".into(), cert_url.into());
        message.insert("Signature".into(), base64(&out.stdout).into());
    }
}

/// The certificate moto serves at `path`.
async fn moto_certificate(moto: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(moto)
        .await
        .expect("connecting to moto");
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {SNS_HOST}\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential=testing/20261207/us-east-1/sns/aws4_request, SignedHeaders=host, \
         Signature=0\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("asking moto");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("moto's answer");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The text SNS signs, written from AWS's documentation ("Verifying the signatures of Amazon
/// SNS messages"), apart from ferry's own code.
fn string_to_sign(message: &Map<String, Value>) -> String {
    let kind = message.get("Type").and_then(Value::as_str).unwrap_or("");
    let names: &[&str] = if kind == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    names
        .iter()
        .filter_map(|name| {
            let value = message.get(*name)?.as_str()?;
            Some(format!("{name}\n{value}\n"))
        })
        .collect()
}
