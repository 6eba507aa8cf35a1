//! The data model the queue's scripts expect (strings, hashes, sets, sorted sets, lists, with
//! expiry), kept in two redb tables, and the commands that act on it.
//!
//! Every key has a row in `meta` (its kind, expiry, element count and a numeric id); its
//! elements are rows of `data` under that id, so a key's elements are one contiguous range:
//!
//! ```text
//! string   id                        -> value
//! hash     id ++ field               -> value
//! set      id ++ member              -> ""
//! zset     id ++ 0x00 ++ member      -> score (f64, big endian)
//!          id ++ 0x01 ++ score* ++ member -> ""      (* ordered bytes of the f64)
//! list     id ++ seq*                -> element      (* i64 with the sign bit flipped)
//! ```
//!
//! An empty collection is deleted, as in Redis. An expired key is deleted when it is next
//! touched, and skipped by `SCAN`.

use std::ops::Bound;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, Table, TableDefinition};
use redis::Value;

mod command;
mod hashes;
mod keys;
mod lists;
mod sets;
mod strings;
mod zsets;

use command::Command;

pub(super) const META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("meta");
pub(super) const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("data");

/// A command that cannot be carried out: its Redis error code and detail.
#[derive(Debug)]
pub(super) struct CmdError {
    pub(super) code: String,
    pub(super) detail: String,
}

impl CmdError {
    pub(super) fn new(code: &str, detail: impl Into<String>) -> CmdError {
        CmdError {
            code: code.to_string(),
            detail: detail.into(),
        }
    }

    fn err(detail: impl Into<String>) -> CmdError {
        CmdError::new("ERR", detail)
    }

    fn wrong_type() -> CmdError {
        CmdError::new(
            "WRONGTYPE",
            "Operation against a key holding the wrong kind of value",
        )
    }
}

impl From<redb::StorageError> for CmdError {
    fn from(e: redb::StorageError) -> CmdError {
        CmdError::new("STORAGE", e.to_string())
    }
}

pub(super) type Reply = Result<Value, CmdError>;

/// A sub key and its value.
type Row = (Vec<u8>, Vec<u8>);

/// `Meta::head` of a hash kept packed: all its fields in one value under its id, as Redis
/// keeps a small hash in one listpack. The ledger's buckets, iteration records and flow
/// state stay packed; a hash that grows past [`PACKED_MAX_FIELDS`] fields, or gets a field
/// or value over [`PACKED_MAX_BYTES`], is unpacked into one row per field.
const PACKED: i64 = 1;
const PACKED_MAX_FIELDS: usize = 128;
pub(super) const PACKED_MAX_BYTES: usize = 128;

fn is_packed(m: &Meta) -> bool {
    m.kind == Kind::Hash && m.head == PACKED
}

/// Fields in order, each `len(u16) field len(u16) value`.
fn pack<'a>(rows: impl IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let size = rows
        .clone()
        .into_iter()
        .map(|(f, v)| 4 + f.len() + v.len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for (f, v) in rows {
        for part in [f, v] {
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// A packed blob's fields and values, in order, borrowed from it (one allocation, not two
/// per field: a ledger bucket or an iteration record is read on every ack); `None` for a
/// torn blob.
fn packed_rows(mut blob: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut rows = Vec::new();
    let take = |blob: &mut &'_ [u8]| -> Option<usize> {
        let (len, rest) = blob.split_first_chunk::<2>()?;
        let len = u16::from_be_bytes(*len) as usize;
        *blob = rest;
        (len <= blob.len()).then_some(len)
    };
    while !blob.is_empty() {
        let n = take(&mut blob)?;
        let (f, rest) = blob.split_at(n);
        blob = rest;
        let n = take(&mut blob)?;
        let (v, rest) = blob.split_at(n);
        blob = rest;
        rows.push((f, v));
    }
    Some(rows)
}

fn unpack(blob: &[u8]) -> Option<Vec<Row>> {
    Some(
        packed_rows(blob)?
            .into_iter()
            .map(|(f, v)| (f.to_vec(), v.to_vec()))
            .collect(),
    )
}

fn torn() -> CmdError {
    CmdError::new("CORRUPT", "a packed hash does not decode")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Str = 0,
    Hash = 1,
    Set = 2,
    ZSet = 3,
    List = 4,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Str,
            1 => Kind::Hash,
            2 => Kind::Set,
            3 => Kind::ZSet,
            4 => Kind::List,
            _ => return None,
        })
    }
}

