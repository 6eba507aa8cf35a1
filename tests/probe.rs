//! The capability probe against the three real stores: what it measures matches what each
//! store is known to do (`../shared/TESTING.md`), each capability tried both ways, and it
//! leaves nothing behind in the bucket.

mod harness;

use ferry_common::storage::{Capabilities, Conditions, EtagForm};
use harness::data::{list_keys, open_uploads};
use harness::{Kind, S3Server, unique};

async fn probed(kind: Kind) -> Capabilities {
    let server = S3Server::of(kind);
    let bucket = unique("probe");
    server.create_bucket(&bucket).await;
    let found = harness::measured(&server, &bucket).await;
    let client = server.client();
    assert_eq!(
        list_keys(&client, &bucket).await,
        Vec::new(),
        "the probe left objects behind"
    );
    assert!(
        open_uploads(&client, &bucket).await.is_empty(),
        "the probe left uploads open"
    );
    found
}

const HONOURED: Conditions = Conditions {
    if_none_match: true,
    if_match: Some(EtagForm::Quoted),
};

const IGNORED: Conditions = Conditions {
    if_none_match: false,
    if_match: None,
};

#[tokio::test]
async fn the_probe_measures_moto() {
    let found = probed(Kind::Moto).await;
    assert_eq!(found.put, HONOURED, "{found:?}");
    assert!(found.etags_are_md5, "{found:?}");
    assert!(
        found.tagging && found.tags_on_put && found.tags_on_multipart,
        "{found:?}"
    );
    assert!(found.part_number, "moto's HEAD with partNumber: {found:?}");
    assert!(
        !found.checksums_verified && !found.checksum_trailer,
        "moto does not check checksums, so no trailer is trusted: {found:?}"
    );
}

#[tokio::test]
async fn the_probe_measures_garage() {
    let found = probed(Kind::Garage).await;
    assert_eq!(
        found.put, IGNORED,
        "Garage writes whatever the condition: {found:?}"
    );
    assert!(!found.conditional_writes());
    assert!(found.etags_are_md5, "{found:?}");
    assert!(!found.tagging, "Garage has no tagging: {found:?}");
    assert!(found.part_number, "{found:?}");
    assert!(found.complete_etag, "{found:?}");
    assert!(
        found.checksums_verified && found.checksum_trailer,
        "{found:?}"
    );
    assert!(found.copy_source_if_match, "{found:?}");
}

#[tokio::test]
async fn the_probe_measures_rgw() {
    let found = probed(Kind::Rgw).await;
    assert_eq!(
        found.put,
        Conditions {
            if_none_match: true,
            if_match: Some(EtagForm::Unquoted),
        },
        "RGW 16 honours If-Match only with a bare ETag: {found:?}"
    );
    assert!(found.conditional_writes());
    assert_eq!(
        found.complete, IGNORED,
        "RGW 16 ignores conditions on CompleteMultipartUpload: {found:?}"
    );
    assert!(found.etags_are_md5, "{found:?}");
    assert!(found.tagging && found.tags_on_put, "{found:?}");
    assert!(
        !found.tags_on_multipart,
        "RGW 16 drops the tags of CreateMultipartUpload: {found:?}"
    );
    assert!(!found.part_number, "RGW 16 ignores partNumber: {found:?}");
    assert!(
        !found.complete_etag,
        "RGW 16 answers an empty ETag: {found:?}"
    );
    assert!(
        !found.checksum_trailer,
        "RGW 16 refuses trailers: {found:?}"
    );
}
