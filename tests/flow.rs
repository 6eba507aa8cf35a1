//! Flow control with two worker processes: a prefix whose writes answer SlowDown for 40 s
//! is throttled and probed across the fleet (at most one refused write per object, nothing
//! dead, full speed again within seconds, other prefixes unaffected), and a rule's
//! `max_requests_per_second` and `max_bandwidth` hold for the fleet as a whole.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_core::shard::shard_of;
use ferry_testkit::proxy::{Action, Event, FaultProxy, Match, Rule};
use harness::data::{Seed, assert_same_objects, list_keys, seed};
use harness::{Env, Proc, free_port, iteration_record, rule_toml, samples, scrape, spawn_ferry};

fn exits_ok(p: &mut Proc, timeout: Duration) {
    let status = p
        .wait_timeout(timeout)
        .unwrap_or_else(|| panic!("{} did not finish within {timeout:?}", p.name));
    assert!(status.success(), "{} exited with {status}", p.name);
}

/// Two workers (each with a metrics port) and a coordinator, on `config`.
struct Fleet {
    ports: [u16; 2],
    workers: Vec<Proc>,
    coordinator: Proc,
}

impl Fleet {
    fn start(env: &Env, config: &str) -> Fleet {
        let ports = [free_port(), free_port()];
        let workers = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let id = format!("w{i}");
                let m = format!("127.0.0.1:{port}");
                spawn_ferry(
                    env.dir.path(),
                    &id,
                    &[
                        "worker",
                        "--config",
                        config,
                        "--id",
                        &id,
                        "--concurrency",
                        "8",
                        "--metrics-listen",
                        &m,
                    ],
                )
            })
            .collect();
        let coordinator = spawn_ferry(
            env.dir.path(),
            "coordinator",
            &["coordinator", "--config", config],
        );
        Fleet {
            ports,
            workers,
            coordinator,
        }
    }

    /// Stops the workers with SIGTERM; each must exit cleanly.
    fn stop_workers(&mut self) {
        for w in &mut self.workers {
            w.sigterm();
            exits_ok(w, Duration::from_secs(30));
        }
    }
}

/// The largest number of `events` in any window of `window` ms, weighted by `weight`, between
/// the first and the last event.
fn peak(events: &[&Event], window: u64, weight: impl Fn(&Event) -> u64) -> (u64, u64) {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return (0, 0);
    };
    let mut best = 0;
    let mut start = first.at_ms;
    while start + window <= last.at_ms {
        let sum: u64 = events
            .iter()
            .filter(|e| e.at_ms >= start && e.at_ms < start + window)
            .map(|e| weight(e))
            .sum();
        best = best.max(sum);
        start += 250;
    }
    (best, last.at_ms - first.at_ms)
}

