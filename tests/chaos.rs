//! A short chaos run in CI: two randomized fault schedules (`scripts/chaos.sh` runs many).

use ferry_testkit::chaos::{Options, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_randomized_fault_schedules_leave_exact_copies() {
    let seed = std::env::var("FERRY_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_201);
    let summary = run(&Options {
        ferry: env!("CARGO_BIN_EXE_ferry").into(),
        runs: 2,
        seed,
        objects: 200,
        store: ferry_testkit::servers::Kind::Garage,
    })
    .await;
    assert_eq!(summary.runs, 2);
    assert_eq!(summary.anomalies, 0, "{summary}");
    assert!(summary.faults.values().sum::<u32>() >= 4, "{summary}");
}

/// One schedule with Ceph RGW at both ends (`scripts/chaos.sh --store rgw` runs many).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_randomized_fault_schedule_on_rgw_leaves_exact_copies() {
    let seed = std::env::var("FERRY_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_207);
    let summary = run(&Options {
        ferry: env!("CARGO_BIN_EXE_ferry").into(),
        runs: 1,
        seed,
        objects: 200,
        store: ferry_testkit::servers::Kind::Rgw,
    })
    .await;
    assert_eq!(summary.runs, 1);
    assert_eq!(summary.anomalies, 0, "{summary}");
    assert!(summary.faults.values().sum::<u32>() >= 2, "{summary}");
}
