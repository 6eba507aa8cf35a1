//! `ferry verify`: both buckets compared key by key, independently of the ledger.
//!
//! Each rule prefix is cut into key ranges (as iterations cut it, from sampled pages of the
//! source), and the ranges are listed on both sides and merge-joined in parallel, a page per
//! side at a time: memory is bounded by the lanes, whatever the bucket's size. A key's
//! listing decides it where it can (sizes, ETags of one kind); HEAD settles the rest from
//! checksums and, with `headers`, compares headers, metadata, storage class and tags; `deep`
//! (or the `sample` keys of each range) reads both objects in full.

mod check;
pub mod verdict;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_core::config::Rule;
use ferry_core::object::ObjectMeta;
use ferry_core::policy::Joined;
use ferry_storage::{ObjectStore, StorageError};
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use rand::Rng;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::CoordinatorError;
use crate::diff::{MergeJoin, Step};
use crate::iteration::spawn_listing;
use crate::ranges::{KeyRange, ranges_of};
use check::{Checker, archived};
pub use verdict::Verdict;

/// How a verification runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Compare headers, metadata, storage class and tags too.
    pub headers: bool,
    /// Read every object on both sides in full and compare the bytes.
    pub deep: bool,
    /// Read this many random keys of each key range in full (the rest as without `deep`).
    pub sample: Option<usize>,
    /// Key ranges listed at once.
    pub lanes: usize,
    /// Keys checked at once in each range (HEADs, reads).
    pub checks: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            headers: false,
            deep: false,
            sample: None,
            lanes: 8,
            checks: 32,
        }
    }
}

/// One side's object, as a finding shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    /// Size in bytes.
    pub size: u64,
    /// ETag.
    pub etag: String,
}

/// The verdict on one key, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// The key.
    pub key: String,
    /// The verdict.
    pub verdict: Verdict,
    /// For a match: what showed it (`etag`, `multipart etag`, `checksum`, `bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<&'static str>,
    /// For `differs`: each thing that differs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differs: Vec<String>,
    /// For `unverifiable`, `archived` and keys that changed while verifying: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// The source object, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Side>,
    /// The destination object, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Side>,
}

/// Which side a key was seen on, for a finding about one side.
#[derive(Clone, Copy)]
enum Seen {
    Source,
    Destination,
}

impl Finding {
    fn side(o: &ObjectMeta) -> Side {
        Side {
            size: o.size,
            etag: o.etag.clone(),
        }
    }

    fn both(
        source: &ObjectMeta,
        destination: &ObjectMeta,
        verdict: Verdict,
        how: Option<&'static str>,
        differs: Vec<String>,
    ) -> Self {
        Finding {
            key: source.key.clone(),
            verdict,
            how: how.filter(|_| verdict == Verdict::Match),
            differs,
            why: None,
            source: Some(Self::side(source)),
            destination: Some(Self::side(destination)),
        }
    }

    fn one(seen: Seen, object: &ObjectMeta, verdict: Verdict) -> Self {
        let side = Some(Self::side(object));
        let (source, destination) = match seen {
            Seen::Source => (side, None),
            Seen::Destination => (None, side),
        };
        Finding {
            key: object.key.clone(),
            verdict,
            how: None,
            differs: Vec::new(),
            why: None,
            source,
            destination,
        }
    }
}

/// What a verification found, in all.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Keys per verdict (every verdict, zeros included).
    pub verdicts: BTreeMap<&'static str, u64>,
    /// Objects and bytes listed at the source.
    pub source_objects: u64,
    /// Bytes of those.
    pub source_bytes: u64,
    /// Objects listed at the destination.
    pub destination_objects: u64,
    /// Bytes of those.
    pub destination_bytes: u64,
    /// Bytes read in full (`deep`, `sample`), both sides.
    pub bytes_read: u64,
    /// Key ranges listed.
    pub ranges: usize,
}

impl Summary {
    /// Keys with this verdict.
    pub fn count(&self, verdict: Verdict) -> u64 {
        self.verdicts.get(verdict.as_str()).copied().unwrap_or(0)
    }

    /// Whether any key is missing or differs.
    pub fn failed(&self) -> bool {
        Verdict::ALL.iter().any(|v| v.fails() && self.count(*v) > 0)
    }

    fn add(&mut self, other: Summary) {
        for (v, n) in other.verdicts {
            *self.verdicts.entry(v).or_default() += n;
        }
        self.source_objects += other.source_objects;
        self.source_bytes += other.source_bytes;
        self.destination_objects += other.destination_objects;
        self.destination_bytes += other.destination_bytes;
    }
}

