//! `ferry sync SRC DST` on one machine with no Redis (the embedded queue in a state dir),
//! against moto and Garage: a full copy, a second run that only lists (counted at the
//! servers, through proxies), a changed object, a prefix, `--dry-run`, `kill -9` and a rerun,
//! the progress display under a pseudo-terminal, `--json`, the state dir's lock and errors;
//! and `ferry run` with no `[redis]`.

// Tests tell a whole story each: the product's limit on function length is not theirs.
#![allow(clippy::too_many_lines)]

mod harness;

use std::path::PathBuf;
use std::time::Duration;

use ferry_testkit::proxy::{Action, FaultProxy, Match, Rule};
use ferry_testkit::servers::{Kind, S3Server, TempDir, free_port, wait_until};
use ferry_testkit::tls::{PrivateCa, TlsFront};
use harness::data::{Seed, assert_same_objects, list_keys, open_uploads, put, seed};
use harness::{ferry_bin, measured, spawn_ferry, unique};

/// Two S3 servers behind counting proxies, a config naming them `src` and `dst` (no
/// `[redis]`), a bucket on each, and a state dir.
struct Pair {
    src: S3Server,
    dst: S3Server,
    src_proxy: FaultProxy,
    dst_proxy: FaultProxy,
    dir: TempDir,
    config: String,
    state: PathBuf,
    sb: String,
    db: String,
}

/// What one `ferry sync` printed.
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json(&self) -> serde_json::Value {
        let last = self.stdout.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| {
            panic!(
                "no JSON summary ({e}):\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Pair {
    async fn start(kind: Kind) -> Pair {
        let (src, dst) = (S3Server::of(kind), S3Server::of(kind));
        let src_proxy = FaultProxy::start(&src.authority()).await.expect("proxy");
        let dst_proxy = FaultProxy::start(&dst.authority()).await.expect("proxy");
        let dir = TempDir::new("sync");
        let text = src.endpoint_toml_at("src", &src_proxy.url())
            + &dst.endpoint_toml_at("dst", &dst_proxy.url());
        let config = dir.path().join("ferry.toml");
        std::fs::write(&config, text).expect("writing config");
        let (sb, db) = (unique("s"), unique("d"));
        src.create_bucket(&sb).await;
        dst.create_bucket(&db).await;
        Pair {
            state: dir.path().join("state"),
            config: config.to_str().expect("utf-8").to_string(),
            src,
            dst,
            src_proxy,
            dst_proxy,
            dir,
            sb,
            db,
        }
    }

    fn src_arg(&self, prefix: &str) -> String {
        format!("src:{}{prefix}", self.sb)
    }

    fn dst_arg(&self) -> String {
        format!("dst:{}", self.db)
    }

    /// The common arguments: SRC DST --config --state-dir.
    fn args(&self, prefix: &str) -> Vec<String> {
        vec![
            "sync".into(),
            self.src_arg(prefix),
            self.dst_arg(),
            "--config".into(),
            self.config.clone(),
            "--state-dir".into(),
            self.state.to_str().expect("utf-8").into(),
        ]
    }

    /// Runs `ferry sync` to completion (at most two minutes) with `extra` arguments.
    async fn sync(&self, prefix: &str, extra: &[&str]) -> Output {
        self.sync_env(prefix, extra, &[]).await
    }

    /// [`Pair::sync`] with environment variables set (`Some`) or removed (`None`).
    async fn sync_env(&self, prefix: &str, extra: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let mut args = self.args(prefix);
        args.extend(extra.iter().map(|s| s.to_string()));
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        run_cmd_env(ferry_bin(), args, env).await
    }

    /// Serves both endpoints over HTTPS, through fronts whose certificate `ca` signed (in
    /// front of the counting proxies), and points the config at them.
    async fn serve_https(&self, ca: &PrivateCa) -> (TlsFront, TlsFront) {
        let (src, dst) = (self.src_proxy.addr(), self.dst_proxy.addr());
        let src = TlsFront::start(ca, &src.to_string())
            .await
            .expect("tls front");
        let dst = TlsFront::start(ca, &dst.to_string())
            .await
            .expect("tls front");
        let text = self.src.endpoint_toml_at("src", &src.url())
            + &self.dst.endpoint_toml_at("dst", &dst.url());
        std::fs::write(&self.config, text).expect("writing config");
        (src, dst)
    }

    /// Requests the two servers have seen, as (method, query) pairs, since `from` of each.
    fn requests_since(&self, from: (usize, usize)) -> Vec<(String, String)> {
        let (s, d) = (self.src_proxy.events(), self.dst_proxy.events());
        s[from.0..]
            .iter()
            .chain(&d[from.1..])
            .map(|e| (e.method.clone(), e.query.clone()))
            .collect()
    }

    fn marks(&self) -> (usize, usize) {
        (self.src_proxy.events().len(), self.dst_proxy.events().len())
    }
}

async fn run_ferry(args: Vec<String>) -> Output {
    run_cmd(ferry_bin(), args).await
}

/// Runs `bin ARGS` to completion (killed after two minutes), off the async runtime.
async fn run_cmd(bin: &str, args: Vec<String>) -> Output {
    run_cmd_env(bin, args, Vec::new()).await
}

/// [`run_cmd`] with environment variables set (`Some`) or removed (`None`).
async fn run_cmd_env(bin: &str, args: Vec<String>, env: Vec<(String, Option<String>)>) -> Output {
    run_cmd_in(bin, args, env, None).await
}

/// [`run_cmd_env`] in directory `dir`, when given.
async fn run_cmd_in(
    bin: &str,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
    dir: Option<PathBuf>,
) -> Output {
    let bin = bin.to_string();
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(&bin);
        if let Some(dir) = &dir {
            command.current_dir(dir);
        }
        for (key, value) in &env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let child = command
            .args(&args)
            .env("TERM", "xterm")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {bin}: {e}"));
        let (tx, rx) = std::sync::mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            if rx.recv_timeout(Duration::from_secs(120)).is_err() {
                std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .ok(); // best-effort clean-up
            }
        });
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {bin}: {e}"));
        tx.send(()).ok(); // the watchdog may have fired already
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("command runner")
}

fn seeds(prefix: &str, n: usize) -> Vec<Seed> {
    (0..n)
        .map(|i| {
            let mut s = Seed::new(
                format!("{prefix}{i:05}.txt"),
                format!("object {i};").repeat(i % 23),
            );
            if i % 10 == 0 {
                s.content_type = Some("text/plain".into());
                s.metadata.insert("n".into(), i.to_string());
            }
            s
        })
        .collect()
}

