//! What the next iteration would do, before it does it: from one listing of both sides (a
//! dry run), the objects and bytes to copy, delete and skip; the requests each side would
//! answer, by kind; the egress and request cost, where `[pricing]` says what they cost; and a
//! time range, from the fleet's measured throughput when there is one.
//!
//! The requests are those of copies that go as planned: no retries, no capability probe (its
//! answers are kept for a day), and no tags (a listing does not say which objects have them:
//! each tagged object adds a GetObjectTagging at the source, and PutObjectTagging and
//! GetObjectTagging at a destination that drops tags on write). A multipart source is taken
//! to tell its part sizes (HEAD `partNumber`); one that does not (Ceph RGW) adds a GetObject
//! per multipart object whose part size more than one guess fits.

use std::collections::BTreeMap;

use ferry_core::capabilities::Capabilities;
use ferry_core::config::{Pricing, Rule};
use ferry_core::parts::etag_parts;
use ferry_core::task::Task;
use serde::Serialize;

use crate::DryRun;

/// Biggest object one PutObject or CopyObject takes (5 GiB).
const MAX_SINGLE: u64 = 5 << 30;

/// The requests each side would answer, by S3 operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    /// At the source endpoint.
    pub source: BTreeMap<&'static str, u64>,
    /// At the destination endpoint.
    pub destination: BTreeMap<&'static str, u64>,
}

impl Requests {
    fn source(&mut self, operation: &'static str, n: u64) {
        if n > 0 {
            *self.source.entry(operation).or_default() += n;
        }
    }

    fn destination(&mut self, operation: &'static str, n: u64) {
        if n > 0 {
            *self.destination.entry(operation).or_default() += n;
        }
    }
}

/// The copies and deletes of a dry run, counted as they are reported (nothing kept per key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Objects copied in one request.
    pub single: u64,
    /// Objects copied in parts.
    pub multipart: u64,
    /// Their parts.
    pub parts: u64,
    /// Bytes read from the source by another endpoint (nothing for server-side copies).
    pub egress_bytes: u64,
    /// The requests the copies and deletes take.
    pub requests: Requests,
}

impl Tally {
    /// Counts the versions of one key (`versions = "all"`): each version read by its id and
    /// written in one request, each delete marker made by a DeleteObject.
    fn add_versions(&mut self, same_endpoint: bool, versions: &[ferry_core::task::SourceVersion]) {
        let r = &mut self.requests;
        for version in versions {
            if version.delete_marker {
                r.destination("DeleteObject", 1);
                continue;
            }
            self.single += 1;
            if !same_endpoint {
                self.egress_bytes += version.size;
            }
            r.source("GetObject", 1);
            r.destination("PutObject", 1);
        }
    }

    /// Counts one planned task of `rule`, as a worker would copy it to a destination that
    /// does what `caps` (its probe's findings, where known) say.
    pub fn add(&mut self, rule: &Rule, caps: Option<&Capabilities>, task: &Task) {
        let same_endpoint = rule.source.endpoint == rule.destination.endpoint;
        let r = &mut self.requests;
        let Task::CopyObject { source, .. } = task else {
            match task {
                Task::DeleteObject { .. } => {
                    // Checked to be what ferry wrote, then deleted.
                    r.destination("HeadObject", 1);
                    r.destination("DeleteObject", 1);
                }
                Task::CopyVersions { versions, .. } => self.add_versions(same_endpoint, versions),
                Task::CopyVersion { version, .. } => {
                    self.add_versions(same_endpoint, std::slice::from_ref(version))
                }
                _ => {}
            }
            return;
        };
        if !same_endpoint {
            self.egress_bytes += source.size;
        }
        // A multipart source is copied with its own parts (so its ETag is kept), which HEAD
        // with partNumber tells: the first part, and the last to confirm equal parts.
        let source_parts = etag_parts(&source.etag);
        let parts = match source_parts {
            Some(n) => Some(n),
            None if source.size >= rule.multipart_threshold.0 || source.size > MAX_SINGLE => {
                Some(source.size.div_ceil(rule.part_size.0.max(1)).max(1))
            }
            None => None,
        };
        let Some(parts) = parts else {
            self.single += 1;
            if same_endpoint {
                r.destination("CopyObject", 1);
                if caps.is_some_and(|c| c.tagging && !c.tags_on_copy) {
                    r.source("GetObjectTagging", 1);
                }
            } else {
                r.source("GetObject", 1);
                r.destination("PutObject", 1);
            }
            return;
        };
        self.multipart += 1;
        self.parts += parts;
        if let Some(n) = source_parts {
            // Two equal parts need no second look: the first and the size tell both.
            r.source("HeadObject", if n > 2 { 2 } else { 1 });
        }
        // The source's headers, pinned to the planned ETag, then the upload.
        r.source("HeadObject", 1);
        r.destination("CreateMultipartUpload", 1);
        if same_endpoint {
            r.destination("UploadPartCopy", parts);
        } else {
            r.source("GetObject", parts);
            r.destination("UploadPart", parts);
        }
        r.destination("CompleteMultipartUpload", 1);
        // Where the completion's answer carries no ETag (moto's unreadable one, RGW's empty
        // one), a HEAD reads it.
        if caps.is_some_and(|c| !c.complete_etag) {
            r.destination("HeadObject", 1);
        }
        // Where the destination drops tags on a multipart upload, the completion reads the
        // source's (and sets them, if there are any: a listing does not say).
        if caps.is_some_and(|c| c.tagging && !c.tags_on_multipart) {
            r.source("GetObjectTagging", 1);
        }
    }
}