/// One key's row in `meta`.
#[derive(Clone, Copy, Debug)]
struct Meta {
    kind: Kind,
    /// Unix ms at which the key expires; 0 for never.
    expire_ms: u64,
    id: u64,
    /// Elements (fields, members); unused for strings.
    count: u64,
    /// A list's elements are the sequence numbers `head..tail`.
    head: i64,
    tail: i64,
}

const META_LEN: usize = 41;

impl Meta {
    fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0] = self.kind as u8;
        b[1..9].copy_from_slice(&self.expire_ms.to_be_bytes());
        b[9..17].copy_from_slice(&self.id.to_be_bytes());
        b[17..25].copy_from_slice(&self.count.to_be_bytes());
        b[25..33].copy_from_slice(&self.head.to_be_bytes());
        b[33..41].copy_from_slice(&self.tail.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Meta> {
        if b.len() != META_LEN {
            return None;
        }
        let u = |r: std::ops::Range<usize>| u64::from_be_bytes(b[r].try_into().unwrap_or([0; 8]));
        Some(Meta {
            kind: Kind::from_byte(b[0])?,
            expire_ms: u(1..9),
            id: u(9..17),
            count: u(17..25),
            head: u(25..33) as i64,
            tail: u(33..41) as i64,
        })
    }
}

fn sub_key(id: u64, sub: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + sub.len());
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(sub);
    k
}

fn tagged(id: u64, tag: u8, sub: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + sub.len());
    k.extend_from_slice(&id.to_be_bytes());
    k.push(tag);
    k.extend_from_slice(sub);
    k
}

fn seq_bytes(seq: i64) -> [u8; 8] {
    ((seq as u64) ^ (1 << 63)).to_be_bytes()
}

