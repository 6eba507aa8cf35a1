//! A fleet simulation: N simulated workers driving real claim, renew and ack traffic through
//! ferry's queue (its Lua scripts, its client) against a Redis, with no S3 at all, to measure
//! what the queue itself sustains: tasks per second, Redis CPU per task, claim latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use ferry_common::config::RedisConfig;
use ferry_common::queue::{
    AckItem, Counted, LeaderToken, LedgerOp, Persistence, PlanBatch, Queue, WorkerQueue,
};
use ferry_common::shard::SHARDS;
use ferry_common::task::{Expected, ObjectVersion, Task};
use serde::Serialize;

/// The simulated rule.
const RULE: &str = "fleet-sim";

/// What one simulation measured.
#[derive(Debug, Serialize)]
pub struct FleetReport {
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

/// Redis's CPU seconds so far (user + system, from INFO cpu).
async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    Ok(info
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| *k == "used_cpu_sys" || *k == "used_cpu_user")
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum())
}

/// Enqueues `tasks` tasks, then runs `workers` simulated workers until every one is acked.
/// Each worker claims up to `slots` tasks, renews their leases once (as a worker does for a
/// task that outlives a third of its lease), holds them for `work`, and acks them: each on
/// its own, or with `batch_acks` all in one round trip.
pub async fn run(
    url: &str,
    (workers, slots): (usize, usize),
    tasks: u64,
    work: Duration,
    batch_acks: bool,
) -> anyhow::Result<FleetReport> {
    let namespace = format!("fleet-sim-{}", std::process::id());
    let queue = Queue::connect(&RedisConfig::new(url, namespace), Persistence::FailFast)
        .await
        .context("connecting to redis")?;
    let unfenced = LeaderToken::unfenced();
    let iteration = queue.begin_iteration(RULE, &unfenced).await?;
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
        queue.plan(RULE, iteration, &batch, &unfenced).await?;
        next = end;
    }

    let mut info = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let cpu_before = redis_cpu(&mut info).await?;
    let acked = Arc::new(AtomicU64::new(0));
    let trips = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (queue, acked, trips) = (queue.clone(), acked.clone(), trips.clone());
            tokio::spawn(async move {
                let id = format!("sim-{w}");
                simulate(
                    &queue,
                    &id,
                    (slots, batch_acks),
                    work,
                    tasks,
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
    let cpu = redis_cpu(&mut info).await? - cpu_before;
    let record = queue.iteration(RULE, iteration).await?;
    anyhow::ensure!(
        record.done == tasks && record.copied == tasks,
        "the iteration counts {} done, {} copied of {tasks} tasks",
        record.done,
        record.copied
    );
    queue.forget_rule(RULE).await?;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(FleetReport {
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

/// One simulated worker; returns its claims' latencies (ms).
async fn simulate(
    queue: &Queue,
    id: &str,
    (slots, batch_acks): (usize, bool),
    work: Duration,
    total: u64,
    (acked, trips): (&AtomicU64, &AtomicU64),
) -> anyhow::Result<Vec<f64>> {
    let lease = Duration::from_secs(30);
    let mut latencies = Vec::new();
    while acked.load(Ordering::Relaxed) < total {
        let asked = Instant::now();
        let claimed = queue.claim(RULE, id, lease, (slots, slots), 10).await?;
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
        let lost = queue.renew(RULE, id, lease, &held).await?;
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
                })
                .collect();
            trips.fetch_add(1, Ordering::Relaxed);
            queue.ack_many(id, RULE, &items).await?
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
