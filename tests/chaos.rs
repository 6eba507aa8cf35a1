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
    })
    .await;
    assert_eq!(summary.runs, 2);
    assert_eq!(summary.anomalies, 0, "{summary}");
    assert!(summary.faults.values().sum::<u32>() >= 4, "{summary}");
}
