//! The fleet simulation (`ferry-bench queue`) against a real redis-server: every task is
//! claimed, renewed and acked exactly once, and the report accounts for each round trip.

mod harness;

use std::time::Duration;

use harness::Redis;

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_simulation_runs_every_task_once_and_reports_it() {
    let redis = Redis::start();
    let target = ferry_bench::fleet::Target::Single(redis.url());
    let report = ferry_bench::fleet::run(&target, (7, 4, 1), 3000, Duration::ZERO, false)
        .await
        .expect("the simulation runs");
    assert_eq!((report.workers, report.tasks), (7, 3000));
    // Each task costs its ack, its share of a claim and of a renewal: more than 1, and at
    // most 3 (one claim and one renewal for a single task), plus the empty claims at the end.
    assert!(
        report.round_trips_per_task > 1.0 && report.round_trips_per_task < 3.5,
        "{report:?}"
    );
    assert!(report.claim_p99_ms >= report.claim_p50_ms, "{report:?}");
    assert!(report.redis_cpu_us_per_task > 0.0, "{report:?}");
    // Acked in batches: one claim, one renewal and one ack per claimed batch of up to 4.
    let batched = ferry_bench::fleet::run(&target, (7, 4, 1), 3000, Duration::ZERO, true)
        .await
        .expect("the batched simulation runs");
    assert_eq!(batched.tasks, 3000);
    assert!(
        batched.round_trips_per_task >= 0.75 && batched.round_trips_per_task < 1.0,
        "{batched:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_simulation_spreads_rules_over_the_masters_of_a_cluster() {
    let cluster = ferry_testkit::cluster::RedisCluster::start(3, 0);
    let target = ferry_bench::fleet::Target::Cluster(cluster.urls());
    let report = ferry_bench::fleet::run(&target, (6, 4, 3), 3000, Duration::ZERO, true)
        .await
        .expect("the simulation runs on the cluster");
    assert_eq!((report.masters, report.rules, report.tasks), (3, 3, 3000));
    assert!(report.redis_cpu_us_per_task > 0.0, "{report:?}");
}
