//! Metric names (the public monitoring contract) and log set-up.
//!
//! Labels are bounded: rule, shard, operation, outcome, status; never an object key.

/// Objects copied, by rule.
pub const OBJECTS_COPIED: &str = "ferry_objects_copied_total";
/// Bytes copied, by rule.
pub const BYTES_COPIED: &str = "ferry_bytes_copied_total";
/// Multipart parts this worker uploaded (or copied server-side), by rule.
pub const PARTS_COPIED: &str = "ferry_parts_copied_total";
/// Parts found already uploaded by an earlier attempt and reused, by rule.
pub const PARTS_REUSED: &str = "ferry_parts_reused_total";
/// Multipart copies whose ETag differs from the source's (the source's part sizes could not
/// be read nor inferred; the bytes were verified all the same), by rule.
pub const ETAG_DIFFERS: &str = "ferry_etag_differs_total";
/// Multipart uploads aborted (abandoned, failed, or their source changed), by rule.
pub const UPLOADS_ABORTED: &str = "ferry_multipart_uploads_aborted_total";
/// Objects skipped as already replicated, by rule.
pub const OBJECTS_SKIPPED: &str = "ferry_objects_skipped_total";
/// Objects whose task went to dead letters, by rule.
pub const OBJECTS_FAILED: &str = "ferry_objects_failed_total";
/// Objects listed at the source, by rule.
pub const OBJECTS_LISTED: &str = "ferry_objects_listed_total";
/// Throttle answers (503 SlowDown, 429) a shard's tasks received, by rule and shard.
pub const THROTTLED: &str = "ferry_throttled_total";
/// A shard's allowed concurrency across the fleet (0 = not throttled), by rule and shard, as
/// the coordinator last read it.
pub const SHARD_LIMIT: &str = "ferry_shard_limit";
/// Tasks a worker claimed but could not decode (written by a newer ferry) and left for
/// another worker, by rule.
pub const TASKS_UNDECODABLE: &str = "ferry_tasks_undecodable_total";
/// Task attempts that failed and were retried, by rule and outcome (retry, dead).
pub const TASK_FAILURES: &str = "ferry_task_failures_total";
/// Current iteration number, by rule.
pub const ITERATION: &str = "ferry_iteration";
/// Duration of the last finished iteration in seconds, by rule.
pub const ITERATION_DURATION: &str = "ferry_iteration_duration_seconds";
/// 1 when the last finished iteration was empty, by rule.
pub const ITERATION_EMPTY: &str = "ferry_iteration_empty";
/// Tasks a worker is working on.
pub const WORKER_IN_FLIGHT: &str = "ferry_worker_in_flight_tasks";
/// Lease renewals, by outcome (renewed, lost).
pub const LEASE_RENEWALS: &str = "ferry_lease_renewals_total";
/// Redis round trips (commands, pipelines and scripts), attempts included.
pub const REDIS_REQUESTS: &str = "ferry_redis_requests_total";
/// 1 while this process reaches Redis, 0 during an outage.
pub const REDIS_UP: &str = "ferry_redis_up";
/// Seconds this process has spent unable to reach Redis, over its life (added when each
/// outage ends).
pub const REDIS_DISCONNECTED_SECONDS: &str = "ferry_redis_disconnected_seconds";
/// Tasks per rule, shard and state (pending, leased, retrying, dead), as the coordinator
/// last read them.
pub const TASKS: &str = "ferry_tasks";
/// Age of the oldest unfinished task of a rule, in seconds (0 when there is none).
pub const REPLICATION_LAG: &str = "ferry_replication_lag_seconds";
/// Event notifications, by rule and outcome: received, enqueued, skipped (nothing to do),
/// stale (an older or repeated sequencer), ignored (another bucket, outside the prefixes, or
/// not a create or remove), invalid (not an event).
pub const EVENTS: &str = "ferry_events_total";
/// Seconds from an event to its copy being acked, by rule (histogram).
pub const EVENT_LAG: &str = "ferry_event_lag_seconds";
/// Changes an iteration found to copy or delete that no event had announced, by rule.
pub const EVENTS_MISSED: &str = "ferry_events_missed_total";
/// S3 requests, by operation.
pub const S3_REQUESTS: &str = "ferry_s3_requests_total";
/// S3 requests of the capability probe (a few per destination bucket, every six hours), by
/// operation: counted apart from the copies', and their expected refusals are no errors.
pub const PROBE_REQUESTS: &str = "ferry_probe_requests_total";
/// S3 errors, by operation and status.
pub const S3_ERRORS: &str = "ferry_s3_errors_total";
