//! Every metric ferry exports (the public monitoring contract): its name, its kind, and its
//! help text, in one enum. The rest of the code records metrics only through [`Metric`]; a
//! `clippy.toml` rule keeps the `metrics` macros out of everywhere else.
//!
//! Labels are bounded: rule, shard, operation, outcome, reason, status, state; never an
//! object key.
#![allow(
    clippy::disallowed_macros,
    reason = "this module is the one place metrics are registered"
)]

/// How a metric behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Set, or moved up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// A metric label: its name and value (never an object key).
pub type Label = (&'static str, String);

/// A metric ferry exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Objects copied, by rule.
    ObjectsCopied,
    /// Bytes copied, by rule.
    BytesCopied,
    /// Multipart parts this worker uploaded (or copied server-side), by rule.
    PartsCopied,
    /// Parts found already uploaded by an earlier attempt and reused, by rule.
    PartsReused,
    /// Multipart copies whose ETag differs from the source's (the source's part sizes could not
    /// be read nor inferred; the bytes were verified all the same), by rule.
    EtagDiffers,
    /// Multipart uploads aborted (abandoned, failed, or their source changed), by rule.
    UploadsAborted,
    /// Objects skipped as already replicated, by rule.
    ObjectsSkipped,
    /// Objects whose task went to dead letters, by rule.
    ObjectsFailed,
    /// Objects listed at the source, by rule.
    ObjectsListed,
    /// Throttle answers (503 SlowDown, 429) a shard's tasks received, by rule and shard.
    Throttled,
    /// A shard's allowed concurrency across the fleet (0 = not throttled), by rule and shard, as
    /// the coordinator last read it.
    ShardLimit,
    /// Tasks a worker claimed but could not decode (written by a newer ferry) and left for
    /// another worker, by rule.
    TasksUndecodable,
    /// Task attempts that failed and were retried, by rule and outcome (retry, dead).
    TaskFailures,
    /// Current iteration number, by rule.
    Iteration,
    /// Duration of the last finished iteration in seconds, by rule.
    IterationDuration,
    /// 1 when the last finished iteration was empty, by rule.
    IterationEmpty,
    /// Tasks a worker is working on.
    WorkerInFlight,
    /// Lease renewals, by outcome (renewed, lost).
    LeaseRenewals,
    /// Redis round trips (commands, pipelines and scripts), attempts included.
    RedisRequests,
    /// 1 while this process reaches Redis, 0 during an outage.
    RedisUp,
    /// Seconds this process has spent unable to reach Redis, over its life (added when each
    /// outage ends).
    RedisDisconnectedSeconds,
    /// Tasks per rule, shard and state (pending, leased, retrying, dead), as the coordinator
    /// last read them.
    Tasks,
    /// Age of the oldest unfinished task of a rule, in seconds (0 when there is none).
    ReplicationLag,
    /// Event notifications, by rule and outcome: received, enqueued, skipped (nothing to do),
    /// stale (an older or repeated sequencer), ignored (another bucket, outside the prefixes, or
    /// not a create or remove), invalid (not an event).
    Events,
    /// Seconds from an event to its copy being acked, by rule (histogram).
    EventLag,
    /// Changes an iteration found to copy or delete that no event had announced, by rule.
    EventsMissed,
    /// S3 requests of the capability probe (a few per destination bucket, every six hours), by
    /// operation: counted apart from the copies', and their expected refusals are no errors.
    ProbeRequests,
    /// S3 requests, by operation.
    S3Requests,
    /// S3 errors, by operation and status.
    S3Errors,
}

impl Metric {
    /// Every metric, in the order the contract lists them.
    pub const ALL: [Metric; 29] = [
        Metric::ObjectsCopied,
        Metric::BytesCopied,
        Metric::PartsCopied,
        Metric::PartsReused,
        Metric::EtagDiffers,
        Metric::UploadsAborted,
        Metric::ObjectsSkipped,
        Metric::ObjectsFailed,
        Metric::ObjectsListed,
        Metric::Throttled,
        Metric::ShardLimit,
        Metric::TasksUndecodable,
        Metric::TaskFailures,
        Metric::Iteration,
        Metric::IterationDuration,
        Metric::IterationEmpty,
        Metric::WorkerInFlight,
        Metric::LeaseRenewals,
        Metric::RedisRequests,
        Metric::RedisUp,
        Metric::RedisDisconnectedSeconds,
        Metric::Tasks,
        Metric::ReplicationLag,
        Metric::Events,
        Metric::EventLag,
        Metric::EventsMissed,
        Metric::ProbeRequests,
        Metric::S3Requests,
        Metric::S3Errors,
    ];

