//! Why a copy attempt failed, and the one place a failure becomes a decision
//! ([`CopyError::disposition`]): retried later, throttled, buried in dead letters, planned
//! again, or left to its lease.

use std::fmt;

use ferry_queue::QueueError;
use ferry_storage::{ErrorKind, StorageError};

/// Why a copy attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    /// A store failed (transient, throttled, gone, or refused for good), as its kind says.
    #[error(transparent)]
    Storage(StorageError),
    /// The source is no longer the planned version: a read pinned to its ETag was refused,
    /// or a HEAD found another ETag.
    #[error("{0}")]
    SourceChanged(Failure),
    /// A conditional write was refused: the destination changed since planning.
    #[error("the destination changed since planning: {0}")]
    DestinationChanged(StorageError),
    /// The source object is archived and not restored.
    #[error("{0}")]
    Archived(Failure),
    /// What the destination holds is not what was read (an ETag, or tags read back).
    #[error("{0}")]
    Integrity(Failure),
    /// The object cannot be copied within S3's limits (no part layout fits it).
    #[error("{0}")]
    Impossible(Failure),
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What follows a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Tried again after a backoff, an attempt counted; buried at `max_attempts`.
    Retry,
    /// A throttle: the shard is slowed down and the task goes back, no attempt counted.
    Throttle,
    /// Buried in dead letters at once: trying again cannot help.
    Dead,
    /// The source or the destination moved on: decided again against what is there now
    /// (and, past the re-plans allowed, tried again later; never buried at once).
    Replan,
    /// Nothing can be reported (Redis failed): the lease runs out and the task is redone.
    LeaseRunsOut,
}

impl CopyError {
    /// What follows this failure.
    pub(crate) fn disposition(&self) -> Disposition {
        match self {
            CopyError::Storage(e) => match e.kind {
                ErrorKind::Retryable => Disposition::Retry,
                ErrorKind::Throttled => Disposition::Throttle,
                ErrorKind::PreconditionFailed => Disposition::Replan,
                ErrorKind::NotFound | ErrorKind::Archived | ErrorKind::Permanent => {
                    Disposition::Dead
                }
            },
            CopyError::SourceChanged(_) | CopyError::DestinationChanged(_) => Disposition::Replan,
            CopyError::Integrity(_) => Disposition::Retry,
            CopyError::Archived(_) | CopyError::Impossible(_) => Disposition::Dead,
            CopyError::Queue(_) => Disposition::LeaseRunsOut,
        }
    }

    /// A failed destination write: a refused condition means the destination moved on.
    pub(crate) fn on_write(e: StorageError) -> CopyError {
        if e.kind == ErrorKind::PreconditionFailed {
            CopyError::DestinationChanged(e)
        } else {
            e.into()
        }
    }
}

/// A store's failure, read as what it means for a copy: a refused pinned read is a changed
/// source, an archive answer an archived source.
impl From<StorageError> for CopyError {
    fn from(e: StorageError) -> CopyError {
        match e.kind {
            ErrorKind::PreconditionFailed => CopyError::SourceChanged(Failure::from(e)),
            ErrorKind::Archived => CopyError::Archived(Failure::from(e)),
            _ => CopyError::Storage(e),
        }
    }
}

/// What failed, on what, and why: shown as a storage error is (`operation target: message`).
#[derive(Debug)]
pub(crate) struct Failure {
    /// The S3 operation it happened in, e.g. `CompleteMultipartUpload`.
    pub(crate) operation: &'static str,
    /// What it was done to, e.g. `s3://photos/a.jpg`.
    pub(crate) target: String,
    /// HTTP status, when a store answered.
    pub(crate) status: Option<u16>,
    /// What is wrong.
    pub(crate) message: String,
}

impl Failure {
    /// A failure ferry found itself, in `operation` on `target`.
    pub(crate) fn new(operation: &'static str, target: String, message: String) -> Failure {
        Failure {
            operation,
            target,
            status: None,
            message,
        }
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Failure {
        Failure {
            operation: e.operation,
            target: e.target,
            status: e.status,
            message: e.message,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.operation, self.target, self.message)?;
        if let Some(status) = self.status {
            write!(f, " (http {status})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(kind: ErrorKind, status: Option<u16>) -> StorageError {
        StorageError {
            kind,
            operation: "GetObject",
            target: "s3://b/k".into(),
            status,
            code: None,
            message: "m".into(),
        }
    }

    #[test]
    fn each_failure_has_one_disposition() {
        let of = |e: StorageError| CopyError::from(e).disposition();
        assert_eq!(
            of(storage(ErrorKind::Retryable, Some(500))),
            Disposition::Retry
        );
        assert_eq!(
            of(storage(ErrorKind::Throttled, Some(503))),
            Disposition::Throttle
        );
        assert_eq!(
            of(storage(ErrorKind::Permanent, Some(403))),
            Disposition::Dead
        );
        assert_eq!(
            of(storage(ErrorKind::NotFound, Some(404))),
            Disposition::Dead
        );
        assert_eq!(
            of(storage(ErrorKind::Archived, Some(403))),
            Disposition::Dead
        );
        // A pinned read refused: the source moved on.
        assert_eq!(
            of(storage(ErrorKind::PreconditionFailed, Some(412))),
            Disposition::Replan
        );
        let write = CopyError::on_write(storage(ErrorKind::PreconditionFailed, Some(412)));
        assert!(matches!(write, CopyError::DestinationChanged(_)));
        assert_eq!(write.disposition(), Disposition::Replan);
        let integrity = CopyError::Integrity(Failure::new("PutObject", "t".into(), "m".into()));
        assert_eq!(integrity.disposition(), Disposition::Retry);
    }

    #[test]
    fn a_failure_reads_as_the_storage_error_it_came_from() {
        let e = storage(ErrorKind::PreconditionFailed, Some(412));
        let text = e.to_string();
        assert_eq!(CopyError::from(e).to_string(), text);
    }
}
