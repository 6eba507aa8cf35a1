//! What operators look at: the registry of workers (heartbeats), each shard's backlog, the
//! recent throughput, and the dead letters (list, retry, purge).
//!
//! Worker registry: `NS:{workers}` (hash: id -> [`WorkerInfo`]) and `NS:{workers}:seen`
//! (zset: id -> last heartbeat, ms, Redis clock). A worker heartbeats every second; one
//! silent for [`WORKER_DEAD_AFTER`] is shown as dead, and forgotten after
//! [`WORKER_FORGOTTEN_AFTER`]. A worker stopped with SIGTERM deregisters.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Queue, QueueError, TaskId};
use ferry_core::codec;
use ferry_core::task::Task;

/// How often a worker heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A worker silent this long is shown as dead.
pub const WORKER_DEAD_AFTER: Duration = Duration::from_secs(5);
/// A dead worker is forgotten after this long.
pub const WORKER_FORGOTTEN_AFTER: Duration = Duration::from_secs(600);
/// Seconds of throughput history [`Queue::throughput`] adds up.
pub const THROUGHPUT_WINDOW: u64 = 60;

/// What a worker reports in each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's id (owner of its leases).
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Start time, ms since the Unix epoch.
    pub started_ms: u64,
    /// Tasks in flight.
    pub in_flight: u64,
    /// Tasks finished (acked) since start.
    pub completed: u64,
    /// Failed attempts since start.
    pub failed: u64,
}

/// A registered worker and how long ago it was last heard from.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerSeen {
    /// What it last reported.
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// Milliseconds since its last heartbeat.
    pub silent_ms: u64,
    /// Whether it heartbeated within [`WORKER_DEAD_AFTER`].
    pub alive: bool,
}

/// One shard's backlog.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ShardView {
    /// Shard id.
    pub shard: u32,
    /// Ready to claim.
    pub pending: u64,
    /// Under a lease.
    pub leased: u64,
    /// Waiting for a retry.
    pub retrying: u64,
    /// In dead letters.
    pub dead: u64,
    /// Age of the oldest ready task, ms.
    pub oldest_pending_ms: Option<u64>,
    /// Leases held, by worker.
    pub leased_by: BTreeMap<String, u64>,
    /// Allowed in flight across the fleet; `None` when not throttled (unlimited).
    pub limit: Option<u32>,
    /// Throttled now: waiting for a probe to succeed.
    pub probing: bool,
    /// Throttle answers (SlowDown, 429) the shard has received, in all.
    pub throttled: u64,
}

/// Tasks and bytes finished over the last [`THROUGHPUT_WINDOW`] seconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Throughput {
    /// Tasks finished.
    pub tasks: u64,
    /// Bytes those tasks moved.
    pub bytes: u64,
}

/// One dead letter.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    /// Task id.
    pub id: String,
    /// The object key, when the payload decodes.
    pub key: Option<String>,
    /// What kind of task it is.
    pub kind: String,
    /// The last error.
    pub error: String,
    /// Failed attempts.
    pub attempts: u32,
    /// When it died, ms since the Unix epoch.
    pub died_ms: u64,
    /// The task, when its payload decodes.
    #[serde(skip)]
    pub task: Option<Task>,
}

fn parse<T: redis::FromRedisValue>(v: &redis::Value) -> Result<T, redis::RedisError> {
    redis::from_redis_value_ref(v).map_err(redis::RedisError::from)
}

fn shard_of(id: &str) -> Option<u32> {
    id.split(':').nth(1)?.parse().ok()
}

impl Queue {
    pub(super) fn workers_key(&self) -> (String, String) {
        let base = self.keys.workers();
        let seen = format!("{base}:seen");
        (base, seen)
    }

