//! Randomized fault schedules against a real cluster (`scripts/chaos.sh`).
//!
//! Each run starts its own Redis (AOF), two S3 servers (Garage, or Ceph RGW with `--store
//! rgw`) with a fault proxy in front of each, two coordinators (a leader and a standby) and two workers (one behind a network
//! namespace when `ip netns` works here), seeds a source bucket, and replicates it once
//! while a schedule drawn from the run's seed injects faults: kill -9 or SIGSTOP of a worker
//! or of the leader, a Redis kill and restart, a partition of the far worker, bursts of S3
//! errors and resets, source objects overwritten mid-copy. Then one clean iteration runs, and
//! the checks a user would make are made:
//!
//! - the destination holds exactly the source's keys, sizes and bytes;
//! - no multipart upload is left open;
//! - iteration 1 listed and copied every object exactly once, and every task is done;
//! - nothing is in dead letters (every fault injected is transient).
//!
//! Each run prints one line; the summary line counts runs, anomalies, faults and objects.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::AsyncCommands;

use crate::proxy::{Action, FaultProxy, Match, Rule};
use crate::servers::{Kind, NetNs, Proc, Redis, S3Server, TempDir, spawn_logged};

/// Where the capability probe writes (and a probe cut short by a kill leaves its objects).
const PROBE_PREFIX: &str = ".ferry-probe/";

/// What a chaos run is made of.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `ferry` binary.
    pub ferry: PathBuf,
    /// Schedules to run.
    pub runs: u32,
    /// Seed of the first schedule; run `i` uses `seed + i`.
    pub seed: u64,
    /// Small objects per run.
    pub objects: usize,
    /// The S3 servers of both ends (Garage, or Ceph RGW).
    pub store: Kind,
}

/// One injected fault.
#[derive(Clone, Debug)]
enum Fault {
    KillWorker {
        worker: usize,
        down: Duration,
    },
    PauseWorker {
        worker: usize,
        pause: Duration,
    },
    KillLeader {
        down: Duration,
    },
    PauseLeader {
        pause: Duration,
    },
    RestartRedis {
        down: Duration,
    },
    Partition {
        cut: Duration,
    },
    S3Errors {
        dst: bool,
        rate: f64,
        lasting: Duration,
    },
    Overwrite {
        objects: usize,
    },
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::KillWorker { .. } => "kill-worker",
            Fault::PauseWorker { .. } => "pause-worker",
            Fault::KillLeader { .. } => "kill-leader",
            Fault::PauseLeader { .. } => "pause-leader",
            Fault::RestartRedis { .. } => "redis-restart",
            Fault::Partition { .. } => "partition",
            Fault::S3Errors { .. } => "s3-errors",
            Fault::Overwrite { .. } => "overwrite",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |d: &Duration| format!("{:.1}s", d.as_secs_f64());
        match self {
            Fault::KillWorker { worker, down } => write!(f, "kill -9 w{worker}, back {}", s(down)),
            Fault::PauseWorker { worker, pause } => write!(f, "SIGSTOP w{worker} {}", s(pause)),
            Fault::KillLeader { down } => write!(f, "kill -9 leader, back {}", s(down)),
            Fault::PauseLeader { pause } => write!(f, "SIGSTOP leader {}", s(pause)),
            Fault::RestartRedis { down } => write!(f, "redis down {}", s(down)),
            Fault::Partition { cut } => write!(f, "partition w1 {}", s(cut)),
            Fault::S3Errors { dst, rate, lasting } => write!(
                f,
                "s3 errors {} {:.0}% {}",
                if *dst { "dst" } else { "src" },
                rate * 100.0,
                s(lasting)
            ),
            Fault::Overwrite { objects } => write!(f, "overwrite {objects}"),
        }
    }
}

