//! The vocabulary every ferry process shares.
//!
//! - [`config`]: the TOML config file, parsed and validated once into typed values.
//! - [`units`]: byte sizes and durations as written in the config.
//! - [`task`]: units of queued work; [`codec`]: their versioned binary encoding.
//! - [`flow`]: adaptive flow control per prefix shard (the pure controller).
//! - [`ledger`]: what ferry wrote to each destination, compactly encoded.
//! - [`parts`]: multipart layouts within S3's limits, and multipart ETags.
//! - [`policy`]: the decision table (copy, skip, delete) for one key.
//! - [`shard`]: which prefix shard (queue) a key belongs to.
//! - [`storage`]: the [`storage::ObjectStore`] trait, its S3 implementation, and the one
//!   classifier of S3 errors.
//! - [`queue`]: the Redis task queue: keys, Lua scripts, leases, dead letters, iterations.
//! - [`retry`]: backoff with full jitter.
//! - [`telemetry`]: metric names.
//! - [`shutdown`]: the cancellation token tied to SIGTERM/SIGINT.

pub mod codec;
pub mod config;
pub mod events;
pub mod filter;
pub mod flow;
pub mod ledger;
pub mod parts;
pub mod policy;
pub mod queue;
pub mod retry;
pub mod shard;
pub mod shutdown;
pub mod storage;
pub mod task;
pub mod telemetry;
pub mod units;
