//! Strict reading of the scripts' replies.
//!
//! Each script documents the replies it can give. Anything else (a script of another ferry
//! version, a proxy in between, a bug) is an error naming the script and what came back; it is
//! never read as one of the meanings, least of all as "the lease was lost", which would make a
//! worker drop work it still holds.

use super::{Claimed, FailOutcome, LeaderToken, PartRecorded, QueueError};
use ferry_core::codec;

/// The error for a reply that `script` never gives.
pub(super) fn unexpected(script: &'static str, reply: impl std::fmt::Debug) -> QueueError {
    let mut reply = format!("{reply:?}");
    if reply.len() > 200 {
        let mut end = 200;
        while !reply.is_char_boundary(end) {
            end -= 1;
        }
        reply.truncate(end);
        reply.push('…');
    }
    QueueError::Reply { script, reply }
}

/// The task scripts' lease check (`ack.lua`, `release.lua`, `upload.lua`, `replace.lua`):
/// 1 when the lease was held and the change made, 0 when it was lost.
pub(super) fn held(script: &'static str, reply: i64) -> Result<bool, QueueError> {
    match reply {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(unexpected(script, other)),
    }
}

/// `claim.lua`: a flat list of (id, token, attempts, payload) per claimed task. A payload
/// that does not decode is kept as the task's error (a newer ferry's task, released by the
/// worker); the other three fields must parse.
pub(super) fn claimed(rule: &str, reply: &[Vec<u8>]) -> Result<Vec<Claimed>, QueueError> {
    if !reply.len().is_multiple_of(4) {
        return Err(unexpected("claim.lua", format!("{} values", reply.len())));
    }
    reply
        .chunks_exact(4)
        .map(|c| {
            let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
            let bad = || unexpected("claim.lua", (text(&c[0]), text(&c[1]), text(&c[2])));
            let id = text(&c[0])
                .and_then(|id| super::TaskId::parse(&id))
                .ok_or_else(bad)?;
            let token = text(&c[1])
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|t| *t > 0)
                .ok_or_else(bad)?;
            let attempts = text(&c[2])
                .and_then(|a| a.parse::<u32>().ok())
                .ok_or_else(bad)?;
            Ok(Claimed {
                rule: rule.to_string(),
                id,
                token,
                attempts,
                task: codec::decode_task(&c[3]),
            })
        })
        .collect()
}

/// `fail.lua`: `retry`, `dead` or `lost`.
pub(super) fn fail_outcome(reply: &str) -> Result<FailOutcome, QueueError> {
    match reply {
        "retry" => Ok(FailOutcome::Retry),
        "dead" => Ok(FailOutcome::Dead),
        "lost" => Ok(FailOutcome::Lost),
        other => Err(unexpected("fail.lua", other)),
    }
}

/// `throttle.lua`: `{}` when the lease was lost, else `{limit, probing, throttled}`.
pub(super) fn throttled(reply: &[u64]) -> Result<Option<(u32, bool)>, QueueError> {
    match *reply {
        [] => Ok(None),
        [limit, probing @ (0 | 1), _] => Ok(Some((
            u32::try_from(limit).map_err(|_| unexpected("throttle.lua", reply))?,
            probing == 1,
        ))),
        _ => Err(unexpected("throttle.lua", reply)),
    }
}

/// `part.lua`: `{'lost'}`, `{'cancelled'}`, `{'more'}`, or `{'last', number, etag, ...}`
/// with every part number once.
pub(super) fn part_recorded(reply: &[String]) -> Result<PartRecorded, QueueError> {
    let bad = || unexpected("part.lua", reply);
    match reply {
        [one] if one == "lost" => Ok(PartRecorded::Lost),
        [one] if one == "cancelled" => Ok(PartRecorded::Cancelled),
        [one] if one == "more" => Ok(PartRecorded::More),
        [first, pairs @ ..]
            if first == "last" && !pairs.is_empty() && pairs.len().is_multiple_of(2) =>
        {
            let mut parts = pairs
                .chunks_exact(2)
                .map(|c| Ok((c[0].parse::<u32>().map_err(|_| bad())?, c[1].clone())))
                .collect::<Result<Vec<(u32, String)>, QueueError>>()?;
            parts.sort_unstable_by_key(|(n, _)| *n);
            if parts.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(bad());
            }
            Ok(PartRecorded::Last(parts))
        }
        _ => Err(bad()),
    }
}

/// `leader.lua acquire`: the token (`coordinator#epoch`) when held, or 0 when another
/// coordinator holds the lease.
pub(super) fn acquired(reply: redis::Value) -> Result<Option<LeaderToken>, QueueError> {
    let token = match reply {
        redis::Value::Int(0) => return Ok(None),
        redis::Value::BulkString(b) => String::from_utf8(b).ok(),
        redis::Value::SimpleString(s) => Some(s),
        other => return Err(unexpected("leader.lua", other)),
    };
    match token {
        Some(t)
            if t.rsplit_once('#')
                .is_some_and(|(_, e)| e.parse::<u64>().is_ok()) =>
        {
            Ok(Some(LeaderToken(t)))
        }
        other => Err(unexpected("leader.lua", other)),
    }
}

