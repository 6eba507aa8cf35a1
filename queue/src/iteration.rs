//! Iteration records in Redis: numbering, counts, history.

use std::collections::{BTreeMap, HashMap};

use super::{LeaderToken, Queue, QueueError};

/// Finished iterations kept per rule.
pub const HISTORY: usize = 100;

/// Where an iteration is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IterationState {
    /// Listing, planning or waiting for its tasks.
    Running,
    /// Every task done, none dead.
    Succeeded,
    /// Done, with tasks in dead letters (or its listing failed for good).
    Failed,
}

impl IterationState {
    /// The name stored in the record (and shown).
    pub fn as_str(self) -> &'static str {
        match self {
            IterationState::Running => "running",
            IterationState::Succeeded => "succeeded",
            IterationState::Failed => "failed",
        }
    }

    /// The state a stored name means; `None` for anything the scripts never write.
    pub fn parse(s: &str) -> Option<IterationState> {
        match s {
            "running" => Some(IterationState::Running),
            "succeeded" => Some(IterationState::Succeeded),
            "failed" => Some(IterationState::Failed),
            _ => None,
        }
    }
}

/// One iteration's record as stored in `NS:{R}:it:N`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IterationRecord {
    /// Iteration number, from 1.
    pub number: u64,
    /// Start, ms since the Unix epoch (Redis clock).
    pub started_ms: u64,
    /// End, ms since the Unix epoch; 0 while running.
    pub ended_ms: u64,
    /// Its state; `None` when there is no such record (or it holds a state this version
    /// does not know, which is then never read as one it does).
    pub state: Option<IterationState>,
    /// Set once every task of the iteration has been enqueued.
    pub sealed: bool,
    /// Source objects listed.
    pub listed: u64,
    /// Objects skipped by the diff (and by a worker's second look: `skipped` outcomes).
    pub skipped: u64,
    /// The diff's skips by why, by [`super::SkipCategory`] (absent ones are 0).
    pub skipped_by: BTreeMap<super::SkipCategory, u64>,
    /// Tasks a worker found needless on a second look, the destination holding the same or
    /// something newer (`kept` outcomes).
    pub kept: u64,
    /// Tasks enqueued.
    pub planned: u64,
    /// Bytes the planned tasks move.
    pub planned_bytes: u64,
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
    /// Multipart copies whose ETag differs from the source's: the source's part sizes could
    /// not be read nor inferred ("ETag differs: source layout unknown"); the bytes were
    /// verified all the same.
    pub etag_differs: u64,
    /// Tasks in dead letters.
    pub dead: u64,
    /// Destination objects deleted (`delete = true`).
    pub deleted: u64,
    /// Changes this iteration found that no event announced (rules with `events`).
    pub missed: u64,
    /// Planning resumes after this (prefix index, key): all up to it is enqueued.
    pub checkpoint: Option<(usize, String)>,
    /// The key ranges a prefix is listed in, by prefix index: the boundaries `b1 < b2 < ...`
    /// of the ranges `(start, b1], (b1, b2], ..., (bn, end)`.
    pub ranges: BTreeMap<usize, Vec<String>>,
    /// Where each range's planning resumes, by (prefix index, range index): all of the
    /// range up to and including this key is enqueued.
    pub range_checkpoints: BTreeMap<(usize, usize), String>,
    /// The marks of each prefix listed whole in this iteration, by prefix index (kept until
    /// the next iteration records its own).
    pub marks: BTreeMap<usize, ListingMarks>,
}

/// What one iteration's listing of a prefix says about its keys: how many there were, and
/// the keys at equal counts among them, from which the next iteration cuts the prefix into
/// key ranges of equal size.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListingMarks {
    /// The listing prefix (a rule's prefixes may change between iterations).
    pub prefix: String,
    /// Source keys listed.
    pub listed: u64,
    /// The keys at `1/(len+1), 2/(len+1), ...` of the listing, in key order.
    pub keys: Vec<String>,
}

