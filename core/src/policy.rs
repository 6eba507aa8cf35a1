//! The decision table: what to do with one key, given both listings, the ledger and the rule.
//! Pure: no I/O, so every row is unit-tested. The coordinator applies it to every listed key;
//! a worker whose conditional write was refused applies it again to what is there now.

use crate::config::Overwrite;
use crate::ledger::LedgerEntry;
use crate::object::ObjectMeta;

/// A key seen on one or both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Joined {
    /// Present at the source and the destination.
    Both {
        /// The source object.
        source: ObjectMeta,
        /// The destination object.
        destination: ObjectMeta,
    },
    /// Present at the source only.
    SourceOnly(ObjectMeta),
    /// Present at the destination only.
    DestinationOnly(ObjectMeta),
}

impl Joined {
    /// The key.
    pub fn key(&self) -> &str {
        match self {
            Joined::Both { source, .. } | Joined::SourceOnly(source) => &source.key,
            Joined::DestinationOnly(destination) => &destination.key,
        }
    }
}

/// The parts of a rule (and its history) that decide copies.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// When an existing destination object may be replaced.
    pub overwrite: Overwrite,
    /// Whether destination objects ferry did not write may be replaced.
    pub overwrite_unmanaged: bool,
    /// Whether managed destination objects whose source is gone are deleted.
    pub delete: bool,
    /// Start of the last succeeded iteration (ms), if any.
    pub last_success_start_ms: Option<i64>,
}

/// Why a decision was taken (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The destination has no object under this key.
    Missing,
    /// Managed, and the source is what ferry copied last time.
    Unchanged,
    /// Managed, the source is the version the ledger recorded, and it was last modified
    /// before the last succeeded iteration started.
    UnchangedSinceLastIteration,
    /// The destination object was not written by this rule (or changed since).
    Unmanaged,
    /// `overwrite = never`.
    NeverOverwrite,
    /// `if-newer`: the source is newer than the destination.
    SourceNewer,
    /// `if-newer`: the source is not newer.
    NotNewer,
    /// `if-different`: size or ETag differ.
    Different,
    /// `if-different`: size and ETag are equal.
    Same,
    /// `overwrite = always`.
    Always,
    /// Source gone; the destination object is managed and `delete = true`.
    SourceGone,
    /// Source gone, but deletion is off or the object is not managed.
    Keep,
    /// The destination is not what the ledger says, and a write of ferry's to this key is
    /// unaccounted for: it may have landed late, over a newer copy. Copied again, so the
    /// destination cannot stay older than the source.
    StrayWrite,
}

impl Reason {
    /// A short name, for the `reason` label of skip metrics.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Unchanged | Reason::UnchangedSinceLastIteration => "unchanged",
            Reason::Unmanaged => "unmanaged",
            Reason::NeverOverwrite => "never-overwrite",
            Reason::SourceNewer => "source-newer",
            Reason::NotNewer => "not-newer",
            Reason::Different => "different",
            Reason::Same => "same",
            Reason::Always => "always",
            Reason::SourceGone => "source-gone",
            Reason::Keep => "keep",
            Reason::StrayWrite => "stray-write",
        }
    }
}

/// What to do with one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Copy the source object.
    Copy(Reason),
    /// Leave the destination as it is.
    Skip(Reason),
    /// Delete the destination object.
    Delete,
    /// A destination-only key that stays.
    Keep,
}

/// Whether the destination object is still exactly what ferry wrote.
pub fn is_managed(destination: &ObjectMeta, ledger: Option<&LedgerEntry>) -> bool {
    ledger.is_some_and(|l| l.destination_etag == destination.etag && l.size == destination.size)
}

