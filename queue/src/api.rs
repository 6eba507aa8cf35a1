//! The queue as the coordinator and the read-only views see it, each a trait of just what it
//! uses (the worker's is `WorkerQueue`, in `worker_api.rs`).
//!
//! `Queue` implements both, on either backend (Redis, or the embedded store); every method
//! keeps the meaning its inherent `Queue` method documents, and the implementations are
//! those methods. The coordinator holds an `Arc<dyn CoordinatorQueue>` and the CLI views a
//! `&dyn ViewQueue`, so another implementation (a fake in a unit test, say) can stand in.

use std::time::Duration;

use async_trait::async_trait;

use super::{
    DeadLetter, EventApplied, EventTask, EventsRecord, IterationRecord, LeaderToken, LedgerView,
    ListingMarks, PlanBatch, Queue, QueueDepth, QueueError, RuleRecord, RuleState, ShardView,
    Throughput, WorkerSeen,
};
use ferry_core::config::BucketRef;
use ferry_core::task::UploadRecord;

/// Declares a trait of async queue methods, and implements it for [`Queue`] by calling the
/// inherent methods of the same names.
macro_rules! queue_trait {
    (
        $(#[$meta:meta])*
        pub trait $name:ident {
            $(
                $(#[$fmeta:meta])*
                fn $f:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
            )*
        }
    ) => {
        $(#[$meta])*
        #[async_trait]
        pub trait $name: Send + Sync {
            $(
                $(#[$fmeta])*
                async fn $f(&self $(, $arg: $ty)*) -> Result<$ret, QueueError>;
            )*
        }

        #[async_trait]
        impl $name for Queue {
            $(
                async fn $f(&self $(, $arg: $ty)*) -> Result<$ret, QueueError> {
                    Queue::$f(self $(, $arg)*).await
                }
            )*
        }
    };
}

queue_trait! {
    /// What the coordinator needs: iterations, planning, ledger reads, the leader lease, the
    /// rule's state, upkeep, and the records of uploads to clean up.
    pub trait CoordinatorQueue {
        /// Starts the rule's next iteration; returns its number.
        fn begin_iteration(&self, rule: &str, leader: &LeaderToken) -> u64;
        /// The newest iteration's record, if any.
        fn latest_iteration(&self, rule: &str) -> Option<IterationRecord>;
        /// Iteration `n`'s record.
        fn iteration(&self, rule: &str, n: u64) -> IterationRecord;
        /// Marks iteration `n` sealed: all of its tasks are enqueued.
        fn seal_iteration(&self, rule: &str, n: u64, leader: &LeaderToken) -> ();
        /// Closes iteration `n`, adding it to the history.
        fn finish_iteration(
            &self,
            rule: &str,
            n: u64,
            succeeded: bool,
            leader: &LeaderToken,
        ) -> IterationRecord;
        /// The finished iterations, newest first.
        fn history(&self, rule: &str) -> Vec<IterationRecord>;
        /// When the last succeeded iteration started (ms).
        fn last_success_start(&self, rule: &str) -> Option<i64>;
        /// Records the key ranges a prefix of iteration `n` is listed in, once; returns
        /// those on record.
        fn record_ranges(
            &self,
            rule: &str,
            n: u64,
            prefix: usize,
            boundaries: &[String],
            leader: &LeaderToken,
        ) -> Vec<String>;
        /// Up to `max` report lines of iteration `n` not yet written out, and their part
        /// (with `full`, none unless there are `max`).
        fn report_pending(&self, rule: &str, n: u64, max: usize, full: bool) -> (u64, Vec<String>);
        /// Records that `count` report lines were written out as `part`.
        fn report_written(
            &self,
            rule: &str,
            n: u64,
            part: u64,
            count: usize,
            leader: &LeaderToken,
        ) -> bool;
        /// Forgets iteration `n`'s report bookkeeping.
        fn report_done(&self, rule: &str, n: u64) -> ();
        /// The rule's dead letters (for the report's failed keys).
        fn dead_letters(&self, rule: &str) -> Vec<DeadLetter>;
        /// Records the marks of a prefix iteration `n` listed whole, dropping `n - 1`'s.
        fn record_marks(
            &self,
            rule: &str,
            n: u64,
            prefix: usize,
            marks: &ListingMarks,
            leader: &LeaderToken,
        ) -> ();
        /// Enqueues one planned batch with its counts and checkpoint, atomically.
        fn plan(
            &self,
            rule: &str,
            iteration: u64,
            batch: &PlanBatch,
            leader: &LeaderToken,
        ) -> Option<usize>;
        /// The ledger's view of `keys`.
        fn ledger_get(&self, rule: &str, keys: &[&str]) -> Vec<LedgerView>;
        /// Forgets write intents made before `cutoff_ms`; returns how many.
        fn prune_intents(&self, rule: &str, cutoff_ms: u64) -> u64;
        /// The queue's clock (ms since the Unix epoch).
        fn redis_time_ms(&self) -> u64;
        /// Takes the rule's leader lease if it is free.
        fn acquire_leader(&self, rule: &str, id: &str, lease: Duration) -> Option<LeaderToken>;
        /// Extends the lease; false when it was lost.
        fn renew_leader(&self, rule: &str, token: &LeaderToken, lease: Duration) -> bool;
        /// Gives the lease up; false when it was not held.
        fn release_leader(&self, rule: &str, token: &LeaderToken) -> bool;
        /// The coordinator that leads the rule, if any.
        fn leader_of(&self, rule: &str) -> Option<String>;
        /// Records the rule's state, fenced by the lease.
        fn set_rule_state(
            &self,
            rule: &str,
            token: &LeaderToken,
            state: RuleState,
            reason: Option<&str>,
            finished: bool,
        ) -> ();
        /// The rule's recorded state.
        fn rule_record(&self, rule: &str) -> RuleRecord;
        /// Requeues expired leases and due retries.
        fn upkeep(&self, rule: &str, max_attempts: u32) -> ();
        /// Each shard's tasks by state and flow control.
        fn shard_views(&self, rule: &str) -> Vec<ShardView>;
        /// When the oldest unfinished task was enqueued (ms).
        fn oldest_pending_ms(&self, rule: &str) -> Option<u64>;
        /// The multipart uploads recorded as open.
        fn open_uploads(&self, rule: &str) -> Vec<(String, UploadRecord)>;
        /// Forgets an upload record and its parts.
        fn forget_upload(&self, rule: &str, rid: &str) -> ();
        /// The sequencers last applied for `keys`.
        fn applied_sequencers(&self, rule: &str, keys: &[&str]) -> Vec<Option<String>>;
        /// Applies decided events: per event, the sequencer check and its task, at once.
        fn apply_events(&self, rule: &str, events: &[EventTask]) -> Vec<EventApplied>;
        /// Forgets sequencers applied before `cutoff_ms`.
        fn prune_sequencers(&self, rule: &str, cutoff_ms: u64) -> u64;
        /// The events record.
        fn events_record(&self, rule: &str) -> EventsRecord;
    }
}

queue_trait! {
    /// What `ferry status`, `queues` and `dead-letters` read (and the two dead-letter
    /// actions).
    pub trait ViewQueue {
        /// The rules registered by any coordinator (or sync) in this namespace.
        fn registered_rules(&self) -> Vec<BucketRef>;
        /// The newest iteration's record, if any.
        fn latest_iteration(&self, rule: &str) -> Option<IterationRecord>;
        /// The finished iterations, newest first.
        fn history(&self, rule: &str) -> Vec<IterationRecord>;
        /// The coordinator that leads the rule, if any.
        fn leader_of(&self, rule: &str) -> Option<String>;
        /// The rule's recorded state.
        fn rule_record(&self, rule: &str) -> RuleRecord;
        /// Tasks by state.
        fn depth(&self, rule: &str) -> QueueDepth;
        /// When the oldest unfinished task was enqueued (ms).
        fn oldest_pending_ms(&self, rule: &str) -> Option<u64>;
        /// Each shard's tasks by state and flow control.
        fn shard_views(&self, rule: &str) -> Vec<ShardView>;
        /// The events record.
        fn events_record(&self, rule: &str) -> EventsRecord;
        /// The last minute's outcomes.
        fn throughput(&self, rule: &str) -> Throughput;
        /// The registered workers, live and dead.
        fn workers(&self) -> Vec<WorkerSeen>;
        /// The rule's dead letters.
        fn dead_letters(&self, rule: &str) -> Vec<DeadLetter>;
        /// Puts dead letters (all, or `ids`) back on their queues.
        fn retry_dead(&self, rule: &str, ids: Option<&[String]>) -> u64;
        /// Deletes dead letters (all, or `ids`).
        fn purge_dead(&self, rule: &str, ids: Option<&[String]>) -> u64;
    }
}