/// One prefix's writes answer SlowDown for 40 s while other prefixes are copied too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_prefix_is_probed_not_hammered_and_recovers_at_once() {
    let env = Env::start("slowdown");
    let (sb, db) = env.bucket_pair().await;
    let hot_shard = shard_of("", "hot/x");
    // Other prefixes, each on another shard than the hot one.
    let cold: Vec<String> = (0..40)
        .map(|i| format!("cold{i}/"))
        .filter(|p| shard_of("", &format!("{p}x")) != hot_shard)
        .take(3)
        .collect();
    let mut seeds: Vec<Seed> = (0..300)
        .map(|i| Seed::new(format!("hot/{i:04}"), format!("hot {i}")))
        .collect();
    for p in &cold {
        seeds.extend((0..200).map(|i| Seed::new(format!("{p}{i:04}"), format!("cold {i}"))));
    }
    seed(&env.src.client(), &sb, &seeds).await;
    let proxy = FaultProxy::start(&env.dst.authority()).await.unwrap();
    let slow = Rule::new(
        "slowdown",
        Match {
            method: Some("PUT".into()),
            path_prefix: Some(format!("/{db}/hot/")),
            ..Match::default()
        },
        Action::Status {
            status: 503,
            code: "SlowDown".into(),
        },
    );
    let watch = Rule::new(
        "writes",
        Match {
            method: Some("PUT".into()),
            ..Match::default()
        },
        Action::Pass,
    );
    proxy.set_rules(vec![slow, watch.clone()]);
    let episode = Instant::now();
    let config = env.write_config_at(
        "slow.toml",
        &env.src.url(),
        &proxy.url(),
        &rule_toml("slow", &sb, &db, "stop = \"once\""),
    );
    let mut fleet = Fleet::start(&env, &config);
    // Other prefixes are not slowed: they are all copied while the episode lasts.
    let dst = env.dst.client();
    let cold_total = 200 * cold.len();
    harness::wait_until(
        Duration::from_secs(38),
        "the other prefixes to be copied",
        || {
            let (dst, db, cold) = (dst.clone(), db.clone(), cold.clone());
            async move {
                let keys = list_keys(&dst, &db).await;
                keys.iter()
                    .filter(|k| cold.iter().any(|p| k.0.starts_with(p)))
                    .count()
                    == cold_total
            }
        },
    )
    .await;
    let others_done = episode.elapsed();
    tokio::time::sleep(Duration::from_secs(40).saturating_sub(episode.elapsed())).await;
    proxy.set_rules(vec![watch]);
    let ended = Instant::now();
    let ended_ms = proxy.events().last().map_or(0, |e| e.at_ms);
    exits_ok(&mut fleet.coordinator, Duration::from_secs(120));
    let recovery = ended.elapsed();

    let events = proxy.events();
    let mut refused: BTreeMap<&str, u32> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.rule.as_deref() == Some("slowdown"))
    {
        *refused.entry(e.path.as_str()).or_default() += 1;
    }
    let total_refused: u32 = refused.values().sum();
    let most = refused.values().copied().max().unwrap_or(0);
    let late = events
        .iter()
        .filter(|e| e.rule.as_deref() == Some("slowdown") && e.at_ms + 15_000 >= ended_ms)
        .count();
    eprintln!(
        "slowdown: {total_refused} refused writes over {} objects (at most {most} per object), \
         {late} in the episode's last 15 s ({:.2}/s); other prefixes done after {:.1}s; \
         complete {:.1}s after the episode",
        refused.len(),
        late as f64 / 15.0,
        others_done.as_secs_f64(),
        recovery.as_secs_f64()
    );
    assert!(total_refused > 0, "the episode refused nothing");
    assert!(most <= 1, "an object was refused {most} times: {refused:?}");
    assert!(
        recovery < Duration::from_secs(10),
        "recovered after {recovery:?}"
    );
    let record = iteration_record(&env.redis, &env.ns, "slow", 1).await;
    assert_eq!(
        record.get("copied"),
        Some(&(seeds.len() as u64)),
        "{record:?}"
    );
    assert_eq!(
        record.get("dead"),
        None,
        "throttling is not failing: {record:?}"
    );
    let throttled: f64 = fleet
        .ports
        .iter()
        .flat_map(|p| samples(&scrape(*p), "ferry_throttled_total"))
        .filter(|(l, _)| l.contains(&format!("shard=\"{hot_shard}\"")))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(throttled, f64::from(total_refused));
    fleet.stop_workers();
    proxy.clear();
    assert_same_objects(&env.src.client(), &sb, &dst, &db).await;
}

