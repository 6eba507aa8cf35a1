//! The storage contract: what every [`ObjectStore`] does that ferry depends on, as one suite
//! run against each store there is: [`crate::memstore::MemStore`], and the S3 path against
//! moto, Garage and Ceph RGW (`tests/storage_contract.rs`).
//!
//! Where stores differ, the suite does not assume: it probes the store first, and holds it to
//! what the probe found, both ways. A store whose probe says it honours `If-None-Match: *`
//! must refuse the write that condition forbids; one whose probe says it ignores it must then
//! write anyway, as ferry's fallbacks expect. Keys go under a fresh `contract-*/` folder, and
//! are deleted at the end.

use bytes::Bytes;
use md5::{Digest, Md5};

use crate::{
    BodyStream, ByteRange, Capabilities, Checksum, ChecksumKind, ErrorKind, ObjectAttrs,
    ObjectStore, PutOptions, StorageError, UploadedPart, WriteCondition, Written, etag_is_md5,
};

/// The smallest part S3 takes before the last one.
const PART: usize = 5 * 1024 * 1024;

/// Runs the whole contract against `store`, in `bucket` (which must exist, and may hold other
/// keys). Panics, naming the store and the clause, at the first breach.
pub async fn storage_contract(store: &dyn ObjectStore, bucket: &str) {
    let caps = crate::probe(store, bucket)
        .await
        .unwrap_or_else(|e| panic!("{}: the probe failed: {e}", store.name()));
    let at = Contract {
        store,
        bucket,
        prefix: format!("contract-{:08x}/", rand::random::<u32>()),
        caps,
    };
    at.listing().await;
    at.reads_and_ranges().await;
    at.put_conditions().await;
    at.copies().await;
    at.multipart().await;
    at.tags().await;
    at.checksums().await;
    at.errors().await;
    at.clean_up().await;
}

struct Contract<'a> {
    store: &'a dyn ObjectStore,
    bucket: &'a str,
    prefix: String,
    caps: Capabilities,
}

/// Bytes that differ at every offset a range could start at.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

fn body(bytes: &[u8]) -> BodyStream {
    let bytes = Bytes::copy_from_slice(bytes);
    Box::pin(futures::stream::once(async move {
        Ok::<_, StorageError>(bytes)
    }))
}

async fn read_all(mut body: BodyStream) -> Vec<u8> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("a body chunk"));
    }
    out
}

