//! The S3 store against real servers: uploads checked end to end with the source's MD5
//! (Content-MD5) or a streamed CRC32C trailer, which ETags count as MD5s, the lean request
//! path against the SDK's, and HTTPS endpoints under a private certificate authority.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use bytes::Bytes;
use ferry_core::config::Config;
use ferry_storage::{
    BodyStream, ByteRange, ErrorKind, ObjectAttrs, ObjectStore, PutOptions, RequestPath, S3Store,
    StorageError, Timeouts, Trust, WriteCondition,
};
use ferry_testkit::servers::{TempDir, wait_until};
use ferry_testkit::tls::{PrivateCa, TlsFront};
use futures::StreamExt;
use harness::data::{pattern, put_multipart};
use harness::{S3Server, unique};
use md5::{Digest, Md5};
use std::time::Duration;

/// A plain PUT of `bytes`, with `content_md5` when given; returns the ETag.
async fn put(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    bytes: &[u8],
    content_md5: Option<&str>,
) -> Result<String, StorageError> {
    let options = PutOptions {
        attrs: &ObjectAttrs::default(),
        content_md5,
        checksum: None,
        condition: &WriteCondition::None,
        tagging: None,
        trailer: true,
    };
    store
        .put(bucket, key, body(bytes), bytes.len() as u64, options)
        .await
        .map(|w| w.etag)
}

fn body(bytes: &[u8]) -> BodyStream {
    // Several frames, as a GET body arrives.
    let chunks: Vec<_> = bytes
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

async fn uploads_are_checked_end_to_end(server: S3Server, checks_content_md5: bool) {
    let store = harness::s3_path(&server).await;
    let bucket = unique("b");
    server.create_bucket(&bucket).await;
    let bytes = pattern(3, 0, 10_000);
    let md5 = hex::encode(Md5::digest(&bytes));

    // With the right MD5, and without one (CRC32C trailer): the ETag is the bytes' MD5.
    for (key, content_md5) in [("with-md5", Some(md5.as_str())), ("with-crc", None)] {
        let etag = put(store.as_ref(), &bucket, key, &bytes, content_md5)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(etag, md5, "{key}");
        let got = store.get(&bucket, key, None, None).await.expect("get");
        assert!(
            got.head.etag_is_md5,
            "{key}: a single upload's ETag is its MD5"
        );
    }

    // Bytes that do not match the MD5 they should have are refused, and nothing is written.
    // moto does not check Content-MD5; there the returned ETag (the MD5 of what arrived)
    // differs from the one claimed, which the worker's ETag check catches.
    let wrong = hex::encode(Md5::digest(b"something else"));
    let put = put(store.as_ref(), &bucket, "corrupt", &bytes, Some(&wrong)).await;
    if checks_content_md5 {
        let err = put.expect_err("a body that does not match Content-MD5 must be refused");
        assert_eq!(err.kind, ErrorKind::Retryable, "{err}");
        let absent = store
            .head(&bucket, "corrupt", None)
            .await
            .expect_err("absent");
        assert_eq!(absent.kind, ErrorKind::NotFound);
    } else {
        assert_eq!(put.expect("moto accepts it"), md5);
    }

    // A multipart object's ETag is not an MD5 of its bytes (on Garage: moto's answer to
    // CompleteMultipartUpload trips the SDK this helper uses).
    if !checks_content_md5 {
        return;
    }
    let client = server.client();
    put_multipart(&client, &bucket, "parts", &[5 << 20, 1000], 9).await;
    let got = store.get(&bucket, "parts", None, None).await.expect("get");
    assert!(!got.head.etag_is_md5, "multipart ETag {}", got.head.etag);
}

#[tokio::test]
async fn moto_checks_uploads_end_to_end() {
    uploads_are_checked_end_to_end(S3Server::moto(), false).await;
}

#[tokio::test]
async fn garage_checks_uploads_end_to_end() {
    uploads_are_checked_end_to_end(S3Server::garage(), true).await;
}

#[tokio::test]
async fn rgw_checks_uploads_end_to_end() {
    uploads_are_checked_end_to_end(S3Server::rgw(), true).await;
}

/// A 2 GiB tmpfs filled to 96.5 %, unmounted on drop.
struct NearlyFullDisk(TempDir);

impl NearlyFullDisk {
    fn mount() -> NearlyFullDisk {
        let dir = TempDir::new("nearly-full");
        let run = |cmd: &str, args: &[&str]| {
            let out = std::process::Command::new(cmd).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "{cmd} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let at = dir.path().to_str().unwrap();
        run("mount", &["-t", "tmpfs", "-o", "size=2048m", "tmpfs", at]);
        let filler = dir.path().join("filler");
        run("fallocate", &["-l", "1976m", filler.to_str().unwrap()]);
        NearlyFullDisk(dir)
    }

    /// Free space as a share of the filesystem's size.
    fn free_share(&self) -> f64 {
        let out = std::process::Command::new("df")
            .args(["--output=size,avail", "-k"])
            .arg(self.0.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let numbers: Vec<f64> = text
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        numbers[1] / numbers[0]
    }
}

impl Drop for NearlyFullDisk {
    fn drop(&mut self) {
        std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status()
            .ok(); // best-effort clean-up
    }
}

/// Regression: a Ceph monitor exits 28, silently, when its filesystem has under 5 % free
/// (`mon data avail crit`), which failed every RGW test in a CI run on a shared disk.
#[tokio::test]
async fn rgw_starts_on_a_disk_with_under_5_percent_free() {
    let disk = NearlyFullDisk::mount();
    let free = disk.free_share();
    assert!(free < 0.05, "the disk is {:.1} % free", free * 100.0);
    uploads_are_checked_end_to_end(S3Server::rgw_under(disk.0.path()), true).await;
}

/// Regression: a free port taken by another test's server before radosgw bound it made the
/// gateway exit 98 (EADDRINUSE) and failed the test; it now starts again on another port.
#[test]
fn rgw_starts_when_its_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // It returns once the gateway answers a listing of its buckets with 200.
    let rgw = ferry_testkit::ceph::Rgw::start_trying_port(port);
    assert_ne!(rgw.port, port);
    drop(taken);
}

/// The endpoint `s3` of a config for `server` (as `url`), on the request path given.
async fn s3_store(server: &S3Server, url: &str, path: RequestPath) -> S3Store {
    s3_store_trusting(server, url, &Trust::system(), path).await
}

async fn s3_store_trusting(
    server: &S3Server,
    url: &str,
    trust: &Trust,
    path: RequestPath,
) -> S3Store {
    let config = Config::from_toml(&format!(
        "[redis]\nurl = \"redis://127.0.0.1:1\"\n\n{}",
        server.endpoint_toml_at("s3", url)
    ))
    .expect("config");
    S3Store::connect_via(&config.endpoints["s3"], Timeouts::default(), trust, path).await
}

async fn read_all(mut body: BodyStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("body"));
    }
    out
}