fn assert_ok(out: &Output) {
    assert_eq!(
        out.code, 0,
        "ferry sync failed:\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
}

async fn full_copy_then_a_second_run_that_only_lists(kind: Kind) {
    let pair = Pair::start(kind).await;
    let n = 1_500; // two listing pages per side
    seed(&pair.src.client(), &pair.sb, &seeds("a/", n)).await;

    let first = pair.sync("", &["--json"]).await;
    assert_ok(&first);
    let summary = first.json();
    assert_eq!(summary["copied"], n, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["backend"], "embedded", "{summary}");
    assert_eq!(
        assert_same_objects(&pair.src.client(), &pair.sb, &pair.dst.client(), &pair.db).await,
        n
    );

    let mark = pair.marks();
    let second = pair.sync("", &["--json"]).await;
    assert_ok(&second);
    let summary = second.json();
    assert_eq!(
        (&summary["copied"], &summary["skipped"], &summary["listed"]),
        (
            &serde_json::json!(0),
            &serde_json::json!(n),
            &serde_json::json!(n)
        ),
        "{summary}"
    );
    let requests = pair.requests_since(mark);
    let lists = requests
        .iter()
        .filter(|(m, q)| m == "GET" && q.contains("list-type=2"))
        .count();
    assert_eq!(
        lists, 4,
        "one ListObjectsV2 per page per side: {requests:?}"
    );
    assert_eq!(
        requests.len(),
        lists,
        "the second run made requests besides listing: {requests:?}"
    );
    // `ferry status` finds the sync's rule in the state dir (no config file names it).
    let rule = summary["rule"].as_str().unwrap().to_string();
    let status = run_ferry(
        [
            "status",
            "--config",
            &pair.config,
            "--state-dir",
            pair.state.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_ok(&status);
    assert!(status.stdout.contains(&rule), "{}", status.stdout);
}

async fn a_changed_object_and_a_prefix(kind: Kind) {
    let pair = Pair::start(kind).await;
    seed(&pair.src.client(), &pair.sb, &seeds("in/", 40)).await;
    seed(&pair.src.client(), &pair.sb, &seeds("out/", 10)).await;

    let first = pair.sync("/in", &["--json"]).await;
    assert_ok(&first);
    assert_eq!(first.json()["copied"], 40);
    let keys: Vec<String> = list_keys(&pair.dst.client(), &pair.db)
        .await
        .into_iter()
        .map(|k| k.0)
        .collect();
    assert_eq!(keys.len(), 40);
    assert!(keys.iter().all(|k| k.starts_with("in/")), "{keys:?}");

    // Later than the copy, so `if-newer` replaces it (Last-Modified has 1 s granularity on
    // some servers).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put(&pair.src.client(), &pair.sb, "in/00003.txt", b"changed").await;
    let second = pair.sync("/in", &["--json"]).await;
    assert_ok(&second);
    let summary = second.json();
    assert_eq!(
        (&summary["copied"], &summary["skipped"]),
        (&serde_json::json!(1), &serde_json::json!(39)),
        "{summary}"
    );
    assert_eq!(
        harness::data::bytes(&pair.dst.client(), &pair.db, "in/00003.txt").await,
        b"changed"
    );

    // The whole bucket now: the same pair, so the same rule and ledger; only out/ is new.
    let whole = pair.sync("", &["--json"]).await;
    assert_ok(&whole);
    assert_eq!(whole.json()["copied"], 10);
    assert_eq!(
        assert_same_objects(&pair.src.client(), &pair.sb, &pair.dst.client(), &pair.db).await,
        50
    );
}

async fn a_dry_run_changes_nothing(kind: Kind) {
    let pair = Pair::start(kind).await;
    seed(&pair.src.client(), &pair.sb, &seeds("d/", 30)).await;
    let mark = pair.marks();
    let dry = pair.sync("", &["--dry-run"]).await;
    assert_ok(&dry);
    let would: Vec<&str> = dry
        .stdout
        .lines()
        .filter(|l| l.starts_with("would copy d/"))
        .collect();
    assert_eq!(would.len(), 30, "{}", dry.stdout);
    assert!(list_keys(&pair.dst.client(), &pair.db).await.is_empty());
    let writes: Vec<_> = pair
        .requests_since(mark)
        .into_iter()
        .filter(|(m, _)| m != "GET")
        .collect();
    assert!(writes.is_empty(), "a dry run wrote: {writes:?}");
    let json = pair.sync("", &["--dry-run", "--json"]).await;
    assert_ok(&json);
    let v = json.json();
    assert_eq!(
        (&v["would_copy"], &v["dry_run"]),
        (&serde_json::json!(30), &serde_json::json!(true)),
        "{v}"
    );
    // Nothing was planned either: the real sync still copies everything.
    let real = pair.sync("", &["--json"]).await;
    assert_ok(&real);
    assert_eq!(real.json()["copied"], 30);
}

/// The S3 operation of a request as the proxy saw it (method, path, query); `None` for the
/// capability probe's objects, which are not a copy's.
fn operation(method: &str, path: &str, query: &str) -> Option<&'static str> {
    if path.contains(".ferry-probe") {
        return None;
    }
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    Some(match method {
        "GET" if has("list-type") => "ListObjectsV2",
        "GET" if has("uploads") => "ListMultipartUploads",
        "GET" if has("tagging") => "GetObjectTagging",
        "GET" if has("uploadId") => "ListParts",
        "GET" => "GetObject",
        "HEAD" => "HeadObject",
        "PUT" if has("tagging") => "PutObjectTagging",
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" => "PutObject",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        _ => "other",
    })
}

/// The requests each proxy saw since `from`, by operation (the probe's left out).
fn operations_since(proxy: &FaultProxy, from: usize) -> std::collections::BTreeMap<String, u64> {
    let mut by = std::collections::BTreeMap::new();
    for e in &proxy.events()[from..] {
        if let Some(op) = operation(&e.method, &e.path, &e.query) {
            *by.entry(op.to_string()).or_default() += 1;
        }
    }
    by
}

/// `sync --dry-run --json` estimates the next iteration: its object and byte counts are
/// exact, and its requests, by operation and side, are those the servers then answer for the
/// real run (counted at proxies in front of them, the capability probe's aside).
async fn the_estimate_counts_the_requests_the_real_run_makes(kind: Kind) {
    let pair = Pair::start(kind).await;
    let client = pair.src.client();
    seed(&client, &pair.sb, &seeds("e/", 40)).await;
    harness::data::put_multipart(
        &client,
        &pair.sb,
        "e/big",
        &harness::data::equal_parts(2, 6 << 20, 0),
        3,
    )
    .await;
    // A first sync registers the pair and copies half, so the estimate also skips.
    let first = pair.sync("", &["--json", "--include", "e/0000*"]).await;
    assert_ok(&first);
    let dry = pair.sync("", &["--dry-run", "--json"]).await;
    assert_ok(&dry);
    let v = dry.json();
    let listed = list_keys(&client, &pair.sb).await;
    let copied_before = list_keys(&pair.dst.client(), &pair.db).await.len() as u64;
    let expected_bytes = 12u64 << 20;
    assert_eq!(v["listed"], listed.len() as u64, "{v}");
    assert_eq!(v["would_copy"], listed.len() as u64 - copied_before, "{v}");
    assert_eq!(v["skipped"], copied_before, "{v}");
    assert_eq!(
        (&v["multipart"], &v["parts"]),
        (&serde_json::json!(1), &serde_json::json!(2)),
        "{v}"
    );
    let small: u64 = seeds("e/", 40)
        .iter()
        .filter(|s| !s.key.starts_with("e/0000"))
        .map(|s| s.body.len() as u64)
        .sum();
    assert_eq!(v["would_copy_bytes"], small + expected_bytes, "{v}");
    assert_eq!(v["cost"], serde_json::Value::Null, "no [pricing]: no cost");

    let (src_from, dst_from) = pair.marks();
    let real = pair.sync("", &["--json"]).await;
    assert_ok(&real);
    assert_eq!(real.json()["copied"], v["would_copy"]);
    let seen = (
        operations_since(&pair.src_proxy, src_from),
        operations_since(&pair.dst_proxy, dst_from),
    );
    let estimated = |side: &str| -> std::collections::BTreeMap<String, u64> {
        v["requests"][side]
            .as_object()
            .unwrap_or_else(|| panic!("no {side} requests in {v}"))
            .iter()
            .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
            .collect()
    };
    let mut expected_source = estimated("source");
    // A source that does not tell its part sizes (HEAD partNumber, measured here, not
    // assumed) is read once more per multipart object whose part size has several fits: the
    // estimate says it assumes the source tells them.
    if !measured(&pair.src, &pair.sb).await.part_number {
        *expected_source.entry("GetObject".into()).or_default() += 1;
    }
    assert_eq!(
        seen.0, expected_source,
        "source requests: seen, estimated\n{v}"
    );
    assert_eq!(
        seen.1,
        estimated("destination"),
        "destination requests: seen, estimated\n{v}"
    );
}

async fn killed_mid_sync_then_a_rerun_completes(kind: Kind) {
    let pair = Pair::start(kind).await;
    let client = pair.src.client();
    seed(&client, &pair.sb, &seeds("k/", 200)).await;
    for i in 0..2 {
        harness::data::put_multipart(
            &client,
            &pair.sb,
            &format!("big/{i}"),
            &[5 << 20, 5 << 20, 1 << 20],
            i,
        )
        .await;
    }
    // Slow the destination down so the kill lands mid-copy.
    pair.dst_proxy.set_rules(vec![Rule::new(
        "slow",
        Match::default(),
        Action::Throttle {
            bytes_per_sec: 2 << 20,
        },
    )]);
    let args: Vec<String> = pair
        .args("")
        .into_iter()
        .chain(
            [
                "--multipart-threshold",
                "5MiB",
                "--part-size",
                "5MiB",
                "--no-progress",
            ]
            .map(String::from),
        )
        .collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut doomed = spawn_ferry(pair.dir.path(), "doomed", &argv);
    let dst = pair.dst.client();
    let db = pair.db.clone();
    wait_until(Duration::from_secs(60), "some objects copied", || {
        let (dst, db) = (dst.clone(), db.clone());
        async move { list_keys(&dst, &db).await.len() >= 20 }
    })
    .await;
    wait_until(Duration::from_secs(60), "a multipart upload open", || {
        let (dst, db) = (dst.clone(), db.clone());
        async move { !open_uploads(&dst, &db).await.is_empty() }
    })
    .await;
    doomed.kill9();
    pair.dst_proxy.clear();
    let copied_before = list_keys(&dst, &db).await.len();
    assert!(
        copied_before < 202,
        "the kill came too late to test anything"
    );

    let rerun = pair
        .sync(
            "",
            &[
                "--json",
                "--multipart-threshold",
                "5MiB",
                "--part-size",
                "5MiB",
            ],
        )
        .await;
    assert_ok(&rerun);
    let summary = rerun.json();
    // The rerun finished the iteration the killed run began: its counts are the
    // iteration's, each object once.
    assert_eq!(summary["iterations"], 1, "{summary}");
    assert_eq!(summary["copied"], 202, "no duplicate counts: {summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(assert_same_objects(&client, &pair.sb, &dst, &db).await, 202);
    assert!(
        open_uploads(&dst, &db).await.is_empty(),
        "uploads left open"
    );
}

async fn progress_under_a_terminal(kind: Kind) {
    let pair = Pair::start(kind).await;
    seed(&pair.src.client(), &pair.sb, &seeds("p/", 300)).await;
    // Slow enough that the bar is drawn a few times.
    pair.dst_proxy.set_rules(vec![Rule::new(
        "slow",
        Match::default(),
        Action::Delay { ms: 20 },
    )]);
    let command: Vec<String> = std::iter::once(ferry_bin().to_string())
        .chain(pair.args(""))
        .map(|a| format!("'{a}'"))
        .collect();
    let out = run_under_pty(command.join(" ")).await;
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("objects"),
        "no progress bar:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("ETA"), "no ETA:\n{}", out.stdout);
    assert!(
        out.stdout.contains('\r') || out.stdout.contains("\x1b["),
        "the bar is not redrawn in place:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("300 copied"),
        "no summary:\n{}",
        out.stdout
    );

    // Not on a terminal: plain lines, no control characters.
    let again = pair.sync("", &[]).await;
    assert_ok(&again);
    assert!(
        !again.stderr.contains('\r') && !again.stderr.contains("\x1b["),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("0 copied"), "{}", again.stderr);
}

/// Runs a shell command line under a pseudo-terminal (`script`), returning what the
/// terminal showed.
async fn run_under_pty(command: String) -> Output {
    run_cmd(
        "script",
        vec![
            "-q".into(),
            "-e".into(),
            "-c".into(),
            command,
            "/dev/null".into(),
        ],
    )
    .await
}

macro_rules! on_every_server {
    ($($name:ident),* $(,)?) => {
        mod moto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ferry_testkit::servers::Kind::Moto).await
                }
            )*
        }
        mod garage {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ferry_testkit::servers::Kind::Garage).await
                }
            )*
        }
        mod rgw {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(ferry_testkit::servers::Kind::Rgw).await
                }
            )*
        }
    };
}

