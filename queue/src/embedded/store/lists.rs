//! Commands on lists: a row per element, keyed by a sequence number that grows to the right
//! and shrinks to the left.

use redis::Value;

use super::command::End;
use super::{Kind, Reply, Tx, bulk, index_range, int_reply, seq_bytes, sub_key};

impl Tx<'_> {
    pub(super) fn push(&mut self, key: &[u8], end: End, values: &[Vec<u8>]) -> Reply {
        let mut m = self.typed_or_new(key, Kind::List)?;
        for v in values {
            let seq = match end {
                End::Left => {
                    m.head -= 1;
                    m.head
                }
                End::Right => {
                    m.tail += 1;
                    m.tail - 1
                }
            };
            self.data_put(&sub_key(m.id, &seq_bytes(seq)), v)?;
        }
        m.count = (m.tail - m.head) as u64;
        self.put_meta(key, &m)?;
        Ok(int_reply(m.count))
    }

    pub(super) fn pop(&mut self, key: &[u8], end: End) -> Reply {
        let Some(mut m) = self.typed(key, Kind::List)? else {
            return Ok(Value::Nil);
        };
        let seq = match end {
            End::Left => {
                m.head += 1;
                m.head - 1
            }
            End::Right => {
                m.tail -= 1;
                m.tail
            }
        };
        let v = self.data_del(&sub_key(m.id, &seq_bytes(seq)))?;
        m.count = (m.tail - m.head) as u64;
        self.put_meta(key, &m)?;
        Ok(v.map(bulk).unwrap_or(Value::Nil))
    }

    pub(super) fn llen(&mut self, key: &[u8]) -> Reply {
        Ok(int_reply(
            self.typed(key, Kind::List)?.map_or(0, |m| m.count),
        ))
    }

    pub(super) fn lindex(&mut self, key: &[u8], i: i64) -> Reply {
        let Some(m) = self.typed(key, Kind::List)? else {
            return Ok(Value::Nil);
        };
        let seq = if i >= 0 { m.head + i } else { m.tail + i };
        if seq < m.head || seq >= m.tail {
            return Ok(Value::Nil);
        }
        Ok(self
            .data_get(&sub_key(m.id, &seq_bytes(seq)))?
            .map(bulk)
            .unwrap_or(Value::Nil))
    }

    pub(super) fn lrange(&mut self, key: &[u8], start: i64, stop: i64) -> Reply {
        let Some(m) = self.typed(key, Kind::List)? else {
            return Ok(Value::Array(vec![]));
        };
        let Some((from, to)) = index_range(m.count, start, stop) else {
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

    pub(super) fn ltrim(&mut self, key: &[u8], start: i64, stop: i64) -> Reply {
        let Some(mut m) = self.typed(key, Kind::List)? else {
            return Ok(Value::Okay);
        };
        let keep = index_range(m.count, start, stop);
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
        self.put_meta(key, &m)?;
        Ok(Value::Okay)
    }
}