/// The bytes of `score` that sort as the numbers do.
fn score_bytes(score: f64) -> [u8; 8] {
    let bits = score.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

fn score_reply(score: f64) -> Value {
    Value::BulkString(format_score(score).into_bytes())
}

fn format_score(score: f64) -> String {
    if score.is_infinite() {
        if score > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{score}")
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn text(a: &[u8]) -> String {
    String::from_utf8_lossy(a).into_owned()
}

fn int(a: &[u8]) -> Result<i64, CmdError> {
    std::str::from_utf8(a)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| CmdError::err("value is not an integer or out of range"))
}

fn float(a: &[u8]) -> Result<f64, CmdError> {
    let s = std::str::from_utf8(a).map_err(|_| CmdError::err("value is not a valid float"))?;
    match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => Ok(f64::INFINITY),
        "-inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .ok()
            .filter(|f| !f.is_nan())
            .ok_or_else(|| CmdError::err("value is not a valid float")),
    }
}

/// A `ZRANGEBYSCORE` bound: `-inf`, `+inf`, `N` or `(N` (exclusive).
fn score_bound(a: &[u8]) -> Result<(f64, bool), CmdError> {
    match a.strip_prefix(b"(") {
        Some(rest) => Ok((float(rest)?, true)),
        None => Ok((float(a)?, false)),
    }
}

fn bulk(v: impl Into<Vec<u8>>) -> Value {
    Value::BulkString(v.into())
}

fn int_reply(n: impl TryInto<i64>) -> Value {
    Value::Int(n.try_into().unwrap_or(i64::MAX))
}

/// Redis's glob for `MATCH`: `*`, `?` and `\` escapes; anything else matches itself.
pub(super) fn glob(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((b'\\', rest)) if !rest.is_empty() => {
            s.first() == Some(&rest[0]) && glob(&rest[1..], &s[1..])
        }
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

/// One write transaction's view of the data, for any number of commands.
pub(super) struct Tx<'t> {
    meta: Table<'t, &'static [u8], &'static [u8]>,
    data: Table<'t, &'static [u8], &'static [u8]>,
    next_id: &'t mut u64,
    /// Whether anything was written (else the transaction is dropped, not committed).
    pub(super) dirty: bool,
    now: u64,
}

impl<'t> Tx<'t> {
    pub(super) fn new(
        meta: Table<'t, &'static [u8], &'static [u8]>,
        data: Table<'t, &'static [u8], &'static [u8]>,
        next_id: &'t mut u64,
    ) -> Tx<'t> {
        Tx {
            meta,
            data,
            next_id,
            dirty: false,
            now: now_ms(),
        }
    }

    /// Runs one command.
    pub(super) fn exec(&mut self, args: &[Vec<u8>]) -> Reply {
        match Command::parse(args)? {
            Command::Ping => Ok(Value::SimpleString("PONG".into())),
            Command::Time => Tx::time(),
            Command::Get(key) => self.get(key),
            Command::Set(key, value, opts) => self.set(key, value, opts),
            Command::IncrBy(key, by) => self.incr_by(key, by),
            Command::Del(keys) => self.del(keys),
            Command::Exists(keys) => self.exists(keys),
            Command::Expire(key, ms) => self.expire(key, ms),
            Command::Ttl(key, in_seconds) => self.ttl(key, in_seconds),
            Command::HSet(key, pairs) => self.hset(key, pairs),
            Command::HGet(key, field) => self.hget(key, field),
            Command::HExists(key, field) => self.hexists(key, field),
            Command::HMGet(key, fields) => self.hmget(key, fields),
            Command::HDel(key, fields) => self.hdel(key, fields),
            Command::HIncrBy(key, field, by) => self.hincr_by(key, field, by),
            Command::HLen(key) => self.hlen(key),
            Command::HGetAll(key, part) => self.hgetall(key, part),
            Command::SAdd(key, members) => self.sadd_or_srem(key, members, true),
            Command::SRem(key, members) => self.sadd_or_srem(key, members, false),
            Command::SMembers(key) => self.smembers(key),
            Command::SCard(key) => self.scard(key),
            Command::SIsMember(key, member) => self.sismember(key, member),
            Command::ZAdd(key, args) => self.zadd(key, args),
            Command::ZRem(key, members) => self.zrem(key, members),
            Command::ZScore(key, member) => self.zscore(key, member),
            Command::ZCard(key) => self.zcard(key),
            Command::ZRange(key, start, stop, opts) => self.zrange(key, start, stop, opts),
            Command::ZRangeByScore(key, min, max, opts) => self.zrangebyscore(key, min, max, opts),
            Command::Push(key, end, values) => self.push(key, end, values),
            Command::Pop(key, end) => self.pop(key, end),
            Command::LLen(key) => self.llen(key),
            Command::LIndex(key, i) => self.lindex(key, i),
            Command::LRange(key, start, stop) => self.lrange(key, start, stop),
            Command::LTrim(key, start, stop) => self.ltrim(key, start, stop),
        }
    }

    fn get_meta(&mut self, key: &[u8]) -> Result<Option<Meta>, CmdError> {
        let Some(raw) = self.meta.get(key)? else {
            return Ok(None);
        };
        let meta = Meta::decode(raw.value()).ok_or_else(|| {
            CmdError::new("CORRUPT", format!("key {} has a bad header", text(key)))
        })?;
        drop(raw);
        if meta.expire_ms != 0 && meta.expire_ms <= self.now {
            self.remove(key, &meta)?;
            return Ok(None);
        }
        Ok(Some(meta))
    }

    /// The key's header if it holds `kind`; `None` if it does not exist.
    fn typed(&mut self, key: &[u8], kind: Kind) -> Result<Option<Meta>, CmdError> {
        match self.get_meta(key)? {
            Some(m) if m.kind != kind => Err(CmdError::wrong_type()),
            other => Ok(other),
        }
    }

    /// The key's header, created empty if missing.
    fn typed_or_new(&mut self, key: &[u8], kind: Kind) -> Result<Meta, CmdError> {
        if let Some(m) = self.typed(key, kind)? {
            return Ok(m);
        }
        let id = *self.next_id;
        *self.next_id += 1;
        Ok(Meta {
            kind,
            expire_ms: 0,
            id,
            count: 0,
            head: 0,
            tail: 0,
        })
    }

    /// Stores a collection's header, or deletes the key when it became empty.
    fn put_meta(&mut self, key: &[u8], meta: &Meta) -> Result<(), CmdError> {
        self.dirty = true;
        if meta.kind != Kind::Str && meta.count == 0 {
            self.meta.remove(key)?;
        } else {
            self.meta.insert(key, &meta.encode()[..])?;
        }
        Ok(())
    }

    fn remove(&mut self, key: &[u8], meta: &Meta) -> Result<(), CmdError> {
        self.dirty = true;
        self.meta.remove(key)?;
        let from = meta.id.to_be_bytes();
        let to = (meta.id + 1).to_be_bytes();
        self.data
            .retain_in::<&[u8], _>(&from[..]..&to[..], |_, _| false)?;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<bool, CmdError> {
        match self.get_meta(key)? {
            Some(m) => {
                self.remove(key, &m)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn data_get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, CmdError> {
        Ok(self.data.get(k)?.map(|v| v.value().to_vec()))
    }

    fn data_put(&mut self, k: &[u8], v: &[u8]) -> Result<bool, CmdError> {
        self.dirty = true;
        Ok(self.data.insert(k, v)?.is_none())
    }

    fn data_del(&mut self, k: &[u8]) -> Result<Option<Vec<u8>>, CmdError> {
        self.dirty = true;
        Ok(self.data.remove(k)?.map(|v| v.value().to_vec()))
    }

    /// The (sub key, value) rows of `prefix`, from `after` (exclusive), at most `limit`.
    fn rows(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Row>, CmdError> {
        let start = match after {
            Some(a) => Bound::Excluded([prefix, a].concat()),
            None => Bound::Included(prefix.to_vec()),
        };
        let mut out = Vec::new();
        let start = start.as_ref().map(Vec::as_slice);
        for row in self.data.range::<&[u8]>((start, Bound::Unbounded))? {
            let (k, v) = row?;
            let Some(sub) = k.value().strip_prefix(prefix) else {
                break;
            };
            out.push((sub.to_vec(), v.value().to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}

/// Redis's start/stop indexes (negative from the end) over `len` elements, as an inclusive
/// range of positions, or `None` when empty.
fn index_range(len: u64, start: i64, stop: i64) -> Option<(u64, u64)> {
    let len = len as i64;
    let norm = |i: i64| if i < 0 { len + i } else { i };
    let (start, stop) = (norm(start).max(0), norm(stop).min(len - 1));
    (start <= stop && start < len).then_some((start as u64, stop as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_sort_as_bytes_as_they_do_as_numbers() {
        let scores = [
            f64::NEG_INFINITY,
            -5.5,
            -1.0,
            0.0,
            1.0,
            2.5,
            1e13,
            f64::INFINITY,
        ];
        for w in scores.windows(2) {
            assert!(
                score_bytes(w[0]) < score_bytes(w[1]),
                "{} vs {}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn packed_hashes_round_trip_and_refuse_torn_blobs() {
        let rows: Vec<Row> = vec![
            (b"a".to_vec(), b"".to_vec()),
            (b"field".to_vec(), vec![0, 1, 2, 255]),
            (vec![], b"empty field".to_vec()),
        ];
        let borrowed = || rows.iter().map(|(f, v)| (f.as_slice(), v.as_slice()));
        assert_eq!(unpack(&pack(borrowed())), Some(rows.clone()));
        assert_eq!(unpack(&[]), Some(vec![]));
        let blob = pack(borrowed());
        assert_eq!(unpack(&blob[..blob.len() - 1]), None);
    }

    #[test]
    fn list_sequence_numbers_sort_across_zero() {
        assert!(seq_bytes(-2) < seq_bytes(-1));
        assert!(seq_bytes(-1) < seq_bytes(0));
        assert!(seq_bytes(0) < seq_bytes(7));
    }

    #[test]
    fn index_ranges_follow_redis() {
        assert_eq!(index_range(5, 0, -1), Some((0, 4)));
        assert_eq!(index_range(5, -2, -1), Some((3, 4)));
        assert_eq!(index_range(5, 3, 100), Some((3, 4)));
        assert_eq!(index_range(5, 4, 2), None);
        assert_eq!(index_range(0, 0, -1), None);
        assert_eq!(index_range(5, 7, 9), None);
    }

    #[test]
    fn glob_matches_like_redis_match() {
        assert!(glob(b"ferry:{r}:*", b"ferry:{r}:q:0"));
        assert!(!glob(b"ferry:{r}:*", b"ferry:{rr}:q:0"));
        assert!(glob(b"a?c", b"abc"));
        assert!(glob(b"a\\*", b"a*"));
        assert!(!glob(b"a\\*", b"ab"));
    }
}
