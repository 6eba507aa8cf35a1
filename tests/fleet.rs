//! Operating a fleet: `ferry queues` sees the backlog on the right shards and every worker;
//! a worker started mid-iteration takes part; a killed one shows as dead and its tasks come
//! back; /metrics parses and agrees with what was copied; dead letters can be listed,
//! retried and purged.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferry_core::config::RedisConfig;
use ferry_core::shard::shard_of;
use ferry_core::task::{Expected, ObjectVersion, Task};
use ferry_queue::{Abandon, Queue, WorkerQueue};
use harness::data::{Seed, head, list_keys, seed};
use harness::{Env, ferry_output, free_port, samples, scrape, spawn_ferry};
use serde_json::Value;

fn queues_json(config: &str) -> Value {
    let (code, out, err) = ferry_output(&["queues", "--config", config, "--json"]);
    assert_eq!(code, 0, "ferry queues failed: {err}");
    serde_json::from_str(&out).expect("ferry queues --json prints JSON")
}

fn rule_totals(view: &Value, rule: &str) -> (u64, u64) {
    let r = view["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule)
        .expect("the rule is listed");
    (
        r["pending"].as_u64().unwrap(),
        r["leased"].as_u64().unwrap(),
    )
}

fn worker_state(view: &Value, id: &str) -> Option<bool> {
    view["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .map(|w| w["alive"].as_bool().unwrap())
}

async fn wait_for<F: FnMut() -> bool>(what: &str, timeout: Duration, mut cond: F) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn worker(env: &Env, config: &str, id: &str, port: u16) -> harness::Proc {
    let metrics = format!("127.0.0.1:{port}");
    spawn_ferry(
        env.dir.path(),
        id,
        &[
            "worker",
            "--config",
            config,
            "--id",
            id,
            "--concurrency",
            "1",
            "--lease",
            "3s",
            "--metrics-listen",
            &metrics,
        ],
    )
}

/// Every sample line is `name{labels} value`, every other line a `# HELP`/`# TYPE` comment.
fn assert_prometheus_text(text: &str) {
    assert!(!text.is_empty(), "empty /metrics");
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("ferry_")
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad metric name in {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "bad value in {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_shows_the_backlog_and_the_fleet_as_workers_join_and_die() {
    let env = Env::start("fleet");
    let (sb, db) = env.bucket_pair().await;
    let n = 4_000;
    let seeds: Vec<Seed> = (0..n)
        .map(|i| Seed::new(format!("p{:02}/o{i:05}", i % 32), format!("{i}")))
        .collect();
    seed(&env.src.client(), &sb, &seeds).await;
    let rule = harness::rule_toml("fleet", &sb, &db, "stop = \"once\"");
    let config = env.write_config("fleet.toml", &rule);

    // Plan with no worker running: the whole backlog is pending, on the keys' shards.
    let mut coordinator = spawn_ferry(
        env.dir.path(),
        "coordinator",
        &["coordinator", "--config", &config],
    );
    wait_for("the plan", Duration::from_secs(120), || {
        rule_totals(&queues_json(&config), "fleet").0 == n as u64
    })
    .await;
    let view = queues_json(&config);
    let shards: BTreeSet<u64> = view["rules"][0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pending"].as_u64().unwrap() > 0)
        .map(|s| s["shard"].as_u64().unwrap())
        .collect();
    let expected: BTreeSet<u64> = seeds
        .iter()
        .map(|s| u64::from(shard_of("", &s.key)))
        .collect();
    assert_eq!(shards, expected, "pending tasks sit on their keys' shards");

    // Three workers join and show as live, holding leases.
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let mut w1 = worker(&env, &config, "w1", ports[0]);
    let _w2 = worker(&env, &config, "w2", ports[1]);
    let _w3 = worker(&env, &config, "w3", ports[2]);
    wait_for("three live workers", Duration::from_secs(30), || {
        let view = queues_json(&config);
        ["w1", "w2", "w3"]
            .iter()
            .all(|w| worker_state(&view, w) == Some(true))
    })
    .await;
    let (pending, leased) = rule_totals(&queues_json(&config), "fleet");
    assert!(pending + leased > 0, "work left to see");

    // A fourth joins mid-iteration; the first dies holding a lease.
    let _w4 = worker(&env, &config, "w4", ports[3]);
    wait_for("w4 to register", Duration::from_secs(30), || {
        worker_state(&queues_json(&config), "w4") == Some(true)
    })
    .await;
    w1.kill9();
    let status = coordinator
        .wait_timeout(Duration::from_secs(300))
        .expect("the iteration finishes");
    assert!(status.success(), "{}", coordinator.log_text());
    wait_for("w1 to show as dead", Duration::from_secs(30), || {
        worker_state(&queues_json(&config), "w1") == Some(false)
    })
    .await;

    let view = queues_json(&config);
    assert_eq!(rule_totals(&view, "fleet"), (0, 0), "nothing left: {view}");
    assert_eq!(list_keys(&env.dst.client(), &db).await.len(), n);
    let w4_copied: f64 = samples(&scrape(ports[3]), "ferry_objects_copied_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert!(w4_copied >= 1.0, "the late worker took part");
    let (code, text, _) = ferry_output(&["status", "--config", &config]);
    assert_eq!(code, 0);
    assert!(text.contains("workers: 3 live, 1 dead"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_agree_with_the_destination() {
    let env = Env::start("metrics");
    let (sb, db) = env.bucket_pair().await;
    let n = 600;
    let seeds: Vec<Seed> = (0..n)
        .map(|i| Seed::new(format!("m{:02}/o{i:04}", i % 8), vec![b'x'; 100 + i]))
        .collect();
    seed(&env.src.client(), &sb, &seeds).await;
    // "never": a coordinator that stops after one iteration may be gone before the scrape
    let rule = harness::rule_toml("metered", &sb, &db, "stop = \"never\"\ninterval = \"1h\"");
    let config = env.write_config("metered.toml", &rule);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let _workers: Vec<_> = ports[1..]
        .iter()
        .enumerate()
        .map(|(i, p)| worker(&env, &config, &format!("m{i}"), *p))
        .collect();
    let coordinator_metrics = format!("127.0.0.1:{}", ports[0]);
    let mut coordinator = spawn_ferry(
        env.dir.path(),
        "coordinator",
        &[
            "coordinator",
            "--config",
            &config,
            "--metrics-listen",
            &coordinator_metrics,
        ],
    );
    // wait for the copy, then scrape the coordinator, then stop it
    wait_for("the copy", Duration::from_secs(300), || {
        let view = queues_json(&config);
        let r = &view["rules"][0];
        r["shards"].as_array().is_some_and(|s| !s.is_empty())
            && rule_totals(&view, "metered") == (0, 0)
    })
    .await;
    let coordinator_text = scrape(ports[0]);
    assert_prometheus_text(&coordinator_text);
    let listed: f64 = samples(&coordinator_text, "ferry_objects_listed_total")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(listed, n as f64);
    coordinator.sigterm();
    assert!(status_ok(&mut coordinator));

    let in_destination = list_keys(&env.dst.client(), &db).await;
    let mut copied = 0.0;
    let mut bytes = 0.0;
    for port in &ports[1..] {
        let text = scrape(*port);
        assert_prometheus_text(&text);
        copied += samples(&text, "ferry_objects_copied_total")
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>();
        bytes += samples(&text, "ferry_bytes_copied_total")
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>();
        assert!(!samples(&text, "ferry_redis_requests_total").is_empty());
        assert!(!samples(&text, "ferry_lease_renewals_total").is_empty() || n < 1000);
    }
    assert_eq!(copied, in_destination.len() as f64);
    let expected_bytes: i64 = in_destination.iter().map(|k| k.2).sum();
    assert_eq!(bytes, expected_bytes as f64);
}

fn status_ok(p: &mut harness::Proc) -> bool {
    p.wait_timeout(Duration::from_secs(60))
        .is_some_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_retried_and_purged() {
    let env = Env::start("dead");
    let (sb, db) = env.bucket_pair().await;
    seed(
        &env.src.client(),
        &sb,
        &[Seed::new("dl/one", "first"), Seed::new("dl/two", "second")],
    )
    .await;
    let rule = harness::rule_toml("dl", &sb, &db, "stop = \"once\"");
    let config = env.write_config("dl.toml", &rule);
    let queue = Queue::connect(
        &RedisConfig::new(env.redis.url(), env.ns.clone()),
        ferry_queue::Persistence::FailFast,
    )
    .await
    .unwrap();
    // Two tasks die: a worker failed them for good.
    for key in ["dl/one", "dl/two"] {
        let (etag, size) = head(&env.src.client(), &sb, key).await;
        let task = Task::CopyObject {
            source: ObjectVersion {
                key: key.into(),
                size: size as u64,
                etag,
                last_modified_ms: 0,
                storage_class: None,
            },
            destination: Expected::Absent,
        };
        queue
            .enqueue("dl", 1, shard_of("", key), &[task])
            .await
            .unwrap();
        let claimed = queue
            .claim("dl", "w", Duration::from_secs(30), (1, 0), 10)
            .await
            .unwrap()
            .remove(0);
        queue
            .fail(
                "w",
                &claimed,
                "AccessDenied: simulated",
                Duration::ZERO,
                10,
                true,
                &Abandon::default(),
                false,
            )
            .await
            .unwrap();
    }
    let (code, listed, _) = ferry_output(&["dead-letters", "--config", &config, "list", "dl"]);
    assert_eq!(code, 0);
    assert!(listed.contains("dl: 2 dead letter(s)"), "{listed}");
    assert!(listed.contains("key: dl/one") && listed.contains("AccessDenied: simulated"));
    assert!(listed.contains("1 attempt(s)"), "{listed}");

    // Purge one, retry the other, and a worker completes it.
    let letters = queue.dead_letters("dl").await.unwrap();
    let two = letters
        .iter()
        .find(|d| d.key.as_deref() == Some("dl/two"))
        .unwrap();
    assert_eq!(
        queue
            .purge_dead("dl", Some(std::slice::from_ref(&two.id)))
            .await
            .unwrap(),
        1
    );
    let (code, out, _) = ferry_output(&["dead-letters", "--config", &config, "retry", "dl"]);
    assert_eq!(code, 0);
    assert!(out.contains("1 dead letter(s) put back"), "{out}");
    let (pending, _) = rule_totals(&queues_json(&config), "dl");
    assert_eq!(pending, 1, "the retried task is back on its queue");
    let _worker = worker(&env, &config, "fixer", free_port());
    let dst = env.dst.client();
    // The worker's capability probe (`.ferry-probe/...`, written and deleted at start) may be
    // listed too: it is not a copy, and waiting for any key at all once caught it instead
    // of the retried object.
    let copies = || async {
        list_keys(&dst, &db)
            .await
            .into_iter()
            .map(|k| k.0)
            .filter(|k| !k.starts_with(".ferry-probe/"))
            .collect::<Vec<String>>()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while copies().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the retried task did not complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(copies().await, vec!["dl/one".to_string()]);
    let (code, out, _) = ferry_output(&["dead-letters", "--config", &config, "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("dl: 0 dead letter(s)"), "{out}");
    let (code, _, err) = ferry_output(&["dead-letters", "--config", &config, "list", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no rule \"nope\""), "{err}");
}
