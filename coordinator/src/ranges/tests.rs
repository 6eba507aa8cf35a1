use super::*;
use ferry_testkit::memstore::MemStore;

/// The keys of `ranges`, range by range, as a lister cutting at each end would see them.
fn per_range(keys: &[String], ranges: &[KeyRange]) -> Vec<usize> {
    ranges
        .iter()
        .map(|r| {
            keys.iter()
                .filter(|k| r.after.as_ref().is_none_or(|a| *k > a))
                .filter(|k| r.through.as_ref().is_none_or(|t| *k <= t))
                .count()
        })
        .collect()
}

async fn split_of(keys: &[String], max_ranges: u32, min_keys: u64) -> Vec<KeyRange> {
    let mem = Arc::new(MemStore::new("source"));
    for k in keys {
        mem.insert("b", k, b"");
    }
    let store: Arc<dyn ObjectStore> = mem.clone();
    let boundaries = split(&store, "b", "p/", max_ranges, min_keys)
        .await
        .unwrap();
    // The first page, the search for the end, and the samples.
    let probes = mem.requests().get("ListObjectsV2").copied().unwrap_or(0);
    let most = 1 + END_PROBES + (SAMPLES_PER_RANGE + REFINE_ROUNDS / 2) * max_ranges as usize;
    assert!(probes as usize <= most, "{probes} probes");
    ranges_of(&boundaries)
}

/// Every key lands in exactly one range, and no range holds more than `slack` times its
/// fair share.
async fn assert_even(name: &str, keys: Vec<String>, ranges: u32, slack: f64) {
    let mut keys = keys;
    keys.sort();
    keys.dedup();
    let split = split_of(&keys, ranges, 100).await;
    let counts = per_range(&keys, &split);
    assert_eq!(counts.len(), ranges as usize, "{name}: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), keys.len(), "{name}");
    let fair = keys.len() as f64 / f64::from(ranges);
    let worst = *counts.iter().max().unwrap() as f64;
    assert!(worst <= fair * slack, "{name}: {counts:?}, fair {fair}");
}

fn hash(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ 0x5151
}

#[tokio::test]
async fn hashed_sequential_and_timestamped_keys_split_evenly() {
    let n = 40_000u64;
    let hashed = (0..n).map(|i| format!("p/{:016x}", hash(i))).collect();
    assert_even("hashed", hashed, 16, 1.5).await;
    let sequential = (0..n).map(|i| format!("p/object-{i:08}")).collect();
    assert_even("sequential", sequential, 16, 1.5).await;
    let unpadded = (0..n).map(|i| format!("p/{i}")).collect();
    assert_even("unpadded numbers", unpadded, 4, 1.5).await;
    let stamped = (0..n)
        .map(|i| {
            format!(
                "p/2026-12-04T{:02}:{:02}:{:02}.{:03}Z-{}.log",
                i / 3600 % 24,
                i / 60 % 60,
                i % 60,
                i % 1000,
                hash(i) % 97
            )
        })
        .collect();
    assert_even("timestamps", stamped, 8, 1.5).await;
}

#[tokio::test]
async fn skewed_keys_split_within_four_times_the_fair_share() {
    // Nine keys in ten under one name, the rest spread thin over the key space.
    let keys = (0..30_000u64)
        .map(|i| match i % 10 {
            0 => format!("p/{}{:08}", char::from(b'a' + (hash(i) % 26) as u8), i),
            _ => format!("p/mmmm{:016x}", hash(i)),
        })
        .collect();
    // The estimate finds the dense keys late: their range gets up to 4 times its share.
    assert_even("skewed", keys, 8, 4.0).await;
}

#[tokio::test]
async fn a_small_prefix_is_not_split() {
    let keys: Vec<String> = (0..999).map(|i| format!("p/{i:05}")).collect();
    assert_eq!(split_of(&keys, 16, 1).await.len(), 1, "one page");
    let keys: Vec<String> = (0..3000).map(|i| format!("p/{i:05}")).collect();
    assert_eq!(
        split_of(&keys, 16, 2000).await.len(),
        1,
        "under two ranges' worth"
    );
    assert_eq!(split_of(&keys, 1, 1).await.len(), 1, "list_ranges = 1");
    assert_eq!(split_of(&keys, 16, 1000).await.len(), 3);
}

#[test]
fn positions_keep_the_order_of_keys_and_key_at_stays_at_or_before() {
    let keys = ["p/", "p/a", "p/a\u{0}", "p/ab", "p/é", "p/\u{10FFFF}", "q"];
    let positions: Vec<u128> = keys.iter().map(|k| position("p/", k)).collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{positions:?}");
    for k in ["p/abc", "p/é1", "p/zz\u{0}z"] {
        let at = key_at("p/", position("p/", k));
        assert!(at.as_str() <= k, "{at:?} > {k:?}");
    }
    // A position in the middle of a character stays before it.
    let mid = position("p/", "p/é") + 1;
    assert!(key_at("p/", mid).as_str() < "p/é\u{1}");
    assert_eq!(common_prefix("p/éa", "p/éb"), "p/é");
    assert_eq!(common_prefix("p/ab", "p/a"), "p/a");

    // In a learnt space, positions keep the order too, keys outside the alphabet included.
    let space = Space::learn("p/", ["p/a1", "p/b2", "p/é", "p/c"].into_iter());
    let keys = [
        "p/",
        "p/0",
        "p/a",
        "p/a1",
        "p/a19",
        "p/a2",
        "p/az",
        "p/b",
        "p/c",
        "p/d",
        "p/é",
        "p/\u{10FFFF}",
        "q",
    ];
    let positions: Vec<f64> = keys.iter().map(|k| space.position(k)).collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "{positions:?}");
    // Keys written in the alphabet come back as themselves, or as a key just before.
    for k in ["p/a", "p/a1", "p/b2", "p/c", "p/é"] {
        assert!(space.key_at(space.position(k)).as_str() <= k, "{k}");
    }
    assert_eq!(space.key_at(space.position("p/b2")), "p/b2");
}

