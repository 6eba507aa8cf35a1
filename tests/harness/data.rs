//! Seeding source buckets and comparing buckets key by key.

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::{ByteStream, DateTime, DateTimeFormat};
use aws_sdk_s3::types::StorageClass;
use futures::{StreamExt, stream};

use super::Kind;

/// One object to seed.
#[derive(Clone, Debug, Default)]
pub struct Seed {
    pub key: String,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_language: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub storage_class: Option<String>,
    /// Tags, URL-encoded (`k=v&k2=v2`).
    pub tags: Option<String>,
}

impl Seed {
    pub fn new(key: impl Into<String>, body: impl Into<Vec<u8>>) -> Seed {
        Seed {
            key: key.into(),
            body: body.into(),
            ..Seed::default()
        }
    }
}

/// The 2,500-object dataset plus every awkward case the foundation issue lists.
/// Storage classes are only set where the server keeps them (moto).
pub fn foundation_dataset(kind: Kind, bulk: usize) -> Vec<Seed> {
    let mut seeds: Vec<Seed> = (0..bulk)
        .map(|i| {
            let mut s = Seed::new(
                format!("bulk/{:02}/obj-{i:05}.txt", i % 20),
                format!("object {i};").repeat(i % 37),
            );
            if i % 50 == 0 {
                s.metadata.insert("index".into(), i.to_string());
                s.content_type = Some("text/plain; charset=utf-8".into());
            }
            s
        })
        .collect();
    seeds.push(Seed::new("empty/zero-bytes", Vec::new()));
    for key in [
        "odd/ünïcödé/日本語.txt",
        "odd/with space.txt",
        "odd/plus+sign",
        "odd/percent%20literal",
        "odd/hash#tag",
        "odd/mixed ü +%# ~!$&'()*,;=@.bin",
    ] {
        seeds.push(Seed::new(key, format!("content of {key}")));
    }
    seeds.push(Seed::new(
        format!("long/{}", "k".repeat(995)),
        "a key of about 1000 bytes",
    ));
    seeds.push(Seed::new("dirs/", Vec::new()));
    seeds.push(Seed::new("dirs/nested/", Vec::new()));
    seeds.push(Seed::new("dirs/with-body/", "a folder marker with a body"));
    let mut full = Seed::new("headers/full.json", "{\"every\": \"header\"}");
    full.content_type = Some("application/json".into());
    full.content_encoding = Some("identity".into());
    full.content_language = Some("de-CH".into());
    full.content_disposition = Some("attachment; filename=\"a b.json\"".into());
    full.cache_control = Some("no-cache, max-age=0".into());
    full.expires = Some("Wed, 21 Oct 2026 07:28:00 GMT".into());
    full.metadata.insert("color".into(), "blue".into());
    full.metadata.insert("owner".into(), "ferry test".into());
    full.metadata
        .insert("x-tricky-name".into(), "v=1; w=2".into());
    seeds.push(full);
    if kind == Kind::Moto {
        let mut onezone = Seed::new("classes/onezone", "kept in ONEZONE_IA");
        onezone.storage_class = Some("ONEZONE_IA".into());
        seeds.push(onezone);
        let mut rr = Seed::new("classes/reduced", "kept in REDUCED_REDUNDANCY");
        rr.storage_class = Some("REDUCED_REDUNDANCY".into());
        seeds.push(rr);
    }
    seeds
}

/// Uploads `seeds` with 32 requests in flight.
pub async fn seed(client: &Client, bucket: &str, seeds: &[Seed]) {
    stream::iter(seeds.iter().cloned())
        .for_each_concurrent(32, |s| {
            let client = client.clone();
            let bucket = bucket.to_string();
            async move {
                #[allow(deprecated)]
                let mut req =
                    client
                        .put_object()
                        .bucket(&bucket)
                        .key(&s.key)
                        .body(ByteStream::from(s.body.clone()))
                        .set_content_type(s.content_type.clone())
                        .set_content_encoding(s.content_encoding.clone())
                        .set_content_language(s.content_language.clone())
                        .set_content_disposition(s.content_disposition.clone())
                        .set_cache_control(s.cache_control.clone())
                        .set_expires(s.expires.as_deref().map(|e| {
                            DateTime::from_str(e, DateTimeFormat::HttpDate).expect("date")
                        }))
                        .set_storage_class(s.storage_class.as_deref().map(StorageClass::from))
                        .set_tagging(s.tags.clone());
                for (k, v) in &s.metadata {
                    req = req.metadata(k, v);
                }
                let mut op = req.customize();
                if s.content_type.is_none() {
                    // The SDK adds application/octet-stream by default: seed no Content-Type
                    // at all, as other clients can.
                    op = op.mutate_request(|r| {
                        r.headers_mut().remove("content-type");
                    });
                }
                op.send().await.unwrap_or_else(|e| {
                    panic!(
                        "seeding {}: {}",
                        s.key,
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    )
                });
            }
        })
        .await;
}

