//! Multipart layouts: how an object is cut into parts, within S3's limits, and the ETag a
//! multipart object gets.
//!
//! S3 limits: at most 10,000 parts; every part but the last at least 5 MiB; no part over
//! 5 GiB; no object over 5 TiB. A multipart object's ETag is the MD5 of its parts' binary MD5s
//! followed by `-N`, so copying with the *same* part sizes as the source gives the same ETag.

use md5::{Digest, Md5};

use crate::object::ByteRange;

/// Smallest part S3 accepts (except the last one).
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// Largest part, and largest single PUT or CopyObject.
pub const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// Most parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// Largest object.
pub const MAX_OBJECT: u64 = 5 * 1024 * 1024 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;

/// Parts of an object, in order. Ranges are inclusive and cover the object exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Each part's byte range; part `n` (1-based) is `ranges[n - 1]`.
    pub ranges: Vec<ByteRange>,
    /// Whether the sizes were read from the source's own parts (then the copy keeps its ETag).
    pub from_source: bool,
}

impl Layout {
    /// Equal parts of `part_size` (the last one shorter), with the part size grown (to a whole
    /// MiB) when the object would otherwise need more than 10,000 parts.
    pub fn uniform(size: u64, part_size: u64) -> Result<Layout, String> {
        if size > MAX_OBJECT {
            return Err(format!(
                "object of {size} bytes exceeds S3's 5 TiB object size limit"
            ));
        }
        let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        let part = part_size.max(needed).max(1);
        Ok(Layout {
            ranges: ranges(size, part),
            from_source: false,
        })
    }

    /// The layout of a source multipart object of `size` bytes in `count` parts whose first
    /// part is `first` bytes, assuming equal parts but the last (as every common tool writes
    /// them). `None` when the numbers cannot describe such a layout.
    pub fn from_source(size: u64, count: u64, first: u64) -> Option<Layout> {
        if count == 0 || count > MAX_PARTS || first > MAX_PART {
            return None;
        }
        if count == 1 {
            return (first == size).then(|| Layout {
                ranges: ranges(size, size.max(1)),
                from_source: true,
            });
        }
        let before_last = first.checked_mul(count - 1)?;
        if first == 0 || before_last >= size || size - before_last > first {
            return None;
        }
        Some(Layout {
            ranges: ranges(size, first),
            from_source: true,
        })
    }

    /// Number of parts.
    pub fn count(&self) -> usize {
        self.ranges.len()
    }

    /// The size the last part must have for this layout.
    pub fn last_len(&self) -> u64 {
        self.ranges.last().map_or(0, |r| r.last + 1 - r.first)
    }
}

/// Part sizes that common clients use (aws-cli and boto3 8 MiB, rclone 5 and 16 MiB, s3cmd
/// 15 MiB, others 64 and 100 MiB), tried first when a source does not tell its layout.
pub const COMMON_PART_SIZES: [u64; 6] = [5 * MIB, 8 * MIB, 15 * MIB, 16 * MIB, 64 * MIB, 100 * MIB];

/// At most this many candidate layouts are hashed for one object: each one costs an MD5 of
/// every byte.
pub const MAX_CANDIDATES: usize = 8;

/// The part sizes that cut `size` bytes into exactly `count` equal parts (the last one
/// shorter), for a source whose ETag says `count` parts but whose store does not tell their
/// sizes (HEAD ignores `partNumber`): the common clients' sizes first, then whole MiB from
/// the smallest that fits. At most [`MAX_CANDIDATES`].
pub fn candidate_part_sizes(size: u64, count: u64) -> Vec<u64> {
    let fits = |part: u64| {
        part > 0 && part <= MAX_PART && size.div_ceil(part) == count && (count > 1 || part >= size)
    };
    if count == 0 || count > MAX_PARTS || size == 0 {
        return Vec::new();
    }
    let mut found: Vec<u64> = COMMON_PART_SIZES.into_iter().filter(|p| fits(*p)).collect();
    if count == 1 {
        // One part: its size is the object's, whatever the client's part size was.
        return vec![size];
    }
    let smallest = size.div_ceil(count).div_ceil(MIB) * MIB;
    let mut part = smallest;
    while found.len() < MAX_CANDIDATES && fits(part) {
        if !found.contains(&part) {
            found.push(part);
        }
        part += MIB;
    }
    found.truncate(MAX_CANDIDATES);
    found
}

/// The multipart ETag that bytes cut into parts of `part` bytes make, computed as the bytes
/// stream by (one MD5 per part, then the MD5 of those).
#[derive(Clone)]
pub struct PartHasher {
    part: u64,
    filled: u64,
    current: Md5,
    outer: Md5,
    parts: u64,
}

