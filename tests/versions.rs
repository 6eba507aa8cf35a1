//! `versions = "all"` (`sync --all-versions`) on moto and Ceph RGW, which keep versions:
//! every version and delete marker of a key is copied oldest first, so that the destination's
//! versions of the key read, newest first, as the source's do (bytes, headers, metadata and
//! tags of each); an iteration after new writes copies only those; a copy killed in the
//! middle of a key's versions goes on without writing any version twice; and the settings
//! that cannot work are refused with exit 2 before anything is copied.
//!
//! The destination's order is read from the raw ListObjectVersions answer, in document
//! order, through a presigned request: not through ferry's own listing code, and not through
//! the SDK, which splits versions from delete markers and so loses their order. moto lists a
//! key's versions, then its markers, with whole-second times, so there the order of versions
//! is checked, and the markers' count and the key's current state; RGW shows the whole
//! interleaving. On moto the source's writes around a delete are a second apart, so that
//! ferry can read their order from the times.

#![allow(clippy::too_many_lines)]

mod harness;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use ferry_testkit::proxy::{Action, FaultProxy, Match, Rule};
use ferry_testkit::servers::{Kind, S3Server, TempDir, wait_until};
use harness::{ferry_output, spawn_ferry, unique};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two servers of one kind, the destination behind a proxy that can slow it down.
struct Pair {
    kind: Kind,
    src: S3Server,
    dst: S3Server,
    dst_proxy: FaultProxy,
    dir: TempDir,
    config: String,
    sb: String,
    db: String,
}

/// One write the test makes to a key: a version with its bytes and headers, or a delete.
#[derive(Clone)]
enum Op {
    Put {
        body: Vec<u8>,
        content_type: String,
        metadata: HashMap<String, String>,
        tags: Option<String>,
    },
    Delete,
}

/// One entry of a key's history, oldest first: its version id and whether it is a marker.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    version_id: String,
    marker: bool,
    etag: String,
}

impl Pair {
    async fn start(kind: Kind) -> Pair {
        let (src, dst) = (S3Server::of(kind), S3Server::of(kind));
        let dst_proxy = FaultProxy::start(&dst.authority()).await.expect("proxy");
        let dir = TempDir::new("versions");
        let config = dir.path().join("ferry.toml");
        std::fs::write(
            &config,
            src.endpoint_toml("src") + &dst.endpoint_toml_at("dst", &dst_proxy.url()),
        )
        .unwrap();
        let (sb, db) = (unique("s"), unique("d"));
        src.create_bucket(&sb).await;
        dst.create_bucket(&db).await;
        Pair {
            kind,
            config: config.to_str().unwrap().to_string(),
            src,
            dst,
            dst_proxy,
            dir,
            sb,
            db,
        }
    }

    async fn versioned(kind: Kind) -> Pair {
        let pair = Pair::start(kind).await;
        enable_versioning(&pair.src.client(), &pair.sb).await;
        enable_versioning(&pair.dst.client(), &pair.db).await;
        pair
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let state = self.dir.path().join("state");
        let mut args: Vec<String> = [
            "sync",
            &format!("src:{}", self.sb),
            &format!("dst:{}", self.db),
            "--config",
            &self.config,
            "--state-dir",
            state.to_str().unwrap(),
            "--no-progress",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `ferry sync --all-versions --json EXTRA`, which must succeed; its summary.
    fn sync(&self, extra: &[&str]) -> serde_json::Value {
        let mut all = vec!["--all-versions", "--json"];
        all.extend_from_slice(extra);
        let args = self.args(&all);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = ferry_output(&argv);
        assert_eq!(code, 0, "sync failed:\n{stdout}\n{stderr}");
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("no JSON summary ({e}):\n{stdout}\n{stderr}"))
    }
}

async fn enable_versioning(client: &aws_sdk_s3::Client, bucket: &str) {
    client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("enabling versioning");
}

fn put(i: usize, size: usize) -> Op {
    Op::Put {
        body: (0..size).map(|b| (b * 31 + i * 7) as u8).collect(),
        content_type: format!("text/v{i}"),
        metadata: [("rev".to_string(), format!("r{i}"))].into(),
        tags: Some(format!("rev=r{i}")),
    }
}

/// Makes the writes `ops` to `key` of the pair's source, in order; returns its history as
/// the source answered each write, oldest first.
async fn write(pair: &Pair, key: &str, ops: &[Op]) -> Vec<Entry> {
    let (client, bucket) = (&pair.src.client(), &pair.sb);
    // moto's times have whole seconds, and it lists markers apart from versions.
    let gap = || async {
        if pair.kind == Kind::Moto {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    };
    let mut history = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if matches!(op, Op::Delete) || (i > 0 && matches!(ops[i - 1], Op::Delete)) {
            gap().await;
        }
        match op {
            Op::Put {
                body,
                content_type,
                metadata,
                tags,
            } => {
                let out = client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(body.clone()))
                    .content_type(content_type)
                    .set_metadata(Some(metadata.clone()))
                    .set_tagging(tags.clone())
                    .send()
                    .await
                    .expect("put");
                history.push(Entry {
                    version_id: out.version_id().unwrap_or("null").to_string(),
                    marker: false,
                    etag: out
                        .e_tag()
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string(),
                });
            }
            Op::Delete => {
                let out = client
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .expect("delete");
                history.push(Entry {
                    version_id: out.version_id().expect("a marker's version id").to_string(),
                    marker: true,
                    etag: String::new(),
                });
            }
        }
    }
    history
}

