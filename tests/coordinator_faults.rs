//! Coordinator faults: a coordinator killed with SIGKILL mid-planning is replaced (here by a
//! standby that waited on the leader lease), which resumes the same iteration from its
//! checkpoint: nothing is planned or counted twice, and every object arrives.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::time::{Duration, Instant};

use harness::data::{Seed, assert_replica, seed};
use harness::{Env, history, iteration_record, spawn_ferry};
use redis::AsyncCommands;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_iteration_is_resumed_without_double_counting() {
    let env = Env::start("kill-coordinator");
    let (sb, db) = env.bucket_pair().await;
    let n = 3_000u64;
    let seeds: Vec<_> = (0..n)
        .map(|i| Seed::new(format!("p{:02}/obj-{i:05}", i % 30), format!("body {i}")))
        .collect();
    seed(&env.src.client(), &sb, &seeds).await;
    let config = env.write_config(
        "ferry.toml",
        &harness::rule_toml("dr", &sb, &db, "stop = \"once\""),
    );
    // A small backlog limit keeps the coordinator planning while the worker copies, so the
    // kill lands mid-planning.
    let coordinator = |id: &str| {
        vec![
            "coordinator".to_string(),
            "--config".into(),
            config.clone(),
            "--coordinator-id".into(),
            id.into(),
            "--leader-lease".into(),
            "2s".into(),
            "--max-outstanding".into(),
            "100".into(),
        ]
    };
    let mut leader = spawn_ferry(
        env.dir.path(),
        "coordinator-a",
        &as_strs(&coordinator("coord-a")),
    );
    let mut conn = env.redis.conn().await;
    let leader_key = format!("{}:{{dr}}:leader", env.ns);
    let record_key = format!("{}:{{dr}}:it:1", env.ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    // The lease holds the leader's token, `id#epoch`.
    let leader_id =
        |token: Option<String>| token.and_then(|t| t.split('#').next().map(str::to_string));
    while leader_id(conn.get(&leader_key).await.unwrap()).as_deref() != Some("coord-a") {
        assert!(
            Instant::now() < deadline,
            "coordinator a never led the rule"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut standby = spawn_ferry(
        env.dir.path(),
        "coordinator-b",
        &as_strs(&coordinator("coord-b")),
    );
    let mut worker = spawn_ferry(
        env.dir.path(),
        "worker",
        &[
            "worker",
            "--config",
            &config,
            "--id",
            "w",
            "--concurrency",
            "4",
        ],
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let planned: Option<u64> = conn.hget(&record_key, "planned").await.unwrap();
        let sealed: Option<u64> = conn.hget(&record_key, "sealed").await.unwrap();
        assert!(
            sealed.is_none(),
            "planning finished before the kill; the test needs a slower worker"
        );
        if planned.unwrap_or(0) >= 300 {
            break;
        }
        assert!(Instant::now() < deadline, "planning never got under way");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        leader_id(conn.get(&leader_key).await.unwrap()).as_deref(),
        Some("coord-a"),
        "two coordinators led the rule at once"
    );
    leader.kill9();
    let planned_at_kill: u64 = conn.hget(&record_key, "planned").await.unwrap();

    let status = standby
        .wait_timeout(Duration::from_secs(300))
        .expect("the standby coordinator did not finish the iteration");
    assert!(status.success(), "standby exited with {status}");
    let log = standby.log_text();
    let stood_by = log
        .find("standing by")
        .expect("the standby never waited for the lease");
    let resumed = log
        .find("resuming an unfinished iteration")
        .expect("the iteration was not resumed");
    assert!(stood_by < resumed);

    assert_eq!(
        history(&env.redis, &env.ns, "dr").await,
        [1],
        "one iteration, resumed, not restarted"
    );
    let record = iteration_record(&env.redis, &env.ns, "dr", 1).await;
    assert_eq!(
        record.get("listed"),
        Some(&n),
        "listed counted twice or lost: {record:?}"
    );
    assert_eq!(
        record.get("planned"),
        Some(&n),
        "tasks planned twice or lost: {record:?}"
    );
    assert_eq!(record.get("copied"), Some(&n), "{record:?}");
    assert_eq!(record.get("dead"), None, "{record:?}");
    worker.sigterm();
    assert!(
        worker
            .wait_timeout(Duration::from_secs(30))
            .is_some_and(|s| s.success())
    );
    assert_eq!(
        assert_replica(&env.src.client(), &sb, &env.dst.client(), &db, None).await,
        n as usize
    );
    eprintln!(
        "{:?}: killed the leading coordinator at {planned_at_kill}/{n} planned; the standby resumed and finished",
        env.src.kind
    );
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
