//! Measures the ledger's size per object: Redis memory at 10 M and 50 M synthetic entries (or
//! `FERRY_LEDGER_ENTRIES`), in the growing layout and, for comparison, the legacy fixed one;
//! and the embedded backend's state file on disk at a million. Measurements that assert
//! their bounds, run explicitly with
//! `cargo test --release --test ledger_size -- --ignored --nocapture --test-threads 1`.

mod harness;

use ferry_core::config::RedisConfig;
use ferry_core::ledger::LedgerEntry;
use ferry_queue::{Keys, Queue};
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
    q.shape_ledger("photos-dr", true).await.unwrap();
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
    // entries' 10-byte fields and 40-odd-byte values, as Redis packs them in listpacks.
    // redb's copy-on-write pages and their free space make the file several times that.
    assert!(
        per_object(written) < 250.0,
        "{:.1} bytes per object",
        per_object(written)
    );
}

/// Writes `total` entries into a fresh Redis with a ledger of shape `fresh` (growing) or
/// legacy (65,536 fixed buckets) and returns (bytes per object, buckets, share of the buckets
/// sampled that Redis keeps in its compact listpack encoding).
async fn redis_ledger(total: u64, fresh: bool) -> (f64, u64, f64) {
    let redis = Redis::start();
    let q = Queue::connect(
        &RedisConfig::new(redis.url(), "ferry"),
        ferry_queue::Persistence::FailFast,
    )
    .await
    .unwrap();
    q.shape_ledger("photos-dr", fresh).await.unwrap();
    let mut conn = redis.conn().await;
    let _: () = conn.set("warm", 1).await.unwrap();
    let before = used_memory(&mut conn).await;
    let started = std::time::Instant::now();
    // Two writes in flight, so the client encodes one while Redis runs the other.
    let mut pending = None;
    for chunk in 0..total / 10_000 {
        let batch = entries(chunk);
        let q2 = q.clone();
        let next = tokio::spawn(async move { q2.ledger_put_many("photos-dr", &batch).await });
        if let Some(previous) = pending.replace(next) {
            previous.await.unwrap().unwrap();
        }
    }
    if let Some(last) = pending {
        last.await.unwrap().unwrap();
    }
    let after = used_memory(&mut conn).await;
    let (buckets, counted) = q.ledger_size("photos-dr").await.unwrap();
    if fresh {
        assert_eq!(counted, Some(total), "the ledger's own count");
    }
    let sample: Vec<u64> = (0..200).map(|i| i * buckets / 200).collect();
    let mut compact = 0;
    for bucket in &sample {
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(Keys::new("ferry").rule("photos-dr").ledger(*bucket as u32))
            .query_async(&mut conn)
            .await
            .unwrap();
        compact += u32::from(encoding == "listpack");
    }
    let per_object = (after - before) as f64 / total as f64;
    eprintln!(
        "ledger ({}): {total} entries in {buckets} buckets use {} bytes of Redis memory: \
         {per_object:.1} bytes per object; {compact} of {} buckets sampled are listpacks; \
         written in {:.0} s",
        if fresh {
            "growing"
        } else {
            "legacy, fixed buckets"
        },
        after - before,
        sample.len(),
        started.elapsed().as_secs_f64()
    );
    (
        per_object,
        buckets,
        f64::from(compact) / sample.len() as f64,
    )
}

/// The sizes measured: `FERRY_LEDGER_ENTRIES` (comma-separated), or 10 M and 50 M.
fn sizes() -> Vec<u64> {
    std::env::var("FERRY_LEDGER_ENTRIES")
        .unwrap_or_else(|_| "10000000,50000000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("FERRY_LEDGER_ENTRIES: a number of entries")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run explicitly (see the file's header)"]
async fn redis_ledger_bytes_per_object_at_ten_and_fifty_million_entries() {
    for total in sizes() {
        let (per_object, buckets, compact) = redis_ledger(total, true).await;
        // Every bucket stays a listpack: about 10 bytes of field, 40-odd of value and a
        // few of listpack framing per entry, and a bucket key per 40-80 entries.
        assert!(
            per_object < 75.0,
            "{per_object:.1} bytes per object at {total}"
        );
        assert_eq!(
            compact, 1.0,
            "buckets left the listpack encoding at {total}"
        );
        assert_eq!(buckets, total.div_ceil(u64::from(ferry_core::ledger::LOAD)));
    }
}

/// The same entries in the fixed buckets of a ledger from before growing ledgers, for the
/// comparison: past 65,536 times `hash-max-listpack-entries` entries (8.4 M at Redis's
/// default of 128; Debian's redis-server here says 512, so 33.5 M) its buckets leave the
/// listpack encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run explicitly (see the file's header)"]
async fn legacy_redis_ledger_bytes_per_object() {
    for total in sizes() {
        redis_ledger(total, false).await;
    }
}
