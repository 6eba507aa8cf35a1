//! Test harness: real servers on free ports (from `ferry_testkit::servers`), the `ferry`
//! binary as child processes, and a test environment of Redis, a source and a destination.
#![allow(dead_code, unreachable_pub)]

pub mod data;
pub mod webhook;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub use ferry_testkit::servers::*;

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
    numeric_fields(raw)
}

/// The fields of a record (a Redis hash) that hold numbers.
pub fn numeric_fields(
    raw: std::collections::HashMap<String, String>,
) -> std::collections::HashMap<String, u64> {
    raw.into_iter()
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
        .collect()
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
    spawn_logged(Path::new(ferry_bin()), dir, name, args)
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
        self.run_to_completion_with(config, extra, &[], timeout)
    }

    /// [`Env::run_to_completion`] with extra environment variables.
    pub fn run_to_completion_with(
        &self,
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> String {
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
        let mut p = spawn_logged_with(Path::new(ferry_bin()), self.dir.path(), &name, &args, env);
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

/// What `bucket` on `server` does, as ferry's probe measures it: tests that expect a
/// store-dependent outcome branch on this, never on the store's name.
pub async fn measured(server: &S3Server, bucket: &str) -> ferry_storage::Capabilities {
    ferry_storage::probe(store_at(server, &server.url()).await.as_ref(), bucket)
        .await
        .unwrap_or_else(|e| panic!("probing {bucket}: {e}"))
}

/// ferry's S3 store for `server`, reached at `url` (a proxy in front, say).
pub async fn store_at(
    server: &S3Server,
    url: &str,
) -> std::sync::Arc<dyn ferry_storage::ObjectStore> {
    let config = ferry_core::config::Config::from_toml(&format!(
        "[redis]\nurl = \"redis://127.0.0.1:1\"\n\n{}",
        server.endpoint_toml_at("store", url)
    ))
    .expect("config");
    ferry_storage::Stores::connect(
        &config,
        ferry_storage::Timeouts::default(),
        &ferry_storage::Trust::system(),
    )
    .await
    .get("store")
}

/// The S3 path to `server`'s endpoint `s3`, as a run connects to it.
pub async fn s3_path(server: &S3Server) -> std::sync::Arc<dyn ferry_storage::ObjectStore> {
    let config = ferry_core::config::Config::from_toml(&format!(
        "[redis]\nurl = \"redis://127.0.0.1:1\"\n\n{}",
        server.endpoint_toml("s3")
    ))
    .expect("config");
    let trust = ferry_storage::Trust::system();
    ferry_storage::Stores::connect(&config, ferry_storage::Timeouts::default(), &trust)
        .await
        .get("s3")
}
