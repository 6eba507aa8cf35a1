//! The flow controller in Redis (the Lua in `lib.lua`, `claim.lua`, `throttle.lua`) against
//! its pure model (`ferry_core::flow`): random sequences of claims, successes, throttles and
//! other ends, through the real scripts on a real redis-server, must leave both in the same
//! state after every event.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::time::Duration;

use ferry_core::config::RedisConfig;
use ferry_core::flow::{Admit, Event, Flow};
use ferry_core::task::{Expected, ObjectVersion, Task};
use ferry_queue::Counted;
use ferry_queue::{Abandon, Claimed, LedgerOp, Persistence, Queue, WorkerQueue};
use harness::{Redis, unique};
use rand::{Rng, SeedableRng};

fn task(i: usize) -> Task {
    Task::CopyObject {
        source: ObjectVersion {
            key: format!("hot/{i:04}"),
            size: 1,
            etag: "e".into(),
            last_modified_ms: 1,
            storage_class: None,
        },
        destination: Expected::Absent,
    }
}

/// What the comparison covers: everything but the probe's time, which the model and Redis
/// read from different clocks a few milliseconds apart.
fn visible(f: &Flow) -> (u32, u32, u32, bool, bool, u64, u64) {
    (
        f.in_flight,
        f.limit,
        f.ceiling,
        f.probing,
        f.probe_out,
        f.backoff_ms,
        f.throttled,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripts_and_the_model_agree_on_every_event() {
    let redis = Redis::start();
    let config = RedisConfig::new(redis.url(), unique("flow"));
    let q = Queue::connect(&config, Persistence::FailFast)
        .await
        .unwrap();
    for seed in 0..6u64 {
        let rule = format!("r{seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let tasks: Vec<Task> = (0..200).map(task).collect();
        q.enqueue(&rule, 1, 0, &tasks).await.unwrap();
        let mut model = Flow::default();
        let mut held: Vec<(Claimed, bool)> = Vec::new();
        for step in 0..60 {
            let now = q.redis_time_ms().await.unwrap();
            let choice = rng.random_range(0..10);
            if choice < 4 || held.is_empty() {
                if step % 25 == 24 {
                    // Let a probe come due.
                    tokio::time::sleep(Duration::from_millis(1_100)).await;
                }
                let now = q.redis_time_ms().await.unwrap();
                let expected = model.admit(now);
                let claimed = q
                    .claim(&rule, "w", Duration::from_secs(60), (1, 0), 10)
                    .await
                    .unwrap();
                match (expected, claimed.into_iter().next()) {
                    (Admit::No, None) => {}
                    (Admit::Yes, Some(c)) => {
                        model = model.on(Event::Claimed { probe: false }, now);
                        held.push((c, false));
                    }
                    (Admit::Probe, Some(c)) => {
                        model = model.on(Event::Claimed { probe: true }, now);
                        held.push((c, true));
                    }
                    (e, c) => {
                        panic!("seed {seed} step {step}: the model says {e:?}, the claim {c:?}")
                    }
                }
            } else {
                let (c, probe) = held.swap_remove(rng.random_range(0..held.len()));
                let event = match choice {
                    4..=6 => {
                        assert!(
                            q.ack("w", &c, Counted::Copied, 0, &LedgerOp::None)
                                .await
                                .unwrap()
                        );
                        Event::Succeeded { probe }
                    }
                    7 | 8 => {
                        let r = q
                            .throttle("w", &c, "SlowDown", Duration::ZERO, false)
                            .await
                            .unwrap();
                        assert!(r.is_some());
                        Event::Throttled { probe }
                    }
                    _ => {
                        let outcome = q
                            .fail(
                                "w",
                                &c,
                                "500",
                                Duration::ZERO,
                                10,
                                false,
                                &Abandon::default(),
                                false,
                            )
                            .await
                            .unwrap();
                        assert_ne!(outcome, ferry_queue::FailOutcome::Lost);
                        Event::Ended { probe }
                    }
                };
                model = model.on(event, now);
            }
            let stored = q.flow(&rule).await.unwrap().remove(&0).unwrap_or_default();
            assert_eq!(
                visible(&stored),
                visible(&model),
                "seed {seed} step {step}: redis {stored:?} vs model {model:?}"
            );
        }
    }
}
