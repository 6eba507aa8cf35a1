//! Exact copies whatever the store and the keys: a late write never wins, any key S3 allows,
//! ETags that are not MD5s, archived objects, bytes corrupted on the way, one object that
//! cannot be copied, Redis passwords with URL characters. Against moto and Garage, with the
//! fault proxy in front where a fault is needed.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::time::Duration;

use ferry_testkit::proxy::{Action, FaultProxy, Match, Rule};
use harness::data::{
    Seed, assert_replica, assert_same_objects, bytes, list_keys, open_uploads, put, put_multipart,
    seed,
};
use harness::{
    Env, Kind, Redis, S3Server, ferry_output, free_port, history, iteration_record, rule_toml,
    samples, scrape, spawn_ferry, wait_until,
};

const MIB: u64 = 1024 * 1024;

async fn proxy_for(server: &S3Server) -> FaultProxy {
    FaultProxy::start(&server.authority())
        .await
        .expect("starting the fault proxy")
}

fn puts_to(bucket: &str, key: &str) -> Match {
    Match {
        method: Some("PUT".into()),
        path_prefix: Some(format!("/{bucket}/{key}")),
        ..Match::default()
    }
}

fn wait_exit_ok(p: &mut harness::Proc, timeout: Duration) {
    let status = p
        .wait_timeout(timeout)
        .unwrap_or_else(|| panic!("{} did not finish within {timeout:?}", p.name));
    assert!(status.success(), "{} exited with {status}", p.name);
}

