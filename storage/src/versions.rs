//! What a store answers about versions: a bucket's versioning, its version listing in the
//! server's own order, and the reads and writes that name or make one version.
//!
//! Only stores that keep versions implement these ([`S3Store`](super::S3Store) does, and
//! the server then says whether the bucket keeps them); the trait's defaults refuse.

use super::{ErrorKind, StorageError};

/// Whether a bucket keeps versions (GetBucketVersioning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versioning {
    /// Every write makes a new version.
    Enabled,
    /// Was enabled, then suspended: new writes replace the `null` version.
    Suspended,
    /// Never enabled.
    Off,
}

impl Versioning {
    /// As the config and messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Versioning::Enabled => "Enabled",
            Versioning::Suspended => "Suspended",
            Versioning::Off => "not enabled",
        }
    }
}

/// One entry of a version listing: a version with bytes, or a delete marker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionEntry {
    /// The key.
    pub key: String,
    /// Its version id (`null` for one written before versioning was enabled).
    pub version_id: String,
    /// A delete marker.
    pub delete_marker: bool,
    /// The key's current version (or marker).
    pub latest: bool,
    /// Size in bytes (0 for a delete marker).
    pub size: u64,
    /// ETag without quotes (empty for a delete marker).
    pub etag: String,
    /// Last-Modified, ms since the Unix epoch.
    pub last_modified_ms: i64,
}

/// Where a version listing goes on: the key and version id the next page follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionCursor {
    /// `key-marker`.
    pub key: String,
    /// `version-id-marker`.
    pub version_id: String,
}

/// One page of a version listing: keys in order, and each key's versions and delete markers
/// newest first, interleaved as the server gave them.
#[derive(Clone, Debug, Default)]
pub struct VersionPage {
    /// The entries, in the order of the server's answer.
    pub entries: Vec<VersionEntry>,
    /// Where the next page starts; `None` on the last one.
    pub next: Option<VersionCursor>,
}

/// What a write of one version returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionWritten {
    /// The write's ETag and what it may be.
    pub written: super::Written,
    /// The new version's id; `None` when the bucket did not say (it keeps no versions).
    pub version_id: Option<String>,
}

/// The error a store that keeps no versions gives for a version operation.
pub(crate) fn unsupported(store: &str, operation: &'static str, target: &str) -> StorageError {
    StorageError {
        kind: ErrorKind::Permanent,
        operation,
        target: format!("{target} on endpoint {store}"),
        status: None,
        code: None,
        message: "this store does not keep versions".to_string(),
    }
}

/// Groups a version listing by key, each key's entries oldest first: the order its versions
/// must be written in. A page completes the keys before the key the next page starts at (a
/// key's entries may span pages); the rest are held until a later page or
/// [`ByKey::finish`]. Memory holds about one page.
///
/// A listing gives a key's entries newest first, versions and delete markers interleaved,
/// and that document order is the true one where the store keeps it (AWS, Ceph RGW). Not
/// every store does: moto lists a page's versions, then its delete markers. So a page's
/// entries are gathered by key, and a key's entries are put in order by Last-Modified,
/// newest first, with the one marked latest before all; the document order breaks the
/// remaining ties (entries of the same second, on a store whose Last-Modified has whole
/// seconds, keep the order they were listed in).
#[derive(Debug, Default)]
pub struct ByKey {
    held: std::collections::BTreeMap<String, Vec<VersionEntry>>,
}

impl ByKey {
    /// Takes one page's entries, the next page starting at key `next` (`None` on the last
    /// page); returns every key they complete, in key order, each oldest first.
    pub fn push(
        &mut self,
        entries: Vec<VersionEntry>,
        next: Option<&str>,
    ) -> Vec<Vec<VersionEntry>> {
        for entry in entries {
            self.held.entry(entry.key.clone()).or_default().push(entry);
        }
        let mut done = Vec::new();
        while let Some(first) = self.held.first_key_value().map(|(k, _)| k.clone()) {
            if next.is_some_and(|next| first.as_str() >= next) {
                break;
            }
            let listed = self.held.remove(&first).unwrap_or_default();
            done.push(Self::oldest_first(listed));
        }
        done
    }

