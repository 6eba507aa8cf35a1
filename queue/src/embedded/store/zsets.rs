//! Commands on sorted sets: a row per member (its score) and a row per (score, member), in
//! an order where bytes sort as the scores do.

use std::ops::Bound;

use redb::ReadableTable;
use redis::Value;

use super::{
    CmdError, Kind, Meta, Reply, Tx, bulk, float, index_range, int, int_reply, score_bytes,
    score_reply, tagged, text,
};

impl Tx<'_> {
    pub(super) fn zrem(&mut self, key: &[u8], members: &[Vec<u8>]) -> Reply {
        let Some(mut m) = self.typed(key, Kind::ZSet)? else {
            return Ok(Value::Int(0));
        };
        let mut n = 0;
        for member in members {
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
        self.put_meta(key, &m)?;
        Ok(int_reply(n))
    }

    pub(super) fn zscore(&mut self, key: &[u8], member: &[u8]) -> Reply {
        Ok(match self.typed(key, Kind::ZSet)? {
            Some(m) => match self.data_get(&tagged(m.id, 0, member))? {
                Some(v) => score_reply(f64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]))),
                None => Value::Nil,
            },
            None => Value::Nil,
        })
    }

    pub(super) fn zcard(&mut self, key: &[u8]) -> Reply {
        Ok(int_reply(
            self.typed(key, Kind::ZSet)?.map_or(0, |m| m.count),
        ))
    }

    pub(super) fn zadd(&mut self, key: &[u8], a: &[Vec<u8>]) -> Reply {
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
    pub(super) fn zscan(
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

    pub(super) fn zrange(&mut self, key: &[u8], start: i64, stop: i64, opts: &[Vec<u8>]) -> Reply {
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

    pub(super) fn zrangebyscore(
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
