//! Test harness: real servers on free ports, torn down on drop (also when a test fails).
//!
//! - [`Redis`]: a private `redis-server`.
//! - [`S3Server`]: a moto server, or a single-node Garage when its binary is installed.
//! - [`Ferry`]: the real `ferry` binary as a child process, its log kept for failure reports.
#![allow(dead_code, unreachable_pub)]

pub mod data;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// Waits until `cond` holds, or panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wait_for_port(port: u16, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A unique temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ferry-test-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("creating a temp dir");
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: Option<PathBuf>,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (via `kill`, since the crate forbids unsafe code).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Some(path) = &self.log
            && let Ok(mut f) = std::fs::File::open(path)
        {
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() && self.log.is_some() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- last log lines of {} ----", self.name);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A private redis-server.
pub struct Redis {
    pub port: u16,
    proc: Proc,
    _dir: TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// A redis-server that requires `password`.
    pub fn start_with_password(password: &str) -> Redis {
        Redis::start_with(&["--requirepass", password])
    }

    fn start_with(extra: &[&str]) -> Redis {
        let dir = TempDir::new("redis");
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (is it installed? run scripts/test.sh)");
        wait_for_port(port, Duration::from_secs(10), "redis-server");
        Redis {
            port,
            proc: Proc {
                child,
                name: "redis".into(),
                log: None,
            },
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to the test redis")
    }
}

/// The numeric fields of iteration `n` of `rule`, read straight from Redis.
pub async fn iteration_record(
    redis: &Redis,
    ns: &str,
    rule: &str,
    n: u64,
) -> std::collections::HashMap<String, u64> {
    use redis::AsyncCommands;
    let mut conn = redis.conn().await;
    let raw: std::collections::HashMap<String, String> = conn
        .hgetall(format!("{ns}:{{{rule}}}:it:{n}"))
        .await
        .expect("reading the iteration record");
    raw.into_iter()
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
        .collect()
}

/// Which S3 server implementation backs an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Moto,
    Garage,
}

/// A running S3 server with one access key.
pub struct S3Server {
    pub kind: Kind,
    pub port: u16,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    _proc: Proc,
    _dir: TempDir,
}

/// Where the Garage binary is, if installed: `$FERRY_GARAGE_BIN`, `PATH`, or cargo's bin dir.
pub fn garage_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FERRY_GARAGE_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("garage"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/garage"));
    }
    candidates.into_iter().find(|p| p.exists())
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl S3Server {
    /// A moto server (always available: scripts/test.sh installs it).
    pub fn moto() -> S3Server {
        let dir = TempDir::new("moto");
        let port = free_port();
        let log = dir.path().join("moto.log");
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("moto log"))
            .spawn()
            .expect("starting moto_server (is moto installed? run scripts/test.sh)");
        wait_for_port(port, Duration::from_secs(30), "moto_server");
        S3Server {
            kind: Kind::Moto,
            port,
            region: "us-east-1".into(),
            access_key: "testing".into(),
            secret_key: "testing".into(),
            // moto's access log is too chatty to be worth printing on failure.
            _proc: Proc {
                child,
                name: "moto".into(),
                log: None,
            },
            _dir: dir,
        }
    }

    /// A single-node Garage. Panics when Garage is not installed: a Garage test must fail,
    /// not pass, on a machine without it (scripts/test.sh installs it).
    pub fn garage() -> S3Server {
        let bin = garage_binary().unwrap_or_else(|| {
            panic!("garage is not installed: run scripts/test.sh (it builds Garage 2.5.0 once)")
        });
        let dir = TempDir::new("garage");
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let conf = dir.path().join("garage.toml");
        std::fs::write(
            &conf,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nconsistency_mode = \"consistent\"\n\
                 metadata_fsync = false\ndata_fsync = false\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n[s3_api]\ns3_region = \"garage\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"{token}\"\n",
                d = dir.path().display(),
                secret = random_hex(32),
                token = random_hex(16),
            ),
        )
        .expect("writing garage.toml");
        let log = dir.path().join("garage.log");
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .arg("server")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("garage log"))
            .spawn()
            .expect("starting garage");
        let proc = Proc {
            child,
            name: "garage".into(),
            log: Some(log),
        };
        let garage = |args: &[&str]| -> String {
            let out = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .args(args)
                .output()
                .expect("running garage");
            assert!(
                out.status.success(),
                "garage {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .arg("status")
                .output()
                .map(|o| o.status.success());
            if ok.unwrap_or(false) {
                break;
            }
            assert!(Instant::now() < deadline, "garage did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        let node = garage(&["node", "id", "-q"]);
        let node = node
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string();
        garage(&["layout", "assign", "-z", "dc1", "-c", "10G", &node]);
        garage(&["layout", "apply", "--version", "1"]);
        let access_key = format!("GK{}", random_hex(12));
        let secret_key = random_hex(32);
        garage(&[
            "key",
            "import",
            "--yes",
            "-n",
            "test",
            &access_key,
            &secret_key,
        ]);
        garage(&["key", "allow", "--create-bucket", &access_key]);
        wait_for_port(s3, Duration::from_secs(10), "garage s3 api");
        S3Server {
            kind: Kind::Garage,
            port: s3,
            region: "garage".into(),
            access_key,
            secret_key,
            _proc: proc,
            _dir: dir,
        }
    }

    /// A server of `kind`.
    pub fn of(kind: Kind) -> S3Server {
        match kind {
            Kind::Moto => S3Server::moto(),
            Kind::Garage => S3Server::garage(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(self.url())
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "test",
            ))
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub async fn create_bucket(&self, name: &str) {
        self.client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "creating bucket {name}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
    }

    /// The `[endpoints.NAME]` section for this server.
    pub fn endpoint_toml(&self, name: &str) -> String {
        self.endpoint_toml_at(name, &self.url())
    }

    /// The `[endpoints.NAME]` section for this server reached at `url` (a proxy in front).
    pub fn endpoint_toml_at(&self, name: &str, url: &str) -> String {
        format!(
            "[endpoints.{name}]\nurl = \"{url}\"\nregion = \"{}\"\npath_style = true\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n\n",
            self.region, self.access_key, self.secret_key
        )
    }

    /// `127.0.0.1:PORT`, for a proxy's upstream.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A unique name for buckets and namespaces in one test run.
pub fn unique(label: &str) -> String {
    format!("{label}-{}", random_hex(4))
}

/// The `ferry` binary under test.
pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// Runs `ferry` to completion and returns (exit code, stdout, stderr).
pub fn ferry_output(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ferry_bin())
        .args(args)
        .output()
        .expect("running ferry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `ferry ARGS` in the background, logging to `dir/NAME.log`.
pub fn spawn_ferry(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("ferry log file");
    let child = Command::new(ferry_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("starting ferry");
    Proc {
        child,
        name: name.into(),
        log: Some(log),
    }
}

/// A private Redis, a source and a destination S3 server, a work dir and a namespace.
pub struct Env {
    pub redis: Redis,
    pub src: S3Server,
    pub dst: S3Server,
    pub dir: TempDir,
    pub ns: String,
}

impl Env {
    /// Two Garage endpoints (millisecond Last-Modified in listings).
    pub fn start(label: &str) -> Env {
        Env::start_on(label, S3Server::garage(), S3Server::garage())
    }

    /// The given endpoints.
    pub fn start_on(label: &str, src: S3Server, dst: S3Server) -> Env {
        Env {
            redis: Redis::start(),
            src,
            dst,
            dir: TempDir::new(label),
            ns: unique("ns"),
        }
    }

    /// Writes a config with `[redis]`, endpoints `src` and `dst`, and `rules` (TOML).
    pub fn write_config(&self, name: &str, rules: &str) -> String {
        self.write_config_at(name, &self.src.url(), &self.dst.url(), rules)
    }

    /// [`Env::write_config`] with the endpoints reached at other URLs (proxies in front).
    pub fn write_config_at(&self, name: &str, src_url: &str, dst_url: &str, rules: &str) -> String {
        let mut config = format!(
            "[redis]\nurl = \"{}\"\nnamespace = \"{}\"\n\n",
            self.redis.url(),
            self.ns
        );
        config += &self.src.endpoint_toml_at("src", src_url);
        config += &self.dst.endpoint_toml_at("dst", dst_url);
        config += rules;
        let path = self.dir.path().join(name);
        std::fs::write(&path, config).expect("writing config");
        path.to_str().expect("utf-8 path").to_string()
    }

    /// Runs `ferry run` (coordinator + workers in one process) to completion; panics with its
    /// log unless it exits 0 within `timeout`.
    pub fn run_to_completion(&self, config: &str, extra: &[&str], timeout: Duration) -> String {
        let name = unique("run");
        let mut args = vec![
            "run",
            "--config",
            config,
            "--workers",
            "2",
            "--concurrency",
            "8",
        ];
        args.extend_from_slice(extra);
        let mut p = spawn_ferry(self.dir.path(), &name, &args);
        let status = p
            .wait_timeout(timeout)
            .unwrap_or_else(|| panic!("ferry run did not finish within {timeout:?}"));
        let log = p.log_text();
        assert!(status.success(), "ferry run exited with {status}:\n{log}");
        log
    }
}

/// Numbers of the finished iterations of `rule`, newest first.
pub async fn history(redis: &Redis, ns: &str, rule: &str) -> Vec<u64> {
    use redis::AsyncCommands;
    let mut conn = redis.conn().await;
    conn.lrange(format!("{ns}:{{{rule}}}:history"), 0, -1)
        .await
        .expect("history")
}

/// GETs `http://127.0.0.1:PORT/metrics` and returns the body.
pub fn scrape(port: u16) -> String {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("requesting /metrics");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("reading /metrics");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The samples of one metric, as (labels, value).
pub fn samples(text: &str, metric: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}').to_string()),
                None => (name_labels, String::new()),
            };
            (name == metric).then(|| (labels, value.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

impl Env {
    /// Creates a fresh source bucket and a fresh destination bucket; returns their names.
    pub async fn bucket_pair(&self) -> (String, String) {
        let (src, dst) = (unique("s"), unique("d"));
        self.src.create_bucket(&src).await;
        self.dst.create_bucket(&dst).await;
        (src, dst)
    }
}

/// One `[[rules]]` table from endpoint `src` bucket `source` to endpoint `dst` bucket
/// `destination`, with `extra` lines (e.g. `stop = "once"`).
pub fn rule_toml(name: &str, source: &str, destination: &str, extra: &str) -> String {
    format!(
        "[[rules]]\nname = \"{name}\"\n{extra}\n\
         source = {{ endpoint = \"src\", bucket = \"{source}\" }}\n\
         destination = {{ endpoint = \"dst\", bucket = \"{destination}\" }}\n\n"
    )
}
