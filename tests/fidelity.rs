//! Every preserved header, the user metadata, the storage class and the tags, on every copy
//! path: a streamed PUT, a multipart copy of a single-part object, a multipart copy that keeps
//! the source's parts, CopyObject and UploadPartCopy (same endpoint). An object without any
//! of them (no Content-Type either) gets none. The source's own checksum reaches the
//! destination. On moto and on Garage (which keeps no storage classes or tags).

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::time::Duration;

use aws_sdk_s3::types::ChecksumMode;
use harness::data::{Seed, fetch, put_multipart_seed, seed, tags};
use harness::{Env, Kind, S3Server, free_port, iteration_record, samples, scrape, spawn_ferry};

const MIB: u64 = 1024 * 1024;

/// What the seeds carry besides headers: tags where the store has tagging (as measured), and
/// a storage class where the store keeps classes other than STANDARD (moto's only; RGW's
/// default placement has STANDARD alone, Garage drops them).
#[derive(Clone, Copy)]
struct Extras {
    tags: bool,
    class: bool,
}

fn full(key: &str, body: Vec<u8>, extras: Extras) -> Seed {
    let mut s = Seed::new(key, body);
    s.content_type = Some("application/x-fidelity; charset=utf-8".into());
    s.content_encoding = Some("identity".into());
    s.content_language = Some("fr-CA".into());
    s.content_disposition = Some("attachment; filename=\"report 1.pdf\"".into());
    s.cache_control = Some("private, max-age=17".into());
    s.expires = Some("Thu, 01 Jan 2032 00:00:00 GMT".into());
    s.metadata.insert("owner".into(), "ferry fidelity".into());
    s.metadata.insert("x-odd".into(), "a=b; c".into());
    if extras.class {
        s.storage_class = Some("ONEZONE_IA".into());
    }
    if extras.tags {
        s.tags = Some("team=storage&note=a%20b%2Bc".into());
    }
    s
}

/// The objects every path is tried with: (key, whether it carries headers).
const OBJECTS: [(&str, bool); 5] = [
    ("full/single", true),
    ("bare/single", false),
    ("full/large", true),
    ("bare/large", false),
    ("full/parts", true),
];

async fn fill(env: &Env, bucket: &str, kind: Extras) {
    let client = env.src.client();
    let large = harness::data::pattern(8, 0, 6 * MIB as usize);
    seed(
        &client,
        bucket,
        &[
            full("full/single", b"every header".to_vec(), kind),
            Seed::new("bare/single", "no header at all"),
            full("full/large", large.clone(), kind),
            Seed::new("bare/large", large),
        ],
    )
    .await;
    let parts = full("full/parts", Vec::new(), kind);
    put_multipart_seed(&client, bucket, &parts, &[5 * MIB, 5 * MIB, 4096], 9).await;
}

