//! An object task: its object copied in one request ([`crate::single`]) or split into part
//! tasks ([`crate::split`]), following the source, or the destination, to a newer version
//! when either changed since planning ([`crate::replan`]).

use ferry_core::config::Archived;
use ferry_core::ledger::LedgerEntry;
use ferry_core::task::{Expected, ObjectVersion};
use ferry_storage::ErrorKind;
use tracing::debug;

use crate::error::CopyError;
use crate::outcome::Outcome;
use crate::replan::{Replanned, current_version, replan_destination};
use crate::runner::Job;
use crate::single::copy_single;
use crate::split::{layout, split};

/// Times an object task follows its source (or destination) to a newer version before
/// trying again later.
pub(crate) const MAX_REPLANS: u32 = 3;

/// Copies the planned version of one object, in one request or by splitting it into part
/// tasks. If the source changed since planning, its current version is copied instead (never
/// a mix of two versions); if the destination changed, the key is decided again.
pub(crate) async fn copy_object(
    job: &Job<'_>,
    planned: &ObjectVersion,
    expected: &Expected,
) -> Result<Outcome, CopyError> {
    let mut version = planned.clone();
    let mut expected = expected.clone();
    let mut replans = 0;
    loop {
        let attempt = match layout(job, &version).await {
            Ok(None) => copy_single(job, &version, &expected).await,
            Ok(Some(layout)) => split(job, &version, &layout, &expected).await,
            Err(e) => Err(e),
        };
        match attempt {
            Err(CopyError::SourceChanged(_)) if replans < MAX_REPLANS => {
                replans += 1;
                match current_version(job, &planned.key).await? {
                    Some(current) => {
                        debug!(key = %planned.key, old = %version.etag, new = %current.etag,
                            "source changed since planning; copying its current version");
                        version = current;
                    }
                    None => return Ok(Outcome::Gone),
                }
            }
            Err(CopyError::DestinationChanged(e)) if replans < MAX_REPLANS => {
                replans += 1;
                debug!(key = %planned.key, error = %e, "destination changed since planning");
                match replan_destination(job, &version).await? {
                    Replanned::Copy(now) => expected = now,
                    Replanned::AlreadyThere(written) => {
                        return Ok(Outcome::Copied {
                            bytes: version.size,
                            entry: LedgerEntry {
                                source_etag: version.etag.clone(),
                                size: version.size,
                                source_last_modified_ms: version.last_modified_ms,
                                destination_etag: written.etag,
                            },
                        });
                    }
                    Replanned::Skip(reason) => {
                        return Ok(Outcome::Skipped {
                            reason,
                            upload: None,
                        });
                    }
                }
            }
            Err(CopyError::Storage(e)) if e.kind == ErrorKind::NotFound => {
                return Ok(Outcome::Gone);
            }
            // An archived source: skipped and counted, or (with `archived = "fail"`) buried
            // with the reason.
            Err(CopyError::Archived(mut e)) => {
                return match job.rule.archived {
                    Archived::Skip => Ok(Outcome::Archived),
                    Archived::Fail => {
                        e.message = format!(
                            "{}: the object is archived and not restored (restore it, or set archived = \"skip\")",
                            e.message
                        );
                        Err(CopyError::Archived(e))
                    }
                };
            }
            other => return other,
        }
    }
}
