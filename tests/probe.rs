//! The capability probe against the three real stores: what it measures matches what each
//! store is known to do (`../shared/TESTING.md`), each capability tried both ways, and it
//! leaves nothing behind in the bucket.

mod harness;

use ferry_storage::{Capabilities, Conditions, EtagForm};
use harness::data::{every_open_upload, list_every_key};
use harness::{Kind, S3Server, unique};

async fn probed(kind: Kind) -> Capabilities {
    let server = S3Server::of(kind);
    let bucket = unique("probe");
    server.create_bucket(&bucket).await;
    let found = harness::measured(&server, &bucket).await;
    let client = server.client();
    assert_eq!(
        list_every_key(&client, &bucket).await,
        Vec::new(),
        "the probe left objects behind"
    );
    assert!(
        every_open_upload(&client, &bucket).await.is_empty(),
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

/// `ferry probe ENDPOINT:BUCKET` prints the table, `--json` the same as JSON, and
/// `ferry probe ENDPOINT` makes, probes and deletes a bucket of its own.
async fn the_probe_command_prints_what_it_measured(kind: Kind) {
    let server = S3Server::of(kind);
    let dir = harness::TempDir::new("probe-cmd");
    let bucket = unique("probe");
    server.create_bucket(&bucket).await;
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, server.endpoint_toml("store")).expect("config");
    let config = config.to_str().expect("utf-8");

    let (code, out, err) =
        harness::ferry_output(&["probe", &format!("store:{bucket}"), "--config", config]);
    assert_eq!(code, 0, "{err}");
    println!("{kind:?}:\n{out}");
    let measured = harness::measured(&server, &bucket).await;
    for (capability, value, _) in measured.rows() {
        let line = out
            .lines()
            .find(|l| l.starts_with(capability))
            .unwrap_or_else(|| panic!("no row {capability:?} in:\n{out}"));
        assert!(line.contains(&value), "{capability}: {value} in {line:?}");
    }

    let (code, json, err) = harness::ferry_output(&[
        "probe",
        &format!("store:{bucket}"),
        "--config",
        config,
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        report["capabilities"]["tagging"].as_bool(),
        Some(measured.tagging),
        "{json}"
    );
    assert_eq!(
        report["capabilities"]["put"]["if_none_match"].as_bool(),
        Some(measured.put.if_none_match)
    );

    let buckets = || async {
        let listed = server.client().list_buckets().send().await.expect("list");
        listed.buckets().len()
    };
    let before = buckets().await;
    let (code, out, err) = harness::ferry_output(&["probe", "store", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("a temporary bucket, deleted"), "{out}");
    assert_eq!(buckets().await, before, "the temporary bucket is gone");

    // Bad input: which argument, which value, why; nothing probed.
    let (code, _, err) = harness::ferry_output(&["probe", "nowhere:b", "--config", config]);
    assert_eq!(code, 2);
    assert!(
        err.contains("ENDPOINT") && err.contains("\"nowhere\"") && err.contains("store"),
        "{err}"
    );
    let (code, _, err) = harness::ferry_output(&["probe", "store:", "--config", config]);
    assert_eq!(code, 2);
    assert!(err.contains("empty endpoint or bucket"), "{err}");
    assert!(
        !err.contains(&server.secret_key),
        "the secret key reached an error"
    );
}

#[tokio::test]
async fn the_probe_command_on_moto() {
    the_probe_command_prints_what_it_measured(Kind::Moto).await;
}

#[tokio::test]
async fn the_probe_command_on_garage() {
    the_probe_command_prints_what_it_measured(Kind::Garage).await;
}

#[tokio::test]
async fn the_probe_command_on_rgw() {
    the_probe_command_prints_what_it_measured(Kind::Rgw).await;
}

/// One process probes a bucket for the whole fleet: a second run finds the probe in Redis
/// and writes nothing under `.ferry-probe/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_is_shared_by_the_fleet() {
    let env = harness::Env::start_on("probe-fleet", S3Server::rgw(), S3Server::rgw());
    let (sb, db) = env.bucket_pair().await;
    harness::data::put(&env.src.client(), &sb, "a", b"one").await;
    let config = env.write_config(
        "fleet.toml",
        &harness::rule_toml("shared", &sb, &db, "stop = \"once\""),
    );
    let first = env.run_to_completion(&config, &[], std::time::Duration::from_secs(120));
    assert!(first.contains("probed the destination bucket"), "{first}");
    harness::data::put(&env.src.client(), &sb, "b", b"two").await;
    let second = env.run_to_completion(&config, &[], std::time::Duration::from_secs(120));
    assert!(
        !second.contains("probed the destination bucket"),
        "the second run probed again:\n{second}"
    );
    use redis::AsyncCommands;
    let shared: Option<String> = env
        .redis
        .conn()
        .await
        .hget(format!("{}:capabilities", env.ns), format!("dst/{db}"))
        .await
        .expect("reading the shared probe");
    let shared = shared.expect("the probe is shared in Redis");
    assert!(shared.contains("\"unquoted\""), "{shared}");
    let record = harness::iteration_record(&env.redis, &env.ns, "shared", 2).await;
    assert_eq!(record.get("copied"), Some(&1), "{record:?}");
}

/// A fault storm in front of the store (503s, resets before and after the server acted):
/// every request of the probe is retried until it is answered, a write whose answer was lost
/// is recognised, and what it measures is what a clean probe measures. Before, a probe of
/// some 30 requests under 13 % faults almost never finished, and every write waited on it.
async fn a_probe_through_a_fault_storm_measures_the_same(kind: Kind) {
    use ferry_testkit::proxy::{Action, FaultProxy, Match, Rule};
    let server = S3Server::of(kind);
    let bucket = unique("storm");
    server.create_bucket(&bucket).await;
    let clean = harness::measured(&server, &bucket).await;
    let proxy = FaultProxy::start(&server.authority()).await.expect("proxy");
    proxy.set_rules(vec![
        Rule::new(
            "slowdown",
            Match::default(),
            Action::Status {
                status: 503,
                code: "SlowDown".into(),
            },
        )
        .with_probability(0.1),
        Rule::new("lost answer", Match::default(), Action::ResetAfterForward)
            .with_probability(0.05),
        Rule::new("reset", Match::default(), Action::ResetBeforeAnswer).with_probability(0.05),
    ]);
    let stormy = harness::store_at(&server, &proxy.url()).await;
    for round in 0..3 {
        let (found, disturbed) = ferry_storage::probe_patiently(stormy.as_ref(), &bucket)
            .await
            .unwrap_or_else(|e| panic!("round {round}: the probe gave up: {e}"));
        assert_eq!(found, clean, "round {round}");
        assert!(disturbed, "round {round}: the storm reached no request");
    }
    assert!(
        proxy.stats().hits.values().sum::<u64>() >= 3,
        "{:?}",
        proxy.stats()
    );
    proxy.clear();
    assert!(
        every_open_upload(&server.client(), &bucket)
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_through_a_fault_storm_measures_the_same_on_moto() {
    a_probe_through_a_fault_storm_measures_the_same(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_through_a_fault_storm_measures_the_same_on_garage() {
    a_probe_through_a_fault_storm_measures_the_same(Kind::Garage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_through_a_fault_storm_measures_the_same_on_rgw() {
    a_probe_through_a_fault_storm_measures_the_same(Kind::Rgw).await;
}
