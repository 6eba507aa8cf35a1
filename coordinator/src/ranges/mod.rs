//! Key ranges: a large listing prefix is split into ranges whose source and destination
//! listings are merged and diffed on their own, in parallel.
//!
//! The boundaries `b1 < b2 < ... < bn` make the ranges `(start, b1], (b1, b2], ..., (bn, end)`,
//! each listed with `StartAfter` and cut at its end. They cover every key exactly once
//! wherever the boundaries fall, so where they fall decides only how evenly the work spreads.
//! [`split`] places them from a few sampled listing pages:
//!
//! - A key's *position* is the 16 bytes after a common base read as a number, so the key space
//!   between the first and the last key is an interval of numbers.
//! - The last key is found by galloping, then bisecting: a page listed after a position says
//!   whether any key lies beyond it.
//! - Pages listed after evenly spaced positions give the density of keys around each; summed,
//!   they estimate how many keys lie between any two positions.
//! - The boundaries cut that estimate into equal parts, each at a real key where a sampled page
//!   holds it.
//!
//! A probe is one ListObjectsV2 request, as a listing page is: a split into 16 ranges costs
//! about 90 of them, against 1,000 pages per side for a million keys.

use std::sync::Arc;

use ferry_storage::{ListPage, ObjectStore, StorageError, list_pages};
use futures::{StreamExt, TryStreamExt};

/// Sampled pages per range wanted.
const SAMPLES_PER_RANGE: usize = 4;

/// Probes listed at once.
const PROBES_AT_ONCE: usize = 16;

/// Most probes spent finding the last key.
const END_PROBES: usize = 48;

/// Rounds of closer looks where the estimate is weakest, each at most a probe per two ranges.
const REFINE_ROUNDS: usize = 8;

/// One key range of a prefix: the keys after `after` up to and including `through` (`None`:
/// from the start, to the end).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub(crate) after: Option<String>,
    pub(crate) through: Option<String>,
}

/// The ranges that `boundaries` (sorted, distinct) cut the key space into.
pub(crate) fn ranges_of(boundaries: &[String]) -> Vec<KeyRange> {
    let mut ranges = Vec::with_capacity(boundaries.len() + 1);
    let mut after = None;
    for b in boundaries {
        ranges.push(KeyRange {
            after: after.replace(b.clone()),
            through: Some(b.clone()),
        });
    }
    ranges.push(KeyRange {
        after,
        through: None,
    });
    ranges
}

/// A key's position after `base`: its next 16 bytes as a big-endian number (keys outside
/// `base` sort to either end).
fn position(base: &str, key: &str) -> u128 {
    match key.as_bytes().strip_prefix(base.as_bytes()) {
        Some(rest) => {
            let mut bytes = [0u8; 16];
            let n = rest.len().min(16);
            bytes[..n].copy_from_slice(&rest[..n]);
            u128::from_be_bytes(bytes)
        }
        None if key < base => 0,
        None => u128::MAX,
    }
}

/// A string at or just before `position` after `base` that a listing can start after: valid
/// UTF-8, cut at its first NUL; a byte that is not UTF-8 there becomes U+007F, the greatest
/// character below it.
fn key_at(base: &str, position: u128) -> String {
    let bytes = position.to_be_bytes();
    let bytes = &bytes[..bytes.iter().position(|b| *b == 0).unwrap_or(16)];
    match std::str::from_utf8(bytes) {
        Ok(s) => format!("{base}{s}"),
        Err(e) => {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            format!("{base}{valid}\u{7f}")
        }
    }
}

/// The longest common prefix of `a` and `b`, at a character boundary.
fn common_prefix<'s>(a: &'s str, b: &str) -> &'s str {
    let n = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    &a[..n]
}

/// How far apart two positions in a [`Space`] must be to be told apart: far above the
/// rounding of the arithmetic on them, far below the width of any key that matters.
const ROUNDING: f64 = 1e-12;

/// Bytes of a key, after the base, that place it in a [`Space`].
const DEPTH: usize = 12;

