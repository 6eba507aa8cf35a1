//! Incremental replication across iterations: the ledger and every row of the decision
//! table, under each overwrite mode, end to end against real servers.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use harness::{Env, S3Server, history, iteration_record, unique};

async fn put(client: &Client, bucket: &str, key: &str, body: &str) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)));
}

async fn delete(client: &Client, bucket: &str, key: &str) {
    client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("delete");
}

async fn contents(client: &Client, bucket: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, _, _) in harness::data::list_keys(client, bucket).await {
        let body = client
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .expect("get");
        let bytes = body.body.collect().await.expect("body").into_bytes();
        out.insert(key, String::from_utf8_lossy(&bytes).into_owned());
    }
    out
}

/// Last-Modified has whole seconds on some servers: wait so "newer" is unambiguous.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

struct Case {
    rule: String,
    overwrite: &'static str,
    unmanaged: bool,
    src_bucket: String,
    dst_bucket: String,
}

/// Iteration 1 copies everything; then the source gains, changes and loses objects, and the
/// destination gains foreign objects under source keys and has some of ferry's copies
/// overwritten. Iteration 2 must do exactly what the table says, for every mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_iteration_follows_the_decision_table_in_every_mode() {
    decision_table(S3Server::garage(), S3Server::garage()).await;
}