impl PartHasher {
    /// A hasher for parts of `part` bytes (more than 0).
    pub fn new(part: u64) -> PartHasher {
        PartHasher {
            part: part.max(1),
            filled: 0,
            current: Md5::new(),
            outer: Md5::new(),
            parts: 0,
        }
    }

    /// The part size.
    pub fn part_size(&self) -> u64 {
        self.part
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (self.part - self.filled) as usize;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.current.update(now);
            self.filled += now.len() as u64;
            bytes = rest;
            if self.filled == self.part {
                self.close_part();
            }
        }
    }

    fn close_part(&mut self) {
        let digest = std::mem::replace(&mut self.current, Md5::new()).finalize();
        self.outer.update(digest);
        self.parts += 1;
        self.filled = 0;
    }

    /// The ETag (`hex-N`) of everything fed.
    pub fn etag(mut self) -> String {
        if self.filled > 0 || self.parts == 0 {
            self.close_part();
        }
        format!("{}-{}", hex::encode(self.outer.finalize()), self.parts)
    }
}

/// Cuts `size` bytes into ranges of `part` bytes (the last one shorter). A 0-byte object is one
/// empty part, which S3 accepts as the only part.
fn ranges(size: u64, part: u64) -> Vec<ByteRange> {
    if size == 0 {
        return vec![ByteRange { first: 0, last: 0 }];
    }
    (0..size.div_ceil(part))
        .map(|i| ByteRange {
            first: i * part,
            last: ((i + 1) * part).min(size) - 1,
        })
        .collect()
}

/// The number of parts a multipart ETag (`hex-N`) says the object has; `None` for any other
/// ETag.
pub fn etag_parts(etag: &str) -> Option<u64> {
    let (hex, count) = etag.rsplit_once('-')?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    count.parse().ok().filter(|n| *n >= 1)
}

