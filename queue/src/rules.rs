//! The rules a queue knows of: registered, listed and forgotten.

use super::*;

impl Queue {
    /// Registers rules (buckets only) so every process and later checks can see them.
    pub async fn register_rules(&self, rules: &[BucketRef]) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        for r in rules {
            pipe.hset(self.keys.rules(), &r.rule, codec::encode(r))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(|e| self.err(e))
    }

    /// The rules registered so far by any coordinator in this namespace. One this version
    /// cannot decode (registered by a newer ferry) is left out, with a warning.
    pub async fn registered_rules(&self) -> Result<Vec<BucketRef>, QueueError> {
        let raw: Vec<(String, Vec<u8>)> = self
            .query(redis::cmd("HGETALL").arg(self.keys.rules()))
            .await?;
        Ok(raw
            .iter()
            .filter_map(|(name, v)| match codec::decode(v) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(rule = %name, error = %e,
                        "a registered rule cannot be decoded (a newer ferry registered it); not checked against it");
                    None
                }
            })
            .collect())
    }

    /// Forgets everything of `rule` in this namespace: queues, tasks, ledger, iterations,
    /// uploads, intents, state (for `--replace-rule`). Returns how many keys were deleted.
    pub async fn forget_rule(&self, rule: &str) -> Result<u64, QueueError> {
        let prefix = self.keys.rule(rule).prefix;
        let deleted = if let Link::Cluster(cluster) = &self.conn.inner {
            self.forget_slot_keys(cluster.clone(), &prefix).await?
        } else {
            self.forget_scanned_keys(&prefix).await?
        };
        self.query::<()>(redis::cmd("HDEL").arg(self.keys.rules()).arg(rule))
            .await?;
        Ok(deleted)
    }

    /// Deletes the keys under `prefix` (`NS:{R}`) on a Redis Cluster. They all hash to the
    /// rule's tag, so they all live in one slot, on one master: the keys of that slot are
    /// listed there (SCAN on a cluster would have to visit every node).
    async fn forget_slot_keys(
        &self,
        mut cluster: redis::cluster_async::ClusterConnection,
        prefix: &str,
    ) -> Result<u64, QueueError> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let route = || {
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                prefix,
                SlotAddr::Master,
            )))
        };
        let slot: u64 = self
            .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(prefix))
            .await?;
        let mut count = redis::cmd("CLUSTER");
        count.arg("COUNTKEYSINSLOT").arg(slot);
        let n: u64 = redis::from_redis_value(
            cluster
                .route_command(count, route())
                .await
                .map_err(|e| self.err(e))?,
        )
        .map_err(|e| self.err(e.into()))?;
        let mut list = redis::cmd("CLUSTER");
        list.arg("GETKEYSINSLOT").arg(slot).arg(n.max(1));
        let keys: Vec<String> = redis::from_redis_value(
            cluster
                .route_command(list, route())
                .await
                .map_err(|e| self.err(e))?,
        )
        .map_err(|e| self.err(e.into()))?;
        let mine: Vec<&String> = keys
            .iter()
            .filter(|k| {
                k.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(':'))
            })
            .collect();
        let mut deleted = 0;
        for chunk in mine.chunks(1000) {
            deleted += self.query::<u64>(redis::cmd("UNLINK").arg(chunk)).await?;
        }
        Ok(deleted)
    }

    /// Deletes the keys under `prefix` (`NS:{R}`) on one Redis (or the embedded store).
    async fn forget_scanned_keys(&self, prefix: &str) -> Result<u64, QueueError> {
        let pattern = format!("{prefix}:*");
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            if !keys.is_empty() {
                deleted += self.query::<u64>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}