/// Before the probe learnt If-Match's form, every changed object was refused by RGW 16 (a
/// quoted If-Match) until it was dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_iteration_follows_the_decision_table_on_rgw() {
    decision_table(S3Server::rgw(), S3Server::rgw()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_iteration_follows_the_decision_table_from_rgw_to_garage() {
    decision_table(S3Server::rgw(), S3Server::garage()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_iteration_follows_the_decision_table_from_garage_to_rgw() {
    decision_table(S3Server::garage(), S3Server::rgw()).await;
}

async fn decision_table(src: S3Server, dst: S3Server) {
    let env = Env::start_on("incremental", src, dst);
    let (src, dst) = (env.src.client(), env.dst.client());
    let mut cases = Vec::new();
    for overwrite in ["never", "if-newer", "if-different", "always"] {
        for unmanaged in [false, true] {
            let rule = format!("{overwrite}-{}", if unmanaged { "all" } else { "managed" });
            cases.push(Case {
                rule,
                overwrite,
                unmanaged,
                src_bucket: unique("s"),
                dst_bucket: unique("d"),
            });
        }
    }
    let mut rules = String::new();
    for c in &cases {
        env.src.create_bucket(&c.src_bucket).await;
        env.dst.create_bucket(&c.dst_bucket).await;
        for key in [
            "same-1",
            "same-2",
            "modify",
            "delete",
            "theirs-now",
            "foreign-later",
        ] {
            put(&src, &c.src_bucket, key, &format!("v1 {key}")).await;
        }
        rules += &format!(
            "[[rules]]\nname = \"{}\"\nstop = \"once\"\noverwrite = \"{}\"\noverwrite_unmanaged = {}\n\
             source = {{ endpoint = \"src\", bucket = \"{}\" }}\n\
             destination = {{ endpoint = \"dst\", bucket = \"{}\" }}\n\n",
            c.rule, c.overwrite, c.unmanaged, c.src_bucket, c.dst_bucket
        );
    }
    // A key ferry never wrote, present at both sides before the first iteration.
    for c in &cases {
        put(&src, &c.src_bucket, "preexisting", "source version").await;
        put(&dst, &c.dst_bucket, "preexisting", "their version").await;
    }
    let config = env.write_config("ferry.toml", &rules);
    env.run_to_completion(&config, &[], Duration::from_secs(120));

    tick().await;
    for c in &cases {
        put(&src, &c.src_bucket, "modify", "v2 modify").await;
        put(&src, &c.src_bucket, "added", "v1 added").await;
        delete(&src, &c.src_bucket, "delete").await;
        put(
            &dst,
            &c.dst_bucket,
            "theirs-now",
            "overwritten by someone else",
        )
        .await;
        put(&src, &c.src_bucket, "foreign-new", "source foreign-new").await;
    }
    tick().await;
    for c in &cases {
        // Written at the destination after its source: newer than the source.
        put(&dst, &c.dst_bucket, "foreign-new", "their foreign-new").await;
    }
    env.run_to_completion(&config, &[], Duration::from_secs(120));

    for c in &cases {
        let got = contents(&dst, &c.dst_bucket).await;
        let mut want: BTreeMap<&str, &str> = BTreeMap::new();
        let always = c.overwrite == "always";
        let overwrites_changed = c.overwrite != "never";
        // Managed and unchanged: skipped, except that `always` copies the same bytes again.
        want.insert("same-1", "v1 same-1");
        want.insert("same-2", "v1 same-2");
        want.insert(
            "modify",
            if overwrites_changed {
                "v2 modify"
            } else {
                "v1 modify"
            },
        );
        want.insert("added", "v1 added");
        want.insert("delete", "v1 delete"); // delete = false: never propagated
        want.insert("foreign-later", "v1 foreign-later");
        // Unmanaged objects: untouched unless overwrite_unmanaged, then by mode.
        let unmanaged_copied = |dst_newer: bool| {
            c.unmanaged
                && (always
                    || c.overwrite == "if-different"
                    || (c.overwrite == "if-newer" && !dst_newer))
        };
        want.insert(
            "theirs-now",
            if unmanaged_copied(true) {
                "v1 theirs-now"
            } else {
                "overwritten by someone else"
            },
        );
        want.insert(
            "foreign-new",
            if unmanaged_copied(true) {
                "source foreign-new"
            } else {
                "their foreign-new"
            },
        );
        // "preexisting": ferry never wrote it; its destination copy predates iteration 1.
        let pre = if c.unmanaged && (always || c.overwrite == "if-different") {
            "source version"
        } else {
            "their version"
        };
        want.insert("preexisting", pre);
        let want: BTreeMap<String, String> = want
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(
            got, want,
            "rule {} (overwrite = {}, overwrite_unmanaged = {})",
            c.rule, c.overwrite, c.unmanaged
        );

        let record = iteration_record(&env.redis, &env.ns, &c.rule, 2).await;
        let copied = record.get("copied").copied().unwrap_or(0);
        let mut expected = 1 /* added */ + u64::from(overwrites_changed) /* modify */;
        if always {
            expected += 3; // same-1, same-2, foreign-later copied again
        }
        expected += u64::from(unmanaged_copied(true)) * 2; // theirs-now, foreign-new
        // preexisting: taken over in iteration 1 (if-different, always), so in iteration 2 it
        // is managed and unchanged: only `always` copies it again.
        expected += u64::from(c.unmanaged && always);
        assert_eq!(
            copied, expected,
            "copies in iteration 2 of rule {}: {record:?}",
            c.rule
        );
        assert_eq!(
            record.get("listed"),
            Some(&8),
            "rule {}: {record:?}",
            c.rule
        );
        assert_eq!(record.get("dead"), None, "rule {}: {record:?}", c.rule);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_true_removes_only_managed_objects_whose_source_is_gone() {
    let env = Env::start("delete");
    let (src, dst) = (env.src.client(), env.dst.client());
    let (sb, db) = env.bucket_pair().await;
    for key in ["keep", "gone", "gone-but-changed"] {
        put(&src, &sb, key, key).await;
    }
    put(&dst, &db, "never-managed", "theirs").await;
    let rules = harness::rule_toml("mirror", &sb, &db, "stop = \"once\"\ndelete = true");
    let config = env.write_config("ferry.toml", &rules);
    env.run_to_completion(&config, &[], Duration::from_secs(60));
    delete(&src, &sb, "gone").await;
    delete(&src, &sb, "gone-but-changed").await;
    put(&dst, &db, "gone-but-changed", "edited at the destination").await;
    env.run_to_completion(&config, &[], Duration::from_secs(60));
    let got: Vec<String> = contents(&dst, &db).await.into_keys().collect();
    assert_eq!(got, ["gone-but-changed", "keep", "never-managed"]);
    let record = iteration_record(&env.redis, &env.ns, "mirror", 2).await;
    assert_eq!(record.get("deleted"), Some(&1), "{record:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_2_stops_after_the_copy_and_two_empty_iterations() {
    let env = Env::start("empty2");
    let (sb, db) = env.bucket_pair().await;
    let seeds: Vec<_> = (0..50)
        .map(|i| harness::data::Seed::new(format!("k/{i}"), format!("body {i}")))
        .collect();
    harness::data::seed(&env.src.client(), &sb, &seeds).await;
    let rules = harness::rule_toml(
        "converge",
        &sb,
        &db,
        "stop = \"empty:2\"\ninterval = \"1s\"",
    );
    let config = env.write_config("ferry.toml", &rules);
    env.run_to_completion(&config, &[], Duration::from_secs(120));
    assert_eq!(history(&env.redis, &env.ns, "converge").await, [3, 2, 1]);
    let first = iteration_record(&env.redis, &env.ns, "converge", 1).await;
    assert_eq!(first.get("copied"), Some(&50));
    for n in [2, 3] {
        let r = iteration_record(&env.redis, &env.ns, "converge", n).await;
        assert_eq!(
            (r.get("copied"), r.get("skipped"), r.get("planned")),
            (None, Some(&50), None),
            "iteration {n}: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_after_planning_is_copied_at_its_new_version_never_a_mix() {
    let env = Env::start("replan");
    let (src, dst) = (env.src.client(), env.dst.client());
    let (sb, db) = env.bucket_pair().await;
    for i in 0..20 {
        put(
            &src,
            &sb,
            &format!("k{i:02}"),
            &format!("version one of k{i:02}"),
        )
        .await;
    }
    let config = env.write_config(
        "ferry.toml",
        &harness::rule_toml("pinned", &sb, &db, "stop = \"once\""),
    );
    // Plan with no worker running, so every task waits with the old ETag.
    let mut coordinator = harness::spawn_ferry(
        env.dir.path(),
        "coordinator",
        &["coordinator", "--config", &config],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !iteration_record(&env.redis, &env.ns, "pinned", 1)
        .await
        .contains_key("sealed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "planning did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..10 {
        put(
            &src,
            &sb,
            &format!("k{i:02}"),
            &format!("VERSION TWO, longer than one, of k{i:02}"),
        )
        .await;
    }
    let worker = harness::spawn_ferry(env.dir.path(), "worker", &["worker", "--config", &config]);
    let status = coordinator
        .wait_timeout(Duration::from_secs(60))
        .expect("iteration did not finish");
    assert!(status.success());
    worker.sigterm();
    let got = contents(&dst, &db).await;
    for i in 0..20 {
        let expected = if i < 10 {
            format!("VERSION TWO, longer than one, of k{i:02}")
        } else {
            format!("version one of k{i:02}")
        };
        assert_eq!(got.get(&format!("k{i:02}")), Some(&expected));
    }
    // The ledger holds the version actually copied (the re-planned one), not the planned one.
    let queue = ferry_queue::Queue::connect(
        &ferry_core::config::RedisConfig::new(env.redis.url(), env.ns.clone()),
        ferry_queue::Persistence::FailFast,
    )
    .await
    .expect("redis");
    for i in [0, 9, 10] {
        let key = format!("k{i:02}");
        let head = src
            .head_object()
            .bucket(&sb)
            .key(&key)
            .send()
            .await
            .expect("head");
        let current = head
            .e_tag()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        let entry = queue
            .ledger_get("pinned", &[key.as_str()])
            .await
            .expect("ledger")
            .remove(0)
            .entry
            .expect("entry");
        assert_eq!(
            entry.source_etag, current,
            "{key}: the ledger records another version than was copied"
        );
    }
    // So the next iteration has nothing to do.
    let (code, _, _) = harness::ferry_output(&["run", "--config", &config]);
    assert_eq!(code, 0);
    let second = iteration_record(&env.redis, &env.ns, "pinned", 2).await;
    assert_eq!(
        (second.get("copied"), second.get("skipped")),
        (None, Some(&20)),
        "{second:?}"
    );
}

/// The ledger of a rule ferry registers grows a bucket per 40 entries, and a coordinator that
/// starts again on the registered rule keeps that shape (it is not taken for a ledger of an
/// older ferry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rules_ledger_grows_with_it_and_keeps_its_shape_across_restarts() {
    let env = Env::start("lshape");
    let (sb, db) = env.bucket_pair().await;
    let seeds: Vec<_> = (0..100)
        .map(|i| harness::data::Seed::new(format!("k/{i:03}"), format!("body {i}")))
        .collect();
    harness::data::seed(&env.src.client(), &sb, &seeds).await;
    let rules = harness::rule_toml("grows", &sb, &db, "stop = \"once\"");
    let config = env.write_config("ferry.toml", &rules);
    let shape = || async {
        let mut conn = env.redis.conn().await;
        let shape: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{}:{{grows}}:lshape", env.ns))
            .query_async(&mut conn)
            .await
            .unwrap();
        shape
    };
    env.run_to_completion(&config, &[], Duration::from_secs(60));
    let first = shape().await;
    // 100 entries at 40 per bucket: buckets 0 and 1 of round 1, then bucket 0 split again
    // (bits 1, split 1: three buckets).
    let want: BTreeMap<String, String> =
        [("n", "100"), ("load", "40"), ("bits", "1"), ("split", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(first, want);
    env.run_to_completion(&config, &[], Duration::from_secs(60));
    assert_eq!(shape().await, want, "a restart changed the ledger's shape");
    let second = iteration_record(&env.redis, &env.ns, "grows", 2).await;
    assert_eq!(
        (second.get("skipped"), second.get("copied")),
        (Some(&100), None),
        "the grown ledger knows every object: {second:?}"
    );
}
