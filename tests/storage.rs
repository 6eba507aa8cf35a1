//! The S3 store against real servers: uploads checked end to end with the source's MD5
//! (Content-MD5) or a streamed CRC32C trailer, and which ETags count as MD5s.

mod harness;

use bytes::Bytes;
use ferry_common::config::Config;
use ferry_common::storage::{
    BodyStream, ErrorKind, ObjectAttrs, ObjectStore, PutOptions, StorageError, Stores, Timeouts,
    WriteCondition,
};
use harness::data::{pattern, put_multipart};
use harness::{S3Server, unique};
use md5::{Digest, Md5};
use std::sync::Arc;

async fn store(server: &S3Server) -> Arc<dyn ObjectStore> {
    let config = Config::from_toml(&format!(
        "[redis]\nurl = \"redis://127.0.0.1:1\"\n\n{}",
        server.endpoint_toml("s3")
    ))
    .expect("config");
    Stores::connect(&config, Timeouts::default())
        .await
        .get("s3")
}

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
    let store = store(&server).await;
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
