//! Commands on hashes. A small hash is one packed blob (fields sorted), read whole; one that
//! outgrows it has a row per field.

use redis::Value;

use super::command::HashPart;
use super::{
    CmdError, Kind, Meta, PACKED, PACKED_MAX_BYTES, PACKED_MAX_FIELDS, Reply, Row, Tx, bulk, int,
    int_reply, is_packed, pack, packed_rows, sub_key, torn, unpack,
};

impl Tx<'_> {
    pub(super) fn hset(&mut self, key: &[u8], pairs: &[Vec<u8>]) -> Reply {
        let mut m = self.hash_or_new(key)?;
        let pairs: Vec<(&[u8], &[u8])> = pairs
            .chunks(2)
            .map(|p| (p[0].as_slice(), p[1].as_slice()))
            .collect();
        let added = self.hash_set(&mut m, &pairs)?;
        self.put_meta(key, &m)?;
        Ok(int_reply(added))
    }

    pub(super) fn hget(&mut self, key: &[u8], field: &[u8]) -> Reply {
        Ok(match self.typed(key, Kind::Hash)? {
            Some(m) => self.hash_get(&m, field)?.map(bulk).unwrap_or(Value::Nil),
            None => Value::Nil,
        })
    }

    pub(super) fn hexists(&mut self, key: &[u8], field: &[u8]) -> Reply {
        Ok(Value::Int(match self.typed(key, Kind::Hash)? {
            Some(m) => i64::from(self.hash_get(&m, field)?.is_some()),
            None => 0,
        }))
    }

    pub(super) fn hmget(&mut self, key: &[u8], fields: &[Vec<u8>]) -> Reply {
        let m = self.typed(key, Kind::Hash)?;
        let mut out = Vec::with_capacity(fields.len());
        match &m {
            // One read of the blob for every field asked (flow state: 8 at a time).
            Some(m) if is_packed(m) => {
                let blob = self.data_get(&m.id.to_be_bytes())?.unwrap_or_default();
                let rows = packed_rows(&blob).ok_or_else(torn)?;
                for f in fields {
                    out.push(
                        rows.binary_search_by(|(k, _)| (*k).cmp(f.as_slice()))
                            .map_or(Value::Nil, |i| bulk(rows[i].1.to_vec())),
                    );
                }
            }
            _ => {
                for f in fields {
                    out.push(match &m {
                        Some(m) => self.hash_get(m, f)?.map(bulk).unwrap_or(Value::Nil),
                        None => Value::Nil,
                    });
                }
            }
        }
        Ok(Value::Array(out))
    }

    pub(super) fn hdel(&mut self, key: &[u8], fields: &[Vec<u8>]) -> Reply {
        let Some(mut m) = self.typed(key, Kind::Hash)? else {
            return Ok(Value::Int(0));
        };
        let removed = self.hash_del(&mut m, fields)?;
        self.put_meta(key, &m)?;
        Ok(int_reply(removed))
    }

    pub(super) fn hincr_by(&mut self, key: &[u8], field: &[u8], by: i64) -> Reply {
        let mut m = self.hash_or_new(key)?;
        let old = match self.hash_get(&m, field)? {
            Some(v) => int(&v).map_err(|_| CmdError::err("hash value is not an integer"))?,
            None => 0,
        };
        let n = old
            .checked_add(by)
            .ok_or_else(|| CmdError::err("increment or decrement would overflow"))?;
        let text = n.to_string();
        self.hash_set(&mut m, &[(field, text.as_bytes())])?;
        self.put_meta(key, &m)?;
        Ok(Value::Int(n))
    }

    pub(super) fn hlen(&mut self, key: &[u8]) -> Reply {
        Ok(int_reply(
            self.typed(key, Kind::Hash)?.map_or(0, |m| m.count),
        ))
    }

    pub(super) fn hgetall(&mut self, key: &[u8], part: HashPart) -> Reply {
        let Some(m) = self.typed(key, Kind::Hash)? else {
            return Ok(Value::Array(vec![]));
        };
        let rows = self.hash_rows(&m, None, usize::MAX)?;
        let mut out = Vec::new();
        for (f, v) in rows {
            match part {
                HashPart::Fields => out.push(bulk(f)),
                HashPart::Values => out.push(bulk(v)),
                HashPart::Both => out.extend([bulk(f), bulk(v)]),
            }
        }
        Ok(Value::Array(out))
    }

    /// A hash's fields, in field order (the packed blob, or the rows), after `after`, at
    /// most `limit`.
    pub(super) fn hash_rows(
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

    pub(super) fn packed(&self, m: &Meta) -> Result<Vec<Row>, CmdError> {
        let blob = self.data_get(&m.id.to_be_bytes())?.unwrap_or_default();
        unpack(&blob).ok_or_else(torn)
    }

    pub(super) fn hash_get(&self, m: &Meta, field: &[u8]) -> Result<Option<Vec<u8>>, CmdError> {
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
    pub(super) fn hash_set(
        &mut self,
        m: &mut Meta,
        pairs: &[(&[u8], &[u8])],
    ) -> Result<u64, CmdError> {
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
    pub(super) fn hash_del(&mut self, m: &mut Meta, fields: &[Vec<u8>]) -> Result<u64, CmdError> {
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
    pub(super) fn hash_or_new(&mut self, key: &[u8]) -> Result<Meta, CmdError> {
        let mut m = self.typed_or_new(key, Kind::Hash)?;
        if m.count == 0 {
            m.head = PACKED;
        }
        Ok(m)
    }
}