/// Endpoints behind a private certificate authority, as a user meets them: without
/// `AWS_CA_BUNDLE` the sync stops and says the certificate is not trusted and what to set; an
/// `AWS_CA_BUNDLE` that cannot be read stops it before it connects, naming the file; with the
/// authority's file, the copy is whole, a multipart object included (small objects on the lean
/// path, listings, heads and parts through the SDK, all over HTTPS).
async fn endpoints_behind_a_private_ca(kind: Kind) {
    let pair = Pair::start(kind).await;
    let ca = PrivateCa::new("sync");
    let pem = pair.dir.path().join("ca.pem");
    ca.write_ca_pem(&pem);
    let (src_front, dst_front) = pair.serve_https(&ca).await;
    let client = pair.src.client();
    let n = 40;
    seed(&client, &pair.sb, &seeds("a/", n)).await;
    harness::data::put_multipart(&client, &pair.sb, "big", &[5 << 20, 1 << 20], 3).await;

    let untrusted = pair
        .sync_env("", &["--json"], &[("AWS_CA_BUNDLE", None)])
        .await;
    assert_ne!(untrusted.code, 0, "{}", untrusted.stderr);
    assert!(
        untrusted.stderr.contains("TLS certificate is not trusted")
            && untrusted.stderr.contains("AWS_CA_BUNDLE"),
        "{}",
        untrusted.stderr
    );
    assert!(list_keys(&pair.dst.client(), &pair.db).await.is_empty());

    let missing = pair.dir.path().join("missing.pem");
    let missing = missing.to_str().expect("utf-8");
    let unreadable = pair
        .sync_env("", &[], &[("AWS_CA_BUNDLE", Some(missing))])
        .await;
    assert_eq!(unreadable.code, 2, "{}", unreadable.stderr);
    assert!(
        unreadable.stderr.contains("AWS_CA_BUNDLE")
            && unreadable.stderr.contains(missing)
            && unreadable.stderr.contains("cannot be read"),
        "{}",
        unreadable.stderr
    );
    let accepted = (src_front.accepted(), dst_front.accepted());
    assert_eq!(
        accepted,
        (0, 0),
        "nothing connected before the bundle was checked"
    );

    let trusted = pair
        .sync_env("", &["--json"], &[("AWS_CA_BUNDLE", pem.to_str())])
        .await;
    assert_ok(&trusted);
    assert_eq!(trusted.json()["copied"], n + 1, "{}", trusted.stdout);
    assert_eq!(
        assert_same_objects(&client, &pair.sb, &pair.dst.client(), &pair.db).await,
        n + 1
    );
    assert!(src_front.accepted() > 0 && dst_front.accepted() > 0);
}

on_every_server!(
    endpoints_behind_a_private_ca,
    full_copy_then_a_second_run_that_only_lists,
    a_changed_object_and_a_prefix,
    a_dry_run_changes_nothing,
    the_estimate_counts_the_requests_the_real_run_makes,
    killed_mid_sync_then_a_rerun_completes,
    progress_under_a_terminal,
);

