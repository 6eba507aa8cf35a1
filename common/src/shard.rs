//! Which queue shard a key belongs to.
//!
//! S3 scales and throttles by key prefix, so keys that share a prefix share a shard: the shard
//! is chosen from the rule prefix plus the key's first path segment after it. The number of
//! shards per rule is fixed, which keeps queue keys and metric labels bounded.

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
    fn shards_are_in_range_and_spread() {
        let shards: std::collections::BTreeSet<_> = (0..1000)
            .map(|i| shard_of("", &format!("{i:04}/obj")))
            .collect();
        assert!(shards.iter().all(|s| *s < SHARDS));
        assert!(shards.len() > SHARDS as usize / 2);
    }
}
