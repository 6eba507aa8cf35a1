//! An iteration's report lists every key it acted on exactly once, with its outcome, even
//! when one of two workers is killed with SIGKILL mid-iteration: written to a directory
//! (Garage) and to a bucket (moto), read back with `ferry report`. And `ferry sync` writes
//! its report to the state dir and says where.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use harness::data::{foundation_dataset, seed};
use harness::{Redis, S3Server, TempDir, ferry_output, spawn_ferry, unique};
use redis::AsyncCommands;
use serde_json::Value;

/// Where the test's rule writes its reports.
enum Target {
    Dir,
    Bucket,
}

async fn report_lists_every_key_once_with_a_worker_killed(
    src: S3Server,
    dst: S3Server,
    target: Target,
) {
    let redis = Redis::start();
    let dir = TempDir::new("report");
    let ns = unique("ns");
    let (src_bucket, dst_bucket) = (unique("src"), unique("dst"));
    src.create_bucket(&src_bucket).await;
    dst.create_bucket(&dst_bucket).await;
    let seeds = foundation_dataset(src.kind, 1_500);
    seed(&src.client(), &src_bucket, &seeds).await;
    // 20 keys are already at the destination, the same bytes: skipped as unchanged.
    let same: Vec<_> = seeds
        .iter()
        .filter(|s| s.key.starts_with("bulk/03/"))
        .take(20)
        .cloned()
        .collect();
    assert_eq!(same.len(), 20);
    seed(&dst.client(), &dst_bucket, &same).await;

    let report = match target {
        Target::Dir => format!("file://{}", dir.path().join("reports").display()),
        Target::Bucket => {
            let bucket = unique("reports");
            dst.create_bucket(&bucket).await;
            format!("s3://dst/{bucket}/audit/ferry")
        }
    };
    let mut config = format!(
        "[redis]\nurl = \"{}\"\nnamespace = \"{ns}\"\n\n",
        redis.url()
    );
    config += &src.endpoint_toml("src");
    config += &dst.endpoint_toml("dst");
    config += &format!(
        "[[rules]]\nname = \"dr\"\nstop = \"once\"\nreport = \"{report}\"\n\
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

    // Kill the doomed worker while it holds leases, mid-iteration.
    let mut conn = redis.conn().await;
    let owners_key = format!("{ns}:{{dr}}:owners");
    let record_key = format!("{ns}:{{dr}}:it:1");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done: Option<u64> = conn.hget(&record_key, "done").await.expect("done count");
        let owners: HashMap<String, String> = conn.hgetall(&owners_key).await.expect("owners");
        if done.unwrap_or(0) >= 100 && owners.values().any(|v| v.starts_with("doomed|")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the doomed worker never held leases"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.kill9();
    let done_at_kill: u64 = conn.hget(&record_key, "done").await.expect("done count");
    assert!(
        done_at_kill < seeds.len() as u64,
        "the iteration had finished at the kill"
    );
    let status = coordinator
        .wait_timeout(Duration::from_secs(300))
        .expect("the iteration did not finish after the worker was killed");
    assert!(
        status.success(),
        "coordinator exited with {status}:\n{}",
        coordinator.log_text()
    );
    survivor.sigterm();
    survivor.wait_timeout(Duration::from_secs(30));

    // Every source key exactly once: copied, or skipped as unchanged; the summary last.
    let (code, stdout, stderr) = ferry_output(&["report", "--config", cfg, "dr", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let (summary, keys) = lines.split_last().expect("lines");
    assert_eq!(
        summary["summary"], true,
        "the summary comes last: {summary}"
    );
    let mut by_key: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for line in keys {
        by_key
            .entry(line["key"].as_str().unwrap().to_string())
            .or_default()
            .push(line);
    }
    let twice: Vec<_> = by_key
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(twice.is_empty(), "keys reported more than once: {twice:?}");
    assert_eq!(by_key.len(), seeds.len(), "one line per source key");
    for s in &seeds {
        let line = by_key
            .get(&s.key)
            .unwrap_or_else(|| panic!("{} is not in the report", s.key))[0];
        if same.iter().any(|x| x.key == s.key) {
            assert_eq!(
                (line["outcome"].as_str(), line["reason"].as_str()),
                (Some("skipped"), Some("unchanged")),
                "{line}"
            );
        } else {
            assert_eq!(line["outcome"], "copied", "{line}");
            assert_eq!(line["bytes"], s.body.len() as u64, "{line}");
            assert!(line["destination_etag"].is_string(), "{line}");
        }
    }
    assert_eq!(summary["copied"], (seeds.len() - 20) as u64, "{summary}");
    let (_, skipped, _) =
        ferry_output(&["report", "--config", cfg, "dr", "1", "--outcome", "skipped"]);
    assert_eq!(skipped.lines().count(), 20, "{skipped}");
    // Nothing of the report is left in Redis.
    let left: bool = conn.exists(format!("{ns}:{{dr}}:rp:1")).await.unwrap();
    assert!(!left, "the report's lines were left in redis");
    let (code, _, stderr) = ferry_output(&["report", "--config", cfg, "dr", "--outcome", "lost"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--outcome") && stderr.contains("copied"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_lists_every_key_once_with_a_worker_killed_on_garage() {
    report_lists_every_key_once_with_a_worker_killed(
        S3Server::garage(),
        S3Server::garage(),
        Target::Dir,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_in_a_bucket_lists_every_key_once_with_a_worker_killed_on_moto() {
    report_lists_every_key_once_with_a_worker_killed(
        S3Server::moto(),
        S3Server::moto(),
        Target::Bucket,
    )
    .await;
}

/// `ferry sync` writes every iteration's report to its state dir and names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_writes_its_report_to_the_state_dir() {
    let (src, dst) = (S3Server::moto(), S3Server::moto());
    let (sb, db) = (unique("s"), unique("d"));
    src.create_bucket(&sb).await;
    dst.create_bucket(&db).await;
    let seeds = foundation_dataset(src.kind, 30);
    seed(&src.client(), &sb, &seeds).await;
    let dir = TempDir::new("sync-report");
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        src.endpoint_toml("src") + &dst.endpoint_toml("dst"),
    )
    .unwrap();
    let state = dir.path().join("state");
    let (cfg, st) = (config.to_str().unwrap(), state.to_str().unwrap());
    let (s, d) = (format!("src:{sb}"), format!("dst:{db}"));
    let (code, stdout, stderr) =
        ferry_output(&["sync", &s, &d, "--config", cfg, "--state-dir", st, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let manifest = summary["report"].as_str().expect("the report's path");
    assert!(
        manifest.starts_with(st) && std::path::Path::new(manifest).exists(),
        "{manifest}"
    );
    let rule = summary["rule"].as_str().unwrap();
    let (code, text, stderr) = ferry_output(&[
        "report",
        "--state-dir",
        st,
        "--config",
        cfg,
        rule,
        "--outcome",
        "copied",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(text.lines().count(), seeds.len(), "{text}");
}
