//! The worker alone, against the embedded queue and in-memory stores: tasks enqueued by
//! hand, as a coordinator would, and what the worker makes of them, with no server at all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_core::config::Config;
use ferry_core::task::{Expected, ObjectVersion, Task};
use ferry_queue::{LeaderToken, Queue};
use ferry_storage::{ObjectStore, Stores};
use ferry_testkit::memstore::MemStore;
use ferry_testkit::servers::TempDir;
use tokio_util::sync::CancellationToken;

const SRC: &str = "src-bucket";
const DST: &str = "dst-bucket";

struct World {
    src: Arc<MemStore>,
    dst: Arc<MemStore>,
    config: Arc<Config>,
    queue: Queue,
    _dir: TempDir,
}

impl World {
    async fn new() -> World {
        let config = Config::from_toml(&format!(
            "[endpoints.src]\nurl = \"http://src.invalid\"\n\
             [endpoints.dst]\nurl = \"http://dst.invalid\"\n\
             [[rules]]\nname = \"r\"\nmax_attempts = 2\n\
             source = {{ endpoint = \"src\", bucket = \"{SRC}\" }}\n\
             destination = {{ endpoint = \"dst\", bucket = \"{DST}\" }}\n"
        ))
        .expect("config");
        let dir = TempDir::new("worker-unit");
        let queue = Queue::open_embedded(&dir.path().join("state"), "ferry")
            .await
            .expect("state dir");
        World {
            src: Arc::new(MemStore::new("src")),
            dst: Arc::new(MemStore::new("dst")),
            config: Arc::new(config),
            queue,
            _dir: dir,
        }
    }

    /// The task a planner makes for `key` as the source holds it now.
    async fn copy_task(&self, key: &str) -> Task {
        let head = self.src.head(SRC, key, None).await.expect("source object");
        Task::CopyObject {
            source: ObjectVersion {
                key: key.into(),
                size: head.size,
                etag: head.etag,
                last_modified_ms: head.last_modified_ms,
                storage_class: None,
            },
            destination: Expected::Absent,
        }
    }