/// Ctrl-C (SIGINT) mid-sync, then SIGTERM mid-rerun: each drains and exits 128 + the signal
/// (130, 143), never 0, with the summary of what it did so far and `"interrupted": true`;
/// the last run completes and the destination equals the source, every key written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sync_exits_130_or_143_with_what_it_did_and_a_rerun_resumes_on_moto() {
    let pair = Pair::start(Kind::Moto).await;
    let client = pair.src.client();
    seed(&client, &pair.sb, &seeds("k/", 300)).await;
    // Slow the destination down so the signals land mid-copy.
    pair.dst_proxy.set_rules(vec![Rule::new(
        "slow",
        Match::default(),
        Action::Throttle {
            bytes_per_sec: 64 << 10,
        },
    )]);
    let dst = pair.dst.client();
    let mut copied_by_runs = 0;
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let args: Vec<String> = pair
            .args("")
            .into_iter()
            .chain(["--json".to_string()])
            .collect();
        let out = pair.dir.path().join(format!("{signal}.out"));
        let err = pair.dir.path().join(format!("{signal}.err"));
        let mut child = std::process::Command::new(ferry_bin())
            .args(&args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("starting ferry sync");
        let (dst, db) = (dst.clone(), pair.db.clone());
        let at_least = copied_by_runs + 10;
        wait_until(Duration::from_secs(60), "some objects copied", || {
            let (dst, db) = (dst.clone(), db.clone());
            async move { list_keys(&dst, &db).await.len() >= at_least }
        })
        .await;
        let killed = std::process::Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ferry sync did not stop on SIG{signal}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (stdout, stderr) = (
            std::fs::read_to_string(&out).unwrap(),
            std::fs::read_to_string(&err).unwrap(),
        );
        assert_eq!(
            status.code(),
            Some(code),
            "SIG{signal}:\n{stdout}\n{stderr}"
        );
        let summary = Output {
            code,
            stdout,
            stderr,
        }
        .json();
        assert_eq!(summary["interrupted"], true, "{summary}");
        let copied = summary["copied"].as_u64().unwrap();
        let present = list_keys(&dst, &pair.db).await.len() as u64;
        // What the summary counts was copied; it is never the zeros of before.
        assert!(
            copied > copied_by_runs as u64 && copied <= present,
            "{summary}, {present} present"
        );
        assert!(
            copied < 300,
            "the signal came too late to test anything: {summary}"
        );
        copied_by_runs = present as usize;
    }
    pair.dst_proxy.clear();
    let rerun = pair.sync("", &["--json"]).await;
    assert_ok(&rerun);
    let summary = rerun.json();
    assert_eq!(summary["interrupted"], false, "{summary}");
    assert_eq!(
        summary["copied"], 300,
        "each object counted once: {summary}"
    );
    assert_eq!(
        assert_same_objects(&client, &pair.sb, &dst, &pair.db).await,
        300
    );
}

/// A typo in a bucket's name claims nothing: the sync stops before registering the pair, and
/// the corrected one runs. A real pairing conflict names `ferry forget`, which drops the
/// pairing (after a confirmation, or with --yes), and the buckets pair again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_claims_nothing_and_ferry_forget_frees_a_pairing_on_moto() {
    let pair = Pair::start(Kind::Moto).await;
    seed(&pair.src.client(), &pair.sb, &seeds("k/", 3)).await;
    let with_source = |source: &str, extra: &[&str]| {
        let mut args = pair.args("");
        args[1] = format!("src:{source}");
        args.extend(extra.iter().map(|s| s.to_string()));
        run_ferry(args)
    };
    let typo = with_source("nosuchbucket-typo", &[]).await;
    assert_eq!(typo.code, 1, "{}", typo.stderr);
    assert!(
        typo.stderr
            .contains("SRC src:nosuchbucket-typo cannot be listed, so nothing was registered"),
        "{}",
        typo.stderr
    );
    let corrected = pair.sync("", &["--json"]).await;
    assert_ok(&corrected);
    let rule = corrected.json()["rule"].as_str().unwrap().to_string();

    // Another source for the same destination: refused, naming the way out.
    let other = unique("other");
    pair.src.create_bucket(&other).await;
    let refused = with_source(&other, &[]).await;
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains(&format!("`ferry forget {rule}` drops that pairing")),
        "{}",
        refused.stderr
    );

    let state = pair.state.to_str().unwrap().to_string();
    let forget = |extra: &[&str]| {
        let mut args = vec![
            "forget".to_string(),
            rule.clone(),
            "--state-dir".to_string(),
            state.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run_ferry(args)
    };
    // Not on a terminal, and without --yes: nothing forgotten.
    let unconfirmed = forget(&[]).await;
    assert_eq!(unconfirmed.code, 2, "{}", unconfirmed.stderr);
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );
    assert_eq!(with_source(&other, &[]).await.code, 2);
    let unknown = run_ferry(vec![
        "forget".into(),
        "no-such-rule".into(),
        "--state-dir".into(),
        state.clone(),
        "--yes".into(),
    ])
    .await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains(&format!("registered: {rule}")),
        "{}",
        unknown.stderr
    );

    let forgotten = forget(&["--yes"]).await;
    assert_ok(&forgotten);
    assert!(
        forgotten.stdout.contains(&format!("forgot rule {rule}")),
        "{}",
        forgotten.stdout
    );
    assert_ok(&with_source(&other, &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_state_dir_is_refused_naming_the_holder() {
    let pair = Pair::start(Kind::Moto).await;
    seed(&pair.src.client(), &pair.sb, &seeds("l/", 50)).await;
    // A long-running holder: --stop never keeps it on the state dir.
    let args: Vec<String> = pair
        .args("")
        .into_iter()
        .chain(["--stop", "never", "--interval", "1h", "--no-progress"].map(String::from))
        .collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut holder = spawn_ferry(pair.dir.path(), "holder", &argv);
    let lock = pair.state.join("lock");
    let holder_pid = holder.child.id().to_string();
    wait_until(Duration::from_secs(30), "the holder took the lock", || {
        let (lock, pid) = (lock.clone(), holder_pid.clone());
        async move { std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == pid) }
    })
    .await;
    let second = pair.sync("", &[]).await;
    assert_eq!(second.code, 2, "{}", second.stderr);
    assert!(
        second.stderr.contains(&format!("pid {holder_pid}"))
            && second.stderr.contains(pair.state.to_str().unwrap()),
        "{}",
        second.stderr
    );
    holder.kill9();
    // Once the holder is gone (however it went), the lock is free again.
    let after = pair.sync("", &["--json"]).await;
    assert_ok(&after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_state_dirs_and_arguments_exit_2_naming_what_is_wrong() {
    let pair = Pair::start(Kind::Moto).await;
    // A state dir that cannot be created: under a regular file.
    let file = pair.dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let mut args = pair.args("");
    let at = args.iter().position(|a| a == "--state-dir").unwrap() + 1;
    args[at] = file.join("state").to_str().unwrap().into();
    let out = run_ferry(args).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("--state-dir") && out.stderr.contains("a-file"),
        "{}",
        out.stderr
    );

    // A state dir written in another format is refused, not misread.
    let other = pair.dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    {
        let db = redb_fixture(&other);
        drop(db);
    }
    let mut args = pair.args("");
    args[at] = other.to_str().unwrap().into();
    let out = run_ferry(args).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("state format 999"), "{}", out.stderr);

    for (argv, needle) in [
        (vec!["sync", "nowhere", "dst:x"], "SRC"),
        (vec!["sync", "src:b", "mars:x"], "no endpoint \"mars\""),
        (vec!["sync", "src:b/p", "dst:x/q"], "DST"),
        (
            vec!["sync", "src:b", "dst:x", "--stop", "sometimes"],
            "--stop",
        ),
        (
            vec!["sync", "src:b", "dst:x", "--interval", "soon"],
            "--interval",
        ),
    ] {
        let mut args: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--config".into(),
            pair.config.clone(),
            "--state-dir".into(),
            pair.state.to_str().unwrap().into(),
        ]);
        let out = run_ferry(args).await;
        assert_eq!(out.code, 2, "{argv:?}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{argv:?}: {}", out.stderr);
    }
}