/// The versions and delete markers of `key`, oldest first, read from the raw
/// ListObjectVersions answer in document order (newest first there).
async fn history(server: &S3Server, bucket: &str, key: &str) -> Vec<Entry> {
    let mut newest_first = Vec::new();
    let mut marker: Option<(String, String)> = None;
    loop {
        let mut req = server
            .client()
            .list_object_versions()
            .bucket(bucket)
            .prefix(key);
        if let Some((k, v)) = &marker {
            req = req.key_marker(k).version_id_marker(v);
        }
        let presigned = req
            .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
            .await
            .expect("presigning");
        let body = http_get(presigned.uri()).await;
        for (tag, element) in elements(&body, &["Version", "DeleteMarker"]) {
            if text(&element, "Key") != key {
                continue;
            }
            newest_first.push(Entry {
                version_id: text(&element, "VersionId"),
                marker: tag == "DeleteMarker",
                etag: text(&element, "ETag")
                    .replace("&quot;", "")
                    .trim_matches('"')
                    .to_string(),
            });
        }
        if text(&body, "IsTruncated") != "true" {
            break;
        }
        marker = Some((
            text(&body, "NextKeyMarker"),
            text(&body, "NextVersionIdMarker"),
        ));
    }
    newest_first.reverse();
    newest_first
}

/// A plain HTTP/1.1 GET of `uri` (http only), its body.
async fn http_get(uri: &str) -> String {
    let rest = uri.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connecting");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "listing failed:\n{answer}"
    );
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// The elements named one of `tags`, in document order, with their inner text.
fn elements(xml: &str, tags: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < xml.len() {
        let next = tags
            .iter()
            .filter_map(|t| xml[at..].find(&format!("<{t}>")).map(|i| (at + i, *t)))
            .min();
        let Some((start, tag)) = next else {
            break;
        };
        let open = start + tag.len() + 2;
        let close = xml[open..]
            .find(&format!("</{tag}>"))
            .map(|i| open + i)
            .expect("a closed element");
        out.push((tag.to_string(), xml[open..close].to_string()));
        at = close;
    }
    out
}

/// The text of the first element `tag` in `xml` (empty when there is none).
fn text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    xml.find(&open)
        .and_then(|i| {
            let from = i + open.len();
            xml[from..]
                .find(&format!("</{tag}>"))
                .map(|j| xml[from..from + j].to_string())
        })
        .unwrap_or_default()
}

