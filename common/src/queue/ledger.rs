//! Reading the ledger; writes happen in `ack.lua`, under the lease.

use redis::ScriptInvocation;

use super::{Queue, QueueError};
use crate::ledger::{LedgerEntry, slot};

/// What an ack does to the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerOp {
    /// Nothing.
    None,
    /// Record what was written for this key.
    Put(String, LedgerEntry),
    /// Forget this key (its destination object was deleted).
    Delete(String),
}

impl LedgerOp {
    pub(super) fn add_args(&self, inv: &mut ScriptInvocation<'_>) {
        match self {
            LedgerOp::None => {
                inv.arg("").arg(0).arg("").arg("");
            }
            LedgerOp::Put(key, entry) => {
                let (bucket, field) = slot(key);
                inv.arg("put")
                    .arg(bucket)
                    .arg(&field[..])
                    .arg(entry.encode());
            }
            LedgerOp::Delete(key) => {
                let (bucket, field) = slot(key);
                inv.arg("del").arg(bucket).arg(&field[..]).arg("");
            }
        }
    }
}

impl Queue {
    /// The ledger entries of `keys` of `rule`, in one round trip.
    pub async fn ledger_get(
        &self,
        rule: &str,
        keys: &[&str],
    ) -> Result<Vec<Option<LedgerEntry>>, QueueError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rk = self.keys.rule(rule);
        let mut pipe = redis::pipe();
        for key in keys {
            let (bucket, field) = slot(key);
            pipe.hget(rk.ledger(bucket), &field[..]);
        }
        let raw: Vec<Option<Vec<u8>>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.err(e))?;
        Ok(raw
            .into_iter()
            .map(|v| v.and_then(|b| LedgerEntry::decode(&b)))
            .collect())
    }

    /// Writes ledger entries directly (for tools and measurements; workers write through
    /// [`Queue::ack`]).
    pub async fn ledger_put_many(
        &self,
        rule: &str,
        entries: &[(String, LedgerEntry)],
    ) -> Result<(), QueueError> {
        let rk = self.keys.rule(rule);
        let mut pipe = redis::pipe();
        for (key, entry) in entries {
            let (bucket, field) = slot(key);
            pipe.hset(rk.ledger(bucket), &field[..], entry.encode())
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }
}