#[test]
fn ranges_cover_the_key_space_once() {
    let r = ranges_of(&["b".into(), "d".into()]);
    let keys: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
    assert_eq!(per_range(&keys, &r), vec![2, 2, 1]);
    assert_eq!(ranges_of(&[]), vec![KeyRange::default()]);
}

#[test]
fn a_key_past_a_digits_alphabet_does_not_sort_after_the_next_digit() {
    // "d0a" runs past the third byte's alphabet (0-5): it lies where "e" starts, and a
    // sum from the first byte put it a rounding past "e-0".
    let space = Space::learn("p/", ["p/2", "p/305", "p/b", "p/e-0"].into_iter());
    let (before, after) = (space.position("p/d0a"), space.position("p/e-0"));
    assert!(before <= after, "{before} > {after}");
}

#[test]
fn a_key_read_back_from_its_position_is_not_after_it() {
    // Rounding left a residual after "a4" that read as two more digits.
    let space = Space::learn("p/", ["p/00", "p/a-30", "p/a4"].into_iter());
    let back = space.key_at(space.position("p/a4"));
    assert!(back.as_str() <= "p/a4", "{back:?}");
}

/// The samples a listing of `keys` (sorted, distinct) gives: a page of up to `page` keys
/// after each of `starts` (and one from the start).
fn samples_of(keys: &[String], starts: &[String], page: usize) -> Vec<Sample> {
    let mut afters: Vec<Option<String>> = vec![None];
    afters.extend(starts.iter().cloned().map(Some));
    let mut samples: Vec<Sample> = afters
        .into_iter()
        .map(|after| {
            let from = after
                .as_ref()
                .map_or(0, |a| keys.partition_point(|k| k <= a));
            let held = &keys[from..(from + page).min(keys.len())];
            Sample {
                after,
                keys: held.to_vec(),
                last: from + page >= keys.len(),
            }
        })
        .collect();
    in_order(&mut samples);
    samples
}