/// Asserts that `key`'s destination history reads as its source history, entry by entry:
/// a marker for a marker, and for a version the same bytes, type, metadata and tags.
async fn assert_same_history(pair: &Pair, key: &str, ops: &[Op], source: &[Entry]) {
    let copied = history(&pair.dst, &pair.db, key).await;
    let listed = history(&pair.src, &pair.sb, key).await;
    let kinds = |h: &[Entry]| h.iter().map(|e| e.marker).collect::<Vec<_>>();
    let versions =
        |h: &[Entry]| -> Vec<Entry> { h.iter().filter(|e| !e.marker).cloned().collect() };
    let markers = |h: &[Entry]| h.iter().filter(|e| e.marker).count();
    if pair.kind == Kind::Moto {
        // Versions in order, then markers: the order of versions and the count of markers.
        assert_eq!(
            versions(&listed),
            versions(source),
            "the source's own listing of {key}"
        );
        assert_eq!(markers(&listed), markers(source), "{key}");
        assert_eq!(
            versions(&copied)
                .iter()
                .map(|e| &e.etag)
                .collect::<Vec<_>>(),
            versions(source).iter().map(|e| &e.etag).collect::<Vec<_>>(),
            "{key}: versions in another order, or not each once:\nsource {source:?}\ncopied {copied:?}"
        );
        assert_eq!(markers(&copied), markers(source), "{key}: delete markers");
        // And the key reads as the source's does now.
        let current = pair
            .dst
            .client()
            .head_object()
            .bucket(&pair.db)
            .key(key)
            .send()
            .await;
        match source.last() {
            Some(e) if e.marker => assert!(current.is_err(), "{key} is deleted at the source"),
            Some(e) => assert_eq!(
                current
                    .expect("the current version")
                    .e_tag()
                    .map(|t| t.trim_matches('"').to_string()),
                Some(e.etag.clone()),
                "{key}: the current version"
            ),
            None => {}
        }
    } else {
        assert_eq!(listed, source, "the source's own listing of {key}");
        assert_eq!(
            kinds(&copied),
            kinds(source),
            "{key}: versions and delete markers in another order, or not each once:\n\
             source {source:?}\ncopied {copied:?}"
        );
    }
    let dst = pair.dst.client();
    let puts = ops.iter().filter(|op| matches!(op, Op::Put { .. }));
    for ((op, copy), original) in puts.zip(versions(&copied)).zip(versions(source)) {
        let Op::Put {
            body,
            content_type,
            metadata,
            tags,
        } = op
        else {
            unreachable!("only writes");
        };
        assert_eq!(copy.etag, original.etag, "{key}: ETag of a copied version");
        let got = dst
            .get_object()
            .bucket(&pair.db)
            .key(key)
            .version_id(&copy.version_id)
            .send()
            .await
            .expect("reading a copied version");
        assert_eq!(got.content_type(), Some(content_type.as_str()), "{key}");
        assert_eq!(
            got.metadata().cloned().unwrap_or_default(),
            *metadata,
            "{key}"
        );
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(bytes.as_ref(), body.as_slice(), "{key}: bytes of a version");
        let tagging = dst
            .get_object_tagging()
            .bucket(&pair.db)
            .key(key)
            .version_id(&copy.version_id)
            .send()
            .await
            .expect("reading tags");
        let tag_text: Vec<String> = tagging
            .tag_set()
            .iter()
            .map(|t| format!("{}={}", t.key(), t.value()))
            .collect();
        assert_eq!(
            Some(tag_text.join("&")),
            tags.clone(),
            "{key}: tags of a version"
        );
    }
}

