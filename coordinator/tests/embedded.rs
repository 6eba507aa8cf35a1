//! The coordinator, with a worker, against the embedded queue and in-memory stores: whole
//! iterations with no server at all. (The black-box tests in `tests/` run the real binary
//! against moto, Garage and Redis.)

use std::sync::Arc;
use std::time::Duration;

use ferry_core::config::Config;
use std::collections::BTreeMap;

use ferry_core::task::Task;
use ferry_queue::Queue;
use ferry_storage::{ObjectStore, Stores};
use ferry_testkit::memstore::MemStore;
use ferry_testkit::servers::TempDir;
use tokio_util::sync::CancellationToken;

/// A source and destination store, the config pairing them (`rule r`), and a state dir.
struct World {
    src: Arc<MemStore>,
    dst: Arc<MemStore>,
    config: Arc<Config>,
    dir: TempDir,
}

impl World {
    fn new(rule_extra: &str) -> World {
        let config = Config::from_toml(&format!(
            "[endpoints.src]\nurl = \"http://src.invalid\"\n\
             [endpoints.dst]\nurl = \"http://dst.invalid\"\n\
             [[rules]]\nname = \"r\"\nstop = \"once\"\n{rule_extra}\n\
             source = {{ endpoint = \"src\", bucket = \"src-bucket\" }}\n\
             destination = {{ endpoint = \"dst\", bucket = \"dst-bucket\" }}\n"
        ))
        .expect("config");
        World {
            src: Arc::new(MemStore::new("src")),
            dst: Arc::new(MemStore::new("dst")),
            config: Arc::new(config),
            dir: TempDir::new("coordinator-unit"),
        }
    }

    fn stores(&self) -> Stores {
        Stores::from_stores([
            ("src".to_string(), self.src.clone() as Arc<dyn ObjectStore>),
            ("dst".to_string(), self.dst.clone() as Arc<dyn ObjectStore>),
        ])
    }

    async fn queue(&self) -> Queue {
        Queue::open_embedded(&self.dir.path().join("state"), "ferry")
            .await
            .expect("state dir")
    }

    fn context(&self, queue: &Queue) -> ferry_coordinator::Context {
        ferry_coordinator::Context {
            config: self.config.clone(),
            stores: self.stores(),
            queue: Arc::new(queue.clone()),
            cancel: CancellationToken::new(),
            id: "c".into(),
            leader_lease: Duration::from_secs(30),
            max_outstanding: 50_000,
        }
    }

    /// One run: the coordinator to its stop condition, a worker beside it.
    async fn run(&self, queue: &Queue) -> Result<(), ferry_coordinator::CoordinatorError> {
        let stop = CancellationToken::new();
        let worker = tokio::spawn(ferry_worker::run(
            self.config.clone(),
            self.stores(),
            Arc::new(queue.clone()),
            ferry_worker::WorkerOptions {
                id: "w".into(),
                concurrency: 8,
                lease: Duration::from_secs(30),
                drain: Duration::from_secs(5),
                part_concurrency: 4,
            },
            stop.clone(),
        ));
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            ferry_coordinator::run(self.context(queue)),
        )
        .await
        .expect("the run did not finish");
        stop.cancel();
        worker.await.expect("worker task").expect("worker");
        result
    }
}