/// A schedule: faults and when they start, from the run's start.
fn schedule(rng: &mut StdRng, netns: bool) -> Vec<(Duration, Fault)> {
    let n = rng.random_range(2..=5);
    let ms = |rng: &mut StdRng, lo: u64, hi: u64| Duration::from_millis(rng.random_range(lo..hi));
    let mut faults: Vec<(Duration, Fault)> = (0..n)
        .map(|_| {
            let at = ms(rng, 500, 12_000);
            let fault = match rng.random_range(0..8) {
                0 => Fault::KillWorker {
                    worker: rng.random_range(0..2),
                    down: ms(rng, 500, 5_000),
                },
                1 => Fault::PauseWorker {
                    worker: rng.random_range(0..2),
                    pause: ms(rng, 1_000, 8_000),
                },
                2 => Fault::KillLeader {
                    down: ms(rng, 500, 5_000),
                },
                3 => Fault::PauseLeader {
                    pause: ms(rng, 1_000, 8_000),
                },
                4 => Fault::RestartRedis {
                    down: ms(rng, 500, 6_000),
                },
                5 if netns => Fault::Partition {
                    cut: ms(rng, 1_000, 10_000),
                },
                6 => Fault::Overwrite {
                    objects: rng.random_range(1..8),
                },
                _ => Fault::S3Errors {
                    dst: rng.random_bool(0.5),
                    rate: rng.random_range(0.05..0.25),
                    lasting: ms(rng, 2_000, 12_000),
                },
            };
            (at, fault)
        })
        .collect();
    faults.sort_by_key(|(at, _)| *at);
    faults
}

/// What all runs added up to.
#[derive(Debug, Default)]
pub struct Summary {
    /// Runs done.
    pub runs: u32,
    /// Runs where a check failed.
    pub anomalies: u32,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u32>,
    /// Objects compared between source and destination.
    pub objects: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u32 = self.faults.values().sum();
        let kinds: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        write!(
            f,
            "chaos: {} runs, {} anomalies; {total} faults injected ({}); {} objects checked",
            self.runs,
            self.anomalies,
            kinds.join(", "),
            self.objects
        )
    }
}

/// Runs `options.runs` schedules, printing a line for each and the summary.
pub async fn run(options: &Options) -> Summary {
    let netns = netns_available();
    if !netns {
        println!("chaos: ip netns is not available here (not root?): no partitions");
    }
    let mut summary = Summary::default();
    for i in 0..options.runs {
        let seed = options.seed.wrapping_add(u64::from(i));
        let started = Instant::now();
        let outcome = one_run(options, seed, netns).await;
        summary.runs += 1;
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(report) => {
                for (_, fault) in &report.faults {
                    *summary.faults.entry(fault.kind()).or_default() += 1;
                }
                summary.objects += report.objects;
                println!(
                    "run {:>3} seed {seed}: {}; {} objects, copied {} then {}; OK in {seconds:.1}s",
                    i + 1,
                    faults_text(&report.faults),
                    report.objects,
                    report.copied.0,
                    report.copied.1,
                );
            }
            Err(failure) => {
                summary.anomalies += 1;
                for (_, fault) in &failure.faults {
                    *summary.faults.entry(fault.kind()).or_default() += 1;
                }
                println!(
                    "run {:>3} seed {seed}: {}; ANOMALY after {seconds:.1}s: {}",
                    i + 1,
                    faults_text(&failure.faults),
                    failure.problem
                );
                if let Some(dir) = &failure.kept {
                    println!("         logs kept in {}", dir.display());
                }
            }
        }
    }
    println!("{summary}");
    summary
}

fn faults_text(faults: &[(Duration, Fault)]) -> String {
    let parts: Vec<String> = faults
        .iter()
        .map(|(at, f)| format!("{f}@{:.1}s", at.as_secs_f64()))
        .collect();
    format!("{} faults [{}]", faults.len(), parts.join(", "))
}

fn netns_available() -> bool {
    std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success())
        && std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

struct Report {
    faults: Vec<(Duration, Fault)>,
    objects: usize,
    copied: (u64, u64),
}

struct Failure {
    faults: Vec<(Duration, Fault)>,
    problem: String,
    kept: Option<PathBuf>,
}

/// The processes of one run, restartable by name.
struct Cluster<'a> {
    ferry: &'a Path,
    dir: &'a Path,
    near_config: String,
    far_config: String,
    workers: Vec<Option<Proc>>,
    coordinators: Vec<Option<Proc>>,
    spawned: u32,
    net: Option<&'a NetNs>,
}

