//! A task's id, as the scripts make it: `ITERATION:SHARD:SEQ:ENQUEUED_MS`, with `:p` at the
//! end for a part task (`ITERATION:SHARD:SEQ` from ferry 0.1, before ids carried the time).
//! Read strictly: a claim reply holding any other id is an error, never a task.

use std::fmt;

use ferry_core::shard::ShardId;

/// A parsed task id; it prints (and is sent to Redis) exactly as it was read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId {
    raw: String,
    iteration: u64,
    shard: ShardId,
    enqueued_ms: Option<u64>,
    part: bool,
}

impl TaskId {
    /// Parses an id; `None` for anything the scripts never make.
    pub fn parse(raw: &str) -> Option<TaskId> {
        let (body, part) = match raw.strip_suffix(":p") {
            Some(body) => (body, true),
            None => (raw, false),
        };
        let mut fields = body.split(':');
        let number = |f: Option<&str>| -> Option<u64> {
            let f = f?;
            (!f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
                .then(|| f.parse().ok())
                .flatten()
        };
        let iteration = number(fields.next())?;
        let shard = ShardId::try_from(number(fields.next())?).ok()?;
        number(fields.next())?;
        let enqueued_ms = match fields.next() {
            None => None,
            Some(ms) => Some(number(Some(ms))?),
        };
        if fields.next().is_some() {
            return None;
        }
        Some(TaskId {
            raw: raw.to_string(),
            iteration,
            shard,
            enqueued_ms,
            part,
        })
    }

    /// The id as the scripts know it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The iteration that planned the task.
    pub fn iteration(&self) -> u64 {
        self.iteration
    }

    /// The shard whose queue it is on.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// When it was enqueued (ms, queue clock); `None` for an id from ferry 0.1.
    pub fn enqueued_ms(&self) -> Option<u64> {
        self.enqueued_ms
    }

    /// Whether it is a multipart part task.
    pub fn is_part(&self) -> bool {
        self.part
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl redis::ToRedisArgs for TaskId {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        self.raw.write_redis_args(out)
    }
}

impl serde::Serialize for TaskId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_the_scripts_make_parse_and_print_unchanged() {
        let id = TaskId::parse("3:7:19:1763700000123").unwrap();
        assert_eq!(
            (id.iteration(), id.shard(), id.enqueued_ms(), id.is_part()),
            (3, 7, Some(1_763_700_000_123), false)
        );
        assert_eq!(id.to_string(), "3:7:19:1763700000123");
        let part = TaskId::parse("3:7:20:1763700000124:p").unwrap();
        assert!(part.is_part());
        assert_eq!(part.enqueued_ms(), Some(1_763_700_000_124));
        let old = TaskId::parse("1:0:5").unwrap();
        assert_eq!((old.iteration(), old.enqueued_ms()), (1, None));
    }

    #[test]
    fn anything_else_is_not_an_id() {
        for bad in [
            "",
            "1",
            "1:2",
            "1:a:7",
            "x:1:2:3",
            "1:2:3:4:5",
            "1:2:3:4:q",
            "1:2::4",
            "-1:2:3:4",
            "1:2:3:4:p:p",
            ":p",
        ] {
            assert!(TaskId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