/// Decides one key. `stray` says that a write of ferry's to this key is unaccounted for (see
/// ARCHITECTURE.md, "Late writes"). The rows, in order:
///
/// | destination | decision |
/// |---|---|
/// | missing | copy |
/// | managed, source as the ledger recorded | skip (with `always`: copy) |
/// | managed, source changed | apply `overwrite` |
/// | not what the ledger says, and a stray write of ferry's | copy |
/// | unmanaged (no entry, or no longer what ferry wrote) | skip, or apply `overwrite` when `overwrite_unmanaged` |
/// | only at the destination | delete when managed (or a stray write) and `delete`; else keep |
pub fn decide(
    joined: &Joined,
    ledger: Option<&LedgerEntry>,
    stray: bool,
    policy: &Policy,
) -> Action {
    match joined {
        Joined::SourceOnly(_) => Action::Copy(Reason::Missing),
        Joined::DestinationOnly(destination) => {
            if policy.delete && (stray || is_managed(destination, ledger)) {
                Action::Delete
            } else {
                Action::Keep
            }
        }
        Joined::Both {
            source,
            destination,
        } => {
            if is_managed(destination, ledger) {
                let entry = ledger.unwrap_or_else(|| unreachable!("managed implies an entry"));
                // Unchanged means the very version copied: ETag and size. Last-Modified alone
                // cannot tell two versions written within one second apart (whole-second
                // stores), so it only says whether this is older than the last success.
                let unchanged = entry.source_etag == source.etag && entry.size == source.size;
                if policy.overwrite != Overwrite::Always && unchanged {
                    let before_last_success = policy.last_success_start_ms.is_some_and(|start| {
                        source.last_modified_ms < start
                            && entry.source_last_modified_ms == source.last_modified_ms
                    });
                    return Action::Skip(if before_last_success {
                        Reason::UnchangedSinceLastIteration
                    } else {
                        Reason::Unchanged
                    });
                }
                // The destination holds the source version the ledger recorded: compare with
                // that version, not with the copy's own Last-Modified, which is the time of
                // the copy (a source changed while its copy was in flight is older than the
                // copy, yet newer than what the copy holds).
                let held = Held {
                    last_modified_ms: entry.source_last_modified_ms,
                    etag: &entry.source_etag,
                    size: entry.size,
                    managed: true,
                };
                apply_overwrite(policy.overwrite, source, held)
            } else if stray {
                Action::Copy(Reason::StrayWrite)
            } else if policy.overwrite_unmanaged {
                let held = Held {
                    last_modified_ms: destination.last_modified_ms,
                    etag: &destination.etag,
                    size: destination.size,
                    managed: false,
                };
                apply_overwrite(policy.overwrite, source, held)
            } else {
                Action::Skip(Reason::Unmanaged)
            }
        }
    }
}

/// What the destination holds, in the source's terms where the ledger knows them.
struct Held<'a> {
    last_modified_ms: i64,
    etag: &'a str,
    size: u64,
    /// The fields are the ledger's record of the source version copied (else the
    /// destination object's own).
    managed: bool,
}

