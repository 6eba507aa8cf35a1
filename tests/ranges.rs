//! Key-range listing: a large flat prefix is split into key ranges, each listed, diffed and
//! planned on its own, in parallel; its tasks spread over every shard though every key starts
//! alike; and a coordinator killed mid-planning resumes each range from its own checkpoint.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use harness::data::{Seed, assert_replica, seed};
use harness::{Env, S3Server, history, iteration_record, numeric_fields, spawn_ferry};
use redis::AsyncCommands;

/// `n` keys in one flat prefix, all starting with the same characters (so the first two
/// characters of a key would put them all in one shard), with hashed tails.
fn flat_seeds(n: u64) -> Vec<Seed> {
    (0..n)
        .map(|i| {
            let tail = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31);
            Seed::new(format!("flat/aaaa{tail:016x}"), format!("body {i}"))
        })
        .collect()
}

/// Every field of iteration `n`'s record, as Redis holds it.
async fn raw_record(env: &Env, rule: &str, n: u64) -> HashMap<String, String> {
    let mut conn = env.redis.conn().await;
    conn.hgetall(format!("{}:{{{rule}}}:it:{n}", env.ns))
        .await
        .expect("reading the iteration record")
}

/// The boundaries of the ranges prefix 0 was listed in, from the record.
fn boundaries(record: &HashMap<String, String>) -> Vec<String> {
    let raw = record
        .get("ranges:1")
        .unwrap_or_else(|| panic!("no ranges on record: {record:?}"));
    serde_json::from_str(raw).expect("ranges are JSON")
}

/// Checkpoints of the ranges of prefix 0, by range index.
fn range_checkpoints(record: &HashMap<String, String>) -> HashMap<usize, String> {
    record
        .iter()
        .filter_map(|(f, v)| Some((f.strip_prefix("rckpt:1:")?.parse().ok()?, v.clone())))
        .collect()
}

