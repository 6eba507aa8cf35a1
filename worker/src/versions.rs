//! Copying the versions of one key in order (`versions = "all"`): each pending source
//! version is read by its id and written to the versioned destination, where it becomes a
//! new version, and each delete marker becomes a delete marker, oldest first, one after
//! another. The ack records, per source version, the destination version holding its copy.
//!
//! Each version is recorded in the ledger as soon as it is written (`version.lua`, fenced by
//! the lease), so a copy that dies goes on at the first version not recorded. At most one
//! write can have landed unrecorded: the one in flight when the worker died. The claim that
//! died left its write intent on the key, so the next attempt knows to look: it lists the
//! destination's versions of the key, and one that no ledger entry names and that is a copy
//! of the first pending version (a delete marker for a marker; the size, and the ETag where
//! the source's is an MD5, for a version) is adopted as its copy instead of being written
//! again. The listing's order does not matter to this (moto lists markers apart).

use ferry_core::ledger::{LedgerEntry, VersionsEntry};
use ferry_core::task::SourceVersion;
use ferry_storage::{ErrorKind, VersionEntry, WriteCondition, Written, etag_is_md5};
use tracing::{debug, warn};

use crate::error::{CopyError, Failure};
use crate::outcome::Outcome;
use crate::runner::Job;
use crate::single::{Checked, destination_attrs};

/// The largest version written in one request: a version larger than this is not copied
/// (multipart copies of single versions are not done yet).
const MAX_SINGLE: u64 = 5 << 30;

/// Metadata naming the source version a copy was made from (`version_marker = true`).
pub(crate) const MARKER_VERSION_ID: &str = "ferry-source-version-id";
/// Metadata with the source version's Last-Modified (RFC 3339, ms).
pub(crate) const MARKER_LAST_MODIFIED: &str = "ferry-source-last-modified";