/// What the rule's endpoints charge for the requests and the egress.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Cost {
    /// Egress out of the source, for copies between endpoints.
    pub egress: f64,
    /// Requests at the source.
    pub source_requests: f64,
    /// Requests at the destination.
    pub destination_requests: f64,
    /// All of it.
    pub total: f64,
    /// Endpoints with no `[pricing]` (counted as free).
    pub unpriced: Vec<String>,
}

/// Class A requests (PUT, COPY, POST, LIST); DELETE is free; the rest are class B.
fn class_a(operation: &str) -> Option<bool> {
    match operation {
        "DeleteObject" | "AbortMultipartUpload" => None,
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "ListObjectsV2"
        | "ListObjectVersions"
        | "ListParts"
        | "ListMultipartUploads"
        | "PutObjectTagging" => Some(true),
        _ => Some(false),
    }
}

fn request_cost(requests: &BTreeMap<&'static str, u64>, pricing: &Pricing) -> f64 {
    requests
        .iter()
        .map(|(op, n)| match class_a(op) {
            Some(true) => *n as f64 * pricing.class_a_per_1000 / 1000.0,
            Some(false) => *n as f64 * pricing.class_b_per_1000 / 1000.0,
            None => 0.0,
        })
        .sum()
}

/// The cost of `requests` and `egress_bytes`, where either endpoint is priced; `None` when
/// neither is.
pub fn cost(
    rule: &Rule,
    requests: &Requests,
    egress_bytes: u64,
    pricing: &BTreeMap<String, Pricing>,
) -> Option<Cost> {
    let (source, destination) = (
        pricing.get(&rule.source.endpoint),
        pricing.get(&rule.destination.endpoint),
    );
    if source.is_none() && destination.is_none() {
        return None;
    }
    let free = Pricing::default();
    let mut c = Cost {
        egress: egress_bytes as f64 / 1e9 * source.unwrap_or(&free).egress_per_gb,
        source_requests: request_cost(&requests.source, source.unwrap_or(&free)),
        destination_requests: request_cost(&requests.destination, destination.unwrap_or(&free)),
        ..Cost::default()
    };
    c.total = c.egress + c.source_requests + c.destination_requests;
    for (name, priced) in [
        (&rule.source.endpoint, source.is_some()),
        (&rule.destination.endpoint, destination.is_some()),
    ] {
        if !priced && !c.unpriced.contains(name) {
            c.unpriced.push(name.clone());
        }
    }
    Some(c)
}

/// How long the copies would take, in seconds, and where the figures come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Duration {
    /// At best.
    pub low_seconds: f64,
    /// At worst.
    pub high_seconds: f64,
    /// `measured` (the last iteration's rates) or `guess` (from the workers alone).
    pub basis: &'static str,
    /// The rates used: bytes and objects per second.
    pub bytes_per_second: f64,
    /// Objects per second.
    pub objects_per_second: f64,
}

/// What the fleet did last time: bytes and objects copied in so many seconds.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Bytes copied.
    pub bytes: u64,
    /// Objects copied.
    pub objects: u64,
    /// Seconds the iteration took.
    pub seconds: f64,
}

/// The time `objects` and `bytes` would take: at the measured rates, between the slower of
/// the two limits (bytes or objects) and both in turn; without a measurement, a guess from
/// `concurrency` copies at once at 50-200 ms per request and 20-100 MB/s each.
pub fn duration(
    objects: u64,
    bytes: u64,
    measured: Option<Measured>,
    concurrency: usize,
) -> Duration {
    let (objects, bytes) = (objects as f64, bytes as f64);
    match measured.filter(|m| m.seconds > 0.0 && m.objects > 0) {
        Some(m) => {
            let (bps, ops) = (m.bytes as f64 / m.seconds, m.objects as f64 / m.seconds);
            let by_bytes = if bps > 0.0 { bytes / bps } else { 0.0 };
            let by_objects = objects / ops;
            Duration {
                low_seconds: by_bytes.max(by_objects),
                high_seconds: by_bytes + by_objects,
                basis: "measured",
                bytes_per_second: bps,
                objects_per_second: ops,
            }
        }
        None => {
            let c = concurrency.max(1) as f64;
            Duration {
                low_seconds: (objects * 0.05 / c).max(bytes / (c * 100e6)),
                high_seconds: objects * 0.2 / c + bytes / (c * 20e6),
                basis: "guess",
                bytes_per_second: c * 20e6,
                objects_per_second: c / 0.2,
            }
        }
    }
}

