//! Reading the ledger and the write intents; writes happen in `ack.lua`, under the lease.
//!
//! A write intent is the trace a claim leaves for the key its task may write: it lasts
//! until that claim acks (or reports that it wrote nothing), so a write that lands after
//! its lease ran out is still accounted for (see ARCHITECTURE.md, "Late writes").

use std::time::Duration;

use redis::ScriptInvocation;

use super::{Queue, QueueError};
use ferry_core::codec::slot_bytes;
use ferry_core::ledger::{LedgerEntry, VersionsEntry, hash};

/// How long after its claim a write may still land. A write intent older than this, on a key
/// that an iteration found just as the ledger says, is forgotten. A write held in flight
/// for longer (by a network path that delays requests for over an hour) is not protected.
pub const STRAY_HORIZON: Duration = Duration::from_secs(3600);

/// One claim of a task that may write a key and has not acked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intent {
    /// The claim's lease token.
    pub token: u64,
    /// When it was claimed (ms, Redis clock).
    pub claimed_ms: u64,
}

/// What Redis knows of one destination key: the ledger entry and the writes in flight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerView {
    /// What ferry last wrote and acked.
    pub entry: Option<LedgerEntry>,
    /// For a rule with `versions = "all"`: the versions whose copies are recorded.
    pub versions: Option<VersionsEntry>,
    /// Claims that may write the key and have not acked.
    pub intents: Vec<Intent>,
}

impl LedgerView {
    /// Whether a write other than the claim `token`'s may have landed unrecorded.
    pub fn stray_besides(&self, token: Option<u64>) -> bool {
        self.intents.iter().any(|i| Some(i.token) != token)
    }
}

fn parse_intents(raw: &str) -> Vec<Intent> {
    raw.split(',')
        .filter_map(|item| {
            let (token, ms) = item.split_once('@')?;
            Some(Intent {
                token: token.parse().ok()?,
                claimed_ms: ms.parse().ok()?,
            })
        })
        .collect()
}

/// What an ack does to the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerOp {
    /// Nothing.
    None,
    /// Record what was written for this key.
    Put(String, LedgerEntry),
    /// Forget this key (its destination object was deleted).
    Delete(String),
    /// Record the versions of this key copied so far (`versions = "all"`).
    PutVersions(String, VersionsEntry),
}

impl LedgerOp {
    pub(super) fn add_args(&self, inv: &mut ScriptInvocation<'_>) {
        match self {
            LedgerOp::None => {
                inv.arg("").arg("").arg("");
            }
            LedgerOp::Put(key, entry) => {
                inv.arg("put").arg(&hash(key)[..]).arg(entry.encode());
            }
            LedgerOp::PutVersions(key, entry) => {
                inv.arg("put").arg(&hash(key)[..]).arg(entry.encode());
            }
            LedgerOp::Delete(key) => {
                inv.arg("del").arg(&hash(key)[..]).arg("");
            }
        }
    }
}