/// Decodes a key listed with `encoding-type=url`.
pub fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii escape");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("utf-8 key")
}

/// The keys of a bucket a user replicates, in listing order: every key but those of the
/// capability probe (`.ferry-probe/`), which a worker writes and deletes within a second of
/// its first write to a bucket (`tests/probe.rs` checks they are deleted).
pub async fn list_keys(client: &Client, bucket: &str) -> Vec<(String, String, i64)> {
    let mut keys = list_every_key(client, bucket).await;
    keys.retain(|(k, _, _)| !k.starts_with(".ferry-probe/"));
    keys
}

/// Every key of a bucket, in listing order (listed URL-encoded, so any key S3 allows).
pub async fn list_every_key(client: &Client, bucket: &str) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .set_continuation_token(token)
            .send()
            .await
            .expect("listing");
        for o in page.contents() {
            out.push((
                url_decode(o.key().unwrap_or_default()),
                o.e_tag().unwrap_or_default().to_string(),
                o.size().unwrap_or(0),
            ));
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return out,
        }
    }
}

/// What a GET shows of one object: bytes, preserved headers, metadata, class.
#[derive(Debug, PartialEq, Eq)]
pub struct Fetched {
    pub body: Vec<u8>,
    pub etag: String,
    pub headers: [Option<String>; 6],
    pub metadata: BTreeMap<String, String>,
    pub storage_class: Option<String>,
}

pub async fn fetch(client: &Client, bucket: &str, key: &str) -> Fetched {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "GET {bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        });
    let headers = [
        out.content_type().map(str::to_string),
        out.content_encoding().map(str::to_string),
        out.content_language().map(str::to_string),
        out.content_disposition().map(str::to_string),
        out.cache_control().map(str::to_string),
        out.expires_string().map(str::to_string),
    ];
    let metadata = out
        .metadata()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let storage_class = out
        .storage_class()
        .map(|c| c.as_str().to_string())
        .filter(|c| c != "STANDARD");
    let etag = out.e_tag().unwrap_or_default().to_string();
    let body = out
        .body
        .collect()
        .await
        .expect("reading body")
        .into_bytes()
        .to_vec();
    Fetched {
        body,
        etag,
        headers,
        metadata,
        storage_class,
    }
}

