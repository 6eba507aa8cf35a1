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
mod embedded;
mod events;
mod fleet;
mod iteration;
pub mod keys;
mod leader;
mod ledger;
mod multipart;
mod reply;
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
pub use embedded::{STATE_FORMAT, StateError};
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
pub use task_id::TaskId;
pub use worker_api::{AckItem, WorkerQueue};

/// Default lease length.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis could not be reached or answered with an error.
    #[error("{place}: {cause}", place = place(.url))]
    Redis {
        /// The URL without its password.
        url: String,
        /// The client's error. Not the error's `source`: the message holds it already, so
        /// an error chain prints it once.
        cause: redis::RedisError,
    },
    /// The embedded backend's state directory cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The certificate authorities for a `rediss://` connection cannot be read.
    #[error(transparent)]
    Trust(#[from] ferry_core::trust::TrustError),
    /// A stored value could not be decoded.
    #[error("decoding a stored value: {0}")]
    Codec(#[from] CodecError),
    /// A coordinator write was refused: another coordinator leads the rule now.
    #[error("rule {rule}: another coordinator leads it now")]
    Fenced {
        /// The rule.
        rule: String,
    },
    /// A script answered something it never answers (see `reply.rs`): an error, never read
    /// as one of its meanings.
    #[error("{script}: unexpected reply {reply}")]
    Reply {
        /// The script.
        script: &'static str,
        /// What it answered (cut at 200 characters).
        reply: String,
    },
    /// A coordinator write found the iteration other than it left it: Redis lost its last
    /// writes in a restart. The caller plans again from what Redis holds.
    #[error("rule {rule}: {detail}")]
    Stale {
        /// The rule.
        rule: String,
        /// What was found.
        detail: String,
    },
}

/// Where a queue's data lives, for messages: `redis at URL`, or the embedded state dir.
impl QueueError {
    /// Why Redis (or its TLS setup) refused this client, when it did: a configuration error
    /// to fix (a password, an ACL, protected mode, a certificate), not an outage to wait out.
    /// The text is Redis's own, and never holds the password.
    pub fn refusal(&self) -> Option<String> {
        match self {
            QueueError::Redis { cause, .. } => connection::refusal(cause),
            QueueError::Trust(e) => Some(e.to_string()),
            _ => None,
        }
    }
}

fn place(url: &str) -> String {
    if url.starts_with("state dir ") {
        url.to_string()
    } else {
        format!("redis at {url}")
    }
}

/// A task claimed under a lease.
#[derive(Debug)]
pub struct Claimed {
    /// The rule it belongs to.
    pub rule: String,
    /// Its id.
    pub id: TaskId,
    /// The lease's fencing token.
    pub token: u64,
    /// Failed attempts before this one.
    pub attempts: u32,
    /// The task, or why its payload could not be decoded.
    pub task: Result<Task, CodecError>,
}

/// What a finished task counts as in its iteration's record (the record's field of that
/// name is incremented).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Copied (whole or, completing an upload, in parts).
    Copied,
    /// Copied in parts, verified byte for byte, with an ETag that differs from the source's
    /// (its part sizes could not be read nor inferred): counted as copied, and as
    /// `etag_differs`.
    CopiedEtagDiffers,
    /// Its source was gone by the time it was copied.
    Gone,
    /// A destination object deleted (`delete = true`).
    Deleted,
    /// The destination already held something newer, or the same; left as it is.
    Kept,
    /// Skipped on a second look (already equal).
    Skipped,
    /// Its source is archived and not restored (`archived = "skip"`).
    Archived,
    /// A part of an upload that had been abandoned.
    Cancelled,
    /// An object task split into part tasks.
    Split,
    /// One part uploaded (the upload is not complete yet).
    Part,
    /// A part task replaced by an object task for the source's new version.
    Replanned,
}

/// A probe's answer as the fleet shares it.
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedProbe {
    at_ms: u64,
    capabilities: ferry_core::capabilities::Capabilities,
}

/// Archived keys named per iteration (its `archived` count has them all).
pub const ARCHIVED_KEYS_KEPT: u64 = 10_000;

/// Why the diff skipped a source object, as users read it: each is a field of the iteration
/// record (`skipped_unchanged`, ...), and together they add up to the diff's `skipped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipCategory {
    /// The destination holds the source's version already.
    Unchanged,
    /// `if-newer`, and the destination is as new as the source, or newer.
    DestinationNewer,
    /// The destination holds an object ferry did not write, which differs from the source
    /// (`overwrite_unmanaged` copies over it).
    Unmanaged,
    /// `overwrite = never`, and the destination holds an object.
    OverwriteNever,
    /// Left out by the rule's filters (`include`, `exclude`, sizes, ages).
    Excluded,
}

impl SkipCategory {
    pub const ALL: [SkipCategory; 5] = [
        SkipCategory::Unchanged,
        SkipCategory::DestinationNewer,
        SkipCategory::Unmanaged,
        SkipCategory::OverwriteNever,
        SkipCategory::Excluded,
    ];

