//! Versioned binary payloads: one version byte, then bincode.
//!
//! The version byte lets a rolling upgrade meet payloads written by an older process and
//! refuse, with a clear error, ones written by a newer one.

use serde::{Serialize, de::DeserializeOwned};

/// The payload format this build writes.
pub const VERSION: u8 = 1;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{ObjectVersion, Task};

    #[test]
    fn tasks_round_trip_with_a_version_byte() {
        let task = Task::CopyObject {
            source: ObjectVersion {
                key: "a/ü b+%#".into(),
                size: 42,
                etag: "abc".into(),
                last_modified_ms: 1_700_000_000_000,
            },
        };
        let bytes = encode(&task);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<Task>(&bytes).unwrap(), task);
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