/// Asserts the destination holds exactly the source's keys, each with the same bytes,
/// headers and metadata; the storage class is `class_override` when given, else the source's.
/// Returns the number of objects compared.
pub async fn assert_replica(
    src: &Client,
    src_bucket: &str,
    dst: &Client,
    dst_bucket: &str,
    class_override: Option<&str>,
) -> usize {
    let src_keys = list_keys(src, src_bucket).await;
    let dst_keys = list_keys(dst, dst_bucket).await;
    let names = |v: &[(String, String, i64)]| v.iter().map(|k| k.0.clone()).collect::<Vec<_>>();
    let (s, d) = (names(&src_keys), names(&dst_keys));
    if s != d {
        let missing: Vec<_> = s.iter().filter(|k| !d.contains(k)).take(10).collect();
        let extra: Vec<_> = d.iter().filter(|k| !s.contains(k)).take(10).collect();
        panic!(
            "key sets differ: source {} keys, destination {} keys; missing e.g. {missing:?}; extra e.g. {extra:?}",
            s.len(),
            d.len()
        );
    }
    let mismatches: Vec<String> = stream::iter(s.clone())
        .map(|key| async move {
            let a = fetch(src, src_bucket, &key).await;
            let b = fetch(dst, dst_bucket, &key).await;
            let expected_class = match class_override {
                Some(c) => Some(c.to_string()),
                None => a.storage_class.clone(),
            };
            let mut problems = Vec::new();
            if a.body != b.body {
                problems.push("bytes");
            }
            if a.etag != b.etag {
                problems.push("etag");
            }
            // A store that answers every object with a Content-Type (Ceph RGW, as AWS S3 does)
            // gives an object written without one its default: nothing a copy can send means
            // "no Content-Type".
            let mut headers = b.headers.clone();
            if a.headers[0].is_none() && headers[0].as_deref() == Some("binary/octet-stream") {
                headers[0] = None;
            }
            if a.headers != headers {
                problems.push("headers");
            }
            if a.metadata != b.metadata {
                problems.push("metadata");
            }
            if b.storage_class != expected_class {
                problems.push("storage class");
            }
            (!problems.is_empty()).then(|| {
                format!(
                    "{key}: {problems:?} src={:?} dst={:?}",
                    (&a.headers, &a.metadata, &a.storage_class),
                    (&b.headers, &b.metadata, &b.storage_class)
                )
            })
        })
        .buffer_unordered(32)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    assert!(
        mismatches.is_empty(),
        "{} objects differ, e.g.: {:#?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    s.len()
}

/// Asserts both buckets hold the same keys with the same bytes, headers and metadata, ETags
/// aside (a copy in parts of a single-part object, or a store whose ETags are not MD5s, has
/// other ETags). Returns the number of objects compared.
pub async fn assert_same_objects(src: &Client, sb: &str, dst: &Client, db: &str) -> usize {
    let keys: Vec<String> = list_keys(src, sb).await.into_iter().map(|k| k.0).collect();
    let other: Vec<String> = list_keys(dst, db).await.into_iter().map(|k| k.0).collect();
    assert_eq!(keys, other, "key sets differ");
    for key in &keys {
        let (a, b) = (fetch(src, sb, key).await, fetch(dst, db, key).await);
        assert!(a.body == b.body, "{key}: bytes differ");
        assert_eq!(a.headers, b.headers, "{key}");
        assert_eq!(a.metadata, b.metadata, "{key}");
    }
    keys.len()
}

/// `len` reproducible pseudo-random bytes of stream `seed`, from byte `offset` on: the
/// benchmark's generator, which no server can deduplicate or compress away.
pub use ferry_bench::pattern::pattern;

/// Uploads `key` as a multipart object with parts of `part_lens` bytes of [`pattern`]
/// `seed`, generating one part at a time, with a content type and one metadata entry.
/// Returns the ETag (unquoted).
pub async fn put_multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    part_lens: &[u64],
    seed: u64,
) -> String {
    put_multipart_with(client, bucket, key, part_lens, seed, None).await
}

/// [`put_multipart`] with tags (URL-encoded) on the upload.
pub async fn put_multipart_with(
    client: &Client,
    bucket: &str,
    key: &str,
    part_lens: &[u64],
    seed: u64,
    tags: Option<&str>,
) -> String {
    let upload = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type("application/x-test")
        .metadata("origin", "multipart-test")
        .set_tagging(tags.map(str::to_string))
        .send()
        .await
        .expect("create multipart upload");
    let id = upload.upload_id().expect("upload id").to_string();
    finish_multipart(client, bucket, key, &id, part_lens, seed).await
}

async fn finish_multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    id: &str,
    part_lens: &[u64],
    seed: u64,
) -> String {
    let mut parts = Vec::new();
    let mut offset = 0;
    for (i, len) in part_lens.iter().enumerate() {
        let number = i as i32 + 1;
        let body = pattern(seed, offset, *len as usize);
        offset += len;
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "upload part: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        parts.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(number)
                .e_tag(out.e_tag().unwrap_or_default())
                .build(),
        );
    }
    let done = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    match done {
        // Ceph RGW 16 answers an empty ETag: HEAD tells it.
        Ok(done)
            if done
                .e_tag()
                .unwrap_or_default()
                .trim_matches('"')
                .is_empty() =>
        {
            head(client, bucket, key).await.0
        }
        Ok(done) => done
            .e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string(),
        // moto answers with a root element the SDK does not expect, after completing.
        Err(aws_sdk_s3::error::SdkError::ServiceError(e)) if e.raw().status().as_u16() == 200 => {
            head(client, bucket, key).await.0
        }
        Err(e) => panic!(
            "complete multipart upload: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        ),
    }
}