fn key_set() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set("p/[0-9a-f]{1,6}|p/[a-z]{1,4}-[0-9]{1,3}", 1..600)
        .prop_map(|s| s.into_iter().collect())
}

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Wherever the boundaries fall, every key is in exactly one range.
    #[test]
    fn any_boundaries_cover_every_key_once(
        keys in proptest::collection::vec("[a-c]{0,3}", 0..40),
        cuts in proptest::collection::btree_set("[a-c]{1,3}", 0..6),
    ) {
        let cuts: Vec<String> = cuts.into_iter().collect();
        let ranges = ranges_of(&cuts);
        prop_assert_eq!(ranges.len(), cuts.len() + 1);
        for k in &keys {
            let holding = per_range(std::slice::from_ref(k), &ranges);
            prop_assert_eq!(holding.iter().sum::<usize>(), 1, "{:?} in {:?}", k, holding);
        }
    }

    /// Boundaries chosen from any samples are real cuts: in order, distinct, no more than
    /// the ranges allowed.
    #[test]
    fn boundaries_from_any_samples_are_ordered_and_few_enough(
        keys in key_set(),
        picks in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        page in 1usize..80,
        max_ranges in 1u32..20,
        min_keys in 1u64..50,
    ) {
        let starts: Vec<String> = picks.iter().map(|i| i.get(&keys).clone()).collect();
        let samples = samples_of(&keys, &starts, page);
        let space = Space::of_samples("p/", &samples);
        let end = space.position(keys.last().unwrap());
        let cut = boundaries(&samples, &space, end, (max_ranges, min_keys));
        prop_assert!(cut.len() < max_ranges as usize, "{} boundaries", cut.len());
        prop_assert!(cut.windows(2).all(|w| w[0] < w[1]), "{:?}", cut);
    }

    /// With pages that hold the whole listing, the counts are exact, and the ranges are
    /// equal to within a key.
    #[test]
    fn samples_that_hold_every_key_cut_equal_ranges(
        keys in key_set(),
        max_ranges in 2u32..12,
    ) {
        let samples = samples_of(&keys, &[], keys.len());
        let space = Space::of_samples("p/", &samples);
        let end = space.position(keys.last().unwrap());
        let cut = boundaries(&samples, &space, end, (max_ranges, 1));
        let counts = per_range(&keys, &ranges_of(&cut));
        let ranges = ranges_for(keys.len() as f64, max_ranges, 1);
        prop_assert_eq!(counts.len(), ranges as usize, "{:?}", counts);
        let fair = keys.len() as f64 / f64::from(ranges);
        prop_assert!(
            counts.iter().all(|&c| (c as f64 - fair).abs() <= 1.0),
            "{:?}, fair {}", counts, fair
        );
    }

    /// A learnt space keeps the order of any keys, and a key written in its alphabet comes
    /// back as itself or a key just before it.
    #[test]
    fn a_learnt_space_keeps_key_order(keys in key_set(), others in key_set()) {
        let space = Space::learn("p/", keys.iter().map(String::as_str));
        let mut all: Vec<&String> = keys.iter().chain(&others).collect();
        all.sort();
        let positions: Vec<f64> = all.iter().map(|k| space.position(k)).collect();
        prop_assert!(positions.windows(2).all(|w| w[0] <= w[1]));
        for k in &keys {
            let back = space.key_at(space.position(k));
            prop_assert!(back.as_str() <= k.as_str(), "{:?} came back as {:?}", k, back);
        }
    }

    /// The points the next round lists after lie beyond a page's end, and are few.
    #[test]
    fn the_weakest_intervals_are_probed_past_their_pages(
        keys in key_set(),
        picks in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        page in 2usize..40,
        guess_ranges in 2u32..16,
    ) {
        let starts: Vec<String> = picks.iter().map(|i| i.get(&keys).clone()).collect();
        let samples = samples_of(&keys, &starts, page);
        let space = Space::of_samples("p/", &samples);
        let end = space.position(keys.last().unwrap());
        let next = weakest(&samples, &space, end, guess_ranges);
        prop_assert!(next.len() <= (guess_ranges as usize / 2).max(2));
        for after in &next {
            let reached = samples.iter().filter_map(|s| s.keys.last()).any(|l| after > l);
            prop_assert!(reached, "{:?} is inside every page", after);
        }
    }
}
