//! The queue's contract, against both backends: a real redis-server, and the embedded store
//! in a state dir. Claims, leases and fencing, retries, dead letters, release, parts,
//! iteration records and history, the ledger and the leader lease: every test runs on both
//! (see `contract!` at the end), so the two cannot drift apart.

mod harness;

use std::time::Duration;

use ferry_core::config::{BucketRef, RedisConfig};
use ferry_core::ledger::LedgerEntry;
use ferry_core::task::{Expected, ObjectVersion, Task};
use ferry_queue::Counted;
use ferry_queue::{
    Abandon, FailOutcome, HISTORY, LeaderToken, LedgerOp, ListingMarks, PlanBatch, Queue,
    QueueError, WorkerQueue,
};
use ferry_testkit::servers::TempDir;
use harness::{Redis, unique};

fn task(key: &str, size: u64) -> Task {
    Task::CopyObject {
        source: ObjectVersion {
            key: key.into(),
            size,
            etag: "e".into(),
            last_modified_ms: 1,
            storage_class: None,
        },
        destination: Expected::Absent,
    }
}

/// Where a test's queue lives; it stays alive as long as the test holds it.
enum Backend {
    Redis(Redis),
    Embedded(TempDir),
}

impl Backend {
    fn redis() -> Backend {
        Backend::Redis(Redis::start())
    }

    fn embedded() -> Backend {
        Backend::Embedded(TempDir::new("contract"))
    }

