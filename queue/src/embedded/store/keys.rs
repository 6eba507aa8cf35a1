//! Commands on any key: `PING`, `TIME`, `DEL`, `EXISTS`, `EXPIRE`, `TTL`, and the scans.

use std::ops::Bound;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::ReadableTable;
use redis::Value;

use super::{CmdError, Kind, Meta, Reply, Tx, bulk, glob};

impl Tx<'_> {
    pub(super) fn time() -> Reply {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        Ok(Value::Array(vec![
            bulk((us / 1_000_000).to_string()),
            bulk((us % 1_000_000).to_string()),
        ]))
    }

    pub(super) fn del(&mut self, keys: &[Vec<u8>]) -> Reply {
        let mut n = 0;
        for k in keys {
            n += i64::from(self.delete(k)?);
        }
        Ok(Value::Int(n))
    }

    pub(super) fn exists(&mut self, keys: &[Vec<u8>]) -> Reply {
        let mut n = 0;
        for k in keys {
            n += i64::from(self.get_meta(k)?.is_some());
        }
        Ok(Value::Int(n))
    }

    pub(super) fn expire(&mut self, key: &[u8], ms: i64) -> Reply {
        let Some(mut m) = self.get_meta(key)? else {
            return Ok(Value::Int(0));
        };
        if ms <= 0 {
            self.remove(key, &m)?;
            return Ok(Value::Int(1));
        }
        m.expire_ms = self.now + ms as u64;
        self.put_meta(key, &m)?;
        Ok(Value::Int(1))
    }

    pub(super) fn ttl(&mut self, key: &[u8], in_seconds: bool) -> Reply {
        Ok(Value::Int(match self.get_meta(key)? {
            None => -2,
            Some(m) if m.expire_ms == 0 => -1,
            Some(m) => {
                let ms = m.expire_ms.saturating_sub(self.now) as i64;
                if in_seconds { (ms + 500) / 1000 } else { ms }
            }
        }))
    }

    /// `SCAN`/`HSCAN` over keys (or a hash's fields) after `after`: up to `count` of them, and
    /// the last one looked at (`None` when the end was reached).
    pub(in crate::embedded) fn scan(
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