#[tokio::test]
async fn an_iteration_copies_everything_and_the_next_one_only_lists() {
    let world = World::new("");
    for i in 0..1_500 {
        world.src.insert(
            "src-bucket",
            &format!("k/{i:05}"),
            format!("body {i}").as_bytes(),
        );
    }
    let queue = world.queue().await;
    world.run(&queue).await.expect("first run");
    assert_eq!(
        world.dst.contents("dst-bucket"),
        world.src.contents("src-bucket")
    );
    let first = queue.latest_iteration("r").await.unwrap().unwrap();
    assert_eq!(
        (first.number, first.copied, first.listed, first.dead),
        (1, 1_500, 1_500, 0)
    );
    assert!(first.succeeded());

    let before = (world.src.requests(), world.dst.requests());
    world.run(&queue).await.expect("second run");
    let second = queue.latest_iteration("r").await.unwrap().unwrap();
    assert_eq!(
        (second.number, second.copied, second.skipped, second.planned),
        (2, 0, 1_500, 0)
    );
    // Listings only: two pages per side, nothing else on either store.
    fn delta(
        now: BTreeMap<&'static str, u64>,
        then: &BTreeMap<&'static str, u64>,
    ) -> Vec<(&'static str, u64)> {
        now.into_iter()
            .map(|(op, n)| (op, n - then.get(op).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
    assert_eq!(
        delta(world.src.requests(), &before.0),
        vec![("ListObjectsV2", 2)]
    );
    assert_eq!(
        delta(world.dst.requests(), &before.1),
        vec![("ListObjectsV2", 2)]
    );
}

#[tokio::test]
async fn a_changed_source_object_is_copied_again_and_only_it() {
    let world = World::new("overwrite = \"if-different\"");
    for i in 0..20 {
        world.src.insert("src-bucket", &format!("k{i:02}"), b"old");
    }
    let queue = world.queue().await;
    world.run(&queue).await.expect("first run");
    world.src.insert("src-bucket", "k07", b"new bytes");
    world.run(&queue).await.expect("second run");
    let second = queue.latest_iteration("r").await.unwrap().unwrap();
    assert_eq!((second.copied, second.skipped), (1, 19));
    assert_eq!(
        world.dst.contents("dst-bucket"),
        world.src.contents("src-bucket")
    );
}

#[tokio::test]
async fn a_dry_run_reports_the_plan_and_changes_nothing() {
    let world = World::new("delete = true");
    world.src.insert("src-bucket", "new", b"1");
    world.src.insert("src-bucket", "same", b"2");
    world.dst.insert("dst-bucket", "same", b"2");
    let queue = world.queue().await;
    let mut seen = Vec::new();
    let found = ferry_coordinator::dry_run(&world.context(&queue), &world.config.rules[0], |t| {
        seen.push(t.clone())
    })
    .await
    .expect("dry run");
    assert_eq!((found.listed, found.copies, found.copy_bytes), (2, 1, 1));
    assert!(
        matches!(&seen[..], [Task::CopyObject { source, .. }] if source.key == "new"),
        "{seen:?}"
    );
    assert!(queue.latest_iteration("r").await.unwrap().is_none());
    assert_eq!(world.dst.contents("dst-bucket").len(), 1);
    assert_eq!(
        world.dst.requests().keys().copied().collect::<Vec<_>>(),
        vec!["ListObjectsV2"]
    );
}

#[tokio::test]
async fn objects_a_destination_refuses_are_dead_lettered_and_fail_the_run() {
    let world = World::new("max_attempts = 1");
    world.src.insert("src-bucket", "ok-later", b"x");
    world.dst.deny_writes();
    let queue = world.queue().await;
    let err = world.run(&queue).await.expect_err("the run must fail");
    assert!(err.to_string().contains("dead letters"), "{err}");
    let record = queue.latest_iteration("r").await.unwrap().unwrap();
    assert_eq!((record.dead, record.copied), (1, 0));
    let dead = queue.dead_letters("r").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].error.contains("AccessDenied"), "{:?}", dead[0]);
}

#[tokio::test]
async fn large_objects_are_copied_in_parts_with_no_upload_left_open() {
    let world = World::new("multipart_threshold = \"5MiB\"\npart_size = \"5MiB\"");
    let body: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    world.src.insert("src-bucket", "big", &body);
    world.src.insert("src-bucket", "small", b"s");
    let queue = world.queue().await;
    world.run(&queue).await.expect("run");
    let got = world.dst.contents("dst-bucket");
    assert_eq!(got["big"].0.len(), body.len());
    assert!(got["big"].0 == body[..], "bytes differ");
    assert_eq!(got["small"].0.as_ref(), b"s");
    assert_eq!(world.dst.open_uploads(), 0, "uploads left open");
    assert!(world.dst.requests().get("UploadPart").copied().unwrap_or(0) >= 3);
}

/// A report of more lines than a part holds is written as full parts and a last one, each
/// key once, in listing order, with the summary last; nothing is left in the queue.
#[tokio::test]
async fn a_report_longer_than_a_part_is_written_in_parts_each_key_once() {
    use std::io::BufRead as _;
    let reports = TempDir::new("reports");
    let world = World::new(&format!("report = \"file://{}\"", reports.path().display()));
    let keys = ferry_coordinator::report::PART_LINES * 2 + 500;
    for i in 0..keys {
        let (key, body) = (format!("k/{i:06}"), format!("body {i}"));
        world.src.insert("src-bucket", &key, body.as_bytes());
        // Half are at the destination already, the same: skipped (the planner's lines).
        if i % 2 == 0 {
            world.dst.insert("dst-bucket", &key, body.as_bytes());
        }
    }
    let queue = world.queue().await;
    world.run(&queue).await.expect("run");
    let dir = reports.path().join("r").join("00000001");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
            .expect("json");
    let parts: Vec<&str> = manifest["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(parts.len(), 3, "{manifest}");
    let mut lines = Vec::new();
    for part in &parts {
        let file = std::fs::File::open(dir.join(part)).expect("part");
        let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(file));
        lines.extend(
            reader.lines().map(|l| {
                serde_json::from_str::<serde_json::Value>(&l.expect("line")).expect("json")
            }),
        );
    }
    let summary = lines.pop().expect("a summary");
    assert_eq!(summary["summary"], true);
    assert_eq!(summary["copied"], keys as u64 / 2);
    let mut seen: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(seen.len(), keys, "one line per key");
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), keys, "no key twice");
    let skipped = lines.iter().filter(|l| l["outcome"] == "skipped").count();
    assert_eq!(skipped, keys / 2 + keys % 2);
    let (_, left) = queue.report_pending("r", 1, 10, false).await.unwrap();
    assert!(left.is_empty(), "lines left in the queue: {left:?}");
}
