//! Checks a replica against its source: same keys, same sizes, same bytes.
//!
//! Both listings are merge-joined page by page (memory stays at a page per side). Equal plain
//! MD5 ETags prove equal bytes; equal multipart ETags prove equal parts. Any other pair (a
//! tool that re-chunked a multipart object, say) is read in full on both sides and compared
//! by MD5.

use std::sync::Arc;

use anyhow::Context;
use ferry_coordinator::diff::{Joined, MergeJoin, Step};
use ferry_storage::{ObjectMeta, ObjectStore, etag_is_md5, list_pages};
use futures::{StreamExt, TryStreamExt, stream};
use md5::{Digest, Md5};

/// Objects whose bytes are compared by reading them, held before a batch is checked.
const BATCH: usize = 64;

/// What a check found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Objects at the source.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Objects whose ETags are equal.
    pub etag_equal: u64,
    /// Objects whose bytes were read and compared.
    pub content_compared: u64,
    /// Source objects missing at the destination.
    pub missing: u64,
    /// Destination objects with no source.
    pub extra: u64,
    /// Objects whose size or bytes differ.
    pub different: u64,
    /// Up to ten keys that failed, for the message.
    pub examples: Vec<String>,
}

impl Report {
    /// Whether the destination is an exact replica.
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }

    fn fail(&mut self, what: &str, key: &str) {
        if self.examples.len() < 10 {
            self.examples.push(format!("{what}: {key}"));
        }
    }
}

/// Compares every object of `source` with `destination`.
pub async fn verify(
    source: (Arc<dyn ObjectStore>, &str),
    destination: (Arc<dyn ObjectStore>, &str),
) -> anyhow::Result<Report> {
    let mut src = Box::pin(list_pages(
        source.0.clone(),
        source.1.into(),
        String::new(),
        None,
    ));
    let mut dst = Box::pin(list_pages(
        destination.0.clone(),
        destination.1.into(),
        String::new(),
        None,
    ));
    let mut join = MergeJoin::new();
    let mut report = Report::default();
    let mut to_read = Vec::new();
    loop {
        match join.next() {
            Step::NeedSource => match src.try_next().await.context("listing the source")? {
                Some(page) => join.push_source(page.objects),
                None => join.finish_source(),
            },
            Step::NeedDestination => {
                match dst.try_next().await.context("listing the destination")? {
                    Some(page) => join.push_destination(page.objects),
                    None => join.finish_destination(),
                }
            }
            Step::Done => break,
            Step::Item(Joined::SourceOnly(s)) => {
                report.objects += 1;
                report.bytes += s.size;
                report.missing += 1;
                report.fail("missing", &s.key);
            }
            Step::Item(Joined::DestinationOnly(d)) => {
                report.extra += 1;
                report.fail("extra", &d.key);
            }
            Step::Item(Joined::Both {
                source: s,
                destination: d,
            }) => {
                report.objects += 1;
                report.bytes += s.size;
                if s.size != d.size {
                    report.different += 1;
                    report.fail("size differs", &s.key);
                } else if s.etag == d.etag {
                    report.etag_equal += 1;
                } else if etag_is_md5(&s.etag) && etag_is_md5(&d.etag) {
                    report.different += 1;
                    report.fail("content differs", &s.key);
                } else {
                    to_read.push(s);
                    if to_read.len() >= BATCH {
                        compare(&source, &destination, &mut to_read, &mut report).await?;
                    }
                }
            }
        }
    }
    compare(&source, &destination, &mut to_read, &mut report).await?;
    Ok(report)
}

/// Reads each object of `batch` on both sides and compares their MD5s.
async fn compare(
    source: &(Arc<dyn ObjectStore>, &str),
    destination: &(Arc<dyn ObjectStore>, &str),
    batch: &mut Vec<ObjectMeta>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let results: Vec<(String, bool)> = stream::iter(batch.drain(..))
        .map(|o| async move {
            let (a, b) = futures::try_join!(
                md5_of(&*source.0, source.1, &o.key),
                md5_of(&*destination.0, destination.1, &o.key)
            )?;
            Ok::<_, anyhow::Error>((o.key, a == b))
        })
        .buffer_unordered(4)
        .try_collect()
        .await?;
    for (key, same) in results {
        report.content_compared += 1;
        if !same {
            report.different += 1;
            report.fail("content differs", &key);
        }
    }
    Ok(())
}

async fn md5_of(store: &dyn ObjectStore, bucket: &str, key: &str) -> anyhow::Result<[u8; 16]> {
    let object = store
        .get(bucket, key, None, None)
        .await
        .with_context(|| format!("reading {key} on {}", store.name()))?;
    let mut body = object.body;
    let mut hash = Md5::new();
    while let Some(chunk) = body.next().await {
        hash.update(chunk?);
    }
    Ok(hash.finalize().into())
}