/// `leader.lua renew|release`: 1 while ours, 0 once not.
pub(super) fn still_ours(reply: i64) -> Result<bool, QueueError> {
    match reply {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(unexpected("leader.lua", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn is_reply_error<T: std::fmt::Debug>(r: Result<T, QueueError>, script: &str) -> bool {
        matches!(r, Err(QueueError::Reply { script: s, .. }) if s == script)
    }

    #[test]
    fn a_lease_check_is_one_or_zero() {
        assert!(held("ack.lua", 1).unwrap());
        assert!(!held("ack.lua", 0).unwrap());
        assert!(is_reply_error(held("ack.lua", 2), "ack.lua"));
        assert!(is_reply_error(held("release.lua", -1), "release.lua"));
    }

    #[test]
    fn claims_are_read_strictly() {
        let task = ferry_core::task::Task::DeleteObject {
            key: "k".into(),
            destination_etag: "e".into(),
        };
        let payload = codec::encode_task(&task);
        let row = |id: &str, token: &str, attempts: &str| {
            vec![
                id.as_bytes().to_vec(),
                token.as_bytes().to_vec(),
                attempts.as_bytes().to_vec(),
                payload.clone(),
            ]
        };
        let got = claimed("r", &row("1:3:7:1763700000123", "42", "2")).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].id.as_str(), got[0].token, got[0].attempts),
            ("1:3:7:1763700000123", 42, 2)
        );
        assert!(got[0].task.is_ok());
        // An undecodable payload is the task's own error, not the reply's.
        let mut newer = row("1:3:8:1763700000123", "43", "0");
        newer[3] = b"\xffnot a task".to_vec();
        assert!(claimed("r", &newer).unwrap()[0].task.is_err());
        assert!(claimed("r", &[]).unwrap().is_empty());
        let id = "1:3:7:1763700000123";
        for bad in [
            row(id, "", "0"),
            row(id, "0", "0"),
            row(id, "x", "0"),
            row(id, "42", "-1"),
            row("", "42", "0"),
            row("1:a:7", "42", "0"),
            row(id, "42", "0")[..3].to_vec(),
        ] {
            assert!(is_reply_error(claimed("r", &bad), "claim.lua"), "{bad:?}");
        }
    }

    #[test]
    fn fail_replies_are_read_and_nothing_else_is_lost() {
        assert_eq!(fail_outcome("retry").unwrap(), FailOutcome::Retry);
        assert_eq!(fail_outcome("dead").unwrap(), FailOutcome::Dead);
        assert_eq!(fail_outcome("lost").unwrap(), FailOutcome::Lost);
        for reply in ["", "Retry", "ok", "lost\n"] {
            assert!(is_reply_error(fail_outcome(reply), "fail.lua"), "{reply:?}");
        }
    }

    #[test]
    fn throttle_replies_are_read_strictly() {
        assert_eq!(throttled(&[]).unwrap(), None);
        assert_eq!(throttled(&[4, 1, 9]).unwrap(), Some((4, true)));
        assert_eq!(throttled(&[0, 0, 0]).unwrap(), Some((0, false)));
        for reply in [
            &[1][..],
            &[1, 2, 3],
            &[1, 0],
            &[1, 0, 0, 0],
            &[u64::MAX, 0, 0],
        ] {
            assert!(
                is_reply_error(throttled(reply), "throttle.lua"),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn part_replies_are_read_strictly() {
        assert!(matches!(
            part_recorded(&strings(&["lost"])),
            Ok(PartRecorded::Lost)
        ));
        assert!(matches!(
            part_recorded(&strings(&["more"])),
            Ok(PartRecorded::More)
        ));
        assert!(matches!(
            part_recorded(&strings(&["cancelled"])),
            Ok(PartRecorded::Cancelled)
        ));
        match part_recorded(&strings(&["last", "2", "b", "1", "a"])) {
            Ok(PartRecorded::Last(parts)) => {
                assert_eq!(parts, vec![(1, "a".into()), (2, "b".into())])
            }
            other => panic!("{other:?}"),
        }
        for reply in [
            &[][..],
            &["last"][..],
            &["last", "1"],
            &["last", "x", "a"],
            &["last", "1", "a", "1", "b"],
            &["lost", "1"],
            &["gone"],
        ] {
            assert!(
                is_reply_error(part_recorded(&strings(reply)), "part.lua"),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn leader_replies_are_read_strictly() {
        assert!(acquired(redis::Value::Int(0)).unwrap().is_none());
        let token = acquired(redis::Value::BulkString(b"c1#7".to_vec()))
            .unwrap()
            .expect("a token");
        assert_eq!(token.coordinator(), "c1");
        for reply in [
            redis::Value::Nil,
            redis::Value::Int(1),
            redis::Value::BulkString(b"c1".to_vec()),
            redis::Value::BulkString(b"c1#x".to_vec()),
            redis::Value::BulkString(vec![0xff, b'#', b'1']),
        ] {
            assert!(
                is_reply_error(acquired(reply.clone()), "leader.lua"),
                "{reply:?}"
            );
        }
        assert!(still_ours(1).unwrap());
        assert!(!still_ours(0).unwrap());
        assert!(is_reply_error(still_ours(2), "leader.lua"));
    }

    #[test]
    fn a_long_reply_is_cut_in_the_error() {
        let long = "é".repeat(500);
        let QueueError::Reply { reply, .. } = unexpected("fail.lua", &long) else {
            unreachable!()
        };
        assert!(reply.len() <= 204 && reply.ends_with('…'), "{reply}");
    }
}
