//! How much work a rule has, and how old the oldest is.

use super::*;

impl Queue {
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