impl IterationRecord {
    /// Every source object of the iteration that was not copied, by why: the diff's
    /// [`super::SkipCategory`]s, a worker's second look (`skipped`: the source's version was
    /// there already, counted as unchanged; `kept`: something as new or newer), and
    /// `archived`. Every reason is there, 0 or not.
    pub fn skipped_by_reason(&self) -> BTreeMap<&'static str, u64> {
        use super::SkipCategory;
        let mut by: BTreeMap<&'static str, u64> = SkipCategory::ALL
            .iter()
            .map(|c| (c.as_str(), self.skipped_by.get(c).copied().unwrap_or(0)))
            .collect();
        let by_diff: u64 = self.skipped_by.values().sum();
        *by.entry(SkipCategory::Unchanged.as_str()).or_default() +=
            self.skipped.saturating_sub(by_diff);
        *by.entry(SkipCategory::DestinationNewer.as_str())
            .or_default() += self.kept;
        by.insert("archived", self.archived);
        by
    }

    pub(super) fn from_fields(number: u64, f: &HashMap<String, String>) -> Self {
        let n = |k: &str| f.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        IterationRecord {
            number,
            started_ms: n("started_ms"),
            ended_ms: n("ended_ms"),
            state: f.get("state").and_then(|s| IterationState::parse(s)),
            sealed: n("sealed") == 1,
            listed: n("listed"),
            skipped: n("skipped"),
            skipped_by: super::SkipCategory::ALL
                .iter()
                .map(|c| (*c, n(c.field())))
                .filter(|(_, n)| *n > 0)
                .collect(),
            kept: n("kept"),
            planned: n("planned"),
            planned_bytes: n("planned_bytes"),
            done: n("done"),
            copied: n("copied"),
            copied_bytes: n("copied_bytes"),
            gone: n("gone"),
            archived: n("archived"),
            etag_differs: n("etag_differs"),
            dead: n("dead"),
            deleted: n("deleted"),
            missed: n("missed"),
            checkpoint: match n("ckpt_prefix") {
                0 => None,
                p => Some((
                    p as usize - 1,
                    f.get("ckpt_key").cloned().unwrap_or_default(),
                )),
            },
            ranges: f
                .iter()
                .filter_map(|(field, value)| {
                    let p: usize = field.strip_prefix("ranges:")?.parse().ok()?;
                    Some((p.checked_sub(1)?, serde_json::from_str(value).ok()?))
                })
                .collect(),
            range_checkpoints: f
                .iter()
                .filter_map(|(field, key)| {
                    let (p, r) = field.strip_prefix("rckpt:")?.split_once(':')?;
                    let p: usize = p.parse().ok()?;
                    Some(((p.checked_sub(1)?, r.parse().ok()?), key.clone()))
                })
                .collect(),
            marks: f
                .iter()
                .filter_map(|(field, value)| {
                    let p: usize = field.strip_prefix("marks:")?.parse().ok()?;
                    Some((p.checked_sub(1)?, serde_json::from_str(value).ok()?))
                })
                .collect(),
        }
    }

    /// Whether it is still running.
    pub fn is_running(&self) -> bool {
        self.state == Some(IterationState::Running)
    }

    /// Whether it finished and succeeded.
    pub fn succeeded(&self) -> bool {
        self.state == Some(IterationState::Succeeded)
    }

    /// Its state's name (`unknown` for none).
    pub fn state_name(&self) -> &'static str {
        self.state.map_or("unknown", IterationState::as_str)
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

