//! One command as ferry sends it, parsed (its name, its arity, its numbers) before it runs,
//! so each data type's module gets typed arguments.

use super::{CmdError, int, score_bound, text};

/// Which end of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    Left,
    Right,
}

/// What `HGETALL`, `HKEYS` and `HVALS` return of each field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HashPart {
    Both,
    Fields,
    Values,
}

/// A command the embedded store runs (what ferry's code and scripts send, no more).
pub(super) enum Command<'a> {
    Ping,
    Time,
    Get(&'a [u8]),
    Set(&'a [u8], &'a [u8], &'a [Vec<u8>]),
    IncrBy(&'a [u8], i64),
    Del(&'a [Vec<u8>]),
    Exists(&'a [Vec<u8>]),
    /// Expires the key in this many milliseconds (at once when not positive).
    Expire(&'a [u8], i64),
    /// The time to live, in milliseconds (`PTTL`) or seconds (`TTL`).
    Ttl(&'a [u8], bool),
    HSet(&'a [u8], &'a [Vec<u8>]),
    HGet(&'a [u8], &'a [u8]),
    HExists(&'a [u8], &'a [u8]),
    HMGet(&'a [u8], &'a [Vec<u8>]),
    HDel(&'a [u8], &'a [Vec<u8>]),
    HIncrBy(&'a [u8], &'a [u8], i64),
    HLen(&'a [u8]),
    HGetAll(&'a [u8], HashPart),
    SAdd(&'a [u8], &'a [Vec<u8>]),
    SRem(&'a [u8], &'a [Vec<u8>]),
    SMembers(&'a [u8]),
    SCard(&'a [u8]),
    SIsMember(&'a [u8], &'a [u8]),
    ZAdd(&'a [u8], &'a [Vec<u8>]),
    ZRem(&'a [u8], &'a [Vec<u8>]),
    ZScore(&'a [u8], &'a [u8]),
    ZCard(&'a [u8]),
    ZRange(&'a [u8], i64, i64, &'a [Vec<u8>]),
    ZRangeByScore(&'a [u8], (f64, bool), (f64, bool), &'a [Vec<u8>]),
    Push(&'a [u8], End, &'a [Vec<u8>]),
    Pop(&'a [u8], End),
    LLen(&'a [u8]),
    LIndex(&'a [u8], i64),
    LRange(&'a [u8], i64, i64),
    LTrim(&'a [u8], i64, i64),
}

impl<'a> Command<'a> {
    /// Parses `args` (the name first), checking its arity and its numbers.
    pub(super) fn parse(args: &'a [Vec<u8>]) -> Result<Command<'a>, CmdError> {
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
        let key = || a[0].as_slice();
        Ok(match name.as_str() {
            "PING" => Command::Ping,
            "TIME" => Command::Time,
            "GET" => arity(1).map(|()| Command::Get(key()))?,
            "SET" => arity(2).map(|()| Command::Set(key(), &a[1], &a[2..]))?,
            "INCR" => arity(1).map(|()| Command::IncrBy(key(), 1))?,
            "INCRBY" => {
                arity(2)?;
                Command::IncrBy(key(), int(&a[1])?)
            }
            "DEL" | "UNLINK" => Command::Del(a),
            "EXISTS" => Command::Exists(a),
            "EXPIRE" | "PEXPIRE" => {
                arity(2)?;
                let n = int(&a[1])?;
                let ms = if name == "EXPIRE" {
                    n.saturating_mul(1000)
                } else {
                    n
                };
                Command::Expire(key(), ms)
            }
            "PTTL" | "TTL" => arity(1).map(|()| Command::Ttl(key(), name == "TTL"))?,
            _ => return Command::parse_collection(&name, a, arity),
        })
    }

    /// The commands on hashes, sets, sorted sets and lists.
    fn parse_collection(
        name: &str,
        a: &'a [Vec<u8>],
        arity: impl Fn(usize) -> Result<(), CmdError>,
    ) -> Result<Command<'a>, CmdError> {
        let key = || a[0].as_slice();
        Ok(match name {
            "HSET" => {
                arity(3)?;
                if !(a.len() - 1).is_multiple_of(2) {
                    return Err(CmdError::err(
                        "wrong number of arguments for 'hset' command",
                    ));
                }
                Command::HSet(key(), &a[1..])
            }
            "HGET" => arity(2).map(|()| Command::HGet(key(), &a[1]))?,
            "HEXISTS" => arity(2).map(|()| Command::HExists(key(), &a[1]))?,
            "HMGET" => arity(2).map(|()| Command::HMGet(key(), &a[1..]))?,
            "HDEL" => arity(2).map(|()| Command::HDel(key(), &a[1..]))?,
            "HINCRBY" => {
                arity(3)?;
                Command::HIncrBy(key(), &a[1], int(&a[2])?)
            }
            "HLEN" => arity(1).map(|()| Command::HLen(key()))?,
            "HGETALL" => arity(1).map(|()| Command::HGetAll(key(), HashPart::Both))?,
            "HKEYS" => arity(1).map(|()| Command::HGetAll(key(), HashPart::Fields))?,
            "HVALS" => arity(1).map(|()| Command::HGetAll(key(), HashPart::Values))?,
            "SADD" => arity(2).map(|()| Command::SAdd(key(), &a[1..]))?,
            "SREM" => arity(2).map(|()| Command::SRem(key(), &a[1..]))?,
            "SMEMBERS" => arity(1).map(|()| Command::SMembers(key()))?,
            "SCARD" => arity(1).map(|()| Command::SCard(key()))?,
            "SISMEMBER" => arity(2).map(|()| Command::SIsMember(key(), &a[1]))?,
            "ZADD" => arity(3).map(|()| Command::ZAdd(key(), &a[1..]))?,
            "ZREM" => arity(2).map(|()| Command::ZRem(key(), &a[1..]))?,
            "ZSCORE" => arity(2).map(|()| Command::ZScore(key(), &a[1]))?,
            "ZCARD" => arity(1).map(|()| Command::ZCard(key()))?,
            "ZRANGE" => {
                arity(3)?;
                Command::ZRange(key(), int(&a[1])?, int(&a[2])?, &a[3..])
            }
            "ZRANGEBYSCORE" => {
                arity(3)?;
                let (min, max) = (score_bound(&a[1])?, score_bound(&a[2])?);
                Command::ZRangeByScore(key(), min, max, &a[3..])
            }
            "LPUSH" => arity(2).map(|()| Command::Push(key(), End::Left, &a[1..]))?,
            "RPUSH" => arity(2).map(|()| Command::Push(key(), End::Right, &a[1..]))?,
            "LPOP" => arity(1).map(|()| Command::Pop(key(), End::Left))?,
            "RPOP" => arity(1).map(|()| Command::Pop(key(), End::Right))?,
            "LLEN" => arity(1).map(|()| Command::LLen(key()))?,
            "LINDEX" => {
                arity(2)?;
                Command::LIndex(key(), int(&a[1])?)
            }
            "LRANGE" => {
                arity(3)?;
                Command::LRange(key(), int(&a[1])?, int(&a[2])?)
            }
            "LTRIM" => {
                arity(3)?;
                Command::LTrim(key(), int(&a[1])?, int(&a[2])?)
            }
            _ => {
                return Err(CmdError::err(format!(
                    "unknown command '{}' (the embedded backend serves only what ferry sends)",
                    name.to_lowercase()
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn commands_are_refused_as_redis_refuses_them() {
        let refused = |words: &[&str]| match Command::parse(&args(words)) {
            Err(e) => e.detail,
            Ok(_) => panic!("{words:?} parsed"),
        };
        assert_eq!(
            refused(&["hget", "h"]),
            "wrong number of arguments for 'hget' command"
        );
        assert_eq!(
            refused(&["HSET", "h", "f", "v", "g"]),
            "wrong number of arguments for 'hset' command"
        );
        assert!(refused(&["incrby", "k", "x"]).contains("not an integer"));
        assert!(refused(&["flushall"]).starts_with("unknown command 'flushall'"));
        assert!(matches!(
            Command::parse(&args(&["expire", "k", "2"])),
            Ok(Command::Expire(b"k", 2000))
        ));
    }
}
