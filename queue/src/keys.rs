//! Every Redis key ferry uses is built here, and nowhere else.
//!
//! Per-rule keys share the hash tag `{rule}` so every Lua script touching one rule stays in
//! one Redis Cluster slot. Layout (`NS` = the configured namespace, `R` = rule name):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `NS:rules` | hash | rule name -> registered rule (buckets only, no credentials) |
//! | `NS:{R}:shards` | set | shard ids that have had tasks |
//! | `NS:{R}:q:SHARD` | list | ids of tasks ready to claim (LPUSH in, RPOP out) |
//! | `NS:{R}:tasks` | hash | task id -> versioned payload |
//! | `NS:{R}:attempts` | hash | task id -> failed attempts so far |
//! | `NS:{R}:errors` | hash | task id -> last error |
//! | `NS:{R}:leases` | zset | task id -> lease deadline (ms, Redis clock) |
//! | `NS:{R}:owners` | hash | task id -> `worker|token` of the current lease |
//! | `NS:{R}:delayed` | zset | task id -> time it may be retried (ms) |
//! | `NS:{R}:dead` | zset | task id -> time it died (ms) |
//! | `NS:{R}:seq` | string | task id counter |
//! | `NS:{R}:fence` | string | lease token counter |
//! | `NS:{R}:current` | string | number of the current iteration |
//! | `NS:{R}:it:N` | hash | iteration N: times and counts |
//! | `NS:{R}:history` | list | finished iterations, newest first, at most 100 |
//! | `NS:{R}:last_success` | string | start (ms) of the last succeeded iteration |
//! | `NS:{R}:l:BUCKET` | hash | ledger: 10-byte key hash -> entry (see [`ferry_core::ledger`]) |
//! | `NS:{R}:lshape` | hash | the ledger's shape: `bits`, `split` (its buckets), `n` (entries), `load` (entries per bucket), or `legacy` = 1 |
//! | `NS:{R}:leader` | string | token (`id#epoch`) of the coordinator leading the rule (expiring lease) |
//! | `NS:{R}:leader_epoch` | string | counter of lease acquisitions |
//! | `NS:{R}:rule` | hash | `state` (`running`, `waiting`, `stopped`, `failed`), `reason`, `since_ms`, `stopped_ms` |
//! | `NS:{R}:evseq` | hash | 12-byte ledger slot -> `SEQUENCER@ms` of the last event applied to that key |
//! | `NS:{R}:it:0` | hash | the events record: event tasks' counts and lag from event to copy |
//! | `NS:{R}:intents` | hash | 12-byte ledger slot -> `token@ms,...`: claims that may write that key and have not acked |
//! | `NS:{R}:flow` | hash | `SHARD:field` -> flow control state of each shard (in flight, limit, probing, ...) |
//! | `NS:{R}:budget:KIND` | hash | token bucket of `max_requests_per_second` (`requests`) or `max_bandwidth` (`bytes`) |
//! | `NS:{R}:uploads` | hash | record id -> multipart upload ferry started and has not finished |
//! | `NS:{R}:up:RID` | hash | part number -> ETag of each part uploaded so far |
//! | `NS:{R}:tp:SECOND` | hash | tasks (`n`) and bytes (`b`) finished in that second; expires |
//! | `NS:capabilities` | hash | `ENDPOINT/BUCKET` -> what the probe found that bucket's store does, and when (JSON) |
//! | `NS:{workers}` | hash | worker id -> what it reported in its last heartbeat |
//! | `NS:{workers}:seen` | zset | worker id -> time of its last heartbeat (ms) |
//!
//! Task ids are `ITERATION:SHARD:SEQ:ENQUEUED_MS`, with `:p` appended for part tasks, so a
//! script can find a task's queue and iteration from its id alone, and the lag is readable
//! from the oldest id.

/// Builds keys for one namespace.
#[derive(Clone, Debug)]
pub struct Keys {
    ns: String,
}

/// The fixed per-rule keys, in the order the Lua scripts expect them as `KEYS`.
#[derive(Clone, Debug)]
pub struct RuleKeys {
    /// `NS:{R}`, the prefix of every per-rule key (scripts append `:q:SHARD`, `:it:N`).
    pub prefix: String,
}

impl Keys {
    /// Keys under `namespace`.
    pub fn new(namespace: &str) -> Self {
        Keys {
            ns: namespace.to_string(),
        }
    }

    /// The registry of rules.
    pub fn rules(&self) -> String {
        format!("{}:rules", self.ns)
    }

    /// What each destination bucket's store was probed to do, shared by the fleet: field
    /// `ENDPOINT/BUCKET`, value `{"at_ms": ..., "capabilities": {...}}` (JSON).
    pub fn capabilities(&self) -> String {
        format!("{}:capabilities", self.ns)
    }

    /// The worker registry (`NS:{workers}`; with `:seen`, the heartbeat times).
    pub fn workers(&self) -> String {
        format!("{}:{{workers}}", self.ns)
    }

