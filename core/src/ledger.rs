//! The ledger: per rule, what ferry itself wrote to the destination.
//!
//! An entry says: for this key, ferry copied the source version with this ETag, size and
//! Last-Modified, and the destination then had this ETag. It makes a destination object
//! *managed* (still what ferry wrote) or *unmanaged*, and makes change detection exact,
//! multipart ETags included, from listings alone.
//!
//! Entries are stored compactly, because a rule may have billions of objects. They are spread
//! over Redis hashes ("buckets") by the key's 128-bit hash, each bucket small enough for
//! Redis's compact listpack encoding (at most 128 fields by default); the value is binary,
//! with MD5-style ETags as 16 raw bytes.
//!
//! The number of buckets follows the rule's size, by linear hashing: the ledger starts with
//! one bucket, and every entry added past [`LOAD`] per bucket splits one bucket in two, in
//! order, so a bucket holds [`LOAD`] to twice as many entries on average whatever the
//! rule's size, and no write ever moves more than one bucket. The Lua scripts choose the
//! bucket (`lib.lua`, `ledger_where`), under the same lease that fences the write; this
//! module gives them the key's hash. A ledger written before the buckets could grow keeps
//! its fixed [`LEGACY_BUCKETS`].

use xxhash_rust::xxh3::xxh3_128;

/// Entries per bucket, on average, past which the ledger splits a bucket (as `lib.lua`'s
/// `LEDGER_LOAD`). Buckets not yet split in a round hold up to twice as many.
pub const LOAD: u32 = 40;

/// Buckets of a ledger written before the number of buckets followed the rule's size.
pub const LEGACY_BUCKETS: u32 = 65_536;

/// The key's 128-bit hash, as the ledger scripts take it (16 bytes, little-endian).
pub fn hash(key: &str) -> [u8; 16] {
    xxh3_128(key.as_bytes()).to_le_bytes()
}

/// What ferry wrote for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// ETag of the source version copied.
    pub source_etag: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its Last-Modified, ms since the Unix epoch.
    pub source_last_modified_ms: i64,
    /// The destination's ETag right after the copy.
    pub destination_etag: String,
}

/// The key's 12-byte slot, which names it in write intents and task payloads: a number
/// below [`LEGACY_BUCKETS`] and 8 bytes, both from [`hash`] (and a legacy ledger's bucket and
/// field).
pub fn slot(key: &str) -> (u32, [u8; 8]) {
    let h = xxh3_128(key.as_bytes());
    let bucket = ((h >> 64) as u64 % u64::from(LEGACY_BUCKETS)) as u32;
    (bucket, (h as u64).to_le_bytes())
}

impl LedgerEntry {
    /// Compact binary form (about 40 bytes for MD5 ETags).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        out.push(1); // format version
        encode_etag(&self.source_etag, &mut out);
        encode_etag(&self.destination_etag, &mut out);
        encode_varint(self.size, &mut out);
        encode_varint(zigzag(self.source_last_modified_ms), &mut out);
        out
    }

    /// Decodes [`LedgerEntry::encode`]'s output; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<LedgerEntry> {
        let (&version, mut rest) = bytes.split_first()?;
        if version != 1 {
            return None;
        }
        let source_etag = decode_etag(&mut rest)?;
        let destination_etag = decode_etag(&mut rest)?;
        let size = decode_varint(&mut rest)?;
        let source_last_modified_ms = unzigzag(decode_varint(&mut rest)?);
        rest.is_empty().then_some(LedgerEntry {
            source_etag,
            size,
            source_last_modified_ms,
            destination_etag,
        })
    }
}

/// What ferry wrote for one key of a rule with `versions = "all"`: per source version (or
/// delete marker) copied, in the order copied, the destination version that holds its copy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionsEntry {
    /// (source version id, destination version id), oldest first.
    pub copied: Vec<(String, String)>,
}

/// The format byte of a [`VersionsEntry`] (a [`LedgerEntry`] has 1).
const VERSIONS_FORMAT: u8 = 2;

impl VersionsEntry {
    /// Compact binary form: the format byte, then each pair as two length-prefixed strings.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.copied.len() * 70);
        out.push(VERSIONS_FORMAT);
        for (source, destination) in &self.copied {
            for id in [source, destination] {
                encode_varint(id.len() as u64, &mut out);
                out.extend_from_slice(id.as_bytes());
            }
        }
        out
    }

    /// Decodes [`VersionsEntry::encode`]'s output; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<VersionsEntry> {
        let (&format, mut rest) = bytes.split_first()?;
        if format != VERSIONS_FORMAT {
            return None;
        }
        let mut copied = Vec::new();
        while !rest.is_empty() {
            let mut id = || -> Option<String> {
                let len = usize::try_from(decode_varint(&mut rest)?).ok()?;
                if rest.len() < len {
                    return None;
                }
                let (text, tail) = rest.split_at(len);
                rest = tail;
                String::from_utf8(text.to_vec()).ok()
            };
            let source = id()?;
            let destination = id()?;
            copied.push((source, destination));
        }
        Some(VersionsEntry { copied })
    }

    /// Whether the source version `id` has its copy recorded.
    pub fn has(&self, id: &str) -> bool {
        self.copied.iter().any(|(source, _)| source == id)
    }
}

