//! Multipart uploads in the queue: the record of each upload ferry started, the part ETags
//! workers report, and the atomic steps that split an object into part tasks, detect the
//! last part, and re-plan an object whose source changed.
//!
//! ```text
//! object task --upload.lua (record the upload id)--> --replace.lua (split)--> part tasks
//! part task --part.lua--> more (finished) | last (caller completes, then ack_upload)
//!                         | cancelled (the upload was abandoned)
//! part task --replace.lua (source changed)--> object task; the upload record is dropped
//! ```
//!
//! Upload records live in `NS:{R}:uploads` (record id -> encoded [`UploadRecord`]) and part
//! ETags in `NS:{R}:up:RID` (part number -> ETag). The record id is the id of the object task
//! that created the upload, so a retried object task finds and reuses its own upload.

use super::{Claimed, Queue, QueueError, reply};
use crate::codec;
use crate::task::{PartTask, Task, UploadRecord};

/// What recording a part's ETag found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartRecorded {
    /// The lease was lost; nothing was recorded.
    Lost,
    /// The upload had been abandoned; the part task is finished.
    Cancelled,
    /// Recorded; other parts are still missing. The part task is finished.
    More,
    /// Recorded, and every part is in: their (number, ETag), in part order. The caller still
    /// holds the task: it completes the upload, then acks with [`Queue::ack_upload`].
    Last(Vec<(u32, String)>),
}

/// What a buried task leaves behind (see [`Queue::fail`]).
#[derive(Clone, Debug, Default)]
pub struct Abandon {
    /// The upload record to forget (its upload was aborted).
    pub upload: Option<String>,
    /// What the dead letter holds instead of the task.
    pub replacement: Option<Task>,
}

impl Queue {
    /// The record of upload `rid` of `rule`, if it is still open.
    pub async fn upload(&self, rule: &str, rid: &str) -> Result<Option<UploadRecord>, QueueError> {
        let raw: Option<Vec<u8>> = self
            .query(
                redis::cmd("HGET")
                    .arg(self.keys.rule(rule).uploads())
                    .arg(rid),
            )
            .await?;
        Ok(raw.map(|r| codec::decode(&r)).transpose()?)
    }

    /// The ETag recorded for part `number` of upload `rid`, if any.
    pub async fn part_etag(
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

    /// Records the upload the holder of object task `claimed` just created (the record id is
    /// the task's id). False when the lease was lost: then the caller aborts the upload.
    pub async fn record_upload(
        &self,
        worker: &str,
        claimed: &Claimed,
        record: &UploadRecord,
    ) -> Result<bool, QueueError> {
        let rk = self.keys.rule(&claimed.rule);
        let mut inv = self.task_invocation(&self.scripts.upload, &rk);
        inv.arg(worker)
            .arg(&claimed.id)
            .arg(claimed.token)
            .arg(codec::encode(record));
        let done: i64 = self.invoke(inv).await?;
        reply::held("upload.lua", done)
    }

    /// Replaces held task `claimed` by `tasks` on its shard and in its iteration, counting it
    /// as `outcome` and forgetting upload record `drop_upload`, in one step. Part tasks get ids
    /// ending in `:p`. False when the lease was lost (nothing changed).
    pub async fn replace(
        &self,
        worker: &str,
        claimed: &Claimed,
        outcome: &str,
        drop_upload: Option<&str>,
        tasks: &[Task],
    ) -> Result<bool, QueueError> {
        let rk = self.keys.rule(&claimed.rule);
        let mut inv = self.task_invocation(&self.scripts.replace, &rk);
        let parts = tasks.iter().any(|t| matches!(t, Task::CopyPart(_)));
        inv.arg(worker)
            .arg(&claimed.id)
            .arg(claimed.token)
            .arg(outcome)
            .arg(drop_upload.unwrap_or(""))
            .arg(if parts { ":p" } else { "" });
        for task in tasks {
            inv.arg(codec::encode_task(task));
        }
        let done: i64 = self.invoke(inv).await?;
        reply::held("replace.lua", done)
    }

    /// Records the ETag of the part that held task `claimed` uploaded, and finds out whether
    /// it was the last one (see [`PartRecorded`]).
    pub async fn record_part(
        &self,
        worker: &str,
        claimed: &Claimed,
        part: &PartTask,
        etag: &str,
    ) -> Result<PartRecorded, QueueError> {
        let rk = self.keys.rule(&claimed.rule);
        let mut inv = self.task_invocation(&self.scripts.part, &rk);
        inv.arg(worker)
            .arg(&claimed.id)
            .arg(claimed.token)
            .arg(&part.upload)
            .arg(part.number)
            .arg(etag)
            .arg(part.parts)
            .arg(part.len());
        let answer: Vec<String> = self.invoke(inv).await?;
        reply::part_recorded(&answer)
    }

    /// Every upload record of `rule` still open, read in pages (see [`Queue::forget_upload`]).
    pub async fn open_uploads(
        &self,
        rule: &str,
    ) -> Result<Vec<(String, UploadRecord)>, QueueError> {
        let key = self.keys.rule(rule).uploads();
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let (next, page): (u64, Vec<(String, Vec<u8>)>) = self
                .query(
                    redis::cmd("HSCAN")
                        .arg(&key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(200),
                )
                .await?;
            for (rid, raw) in page {
                out.push((rid, codec::decode(&raw)?));
            }
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    /// Forgets upload record `rid` and its part ETags (after the upload was aborted).
    pub async fn forget_upload(&self, rule: &str, rid: &str) -> Result<(), QueueError> {
        let rk = self.keys.rule(rule);
        redis::pipe()
            .hdel(rk.uploads(), rid)
            .ignore()
            .del(rk.upload_parts(rid))
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }
}
