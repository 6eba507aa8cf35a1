//! A delete task: a managed destination object whose source is gone is deleted, unless it
//! changed since planning (then it is no longer what ferry wrote, and is left alone).

use ferry_storage::{ErrorKind, StorageError};

use crate::outcome::Outcome;
use crate::runner::Job;

/// Deletes a managed destination object whose source is gone, unless it changed since
/// planning (then it is no longer what ferry wrote, and is left alone).
pub(crate) async fn delete_object(
    job: &Job<'_>,
    key: &str,
    destination_etag: &str,
) -> Result<Outcome, StorageError> {
    let rule = job.rule;
    let destination = job.shared.stores.destination(rule);
    match destination.head(&rule.destination.bucket, key, None).await {
        Ok(head) if head.etag != destination_etag => return Ok(Outcome::Kept),
        Ok(_) => {}
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(Outcome::Deleted),
        Err(e) => return Err(e),
    }
    job.wrote();
    destination.delete(&rule.destination.bucket, key).await?;
    Ok(Outcome::Deleted)
}
