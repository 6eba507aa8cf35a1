//! What a failed queue operation says.

use super::*;

/// A queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis could not be reached or answered with an error.
    #[error("{place}: {cause}", place = place(.url))]
    Redis {
        /// The URL without its password.
        url: String,
        /// The client's error. Not the error's `source`: the message holds it already, so
        /// an error chain prints it once.
        cause: redis::RedisError,
    },
    /// The embedded backend's state directory cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The certificate authorities for a `rediss://` connection cannot be read.
    #[error(transparent)]
    Trust(#[from] ferry_core::trust::TrustError),
    /// A stored value could not be decoded.
    #[error("decoding a stored value: {0}")]
    Codec(#[from] CodecError),
    /// A coordinator write was refused: another coordinator leads the rule now.
    #[error("rule {rule}: another coordinator leads it now")]
    Fenced {
        /// The rule.
        rule: String,
    },
    /// A script answered something it never answers (see `reply.rs`): an error, never read
    /// as one of its meanings.
    #[error("{script}: unexpected reply {reply}")]
    Reply {
        /// The script.
        script: &'static str,
        /// What it answered (cut at 200 characters).
        reply: String,
    },
    /// A coordinator write found the iteration other than it left it: Redis lost its last
    /// writes in a restart. The caller plans again from what Redis holds.
    #[error("rule {rule}: {detail}")]
    Stale {
        /// The rule.
        rule: String,
        /// What was found.
        detail: String,
    },
}

/// Where a queue's data lives, for messages: `redis at URL`, or the embedded state dir.
impl QueueError {
    /// Why Redis (or its TLS setup) refused this client, when it did: a configuration error
    /// to fix (a password, an ACL, protected mode, a certificate), not an outage to wait out.
    /// The text is Redis's own, and never holds the password.
    pub fn refusal(&self) -> Option<String> {
        match self {
            QueueError::Redis { cause, .. } => connection::refusal(cause),
            QueueError::Trust(e) => Some(e.to_string()),
            _ => None,
        }
    }
}

fn place(url: &str) -> String {
    if url.starts_with("state dir ") {
        url.to_string()
    } else {
        format!("redis at {url}")
    }
}
