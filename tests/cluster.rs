//! ferry on a real Redis Cluster: 3 masters with a replica each (`redis-server
//! --cluster-enabled yes`, joined by `redis-cli --cluster create`). Every per-rule key carries
//! the rule's hash tag, so each rule's scripts run on one master; the client follows slots,
//! redirects and failovers.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_testkit::cluster::RedisCluster;
use harness::data::{Seed, assert_replica, put_multipart, seed};
use harness::{S3Server, TempDir, ferry_output, rule_toml, spawn_ferry, unique};
use redis::AsyncCommands;

/// A connection to the cluster, as a user's `redis-cli -c` would have.
async fn cluster_conn(cluster: &RedisCluster) -> redis::cluster_async::ClusterConnection {
    redis::cluster::ClusterClient::new(cluster.urls())
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("connecting to the cluster")
}

/// The numeric fields of iteration `n` of `rule`.
async fn record(
    conn: &mut redis::cluster_async::ClusterConnection,
    ns: &str,
    rule: &str,
    n: u64,
) -> HashMap<String, u64> {
    let raw: HashMap<String, String> = conn
        .hgetall(format!("{ns}:{{{rule}}}:it:{n}"))
        .await
        .expect("reading the iteration record");
    harness::numeric_fields(raw)
}

/// Writes a config for `cluster` with endpoints `src` and `dst` and `rules`.
fn write_config(
    dir: &TempDir,
    cluster: &RedisCluster,
    ns: &str,
    (src, dst): (&S3Server, &S3Server),
    rules: &str,
) -> String {
    let mut text = cluster.redis_toml(ns);
    text += &src.endpoint_toml("src");
    text += &dst.endpoint_toml("dst");
    text += rules;
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, text).expect("writing config");
    path.to_str().expect("utf-8 path").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_replicate_through_a_redis_cluster_of_three_masters_on_moto() {
    let cluster = RedisCluster::start(3, 1);
    let (src, dst) = (S3Server::moto(), S3Server::moto());
    let dir = TempDir::new("cluster");
    let ns = unique("ns");
    // Two rules whose tags hash to different masters, so both the per-rule keys and the
    // fleet-wide ones (rules, workers) are spread over the cluster.
    let names = ["photos", "logs"];
    assert_ne!(
        cluster.master_of(&format!("{ns}:{{photos}}:tasks")),
        cluster.master_of(&format!("{ns}:{{logs}}:tasks")),
        "pick rule names on different masters"
    );
    let mut rules = String::new();
    let mut buckets = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (sb, db) = (unique("s"), unique("d"));
        src.create_bucket(&sb).await;
        dst.create_bucket(&db).await;
        let seeds: Vec<Seed> = (0..300)
            .map(|k| Seed::new(format!("p{}/obj-{k:04}", k % 7), format!("{name} {k}")))
            .collect();
        seed(&src.client(), &sb, &seeds).await;
        if i == 0 {
            // A multipart object: part tasks and the upload's records live in the cluster too.
            put_multipart(
                &src.client(),
                &sb,
                "big/video.bin",
                &[5 << 20, 5 << 20, 1 << 20],
                7,
            )
            .await;
        }
        rules += &rule_toml(
            name,
            &sb,
            &db,
            "stop = \"once\"\nmultipart_threshold = \"8MiB\"\npart_size = \"5MiB\"",
        );
        buckets.push((sb, db));
    }
    let config = write_config(&dir, &cluster, &ns, (&src, &dst), &rules);
    let mut run = spawn_ferry(
        dir.path(),
        "run",
        &[
            "run",
            "--config",
            &config,
            "--workers",
            "2",
            "--concurrency",
            "8",
        ],
    );
    let status = run
        .wait_timeout(Duration::from_secs(180))
        .expect("ferry run did not finish");
    assert!(status.success(), "ferry run failed:\n{}", run.log_text());

    let mut conn = cluster_conn(&cluster).await;
    for (name, (sb, db)) in names.iter().zip(&buckets) {
        let expected: u64 = if *name == "photos" { 301 } else { 300 };
        assert_eq!(
            assert_replica(&src.client(), sb, &dst.client(), db, None).await as u64,
            expected
        );
        let r = record(&mut conn, &ns, name, 1).await;
        assert_eq!(r.get("listed"), Some(&expected), "{name}: {r:?}");
        assert_eq!(r.get("copied"), Some(&expected), "{name}: {r:?}");
        assert_eq!(r.get("dead"), None, "{name}: {r:?}");
    }
    let registered: HashMap<String, Vec<u8>> = conn
        .hgetall(format!("{ns}:rules"))
        .await
        .expect("rules registry");
    assert_eq!(registered.len(), 2, "both rules registered");

    let (code, out, err) = ferry_output(&["status", "--config", &config]);
    assert_eq!(code, 0, "ferry status failed: {err}");
    for name in names {
        assert!(out.contains(name), "status lacks {name}:\n{out}");
    }
    // Forgetting a rule on a cluster (`--replace-rule`'s first step) finds its keys in its
    // slot, on its master.
    let queue = ferry_queue::Queue::connect(
        &ferry_core::config::RedisConfig::cluster(&cluster.urls(), ns.clone()),
        ferry_queue::Persistence::FailFast,
    )
    .await
    .expect("connecting ferry's queue to the cluster");
    let deleted = queue.forget_rule("logs").await.expect("forgetting a rule");
    assert!(deleted >= 5, "only {deleted} keys of the rule were deleted");
    let left: HashMap<String, String> = conn
        .hgetall(format!("{ns}:{{logs}}:it:1"))
        .await
        .expect("reading");
    assert!(
        left.is_empty(),
        "the forgotten rule's record is still there"
    );
    let photos = record(&mut conn, &ns, "photos", 1).await;
    assert_eq!(
        photos.get("copied"),
        Some(&301),
        "the other rule was touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_iteration_fails_over_to_its_replica_and_nothing_is_lost_on_moto() {
    let mut cluster = RedisCluster::start(3, 1);
    let (src, dst) = (S3Server::moto(), S3Server::moto());
    let dir = TempDir::new("cluster-failover");
    let ns = unique("ns");
    let (sb, db) = (unique("s"), unique("d"));
    src.create_bucket(&sb).await;
    dst.create_bucket(&db).await;
    let n = 2_000u64;
    let seeds: Vec<Seed> = (0..n)
        .map(|i| Seed::new(format!("p{:02}/obj-{i:05}", i % 20), format!("body {i}")))
        .collect();
    seed(&src.client(), &sb, &seeds).await;
    let config = write_config(
        &dir,
        &cluster,
        &ns,
        (&src, &dst),
        &rule_toml("dr", &sb, &db, "stop = \"once\""),
    );
    let mut coordinator = spawn_ferry(
        dir.path(),
        "coordinator",
        &[
            "coordinator",
            "--config",
            &config,
            "--max-outstanding",
            "200",
        ],
    );
    let mut worker = spawn_ferry(
        dir.path(),
        "worker",
        &[
            "worker",
            "--config",
            &config,
            "--id",
            "w",
            "--concurrency",
            "4",
        ],
    );
    let mut conn = cluster_conn(&cluster).await;
    let record_key = format!("{ns}:{{dr}}:it:1");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let copied: Option<u64> = conn.hget(&record_key, "copied").await.unwrap_or(None);
        if copied.unwrap_or(0) >= 200 {
            assert!(
                copied.unwrap_or(0) < n,
                "the iteration finished before the kill; the test needs a slower worker"
            );
            break;
        }
        assert!(Instant::now() < deadline, "copying never got under way");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let master = cluster.master_of(&record_key);
    cluster.kill9(master);
    let promoted = cluster.wait_failover(&record_key, master, Duration::from_secs(60));
    eprintln!("killed the rule's master on {master}; its replica on {promoted} took over");

    let status = coordinator
        .wait_timeout(Duration::from_secs(300))
        .expect("the coordinator did not finish the iteration after the failover");
    assert!(
        status.success(),
        "coordinator exited with {status}:\n{}",
        coordinator.log_text()
    );
    let mut conn = cluster_conn(&cluster).await;
    let r = record(&mut conn, &ns, "dr", 1).await;
    assert_eq!(
        r.get("listed"),
        Some(&n),
        "listed lost or counted twice: {r:?}"
    );
    assert_eq!(
        r.get("planned"),
        Some(&n),
        "planned lost or counted twice: {r:?}"
    );
    assert_eq!(
        r.get("copied"),
        Some(&n),
        "copies lost or counted twice: {r:?}"
    );
    assert_eq!(r.get("dead"), None, "{r:?}");
    let history: Vec<u64> = conn
        .lrange(format!("{ns}:{{dr}}:history"), 0, -1)
        .await
        .expect("history");
    assert_eq!(history, [1], "one iteration, carried through the failover");
    let leases: u64 = conn
        .zcard(format!("{ns}:{{dr}}:leases"))
        .await
        .expect("leases");
    assert_eq!(leases, 0, "leases left open");
    worker.sigterm();
    assert!(
        worker
            .wait_timeout(Duration::from_secs(30))
            .is_some_and(|s| s.success()),
        "the worker did not stop cleanly:\n{}",
        worker.log_text()
    );
    assert_eq!(
        assert_replica(&src.client(), &sb, &dst.client(), &db, None).await,
        n as usize
    );
}
