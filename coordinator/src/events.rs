//! From event notifications to tasks: the same decision table and ledger as an iteration,
//! applied to what each event's key holds now on both sides.
//!
//! Per event: is it this rule's (bucket, prefixes, a create or a remove)? Is its sequencer
//! newer than the last one applied for its key? Then a HEAD of the key on each side, the
//! ledger's entry, and [`decide`], exactly as a listing would feed it; the task it gives (a
//! copy, or a fenced delete of a managed object with `delete = true`) is enqueued with the
//! sequencer's compare-and-set in one step. Iterations and events share the ledger and the
//! conditional writes, so neither can undo the other, and an event that lost a race to an
//! iteration finds nothing left to do.

pub mod notice;
mod sns;
mod sqs;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use crate::events::notice::{EventKind, EventRecord, sequencer_cmp};
use ferry_core::config::Rule;
use ferry_core::policy::{Action, Joined, Policy, decide};
use ferry_core::shard::shard_of;
use ferry_core::task::{Expected, Task};
use ferry_core::telemetry::Metric;
use ferry_queue::{EventApplied, EventTask, LedgerView};
use ferry_storage::{ErrorKind, ObjectHead, ObjectMeta, ObjectStore, StorageError};
use futures::{StreamExt, TryStreamExt};
use tracing::debug;

use crate::planner::copy_task;
use crate::{Context, CoordinatorError};

pub use sns::SnsCheck;
pub use sqs::follow_queue;
pub use webhook::{Listener, serve};

/// HEADs in flight while one batch of events is decided.
const CONCURRENT_HEADS: usize = 32;

/// What became of a batch of events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Records received.
    pub received: u64,
    /// Records that became a task.
    pub enqueued: u64,
    /// Records whose key needed nothing (already replicated, or not to be touched).
    pub skipped: u64,
    /// Records older than (or the same as) one already applied for their key.
    pub stale: u64,
    /// Records for another bucket, outside the rule's prefixes, or neither a create nor a
    /// remove.
    pub ignored: u64,
    /// Bodies that were not events.
    pub invalid: u64,
    /// SNS messages not believed: a signature that does not hold, another topic, unsigned
    /// without a token (answered 403).
    pub refused: u64,
}

impl Tally {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Tally) {
        self.received += other.received;
        self.enqueued += other.enqueued;
        self.skipped += other.skipped;
        self.stale += other.stale;
        self.ignored += other.ignored;
        self.invalid += other.invalid;
        self.refused += other.refused;
    }

    /// Counts these into `ferry_events_total{rule,outcome}`.
    pub fn publish(&self, rule: &str) {
        for (outcome, n) in [
            ("received", self.received),
            ("enqueued", self.enqueued),
            ("skipped", self.skipped),
            ("stale", self.stale),
            ("ignored", self.ignored),
            ("invalid", self.invalid),
            ("refused", self.refused),
        ] {
            if n > 0 {
                Metric::Events
                    .counter(&[("rule", rule.to_string()), ("outcome", outcome.into())])
                    .increment(n);
            }
        }
    }
}

/// Whether `record` concerns `rule` at all: its source bucket, one of its prefixes, and a
/// create or a remove.
fn concerns(rule: &Rule, record: &EventRecord) -> bool {
    record.bucket == rule.source.bucket
        && record.kind != EventKind::Other
        && (rule.source.prefixes.is_empty()
            || rule
                .source
                .prefixes
                .iter()
                .any(|p| record.key.starts_with(p.as_str())))
}

/// The rule prefix `key` falls under (its shard is chosen within it, as a listing's is).
fn prefix_of<'a>(rule: &'a Rule, key: &str) -> &'a str {
    rule.source
        .prefixes
        .iter()
        .find(|p| key.starts_with(p.as_str()))
        .map_or("", String::as_str)
}

/// Decides and enqueues `records` for `rule`; returns what became of each. Nothing is
/// enqueued for a record that is not the rule's, or stale; an error (Redis, or a HEAD that
/// failed other than with 404) leaves the rest undone, to be delivered again.
pub async fn apply(
    ctx: &Context,
    rule: &Rule,
    records: Vec<EventRecord>,
) -> Result<Tally, CoordinatorError> {
    let mut tally = Tally {
        received: records.len() as u64,
        ..Tally::default()
    };
    let (mine, others): (Vec<_>, Vec<_>) = records.into_iter().partition(|r| concerns(rule, r));
    tally.ignored = others.len() as u64;
    for r in &others {
        debug!(rule = %rule.name, bucket = %r.bucket, key = %r.key, event = %r.name,
            "an event this rule does not follow");
    }
    if mine.is_empty() {
        tally.publish(&rule.name);
        return Ok(tally);
    }
    let fresh = fresh_records(ctx, rule, mine, &mut tally).await?;
    let sides = heads_of(ctx, rule, &fresh).await?;
    let with_destination: Vec<&str> = fresh
        .iter()
        .zip(&sides)
        .filter(|(_, (_, d))| d.is_some())
        .map(|(r, _)| r.key.as_str())
        .collect();
    let mut views: HashMap<&str, _> = with_destination
        .iter()
        .copied()
        .zip(ctx.queue.ledger_get(&rule.name, &with_destination).await?)
        .collect();
    // Only a record without a time needs the queue's clock (one more round trip).
    let now_ms = if fresh.iter().any(|r| r.time_ms.is_none()) {
        ctx.queue.redis_time_ms().await?
    } else {
        0
    };
    let decided: Vec<EventTask> = fresh
        .iter()
        .zip(sides)
        .map(|(record, sides)| {
            let view = views.remove(record.key.as_str()).unwrap_or_default();
            decide_event(rule, record, sides, &view, now_ms)
        })
        .collect();
    for applied in ctx.queue.apply_events(&rule.name, &decided).await? {
        match applied {
            EventApplied::Enqueued => tally.enqueued += 1,
            EventApplied::Recorded => tally.skipped += 1,
            EventApplied::Stale => tally.stale += 1,
        }
    }
    tally.publish(&rule.name);
    Ok(tally)
}

