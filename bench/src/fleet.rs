//! A fleet simulation: N simulated workers driving real claim, renew and ack traffic through
//! ferry's queue (its Lua scripts, its client) against a Redis, with no S3 at all, to measure
//! what the queue itself sustains: tasks per second, Redis CPU per task, claim latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_core::config::RedisConfig;
use ferry_core::shard::SHARDS;
use ferry_core::task::{Expected, ObjectVersion, Task};
use ferry_queue::{
    AckItem, Counted, LeaderToken, LedgerOp, Persistence, PlanBatch, Queue, WorkerQueue,
};
use serde::Serialize;

/// Where the simulation runs: one Redis, or a Redis Cluster through its nodes (all of them:
/// Redis CPU is summed over the nodes given).
#[derive(Clone, Debug)]
pub enum Target {
    /// One Redis server.
    Single(String),
    /// Every node of a cluster.
    Cluster(Vec<String>),
}

impl Target {
    fn urls(&self) -> Vec<String> {
        match self {
            Target::Single(u) => vec![u.clone()],
            Target::Cluster(urls) => urls.clone(),
        }
    }
}

/// Names for `n` simulated rules. On a cluster, each is picked so that its hash tag falls in
/// another `n`th of the slot space: `redis-cli --cluster create` gives each master one
/// contiguous range, so with `n` masters each rule lands on its own.
async fn rule_names(target: &Target, n: usize) -> anyhow::Result<Vec<String>> {
    let Target::Cluster(urls) = target else {
        return Ok((0..n).map(|i| format!("fleet-sim-{i}")).collect());
    };
    let mut conn = redis::Client::open(urls[0].as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let mut names = Vec::new();
    let mut j = 0u32;
    for i in 0..n {
        let (lo, hi) = (16_384 * i / n, 16_384 * (i + 1) / n);
        loop {
            let name = format!("fleet-sim-{j}");
            j += 1;
            let slot: usize = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("{{{name}}}"))
                .query_async(&mut conn)
                .await?;
            if (lo..hi).contains(&slot) {
                names.push(name);
                break;
            }
        }
    }
    Ok(names)
}

/// What one simulation measured.
#[derive(Debug, Serialize)]
pub struct FleetReport {
    /// Redis Cluster masters (0: one Redis).
    pub masters: usize,
    /// Rules the tasks were spread over (each on one master of a cluster).
    pub rules: usize,
    /// Simulated workers.
    pub workers: usize,
    /// Tasks each worker holds at most at once.
    pub slots: usize,
    /// Whether each claimed batch was acked in one round trip (`ack_many`), as workers do.
    pub batch_acks: bool,
    /// Tasks run through the queue.
    pub tasks: u64,
    /// From the first claim to the last ack.
    pub seconds: f64,
    /// Tasks acked per second.
    pub tasks_per_second: f64,
    /// Round trips (claims, renewals, acks) per task, as the workers sent them.
    pub round_trips_per_task: f64,
    /// Redis's CPU (user + system) per task, microseconds.
    pub redis_cpu_us_per_task: f64,
    /// Claim latency, ms.
    pub claim_p50_ms: f64,
    /// Claim latency, ms.
    pub claim_p99_ms: f64,
}

fn task(i: u64) -> Task {
    Task::CopyObject {
        source: ObjectVersion {
            key: format!("sim/{i:012}"),
            size: 4096,
            etag: "0123456789abcdef0123456789abcdef".into(),
            last_modified_ms: 1,
            storage_class: None,
        },
        destination: Expected::Absent,
    }
}

/// The CPU seconds so far (user + system, from INFO cpu) of every node of `target`.
async fn redis_cpu(target: &Target) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for url in target.urls() {
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
        total += info
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| *k == "used_cpu_sys" || *k == "used_cpu_user")
            .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
            .sum::<f64>();
    }
    Ok(total)
}