/// A state file marked as written in format 999.
fn redb_fixture(dir: &std::path::Path) -> redb::Database {
    const SYS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("sys");
    let db = redb::Database::create(dir.join("state.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut sys = txn.open_table(SYS).unwrap();
        sys.insert("format", &999u64.to_be_bytes()[..]).unwrap();
        sys.insert("written_by", &b"9.9.9"[..]).unwrap();
    }
    txn.commit().unwrap();
    db
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_run_without_redis_uses_the_embedded_queue() {
    let pair = Pair::start(Kind::Garage).await;
    seed(&pair.src.client(), &pair.sb, &seeds("r/", 120)).await;
    let config = std::fs::read_to_string(&pair.config).unwrap()
        + &format!(
            "[[rules]]\nname = \"plain\"\nstop = \"once\"\n\
             source = {{ endpoint = \"src\", bucket = \"{}\" }}\n\
             destination = {{ endpoint = \"dst\", bucket = \"{}\" }}\n",
            pair.sb, pair.db
        );
    let path = pair.dir.path().join("run.toml");
    std::fs::write(&path, config).unwrap();
    let state = pair.state.to_str().unwrap().to_string();
    let path = path.to_str().unwrap().to_string();
    let args: Vec<String> = ["run", "--config", &path, "--state-dir", &state]
        .map(String::from)
        .to_vec();
    let out = run_ferry(args.clone()).await;
    assert_ok(&out);
    assert_eq!(
        assert_same_objects(&pair.src.client(), &pair.sb, &pair.dst.client(), &pair.db).await,
        120
    );
    // The state is durable: `ferry status` reads the finished iteration from it.
    let status = run_ferry(
        ["status", "--config", &path, "--state-dir", &state]
            .map(String::from)
            .to_vec(),
    )
    .await;
    assert_ok(&status);
    assert!(status.stdout.contains("plain"), "{}", status.stdout);
    // And a worker alone, which would share the queue with other processes, needs Redis.
    let worker = run_ferry(["worker", "--config", &path].map(String::from).to_vec()).await;
    assert_eq!(worker.code, 2, "{}", worker.stderr);
    assert!(worker.stderr.contains("[redis]"), "{}", worker.stderr);
}

/// A tmpfs mounted for one test (these machines run the tests as root), unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a {size} tmpfs at {} failed: this test fills a disk for real and needs root",
            at.display()
        );
        Tmpfs(at)
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("running mount");
        assert!(status.success(), "remounting {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status()
            .ok(); // best-effort clean-up
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_dir_that_fills_up_stops_the_run_and_a_rerun_resumes() {
    let pair = Pair::start(Kind::Moto).await;
    let n = 3_000;
    seed(&pair.src.client(), &pair.sb, &seeds("f/", n)).await;
    // Room for the store's first pages, not for the whole iteration's.
    let disk = Tmpfs::mount(pair.dir.path().join("small"), "600k");
    let state = disk.0.join("state");
    let mut args = pair.args("");
    let at = args.iter().position(|a| a == "--state-dir").unwrap() + 1;
    args[at] = state.to_str().unwrap().into();
    args.push("--json".into());

    let full = run_ferry(args.clone()).await;
    assert_eq!(full.code, 1, "{}", full.stderr);
    assert!(
        full.stderr.contains("No space left on device")
            && full.stderr.contains(state.to_str().unwrap())
            && full.stderr.contains("run again to resume"),
        "{}",
        full.stderr
    );
    assert!(!full.stderr.contains("panicked"), "{}", full.stderr);
    let copied_before = list_keys(&pair.dst.client(), &pair.db).await.len();
    assert!(
        copied_before < n,
        "the disk filled too late to test anything"
    );

    disk.resize("64m");
    let rerun = run_ferry(args).await;
    assert_ok(&rerun);
    let summary = rerun.json();
    // The rerun finished the iteration the full disk stopped: each object counted once,
    // copied or (already there) skipped.
    assert_eq!(summary["iterations"], 1, "{summary}");
    assert_eq!(summary["listed"], n, "{summary}");
    assert_eq!(
        summary["copied"].as_u64().unwrap() + summary["skipped"].as_u64().unwrap(),
        n as u64,
        "{summary}"
    );
    assert_eq!(
        assert_same_objects(&pair.src.client(), &pair.sb, &pair.dst.client(), &pair.db).await,
        n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_that_fail_are_listed_and_the_sync_exits_1() {
    let pair = Pair::start(Kind::Moto).await;
    seed(&pair.src.client(), &pair.sb, &seeds("ok/", 5)).await;
    seed(&pair.src.client(), &pair.sb, &seeds("denied/", 2)).await;
    // The destination refuses writes under denied/ for good.
    pair.dst_proxy.set_rules(vec![Rule::new(
        "deny",
        Match {
            method: Some("PUT".into()),
            path_contains: Some("/denied/".into()),
            ..Match::default()
        },
        Action::Status {
            status: 403,
            code: "AccessDenied".into(),
        },
    )]);
    let out = pair.sync("", &[]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    for key in ["denied/00000.txt", "denied/00001.txt"] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(&format!("failed: {key}")) && l.contains("AccessDenied")),
            "{key} not listed:\n{}",
            out.stderr
        );
    }
    assert!(out.stderr.contains("5 copied"), "{}", out.stderr);
    let json = pair.sync("", &["--json"]).await;
    assert_eq!(json.code, 1, "{}", json.stderr);
    let v = json.json();
    assert_eq!(v["failed"], 2, "{v}");
    assert_eq!(v["failures"].as_array().map(Vec::len), Some(2), "{v}");
    // Once the destination accepts them, a rerun copies them and exits 0.
    pair.dst_proxy.clear();
    let fixed = pair.sync("", &["--json"]).await;
    assert_ok(&fixed);
    assert_eq!(fixed.json()["copied"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_in_the_config_sync_uses_redis_and_a_second_machine_joins() {
    let pair = Pair::start(Kind::Moto).await;
    let redis = harness::Redis::start();
    seed(&pair.src.client(), &pair.sb, &seeds("x/", 400)).await;
    let text = format!(
        "[redis]\nurl = \"{}\"\nnamespace = \"syncs\"\n\n",
        redis.url()
    ) + &std::fs::read_to_string(&pair.config).unwrap();
    let config = pair.dir.path().join("redis.toml");
    std::fs::write(&config, text).unwrap();
    // Slow enough that the second process starts while the first still copies.
    pair.dst_proxy.set_rules(vec![Rule::new(
        "slow",
        Match {
            method: Some("PUT".into()),
            ..Match::default()
        },
        Action::Delay { ms: 30 },
    )]);
    let args = |state: &str| -> Vec<String> {
        vec![
            "sync".into(),
            pair.src_arg(""),
            pair.dst_arg(),
            "--config".into(),
            config.to_str().unwrap().into(),
            "--state-dir".into(),
            pair.dir.path().join(state).to_str().unwrap().into(),
            "--json".into(),
            "--concurrency".into(),
            "4".into(),
        ]
    };
    let (a, b) = tokio::join!(run_ferry(args("a")), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        run_ferry(args("b")).await
    });
    assert_ok(&a);
    assert_ok(&b);
    let (a, b) = (a.json(), b.json());
    assert_eq!(
        (&a["backend"], &b["backend"]),
        (&serde_json::json!("redis"), &serde_json::json!("redis"))
    );
    // One iteration, shared: both report its counts, each object copied once.
    assert_eq!(a["iterations"], 1, "{a}");
    assert_eq!(a["copied"], 400, "{a}");
    assert_eq!(b["copied"], 400, "{b}");
    assert_eq!(
        assert_same_objects(&pair.src.client(), &pair.sb, &pair.dst.client(), &pair.db).await,
        400
    );
    // Neither used a state dir.
    assert!(!pair.dir.path().join("a").exists() && !pair.dir.path().join("b").exists());
    // b joined a's iteration (its summary is that iteration's), and nothing was written
    // twice.
    assert_eq!(b["iterations"], 1, "{b}");
    let puts = pair
        .dst_proxy
        .events()
        .iter()
        .filter(|e| e.method == "PUT" && !e.path.contains(".ferry-probe"))
        .count();
    assert_eq!(puts, 400, "each object written once");
}

/// Each failure is said once, on one line, in words: a missing bucket, a wrong secret, a
/// closed port and a `[redis]` that is down. Before, a missing bucket or a wrong secret was
/// said four times ("trying again at the next interval" on a one-shot sync), a closed port
/// printed a struct dump of ~500 characters, and a down Redis was waited for forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_is_said_once_in_words_on_garage() {
    let pair = Pair::start(Kind::Garage).await;
    seed(&pair.src.client(), &pair.sb, &seeds("e/", 2)).await;
    let closed = free_port();
    let mut wrong = pair.src.endpoint_toml_at("wrongkey", &pair.src.url());
    wrong = wrong.replace(&pair.src.secret_key, &"0".repeat(pair.src.secret_key.len()));
    let text = std::fs::read_to_string(&pair.config).unwrap()
        + &wrong
        + &format!(
            "[endpoints.closed]\nurl = \"http://127.0.0.1:{closed}\"\nregion = \"garage\"\n\
             access_key_id = \"k\"\nsecret_access_key = \"s\"\n"
        );
    std::fs::write(&pair.config, &text).unwrap();
    let private: std::fs::Permissions = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&pair.config, private.clone()).unwrap();
    let with_source = |source: String, config: &str| {
        let mut args = pair.args("");
        args[1] = source;
        let at = args.iter().position(|a| a == "--config").unwrap();
        args[at + 1] = config.to_string();
        run_ferry(args)
    };
    let one_line = |out: &Output, says: &str| {
        assert_eq!(out.code, 1, "{}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line:\n{}", out.stderr);
        assert!(lines[0].starts_with("error: "), "{}", lines[0]);
        assert!(lines[0].contains(says), "{}", lines[0]);
        for dump in ["DispatchFailure", "ConnectorError", "{ ", "next interval"] {
            assert!(!lines[0].contains(dump), "{dump} in {}", lines[0]);
        }
    };

    let missing = with_source("src:nosuch-bucket".into(), &pair.config).await;
    one_line(
        &missing,
        "SRC src:nosuch-bucket cannot be listed, so nothing was registered or copied: \
         ListObjectsV2 s3://nosuch-bucket/ on endpoint src: NoSuchBucket",
    );
    let secret = with_source(format!("wrongkey:{}", pair.sb), &pair.config).await;
    one_line(&secret, "(http 403)");
    let refused = with_source(format!("closed:{}", pair.sb), &pair.config).await;
    one_line(
        &refused,
        &format!("connection refused at http://127.0.0.1:{closed}: nothing listens there"),
    );

    let with_redis = pair.dir.path().join("with-redis.toml");
    std::fs::write(
        &with_redis,
        format!(
            "{text}[redis]\nurl = \"redis://127.0.0.1:{}\"\n",
            free_port()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&with_redis, private).unwrap();
    let started = std::time::Instant::now();
    let down = with_source(pair.src_arg(""), with_redis.to_str().unwrap()).await;
    one_line(&down, "start it, or leave [redis] out");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a down Redis is reported within the connect timeout, not waited for: {:?}",
        started.elapsed()
    );
    // None of it registered anything: the real pair syncs.
    assert_ok(&pair.sync("", &["--json"]).await);
}

/// [`seeds`], each with a content type: a store fills in its own default for an object
/// without one (moto: `binary/octet-stream`, Garage: none), which is not a copy's fault.
fn typed_seeds(prefix: &str, n: usize) -> Vec<Seed> {
    let mut all = seeds(prefix, n);
    for s in &mut all {
        s.content_type
            .get_or_insert_with(|| "application/octet-stream".into());
    }
    all
}

/// A place with no config file of any kind: its own HOME and XDG dirs, no AWS or rclone
/// variables but those given.
fn bare_env(home: &std::path::Path, set: &[(&str, String)]) -> Vec<(String, Option<String>)> {
    let mut env: Vec<(String, Option<String>)> = [
        "FERRY_CONFIG",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "RCLONE_CONFIG",
        "XDG_CONFIG_HOME",
    ]
    .iter()
    .map(|k| (k.to_string(), None))
    .collect();
    env.push(("HOME".into(), Some(home.to_str().unwrap().to_string())));
    for (k, v) in set {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), Some(v.clone())));
    }
    env
}