/// What an error tells a caller, without the endpoint's name.
fn error_view(e: &StorageError) -> (ErrorKind, Option<u16>, Option<String>, String) {
    (e.kind, e.status, e.code.clone(), e.message.clone())
}

/// GetObject and PutObject on the lean path (signed HTTP on hyper) and through the AWS SDK
/// write the same objects and read the same heads, bodies and errors, on a server that checks
/// signatures (Garage) and one that keeps every header (moto).
async fn the_lean_path_and_the_sdk_agree(server: S3Server) {
    the_lean_path_and_the_sdk_agree_at(&server, &server.url(), &Trust::system()).await;
}

/// [`the_lean_path_and_the_sdk_agree`], reaching `server` at `url` with `trust`.
async fn the_lean_path_and_the_sdk_agree_at(server: &S3Server, url: &str, trust: &Trust) {
    let lean = s3_store_trusting(server, url, trust, RequestPath::Lean).await;
    let sdk = s3_store_trusting(server, url, trust, RequestPath::Sdk).await;
    let bucket = unique("lean");
    server.create_bucket(&bucket).await;
    assert!(
        lean.lean(&bucket).await,
        "the lean path serves a plain endpoint"
    );
    assert!(!sdk.lean(&bucket).await);

    let long = format!("long/{}", "k".repeat(1000 - 5));
    let keys = [
        "plain.txt",
        "dir/with space/plus+sign/percent%20/ünïcödé/日本語",
        "/leading//slashes/",
        "sub-delims!$&'()*+,;=:@[]{}|^`\\\"<>#?~",
        long.as_str(),
    ];
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("owner".to_string(), "team  data".to_string());
    metadata.insert("with-dash".to_string(), " padded ".to_string());
    let moto = server.kind == harness::Kind::Moto;
    let attrs = ObjectAttrs {
        content_type: Some("text/plain; charset=utf-8".into()),
        content_encoding: Some("identity".into()),
        content_language: Some("de-CH".into()),
        content_disposition: Some("attachment; filename=\"a b.txt\"".into()),
        cache_control: Some("max-age=3600, public".into()),
        expires: Some("Wed, 21 Oct 2037 07:28:00 GMT".into()),
        metadata,
        // Garage accepts a class and drops it; moto keeps it.
        storage_class: moto.then(|| "STANDARD_IA".to_string()),
    };
    let bytes = pattern(7, 0, 300_000);
    let md5 = hex::encode(Md5::digest(&bytes));
    for (i, key) in keys.iter().enumerate() {
        let (writer, other) = if i % 2 == 0 {
            (&lean, &sdk)
        } else {
            (&sdk, &lean)
        };
        let key_lean = format!("{key}.lean");
        for (store, key) in [(writer, key.to_string()), (other, key_lean)] {
            let options = PutOptions {
                attrs: &attrs,
                content_md5: Some(&md5),
                checksum: None,
                condition: &WriteCondition::IfAbsent,
                tagging: moto.then_some("k1=v1&k%202=v%2B2"),
                trailer: true,
            };
            let written = store
                .put(&bucket, &key, body(&bytes), bytes.len() as u64, options)
                .await
                .unwrap_or_else(|e| panic!("put {key:?}: {e}"));
            assert_eq!(written.etag, md5, "{key:?}");
        }
    }
    for key in keys {
        let key_lean = format!("{key}.lean");
        for key in [key, key_lean.as_str()] {
            let a = lean
                .get(&bucket, key, None, Some(&md5))
                .await
                .expect("lean get");
            let b = sdk
                .get(&bucket, key, None, Some(&md5))
                .await
                .expect("sdk get");
            assert_eq!(format!("{:?}", a.head), format!("{:?}", b.head), "{key:?}");
            assert_eq!(a.content_length, b.content_length, "{key:?}");
            assert_eq!(a.head.attrs.cache_control, attrs.cache_control, "{key:?}");
            assert_eq!(
                a.head.attrs.metadata.len(),
                2,
                "{key:?}: {:?}",
                a.head.attrs.metadata
            );
            assert_eq!(a.head.tag_count, if moto { 2 } else { 0 }, "{key:?}");
            assert_eq!(read_all(a.body).await, bytes, "{key:?}");
            assert_eq!(read_all(b.body).await, bytes, "{key:?}");

            let range = ByteRange {
                first: 1000,
                last: 250_999,
            };
            let a = lean
                .get(&bucket, key, Some(range), Some(&md5))
                .await
                .expect("lean range");
            let b = sdk
                .get(&bucket, key, Some(range), Some(&md5))
                .await
                .expect("sdk range");
            assert_eq!(
                (a.content_length, a.head.size),
                (250_000, bytes.len() as u64)
            );
            assert_eq!(
                (b.content_length, b.head.size),
                (250_000, bytes.len() as u64)
            );
            assert_eq!(read_all(a.body).await, &bytes[1000..251_000], "{key:?}");
        }
    }

    // What one path wrote, the other wrote the same way.
    for key in keys {
        let a = sdk.head(&bucket, key, None).await.expect("head");
        let b = sdk
            .head(&bucket, &format!("{key}.lean"), None)
            .await
            .expect("head");
        assert_eq!(a.attrs, b.attrs, "{key:?}");
        assert_eq!(
            (a.tag_count, &a.checksum),
            (b.tag_count, &b.checksum),
            "{key:?}"
        );
    }

    // The same errors, classified the same way.
    let wrong = "0123456789abcdef0123456789abcdef";
    let gets = [
        (bucket.as_str(), "absent", None, ErrorKind::NotFound),
        (
            bucket.as_str(),
            keys[0],
            Some(wrong),
            ErrorKind::PreconditionFailed,
        ),
        ("no-such-bucket-here", "k", None, ErrorKind::Permanent),
    ];
    for (b, key, if_match, kind) in gets {
        let a = lean
            .get(b, key, None, if_match)
            .await
            .err()
            .expect("lean get fails");
        let s = sdk
            .get(b, key, None, if_match)
            .await
            .err()
            .expect("sdk get fails");
        assert_eq!(a.kind, kind, "{a}");
        assert_eq!(error_view(&a), error_view(&s), "{a} / {s}");
    }
    // A write under a condition the object there fails (moto checks conditions; Garage
    // writes anyway).
    if moto {
        for store in [&lean, &sdk] {
            let options = PutOptions {
                attrs: &ObjectAttrs::default(),
                content_md5: Some(&md5),
                checksum: None,
                condition: &WriteCondition::IfAbsent,
                tagging: None,
                trailer: true,
            };
            let e = store
                .put(&bucket, keys[0], body(&bytes), bytes.len() as u64, options)
                .await
                .expect_err("an existing key fails If-None-Match");
            assert_eq!(e.kind, ErrorKind::PreconditionFailed, "{e}");
        }
    }
}