impl Cluster<'_> {
    fn worker(&mut self, i: usize) {
        self.spawned += 1;
        let name = format!("w{i}-{}", self.spawned);
        let far = i == 1 && self.net.is_some();
        let config = if far {
            self.far_config.clone()
        } else {
            self.near_config.clone()
        };
        let args = [
            "worker",
            "--config",
            config.as_str(),
            "--id",
            name.as_str(),
            "--concurrency",
            "4",
            "--lease",
            "3s",
            "--drain-timeout",
            "2s",
        ];
        let bin = self.ferry.to_str().unwrap_or("ferry");
        let proc = match self.net {
            Some(net) if far => {
                spawn_logged(Path::new("ip"), self.dir, &name, &net.command(bin, &args))
            }
            _ => spawn_logged(self.ferry, self.dir, &name, &args),
        };
        self.workers[i] = Some(proc);
    }

    fn coordinator(&mut self, i: usize) {
        self.spawned += 1;
        let name = format!("c{i}-{}", self.spawned);
        let args = [
            "coordinator",
            "--config",
            self.near_config.as_str(),
            "--coordinator-id",
            name.as_str(),
            "--leader-lease",
            "3s",
            "--max-outstanding",
            "200",
        ];
        self.coordinators[i] = Some(spawn_logged(self.ferry, self.dir, &name, &args));
    }

    /// The coordinator slot whose process leads now (by its log), else the first alive.
    fn leader(&self) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, c) in self.coordinators.iter().enumerate() {
            let Some(c) = c else { continue };
            let log = c.log_text();
            let leads = log.rfind("leading rule");
            let lost = log
                .rfind("lost the leader lease")
                .max(log.rfind("standing by"));
            if let Some(at) = leads
                && lost.is_none_or(|l| l < at)
                && best.is_none_or(|(_, b)| at > b)
            {
                best = Some((i, at));
            }
        }
        best.map(|(i, _)| i)
            .or_else(|| self.coordinators.iter().position(Option::is_some))
    }

    fn stop_all(&mut self) {
        for p in self.workers.iter_mut().chain(self.coordinators.iter_mut()) {
            if let Some(p) = p.as_mut() {
                p.signal("CONT");
                p.kill9();
            }
        }
    }
}

fn config_text(
    redis_url: &str,
    ns: &str,
    src: (&S3Server, &str),
    dst: (&S3Server, &str),
    rule: &str,
) -> String {
    format!(
        "[redis]\nurl = \"{redis_url}\"\nnamespace = \"{ns}\"\n\n{}{}{rule}",
        src.0.endpoint_toml_at("src", src.1),
        dst.0.endpoint_toml_at("dst", dst.1)
    )
}

async fn one_run(options: &Options, seed: u64, netns: bool) -> Result<Report, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let faults = schedule(&mut rng, netns);
    let dir = TempDir::new(&format!("chaos-{seed}"));
    let result = tokio::time::timeout(
        RUN_TIMEOUT,
        drive(options, seed, netns, &faults, dir.path(), &mut rng),
    )
    .await
    .unwrap_or_else(|_| Err(format!("the run did not finish within {RUN_TIMEOUT:?}")));
    match result {
        Ok((objects, copied)) => Ok(Report {
            faults,
            objects,
            copied,
        }),
        Err(problem) => {
            // Keep the logs of a failed run for whoever looks into it.
            let kept = std::env::temp_dir().join(format!("ferry-chaos-{seed}"));
            let _ = std::fs::remove_dir_all(&kept);
            let copied = copy_logs(dir.path(), &kept).then_some(kept);
            Err(Failure {
                faults,
                problem,
                kept: copied,
            })
        }
    }
}

fn copy_logs(from: &Path, to: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(from) else {
        return false;
    };
    if std::fs::create_dir_all(to).is_err() {
        return false;
    }
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "log" || x == "toml") {
            let _ = std::fs::copy(&path, to.join(e.file_name()));
        }
    }
    true
}

