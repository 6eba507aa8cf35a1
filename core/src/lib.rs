//! ferry's vocabulary: the pure types and decisions every ferry process shares. No network,
//! no storage client, no queue: anything that needs a `Task` or a `Rule` compiles only this.
//!
//! - [`config`]: the TOML config file, parsed and validated once into typed values;
//!   [`units`]: byte sizes and durations as written there; [`filter`]: a rule's filters.
//! - [`object`]: objects as any store shows them (listing entries, attributes, byte ranges,
//!   write conditions); [`capabilities`]: what a store was probed to do with them.
//! - [`task`]: units of queued work; [`codec`]: their versioned binary encoding.
//! - [`policy`]: the decision table (copy, skip, delete) for one key.
//! - [`parts`]: multipart layouts within S3's limits, and multipart ETags.
//! - [`ledger`]: what ferry wrote to each destination, compactly encoded.
//! - [`shard`]: which prefix shard (queue) a key belongs to; [`flow`]: adaptive flow control
//!   per shard (the pure controller).
//! - [`fleet`]: what processes share besides tasks (rate budgets, probes), as traits the
//!   queue implements and storage draws on.
//! - [`retry`]: backoff with full jitter; [`trust`]: the certificate authorities trusted.
//! - [`telemetry`]: metric names.

pub mod capabilities;
pub mod codec;
pub mod config;
pub mod filter;
pub mod fleet;
pub mod flow;
pub mod ledger;
pub mod object;
pub mod parts;
pub mod policy;
pub mod report;
pub mod retry;
pub mod shard;
pub mod task;
pub mod telemetry;
pub mod trust;
pub mod units;