#[tokio::test]
async fn the_lean_path_and_the_sdk_agree_on_moto() {
    the_lean_path_and_the_sdk_agree(S3Server::moto()).await;
}

#[tokio::test]
async fn the_lean_path_and_the_sdk_agree_on_garage() {
    the_lean_path_and_the_sdk_agree(S3Server::garage()).await;
}

#[tokio::test]
async fn the_lean_path_and_the_sdk_agree_on_rgw() {
    the_lean_path_and_the_sdk_agree(S3Server::rgw()).await;
}

/// Garage checks signatures: a wrong secret is refused on the lean path as through the SDK,
/// with the server's code, as a permanent error, and the secret appears in no message.
#[tokio::test]
async fn a_wrong_secret_is_refused_on_the_lean_path_on_garage() {
    let mut server = S3Server::garage();
    let bucket = unique("lean");
    server.create_bucket(&bucket).await;
    let secret = "0000000000000000000000000000000000000000000000000000000000000000";
    server.secret_key = secret.to_string();
    let url = server.url();
    let lean = s3_store(&server, &url, RequestPath::Lean).await;
    let sdk = s3_store(&server, &url, RequestPath::Sdk).await;
    let a = lean
        .get(&bucket, "k", None, None)
        .await
        .err()
        .expect("refused");
    let s = sdk
        .get(&bucket, "k", None, None)
        .await
        .err()
        .expect("refused");
    assert_eq!(a.kind, ErrorKind::Permanent, "{a}");
    assert_eq!((a.status, &a.code), (s.status, &s.code), "{a} / {s}");
    assert!(!a.to_string().contains(secret), "{a}");
}