    /// The keys of one rule.
    pub fn rule(&self, rule: &str) -> RuleKeys {
        RuleKeys {
            prefix: format!("{}:{{{rule}}}", self.ns),
        }
    }
}

impl RuleKeys {
    fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }
    /// Shard id set.
    pub fn shards(&self) -> String {
        self.key("shards")
    }
    /// Ready queue of one shard.
    pub fn queue(&self, shard: u32) -> String {
        self.key(&format!("q:{shard}"))
    }
    /// Task payloads.
    pub fn tasks(&self) -> String {
        self.key("tasks")
    }
    /// Attempt counts.
    pub fn attempts(&self) -> String {
        self.key("attempts")
    }
    /// Last errors.
    pub fn errors(&self) -> String {
        self.key("errors")
    }
    /// Lease deadlines.
    pub fn leases(&self) -> String {
        self.key("leases")
    }
    /// Lease owners and tokens.
    pub fn owners(&self) -> String {
        self.key("owners")
    }
    /// Tasks waiting for their retry time.
    pub fn delayed(&self) -> String {
        self.key("delayed")
    }
    /// Dead letters.
    pub fn dead(&self) -> String {
        self.key("dead")
    }
    /// Task id counter.
    pub fn seq(&self) -> String {
        self.key("seq")
    }
    /// Lease token counter.
    pub fn fence(&self) -> String {
        self.key("fence")
    }
    /// Current iteration number.
    pub fn current(&self) -> String {
        self.key("current")
    }
    /// The sequencer of the last event applied, per ledger slot.
    pub fn sequencers(&self) -> String {
        self.key("evseq")
    }
    /// One iteration's record.
    pub fn iteration(&self, n: u64) -> String {
        self.key(&format!("it:{n}"))
    }
    /// The keys iteration `n` found archived and not restored (a list, at most
    /// [`super::ARCHIVED_KEYS_KEPT`]); deleted with the iteration's record.
    pub fn archived(&self, n: u64) -> String {
        self.key(&format!("it:{n}:archived"))
    }
    /// Finished iterations.
    pub fn history(&self) -> String {
        self.key("history")
    }

    /// Start of the last succeeded iteration.
    pub fn last_success(&self) -> String {
        self.key("last_success")
    }
    /// One ledger bucket.
    pub fn ledger(&self, bucket: u32) -> String {
        self.key(&format!("l:{bucket}"))
    }
    /// How the ledger's buckets are chosen, and how many entries it holds.
    pub fn ledger_shape(&self) -> String {
        self.key("lshape")
    }
    /// Iteration `n`'s report lines not yet written out (a list; see `report.lua`).
    pub fn report(&self, n: u64) -> String {
        self.key(&format!("rp:{n}"))
    }
    /// The number of the next part of iteration `n`'s report to write.
    pub fn report_part(&self, n: u64) -> String {
        self.key(&format!("rpn:{n}"))
    }
    /// The rule's leader lease (its value is the holder's token).
    pub fn leader(&self) -> String {
        self.key("leader")
    }
    /// Counter of leader lease acquisitions (the epoch in leader tokens).
    pub fn leader_epoch(&self) -> String {
        self.key("leader_epoch")
    }
    /// The rule's state as its coordinator last set it (a hash: state, reason, since_ms,
    /// stopped_ms).
    pub fn state(&self) -> String {
        self.key("rule")
    }

    /// Write intents: claims that may write a destination key and have not acked.
    pub fn intents(&self) -> String {
        self.key("intents")
    }
    /// One of the rule's shared budgets (`requests` or `bytes`).
    pub fn budget(&self, kind: &str) -> String {
        self.key(&format!("budget:{kind}"))
    }
    /// Flow control state of every shard (see [`ferry_core::flow`]).
    pub fn flow(&self) -> String {
        self.key("flow")
    }
    /// Open multipart uploads.
    pub fn uploads(&self) -> String {
        self.key("uploads")
    }
    /// Part ETags of one open upload.
    pub fn upload_parts(&self, rid: &str) -> String {
        self.key(&format!("up:{rid}"))
    }

    /// Tasks and bytes finished in one second (expires after two minutes).
    pub fn throughput(&self, second: u64) -> String {
        self.key(&format!("tp:{second}"))
    }

    /// `KEYS` for the task scripts, in their documented order.
    pub(crate) fn script_keys(&self) -> [String; 12] {
        [
            self.tasks(),
            self.attempts(),
            self.errors(),
            self.leases(),
            self.owners(),
            self.delayed(),
            self.dead(),
            self.shards(),
            self.fence(),
            self.intents(),
            self.flow(),
            self.ledger_shape(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_keys_share_one_hash_tag() {
        let k = Keys::new("ferry").rule("photos-dr");
        for key in k.script_keys() {
            assert!(key.starts_with("ferry:{photos-dr}:"), "{key}");
        }
        assert_eq!(k.queue(3), "ferry:{photos-dr}:q:3");
        assert_eq!(k.iteration(7), "ferry:{photos-dr}:it:7");
        assert_eq!(k.ledger(42), "ferry:{photos-dr}:l:42");
    }
}