/// Copies `pending`, oldest first, after what the ledger already records for `key`.
pub(crate) async fn copy_versions(
    job: &Job<'_>,
    key: &str,
    pending: &[SourceVersion],
) -> Result<Outcome, CopyError> {
    let rule = job.rule;
    let view = job
        .shared
        .queue
        .ledger_get(&rule.name, &[key])
        .await?
        .pop()
        .unwrap_or_default();
    let mut entry = view.versions.clone().unwrap_or_default();
    let todo: Vec<&SourceVersion> = pending
        .iter()
        .filter(|v| !entry.has(&v.version_id))
        .collect();
    let mut from = 0;
    if let Some(first) = todo.first()
        && view.stray_besides(Some(job.claimed.token))
        && let Some(copy) = adopt(job, key, &entry, first).await?
    {
        entry.copied.push((first.version_id.clone(), copy));
        if !record(job, key, &entry).await? {
            return Ok(Outcome::LeaseLost);
        }
        from = 1;
    }
    let mut bytes = 0;
    for version in &todo[from..] {
        let written = if version.delete_marker {
            write_marker(job, key).await?
        } else {
            match copy_version(job, key, version).await {
                Ok(id) => {
                    bytes += version.size;
                    id
                }
                // Deleted for good at the source since it was listed: nothing to copy, and
                // nothing is ever deleted at the destination for it.
                Err(CopyError::Storage(e)) if e.kind == ErrorKind::NotFound => {
                    debug!(rule = %rule.name, key, version = %version.version_id,
                        "the source version is gone; not copied");
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        entry.copied.push((version.version_id.clone(), written));
        if !record(job, key, &entry).await? {
            return Ok(Outcome::LeaseLost);
        }
    }
    Ok(Outcome::VersionsCopied { bytes, entry })
}

/// Records what is copied of `key` so far; false when the lease was lost.
async fn record(job: &Job<'_>, key: &str, entry: &VersionsEntry) -> Result<bool, CopyError> {
    Ok(job
        .shared
        .queue
        .record_versions(&job.shared.options.id, job.claimed, key, entry)
        .await?)
}

/// A destination version of `key` that an earlier attempt wrote as `first`'s copy and could
/// not record, found by listing the key's versions: its version id.
async fn adopt(
    job: &Job<'_>,
    key: &str,
    entry: &VersionsEntry,
    first: &SourceVersion,
) -> Result<Option<String>, CopyError> {
    let rule = job.rule;
    let destination = job.shared.stores.destination(rule);
    let mut found: Vec<VersionEntry> = Vec::new();
    let mut cursor = None;
    'pages: loop {
        let page = destination
            .list_versions_page(&rule.destination.bucket, key, None, cursor)
            .await?;
        for e in page.entries {
            if e.key.as_str() > key {
                break 'pages;
            }
            if e.key == key {
                found.push(e);
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let adopted = unrecorded_copy(&found, entry, first).map(|e| e.version_id.clone());
    if let Some(id) = &adopted {
        warn!(rule = %rule.name, key, source = %first.version_id, destination = %id,
            "a version an earlier attempt wrote and did not record is adopted, not written again");
    }
    Ok(adopted)
}

/// Of the destination's entries of a key, the newest that no ledger entry names and that is
/// a copy of `first`.
fn unrecorded_copy<'a>(
    found: &'a [VersionEntry],
    entry: &VersionsEntry,
    first: &SourceVersion,
) -> Option<&'a VersionEntry> {
    let is_copy = |d: &VersionEntry| {
        d.delete_marker == first.delete_marker
            && (first.delete_marker
                || (d.size == first.size && (!etag_is_md5(&first.etag) || d.etag == first.etag)))
    };
    found
        .iter()
        .filter(|d| !entry.copied.iter().any(|(_, id)| *id == d.version_id))
        .filter(|d| is_copy(d))
        .max_by_key(|d| (d.latest, d.last_modified_ms))
}

async fn write_marker(job: &Job<'_>, key: &str) -> Result<String, CopyError> {
    let rule = job.rule;
    job.wrote();
    let id = job
        .shared
        .stores
        .destination(rule)
        .delete_marker(&rule.destination.bucket, key)
        .await?;
    id.ok_or_else(|| unversioned(job, "DeleteObject", key))
}

fn unversioned(job: &Job<'_>, operation: &'static str, key: &str) -> CopyError {
    CopyError::Impossible(Failure::new(
        operation,
        format!("s3://{}/{key}", job.rule.destination.bucket),
        "the destination gave no version id: its bucket does not keep versions, which \
         versions = \"all\" needs"
            .to_string(),
    ))
}

/// How a source version is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// As a new version of a versioned destination (`versions = "all"`).
    NewVersion,
    /// As the key's object, replacing what is there (`sync --at`).
    Object,
}

/// Copies one version with bytes; returns the destination version's id.
async fn copy_version(
    job: &Job<'_>,
    key: &str,
    version: &SourceVersion,
) -> Result<String, CopyError> {
    let (_, id) = stream_version(job, key, version, Write::NewVersion).await?;
    id.ok_or_else(|| unversioned(job, "PutObject", key))
}

/// Copies the version of `key` current at the moment `sync --at` asked for, as the key's
/// object at the destination (which need not keep versions).
pub(crate) async fn copy_as_object(
    job: &Job<'_>,
    key: &str,
    version: &SourceVersion,
) -> Result<Outcome, CopyError> {
    let (written, _) = match stream_version(job, key, version, Write::Object).await {
        // Deleted for good at the source since it was listed.
        Err(CopyError::Storage(e)) if e.kind == ErrorKind::NotFound => return Ok(Outcome::Gone),
        other => other?,
    };
    Ok(Outcome::Copied {
        bytes: version.size,
        entry: LedgerEntry {
            source_etag: version.etag.clone(),
            size: version.size,
            source_last_modified_ms: version.last_modified_ms,
            destination_etag: written.etag,
        },
    })
}

/// Reads one version by its id and streams it to the destination in one request, checked as
/// every streamed copy is; returns the write's answer and the new version's id, if any.
async fn stream_version(
    job: &Job<'_>,
    key: &str,
    version: &SourceVersion,
    how: Write,
) -> Result<(Written, Option<String>), CopyError> {
    let rule = job.rule;
    if version.size > MAX_SINGLE {
        return Err(CopyError::Impossible(Failure::new(
            "PutObject",
            format!(
                "s3://{}/{key}?versionId={}",
                rule.source.bucket, version.version_id
            ),
            format!(
                "a version of {} bytes is over 5 GiB, and versions are copied in one request",
                version.size
            ),
        )));
    }
    let source = job.shared.stores.source(rule);
    let destination = job.shared.stores.destination(rule);
    let caps = job.capabilities().await?;
    let get = source
        .get_version(&rule.source.bucket, key, &version.version_id)
        .await?;
    let tagging = if get.head.tag_count > 0 {
        source
            .get_version_tagging(&rule.source.bucket, key, &version.version_id)
            .await?
    } else {
        None
    };
    let mut attrs = destination_attrs(rule, &get.head.attrs);
    if rule.version_marker {
        attrs
            .metadata
            .insert(MARKER_VERSION_ID.to_string(), version.version_id.clone());
        attrs.metadata.insert(
            MARKER_LAST_MODIFIED.to_string(),
            rfc3339_ms(version.last_modified_ms),
        );
    }
    let length = get.content_length;
    let (body, check) = Checked::prepare(get, &caps);
    let unconditional = WriteCondition::None;
    let options = check.options(&attrs, &unconditional, tagging.as_deref(), &caps);
    let bucket = &rule.destination.bucket;
    job.wrote();
    let (written, id) = match how {
        Write::NewVersion => {
            let w = destination
                .put_version(bucket, key, body, length, options)
                .await
                .map_err(CopyError::on_write)?;
            (w.written, w.version_id)
        }
        Write::Object => {
            let w = destination
                .put(bucket, key, body, length, options)
                .await
                .map_err(CopyError::on_write)?;
            (w, None)
        }
    };
    check
        .after(job, key, &written, tagging.as_deref(), &caps)
        .await?;
    Ok((written, id))
}

/// `ms` since the epoch as RFC 3339 with milliseconds (UTC).
fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str, marker: bool, size: u64, etag: &str) -> SourceVersion {
        SourceVersion {
            version_id: id.into(),
            delete_marker: marker,
            size,
            etag: etag.into(),
            last_modified_ms: 0,
        }
    }

    fn found(id: &str, marker: bool, size: u64, etag: &str) -> VersionEntry {
        VersionEntry {
            key: "k".into(),
            version_id: id.into(),
            delete_marker: marker,
            size,
            etag: etag.into(),
            ..VersionEntry::default()
        }
    }

    const A: &str = "0cc175b9c0f1b6a831c399e269772661";
    const B: &str = "92eb5ffee6ae2fec3ad71c777531578f";

    #[test]
    fn only_an_unrecorded_copy_of_the_first_pending_version_is_adopted() {
        let recorded = VersionsEntry {
            copied: vec![("s0".into(), "d0".into())],
        };
        let first = source("s1", false, 1, A);
        // The recorded copy of s0 has the same bytes: it is not adopted again.
        let there = vec![found("d0", false, 1, A), found("x", false, 9, B)];
        assert!(unrecorded_copy(&there, &recorded, &first).is_none());
        let mut there = there;
        there.push(found("d1", false, 1, A));
        assert_eq!(
            unrecorded_copy(&there, &recorded, &first).map(|e| e.version_id.as_str()),
            Some("d1")
        );
        // Another ETag at the same size is not a copy; a marker is not a version's copy.
        let other = vec![found("d1", false, 1, B), found("m", true, 0, "")];
        assert!(unrecorded_copy(&other, &recorded, &first).is_none());
        let marker = source("s2", true, 0, "");
        assert_eq!(
            unrecorded_copy(&other, &recorded, &marker).map(|e| e.version_id.as_str()),
            Some("m")
        );
        // A multipart source's copy has another ETag: the size alone says.
        let multipart = source("s1", false, 1, "abc-2");
        let copied = vec![found("d1", false, 1, A)];
        assert!(unrecorded_copy(&copied, &recorded, &multipart).is_some());
    }

    #[test]
    fn marker_times_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_083_200_123), "2026-12-01T00:00:00.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