/// `ferry sync s3://SRC s3://DST` with no config file anywhere: the destination from the
/// AWS environment (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID...), the source on
/// another store from --src-endpoint, --src-region and FERRY_SRC_* keys. A rerun copies
/// nothing; a side's flag on a named endpoint is refused, naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_urls_need_no_config_file_from_garage_to_moto() {
    let (src, dst) = (S3Server::garage(), S3Server::moto());
    let (sb, db) = (unique("s"), unique("d"));
    src.create_bucket(&sb).await;
    dst.create_bucket(&db).await;
    seed(&src.client(), &sb, &typed_seeds("u/", 40)).await;
    let home = TempDir::new("bare-home");
    let env = bare_env(
        home.path(),
        &[
            ("AWS_ENDPOINT_URL", dst.url()),
            ("AWS_REGION", dst.region.clone()),
            ("AWS_ACCESS_KEY_ID", dst.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", dst.secret_key.clone()),
            ("FERRY_SRC_ACCESS_KEY_ID", src.access_key.clone()),
            ("FERRY_SRC_SECRET_ACCESS_KEY", src.secret_key.clone()),
        ],
    );
    let state = home.path().join("state").to_str().unwrap().to_string();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "sync".into(),
            format!("s3://{sb}/u"),
            format!("s3://{db}"),
            "--src-endpoint".into(),
            src.url(),
            "--src-region".into(),
            src.region.clone(),
            "--state-dir".into(),
            state.clone(),
            "--json".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        run_cmd_in(
            ferry_bin(),
            args(extra),
            env.clone(),
            Some(home.path().to_path_buf()),
        )
    };
    let first = run(&[]).await;
    assert_ok(&first);
    assert_eq!(first.json()["copied"], 40, "{}", first.stdout);
    assert_eq!(
        assert_same_objects(&src.client(), &sb, &dst.client(), &db).await,
        40
    );
    let again = run(&[]).await;
    assert_ok(&again);
    assert_eq!(
        (&again.json()["copied"], &again.json()["skipped"]),
        (&serde_json::json!(0), &serde_json::json!(40)),
        "{}",
        again.stdout
    );

    // Without the source's keys, the chain finds the destination's, which Garage refuses:
    // said once, naming the endpoint's URL is not needed, the server's words are.
    let without_keys: Vec<_> = env
        .iter()
        .filter(|(k, _)| !k.starts_with("FERRY_SRC_"))
        .cloned()
        .collect();
    let refused = run_cmd_in(
        ferry_bin(),
        args(&[]),
        without_keys,
        Some(home.path().to_path_buf()),
    )
    .await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("(http 403)"), "{}", refused.stderr);

    // `status` needs no config file either: it reads the state dir the sync left.
    let status = run_cmd_in(
        ferry_bin(),
        vec!["status".into(), "--state-dir".into(), state.clone()],
        env.clone(),
        Some(home.path().to_path_buf()),
    )
    .await;
    assert_ok(&status);
    assert!(
        status.stdout.contains(&format!("sync-{sb}-{db}-")),
        "{}",
        status.stdout
    );

    std::fs::write(
        home.path().join("ferry.toml"),
        src.endpoint_toml_at("east", &src.url()),
    )
    .unwrap();
    let mut named = args(&[]);
    named[1] = format!("east:{sb}");
    let flag_on_named = run_cmd_in(
        ferry_bin(),
        named,
        env.clone(),
        Some(home.path().to_path_buf()),
    )
    .await;
    assert_eq!(flag_on_named.code, 2, "{}", flag_on_named.stderr);
    assert!(
        flag_on_named
            .stderr
            .contains("--src-endpoint: applies to an s3:// SRC only"),
        "{}",
        flag_on_named.stderr
    );
}