impl Queue {
    /// Starts the next iteration of `rule` and returns its number, fenced by `leader`. Its
    /// start is on the Redis clock, like leases and write intents.
    pub async fn begin_iteration(
        &self,
        rule: &str,
        leader: &LeaderToken,
    ) -> Result<u64, QueueError> {
        let rk = self.keys.rule(rule);
        let current: Option<u64> = self.query(redis::cmd("GET").arg(rk.current())).await?;
        let n = current.unwrap_or(0) + 1;
        let mut inv = self.scripts.begin.prepare_invoke();
        inv.key(rk.current())
            .key(rk.iteration(n))
            .key(rk.leader())
            .arg(n)
            .arg(leader.as_str());
        self.fenced(rule, self.invoke(inv).await)
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

    /// Marks iteration `n` sealed: every one of its tasks is enqueued. Fenced by `leader`.
    pub async fn seal_iteration(
        &self,
        rule: &str,
        n: u64,
        leader: &LeaderToken,
    ) -> Result<(), QueueError> {
        let rk = self.keys.rule(rule);
        let mut inv = self.scripts.seal.prepare_invoke();
        inv.key(rk.leader())
            .key(rk.iteration(n))
            .arg(leader.as_str());
        self.fenced(rule, self.invoke::<i64>(inv).await).map(drop)
    }

    /// Records the key ranges prefix `prefix` of iteration `n` is listed in (their
    /// `boundaries`), unless an earlier attempt recorded them; returns those on record.
    /// Fenced by `leader`.
    pub async fn record_ranges(
        &self,
        rule: &str,
        n: u64,
        prefix: usize,
        boundaries: &[String],
        leader: &LeaderToken,
    ) -> Result<Vec<String>, QueueError> {
        let rk = self.keys.rule(rule);
        let mut inv = self.scripts.ranges.prepare_invoke();
        let encoded = serde_json::to_string(boundaries).unwrap_or_else(|_| "[]".into());
        inv.key(rk.leader())
            .key(rk.iteration(n))
            .arg(leader.as_str())
            .arg(prefix + 1)
            .arg(encoded);
        let recorded: String = self.fenced(rule, self.invoke(inv).await)?;
        serde_json::from_str(&recorded).map_err(|_| QueueError::Reply {
            script: "ranges",
            reply: recorded.chars().take(200).collect(),
        })
    }

    /// Records the marks of prefix `prefix` as iteration `n` listed it whole, and drops
    /// those iteration `n - 1` recorded for it.
    pub async fn record_marks(
        &self,
        rule: &str,
        n: u64,
        prefix: usize,
        marks: &ListingMarks,
        leader: &LeaderToken,
    ) -> Result<(), QueueError> {
        let rk = self.keys.rule(rule);
        let mut inv = self.scripts.marks.prepare_invoke();
        let encoded = serde_json::to_string(marks).unwrap_or_else(|_| "{}".into());
        inv.key(rk.leader())
            .key(rk.iteration(n))
            .key(rk.iteration(n.saturating_sub(1)))
            .arg(leader.as_str())
            .arg(prefix + 1)
            .arg(encoded);
        let _: i64 = self.fenced(rule, self.invoke(inv).await)?;
        Ok(())
    }

    /// Up to `max` of iteration `n`'s report lines not yet written out, oldest first, and
    /// the number of the part they go into; with `full`, none unless there are `max`.
    pub async fn report_pending(
        &self,
        rule: &str,
        n: u64,
        max: usize,
        full: bool,
    ) -> Result<(u64, Vec<String>), QueueError> {
        let rk = self.keys.rule(rule);
        if full {
            let pending: u64 = self.query(redis::cmd("LLEN").arg(rk.report(n))).await?;
            if pending < max as u64 {
                return Ok((0, Vec::new()));
            }
        }
        let part: Option<u64> = self.query(redis::cmd("GET").arg(rk.report_part(n))).await?;
        let lines: Vec<String> = self
            .query(
                redis::cmd("LRANGE")
                    .arg(rk.report(n))
                    .arg(0)
                    .arg(max.max(1) as i64 - 1),
            )
            .await?;
        Ok((part.unwrap_or(1), lines))
    }

    /// Records that the first `count` pending lines of iteration `n`'s report were written
    /// out as part `part`; false when that part was recorded already.
    pub async fn report_written(
        &self,
        rule: &str,
        n: u64,
        part: u64,
        count: usize,
        leader: &LeaderToken,
    ) -> Result<bool, QueueError> {
        let rk = self.keys.rule(rule);
        let mut inv = self.scripts.report.prepare_invoke();
        inv.key(rk.leader())
            .key(rk.report(n))
            .key(rk.report_part(n))
            .arg(leader.as_str())
            .arg(part)
            .arg(count);
        let done: i64 = self.fenced(rule, self.invoke(inv).await)?;
        Ok(done == 1)
    }

    /// Forgets iteration `n`'s report bookkeeping, once its manifest is written.
    pub async fn report_done(&self, rule: &str, n: u64) -> Result<(), QueueError> {
        let rk = self.keys.rule(rule);
        let _: i64 = self
            .query(redis::cmd("DEL").arg(rk.report(n)).arg(rk.report_part(n)))
            .await?;
        Ok(())
    }

    /// Reads an iteration record.
    pub async fn iteration(&self, rule: &str, n: u64) -> Result<IterationRecord, QueueError> {
        let fields: HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(self.keys.rule(rule).iteration(n)))
            .await?;
        Ok(IterationRecord::from_fields(n, &fields))
    }

    /// Closes an iteration as succeeded or failed and adds it to the history, dropping
    /// records beyond the last [`HISTORY`]; fenced by `leader`, and a no-op when it is
    /// closed already.
    pub async fn finish_iteration(
        &self,
        rule: &str,
        n: u64,
        succeeded: bool,
        leader: &LeaderToken,
    ) -> Result<IterationRecord, QueueError> {
        let rk = self.keys.rule(rule);
        let mut inv = self.scripts.finish.prepare_invoke();
        inv.key(rk.leader())
            .key(rk.iteration(n))
            .key(rk.history())
            .key(rk.last_success())
            .arg(leader.as_str())
            .arg(n)
            .arg(if succeeded { "succeeded" } else { "failed" })
            .arg(HISTORY);
        let dropped: Vec<u64> = self.fenced(rule, self.invoke(inv).await)?;
        if !dropped.is_empty() {
            let mut del = redis::cmd("DEL");
            for old in dropped {
                del.arg(rk.iteration(old)).arg(rk.archived(old));
            }
            self.query::<()>(&mut del).await?;
        }
        self.iteration(rule, n).await
    }

    /// The keys iteration `n` of `rule` found archived and not restored, in the order found
    /// (at most [`super::ARCHIVED_KEYS_KEPT`]; the record's `archived` counts them all).
    pub async fn archived_keys(&self, rule: &str, n: u64) -> Result<Vec<String>, QueueError> {
        self.query(
            redis::cmd("LRANGE")
                .arg(self.keys.rule(rule).archived(n))
                .arg(0)
                .arg(-1),
        )
        .await
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
