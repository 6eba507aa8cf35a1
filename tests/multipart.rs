//! Multipart copies: the threshold edges, keeping a source's part layout (and so its ETag),
//! the server-side path, a worker killed mid-copy, a source overwritten mid-copy, and a 1 GiB
//! object copied by one and by two worker processes. Big objects only on Garage.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::time::{Duration, Instant};

use ferry_testkit::proxy::{Action, FaultProxy, Match, Rule};
use harness::data::{
    Seed, assert_replica, equal_parts, fetch, head, open_uploads, put_multipart, seed,
};
use harness::{
    Env, Proc, Redis, S3Server, TempDir, free_port, history, iteration_record, samples, scrape,
    spawn_ferry, unique, wait_until,
};
use md5::{Digest, Md5};

const MIB: u64 = 1024 * 1024;

/// The ETag S3 gives an object uploaded in parts of these bodies.
fn multipart_etag_of(parts: &[&[u8]]) -> String {
    let mut outer = Md5::new();
    for part in parts {
        outer.update(Md5::digest(part));
    }
    format!("{}-{}", hex::encode(outer.finalize()), parts.len())
}

/// Waits until iteration 1 of `rule` has counted at least `n` finished part tasks.
async fn wait_for_parts(env: &Env, rule: &str, n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let record = iteration_record(&env.redis, &env.ns, rule, 1).await;
        if record.get("part").copied().unwrap_or(0) >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} parts copied in {timeout:?}: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn wait_success(p: &mut Proc, timeout: Duration) {
    let status = p
        .wait_timeout(timeout)
        .unwrap_or_else(|| panic!("{} did not finish within {timeout:?}", p.name));
    assert!(
        status.success(),
        "{} exited with {status}:\n{}",
        p.name,
        p.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_around_the_threshold_are_copied_whole_or_in_parts() {
    let env = Env::start_on("mp-edges", S3Server::moto(), S3Server::moto());
    let (sb, db) = env.bucket_pair().await;
    let t = 5 * MIB;
    let mut seeds: Vec<Seed> = [("below", t - 1), ("at", t), ("above", t + 1), ("small", 10)]
        .into_iter()
        .map(|(name, len)| {
            let mut s = Seed::new(
                format!("edge/{name}"),
                harness::data::pattern(len, 0, len as usize),
            );
            s.content_type = Some("application/x-edge".into());
            s.metadata.insert("case".into(), name.into());
            s
        })
        .collect();
    seeds.sort_by(|a, b| a.key.cmp(&b.key));
    seed(&env.src.client(), &sb, &seeds).await;
    let rule = harness::rule_toml(
        "edges",
        &sb,
        &db,
        "stop = \"once\"\nmultipart_threshold = \"5MiB\"\npart_size = \"5MiB\"",
    );
    let config = env.write_config("edges.toml", &rule);
    env.run_to_completion(&config, &[], Duration::from_secs(300));

    let (src, dst) = (env.src.client(), env.dst.client());
    for s in &seeds {
        let a = fetch(&src, &sb, &s.key).await;
        let b = fetch(&dst, &db, &s.key).await;
        assert!(a.body == b.body, "{}: bytes differ", s.key);
        assert_eq!(a.headers, b.headers, "{}", s.key);
        assert_eq!(a.metadata, b.metadata, "{}", s.key);
        let body = &s.body[..];
        let expected = match s.key.as_str() {
            // below the threshold: one PUT, so the plain MD5 ETag of the source
            "edge/below" | "edge/small" => a.etag.clone(),
            "edge/at" => format!("\"{}\"", multipart_etag_of(&[body])),
            _ => format!(
                "\"{}\"",
                multipart_etag_of(&[&body[..t as usize], &body[t as usize..]])
            ),
        };
        assert_eq!(b.etag, expected, "{}", s.key);
    }
    let record = iteration_record(&env.redis, &env.ns, "edges", 1).await;
    assert_eq!(record.get("copied"), Some(&4), "{record:?}");
    assert_eq!(
        record.get("split"),
        Some(&2),
        "two objects in parts: {record:?}"
    );
    assert_eq!(
        record.get("part"),
        Some(&1),
        "three parts, two of them last: {record:?}"
    );
    assert_eq!(record.get("dead"), None, "{record:?}");
    assert!(open_uploads(&dst, &db).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_source_keeps_its_part_sizes_and_etag() {
    keeps_part_sizes_and_etag(S3Server::garage(), S3Server::garage()).await;
}

/// RGW 16 ignores `partNumber`: the part sizes are inferred from the ETag's part count and
/// the size (before, a `-7` source became `-8` with ferry's own 5 MiB parts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_source_on_rgw_keeps_its_etag_by_inferred_part_sizes() {
    keeps_part_sizes_and_etag(S3Server::rgw(), S3Server::rgw()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_source_on_rgw_keeps_its_etag_on_garage() {
    keeps_part_sizes_and_etag(S3Server::rgw(), S3Server::garage()).await;
}

async fn keeps_part_sizes_and_etag(src: S3Server, dst: S3Server) {
    let env = Env::start_on("mp-layout", src, dst);
    let (sb, db) = env.bucket_pair().await;
    // six 6 MiB parts and a 1 MiB tail: neither the default part size nor the threshold's
    let etag = put_multipart(
        &env.src.client(),
        &sb,
        "layout/six-and-a-tail",
        &equal_parts(6, 6 * MIB, MIB),
        7,
    )
    .await;
    assert!(etag.ends_with("-7"), "{etag}");
    // six parts of 6 MiB, the last one 2 MiB: `-6`
    let etag = put_multipart(
        &env.src.client(),
        &sb,
        "layout/six",
        &equal_parts(5, 6 * MIB, 2 * MIB),
        6,
    )
    .await;
    assert!(etag.ends_with("-6"), "{etag}");
    // 5 + 5 MiB + 4 KiB: parts of 4 MiB would make 3 parts too; only the bytes tell which.
    let etag = put_multipart(
        &env.src.client(),
        &sb,
        "layout/two-sizes-fit",
        &[5 * MIB, 5 * MIB, 4096],
        8,
    )
    .await;
    assert!(etag.ends_with("-3"), "{etag}");
    let rule = harness::rule_toml("layout", &sb, &db, "stop = \"once\"");
    let config = env.write_config("layout.toml", &rule);
    env.run_to_completion(&config, &[], Duration::from_secs(300));
    // bytes, ETag, headers and metadata all equal
    assert_eq!(
        assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await,
        3
    );
    let record = iteration_record(&env.redis, &env.ns, "layout", 1).await;
    assert_eq!(record.get("split"), Some(&3), "{record:?}");
    assert_eq!(record.get("part"), Some(&13), "{record:?}");
    assert_eq!(record.get("etag_differs"), None, "{record:?}");
    assert!(open_uploads(&env.dst.client(), &db).await.is_empty());
}

/// A source of unequal parts: no layout of equal parts gives its ETag, so the copy's differs;
/// the bytes are verified all the same, and the iteration, `ferry status` and the log say so.
async fn unequal_parts_are_copied_and_said_to_differ(src: S3Server, dst: S3Server) {
    let env = Env::start_on("mp-unequal", src, dst);
    let (sb, db) = env.bucket_pair().await;
    let client = env.src.client();
    // 11 MiB in two parts, the last one larger: below the threshold, one request.
    put_multipart(&client, &sb, "unequal/small", &[5 * MIB, 6 * MIB], 3).await;
    // 12 MiB in three: at the threshold, in ferry's own 5 MiB parts.
    put_multipart(&client, &sb, "unequal/split", &[6 * MIB, 5 * MIB, MIB], 4).await;
    let rules = harness::rule_toml(
        "unequal",
        &sb,
        &db,
        "stop = \"once\"\nmultipart_threshold = \"12MiB\"\npart_size = \"5MiB\"",
    );
    let config = env.write_config("unequal.toml", &rules);
    let log = env.run_to_completion(&config, &[], Duration::from_secs(300));
    for key in ["unequal/small", "unequal/split"] {
        let (a, b) = (
            harness::data::fetch(&client, &sb, key).await,
            harness::data::fetch(&env.dst.client(), &db, key).await,
        );
        assert!(a.body == b.body, "{key}: bytes differ");
        assert_ne!(
            a.etag, b.etag,
            "{key}: no equal parts make the source's ETag"
        );
    }
    let record = iteration_record(&env.redis, &env.ns, "unequal", 1).await;
    assert_eq!(record.get("copied"), Some(&2), "{record:?}");
    assert_eq!(record.get("split"), Some(&1), "{record:?}");
    assert_eq!(record.get("etag_differs"), Some(&2), "{record:?}");
    assert_eq!(record.get("dead"), None, "{record:?}");
    assert!(log.contains("ETag differs: source layout unknown"), "{log}");
    let (code, status, err) = harness::ferry_output(&["status", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(
        status.contains("ETag differs: source layout unknown"),
        "{status}"
    );
    assert!(open_uploads(&env.dst.client(), &db).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unequal_parts_are_copied_and_said_to_differ_on_rgw() {
    unequal_parts_are_copied_and_said_to_differ(S3Server::rgw(), S3Server::rgw()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unequal_parts_are_copied_and_said_to_differ_on_garage() {
    unequal_parts_are_copied_and_said_to_differ(S3Server::garage(), S3Server::garage()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_endpoint_no_bytes_flow_through_workers() {
    let server = S3Server::garage();
    let redis = Redis::start();
    let dir = TempDir::new("mp-server-side");
    let ns = unique("ns");
    let (sb, db) = (unique("s"), unique("d"));
    server.create_bucket(&sb).await;
    server.create_bucket(&db).await;
    let client = server.client();
    put_multipart(
        &client,
        &sb,
        "same/layout",
        &equal_parts(6, 6 * MIB, MIB),
        9,
    )
    .await;
    let mut whole = Seed::new(
        "same/whole",
        harness::data::pattern(3, 0, 12 * MIB as usize),
    );
    whole.metadata.insert("kind".into(), "whole".into());
    seed(&client, &sb, &[whole, Seed::new("same/small", "tiny")]).await;
    let config = dir.path().join("same.toml");
    std::fs::write(
        &config,
        format!(
            "[redis]\nurl = \"{}\"\nnamespace = \"{ns}\"\n\n{}\
             [[rules]]\nname = \"same\"\nstop = \"once\"\n\
             multipart_threshold = \"5MiB\"\npart_size = \"5MiB\"\n\
             source = {{ endpoint = \"one\", bucket = \"{sb}\" }}\n\
             destination = {{ endpoint = \"one\", bucket = \"{db}\" }}\n",
            redis.url(),
            server.endpoint_toml("one"),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let _worker = spawn_ferry(
        dir.path(),
        "worker",
        &["worker", "--config", config, "--metrics-listen", &metrics],
    );
    let mut coordinator = spawn_ferry(
        dir.path(),
        "coordinator",
        &["coordinator", "--config", config],
    );
    wait_success(&mut coordinator, Duration::from_secs(300));
    assert_eq!(history(&redis, &ns, "same").await.len(), 1);

    let requests = samples(&scrape(metrics_port), "ferry_s3_requests_total");
    let count = |op: &str| {
        requests
            .iter()
            .find(|(labels, _)| labels.contains(&format!("operation=\"{op}\"")))
            .map_or(0.0, |(_, v)| *v)
    };
    // 7 parts of the multipart source + 3 of the 12 MiB object; one CopyObject
    assert_eq!(count("UploadPartCopy"), 10.0, "{requests:?}");
    assert_eq!(count("CopyObject"), 1.0, "{requests:?}");
    // The capability probe's requests count apart, so none of these are its.
    assert_eq!(count("PutObject"), 0.0, "{requests:?}");
    assert_eq!(count("DeleteObject"), 0.0, "{requests:?}");
    let probed = samples(&scrape(metrics_port), "ferry_probe_requests_total");
    assert!(
        probed.iter().map(|(_, v)| v).sum::<f64>() >= 20.0,
        "{probed:?}"
    );
    for op in ["GetObject", "UploadPart"] {
        assert_eq!(
            count(op),
            0.0,
            "{op} moved bytes through the worker: {requests:?}"
        );
    }
    for key in ["same/layout", "same/whole", "same/small"] {
        let a = fetch(&client, &sb, key).await;
        let b = fetch(&client, &db, key).await;
        assert!(a.body == b.body, "{key}: bytes differ");
        assert_eq!(a.metadata, b.metadata, "{key}");
        if key == "same/layout" {
            assert_eq!(a.etag, b.etag, "the source's part sizes give its ETag");
        }
    }
    assert!(open_uploads(&client, &db).await.is_empty());
}

/// Starts a coordinator for `config` and `workers` workers (`--lease 3s`, so a dead worker's
/// parts are claimed again quickly), each with its own metrics port.
fn start_cluster(env: &Env, config: &str, workers: &[&str], extra: &[&str]) -> Vec<(Proc, u16)> {
    start_cluster_with_lease(env, config, workers, "3s", extra)
}

/// [`start_cluster`] with leases of `lease`.
fn start_cluster_with_lease(
    env: &Env,
    config: &str,
    workers: &[&str],
    lease: &str,
    extra: &[&str],
) -> Vec<(Proc, u16)> {
    workers
        .iter()
        .map(|id| {
            let port = free_port();
            let metrics = format!("127.0.0.1:{port}");
            let mut args = vec![
                "worker",
                "--config",
                config,
                "--id",
                id,
                "--lease",
                lease,
                "--metrics-listen",
                &metrics,
            ];
            args.extend_from_slice(extra);
            (spawn_ferry(env.dir.path(), id, &args), port)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_copy_loses_nothing() {
    let src = S3Server::garage();
    let dst = S3Server::garage();
    let env = Env::start_on("mp-kill", src, dst);
    let (sb, db) = env.bucket_pair().await;
    let etag = put_multipart(
        &env.src.client(),
        &sb,
        "big/object",
        &equal_parts(40, 5 * MIB, 0),
        11,
    )
    .await;
    let rule = harness::rule_toml("kill", &sb, &db, "stop = \"once\"\npart_size = \"5MiB\"");
    let config = env.write_config("kill.toml", &rule);
    // The victim writes through a proxy that holds its UploadParts, so it dies with parts in
    // flight that no earlier attempt recorded: whatever the timing, their retries must look
    // for them in ListParts.
    let proxy = FaultProxy::start(&env.dst.authority())
        .await
        .expect("starting the fault proxy");
    // Only the object's parts: the capability probe's own part goes through.
    let uploads = Match {
        method: Some("PUT".into()),
        path_prefix: Some(format!("/{db}/big/")),
        query_contains: Some("partNumber=".into()),
        ..Match::default()
    };
    proxy.set_rules(vec![Rule::new("hold", uploads, Action::Hold)]);
    let held = env.write_config_at("held.toml", &env.src.url(), &proxy.url(), &rule);
    let limits = ["--concurrency", "4", "--part-concurrency", "4"];
    let mut victim = start_cluster(&env, &held, &["victim"], &limits).remove(0).0;
    // Keep the survivor's process: dropping it would stop it.
    let (_survivor, survivor) = start_cluster(&env, &config, &["survivor"], &limits).remove(0);
    let mut coordinator = spawn_ferry(
        env.dir.path(),
        "coordinator",
        &["coordinator", "--config", &config],
    );
    wait_for_parts(&env, "kill", 6, Duration::from_secs(120)).await;
    wait_until(
        Duration::from_secs(60),
        "an UploadPart of the victim held",
        || {
            let held = proxy.stats().held;
            async move { held > 0 }
        },
    )
    .await;
    victim.kill9();
    wait_success(&mut coordinator, Duration::from_secs(300));

    let (copied, size) = head(&env.dst.client(), &db, "big/object").await;
    assert_eq!((copied.as_str(), size), (etag.as_str(), 200 * MIB as i64));
    assert!(open_uploads(&env.dst.client(), &db).await.is_empty());
    let record = iteration_record(&env.redis, &env.ns, "kill", 1).await;
    assert_eq!(record.get("dead"), None, "{record:?}");
    assert_eq!(record.get("copied"), Some(&1), "{record:?}");
    let survivor = scrape(survivor);
    let parts = samples(&survivor, "ferry_parts_copied_total");
    assert!(
        parts.iter().map(|(_, v)| v).sum::<f64>() > 0.0,
        "the survivor copied parts: {parts:?}"
    );
    // the victim's parts came back as retries, which look for themselves in ListParts first
    let requests = samples(&survivor, "ferry_s3_requests_total");
    assert!(
        requests
            .iter()
            .any(|(labels, v)| labels.contains("operation=\"ListParts\"") && *v > 0.0),
        "no retried part checked ListParts: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_overwritten_mid_copy_ends_as_the_new_version() {
    let src = S3Server::garage();
    let dst = S3Server::garage();
    let env = Env::start_on("mp-overwrite", src, dst);
    let (sb, db) = env.bucket_pair().await;
    let client = env.src.client();
    put_multipart(
        &client,
        &sb,
        "moving/object",
        &equal_parts(40, 5 * MIB, 0),
        21,
    )
    .await;
    let rule = harness::rule_toml("moving", &sb, &db, "stop = \"once\"\npart_size = \"5MiB\"");
    let config = env.write_config("moving.toml", &rule);
    let limits = ["--concurrency", "2", "--part-concurrency", "2"];
    let workers = start_cluster(&env, &config, &["only"], &limits);
    let mut coordinator = spawn_ferry(
        env.dir.path(),
        "coordinator",
        &["coordinator", "--config", &config],
    );
    wait_for_parts(&env, "moving", 3, Duration::from_secs(120)).await;
    // Hold the worker still while the source is replaced by a new version with another
    // layout, so the copy is certainly mid-way when it changes.
    workers[0].0.signal("STOP");
    let new_etag = put_multipart(
        &client,
        &sb,
        "moving/object",
        &equal_parts(8, 7 * MIB, 3 * MIB),
        22,
    )
    .await;
    workers[0].0.signal("CONT");
    wait_success(&mut coordinator, Duration::from_secs(300));

    let a = fetch(&client, &sb, "moving/object").await;
    let b = fetch(&env.dst.client(), &db, "moving/object").await;
    assert_eq!(a.etag.trim_matches('"'), new_etag);
    assert_eq!(b.etag, a.etag, "the new version, with its own part sizes");
    assert!(a.body == b.body, "bytes differ");
    assert!(open_uploads(&env.dst.client(), &db).await.is_empty());
    let record = iteration_record(&env.redis, &env.ns, "moving", 1).await;
    // At least one part saw 412 and re-planned the object. On a loaded machine the stopped
    // worker's 3 s leases may also run out, which adds re-plans and (at-least-once) copies,
    // but never a dead letter or a mixed result.
    assert!(
        record.get("replanned").is_some_and(|n| *n >= 1),
        "{record:?}"
    );
    assert!(record.get("copied").is_some_and(|n| *n >= 1), "{record:?}");
    assert_eq!(record.get("dead"), None, "{record:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_is_copied_by_one_and_by_two_workers() {
    let src = S3Server::garage();
    let dst = S3Server::garage();
    let mut env = Env::start_on("mp-gib", src, dst);
    let sb = unique("s");
    env.src.create_bucket(&sb).await;
    // 1 GiB in 50 MiB parts (the default part size), generated one part at a time
    let layout = equal_parts(20, 50 * MIB, 24 * MIB);
    let etag = put_multipart(&env.src.client(), &sb, "gib/object", &layout, 31).await;

    let mut rows = Vec::new();
    for n in [1usize, 2] {
        // a namespace per run: two rules from one source bucket may not share one
        env.ns = unique("ns");
        let db = unique("d");
        env.dst.create_bucket(&db).await;
        let rule_name = format!("gib{n}");
        let rule = harness::rule_toml(&rule_name, &sb, &db, "stop = \"once\"");
        let config = env.write_config(&format!("{rule_name}.toml"), &rule);
        let ids: Vec<String> = (0..n).map(|i| format!("w{n}-{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        // Nothing here is about dead workers: the default lease, so that a loaded machine
        // does not turn slow renewals into redone parts.
        let workers = start_cluster_with_lease(&env, &config, &ids, "30s", &[]);
        let started = Instant::now();
        let mut coordinator = spawn_ferry(
            env.dir.path(),
            &format!("coordinator-{n}"),
            &["coordinator", "--config", &config],
        );
        wait_success(&mut coordinator, Duration::from_secs(600));
        let seconds = started.elapsed().as_secs_f64();
        let (copied, size) = head(&env.dst.client(), &db, "gib/object").await;
        assert_eq!((copied.as_str(), size), (etag.as_str(), 1024 * MIB as i64));
        assert!(open_uploads(&env.dst.client(), &db).await.is_empty());
        let per_worker: Vec<f64> = workers
            .iter()
            .map(|(_, port)| {
                samples(&scrape(*port), "ferry_parts_copied_total")
                    .iter()
                    .map(|(_, v)| v)
                    .sum()
            })
            .collect();
        assert_eq!(per_worker.iter().sum::<f64>(), 21.0, "{per_worker:?}");
        assert!(
            per_worker.iter().all(|p| *p > 0.0),
            "every worker copied parts: {per_worker:?}"
        );
        let peak_mib: Vec<u64> = workers
            .iter()
            .filter_map(|(p, _)| p.peak_rss_kib().map(|k| k / 1024))
            .collect();
        rows.push(format!(
            "| {n} | {seconds:.1} | {:.0} | {per_worker:?} | {peak_mib:?} |",
            1024.0 / seconds
        ));
    }
    eprintln!("| workers | seconds | MiB/s | parts per worker | peak RSS per worker (MiB) |");
    eprintln!("|---|---|---|---|---|");
    for row in rows {
        eprintln!("{row}");
    }
}

#[test]
fn the_test_pattern_is_the_same_however_it_is_cut() {
    let whole = harness::data::pattern(5, 100, 3 * 1024 * 1024);
    let mut pieces = harness::data::pattern(5, 100, 5000);
    pieces.extend(harness::data::pattern(5, 5100, 3 * 1024 * 1024 - 5000));
    assert!(whole == pieces);
    assert!(whole[..4096] != whole[1024 * 1024..1024 * 1024 + 4096]);
}