    /// The name Prometheus shows.
    pub fn name(self) -> &'static str {
        match self {
            Metric::ObjectsCopied => "ferry_objects_copied_total",
            Metric::BytesCopied => "ferry_bytes_copied_total",
            Metric::PartsCopied => "ferry_parts_copied_total",
            Metric::PartsReused => "ferry_parts_reused_total",
            Metric::EtagDiffers => "ferry_etag_differs_total",
            Metric::UploadsAborted => "ferry_multipart_uploads_aborted_total",
            Metric::ObjectsSkipped => "ferry_objects_skipped_total",
            Metric::ObjectsFailed => "ferry_objects_failed_total",
            Metric::ObjectsListed => "ferry_objects_listed_total",
            Metric::Throttled => "ferry_throttled_total",
            Metric::ShardLimit => "ferry_shard_limit",
            Metric::TasksUndecodable => "ferry_tasks_undecodable_total",
            Metric::TaskFailures => "ferry_task_failures_total",
            Metric::Iteration => "ferry_iteration",
            Metric::IterationDuration => "ferry_iteration_duration_seconds",
            Metric::IterationEmpty => "ferry_iteration_empty",
            Metric::WorkerInFlight => "ferry_worker_in_flight_tasks",
            Metric::LeaseRenewals => "ferry_lease_renewals_total",
            Metric::RedisRequests => "ferry_redis_requests_total",
            Metric::RedisUp => "ferry_redis_up",
            Metric::RedisDisconnectedSeconds => "ferry_redis_disconnected_seconds",
            Metric::Tasks => "ferry_tasks",
            Metric::ReplicationLag => "ferry_replication_lag_seconds",
            Metric::Events => "ferry_events_total",
            Metric::EventLag => "ferry_event_lag_seconds",
            Metric::EventsMissed => "ferry_events_missed_total",
            Metric::ProbeRequests => "ferry_probe_requests_total",
            Metric::S3Requests => "ferry_s3_requests_total",
            Metric::S3Errors => "ferry_s3_errors_total",
        }
    }

    /// What it counts, as `# HELP` says it.
    pub fn help(self) -> &'static str {
        match self {
            Metric::ObjectsCopied => "Objects copied, by rule.",
            Metric::BytesCopied => "Bytes copied, by rule.",
            Metric::PartsCopied => {
                "Multipart parts this worker uploaded (or copied server-side), by rule."
            }
            Metric::PartsReused => {
                "Parts found already uploaded by an earlier attempt and reused, by rule."
            }
            Metric::EtagDiffers => {
                "Multipart copies whose ETag differs from the source's (the source's part sizes could not be read nor inferred; the bytes were verified all the same), by rule."
            }
            Metric::UploadsAborted => {
                "Multipart uploads aborted (abandoned, failed, or their source changed), by rule."
            }
            Metric::ObjectsSkipped => "Objects skipped as already replicated, by rule.",
            Metric::ObjectsFailed => "Objects whose task went to dead letters, by rule.",
            Metric::ObjectsListed => "Objects listed at the source, by rule.",
            Metric::Throttled => {
                "Throttle answers (503 SlowDown, 429) a shard's tasks received, by rule and shard."
            }
            Metric::ShardLimit => {
                "A shard's allowed concurrency across the fleet (0 = not throttled), by rule and shard, as the coordinator last read it."
            }
            Metric::TasksUndecodable => {
                "Tasks a worker claimed but could not decode (written by a newer ferry) and left for another worker, by rule."
            }
            Metric::TaskFailures => {
                "Task attempts that failed and were retried, by rule and outcome (retry, dead)."
            }
            Metric::Iteration => "Current iteration number, by rule.",
            Metric::IterationDuration => {
                "Duration of the last finished iteration in seconds, by rule."
            }
            Metric::IterationEmpty => "1 when the last finished iteration was empty, by rule.",
            Metric::WorkerInFlight => "Tasks a worker is working on.",
            Metric::LeaseRenewals => "Lease renewals, by outcome (renewed, lost).",
            Metric::RedisRequests => {
                "Redis round trips (commands, pipelines and scripts), attempts included."
            }
            Metric::RedisUp => "1 while this process reaches Redis, 0 during an outage.",
            Metric::RedisDisconnectedSeconds => {
                "Seconds this process has spent unable to reach Redis, over its life (added when each outage ends)."
            }
            Metric::Tasks => {
                "Tasks per rule, shard and state (pending, leased, retrying, dead), as the coordinator last read them."
            }
            Metric::ReplicationLag => {
                "Age of the oldest unfinished task of a rule, in seconds (0 when there is none)."
            }
            Metric::Events => {
                "Event notifications, by rule and outcome: received, enqueued, skipped (nothing to do), stale (an older or repeated sequencer), ignored (another bucket, outside the prefixes, or not a create or remove), invalid (not an event)."
            }
            Metric::EventLag => {
                "Seconds from an event to its copy being acked, by rule (histogram)."
            }
            Metric::EventsMissed => {
                "Changes an iteration found to copy or delete that no event had announced, by rule."
            }
            Metric::ProbeRequests => {
                "S3 requests of the capability probe (a few per destination bucket, every six hours), by operation: counted apart from the copies', and their expected refusals are no errors."
            }
            Metric::S3Requests => "S3 requests, by operation.",
            Metric::S3Errors => "S3 errors, by operation and status.",
        }
    }

    /// Whether it is a counter, a gauge or a histogram.
    pub fn kind(self) -> MetricKind {
        match self {
            Metric::ShardLimit
            | Metric::Iteration
            | Metric::IterationDuration
            | Metric::IterationEmpty
            | Metric::WorkerInFlight
            | Metric::RedisUp
            | Metric::RedisDisconnectedSeconds
            | Metric::Tasks
            | Metric::ReplicationLag => MetricKind::Gauge,
            Metric::EventLag => MetricKind::Histogram,
            _ => MetricKind::Counter,
        }
    }

    /// This counter, with these labels.
    pub fn counter(self, labels: &[Label]) -> metrics::Counter {
        debug_assert_eq!(
            self.kind(),
            MetricKind::Counter,
            "{} is no counter",
            self.name()
        );
        metrics::counter!(self.name(), labels)
    }

    /// This gauge, with these labels.
    pub fn gauge(self, labels: &[Label]) -> metrics::Gauge {
        debug_assert_eq!(
            self.kind(),
            MetricKind::Gauge,
            "{} is no gauge",
            self.name()
        );
        metrics::gauge!(self.name(), labels)
    }

    /// This histogram, with these labels.
    pub fn histogram(self, labels: &[Label]) -> metrics::Histogram {
        debug_assert_eq!(
            self.kind(),
            MetricKind::Histogram,
            "{} is no histogram",
            self.name()
        );
        metrics::histogram!(self.name(), labels)
    }
}

/// Gives every metric its help text, for the exporter's `# HELP` lines.
pub fn describe_all() {
    for metric in Metric::ALL {
        let (name, help) = (metric.name(), metric.help());
        match metric.kind() {
            MetricKind::Counter => metrics::describe_counter!(name, help),
            MetricKind::Gauge => metrics::describe_gauge!(name, help),
            MetricKind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_listed_once_named_ferry_and_helped() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len(), "a name is used twice");
        for metric in Metric::ALL {
            assert!(metric.name().starts_with("ferry_"), "{metric:?}");
            assert!(!metric.help().is_empty(), "{metric:?}");
            assert_eq!(
                metric.name().ends_with("_total"),
                metric.kind() == MetricKind::Counter,
                "{}: counters, and only counters, end in _total",
                metric.name()
            );
        }
    }
}