/// An rclone user's remotes work unchanged: `ferry sync gsrc:BUCKET mdst:BUCKET` with the
/// endpoints, regions and keys of rclone's own config file (RCLONE_CONFIG), and no ferry
/// config. A remote of another type, or one that is not there, is refused naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rclone_remote_is_used_unchanged_from_garage_to_moto() {
    let (src, dst) = (S3Server::garage(), S3Server::moto());
    let (sb, db) = (unique("s"), unique("d"));
    src.create_bucket(&sb).await;
    dst.create_bucket(&db).await;
    seed(&src.client(), &sb, &typed_seeds("r/", 25)).await;
    let home = TempDir::new("rclone-home");
    let conf = home.path().join("rclone.conf");
    std::fs::write(
        &conf,
        format!(
            "[gsrc]\ntype = s3\nprovider = Other\nendpoint = {}\nregion = {}\n\
             access_key_id = {}\nsecret_access_key = {}\n\n\
             [mdst]\ntype = s3\nprovider = Other\nendpoint = {}\nforce_path_style = true\n\
             access_key_id = {}\nsecret_access_key = {}\n\n\
             [gdrive]\ntype = drive\n",
            src.url(),
            src.region,
            src.access_key,
            src.secret_key,
            dst.url(),
            dst.access_key,
            dst.secret_key
        ),
    )
    .unwrap();
    let before = std::fs::read(&conf).unwrap();
    let env = bare_env(
        home.path(),
        &[("RCLONE_CONFIG", conf.to_str().unwrap().to_string())],
    );
    let state = home.path().join("state").to_str().unwrap().to_string();
    let sync = |src_arg: String| {
        run_cmd_in(
            ferry_bin(),
            vec![
                "sync".into(),
                src_arg,
                format!("mdst:{db}"),
                "--state-dir".into(),
                state.clone(),
                "--json".into(),
            ],
            env.clone(),
            Some(home.path().to_path_buf()),
        )
    };
    let out = sync(format!("gsrc:{sb}")).await;
    assert_ok(&out);
    assert_eq!(out.json()["copied"], 25, "{}", out.stdout);
    assert_eq!(
        assert_same_objects(&src.client(), &sb, &dst.client(), &db).await,
        25
    );
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        before,
        "rclone's file is read only"
    );
    for secret in [&src.secret_key, &dst.secret_key] {
        assert!(!out.stderr.contains(secret.as_str()), "{}", out.stderr);
    }

    let drive = sync(format!("gdrive:{sb}")).await;
    assert_eq!(drive.code, 2, "{}", drive.stderr);
    assert!(
        drive.stderr.contains("only remotes of type \"s3\" work"),
        "{}",
        drive.stderr
    );
    let unknown = sync(format!("nowhere:{sb}")).await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(
        unknown.stderr.contains("no config file")
            || unknown.stderr.contains("no rclone remote of that name"),
        "{}",
        unknown.stderr
    );
}

/// `ferry init` writes a commented starter, readable by its owner alone, that `validate`
/// accepts as it is; it never writes over a file.
#[tokio::test]
async fn ferry_init_writes_a_private_starter_that_validates_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("init");
    let path = dir.path().join("ferry.toml");
    let at = path.to_str().unwrap().to_string();
    let first = run_ferry(vec!["init".into(), at.clone()]).await;
    assert_ok(&first);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("[endpoints."), "{written}");
    let valid = run_ferry(vec!["validate".into(), "--config".into(), at.clone()]).await;
    assert_ok(&valid);
    std::fs::write(&path, "mine").unwrap();
    let again = run_ferry(vec!["init".into(), at.clone()]).await;
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
}

/// Every listed object is accounted for, by why it was not copied: unchanged (an identical
/// object ferry did not write counts as unchanged), unmanaged and different (with the flag
/// that would copy them), and archived. Before, the archived ones vanished from the counts
/// and unmanaged ones were a bare "skipped".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_is_accounted_for_by_reason_on_moto() {
    let pair = Pair::start(Kind::Moto).await;
    let (src, dst) = (pair.src.client(), pair.dst.client());
    let mut objects = seeds("k/", 10);
    objects.push(Seed::new("k/same", "the same bytes on both sides"));
    for key in ["cold/a", "cold/b"] {
        let mut s = Seed::new(key, format!("{key}, archived"));
        s.storage_class = Some("GLACIER".into());
        objects.push(s);
    }
    seed(&src, &pair.sb, &objects).await;
    seed(
        &dst,
        &pair.db,
        &[Seed::new("k/same", "the same bytes on both sides")],
    )
    .await;
    let accounted = |s: &serde_json::Value| {
        let by = s["skipped_by"].as_object().expect("skipped_by");
        let sum: u64 = by.values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(s["skipped"].as_u64(), Some(sum), "{s}");
        assert_eq!(
            s["listed"].as_u64().unwrap(),
            s["copied"].as_u64().unwrap() + sum + s["failed"].as_u64().unwrap(),
            "every listed object accounted for: {s}"
        );
    };
    let reasons = |s: &serde_json::Value| {
        [
            "unchanged",
            "destination_newer",
            "unmanaged",
            "overwrite_never",
            "archived",
        ]
        .map(|r| s["skipped_by"][r].as_u64().unwrap_or(u64::MAX))
    };

    let first = pair.sync("", &["--json"]).await;
    assert_ok(&first);
    let s = first.json();
    accounted(&s);
    assert_eq!(
        (&s["listed"], &s["copied"]),
        (&13.into(), &10.into()),
        "{s}"
    );
    assert_eq!(reasons(&s), [1, 0, 0, 0, 2], "{s}");

    for key in ["k/00000.txt", "k/00001.txt"] {
        put(&dst, &pair.db, key, b"changed at the destination").await;
    }
    let second = pair.sync("", &["--json"]).await;
    assert_ok(&second);
    let s = second.json();
    accounted(&s);
    assert_eq!(s["copied"], 0, "{s}");
    assert_eq!(reasons(&s), [9, 0, 2, 0, 2], "{s}");
    let mut archived: Vec<&str> = s["archived_keys"]
        .as_array()
        .expect("archived_keys")
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    archived.sort();
    assert_eq!(archived, ["cold/a", "cold/b"], "{s}");

    let said = pair.sync("", &["--no-progress"]).await;
    assert_ok(&said);
    assert!(
        said.stderr
            .contains("13 skipped (2 archived, 9 unchanged, 2 unmanaged)"),
        "{}",
        said.stderr
    );
    assert!(
        said.stderr.contains(
            "2 destination object(s) were not written by ferry and differ from the source"
        ) && said.stderr.contains("--overwrite-unmanaged replaces them"),
        "{}",
        said.stderr
    );
    assert!(
        said.stderr
            .contains("2 source object(s) are archived and not restored")
            && said.stderr.contains("archived: cold/a")
            && said.stderr.contains("archived: cold/b"),
        "{}",
        said.stderr
    );
}

