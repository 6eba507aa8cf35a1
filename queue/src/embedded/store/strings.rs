//! Commands on strings: `GET`, `SET` (with `NX`, `XX`, `PX`, `EX`), `INCR` and `INCRBY`.

use redis::Value;

use super::{CmdError, Kind, Reply, Tx, bulk, int, text};

impl Tx<'_> {
    pub(super) fn get(&mut self, key: &[u8]) -> Reply {
        match self.typed(key, Kind::Str)? {
            Some(m) => Ok(self
                .data_get(&m.id.to_be_bytes())?
                .map(bulk)
                .unwrap_or(Value::Nil)),
            None => Ok(Value::Nil),
        }
    }

    pub(super) fn incr_by(&mut self, key: &[u8], by: i64) -> Reply {
        let m = self.typed_or_new(key, Kind::Str)?;
        let k = m.id.to_be_bytes();
        let old = match self.data_get(&k)? {
            Some(v) => int(&v)?,
            None => 0,
        };
        let n = old
            .checked_add(by)
            .ok_or_else(|| CmdError::err("increment or decrement would overflow"))?;
        self.data_put(&k, n.to_string().as_bytes())?;
        self.put_meta(key, &m)?;
        Ok(Value::Int(n))
    }

    pub(super) fn set(&mut self, key: &[u8], value: &[u8], opts: &[Vec<u8>]) -> Reply {
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
}
