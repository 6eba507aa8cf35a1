//! Measures the ledger's size per object with a million synthetic entries: Redis memory, and
//! the embedded backend's state file on disk. Measurements, run explicitly with
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

/// The measurement's entries, `chunk` of 10,000 at a time: photo-like keys and MD5-like ETags.
fn entries(chunk: u64) -> Vec<(String, LedgerEntry)> {
    (0..10_000)
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
        .collect()
}

const TOTAL: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run explicitly (see the file's header)"]
async fn embedded_ledger_bytes_per_object_at_one_million_entries() {
    let dir = ferry_testkit::servers::TempDir::new("ledger-size");
    let state = dir.path().join("state");
    let q = Queue::open_embedded(&state, "ferry").await.unwrap();
    let empty = std::fs::metadata(state.join("state.redb")).unwrap().len();
    for chunk in 0..TOTAL / 10_000 {
        q.ledger_put_many("photos-dr", &entries(chunk))
            .await
            .unwrap();
    }
    drop(q);
    let file = state.join("state.redb");
    let written = std::fs::metadata(&file).unwrap().len();
    // Compacted, as a long-lived state file settles (copy-on-write leaves free pages behind
    // that later writes reuse).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut db = loop {
        match redb::Database::open(&file) {
            Ok(db) => break db,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reopening the state file: {e}"),
        }
    };
    db.compact().unwrap();
    drop(db);
    let compacted = std::fs::metadata(&file).unwrap().len();
    let per_object = |bytes: u64| (bytes - empty) as f64 / TOTAL as f64;
    eprintln!(
        "embedded ledger: {TOTAL} entries: state file {written} bytes as written ({:.1} bytes per object), {compacted} bytes compacted ({:.1} bytes per object)",
        per_object(written),
        per_object(compacted)
    );
    // The ledger's buckets are packed hashes: one B-tree value per bucket holding its
    // entries' 8-byte slots and 40-odd-byte values, as Redis packs them in listpacks.
    assert!(
        per_object(compacted) < 120.0,
        "{:.1} bytes per object",
        per_object(compacted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run explicitly (see the file's header)"]
async fn ledger_bytes_per_object_at_one_million_entries() {
    let redis = Redis::start();
    let q = Queue::connect(
        &RedisConfig::new(redis.url(), "ferry"),
        ferry_common::queue::Persistence::FailFast,
    )
    .await
    .unwrap();
    let mut conn = redis.conn().await;
    let _: () = conn.set("warm", 1).await.unwrap();
    let before = used_memory(&mut conn).await;
    let total = TOTAL;
    for chunk in 0..total / 10_000 {
        q.ledger_put_many("photos-dr", &entries(chunk))
            .await
            .unwrap();
    }
    let after = used_memory(&mut conn).await;
    let per_object = (after - before) as f64 / total as f64;
    eprintln!(
        "ledger: {total} entries use {} bytes of Redis memory: {per_object:.1} bytes per object",
        after - before
    );
}
