//! The Redis task queue: one ready list per (rule, shard), claimed under leases.
//!
//! Every multi-key change is one Lua script (see `lua/`), so a crash between two Redis
//! commands can never leave a task half-moved. Task state machine:
//!
//! ```text
//! enqueue -> ready --claim--> leased --ack--> (gone, counted in its iteration)
//!              ^                 |  \--fail (retryable)--> delayed --(time)--> ready
//!              |                 |   \-fail (permanent or max attempts)--> dead
//!              +----release------+
//!              +--lease expired--+ (counts an attempt; dead at max attempts)
//! ```
//!
//! Leases carry a fencing token: renew, ack, fail and release succeed only for the worker and
//! token of the current lease, so a worker that lost its lease cannot commit.

mod api;
mod budget;
mod connection;
mod counts;
mod depth;
mod embedded;
mod error;
mod events;
mod fleet;
mod iteration;
pub mod keys;
mod leader;
mod ledger;
mod multipart;
mod reply;
mod rules;
mod scripts;
mod task_id;
mod worker_api;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use redis::Script;

use ferry_core::codec::{self, CodecError};
use ferry_core::config::{BucketRef, RedisConfig};
use ferry_core::flow::Flow;
use ferry_core::shard::ShardId;
use ferry_core::task::Task;

pub use api::{CoordinatorQueue, ViewQueue};
pub use budget::Budget;
pub use connection::Persistence;
use connection::{Connection, Health, Link};
pub(crate) use counts::skip_counts;
pub use counts::{ARCHIVED_KEYS_KEPT, Claimed, Counted, FailOutcome, SkipCategory};
pub use depth::QueueDepth;
pub use embedded::{STATE_FORMAT, StateError};
pub use error::QueueError;
pub use events::{EVENTS_ITERATION, EventApplied, EventTask, EventsRecord};
pub use ferry_core::fleet::BudgetKind;
pub use fleet::{
    DeadLetter, HEARTBEAT, ShardView, THROUGHPUT_WINDOW, Throughput, WORKER_DEAD_AFTER,
    WORKER_FORGOTTEN_AFTER, WorkerInfo, WorkerSeen,
};
pub use iteration::{HISTORY, IterationRecord, IterationState, ListingMarks};
pub use keys::{Keys, RuleKeys};
pub use leader::{LeaderToken, RuleRecord, RuleState};
pub use ledger::{Intent, LedgerOp, LedgerView, STRAY_HORIZON};
pub use multipart::{Abandon, PartRecorded};
use scripts::Scripts;
pub use task_id::TaskId;
pub use worker_api::{AckItem, WorkerQueue};

/// Default lease length.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A probe's answer as the fleet shares it.
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedProbe {
    at_ms: u64,
    capabilities: ferry_core::capabilities::Capabilities,
}

/// A connection to ferry's queue in one Redis namespace. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    conn: Connection,
    keys: Keys,
    url: String,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("url", &self.url).finish()
    }
}

