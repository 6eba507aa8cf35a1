//! What one key's two objects say about each other: pure judgements from their listings,
//! their headers and their bytes' digests, each tested row by row.

use ferry_core::object::{Checksum, ObjectAttrs, ObjectMeta, etag_is_md5};
use serde::Serialize;

/// The verdict on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The same object on both sides, as far as the check went.
    Match,
    /// At the source, not at the destination.
    Missing,
    /// On both sides, and not the same (what differs is said).
    Differs,
    /// At the destination only.
    Extra,
    /// At the source in an archive class, and not the same at the destination: its bytes
    /// cannot be read, so it is never copied.
    Archived,
    /// Left out by the rule's filters.
    Excluded,
    /// The same size, but nothing comparable tells whether the bytes are the same: the ETags
    /// are of different kinds and no checksum is shared. `--deep` settles it.
    Unverifiable,
}

impl Verdict {
    /// Every verdict, in the order a summary lists them.
    pub const ALL: [Verdict; 7] = [
        Verdict::Match,
        Verdict::Missing,
        Verdict::Differs,
        Verdict::Extra,
        Verdict::Archived,
        Verdict::Excluded,
        Verdict::Unverifiable,
    ];

    /// Its name, as `--json` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::Missing => "missing",
            Verdict::Differs => "differs",
            Verdict::Extra => "extra",
            Verdict::Archived => "archived",
            Verdict::Excluded => "excluded",
            Verdict::Unverifiable => "unverifiable",
        }
    }

    /// Whether this verdict means the copy is not complete and exact (exit 3).
    pub fn fails(self) -> bool {
        matches!(self, Verdict::Missing | Verdict::Differs)
    }
}

/// What the listings alone say about a key on both sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// The same: equal sizes and ETags of the same kind that are equal (`how` says which).
    Same(&'static str),
    /// Not the same: these differ.
    Differs(Vec<String>),
    /// The ETags cannot be compared (`why`); checksums, or the bytes, must decide.
    Undecided(String),
}

/// The kind of an ETag, as far as its form tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EtagKind {
    /// 32 hex digits: the MD5 of the object's bytes (for an object uploaded in one request
    /// without SSE-KMS or SSE-C).
    Md5,
    /// `<md5 of the parts' md5s>-<parts>`: depends on how the object was cut into parts.
    Multipart(u32),
    /// Anything else (a store's own form).
    Other,
}

pub(crate) fn etag_kind(etag: &str) -> EtagKind {
    if etag_is_md5(etag) {
        return EtagKind::Md5;
    }
    match etag.rsplit_once('-') {
        Some((digest, parts)) if etag_is_md5(digest) => {
            parts.parse().map_or(EtagKind::Other, EtagKind::Multipart)
        }
        _ => EtagKind::Other,
    }
}

fn describe(kind: EtagKind) -> String {
    match kind {
        EtagKind::Md5 => "a single-part MD5".into(),
        EtagKind::Multipart(n) => format!("a multipart ETag of {n} part(s)"),
        EtagKind::Other => "an ETag of no known form".into(),
    }
}

/// Judges a key present on both sides from the two listings.
///
/// Two ETags of the same kind that are equal are the same bytes: two MD5s, or two multipart
/// ETags (the same parts, cut the same way, with the same MD5s). Two different MD5s are
/// different bytes. Anything else (an MD5 beside a multipart ETag, multipart ETags of other
/// layouts) says nothing about the bytes.
pub fn by_listing(source: &ObjectMeta, destination: &ObjectMeta) -> Listed {
    if source.size != destination.size {
        return Listed::Differs(vec![format!(
            "size: {} at the source, {} at the destination",
            source.size, destination.size
        )]);
    }
    let (s, d) = (etag_kind(&source.etag), etag_kind(&destination.etag));
    match (s, d) {
        (EtagKind::Md5, EtagKind::Md5) | (EtagKind::Multipart(_), EtagKind::Multipart(_))
            if source.etag == destination.etag =>
        {
            Listed::Same(if s == EtagKind::Md5 {
                "etag"
            } else {
                "multipart etag"
            })
        }
        (EtagKind::Md5, EtagKind::Md5) => Listed::Differs(vec![format!(
            "etag: {} at the source, {} at the destination",
            source.etag, destination.etag
        )]),
        (EtagKind::Other, EtagKind::Other) if source.etag == destination.etag => {
            Listed::Same("etag")
        }
        _ => Listed::Undecided(format!(
            "the source has {}, the destination {}",
            describe(s),
            describe(d)
        )),
    }
}