    /// Enqueues `tasks` as iteration 1, runs a worker until the iteration settles, and
    /// returns the iteration's record.
    async fn work(&self, tasks: &[Task]) -> ferry_queue::IterationRecord {
        let unfenced = LeaderToken::unfenced();
        let n = self.queue.begin_iteration("r", &unfenced).await.unwrap();
        self.queue.enqueue("r", n, 0, tasks).await.unwrap();
        self.queue.seal_iteration("r", n, &unfenced).await.unwrap();
        let stop = CancellationToken::new();
        let worker = tokio::spawn(ferry_worker::run(
            self.config.clone(),
            Stores::from_stores([
                ("src".to_string(), self.src.clone() as Arc<dyn ObjectStore>),
                ("dst".to_string(), self.dst.clone() as Arc<dyn ObjectStore>),
            ]),
            Arc::new(self.queue.clone()),
            ferry_worker::WorkerOptions {
                id: "w".into(),
                concurrency: 4,
                lease: Duration::from_secs(30),
                drain: Duration::from_secs(5),
                part_concurrency: 2,
            },
            stop.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        let record = loop {
            let record = self.queue.iteration("r", n).await.unwrap();
            if record.settled() {
                break record;
            }
            assert!(Instant::now() < deadline, "not settled: {record:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        stop.cancel();
        worker.await.expect("worker task").expect("worker");
        record
    }
}

#[tokio::test]
async fn copies_are_acked_into_the_iteration_and_recorded_in_the_ledger() {
    let world = World::new().await;
    world.src.insert(SRC, "one", b"first");
    world.src.insert(SRC, "two", b"second!");
    let tasks = vec![world.copy_task("one").await, world.copy_task("two").await];
    let record = world.work(&tasks).await;
    assert_eq!(
        (record.copied, record.copied_bytes, record.dead),
        (2, 12, 0)
    );
    assert_eq!(world.dst.contents(DST), world.src.contents(SRC));
    let ledger = world.queue.ledger_get("r", &["one", "two"]).await.unwrap();
    for (view, key) in ledger.iter().zip(["one", "two"]) {
        let entry = view.entry.as_ref().expect("a ledger entry for every copy");
        assert_eq!(entry.destination_etag, world.dst.contents(DST)[key].1);
    }
}

#[tokio::test]
async fn a_source_gone_since_planning_is_counted_gone_not_failed() {
    let world = World::new().await;
    world.src.insert(SRC, "fleeting", b"x");
    let task = world.copy_task("fleeting").await;
    world.src.delete(SRC, "fleeting").await.unwrap();
    let record = world.work(&[task]).await;
    assert_eq!((record.gone, record.copied, record.dead), (1, 0, 0));
    assert!(world.dst.contents(DST).is_empty());
}

#[tokio::test]
async fn a_destination_that_refuses_writes_dead_letters_the_task_with_the_reason() {
    let world = World::new().await;
    world.src.insert(SRC, "k", b"x");
    world.dst.deny_writes();
    let task = world.copy_task("k").await;
    let record = world.work(&[task]).await;
    assert_eq!((record.dead, record.copied), (1, 0));
    let dead = world.queue.dead_letters("r").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key.as_deref(), Some("k"));
    assert!(dead[0].error.contains("AccessDenied"), "{:?}", dead[0]);
}

#[tokio::test]
async fn a_delete_task_removes_only_the_object_the_ledger_names() {
    let world = World::new().await;
    world.dst.insert(DST, "ours", b"written by ferry");
    world.dst.insert(DST, "replaced", b"someone else's");
    let etag = world.dst.contents(DST)["ours"].1.clone();
    let tasks = vec![
        Task::DeleteObject {
            key: "ours".into(),
            destination_etag: etag,
        },
        Task::DeleteObject {
            key: "replaced".into(),
            destination_etag: "0123456789abcdef0123456789abcdef".into(),
        },
    ];
    let record = world.work(&tasks).await;
    assert_eq!((record.deleted, record.dead), (1, 0), "{record:?}");
    let left: Vec<String> = world.dst.contents(DST).into_keys().collect();
    assert_eq!(left, vec!["replaced".to_string()]);
}

/// A store that refuses tags sent with a write (as Backblaze B2 documents) still gets them:
/// the probe finds out, the write goes without them, and PutObjectTagging sets them after.
#[tokio::test]
async fn tags_refused_with_the_write_are_set_after_it() {
    let world = World::new().await;
    world.dst.refuse_tag_headers();
    let found = ferry_storage::probe(world.dst.as_ref(), DST)
        .await
        .expect("probe");
    assert!(found.tagging, "{found:?}");
    assert!(!found.tags_on_put && !found.tags_on_multipart, "{found:?}");
    assert!(found.conditional_writes(), "{found:?}");
    assert!(world.dst.contents(DST).is_empty(), "the probe cleaned up");
    assert_eq!(world.dst.open_uploads(), 0);

    world
        .src
        .insert_tagged(SRC, "tagged", b"with tags", "team=a&note=b%20c");
    world.src.insert(SRC, "plain", b"no tags");
    let tasks = vec![
        world.copy_task("tagged").await,
        world.copy_task("plain").await,
    ];
    let record = world.work(&tasks).await;
    assert_eq!((record.copied, record.dead), (2, 0), "{record:?}");
    assert_eq!(
        world.dst.tags(DST, "tagged").as_deref(),
        Some("team=a&note=b%20c")
    );
    assert_eq!(world.dst.tags(DST, "plain"), None);
}

/// The probe, against a store that does everything S3 does, finds every capability.
#[tokio::test]
async fn the_probe_finds_every_capability_of_a_faithful_store() {
    let store = MemStore::new("faithful");
    let found = ferry_storage::probe(&store, DST).await.expect("probe");
    assert!(
        found.conditional_writes() && found.complete.honoured(),
        "{found:?}"
    );
    assert!(
        found.tagging && found.tags_on_put && found.tags_on_multipart && found.tags_on_copy,
        "{found:?}"
    );
    assert!(
        found.complete_etag && found.copy_source_if_match,
        "{found:?}"
    );
    assert!(store.contents(DST).is_empty());
}