/// Enqueues `tasks` tasks, then runs `workers` simulated workers until every one is acked.
/// Each worker claims up to `slots` tasks, renews their leases once (as a worker does for a
/// task that outlives a third of its lease), holds them for `work`, and acks them: each on
/// its own, or with `batch_acks` all in one round trip.
/// With `rules` above 1, the tasks are spread evenly over that many rules and the workers
/// take turns among them (worker `w` works on rule `w % rules`).
pub async fn run(
    target: &Target,
    (workers, slots, rules): (usize, usize, usize),
    tasks: u64,
    work: Duration,
    batch_acks: bool,
) -> anyhow::Result<FleetReport> {
    let namespace = format!("fleet-sim-{}", std::process::id());
    let config = match target {
        Target::Single(url) => RedisConfig::new(url, namespace),
        Target::Cluster(urls) => RedisConfig::cluster(urls, namespace),
    };
    let queue = Queue::connect(&config, Persistence::FailFast)
        .await
        .context("connecting to redis")?;
    let names = rule_names(target, rules).await?;
    let share = |r: usize| tasks / rules as u64 + u64::from((r as u64) < tasks % rules as u64);
    let mut iterations = Vec::new();
    for (r, name) in names.iter().enumerate() {
        iterations.push(enqueue(&queue, name, share(r)).await?);
    }

    let cpu_before = redis_cpu(target).await?;
    let acked: Vec<Arc<AtomicU64>> = (0..rules).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let trips = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let r = w % rules;
            let (queue, acked, trips) = (queue.clone(), acked[r].clone(), trips.clone());
            let (rule, total) = (names[r].clone(), share(r));
            tokio::spawn(async move {
                let id = format!("sim-{w}");
                simulate(
                    &queue,
                    (&rule, &id),
                    (slots, batch_acks),
                    work,
                    total,
                    (&acked, &trips),
                )
                .await
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await.context("a simulated worker panicked")??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = redis_cpu(target).await? - cpu_before;
    for ((r, name), iteration) in names.iter().enumerate().zip(iterations) {
        let record = queue.iteration(name, iteration).await?;
        anyhow::ensure!(
            record.done == share(r) && record.copied == share(r),
            "rule {name}: the iteration counts {} done, {} copied of {} tasks",
            record.done,
            record.copied,
            share(r)
        );
        queue.forget_rule(name).await?;
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(FleetReport {
        masters: match target {
            Target::Single(_) => 0,
            Target::Cluster(_) => cluster_masters(target).await?,
        },
        rules,
        workers,
        slots,
        batch_acks,
        tasks,
        seconds,
        tasks_per_second: tasks as f64 / seconds,
        round_trips_per_task: trips.load(Ordering::Relaxed) as f64 / tasks as f64,
        redis_cpu_us_per_task: cpu * 1e6 / tasks as f64,
        claim_p50_ms: at(0.50),
        claim_p99_ms: at(0.99),
    })
}

/// How many masters the cluster has (from `CLUSTER NODES`).
async fn cluster_masters(target: &Target) -> anyhow::Result<usize> {
    let mut conn = redis::Client::open(target.urls()[0].as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    Ok(nodes
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|f| f.contains("master"))
        })
        .count())
}

/// Begins an iteration of `rule` and enqueues `tasks` tasks in it; returns its number.
async fn enqueue(queue: &Queue, rule: &str, tasks: u64) -> anyhow::Result<u64> {
    let unfenced = LeaderToken::unfenced();
    let iteration = queue.begin_iteration(rule, &unfenced).await?;
    let mut next = 0u64;
    while next < tasks {
        let end = (next + 1000).min(tasks);
        let mut groups: Vec<(u32, Vec<Task>)> = (0..SHARDS).map(|s| (s, Vec::new())).collect();
        for i in next..end {
            groups[(i % u64::from(SHARDS)) as usize].1.push(task(i));
        }
        let batch = PlanBatch {
            tasks: groups.into_iter().filter(|(_, t)| !t.is_empty()).collect(),
            ..PlanBatch::default()
        };
        queue.plan(rule, iteration, &batch, &unfenced).await?;
        next = end;
    }
    Ok(iteration)
}

/// One simulated worker; returns its claims' latencies (ms).
async fn simulate(
    queue: &Queue,
    (rule, id): (&str, &str),
    (slots, batch_acks): (usize, bool),
    work: Duration,
    total: u64,
    (acked, trips): (&AtomicU64, &AtomicU64),
) -> anyhow::Result<Vec<f64>> {
    let lease = Duration::from_secs(30);
    let mut latencies = Vec::new();
    while acked.load(Ordering::Relaxed) < total {
        let asked = Instant::now();
        let claimed = queue.claim(rule, id, lease, (slots, slots), 10).await?;
        latencies.push(asked.elapsed().as_secs_f64() * 1000.0);
        trips.fetch_add(1, Ordering::Relaxed);
        if claimed.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let held: Vec<(String, u64)> = claimed
            .iter()
            .map(|c| (c.id.as_str().to_string(), c.token))
            .collect();
        let lost = queue.renew(rule, id, lease, &held).await?;
        trips.fetch_add(1, Ordering::Relaxed);
        anyhow::ensure!(
            lost.is_empty(),
            "{id} lost leases it had just taken: {lost:?}"
        );
        if !work.is_zero() {
            tokio::time::sleep(work).await;
        }
        let done: Vec<bool> = if batch_acks {
            let items: Vec<AckItem> = claimed
                .iter()
                .map(|c| AckItem {
                    id: c.id.clone(),
                    token: c.token,
                    outcome: Counted::Copied,
                    bytes: 4096,
                    ledger: LedgerOp::None,
                    upload: None,
                    report: None,
                })
                .collect();
            trips.fetch_add(1, Ordering::Relaxed);
            queue.ack_many(id, rule, &items).await?
        } else {
            let acks = claimed
                .iter()
                .map(|c| queue.ack(id, c, Counted::Copied, 4096, &LedgerOp::None));
            trips.fetch_add(claimed.len() as u64, Ordering::Relaxed);
            futures::future::join_all(acks)
                .await
                .into_iter()
                .collect::<Result<_, _>>()?
        };
        anyhow::ensure!(done.iter().all(|d| *d), "{id} lost a lease before its ack");
        acked.fetch_add(claimed.len() as u64, Ordering::Relaxed);
    }
    Ok(latencies)
}
