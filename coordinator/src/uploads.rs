//! Aborting the multipart uploads an iteration abandoned.
//!
//! Workers complete or abort their uploads themselves; what is left once every task of an
//! iteration is acked or dead was abandoned (a part buried after its worker died, or an
//! object task buried after it had created its upload), and is aborted here so that no upload
//! ferry started stays open (and billed) at the destination.

use ferry_core::config::Rule;
use ferry_core::telemetry::Metric;
use ferry_storage::ErrorKind;
use tracing::{info, warn};

use crate::{Context, CoordinatorError};

/// Aborts every upload of `rule` still recorded in Redis. An upload the destination refuses
/// to abort stays recorded and is tried again after the next iteration.
pub(crate) async fn abort_abandoned(ctx: &Context, rule: &Rule) -> Result<(), CoordinatorError> {
    let open = ctx.queue.open_uploads(&rule.name).await?;
    if open.is_empty() {
        return Ok(());
    }
    // An event's copy may be under way, its upload open: wait for a quiet moment.
    if rule.events.is_some() {
        let events = ctx.queue.events_record(&rule.name).await?;
        if !events.tasks.settled() {
            info!(rule = %rule.name, "event copies under way; abandoned uploads are aborted after a later iteration");
            return Ok(());
        }
    }
    let destination = ctx.stores.destination(rule);
    let mut aborted = 0u64;
    for (rid, record) in open {
        match destination
            .abort_multipart(&rule.destination.bucket, &record.key, &record.upload_id)
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => {
                warn!(rule = %rule.name, key = %record.key, error = %e,
                    "could not abort an abandoned multipart upload; trying again later");
                continue;
            }
        }
        ctx.queue.forget_upload(&rule.name, &rid).await?;
        aborted += 1;
    }
    Metric::UploadsAborted
        .counter(&[("rule", rule.name.clone())])
        .increment(aborted);
    info!(rule = %rule.name, aborted, "aborted abandoned multipart uploads");
    Ok(())
}
