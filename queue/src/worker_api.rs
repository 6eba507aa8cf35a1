//! What a worker needs of the queue, and nothing else: claiming under leases, renewing them,
//! finishing, failing, throttling and releasing tasks, the multipart records, the ledger read
//! a copy decides on, and the worker's own heartbeat.
//!
//! Workers hold an `Arc<dyn WorkerQueue>`, so another backend (an embedded one, or a fake in
//! a unit test) can stand in for Redis. Every method keeps the meaning its Redis
//! implementation documents on [`Queue`]: each change is atomic and fenced by the lease token
//! in `claimed`, and `false` (or `Lost`) means the lease was lost and nothing changed.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    Abandon, Claimed, Counted, FailOutcome, LedgerOp, LedgerView, PartRecorded, Queue, QueueError,
    WORKER_FORGOTTEN_AFTER, WorkerInfo, reply,
};
use ferry_core::codec;
use ferry_core::ledger::VersionsEntry;
use ferry_core::task::{PartTask, Task, UploadRecord};

/// One finished task to ack with others of its rule ([`WorkerQueue::ack_many`]).
#[derive(Clone, Debug)]
pub struct AckItem {
    /// The task's id.
    pub id: super::TaskId,
    /// Its lease's fencing token.
    pub token: u64,
    /// What it counts as.
    pub outcome: Counted,
    /// Bytes it moved.
    pub bytes: u64,
    /// Its ledger change.
    pub ledger: LedgerOp,
    /// The multipart upload record to forget.
    pub upload: Option<String>,
    /// Its line in the iteration's report (rules with a `report`).
    pub report: Option<String>,
}

/// The worker's side of the queue (see the module docs).
#[async_trait]
pub trait WorkerQueue: Send + Sync {
    /// Claims up to `max` tasks of `rule` (at most `max_parts` of them part tasks) under a
    /// lease of `lease`, after requeueing expired leases and due retries.
    async fn claim(
        &self,
        rule: &str,
        worker: &str,
        lease: Duration,
        max: (usize, usize),
        max_attempts: u32,
    ) -> Result<Vec<Claimed>, QueueError>;

    /// Extends the leases on `held` (id, token); returns the ids no longer held.
    async fn renew(
        &self,
        rule: &str,
        worker: &str,
        lease: Duration,
        held: &[(String, u64)],
    ) -> Result<Vec<String>, QueueError>;

    /// Finishes `claimed`, counting `outcome` and `bytes`, applying `ledger` and forgetting
    /// the upload record `upload`, in one step.
    async fn ack_upload(
        &self,
        worker: &str,
        claimed: &Claimed,
        outcome: Counted,
        bytes: u64,
        ledger: &LedgerOp,
        upload: Option<&str>,
    ) -> Result<bool, QueueError>;

    /// Finishes several held tasks of `rule` in one round trip, each as [`ack_upload`] does
    /// and fenced by its own lease; returns, per item, false when its lease was lost.
    ///
    /// [`ack_upload`]: WorkerQueue::ack_upload
    async fn ack_many(
        &self,
        worker: &str,
        rule: &str,
        items: &[AckItem],
    ) -> Result<Vec<bool>, QueueError>;

