//! The listing-diff benchmark: the coordinator's merge-join and decision table over synthetic
//! listings, fed a page at a time as S3 would list them.

use std::time::Instant;

use ferry_coordinator::diff::{Joined, MergeJoin, Step};
use ferry_coordinator::policy::{Action, Policy, decide};
use ferry_core::config::Overwrite;
use ferry_core::ledger::LedgerEntry;
use ferry_storage::ObjectMeta;

/// Keys per listing page, as S3 returns them.
const PAGE: u64 = 1000;

/// What one run measured.
#[derive(Debug, serde::Serialize)]
pub struct DiffRun {
    /// Source keys joined.
    pub keys: u64,
    /// Wall seconds for the whole run, generating the synthetic pages included.
    pub seconds: f64,
    /// Of those, seconds in the join and the decisions alone.
    pub diff_seconds: f64,
    /// `keys / diff_seconds`.
    pub keys_per_second: f64,
    /// Keys the decision table copies.
    pub copies: u64,
    /// Keys it skips.
    pub skips: u64,
    /// Peak resident set of this process, KiB.
    pub peak_rss_kib: Option<u64>,
}

/// A synthetic object: one in 100 destination objects differs from its source, and one source
/// key in 100 has no destination, so both branches of the decision table run.
fn object(index: u64, destination: bool) -> Option<ObjectMeta> {
    if destination && index % 100 == 7 {
        return None;
    }
    let changed = destination && index % 100 == 3;
    Some(ObjectMeta {
        key: format!("logs/{:04}/{index:010}.json", index / 10_000),
        size: 1000 + index % 4096,
        etag: format!(
            "{:032x}",
            index.wrapping_mul(0x9E37_79B9) ^ u64::from(changed)
        ),
        last_modified_ms: 1_700_000_000_000 + index as i64,
        storage_class: None,
    })
}

fn page(first: u64, keys: u64, destination: bool) -> Vec<ObjectMeta> {
    (first..(first + PAGE).min(keys))
        .filter_map(|i| object(i, destination))
        .collect()
}

/// Joins and decides `keys` synthetic keys.
pub fn run(keys: u64) -> DiffRun {
    let policy = Policy {
        overwrite: Overwrite::IfDifferent,
        overwrite_unmanaged: true,
        delete: false,
        last_success_start_ms: None,
    };
    let started = Instant::now();
    let mut join = MergeJoin::new();
    let (mut next_source, mut next_destination) = (0, 0);
    let (mut copies, mut skips) = (0, 0);
    // Generating a page stands in for receiving it; its time is measured apart.
    let mut generating = std::time::Duration::ZERO;
    let mut generate = |first: u64, destination: bool| {
        let at = Instant::now();
        let p = page(first, keys, destination);
        generating += at.elapsed();
        p
    };
    loop {
        match join.next() {
            Step::NeedSource if next_source < keys => {
                join.push_source(generate(next_source, false));
                next_source += PAGE;
            }
            Step::NeedSource => join.finish_source(),
            Step::NeedDestination if next_destination < keys => {
                join.push_destination(generate(next_destination, true));
                next_destination += PAGE;
            }
            Step::NeedDestination => join.finish_destination(),
            Step::Done => break,
            Step::Item(joined) => {
                // The ledger names the destination as ferry wrote it, as after a first copy.
                let ledger = match &joined {
                    Joined::Both { destination, .. } => Some(LedgerEntry {
                        source_etag: destination.etag.clone(),
                        size: destination.size,
                        source_last_modified_ms: destination.last_modified_ms,
                        destination_etag: destination.etag.clone(),
                    }),
                    _ => None,
                };
                match decide(&joined, ledger.as_ref(), false, &policy) {
                    Action::Copy(_) | Action::Delete => copies += 1,
                    Action::Skip(_) | Action::Keep => skips += 1,
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let diff_seconds = seconds - generating.as_secs_f64();
    DiffRun {
        keys,
        seconds,
        diff_seconds,
        keys_per_second: keys as f64 / diff_seconds,
        copies,
        skips,
        peak_rss_kib: crate::peak_rss_kib(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_the_changed_and_the_missing() {
        let run = run(10_000);
        assert_eq!(run.copies + run.skips, 10_000);
        // 1 in 100 missing, 1 in 100 changed.
        assert_eq!(run.copies, 200);
    }
}