async fn versions_are_copied_in_order_then_only_new_ones(kind: Kind) {
    let pair = Pair::versioned(kind).await;
    // 5 versions and 2 delete markers, interleaved.
    let mut doc = vec![
        put(1, 100),
        put(2, 200),
        Op::Delete,
        put(3, 300),
        put(4, 0),
        Op::Delete,
        put(5, 500),
    ];
    let mut doc_history = write(&pair, "doc", &doc).await;
    let plain = vec![put(6, 60), put(7, 70)];
    let plain_history = write(&pair, "a/plain", &plain).await;
    // A key whose current version is a delete marker is copied all the same.
    let gone = vec![put(8, 80), Op::Delete];
    let gone_history = write(&pair, "gone", &gone).await;

    let first = pair.sync(&[]);
    assert_eq!(first["copied"], 3, "one task per key: {first}");
    assert_eq!(first["failed"], 0, "{first}");
    assert_same_history(&pair, "doc", &doc, &doc_history).await;
    assert_same_history(&pair, "a/plain", &plain, &plain_history).await;
    assert_same_history(&pair, "gone", &gone, &gone_history).await;

    // New writes to one key, and a new key: only those are copied.
    let more = vec![put(9, 90), Op::Delete, put(10, 100)];
    doc_history.extend(write(&pair, "doc", &more).await);
    doc.extend(more);
    let fresh = vec![put(11, 11)];
    let fresh_history = write(&pair, "fresh", &fresh).await;
    let second = pair.sync(&[]);
    assert_eq!(
        second["copied"], 2,
        "the two keys with new versions: {second}"
    );
    assert_eq!(
        second["skipped"], 2,
        "the keys with no new version: {second}"
    );
    assert_same_history(&pair, "doc", &doc, &doc_history).await;
    assert_same_history(&pair, "fresh", &fresh, &fresh_history).await;
    assert_same_history(&pair, "a/plain", &plain, &plain_history).await;

    // Nothing new: nothing is written.
    let third = pair.sync(&[]);
    assert_eq!(third["copied"], 0, "{third}");
    assert_eq!(history(&pair.dst, &pair.db, "doc").await.len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_are_copied_in_order_then_only_new_ones_on_moto() {
    versions_are_copied_in_order_then_only_new_ones(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_are_copied_in_order_then_only_new_ones_on_rgw() {
    versions_are_copied_in_order_then_only_new_ones(Kind::Rgw).await;
}

async fn killed_in_the_middle_of_a_keys_versions(kind: Kind) {
    let pair = Pair::versioned(kind).await;
    let ops: Vec<Op> = (0..30)
        .map(|i| {
            if i % 7 == 6 {
                Op::Delete
            } else {
                put(i, 256 << 10)
            }
        })
        .collect();
    let source = write(&pair, "many", &ops).await;
    // Slow the destination down so the kill lands among the key's versions.
    pair.dst_proxy.set_rules(vec![Rule::new(
        "slow",
        Match::default(),
        Action::Throttle {
            bytes_per_sec: 1 << 20,
        },
    )]);
    let args = pair.args(&["--all-versions"]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut doomed = spawn_ferry(pair.dir.path(), "doomed", &argv);
    wait_until(Duration::from_secs(90), "a few versions copied", || async {
        history(&pair.dst, &pair.db, "many").await.len() >= 4
    })
    .await;
    doomed.kill9();
    pair.dst_proxy.clear();
    let before = history(&pair.dst, &pair.db, "many").await.len();
    assert!(
        before < ops.len(),
        "the kill came too late: {before} copied"
    );

    let summary = pair.sync(&[]);
    assert_eq!(summary["failed"], 0, "{summary}");
    // Each version once, in order: a version written twice would make the history longer.
    assert_same_history(&pair, "many", &ops, &source).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_a_keys_versions_on_moto() {
    killed_in_the_middle_of_a_keys_versions(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_a_keys_versions_on_rgw() {
    killed_in_the_middle_of_a_keys_versions(Kind::Rgw).await;
}

/// `ferry sync ARGS`: its exit code and stderr.
fn refused(pair: &Pair, extra: &[&str]) -> (i32, String) {
    let args = pair.args(extra);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = ferry_output(&argv);
    (code, stderr)
}

async fn a_destination_without_versioning_is_refused(kind: Kind) {
    let pair = Pair::start(kind).await;
    let versioning = kind != Kind::Garage;
    if versioning {
        enable_versioning(&pair.src.client(), &pair.sb).await;
    }
    write(&pair, "k", &[put(1, 10)]).await;
    let (code, stderr) = refused(&pair, &["--all-versions"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--all-versions") && stderr.contains(&pair.db),
        "names the flag and the bucket: {stderr}"
    );
    assert!(stderr.contains("versions"), "says why: {stderr}");
    let listed = pair
        .dst
        .client()
        .list_objects_v2()
        .bucket(&pair.db)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "nothing was copied");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_without_versioning_is_refused_on_moto() {
    a_destination_without_versioning_is_refused(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_without_versioning_is_refused_on_rgw() {
    a_destination_without_versioning_is_refused(Kind::Rgw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_without_versioning_is_refused_on_garage() {
    a_destination_without_versioning_is_refused(Kind::Garage).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_with_all_versions_is_refused() {
    let pair = Pair::versioned(Kind::Moto).await;
    let (code, stderr) = refused(&pair, &["--all-versions", "--delete"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--delete") && stderr.contains("never"),
        "names the flag and why: {stderr}"
    );
    // The same in a config file, under the rule's keys.
    let file = pair.dir.path().join("rules.toml");
    let rule = format!(
        "[[rules]]\nname = \"r\"\nsource = {{ endpoint = \"src\", bucket = \"{}\" }}\n\
         destination = {{ endpoint = \"dst\", bucket = \"{}\" }}\n",
        pair.sb, pair.db
    );
    let endpoints = std::fs::read_to_string(&pair.config).unwrap();
    for (extra, named) in [
        ("versions = \"all\"\ndelete = true\n", "delete"),
        ("version_marker = true\n", "version_marker"),
        ("versions = \"every\"\n", "versions"),
    ] {
        std::fs::write(&file, format!("{endpoints}{rule}{extra}")).unwrap();
        let (code, stdout, stderr) =
            ferry_output(&["validate", "--config", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{extra}: {stdout}{stderr}");
        assert!(
            format!("{stdout}{stderr}").contains(&format!("rules[0] (r).{named}:")),
            "{extra}: names rules[0] (r).{named}: {stdout}{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn version_marker_names_the_source_version_on_each_copy() {
    let pair = Pair::versioned(Kind::Moto).await;
    let file = pair.dir.path().join("marked.toml");
    let endpoints = std::fs::read_to_string(&pair.config).unwrap();
    std::fs::write(
        &file,
        format!(
            "{endpoints}[[rules]]\nname = \"marked\"\n\
             source = {{ endpoint = \"src\", bucket = \"{}\" }}\n\
             destination = {{ endpoint = \"dst\", bucket = \"{}\" }}\n\
             versions = \"all\"\nversion_marker = true\nstop = \"once\"\n",
            pair.sb, pair.db
        ),
    )
    .unwrap();
    let source = write(&pair, "k", &[put(1, 10), put(2, 20)]).await;
    let state = pair.dir.path().join("run-state");
    let (code, stdout, stderr) = ferry_output(&[
        "run",
        "--config",
        file.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let copied = history(&pair.dst, &pair.db, "k").await;
    assert_eq!(copied.len(), 2);
    for (copy, original) in copied.iter().zip(&source) {
        let head = pair
            .dst
            .client()
            .head_object()
            .bucket(&pair.db)
            .key("k")
            .version_id(&copy.version_id)
            .send()
            .await
            .unwrap();
        let meta = head.metadata().cloned().unwrap_or_default();
        assert_eq!(
            meta.get("ferry-source-version-id"),
            Some(&original.version_id),
            "{meta:?}"
        );
        assert!(
            meta.get("ferry-source-last-modified")
                .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
            "{meta:?}"
        );
    }
}

/// The bodies of every object in `bucket`, by key.
async fn objects(server: &S3Server, bucket: &str) -> HashMap<String, Vec<u8>> {
    let client = server.client();
    let listed = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .expect("listing");
    let mut out = HashMap::new();
    for object in listed.contents() {
        let key = object.key().unwrap_or_default().to_string();
        let got = client
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        out.insert(key, got.body.collect().await.unwrap().into_bytes().to_vec());
    }
    out
}

fn body(op: &Op) -> Vec<u8> {
    match op {
        Op::Put { body, .. } => body.clone(),
        Op::Delete => Vec::new(),
    }
}

/// Waits past the current second, and gives the moment then (RFC 3339, ms).
async fn moment() -> String {
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let now = std::time::SystemTime::now();
    let moment = humantime::format_rfc3339_millis(now).to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    moment
}

async fn a_bucket_as_it_was_at_three_moments(kind: Kind) {
    let pair = Pair::start(kind).await;
    enable_versioning(&pair.src.client(), &pair.sb).await;
    let (a1, a2, b1, b2, c1) = (put(1, 10), put(2, 20), put(3, 30), put(4, 40), put(5, 50));
    write(&pair, "a", std::slice::from_ref(&a1)).await;
    write(&pair, "b", std::slice::from_ref(&b1)).await;
    let first = moment().await;
    write(&pair, "a", std::slice::from_ref(&a2)).await;
    write(&pair, "b", &[Op::Delete]).await;
    write(&pair, "c", std::slice::from_ref(&c1)).await;
    let second = moment().await;
    write(&pair, "b", std::slice::from_ref(&b2)).await;
    write(&pair, "c", &[Op::Delete]).await;
    let third = moment().await;

    let expected: [(&str, Vec<(&str, &Op)>); 3] = [
        (&first, vec![("a", &a1), ("b", &b1)]),
        (&second, vec![("a", &a2), ("c", &c1)]),
        (&third, vec![("a", &a2), ("b", &b2)]),
    ];
    for (at, keys) in expected {
        // Each moment into a bucket of its own, which needs no versioning.
        let bucket = unique("at");
        pair.dst.create_bucket(&bucket).await;
        // A state dir of its own too: a source bucket belongs to one pairing in a state dir.
        let state = pair.dir.path().join(&bucket);
        let shared = pair.dir.path().join("state");
        let args: Vec<String> = pair
            .args(&["--at", at, "--json"])
            .into_iter()
            .map(|a| {
                if a == format!("dst:{}", pair.db) {
                    format!("dst:{bucket}")
                } else if a == shared.to_str().unwrap() {
                    state.to_str().unwrap().to_string()
                } else {
                    a
                }
            })
            .collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = ferry_output(&argv);
        assert_eq!(code, 0, "--at {at} ({argv:?}): {stdout}{stderr}");
        let want: HashMap<String, Vec<u8>> = keys
            .iter()
            .map(|(k, op)| (k.to_string(), body(op)))
            .collect();
        assert_eq!(
            objects(&pair.dst, &bucket).await,
            want,
            "the bucket as it was at {at}"
        );
        // Again: the ledger says it is done.
        let (code, stdout, _) = ferry_output(&argv);
        assert_eq!(code, 0);
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
        assert_eq!(summary["copied"], 0, "{summary}");
        assert_eq!(summary["skipped"], keys.len(), "{summary}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_as_it_was_at_three_moments_on_moto() {
    a_bucket_as_it_was_at_three_moments(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_as_it_was_at_three_moments_on_rgw() {
    a_bucket_as_it_was_at_three_moments(Kind::Rgw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn at_is_refused_with_what_it_cannot_go_with() {
    // A source without versioning cannot be read as it was.
    let pair = Pair::start(Kind::Moto).await;
    write(&pair, "k", &[put(1, 10)]).await;
    let (code, stderr) = refused(&pair, &["--at", "2026-11-30T12:00:00Z"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--at") && stderr.contains(&pair.sb) && stderr.contains("versions"),
        "{stderr}"
    );
    for (extra, named) in [
        (vec!["--at", "yesterday noon"], "--at"),
        (
            vec!["--at", "2026-11-30T12:00:00Z", "--all-versions"],
            "--all-versions",
        ),
        (vec!["--at", "2026-11-30T12:00:00Z", "--delete"], "--delete"),
    ] {
        let (code, stderr) = refused(&pair, &extra);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(stderr.contains(named), "{extra:?} names {named}: {stderr}");
    }
}

/// The same copy through Redis: `ferry run` with two workers, on RGW.
#[tokio::test(flavor = "multi_thread")]
async fn versions_are_copied_in_order_through_redis_by_two_workers() {
    let pair = Pair::versioned(Kind::Rgw).await;
    let redis = ferry_testkit::servers::Redis::start();
    let mut keys = Vec::new();
    for i in 0..12 {
        let ops = vec![
            put(i, 100 + i),
            Op::Delete,
            put(i + 100, 10),
            put(i + 200, 0),
        ];
        let key = format!("k/{i:02}");
        let source = write(&pair, &key, &ops).await;
        keys.push((key, ops, source));
    }
    let endpoints = std::fs::read_to_string(&pair.config).unwrap();
    let config = pair.dir.path().join("redis.toml");
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"{}\"\nnamespace = \"{}\"\n\n{endpoints}[[rules]]\nname = \"all\"\n\
             source = {{ endpoint = \"src\", bucket = \"{}\" }}\n\
             destination = {{ endpoint = \"dst\", bucket = \"{}\" }}\n\
             versions = \"all\"\nstop = \"once\"\n",
            redis.url(),
            unique("ns"),
            pair.sb,
            pair.db
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (code, stdout, stderr) = ferry_output(&["run", "--config", config, "--workers", "2"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for (key, ops, source) in &keys {
        assert_same_history(&pair, key, ops, source).await;
    }
    // A second run finds nothing to write.
    let before = history(&pair.dst, &pair.db, "k/00").await.len();
    let (code, stdout, stderr) = ferry_output(&["run", "--config", config, "--workers", "2"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(history(&pair.dst, &pair.db, "k/00").await.len(), before);
}