    /// Records a failed attempt: retried after `delay`, or dead.
    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        worker: &str,
        claimed: &Claimed,
        error: &str,
        delay: Duration,
        max_attempts: u32,
        permanent: bool,
        abandon: &Abandon,
        wrote: bool,
    ) -> Result<FailOutcome, QueueError>;

    /// Reports a throttled attempt; returns the shard's limit and whether it is probed.
    async fn throttle(
        &self,
        worker: &str,
        claimed: &Claimed,
        error: &str,
        delay: Duration,
        wrote: bool,
    ) -> Result<Option<(u32, bool)>, QueueError>;

    /// Gives a task back to the front of its queue without counting an attempt.
    async fn release(
        &self,
        worker: &str,
        claimed: &Claimed,
        wrote: bool,
    ) -> Result<bool, QueueError>;

    /// Gives a task back, claimable again after `delay`, without counting an attempt.
    async fn release_after(
        &self,
        worker: &str,
        claimed: &Claimed,
        wrote: bool,
        delay: Duration,
    ) -> Result<bool, QueueError>;

    /// Records the multipart upload the holder of `claimed` just created.
    async fn record_upload(
        &self,
        worker: &str,
        claimed: &Claimed,
        record: &UploadRecord,
    ) -> Result<bool, QueueError>;

    /// Records an uploaded part's ETag and tells whether it was the last one.
    async fn record_part(
        &self,
        worker: &str,
        claimed: &Claimed,
        part: &PartTask,
        etag: &str,
    ) -> Result<PartRecorded, QueueError>;

    /// The ETag recorded for part `number` of upload record `rid`, if any.
    async fn part_etag(
        &self,
        rule: &str,
        rid: &str,
        number: u32,
    ) -> Result<Option<String>, QueueError>;

    /// Records the versions of `key` copied so far (`versions = "all"`) while `claimed` is
    /// still held; false when the lease was lost (nothing changed).
    async fn record_versions(
        &self,
        worker: &str,
        claimed: &Claimed,
        key: &str,
        entry: &VersionsEntry,
    ) -> Result<bool, QueueError>;

    /// The upload record `rid` of `rule`, if it is still open.
    async fn upload(&self, rule: &str, rid: &str) -> Result<Option<UploadRecord>, QueueError>;

    /// Replaces `claimed` by `tasks`, counting it as `outcome`, in one step.
    async fn replace(
        &self,
        worker: &str,
        claimed: &Claimed,
        outcome: Counted,
        drop_upload: Option<&str>,
        tasks: &[Task],
    ) -> Result<bool, QueueError>;

    /// The ledger entries and open write intents of `keys`.
    async fn ledger_get(&self, rule: &str, keys: &[&str]) -> Result<Vec<LedgerView>, QueueError>;

    /// Registers the worker, or refreshes its registration and counts.
    async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), QueueError>;

    /// Names `key` among those iteration `iteration` found archived and not restored (the
    /// count itself is the ack's).
    async fn note_archived(&self, rule: &str, iteration: u64, key: &str) -> Result<(), QueueError>;

    /// Removes the worker from the registry (it is shutting down).
    async fn deregister(&self, id: &str) -> Result<(), QueueError>;
}

/// Redis: every change is one Lua script (see `lua/`), fenced by the lease token.
#[async_trait]
impl WorkerQueue for Queue {
    /// Claims up to `max` ready tasks of `rule` for `worker`, under a lease of `lease`, of
    /// which at most `max_parts` part tasks. Also returns due retries to their queues and
    /// requeues expired leases.
    async fn claim(
        &self,
        rule: &str,
        worker: &str,
        lease: Duration,
        (max, max_parts): (usize, usize),
        max_attempts: u32,
    ) -> Result<Vec<Claimed>, QueueError> {
        let rk = self.keys.rule(rule);
        let mut inv = self.task_invocation(&self.scripts.claim, &rk);
        inv.arg(worker)
            .arg(lease.as_millis() as u64)
            .arg(max)
            .arg(max_attempts)
            .arg(rand::random::<u32>())
            .arg(max_parts);
        let flat: Vec<Vec<u8>> = self.invoke(inv).await?;
        reply::claimed(rule, &flat)
    }

