//! Event notifications in the queue: the per-key sequencer check and the event's task, in
//! one step (`lua/event.lua`), and the rule's events record.
//!
//! Event tasks belong to iteration 0, which no iteration ever is (they are numbered from 1):
//! its record counts them as an iteration's record counts its tasks, and adds the lag from
//! each event to its copy (see `lib.lua`, `finish`).

use std::collections::HashMap;

use super::{IterationRecord, Queue, QueueError};
use ferry_core::codec;
use ferry_core::shard::ShardId;
use ferry_core::task::Task;

/// The iteration number of event tasks.
pub const EVENTS_ITERATION: u64 = 0;

/// One event, decided: the task it needs, if any.
#[derive(Clone, Debug)]
pub struct EventTask {
    /// The object key.
    pub key: String,
    /// The event's sequencer, upper-case hex (`None`: not ordered).
    pub sequencer: Option<String>,
    /// When the event happened (ms since the epoch); the task's lag is measured from it.
    pub time_ms: u64,
    /// The task to enqueue, on its shard (`None`: nothing to do, but the sequencer counts).
    pub task: Option<(ShardId, Task)>,
}

/// What became of an event in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventApplied {
    /// Its task was enqueued.
    Enqueued,
    /// It needed no task; its sequencer was recorded.
    Recorded,
    /// A newer (or the same) event of its key was applied already.
    Stale,
}

/// The events record: event tasks counted as an iteration's are, and the lag from each event
/// to its copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventsRecord {
    /// Planned, done, copied, deleted, dead... of event tasks (number 0).
    pub tasks: IterationRecord,
    /// Copies done within 1 s, 5 s and 30 s of their event, and later.
    pub lag_bands: [u64; 4],
    /// Sum of every copy's lag, ms.
    pub lag_sum_ms: u64,
    /// The largest lag, ms.
    pub lag_max_ms: u64,
    /// The last copy's lag, ms.
    pub lag_last_ms: u64,
}

impl EventsRecord {
    /// Copies measured.
    pub fn measured(&self) -> u64 {
        self.lag_bands.iter().sum()
    }
}

impl Queue {
    /// The sequencers last applied for `keys` of `rule` (a cheap check before deciding).
    pub async fn applied_sequencers(
        &self,
        rule: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<String>>, QueueError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys.rule(rule).sequencers());
        for key in keys {
            cmd.arg(codec::slot_bytes(key));
        }
        let held: Vec<Option<String>> = self.query(&mut cmd).await?;
        Ok(held
            .into_iter()
            .map(|h| h.and_then(|v| v.split_once('@').map(|(s, _)| s.to_string())))
            .collect())
    }

    /// Applies decided events of `rule` at once: per event, the sequencer check and its task.
    pub async fn apply_events(
        &self,
        rule: &str,
        events: &[EventTask],
    ) -> Result<Vec<EventApplied>, QueueError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let rk = self.keys.rule(rule);
        let mut inv = self.scripts.event.prepare_invoke();
        inv.key(rk.tasks())
            .key(rk.shards())
            .key(rk.seq())
            .key(rk.iteration(EVENTS_ITERATION))
            .key(rk.sequencers())
            .arg(&rk.prefix);
        for e in events {
            inv.arg(codec::slot_bytes(&e.key))
                .arg(e.sequencer.as_deref().unwrap_or(""))
                .arg(e.time_ms);
            match &e.task {
                Some((shard, task)) => inv.arg(*shard).arg(codec::encode_task(task)),
                None => inv.arg("").arg(""),
            };
        }
        let applied: Vec<i64> = self.invoke(inv).await?;
        if applied.len() != events.len() {
            return Err(QueueError::Reply {
                script: "event.lua",
                reply: format!("{} results for {} events", applied.len(), events.len()),
            });
        }
        Ok(applied
            .into_iter()
            .map(|n| match n {
                1 => EventApplied::Enqueued,
                0 => EventApplied::Recorded,
                _ => EventApplied::Stale,
            })
            .collect())
    }

    /// Forgets the sequencers of `rule` applied before `cutoff_ms` (an event older than that
    /// is no longer expected); returns how many.
    pub async fn prune_sequencers(&self, rule: &str, cutoff_ms: u64) -> Result<u64, QueueError> {
        let key = self.keys.rule(rule).sequencers();
        let mut cursor = 0u64;
        let mut pruned = 0;
        loop {
            let (next, page) = self.hash_page(&key, cursor).await?;
            let old: Vec<Vec<u8>> = page
                .into_iter()
                .filter(|(_, v)| {
                    v.split_once('@')
                        .and_then(|(_, ms)| ms.parse::<u64>().ok())
                        .is_none_or(|ms| ms < cutoff_ms)
                })
                .map(|(slot, _)| slot)
                .collect();
            if !old.is_empty() {
                let mut del = redis::cmd("HDEL");
                del.arg(&key);
                for slot in &old {
                    del.arg(&slot[..]);
                }
                pruned += self.query::<u64>(&mut del).await?;
            }
            if next == 0 {
                return Ok(pruned);
            }
            cursor = next;
        }
    }

    /// The events record of `rule`.
    pub async fn events_record(&self, rule: &str) -> Result<EventsRecord, QueueError> {
        let fields: HashMap<String, String> = self
            .query(redis::cmd("HGETALL").arg(self.keys.rule(rule).iteration(EVENTS_ITERATION)))
            .await?;
        let n = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(EventsRecord {
            tasks: IterationRecord::from_fields(EVENTS_ITERATION, &fields),
            lag_bands: [
                n("lag_le_1s"),
                n("lag_le_5s"),
                n("lag_le_30s"),
                n("lag_over_30s"),
            ],
            lag_sum_ms: n("lag_sum_ms"),
            lag_max_ms: n("lag_max_ms"),
            lag_last_ms: n("lag_last_ms"),
        })
    }
}
