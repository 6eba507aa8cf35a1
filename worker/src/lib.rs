//! The worker: claims tasks under leases, copies, and reports each outcome (ack, retry later,
//! throttle, or dead letter). A task passes through one stage per module:
//!
//! - [`runner`]: the claim loop, the slots (`concurrency`, `part_concurrency`), the leases;
//! - an object task: [`object`] picks [`single`] (one request) or [`split`] (part tasks);
//!   a delete task: [`delete`];
//! - a part task: [`part`], and for the last part recorded, [`complete`];
//! - [`verify`]: what every write is checked against; [`replan`]: what happens when the source
//!   or the destination moved on since planning;
//! - [`outcome`]: the ack (batched by [`acks`]), or the failure, whose [`error::CopyError`]
//!   decides what follows.

mod acks;
mod complete;
mod delete;
mod error;
mod leases;
mod object;
mod outcome;
mod part;
mod replan;
mod runner;
mod single;
mod split;
mod verify;
mod versions;

use std::time::Duration;

use ferry_queue::QueueError;

pub use outcome::Outcome;
pub use runner::run;

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The worker's name, unique among live workers (it owns leases by this name).
    pub id: String,
    /// Tasks worked on at once.
    pub concurrency: usize,
    /// Lease length; renewed every third of it.
    pub lease: Duration,
    /// On shutdown, how long in-flight tasks may run before they are released.
    pub drain: Duration,
    /// Most multipart part tasks worked on at once (within `concurrency`), so the parts of
    /// one large object spread over every worker rather than queue up behind one.
    pub part_concurrency: usize,
}

/// Default for [`WorkerOptions::part_concurrency`].
pub const DEFAULT_PART_CONCURRENCY: usize = 8;

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}
