//! Real servers on free ports for tests, chaos runs and benchmarks, torn down on drop (also
//! when a test fails): a private `redis-server` (optionally with AOF, restartable on its
//! port), moto, a single-node Garage, and child processes whose logs are kept.
#![allow(clippy::missing_panics_doc)]

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

/// A port nobody listens on right now, and that this process has not handed out before.
///
/// The kernel's ephemeral ports repeat soon after they are released (about one in thirteen
/// of 2,000 consecutive picks here), so two ports asked for one after the other could be the
/// same: a Garage once got its S3 and admin APIs on one port and served S3 requests with the
/// admin API. Ports handed out are remembered and never given again.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("binding an ephemeral port");
        if handed.insert(port) {
            return port;
        }
    }
}

/// Whether the server on `port` says `server` in its `Server` header (or anywhere in its
/// answer's head) to a plain GET.
fn answers_as(port: u16, server: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if stream
        .write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = vec![0u8; 4096];
    let n = stream.read(&mut head).unwrap_or(0);
    String::from_utf8_lossy(&head[..n]).contains(server)
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

/// Waits until something listens on `port` of 127.0.0.1, or panics with `what`.
pub fn wait_for_port(port: u16, timeout: Duration, what: &str) {
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
        TempDir::under(&std::env::temp_dir(), label)
    }

    /// A unique directory in `parent`.
    pub fn under(parent: &Path, label: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = parent.join(format!(
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
        // A process that already exited is not an error here.
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
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

    /// Waits until this process listens on `port` of 127.0.0.1; panics after `timeout`, or at
    /// once, with its exit status, if it exits first.
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) {
        match self.try_listening(port, timeout) {
            Ok(()) => {}
            Err(Some(status)) => {
                panic!(
                    "{} exited ({status}) before listening on port {port}",
                    self.name
                )
            }
            Err(None) => panic!(
                "{} did not listen on port {port} within {timeout:?}",
                self.name
            ),
        }
    }

    /// [`Proc::wait_listening`], saying how it failed instead: `Err(Some(status))` when the
    /// process exited first (98 is a port another process took), `Err(None)` on the timeout.
    pub fn try_listening(
        &mut self,
        port: u16,
        timeout: Duration,
    ) -> Result<(), Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Some(status));
            }
            if Instant::now() >= deadline {
                return Err(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
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
    /// Where it listens (127.0.0.1, or also a namespace-facing address).
    pub bind: String,
    proc: Proc,
    dir: TempDir,
    args: Vec<String>,
}

impl Redis {
    /// Without persistence.
    pub fn start() -> Redis {
        Redis::start_with(&["--appendonly", "no"])
    }

    /// A redis-server that requires `password`.
    pub fn start_with_password(password: &str) -> Redis {
        Redis::start_with(&["--appendonly", "no", "--requirepass", password])
    }

    /// With AOF (fsync every second), so that [`Redis::restart`] keeps its data, as a
    /// production Redis configured as the README says.
    pub fn start_aof() -> Redis {
        Redis::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"])
    }

    /// [`Redis::start_aof`] holding `keys` filler keys, which a [`Redis::restart`] then loads
    /// at 1 ms a key (`key-load-delay`), answering every command with LOADING meanwhile: a
    /// big production Redis coming back from a restart, in `keys` milliseconds.
    pub async fn start_aof_loading_slowly(keys: u32) -> Redis {
        let redis = Redis::start_with(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--key-load-delay",
            "1000",
            "--loading-process-events-interval-bytes",
            "1024",
        ]);
        let mut conn = redis.conn().await;
        let mut fill = redis::pipe();
        for i in 0..keys {
            fill.set(format!("filler:{i}"), i).ignore();
        }
        fill.query_async::<()>(&mut conn)
            .await
            .expect("filling redis");
        // The rewrite turns the keys into the AOF's RDB base, which is loaded key by key
        // (and so slowly); commands appended as text are replayed without the delay.
        redis::cmd("BGREWRITEAOF")
            .query_async::<()>(&mut conn)
            .await
            .expect("BGREWRITEAOF");
        wait_until(Duration::from_secs(30), "the AOF rewrite", || {
            let mut conn = conn.clone();
            async move {
                let info: String = redis::cmd("INFO")
                    .arg("persistence")
                    .query_async(&mut conn)
                    .await
                    .expect("INFO persistence");
                info.contains("aof_rewrite_in_progress:0")
                    && info.contains("aof_rewrite_scheduled:0")
                    && info.contains("aof_last_bgrewrite_status:ok")
            }
        })
        .await;
        redis
    }

    /// [`Redis::start_aof`] also listening on `addr` (a veth address a network namespace
    /// reaches).
    pub fn start_aof_on(addr: &str) -> Redis {
        // Protected mode turns away clients from other addresses when there is no password.
        Redis::start_bound(
            &format!("127.0.0.1 {addr}"),
            &[
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--protected-mode",
                "no",
            ],
        )
    }

    /// In protected mode (the default of a redis-server with no password) and also listening
    /// on `addr`: clients from there are turned away with `-DENIED`.
    pub fn start_protected_on(addr: &str) -> Redis {
        Redis::start_bound(
            &format!("127.0.0.1 {addr}"),
            &["--appendonly", "no", "--protected-mode", "yes"],
        )
    }

    /// Serving TLS alone, with `ca`'s server certificate (for `127.0.0.1` and `localhost`);
    /// clients need no certificate of their own. [`Redis::url`] is then `rediss://`.
    pub fn start_tls(ca: &crate::tls::PrivateCa) -> Redis {
        let dir = TempDir::new("redis-tls");
        let (cert, key, ca_file) = (
            dir.path().join("server.pem"),
            dir.path().join("server.key"),
            dir.path().join("ca.pem"),
        );
        ca.write_server_pem(&cert, &key);
        ca.write_ca_pem(&ca_file);
        let port = free_port();
        let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
        let args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &path(&cert),
            "--tls-key-file",
            &path(&key),
            "--tls-ca-cert-file",
            &path(&ca_file),
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let proc = Redis::spawn(&args, &dir, port);
        Redis {
            port,
            bind: "127.0.0.1".into(),
            proc,
            dir,
            args,
        }
    }

    fn start_with(extra: &[&str]) -> Redis {
        Redis::start_bound("127.0.0.1", extra)
    }

    fn start_bound(bind: &str, extra: &[&str]) -> Redis {
        let dir = TempDir::new("redis");
        let port = free_port();
        let mut args: Vec<String> = ["--port", &port.to_string(), "--save", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push("--bind".into());
        args.extend(bind.split(' ').map(str::to_string));
        args.extend(extra.iter().map(|s| s.to_string()));
        let proc = Redis::spawn(&args, &dir, port);
        Redis {
            port,
            bind: bind.to_string(),
            proc,
            dir,
            args,
        }
    }

    fn spawn(args: &[String], dir: &TempDir, port: u16) -> Proc {
        let child = Command::new("redis-server")
            .args(args)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (is it installed? run scripts/test.sh)");
        wait_for_port(port, Duration::from_secs(10), "redis-server");
        Proc {
            child,
            name: "redis".into(),
            log: None,
        }
    }

    /// Kills the server (SIGKILL): every client loses its connection.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// Starts the server again on the same port and directory (with AOF, it comes back with
    /// its data).
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.proc = Redis::spawn(&self.args, &self.dir, self.port);
    }

    /// Pauses (SIGSTOP) or resumes (SIGCONT) the server.
    pub fn signal(&self, name: &str) {
        self.proc.signal(name);
    }

    pub fn url(&self) -> String {
        if self.args.iter().any(|a| a == "--tls-port") {
            format!("rediss://127.0.0.1:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("connecting to the test redis")
    }
}

/// Starts `bin ARGS` in the background, logging its stderr to `dir/NAME.log`.
pub fn spawn_logged(bin: &Path, dir: &Path, name: &str, args: &[&str]) -> Proc {
    spawn_logged_with(bin, dir, name, args, &[])
}

/// [`spawn_logged`] with extra environment variables.
pub fn spawn_logged_with(
    bin: &Path,
    dir: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    Proc {
        child,
        name: name.into(),
        log: Some(log),
    }
}

/// Which S3 server implementation backs an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Moto,
    Garage,
    /// Ceph's RADOS Gateway (a single-node cluster, see [`crate::ceph`]).
    Rgw,
}

impl Kind {
    /// Every kind, for tests that run on all of them.
    pub const ALL: [Kind; 3] = [Kind::Moto, Kind::Garage, Kind::Rgw];
}

/// A running S3 server with one access key.
pub struct S3Server {
    pub kind: Kind,
    pub port: u16,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    _procs: Vec<Proc>,
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

/// `bytes` random bytes in hex.
pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

impl S3Server {
    /// A moto server (always available: scripts/test.sh installs it).
    pub fn moto() -> S3Server {
        let dir = TempDir::new("moto");
        let log = dir.path().join("moto.log");
        // Another test process may take the same free port for another server (each process
        // has its own list of ports handed out): a port that answers, but not as moto, is
        // given up for another.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("moto log"))
                .spawn()
                .expect("starting moto_server (is moto installed? run scripts/test.sh)");
            let mut proc = Proc {
                child,
                name: "moto".into(),
                log: None,
            };
            if proc.try_listening(port, Duration::from_secs(30)).is_err()
                || !answers_as(port, "Werkzeug")
            {
                proc.kill9();
                continue;
            }
            return S3Server {
                kind: Kind::Moto,
                port,
                region: "us-east-1".into(),
                access_key: "testing".into(),
                secret_key: "testing".into(),
                // moto's access log is too chatty to be worth printing on failure.
                _procs: vec![proc],
                _dir: dir,
            };
        }
        panic!("moto_server did not start on a port of its own in 5 tries");
    }

    /// A single-node Garage on SQLite, the engine that takes every key S3 allows. Panics when
    /// Garage is not installed: a Garage test must fail, not pass, on a machine without it
    /// (scripts/test.sh installs it).
    pub fn garage() -> S3Server {
        S3Server::garage_on("sqlite")
    }

    /// A single-node Garage on the given metadata engine. LMDB refuses keys longer than
    /// 511 bytes (MDB_BAD_VALSIZE, S3 allows 1024) but stays responsive under the chaos
    /// runner's long fault storms, where SQLite once locked up for good ("database is
    /// locked") while being seeded.
    pub fn garage_on(db_engine: &str) -> S3Server {
        let bin = garage_binary().unwrap_or_else(|| {
            panic!("garage is not installed: run scripts/test.sh (it builds Garage 2.5.0 once)")
        });
        let dir = TempDir::new("garage");
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let conf = dir.path().join("garage.toml");
        std::fs::write(
            &conf,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"{db_engine}\"\n\
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
            _procs: vec![proc],
            _dir: dir,
        }
    }

    /// Ceph's RADOS Gateway on a single-node cluster of its own. Panics when Ceph is not
    /// installed (scripts/test.sh installs it).
    pub fn rgw() -> S3Server {
        S3Server::rgw_under(&std::env::temp_dir())
    }

    /// [`S3Server::rgw`] with the cluster's files in `parent`.
    pub fn rgw_under(parent: &Path) -> S3Server {
        let rgw = crate::ceph::Rgw::start_under(parent);
        S3Server {
            kind: Kind::Rgw,
            port: rgw.port,
            region: "us-east-1".into(),
            access_key: rgw.access_key,
            secret_key: rgw.secret_key,
            _procs: rgw.procs,
            _dir: rgw.dir,
        }
    }

    /// A server of `kind`.
    pub fn of(kind: Kind) -> S3Server {
        match kind {
            Kind::Moto => S3Server::moto(),
            Kind::Garage => S3Server::garage(),
            Kind::Rgw => S3Server::rgw(),
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

/// A network namespace joined to the host by a veth pair: a process started in it reaches the
/// host only through that link, which [`NetNs::cut`] takes down (a partition) and
/// [`NetNs::heal`] brings back. Needs root (`ip netns`). Removed on drop.
pub struct NetNs {
    /// The namespace's name.
    pub name: String,
    host_if: String,
    /// The host's end of the link: what processes in the namespace connect to.
    pub host_ip: String,
    /// The namespace's end.
    pub ns_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// Creates a namespace with a /30 link to the host on a random 10.x.y.0 network.
    pub fn create() -> NetNs {
        let tag = random_hex(3);
        let (a, b) = (100 + rand::random::<u8>() % 150, rand::random::<u8>());
        let net = NetNs {
            name: format!("ferry-{tag}"),
            host_if: format!("fh{tag}"),
            host_ip: format!("10.{a}.{b}.1"),
            ns_ip: format!("10.{a}.{b}.2"),
        };
        let ns_if = format!("fn{tag}");
        ip(&["netns", "add", &net.name]);
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &net.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", net.host_ip),
            "dev",
            &net.host_if,
        ]);
        ip(&["link", "set", &net.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &net.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{}/30", net.ns_ip), "dev", &ns_if]);
        inside(&["link", "set", &ns_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        net
    }

    /// Takes the link down: nothing passes either way until [`NetNs::heal`].
    pub fn cut(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
    }

    /// Brings the link back up.
    pub fn heal(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
    }

    /// The command line that runs `bin args` inside the namespace (`ip netns exec`, which
    /// keeps the process id, so signals reach `bin`).
    pub fn command<'a>(&'a self, bin: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["netns", "exec", self.name.as_str(), bin];
        all.extend_from_slice(args);
        all
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_never_hands_out_the_same_port_twice() {
        let picks = 2_000;
        let ports: BTreeSet<u16> = (0..picks).map(|_| free_port()).collect();
        assert_eq!(ports.len(), picks, "a port was handed out twice");
    }
}
