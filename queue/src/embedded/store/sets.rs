//! Commands on sets: a row per member.

use redis::Value;

use super::{Kind, Reply, Tx, bulk, int_reply, sub_key};

impl Tx<'_> {
    /// `SADD` (`add`) or `SREM`.
    pub(super) fn sadd_or_srem(&mut self, key: &[u8], members: &[Vec<u8>], add: bool) -> Reply {
        let mut m = if add {
            self.typed_or_new(key, Kind::Set)?
        } else {
            match self.typed(key, Kind::Set)? {
                Some(m) => m,
                None => return Ok(Value::Int(0)),
            }
        };
        let mut n = 0;
        for member in members {
            let k = sub_key(m.id, member);
            if add {
                if self.data_put(&k, b"")? {
                    n += 1;
                }
            } else if self.data_del(&k)?.is_some() {
                n += 1;
            }
        }
        if add {
            m.count += n;
        } else {
            m.count -= n;
        }
        self.put_meta(key, &m)?;
        Ok(int_reply(n))
    }

    pub(super) fn smembers(&mut self, key: &[u8]) -> Reply {
        let Some(m) = self.typed(key, Kind::Set)? else {
            return Ok(Value::Array(vec![]));
        };
        let rows = self.rows(&m.id.to_be_bytes(), None, usize::MAX)?;
        Ok(Value::Array(
            rows.into_iter().map(|(k, _)| bulk(k)).collect(),
        ))
    }

    pub(super) fn scard(&mut self, key: &[u8]) -> Reply {
        Ok(int_reply(
            self.typed(key, Kind::Set)?.map_or(0, |m| m.count),
        ))
    }

    pub(super) fn sismember(&mut self, key: &[u8], member: &[u8]) -> Reply {
        Ok(Value::Int(match self.typed(key, Kind::Set)? {
            Some(m) => i64::from(self.data_get(&sub_key(m.id, member))?.is_some()),
            None => 0,
        }))
    }
}