/// Uploads `s.key` in parts of `part_lens` bytes of [`pattern`] `seed`, with every header,
/// metadata entry, storage class and tag of `s` (its body is ignored). Returns the ETag.
pub async fn put_multipart_seed(
    client: &Client,
    bucket: &str,
    s: &Seed,
    part_lens: &[u64],
    seed: u64,
) -> String {
    #[allow(deprecated)]
    let req = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(&s.key)
        .set_content_type(s.content_type.clone())
        .set_content_encoding(s.content_encoding.clone())
        .set_content_language(s.content_language.clone())
        .set_content_disposition(s.content_disposition.clone())
        .set_cache_control(s.cache_control.clone())
        .set_expires(
            s.expires
                .as_deref()
                .map(|e| DateTime::from_str(e, DateTimeFormat::HttpDate).expect("date")),
        )
        .set_storage_class(s.storage_class.as_deref().map(StorageClass::from))
        .set_tagging(s.tags.clone())
        .set_metadata(Some(s.metadata.clone().into_iter().collect()));
    let mut op = req.customize();
    if s.content_type.is_none() {
        op = op.mutate_request(|r| {
            r.headers_mut().remove("content-type");
        });
    }
    let upload = op.send().await.expect("create multipart upload");
    let id = upload.upload_id().expect("upload id").to_string();
    let etag = finish_multipart(client, bucket, &s.key, &id, part_lens, seed).await;
    // Some stores (Ceph RGW 16) drop the tags of CreateMultipartUpload: set them again, so
    // the source has them whatever the store.
    if let Some(tagging) = &s.tags
        && tags(client, bucket, &s.key).await.is_empty()
    {
        let set: Vec<aws_sdk_s3::types::Tag> = tagging
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                aws_sdk_s3::types::Tag::builder()
                    .key(url_decode(k))
                    .value(url_decode(v))
                    .build()
                    .expect("tag")
            })
            .collect();
        client
            .put_object_tagging()
            .bucket(bucket)
            .key(&s.key)
            .tagging(
                aws_sdk_s3::types::Tagging::builder()
                    .set_tag_set(Some(set))
                    .build()
                    .expect("tagging"),
            )
            .send()
            .await
            .expect("PutObjectTagging");
    }
    etag
}

/// `n` parts of `len` bytes followed by a `tail` (skipped when 0).
pub fn equal_parts(n: usize, len: u64, tail: u64) -> Vec<u64> {
    let mut v = vec![len; n];
    if tail > 0 {
        v.push(tail);
    }
    v
}

/// Writes one object with a plain PUT.
pub async fn put(client: &Client, bucket: &str, key: &str, body: &[u8]) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PUT {bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        });
}

/// The bytes of one object.
pub async fn bytes(client: &Client, bucket: &str, key: &str) -> Vec<u8> {
    fetch(client, bucket, key).await.body
}

/// ETag (unquoted) and size of one object.
pub async fn head(client: &Client, bucket: &str, key: &str) -> (String, i64) {
    let out = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "HEAD {bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        });
    (
        out.e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string(),
        out.content_length().unwrap_or(0),
    )
}

/// The tags of one object, sorted.
pub async fn tags(client: &Client, bucket: &str, key: &str) -> Vec<(String, String)> {
    let out = client
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await;
    // Ceph RGW 16 answers an object without tags with an empty 200 the SDK cannot read.
    if let Err(aws_sdk_s3::error::SdkError::ServiceError(e)) = &out
        && e.raw().status().as_u16() == 200
        && e.raw().body().bytes().is_some_and(<[u8]>::is_empty)
    {
        return Vec::new();
    }
    let out = out.unwrap_or_else(|e| {
        panic!(
            "GetObjectTagging {bucket}/{key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        )
    });
    let mut tags: Vec<_> = out
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    tags.sort();
    tags
}

/// The multipart uploads open in a bucket.
/// The multipart uploads open in a bucket, by key, but the capability probe's: a process
/// killed mid-probe leaves its upload under `.ferry-probe/` for the next probe to abort after
/// an hour (`tests/probe.rs` checks that a probe that finishes leaves none).
pub async fn open_uploads(client: &Client, bucket: &str) -> Vec<String> {
    let mut keys = every_open_upload(client, bucket).await;
    keys.retain(|k| !k.starts_with(".ferry-probe/"));
    keys
}

/// Every multipart upload open in a bucket, by key.
pub async fn every_open_upload(client: &Client, bucket: &str) -> Vec<String> {
    let out = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("listing multipart uploads");
    out.uploads()
        .iter()
        .map(|u| u.key().unwrap_or_default().to_string())
        .collect()
}
