//! What a task counts as: claimed, finished, skipped or failed.

use super::*;

/// A task claimed under a lease.
#[derive(Debug)]
pub struct Claimed {
    /// The rule it belongs to.
    pub rule: String,
    /// Its id.
    pub id: TaskId,
    /// The lease's fencing token.
    pub token: u64,
    /// Failed attempts before this one.
    pub attempts: u32,
    /// The task, or why its payload could not be decoded.
    pub task: Result<Task, CodecError>,
}

/// What a finished task counts as in its iteration's record (the record's field of that
/// name is incremented).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Copied (whole or, completing an upload, in parts).
    Copied,
    /// Copied in parts, verified byte for byte, with an ETag that differs from the source's
    /// (its part sizes could not be read nor inferred): counted as copied, and as
    /// `etag_differs`.
    CopiedEtagDiffers,
    /// Its source was gone by the time it was copied.
    Gone,
    /// A destination object deleted (`delete = true`).
    Deleted,
    /// The destination already held something newer, or the same; left as it is.
    Kept,
    /// Skipped on a second look (already equal).
    Skipped,
    /// Its source is archived and not restored (`archived = "skip"`).
    Archived,
    /// A part of an upload that had been abandoned.
    Cancelled,
    /// An object task split into part tasks.
    Split,
    /// One part uploaded (the upload is not complete yet).
    Part,
    /// A part task replaced by an object task for the source's new version.
    Replanned,
}

/// Archived keys named per iteration (its `archived` count has them all).
pub const ARCHIVED_KEYS_KEPT: u64 = 10_000;

/// Why the diff skipped a source object, as users read it: each is a field of the iteration
/// record (`skipped_unchanged`, ...), and together they add up to the diff's `skipped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipCategory {
    /// The destination holds the source's version already.
    Unchanged,
    /// `if-newer`, and the destination is as new as the source, or newer.
    DestinationNewer,
    /// The destination holds an object ferry did not write, which differs from the source
    /// (`overwrite_unmanaged` copies over it).
    Unmanaged,
    /// `overwrite = never`, and the destination holds an object.
    OverwriteNever,
    /// Left out by the rule's filters (`include`, `exclude`, sizes, ages).
    Excluded,
}

impl SkipCategory {
    pub const ALL: [SkipCategory; 5] = [
        SkipCategory::Unchanged,
        SkipCategory::DestinationNewer,
        SkipCategory::Unmanaged,
        SkipCategory::OverwriteNever,
        SkipCategory::Excluded,
    ];

    /// The name in summaries and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipCategory::Unchanged => "unchanged",
            SkipCategory::DestinationNewer => "destination_newer",
            SkipCategory::Unmanaged => "unmanaged",
            SkipCategory::OverwriteNever => "overwrite_never",
            SkipCategory::Excluded => "excluded",
        }
    }

    /// The iteration record's field.
    pub fn field(self) -> &'static str {
        match self {
            SkipCategory::Unchanged => "skipped_unchanged",
            SkipCategory::DestinationNewer => "skipped_newer",
            SkipCategory::Unmanaged => "skipped_unmanaged",
            SkipCategory::OverwriteNever => "skipped_never",
            SkipCategory::Excluded => "skipped_excluded",
        }
    }
}

/// `plan.lua`'s count of skipped objects: the total, then `;FIELD:N` for each reason.
pub(crate) fn skip_counts(total: u64, by: &[(&'static str, u64)]) -> String {
    let mut out = total.to_string();
    for (field, n) in by {
        if *n > 0 {
            out.push_str(&format!(";{field}:{n}"));
        }
    }
    out
}

impl Counted {
    /// The iteration record's field.
    pub fn as_str(self) -> &'static str {
        match self {
            Counted::Copied => "copied",
            Counted::CopiedEtagDiffers => "copied+etag_differs",
            Counted::Gone => "gone",
            Counted::Deleted => "deleted",
            Counted::Kept => "kept",
            Counted::Skipped => "skipped",
            Counted::Archived => "archived",
            Counted::Cancelled => "cancelled",
            Counted::Split => "split",
            Counted::Part => "part",
            Counted::Replanned => "replanned",
        }
    }
}

/// What became of a failed task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// It will be retried after the delay.
    Retry,
    /// It is in dead letters.
    Dead,
    /// The lease was lost; someone else owns the task now.
    Lost,
}