    async fn queue(&self) -> Queue {
        match self {
            Backend::Redis(redis) => Queue::connect(
                &RedisConfig::new(redis.url(), unique("q")),
                ferry_queue::Persistence::FailFast,
            )
            .await
            .expect("connecting"),
            Backend::Embedded(dir) => Queue::open_embedded(&dir.path().join("state"), "ferry")
                .await
                .expect("opening the state dir"),
        }
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// The ledger entries of rule `r` for `keys`.
async fn entries(q: &Queue, keys: &[&str]) -> Vec<Option<LedgerEntry>> {
    q.ledger_get("r", keys)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.entry)
        .collect()
}

async fn enqueued_tasks_are_claimed_once_and_acked_into_the_iteration_record(backend: Backend) {
    let q = backend.queue().await;
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    assert_eq!(n, 1);
    let tasks: Vec<Task> = (0..10).map(|i| task(&format!("k{i}"), i)).collect();
    assert_eq!(q.enqueue("r", n, 3, &tasks[..6]).await.unwrap(), 6);
    assert_eq!(q.enqueue("r", n, 7, &tasks[6..]).await.unwrap(), 4);

    let a = q.claim("r", "a", LEASE, (4, 0), 10).await.unwrap();
    let b = q.claim("r", "b", LEASE, (100, 0), 10).await.unwrap();
    assert_eq!((a.len(), b.len()), (4, 6));
    assert!(
        q.claim("r", "c", LEASE, (100, 0), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut keys: Vec<_> = a
        .iter()
        .chain(&b)
        .map(|c| match c.task.as_ref().unwrap() {
            Task::CopyObject { source, .. } => source.key.clone(),
            other => panic!("unexpected task {other:?}"),
        })
        .collect();
    keys.sort();
    let mut expected: Vec<_> = (0..10).map(|i| format!("k{i}")).collect();
    expected.sort();
    assert_eq!(keys, expected, "every task claimed exactly once");
    // Both shards were served in one claim (round-robin across shards).
    assert!(a.iter().any(|c| c.id.shard() == 3) && a.iter().any(|c| c.id.shard() == 7));

    for c in a.iter().chain(&b) {
        assert!(
            !q.ack("intruder", c, Counted::Copied, 5, &LedgerOp::None)
                .await
                .unwrap(),
            "a foreign worker must not ack"
        );
    }
    for c in &a {
        assert!(
            q.ack("a", c, Counted::Copied, 5, &LedgerOp::None)
                .await
                .unwrap()
        );
    }
    for c in &b {
        assert!(
            q.ack("b", c, Counted::Copied, 5, &LedgerOp::None)
                .await
                .unwrap()
        );
    }
    q.seal_iteration("r", n, &LeaderToken::unfenced())
        .await
        .unwrap();
    let record = q.iteration("r", n).await.unwrap();
    assert_eq!(
        (
            record.planned,
            record.done,
            record.copied,
            record.copied_bytes
        ),
        (10, 10, 10, 50)
    );
    assert!(record.settled());
    assert_eq!(q.depth("r").await.unwrap(), Default::default());
}

async fn an_expired_lease_is_reclaimed_and_the_old_holder_is_fenced_off(backend: Backend) {
    let q = backend.queue().await;
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    q.enqueue("r", n, 0, &[task("k", 1)]).await.unwrap();
    let old = q
        .claim("r", "old", Duration::from_millis(300), (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    assert!(
        q.claim("r", "new", LEASE, (1, 0), 10)
            .await
            .unwrap()
            .is_empty(),
        "still leased"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = q
        .claim("r", "new", LEASE, (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(new.id, old.id);
    assert_eq!(new.attempts, 1, "an expired lease counts as an attempt");
    assert!(new.token > old.token);
    // The old holder can neither renew, ack, fail nor release any more.
    assert_eq!(
        q.renew("r", "old", LEASE, &[(old.id.to_string(), old.token)])
            .await
            .unwrap(),
        vec![old.id.to_string()]
    );
    assert!(
        !q.ack("old", &old, Counted::Copied, 1, &LedgerOp::None)
            .await
            .unwrap()
    );
    assert_eq!(
        q.fail(
            "old",
            &old,
            "x",
            Duration::ZERO,
            10,
            false,
            &Abandon::default(),
            false,
        )
        .await
        .unwrap(),
        FailOutcome::Lost
    );
    assert!(!q.release("old", &old, false).await.unwrap());
    assert!(
        q.ack("new", &new, Counted::Copied, 1, &LedgerOp::None)
            .await
            .unwrap()
    );
}

async fn renewal_keeps_a_lease_alive_past_its_length(backend: Backend) {
    let q = backend.queue().await;
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    q.enqueue("r", n, 0, &[task("k", 1)]).await.unwrap();
    let lease = Duration::from_millis(400);
    let held = q
        .claim("r", "w", lease, (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let lost = q
            .renew("r", "w", lease, &[(held.id.to_string(), held.token)])
            .await
            .unwrap();
        assert!(lost.is_empty());
        assert!(
            q.claim("r", "thief", lease, (1, 0), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert!(
        q.ack("w", &held, Counted::Copied, 1, &LedgerOp::None)
            .await
            .unwrap()
    );
}

async fn failures_retry_with_attempt_counts_then_go_to_dead_letters(backend: Backend) {
    let q = backend.queue().await;
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    q.enqueue("r", n, 0, &[task("flaky", 1), task("broken", 1)])
        .await
        .unwrap();
    let max = 3;
    for attempt in 0..max {
        let claimed = q.claim("r", "w", LEASE, (1, 0), max).await.unwrap();
        let c = claimed
            .into_iter()
            .next()
            .expect("the task is claimable again");
        assert_eq!(c.attempts, attempt);
        let outcome = q
            .fail(
                "w",
                &c,
                "timeout",
                Duration::ZERO,
                max,
                false,
                &Abandon::default(),
                false,
            )
            .await
            .unwrap();
        let expected = if attempt + 1 == max {
            FailOutcome::Dead
        } else {
            FailOutcome::Retry
        };
        assert_eq!(outcome, expected);
        if attempt == 0 {
            // The other task: a permanent error buries it at once.
            let other = q
                .claim("r", "w", LEASE, (1, 0), max)
                .await
                .unwrap()
                .remove(0);
            assert_eq!(
                q.fail(
                    "w",
                    &other,
                    "access denied",
                    Duration::ZERO,
                    max,
                    true,
                    &Abandon::default(),
                    false,
                )
                .await
                .unwrap(),
                FailOutcome::Dead
            );
        }
    }
    assert!(
        q.claim("r", "w", LEASE, (10, 0), max)
            .await
            .unwrap()
            .is_empty()
    );
    let depth = q.depth("r").await.unwrap();
    assert_eq!(
        (depth.pending, depth.leased, depth.retrying, depth.dead),
        (0, 0, 0, 2)
    );
    q.seal_iteration("r", n, &LeaderToken::unfenced())
        .await
        .unwrap();
    let record = q.iteration("r", n).await.unwrap();
    assert_eq!((record.dead, record.done), (2, 0));
    assert!(record.settled());
}

async fn a_retry_waits_for_its_delay(backend: Backend) {
    let q = backend.queue().await;
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    q.enqueue("r", n, 0, &[task("k", 1)]).await.unwrap();
    let c = q
        .claim("r", "w", LEASE, (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    q.fail(
        "w",
        &c,
        "slow down",
        Duration::from_millis(500),
        10,
        false,
        &Abandon::default(),
        false,
    )
    .await
    .unwrap();
    assert!(
        q.claim("r", "w", LEASE, (1, 0), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(q.depth("r").await.unwrap().retrying, 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(q.claim("r", "w", LEASE, (1, 0), 10).await.unwrap().len(), 1);
}

async fn expired_leases_at_max_attempts_go_to_dead_letters(backend: Backend) {
    let q = backend.queue().await;
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    q.enqueue("r", n, 0, &[task("k", 1)]).await.unwrap();
    q.claim("r", "w", Duration::from_millis(100), (1, 0), 1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    q.upkeep("r", 1).await.unwrap();
    assert_eq!(q.depth("r").await.unwrap().dead, 1);
    assert_eq!(q.iteration("r", n).await.unwrap().dead, 1);
}

async fn release_returns_a_task_without_counting_an_attempt(backend: Backend) {
    let q = backend.queue().await;
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    q.enqueue("r", n, 0, &[task("a", 1), task("b", 1)])
        .await
        .unwrap();
    let first = q
        .claim("r", "w", LEASE, (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    assert!(q.release("w", &first, false).await.unwrap());
    let again = q
        .claim("r", "w", LEASE, (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.id, first.id, "a released task is claimed next");
    assert_eq!(again.attempts, 0);
}

async fn history_keeps_the_last_hundred_iterations(backend: Backend) {
    let q = backend.queue().await;
    for _ in 0..HISTORY + 2 {
        let n = q
            .begin_iteration("r", &LeaderToken::unfenced())
            .await
            .unwrap();
        q.finish_iteration("r", n, true, &LeaderToken::unfenced())
            .await
            .unwrap();
    }
    let history = q.history("r").await.unwrap();
    assert_eq!(history.len(), HISTORY);
    assert_eq!(history[0].number, HISTORY as u64 + 2, "newest first");
    assert_eq!(history.last().unwrap().number, 3);
    assert_eq!(
        q.iteration("r", 1).await.unwrap().started_ms,
        0,
        "old records are deleted"
    );
}

async fn registered_rules_round_trip_without_credentials(backend: Backend) {
    let q = backend.queue().await;
    let rules = vec![BucketRef {
        rule: "a".into(),
        source: "http://s/x".into(),
        destination: "http://d/y".into(),
    }];
    q.register_rules(&rules).await.unwrap();
    assert_eq!(q.registered_rules().await.unwrap(), rules);
}

/// Regression: a Redis back from a restart answers LOADING until its data is in memory. The
/// answer came back as a reply, not an error, so it went past the outage retries to the
/// caller: a coordinator exited with `BusyLoading` (seen in CI). A single command, a pipeline
/// and a script sent while Redis loads now wait for it, and act once.
#[tokio::test]
async fn commands_sent_while_redis_loads_after_a_restart_wait_for_it() {
    let mut redis = Redis::start_aof_loading_slowly(3_000).await;
    let q = Queue::connect(
        &RedisConfig::new(redis.url(), unique("q")),
        ferry_queue::Persistence::RideOut(tokio_util::sync::CancellationToken::new()),
    )
    .await
    .unwrap();
    let rule = |name: &str| BucketRef {
        rule: name.into(),
        source: "http://s/x".into(),
        destination: "http://d/y".into(),
    };
    q.register_rules(&[rule("a")]).await.unwrap();

    redis.restart();
    let mut raw = redis.conn().await;
    let refused = redis::cmd("PING")
        .query_async::<String>(&mut raw)
        .await
        .expect_err("redis answers LOADING right after the restart");
    assert_eq!(
        refused.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading),
        "{refused}"
    );

    let (b, unfenced) = ([rule("b")], LeaderToken::unfenced());
    let (registered, read, begun) = tokio::join!(
        q.register_rules(&b),
        q.registered_rules(),
        q.begin_iteration("r", &unfenced),
    );
    registered.expect("a pipeline sent while redis loads");
    assert!(
        read.expect("a command sent while redis loads")
            .contains(&rule("a")),
        "what was written before the restart is read back"
    );
    assert_eq!(begun.expect("a script sent while redis loads"), 1);
    let mut names: Vec<String> = q
        .registered_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.rule)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
}

#[tokio::test]
async fn undecodable_payloads_are_reported_not_dropped() {
    use redis::AsyncCommands;
    let redis = Redis::start();
    let ns = unique("q");
    let q = Queue::connect(
        &RedisConfig::new(redis.url(), ns.clone()),
        ferry_queue::Persistence::FailFast,
    )
    .await
    .unwrap();
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    q.enqueue("r", n, 0, &[task("k", 1)]).await.unwrap();
    let mut conn = redis.conn().await;
    let ids: Vec<String> = conn.hkeys(format!("{ns}:{{r}}:tasks")).await.unwrap();
    let _: () = conn
        .hset(format!("{ns}:{{r}}:tasks"), &ids[0], vec![99u8, 1, 2])
        .await
        .unwrap();
    let claimed = q
        .claim("r", "w", LEASE, (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    let err = claimed.task.unwrap_err().to_string();
    assert!(err.contains("version 99"), "{err}");
}

async fn only_the_lease_holder_writes_the_ledger_and_deletes_remove_entries(backend: Backend) {
    let q = backend.queue().await;
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    q.enqueue("r", n, 0, &[task("k", 1)]).await.unwrap();
    let old = q
        .claim("r", "old", Duration::from_millis(200), (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = q
        .claim("r", "new", LEASE, (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    let entry = |etag: &str| LedgerEntry {
        source_etag: etag.into(),
        size: 1,
        source_last_modified_ms: 5,
        destination_etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
    };
    assert!(
        !q.ack(
            "old",
            &old,
            Counted::Copied,
            1,
            &LedgerOp::Put("k".into(), entry("stale"))
        )
        .await
        .unwrap()
    );
    assert_eq!(
        entries(&q, &["k"]).await,
        vec![None],
        "a fenced-off worker wrote the ledger"
    );
    assert!(
        q.ack(
            "new",
            &new,
            Counted::Copied,
            1,
            &LedgerOp::Put("k".into(), entry("fresh"))
        )
        .await
        .unwrap()
    );
    assert_eq!(
        entries(&q, &["k", "other"]).await,
        vec![Some(entry("fresh")), None]
    );

    q.enqueue("r", n, 0, &[task("k", 1)]).await.unwrap();
    let del = q
        .claim("r", "new", LEASE, (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    assert!(
        q.ack(
            "new",
            &del,
            Counted::Deleted,
            0,
            &LedgerOp::Delete("k".into())
        )
        .await
        .unwrap()
    );
    assert_eq!(entries(&q, &["k"]).await, vec![None]);
}

async fn a_plan_batch_enqueues_counts_and_checkpoints_atomically(backend: Backend) {
    let q = backend.queue().await;
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    let batch = PlanBatch {
        tasks: vec![
            (1, vec![task("a", 1), task("b", 2)]),
            (9, vec![task("c", 3)]),
        ],
        listed: 5,
        skipped: 2,
        checkpoint: Some((3, "prefix/last-key".into())),
        ..PlanBatch::default()
    };
    assert_eq!(
        q.plan("r", n, &batch, &LeaderToken::unfenced())
            .await
            .unwrap(),
        Some(3)
    );
    let record = q.iteration("r", n).await.unwrap();
    assert_eq!((record.planned, record.listed, record.skipped), (3, 5, 2));
    assert_eq!(record.checkpoint, Some((3, "prefix/last-key".to_string())));
    assert_eq!(
        q.latest_iteration("r").await.unwrap().map(|r| r.number),
        Some(n)
    );
    let claimed = q.claim("r", "w", LEASE, (10, 0), 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for c in &claimed {
        let at = c.id.enqueued_ms().expect("ids carry their enqueue time");
        assert!(now.abs_diff(at) < 60_000, "{} vs {now}", c.id);
    }
}

async fn one_coordinator_leads_a_rule_until_it_releases_or_its_lease_runs_out(backend: Backend) {
    let q = backend.queue().await;
    let lease = Duration::from_millis(400);
    let c1 = q
        .acquire_leader("r", "c1", lease)
        .await
        .unwrap()
        .expect("free");
    assert_eq!(q.acquire_leader("r", "c2", lease).await.unwrap(), None);
    assert_eq!(
        q.acquire_leader("r", "c1", lease).await.unwrap().as_ref(),
        Some(&c1),
        "re-acquiring is idempotent"
    );
    assert!(q.renew_leader("r", &c1, lease).await.unwrap());
    assert_eq!(q.leader_of("r").await.unwrap().as_deref(), Some("c1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c2 = q
        .acquire_leader("r", "c2", lease)
        .await
        .unwrap()
        .expect("an expired lease is free");
    assert!(
        !q.renew_leader("r", &c1, lease).await.unwrap(),
        "the old leader learns it lost"
    );
    assert!(!q.release_leader("r", &c1).await.unwrap());
    assert!(q.release_leader("r", &c2).await.unwrap());
    assert_eq!(q.leader_of("r").await.unwrap(), None);
}

/// A coordinator that lost its lease (paused past it, partitioned) cannot begin, plan, seal
/// or finish iterations, nor record the rule's state, even after the same process leads
/// again: its writes carry the old token.
async fn a_former_leader_is_fenced_off_every_coordinator_write(backend: Backend) {
    let q = backend.queue().await;
    let lease = Duration::from_millis(300);
    let old = q.acquire_leader("r", "c1", lease).await.unwrap().unwrap();
    let n = q.begin_iteration("r", &old).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let now = q.acquire_leader("r", "c2", lease).await.unwrap().unwrap();
    let fenced = |r: Result<(), ferry_queue::QueueError>| {
        assert!(
            matches!(r, Err(ferry_queue::QueueError::Fenced { .. })),
            "{r:?}"
        )
    };
    let batch = PlanBatch {
        tasks: vec![(0, vec![task("a", 1)])],
        listed: 1,
        checkpoint: Some((0, "a".into())),
        ..PlanBatch::default()
    };
    fenced(q.plan("r", n, &batch, &old).await.map(drop));
    fenced(q.seal_iteration("r", n, &old).await);
    fenced(q.finish_iteration("r", n, true, &old).await.map(drop));
    fenced(q.begin_iteration("r", &old).await.map(drop));
    fenced(
        q.set_rule_state("r", &old, ferry_queue::RuleState::Stopped, None, true)
            .await,
    );
    let record = q.iteration("r", n).await.unwrap();
    assert_eq!((record.planned, record.sealed), (0, false), "{record:?}");
    assert!(record.is_running(), "{record:?}");
    // The lease passes back to c1: a new token, and the old one is still refused.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = q.acquire_leader("r", "c1", lease).await.unwrap().unwrap();
    assert_ne!(again, old);
    fenced(q.seal_iteration("r", n, &old).await);
    assert_eq!(q.plan("r", n, &batch, &again).await.unwrap(), Some(1));
    // The same batch again (its reply lost in an outage) is recognised, not applied twice.
    assert_eq!(q.plan("r", n, &batch, &again).await.unwrap(), None);
    assert_eq!(q.iteration("r", n).await.unwrap().planned, 1);
    drop(now);
}

async fn events_apply_their_sequencer_and_task_at_once_and_measure_the_lag(backend: Backend) {
    use ferry_queue::{EVENTS_ITERATION, EventApplied, EventTask};
    let q = backend.queue().await;
    let now = q.redis_time_ms().await.unwrap();
    let event = |key: &str, seq: Option<&str>, with_task: bool| EventTask {
        key: key.into(),
        sequencer: seq.map(str::to_string),
        time_ms: now - 1500,
        task: with_task.then(|| (5, task(key, 3))),
    };
    let applied = q
        .apply_events(
            "r",
            &[
                event("a", Some("0A"), true),
                // the same event again in the same batch: a duplicate
                event("a", Some("0A"), true),
                // an older one, right-padded: 09FF < 0A00
                event("a", Some("09FF"), true),
                event("b", Some("01"), false),
                event("c", None, true),
            ],
        )
        .await
        .unwrap();
    use EventApplied::*;
    assert_eq!(applied, vec![Enqueued, Stale, Stale, Recorded, Enqueued]);
    let held = q.applied_sequencers("r", &["a", "b", "c"]).await.unwrap();
    assert_eq!(held, vec![Some("0A".into()), Some("01".into()), None]);
    // A newer one after all that, in a later batch.
    assert_eq!(
        q.apply_events("r", &[event("a", Some("0A01"), true)])
            .await
            .unwrap(),
        vec![Enqueued]
    );
    let claimed = q.claim("r", "w", LEASE, (10, 0), 10).await.unwrap();
    assert_eq!(claimed.len(), 3);
    for c in &claimed {
        assert_eq!(c.id.iteration(), EVENTS_ITERATION);
        assert_eq!(
            c.id.enqueued_ms(),
            Some(now - 1500),
            "the id carries the event's time"
        );
        assert!(
            q.ack("w", c, Counted::Copied, 3, &LedgerOp::None)
                .await
                .unwrap()
        );
    }
    let record = q.events_record("r").await.unwrap();
    assert_eq!(
        (record.tasks.planned, record.tasks.done, record.tasks.copied),
        (3, 3, 3)
    );
    assert_eq!(record.lag_bands.iter().sum::<u64>(), 3);
    assert_eq!(
        record.lag_bands[1], 3,
        "1.5 s lags fall within 5 s: {record:?}"
    );
    assert!((1500..5000).contains(&record.lag_max_ms), "{record:?}");
    // No iteration is touched, and forgetting old sequencers makes nothing stale.
    assert_eq!(q.latest_iteration("r").await.unwrap(), None);
    assert_eq!(q.prune_sequencers("r", now + 60_000).await.unwrap(), 2);
    assert_eq!(
        q.apply_events("r", &[event("a", Some("01"), false)])
            .await
            .unwrap(),
        vec![Recorded]
    );
}

async fn acks_in_one_batch_are_each_fenced_by_their_own_lease(backend: Backend) {
    use ferry_queue::AckItem;
    let q = backend.queue().await;
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    let tasks: Vec<Task> = (0..4).map(|i| task(&format!("b{i}"), 10)).collect();
    q.enqueue("r", n, 2, &tasks).await.unwrap();
    let claimed = q.claim("r", "w", LEASE, (4, 0), 10).await.unwrap();
    assert_eq!(claimed.len(), 4);
    let entry = LedgerEntry {
        source_etag: "e".into(),
        size: 10,
        source_last_modified_ms: 1,
        destination_etag: "d".into(),
    };
    let item = |i: usize, token: u64| AckItem {
        id: claimed[i].id.clone(),
        token,
        outcome: Counted::Copied,
        bytes: 10,
        ledger: LedgerOp::Put(key_of(&claimed[i]), entry.clone()),
        upload: None,
        report: None,
    };
    // The third carries a token that is not its lease's: only it is refused.
    let items = vec![
        item(0, claimed[0].token),
        item(1, claimed[1].token),
        item(2, claimed[2].token + 1000),
        item(3, claimed[3].token),
    ];
    assert_eq!(
        q.ack_many("w", "r", &items).await.unwrap(),
        vec![true, true, false, true]
    );
    // Acked again: the leases are gone, nothing is counted twice.
    assert_eq!(
        q.ack_many("w", "r", &items[..2]).await.unwrap(),
        vec![false, false]
    );
    let record = q.iteration("r", n).await.unwrap();
    assert_eq!(
        (record.done, record.copied, record.copied_bytes),
        (3, 3, 30)
    );
    let keys: Vec<String> = claimed.iter().map(key_of).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let written: Vec<bool> = entries(&q, &refs)
        .await
        .iter()
        .map(Option::is_some)
        .collect();
    assert_eq!(written, vec![true, true, false, true]);
    assert!(q.ack_many("w", "r", &[]).await.unwrap().is_empty());
}

fn key_of(c: &ferry_queue::Claimed) -> String {
    match c.task.as_ref().unwrap() {
        Task::CopyObject { source, .. } => source.key.clone(),
        other => panic!("unexpected task {other:?}"),
    }
}

/// A ledger entry that differs per `i`, with MD5-style ETags as S3 gives them.
fn numbered_entry(i: u64) -> LedgerEntry {
    LedgerEntry {
        source_etag: format!("{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
        size: i,
        source_last_modified_ms: 1_700_000_000_000 + i as i64,
        destination_etag: format!("{:032x}", u128::from(i) * 0x2545_f491_4f6c_dd1d),
    }
}

async fn the_ledger_grows_a_bucket_per_load_of_entries_and_keeps_every_entry(backend: Backend) {
    let q = backend.queue().await;
    q.shape_ledger("r", true).await.unwrap();
    assert_eq!(q.ledger_size("r").await.unwrap(), (1, Some(0)));
    let total = 5_000u64;
    let all: Vec<(String, LedgerEntry)> = (0..total)
        .map(|i| (format!("photos/IMG_{i:05}.jpg"), numbered_entry(i)))
        .collect();
    for chunk in all.chunks(700) {
        q.ledger_put_many("r", chunk).await.unwrap();
    }
    // One bucket per LOAD entries, rounded up: each entry past the load split one bucket.
    let buckets = total.div_ceil(u64::from(ferry_core::ledger::LOAD));
    assert_eq!(q.ledger_size("r").await.unwrap(), (buckets, Some(total)));
    // Every entry is still found where the grown ledger looks for it.
    for chunk in all.chunks(500) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let want: Vec<Option<LedgerEntry>> = chunk.iter().map(|(_, e)| Some(e.clone())).collect();
        assert_eq!(entries(&q, &keys).await, want);
    }
    // Rewriting an entry does not count it twice; deleting one (an ack) does count.
    q.ledger_put_many("r", &all[..10]).await.unwrap();
    let n = q
        .begin_iteration("r", &LeaderToken::unfenced())
        .await
        .unwrap();
    q.enqueue("r", n, 0, &[task(&all[0].0, 1)]).await.unwrap();
    let claimed = q
        .claim("r", "w", LEASE, (1, 0), 10)
        .await
        .unwrap()
        .remove(0);
    assert!(
        q.ack(
            "w",
            &claimed,
            Counted::Deleted,
            0,
            &LedgerOp::Delete(all[0].0.clone())
        )
        .await
        .unwrap()
    );
    assert_eq!(
        q.ledger_size("r").await.unwrap(),
        (buckets, Some(total - 1))
    );
    assert_eq!(
        entries(&q, &[&all[0].0, &all[1].0]).await,
        vec![None, Some(all[1].1.clone())]
    );
}

async fn a_ledger_found_without_a_shape_on_a_registered_rule_keeps_fixed_buckets(backend: Backend) {
    let q = backend.queue().await;
    q.shape_ledger("r", false).await.unwrap();
    // Shaping again, even as a fresh rule, changes nothing.
    q.shape_ledger("r", true).await.unwrap();
    let buckets = u64::from(ferry_core::ledger::LEGACY_BUCKETS);
    assert_eq!(q.ledger_size("r").await.unwrap(), (buckets, None));
    let all: Vec<(String, LedgerEntry)> = (0..300)
        .map(|i| (format!("k{i}"), numbered_entry(i)))
        .collect();
    q.ledger_put_many("r", &all).await.unwrap();
    let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    let want: Vec<Option<LedgerEntry>> = all.iter().map(|(_, e)| Some(e.clone())).collect();
    assert_eq!(entries(&q, &keys).await, want);
    assert_eq!(q.ledger_size("r").await.unwrap(), (buckets, None));
}

/// A ledger as ferry wrote it before ledgers grew (entries at bucket `slot().0`, field
/// `slot().1`) is still read, once its registered rule is shaped as legacy.
#[tokio::test]
async fn a_ledger_written_before_ledgers_grew_is_still_read() {
    let redis = Redis::start();
    let q = Queue::connect(
        &RedisConfig::new(redis.url(), "old"),
        ferry_queue::Persistence::FailFast,
    )
    .await
    .unwrap();
    let mut conn = redis.conn().await;
    for i in 0..50 {
        let (bucket, field) = ferry_core::ledger::slot(&format!("k{i}"));
        let _: () = redis::cmd("HSET")
            .arg(ferry_queue::Keys::new("old").rule("r").ledger(bucket))
            .arg(&field[..])
            .arg(numbered_entry(i).encode())
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    q.shape_ledger("r", false).await.unwrap();
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let want: Vec<Option<LedgerEntry>> = (0..50).map(|i| Some(numbered_entry(i))).collect();
    assert_eq!(entries(&q, &keys).await, want);
}

async fn key_ranges_are_recorded_once_and_each_moves_its_own_checkpoint(backend: Backend) {
    let q = backend.queue().await;
    let leader = LeaderToken::unfenced();
    let n = q.begin_iteration("r", &leader).await.unwrap();
    let cuts = vec!["k/3".to_string(), "k/6".to_string()];
    assert_eq!(
        q.record_ranges("r", n, 2, &cuts, &leader).await.unwrap(),
        cuts
    );
    // A second attempt (a coordinator that took over) gets the ranges on record.
    let other = vec!["k/5".to_string()];
    assert_eq!(
        q.record_ranges("r", n, 2, &other, &leader).await.unwrap(),
        cuts
    );
    let lane = |range, (at, after): (&str, Option<&str>), key: &str| PlanBatch {
        tasks: vec![(range as u32, vec![task(key, 1)])],
        listed: 1,
        checkpoint: Some((2, at.to_string())),
        after: after.map(|a| (2, a.to_string())),
        range: Some(range),
        ..PlanBatch::default()
    };
    // Two ranges plan side by side, each after its own checkpoint.
    assert_eq!(
        q.plan("r", n, &lane(0, ("k/1", None), "k/1"), &leader)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        q.plan("r", n, &lane(1, ("k/4", None), "k/4"), &leader)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        q.plan("r", n, &lane(0, ("k/2", Some("k/1")), "k/2"), &leader)
            .await
            .unwrap(),
        Some(1)
    );
    // The same batch again (its reply lost) is not applied twice.
    assert_eq!(
        q.plan("r", n, &lane(0, ("k/2", Some("k/1")), "k/2"), &leader)
            .await
            .unwrap(),
        None
    );
    // A batch that follows a checkpoint the range is not at is refused.
    let stale = q
        .plan("r", n, &lane(1, ("k/5", Some("k/9")), "k/5"), &leader)
        .await;
    assert!(matches!(stale, Err(QueueError::Stale { .. })), "{stale:?}");
    let record = q.iteration("r", n).await.unwrap();
    assert_eq!(record.ranges.get(&2), Some(&cuts));
    let checkpoints: Vec<_> = record.range_checkpoints.into_iter().collect();
    assert_eq!(
        checkpoints,
        vec![((2, 0), "k/2".to_string()), ((2, 1), "k/4".to_string())]
    );
    // The prefix checkpoint is untouched by the ranges', and moves past the prefix after.
    assert_eq!(record.checkpoint, None);
    let past = PlanBatch {
        checkpoint: Some((3, String::new())),
        ..PlanBatch::default()
    };
    assert_eq!(q.plan("r", n, &past, &leader).await.unwrap(), Some(0));
    let record = q.iteration("r", n).await.unwrap();
    assert_eq!(
        (record.checkpoint, record.planned, record.listed),
        (Some((3, String::new())), 3, 3)
    );
}

async fn listing_marks_are_kept_for_the_next_iteration_and_replaced_by_its_own(backend: Backend) {
    let q = backend.queue().await;
    let leader = LeaderToken::unfenced();
    let marks = |listed: u64| ListingMarks {
        prefix: "k/".into(),
        listed,
        keys: vec!["k/2".into(), "k/5".into(), "k/8".into()],
    };
    let first = q.begin_iteration("r", &leader).await.unwrap();
    q.record_marks("r", first, 0, &marks(10), &leader)
        .await
        .unwrap();
    q.finish_iteration("r", first, true, &leader).await.unwrap();
    let record = q.iteration("r", first).await.unwrap();
    assert_eq!(record.marks.get(&0), Some(&marks(10)));
    // A finished iteration takes no marks.
    let late = q.record_marks("r", first, 1, &marks(10), &leader).await;
    assert!(matches!(late, Err(QueueError::Stale { .. })), "{late:?}");

    let second = q.begin_iteration("r", &leader).await.unwrap();
    assert_eq!(second, first + 1);
    q.record_marks("r", second, 0, &marks(12), &leader)
        .await
        .unwrap();
    assert_eq!(
        q.iteration("r", second).await.unwrap().marks.get(&0),
        Some(&marks(12))
    );
    assert_eq!(q.iteration("r", first).await.unwrap().marks.get(&0), None);
}

/// Runs each named contract test once per backend: `redis::NAME` and `embedded::NAME`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod redis_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::redis()).await
                }
            )*
        }
        mod embedded_backend {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::embedded()).await
                }
            )*
        }
    };
}

contract!(
    enqueued_tasks_are_claimed_once_and_acked_into_the_iteration_record,
    an_expired_lease_is_reclaimed_and_the_old_holder_is_fenced_off,
    renewal_keeps_a_lease_alive_past_its_length,
    failures_retry_with_attempt_counts_then_go_to_dead_letters,
    a_retry_waits_for_its_delay,
    expired_leases_at_max_attempts_go_to_dead_letters,
    release_returns_a_task_without_counting_an_attempt,
    history_keeps_the_last_hundred_iterations,
    registered_rules_round_trip_without_credentials,
    only_the_lease_holder_writes_the_ledger_and_deletes_remove_entries,
    a_plan_batch_enqueues_counts_and_checkpoints_atomically,
    one_coordinator_leads_a_rule_until_it_releases_or_its_lease_runs_out,
    a_former_leader_is_fenced_off_every_coordinator_write,
    events_apply_their_sequencer_and_task_at_once_and_measure_the_lag,
    acks_in_one_batch_are_each_fenced_by_their_own_lease,
    the_ledger_grows_a_bucket_per_load_of_entries_and_keeps_every_entry,
    a_ledger_found_without_a_shape_on_a_registered_rule_keeps_fixed_buckets,
    key_ranges_are_recorded_once_and_each_moves_its_own_checkpoint,
    listing_marks_are_kept_for_the_next_iteration_and_replaced_by_its_own,
);
