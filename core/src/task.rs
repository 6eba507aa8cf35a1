//! Units of queued work.

use serde::{Deserialize, Serialize};

/// What the coordinator saw of a source object when it planned the copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectVersion {
    /// The object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag as listed (quotes stripped); reads are pinned to it with If-Match.
    pub etag: String,
    /// Last-Modified, milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
    /// Storage class as listed (`None` is STANDARD): a server-side copy must name it, since
    /// CopyObject writes STANDARD unless told otherwise.
    pub storage_class: Option<String>,
}

/// What the plan saw at the destination key, so the write can be made conditional on it:
/// a write that lands late then cannot replace a newer one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expected {
    /// No object had the key (`If-None-Match: *`).
    Absent,
    /// The object there had this ETag (`If-Match`).
    Etag(String),
    /// Not known (a task written by an older ferry): the write is unconditional.
    #[default]
    Unknown,
}

impl Expected {
    /// The condition for a write, when the destination honours conditions.
    pub fn condition(&self) -> crate::object::WriteCondition {
        use crate::object::WriteCondition;
        match self {
            Expected::Absent => WriteCondition::IfAbsent,
            Expected::Etag(etag) => WriteCondition::IfMatch(etag.clone()),
            Expected::Unknown => WriteCondition::None,
        }
    }
}

/// One unit of queued work for a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// Copy one whole object (GET + PUT streamed, or a server-side copy).
    CopyObject {
        /// The source object version planned for copy.
        source: ObjectVersion,
        /// What the destination held when the copy was planned.
        destination: Expected,
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
    /// Copy versions of one key (`versions = "all"`), oldest first, one after another: the
    /// versions and delete markers the ledger does not yet record.
    CopyVersions {
        /// The key.
        key: String,
        /// Its pending source versions, oldest first.
        versions: Vec<SourceVersion>,
    },
    /// Copy one version of a key as the key's object (`sync --at`): the version that was
    /// current at the moment asked for.
    CopyVersion {
        /// The key.
        key: String,
        /// The source version.
        version: SourceVersion,
    },
}

/// One version (or delete marker) of a key at the source, as its version listing gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceVersion {
    /// The source's version id (`null` for a version written before versioning was on).
    pub version_id: String,
    /// A delete marker, not a version with bytes.
    pub delete_marker: bool,
    /// Size in bytes (0 for a delete marker).
    pub size: u64,
    /// ETag as listed, without quotes (empty for a delete marker).
    pub etag: String,
    /// Last-Modified, milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
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
    /// What the destination held when the copy was planned (the completion's condition).
    pub destination: Expected,
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
            Task::CopyObject { source, .. } => &source.key,
            Task::DeleteObject { key, .. } => key,
            Task::CopyPart(part) => &part.source.key,
            Task::CopyVersions { key, .. } | Task::CopyVersion { key, .. } => key,
        }
    }

    /// Bytes this task moves when it succeeds.
    pub fn bytes(&self) -> u64 {
        match self {
            Task::CopyObject { source, .. } => source.size,
            Task::DeleteObject { .. } => 0,
            Task::CopyPart(part) => part.len(),
            Task::CopyVersions { versions, .. } => versions.iter().map(|v| v.size).sum(),
            Task::CopyVersion { version, .. } => version.size,
        }
    }
}

/// Tasks as ferry 0.1 wrote them (payload version 1), decoded for rolling upgrades.
pub(crate) mod v1 {
    use serde::Deserialize;

    use super::Expected;

    #[derive(Deserialize)]
    pub(crate) struct ObjectVersion {
        key: String,
        size: u64,
        etag: String,
        last_modified_ms: i64,
    }

    impl From<ObjectVersion> for super::ObjectVersion {
        fn from(v: ObjectVersion) -> super::ObjectVersion {
            super::ObjectVersion {
                key: v.key,
                size: v.size,
                etag: v.etag,
                last_modified_ms: v.last_modified_ms,
                storage_class: None,
            }
        }
    }

    #[derive(Deserialize)]
    pub(crate) enum Task {
        CopyObject {
            source: ObjectVersion,
        },
        DeleteObject {
            key: String,
            destination_etag: String,
        },
        CopyPart(Box<PartTask>),
    }

    #[derive(Deserialize)]
    pub(crate) struct PartTask {
        upload: String,
        upload_id: String,
        source: ObjectVersion,
        number: u32,
        parts: u32,
        first: u64,
        last: u64,
    }

    impl From<Task> for super::Task {
        fn from(task: Task) -> super::Task {
            match task {
                Task::CopyObject { source } => super::Task::CopyObject {
                    source: source.into(),
                    destination: Expected::Unknown,
                },
                Task::DeleteObject {
                    key,
                    destination_etag,
                } => super::Task::DeleteObject {
                    key,
                    destination_etag,
                },
                Task::CopyPart(p) => super::Task::CopyPart(Box::new(super::PartTask {
                    upload: p.upload,
                    upload_id: p.upload_id,
                    source: p.source.into(),
                    number: p.number,
                    parts: p.parts,
                    first: p.first,
                    last: p.last,
                    destination: Expected::Unknown,
                })),
            }
        }
    }
}