    /// The name in summaries and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipCategory::Unchanged => "unchanged",
            SkipCategory::DestinationNewer => "destination_newer",
            SkipCategory::Unmanaged => "unmanaged",
            SkipCategory::OverwriteNever => "overwrite_never",
            SkipCategory::Excluded => "excluded",
        }
    }

    /// The iteration record's field.
    pub fn field(self) -> &'static str {
        match self {
            SkipCategory::Unchanged => "skipped_unchanged",
            SkipCategory::DestinationNewer => "skipped_newer",
            SkipCategory::Unmanaged => "skipped_unmanaged",
            SkipCategory::OverwriteNever => "skipped_never",
            SkipCategory::Excluded => "skipped_excluded",
        }
    }
}

/// `plan.lua`'s count of skipped objects: the total, then `;FIELD:N` for each reason.
fn skip_counts(total: u64, by: &[(&'static str, u64)]) -> String {
    let mut out = total.to_string();
    for (field, n) in by {
        if *n > 0 {
            out.push_str(&format!(";{field}:{n}"));
        }
    }
    out
}

impl Counted {
    /// The iteration record's field.
    pub fn as_str(self) -> &'static str {
        match self {
            Counted::Copied => "copied",
            Counted::CopiedEtagDiffers => "copied+etag_differs",
            Counted::Gone => "gone",
            Counted::Deleted => "deleted",
            Counted::Kept => "kept",
            Counted::Skipped => "skipped",
            Counted::Archived => "archived",
            Counted::Cancelled => "cancelled",
            Counted::Split => "split",
            Counted::Part => "part",
            Counted::Replanned => "replanned",
        }
    }
}

/// What became of a failed task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// It will be retried after the delay.
    Retry,
    /// It is in dead letters.
    Dead,
    /// The lease was lost; someone else owns the task now.
    Lost,
}

struct Scripts {
    plan: Script,
    event: Script,
    claim: Script,
    renew: Script,
    ack: Script,
    ack_many: Script,
    fail: Script,
    release: Script,
    leader: Script,
    upload: Script,
    replace: Script,
    part: Script,
    heartbeat: Script,
    dead: Script,
    prune: Script,
    begin: Script,
    seal: Script,
    ranges: Script,
    marks: Script,
    finish: Script,
    rule: Script,
    throttle: Script,
    tokens: Script,
    ledger: Script,
    /// Every script's code, for a backend that must know them up front (the embedded one).
    sources: Vec<String>,
}

impl Scripts {
    fn load() -> Self {
        // The task scripts share the helpers of lib.lua (fencing check, finishing a task).
        // `true`: prefixed with lib.lua. Every code is kept for the embedded backend.
        let mut sources = Vec::new();
        let mut script = |with_lib: bool, body: &str| {
            let lib = if with_lib {
                include_str!("lua/lib.lua")
            } else {
                ""
            };
            let code = format!("{lib}{body}");
            let s = Script::new(&code);
            sources.push(code);
            s
        };
        let mut scripts = Scripts {
            plan: script(true, include_str!("lua/plan.lua")),
            event: script(true, include_str!("lua/event.lua")),
            claim: script(true, include_str!("lua/claim.lua")),
            renew: script(true, include_str!("lua/renew.lua")),
            ack: script(true, include_str!("lua/ack.lua")),
            ack_many: script(true, include_str!("lua/ack_many.lua")),
            fail: script(true, include_str!("lua/fail.lua")),
            release: script(true, include_str!("lua/release.lua")),
            leader: script(false, include_str!("lua/leader.lua")),
            upload: script(true, include_str!("lua/upload.lua")),
            replace: script(true, include_str!("lua/replace.lua")),
            part: script(true, include_str!("lua/part.lua")),
            heartbeat: script(false, include_str!("lua/heartbeat.lua")),
            dead: script(true, include_str!("lua/dead.lua")),
            prune: script(true, include_str!("lua/prune.lua")),
            begin: script(true, include_str!("lua/begin.lua")),
            seal: script(true, include_str!("lua/seal.lua")),
            ranges: script(true, include_str!("lua/ranges.lua")),
            marks: script(true, include_str!("lua/marks.lua")),
            finish: script(true, include_str!("lua/finish.lua")),
            rule: script(true, include_str!("lua/rule.lua")),
            throttle: script(true, include_str!("lua/throttle.lua")),
            tokens: script(false, include_str!("lua/tokens.lua")),
            ledger: script(true, include_str!("lua/ledger.lua")),
            sources: Vec::new(),
        };
        scripts.sources = sources;
        scripts
    }
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