/// The records of `mine` not stale already (by the sequencers applied), the newest of each
/// key; the stale ones counted in `tally`.
async fn fresh_records(
    ctx: &Context,
    rule: &Rule,
    mine: Vec<EventRecord>,
    tally: &mut Tally,
) -> Result<Vec<EventRecord>, CoordinatorError> {
    let keys: Vec<&str> = mine.iter().map(|r| r.key.as_str()).collect();
    let held = ctx.queue.applied_sequencers(&rule.name, &keys).await?;
    let (fresh, stale): (Vec<_>, Vec<_>) =
        mine.into_iter()
            .zip(held)
            .partition(|(r, held)| match (&r.sequencer, held) {
                (Some(seq), Some(held)) => sequencer_cmp(seq, held).is_gt(),
                _ => true,
            });
    tally.stale = stale.len() as u64;
    let fresh: Vec<EventRecord> = fresh.into_iter().map(|(r, _)| r).collect();
    let before = fresh.len();
    let fresh = newest_per_key(fresh);
    tally.stale += (before - fresh.len()) as u64;
    Ok(fresh)
}

/// What each record's key holds now, at the source and at the destination.
async fn heads_of(
    ctx: &Context,
    rule: &Rule,
    records: &[EventRecord],
) -> Result<Vec<(Option<ObjectMeta>, Option<ObjectMeta>)>, CoordinatorError> {
    let source = ctx.stores.source(rule);
    let destination = ctx.stores.destination(rule);
    let heads: Vec<_> = records
        .iter()
        .map(|r| {
            head_both(
                (source.clone(), rule.source.bucket.clone()),
                (destination.clone(), rule.destination.bucket.clone()),
                r.key.clone(),
            )
        })
        .collect();
    Ok(futures::stream::iter(heads)
        .buffered(CONCURRENT_HEADS)
        .try_collect()
        .await?)
}

/// The task one event's key needs, from what both sides hold now, the ledger, the rule's
/// filters (as a listing applies them) and the decision table, with every check: no shortcut
/// from the last iteration's start, since an event is about a change, however old the
/// object's Last-Modified claims to be.
fn decide_event(
    rule: &Rule,
    record: &EventRecord,
    sides: (Option<ObjectMeta>, Option<ObjectMeta>),
    view: &LedgerView,
    now_ms: u64,
) -> EventTask {
    let policy = Policy {
        overwrite: rule.overwrite,
        overwrite_unmanaged: rule.overwrite_unmanaged,
        delete: rule.delete,
        last_success_start_ms: None,
    };
    let joined = match sides {
        (Some(source), Some(destination)) => Some(Joined::Both {
            source,
            destination,
        }),
        (Some(source), None) => Some(Joined::SourceOnly(source)),
        (None, Some(destination)) => Some(Joined::DestinationOnly(destination)),
        (None, None) => None,
    };
    // An excluded source object is not copied, an excluded destination object not deleted.
    let relative = record
        .key
        .strip_prefix(prefix_of(rule, &record.key))
        .unwrap_or(&record.key);
    let clock_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let joined = joined.filter(|j| {
        let object = match j {
            Joined::SourceOnly(o) | Joined::Both { source: o, .. } | Joined::DestinationOnly(o) => {
                o
            }
        };
        rule.filter
            .admits(relative, object.size, object.last_modified_ms, clock_ms)
    });
    let task = joined.and_then(|joined| {
        let action = decide(&joined, view.entry.as_ref(), view.stray_besides(None), &policy);
        debug!(rule = %rule.name, key = %record.key, event = %record.name, ?action, "event decided");
        match (action, joined) {
            (Action::Copy(_), Joined::SourceOnly(s)) => Some(copy_task(s, Expected::Absent)),
            (Action::Copy(_), Joined::Both { source, destination }) => {
                Some(copy_task(source, Expected::Etag(destination.etag)))
            }
            (Action::Delete, Joined::DestinationOnly(d)) => Some(Task::DeleteObject {
                key: d.key,
                destination_etag: d.etag,
            }),
            _ => None,
        }
    });
    EventTask {
        key: record.key.clone(),
        sequencer: record.sequencer.clone(),
        time_ms: record.time_ms.unwrap_or(now_ms),
        task: task.map(|t| (shard_of(prefix_of(rule, &record.key), &record.key), t)),
    }
}

