//! The benchmark's datasets and how they are uploaded.
//!
//! Contents follow from the keys alone ([`crate::pattern`]), so a dataset can be re-created
//! identically on any machine.

use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::Bytes;
use ferry_storage::{
    BodyStream, ObjectAttrs, ObjectStore, PutOptions, StorageError, UploadedPart, WriteCondition,
};
use futures::{StreamExt, TryStreamExt, stream};

use crate::pattern;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Bytes generated per body chunk.
const CHUNK: u64 = MIB;

/// One dataset: `count` objects of `size` bytes; objects whose index is in `multipart` are
/// uploaded as multipart objects with parts of `part_size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// Its name, also the key prefix's first word.
    pub name: &'static str,
    /// Number of objects.
    pub count: u64,
    /// Bytes per object.
    pub size: u64,
    /// Indexes of the objects uploaded as multipart.
    pub multipart: Vec<u64>,
    /// Part size of the multipart objects.
    pub part_size: u64,
    /// Directories the keys spread over (ferry shards work by first path segment); 0 for
    /// one flat prefix of hashed names.
    pub dirs: u64,
}

impl Dataset {
    /// The named dataset, with its object count (small, medium) or object size (large)
    /// multiplied by `scale` for quick runs.
    pub fn named(name: &str, scale: f64) -> anyhow::Result<Dataset> {
        if !(scale > 0.0 && scale <= 1.0) {
            bail!("--scale must be in (0, 1], got {scale}");
        }
        let scaled = |n: u64, min: u64| ((n as f64 * scale).round() as u64).max(min);
        Ok(match name {
            "small" => Dataset {
                name: "small",
                count: scaled(20_000, 1),
                size: 4 * KIB,
                multipart: vec![],
                part_size: 0,
                dirs: 64,
            },
            "medium" => Dataset {
                name: "medium",
                count: scaled(2_000, 1),
                size: MIB,
                multipart: vec![],
                part_size: 0,
                dirs: 16,
            },
            "large" => Dataset {
                name: "large",
                count: 4,
                // Whole MiB, and at least three 16 MiB parts.
                size: scaled(GIB / MIB, 48) * MIB,
                multipart: vec![2, 3],
                part_size: 16 * MIB,
                dirs: 4,
            },
            "flat" => Dataset {
                name: "flat",
                count: scaled(1_000_000, 1),
                size: 0,
                multipart: vec![],
                part_size: 0,
                dirs: 0,
            },
            other => bail!("unknown dataset {other:?}: expected small, medium, large or flat"),
        })
    }

    /// The key of object `index`.
    pub fn key(&self, index: u64) -> String {
        if self.dirs == 0 {
            // A bijection of the index, so the names are distinct and spread evenly.
            let mixed = index.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31);
            return format!("flat/{mixed:016x}");
        }
        format!("dir{:02}/{}-{index:06}.bin", index % self.dirs, self.name)
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.count * self.size
    }
}

/// A body of `len` bytes of stream `seed` from `offset`, generated a chunk at a time.
fn body(seed: u64, offset: u64, len: u64) -> BodyStream {
    let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
        let at = i * CHUNK;
        let n = CHUNK.min(len - at);
        Ok::<_, StorageError>(Bytes::from(pattern::pattern(seed, offset + at, n as usize)))
    });
    Box::pin(stream::iter(chunks))
}

fn attrs(dataset: &Dataset) -> ObjectAttrs {
    let mut attrs = ObjectAttrs {
        content_type: Some("application/octet-stream".into()),
        ..ObjectAttrs::default()
    };
    attrs
        .metadata
        .insert("dataset".into(), dataset.name.to_string());
    attrs
}

/// Uploads `dataset` into `bucket`, `concurrency` objects (or parts) at a time.
pub async fn seed(
    store: Arc<dyn ObjectStore>,
    bucket: &str,
    dataset: &Dataset,
    concurrency: usize,
) -> anyhow::Result<()> {
    let attrs = attrs(dataset);
    stream::iter(0..dataset.count)
        .map(|i| {
            let (store, attrs) = (store.clone(), &attrs);
            async move {
                let key = dataset.key(i);
                let seed = pattern::seed_of(&key);
                if dataset.multipart.contains(&i) {
                    put_multipart(store, bucket, &key, seed, dataset, attrs, concurrency).await
                } else {
                    store
                        .put(
                            bucket,
                            &key,
                            body(seed, 0, dataset.size),
                            dataset.size,
                            PutOptions {
                                attrs,
                                content_md5: None,
                                checksum: None,
                                condition: &WriteCondition::None,
                                tagging: None,
                                trailer: true,
                            },
                        )
                        .await
                        .map(drop)
                        .with_context(|| format!("uploading {key}"))
                }
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

async fn put_multipart(
    store: Arc<dyn ObjectStore>,
    bucket: &str,
    key: &str,
    seed: u64,
    dataset: &Dataset,
    attrs: &ObjectAttrs,
    concurrency: usize,
) -> anyhow::Result<()> {
    let upload = store.create_multipart(bucket, key, attrs, None).await?;
    let parts = dataset.size.div_ceil(dataset.part_size);
    let mut uploaded: Vec<UploadedPart> = stream::iter(0..parts)
        .map(|p| {
            let (store, upload) = (store.clone(), &upload);
            async move {
                let at = p * dataset.part_size;
                let len = dataset.part_size.min(dataset.size - at);
                let number = p as u32 + 1;
                let etag = store
                    .upload_part(bucket, key, upload, number, body(seed, at, len), len, true)
                    .await?
                    .etag;
                Ok::<_, anyhow::Error>(UploadedPart {
                    number,
                    etag,
                    size: len,
                })
            }
        })
        .buffer_unordered(concurrency.min(8))
        .try_collect()
        .await
        .with_context(|| format!("uploading the parts of {key}"))?;
    uploaded.sort_by_key(|p| p.number);
    store
        .complete_multipart(bucket, key, &upload, &uploaded, &WriteCondition::None)
        .await
        .with_context(|| format!("completing {key}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_match_the_issue() {
        let small = Dataset::named("small", 1.0).unwrap();
        assert_eq!((small.count, small.size), (20_000, 4096));
        let medium = Dataset::named("medium", 1.0).unwrap();
        assert_eq!((medium.count, medium.size), (2_000, MIB));
        let large = Dataset::named("large", 1.0).unwrap();
        assert_eq!(
            (large.count, large.size, large.multipart.len()),
            (4, GIB, 2)
        );
        assert_eq!(Dataset::named("large", 0.01).unwrap().size, 48 * MIB);
        assert!(Dataset::named("huge", 1.0).is_err());
        assert!(Dataset::named("small", 0.0).is_err());
    }

    #[test]
    fn keys_sort_in_index_order_within_a_directory() {
        let small = Dataset::named("small", 1.0).unwrap();
        assert_eq!(small.key(65), "dir01/small-000065.bin");
        assert!(small.key(1) < small.key(65));
    }
}