impl Queue {
    /// Connects (and reconnects as needed) to the configured Redis. With
    /// [`Persistence::RideOut`], a Redis that is not there yet, or goes away later, is waited
    /// for; with [`Persistence::FailFast`], the first failure is returned.
    pub async fn connect(
        config: &RedisConfig,
        persistence: Persistence,
    ) -> Result<Queue, QueueError> {
        let url = config.redacted_url();
        let wrap = |cause| QueueError::Redis {
            url: url.clone(),
            cause,
        };
        let health = Health::new(url.clone(), persistence);
        let urls = config.connection_urls();
        let roots = if urls.iter().any(|u| u.starts_with("rediss://")) {
            let trust = ferry_core::trust::Authorities::from_env()?;
            Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(trust.roots_pem(config.ca_file.as_deref())?),
            })
        } else {
            None
        };
        let inner = if config.cluster {
            Link::Cluster(
                connection::connect_cluster(&urls, roots, &health)
                    .await
                    .map_err(wrap)?,
            )
        } else {
            let url = config.connection_url();
            let client = match roots {
                Some(roots) => redis::Client::build_with_tls(url.as_str(), roots),
                None => redis::Client::open(url.as_str()),
            }
            .map_err(wrap)?;
            Link::Redis(connection::connect(&client, &health).await.map_err(wrap)?)
        };
        Ok(Queue {
            conn: Connection { inner, health },
            keys: Keys::new(&config.namespace),
            url,
            scripts: std::sync::Arc::new(Scripts::load()),
        })
    }

    /// Opens the embedded backend's state in `dir` (created if needed), for this process
    /// alone: a second process on the same directory is refused with the holder's pid.
    ///
    /// Whatever a process that used the directory before held when it died (`kill -9`,
    /// a power cut) is released at once: no process but this one can be alive on it, so its
    /// task leases are expired (their tasks go back to the queue, with an attempt counted, as
    /// after any expiry) and its leader leases deleted, instead of waiting for them to run
    /// out.
    pub async fn open_embedded(
        dir: &std::path::Path,
        namespace: &str,
    ) -> Result<Queue, QueueError> {
        let queue = Queue::open_embedded_store(dir, namespace)?;
        for rule in queue.registered_rules().await? {
            let rk = queue.keys.rule(&rule.rule);
            queue
                .query::<()>(redis::cmd("DEL").arg(rk.leader()))
                .await?;
            let held: Vec<String> = queue
                .query(redis::cmd("ZRANGE").arg(rk.leases()).arg(0).arg(-1))
                .await?;
            if !held.is_empty() {
                let mut expire = redis::cmd("ZADD");
                expire.arg(rk.leases()).arg("XX");
                for id in &held {
                    expire.arg(0).arg(id);
                }
                queue.query::<()>(&mut expire).await?;
                tracing::info!(rule = %rule.rule, tasks = held.len(),
                    "requeued the tasks a previous process held when it stopped");
            }
        }
        Ok(queue)
    }

    fn open_embedded_store(dir: &std::path::Path, namespace: &str) -> Result<Queue, QueueError> {
        let scripts = Scripts::load();
        let store = embedded::Embedded::open(dir, &scripts.sources)?;
        let url = format!("state dir {}", store.path().display());
        Ok(Queue {
            conn: Connection {
                inner: Link::Embedded(store),
                health: Health::new(url.clone(), Persistence::FailFast),
            },
            keys: Keys::new(namespace),
            url,
            scripts: std::sync::Arc::new(scripts),
        })
    }

    /// Whether this queue is the embedded one (one process, no Redis).
    pub fn is_embedded(&self) -> bool {
        matches!(self.conn.inner, Link::Embedded(_))
    }

    /// The key builder for this namespace.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn err(&self, cause: redis::RedisError) -> QueueError {
        QueueError::Redis {
            url: self.url.clone(),
            cause,
        }
    }

    /// The connection for one round trip; it counts every attempt and rides outages out
    /// (see `connection.rs`).
    pub(crate) fn conn(&self) -> Connection {
        self.conn.clone()
    }

    /// Runs one command, mapping its error.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &mut redis::Cmd,
    ) -> Result<T, QueueError> {
        cmd.query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    /// Runs a script, mapping its error.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, QueueError> {
        inv.invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    /// The shard ids of `rule` that have had tasks.
    async fn shards(&self, rk: &RuleKeys) -> Result<Vec<u32>, QueueError> {
        self.query(redis::cmd("SMEMBERS").arg(rk.shards())).await
    }

    /// Enqueues tasks of one iteration on one shard (a [`Queue::plan`] with no counts).
    pub async fn enqueue(
        &self,
        rule: &str,
        iteration: u64,
        shard: ShardId,
        tasks: &[Task],
    ) -> Result<usize, QueueError> {
        let batch = PlanBatch {
            tasks: vec![(shard, tasks.to_vec())],
            ..PlanBatch::default()
        };
        self.plan(rule, iteration, &batch, &LeaderToken::unfenced())
            .await
            .map(|applied| applied.unwrap_or(0))
    }

    /// Enqueues one planned batch, adds its counts and moves the listing checkpoint, in one
    /// atomic step (see `lua/plan.lua`), fenced by `leader`. Returns the tasks enqueued, or
    /// `None` when the batch had been applied already (sent again after a lost reply).
    pub async fn plan(
        &self,
        rule: &str,
        iteration: u64,
        batch: &PlanBatch,
        leader: &LeaderToken,
    ) -> Result<Option<usize>, QueueError> {
        let rk = self.keys.rule(rule);
        let mut inv = self.scripts.plan.prepare_invoke();
        inv.key(rk.tasks())
            .key(rk.shards())
            .key(rk.seq())
            .key(rk.iteration(iteration))
            .key(rk.intents())
            .key(rk.leader());
        inv.arg(&rk.prefix)
            .arg(iteration)
            .arg(batch.listed)
            .arg(skip_counts(batch.skipped, &batch.skipped_by));
        for checkpoint in [&batch.checkpoint, &batch.after] {
            match (checkpoint, batch.range) {
                (Some((prefix, key)), Some(range)) => {
                    inv.arg(format!("{}:{range}", prefix + 1)).arg(key)
                }
                (Some((prefix, key)), None) => inv.arg(prefix + 1).arg(key),
                (None, _) => inv.arg(0).arg(""),
            };
        }
        inv.arg(leader.as_str());
        let bytes: u64 = batch
            .tasks
            .iter()
            .flat_map(|(_, t)| t)
            .map(Task::bytes)
            .sum();
        inv.arg(batch.prune_before_ms)
            .arg(batch.prune.len())
            .arg(bytes)
            .arg(batch.missed);
        for slot in &batch.prune {
            inv.arg(&slot[..]);
        }
        for (shard, tasks) in &batch.tasks {
            inv.arg(*shard).arg(tasks.len());
            for task in tasks {
                inv.arg(codec::encode_task(task));
            }
        }
        if !batch.report.is_empty() {
            inv.arg("r").arg(batch.report.len());
            for line in &batch.report {
                inv.arg(line);
            }
        }
        let n: i64 = self.fenced(rule, self.invoke(inv).await)?;
        Ok(usize::try_from(n).ok())
    }

    fn task_invocation<'a>(
        &'a self,
        script: &'a Script,
        rk: &RuleKeys,
    ) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for key in rk.script_keys() {
            inv.key(key);
        }
        inv.arg(&rk.prefix);
        inv
    }

    /// [`Queue::task_invocation`] for a script that acts on the task `claimed`, fenced by its
    /// lease: after the rule's prefix come the worker, the task id and the lease token.
    fn held_invocation<'a>(
        &'a self,
        script: &'a Script,
        worker: &str,
        claimed: &Claimed,
    ) -> redis::ScriptInvocation<'a> {
        let mut inv = self.task_invocation(script, &self.keys.rule(&claimed.rule));
        inv.arg(worker).arg(&claimed.id).arg(claimed.token);
        inv
    }

    /// Requeues expired leases and due retries of `rule` without claiming anything.
    pub async fn upkeep(&self, rule: &str, max_attempts: u32) -> Result<(), QueueError> {
        self.claim(rule, "upkeep", DEFAULT_LEASE, (0, 0), max_attempts)
            .await
            .map(drop)
    }

    /// Completes a claimed task, counts `outcome` (and `bytes`) in its iteration and applies
    /// `ledger`, atomically. Returns false when the lease was lost: then nothing was recorded.
    pub async fn ack(
        &self,
        worker: &str,
        claimed: &Claimed,
        outcome: Counted,
        bytes: u64,
        ledger: &LedgerOp,
    ) -> Result<bool, QueueError> {
        self.ack_upload(worker, claimed, outcome, bytes, ledger, None)
            .await
    }

    /// The flow control state of every shard of `rule` that has one.
    pub async fn flow(&self, rule: &str) -> Result<BTreeMap<ShardId, Flow>, QueueError> {
        let fields: HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(self.keys.rule(rule).flow()))
            .await?;
        let mut out: BTreeMap<ShardId, Flow> = BTreeMap::new();
        for (field, value) in fields {
            let Some((shard, name)) = field.split_once(':') else {
                continue;
            };
            let Ok(shard) = shard.parse() else { continue };
            let f = out.entry(shard).or_default();
            let n = || value.parse::<u64>().unwrap_or(0);
            match name {
                "n" => f.in_flight = n() as u32,
                "l" => f.limit = n() as u32,
                "c" => f.ceiling = n() as u32,
                "p" => f.probing = value == "1",
                "po" => f.probe_out = !value.is_empty(),
                "np" => f.next_probe_ms = n(),
                "b" => f.backoff_ms = n(),
                "t" => f.throttled = n(),
                _ => {}
            }
        }
        Ok(out)
    }

    /// What a process of the fleet last probed `bucket` on `endpoint` to do, and when (ms since
    /// the Unix epoch); `None` when no process has, or the value cannot be read (a newer
    /// ferry's), which means probing again.
    pub async fn probed(
        &self,
        endpoint: &str,
        bucket: &str,
    ) -> Result<Option<(u64, ferry_core::capabilities::Capabilities)>, QueueError> {
        let raw: Option<String> = self
            .query(
                redis::cmd("HGET")
                    .arg(self.keys.capabilities())
                    .arg(format!("{endpoint}/{bucket}")),
            )
            .await?;
        Ok(raw.and_then(|text| {
            let v: SharedProbe = serde_json::from_str(&text).ok()?;
            Some((v.at_ms, v.capabilities))
        }))
    }

    /// Shares what this process probed `bucket` on `endpoint` to do, at `at_ms`.
    pub async fn share_probe(
        &self,
        endpoint: &str,
        bucket: &str,
        at_ms: u64,
        capabilities: &ferry_core::capabilities::Capabilities,
    ) -> Result<(), QueueError> {
        let value = serde_json::to_string(&SharedProbe {
            at_ms,
            capabilities: *capabilities,
        })
        .unwrap_or_default();
        self.query(
            redis::cmd("HSET")
                .arg(self.keys.capabilities())
                .arg(format!("{endpoint}/{bucket}"))
                .arg(value),
        )
        .await
    }
}

