//! Iteration records in Redis: numbering, counts, history.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Queue, QueueError};

/// Finished iterations kept per rule.
pub const HISTORY: usize = 100;

/// One iteration's record as stored in `NS:{R}:it:N`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IterationRecord {
    /// Iteration number, from 1.
    pub number: u64,
    /// Start, ms since the Unix epoch (Redis clock).
    pub started_ms: u64,
    /// End, ms since the Unix epoch; 0 while running.
    pub ended_ms: u64,
    /// `running`, `succeeded` or `failed`.
    pub state: String,
    /// Set once every task of the iteration has been enqueued.
    pub sealed: bool,
    /// Source objects listed.
    pub listed: u64,
    /// Objects skipped by the diff.
    pub skipped: u64,
    /// Tasks enqueued.
    pub planned: u64,
    /// Tasks acked (any outcome).
    pub done: u64,
    /// Objects copied.
    pub copied: u64,
    /// Bytes copied.
    pub copied_bytes: u64,
    /// Source objects gone before they could be copied.
    pub gone: u64,
    /// Source objects skipped as archived and not restored (`archived = "skip"`).
    pub archived: u64,
    /// Tasks in dead letters.
    pub dead: u64,
    /// Destination objects deleted (`delete = true`).
    pub deleted: u64,
    /// Planning resumes after this (prefix index, key): all up to it is enqueued.
    pub checkpoint: Option<(usize, String)>,
}

impl IterationRecord {
    fn from_fields(number: u64, f: &HashMap<String, String>) -> Self {
        let n = |k: &str| f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        IterationRecord {
            number,
            started_ms: n("started_ms"),
            ended_ms: n("ended_ms"),
            state: f.get("state").cloned().unwrap_or_default(),
            sealed: n("sealed") == 1,
            listed: n("listed"),
            skipped: n("skipped"),
            planned: n("planned"),
            done: n("done"),
            copied: n("copied"),
            copied_bytes: n("copied_bytes"),
            gone: n("gone"),
            archived: n("archived"),
            dead: n("dead"),
            deleted: n("deleted"),
            checkpoint: match n("ckpt_prefix") {
                0 => None,
                p => Some((
                    p as usize - 1,
                    f.get("ckpt_key").cloned().unwrap_or_default(),
                )),
            },
        }
    }

    /// Whether every planned task has been acked or buried.
    pub fn settled(&self) -> bool {
        self.sealed && self.done + self.dead >= self.planned
    }

    /// Tasks neither acked nor dead yet.
    pub fn outstanding(&self) -> u64 {
        self.planned.saturating_sub(self.done + self.dead)
    }

    /// An empty iteration transferred no data (and deleted nothing).
    pub fn is_empty(&self) -> bool {
        self.copied == 0 && self.copied_bytes == 0 && self.deleted == 0
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Queue {
    /// Starts the next iteration of `rule` and returns its number. Its start is on the
    /// Redis clock, like leases and write intents.
    pub async fn begin_iteration(&self, rule: &str) -> Result<u64, QueueError> {
        let rk = self.keys.rule(rule);
        let current: Option<u64> = self.query(redis::cmd("GET").arg(rk.current())).await?;
        let n = current.unwrap_or(0) + 1;
        let mut inv = self.scripts.begin.prepare_invoke();
        inv.key(rk.current()).key(rk.iteration(n)).arg(n);
        self.invoke(inv).await
    }

    /// The latest iteration of `rule`, if any.
    pub async fn latest_iteration(
        &self,
        rule: &str,
    ) -> Result<Option<IterationRecord>, QueueError> {
        let n: Option<u64> = self
            .query(redis::cmd("GET").arg(self.keys.rule(rule).current()))
            .await?;
        match n {
            Some(n) => Ok(Some(self.iteration(rule, n).await?)),
            None => Ok(None),
        }
    }

    /// Start (ms since the epoch) of the last succeeded iteration of `rule`.
    pub async fn last_success_start(&self, rule: &str) -> Result<Option<i64>, QueueError> {
        self.query(redis::cmd("GET").arg(self.keys.rule(rule).last_success()))
            .await
    }

    /// Records the rule's state for `ferry status`.
    pub async fn set_rule_state(&self, rule: &str, state: &str) -> Result<(), QueueError> {
        self.query::<()>(
            redis::cmd("SET")
                .arg(self.keys.rule(rule).state())
                .arg(state),
        )
        .await
    }

    /// The rule's state as its coordinator last recorded it.
    pub async fn rule_state(&self, rule: &str) -> Result<Option<String>, QueueError> {
        self.query(redis::cmd("GET").arg(self.keys.rule(rule).state()))
            .await
    }

    /// Sets numeric counts on an iteration record (e.g. listed, skipped, sealed).
    pub async fn set_iteration_counts(
        &self,
        rule: &str,
        n: u64,
        counts: &[(&str, u64)],
    ) -> Result<(), QueueError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.rule(rule).iteration(n));
        for (field, value) in counts {
            cmd.arg(*field).arg(*value);
        }
        cmd.query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    /// Reads an iteration record.
    pub async fn iteration(&self, rule: &str, n: u64) -> Result<IterationRecord, QueueError> {
        let fields: HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(self.keys.rule(rule).iteration(n)))
            .await?;
        Ok(IterationRecord::from_fields(n, &fields))
    }

    /// Closes an iteration as succeeded or failed and adds it to the history, dropping
    /// records beyond the last [`HISTORY`].
    pub async fn finish_iteration(
        &self,
        rule: &str,
        n: u64,
        succeeded: bool,
    ) -> Result<IterationRecord, QueueError> {
        let rk = self.keys.rule(rule);
        let state = if succeeded { "succeeded" } else { "failed" };
        let (_, _, old): ((), (), Vec<u64>) = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(rk.iteration(n))
            .arg("ended_ms")
            .arg(now_ms())
            .arg("state")
            .arg(state)
            .cmd("LPUSH")
            .arg(rk.history())
            .arg(n)
            .cmd("LRANGE")
            .arg(rk.history())
            .arg(HISTORY)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        if succeeded {
            let started = self.iteration(rule, n).await?.started_ms;
            self.query::<()>(redis::cmd("SET").arg(rk.last_success()).arg(started))
                .await?;
        }
        if !old.is_empty() {
            let mut pipe = redis::pipe();
            pipe.ltrim(rk.history(), 0, HISTORY as isize - 1).ignore();
            for o in old {
                pipe.del(rk.iteration(o)).ignore();
            }
            pipe.query_async::<()>(&mut self.conn())
                .await
                .map_err(|e| self.err(e))?;
        }
        self.iteration(rule, n).await
    }

    /// The finished iterations of `rule`, newest first.
    pub async fn history(&self, rule: &str) -> Result<Vec<IterationRecord>, QueueError> {
        let numbers: Vec<u64> = self
            .query(
                redis::cmd("LRANGE")
                    .arg(self.keys.rule(rule).history())
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        let mut out = Vec::with_capacity(numbers.len());
        for n in numbers {
            out.push(self.iteration(rule, n).await?);
        }
        Ok(out)
    }
}