impl Queue {
    /// The ledger entries and write intents of `keys` of `rule`, in one round trip.
    pub async fn ledger_get(
        &self,
        rule: &str,
        keys: &[&str],
    ) -> Result<Vec<LedgerView>, QueueError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.task_invocation(&self.scripts.ledger, &self.keys.rule(rule));
        inv.arg("get");
        for key in keys {
            inv.arg(&hash(key)[..]).arg(slot_bytes(key));
        }
        let raw: Vec<Option<Vec<u8>>> = self.invoke(inv).await?;
        if raw.len() != 2 * keys.len() {
            return Err(QueueError::Reply {
                script: "ledger.lua",
                reply: format!("{} values for {} keys", raw.len(), keys.len()),
            });
        }
        Ok(raw
            .chunks(2)
            .map(|pair| LedgerView {
                entry: pair[0].as_deref().and_then(LedgerEntry::decode),
                versions: pair[0].as_deref().and_then(VersionsEntry::decode),
                intents: pair[1]
                    .as_deref()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .map(parse_intents)
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// Gives the ledger of `rule` its shape if it has none yet: one that grows with the rule
    /// for a rule registered just now (`fresh`), else the fixed buckets of a ledger that a
    /// ferry before growing ledgers may have written. Idempotent.
    pub async fn shape_ledger(&self, rule: &str, fresh: bool) -> Result<(), QueueError> {
        let mut inv = self.task_invocation(&self.scripts.ledger, &self.keys.rule(rule));
        if fresh {
            // The load is kept with the shape, so a later ferry with another default grows
            // this ledger as it was begun.
            inv.arg("start").arg(ferry_core::ledger::LOAD);
        } else {
            inv.arg("legacy");
        }
        self.invoke::<u64>(inv).await.map(drop)
    }

    /// How many buckets the ledger of `rule` has, and how many entries (`None` for a legacy
    /// ledger, which does not count them).
    pub async fn ledger_size(&self, rule: &str) -> Result<(u64, Option<u64>), QueueError> {
        let shape = self.keys.rule(rule).ledger_shape();
        let (legacy, bits, split, n): (Option<String>, Option<u32>, Option<u64>, Option<u64>) =
            self.query(
                redis::cmd("HMGET")
                    .arg(shape)
                    .arg("legacy")
                    .arg("bits")
                    .arg("split")
                    .arg("n"),
            )
            .await?;
        if legacy.as_deref() == Some("1") {
            return Ok((u64::from(ferry_core::ledger::LEGACY_BUCKETS), None));
        }
        Ok((
            (1u64 << bits.unwrap_or(0)) + split.unwrap_or(0),
            Some(n.unwrap_or(0)),
        ))
    }

    /// Forgets the write intents of `rule` made before `cutoff_ms` (Redis clock), reading the
    /// intents hash in pages. Returns how many keys had intents that old.
    pub async fn prune_intents(&self, rule: &str, cutoff_ms: u64) -> Result<u64, QueueError> {
        let rk = self.keys.rule(rule);
        let mut cursor = 0u64;
        let mut pruned = 0;
        loop {
            let (next, page) = self.hash_page(&rk.intents(), cursor).await?;
            let old: Vec<Vec<u8>> = page
                .into_iter()
                .filter(|(_, v)| parse_intents(v).iter().any(|i| i.claimed_ms < cutoff_ms))
                .map(|(slot, _)| slot)
                .collect();
            if !old.is_empty() {
                let mut inv = self.scripts.prune.prepare_invoke();
                inv.key(rk.intents()).arg(cutoff_ms);
                for slot in &old {
                    inv.arg(&slot[..]);
                }
                let n: u64 = self.invoke(inv).await?;
                pruned += n;
            }
            if next == 0 {
                return Ok(pruned);
            }
            cursor = next;
        }
    }

    /// One page of a hash's fields and values (HSCAN from `cursor`), and the next cursor (0
    /// at the end).
    pub(super) async fn hash_page(
        &self,
        key: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<(Vec<u8>, String)>), QueueError> {
        self.query(
            redis::cmd("HSCAN")
                .arg(key)
                .arg(cursor)
                .arg("COUNT")
                .arg(500),
        )
        .await
    }

    /// The time on Redis's clock, in ms (the clock leases and intents are measured by).
    pub async fn redis_time_ms(&self) -> Result<u64, QueueError> {
        let (secs, micros): (u64, u64) = self.query(&mut redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Writes ledger entries directly (for tools and measurements; workers write through
    /// [`Queue::ack`]).
    pub async fn ledger_put_many(
        &self,
        rule: &str,
        entries: &[(String, LedgerEntry)],
    ) -> Result<(), QueueError> {
        let mut inv = self.task_invocation(&self.scripts.ledger, &self.keys.rule(rule));
        inv.arg("put");
        for (key, entry) in entries {
            inv.arg(&hash(key)[..]).arg(entry.encode());
        }
        self.invoke::<u64>(inv).await.map(drop)
    }
}