/// A private certificate authority written as `ca.pem` in a new temporary directory, and an
/// HTTPS front it signed, in front of `server`.
async fn behind_a_private_ca(server: &S3Server) -> (PrivateCa, TlsFront, TempDir) {
    let ca = PrivateCa::new("storage");
    let dir = TempDir::new("tls");
    ca.write_ca_pem(&dir.path().join("ca.pem"));
    let front = TlsFront::start(&ca, &server.authority())
        .await
        .expect("tls front");
    (ca, front, dir)
}

/// Over HTTPS, with the private CA's certificate in the bundle (`AWS_CA_BUNDLE`'s file), both
/// request paths reach the server and agree, as over plain HTTP.
async fn both_paths_trust_a_private_ca_from_the_bundle(server: S3Server) {
    let (_ca, front, dir) = behind_a_private_ca(&server).await;
    let trust = Trust::with_bundle(&dir.path().join("ca.pem")).expect("the bundle loads");
    the_lean_path_and_the_sdk_agree_at(&server, &front.url(), &trust).await;
    assert!(
        front.accepted() >= 2,
        "both paths went through the HTTPS front"
    );
    assert_eq!(front.refused(), 0, "no handshake failed");
}

#[tokio::test]
async fn both_paths_trust_a_private_ca_from_the_bundle_on_moto() {
    both_paths_trust_a_private_ca_from_the_bundle(S3Server::moto()).await;
}

#[tokio::test]
async fn both_paths_trust_a_private_ca_from_the_bundle_on_garage() {
    both_paths_trust_a_private_ca_from_the_bundle(S3Server::garage()).await;
}

/// Without the CA (the system's roots alone, or a bundle of another authority), every request
/// fails at the handshake: a permanent error that says the certificate is not trusted and
/// what to set, on both paths, for reads, heads and listings alike.
async fn an_untrusted_certificate_is_a_permanent_error_naming_aws_ca_bundle(server: S3Server) {
    let bucket = unique("tls");
    server.create_bucket(&bucket).await;
    let (_ca, front, dir) = behind_a_private_ca(&server).await;
    let other = dir.path().join("other.pem");
    PrivateCa::new("other").write_ca_pem(&other);
    let trusts = [
        Trust::system(),
        Trust::with_bundle(&other).expect("the other bundle loads"),
    ];
    let mut attempts = 0;
    for trust in &trusts {
        for path in [RequestPath::Lean, RequestPath::Sdk] {
            let store = s3_store_trusting(&server, &front.url(), trust, path).await;
            let get = store.get(&bucket, "k", None, None).await.err();
            let head = store.head(&bucket, "k", None).await.err();
            let list = store.list_page(&bucket, "", None, None).await.err();
            for e in [get, head, list] {
                let e = e.expect("an untrusted endpoint is refused");
                attempts += 1;
                assert_eq!(e.kind, ErrorKind::Permanent, "{path:?}: {e}");
                assert!(
                    e.message.contains("not trusted")
                        && e.message.contains("UnknownIssuer")
                        && e.message.contains("AWS_CA_BUNDLE"),
                    "{path:?}: {e}"
                );
            }
        }
    }
    // The front counts a refusal once it reads the client's alert, which may be just after
    // the client has given up.
    wait_until(
        Duration::from_secs(10),
        "every request refused at the front's handshake",
        || async { front.refused() >= attempts },
    )
    .await;
    assert_eq!(front.accepted(), 0, "no handshake completed");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_permanent_error_naming_aws_ca_bundle_on_moto() {
    an_untrusted_certificate_is_a_permanent_error_naming_aws_ca_bundle(S3Server::moto()).await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_permanent_error_naming_aws_ca_bundle_on_garage() {
    an_untrusted_certificate_is_a_permanent_error_naming_aws_ca_bundle(S3Server::garage()).await;
}