impl Contract<'_> {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Asserts that `result` failed with `kind`, else breaches clause `what`.
    fn refused<T>(&self, result: Result<T, StorageError>, kind: ErrorKind, what: &str) {
        assert_eq!(
            result.err().map(|e| e.kind),
            Some(kind),
            "{}",
            self.breach(what)
        );
    }

    /// A breach of clause `what`, with the store's name.
    fn breach(&self, what: &str) -> String {
        format!("{}: {what}", self.store.name())
    }

    async fn put_with(
        &self,
        name: &str,
        bytes: &[u8],
        options: PutOptions<'_>,
    ) -> Result<Written, StorageError> {
        let key = self.key(name);
        let length = bytes.len() as u64;
        self.store
            .put(self.bucket, &key, body(bytes), length, options)
            .await
    }

    /// A plain write with Content-MD5, and the given condition.
    async fn put(
        &self,
        name: &str,
        bytes: &[u8],
        condition: &WriteCondition,
    ) -> Result<Written, StorageError> {
        let md5 = hex::encode(Md5::digest(bytes));
        let attrs = ObjectAttrs::default();
        let options = PutOptions {
            content_md5: Some(&md5),
            ..PutOptions::new(&attrs, condition)
        };
        self.put_with(name, bytes, options).await
    }

    /// Completes an upload. A 2xx answer the client cannot read (moto's root element is not
    /// the one the SDK expects) completed it, as ferry takes it: HEAD then says what it wrote.
    async fn complete(&self, key: &str, id: &str, parts: &[UploadedPart]) -> Written {
        let done = self
            .store
            .complete_multipart(self.bucket, key, id, parts, &WriteCondition::None)
            .await;
        match done {
            Ok(written) => written,
            Err(e) if e.status.is_some_and(|s| s < 300) => Written {
                etag: String::new(),
                etag_may_be_md5: false,
            },
            Err(e) => panic!("{}", self.breach(&format!("complete: {e}"))),
        }
    }

    async fn read(&self, name: &str, range: Option<ByteRange>) -> Vec<u8> {
        let got = self
            .store
            .get(self.bucket, &self.key(name), range, None)
            .await
            .unwrap_or_else(|e| panic!("{}", self.breach(&format!("GET {name}: {e}"))));
        read_all(got.body).await
    }

    /// Keys are listed in order, under their prefix, after `start_after`, with their sizes
    /// and the ETags their writes answered.
    async fn listing(&self) {
        let names = ["a", "b/1", "b/2", "c"];
        let mut etags = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let w = self
                .put(name, &pattern(10 + i, 1), &WriteCondition::None)
                .await
                .unwrap_or_else(|e| panic!("{}", self.breach(&format!("PUT {name}: {e}"))));
            etags.push(w.etag);
        }
        let page = self
            .store
            .list_page(self.bucket, &self.prefix, None, None)
            .await
            .expect("a listing");
        let listed: Vec<(String, u64)> = page
            .objects
            .iter()
            .map(|o| (o.key.clone(), o.size))
            .collect();
        let written: Vec<(String, u64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (self.key(n), 10 + i as u64))
            .collect();
        assert_eq!(listed, written, "{}", self.breach("listed keys and sizes"));
        assert!(page.next_token.is_none(), "{}", self.breach("one page"));
        if self.caps.etags_are_md5 {
            let listed: Vec<&str> = page.objects.iter().map(|o| o.etag.as_str()).collect();
            assert_eq!(listed, etags, "{}", self.breach("listed ETags"));
        }
        let after = self.key("b/1");
        let page = self
            .store
            .list_page(self.bucket, &self.prefix, Some(&after), None)
            .await
            .expect("a listing after a key");
        let keys: Vec<String> = page.objects.into_iter().map(|o| o.key).collect();
        assert_eq!(
            keys,
            [self.key("b/2"), self.key("c")],
            "{}",
            self.breach("start-after")
        );
        let page = self
            .store
            .list_page(self.bucket, &self.key("b/"), None, None)
            .await
            .expect("a listing of a folder");
        assert_eq!(
            page.objects.len(),
            2,
            "{}",
            self.breach("a prefix lists its keys only")
        );
    }

    /// A write's headers come back on HEAD and GET; a range reads exactly its bytes; a read
    /// pinned to another ETag is refused.
    async fn reads_and_ranges(&self) {
        let bytes = pattern(1000, 2);
        let mut attrs = ObjectAttrs {
            content_type: Some("text/plain".into()),
            cache_control: Some("max-age=60".into()),
            ..ObjectAttrs::default()
        };
        attrs.metadata.insert("colour".into(), "blue".into());
        let md5 = hex::encode(Md5::digest(&bytes));
        let options = PutOptions {
            content_md5: Some(&md5),
            ..PutOptions::new(&attrs, &WriteCondition::None)
        };
        let written = self.put_with("read", &bytes, options).await.expect("PUT");
        let key = self.key("read");
        let head = self
            .store
            .head(self.bucket, &key, None)
            .await
            .expect("HEAD");
        assert_eq!(head.size, 1000, "{}", self.breach("HEAD size"));
        assert_eq!(head.etag, written.etag, "{}", self.breach("HEAD ETag"));
        assert_eq!(
            head.attrs.content_type,
            attrs.content_type,
            "{}",
            self.breach("Content-Type")
        );
        assert_eq!(
            head.attrs.cache_control,
            attrs.cache_control,
            "{}",
            self.breach("Cache-Control")
        );
        assert_eq!(
            head.attrs.metadata,
            attrs.metadata,
            "{}",
            self.breach("metadata")
        );
        if self.caps.etags_are_md5 {
            assert_eq!(head.etag, md5, "{}", self.breach("an MD5 ETag"));
            assert!(
                etag_is_md5(&head.etag) && head.etag_is_md5,
                "{}",
                self.breach("MD5 form")
            );
        }
        assert_eq!(
            self.read("read", None).await,
            bytes,
            "{}",
            self.breach("GET body")
        );
        for (first, last) in [(0, 0), (10, 19), (990, 999)] {
            let got = self.read("read", Some(ByteRange { first, last })).await;
            let want = &bytes[first as usize..=last as usize];
            assert_eq!(
                got,
                want,
                "{}",
                self.breach(&format!("range {first}-{last}"))
            );
        }
        self.pinned_reads(&key, &head.etag).await;
    }

    /// A read pinned to another ETag is refused, one pinned to the object's is not.
    async fn pinned_reads(&self, key: &str, etag: &str) {
        let wrong = "0123456789abcdef0123456789abcdef";
        let pinned = self.store.get(self.bucket, key, None, Some(wrong)).await;
        self.refused(
            pinned,
            ErrorKind::PreconditionFailed,
            "GET pinned to another ETag",
        );
        let pinned = self.store.get(self.bucket, key, None, Some(etag)).await;
        assert!(pinned.is_ok(), "{}", self.breach("GET pinned to its ETag"));
        let head_pinned = self.store.head(self.bucket, key, Some(wrong)).await;
        self.refused(
            head_pinned,
            ErrorKind::PreconditionFailed,
            "HEAD pinned to another ETag",
        );
    }

    /// Conditional writes do what the probe says, both ways: refused where it found them
    /// honoured, written where it found them ignored.
    async fn put_conditions(&self) {
        let first = self
            .put("cond", b"first", &WriteCondition::None)
            .await
            .expect("PUT");
        let absent = self.put("cond", b"second", &WriteCondition::IfAbsent).await;
        let now = self.read("cond", None).await;
        if self.caps.put.if_none_match {
            self.refused(
                absent,
                ErrorKind::PreconditionFailed,
                "If-None-Match: * on an existing key",
            );
            assert_eq!(
                now,
                b"first",
                "{}",
                self.breach("a refused write left the object")
            );
        } else {
            assert!(
                absent.is_ok(),
                "{}",
                self.breach("an ignored If-None-Match: * writes")
            );
            assert_eq!(
                now,
                b"second",
                "{}",
                self.breach("an ignored condition writes")
            );
        }
        let fresh = self
            .put("cond-new", b"new", &WriteCondition::IfAbsent)
            .await;
        assert!(
            fresh.is_ok(),
            "{}",
            self.breach("If-None-Match: * on a new key")
        );
        if let Some(form) = self.caps.put.if_match {
            let current = self
                .store
                .head(self.bucket, &self.key("cond"), None)
                .await
                .expect("HEAD");
            let wrong = form.if_match(&first.etag.replace(|c: char| c.is_ascii_hexdigit(), "0"));
            let refused = self.put("cond", b"third", &wrong).await;
            self.refused(
                refused,
                ErrorKind::PreconditionFailed,
                "If-Match with another ETag",
            );
            let right = form.if_match(&current.etag);
            let accepted = self.put("cond", b"fourth", &right).await;
            assert!(
                accepted.is_ok(),
                "{}",
                self.breach("If-Match with its ETag")
            );
        }
    }

    /// A server-side copy keeps the bytes and headers, pinned to the source's ETag where the
    /// probe found that honoured.
    async fn copies(&self) {
        let source = self.key("read");
        let head = self
            .store
            .head(self.bucket, &source, None)
            .await
            .expect("HEAD");
        let copied = self.key("copied");
        self.store
            .copy(
                self.bucket,
                &source,
                Some(&head.etag),
                self.bucket,
                &copied,
                None,
                &WriteCondition::None,
            )
            .await
            .unwrap_or_else(|e| panic!("{}", self.breach(&format!("copy: {e}"))));
        assert_eq!(
            self.read("copied", None).await,
            pattern(1000, 2),
            "{}",
            self.breach("copied bytes")
        );
        let copy_head = self
            .store
            .head(self.bucket, &copied, None)
            .await
            .expect("HEAD");
        assert_eq!(
            copy_head.attrs.metadata,
            head.attrs.metadata,
            "{}",
            self.breach("copied metadata")
        );
        if self.caps.copy_source_if_match {
            let wrong = self
                .store
                .copy(
                    self.bucket,
                    &source,
                    Some("0123456789abcdef0123456789abcdef"),
                    self.bucket,
                    &copied,
                    None,
                    &WriteCondition::None,
                )
                .await;
            self.refused(
                wrong,
                ErrorKind::PreconditionFailed,
                "copy pinned to another ETag",
            );
        }
    }

    /// Tags go with a write, and are replaced, where the probe found so.
    async fn tags(&self) {
        let attrs = ObjectAttrs::default();
        let options = PutOptions {
            tagging: Some("team=data"),
            ..PutOptions::new(&attrs, &WriteCondition::None)
        };
        let put = self.put_with("tagged", b"tagged", options).await;
        let key = self.key("tagged");
        if self.caps.tags_on_put {
            put.expect("PUT with tags");
            let tags = self
                .store
                .get_tagging(self.bucket, &key)
                .await
                .expect("tags");
            assert_eq!(
                tags.as_deref(),
                Some("team=data"),
                "{}",
                self.breach("tags on PUT")
            );
        } else if put.is_err() {
            self.put("tagged", b"tagged", &WriteCondition::None)
                .await
                .expect("PUT");
        }
        if self.caps.tagging {
            self.store
                .put_tagging(self.bucket, &key, "team=ops")
                .await
                .expect("PutObjectTagging");
            let tags = self
                .store
                .get_tagging(self.bucket, &key)
                .await
                .expect("tags");
            assert_eq!(
                tags.as_deref(),
                Some("team=ops"),
                "{}",
                self.breach("tags replaced")
            );
        }
    }

    /// A wrong checksum is refused and the right one accepted, where the probe found
    /// checksums verified; the right one is accepted everywhere.
    async fn checksums(&self) {
        let bytes = b"checked bytes";
        let sha256 =
            |b: &[u8]| aws_smithy_types::base64::encode(<sha2::Sha256 as sha2::Digest>::digest(b));
        let attrs = ObjectAttrs::default();
        for (value, right) in [(sha256(bytes), true), (sha256(b"other bytes"), false)] {
            let checksum = Checksum {
                algorithm: ChecksumKind::Sha256,
                value,
            };
            let options = PutOptions {
                checksum: Some(&checksum),
                ..PutOptions::new(&attrs, &WriteCondition::None)
            };
            let put = self.put_with("checksummed", bytes, options).await;
            match (right, self.caps.checksums_verified) {
                (true, _) => assert!(put.is_ok(), "{}", self.breach("the right checksum")),
                (false, true) => assert!(
                    put.is_err(),
                    "{}",
                    self.breach("a wrong checksum is refused")
                ),
                (false, false) => {}
            }
        }
    }

    /// A missing key is NotFound, on HEAD and GET; deleting it is no error; a missing bucket
    /// is an error no retry mends.
    async fn errors(&self) {
        let missing = self.key("missing");
        let head = self.store.head(self.bucket, &missing, None).await;
        self.refused(head, ErrorKind::NotFound, "HEAD of a missing key");
        let get = self.store.get(self.bucket, &missing, None, None).await;
        self.refused(get, ErrorKind::NotFound, "GET of a missing key");
        self.store
            .delete(self.bucket, &missing)
            .await
            .expect("deleting a missing key");
        let nowhere = "ferry-contract-no-such-bucket";
        let listed = self.store.list_page(nowhere, "", None, None).await;
        let kind = listed.err().map(|e| e.kind);
        assert!(
            kind.is_some_and(|k| !k.is_retryable()),
            "{}",
            self.breach(&format!("listing a missing bucket: {kind:?}"))
        );
    }

    async fn clean_up(&self) {
        let page = self
            .store
            .list_page(self.bucket, &self.prefix, None, None)
            .await
            .expect("listing");
        for o in page.objects {
            self.store
                .delete(self.bucket, &o.key)
                .await
                .expect("delete");
        }
        let left = self
            .store
            .list_page(self.bucket, &self.prefix, None, None)
            .await
            .expect("listing");
        assert!(
            left.objects.is_empty(),
            "{}",
            self.breach("deleted keys are gone")
        );
    }
}

mod multipart;