/// The key space as the sampled keys use it: at each byte after `base`, only the byte values
/// seen there count, so a key's position (in `[0, 1)`) moves evenly over the keys whatever
/// their alphabet (hex digits, decimal numbers, timestamps), with no gaps between letters
/// that no key uses.
#[derive(Debug)]
struct Space {
    base: String,
    alphabets: Vec<Vec<u8>>,
}

impl Space {
    /// The space the keys of `samples` use after `base`.
    fn of_samples(base: &str, samples: &[Sample]) -> Self {
        let keys = samples
            .iter()
            .flat_map(|s| s.keys.iter().map(String::as_str));
        Space::learn(base, keys)
    }

    fn learn<'k>(base: &str, keys: impl Iterator<Item = &'k str>) -> Self {
        let mut seen = vec![[false; 256]; DEPTH];
        for key in keys {
            if let Some(rest) = key.as_bytes().strip_prefix(base.as_bytes()) {
                for (d, b) in rest.iter().take(DEPTH).enumerate() {
                    seen[d][usize::from(*b)] = true;
                }
            }
        }
        // A class of characters seen in part is taken whole between its least and greatest
        // seen: keys are written in digits and letters, and a sample can miss a few.
        for s in &mut seen {
            for class in [b'0'..=b'9', b'a'..=b'z', b'A'..=b'Z'] {
                let members: Vec<u8> = class.filter(|b| s[usize::from(*b)]).collect();
                if let (Some(lo), Some(hi)) = (members.first(), members.last()) {
                    (*lo..=*hi).for_each(|b| s[usize::from(b)] = true);
                }
            }
        }
        let alphabets = seen
            .iter()
            .map(|s| (0..=255u8).filter(|b| s[usize::from(*b)]).collect())
            .collect();
        Space {
            base: base.to_string(),
            alphabets,
        }
    }

    /// Where `key` lies: weakly increasing with the key's byte order. Summed from the last
    /// byte back (`(digit + rest) / base` at each), so that a byte past a digit's alphabet
    /// (`digit + 1`) lands exactly where the next digit starts, never past it by a rounding.
    fn position(&self, key: &str) -> f64 {
        let Some(rest) = key.as_bytes().strip_prefix(self.base.as_bytes()) else {
            return if key < self.base.as_str() { 0.0 } else { 1.0 };
        };
        let mut digits = Vec::with_capacity(DEPTH);
        for (b, alphabet) in rest.iter().zip(&self.alphabets) {
            if alphabet.is_empty() {
                break;
            }
            let below = alphabet.partition_point(|a| a < b);
            digits.push((below as f64, alphabet.len() as f64));
            if alphabet.get(below) != Some(b) {
                break;
            }
        }
        digits
            .iter()
            .rev()
            .fold(0.0, |rest, (digit, base)| (digit + rest) / base)
    }

    /// A string at or before position `at`, that a listing can start after: valid UTF-8, a
    /// byte that is not becoming U+007F, the greatest character below it.
    fn key_at(&self, mut at: f64) -> String {
        let mut bytes = Vec::new();
        // The width of a unit of `at` in the whole space: below [`ROUNDING`], digits are noise.
        let mut width = 1.0;
        for alphabet in &self.alphabets {
            let len = alphabet.len() as f64;
            // A residual this small is rounding: the key ends here (a prefix sorts first).
            if alphabet.is_empty() || at * width < ROUNDING || width / len < ROUNDING {
                break;
            }
            let scaled = at * len;
            // Nor may rounding turn a whole digit into the one below.
            let noise = ROUNDING * len / width;
            let digit = ((scaled + noise).floor() as usize).min(alphabet.len() - 1);
            bytes.push(alphabet[digit]);
            at = scaled - digit as f64;
            width /= len;
        }
        let bytes = &bytes[..bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len())];
        match std::str::from_utf8(bytes) {
            Ok(s) => format!("{}{s}", self.base),
            Err(e) => {
                let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
                format!("{}{valid}\u{7f}", self.base)
            }
        }
    }
}

