//! The contract's multipart clauses: parts uploaded, listed, copied and completed, and an
//! upload aborted.

use super::*;

impl Contract<'_> {
    /// Parts uploaded and copied are listed, completed into the object their bytes make (its
    /// ETag the MD5 of the parts' MD5s, `-N`, where ETags are MD5s), and read back across
    /// their boundary; an aborted upload is gone.
    pub(super) async fn multipart(&self) {
        let key = self.key("multi");
        let attrs = ObjectAttrs::default();
        let id = self
            .store
            .create_multipart(self.bucket, &key, &attrs, None)
            .await
            .expect("create");
        let (one, two) = (pattern(PART, 3), pattern(1024, 4));
        let parts = self.upload_parts(&key, &id, [&one, &two]).await;
        self.listed_parts(&key, &id, &parts).await;
        let open = self
            .store
            .list_uploads(self.bucket, &self.prefix)
            .await
            .expect("uploads");
        assert!(
            open.iter().any(|u| u.upload_id == id && u.key == key),
            "{}",
            self.breach("an open upload is listed")
        );
        let done = self.complete(&key, &id, &parts).await;
        let head = self
            .store
            .head(self.bucket, &key, None)
            .await
            .expect("HEAD");
        assert_eq!(
            head.size,
            (PART + 1024) as u64,
            "{}",
            self.breach("completed size")
        );
        self.multipart_etags(&head.etag, &done.etag, [&one, &two]);
        let across = ByteRange {
            first: PART as u64 - 3,
            last: PART as u64 + 2,
        };
        let got = self.read("multi", Some(across)).await;
        let mut want = one[PART - 3..].to_vec();
        want.extend_from_slice(&two[..3]);
        assert_eq!(got, want, "{}", self.breach("a range across parts"));
        if self.caps.part_number {
            let part = self
                .store
                .head_part(self.bucket, &key, 1)
                .await
                .expect("HEAD part");
            assert_eq!(
                (part.parts_count, part.length),
                (Some(2), PART as u64),
                "{}",
                self.breach("HEAD partNumber")
            );
        }
        let mut whole = one;
        whole.extend_from_slice(&two);
        self.part_copy_and_abort(&whole).await;
        let open = self
            .store
            .list_uploads(self.bucket, &self.prefix)
            .await
            .expect("uploads");
        assert!(
            open.is_empty(),
            "{}",
            self.breach(&format!("uploads left open: {open:?}"))
        );
    }

    /// Uploads `bodies` as parts 1, 2, ... of upload `id`.
    async fn upload_parts(&self, key: &str, id: &str, bodies: [&Vec<u8>; 2]) -> Vec<UploadedPart> {
        let mut parts = Vec::new();
        for (number, bytes) in (1u32..).zip(bodies) {
            let w = self
                .store
                .upload_part(
                    self.bucket,
                    key,
                    id,
                    number,
                    body(bytes),
                    bytes.len() as u64,
                    false,
                )
                .await
                .unwrap_or_else(|e| panic!("{}", self.breach(&format!("part {number}: {e}"))));
            parts.push(UploadedPart {
                number,
                etag: w.etag,
                size: bytes.len() as u64,
            });
        }
        parts
    }

    async fn listed_parts(&self, key: &str, id: &str, parts: &[UploadedPart]) {
        // ListParts only saves uploading a part again, so a store may fail it (moto answers
        // with a root no SDK parses; the worker then uploads the part again): what it lists,
        // though, must be the parts there are.
        match self.store.list_parts(self.bucket, key, id).await {
            Ok(listed) => {
                let sizes: Vec<(u32, u64)> = listed.iter().map(|p| (p.number, p.size)).collect();
                let etags: Vec<&str> = listed.iter().map(|p| p.etag.as_str()).collect();
                let uploaded: Vec<&str> = parts.iter().map(|p| p.etag.as_str()).collect();
                assert_eq!(
                    sizes,
                    [(1, PART as u64), (2, 1024)],
                    "{}",
                    self.breach("listed parts")
                );
                assert_eq!(etags, uploaded, "{}", self.breach("listed parts' ETags"));
            }
            Err(e) => tracing::info!(store = self.store.name(), error = %e, "ListParts refused"),
        }
    }

    /// Where ETags are MD5s, a multipart object's is the MD5 of its parts' MD5s, `-N`, on HEAD
    /// and on the completion's answer (where it has one).
    fn multipart_etags(&self, head: &str, completed: &str, bodies: [&Vec<u8>; 2]) {
        if self.caps.etags_are_md5 {
            let mut md5s = Md5::new();
            for bytes in bodies {
                md5s.update(Md5::digest(bytes));
            }
            let want = format!("{}-2", hex::encode(md5s.finalize()));
            assert_eq!(head, want, "{}", self.breach("a multipart ETag"));
            if self.caps.complete_etag && !completed.is_empty() {
                assert_eq!(completed, want, "{}", self.breach("the completion's ETag"));
            }
        }
    }

    /// The multipart object copied part by part (Garage copies no part from a source under
    /// 5 MiB, and ferry copies parts only of objects above its threshold).
    async fn part_copy_and_abort(&self, whole: &[u8]) {
        let (source, key) = (self.key("multi"), self.key("part-copied"));
        let etag = self
            .store
            .head(self.bucket, &source, None)
            .await
            .expect("HEAD")
            .etag;
        let attrs = ObjectAttrs::default();
        let id = self
            .store
            .create_multipart(self.bucket, &key, &attrs, None)
            .await
            .expect("create");
        let ranges = [
            (1, 0, PART as u64 - 1),
            (2, PART as u64, whole.len() as u64 - 1),
        ];
        let mut parts = Vec::new();
        for (number, first, last) in ranges {
            let range = ByteRange { first, last };
            let etag = self
                .store
                .upload_part_copy(
                    self.bucket,
                    &source,
                    &etag,
                    range,
                    self.bucket,
                    &key,
                    &id,
                    number,
                )
                .await
                .unwrap_or_else(|e| panic!("{}", self.breach(&format!("UploadPartCopy: {e}"))));
            parts.push(UploadedPart {
                number,
                etag,
                size: last - first + 1,
            });
        }
        self.complete(&key, &id, &parts).await;
        assert!(
            self.read("part-copied", None).await == whole,
            "{}",
            self.breach("copied parts' bytes")
        );
        let aborted = self.key("aborted");
        let id = self
            .store
            .create_multipart(self.bucket, &aborted, &attrs, None)
            .await
            .expect("create");
        self.store
            .abort_multipart(self.bucket, &aborted, &id)
            .await
            .expect("abort");
        let head = self.store.head(self.bucket, &aborted, None).await;
        self.refused(
            head,
            ErrorKind::NotFound,
            "an aborted upload writes nothing",
        );
    }
}