/// A worker's PUT of version 1 is held by the network until after another worker copied
/// version 2 and the iteration ended; then it lands. On moto, whose writes are conditional,
/// the late write is refused. On Garage, which ignores conditions, it lands, and the next
/// iteration finds the stray write (its claim never acked) and copies version 2 again.
async fn a_late_put_of_an_old_version_cannot_survive(kind: Kind) {
    let env = Env::start_on("late", S3Server::of(kind), S3Server::of(kind));
    let (sb, db) = env.bucket_pair().await;
    let (src, dst) = (env.src.client(), env.dst.client());
    let key = "late/object";
    put(&src, &sb, key, b"version 1").await;
    let proxy = proxy_for(&env.dst).await;
    proxy.set_rules(vec![
        Rule::new("hold", puts_to(&db, key), Action::Hold).times(1),
    ]);
    let config = env.write_config_at(
        "late.toml",
        &env.src.url(),
        &proxy.url(),
        &rule_toml("late", &sb, &db, "stop = \"once\""),
    );
    let dir = env.dir.path();
    let worker = |name: &str| {
        spawn_ferry(
            dir,
            name,
            &["worker", "--config", &config, "--id", name, "--lease", "2s"],
        )
    };
    let mut coordinator = spawn_ferry(dir, "coordinator-1", &["coordinator", "--config", &config]);
    let mut paused = worker("paused");
    wait_until(
        Duration::from_secs(60),
        "the PUT of version 1 to be held",
        || {
            let held = proxy.stats().held;
            async move { held == 1 }
        },
    )
    .await;
    // The source moves on, and the worker whose write is in flight dies.
    put(&src, &sb, key, b"version 2, newer").await;
    paused.kill9();
    let mut survivor = worker("survivor");
    wait_exit_ok(&mut coordinator, Duration::from_secs(120));
    assert_eq!(bytes(&dst, &db, key).await, b"version 2, newer");

    // Now the old write reaches the server.
    assert_eq!(proxy.release_held(), 1);
    wait_until(
        Duration::from_secs(30),
        "the held PUT to be forwarded",
        || {
            let done = proxy
                .events()
                .iter()
                .any(|e| e.rule.as_deref() == Some("hold") && e.late_status.is_some());
            async move { done }
        },
    )
    .await;
    let late = proxy
        .events()
        .into_iter()
        .find_map(|e| (e.rule.as_deref() == Some("hold")).then_some(e.late_status))
        .flatten();
    let conditional = harness::measured(&env.dst, &db).await.conditional_writes();
    if conditional {
        assert_eq!(
            late,
            Some(412),
            "the store refuses the conditional late write"
        );
        assert_eq!(bytes(&dst, &db, key).await, b"version 2, newer");
    } else {
        assert_eq!(
            late,
            Some(200),
            "the store ignores the condition and writes"
        );
        assert_eq!(bytes(&dst, &db, key).await, b"version 1");
    }

    // The next iteration leaves (moto) or repairs (Garage) the destination.
    let mut coordinator = spawn_ferry(dir, "coordinator-2", &["coordinator", "--config", &config]);
    wait_exit_ok(&mut coordinator, Duration::from_secs(120));
    assert_eq!(bytes(&dst, &db, key).await, b"version 2, newer");
    let first = iteration_record(&env.redis, &env.ns, "late", 1).await;
    let second = iteration_record(&env.redis, &env.ns, "late", 2).await;
    assert_eq!(first.get("copied"), Some(&1), "{first:?}");
    let repaired = (!conditional).then_some(&1);
    assert_eq!(second.get("copied"), repaired, "{second:?}");
    assert_eq!(second.get("dead"), None, "{second:?}");
    assert!(open_uploads(&dst, &db).await.is_empty());
    // And it stays repaired: a third iteration has nothing to do.
    let mut coordinator = spawn_ferry(dir, "coordinator-3", &["coordinator", "--config", &config]);
    wait_exit_ok(&mut coordinator, Duration::from_secs(120));
    let third = iteration_record(&env.redis, &env.ns, "late", 3).await;
    assert_eq!(third.get("copied"), None, "{third:?}");
    survivor.sigterm();
    survivor.wait_timeout(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_put_of_an_old_version_is_refused_on_moto() {
    a_late_put_of_an_old_version_cannot_survive(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_put_of_an_old_version_is_repaired_on_garage() {
    a_late_put_of_an_old_version_cannot_survive(Kind::Garage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_put_of_an_old_version_is_refused_on_rgw() {
    a_late_put_of_an_old_version_cannot_survive(Kind::Rgw).await;
}

/// Keys XML 1.0 cannot carry (control characters) and a key of 1,024 bytes, among ordinary
/// keys, are listed, copied and then found unchanged.
async fn any_key_is_copied(kind: Kind) {
    let env = Env::start_on("keys", S3Server::of(kind), S3Server::of(kind));
    let (sb, db) = env.bucket_pair().await;
    let long = format!("keys/{}", "k".repeat(1024 - 5));
    assert_eq!(long.len(), 1024);
    let mut seeds: Vec<Seed> = (0..30)
        .map(|i| Seed::new(format!("keys/plain-{i:02}"), format!("plain {i}")))
        .collect();
    for key in [
        "keys/control-\u{1}-one",
        "keys/tab\there",
        "keys/escape-\u{1b}[0m",
        "keys/delete-\u{7f}",
        "keys/plus+and space",
        long.as_str(),
    ] {
        seeds.push(Seed::new(key, format!("body of {key:?}")));
    }
    seed(&env.src.client(), &sb, &seeds).await;
    let config = env.write_config("keys.toml", &rule_toml("keys", &sb, &db, "stop = \"once\""));
    env.run_to_completion(&config, &[], Duration::from_secs(180));
    let n = assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await;
    assert_eq!(n, seeds.len());
    let record = iteration_record(&env.redis, &env.ns, "keys", 1).await;
    assert_eq!(
        record.get("copied"),
        Some(&(seeds.len() as u64)),
        "{record:?}"
    );
    // Decoded the same way on both sides, the keys match: nothing is copied again.
    env.run_to_completion(&config, &[], Duration::from_secs(180));
    let second = iteration_record(&env.redis, &env.ns, "keys", 2).await;
    assert_eq!(second.get("copied"), None, "{second:?}");
    assert_eq!(second.get("skipped"), Some(&(seeds.len() as u64)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_key_is_copied_on_moto() {
    any_key_is_copied(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_key_is_copied_on_garage() {
    any_key_is_copied(Kind::Garage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_key_is_copied_on_rgw() {
    any_key_is_copied(Kind::Rgw).await;
}

/// A destination whose ETags are not MD5s (SSE-KMS, as the proxy shows it): copies of single
/// and multipart objects are done and managed, so the next iteration is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_to_a_store_whose_etags_are_not_md5s_are_done_and_managed() {
    let env = Env::start("kms");
    let (sb, db) = env.bucket_pair().await;
    let src = env.src.client();
    let mut seeds: Vec<Seed> = (0..20)
        .map(|i| {
            Seed::new(
                format!("kms/small-{i:02}"),
                format!("small {i}").repeat(i + 1),
            )
        })
        .collect();
    seeds.push(Seed::new(
        "kms/whole-6mib",
        harness::data::pattern(5, 0, 6 * MIB as usize),
    ));
    seed(&src, &sb, &seeds).await;
    put_multipart(&src, &sb, "kms/parts", &[5 * MIB, 5 * MIB, 1000], 7).await;
    let proxy = proxy_for(&env.dst).await;
    proxy.set_rules(vec![Rule::new("kms", Match::default(), Action::KmsEtags)]);
    let config = env.write_config_at(
        "kms.toml",
        &env.src.url(),
        &proxy.url(),
        &rule_toml(
            "kms",
            &sb,
            &db,
            "stop = \"once\"\nmultipart_threshold = \"5MiB\"\npart_size = \"5MiB\"",
        ),
    );
    let log = env.run_to_completion(&config, &[], Duration::from_secs(240));
    assert!(
        log.contains("etags_are_md5=false"),
        "the probe saw non-MD5 ETags:\n{log}"
    );
    let total = seeds.len() as u64 + 1;
    let first = iteration_record(&env.redis, &env.ns, "kms", 1).await;
    assert_eq!(first.get("copied"), Some(&total), "{first:?}");
    assert_eq!(first.get("dead"), None, "{first:?}");
    // Bytes and headers, read behind the proxy: the copy is exact.
    let n = assert_same_objects(&env.src.client(), &sb, &env.dst.client(), &db).await;
    assert_eq!(n as u64, total);
    // Managed: the ETags the store showed are the ones the ledger keeps.
    env.run_to_completion(&config, &[], Duration::from_secs(240));
    let second = iteration_record(&env.redis, &env.ns, "kms", 2).await;
    assert_eq!(second.get("copied"), None, "{second:?}");
    assert_eq!(second.get("skipped"), Some(&total), "{second:?}");
}

/// GLACIER and DEEP_ARCHIVE objects that are not restored are skipped and counted; a
/// restored one is copied; iterations whose only skips are archived objects are empty, so
/// `stop = "empty:2"` ends. With `archived = "fail"` they are dead letters, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_objects_are_skipped_and_counted_so_empty_2_ends() {
    let env = Env::start_on("archived", S3Server::moto(), S3Server::moto());
    let (sb, db) = env.bucket_pair().await;
    let src = env.src.client();
    let mut seeds = vec![Seed::new("warm/a", "standard object")];
    for (key, class) in [
        ("cold/frozen", "GLACIER"),
        ("cold/deep", "DEEP_ARCHIVE"),
        ("cold/thawed", "GLACIER"),
    ] {
        let mut s = Seed::new(key, format!("{key} in {class}"));
        s.storage_class = Some(class.into());
        seeds.push(s);
    }
    seed(&src, &sb, &seeds).await;
    src.restore_object()
        .bucket(&sb)
        .key("cold/thawed")
        .restore_request(aws_sdk_s3::types::RestoreRequest::builder().days(1).build())
        .send()
        .await
        .expect("restore");
    let config = env.write_config(
        "archived.toml",
        &rule_toml("cold", &sb, &db, "stop = \"empty:2\"\ninterval = \"1s\""),
    );
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let dir = env.dir.path();
    let mut worker = spawn_ferry(
        dir,
        "worker",
        &["worker", "--config", &config, "--metrics-listen", &metrics],
    );
    let mut coordinator = spawn_ferry(dir, "coordinator", &["coordinator", "--config", &config]);
    wait_exit_ok(&mut coordinator, Duration::from_secs(120));
    let finished = history(&env.redis, &env.ns, "cold").await;
    assert_eq!(
        finished,
        vec![3, 2, 1],
        "one copying iteration, then two empty ones"
    );
    for n in 1..=3 {
        let r = iteration_record(&env.redis, &env.ns, "cold", n).await;
        assert_eq!(r.get("archived"), Some(&2), "iteration {n}: {r:?}");
        assert_eq!(r.get("dead"), None, "iteration {n}: {r:?}");
        let copied = if n == 1 { Some(&2) } else { None };
        assert_eq!(r.get("copied"), copied, "iteration {n}: {r:?}");
    }
    let dst_keys: Vec<String> = list_keys(&env.dst.client(), &db)
        .await
        .into_iter()
        .map(|k| k.0)
        .collect();
    assert_eq!(
        dst_keys,
        vec!["cold/thawed".to_string(), "warm/a".to_string()]
    );
    let skipped = samples(&scrape(metrics_port), "ferry_objects_skipped_total");
    let archived: f64 = skipped
        .iter()
        .filter(|(l, _)| l.contains("reason=\"archived\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(archived, 6.0, "{skipped:?}");
    let (code, out, err) = ferry_output(&["status", "--config", &config, "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status json");
    assert_eq!(status["rules"][0]["last_iterations"][0]["archived"], 2);
    assert_eq!(status["rules"][0]["last_iterations"][0]["empty"], true);
    worker.sigterm();
    worker.wait_timeout(Duration::from_secs(30));

    // archived = "fail": dead letters that say why.
    let (sb2, db2) = env.bucket_pair().await;
    seed(&src, &sb2, &seeds[..2]).await;
    let config = env.write_config(
        "archived-fail.toml",
        &rule_toml(
            "cold-fail",
            &sb2,
            &db2,
            "stop = \"once\"\narchived = \"fail\"",
        ),
    );
    let mut run = spawn_ferry(dir, "run-fail", &["run", "--config", &config]);
    let status = run
        .wait_timeout(Duration::from_secs(120))
        .expect("run finished");
    assert_eq!(
        status.code(),
        Some(1),
        "a failed iteration with stop = once exits 1"
    );
    let (code, out, err) = ferry_output(&[
        "dead-letters",
        "--config",
        &config,
        "list",
        "cold-fail",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let dead: serde_json::Value = serde_json::from_str(&out).expect("dead letters json");
    let letters = dead[0]["dead"].as_array().expect("dead letters");
    assert_eq!(letters.len(), 1, "{dead}");
    assert_eq!(letters[0]["key"], "cold/frozen");
    let error = letters[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("archived"), "{error}");
    assert!(error.contains("InvalidObjectState"), "{error}");
}

/// Bytes flipped on the way from the source are refused by the destination (Content-MD5 on
/// Garage) or caught by the ETag comparison (moto, which checks nothing), and the retry
/// copies the right ones.
async fn bytes_corrupted_in_transit_never_land(kind: Kind) {
    let env = Env::start_on("corrupt", S3Server::of(kind), S3Server::of(kind));
    let (sb, db) = env.bucket_pair().await;
    let seeds: Vec<Seed> = (0..5)
        .map(|i| Seed::new(format!("c/{i}"), harness::data::pattern(i, 0, 50_000)))
        .collect();
    seed(&env.src.client(), &sb, &seeds).await;
    let proxy = proxy_for(&env.src).await;
    proxy.set_rules(vec![
        Rule::new(
            "flip",
            Match {
                method: Some("GET".into()),
                path_prefix: Some(format!("/{sb}/c/3")),
                ..Match::default()
            },
            Action::Corrupt { offset: 12_345 },
        )
        .times(1),
    ]);
    let config = env.write_config_at(
        "corrupt.toml",
        &proxy.url(),
        &env.dst.url(),
        &rule_toml("corrupt", &sb, &db, "stop = \"once\""),
    );
    let log = env.run_to_completion(&config, &[], Duration::from_secs(180));
    assert_eq!(proxy.stats().hits.get("flip"), Some(&1));
    assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await;
    let record = iteration_record(&env.redis, &env.ns, "corrupt", 1).await;
    assert_eq!(record.get("copied"), Some(&5), "{record:?}");
    assert_eq!(record.get("dead"), None, "{record:?}");
    assert!(!log.contains("moved to dead letters"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_corrupted_in_transit_never_land_on_moto() {
    bytes_corrupted_in_transit_never_land(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_corrupted_in_transit_never_land_on_garage() {
    bytes_corrupted_in_transit_never_land(Kind::Garage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_corrupted_in_transit_never_land_on_rgw() {
    bytes_corrupted_in_transit_never_land(Kind::Rgw).await;
}

/// A listing page that does not parse (a garbled 200) is retried, not the end of the rule;
/// one object the source refuses for good is dead-lettered with its reason, and every other
/// object is copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_page_is_retried_and_one_refused_object_stops_nothing_else() {
    let env = Env::start("garbled");
    let (sb, db) = env.bucket_pair().await;
    let seeds: Vec<Seed> = (0..40)
        .map(|i| Seed::new(format!("g/{i:02}"), format!("object {i}")))
        .collect();
    seed(&env.src.client(), &sb, &seeds).await;
    let proxy = proxy_for(&env.src).await;
    proxy.set_rules(vec![
        Rule::new(
            "garbled",
            Match {
                method: Some("GET".into()),
                query_contains: Some("list-type=2".into()),
                ..Match::default()
            },
            Action::Reply {
                status: 200,
                body: "<?xml version=\"1.0\"?><ListBucketResult><Contents><Key>g/0".into(),
            },
        )
        .times(1),
        Rule::new(
            "refused",
            Match {
                method: Some("GET".into()),
                path_prefix: Some(format!("/{sb}/g/17")),
                ..Match::default()
            },
            Action::Status {
                status: 403,
                code: "AccessDenied".into(),
            },
        ),
    ]);
    let config = env.write_config_at(
        "garbled.toml",
        &proxy.url(),
        &env.dst.url(),
        &rule_toml("garbled", &sb, &db, "stop = \"once\""),
    );
    let mut run = spawn_ferry(
        env.dir.path(),
        "run",
        &["run", "--config", &config, "--workers", "2"],
    );
    let status = run
        .wait_timeout(Duration::from_secs(180))
        .expect("run finished");
    assert_eq!(
        status.code(),
        Some(1),
        "one dead letter fails the single iteration"
    );
    assert_eq!(proxy.stats().hits.get("garbled"), Some(&1));
    let record = iteration_record(&env.redis, &env.ns, "garbled", 1).await;
    assert_eq!(record.get("listed"), Some(&40), "{record:?}");
    assert_eq!(record.get("copied"), Some(&39), "{record:?}");
    assert_eq!(record.get("dead"), Some(&1), "{record:?}");
    let copied = list_keys(&env.dst.client(), &db).await;
    assert_eq!(copied.len(), 39);
    assert!(copied.iter().all(|k| k.0 != "g/17"));
    let (code, out, err) = ferry_output(&["dead-letters", "--config", &config, "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let dead: serde_json::Value = serde_json::from_str(&out).expect("json");
    let letter = &dead[0]["dead"][0];
    assert_eq!(letter["key"], "g/17", "{dead}");
    assert!(
        letter["error"]
            .as_str()
            .is_some_and(|e| e.contains("AccessDenied")),
        "{dead}"
    );
}

/// A Redis password holding `/`, `@` and `:`, written into the URL as it is: ferry
/// connects, replicates, and never prints it, neither in `validate` nor in logs or errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_password_with_url_characters_works_and_is_never_shown() {
    let password = "s3cr/t@pa:ss";
    let redis = Redis::start_with_password(password);
    let env = Env::start_on("password", S3Server::moto(), S3Server::moto());
    let (sb, db) = env.bucket_pair().await;
    seed(&env.src.client(), &sb, &[Seed::new("p/one", "one")]).await;
    let url = format!("redis://:{password}@127.0.0.1:{}", redis.port);
    let mut config = format!("[redis]\nurl = \"{url}\"\nnamespace = \"{}\"\n\n", env.ns);
    config += &env.src.endpoint_toml("src");
    config += &env.dst.endpoint_toml("dst");
    config += &rule_toml("pw", &sb, &db, "stop = \"once\"");
    let path = env.dir.path().join("pw.toml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap();

    let (code, out, err) = ferry_output(&["validate", "--config", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("redis://***@127.0.0.1"), "{out}");
    let log = env.run_to_completion(path, &[], Duration::from_secs(120));
    assert_eq!(bytes(&env.dst.client(), &db, "p/one").await, b"one");
    let (code, out, err) = ferry_output(&["status", "--config", path]);
    assert_eq!(code, 0, "{err}");
    // A wrong password fails clearly, still without showing either.
    let wrong = format!("redis://:n0t/th@t:one@127.0.0.1:{}", redis.port);
    let (bad_code, bad_out, bad_err) =
        ferry_output(&["status", "--config", path, "--redis", &wrong]);
    assert_ne!(bad_code, 0);
    for text in [&out, &err, &log, &bad_out, &bad_err] {
        for secret in [password, "s3cr", "pa:ss", "n0t/th@t", "th@t:one"] {
            assert!(!text.contains(secret), "{secret:?} shown in: {text}");
        }
    }
    assert!(bad_err.contains("redis://***@127.0.0.1"), "{bad_err}");
}

/// A moto multipart source (moto refuses HEAD `partNumber` with If-Match) is copied with its
/// own part sizes, so its ETag is kept, with nothing in dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_source_on_moto_keeps_its_etag() {
    let env = Env::start_on("moto-mp", S3Server::moto(), S3Server::moto());
    let (sb, db) = env.bucket_pair().await;
    let etag = put_multipart(
        &env.src.client(),
        &sb,
        "mp/object",
        &[5 * MIB, 5 * MIB, 3000],
        4,
    )
    .await;
    assert!(etag.ends_with("-3"), "{etag}");
    let config = env.write_config("mp.toml", &rule_toml("mp", &sb, &db, "stop = \"once\""));
    env.run_to_completion(&config, &[], Duration::from_secs(180));
    let record = iteration_record(&env.redis, &env.ns, "mp", 1).await;
    assert_eq!(record.get("copied"), Some(&1), "{record:?}");
    assert_eq!(record.get("dead"), None, "{record:?}");
    assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await;
    let (dst_etag, _) = harness::data::head(&env.dst.client(), &db, "mp/object").await;
    assert_eq!(dst_etag, etag);
}

/// Someone else writes the key after planning, while ferry's conditional PUT is on its way:
/// the refused write (412) is decided again against what is there now, never buried. With
/// the default rule the foreign object stays; with `overwrite_unmanaged` and `if-different`
/// ferry writes again, conditional on the foreign ETag. moto only: Garage ignores conditions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_conditional_write_is_decided_again_not_buried() {
    let env = Env::start_on("refused", S3Server::moto(), S3Server::moto());
    let (src, dst) = (env.src.client(), env.dst.client());
    let (keep_src, keep_dst) = env.bucket_pair().await;
    let (take_src, take_dst) = env.bucket_pair().await;
    let key = "race/object";
    put(&src, &keep_src, key, b"ours").await;
    put(&src, &take_src, key, b"ours").await;
    let proxy = proxy_for(&env.dst).await;
    proxy.set_rules(vec![
        Rule::new("keep", puts_to(&keep_dst, key), Action::Hold).times(1),
        Rule::new("take", puts_to(&take_dst, key), Action::Hold).times(1),
    ]);
    let rules = rule_toml("keep", &keep_src, &keep_dst, "stop = \"once\"")
        + &rule_toml(
            "take",
            &take_src,
            &take_dst,
            "stop = \"once\"\noverwrite_unmanaged = true\noverwrite = \"if-different\"",
        );
    let config = env.write_config_at("refused.toml", &env.src.url(), &proxy.url(), &rules);
    let mut run = spawn_ferry(env.dir.path(), "run", &["run", "--config", &config]);
    wait_until(Duration::from_secs(60), "both PUTs to be held", || {
        let held = proxy.stats().held;
        async move { held == 2 }
    })
    .await;
    put(&dst, &keep_dst, key, b"theirs").await;
    put(&dst, &take_dst, key, b"theirs").await;
    assert_eq!(proxy.release_held(), 2);
    wait_exit_ok(&mut run, Duration::from_secs(120));
    let late: Vec<Option<u16>> = proxy
        .events()
        .iter()
        .filter(|e| e.rule.is_some())
        .map(|e| e.late_status)
        .collect();
    assert_eq!(
        late,
        vec![Some(412), Some(412)],
        "both held writes were refused"
    );
    assert_eq!(bytes(&dst, &keep_dst, key).await, b"theirs");
    assert_eq!(bytes(&dst, &take_dst, key).await, b"ours");
    let keep = iteration_record(&env.redis, &env.ns, "keep", 1).await;
    assert_eq!(keep.get("skipped"), Some(&1), "{keep:?}");
    assert_eq!(keep.get("copied"), None, "{keep:?}");
    let take = iteration_record(&env.redis, &env.ns, "take", 1).await;
    assert_eq!(take.get("copied"), Some(&1), "{take:?}");
    for r in [&keep, &take] {
        assert_eq!(r.get("dead"), None, "{r:?}");
    }
}

/// Regression (found by the chaos runs): a source object overwritten while the copy of its
/// previous version was in flight. That copy lands after the overwrite, so the destination's
/// own Last-Modified is newer than the source's; `if-newer` must compare with the version the
/// copy holds (the ledger's), or the destination stays older than the source for good.
async fn a_source_changed_while_its_copy_was_in_flight_is_copied_again(kind: Kind) {
    let env = Env::start_on("in-flight", S3Server::of(kind), S3Server::of(kind));
    let (sb, db) = env.bucket_pair().await;
    let (src, dst) = (env.src.client(), env.dst.client());
    let key = "flight/object";
    put(&src, &sb, key, b"version 1").await;
    let proxy = proxy_for(&env.dst).await;
    proxy.set_rules(vec![
        Rule::new("hold", puts_to(&db, key), Action::Hold).times(1),
    ]);
    let config = env.write_config_at(
        "flight.toml",
        &env.src.url(),
        &proxy.url(),
        &rule_toml("flight", &sb, &db, "stop = \"once\""),
    );
    let mut run = spawn_ferry(env.dir.path(), "run-1", &["run", "--config", &config]);
    wait_until(
        Duration::from_secs(60),
        "the PUT of version 1 to be held",
        || {
            let held = proxy.stats().held;
            async move { held == 1 }
        },
    )
    .await;
    put(&src, &sb, key, b"version 2, written mid-copy").await;
    // Let the copy land a whole second later (moto's Last-Modified has whole seconds).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(proxy.release_held(), 1);
    wait_exit_ok(&mut run, Duration::from_secs(60));
    assert_eq!(bytes(&dst, &db, key).await, b"version 1");
    let log = env.run_to_completion_with(
        &config,
        &[],
        &[("RUST_LOG", "info,ferry_coordinator=debug")],
        Duration::from_secs(60),
    );
    assert_eq!(
        bytes(&dst, &db, key).await,
        b"version 2, written mid-copy",
        "{log}"
    );
    let second = iteration_record(&env.redis, &env.ns, "flight", 2).await;
    assert_eq!(second.get("copied"), Some(&1), "{second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_while_its_copy_was_in_flight_is_copied_again_on_moto() {
    a_source_changed_while_its_copy_was_in_flight_is_copied_again(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_while_its_copy_was_in_flight_is_copied_again_on_garage() {
    a_source_changed_while_its_copy_was_in_flight_is_copied_again(Kind::Garage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_while_its_copy_was_in_flight_is_copied_again_on_rgw() {
    a_source_changed_while_its_copy_was_in_flight_is_copied_again(Kind::Rgw).await;
}