async fn every_header_and_tag_is_kept_on_every_path(kind: Kind) {
    let env = Env::start_on("fidelity", S3Server::of(kind), S3Server::of(kind));
    let (src, dst) = (env.src.client(), env.dst.client());
    let probe_bucket = harness::unique("caps");
    env.src.create_bucket(&probe_bucket).await;
    let caps = harness::measured(&env.src, &probe_bucket).await;
    let extras = Extras {
        tags: caps.tagging,
        class: kind == Kind::Moto,
    };
    // cross: src -> dst (bytes through the worker); same: src -> src (server-side)
    let (cross_src, cross_dst) = env.bucket_pair().await;
    let (same_src, same_dst) = (harness::unique("ss"), harness::unique("sd"));
    env.src.create_bucket(&same_src).await;
    env.src.create_bucket(&same_dst).await;
    fill(&env, &cross_src, extras).await;
    fill(&env, &same_src, extras).await;
    let mut rules = String::new();
    for (name, sb, dst_endpoint, db) in [
        ("cross", &cross_src, "dst", &cross_dst),
        ("same", &same_src, "src", &same_dst),
    ] {
        rules += &format!(
            "[[rules]]\nname = \"{name}\"\nstop = \"once\"\n\
             multipart_threshold = \"5MiB\"\npart_size = \"5MiB\"\n\
             source = {{ endpoint = \"src\", bucket = \"{sb}\" }}\n\
             destination = {{ endpoint = \"{dst_endpoint}\", bucket = \"{db}\" }}\n\n"
        );
    }
    let config = env.write_config("fidelity.toml", &rules);
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let mut worker = spawn_ferry(
        env.dir.path(),
        "worker",
        &["worker", "--config", &config, "--metrics-listen", &metrics],
    );
    let mut coordinator = spawn_ferry(
        env.dir.path(),
        "coordinator",
        &["coordinator", "--config", &config],
    );
    let status = coordinator
        .wait_timeout(Duration::from_secs(300))
        .expect("the coordinator finished");
    assert!(status.success(), "coordinator exited with {status}");
    for rule in ["cross", "same"] {
        let r = iteration_record(&env.redis, &env.ns, rule, 1).await;
        assert_eq!(
            r.get("copied"),
            Some(&(OBJECTS.len() as u64)),
            "{rule}: {r:?}"
        );
    }

    for (rule, sb, client, db) in [
        ("cross", &cross_src, &dst, &cross_dst),
        ("same", &same_src, &src, &same_dst),
    ] {
        for (key, headers) in OBJECTS {
            let a = fetch(&src, sb, key).await;
            let b = fetch(client, db, key).await;
            assert!(a.body == b.body, "{rule} {key}: bytes differ");
            let names = [
                "Content-Type",
                "Content-Encoding",
                "Content-Language",
                "Content-Disposition",
                "Cache-Control",
                "Expires",
            ];
            for (i, name) in names.iter().enumerate() {
                assert_eq!(a.headers[i], b.headers[i], "{rule} {key}: {name}");
                if headers {
                    assert!(
                        a.headers[i].is_some(),
                        "{rule} {key}: the source lacks {name}"
                    );
                }
            }
            assert_eq!(a.metadata, b.metadata, "{rule} {key}: metadata");
            assert_eq!(
                a.storage_class, b.storage_class,
                "{rule} {key}: storage class"
            );
            if !headers && kind == Kind::Garage {
                assert_eq!(b.headers[0], None, "{rule} {key}: a Content-Type was added");
            }
            if extras.tags {
                assert_eq!(
                    tags(&src, sb, key).await,
                    tags(client, db, key).await,
                    "{rule} {key}: tags"
                );
                if headers {
                    assert_eq!(tags(&src, sb, key).await.len(), 2, "{rule} {key}");
                }
            }
        }
        let (a, b) = (
            fetch(&src, sb, "full/parts").await.etag,
            fetch(client, db, "full/parts").await.etag,
        );
        assert_eq!(a, b, "{rule}: the source's parts give the same ETag");
    }

    // GetObjectTagging, once per tagged object the tags are not copied with: streamed
    // copies (3) and multipart server-side copies (2); CopyObject copies them itself. On a
    // store that drops tags on some write paths, more (reading the source's, and checking
    // the destination's after PutObjectTagging).
    let requests = samples(&scrape(port), "ferry_s3_requests_total");
    let count = |operation: &str| -> f64 {
        requests
            .iter()
            .filter(|(l, _)| l.contains(&format!("operation=\"{operation}\"")))
            .map(|(_, v)| v)
            .sum()
    };
    // (The capability probe's requests count apart.)
    if !caps.tagging {
        assert_eq!(count("GetObjectTagging"), 0.0, "{requests:?}");
        assert_eq!(count("PutObjectTagging"), 0.0, "{requests:?}");
    } else if caps.tags_on_multipart && caps.tags_on_copy {
        assert_eq!(count("GetObjectTagging"), 5.0, "{requests:?}");
    } else {
        assert!(count("PutObjectTagging") > 0.0, "{requests:?}");
    }
    worker.sigterm();
    worker.wait_timeout(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_header_and_tag_is_kept_on_every_path_on_moto() {
    every_header_and_tag_is_kept_on_every_path(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_header_is_kept_on_every_path_and_none_added_on_garage() {
    every_header_and_tag_is_kept_on_every_path(Kind::Garage).await;
}

/// RGW 16 drops the tags of CreateMultipartUpload: multipart copies had none before ferry set
/// them with PutObjectTagging after completing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_header_and_tag_is_kept_on_every_path_on_rgw() {
    every_header_and_tag_is_kept_on_every_path(Kind::Rgw).await;
}

/// An object uploaded with a SHA-256 checksum keeps it: the copy sends the source's value,
/// which the destination verifies against the bytes it receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sources_checksum_reaches_the_destination() {
    let env = Env::start("checksum");
    let (sb, db) = env.bucket_pair().await;
    let src = env.src.client();
    let body = harness::data::pattern(2, 0, 100_000);
    let sum = {
        use sha2::Digest;
        aws_smithy_types::base64::encode(sha2::Sha256::digest(&body))
    };
    src.put_object()
        .bucket(&sb)
        .key("sum/sha256")
        .checksum_sha256(&sum)
        .body(body.into())
        .send()
        .await
        .expect("put with a checksum");
    let config = env.write_config(
        "checksum.toml",
        &harness::rule_toml("sum", &sb, &db, "stop = \"once\""),
    );
    env.run_to_completion(&config, &[], Duration::from_secs(120));
    let head = |client: aws_sdk_s3::Client, bucket: String| async move {
        client
            .head_object()
            .bucket(bucket)
            .key("sum/sha256")
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .expect("head")
            .checksum_sha256()
            .map(str::to_string)
    };
    let at_source = head(src, sb).await;
    assert_eq!(at_source, Some(sum), "the source keeps its SHA-256");
    assert_eq!(head(env.dst.client(), db).await, at_source);
}