/// One batch of planning: tasks by shard, what the batch listed and skipped, and the
/// listing position (prefix index, last key) it covers.
#[derive(Clone, Debug, Default)]
pub struct PlanBatch {
    /// Tasks to enqueue, by shard.
    pub tasks: Vec<(ShardId, Vec<Task>)>,
    /// Source objects listed in this batch.
    pub listed: u64,
    /// Source objects the diff skipped in this batch.
    pub skipped: u64,
    /// Those skipped, by why: (a [`SkipCategory`]'s record field, count).
    pub skipped_by: Vec<(&'static str, u64)>,
    /// Everything up to and including this (prefix index, key) has been planned.
    pub checkpoint: Option<(usize, String)>,
    /// Set for a batch of one key range of the prefix: `checkpoint` and `after` are that
    /// range's own (see [`IterationRecord::range_checkpoints`]).
    pub range: Option<usize>,
    /// The checkpoint this batch follows (`None` for the first batch of an iteration): the
    /// batch is applied only if the iteration is still there.
    pub after: Option<(usize, String)>,
    /// Ledger slots whose write intents made before `prune_before_ms` are forgotten: the
    /// planner found their keys just as the ledger says, past the stray-write horizon.
    pub prune: Vec<Vec<u8>>,
    /// See `prune`.
    pub prune_before_ms: u64,
    /// Changes in this batch that no event announced (rules with `events`).
    pub missed: u64,
    /// Report lines of the keys this batch skipped (rules with a `report`), appended to the
    /// iteration's report in the same step.
    pub report: Vec<String>,
}