/// How long one run may take in all: its waits have deadlines of their own, this is the
/// backstop for a request that never returns.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// How long seeding the source may take before the run is abandoned.
const SEED_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one schedule; returns the objects checked and what iterations 1 and 2 copied.
async fn drive(
    options: &Options,
    seed: u64,
    netns: bool,
    faults: &[(Duration, Fault)],
    dir: &Path,
    rng: &mut StdRng,
) -> Result<(usize, (u64, u64)), String> {
    let net = netns.then(NetNs::create);
    let host = net
        .as_ref()
        .map_or("127.0.0.1".to_string(), |n| n.host_ip.clone());
    let mut redis = match &net {
        Some(n) => Redis::start_aof_on(&n.host_ip),
        None => Redis::start_aof(),
    };
    let server = || match options.store {
        Kind::Garage => S3Server::garage_on("lmdb"),
        other => S3Server::of(other),
    };
    let (src, dst) = (server(), server());
    // Port 0: the kernel picks a free port as it binds. A port picked first and bound later
    // can be taken in between (seed 7021 once failed so: "Address already in use").
    let any_port: std::net::SocketAddr = format!("{host}:0").parse().expect("an address");
    let src_proxy = FaultProxy::bind(any_port, &src.authority())
        .await
        .map_err(|e| format!("proxy: {e}"))?;
    let dst_proxy = FaultProxy::bind(any_port, &dst.authority())
        .await
        .map_err(|e| format!("proxy: {e}"))?;
    let (sb, db) = ("chaos-src", "chaos-dst");
    src.create_bucket(sb).await;
    dst.create_bucket(db).await;
    let client = src.client();
    // The servers are not under test while seeding: a request that hangs here is the
    // server's (Garage on SQLite once locked up for good), and is reported as such.
    let total = tokio::time::timeout(
        SEED_TIMEOUT,
        seed_dataset(&client, sb, options.objects, rng),
    )
    .await
    .map_err(|_| format!("seeding the source did not finish within {SEED_TIMEOUT:?}"))?;
    let ns = format!("chaos{seed}");
    let rule = format!(
        "[[rules]]\nname = \"chaos\"\nstop = \"once\"\nmultipart_threshold = \"5MiB\"\n\
         part_size = \"5MiB\"\nmax_attempts = 30\n\
         source = {{ endpoint = \"src\", bucket = \"{sb}\" }}\n\
         destination = {{ endpoint = \"dst\", bucket = \"{db}\" }}\n"
    );
    let (src_url, dst_url) = (src_proxy.url(), dst_proxy.url());
    let near = config_text(&redis.url(), &ns, (&src, &src_url), (&dst, &dst_url), &rule);
    let far = config_text(
        &format!("redis://{host}:{}", redis.port),
        &ns,
        (&src, &src_url),
        (&dst, &dst_url),
        &rule,
    );
    let (near_path, far_path) = (dir.join("near.toml"), dir.join("far.toml"));
    std::fs::write(&near_path, near).map_err(|e| e.to_string())?;
    std::fs::write(&far_path, far).map_err(|e| e.to_string())?;
    let mut cluster = Cluster {
        ferry: &options.ferry,
        dir,
        near_config: near_path.display().to_string(),
        far_config: far_path.display().to_string(),
        workers: vec![None, None],
        coordinators: vec![None, None],
        spawned: 0,
        net: net.as_ref(),
    };
    cluster.coordinator(0);
    cluster.coordinator(1);
    cluster.worker(0);
    cluster.worker(1);

    let started = Instant::now();
    let mut pending: Vec<(Instant, usize)> = Vec::new();
    for (at, fault) in faults {
        tokio::time::sleep_until((started + *at).into()).await;
        match fault {
            Fault::KillWorker { worker, down } => {
                if let Some(p) = cluster.workers[*worker].as_mut() {
                    p.kill9();
                }
                pending.push((Instant::now() + *down, *worker));
            }
            Fault::PauseWorker { worker, pause } => {
                if let Some(p) = &cluster.workers[*worker] {
                    p.signal("STOP");
                    tokio::time::sleep(*pause).await;
                    p.signal("CONT");
                }
            }
            Fault::KillLeader { down } => {
                if let Some(i) = cluster.leader()
                    && let Some(p) = cluster.coordinators[i].as_mut()
                {
                    p.kill9();
                    pending.push((Instant::now() + *down, 100 + i));
                }
            }
            Fault::PauseLeader { pause } => {
                if let Some(i) = cluster.leader()
                    && let Some(p) = &cluster.coordinators[i]
                {
                    p.signal("STOP");
                    tokio::time::sleep(*pause).await;
                    p.signal("CONT");
                }
            }
            Fault::RestartRedis { down } => {
                redis.kill9();
                tokio::time::sleep(*down).await;
                redis.restart();
            }
            Fault::Partition { cut } => {
                if let Some(n) = &net {
                    n.cut();
                    tokio::time::sleep(*cut).await;
                    n.heal();
                }
            }
            Fault::S3Errors { dst, rate, lasting } => {
                let proxy = if *dst { &dst_proxy } else { &src_proxy };
                proxy.set_rules(storm(*rate));
                tokio::time::sleep(*lasting).await;
                proxy.clear();
            }
            Fault::Overwrite { objects } => {
                for _ in 0..*objects {
                    let i = rng.random_range(0..options.objects);
                    let body = format!(
                        "overwritten at {:?} {}",
                        started.elapsed(),
                        rng.random::<u64>()
                    );
                    put(&client, sb, &small_key(i), body.into_bytes()).await?;
                }
            }
        }
        restart_due(&mut cluster, &mut pending, false);
    }
    restart_due(&mut cluster, &mut pending, true);

    // Iteration 1 ends once a coordinator records it.
    let mut conn = redis_conn(&redis.url()).await?;
    let history_key = format!("{ns}:{{chaos}}:history");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let finished: Vec<u64> = conn.lrange(&history_key, 0, -1).await.unwrap_or_default();
        if !finished.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            cluster.stop_all();
            return Err("iteration 1 did not finish within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first = record(&mut conn, &ns, 1).await;
    let listed = first.get("listed").copied().unwrap_or(0);
    let copied1 = first.get("copied").copied().unwrap_or(0);
    let check_first = || -> Result<(), String> {
        if first.get("state").is_some_and(|s| *s != 0) {
            return Err(format!("iteration 1: {first:?}"));
        }
        if first.get("dead").copied().unwrap_or(0) != 0 {
            return Err(format!("iteration 1 has dead letters: {first:?}"));
        }
        if listed != total as u64 || copied1 != total as u64 {
            return Err(format!(
                "iteration 1 listed {listed} and copied {copied1} of {total} objects: {first:?}"
            ));
        }
        if first.get("planned") != first.get("done") {
            return Err(format!("iteration 1 planned and done differ: {first:?}"));
        }
        Ok(())
    };
    let first_ok = check_first();

    // A clean iteration: what was overwritten after its copy is copied again.
    for c in cluster.coordinators.iter_mut() {
        if let Some(p) = c.as_mut() {
            p.sigterm();
            p.wait_timeout(Duration::from_secs(30));
        }
    }
    let mut last = spawn_logged(
        &options.ferry,
        dir,
        "clean",
        &["coordinator", "--config", &cluster.near_config],
    );
    let status = last.wait_timeout(Duration::from_secs(240));
    if !status.is_some_and(|s| s.success()) {
        cluster.stop_all();
        return Err(format!("the clean iteration failed: {status:?}"));
    }
    let second = record(&mut conn, &ns, 2).await;
    let copied2 = second.get("copied").copied().unwrap_or(0);
    cluster.stop_all();
    first_ok?;
    if second.get("dead").copied().unwrap_or(0) != 0 {
        return Err(format!("iteration 2 has dead letters: {second:?}"));
    }
    let dead: u64 = conn
        .zcard(format!("{ns}:{{chaos}}:dead"))
        .await
        .unwrap_or(0);
    if dead != 0 {
        return Err(format!("{dead} tasks in dead letters"));
    }
    let compared = compare(&src.client(), sb, &dst.client(), db).await?;
    let open = dst
        .client()
        .list_multipart_uploads()
        .bucket(db)
        .send()
        .await
        .map_err(|e| format!("listing uploads: {e}"))?
        .uploads()
        .iter()
        .filter(|u| !u.key().unwrap_or_default().starts_with(PROBE_PREFIX))
        .count();
    if open != 0 {
        return Err(format!("{open} multipart uploads left open"));
    }
    Ok((compared, (copied1, copied2)))
}

/// Restarts the processes killed by faults whose downtime is over (all of them when `all`).
fn restart_due(cluster: &mut Cluster<'_>, pending: &mut Vec<(Instant, usize)>, all: bool) {
    let now = Instant::now();
    pending.retain(|(at, which)| {
        if !all && *at > now {
            return true;
        }
        if *which >= 100 {
            cluster.coordinator(*which - 100);
        } else {
            cluster.worker(*which);
        }
        false
    });
}

fn storm(rate: f64) -> Vec<Rule> {
    let share = rate / 4.0;
    vec![
        Rule::new(
            "slowdown",
            Match::default(),
            Action::Status {
                status: 503,
                code: "SlowDown".into(),
            },
        )
        .with_probability(share),
        Rule::new(
            "internal",
            Match::default(),
            Action::Status {
                status: 500,
                code: "InternalError".into(),
            },
        )
        .with_probability(share),
        Rule::new("reset", Match::default(), Action::ResetBeforeAnswer).with_probability(share),
        Rule::new(
            "lost-answer",
            Match {
                method: Some("PUT".into()),
                ..Match::default()
            },
            Action::ResetAfterForward,
        )
        .with_probability(share),
    ]
}

async fn redis_conn(url: &str) -> Result<redis::aio::ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    client
        .get_connection_manager()
        .await
        .map_err(|e| e.to_string())
}