/// Of several records of one key in a batch, the newest (by sequencer; the last one when
/// they cannot be told apart) stands for them all: one decision, one task, per key.
fn newest_per_key(records: Vec<EventRecord>) -> Vec<EventRecord> {
    let mut newest: HashMap<&str, usize> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let replaces = newest.get(r.key.as_str()).is_none_or(|&j| {
            match (&r.sequencer, &records[j].sequencer) {
                (Some(a), Some(b)) => sequencer_cmp(a, b).is_ge(),
                _ => true,
            }
        });
        if replaces {
            newest.insert(r.key.as_str(), i);
        }
    }
    let mut kept: Vec<usize> = newest.into_values().collect();
    kept.sort_unstable();
    let mut records: Vec<Option<EventRecord>> = records.into_iter().map(Some).collect();
    kept.into_iter().filter_map(|i| records[i].take()).collect()
}

/// What `key` holds on each side, as listing entries.
async fn head_both(
    (source, source_bucket): (Arc<dyn ObjectStore>, String),
    (destination, destination_bucket): (Arc<dyn ObjectStore>, String),
    key: String,
) -> Result<(Option<ObjectMeta>, Option<ObjectMeta>), StorageError> {
    let (s, d) = tokio::join!(
        source.head(&source_bucket, &key, None),
        destination.head(&destination_bucket, &key, None),
    );
    Ok((present(&key, s)?, present(&key, d)?))
}

/// A HEAD's answer as a listing entry; `None` when there is no such object.
fn present(
    key: &str,
    head: Result<ObjectHead, StorageError>,
) -> Result<Option<ObjectMeta>, StorageError> {
    match head {
        Ok(h) => Ok(Some(ObjectMeta {
            key: key.to_string(),
            size: h.size,
            etag: h.etag,
            last_modified_ms: h.last_modified_ms,
            storage_class: h.attrs.storage_class,
        })),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::config::Config;

    fn rule(prefixes: &str) -> Rule {
        let config = Config::from_toml(&format!(
            "[endpoints.a]\nregion = \"us-east-1\"\n[endpoints.b]\nregion = \"us-east-1\"\n\
             [[rules]]\nname = \"r\"\nevents = {{ webhook = true }}\n\
             source = {{ endpoint = \"a\", bucket = \"photos\", prefixes = [{prefixes}] }}\n\
             destination = {{ endpoint = \"b\", bucket = \"copy\" }}\n"
        ))
        .expect("a valid config");
        config.rules[0].clone()
    }

    fn record(bucket: &str, key: &str, kind: EventKind) -> EventRecord {
        EventRecord {
            bucket: bucket.into(),
            key: key.into(),
            kind,
            name: String::new(),
            size: None,
            etag: None,
            sequencer: None,
            time_ms: None,
        }
    }

    #[test]
    fn a_key_twice_in_one_batch_is_decided_once_on_its_newest_record() {
        let with = |key: &str, seq: Option<&str>| EventRecord {
            sequencer: seq.map(str::to_string),
            ..record("photos", key, EventKind::Created)
        };
        let kept = newest_per_key(vec![
            with("a", Some("0B")),
            with("b", None),
            with("a", Some("0A")),
            with("b", None),
            with("c", Some("01")),
        ]);
        let view: Vec<_> = kept
            .iter()
            .map(|r| (r.key.as_str(), r.sequencer.as_deref()))
            .collect();
        assert_eq!(
            view,
            vec![("a", Some("0B")), ("b", None), ("c", Some("01"))]
        );
    }

    #[test]
    fn only_the_rules_bucket_prefixes_and_kinds_concern_it() {
        let r = rule("\"2024/\", \"2025/\"");
        assert!(concerns(
            &r,
            &record("photos", "2024/a", EventKind::Created)
        ));
        assert!(concerns(
            &r,
            &record("photos", "2025/b", EventKind::Removed)
        ));
        assert!(!concerns(
            &r,
            &record("photos", "2023/a", EventKind::Created)
        ));
        assert!(!concerns(
            &r,
            &record("other", "2024/a", EventKind::Created)
        ));
        assert!(!concerns(&r, &record("photos", "2024/a", EventKind::Other)));
        assert_eq!(prefix_of(&r, "2025/x/y"), "2025/");
        let whole = rule("");
        assert!(concerns(
            &whole,
            &record("photos", "any", EventKind::Created)
        ));
        assert_eq!(prefix_of(&whole, "any"), "");
    }
}