/// Judges an undecided key from its full-object checksums (as HEAD returns them): the same
/// kind decides; otherwise `None`, with why.
pub fn by_checksum(
    source: Option<&Checksum>,
    destination: Option<&Checksum>,
) -> Result<Listed, String> {
    match (source, destination) {
        (Some(s), Some(d)) if s.algorithm == d.algorithm => Ok(if s.value == d.value {
            Listed::Same("checksum")
        } else {
            Listed::Differs(vec![format!(
                "checksum {:?}: {} at the source, {} at the destination",
                s.algorithm, s.value, d.value
            )])
        }),
        (Some(s), Some(d)) => Err(format!(
            "the checksums are of different kinds ({:?} and {:?})",
            s.algorithm, d.algorithm
        )),
        (None, None) => Err("neither side keeps a full-object checksum".into()),
        (Some(_), None) => Err("the destination keeps no full-object checksum".into()),
        (None, Some(_)) => Err("the source keeps no full-object checksum".into()),
    }
}

/// The headers, metadata and storage class that differ (`expected_class`: the class the
/// rule gives every copy, if it does). STANDARD and no class are the same.
pub fn header_differences(
    source: &ObjectAttrs,
    destination: &ObjectAttrs,
    expected_class: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut header = |name: &str, s: &Option<String>, d: &Option<String>| {
        if s != d {
            out.push(format!(
                "{name}: {} at the source, {} at the destination",
                shown(s.as_deref()),
                shown(d.as_deref())
            ));
        }
    };
    header(
        "content-type",
        &source.content_type,
        &destination.content_type,
    );
    header(
        "content-encoding",
        &source.content_encoding,
        &destination.content_encoding,
    );
    header(
        "content-language",
        &source.content_language,
        &destination.content_language,
    );
    header(
        "content-disposition",
        &source.content_disposition,
        &destination.content_disposition,
    );
    header(
        "cache-control",
        &source.cache_control,
        &destination.cache_control,
    );
    header("expires", &source.expires, &destination.expires);
    let names = source.metadata.keys().chain(destination.metadata.keys());
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        let (s, d) = (source.metadata.get(name), destination.metadata.get(name));
        if seen.insert(name) && s != d {
            out.push(format!(
                "metadata x-amz-meta-{name}: {} at the source, {} at the destination",
                shown(s.map(String::as_str)),
                shown(d.map(String::as_str))
            ));
        }
    }
    let class = |c: Option<&str>| c.filter(|c| *c != "STANDARD").map(str::to_string);
    let wanted = class(expected_class.or(source.storage_class.as_deref()));
    let held = class(destination.storage_class.as_deref());
    if wanted != held {
        out.push(format!(
            "storage class: {} expected, {} at the destination",
            wanted.as_deref().unwrap_or("STANDARD"),
            held.as_deref().unwrap_or("STANDARD")
        ));
    }
    out
}

/// Tags that differ (URL-encoded sets, compared as sets).
pub fn tag_difference(source: Option<&str>, destination: Option<&str>) -> Option<String> {
    fn set(t: Option<&str>) -> Vec<&str> {
        let mut pairs: Vec<&str> = t
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .collect();
        pairs.sort_unstable();
        pairs
    }
    (set(source) != set(destination)).then(|| {
        format!(
            "tags: {} at the source, {} at the destination",
            shown(source.filter(|t| !t.is_empty())),
            shown(destination.filter(|t| !t.is_empty()))
        )
    })
}