/// One sampled page: the keys listed after `after` (`None`: from the start).
#[derive(Clone, Debug)]
struct Sample {
    after: Option<String>,
    keys: Vec<String>,
    /// The page reached the end of the listing.
    last: bool,
}

impl Sample {
    fn of(after: Option<String>, page: ListPage) -> Self {
        Sample {
            after,
            last: page.next_token.is_none(),
            keys: page.objects.into_iter().map(|o| o.key).collect(),
        }
    }

    /// How many keys lie after this sample's start, up to and including `until` (`None`: the
    /// end), and whether the count is exact (the page went past `until`, or reached the end);
    /// else the page's keys and as many again as their density in `space` puts between the
    /// page's last key and `until` (at `end` for the end). The density is that of the page's
    /// second half, nearest to what it estimates: a page may start in sparse keys and end in
    /// dense ones.
    fn count_until(&self, until: Option<&str>, space: &Space, end: f64) -> (f64, bool) {
        let inside = until.map_or(self.keys.len(), |u| {
            self.keys.partition_point(|k| k.as_str() <= u)
        });
        let Some(reached) = self.keys.last() else {
            return (0.0, true);
        };
        if inside < self.keys.len() || self.last {
            return (inside as f64, true);
        }
        let half = &self.keys[self.keys.len() / 2..];
        let (from, reached) = (space.position(&half[0]), space.position(reached));
        let until = until.map_or(end, |u| space.position(u));
        let held = self.keys.len() as f64;
        if reached <= from {
            return (held, false);
        }
        let beyond = (until - reached).max(0.0);
        (
            held + (half.len() - 1) as f64 / (reached - from) * beyond,
            false,
        )
    }
}

/// The first page listed after `after` (retried like any listing page).
async fn page_after(
    store: &Arc<dyn ObjectStore>,
    bucket: &str,
    prefix: &str,
    after: Option<String>,
) -> Result<ListPage, StorageError> {
    let pages = list_pages(store.clone(), bucket.into(), prefix.into(), after);
    futures::pin_mut!(pages);
    Ok(pages.try_next().await?.unwrap_or(ListPage {
        objects: Vec::new(),
        next_token: None,
    }))
}

/// Sorts samples by where they start, one per start.
fn in_order(samples: &mut Vec<Sample>) {
    samples.sort_by(|a, b| a.after.cmp(&b.after));
    samples.dedup_by(|a, b| a.after == b.after);
}

/// Chooses the boundaries of at most `max_ranges` key ranges for `prefix` of `bucket`, about
/// `min_keys` source keys or more each. Empty when the prefix is too small to split (one
/// page, or under `2 * min_keys` keys by the estimate). The listing is sampled here; where
/// the boundaries fall is [`boundaries`]'s choice, from the samples alone.
pub(crate) async fn split(
    store: &Arc<dyn ObjectStore>,
    bucket: &str,
    prefix: &str,
    max_ranges: u32,
    min_keys: u64,
) -> Result<Vec<String>, StorageError> {
    if max_ranges <= 1 {
        return Ok(Vec::new());
    }
    let lister = Lister {
        store,
        bucket,
        prefix,
    };
    let first = Sample::of(None, page_after(store, bucket, prefix, None).await?);
    let (Some(lo_key), false) = (first.keys.first().cloned(), first.last) else {
        return Ok(Vec::new());
    };
    let mut samples = vec![first];
    let Some(hi_key) = lister.find_last(&mut samples, min_keys).await? else {
        return Ok(Vec::new());
    };

    // From here on, positions count in the space of what the keys between the first and the
    // last share, and of the bytes seen after it.
    let base = common_prefix(&lo_key, &hi_key).to_string();
    let mut space = Space::of_samples(&base, &samples);
    let (lo, hi) = (space.position(&lo_key), space.position(&hi_key));
    if hi <= lo {
        return Ok(Vec::new());
    }
    // A first guess of the size, from the first page's density, says how many samples to take.
    let first_count = samples[0].keys.len() as f64;
    let first_reached = space.position(&samples[0].keys[samples[0].keys.len() - 1]);
    let guess = first_count * (hi - lo) / (first_reached - lo).max(f64::MIN_POSITIVE);
    let guess_ranges = ranges_for(guess, max_ranges, min_keys);
    if guess_ranges <= 1 {
        return Ok(Vec::new());
    }
    // Two rounds of samples, evenly spaced, the second in the space the first taught.
    let each_round = (guess_ranges as usize * SAMPLES_PER_RANGE / 2).max(4);
    for round in 0..2 {
        let (lo, hi) = (space.position(&lo_key), space.position(&hi_key));
        let offset = if round == 0 { 0.5 } else { 0.0 };
        let afters: Vec<String> = (0..each_round)
            .map(|i| space.key_at(lo + (hi - lo) * (i as f64 + offset) / each_round as f64))
            .collect();
        samples.extend(lister.sample_after(afters).await?);
        space = Space::of_samples(&base, &samples);
    }
    // Then look closer where the estimate is weakest.
    for _ in 0..REFINE_ROUNDS {
        in_order(&mut samples);
        let end = space.position(&hi_key);
        let afters = weakest(&samples, &space, end, guess_ranges);
        if afters.is_empty() {
            break;
        }
        samples.extend(lister.sample_after(afters).await?);
        space = Space::of_samples(&base, &samples);
    }
    in_order(&mut samples);
    let end = space.position(&hi_key);
    Ok(boundaries(&samples, &space, end, (max_ranges, min_keys)))
}