    /// The keys still held, in key order, each oldest first, once the listing has ended.
    pub fn finish(&mut self) -> Vec<Vec<VersionEntry>> {
        std::mem::take(&mut self.held)
            .into_values()
            .map(Self::oldest_first)
            .collect()
    }

    fn oldest_first(mut listed: Vec<VersionEntry>) -> Vec<VersionEntry> {
        // Stable: ties keep the listing's order.
        listed.sort_by_key(|e| {
            (
                std::cmp::Reverse(e.latest),
                std::cmp::Reverse(e.last_modified_ms),
            )
        });
        listed.reverse();
        listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, id: &str, marker: bool) -> VersionEntry {
        VersionEntry {
            key: key.into(),
            version_id: id.into(),
            delete_marker: marker,
            ..VersionEntry::default()
        }
    }

    #[test]
    fn a_keys_versions_come_out_oldest_first_even_across_pages() {
        let mut by_key = ByKey::default();
        // Newest first, as listed; "b" spans the two pages.
        let done = by_key.push(
            vec![
                entry("a", "a2", true),
                entry("a", "a1", false),
                entry("b", "b3", false),
            ],
            Some("b"),
        );
        let ids = |k: &[VersionEntry]| k.iter().map(|e| e.version_id.clone()).collect::<Vec<_>>();
        assert_eq!(done.len(), 1);
        assert_eq!(ids(&done[0]), ["a1", "a2"]);
        assert!(done[0][1].delete_marker);
        let done = by_key.push(
            vec![entry("b", "b2", true), entry("b", "b1", false)],
            Some("b"),
        );
        assert!(done.is_empty(), "b may go on in the next page");
        let last = by_key.finish();
        assert_eq!(last.len(), 1, "b is held until the end");
        assert_eq!(ids(&last[0]), ["b1", "b2", "b3"]);
        assert!(by_key.finish().is_empty());
    }

    fn at(id: &str, marker: bool, latest: bool, ms: i64) -> VersionEntry {
        VersionEntry {
            last_modified_ms: ms,
            latest,
            ..entry("k", id, marker)
        }
    }

    #[test]
    fn versions_listed_before_their_markers_are_put_back_in_time_order() {
        // As moto lists them: versions newest first, then markers newest first.
        let listed = vec![
            at("v3", false, false, 5_000),
            at("v2", false, false, 3_000),
            at("v1", false, false, 1_000),
            at("m2", true, true, 6_000),
            at("m1", true, false, 2_000),
        ];
        let mut by_key = ByKey::default();
        let ids: Vec<String> = by_key
            .push(listed, None)
            .remove(0)
            .into_iter()
            .map(|e| e.version_id)
            .collect();
        assert_eq!(ids, ["v1", "m1", "v2", "v3", "m2"]);
    }

    #[test]
    fn a_page_of_versions_then_markers_of_several_keys_is_gathered_by_key() {
        // moto: every version of the page, then every marker.
        let a = |id, marker, latest, ms| VersionEntry {
            key: "a".into(),
            ..at(id, marker, latest, ms)
        };
        let listed = vec![
            a("a2", false, true, 3_000),
            a("a1", false, false, 1_000),
            VersionEntry {
                key: "b".into(),
                ..at("b1", false, false, 1_000)
            },
            a("am", true, false, 2_000),
            VersionEntry {
                key: "b".into(),
                ..at("bm", true, true, 2_000)
            },
        ];
        let mut by_key = ByKey::default();
        let done = by_key.push(listed, None);
        let ids: Vec<Vec<String>> = done
            .iter()
            .map(|k| k.iter().map(|e| e.version_id.clone()).collect())
            .collect();
        assert_eq!(ids, [vec!["a1", "am", "a2"], vec!["b1", "bm"]]);
    }

    #[test]
    fn entries_of_the_same_second_keep_the_listing_order_but_the_latest_is_last() {
        let listed = vec![
            at("v2", false, false, 1_000),
            at("v1", false, false, 1_000),
            at("m1", true, true, 1_000),
        ];
        let mut by_key = ByKey::default();
        let ids: Vec<String> = by_key
            .push(listed, None)
            .remove(0)
            .into_iter()
            .map(|e| e.version_id)
            .collect();
        assert_eq!(ids, ["v1", "v2", "m1"]);
    }
}