/// Filters, applied in the diff: `--include`, `--exclude`, `--max-size` and `--min-age`
/// leave objects out, count them as excluded, and never delete an excluded destination
/// object with `--delete`; a bad glob names the flag.
async fn filters_leave_out_count_and_never_delete(kind: Kind) {
    let pair = Pair::start(kind).await;
    let (src, dst) = (pair.src.client(), pair.dst.client());
    let mut objects = vec![
        Seed::new("photos/a.jpg", "a jpeg"),
        Seed::new("photos/b.png", "a png"),
        Seed::new("photos/private/c.jpg", "a private jpeg"),
        Seed::new("docs/big.txt", vec![b'x'; 4096]),
        Seed::new("docs/small.txt", "small"),
    ];
    for s in &mut objects {
        s.content_type = Some("application/octet-stream".into());
    }
    seed(&src, &pair.sb, &objects).await;
    let all = pair.sync("", &["--json", "--delete"]).await;
    assert_ok(&all);
    assert_eq!(all.json()["copied"], 5, "{}", all.stdout);

    for key in ["photos/b.png", "docs/small.txt"] {
        src.delete_object()
            .bucket(&pair.sb)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    let filters = [
        "--include",
        "*.jpg",
        "--include",
        "*.txt",
        "--exclude",
        "private/**",
        "--max-size",
        "2KiB",
    ];
    let mut args = vec!["--json", "--delete"];
    args.extend(filters);
    let filtered = pair.sync("", &args).await;
    assert_ok(&filtered);
    let s = filtered.json();
    assert_eq!(s["listed"], 3, "{s}");
    assert_eq!(s["skipped_by"]["unchanged"], 1, "{s}");
    assert_eq!(
        s["skipped_by"]["excluded"], 2,
        "private/c.jpg and big.txt: {s}"
    );
    assert_eq!(
        s["deleted"], 1,
        "docs/small.txt only; photos/b.png is excluded: {s}"
    );
    let names = |listed: Vec<(String, String, i64)>| -> Vec<String> {
        listed.into_iter().map(|(k, _, _)| k).collect()
    };
    assert_eq!(
        names(list_keys(&dst, &pair.db).await),
        [
            "docs/big.txt",
            "photos/a.jpg",
            "photos/b.png",
            "photos/private/c.jpg"
        ]
    );

    put(&src, &pair.sb, "photos/new.jpg", b"new jpeg").await;
    put(&src, &pair.sb, "photos/new.png", b"new png").await;
    let young = pair
        .sync("", &["--json", "--dry-run", "--min-age", "1h"])
        .await;
    assert_ok(&young);
    let s = young.json();
    assert_eq!(
        s["would_copy"], 0,
        "everything is younger than an hour: {s}"
    );
    assert_eq!(s["skipped_by"]["excluded"], s["listed"], "{s}");
    let mut args = vec!["--json"];
    args.extend(filters);
    let again = pair.sync("", &args).await;
    assert_ok(&again);
    assert_eq!(
        again.json()["copied"],
        1,
        "photos/new.jpg: {}",
        again.stdout
    );
    assert!(!names(list_keys(&dst, &pair.db).await).contains(&"photos/new.png".to_string()));

    let bad = pair.sync("", &["--include", "[unclosed"]).await;
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("--include") && bad.stderr.contains("\"[unclosed\" is not a glob"),
        "{}",
        bad.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_leave_out_count_and_never_delete_on_moto() {
    filters_leave_out_count_and_never_delete(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_leave_out_count_and_never_delete_on_garage() {
    filters_leave_out_count_and_never_delete(Kind::Garage).await;
}

/// Ctrl-C under a terminal: the bar was drawn, then cleared, and the interrupted summary
/// says what was done and how to resume; the exit is 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sync_under_a_terminal_shows_the_bar_then_what_it_did_on_moto() {
    let pair = Pair::start(Kind::Moto).await;
    seed(&pair.src.client(), &pair.sb, &seeds("t/", 300)).await;
    pair.dst_proxy.set_rules(vec![Rule::new(
        "slow",
        Match::default(),
        Action::Delay { ms: 50 },
    )]);
    // SIGINT after 3 s, as a Ctrl-C would send it; `--preserve-status` passes ferry's own
    // exit code through.
    let command: Vec<String> = [
        "timeout",
        "--preserve-status",
        "-s",
        "INT",
        "3",
        ferry_bin(),
    ]
    .into_iter()
    .map(str::to_string)
    .chain(pair.args(""))
    .chain(["--concurrency".to_string(), "2".to_string()])
    .map(|a| format!("'{a}'"))
    .collect();
    let out = run_under_pty(command.join(" ")).await;
    assert_eq!(out.code, 130, "{}", out.stdout);
    assert!(out.stdout.contains("ETA"), "no bar:\n{}", out.stdout);
    assert!(
        out.stdout.contains("interrupted after")
            && out.stdout.contains("run the same command to resume"),
        "no interrupted summary:\n{}",
        out.stdout
    );
}

/// A first Ctrl-C is answered at once ("stopping: ...", while copies in flight finish); a
/// second one stops the process within a second, exit 130, and a rerun copies the rest:
/// nothing held is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_stops_at_once_and_a_rerun_completes_on_moto() {
    let pair = Pair::start(Kind::Moto).await;
    seed(&pair.src.client(), &pair.sb, &seeds("c/", 200)).await;
    // Each write held for 3 s: a drain would take that long, at least.
    pair.dst_proxy.set_rules(vec![Rule::new(
        "slow",
        Match {
            method: Some("PUT".into()),
            ..Match::default()
        },
        Action::Delay { ms: 3000 },
    )]);
    let err = pair.dir.path().join("twice.err");
    let mut child = std::process::Command::new(ferry_bin())
        .args(pair.args(""))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("starting ferry sync");
    let read = || std::fs::read_to_string(&err).unwrap_or_default();
    // Copies are in flight once source objects are being read (their writes are held).
    wait_until(Duration::from_secs(60), "source objects read", || {
        let reads = pair
            .src_proxy
            .events()
            .iter()
            .filter(|e| e.method == "GET" && !e.query.contains("list-type"))
            .count();
        async move { reads >= 4 }
    })
    .await;
    let interrupt = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
    };
    assert!(interrupt(child.id()).success());
    wait_until(Duration::from_secs(1), "the first Ctrl-C answered", || {
        let said = read().contains("stopping: no new work is claimed");
        async move { said }
    })
    .await;
    assert!(child.try_wait().unwrap().is_none(), "draining, not gone");
    assert!(interrupt(child.id()).success());
    let second = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            second.elapsed() < Duration::from_secs(1),
            "a second Ctrl-C did not stop ferry within a second:\n{}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(130), "{}", read());
    assert!(read().contains("stopped at once"), "{}", read());

    pair.dst_proxy.clear();
    let rerun = pair.sync("", &["--json"]).await;
    assert_ok(&rerun);
    assert_eq!(
        assert_same_objects(&pair.src.client(), &pair.sb, &pair.dst.client(), &pair.db).await,
        200
    );
}