/// Compares the rule's source and destination key by key and reports every finding that is
/// not a match to `each` (from several tasks at once), as it is made.
pub async fn verify(
    source: Arc<dyn ObjectStore>,
    destination: Arc<dyn ObjectStore>,
    rule: &Rule,
    options: Options,
    cancel: &CancellationToken,
    each: &(dyn Fn(&Finding) + Send + Sync),
) -> Result<Summary, CoordinatorError> {
    let lanes = options.lanes.max(1);
    let checker = Checker {
        source: source.clone(),
        destination,
        source_bucket: rule.source.bucket.clone(),
        destination_bucket: rule.destination.bucket.clone(),
        expected_class: rule
            .destination
            .storage_class
            .as_ref()
            .map(|c| c.as_str().to_string()),
        options,
        bytes_read: AtomicU64::new(0),
    };
    let mut ranges = Vec::new();
    for prefix in rule.listing_prefixes() {
        let boundaries = if rule.list_ranges > 1 {
            crate::ranges::split(
                &source,
                &rule.source.bucket,
                &prefix,
                rule.list_ranges,
                rule.list_range_min_keys,
            )
            .await?
        } else {
            Vec::new()
        };
        ranges.extend(
            ranges_of(&boundaries)
                .into_iter()
                .map(|r| (prefix.clone(), r)),
        );
    }
    let count = ranges.len();
    let lane = Lane {
        checker: &checker,
        rule,
        cancel,
        each,
        now_ms: ferry_core::filter::now_ms(),
    };
    let mut summary = futures::stream::iter(ranges)
        .map(|(prefix, range)| lane.run(prefix, range))
        .buffer_unordered(lanes)
        .try_fold(Summary::default(), |mut all, one| async move {
            all.add(one);
            Ok(all)
        })
        .await?;
    for v in Verdict::ALL {
        summary.verdicts.entry(v.as_str()).or_default();
    }
    summary.bytes_read = checker.bytes_read.load(Ordering::Relaxed);
    summary.ranges = count;
    Ok(summary)
}

/// What every key range shares.
struct Lane<'a> {
    checker: &'a Checker,
    rule: &'a Rule,
    cancel: &'a CancellationToken,
    each: &'a (dyn Fn(&Finding) + Send + Sync),
    now_ms: i64,
}

/// A key both sides hold, waiting for its requests.
type Pair = (ObjectMeta, ObjectMeta);

/// What a joined key needs: nothing more (its finding), or checks of both objects.
enum AtOnce {
    Found(Finding),
    Check(Box<Pair>),
}

