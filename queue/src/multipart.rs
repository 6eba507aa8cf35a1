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

use super::{Queue, QueueError};
use ferry_core::codec;
use ferry_core::task::{Task, UploadRecord};

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