    /// Extends the leases `worker` holds on `held` (id, token) tasks of `rule`; returns the
    /// ids it no longer holds.
    async fn renew(
        &self,
        rule: &str,
        worker: &str,
        lease: Duration,
        held: &[(String, u64)],
    ) -> Result<Vec<String>, QueueError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let rk = self.keys.rule(rule);
        let mut inv = self.task_invocation(&self.scripts.renew, &rk);
        inv.arg(worker).arg(lease.as_millis() as u64);
        for (id, token) in held {
            inv.arg(id).arg(*token);
        }
        self.invoke(inv).await
    }

    /// [`Queue::ack`] that also forgets the record of the multipart upload `upload` (the
    /// worker just completed it).
    async fn ack_upload(
        &self,
        worker: &str,
        claimed: &Claimed,
        outcome: Counted,
        bytes: u64,
        ledger: &LedgerOp,
        upload: Option<&str>,
    ) -> Result<bool, QueueError> {
        let mut inv = self.held_invocation(&self.scripts.ack, worker, claimed);
        inv.arg(outcome.as_str()).arg(bytes);
        ledger.add_args(&mut inv);
        inv.arg(upload.unwrap_or("")).arg("");
        let done: i64 = self.invoke(inv).await?;
        reply::held("ack.lua", done)
    }

    async fn ack_many(
        &self,
        worker: &str,
        rule: &str,
        items: &[AckItem],
    ) -> Result<Vec<bool>, QueueError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let rk = self.keys.rule(rule);
        let mut inv = self.task_invocation(&self.scripts.ack_many, &rk);
        inv.arg(worker);
        for item in items {
            inv.arg(item.id.as_str())
                .arg(item.token)
                .arg(item.outcome.as_str())
                .arg(item.bytes);
            item.ledger.add_args(&mut inv);
            inv.arg(item.upload.as_deref().unwrap_or(""))
                .arg(item.report.as_deref().unwrap_or(""));
        }
        let done: Vec<i64> = self.invoke(inv).await?;
        if done.len() != items.len() {
            return Err(QueueError::Reply {
                script: "ack_many.lua",
                reply: format!("{} results for {} tasks", done.len(), items.len()),
            });
        }
        done.into_iter()
            .map(|d| reply::held("ack_many.lua", d))
            .collect()
    }

    /// Records a failed attempt: retried after `delay`, or dead when `permanent` or out of
    /// attempts. `error` must not contain secrets (storage errors never do).
    /// When the task is buried, `abandon` says which upload record to forget and what the
    /// dead letter keeps instead of the task (a part's object, say). `wrote` says whether the
    /// attempt may have written to the destination: if not, its write intent is forgotten.
    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        worker: &str,
        claimed: &Claimed,
        error: &str,
        delay: Duration,
        max_attempts: u32,
        permanent: bool,
        abandon: &Abandon,
        wrote: bool,
    ) -> Result<FailOutcome, QueueError> {
        let mut inv = self.held_invocation(&self.scripts.fail, worker, claimed);
        inv.arg(error)
            .arg(delay.as_millis() as u64)
            .arg(max_attempts)
            .arg(if permanent { "1" } else { "0" })
            .arg(abandon.upload.as_deref().unwrap_or(""))
            .arg(
                abandon
                    .replacement
                    .as_ref()
                    .map(codec::encode_task)
                    .unwrap_or_default(),
            )
            .arg(if wrote { "1" } else { "0" });
        let outcome: String = self.invoke(inv).await?;
        reply::fail_outcome(&outcome)
    }

    /// Reports a task refused with SlowDown or 429: its shard's fleet-wide limit is cut (see
    /// [`ferry_core::flow`]) and the task goes back, without counting an attempt, claimable after
    /// `delay` once the shard admits it. Returns the shard's limit (0 = not throttled) and
    /// whether it is being probed, or `None` when the lease was lost.
    async fn throttle(
        &self,
        worker: &str,
        claimed: &Claimed,
        error: &str,
        delay: Duration,
        wrote: bool,
    ) -> Result<Option<(u32, bool)>, QueueError> {
        let mut inv = self.held_invocation(&self.scripts.throttle, worker, claimed);
        inv.arg(error)
            .arg(delay.as_millis() as u64)
            .arg(if wrote { "1" } else { "0" });
        let answer: Vec<u64> = self.invoke(inv).await?;
        reply::throttled(&answer)
    }

    /// Gives a task back to the front of its queue without counting an attempt. `wrote` says
    /// whether the attempt may have written to the destination (then its intent stays).
    async fn release(
        &self,
        worker: &str,
        claimed: &Claimed,
        wrote: bool,
    ) -> Result<bool, QueueError> {
        self.release_after(worker, claimed, wrote, Duration::ZERO)
            .await
    }

    /// Gives a task back without counting an attempt, to be claimed again after `delay`:
    /// one this worker cannot work on (written by a newer ferry, or of a rule it does not
    /// know) is left for another worker, and never buried.
    async fn release_after(
        &self,
        worker: &str,
        claimed: &Claimed,
        wrote: bool,
        delay: Duration,
    ) -> Result<bool, QueueError> {
        let mut inv = self.held_invocation(&self.scripts.release, worker, claimed);
        inv.arg(if wrote { "1" } else { "0" })
            .arg(delay.as_millis() as u64);
        let done: i64 = self.invoke(inv).await?;
        reply::held("release.lua", done)
    }

    /// Records the upload the holder of object task `claimed` just created (the record id is
    /// the task's id). False when the lease was lost: then the caller aborts the upload.
    async fn record_upload(
        &self,
        worker: &str,
        claimed: &Claimed,
        record: &UploadRecord,
    ) -> Result<bool, QueueError> {
        let mut inv = self.held_invocation(&self.scripts.upload, worker, claimed);
        inv.arg(codec::encode(record));
        let done: i64 = self.invoke(inv).await?;
        reply::held("upload.lua", done)
    }

    /// Records the ETag of the part that held task `claimed` uploaded, and finds out whether
    /// it was the last one (see [`PartRecorded`]).
    async fn record_part(
        &self,
        worker: &str,
        claimed: &Claimed,
        part: &PartTask,
        etag: &str,
    ) -> Result<PartRecorded, QueueError> {
        let mut inv = self.held_invocation(&self.scripts.part, worker, claimed);
        inv.arg(&part.upload)
            .arg(part.number)
            .arg(etag)
            .arg(part.parts)
            .arg(part.len());
        let answer: Vec<String> = self.invoke(inv).await?;
        reply::part_recorded(&answer)
    }

    async fn record_versions(
        &self,
        worker: &str,
        claimed: &Claimed,
        key: &str,
        entry: &VersionsEntry,
    ) -> Result<bool, QueueError> {
        let mut inv = self.held_invocation(&self.scripts.version, worker, claimed);
        inv.arg(&ferry_core::ledger::hash(key)[..])
            .arg(entry.encode());
        let recorded: i64 = self.invoke(inv).await?;
        Ok(recorded == 1)
    }

    /// The ETag recorded for part `number` of upload `rid`, if any.
    async fn part_etag(
        &self,
        rule: &str,
        rid: &str,
        number: u32,
    ) -> Result<Option<String>, QueueError> {
        self.query(
            redis::cmd("HGET")
                .arg(self.keys.rule(rule).upload_parts(rid))
                .arg(number),
        )
        .await
    }

    /// The record of upload `rid` of `rule`, if it is still open.
    async fn upload(&self, rule: &str, rid: &str) -> Result<Option<UploadRecord>, QueueError> {
        let raw: Option<Vec<u8>> = self
            .query(
                redis::cmd("HGET")
                    .arg(self.keys.rule(rule).uploads())
                    .arg(rid),
            )
            .await?;
        Ok(raw.map(|r| codec::decode(&r)).transpose()?)
    }

    /// Replaces held task `claimed` by `tasks` on its shard and in its iteration, counting it
    /// as `outcome` and forgetting upload record `drop_upload`, in one step. Part tasks get ids
    /// ending in `:p`. False when the lease was lost (nothing changed).
    async fn replace(
        &self,
        worker: &str,
        claimed: &Claimed,
        outcome: Counted,
        drop_upload: Option<&str>,
        tasks: &[Task],
    ) -> Result<bool, QueueError> {
        let mut inv = self.held_invocation(&self.scripts.replace, worker, claimed);
        let parts = tasks.iter().any(|t| matches!(t, Task::CopyPart(_)));
        inv.arg(outcome.as_str())
            .arg(drop_upload.unwrap_or(""))
            .arg(if parts { ":p" } else { "" });
        for task in tasks {
            inv.arg(codec::encode_task(task));
        }
        let done: i64 = self.invoke(inv).await?;
        reply::held("replace.lua", done)
    }

    async fn ledger_get(&self, rule: &str, keys: &[&str]) -> Result<Vec<LedgerView>, QueueError> {
        // Also the coordinator's ledger read, so it stays a method of Queue.
        Queue::ledger_get(self, rule, keys).await
    }

    async fn note_archived(&self, rule: &str, iteration: u64, key: &str) -> Result<(), QueueError> {
        let list = self.keys.rule(rule).archived(iteration);
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH")
            .arg(&list)
            .arg(key)
            .ignore()
            .cmd("LTRIM")
            .arg(&list)
            .arg(0)
            .arg(super::ARCHIVED_KEYS_KEPT - 1)
            .ignore();
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    /// Registers or refreshes `info` (a heartbeat), and forgets workers silent for longer
    /// than [`WORKER_FORGOTTEN_AFTER`].
    async fn heartbeat(&self, info: &WorkerInfo) -> Result<(), QueueError> {
        let (workers, seen) = self.workers_key();
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(&workers)
            .key(&seen)
            .arg(&info.id)
            .arg(codec::encode(info))
            .arg(WORKER_FORGOTTEN_AFTER.as_millis() as u64);
        self.invoke::<()>(inv).await
    }

    /// Removes a worker from the registry (on a clean stop).
    async fn deregister(&self, id: &str) -> Result<(), QueueError> {
        let (workers, seen) = self.workers_key();
        redis::pipe()
            .hdel(&workers, id)
            .ignore()
            .zrem(&seen, id)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }
}