fn apply_overwrite(overwrite: Overwrite, source: &ObjectMeta, held: Held<'_>) -> Action {
    // A managed object's source changed (else it was skipped before): it is newer unless
    // its Last-Modified went back before the version copied. An unmanaged object's own
    // Last-Modified must be strictly older.
    let newer = if held.managed {
        source.last_modified_ms >= held.last_modified_ms
    } else {
        source.last_modified_ms > held.last_modified_ms
    };
    match overwrite {
        Overwrite::Never => Action::Skip(Reason::NeverOverwrite),
        Overwrite::IfNewer if newer => Action::Copy(Reason::SourceNewer),
        Overwrite::IfNewer => Action::Skip(Reason::NotNewer),
        Overwrite::IfDifferent if source.size != held.size || source.etag != held.etag => {
            Action::Copy(Reason::Different)
        }
        Overwrite::IfDifferent => Action::Skip(Reason::Same),
        Overwrite::Always => Action::Copy(Reason::Always),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    fn obj(etag: &str, size: u64, lm: i64) -> ObjectMeta {
        ObjectMeta {
            key: "k".into(),
            size,
            etag: etag.into(),
            last_modified_ms: lm,
            storage_class: None,
        }
    }

    /// The entry ferry records after copying `src` and reading back `dst_etag`.
    fn entry(src: &ObjectMeta, dst_etag: &str) -> LedgerEntry {
        LedgerEntry {
            source_etag: src.etag.clone(),
            size: src.size,
            source_last_modified_ms: src.last_modified_ms,
            destination_etag: dst_etag.into(),
        }
    }

    fn policy(overwrite: Overwrite, unmanaged: bool) -> Policy {
        Policy {
            overwrite,
            overwrite_unmanaged: unmanaged,
            delete: false,
            last_success_start_ms: None,
        }
    }

    #[test]
    fn a_stray_write_of_ferrys_is_repaired_in_every_mode() {
        let src = obj("v2", 2, T0);
        let e = entry(&src, "v2");
        // A late write of an older version landed after the copy of v2 was recorded.
        let stale = obj("v1", 1, T0 + 30);
        for mode in ALL {
            assert_eq!(
                decide(&both(&src, &stale), Some(&e), true, &policy(mode, false)),
                Action::Copy(Reason::StrayWrite),
                "{mode:?}"
            );
            // Without the record of the stray write it is someone else's object.
            assert_eq!(
                decide(&both(&src, &stale), Some(&e), false, &policy(mode, false)),
                Action::Skip(Reason::Unmanaged)
            );
        }
        // A stray write that never landed changes nothing: still managed and unchanged.
        let dst = obj("v2", 2, T0 + 10);
        assert_eq!(
            decide(
                &both(&src, &dst),
                Some(&e),
                true,
                &policy(Overwrite::IfNewer, false)
            ),
            Action::Skip(Reason::Unchanged)
        );
        // With delete = true, a stray write whose source is gone is ferry's to delete.
        let mut p = policy(Overwrite::IfNewer, false);
        p.delete = true;
        assert_eq!(
            decide(&Joined::DestinationOnly(stale), None, true, &p),
            Action::Delete
        );
    }

    fn both(src: &ObjectMeta, dst: &ObjectMeta) -> Joined {
        Joined::Both {
            source: src.clone(),
            destination: dst.clone(),
        }
    }

    const ALL: [Overwrite; 4] = [
        Overwrite::Never,
        Overwrite::IfNewer,
        Overwrite::IfDifferent,
        Overwrite::Always,
    ];

    #[test]
    fn missing_destination_is_copied_in_every_mode() {
        for mode in ALL {
            let a = decide(
                &Joined::SourceOnly(obj("a", 1, T0)),
                None,
                false,
                &policy(mode, false),
            );
            assert_eq!(a, Action::Copy(Reason::Missing));
        }
    }

    #[test]
    fn managed_and_unchanged_is_skipped_except_with_always() {
        let src = obj("a", 1, T0);
        let dst = obj("d", 1, T0 + 10);
        let e = entry(&src, "d");
        for mode in [Overwrite::Never, Overwrite::IfNewer, Overwrite::IfDifferent] {
            assert_eq!(
                decide(&both(&src, &dst), Some(&e), false, &policy(mode, false)),
                Action::Skip(Reason::Unchanged)
            );
        }
        assert_eq!(
            decide(
                &both(&src, &dst),
                Some(&e),
                false,
                &policy(Overwrite::Always, false)
            ),
            Action::Copy(Reason::Always)
        );
    }

    #[test]
    fn managed_with_a_changed_source_follows_overwrite() {
        let old = obj("a", 1, T0);
        let dst = obj("d", 1, T0 + 10);
        let e = entry(&old, "d");
        let newer = obj("b", 2, T0 + 20);
        // Changed while the copy of `old` was in flight: older than the copy (T0 + 10), newer
        // than what it holds (T0).
        let during = obj("b", 2, T0 + 5);
        // A version older than the one copied (restored from a backup, say).
        let older = obj("b", 2, T0 - 5);
        let check = |src: &ObjectMeta, mode, expected| {
            assert_eq!(
                decide(&both(src, &dst), Some(&e), false, &policy(mode, false)),
                expected,
                "{mode:?}"
            );
        };
        check(
            &newer,
            Overwrite::Never,
            Action::Skip(Reason::NeverOverwrite),
        );
        check(
            &newer,
            Overwrite::IfNewer,
            Action::Copy(Reason::SourceNewer),
        );
        check(
            &during,
            Overwrite::IfNewer,
            Action::Copy(Reason::SourceNewer),
        );
        check(&older, Overwrite::IfNewer, Action::Skip(Reason::NotNewer));
        check(
            &older,
            Overwrite::IfDifferent,
            Action::Copy(Reason::Different),
        );
        check(&newer, Overwrite::Always, Action::Copy(Reason::Always));
    }

    #[test]
    fn a_destination_changed_since_ferry_wrote_it_is_unmanaged() {
        let src = obj("a", 1, T0);
        let e = entry(&src, "d");
        let overwritten = obj("someone-else", 1, T0 + 30);
        assert!(!is_managed(&overwritten, Some(&e)));
        for mode in ALL {
            assert_eq!(
                decide(
                    &both(&src, &overwritten),
                    Some(&e),
                    false,
                    &policy(mode, false)
                ),
                Action::Skip(Reason::Unmanaged)
            );
        }
    }

    #[test]
    fn unmanaged_is_skipped_unless_overwrite_unmanaged_then_overwrite_applies() {
        let src = obj("a", 1, T0 + 20);
        let foreign_older = obj("x", 5, T0);
        let foreign_newer = obj("x", 5, T0 + 40);
        let same = obj("a", 1, T0 + 40);
        for mode in ALL {
            assert_eq!(
                decide(
                    &both(&src, &foreign_older),
                    None,
                    false,
                    &policy(mode, false)
                ),
                Action::Skip(Reason::Unmanaged)
            );
        }
        let check = |dst: &ObjectMeta, mode, expected| {
            assert_eq!(
                decide(&both(&src, dst), None, false, &policy(mode, true)),
                expected,
                "{mode:?} {dst:?}"
            );
        };
        check(
            &foreign_older,
            Overwrite::Never,
            Action::Skip(Reason::NeverOverwrite),
        );
        check(
            &foreign_older,
            Overwrite::IfNewer,
            Action::Copy(Reason::SourceNewer),
        );
        check(
            &foreign_newer,
            Overwrite::IfNewer,
            Action::Skip(Reason::NotNewer),
        );
        check(
            &foreign_newer,
            Overwrite::IfDifferent,
            Action::Copy(Reason::Different),
        );
        check(&same, Overwrite::IfDifferent, Action::Skip(Reason::Same));
        check(&same, Overwrite::Always, Action::Copy(Reason::Always));
    }

    #[test]
    fn unchanged_since_the_last_successful_iteration_is_skipped_early() {
        let src = obj("a", 1, T0);
        let dst = obj("d", 1, T0 + 10);
        let e = entry(&src, "d");
        let mut p = policy(Overwrite::IfNewer, false);
        p.last_success_start_ms = Some(T0 + 100);
        assert_eq!(
            decide(&both(&src, &dst), Some(&e), false, &p),
            Action::Skip(Reason::UnchangedSinceLastIteration)
        );
        // Modified after the last success started: the full checks run.
        let later = obj("b", 1, T0 + 200);
        assert_eq!(
            decide(&both(&later, &dst), Some(&e), false, &p),
            Action::Copy(Reason::SourceNewer)
        );
        // Without a ledger entry the shortcut never applies.
        assert_eq!(
            decide(&both(&src, &dst), None, false, &p),
            Action::Skip(Reason::Unmanaged)
        );
        // Regression: another version written within the same second (whole-second
        // Last-Modified) is not taken for the one copied.
        let same_second = obj("c", 7, T0);
        assert_eq!(
            decide(&both(&same_second, &dst), Some(&e), false, &p),
            Action::Copy(Reason::SourceNewer)
        );
    }

    #[test]
    fn deletion_only_touches_managed_objects_and_only_when_enabled() {
        let src = obj("a", 1, T0);
        let dst = obj("d", 1, T0 + 10);
        let e = entry(&src, "d");
        let gone = Joined::DestinationOnly(dst.clone());
        let mut p = policy(Overwrite::IfNewer, false);
        assert_eq!(
            decide(&gone, Some(&e), false, &p),
            Action::Keep,
            "delete = false never deletes"
        );
        p.delete = true;
        assert_eq!(decide(&gone, Some(&e), false, &p), Action::Delete);
        assert_eq!(
            decide(&gone, None, false, &p),
            Action::Keep,
            "unmanaged objects are never deleted"
        );
        let changed = Joined::DestinationOnly(obj("other", 1, T0 + 50));
        assert_eq!(decide(&changed, Some(&e), false, &p), Action::Keep);
    }
}
