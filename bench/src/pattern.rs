//! Reproducible pseudo-random object contents.
//!
//! Stream `seed` is a 1 MiB block of splitmix64 words that repeats, with the first 8 bytes of
//! every 4 KiB page XORed with a mix of that page's index. No server can deduplicate or
//! compress it away (Garage deduplicates 1 MiB blocks), any `(offset, len)` piece of a stream
//! can be produced on its own, and each byte costs a fraction of a nanosecond.

const BLOCK: u64 = 1 << 20;
const PAGE: u64 = 4096;

fn mix(x: u64) -> u64 {
    // splitmix64
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `out` with the bytes of stream `seed` from byte `offset` on.
pub fn fill(seed: u64, offset: u64, out: &mut [u8]) {
    let key = seed.wrapping_mul(0x1000_0000_01B3);
    let end = offset + out.len() as u64;
    let mut pos = offset;
    while pos < end {
        let word = mix(key ^ ((pos % BLOCK) / 8)).to_le_bytes();
        let within = (pos % 8) as usize;
        let take = (8 - within).min((end - pos) as usize);
        let at = (pos - offset) as usize;
        out[at..at + take].copy_from_slice(&word[within..within + take]);
        pos += take as u64;
    }
    let mut page = offset / PAGE;
    while page * PAGE < end {
        let stamp = mix(page ^ seed).to_le_bytes();
        for (i, b) in stamp.iter().enumerate() {
            let abs = page * PAGE + i as u64;
            if (offset..end).contains(&abs) {
                out[(abs - offset) as usize] ^= b;
            }
        }
        page += 1;
    }
}

/// `len` bytes of stream `seed` from byte `offset` on.
pub fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    fill(seed, offset, &mut out);
    out
}

/// The stream seed of an object key, so a dataset's contents follow from its keys alone.
pub fn seed_of(key: &str) -> u64 {
    key.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_gives_the_same_bytes() {
        let whole = pattern(7, 0, 3 * BLOCK as usize + 100);
        for (offset, len) in [
            (0, 1),
            (3, 13),
            (4095, 10),
            (BLOCK - 5, 11),
            (2 * BLOCK + 1, 9000),
        ] {
            let piece = pattern(7, offset, len);
            assert_eq!(piece, whole[offset as usize..offset as usize + len]);
        }
    }

    #[test]
    fn blocks_and_streams_differ() {
        let a = pattern(1, 0, 2 * BLOCK as usize);
        assert_ne!(a[..BLOCK as usize], a[BLOCK as usize..]);
        assert_ne!(pattern(1, 0, 4096), pattern(2, 0, 4096));
        assert_ne!(seed_of("a/1"), seed_of("a/2"));
    }
}
