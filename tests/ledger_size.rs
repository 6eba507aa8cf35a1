//! Measures the ledger's Redis memory per object with a million synthetic entries.
//! A measurement, not a check: run it with
//! `cargo test --release --test ledger_size -- --ignored --nocapture`.

mod harness;

use ferry_common::config::RedisConfig;
use ferry_common::ledger::LedgerEntry;
use ferry_common::queue::Queue;
use harness::Redis;
use redis::AsyncCommands;

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run explicitly (see the file's header)"]
async fn ledger_bytes_per_object_at_one_million_entries() {
    let redis = Redis::start();
    let q = Queue::connect(
        &RedisConfig {
            url: redis.url(),
            namespace: "ferry".into(),
        },
        ferry_common::queue::Persistence::FailFast,
    )
    .await
    .unwrap();
    let mut conn = redis.conn().await;
    let _: () = conn.set("warm", 1).await.unwrap();
    let before = used_memory(&mut conn).await;
    let total = 1_000_000u64;
    for chunk in 0..total / 10_000 {
        let entries: Vec<(String, LedgerEntry)> = (0..10_000)
            .map(|i| {
                let n = chunk * 10_000 + i;
                let key = format!("photos/{}/{:02}/IMG_{n:08}.jpg", 2000 + n % 25, n % 12);
                let entry = LedgerEntry {
                    source_etag: format!("{:032x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15),
                    size: 1_000_000 + n,
                    source_last_modified_ms: 1_700_000_000_000 + n as i64,
                    destination_etag: format!("{:032x}", u128::from(n) * 0x2545_f491_4f6c_dd1d),
                };
                (key, entry)
            })
            .collect();
        q.ledger_put_many("photos-dr", &entries).await.unwrap();
    }
    let after = used_memory(&mut conn).await;
    let per_object = (after - before) as f64 / total as f64;
    eprintln!(
        "ledger: {total} entries use {} bytes of Redis memory: {per_object:.1} bytes per object",
        after - before
    );
}
