//! Test tools for ferry, shared by the integration tests, `scripts/chaos.sh` and `bench/`.
//!
//! - [`proxy`]: a fault-injecting HTTP/1.1 reverse proxy to put in front of an S3 server. It
//!   delays, holds (receives a request whole and forwards it only when told, after the client
//!   gave up), resets before or in the middle of an answer, answers 500 or 503 SlowDown,
//!   throttles or stalls bodies, and rewrites ETags the way SSE-KMS stores return them.
//!
//! - [`cluster`]: a real Redis Cluster (masters, replicas, failovers).
//! - [`servers`]: real servers on free ports (Redis, moto, Garage, Ceph RGW) and child processes.
//! - [`ceph`]: a single-node Ceph cluster with a RADOS Gateway, for [`servers::S3Server::rgw`].
//! - [`chaos`]: randomized fault schedules against a real cluster (`scripts/chaos.sh`).
//! - [`memstore`]: an in-memory object store, for unit tests of the coordinator and worker
//!   (ferry-storage's, re-exported; it keeps the same storage contract as the real stores).
//! - [`tls`]: a private certificate authority and an HTTPS front for a plain-HTTP S3 server.
//!
//! It is test infrastructure: nothing in the `ferry` binary depends on it.

// Test tooling, not the product: its server set-ups and fault schedules read best whole.
#![allow(clippy::too_many_lines)]
#![allow(
    clippy::let_underscore_must_use,
    reason = "test tools clean up on a best-effort basis: killing a server already gone, or answering a client that hung up, is no failure"
)]

/// Every script a reader of the README may run, relative to the repository's root.
pub const SCRIPTS: [&str; 11] = [
    "bench/run",
    "bench/events",
    "bench/verify",
    "bench/versions",
    "bench/listing",
    "bench/queue",
    "bench/slowdown",
    "scripts/chaos.sh",
    "scripts/deps.sh",
    "scripts/quickstart.sh",
    "scripts/test.sh",
];

pub mod ceph;
pub mod chaos;
pub mod cluster;
pub use ferry_storage::memstore;
pub mod proxy;
pub mod servers;
pub mod sns;
pub mod tls;