/// Where a split lists its sample pages.
struct Lister<'a> {
    store: &'a Arc<dyn ObjectStore>,
    bucket: &'a str,
    prefix: &'a str,
}

impl Lister<'_> {
    /// The pages listed after each of `afters`, [`PROBES_AT_ONCE`] at a time.
    async fn sample_after(&self, afters: Vec<String>) -> Result<Vec<Sample>, StorageError> {
        futures::stream::iter(afters)
            .map(|after| async move {
                let page =
                    page_after(self.store, self.bucket, self.prefix, Some(after.clone())).await?;
                Ok(Sample::of(Some(after), page))
            })
            .buffered(PROBES_AT_ONCE)
            .try_collect()
            .await
    }

    /// The last key, found by galloping past the first page's end (`samples[0]`), then
    /// bisecting the gap, in plain byte positions, until the end is known to within 1/256 of
    /// the key space. Every page listed joins `samples`. `None` when there are too few keys
    /// for two ranges of `min_keys` even at the first page's density.
    async fn find_last(
        &self,
        samples: &mut Vec<Sample>,
        min_keys: u64,
    ) -> Result<Option<String>, StorageError> {
        let prefix = self.prefix;
        let (lo_key, mut hi_key) = match (samples[0].keys.first(), samples[0].keys.last()) {
            (Some(lo), Some(hi)) => (lo.clone(), hi.clone()),
            _ => return Ok(None),
        };
        let lo = position(prefix, &lo_key);
        let mut known = position(prefix, &hi_key);
        let first_span = known.saturating_sub(lo).max(1) as f64;
        let first_count = samples[0].keys.len() as f64;
        let mut step = known.saturating_sub(lo).max(1);
        let mut beyond: Option<u128> = None;
        for _ in 0..END_PROBES {
            if let Some(b) = beyond
                && first_count * (b - lo) as f64 / first_span < 2.0 * min_keys as f64
            {
                return Ok(None);
            }
            let probe = match beyond {
                None => known.saturating_add(step),
                Some(b) if b.saturating_sub(known) <= known.saturating_sub(lo) / 256 => break,
                Some(b) => known + (b - known) / 2,
            };
            let after = key_at(prefix, probe);
            let listed = page_after(self.store, self.bucket, prefix, Some(after.clone())).await?;
            let page = Sample::of(Some(after), listed);
            match page.keys.last() {
                Some(last) if *last > hi_key => {
                    known = known.max(position(prefix, last));
                    hi_key = last.clone();
                    step = step.saturating_mul(2);
                }
                _ => beyond = Some(probe),
            }
            samples.push(page);
            if known == u128::MAX {
                break;
            }
        }
        Ok(Some(hi_key))
    }
}

