//! Faults: a worker killed with SIGKILL mid-iteration loses nothing. Its leases run out, the
//! surviving worker claims its tasks, and the iteration ends with every object copied once.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::collections::HashMap;
use std::time::Duration;

use harness::data::{assert_replica, foundation_dataset, seed};
use harness::{Redis, S3Server, TempDir, spawn_ferry, unique};
use redis::AsyncCommands;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_leases_expire_and_another_worker_finishes_its_tasks() {
    killed_worker_loses_nothing(S3Server::garage(), S3Server::garage()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_loses_nothing_on_rgw() {
    killed_worker_loses_nothing(S3Server::rgw(), S3Server::rgw()).await;
}

async fn killed_worker_loses_nothing(src: S3Server, dst: S3Server) {
    let redis = Redis::start();
    let dir = TempDir::new("kill-worker");
    let ns = unique("ns");
    let (src_bucket, dst_bucket) = (unique("src"), unique("dst"));
    src.create_bucket(&src_bucket).await;
    dst.create_bucket(&dst_bucket).await;
    let seeds = foundation_dataset(src.kind, 2_500);
    seed(&src.client(), &src_bucket, &seeds).await;

    let mut config = format!(
        "[redis]\nurl = \"{}\"\nnamespace = \"{ns}\"\n\n",
        redis.url()
    );
    config += &src.endpoint_toml("src");
    config += &dst.endpoint_toml("dst");
    config += &format!(
        "[[rules]]\nname = \"dr\"\nstop = \"once\"\n\
         source = {{ endpoint = \"src\", bucket = \"{src_bucket}\" }}\n\
         destination = {{ endpoint = \"dst\", bucket = \"{dst_bucket}\" }}\n"
    );
    let config_path = dir.path().join("ferry.toml");
    std::fs::write(&config_path, config).expect("writing config");
    let cfg = config_path.to_str().expect("utf-8 path");

    let mut coordinator = spawn_ferry(dir.path(), "coordinator", &["coordinator", "--config", cfg]);
    let worker_args = |id: &'static str| {
        vec![
            "worker",
            "--config",
            cfg,
            "--id",
            id,
            "--lease",
            "3s",
            "--concurrency",
            "4",
        ]
    };
    let mut doomed = spawn_ferry(dir.path(), "doomed", &worker_args("doomed"));
    let mut survivor = spawn_ferry(dir.path(), "survivor", &worker_args("survivor"));

    // Kill the doomed worker while it holds leases, after the iteration is well under way.
    let mut conn = redis.conn().await;
    let owners_key = format!("{ns}:{{dr}}:owners");
    let record_key = format!("{ns}:{{dr}}:it:1");
    let held_by_doomed = |owners: &HashMap<String, String>| -> Vec<String> {
        owners
            .iter()
            .filter(|(_, v)| v.starts_with("doomed|"))
            .map(|(k, _)| k.clone())
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let held = loop {
        let done: Option<u64> = conn.hget(&record_key, "done").await.expect("done count");
        let owners: HashMap<String, String> = conn.hgetall(&owners_key).await.expect("owners");
        let held = held_by_doomed(&owners);
        if done.unwrap_or(0) >= 100 && !held.is_empty() {
            break held;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the doomed worker never held leases mid-iteration"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    doomed.kill9();
    let done_at_kill: u64 = conn.hget(&record_key, "done").await.expect("done count");
    assert!(
        done_at_kill < seeds.len() as u64,
        "the iteration had already finished at the kill"
    );

    let status = coordinator
        .wait_timeout(Duration::from_secs(300))
        .expect("the iteration did not finish after the worker was killed");
    assert!(status.success(), "coordinator exited with {status}");

    // The killed worker's tasks were claimed again and acked by the survivor.
    let tasks_left: Vec<String> = conn
        .hkeys(format!("{ns}:{{dr}}:tasks"))
        .await
        .expect("tasks");
    for id in &held {
        assert!(
            !tasks_left.contains(id),
            "task {id} held by the killed worker was never finished"
        );
    }
    let record = harness::iteration_record(&redis, &ns, "dr", 1).await;
    assert_eq!(
        record.get("copied"),
        Some(&(seeds.len() as u64)),
        "{record:?}"
    );
    assert_eq!(record.get("dead"), None, "{record:?}");
    assert!(
        survivor.log_text().contains("worker started"),
        "survivor log: {}",
        survivor.log_text()
    );
    survivor.sigterm();
    assert!(
        survivor
            .wait_timeout(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
    let n = assert_replica(&src.client(), &src_bucket, &dst.client(), &dst_bucket, None).await;
    assert_eq!(n, seeds.len());
    eprintln!(
        "{:?}: killed a worker holding {} leases at {done_at_kill}/{} tasks; all {n} objects replicated",
        src.kind,
        held.len(),
        seeds.len()
    );
}
