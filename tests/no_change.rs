//! A no-change iteration costs listings only: no HEAD, GET or PUT, counted by ferry's own
//! request metrics scraped from its real /metrics endpoints.

mod harness;

use std::time::{Duration, Instant};

use harness::data::{Seed, seed};
use harness::{Env, free_port, history, iteration_record, samples, scrape, spawn_ferry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_change_iteration_only_lists() {
    let env = Env::start("no-change");
    let (sb, db) = env.bucket_pair().await;
    let n = 5_000usize;
    let seeds: Vec<_> = (0..n)
        .map(|i| Seed::new(format!("d{:02}/o{i:05}", i % 40), format!("{i}")))
        .collect();
    seed(&env.src.client(), &sb, &seeds).await;
    let rule = |stop: &str| harness::rule_toml("steady", &sb, &db, stop);
    let once = env.write_config("once.toml", &rule("stop = \"once\""));
    env.run_to_completion(&once, &[], Duration::from_secs(300));

    // Iteration 2, nothing changed, served by long-running processes we can scrape.
    let forever = env.write_config("forever.toml", &rule("stop = \"never\"\ninterval = \"1h\""));
    let (cp, wp) = (free_port(), free_port());
    let (cm, wm) = (format!("127.0.0.1:{cp}"), format!("127.0.0.1:{wp}"));
    let _coordinator = spawn_ferry(
        env.dir.path(),
        "coordinator",
        &["coordinator", "--config", &forever, "--metrics-listen", &cm],
    );
    let _worker = spawn_ferry(
        env.dir.path(),
        "worker",
        &["worker", "--config", &forever, "--metrics-listen", &wm],
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while history(&env.redis, &env.ns, "steady").await.len() < 2 {
        assert!(Instant::now() < deadline, "iteration 2 did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let coordinator_requests = samples(&scrape(cp), "ferry_s3_requests_total");
    let worker_requests = samples(&scrape(wp), "ferry_s3_requests_total");
    let lists = coordinator_requests
        .iter()
        .find(|(labels, _)| labels.contains("operation=\"ListObjectsV2\""))
        .map(|(_, v)| *v as u64);
    let pages = n.div_ceil(1000) as u64;
    assert_eq!(
        lists,
        Some(2 * pages),
        "one LIST per page per side: {coordinator_requests:?}"
    );
    assert_eq!(
        coordinator_requests.len(),
        1,
        "the coordinator made other requests: {coordinator_requests:?}"
    );
    assert!(
        worker_requests.is_empty(),
        "a worker made requests: {worker_requests:?}"
    );
    let record = iteration_record(&env.redis, &env.ns, "steady", 2).await;
    assert_eq!(record.get("skipped"), Some(&(n as u64)));
    assert_eq!(record.get("planned"), None);
    let ms = record["ended_ms"] - record["started_ms"];
    eprintln!(
        "{:?}: no-change iteration over {n} objects: {} ListObjectsV2 requests, nothing else; {ms} ms",
        env.src.kind,
        2 * pages
    );
}