async fn flat_prefix_in_key_ranges(env: Env) {
    let (sb, db) = env.bucket_pair().await;
    let n = 4_000u64;
    seed(&env.src.client(), &sb, &flat_seeds(n)).await;
    let extra = "stop = \"once\"\nlist_ranges = 4\nlist_range_min_keys = 500";
    let config = env.write_config("ferry.toml", &harness::rule_toml("flat", &sb, &db, extra));
    let log = env.run_to_completion(&config, &[], Duration::from_secs(300));
    assert!(
        log.contains("listing the prefix in key ranges"),
        "no key ranges:\n{log}"
    );
    assert_eq!(
        assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await,
        n as usize
    );
    let raw = raw_record(&env, "flat", 1).await;
    let cuts = boundaries(&raw);
    assert_eq!(cuts.len(), 3, "4 ranges: {cuts:?}");
    assert!(cuts.windows(2).all(|w| w[0] < w[1]), "{cuts:?}");
    // Each range planned up to its end: its checkpoint is its last key.
    let checkpoints = range_checkpoints(&raw);
    assert_eq!(checkpoints.len(), 4, "{raw:?}");
    for (r, cut) in cuts.iter().enumerate() {
        assert!(
            checkpoints[&r] <= *cut,
            "range {r}: {checkpoints:?} {cuts:?}"
        );
    }
    let record = numeric_fields(raw);
    for field in ["listed", "planned", "copied"] {
        assert_eq!(record.get(field), Some(&n), "{field}: {record:?}");
    }
    assert_eq!(record.get("dead"), None, "{record:?}");
    // Every key starts with "aaaa", yet the ranges spread the tasks over every shard.
    let mut conn = env.redis.conn().await;
    let shards: Vec<u32> = conn
        .smembers(format!("{}:{{flat}}:shards", env.ns))
        .await
        .unwrap();
    assert_eq!(shards.len(), 16, "shards used: {shards:?}");

    // The next iteration, nothing changed, splits again and finds nothing to do.
    env.run_to_completion(&config, &[], Duration::from_secs(120));
    let second = iteration_record(&env.redis, &env.ns, "flat", 2).await;
    assert_eq!(second.get("skipped"), Some(&n), "{second:?}");
    assert_eq!(second.get("planned"), None, "{second:?}");
    assert_eq!(boundaries(&raw_record(&env, "flat", 2).await).len(), 3);
    eprintln!(
        "{:?}: {n} flat keys in 4 key ranges, {} shards",
        env.src.kind,
        shards.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_prefix_is_listed_in_key_ranges_over_every_shard_on_moto() {
    flat_prefix_in_key_ranges(Env::start_on(
        "ranges-moto",
        S3Server::moto(),
        S3Server::moto(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_prefix_is_listed_in_key_ranges_over_every_shard_on_garage() {
    flat_prefix_in_key_ranges(Env::start("ranges-garage")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_planning_resumes_every_range_from_its_own_checkpoint() {
    let env = Env::start("ranges-kill");
    let (sb, db) = env.bucket_pair().await;
    let n = 6_000u64;
    seed(&env.src.client(), &sb, &flat_seeds(n)).await;
    let extra = "stop = \"once\"\nlist_ranges = 4\nlist_range_min_keys = 1000";
    let config = env.write_config("ferry.toml", &harness::rule_toml("flat", &sb, &db, extra));
    // No worker yet, and a small backlog limit: each range plans its first batch, then waits.
    let coordinator = |id: &str| {
        spawn_ferry(
            env.dir.path(),
            id,
            &[
                "coordinator",
                "--config",
                &config,
                "--coordinator-id",
                id,
                "--leader-lease",
                "2s",
                "--max-outstanding",
                "100",
            ],
        )
    };
    let mut first = coordinator("coord-a");
    let deadline = Instant::now() + Duration::from_secs(120);
    let at_kill = loop {
        let raw = raw_record(&env, "flat", 1).await;
        if range_checkpoints(&raw).len() == 4 {
            break raw;
        }
        assert!(
            Instant::now() < deadline,
            "the ranges never all planned a batch: {raw:?}\n{}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    first.kill9();
    let planned_at_kill = numeric_fields(at_kill.clone())["planned"];
    assert!(planned_at_kill < n, "planning finished before the kill");
    let cuts = boundaries(&at_kill);
    let checkpoints = range_checkpoints(&at_kill);
    assert_eq!(cuts.len(), 3, "{cuts:?}");

    let mut second = coordinator("coord-b");
    let mut worker = spawn_ferry(
        env.dir.path(),
        "worker",
        &["worker", "--config", &config, "--concurrency", "16"],
    );
    let status = second
        .wait_timeout(Duration::from_secs(300))
        .expect("the second coordinator did not finish the iteration");
    assert!(
        status.success(),
        "exited with {status}:\n{}",
        second.log_text()
    );
    assert!(
        second
            .log_text()
            .contains("resuming an unfinished iteration")
    );
    assert_eq!(history(&env.redis, &env.ns, "flat").await, [1]);
    let raw = raw_record(&env, "flat", 1).await;
    assert_eq!(boundaries(&raw), cuts, "the ranges on record changed");
    // Each range went on from where it was, to its end.
    let after = range_checkpoints(&raw);
    for (r, key) in &checkpoints {
        assert!(
            after[r] > *key,
            "range {r} did not move on: {key} -> {}",
            after[r]
        );
    }
    let record = numeric_fields(raw);
    for field in ["listed", "planned", "copied"] {
        assert_eq!(record.get(field), Some(&n), "{field}: {record:?}");
    }
    assert_eq!(record.get("dead"), None, "{record:?}");
    worker.sigterm();
    assert!(
        worker
            .wait_timeout(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
    assert_eq!(
        assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await,
        n as usize
    );
    eprintln!(
        "killed the coordinator at {planned_at_kill}/{n} planned, every range resumed: {checkpoints:?}"
    );
}

/// `n` keys of one flat prefix, nine in ten crowded under one name and the rest spread thin:
/// keys that sampled pages find late.
fn skewed_seeds(n: u64) -> Vec<Seed> {
    (0..n)
        .map(|i| {
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
            let key = match i % 10 {
                0 => format!("skew/{}{i:08}", char::from(b'a' + (h % 26) as u8)),
                _ => format!("skew/mmmm{h:016x}"),
            };
            Seed::new(key, format!("body {i}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_iteration_cuts_even_ranges_from_the_marks_of_the_last_listing_on_moto() {
    let env = Env::start_on("ranges-marks", S3Server::moto(), S3Server::moto());
    let (sb, db) = env.bucket_pair().await;
    let n = 6_000u64;
    let seeds = skewed_seeds(n);
    seed(&env.src.client(), &sb, &seeds).await;
    let mut keys: Vec<String> = seeds.iter().map(|s| s.key.clone()).collect();
    keys.sort();
    let extra = "stop = \"once\"\nlist_ranges = 4\nlist_range_min_keys = 500";
    let config = env.write_config("ferry.toml", &harness::rule_toml("skew", &sb, &db, extra));
    env.run_to_completion(&config, &[], Duration::from_secs(300));
    let first = raw_record(&env, "skew", 1).await;
    let marks: serde_json::Value = serde_json::from_str(
        first
            .get("marks:1")
            .unwrap_or_else(|| panic!("no marks on record: {first:?}")),
    )
    .expect("marks are JSON");
    assert_eq!(marks["prefix"], "", "the rule lists from the bucket root");
    assert_eq!(marks["listed"], n);
    let marked: Vec<String> = serde_json::from_value(marks["keys"].clone()).unwrap();
    assert_eq!(marked.len(), 255, "{marks}");

    env.run_to_completion(&config, &[], Duration::from_secs(120));
    let second = raw_record(&env, "skew", 2).await;
    let cuts = boundaries(&second);
    // Cut where the marks say, not where a sample guessed: at marked keys, into equal counts.
    assert!(cuts.iter().all(|c| marked.contains(c)), "{cuts:?}");
    let mut counts = vec![0u64; cuts.len() + 1];
    for key in &keys {
        counts[cuts.partition_point(|c| c < key)] += 1;
    }
    assert_eq!(counts.len(), 4, "{counts:?}");
    let fair = n / 4;
    assert!(
        counts
            .iter()
            .all(|&c| c * 100 <= fair * 105 && c * 100 >= fair * 95),
        "keys per range: {counts:?}, fair {fair}"
    );
    // The second iteration's marks replace the first's.
    assert!(second.contains_key("marks:1"), "{second:?}");
    assert!(!raw_record(&env, "skew", 1).await.contains_key("marks:1"));
    let record = numeric_fields(second);
    assert_eq!(record.get("skipped"), Some(&n), "{record:?}");
    eprintln!(
        "iteration 1 sampled {:?}, iteration 2 cut from its marks: {counts:?}",
        boundaries(&first)
    );
}
