//! End to end: one coordinator and two worker processes replicate a 2,500+ object bucket
//! between two independent S3 servers, and the destination equals the source key by key.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::time::{Duration, Instant};

use harness::data::{Seed, assert_replica, foundation_dataset, seed};
use harness::{Kind, Redis, S3Server, TempDir, spawn_ferry, unique};

const BULK: usize = 2_500;

async fn replicate_foundation_dataset(src: S3Server, dst: S3Server) {
    let redis = Redis::start();
    let dir = TempDir::new("replication");
    let ns = unique("ns");
    let (src_bucket, dst_bucket) = (unique("photos"), unique("photos-dr"));
    src.create_bucket(&src_bucket).await;
    dst.create_bucket(&dst_bucket).await;
    let seeds = foundation_dataset(src.kind, BULK);
    seed(&src.client(), &src_bucket, &seeds).await;

    let mut config = format!(
        "[redis]\nurl = \"{}\"\nnamespace = \"{ns}\"\n\n",
        redis.url()
    );
    config += &src.endpoint_toml("east");
    config += &dst.endpoint_toml("west");
    config += &format!(
        "[[rules]]\nname = \"main\"\nstop = \"once\"\n\
         source = {{ endpoint = \"east\", bucket = \"{src_bucket}\" }}\n\
         destination = {{ endpoint = \"west\", bucket = \"{dst_bucket}\" }}\n\n"
    );
    // A second rule overrides the storage class; only moto keeps classes, so only there.
    let override_buckets = (unique("small"), unique("small-ia"));
    if src.kind == Kind::Moto {
        src.create_bucket(&override_buckets.0).await;
        dst.create_bucket(&override_buckets.1).await;
        let mut small: Vec<Seed> = (0..30)
            .map(|i| Seed::new(format!("s/{i}"), format!("small {i}")))
            .collect();
        small[0].storage_class = Some("ONEZONE_IA".into());
        seed(&src.client(), &override_buckets.0, &small).await;
        config += &format!(
            "[[rules]]\nname = \"override\"\nstop = \"once\"\n\
             source = {{ endpoint = \"east\", bucket = \"{}\" }}\n\
             destination = {{ endpoint = \"west\", bucket = \"{}\", storage_class = \"STANDARD_IA\" }}\n\n",
            override_buckets.0, override_buckets.1
        );
    }
    let config_path = dir.path().join("ferry.toml");
    std::fs::write(&config_path, config).expect("writing config");
    let cfg = config_path.to_str().expect("utf-8 path");

    let started = Instant::now();
    let mut coordinator = spawn_ferry(dir.path(), "coordinator", &["coordinator", "--config", cfg]);
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let id = format!("w{i}");
            spawn_ferry(
                dir.path(),
                &id,
                &[
                    "worker",
                    "--config",
                    cfg,
                    "--id",
                    &id,
                    "--concurrency",
                    "16",
                ],
            )
        })
        .collect();
    let status = coordinator
        .wait_timeout(Duration::from_secs(600))
        .expect("the coordinator did not finish its iteration within 10 minutes");
    let elapsed = started.elapsed();
    assert!(
        status.success(),
        "coordinator exited with {status}:\n{}",
        coordinator.log_text()
    );

    // Workers leave cleanly on SIGTERM.
    for mut w in workers {
        w.sigterm();
        let status = w
            .wait_timeout(Duration::from_secs(30))
            .expect("worker did not stop on SIGTERM");
        assert!(status.success(), "worker {} exited with {status}", w.name);
    }

    let compared =
        assert_replica(&src.client(), &src_bucket, &dst.client(), &dst_bucket, None).await;
    assert_eq!(compared, seeds.len());
    let record = harness::iteration_record(&redis, &ns, "main", 1).await;
    assert_eq!(
        record.get("copied"),
        Some(&(seeds.len() as u64)),
        "record: {record:?}"
    );
    assert_eq!(
        record.get("planned"),
        Some(&(seeds.len() as u64)),
        "record: {record:?}"
    );
    assert_eq!(record.get("dead"), None, "record: {record:?}");
    if src.kind == Kind::Moto {
        let n = assert_replica(
            &src.client(),
            &override_buckets.0,
            &dst.client(),
            &override_buckets.1,
            Some("STANDARD_IA"),
        )
        .await;
        assert_eq!(n, 30);
    }
    eprintln!(
        "{:?}: one iteration of {} objects with 1 coordinator + 2 workers (concurrency 16 each) took {:.1}s",
        src.kind,
        seeds.len(),
        elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_2500_objects_between_moto_endpoints() {
    replicate_foundation_dataset(S3Server::moto(), S3Server::moto()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_2500_objects_from_rgw_to_garage() {
    replicate_foundation_dataset(S3Server::rgw(), S3Server::garage()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_2500_objects_from_garage_to_rgw() {
    replicate_foundation_dataset(S3Server::garage(), S3Server::rgw()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_2500_objects_between_rgw_endpoints() {
    replicate_foundation_dataset(S3Server::rgw(), S3Server::rgw()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_2500_objects_between_garage_endpoints() {
    let src = S3Server::garage();
    let dst = S3Server::garage();
    replicate_foundation_dataset(src, dst).await;
}