impl Lane<'_> {
    /// Lists one key range on both sides, merge-joins them and judges every key.
    async fn run(&self, prefix: String, range: KeyRange) -> Result<Summary, CoordinatorError> {
        let c = self.checker;
        let list = |store: &Arc<dyn ObjectStore>, bucket: &str| {
            spawn_listing(
                store.clone(),
                bucket.to_string(),
                prefix.clone(),
                range.clone(),
            )
        };
        let mut src = list(&c.source, &c.source_bucket);
        let mut dst = list(&c.destination, &c.destination_bucket);
        let mut join = MergeJoin::new();
        let mut summary = Summary::default();
        let mut checks = FuturesUnordered::new();
        let mut sample = Reservoir::new(c.options.sample.unwrap_or(0));
        loop {
            let pair = match join.next() {
                Step::NeedSource => {
                    match src.recv().await {
                        Some(page) => {
                            let objects = page?.objects;
                            summary.source_objects += objects.len() as u64;
                            summary.source_bytes += objects.iter().map(|o| o.size).sum::<u64>();
                            join.push_source(objects);
                        }
                        None => join.finish_source(),
                    }
                    continue;
                }
                Step::NeedDestination => {
                    match dst.recv().await {
                        Some(page) => {
                            let objects = page?.objects;
                            summary.destination_objects += objects.len() as u64;
                            summary.destination_bytes +=
                                objects.iter().map(|o| o.size).sum::<u64>();
                            join.push_destination(objects);
                        }
                        None => join.finish_destination(),
                    }
                    continue;
                }
                Step::Done => break,
                Step::Item(joined) => match self.at_once(&prefix, joined) {
                    AtOnce::Found(finding) => {
                        self.found(&mut summary, &finding);
                        continue;
                    }
                    AtOnce::Check(pair) => *pair,
                },
            };
            let Some((source, destination)) = sample.offer(pair) else {
                continue;
            };
            if let Some(finding) = c.by_listing_alone(&source, &destination) {
                self.found(&mut summary, &finding);
                continue;
            }
            checks.push(self.check((source, destination), c.options.deep));
            while checks.len() >= c.options.checks.max(1) {
                self.next_check(&mut checks, &mut summary).await?;
            }
            if self.cancel.is_cancelled() {
                return Err(CoordinatorError::Cancelled);
            }
        }
        for pair in sample.take() {
            checks.push(self.check(pair, true));
            while checks.len() >= c.options.checks.max(1) {
                self.next_check(&mut checks, &mut summary).await?;
            }
        }
        while !checks.is_empty() {
            self.next_check(&mut checks, &mut summary).await?;
        }
        Ok(summary)
    }

    async fn check(
        &self,
        (source, destination): Pair,
        deep: bool,
    ) -> Result<Finding, StorageError> {
        self.checker.both(source, destination, deep).await
    }

    async fn next_check<F>(
        &self,
        checks: &mut FuturesUnordered<F>,
        summary: &mut Summary,
    ) -> Result<(), CoordinatorError>
    where
        F: Future<Output = Result<Finding, StorageError>>,
    {
        if let Some(finding) = checks.next().await {
            self.found(summary, &finding?);
        }
        Ok(())
    }

    fn found(&self, summary: &mut Summary, finding: &Finding) {
        *summary
            .verdicts
            .entry(finding.verdict.as_str())
            .or_default() += 1;
        if finding.verdict != Verdict::Match {
            (self.each)(finding);
        }
    }

    /// The finding for a key that needs no request, else the pair to check.
    fn at_once(&self, prefix: &str, joined: Joined) -> AtOnce {
        let (object, seen) = match &joined {
            Joined::SourceOnly(s) | Joined::Both { source: s, .. } => (s, Seen::Source),
            Joined::DestinationOnly(d) => (d, Seen::Destination),
        };
        let relative = object.key.strip_prefix(prefix).unwrap_or(&object.key);
        let filter = &self.rule.filter;
        if !filter.is_empty()
            && !filter.admits(relative, object.size, object.last_modified_ms, self.now_ms)
        {
            return AtOnce::Found(Finding::one(seen, object, Verdict::Excluded));
        }
        match joined {
            Joined::SourceOnly(s) if verdict::archive_class(s.storage_class.as_deref()) => {
                let mut finding = Finding::one(Seen::Source, &s, Verdict::Archived);
                finding.why = archived(&s, &s).why;
                AtOnce::Found(finding)
            }
            Joined::SourceOnly(s) => {
                AtOnce::Found(Finding::one(Seen::Source, &s, Verdict::Missing))
            }
            Joined::DestinationOnly(d) => {
                AtOnce::Found(Finding::one(Seen::Destination, &d, Verdict::Extra))
            }
            Joined::Both {
                source,
                destination,
            } => AtOnce::Check(Box::new((source, destination))),
        }
    }
}

/// A uniform random sample of at most `size` of the keys offered (Algorithm R): a key not
/// kept, or pushed out later, is given back to be checked the ordinary way.
struct Reservoir {
    size: usize,
    seen: u64,
    kept: Vec<Pair>,
}

impl Reservoir {
    fn new(size: usize) -> Self {
        Self {
            size,
            seen: 0,
            kept: Vec::new(),
        }
    }

    /// Offers a pair of the same size on both sides; gives back the pair not (or no longer)
    /// kept, if any.
    fn offer(&mut self, pair: Pair) -> Option<Pair> {
        if self.size == 0 || pair.0.size != pair.1.size {
            return Some(pair);
        }
        self.seen += 1;
        if self.kept.len() < self.size {
            self.kept.push(pair);
            return None;
        }
        let slot = rand::rng().random_range(0..self.seen) as usize;
        match self.kept.get_mut(slot) {
            Some(kept) => Some(std::mem::replace(kept, pair)),
            None => Some(pair),
        }
    }

    fn take(&mut self) -> Vec<Pair> {
        std::mem::take(&mut self.kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str) -> Pair {
        let o = ObjectMeta {
            key: key.into(),
            size: 1,
            ..ObjectMeta::default()
        };
        (o.clone(), o)
    }

    #[test]
    fn a_reservoir_keeps_its_size_and_gives_every_other_key_back_once() {
        let mut r = Reservoir::new(3);
        let mut back = Vec::new();
        for i in 0..100 {
            back.extend(r.offer(pair(&format!("{i:03}"))));
        }
        let kept = r.take();
        assert_eq!(kept.len(), 3);
        let mut all: Vec<_> = back.iter().chain(&kept).map(|p| p.0.key.clone()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100, "every key once, kept or given back");
    }

    #[test]
    fn a_reservoir_samples_every_position() {
        // Over many runs, late keys are kept too, not only the first ones.
        let mut late = 0;
        for _ in 0..200 {
            let mut r = Reservoir::new(2);
            for i in 0..50 {
                r.offer(pair(&format!("{i:02}")));
            }
            late += r.take().iter().filter(|p| p.0.key.as_str() >= "25").count();
        }
        assert!(late > 100, "late keys kept {late} times of 400");
    }
}