fn shown(value: Option<&str>) -> String {
    value.map_or_else(|| "none".into(), |v| format!("{v:?}"))
}

/// Whether a listed storage class keeps the bytes in an archive (unreadable until restored).
pub fn archive_class(class: Option<&str>) -> bool {
    matches!(class, Some("GLACIER" | "DEEP_ARCHIVE"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::object::ChecksumKind;

    const A: &str = "0cc175b9c0f1b6a831c399e269772661";
    const B: &str = "92eb5ffee6ae2fec3ad71c777531578f";

    fn meta(size: u64, etag: &str) -> ObjectMeta {
        ObjectMeta {
            key: "k".into(),
            size,
            etag: etag.into(),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn etags_of_one_kind_decide_and_of_two_kinds_do_not() {
        assert_eq!(by_listing(&meta(1, A), &meta(1, A)), Listed::Same("etag"));
        assert!(
            matches!(by_listing(&meta(1, A), &meta(1, B)), Listed::Differs(d) if d[0].starts_with("etag"))
        );
        assert!(
            matches!(by_listing(&meta(1, A), &meta(2, A)), Listed::Differs(d) if d[0].starts_with("size"))
        );
        let (m2, m3) = (format!("{A}-2"), format!("{B}-3"));
        assert_eq!(
            by_listing(&meta(9, &m2), &meta(9, &m2)),
            Listed::Same("multipart etag")
        );
        // Another layout of the same bytes has another multipart ETag: nothing is said.
        assert!(
            matches!(by_listing(&meta(9, &m2), &meta(9, &m3)), Listed::Undecided(w) if w.contains("2 part") && w.contains("3 part"))
        );
        assert!(matches!(
            by_listing(&meta(9, &m2), &meta(9, A)),
            Listed::Undecided(_)
        ));
        assert_eq!(etag_kind("abc-x"), EtagKind::Other);
        assert_eq!(etag_kind(&m3), EtagKind::Multipart(3));
    }

    #[test]
    fn checksums_decide_only_when_of_the_same_kind() {
        let c = |algorithm, value: &str| Checksum {
            algorithm,
            value: value.into(),
        };
        let (x, y) = (
            c(ChecksumKind::Crc32c, "AAAA"),
            c(ChecksumKind::Crc32c, "BBBB"),
        );
        assert_eq!(
            by_checksum(Some(&x), Some(&x)),
            Ok(Listed::Same("checksum"))
        );
        assert!(matches!(
            by_checksum(Some(&x), Some(&y)),
            Ok(Listed::Differs(_))
        ));
        let z = c(ChecksumKind::Sha256, "AAAA");
        assert!(by_checksum(Some(&x), Some(&z)).is_err());
        assert!(by_checksum(None, Some(&x)).is_err());
        assert!(by_checksum(None, None).is_err());
    }

    #[test]
    fn headers_metadata_and_classes_are_compared_field_by_field() {
        let mut s = ObjectAttrs {
            content_type: Some("text/plain".into()),
            ..ObjectAttrs::default()
        };
        s.metadata.insert("owner".into(), "ann".into());
        assert!(header_differences(&s, &s, None).is_empty());
        let mut d = s.clone();
        d.content_type = Some("image/png".into());
        d.metadata.insert("owner".into(), "bob".into());
        d.metadata.insert("extra".into(), "1".into());
        let found = header_differences(&s, &d, None);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("content-type"));
        // STANDARD is no class; a rule's class is what the copy must have.
        d = s.clone();
        d.storage_class = Some("STANDARD".into());
        assert!(header_differences(&s, &d, None).is_empty());
        assert_eq!(header_differences(&s, &d, Some("STANDARD_IA")).len(), 1);
    }

    #[test]
    fn tags_compare_as_sets() {
        assert_eq!(tag_difference(Some("a=1&b=2"), Some("b=2&a=1")), None);
        assert_eq!(tag_difference(None, Some("")), None);
        assert!(tag_difference(Some("a=1"), Some("a=2")).is_some());
        assert!(tag_difference(Some("a=1"), None).is_some());
    }
}