/// `max_requests_per_second = 50` for two workers: the requests of both sides, counted at
/// the servers' proxies, stay within 10 % of it over any 5 s window, and the rule runs at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_second_holds_for_the_fleet() {
    let env = Env::start("rps");
    let (sb, db) = env.bucket_pair().await;
    let seeds: Vec<Seed> = (0..400)
        .map(|i| Seed::new(format!("r/{:02}/{i:04}", i % 20), format!("object {i}")))
        .collect();
    seed(&env.src.client(), &sb, &seeds).await;
    let (src_proxy, dst_proxy) = (
        FaultProxy::start(&env.src.authority()).await.unwrap(),
        FaultProxy::start(&env.dst.authority()).await.unwrap(),
    );
    let config = env.write_config_at(
        "rps.toml",
        &src_proxy.url(),
        &dst_proxy.url(),
        &rule_toml(
            "rps",
            &sb,
            &db,
            "stop = \"once\"\nmax_requests_per_second = 50",
        ),
    );
    let mut fleet = Fleet::start(&env, &config);
    exits_ok(&mut fleet.coordinator, Duration::from_secs(120));
    // Both proxies count from their own start: align them on the first request of each.
    let mut events: Vec<Event> = src_proxy.events();
    let mut dst_events = dst_proxy.events();
    // Not the capability probe (three PUTs and a DELETE, outside the rule's budget).
    dst_events.retain(|e| !e.path.contains(".ferry-probe"));
    let skew = src_proxy_epoch_difference(&src_proxy, &dst_proxy);
    for e in &mut dst_events {
        e.at_ms = (e.at_ms as i64 + skew) as u64;
    }
    events.extend(dst_events);
    events.sort_by_key(|e| e.at_ms);
    let refs: Vec<&Event> = events.iter().collect();
    let (most, span) = peak(&refs, 5_000, |_| 1);
    let rate = events.len() as f64 / (span as f64 / 1000.0);
    eprintln!(
        "rps: {} requests in {:.1}s ({rate:.1}/s), at most {most} in any 5 s (limit 250)",
        events.len(),
        span as f64 / 1000.0
    );
    assert!(
        most <= 275,
        "{most} requests in 5 s, over the limit by more than 10%"
    );
    assert!(
        rate >= 40.0,
        "the limit slowed the rule below it: {rate:.1}/s"
    );
    let record = iteration_record(&env.redis, &env.ns, "rps", 1).await;
    assert_eq!(record.get("copied"), Some(&400), "{record:?}");
    fleet.stop_workers();
}

/// The two proxies were started a few milliseconds apart; their clocks differ by that much.
fn src_proxy_epoch_difference(src: &FaultProxy, dst: &FaultProxy) -> i64 {
    src.started_at_ms() as i64 - dst.started_at_ms() as i64
}

/// `max_bandwidth = "2MiB"` for two workers: the bytes written, counted at the destination's
/// proxy as they arrive, stay within 10 % of 2 MiB/s over any 5 s window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bandwidth_holds_for_the_fleet() {
    let env = Env::start("bandwidth");
    let (sb, db) = env.bucket_pair().await;
    let seeds: Vec<Seed> = (0..200)
        .map(|i| {
            Seed::new(
                format!("b/{:02}/{i:04}", i % 20),
                harness::data::pattern(i, 0, 100 * 1024),
            )
        })
        .collect();
    seed(&env.src.client(), &sb, &seeds).await;
    let proxy = FaultProxy::start(&env.dst.authority()).await.unwrap();
    let config = env.write_config_at(
        "bw.toml",
        &env.src.url(),
        &proxy.url(),
        &rule_toml("bw", &sb, &db, "stop = \"once\"\nmax_bandwidth = \"2MiB\""),
    );
    let mut fleet = Fleet::start(&env, &config);
    exits_ok(&mut fleet.coordinator, Duration::from_secs(120));
    // Bytes as they arrived, not each upload's all at its start: 16 uploads in flight
    // would otherwise put 1.6 MiB at a window's edge.
    let received: Vec<Event> = proxy
        .received_bytes()
        .into_iter()
        .map(|(at_ms, bytes)| Event {
            at_ms,
            method: "PUT".into(),
            path: String::new(),
            query: String::new(),
            rule: None,
            status: 0,
            late_status: None,
            request_bytes: bytes,
        })
        .collect();
    let refs: Vec<&Event> = received.iter().collect();
    let (most, span) = peak(&refs, 5_000, |e| e.request_bytes);
    let total: u64 = received.iter().map(|e| e.request_bytes).sum();
    let limit = 5 * 2 * 1024 * 1024;
    eprintln!(
        "bandwidth: {:.1} MiB in {:.1}s ({:.2} MiB/s), at most {:.2} MiB in any 5 s (limit 10)",
        total as f64 / 1048576.0,
        span as f64 / 1000.0,
        total as f64 / 1048576.0 / (span as f64 / 1000.0),
        most as f64 / 1048576.0
    );
    assert!(most as f64 <= limit as f64 * 1.1, "{most} bytes in 5 s");
    assert!(
        (most as f64) >= limit as f64 * 0.8,
        "the limit slowed the rule far below it: {most} bytes in the busiest 5 s"
    );
    fleet.stop_workers();
    assert_same_objects(&env.src.client(), &sb, &env.dst.client(), &db).await;
}