    /// Registers rules (buckets only) so every process and later checks can see them.
    pub async fn register_rules(&self, rules: &[BucketRef]) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        for r in rules {
            pipe.hset(self.keys.rules(), &r.rule, codec::encode(r))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    /// The rules registered so far by any coordinator in this namespace. One this version
    /// cannot decode (registered by a newer ferry) is left out, with a warning.
    pub async fn registered_rules(&self) -> Result<Vec<BucketRef>, QueueError> {
        let raw: Vec<(String, Vec<u8>)> = self
            .query(redis::cmd("HGETALL").arg(self.keys.rules()))
            .await?;
        Ok(raw
            .iter()
            .filter_map(|(name, v)| match codec::decode(v) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(rule = %name, error = %e,
                        "a registered rule cannot be decoded (a newer ferry registered it); not checked against it");
                    None
                }
            })
            .collect())
    }

    /// Forgets everything of `rule` in this namespace: queues, tasks, ledger, iterations,
    /// uploads, intents, state (for `--replace-rule`). Returns how many keys were deleted.
    pub async fn forget_rule(&self, rule: &str) -> Result<u64, QueueError> {
        let prefix = self.keys.rule(rule).prefix;
        let deleted = if let Link::Cluster(cluster) = &self.conn.inner {
            self.forget_slot_keys(cluster.clone(), &prefix).await?
        } else {
            self.forget_scanned_keys(&prefix).await?
        };
        self.query::<()>(redis::cmd("HDEL").arg(self.keys.rules()).arg(rule))
            .await?;
        Ok(deleted)
    }

    /// Deletes the keys under `prefix` (`NS:{R}`) on a Redis Cluster. They all hash to the
    /// rule's tag, so they all live in one slot, on one master: the keys of that slot are
    /// listed there (SCAN on a cluster would have to visit every node).
    async fn forget_slot_keys(
        &self,
        mut cluster: redis::cluster_async::ClusterConnection,
        prefix: &str,
    ) -> Result<u64, QueueError> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let route = || {
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                prefix,
                SlotAddr::Master,
            )))
        };
        let slot: u64 = self
            .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(prefix))
            .await?;
        let mut count = redis::cmd("CLUSTER");
        count.arg("COUNTKEYSINSLOT").arg(slot);
        let n: u64 = redis::from_redis_value(
            cluster
                .route_command(count, route())
                .await
                .map_err(|e| self.err(e))?,
        )
        .map_err(|e| self.err(e.into()))?;
        let mut list = redis::cmd("CLUSTER");
        list.arg("GETKEYSINSLOT").arg(slot).arg(n.max(1));
        let keys: Vec<String> = redis::from_redis_value(
            cluster
                .route_command(list, route())
                .await
                .map_err(|e| self.err(e))?,
        )
        .map_err(|e| self.err(e.into()))?;
        let mine: Vec<&String> = keys
            .iter()
            .filter(|k| {
                k.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(':'))
            })
            .collect();
        let mut deleted = 0;
        for chunk in mine.chunks(1000) {
            deleted += self.query::<u64>(redis::cmd("UNLINK").arg(chunk)).await?;
        }
        Ok(deleted)
    }

    /// Deletes the keys under `prefix` (`NS:{R}`) on one Redis (or the embedded store).
    async fn forget_scanned_keys(&self, prefix: &str) -> Result<u64, QueueError> {
        let pattern = format!("{prefix}:*");
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            if !keys.is_empty() {
                deleted += self.query::<u64>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Tasks of `rule` by state: (ready, leased, delayed, dead).
    pub async fn depth(&self, rule: &str) -> Result<QueueDepth, QueueError> {
        let rk = self.keys.rule(rule);
        let shards = self.shards(&rk).await?;
        let mut pipe = redis::pipe();
        pipe.zcard(rk.leases()).zcard(rk.delayed()).zcard(rk.dead());
        for s in &shards {
            pipe.llen(rk.queue(*s));
        }
        let counts: Vec<u64> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(QueueDepth {
            leased: counts[0],
            retrying: counts[1],
            dead: counts[2],
            pending: counts[3..].iter().sum(),
        })
    }

    /// When the oldest unfinished task of `rule` (ready, leased or waiting to retry) was
    /// enqueued (ms, Redis clock); `None` when there is none.
    pub async fn oldest_pending_ms(&self, rule: &str) -> Result<Option<u64>, QueueError> {
        let rk = self.keys.rule(rule);
        let shards = self.shards(&rk).await?;
        let mut pipe = redis::pipe();
        for s in &shards {
            // The claiming end holds each shard's oldest ready task.
            pipe.cmd("LINDEX").arg(rk.queue(*s)).arg(-1);
        }
        let tails: Vec<Option<String>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        let (leased, delayed): (Vec<String>, Vec<String>) = redis::pipe()
            .zrange(rk.leases(), 0, -1)
            .zrange(rk.delayed(), 0, -1)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(tails
            .into_iter()
            .flatten()
            .chain(leased)
            .chain(delayed)
            .filter_map(|id| TaskId::parse(&id)?.enqueued_ms())
            .min())
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
}

/// How many tasks of a rule are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready to claim.
    pub pending: u64,
    /// Claimed under a live lease.
    pub leased: u64,
    /// Waiting for their retry time.
    pub retrying: u64,
    /// In dead letters.
    pub dead: u64,
}
