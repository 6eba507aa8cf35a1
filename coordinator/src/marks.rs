//! Marks: a key every so many source keys of a prefix's listing, kept on record so that the
//! next iteration cuts the prefix into key ranges of equal counts from what this one listed,
//! with no sampling and whatever the keys look like.
//!
//! Sampled split points ([`crate::ranges::split`]) estimate counts from the density of a few
//! pages, and keys that crowd where no page looked make a range several times its share. A
//! listing counts every key, so its marks are exact quantiles: each lane marks every `every`-th
//! key it lists (halving its marks and doubling `every` when they grow past [`MOST`]), and the
//! lanes' marks, merged in key order, give [`QUANTILES`] keys at equal counts. Marking costs a
//! counter per key and at most [`MOST`] keys per lane in memory.

use ferry_queue::ListingMarks;

/// Marks a lane keeps before it halves them (even).
const MOST: usize = 512;

/// Keys on record per prefix: the quantiles at `1/QUANTILES, 2/QUANTILES, ...` of its listing.
pub(crate) const QUANTILES: usize = 256;

/// The marks of one lane's listing (a range, or a whole prefix): its keys at counts `every`,
/// `2 * every`, ...
#[derive(Debug)]
pub(crate) struct Marks {
    listed: u64,
    every: u64,
    keys: Vec<String>,
}

impl Default for Marks {
    fn default() -> Self {
        Marks {
            listed: 0,
            every: 1,
            keys: Vec::new(),
        }
    }
}

impl Marks {
    /// Counts the next key listed, in key order.
    pub(crate) fn push(&mut self, key: &str) {
        self.listed += 1;
        if !self.listed.is_multiple_of(self.every) {
            return;
        }
        self.keys.push(key.to_string());
        if self.keys.len() >= MOST {
            // Keep the marks at even multiples of `every`: the second, fourth, ...
            self.keys = std::mem::take(&mut self.keys)
                .into_iter()
                .skip(1)
                .step_by(2)
                .collect();
            self.every *= 2;
        }
    }

    /// Keys counted.
    pub(crate) fn listed(&self) -> u64 {
        self.listed
    }
}

/// The quantiles of a prefix's listing from the marks of its lanes, in key order: the key
/// nearest each of `1/QUANTILES, ..., (QUANTILES-1)/QUANTILES` of the keys listed.
pub(crate) fn quantiles(prefix: &str, lanes: &[Marks]) -> ListingMarks {
    let listed: u64 = lanes.iter().map(|l| l.listed).sum();
    let mut marked = Vec::new();
    let mut before = 0;
    for lane in lanes {
        marked.extend(
            lane.keys
                .iter()
                .enumerate()
                .map(|(i, k)| (before + (i as u64 + 1) * lane.every, k)),
        );
        before += lane.listed;
    }
    let mut keys = Vec::with_capacity(QUANTILES - 1);
    let mut at = 0;
    for q in 1..QUANTILES as u64 {
        let target = listed * q / QUANTILES as u64;
        while at + 1 < marked.len() && marked[at + 1].0 <= target {
            at += 1;
        }
        let nearest = match (marked.get(at), marked.get(at + 1)) {
            (Some(a), Some(b)) if b.0 - target < target.abs_diff(a.0) => b,
            (Some(a), _) => a,
            (None, _) => break,
        };
        keys.push(nearest.1.clone());
    }
    ListingMarks {
        prefix: prefix.to_string(),
        listed,
        keys,
    }
}