/// Where to list next, where the estimate is weakest: between the end of a page and the next
/// sample, where many keys are guessed, a page listed midway says how many there are (and
/// teaches the space the bytes those keys use). At most a probe per two ranges; none when
/// no interval holds a quarter range's worth of guessed keys.
fn weakest(samples: &[Sample], space: &Space, end: f64, guess_ranges: u32) -> Vec<String> {
    let guessed = guesses(samples, space, end);
    let total: f64 = guessed.iter().map(|(_, n)| n).sum();
    let worth = total / f64::from(guess_ranges) / 4.0;
    let mut weakest: Vec<(f64, String)> = guessed
        .into_iter()
        .filter(|(i, n)| *n > worth && samples[*i].keys.len() >= 2)
        .filter_map(|(i, n)| {
            let reached = space.position(samples[i].keys.last()?);
            let until = samples.get(i + 1).and_then(|s| s.after.as_deref());
            let until = until.map_or(end, |u| space.position(u));
            let after = space.key_at(reached + (until - reached) / 2.0);
            (after > *samples[i].keys.last()?).then_some((n, after))
        })
        .collect();
    weakest.sort_by(|a, b| b.0.total_cmp(&a.0));
    weakest.truncate((guess_ranges as usize / 2).max(2));
    weakest.into_iter().map(|(_, after)| after).collect()
}

/// The intervals whose counts are estimated, not known: (sample index, keys estimated
/// beyond the sample's page).
fn guesses(samples: &[Sample], space: &Space, end: f64) -> Vec<(usize, f64)> {
    samples
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let until = samples.get(i + 1).and_then(|n| n.after.as_deref());
            match s.count_until(until, space, end) {
                (_, true) => None,
                (n, false) => Some((i, n - s.keys.len() as f64)),
            }
        })
        .collect()
}

/// How many ranges `keys` estimated keys make.
pub(crate) fn ranges_for(keys: f64, max_ranges: u32, min_keys: u64) -> u32 {
    ((keys / min_keys.max(1) as f64).floor() as u32).clamp(1, max_ranges)
}

/// Cuts the keys the samples (sorted by start, the last key at `end`) estimate into equal
/// ranges; returns their boundaries.
fn boundaries(
    samples: &[Sample],
    space: &Space,
    end: f64,
    (max_ranges, min_keys): (u32, u64),
) -> Vec<String> {
    let until = |i: usize| samples.get(i + 1).and_then(|n| n.after.as_deref());
    let intervals: Vec<f64> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| s.count_until(until(i), space, end).0)
        .collect();
    let total: f64 = intervals.iter().sum();
    let ranges = ranges_for(total, max_ranges, min_keys);
    let mut out: Vec<String> = Vec::new();
    let (mut before, mut i) = (0.0, 0);
    for j in 1..ranges {
        let target = total * f64::from(j) / f64::from(ranges);
        while i < intervals.len() && before + intervals[i] < target {
            before += intervals[i];
            i += 1;
        }
        let (Some(count), Some(sample)) = (intervals.get(i), samples.get(i)) else {
            break;
        };
        // The boundary is the key that many keys into the interval: one the page holds, or a
        // position the page's density puts there.
        let into = (target - before).max(1.0) as usize;
        let boundary = match (sample.keys.get(into - 1), sample.keys.last()) {
            (Some(key), _) => key.clone(),
            (None, Some(reached)) => {
                let held = sample.keys.len() as f64;
                let reached_at = space.position(reached);
                let until_at = until(i).map_or(end, |u| space.position(u));
                let share = ((into as f64 - held) / (count - held).max(1.0)).clamp(0.0, 1.0);
                space.key_at(reached_at + (until_at - reached_at) * share)
            }
            (None, None) => continue,
        };
        if out.last().is_none_or(|last| *last < boundary) {
            out.push(boundary);
        }
    }
    out
}

#[cfg(test)]
mod tests;