/// Everything `ferry estimate` says of one rule's next iteration.
#[derive(Clone, Debug)]
pub struct Estimate {
    /// The rule.
    pub rule: String,
    /// What the dry run found.
    pub found: DryRun,
    /// The copies, by how they go, and their requests.
    pub tally: Tally,
    /// What it costs, where `[pricing]` says.
    pub cost: Option<Cost>,
    /// How long it takes.
    pub time: Duration,
}

impl Estimate {
    /// The estimate from a dry run's findings and tally: the listing's own requests join the
    /// copies'.
    pub fn new(
        rule: &Rule,
        found: DryRun,
        mut tally: Tally,
        pricing: &BTreeMap<String, Pricing>,
        time: Duration,
    ) -> Estimate {
        // A rule that copies versions lists the source's versions (and not the destination).
        let versions = rule.versions == ferry_core::config::Versions::All || rule.at_ms.is_some();
        let source_listing = if versions {
            "ListObjectVersions"
        } else {
            "ListObjectsV2"
        };
        tally.requests.source(source_listing, found.source_pages);
        tally
            .requests
            .destination("ListObjectsV2", found.destination_pages);
        Estimate {
            rule: rule.name.clone(),
            cost: cost(rule, &tally.requests, tally.egress_bytes, pricing),
            found,
            tally,
            time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::config::{Destination, Source};
    use ferry_core::task::{Expected, ObjectVersion};

    fn rule(same: bool) -> Rule {
        Rule::with_defaults(
            "r".into(),
            Source {
                endpoint: "a".into(),
                bucket: "s".into(),
                prefixes: Vec::new(),
            },
            Destination {
                endpoint: if same { "a" } else { "b" }.into(),
                bucket: "d".into(),
                storage_class: None,
            },
        )
    }

    fn copy(size: u64, etag: &str) -> Task {
        Task::CopyObject {
            source: ObjectVersion {
                key: "k".into(),
                size,
                etag: etag.into(),
                ..ObjectVersion::default()
            },
            destination: Expected::default(),
        }
    }

    #[test]
    fn copies_are_counted_by_how_they_go() {
        let mut t = Tally::default();
        let r = rule(false);
        t.add(&r, None, &copy(10, "0cc175b9c0f1b6a831c399e269772661"));
        t.add(
            &r,
            None,
            &copy(12 << 20, "0cc175b9c0f1b6a831c399e269772661-2"),
        );
        t.add(
            &r,
            None,
            &copy(250 << 20, "0cc175b9c0f1b6a831c399e269772661"),
        );
        assert_eq!((t.single, t.multipart, t.parts), (1, 2, 2 + 5));
        assert_eq!(t.requests.source["GetObject"], 1 + 7);
        // The 2-part source: HEAD partNumber=1 (two equal parts need no second), then HEAD.
        assert_eq!(t.requests.source["HeadObject"], 2 + 1);
        assert_eq!(t.requests.destination["UploadPart"], 7);
        assert_eq!(t.requests.destination["CompleteMultipartUpload"], 2);
        assert_eq!(t.egress_bytes, 10 + (12 << 20) + (250 << 20));

        let mut same = Tally::default();
        same.add(&rule(true), None, &copy(10, "x"));
        assert_eq!(same.requests.destination["CopyObject"], 1);
        assert!(same.requests.source.is_empty());
        assert_eq!(same.egress_bytes, 0);
    }

    #[test]
    fn cost_counts_classes_and_egress_and_needs_a_price() {
        let r = rule(false);
        let mut t = Tally::default();
        for _ in 0..1000 {
            t.add(&r, None, &copy(1_000_000, "x"));
        }
        assert_eq!(
            cost(&r, &t.requests, t.egress_bytes, &BTreeMap::new()),
            None
        );
        let pricing = BTreeMap::from([(
            "a".to_string(),
            Pricing {
                egress_per_gb: 0.09,
                class_a_per_1000: 0.005,
                class_b_per_1000: 0.0004,
            },
        )]);
        let c = cost(&r, &t.requests, t.egress_bytes, &pricing).expect("priced");
        assert!((c.egress - 0.09).abs() < 1e-9, "{c:?}");
        assert!((c.source_requests - 0.0004).abs() < 1e-9, "{c:?}");
        assert_eq!(c.destination_requests, 0.0);
        assert_eq!(c.unpriced, vec!["b".to_string()]);
    }

    #[test]
    fn time_comes_from_measured_rates_else_is_a_guess() {
        let m = Measured {
            bytes: 100,
            objects: 10,
            seconds: 10.0,
        };
        let d = duration(20, 100, Some(m), 8);
        assert_eq!(
            (d.low_seconds, d.high_seconds, d.basis),
            (20.0, 30.0, "measured")
        );
        let g = duration(20, 100, None, 8);
        assert_eq!(g.basis, "guess");
        assert!(g.low_seconds < g.high_seconds);
    }
}
