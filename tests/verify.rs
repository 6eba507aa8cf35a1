//! `ferry verify` against moto and Garage: a fresh copy matches (exit 0); each planted
//! difference is found (exit 3): a missing key, a byte flipped at the same size, a changed
//! header, changed tags, an extra key, and a multipart object cut another way (unverifiable,
//! then settled by `--deep`); filters and `--sample`; and a bucket rclone copied matches.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferry_testkit::servers::{Kind, S3Server, TempDir};
use harness::data::{Seed, equal_parts, put, put_multipart, seed};
use harness::{ferry_output, measured, unique};
use serde_json::Value;

/// A source and a destination server of one kind, a config naming them, and two buckets.
struct Pair {
    src: S3Server,
    dst: S3Server,
    _dir: TempDir,
    config: String,
    state: PathBuf,
    sb: String,
    db: String,
}

/// What one `ferry verify --json` said: its exit code, the findings by key, the summary.
struct Verified {
    code: i32,
    findings: BTreeMap<String, Value>,
    summary: Value,
    stderr: String,
}

impl Verified {
    fn verdict(&self, key: &str) -> &str {
        self.findings
            .get(key)
            .and_then(|f| f["verdict"].as_str())
            .unwrap_or("match")
    }

    fn count(&self, verdict: &str) -> u64 {
        self.summary["verdicts"][verdict]
            .as_u64()
            .unwrap_or_else(|| panic!("no count of {verdict} in {}", self.summary))
    }
}

impl Pair {
    async fn start(kind: Kind) -> Pair {
        let (src, dst) = (S3Server::of(kind), S3Server::of(kind));
        let dir = TempDir::new("verify");
        let config = dir.path().join("ferry.toml");
        std::fs::write(
            &config,
            src.endpoint_toml("src") + &dst.endpoint_toml("dst"),
        )
        .unwrap();
        let (sb, db) = (unique("s"), unique("d"));
        src.create_bucket(&sb).await;
        dst.create_bucket(&db).await;
        Pair {
            state: dir.path().join("state"),
            config: config.to_str().unwrap().to_string(),
            src,
            dst,
            _dir: dir,
            sb,
            db,
        }
    }

    fn sync(&self) {
        let state = self.state.to_str().unwrap();
        let (code, _, stderr) = ferry_output(&[
            "sync",
            &format!("src:{}", self.sb),
            &format!("dst:{}", self.db),
            "--config",
            &self.config,
            "--state-dir",
            state,
            "--no-progress",
        ]);
        assert_eq!(code, 0, "sync failed: {stderr}");
    }

    /// `ferry verify src:SB dst:DB --json EXTRA`.
    fn verify(&self, extra: &[&str]) -> Verified {
        let (src, dst) = (format!("src:{}", self.sb), format!("dst:{}", self.db));
        let mut args = vec!["verify", &src, &dst, "--config", &self.config, "--json"];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = ferry_output(&args);
        let mut findings = BTreeMap::new();
        let mut summary = None;
        for line in stdout.lines() {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nstderr: {stderr}"));
            if value["summary"] == true {
                summary = Some(value);
            } else {
                let key = value["key"].as_str().expect("a key").to_string();
                assert!(
                    findings.insert(key.clone(), value).is_none(),
                    "{key} reported twice:\n{stdout}"
                );
            }
        }
        Verified {
            code,
            findings,
            summary: summary
                .unwrap_or_else(|| panic!("no summary (exit {code}):\n{stdout}\n{stderr}")),
            stderr,
        }
    }
}

/// Small objects with headers, metadata and tags, and one multipart object of 2 parts.
async fn seed_source(pair: &Pair) -> String {
    let mut seeds: Vec<Seed> = (0..40)
        .map(|i| Seed {
            content_type: Some("text/plain".into()),
            metadata: [("owner".to_string(), format!("o{i}"))].into(),
            tags: Some(format!("n={i}")),
            ..Seed::new(
                format!("k/{i:03}"),
                format!("body of object {i}, some bytes").into_bytes(),
            )
        })
        .collect();
    seeds.push(Seed::new("skip/me.tmp", b"left out by --exclude".to_vec()));
    seed(&pair.src.client(), &pair.sb, &seeds).await;
    put_multipart(
        &pair.src.client(),
        &pair.sb,
        "big/object",
        &equal_parts(2, 6 << 20, 0),
        7,
    )
    .await
}