/// The boundaries of at most `max_ranges` ranges of about `min_keys` keys or more each, cut
/// at equal counts of the listing `marks` describe. Empty when that listing is too small
/// for two ranges.
pub(crate) fn boundaries(marks: &ListingMarks, max_ranges: u32, min_keys: u64) -> Vec<String> {
    let ranges = crate::ranges::ranges_for(marks.listed as f64, max_ranges, min_keys);
    let quantiles = marks.keys.len() + 1;
    let mut out: Vec<String> = Vec::new();
    for j in 1..ranges as usize {
        // The quantile nearest j / ranges.
        let q = (j * quantiles + ranges as usize / 2) / ranges as usize;
        let Some(key) = q.checked_sub(1).and_then(|q| marks.keys.get(q)) else {
            continue;
        };
        if out.last().is_none_or(|last| last < key) {
            out.push(key.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> u64 {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ 0x5151
    }

    /// Nine keys in ten under one name, the rest spread thin (what sampling splits worst).
    fn skewed(n: u64) -> Vec<String> {
        let mut keys: Vec<String> = (0..n)
            .map(|i| match i % 10 {
                0 => format!("p/{}{:08}", char::from(b'a' + (hash(i) % 26) as u8), i),
                _ => format!("p/mmmm{:016x}", hash(i)),
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Keys per range of `boundaries` (ranges `(start, b1], (b1, b2], ...`).
    fn per_range(keys: &[String], boundaries: &[String]) -> Vec<usize> {
        let mut counts = vec![0; boundaries.len() + 1];
        for key in keys {
            counts[boundaries.partition_point(|b| b < key)] += 1;
        }
        counts
    }

    /// Marks `keys` in lanes cut at `cuts` (as the lanes of ranges would list them).
    fn marked(keys: &[String], cuts: &[String]) -> Vec<Marks> {
        let mut lanes: Vec<Marks> = (0..=cuts.len()).map(|_| Marks::default()).collect();
        for key in keys {
            lanes[cuts.partition_point(|b| b < key)].push(key);
        }
        lanes
    }

    #[test]
    fn skewed_keys_listed_once_are_cut_into_even_ranges() {
        let keys = skewed(60_000);
        let fair = keys.len() as f64 / 16.0;
        // One lane, then ten lanes of very different sizes, as an uneven split lists them.
        let uneven: Vec<String> = [5usize, 10, 50, 100, 2_000, 3_000, 30_000, 50_000, 59_000]
            .iter()
            .map(|&i| keys[i].clone())
            .collect();
        for cuts in [Vec::new(), uneven] {
            let marks = quantiles("p/", &marked(&keys, &cuts));
            assert_eq!(marks.listed, keys.len() as u64);
            assert_eq!(marks.keys.len(), QUANTILES - 1);
            assert!(marks.keys.windows(2).all(|w| w[0] <= w[1]), "in key order");
            let split = boundaries(&marks, 16, 100);
            let counts = per_range(&keys, &split);
            assert_eq!(counts.len(), 16, "{counts:?}");
            let worst = *counts.iter().max().unwrap() as f64;
            let least = *counts.iter().min().unwrap() as f64;
            assert!(
                worst <= fair * 1.1 && least >= fair * 0.9,
                "{} lanes: {counts:?}, fair {fair}",
                cuts.len() + 1
            );
        }
    }

    #[test]
    fn a_lane_keeps_at_most_its_bound_of_marks_at_equal_counts() {
        let mut lane = Marks::default();
        for i in 0..100_000u64 {
            lane.push(&format!("k{i:08}"));
            assert!(lane.keys.len() < MOST, "{} marks at {i}", lane.keys.len());
        }
        assert_eq!(lane.listed(), 100_000);
        assert!(lane.keys.len() >= MOST / 2, "{} marks", lane.keys.len());
        // Each mark is the key at its count.
        for (i, key) in lane.keys.iter().enumerate() {
            assert_eq!(*key, format!("k{:08}", (i as u64 + 1) * lane.every - 1));
        }
    }

    #[test]
    fn a_listing_too_small_for_two_ranges_is_not_cut() {
        let keys: Vec<String> = (0..150).map(|i| format!("p/{i:04}")).collect();
        let marks = quantiles("p/", &marked(&keys, &[]));
        assert_eq!(boundaries(&marks, 16, 100), Vec::<String>::new());
        assert_eq!(boundaries(&marks, 16, 50).len(), 2);
        let none = quantiles("p/", &[]);
        assert_eq!((none.listed, none.keys.len()), (0, 0));
        assert_eq!(boundaries(&none, 16, 1), Vec::<String>::new());
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        /// Marks of any listing, in any lanes, are its keys in order; the ranges cut from them
        /// are in order and no more than allowed, and each holds its fair share to within
        /// what the marks' spacing allows.
        #[test]
        fn marks_of_any_listing_cut_ranges_near_their_fair_share(
            keys in proptest::collection::btree_set("[a-f0-9]{1,8}", 1..3000),
            cut_at in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
            max_ranges in 2u32..20,
        ) {
            let keys: Vec<String> = keys.into_iter().collect();
            let mut cuts: Vec<String> = cut_at.iter().map(|i| i.get(&keys).clone()).collect();
            cuts.sort();
            cuts.dedup();
            let marks = quantiles("", &marked(&keys, &cuts));
            prop_assert_eq!(marks.listed, keys.len() as u64);
            prop_assert!(marks.keys.len() < QUANTILES);
            prop_assert!(marks.keys.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(marks.keys.iter().all(|k| keys.binary_search(k).is_ok()));
            let split = boundaries(&marks, max_ranges, 1);
            prop_assert!(split.len() < max_ranges as usize);
            prop_assert!(split.windows(2).all(|w| w[0] < w[1]));
            // A lane's marks are `every` keys apart (at most 2 * listed / MOST), and a
            // quantile is half a step from where it is wanted: each boundary is that far
            // from its place at most, so a range is twice that from its share.
            let counts = per_range(&keys, &split);
            let fair = keys.len() as f64 / counts.len() as f64;
            let lanes = (cuts.len() + 1) as f64;
            let slack = 2.0 * (2.0 * keys.len() as f64 / MOST as f64 * lanes
                + keys.len() as f64 / QUANTILES as f64 + 1.0);
            prop_assert!(
                counts.iter().all(|&c| (c as f64 - fair).abs() <= slack),
                "{:?}, fair {}, slack {}", counts, fair, slack
            );
        }
    }
}
