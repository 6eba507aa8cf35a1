//! Units of queued work.

use serde::{Deserialize, Serialize};

/// What the coordinator saw of a source object when it planned the copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectVersion {
    /// The object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag as listed (quotes stripped); reads are pinned to it with If-Match.
    pub etag: String,
    /// Last-Modified, milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
}

/// One unit of queued work for a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// Copy one whole object (GET + PUT streamed, or a server-side copy).
    CopyObject {
        /// The source object version planned for copy.
        source: ObjectVersion,
    },
    /// Delete a destination object ferry wrote whose source is gone (`delete = true`).
    DeleteObject {
        /// The key.
        key: String,
        /// The destination ETag the ledger recorded; a different object is left alone.
        destination_etag: String,
    },
}

impl Task {
    /// Bytes this task moves when it succeeds.
    pub fn bytes(&self) -> u64 {
        match self {
            Task::CopyObject { source } => source.size,
            Task::DeleteObject { .. } => 0,
        }
    }
}