/// The numeric fields of an iteration record; `state` is 0 for succeeded, 1 otherwise.
async fn record(
    conn: &mut redis::aio::ConnectionManager,
    ns: &str,
    n: u64,
) -> BTreeMap<String, u64> {
    let raw: BTreeMap<String, String> = conn
        .hgetall(format!("{ns}:{{chaos}}:it:{n}"))
        .await
        .unwrap_or_default();
    raw.into_iter()
        .filter_map(|(k, v)| {
            if k == "state" {
                return Some((k, u64::from(v != "succeeded")));
            }
            v.parse().ok().map(|v| (k, v))
        })
        .collect()
}

fn small_key(i: usize) -> String {
    format!("small/{:02}/object-{i:05}", i % 12)
}

async fn put(client: &Client, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), String> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .map(drop)
        .map_err(|e| format!("PUT {key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))
}

/// Seeds `n` small objects, two multipart objects and one large single object; returns how
/// many objects the source holds.
async fn seed_dataset(client: &Client, bucket: &str, n: usize, rng: &mut StdRng) -> usize {
    use futures::StreamExt;
    let bodies: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let len = rng.random_range(0..48 * 1024);
            (small_key(i), (0..len).map(|_| rng.random::<u8>()).collect())
        })
        .collect();
    futures::stream::iter(bodies)
        .for_each_concurrent(16, |(key, body)| async move {
            let _ = put(client, bucket, &key, body).await;
        })
        .await;
    let mib = 1024 * 1024;
    for m in 0..2 {
        let key = format!("large/multipart-{m}");
        let upload = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .expect("create multipart upload");
        let id = upload.upload_id().unwrap_or_default().to_string();
        let mut parts = Vec::new();
        for (p, len) in [5 * mib, 5 * mib, mib].into_iter().enumerate() {
            let body: Vec<u8> = (0..len).map(|_| rng.random::<u8>()).collect();
            let out = client
                .upload_part()
                .bucket(bucket)
                .key(&key)
                .upload_id(&id)
                .part_number(p as i32 + 1)
                .body(ByteStream::from(body))
                .send()
                .await
                .expect("upload part");
            parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(p as i32 + 1)
                    .e_tag(out.e_tag().unwrap_or_default())
                    .build(),
            );
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(&key)
            .upload_id(&id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .expect("complete multipart upload");
    }
    let big: Vec<u8> = (0..12 * mib).map(|_| rng.random::<u8>()).collect();
    put(client, bucket, "large/single", big)
        .await
        .expect("large object");
    n + 3
}

