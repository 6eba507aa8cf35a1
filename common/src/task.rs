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
    /// Copy one part of a multipart upload; any worker may claim any part.
    CopyPart(Box<PartTask>),
}

/// One part of an object copied in parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartTask {
    /// The upload's record id in Redis (the id of the object task that started it).
    pub upload: String,
    /// The destination's multipart upload id.
    pub upload_id: String,
    /// The source object version being copied; every ranged read is pinned to its ETag.
    pub source: ObjectVersion,
    /// 1-based part number.
    pub number: u32,
    /// Parts in the upload.
    pub parts: u32,
    /// First byte of the part in the source object.
    pub first: u64,
    /// Last byte (inclusive).
    pub last: u64,
}

impl PartTask {
    /// Bytes in this part.
    pub fn len(&self) -> u64 {
        if self.source.size == 0 {
            0
        } else {
            self.last + 1 - self.first
        }
    }

    /// Whether the part is empty (only the single part of an empty object is).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A multipart upload ferry started, as recorded in Redis until it is completed or aborted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The destination key.
    pub key: String,
    /// The destination's upload id.
    pub upload_id: String,
    /// The source version being copied.
    pub source_etag: String,
    /// Parts in the upload (0 until the parts are enqueued).
    pub parts: u32,
    /// Whether the part sizes are the source's own (then the ETag must come out equal).
    pub layout_from_source: bool,
}

impl Task {
    /// The source or destination key the task is about.
    pub fn key(&self) -> &str {
        match self {
            Task::CopyObject { source } => &source.key,
            Task::DeleteObject { key, .. } => key,
            Task::CopyPart(part) => &part.source.key,
        }
    }

    /// Bytes this task moves when it succeeds.
    pub fn bytes(&self) -> u64 {
        match self {
            Task::CopyObject { source } => source.size,
            Task::DeleteObject { .. } => 0,
            Task::CopyPart(part) => part.len(),
        }
    }
}