    /// Every registered worker, live ones first.
    pub async fn workers(&self) -> Result<Vec<WorkerSeen>, QueueError> {
        let (workers, seen) = self.workers_key();
        type Reply = (Vec<(String, Vec<u8>)>, Vec<(String, u64)>, (u64, u64));
        let (raw, beats, time): Reply = redis::pipe()
            .hgetall(&workers)
            .zrange_withscores(&seen, 0, -1)
            .cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        let now = time.0 * 1000 + time.1 / 1000;
        let beats: BTreeMap<String, u64> = beats.into_iter().collect();
        let mut out: Vec<WorkerSeen> = raw
            .into_iter()
            .filter_map(|(id, v)| {
                let info: WorkerInfo = codec::decode(&v).ok()?;
                let silent_ms = now.saturating_sub(*beats.get(&id)?);
                Some(WorkerSeen {
                    info,
                    silent_ms,
                    alive: silent_ms < WORKER_DEAD_AFTER.as_millis() as u64,
                })
            })
            .collect();
        out.sort_by(|a, b| b.alive.cmp(&a.alive).then(a.info.id.cmp(&b.info.id)));
        Ok(out)
    }

    /// Every shard of `rule` that has had tasks: its backlog, oldest ready task and leases.
    pub async fn shard_views(&self, rule: &str) -> Result<Vec<ShardView>, QueueError> {
        let rk = self.keys.rule(rule);
        let shards = self.shards(&rk).await?;
        let mut pipe = redis::pipe();
        for s in &shards {
            pipe.llen(rk.queue(*s));
            pipe.cmd("LINDEX").arg(rk.queue(*s)).arg(-1);
        }
        pipe.hgetall(rk.owners())
            .zrange(rk.delayed(), 0, -1)
            .zrange(rk.dead(), 0, -1)
            .cmd("TIME");
        let values: Vec<redis::Value> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        let n = shards.len();
        let owners: BTreeMap<String, String> = parse(&values[2 * n]).map_err(|e| self.err(e))?;
        let delayed: Vec<String> = parse(&values[2 * n + 1]).map_err(|e| self.err(e))?;
        let dead: Vec<String> = parse(&values[2 * n + 2]).map_err(|e| self.err(e))?;
        let (secs, micros): (u64, u64) = parse(&values[2 * n + 3]).map_err(|e| self.err(e))?;
        let now = secs * 1000 + micros / 1000;
        let mut views: BTreeMap<u32, ShardView> = BTreeMap::new();
        for (i, s) in shards.iter().enumerate() {
            let oldest: Option<String> = parse(&values[2 * i + 1]).map_err(|e| self.err(e))?;
            views.insert(
                *s,
                ShardView {
                    shard: *s,
                    pending: parse(&values[2 * i]).map_err(|e| self.err(e))?,
                    oldest_pending_ms: oldest
                        .and_then(|id| TaskId::parse(&id)?.enqueued_ms())
                        .map(|t| now.saturating_sub(t)),
                    ..ShardView::default()
                },
            );
        }
        for (id, owner) in &owners {
            if let Some(view) = shard_of(id).and_then(|s| views.get_mut(&s)) {
                view.leased += 1;
                let worker = owner.rsplit_once('|').map_or(owner.as_str(), |(w, _)| w);
                *view.leased_by.entry(worker.to_string()).or_default() += 1;
            }
        }
        for id in &delayed {
            if let Some(view) = shard_of(id).and_then(|s| views.get_mut(&s)) {
                view.retrying += 1;
            }
        }
        for id in &dead {
            if let Some(view) = shard_of(id).and_then(|s| views.get_mut(&s)) {
                view.dead += 1;
            }
        }
        for (shard, flow) in self.flow(rule).await? {
            if let Some(view) = views.get_mut(&shard) {
                view.limit = flow.throttled().then_some(flow.limit);
                view.probing = flow.probing;
                view.throttled = flow.throttled;
            }
        }
        Ok(views.into_values().collect())
    }