/// Compares both buckets key by key: sizes, and the bytes' MD5 (ETags differ where a
/// single-part object was copied in parts). Returns the number of objects compared.
async fn compare(src: &Client, sb: &str, dst: &Client, db: &str) -> Result<usize, String> {
    let a = listing(src, sb).await?;
    let b = listing(dst, db).await?;
    if a.keys().ne(b.keys()) {
        let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).take(5).collect();
        let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).take(5).collect();
        return Err(format!(
            "key sets differ: source {}, destination {}; missing {missing:?}, extra {extra:?}",
            a.len(),
            b.len()
        ));
    }
    for (key, (size, etag)) in &a {
        let (dsize, detag) = &b[key];
        if size != dsize {
            return Err(format!(
                "{key}: size {size} at the source, {dsize} at the destination"
            ));
        }
        if etag != detag && md5_of(src, sb, key).await? != md5_of(dst, db, key).await? {
            return Err(format!("{key}: the bytes differ"));
        }
    }
    Ok(a.len())
}

async fn listing(client: &Client, bucket: &str) -> Result<BTreeMap<String, (i64, String)>, String> {
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| format!("listing {bucket}: {e}"))?;
        // A worker killed while it probed the bucket leaves the probe's objects, for the next
        // probe to delete after an hour: not the user's data.
        for o in page
            .contents()
            .iter()
            .filter(|o| !o.key().unwrap_or_default().starts_with(PROBE_PREFIX))
        {
            out.insert(
                o.key().unwrap_or_default().to_string(),
                (
                    o.size().unwrap_or(0),
                    o.e_tag().unwrap_or_default().to_string(),
                ),
            );
        }
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return Ok(out),
        }
    }
}

async fn md5_of(client: &Client, bucket: &str, key: &str) -> Result<String, String> {
    use md5::{Digest, Md5};
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| format!("GET {key}: {e}"))?;
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| format!("reading {key}: {e}"))?
        .into_bytes();
    Ok(hex::encode(Md5::digest(&bytes)))
}
