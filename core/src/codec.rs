//! Versioned binary payloads: one version byte, then bincode.
//!
//! The version byte lets a rolling upgrade meet payloads written by an older process and
//! refuse, with a clear error, ones written by a newer one.
//!
//! Tasks have a layout of their own ([`encode_task`]), version 2: the version byte, then the
//! task's 12-byte ledger slot (bucket as big-endian u32, then the 8-byte field), then bincode.
//! The slot sits where Lua can read it (`string.sub(payload, 2, 13)`), so the queue scripts
//! can record and clear a task's write intent without decoding it. Version 1 tasks (ferry
//! 0.1) are still read.

use serde::{Serialize, de::DeserializeOwned};

use crate::task::{Task, v1};

/// The payload format this build writes for values other than tasks.
pub const VERSION: u8 = 1;

/// The payload format this build writes for tasks.
pub const TASK_VERSION: u8 = 2;

/// Bytes of the ledger slot in a version 2 task payload.
pub const SLOT_BYTES: usize = 12;

/// A payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The payload is empty.
    #[error("empty payload")]
    Empty,
    /// Written by a version of ferry this build does not understand.
    #[error("payload version {0} is not supported (this build reads version {VERSION})")]
    UnknownVersion(u8),
    /// The bytes do not decode.
    #[error("corrupt payload: {0}")]
    Corrupt(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Encodes a value with the current version byte in front.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Encoding into a Vec cannot run out of space, and our types have no fallible Serialize.
    if let Err(e) = bincode::serde::encode_into_std_write(value, &mut out, config()) {
        unreachable!("bincode encoding into a Vec failed: {e}");
    }
    out
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let (value, _) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| CodecError::Corrupt(e.to_string()))?;
    Ok(value)
}

/// Encodes a task: version byte, its ledger slot, then bincode.
pub fn encode_task(task: &Task) -> Vec<u8> {
    let (bucket, field) = crate::ledger::slot(task.key());
    let mut out = Vec::with_capacity(64);
    out.push(TASK_VERSION);
    out.extend_from_slice(&bucket.to_be_bytes());
    out.extend_from_slice(&field);
    if let Err(e) = bincode::serde::encode_into_std_write(task, &mut out, config()) {
        unreachable!("bincode encoding into a Vec failed: {e}");
    }
    out
}

/// The 12-byte ledger slot a version 2 task payload starts with (as the Lua scripts see it).
pub fn slot_bytes(key: &str) -> Vec<u8> {
    let (bucket, field) = crate::ledger::slot(key);
    let mut out = Vec::with_capacity(SLOT_BYTES);
    out.extend_from_slice(&bucket.to_be_bytes());
    out.extend_from_slice(&field);
    out
}

/// Decodes a task written by [`encode_task`], or by ferry 0.1 (version 1).
pub fn decode_task(bytes: &[u8]) -> Result<Task, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    let corrupt = |e: bincode::error::DecodeError| CodecError::Corrupt(e.to_string());
    match version {
        1 => {
            let (task, _): (v1::Task, _) =
                bincode::serde::decode_from_slice(body, config()).map_err(corrupt)?;
            Ok(task.into())
        }
        TASK_VERSION => {
            let body = body
                .get(SLOT_BYTES..)
                .ok_or_else(|| CodecError::Corrupt("truncated task header".into()))?;
            let (task, _) = bincode::serde::decode_from_slice(body, config()).map_err(corrupt)?;
            Ok(task)
        }
        other => Err(CodecError::UnknownVersion(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Expected, ObjectVersion};

    fn version() -> ObjectVersion {
        ObjectVersion {
            key: "a/ü b+%#".into(),
            size: 42,
            etag: "abc".into(),
            last_modified_ms: 1_700_000_000_000,
            storage_class: None,
        }
    }

    #[test]
    fn tasks_round_trip_with_a_version_byte_and_their_slot() {
        let task = Task::CopyObject {
            source: version(),
            destination: Expected::Etag("def".into()),
        };
        let bytes = encode_task(&task);
        assert_eq!(bytes[0], TASK_VERSION);
        assert_eq!(&bytes[1..13], &slot_bytes("a/ü b+%#")[..]);
        assert_eq!(decode_task(&bytes).unwrap(), task);
    }

    #[test]
    fn version_1_tasks_of_ferry_0_1_are_still_read() {
        // Ferry 0.1 wrote `CopyObject { source }` with no destination expectation.
        #[derive(serde::Serialize)]
        struct OldVersion {
            key: String,
            size: u64,
            etag: String,
            last_modified_ms: i64,
        }
        #[derive(serde::Serialize)]
        enum OldTask {
            CopyObject { source: OldVersion },
        }
        let v = version();
        let old = OldVersion {
            key: v.key,
            size: v.size,
            etag: v.etag,
            last_modified_ms: v.last_modified_ms,
        };
        let bytes = encode(&OldTask::CopyObject { source: old });
        assert_eq!(bytes[0], 1);
        assert_eq!(
            decode_task(&bytes).unwrap(),
            Task::CopyObject {
                source: version(),
                destination: Expected::Unknown
            }
        );
        let mut newer = encode_task(&Task::DeleteObject {
            key: "k".into(),
            destination_etag: "e".into(),
        });
        newer[0] = 3;
        assert!(matches!(
            decode_task(&newer),
            Err(CodecError::UnknownVersion(3))
        ));
    }

    #[test]
    fn unknown_versions_are_refused() {
        let mut bytes = encode(&1u32);
        bytes[0] = 99;
        assert!(matches!(
            decode::<u32>(&bytes),
            Err(CodecError::UnknownVersion(99))
        ));
        assert!(matches!(decode::<u32>(&[]), Err(CodecError::Empty)));
    }
}