/// The ETag S3 gives a multipart object with these part ETags, when each is a plain MD5.
pub fn multipart_etag<'a>(parts: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut outer = Md5::new();
    let mut n = 0;
    for etag in parts {
        let mut digest = [0u8; 16];
        hex::decode_to_slice(etag, &mut digest).ok()?;
        outer.update(digest);
        n += 1;
    }
    (n > 0).then(|| format!("{}-{n}", hex::encode(outer.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn candidates_cut_the_object_into_the_etags_part_count() {
        // 6 parts of 6 MiB, the last one shorter: 6 MiB is the only whole MiB that fits.
        let size = 5 * 6 * MIB + 1234;
        assert_eq!(candidate_part_sizes(size, 6), vec![6 * MIB]);
        // 5 + 5 MiB + 4 KiB in 3 parts: 5 MiB (common) first, then 4 MiB.
        let size = 10 * MIB + 4096;
        assert_eq!(candidate_part_sizes(size, 3), vec![5 * MIB, 4 * MIB]);
        // An 8 MiB upload of 100 MiB: 13 parts; 8 MiB first.
        assert_eq!(candidate_part_sizes(100 * MIB, 13)[0], 8 * MIB);
        // Two parts of a large object: many sizes fit; capped.
        assert_eq!(candidate_part_sizes(1024 * MIB, 2).len(), MAX_CANDIDATES);
        assert_eq!(candidate_part_sizes(7, 1), vec![7]);
        assert!(candidate_part_sizes(0, 3).is_empty());
        // No whole MiB cuts 3 MiB + 1 byte into 7 parts.
        assert!(candidate_part_sizes(3 * MIB + 1, 7).is_empty());
    }

    #[test]
    fn part_hasher_gives_the_etag_of_the_parts_however_the_bytes_arrive() {
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let part = 30_000;
        let digests: Vec<String> = bytes
            .chunks(part)
            .map(|c| hex::encode(Md5::digest(c)))
            .collect();
        let want = multipart_etag(digests.iter().map(String::as_str)).unwrap();
        for chunk in [1, 999, 30_000, 45_000, 100_000] {
            let mut h = PartHasher::new(part as u64);
            for c in bytes.chunks(chunk) {
                h.update(c);
            }
            assert_eq!(h.etag(), want, "chunks of {chunk}");
        }
        // Exactly two whole parts: no empty third part.
        let mut h = PartHasher::new(50_000);
        h.update(&bytes);
        assert!(h.etag().ends_with("-2"));
    }

    proptest! {
        #[test]
        fn every_candidate_gives_the_part_count(size in 1u64..(2u64 << 30), count in 1u64..200) {
            for part in candidate_part_sizes(size, count) {
                prop_assert_eq!(Layout::uniform(size, part).unwrap().count() as u64, count);
            }
        }
    }

    fn covers_exactly(layout: &Layout, size: u64) {
        let mut next = 0;
        for r in &layout.ranges {
            assert_eq!(r.first, next);
            assert!(r.last >= r.first || size == 0);
            next = r.last + 1;
        }
        assert_eq!(next, size.max(1));
    }

    #[test]
    fn uniform_layout_respects_threshold_edges() {
        let part = 5 * MIB;
        assert_eq!(Layout::uniform(part - 1, part).unwrap().count(), 1);
        assert_eq!(Layout::uniform(part, part).unwrap().count(), 1);
        let plus_one = Layout::uniform(part + 1, part).unwrap();
        assert_eq!(plus_one.count(), 2);
        assert_eq!(plus_one.last_len(), 1);
    }

    #[test]
    fn part_size_grows_to_stay_within_10000_parts() {
        let size = 1024 * 1024 * MIB; // 1 TiB at a 5 MiB part size would need 209,716 parts
        let layout = Layout::uniform(size, 5 * MIB).unwrap();
        assert!(layout.count() as u64 <= MAX_PARTS);
        let part = layout.ranges[0].last + 1;
        assert_eq!(part % MIB, 0, "grown to a whole MiB");
        assert_eq!(part, 105 * MIB);
        assert!(Layout::uniform(MAX_OBJECT + 1, 5 * MIB).is_err());
        let largest = Layout::uniform(MAX_OBJECT, 5 * MIB).unwrap();
        assert!(largest.count() as u64 <= MAX_PARTS);
        assert!(largest.ranges[0].last < MAX_PART);
    }

    #[test]
    fn source_layouts_are_checked_for_consistency() {
        // six 6 MiB parts and a 1 MiB tail
        let size = 6 * 6 * MIB + MIB;
        let layout = Layout::from_source(size, 7, 6 * MIB).unwrap();
        assert_eq!(layout.count(), 7);
        assert_eq!(layout.last_len(), MIB);
        assert!(layout.from_source);
        // too few parts for the size, or a tail larger than the first part
        assert!(Layout::from_source(size, 6, 6 * MIB).is_none());
        assert!(Layout::from_source(size, 8, 6 * MIB).is_none());
        assert_eq!(Layout::from_source(7, 1, 7).unwrap().count(), 1);
        assert!(Layout::from_source(7, 1, 6).is_none());
        assert!(Layout::from_source(7, 0, 7).is_none());
    }

    #[test]
    fn multipart_etags_are_parsed_and_computed() {
        assert_eq!(etag_parts("9b2cf535f27731c974343645a3985328-7"), Some(7));
        assert_eq!(etag_parts("9b2cf535f27731c974343645a3985328"), None);
        assert_eq!(etag_parts("abc-3"), None);
        // md5("") twice, as binary, hashed again
        let empty = "d41d8cd98f00b204e9800998ecf8427e";
        let mut outer = Md5::new();
        outer.update(hex::decode(empty).unwrap());
        outer.update(hex::decode(empty).unwrap());
        let expected = format!("{}-2", hex::encode(outer.finalize()));
        assert_eq!(multipart_etag([empty, empty]), Some(expected));
        assert_eq!(multipart_etag(["not-md5"]), None);
        assert_eq!(multipart_etag([]), None);
    }

    proptest! {
        #[test]
        fn uniform_layouts_cover_the_object_within_limits(
            size in 0u64..(MAX_OBJECT + 1),
            part in MIN_PART..(MAX_PART + 1),
        ) {
            let layout = Layout::uniform(size, part).unwrap();
            covers_exactly(&layout, size);
            prop_assert!(layout.count() as u64 <= MAX_PARTS);
            for r in &layout.ranges[..layout.count() - 1] {
                let len = r.last + 1 - r.first;
                prop_assert!((MIN_PART..=MAX_PART).contains(&len));
            }
        }

        #[test]
        fn a_uniform_source_layout_is_recovered(
            count in 1u64..200,
            first in MIN_PART..(64 * MIB),
            tail in 1u64..(64 * MIB),
        ) {
            let tail = tail.min(first);
            let size = first * (count - 1) + if count == 1 { first } else { tail };
            let layout = Layout::from_source(size, count, first).unwrap();
            prop_assert_eq!(layout.count() as u64, count);
            covers_exactly(&layout, size);
        }
    }
}
