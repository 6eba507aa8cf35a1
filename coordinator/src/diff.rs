//! The pure diff: a merge-join of two key-sorted listings, and the copy/skip decision.
//!
//! [`MergeJoin`] is fed pages as they arrive and yields joined entries as soon as both sides
//! allow, so memory is bounded by one page per side, whatever the bucket's size.

use std::cmp::Ordering;
use std::collections::VecDeque;

use ferry_storage::ObjectMeta;

pub use ferry_core::policy::Joined;

/// What the merge-join needs or has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The next joined key.
    Item(Joined),
    /// Push the next source page (or finish the source).
    NeedSource,
    /// Push the next destination page (or finish the destination).
    NeedDestination,
    /// Both sides are exhausted.
    Done,
}

/// Merge-joins two listings sorted by key (byte order, as S3 lists).
#[derive(Debug, Default)]
pub struct MergeJoin {
    source: VecDeque<ObjectMeta>,
    destination: VecDeque<ObjectMeta>,
    source_done: bool,
    destination_done: bool,
}

impl MergeJoin {
    /// A join with nothing pushed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next page of the source listing.
    pub fn push_source(&mut self, page: Vec<ObjectMeta>) {
        self.source.extend(page);
    }

    /// Marks the source listing as complete.
    pub fn finish_source(&mut self) {
        self.source_done = true;
    }

    /// Adds the next page of the destination listing.
    pub fn push_destination(&mut self, page: Vec<ObjectMeta>) {
        self.destination.extend(page);
    }

    /// Marks the destination listing as complete.
    pub fn finish_destination(&mut self) {
        self.destination_done = true;
    }

    /// The next step: an item, or which side must be fed first.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Step {
        match (self.source.front(), self.destination.front()) {
            (None, _) if !self.source_done => Step::NeedSource,
            (_, None) if !self.destination_done => Step::NeedDestination,
            (None, None) => Step::Done,
            (Some(_), None) => Step::Item(Joined::SourceOnly(self.pop_source())),
            (None, Some(_)) => Step::Item(Joined::DestinationOnly(self.pop_destination())),
            (Some(s), Some(d)) => match s.key.cmp(&d.key) {
                Ordering::Less => Step::Item(Joined::SourceOnly(self.pop_source())),
                Ordering::Greater => Step::Item(Joined::DestinationOnly(self.pop_destination())),
                Ordering::Equal => Step::Item(Joined::Both {
                    source: self.pop_source(),
                    destination: self.pop_destination(),
                }),
            },
        }
    }

    fn pop_source(&mut self) -> ObjectMeta {
        // Only called after front() returned Some.
        self.source.pop_front().unwrap_or_else(|| unreachable!())
    }

    fn pop_destination(&mut self) -> ObjectMeta {
        self.destination
            .pop_front()
            .unwrap_or_else(|| unreachable!())
    }
}

/// Runs a whole diff over two in-memory listings (for tests and benchmarks).
pub fn diff_all(source: Vec<ObjectMeta>, destination: Vec<ObjectMeta>) -> Vec<Joined> {
    let mut join = MergeJoin::new();
    join.push_source(source);
    join.finish_source();
    join.push_destination(destination);
    join.finish_destination();
    let mut out = Vec::new();
    while let Step::Item(item) = join.next() {
        out.push(item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::config::Overwrite;
    use ferry_core::policy::{Action, Policy, decide};
    use proptest::prelude::*;

    fn meta(key: &str, size: u64, etag: &str) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            etag: etag.into(),
            last_modified_ms: 0,
            storage_class: None,
        }
    }

    fn listing() -> impl Strategy<Value = Vec<ObjectMeta>> {
        proptest::collection::btree_map("[a-c/é ]{0,6}", (0u64..4, "[ab]"), 0..60).prop_map(|m| {
            m.into_iter()
                .map(|(k, (size, etag))| meta(&k, size, &etag))
                .collect()
        })
    }

    /// Keys the default policy copies (or deletes), with an empty ledger.
    fn copies(joined: &[Joined]) -> Vec<String> {
        let policy = Policy {
            overwrite: Overwrite::IfNewer,
            overwrite_unmanaged: false,
            delete: true,
            last_success_start_ms: None,
        };
        joined
            .iter()
            .filter(|j| {
                matches!(
                    decide(j, None, false, &policy),
                    Action::Copy(_) | Action::Delete
                )
            })
            .map(|j| match j {
                Joined::Both { source, .. } | Joined::SourceOnly(source) => source.key.clone(),
                Joined::DestinationOnly(d) => d.key.clone(),
            })
            .collect()
    }

    #[test]
    fn asks_for_pages_before_deciding() {
        let mut join = MergeJoin::new();
        assert_eq!(join.next(), Step::NeedSource);
        join.push_source(vec![meta("b", 1, "x")]);
        assert_eq!(join.next(), Step::NeedDestination);
        join.push_destination(vec![meta("a", 1, "x")]);
        assert_eq!(
            join.next(),
            Step::Item(Joined::DestinationOnly(meta("a", 1, "x")))
        );
        // "b" may still meet a destination "b" on the next page.
        assert_eq!(join.next(), Step::NeedDestination);
        join.finish_destination();
        assert_eq!(
            join.next(),
            Step::Item(Joined::SourceOnly(meta("b", 1, "x")))
        );
        assert_eq!(join.next(), Step::NeedSource);
        join.finish_source();
        assert_eq!(join.next(), Step::Done);
    }

    proptest! {
        #[test]
        fn identical_listings_give_an_empty_plan(src in listing()) {
            let joined = diff_all(src.clone(), src);
            prop_assert!(copies(&joined).is_empty());
        }

        #[test]
        fn an_empty_destination_copies_everything(src in listing()) {
            let keys: Vec<_> = src.iter().map(|o| o.key.clone()).collect();
            prop_assert_eq!(copies(&diff_all(src, vec![])), keys);
        }

        #[test]
        fn every_key_appears_once_in_order(src in listing(), dst in listing()) {
            let joined = diff_all(src.clone(), dst.clone());
            let keys: Vec<_> = joined.iter().map(|j| match j {
                Joined::Both { source, .. } => source.key.clone(),
                Joined::SourceOnly(s) => s.key.clone(),
                Joined::DestinationOnly(d) => d.key.clone(),
            }).collect();
            let mut expected: Vec<_> = src.iter().chain(dst.iter()).map(|o| o.key.clone()).collect();
            expected.sort();
            expected.dedup();
            prop_assert_eq!(keys, expected);
        }

        #[test]
        fn paging_does_not_change_the_result(src in listing(), dst in listing(), page in 1usize..7) {
            let whole = diff_all(src.clone(), dst.clone());
            let mut join = MergeJoin::new();
            let mut s = src.chunks(page).map(<[_]>::to_vec);
            let mut d = dst.chunks(page).map(<[_]>::to_vec);
            let mut paged = Vec::new();
            loop {
                match join.next() {
                    Step::Item(i) => paged.push(i),
                    Step::NeedSource => match s.next() { Some(p) => join.push_source(p), None => join.finish_source() },
                    Step::NeedDestination => match d.next() { Some(p) => join.push_destination(p), None => join.finish_destination() },
                    Step::Done => break,
                }
            }
            prop_assert_eq!(paged, whole);
        }

        #[test]
        fn planning_twice_gives_the_same_plan(src in listing(), dst in listing()) {
            prop_assert_eq!(copies(&diff_all(src.clone(), dst.clone())), copies(&diff_all(src, dst)));
        }
    }
}
