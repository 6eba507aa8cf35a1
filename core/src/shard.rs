//! Which queue shard a key belongs to.
//!
//! S3 scales and throttles by key prefix, so keys that share a prefix share a shard: the shard
//! is chosen from the rule prefix plus the key's first path segment after it. The number of
//! shards per rule is fixed, which keeps queue keys and metric labels bounded.
//!
//! A large prefix listed in key ranges (see the coordinator's `ranges.rs`) takes its shards
//! from the range instead ([`shard_of_range`]): S3 partitions by key range, and ranges of
//! about equal size spread the work evenly whatever the keys look like.

/// Shards per rule.
pub const SHARDS: u32 = 16;

/// A shard id, `0..SHARDS`.
pub type ShardId = u32;

/// The shard of `key`, listed under the rule prefix `prefix`.
pub fn shard_of(prefix: &str, key: &str) -> ShardId {
    let rest = key.strip_prefix(prefix).unwrap_or(key);
    let segment_end = rest.find('/').map_or(rest.len(), |i| i + 1);
    // Without '/' in the key, group by its first two bytes so flat buckets still spread.
    let segment_end = if rest.contains('/') {
        segment_end
    } else {
        rest.char_indices().nth(2).map_or(rest.len(), |(i, _)| i)
    };
    let group = &rest[..segment_end];
    (fnv1a(prefix.as_bytes(), fnv1a(group.as_bytes(), FNV_OFFSET)) % u64::from(SHARDS)) as ShardId
}

/// The shard of `key`, listed in range `range` of `ranges` under the rule prefix `prefix`.
///
/// The ranges of one prefix take turns around the shards from a place chosen by the prefix:
/// with as many ranges as shards or more, each range is one shard and the shards are used
/// evenly; with fewer, each range owns `SHARDS / ranges` neighbouring shards and spreads its
/// keys over them by hash.
pub fn shard_of_range(prefix: &str, range: u32, ranges: u32, key: &str) -> ShardId {
    let base = fnv1a(prefix.as_bytes(), FNV_OFFSET);
    let ranges = ranges.max(1);
    let offset = if ranges >= SHARDS {
        u64::from(range)
    } else {
        let width = u64::from(SHARDS / ranges);
        u64::from(range) * width + fnv1a(key.as_bytes(), FNV_OFFSET) % width
    };
    (base.wrapping_add(offset) % u64::from(SHARDS)) as ShardId
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a: stable across processes and versions, unlike `std`'s hasher.
fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_under_one_segment_share_a_shard() {
        assert_eq!(shard_of("", "photos/a.jpg"), shard_of("", "photos/b/c.jpg"));
        assert_eq!(shard_of("2024/", "2024/x/1"), shard_of("2024/", "2024/x/2"));
    }

    #[test]
    fn the_ranges_of_a_prefix_use_every_shard_evenly_whatever_the_keys() {
        for (ranges, shards_used) in [
            (1u32, 16usize),
            (2, 16),
            (4, 16),
            (5, 15),
            (16, 16),
            (40, 16),
        ] {
            let mut per_shard = [0u32; SHARDS as usize];
            for range in 0..ranges {
                // Keys that all share their first characters, as in a flat bucket.
                for i in 0..1600 {
                    let key = format!("flat/aaaa{range:03}{i:05}");
                    per_shard[shard_of_range("flat/", range, ranges, &key) as usize] += 1;
                }
            }
            let used: Vec<u32> = per_shard.into_iter().filter(|n| *n > 0).collect();
            assert_eq!(used.len(), shards_used, "{ranges} ranges: {per_shard:?}");
            let (min, max) = (used.iter().min().unwrap(), used.iter().max().unwrap());
            assert!(
                f64::from(*max) / f64::from(*min) <= 1.5,
                "{ranges} ranges: {per_shard:?}"
            );
        }
        // One range's keys stay within that range's shards.
        let a: std::collections::BTreeSet<_> = (0..500)
            .map(|i| shard_of_range("", 1, 4, &format!("k{i}")))
            .collect();
        let b: std::collections::BTreeSet<_> = (0..500)
            .map(|i| shard_of_range("", 2, 4, &format!("k{i}")))
            .collect();
        assert_eq!((a.len(), b.len()), (4, 4));
        assert!(a.is_disjoint(&b));
    }

    #[test]
    fn shards_are_in_range_and_spread() {
        let shards: std::collections::BTreeSet<_> = (0..1000)
            .map(|i| shard_of("", &format!("{i:04}/obj")))
            .collect();
        assert!(shards.iter().all(|s| *s < SHARDS));
        assert!(shards.len() > SHARDS as usize / 2);
    }
}