    /// Tasks and bytes `rule` finished over the last [`THROUGHPUT_WINDOW`] seconds.
    pub async fn throughput(&self, rule: &str) -> Result<Throughput, QueueError> {
        let rk = self.keys.rule(rule);
        let (secs, _): (u64, u64) = self.query(&mut redis::cmd("TIME")).await?;
        let mut pipe = redis::pipe();
        for s in secs.saturating_sub(THROUGHPUT_WINDOW - 1)..=secs {
            pipe.cmd("HMGET").arg(rk.throughput(s)).arg("n").arg("b");
        }
        let rows: Vec<(Option<u64>, Option<u64>)> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .fold(Throughput::default(), |t, (n, b)| Throughput {
                tasks: t.tasks + n.unwrap_or(0),
                bytes: t.bytes + b.unwrap_or(0),
            }))
    }

    /// The dead letters of `rule`, oldest first, with their errors and attempt counts.
    pub async fn dead_letters(&self, rule: &str) -> Result<Vec<DeadLetter>, QueueError> {
        let rk = self.keys.rule(rule);
        let mut out = Vec::new();
        let mut start = 0isize;
        const PAGE: isize = 500;
        loop {
            let ids: Vec<(String, u64)> = self
                .query(
                    redis::cmd("ZRANGE")
                        .arg(rk.dead())
                        .arg(start)
                        .arg(start + PAGE - 1)
                        .arg("WITHSCORES"),
                )
                .await?;
            if ids.is_empty() {
                return Ok(out);
            }
            let mut pipe = redis::pipe();
            for (id, _) in &ids {
                pipe.hget(rk.tasks(), id)
                    .hget(rk.errors(), id)
                    .hget(rk.attempts(), id);
            }
            type Row = (Option<Vec<u8>>, Option<String>, Option<u32>);
            let rows: Vec<Row> = {
                let flat: Vec<redis::Value> = pipe
                    .query_async(&mut self.conn())
                    .await
                    .map_err(|e| self.err(e))?;
                flat.chunks_exact(3)
                    .map(|c| {
                        (
                            redis::from_redis_value_ref(&c[0]).unwrap_or(None),
                            redis::from_redis_value_ref(&c[1]).unwrap_or(None),
                            redis::from_redis_value_ref(&c[2]).unwrap_or(None),
                        )
                    })
                    .collect()
            };
            for ((id, died_ms), (payload, error, attempts)) in ids.iter().zip(rows) {
                let task: Option<Task> = payload.and_then(|p| codec::decode_task(&p).ok());
                out.push(DeadLetter {
                    id: id.clone(),
                    key: task.as_ref().map(|t| t.key().to_string()),
                    kind: match &task {
                        Some(Task::CopyObject { .. }) => "copy",
                        Some(Task::CopyPart(_)) => "part",
                        Some(Task::DeleteObject { .. }) => "delete",
                        Some(Task::CopyVersions { .. }) => "versions",
                        Some(Task::CopyVersion { .. }) => "version",
                        None => "undecodable",
                    }
                    .to_string(),
                    error: error.unwrap_or_default(),
                    attempts: attempts.unwrap_or(0),
                    died_ms: *died_ms,
                    task,
                });
            }
            start += PAGE;
        }
    }

    /// Puts dead letters of `rule` back on their queues as new tasks of the latest iteration,
    /// with their attempts reset; a dead part comes back as its whole object (its upload was
    /// aborted). `ids` limits it to those tasks. Returns how many were requeued.
    pub async fn retry_dead(&self, rule: &str, ids: Option<&[String]>) -> Result<u64, QueueError> {
        self.on_dead(rule, ids, "retry").await
    }

    /// Deletes dead letters of `rule` (all, or `ids`). Returns how many were deleted.
    pub async fn purge_dead(&self, rule: &str, ids: Option<&[String]>) -> Result<u64, QueueError> {
        self.on_dead(rule, ids, "purge").await
    }

    async fn on_dead(
        &self,
        rule: &str,
        ids: Option<&[String]>,
        op: &str,
    ) -> Result<u64, QueueError> {
        let rk = self.keys.rule(rule);
        let letters = self.dead_letters(rule).await?;
        let chosen: Vec<&DeadLetter> = letters
            .iter()
            .filter(|d| ids.is_none_or(|ids| ids.contains(&d.id)))
            .collect();
        let mut total = 0;
        for chunk in chosen.chunks(200) {
            let mut inv = self.task_invocation(&self.scripts.dead, &rk);
            inv.arg(op);
            for letter in chunk {
                // a dead part's upload is gone: what must be redone is its whole object
                let replacement = match &letter.task {
                    Some(Task::CopyPart(part)) => codec::encode_task(&Task::CopyObject {
                        source: part.source.clone(),
                        destination: part.destination.clone(),
                    }),
                    _ => Vec::new(),
                };
                inv.arg(&letter.id).arg(replacement);
            }
            let n: u64 = self.invoke(inv).await?;
            total += n;
        }
        Ok(total)
    }
}