async fn planted_differences_are_each_found(kind: Kind) {
    let pair = Pair::start(kind).await;
    let source_etag = seed_source(&pair).await;
    assert!(source_etag.ends_with("-2"), "a 2-part ETag: {source_etag}");
    pair.sync();
    let tagging = measured(&pair.dst, &pair.db).await.tagging;

    // A fresh copy: every key matches, by its ETag (the multipart one too, kept by ferry).
    let fresh = pair.verify(&["--headers"]);
    assert_eq!(fresh.code, 0, "{:?}\n{}", fresh.findings, fresh.stderr);
    assert_eq!(fresh.count("match"), 42, "{}", fresh.summary);
    assert!(fresh.findings.is_empty(), "{:?}", fresh.findings);
    assert_eq!(fresh.summary["source_objects"], 42);

    // Plant one difference of each kind at the destination.
    let dst = pair.dst.client();
    dst.delete_object()
        .bucket(&pair.db)
        .key("k/001")
        .send()
        .await
        .unwrap();
    let mut flipped = b"body of object 2, some bytes".to_vec();
    flipped[0] ^= 1;
    put(&dst, &pair.db, "k/002", &flipped).await;
    // The same bytes under another Content-Type (and no tags, no metadata).
    seed(
        &dst,
        &pair.db,
        &[Seed {
            content_type: Some("image/png".into()),
            metadata: [("owner".to_string(), "o3".to_string())].into(),
            tags: Some("n=3".into()),
            ..Seed::new("k/003", b"body of object 3, some bytes".to_vec())
        }],
    )
    .await;
    if tagging {
        dst.put_object_tagging()
            .bucket(&pair.db)
            .key("k/004")
            .tagging(
                aws_sdk_s3::types::Tagging::builder()
                    .tag_set(
                        aws_sdk_s3::types::Tag::builder()
                            .key("n")
                            .value("changed")
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    put(&dst, &pair.db, "k/extra", b"only here").await;
    // The same 12 MiB, cut into 3 parts: another multipart ETag, the same bytes.
    let recut = put_multipart(
        &dst,
        &pair.db,
        "big/object",
        &equal_parts(2, 5 << 20, 2 << 20),
        7,
    )
    .await;
    assert!(recut.ends_with("-3") && recut != source_etag, "{recut}");

    let found = pair.verify(&[]);
    assert_eq!(
        found.code, 3,
        "missing and differing keys: exit 3\n{}",
        found.stderr
    );
    assert_eq!(found.verdict("k/001"), "missing");
    assert_eq!(found.verdict("k/002"), "differs");
    assert!(
        found.findings["k/002"]["differs"][0]
            .as_str()
            .unwrap()
            .starts_with("etag")
    );
    assert_eq!(found.verdict("k/extra"), "extra");
    assert_eq!(found.verdict("big/object"), "unverifiable");
    let why = found.findings["big/object"]["why"].as_str().unwrap();
    assert!(
        why.contains("2 part") && why.contains("3 part") && why.contains("--deep"),
        "{why}"
    );
    // Without --headers, a header is not compared: the bytes of k/003 are the same.
    assert_eq!(found.verdict("k/003"), "match");
    assert_eq!(found.verdict("k/004"), "match");
    assert_eq!(found.findings.len(), 4, "{:?}", found.findings);
    assert_eq!(
        (
            found.count("match"),
            found.count("missing"),
            found.count("differs")
        ),
        (39, 1, 1),
        "{}",
        found.summary
    );

    let headers = pair.verify(&["--headers"]);
    assert_eq!(headers.code, 3);
    assert_eq!(headers.verdict("k/003"), "differs");
    let said = headers.findings["k/003"]["differs"].to_string();
    assert!(
        said.contains("content-type") && said.contains("image/png"),
        "{said}"
    );
    if tagging {
        assert_eq!(headers.verdict("k/004"), "differs");
        assert!(
            headers.findings["k/004"]["differs"]
                .to_string()
                .contains("tags")
        );
    }

    // --deep reads both sides: the recut object is the same bytes, the flipped one is not.
    let deep = pair.verify(&["--deep"]);
    assert_eq!(deep.code, 3);
    assert_eq!(deep.verdict("big/object"), "match");
    assert_eq!(deep.verdict("k/002"), "differs");
    assert!(
        deep.findings["k/002"]["differs"]
            .to_string()
            .contains("bytes")
    );
    assert_eq!(deep.count("unverifiable"), 0, "{}", deep.summary);
    assert!(deep.summary["bytes_read"].as_u64().unwrap() >= 2 * (12 << 20));

    // The rule's filters: excluded keys are said to be excluded, on either side.
    let filtered = pair.verify(&["--exclude", "k/00[12]", "--exclude", "*.tmp"]);
    assert_eq!(filtered.verdict("k/001"), "excluded");
    assert_eq!(filtered.verdict("k/002"), "excluded");
    assert_eq!(filtered.verdict("skip/me.tmp"), "excluded");
    assert_eq!(
        filtered.code, 0,
        "nothing missing or different is left: {:?}",
        filtered.findings
    );

    // --sample reads N keys of each range in full: here every key on both sides of size 1.
    let sampled = pair.verify(&["--sample", "100"]);
    assert_eq!(sampled.verdict("big/object"), "match");
    assert_eq!(sampled.verdict("k/002"), "differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_each_planted_difference_on_moto() {
    planted_differences_are_each_found(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_each_planted_difference_on_garage() {
    planted_differences_are_each_found(Kind::Garage).await;
}

/// rclone 1.75, as `scripts/deps.sh --rclone` installs it.
fn rclone() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME");
    let bin = PathBuf::from(home).join(".local/share/ferry/bin/rclone");
    assert!(
        bin.exists(),
        "no rclone at {} (scripts/deps.sh --rclone)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_bucket_rclone_copied_on_moto() {
    a_bucket_rclone_copied_verifies(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_a_bucket_rclone_copied_on_garage() {
    a_bucket_rclone_copied_verifies(Kind::Garage).await;
}

/// A bucket rclone copied (no ledger of ferry's) verifies as a match; a key removed after
/// is then missing.
async fn a_bucket_rclone_copied_verifies(kind: Kind) {
    let pair = Pair::start(kind).await;
    seed_source(&pair).await;
    let dir = TempDir::new("rclone");
    let conf = dir.path().join("rclone.conf");
    let remote = |name: &str, s: &S3Server| {
        format!(
            "[{name}]\ntype = s3\nprovider = Other\nendpoint = {}\nregion = {}\nforce_path_style = true\n\
             access_key_id = {}\nsecret_access_key = {}\n\n",
            s.url(),
            s.region,
            s.access_key,
            s.secret_key
        )
    };
    std::fs::write(&conf, remote("a", &pair.src) + &remote("b", &pair.dst)).unwrap();
    let out = std::process::Command::new(rclone())
        .args([
            "copy",
            &format!("a:{}", pair.sb),
            &format!("b:{}", pair.db),
            "--config",
        ])
        .arg(&conf)
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("running rclone");
    assert!(
        out.status.success(),
        "rclone: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let copied = pair.verify(&[]);
    assert_eq!(copied.code, 0, "{:?}\n{}", copied.findings, copied.stderr);
    assert_eq!(copied.count("missing") + copied.count("differs"), 0);
    // rclone copies 12 MiB in one request: its MD5 ETag beside the source's multipart one
    // says nothing, unless a checksum both keep settles it.
    assert!(
        ["match", "unverifiable"].contains(&copied.verdict("big/object")),
        "{:?}",
        copied.findings
    );
    let deep = pair.verify(&["--deep"]);
    assert_eq!(deep.code, 0, "{:?}", deep.findings);
    assert_eq!(deep.count("match"), 42, "{}", deep.summary);

    pair.dst
        .client()
        .delete_object()
        .bucket(&pair.db)
        .key("k/039")
        .send()
        .await
        .unwrap();
    let gone = pair.verify(&[]);
    assert_eq!(gone.code, 3);
    assert_eq!(gone.verdict("k/039"), "missing");
}

/// Usage errors exit 2 and name the argument; a rule of a config file is verified by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_rule_of_the_config_file_and_refuses_bad_arguments() {
    let pair = Pair::start(Kind::Moto).await;
    put(&pair.src.client(), &pair.sb, "a", b"x").await;
    let text = std::fs::read_to_string(&pair.config).unwrap()
        + &harness::rule_toml("photos", &pair.sb, &pair.db, "");
    std::fs::write(&pair.config, text).unwrap();
    let (code, stdout, stderr) = ferry_output(&["verify", "--config", &pair.config, "photos"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(
        stdout.contains("missing") && stdout.contains(" a "),
        "{stdout}"
    );
    let (code, _, stderr) = ferry_output(&["verify", "--config", &pair.config, "nope"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no rule \"nope\"") && stderr.contains("photos"),
        "{stderr}"
    );
    let (code, _, stderr) = ferry_output(&[
        "verify",
        "--config",
        &pair.config,
        "photos",
        "--include",
        "*.jpg",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--include"), "{stderr}");
    let (code, _, stderr) = ferry_output(&[
        "verify",
        &format!("src:{}", pair.sb),
        "dst:nobucket",
        "--config",
        &pair.config,
    ]);
    assert_eq!(
        code, 1,
        "a bucket that is not there is a runtime error: {stderr}"
    );
    let (code, _, stderr) = ferry_output(&[
        "verify",
        "src:aaa",
        "dst:bbb",
        "--config",
        &pair.config,
        "--sample",
        "0",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--sample"), "{stderr}");
}

/// `ferry estimate --config F RULE --json` prices the next iteration from `[pricing]`, and a
/// price that cannot be is refused, named by its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimate_prices_the_next_iteration_and_refuses_bad_prices() {
    let pair = Pair::start(Kind::Moto).await;
    let seeds: Vec<Seed> = (0..25)
        .map(|i| Seed::new(format!("p/{i:02}"), vec![b'x'; 1000 + i]))
        .collect();
    seed(&pair.src.client(), &pair.sb, &seeds).await;
    let bytes: u64 = seeds.iter().map(|s| s.body.len() as u64).sum();
    let base = std::fs::read_to_string(&pair.config).unwrap()
        + &harness::rule_toml("photos", &pair.sb, &pair.db, "");
    let priced = base.clone()
        + "[pricing.src]\negress_per_gb = 90\nrequests_per_1000 = { class_a = 5, class_b = 0.4 }\n";
    std::fs::write(&pair.config, &priced).unwrap();
    let state = pair.state.to_str().unwrap();
    let args = [
        "estimate",
        "--config",
        &pair.config,
        "--state-dir",
        state,
        "photos",
        "--json",
    ];
    let (code, stdout, stderr) = ferry_output(&args);
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (v["would_copy"].as_u64(), v["would_copy_bytes"].as_u64()),
        (Some(25), Some(bytes)),
        "{v}"
    );
    assert_eq!(v["requests"]["source"]["GetObject"], 25, "{v}");
    assert_eq!(v["requests"]["destination"]["PutObject"], 25, "{v}");
    // 25 GETs and one listing page at the source: class B and class A.
    let expected = bytes as f64 / 1e9 * 90.0 + 25.0 * 0.4 / 1000.0 + 5.0 / 1000.0;
    let cost = v["cost"]["total"].as_f64().expect("a cost");
    assert!((cost - expected).abs() < 1e-9, "{cost} != {expected}: {v}");
    assert_eq!(v["cost"]["unpriced"], serde_json::json!(["dst"]));
    assert_eq!(v["time"]["basis"], "guess", "no iteration has run: {v}");
    let (code, text, _) = ferry_output(&args[..6]);
    assert_eq!(code, 0);
    assert!(
        text.contains("a guess") && text.contains("requests at the source: 26"),
        "{text}"
    );

    let unpriced = base.clone();
    std::fs::write(&pair.config, &unpriced).unwrap();
    let (_, text, _) = ferry_output(&args[..6]);
    assert!(text.contains("give [pricing.ENDPOINT]"), "{text}");

    let bad = base + "[pricing.nowhere]\negress_per_gb = -1\n";
    std::fs::write(&pair.config, &bad).unwrap();
    let (code, _, stderr) = ferry_output(&args);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pricing.nowhere: no endpoint"), "{stderr}");
    assert!(
        stderr.contains("pricing.nowhere.egress_per_gb: must be zero or more"),
        "{stderr}"
    );
}
