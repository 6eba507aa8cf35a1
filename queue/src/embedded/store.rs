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

    /// A hash's fields, in field order (the packed blob, or the rows), after `after`, at
    /// most `limit`.
    fn hash_rows(
        &self,
        m: &Meta,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Row>, CmdError> {
        if !is_packed(m) {
            return self.rows(&m.id.to_be_bytes(), after, limit);
        }
        Ok(self
            .packed(m)?
            .into_iter()
            .filter(|(f, _)| after.is_none_or(|a| f.as_slice() > a))
            .take(limit)
            .collect())
    }

    fn packed(&self, m: &Meta) -> Result<Vec<Row>, CmdError> {
        let blob = self.data_get(&m.id.to_be_bytes())?.unwrap_or_default();
        unpack(&blob).ok_or_else(torn)
    }

    fn hash_get(&self, m: &Meta, field: &[u8]) -> Result<Option<Vec<u8>>, CmdError> {
        if !is_packed(m) {
            return self.data_get(&sub_key(m.id, field));
        }
        let blob = self.data_get(&m.id.to_be_bytes())?.unwrap_or_default();
        let rows = packed_rows(&blob).ok_or_else(torn)?;
        Ok(rows
            .binary_search_by(|(f, _)| (*f).cmp(field))
            .ok()
            .map(|i| rows[i].1.to_vec()))
    }

    /// Sets fields; returns how many were new. A packed hash that outgrows the packed form
    /// is unpacked into one row per field, for good.
    fn hash_set(&mut self, m: &mut Meta, pairs: &[(&[u8], &[u8])]) -> Result<u64, CmdError> {
        let mut added = 0;
        if is_packed(m) {
            let blob = self.data_get(&m.id.to_be_bytes())?.unwrap_or_default();
            let mut rows = packed_rows(&blob).ok_or_else(torn)?;
            for &(f, v) in pairs {
                match rows.binary_search_by(|(k, _)| (*k).cmp(f)) {
                    Ok(i) => rows[i].1 = v,
                    Err(i) => {
                        rows.insert(i, (f, v));
                        added += 1;
                    }
                }
            }
            m.count = rows.len() as u64;
            let fits = rows.len() <= PACKED_MAX_FIELDS
                && rows
                    .iter()
                    .all(|(f, v)| f.len() <= PACKED_MAX_BYTES && v.len() <= PACKED_MAX_BYTES);
            if fits {
                let packed = pack(rows.iter().copied());
                self.data_put(&m.id.to_be_bytes(), &packed)?;
            } else {
                let rows: Vec<Row> = rows.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect();
                self.data_del(&m.id.to_be_bytes())?;
                for (f, v) in &rows {
                    self.data_put(&sub_key(m.id, f), v)?;
                }
                m.head = 0;
            }
            return Ok(added);
        }
        for (f, v) in pairs {
            if self.data_put(&sub_key(m.id, f), v)? {
                added += 1;
            }
        }
        m.count += added;
        Ok(added)
    }

    /// Deletes fields; returns how many there were.
    fn hash_del(&mut self, m: &mut Meta, fields: &[Vec<u8>]) -> Result<u64, CmdError> {
        let mut removed = 0;
        if is_packed(m) {
            let blob = self.data_get(&m.id.to_be_bytes())?.unwrap_or_default();
            let mut rows = packed_rows(&blob).ok_or_else(torn)?;
            for f in fields {
                if let Ok(i) = rows.binary_search_by(|(k, _)| (*k).cmp(f.as_slice())) {
                    rows.remove(i);
                    removed += 1;
                }
            }
            if removed > 0 {
                if rows.is_empty() {
                    self.data_del(&m.id.to_be_bytes())?;
                } else {
                    let packed = pack(rows.iter().copied());
                    self.data_put(&m.id.to_be_bytes(), &packed)?;
                }
            }
        } else {
            for f in fields {
                if self.data_del(&sub_key(m.id, f))?.is_some() {
                    removed += 1;
                }
            }
        }
        m.count -= removed;
        Ok(removed)
    }

    /// A hash's header, created empty (packed) if missing.
    fn hash_or_new(&mut self, key: &[u8]) -> Result<Meta, CmdError> {
        let mut m = self.typed_or_new(key, Kind::Hash)?;
        if m.count == 0 {
            m.head = PACKED;
        }
        Ok(m)
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

    /// Runs one command.
    pub(super) fn exec(&mut self, args: &[Vec<u8>]) -> Reply {
        let Some((name, a)) = args.split_first() else {
            return Err(CmdError::err("empty command"));
        };
        let name = text(name).to_ascii_uppercase();
        let arity = |n: usize| {
            if a.len() < n {
                Err(CmdError::err(format!(
                    "wrong number of arguments for '{}' command",
                    name.to_lowercase()
                )))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "PING" => Ok(Value::SimpleString("PONG".into())),
            "TIME" => {
                let us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros())
                    .unwrap_or(0);
                Ok(Value::Array(vec![
                    bulk((us / 1_000_000).to_string()),
                    bulk((us % 1_000_000).to_string()),
                ]))
            }
            "GET" => {
                arity(1)?;
                match self.typed(&a[0], Kind::Str)? {
                    Some(m) => Ok(self
                        .data_get(&m.id.to_be_bytes())?
                        .map(bulk)
                        .unwrap_or(Value::Nil)),
                    None => Ok(Value::Nil),
                }
            }
            "SET" => {
                arity(2)?;
                self.set(&a[0], &a[1], &a[2..])
            }
            "INCR" | "INCRBY" => {
                arity(if name == "INCR" { 1 } else { 2 })?;
                let by = if name == "INCR" { 1 } else { int(&a[1])? };
                let m = self.typed_or_new(&a[0], Kind::Str)?;
                let k = m.id.to_be_bytes();
                let old = match self.data_get(&k)? {
                    Some(v) => int(&v)?,
                    None => 0,
                };
                let n = old
                    .checked_add(by)
                    .ok_or_else(|| CmdError::err("increment or decrement would overflow"))?;
                self.data_put(&k, n.to_string().as_bytes())?;
                self.put_meta(&a[0], &m)?;
                Ok(Value::Int(n))
            }
            "DEL" | "UNLINK" => {
                let mut n = 0;
                for k in a {
                    n += i64::from(self.delete(k)?);
                }
                Ok(Value::Int(n))
            }
            "EXISTS" => {
                let mut n = 0;
                for k in a {
                    n += i64::from(self.get_meta(k)?.is_some());
                }
                Ok(Value::Int(n))
            }
            "EXPIRE" | "PEXPIRE" => {
                arity(2)?;
                let n = int(&a[1])?;
                let ms = if name == "EXPIRE" {
                    n.saturating_mul(1000)
                } else {
                    n
                };
                let Some(mut m) = self.get_meta(&a[0])? else {
                    return Ok(Value::Int(0));
                };
                if ms <= 0 {
                    self.remove(&a[0], &m)?;
                    return Ok(Value::Int(1));
                }
                m.expire_ms = self.now + ms as u64;
                self.put_meta(&a[0], &m)?;
                Ok(Value::Int(1))
            }
            "PTTL" | "TTL" => {
                arity(1)?;
                Ok(Value::Int(match self.get_meta(&a[0])? {
                    None => -2,
                    Some(m) if m.expire_ms == 0 => -1,
                    Some(m) => {
                        let ms = m.expire_ms.saturating_sub(self.now) as i64;
                        if name == "TTL" { (ms + 500) / 1000 } else { ms }
                    }
                }))
            }
            "HSET" => {
                arity(3)?;
                if !(a.len() - 1).is_multiple_of(2) {
                    return Err(CmdError::err(
                        "wrong number of arguments for 'hset' command",
                    ));
                }
                let mut m = self.hash_or_new(&a[0])?;
                let pairs: Vec<(&[u8], &[u8])> = a[1..]
                    .chunks(2)
                    .map(|p| (p[0].as_slice(), p[1].as_slice()))
                    .collect();
                let added = self.hash_set(&mut m, &pairs)?;
                self.put_meta(&a[0], &m)?;
                Ok(int_reply(added))
            }
            "HGET" => {
                arity(2)?;
                Ok(match self.typed(&a[0], Kind::Hash)? {
                    Some(m) => self.hash_get(&m, &a[1])?.map(bulk).unwrap_or(Value::Nil),
                    None => Value::Nil,
                })
            }
            "HEXISTS" => {
                arity(2)?;
                Ok(Value::Int(match self.typed(&a[0], Kind::Hash)? {
                    Some(m) => i64::from(self.hash_get(&m, &a[1])?.is_some()),
                    None => 0,
                }))
            }
            "HMGET" => {
                arity(2)?;
                let m = self.typed(&a[0], Kind::Hash)?;
                let mut out = Vec::with_capacity(a.len() - 1);
                match &m {
                    // One read of the blob for every field asked (flow state: 8 at a time).
                    Some(m) if is_packed(m) => {
                        let blob = self.data_get(&m.id.to_be_bytes())?.unwrap_or_default();
                        let rows = packed_rows(&blob).ok_or_else(torn)?;
                        for f in &a[1..] {
                            out.push(
                                rows.binary_search_by(|(k, _)| (*k).cmp(f.as_slice()))
                                    .map_or(Value::Nil, |i| bulk(rows[i].1.to_vec())),
                            );
                        }
                    }
                    _ => {
                        for f in &a[1..] {
                            out.push(match &m {
                                Some(m) => self.hash_get(m, f)?.map(bulk).unwrap_or(Value::Nil),
                                None => Value::Nil,
                            });
                        }
                    }
                }
                Ok(Value::Array(out))
            }
            "HDEL" => {
                arity(2)?;
                let Some(mut m) = self.typed(&a[0], Kind::Hash)? else {
                    return Ok(Value::Int(0));
                };
                let removed = self.hash_del(&mut m, &a[1..])?;
                self.put_meta(&a[0], &m)?;
                Ok(int_reply(removed))
            }
            "HINCRBY" => {
                arity(3)?;
                let by = int(&a[2])?;
                let mut m = self.hash_or_new(&a[0])?;
                let old = match self.hash_get(&m, &a[1])? {
                    Some(v) => {
                        int(&v).map_err(|_| CmdError::err("hash value is not an integer"))?
                    }
                    None => 0,
                };
                let n = old
                    .checked_add(by)
                    .ok_or_else(|| CmdError::err("increment or decrement would overflow"))?;
                let text = n.to_string();
                self.hash_set(&mut m, &[(&a[1], text.as_bytes())])?;
                self.put_meta(&a[0], &m)?;
                Ok(Value::Int(n))
            }
            "HLEN" => {
                arity(1)?;
                Ok(int_reply(
                    self.typed(&a[0], Kind::Hash)?.map_or(0, |m| m.count),
                ))
            }
            "HGETALL" | "HKEYS" | "HVALS" => {
                arity(1)?;
                let Some(m) = self.typed(&a[0], Kind::Hash)? else {
                    return Ok(Value::Array(vec![]));
                };
                let rows = self.hash_rows(&m, None, usize::MAX)?;
                let mut out = Vec::new();
                for (f, v) in rows {
                    match name.as_str() {
                        "HKEYS" => out.push(bulk(f)),
                        "HVALS" => out.push(bulk(v)),
                        _ => out.extend([bulk(f), bulk(v)]),
                    }
                }
                Ok(Value::Array(out))
            }
            "SADD" | "SREM" => {
                arity(2)?;
                let mut m = if name == "SADD" {
                    self.typed_or_new(&a[0], Kind::Set)?
                } else {
                    match self.typed(&a[0], Kind::Set)? {
                        Some(m) => m,
                        None => return Ok(Value::Int(0)),
                    }
                };
                let mut n = 0;
                for member in &a[1..] {
                    let k = sub_key(m.id, member);
                    if name == "SADD" {
                        if self.data_put(&k, b"")? {
                            n += 1;
                        }
                    } else if self.data_del(&k)?.is_some() {
                        n += 1;
                    }
                }
                if name == "SADD" {
                    m.count += n;
                } else {
                    m.count -= n;
                }
                self.put_meta(&a[0], &m)?;
                Ok(int_reply(n))
            }
            "SMEMBERS" => {
                arity(1)?;
                let Some(m) = self.typed(&a[0], Kind::Set)? else {
                    return Ok(Value::Array(vec![]));
                };
                let rows = self.rows(&m.id.to_be_bytes(), None, usize::MAX)?;
                Ok(Value::Array(
                    rows.into_iter().map(|(k, _)| bulk(k)).collect(),
                ))
            }
            "SCARD" => {
                arity(1)?;
                Ok(int_reply(
                    self.typed(&a[0], Kind::Set)?.map_or(0, |m| m.count),
                ))
            }
            "SISMEMBER" => {
                arity(2)?;
                Ok(Value::Int(match self.typed(&a[0], Kind::Set)? {
                    Some(m) => i64::from(self.data_get(&sub_key(m.id, &a[1]))?.is_some()),
                    None => 0,
                }))
            }
            "ZADD" => {
                arity(3)?;
                self.zadd(&a[0], &a[1..])
            }
            "ZREM" => {
                arity(2)?;
                let Some(mut m) = self.typed(&a[0], Kind::ZSet)? else {
                    return Ok(Value::Int(0));
                };
                let mut n = 0;
                for member in &a[1..] {
                    if let Some(old) = self.data_del(&tagged(m.id, 0, member))? {
                        let score = f64::from_be_bytes(old[..8].try_into().unwrap_or([0; 8]));
                        self.data_del(&tagged(
                            m.id,
                            1,
                            &[&score_bytes(score)[..], member].concat(),
                        ))?;
                        n += 1;
                    }
                }
                m.count -= n;
                self.put_meta(&a[0], &m)?;
                Ok(int_reply(n))
            }
            "ZSCORE" => {
                arity(2)?;
                Ok(match self.typed(&a[0], Kind::ZSet)? {
                    Some(m) => match self.data_get(&tagged(m.id, 0, &a[1]))? {
                        Some(v) => {
                            score_reply(f64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8])))
                        }
                        None => Value::Nil,
                    },
                    None => Value::Nil,
                })
            }
            "ZCARD" => {
                arity(1)?;
                Ok(int_reply(
                    self.typed(&a[0], Kind::ZSet)?.map_or(0, |m| m.count),
                ))
            }
            "ZRANGE" => {
                arity(3)?;
                self.zrange(&a[0], int(&a[1])?, int(&a[2])?, &a[3..])
            }
            "ZRANGEBYSCORE" => {
                arity(3)?;
                self.zrangebyscore(&a[0], score_bound(&a[1])?, score_bound(&a[2])?, &a[3..])
            }
            "LPUSH" | "RPUSH" => {
                arity(2)?;
                let mut m = self.typed_or_new(&a[0], Kind::List)?;
                for v in &a[1..] {
                    let seq = if name == "LPUSH" {
                        m.head -= 1;
                        m.head
                    } else {
                        m.tail += 1;
                        m.tail - 1
                    };
                    self.data_put(&sub_key(m.id, &seq_bytes(seq)), v)?;
                }
                m.count = (m.tail - m.head) as u64;
                self.put_meta(&a[0], &m)?;
                Ok(int_reply(m.count))
            }
            "LPOP" | "RPOP" => {
                arity(1)?;
                let Some(mut m) = self.typed(&a[0], Kind::List)? else {
                    return Ok(Value::Nil);
                };
                let seq = if name == "LPOP" {
                    m.head += 1;
                    m.head - 1
                } else {
                    m.tail -= 1;
                    m.tail
                };
                let v = self.data_del(&sub_key(m.id, &seq_bytes(seq)))?;
                m.count = (m.tail - m.head) as u64;
                self.put_meta(&a[0], &m)?;
                Ok(v.map(bulk).unwrap_or(Value::Nil))
            }
            "LLEN" => {
                arity(1)?;
                Ok(int_reply(
                    self.typed(&a[0], Kind::List)?.map_or(0, |m| m.count),
                ))
            }
            "LINDEX" => {
                arity(2)?;
                let Some(m) = self.typed(&a[0], Kind::List)? else {
                    return Ok(Value::Nil);
                };
                let i = int(&a[1])?;
                let seq = if i >= 0 { m.head + i } else { m.tail + i };
                if seq < m.head || seq >= m.tail {
                    return Ok(Value::Nil);
                }
                Ok(self
                    .data_get(&sub_key(m.id, &seq_bytes(seq)))?
                    .map(bulk)
                    .unwrap_or(Value::Nil))
            }
            "LRANGE" => {
                arity(3)?;
                let Some(m) = self.typed(&a[0], Kind::List)? else {
                    return Ok(Value::Array(vec![]));
                };
                let Some((from, to)) = index_range(m.count, int(&a[1])?, int(&a[2])?) else {
                    return Ok(Value::Array(vec![]));
                };
                let mut out = Vec::new();
                for i in from..=to {
                    if let Some(v) = self.data_get(&sub_key(m.id, &seq_bytes(m.head + i as i64)))? {
                        out.push(bulk(v));
                    }
                }
                Ok(Value::Array(out))
            }
            "LTRIM" => {
                arity(3)?;
                let Some(mut m) = self.typed(&a[0], Kind::List)? else {
                    return Ok(Value::Okay);
                };
                let keep = index_range(m.count, int(&a[1])?, int(&a[2])?);
                let (from, to) = match keep {
                    Some((f, t)) => (m.head + f as i64, m.head + t as i64 + 1),
                    None => (m.tail, m.tail),
                };
                for seq in (m.head..from).chain(to.max(from)..m.tail) {
                    self.data_del(&sub_key(m.id, &seq_bytes(seq)))?;
                }
                m.head = from;
                m.tail = to.max(from);
                m.count = (m.tail - m.head) as u64;
                self.put_meta(&a[0], &m)?;
                Ok(Value::Okay)
            }
            _ => Err(CmdError::err(format!(
                "unknown command '{}' (the embedded backend serves only what ferry sends)",
                name.to_lowercase()
            ))),
        }
    }

    fn set(&mut self, key: &[u8], value: &[u8], opts: &[Vec<u8>]) -> Reply {
        let mut expire_ms = 0;
        let (mut nx, mut xx) = (false, false);
        let mut i = 0;
        while i < opts.len() {
            match text(&opts[i]).to_ascii_uppercase().as_str() {
                "NX" => nx = true,
                "XX" => xx = true,
                o @ ("PX" | "EX") => {
                    let n = int(opts
                        .get(i + 1)
                        .ok_or_else(|| CmdError::err("syntax error"))?)?;
                    if n <= 0 {
                        return Err(CmdError::err("invalid expire time in 'set' command"));
                    }
                    let ms = if o == "EX" { n * 1000 } else { n };
                    expire_ms = self.now + ms as u64;
                    i += 1;
                }
                _ => return Err(CmdError::err("syntax error")),
            }
            i += 1;
        }
        let existing = self.get_meta(key)?;
        if (nx && existing.is_some()) || (xx && existing.is_none()) {
            return Ok(Value::Nil);
        }
        if let Some(m) = existing {
            self.remove(key, &m)?;
        }
        let mut m = self.typed_or_new(key, Kind::Str)?;
        m.expire_ms = expire_ms;
        self.data_put(&m.id.to_be_bytes(), value)?;
        self.put_meta(key, &m)?;
        Ok(Value::Okay)
    }

    fn zadd(&mut self, key: &[u8], a: &[Vec<u8>]) -> Reply {
        let (mut nx, mut xx, mut ch) = (false, false, false);
        let mut i = 0;
        while i < a.len() {
            match text(&a[i]).to_ascii_uppercase().as_str() {
                "NX" => nx = true,
                "XX" => xx = true,
                "CH" => ch = true,
                _ => break,
            }
            i += 1;
        }
        let pairs = &a[i..];
        if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
            return Err(CmdError::err("syntax error"));
        }
        let mut m = self.typed_or_new(key, Kind::ZSet)?;
        let (mut added, mut changed) = (0u64, 0u64);
        for pair in pairs.chunks(2) {
            let score = float(&pair[0])?;
            let member = &pair[1];
            let mk = tagged(m.id, 0, member);
            match self.data_get(&mk)? {
                Some(old) => {
                    if nx {
                        continue;
                    }
                    let old = f64::from_be_bytes(old[..8].try_into().unwrap_or([0; 8]));
                    if old != score {
                        self.data_del(&tagged(m.id, 1, &[&score_bytes(old)[..], member].concat()))?;
                        self.data_put(
                            &tagged(m.id, 1, &[&score_bytes(score)[..], member].concat()),
                            b"",
                        )?;
                        self.data_put(&mk, &score.to_be_bytes())?;
                        changed += 1;
                    }
                }
                None => {
                    if xx {
                        continue;
                    }
                    self.data_put(&mk, &score.to_be_bytes())?;
                    self.data_put(
                        &tagged(m.id, 1, &[&score_bytes(score)[..], member].concat()),
                        b"",
                    )?;
                    added += 1;
                }
            }
        }
        m.count += added;
        if m.count > 0 {
            self.put_meta(key, &m)?;
        }
        Ok(int_reply(if ch { added + changed } else { added }))
    }

    /// Members of a sorted set in score order, as (member, score), from rank `skip`.
    fn zscan(
        &self,
        m: &Meta,
        from: Bound<f64>,
        to: Bound<f64>,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, f64)>, CmdError> {
        let prefix = tagged(m.id, 1, b"");
        let start = match from {
            Bound::Included(s) | Bound::Excluded(s) => tagged(m.id, 1, &score_bytes(s)),
            Bound::Unbounded => prefix.clone(),
        };
        let mut out = Vec::new();
        let mut skipped = 0;
        for row in self.data.range::<&[u8]>(&start[..]..)? {
            let (k, _) = row?;
            let Some(rest) = k.value().strip_prefix(&prefix[..]) else {
                break;
            };
            if rest.len() < 8 {
                continue;
            }
            let score = {
                let b = u64::from_be_bytes(rest[..8].try_into().unwrap_or([0; 8]));
                let bits = if b >> 63 == 1 { b & !(1 << 63) } else { !b };
                f64::from_bits(bits)
            };
            match from {
                Bound::Excluded(s) if score <= s => continue,
                _ => {}
            }
            match to {
                Bound::Included(t) if score > t => break,
                Bound::Excluded(t) if score >= t => break,
                _ => {}
            }
            if skipped < skip {
                skipped += 1;
                continue;
            }
            out.push((rest[8..].to_vec(), score));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn zrange(&mut self, key: &[u8], start: i64, stop: i64, opts: &[Vec<u8>]) -> Reply {
        let with_scores = opts.iter().any(|o| o.eq_ignore_ascii_case(b"WITHSCORES"));
        let Some(m) = self.typed(key, Kind::ZSet)? else {
            return Ok(Value::Array(vec![]));
        };
        let Some((from, to)) = index_range(m.count, start, stop) else {
            return Ok(Value::Array(vec![]));
        };
        let rows = self.zscan(
            &m,
            Bound::Unbounded,
            Bound::Unbounded,
            from as usize,
            (to - from + 1) as usize,
        )?;
        Ok(zreply(rows, with_scores))
    }

    fn zrangebyscore(
        &mut self,
        key: &[u8],
        (min, min_open): (f64, bool),
        (max, max_open): (f64, bool),
        opts: &[Vec<u8>],
    ) -> Reply {
        let mut with_scores = false;
        let (mut offset, mut count) = (0usize, usize::MAX);
        let mut i = 0;
        while i < opts.len() {
            match text(&opts[i]).to_ascii_uppercase().as_str() {
                "WITHSCORES" => with_scores = true,
                "LIMIT" if i + 2 < opts.len() => {
                    offset = int(&opts[i + 1])?.max(0) as usize;
                    let c = int(&opts[i + 2])?;
                    count = if c < 0 { usize::MAX } else { c as usize };
                    i += 2;
                }
                _ => return Err(CmdError::err("syntax error")),
            }
            i += 1;
        }
        let Some(m) = self.typed(key, Kind::ZSet)? else {
            return Ok(Value::Array(vec![]));
        };
        if count == 0 {
            return Ok(Value::Array(vec![]));
        }
        let bound = |v: f64, open: bool| {
            if v.is_infinite() {
                Bound::Unbounded
            } else if open {
                Bound::Excluded(v)
            } else {
                Bound::Included(v)
            }
        };
        let (from, to) = (bound(min, min_open), bound(max, max_open));
        if (min == f64::INFINITY) || (max == f64::NEG_INFINITY) {
            return Ok(Value::Array(vec![]));
        }
        let rows = self.zscan(&m, from, to, offset, count)?;
        Ok(zreply(rows, with_scores))
    }

    /// `SCAN`/`HSCAN` over keys (or a hash's fields) after `after`: up to `count` of them, and
    /// the last one looked at (`None` when the end was reached).
    pub(super) fn scan(
        &mut self,
        hash: Option<&[u8]>,
        after: Option<&[u8]>,
        pattern: Option<&[u8]>,
        count: usize,
    ) -> Result<(Vec<Value>, Option<Vec<u8>>), CmdError> {
        let matches = |k: &[u8]| pattern.is_none_or(|p| glob(p, k));
        let mut out = Vec::new();
        match hash {
            Some(key) => {
                let Some(m) = self.typed(key, Kind::Hash)? else {
                    return Ok((out, None));
                };
                let rows = self.hash_rows(&m, after, count)?;
                let last = (rows.len() >= count)
                    .then(|| rows.last().map(|r| r.0.clone()))
                    .flatten();
                for (f, v) in rows {
                    if matches(&f) {
                        out.extend([bulk(f), bulk(v)]);
                    }
                }
                Ok((out, last))
            }
            None => {
                let start = match after {
                    Some(a) => Bound::Excluded(a),
                    None => Bound::Unbounded,
                };
                let mut seen = 0;
                let mut last = None;
                for row in self.meta.range::<&[u8]>((start, Bound::Unbounded))? {
                    let (k, v) = row?;
                    seen += 1;
                    let live = Meta::decode(v.value())
                        .is_some_and(|m| m.expire_ms == 0 || m.expire_ms > self.now);
                    if live && matches(k.value()) {
                        out.push(bulk(k.value().to_vec()));
                    }
                    if seen >= count {
                        last = Some(k.value().to_vec());
                        break;
                    }
                }
                Ok((out, last))
            }
        }
    }
}

fn zreply(rows: Vec<(Vec<u8>, f64)>, with_scores: bool) -> Value {
    let mut out = Vec::with_capacity(rows.len() * if with_scores { 2 } else { 1 });
    for (member, score) in rows {
        out.push(bulk(member));
        if with_scores {
            out.push(score_reply(score));
        }
    }
    Value::Array(out)
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