// ETag forms: 0 = raw string (len-prefixed), 1 = 32 hex digits, 2 = 32 hex + "-N" (multipart).
fn encode_etag(etag: &str, out: &mut Vec<u8>) {
    let (hex, parts) = match etag.split_once('-') {
        Some((h, n)) => (h, n.parse::<u64>().ok()),
        None => (etag, None),
    };
    let md5 = (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| {
            let mut raw = [0u8; 16];
            for (i, byte) in raw.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
            }
            Some(raw)
        })
        .flatten();
    let lowercase = hex.bytes().all(|b| !b.is_ascii_uppercase());
    match (md5, parts, etag.contains('-')) {
        (Some(raw), None, false) if lowercase => {
            out.push(1);
            out.extend_from_slice(&raw);
        }
        (Some(raw), Some(n), true) if lowercase && etag == format!("{hex}-{n}") => {
            out.push(2);
            out.extend_from_slice(&raw);
            encode_varint(n, out);
        }
        _ => {
            out.push(0);
            encode_varint(etag.len() as u64, out);
            out.extend_from_slice(etag.as_bytes());
        }
    }
}

fn decode_etag(rest: &mut &[u8]) -> Option<String> {
    let (&form, tail) = rest.split_first()?;
    *rest = tail;
    let take = |rest: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head.to_vec())
    };
    let hex = |raw: &[u8]| raw.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match form {
        0 => {
            let len = decode_varint(rest)? as usize;
            String::from_utf8(take(rest, len)?).ok()
        }
        1 => Some(hex(&take(rest, 16)?)),
        2 => {
            let raw = take(rest, 16)?;
            let n = decode_varint(rest)?;
            Some(format!("{}-{n}", hex(&raw)))
        }
        _ => None,
    }
}

fn encode_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn decode_varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &b) in rest.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Some(value);
        }
    }
    None
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(source: &str, destination: &str) -> LedgerEntry {
        LedgerEntry {
            source_etag: source.into(),
            size: 123_456_789,
            source_last_modified_ms: 1_763_700_000_123,
            destination_etag: destination.into(),
        }
    }

    #[test]
    fn a_versions_entry_round_trips_and_is_not_read_as_an_object_entry() {
        let e = VersionsEntry {
            copied: vec![
                ("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY".into(), "null".into()),
                ("".into(), "b1f7e2c0-6f3d-4f6e-9a55-0d2b1c7a9e11".into()),
            ],
        };
        let bytes = e.encode();
        assert_eq!(VersionsEntry::decode(&bytes), Some(e.clone()));
        assert_eq!(LedgerEntry::decode(&bytes), None);
        assert!(e.has("3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"));
        assert!(!e.has("null"));
        assert_eq!(VersionsEntry::decode(&bytes[..bytes.len() - 1]), None);
        let object = entry("9e107d9d372bb6826bd81d3542a419d6", "x").encode();
        assert_eq!(VersionsEntry::decode(&object), None);
        assert_eq!(
            VersionsEntry::decode(&VersionsEntry::default().encode()),
            Some(VersionsEntry::default())
        );
    }

    #[test]
    fn md5_etags_pack_into_raw_bytes() {
        let e = entry(
            "9e107d9d372bb6826bd81d3542a419d6",
            "d41d8cd98f00b204e9800998ecf8427e",
        );
        let bytes = e.encode();
        assert!(bytes.len() <= 45, "{} bytes", bytes.len());
        assert_eq!(LedgerEntry::decode(&bytes), Some(e));
    }

    #[test]
    fn multipart_and_odd_etags_round_trip() {
        for (s, d) in [
            (
                "9e107d9d372bb6826bd81d3542a419d6-12",
                "9e107d9d372bb6826bd81d3542a419d6-12",
            ),
            ("9E107D9D372BB6826BD81D3542A419D6", "opaque-etag"),
            ("", "9e107d9d372bb6826bd81d3542a419d6-01"),
        ] {
            let e = entry(s, d);
            assert_eq!(LedgerEntry::decode(&e.encode()), Some(e));
        }
    }

    #[test]
    fn slots_are_stable_and_in_range() {
        let (b, f) = slot("photos/2024/a.jpg");
        assert!(b < LEGACY_BUCKETS);
        // The scripts find a legacy ledger's bucket and field in the hash.
        let h = hash("photos/2024/a.jpg");
        assert_eq!(u32::from(h[8]) + 256 * u32::from(h[9]), b);
        assert_eq!(h[..8], f);
        assert_eq!(slot("photos/2024/a.jpg"), (b, f));
        assert_ne!(slot("photos/2024/b.jpg"), (b, f));
    }

    proptest! {
        #[test]
        fn any_entry_round_trips(s in ".{0,80}", d in "[0-9a-f]{32}(-[1-9][0-9]{0,3})?", size: u64, lm: i64) {
            let e = LedgerEntry { source_etag: s, size, source_last_modified_ms: lm, destination_etag: d };
            prop_assert_eq!(LedgerEntry::decode(&e.encode()), Some(e));
        }
    }
}
