//! `ferry sync SRC DST`: one rule made from the command line, run to its stop condition in
//! this process, with a progress display and a summary.
//!
//! Endpoints come from the config file (as rclone names remotes); its rules are ignored.
//! Without `[redis]` the queue is the embedded one in `--state-dir`, so a second sync of the
//! same pair copies only what changed. With `[redis]`, the same command run on other machines
//! joins in: the rule's name comes from SRC and DST, so they all serve the same rule, one
//! leading its iterations and all of them copying.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use ferry_core::config::{Config, ConfigError, Problem};
use ferry_core::task::Task;
use ferry_queue::{DeadLetter, IterationRecord, Persistence, Queue, TaskId};
use ferry_storage::Stores;
use serde::Serialize;

use crate::failure::{Failure, unless_interrupted};
use crate::human::bytes;
use crate::run::Workers;
use crate::startup::{self, Role, S3Args, config_path, state_dir};

/// `ferry sync` arguments.
#[derive(Args)]
#[command(after_help = "Examples:
  ferry sync s3://photos s3://photos-dr --dst-endpoint http://127.0.0.1:9000
  ferry sync minio:photos/2024 aws:photos-dr --include '*.jpg' --delete
  ferry sync east:photos west:photos-dr --stop never --interval 15m
  ferry sync east:photos west:photos-dr --dry-run")]
pub(crate) struct SyncArgs {
    /// Source: ENDPOINT:BUCKET[/PREFIX] (an endpoint of the config file, or an rclone remote
    /// of type s3), or s3://BUCKET[/PREFIX] (the AWS environment, or --src-endpoint).
    src: String,
    /// Destination, the same way (the prefix, if any, must be the source's: keys keep their
    /// names).
    dst: String,
    /// For an s3:// SRC: the S3 API's URL [default: AWS_ENDPOINT_URL_S3, else
    /// AWS_ENDPOINT_URL, else AWS's own]. Keys: FERRY_SRC_ACCESS_KEY_ID and
    /// FERRY_SRC_SECRET_ACCESS_KEY, else the AWS credential chain.
    #[arg(
        long,
        env = "FERRY_SRC_ENDPOINT",
        value_name = "URL",
        help_heading = "s3:// sides"
    )]
    src_endpoint: Option<String>,
    /// For an s3:// SRC: a profile of the shared AWS config and credentials files.
    #[arg(
        long,
        env = "FERRY_SRC_PROFILE",
        value_name = "NAME",
        help_heading = "s3:// sides"
    )]
    src_profile: Option<String>,
    /// For an s3:// SRC: the signing region [default: AWS_REGION, else AWS_DEFAULT_REGION,
    /// else the profile's, else us-east-1].
    #[arg(
        long,
        env = "FERRY_SRC_REGION",
        value_name = "REGION",
        help_heading = "s3:// sides"
    )]
    src_region: Option<String>,
    /// For an s3:// DST: the S3 API's URL (as --src-endpoint; keys: FERRY_DST_ACCESS_KEY_ID
    /// and FERRY_DST_SECRET_ACCESS_KEY).
    #[arg(
        long,
        env = "FERRY_DST_ENDPOINT",
        value_name = "URL",
        help_heading = "s3:// sides"
    )]
    dst_endpoint: Option<String>,
    /// For an s3:// DST: a profile of the shared AWS files.
    #[arg(
        long,
        env = "FERRY_DST_PROFILE",
        value_name = "NAME",
        help_heading = "s3:// sides"
    )]
    dst_profile: Option<String>,
    /// For an s3:// DST: the signing region (as --src-region).
    #[arg(
        long,
        env = "FERRY_DST_REGION",
        value_name = "REGION",
        help_heading = "s3:// sides"
    )]
    dst_region: Option<String>,
    /// The config file with the endpoints [default: ./ferry.toml, else
    /// ~/.config/ferry/ferry.toml]. Its rules are ignored.
    #[arg(long, short, env = "FERRY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Redis URL; overrides `[redis] url` in the config (and means: use Redis).
    #[arg(
        long,
        env = "FERRY_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    redis: Option<String>,
    /// Where the embedded queue keeps its state when there is no `[redis]` [default:
    /// ~/.local/state/ferry].
    #[arg(long, env = "FERRY_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Tasks copied at once.
    #[arg(
        long,
        env = "FERRY_CONCURRENCY",
        default_value_t = 32,
        value_name = "N"
    )]
    concurrency: usize,
    /// One iteration, then exit (the default).
    #[arg(long, conflicts_with = "stop", help_heading = "Iterations")]
    once: bool,
    /// When to stop: `once`, `empty:N` (after N iterations in a row that change nothing) or
    /// `never`.
    #[arg(
        long,
        value_name = "WHEN",
        default_value = "once",
        help_heading = "Iterations"
    )]
    stop: Option<String>,
    /// Pause between iterations (with `--stop empty:N` or `never`).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "15m",
        help_heading = "Iterations"
    )]
    interval: Option<String>,
    /// When an existing destination object is replaced.
    #[arg(
        long,
        value_parser = ["never", "if-newer", "if-different", "always"],
        default_value = "if-newer",
        help_heading = "What is copied"
    )]
    overwrite: Option<String>,
    /// Also replace destination objects ferry did not write.
    #[arg(long, help_heading = "What is copied")]
    overwrite_unmanaged: bool,
    /// Delete destination objects ferry wrote whose source is gone.
    #[arg(long, help_heading = "What is copied")]
    delete: bool,
    /// Objects at or above SIZE are copied in parts.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "100MiB",
        help_heading = "What is copied"
    )]
    multipart_threshold: Option<String>,
    /// Size of each part.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "50MiB",
        help_heading = "What is copied"
    )]
    part_size: Option<String>,
    /// Storage class of every copy [default: the source object's].
    #[arg(long, value_name = "CLASS", help_heading = "What is copied")]
    storage_class: Option<String>,
    /// Copy only keys that match GLOB (repeatable; rclone's glob rules, on the key relative
    /// to the prefix: `*.jpg`, `/2024/**`, `{a,b}/*`).
    #[arg(long, value_name = "GLOB", help_heading = "Filters")]
    include: Vec<String>,
    /// Leave out keys that match GLOB (repeatable; wins over --include). Excluded objects
    /// are counted, never copied, and never deleted by --delete.
    #[arg(long, value_name = "GLOB", help_heading = "Filters")]
    exclude: Vec<String>,
    /// Leave out objects smaller than SIZE (e.g. 1MiB).
    #[arg(long, value_name = "SIZE", help_heading = "Filters")]
    min_size: Option<String>,
    /// Leave out objects larger than SIZE.
    #[arg(long, value_name = "SIZE", help_heading = "Filters")]
    max_size: Option<String>,
    /// Leave out objects modified more recently than DURATION ago (e.g. 1h).
    #[arg(long, value_name = "DURATION", help_heading = "Filters")]
    min_age: Option<String>,
    /// Leave out objects modified longer than DURATION ago (e.g. 7d).
    #[arg(long, value_name = "DURATION", help_heading = "Filters")]
    max_age: Option<String>,
    /// List what would be copied or deleted, and change nothing.
    #[arg(long, help_heading = "Output")]
    dry_run: bool,
    /// No progress display.
    #[arg(long, help_heading = "Output")]
    no_progress: bool,
    /// Print one JSON summary on stdout at the end.
    #[arg(long, help_heading = "Output")]
    json: bool,
    #[command(flatten)]
    s3: S3Args,
}

/// One side of the pair, as given on the command line.
#[derive(Debug, PartialEq, Eq)]
struct Side {
    endpoint: String,
    bucket: String,
    /// Empty, or ending in `/`.
    prefix: String,
    /// Given as `s3://BUCKET`: its endpoint comes from the environment and flags.
    s3_url: bool,
}

fn problem(path: &str, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

fn config_error(problems: Vec<Problem>) -> Failure {
    Failure::Config(ConfigError { problems })
}

/// Parses `ENDPOINT:BUCKET[/PREFIX]`; a prefix names a directory (`a/b` means `a/b/`).
fn parse_side(arg: &str, value: &str) -> Result<Side, Problem> {
    if let Some(rest) = value.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(problem(
                arg,
                format!("{value:?} is not s3://BUCKET[/PREFIX] (no bucket)"),
            ));
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        return Ok(Side {
            endpoint: format!("s3-{}", arg.to_ascii_lowercase()),
            bucket: bucket.into(),
            prefix,
            s3_url: true,
        });
    }
    let Some((endpoint, rest)) = value.split_once(':') else {
        return Err(problem(
            arg,
            format!("{value:?} is not ENDPOINT:BUCKET[/PREFIX] (no ':')"),
        ));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if endpoint.is_empty() || bucket.is_empty() {
        return Err(problem(
            arg,
            format!("{value:?} is not ENDPOINT:BUCKET[/PREFIX] (empty endpoint or bucket)"),
        ));
    }
    let mut prefix = prefix.to_string();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(Side {
        endpoint: endpoint.into(),
        bucket: bucket.into(),
        prefix,
        s3_url: false,
    })
}

/// The rule's name: readable, and the same for the same pair of buckets on every machine.
/// The prefix is not part of it: syncing a prefix of a pair synced before is the same rule
/// (one ledger per pair; a bucket belongs to one pairing only).
fn rule_name(src: &Side, dst: &Side, endpoints: &toml::Table) -> String {
    // A named endpoint by its name; an s3:// one by what it points at (its URL, or AWS and
    // the region), since its name is the same for every s3:// side.
    let id = |side: &Side| {
        if !side.s3_url {
            return side.endpoint.clone();
        }
        let e = endpoints.get(&side.endpoint).and_then(|e| e.as_table());
        let url = e.and_then(|e| e.get("url")).and_then(|u| u.as_str());
        let region = e.and_then(|e| e.get("region")).and_then(|r| r.as_str());
        match (url, region) {
            (Some(url), _) => format!("s3+{}", url.trim_end_matches('/').to_ascii_lowercase()),
            (None, region) => format!("s3+aws:{}", region.unwrap_or_default()),
        }
    };
    let spec = format!("{}:{} {}:{}", id(src), src.bucket, id(dst), dst.bucket);
    let hash = xxhash_rust::xxh3::xxh3_64(spec.as_bytes());
    let readable: String = format!("sync-{}-{}", src.bucket, dst.bucket)
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(54)
        .collect();
    format!("{readable}-{:08x}", hash as u32)
}

/// Builds the config: the file's `[redis]` and endpoints, and one rule from the arguments.
/// A bad flag value is reported under the flag's name.
fn build_config(args: &SyncArgs) -> Result<(Config, String), Failure> {
    let (src, dst) = sides(args)?;
    let File {
        found,
        text,
        mut table,
        added,
    } = endpoints(args, &src, &dst)?;
    let name = rule_name(&src, &dst, &added);
    let rule = rule_table(args, &name, &src, &dst);
    table.insert("rules".into(), toml::Value::Array(vec![rule.into()]));
    if let Some(url) = &args.redis {
        let redis = table
            .entry("redis")
            .or_insert_with(|| toml::Table::new().into());
        if let Some(r) = redis.as_table_mut() {
            r.insert("url".into(), url.clone().into());
        }
    }
    let path = found
        .as_ref()
        .map_or_else(|| "no config file".to_string(), |p| p.display().to_string());
    let config = parse_built(&table, &name, &path)?;
    if let Some(found) = &found {
        ferry_core::config::warn_if_exposed(found, &text);
    }
    if let Some(redis) = &config.redis {
        redis.remember_passwords();
    }
    Ok((config, name))
}

/// SRC and DST, parsed; a destination prefix must be empty or the source's.
fn sides(args: &SyncArgs) -> Result<(Side, Side), Failure> {
    let src = parse_side("SRC", &args.src);
    let dst = parse_side("DST", &args.dst);
    let (src, dst) = match (src, dst) {
        (Ok(s), Ok(d)) => (s, d),
        (s, d) => {
            return Err(config_error(
                [s.err(), d.err()].into_iter().flatten().collect(),
            ));
        }
    };
    if !dst.prefix.is_empty() && dst.prefix != src.prefix {
        return Err(config_error(vec![problem(
            "DST",
            format!(
                "prefix {:?} differs from the source's {:?}: ferry copies keys under the same names, so a destination prefix must be empty or the source's",
                dst.prefix, src.prefix
            ),
        )]));
    }
    Ok((src, dst))
}

/// The config file as read (or none), as a table with every side's endpoint in it, and the
/// endpoints added to it (s3:// sides, rclone remotes).
struct File {
    found: Option<PathBuf>,
    text: String,
    table: toml::Table,
    added: toml::Table,
}

/// Reads the config file where one is needed or there, and adds the endpoints of the sides
/// it does not name: an s3:// side's (from the environment and flags), an rclone remote's.
fn endpoints(args: &SyncArgs, src: &Side, dst: &Side) -> Result<File, Failure> {
    // Each named side's rclone remote, looked up once: `None` when rclone's config has no
    // such remote (or there is no rclone config).
    let rclone = crate::remote::rclone_config_path();
    let remote = |side: &Side| -> Option<Result<toml::Table, Problem>> {
        let path = rclone.as_deref().filter(|_| !side.s3_url)?;
        crate::remote::rclone_remote(path, &side.endpoint).transpose()
    };
    let remotes = [remote(src), remote(dst)];
    // The config file: needed for endpoints named in it, and read when it is there for its
    // [redis]; s3:// sides and rclone remotes (usable or not: rclone's to speak of) need none.
    let needs_file = args.config.is_some()
        || [src, dst]
            .iter()
            .zip(&remotes)
            .any(|(side, remote)| !side.s3_url && remote.is_none());
    let found = match config_path(args.config.as_deref()) {
        Ok(path) => Some(path),
        Err(e) if needs_file => return Err(e),
        Err(_) => None,
    };
    let (path, text) = match &found {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|e| {
                config_error(vec![problem(
                    &path.display().to_string(),
                    format!("cannot read the config file: {e}"),
                )])
            })?,
        ),
        None => ("no config file".to_string(), String::new()),
    };
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        config_error(vec![problem(&path, e.message().to_string())])
    })?;
    let known: Vec<String> = table
        .get("endpoints")
        .and_then(|e| e.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    let mut added = toml::Table::new();
    let mut missing = Vec::new();
    let flags = |side: &str| match side {
        "SRC" => crate::remote::SideFlags {
            endpoint: args.src_endpoint.clone(),
            profile: args.src_profile.clone(),
            region: args.src_region.clone(),
        },
        _ => crate::remote::SideFlags {
            endpoint: args.dst_endpoint.clone(),
            profile: args.dst_profile.clone(),
            region: args.dst_region.clone(),
        },
    };
    for ((arg, side), remote) in [("SRC", src), ("DST", dst)].into_iter().zip(remotes) {
        let flags = flags(arg);
        let lower = arg.to_ascii_lowercase();
        if side.s3_url {
            match crate::remote::s3_url_endpoint(&lower, &flags) {
                Ok(endpoint) => {
                    added.insert(side.endpoint.clone(), endpoint.into());
                }
                Err(p) => missing.push(p),
            }
            continue;
        }
        if let Some(flag) = flags.given() {
            missing.push(problem(
                &format!("--{lower}-{flag}"),
                format!(
                    "applies to an s3:// {arg} only; {arg} names endpoint {:?}, whose settings are its own",
                    side.endpoint
                ),
            ));
        }
        if known.contains(&side.endpoint) {
            continue;
        }
        match remote {
            Some(Ok(endpoint)) => {
                added.insert(side.endpoint.clone(), endpoint.into());
            }
            Some(Err(p)) => missing.push(p),
            None => missing.push(problem(
                arg,
                format!(
                    "no endpoint {:?} in {path} (endpoints: {}), and no rclone remote of that name ({})",
                    side.endpoint,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                    match &rclone {
                        Some(p) => format!("rclone config: {}", p.display()),
                        None => "no rclone config".into(),
                    }
                ),
            )),
        }
    }
    if !missing.is_empty() {
        return Err(config_error(missing));
    }
    if !added.is_empty() {
        let endpoints = table
            .entry("endpoints")
            .or_insert_with(|| toml::Table::new().into());
        if let Some(e) = endpoints.as_table_mut() {
            e.extend(added.clone());
        }
    }
    Ok(File {
        found,
        text,
        table,
        added,
    })
}

/// The rule, as the config file would have it, from SRC, DST and the flags.
fn rule_table(args: &SyncArgs, name: &str, src: &Side, dst: &Side) -> toml::Table {
    let mut rule = toml::Table::new();
    rule.insert("name".into(), name.into());
    let mut source = toml::Table::new();
    source.insert("endpoint".into(), src.endpoint.clone().into());
    source.insert("bucket".into(), src.bucket.clone().into());
    if !src.prefix.is_empty() {
        source.insert(
            "prefixes".into(),
            toml::Value::Array(vec![src.prefix.clone().into()]),
        );
    }
    let mut destination = toml::Table::new();
    destination.insert("endpoint".into(), dst.endpoint.clone().into());
    destination.insert("bucket".into(), dst.bucket.clone().into());
    if let Some(class) = &args.storage_class {
        destination.insert("storage_class".into(), class.clone().into());
    }
    rule.insert("source".into(), source.into());
    rule.insert("destination".into(), destination.into());
    // `--once` is the default (and conflicts with `--stop`).
    let stop = args.stop.clone().unwrap_or_else(|| "once".into());
    rule.insert("stop".into(), stop.into());
    if let Some(i) = &args.interval {
        rule.insert("interval".into(), i.clone().into());
    }
    if let Some(o) = &args.overwrite {
        rule.insert("overwrite".into(), o.clone().into());
    }
    for (field, globs) in [("include", &args.include), ("exclude", &args.exclude)] {
        if !globs.is_empty() {
            let list: Vec<toml::Value> = globs.iter().map(|g| g.clone().into()).collect();
            rule.insert(field.into(), toml::Value::Array(list));
        }
    }
    for (field, value) in [
        ("multipart_threshold", &args.multipart_threshold),
        ("part_size", &args.part_size),
        ("min_size", &args.min_size),
        ("max_size", &args.max_size),
        ("min_age", &args.min_age),
        ("max_age", &args.max_age),
    ] {
        if let Some(v) = value {
            rule.insert(field.into(), v.clone().into());
        }
    }
    rule.insert(
        "overwrite_unmanaged".into(),
        args.overwrite_unmanaged.into(),
    );
    rule.insert("delete".into(), args.delete.into());
    rule
}

/// Parses and validates the built config as the config file is; a problem in the rule is
/// reported under the flag it came from, one in the file under the file's name.
fn parse_built(table: &toml::Table, name: &str, path: &str) -> Result<Config, Failure> {
    let rendered = toml::to_string(table).map_err(|e| Failure::Runtime(e.into()))?;
    let rule_at = format!("rules[0] ({name}).");
    Config::from_toml(&rendered).map_err(|e| {
        config_error(
            e.problems
                .into_iter()
                .map(|p| match p.path.strip_prefix(&rule_at) {
                    // A rule field came from a flag: name the flag.
                    Some(field) => {
                        let field = field.rsplit('.').next().unwrap_or(field);
                        let field = field.split('[').next().unwrap_or(field);
                        Problem {
                            path: format!("--{}", field.replace('_', "-")),
                            message: p.message,
                        }
                    }
                    None => Problem {
                        path: format!("{} ({path})", p.path),
                        message: p.message,
                    },
                })
                .collect(),
        )
    })
}

/// What one sync did, as `--json` prints it.
#[derive(Debug, Default, Serialize)]
struct Summary {
    rule: String,
    backend: &'static str,
    iterations: u64,
    listed: u64,
    /// Every listed object not copied, whatever the reason: the sum of `skipped_by`.
    skipped: u64,
    /// Why: `unchanged`, `destination_newer`, `unmanaged` (ferry did not write it, and it
    /// differs), `overwrite_never`, `archived` (not restored).
    skipped_by: BTreeMap<&'static str, u64>,
    copied: u64,
    bytes: u64,
    deleted: u64,
    failed: u64,
    seconds: f64,
    /// A signal stopped the sync before it was done (it exits 130 or 143).
    interrupted: bool,
    failures: Vec<FailedObject>,
    /// The source keys found archived and not restored (up to 10,000 per iteration).
    archived_keys: Vec<String>,
}

#[derive(Debug, Serialize)]
struct FailedObject {
    key: String,
    error: String,
    attempts: u32,
}

pub(crate) async fn run(args: SyncArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let (config, rule) = build_config(&args)?;
    if args.concurrency == 0 {
        return Err(config_error(vec![problem(
            "--concurrency",
            "must be at least 1",
        )]));
    }
    let timeouts = args.s3.timeouts()?;
    let trust = args.s3.trust()?;
    let shutdown = crate::shutdown::on_signal();
    let Some(queue) = open(&args, &config, &shutdown).await? else {
        return unless_interrupted();
    };
    let config = Arc::new(config);
    let stores = Stores::connect(&config, timeouts, &trust)
        .await
        .with_limits(&config, Arc::new(queue.clone()));
    let rule_cfg = config.rules[0].clone();
    let coordinator = ferry_coordinator::Context {
        config: config.clone(),
        stores: stores.clone(),
        queue: Arc::new(queue.clone()),
        cancel: shutdown.clone(),
        id: startup::default_process_id(),
        leader_lease: Duration::from_secs(30),
        max_outstanding: 50_000,
    };
    // A pair is registered (and its buckets claimed) only once both buckets answered: a
    // typo in a bucket's name must not claim the other bucket for good. A pair registered
    // before has answered already, and its rerun lists nothing more than it needs.
    let registered = queue
        .registered_rules()
        .await
        .context("reading the registered pairs")?
        .iter()
        .any(|r| r.rule == rule);
    if !registered {
        answers_a_listing(&stores, &rule_cfg).await?;
    }
    if args.dry_run {
        startup::register(&config, &queue, Role::Worker).await?;
        return dry_run(&args, &coordinator, &rule_cfg).await;
    }
    startup::register(&config, &queue, Role::Coordinator { replace: false }).await?;

    // The iterations this run works on: one left running (resumed), and all after it.
    let first = match queue
        .latest_iteration(&rule)
        .await
        .context("reading the rule")?
    {
        Some(r) if r.is_running() => r.number,
        Some(r) => r.number + 1,
        None => 1,
    };
    let options = ferry_worker::WorkerOptions {
        id: startup::default_process_id(),
        concurrency: args.concurrency,
        lease: ferry_queue::DEFAULT_LEASE,
        drain: Duration::from_secs(20),
        part_concurrency: ferry_worker::DEFAULT_PART_CONCURRENCY.min(args.concurrency),
    };
    let workers = Workers::start(&config, &stores, &queue, vec![options], &shutdown);
    let progress_stop = tokio_util::sync::CancellationToken::new();
    let progress = tokio::spawn(show_progress(
        queue.clone(),
        rule.clone(),
        first,
        Display::choose(&args),
        progress_stop.clone(),
    ));
    let result = ferry_coordinator::run(coordinator).await;
    let worker_result = workers.stop().await;
    progress_stop.cancel();
    if let Err(e) = progress.await
        && e.is_panic()
    {
        tracing::warn!(error = %e, "the progress display panicked");
    }
    let mut summary = summarize(&queue, &rule, first).await?;
    summary.seconds = started.elapsed().as_secs_f64();
    finish(&args, &queue, summary, worker_result, result)
}

/// Reports what the sync did, and how it ended: interrupted (exit 128 + signal), with
/// failed objects, or done.
fn finish(
    args: &SyncArgs,
    queue: &Queue,
    mut summary: Summary,
    worker_result: Result<(), Failure>,
    result: Result<(), ferry_coordinator::CoordinatorError>,
) -> Result<(), Failure> {
    summary.backend = if queue.is_embedded() {
        "embedded"
    } else {
        "redis"
    };
    summary.interrupted = crate::shutdown::received().is_some();
    report(args, &summary)?;
    if summary.interrupted && !args.json {
        eprintln!(
            "interrupted after {} object(s) ({}); run the same command to resume",
            summary.copied,
            bytes(summary.bytes)
        );
    }
    worker_result?;
    unless_interrupted()?;
    match result {
        Ok(()) if summary.failed == 0 => Ok(()),
        Ok(()) | Err(ferry_coordinator::CoordinatorError::Rules(_)) if summary.failed > 0 => {
            Err(Failure::Runtime(anyhow::anyhow!(
                "{} object(s) failed (listed above); `ferry dead-letters retry` puts them back, or run the sync again",
                summary.failed
            )))
        }
        Ok(()) => Ok(()),
        Err(ferry_coordinator::CoordinatorError::Cancelled) => Err(Failure::Runtime(
            anyhow::anyhow!("interrupted; run the same sync again to resume"),
        )),
        Err(e) => Err(Failure::Runtime(
            anyhow::Error::new(e).context("sync failed"),
        )),
    }
}

/// The queue: Redis, checked to answer at once (then ridden out), or the embedded one in the
/// state dir; `None` when a signal came first.
async fn open(
    args: &SyncArgs,
    config: &Config,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<Option<Queue>, Failure> {
    let stop = startup::hard_stop(shutdown, Duration::from_secs(20));
    let state_dir = state_dir(args.state_dir.as_deref())?;
    if config.redis.is_some() {
        redis_answers(config, &state_dir).await?;
    }
    tokio::select! {
        queue = startup::open_queue(config, Persistence::RideOut(stop), &state_dir) => queue.map(Some),
        _ = shutdown.cancelled() => Ok(None),
    }
}

/// Both buckets of `rule` answer a listing (one page of at most 1,000 keys); else which one
/// did not, and why, as an error that stops the sync before anything is registered.
/// A Redis that is down or refuses ferry when `sync` starts is a fact to report, not an
/// outage to wait out: one attempt (within the connect timeout) and one command say why.
/// Once running, the queue rides outages out.
async fn redis_answers(config: &Config, state_dir: &Path) -> Result<(), Failure> {
    let answered = match startup::open_queue(config, Persistence::FailFast, state_dir).await {
        Ok(queue) => queue
            .registered_rules()
            .await
            .map(drop)
            .map_err(|e| Failure::Runtime(anyhow::Error::new(e).context("reading the queue"))),
        Err(e) => Err(e),
    };
    answered.map_err(|e| match e {
        // A refusal (a password, an ACL) keeps its own words and exit code.
        Failure::Runtime(e) if crate::failure::refused(&e).is_none() => {
            Failure::Runtime(anyhow::anyhow!(
                "{e:#}; `sync` uses the Redis of the config's [redis] section (or --redis): \
             start it, or leave [redis] out to keep the queue in the state dir"
            ))
        }
        other => other,
    })
}

async fn answers_a_listing(
    stores: &Stores,
    rule: &ferry_core::config::Rule,
) -> Result<(), Failure> {
    let first_prefix = rule.source.prefixes.first().map_or("", String::as_str);
    let (from, to) = (stores.source(rule), stores.destination(rule));
    let (source, destination) = tokio::join!(
        from.list_page(&rule.source.bucket, first_prefix, None, None),
        to.list_page(&rule.destination.bucket, "", None, None),
    );
    for (what, side, bucket, answer) in [
        (
            "SRC",
            &rule.source.endpoint,
            &rule.source.bucket,
            source.err(),
        ),
        (
            "DST",
            &rule.destination.endpoint,
            &rule.destination.bucket,
            destination.err(),
        ),
    ] {
        if let Some(e) = answer {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "{what} {side}:{bucket} cannot be listed, so nothing was registered or copied: {e}"
            )));
        }
    }
    Ok(())
}

async fn dry_run(
    args: &SyncArgs,
    ctx: &ferry_coordinator::Context,
    rule: &ferry_core::config::Rule,
) -> Result<(), Failure> {
    let json = args.json;
    let found = ferry_coordinator::dry_run(ctx, rule, |task| {
        if json {
            return;
        }
        match task {
            Task::DeleteObject { key, .. } => println!("would delete {key}"),
            other => println!("would copy {} ({} bytes)", other.key(), other.bytes()),
        }
    })
    .await
    .map_err(|e| Failure::Runtime(anyhow::Error::new(e).context("dry run failed")))?;
    if json {
        let value = serde_json::json!({
            "rule": rule.name,
            "dry_run": true,
            "listed": found.listed,
            "skipped": found.skipped,
            "skipped_by": found.skipped_by.iter().map(|(c, n)| (c.as_str(), *n)).collect::<BTreeMap<_, _>>(),
            "would_copy": found.copies,
            "would_copy_bytes": found.copy_bytes,
            "would_delete": found.deletes,
        });
        println!("{value}");
    } else {
        println!(
            "dry run: {} listed, {} would be copied ({} bytes), {} deleted, {} skipped{}; nothing was changed",
            found.listed,
            found.copies,
            found.copy_bytes,
            found.deletes,
            found.skipped,
            skip_reasons(
                &found
                    .skipped_by
                    .iter()
                    .map(|(c, n)| (c.as_str(), *n))
                    .collect()
            )
        );
    }
    Ok(())
}

/// Adds up the iterations from `first` on, whole (a resumed one counts what the runs before
/// did in it too), the one still running included when a signal stopped this run; and lists
/// their dead letters.
async fn summarize(queue: &Queue, rule: &str, first: u64) -> Result<Summary, Failure> {
    let mut records = queue
        .history(rule)
        .await
        .context("reading the iterations")?;
    if let Some(latest) = queue
        .latest_iteration(rule)
        .await
        .context("reading the rule")?
        && !records.iter().any(|r| r.number == latest.number)
    {
        records.push(latest);
    }
    let mut summary = Summary {
        rule: rule.to_string(),
        ..Summary::default()
    };
    let mut by: BTreeMap<&'static str, u64> = IterationRecord::default().skipped_by_reason();
    for r in records.iter().filter(|r| r.number >= first) {
        if r.archived > 0 {
            summary.archived_keys.extend(
                queue
                    .archived_keys(rule, r.number)
                    .await
                    .context("reading the archived keys")?,
            );
        }
        summary.iterations += 1;
        summary.listed += r.listed;
        for (reason, n) in r.skipped_by_reason() {
            *by.entry(reason).or_default() += n;
        }

        summary.copied += r.copied;
        summary.bytes += r.copied_bytes;
        summary.deleted += r.deleted;
    }
    let dead: Vec<DeadLetter> = queue
        .dead_letters(rule)
        .await
        .context("reading dead letters")?;
    summary.failures = dead
        .into_iter()
        .filter(|d| TaskId::parse(&d.id).is_some_and(|id| id.iteration() >= first))
        .map(|d| FailedObject {
            key: d.key.unwrap_or_else(|| format!("(task {})", d.id)),
            error: d.error,
            attempts: d.attempts,
        })
        .collect();
    summary.failed = summary.failures.len() as u64;
    summary.skipped = by.values().sum();
    summary.skipped_by = by;
    Ok(summary)
}

/// Failed and archived keys named on screen; `--json` has them all.
const SHOWN_KEYS: usize = 20;

fn report(args: &SyncArgs, s: &Summary) -> Result<(), Failure> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string(s).context("encoding the summary")?
        );
        return Ok(());
    }
    for f in s.failures.iter().take(SHOWN_KEYS) {
        eprintln!("failed: {} ({} attempts): {}", f.key, f.attempts, f.error);
    }
    if s.failures.len() > SHOWN_KEYS {
        eprintln!(
            "failed: ... and {} more (all in --json, and in ferry dead-letters list)",
            s.failures.len() - SHOWN_KEYS
        );
    }
    eprintln!(
        "{}: {} listed, {} copied ({}), {} skipped{}, {} deleted, {} failed in {:.1}s ({} iteration(s), {} queue)",
        s.rule,
        s.listed,
        s.copied,
        bytes(s.bytes),
        s.skipped,
        skip_reasons(&s.skipped_by),
        s.deleted,
        s.failed,
        s.seconds,
        s.iterations,
        s.backend
    );
    let unmanaged = s.skipped_by.get("unmanaged").copied().unwrap_or(0);
    if unmanaged > 0 {
        eprintln!(
            "{unmanaged} destination object(s) were not written by ferry and differ from the \
             source, so they were left as they are; --overwrite-unmanaged replaces them (as \
             --overwrite allows)"
        );
    }
    let archived = s.skipped_by.get("archived").copied().unwrap_or(0);
    if archived > 0 {
        eprintln!(
            "{archived} source object(s) are archived and not restored, so they could not be \
             read; restore them, and the next run copies them"
        );
        for key in s.archived_keys.iter().take(SHOWN_KEYS) {
            eprintln!("archived: {key}");
        }
        if s.archived_keys.len() > SHOWN_KEYS {
            eprintln!(
                "archived: ... and {} more (all in --json)",
                archived as usize - SHOWN_KEYS
            );
        }
    }
    Ok(())
}

/// ` (N unchanged, M unmanaged, ...)`, the reasons that counted any, or nothing.
fn skip_reasons(by: &BTreeMap<&'static str, u64>) -> String {
    let said: Vec<String> = by
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{n} {}", reason.replace('_', " ")))
        .collect();
    if said.is_empty() {
        String::new()
    } else {
        format!(" ({})", said.join(", "))
    }
}

/// How progress is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Display {
    /// A bar redrawn in place (stderr is a terminal).
    Bar,
    /// A line every few seconds (stderr is a file or pipe).
    Lines,
    None,
}

impl Display {
    fn choose(args: &SyncArgs) -> Display {
        if args.no_progress || args.json {
            Display::None
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Lines
        }
    }
}

/// Between plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Shows the current iteration's progress until `stop`: objects and bytes done of those
/// planned so far, rate, ETA.
async fn show_progress(
    queue: Queue,
    rule: String,
    first: u64,
    display: Display,
    stop: tokio_util::sync::CancellationToken,
) {
    if display == Display::None {
        return;
    }
    let bar = (display == Display::Bar).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let started = Instant::now();
    let mut last_line = Instant::now();
    loop {
        let record = queue.latest_iteration(&rule).await.ok().flatten();
        if let Some(r) = record.filter(|r| r.number >= first) {
            let done_bytes = r.copied_bytes;
            let objects = format!(
                "{}/{} objects{}",
                r.done + r.dead,
                r.planned,
                if r.sealed { "" } else { " (listing)" }
            );
            match &bar {
                Some(bar) => {
                    bar.set_length(r.planned_bytes.max(done_bytes));
                    bar.set_position(done_bytes);
                    bar.set_message(format!("iteration {} {objects}", r.number));
                }
                None if last_line.elapsed() >= LINE_EVERY => {
                    last_line = Instant::now();
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    eprintln!(
                        "progress: iteration {}, {objects}, {} of {} copied, {:.0} objects/s",
                        r.number,
                        bytes(done_bytes),
                        bytes(r.planned_bytes),
                        r.done as f64 / secs
                    );
                }
                None => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.cancelled() => break,
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_parse_endpoint_bucket_and_a_directory_prefix() {
        assert_eq!(
            parse_side("SRC", "east:photos/2024").unwrap(),
            Side {
                endpoint: "east".into(),
                bucket: "photos".into(),
                prefix: "2024/".into(),
                s3_url: false,
            }
        );
        assert_eq!(parse_side("SRC", "east:photos").unwrap().prefix, "");
        assert_eq!(parse_side("SRC", "east:photos/a/").unwrap().prefix, "a/");
        for bad in ["photos", ":photos", "east:", "east:/x"] {
            let p = parse_side("SRC", bad).unwrap_err();
            assert_eq!(p.path, "SRC");
            assert!(p.message.contains(bad), "{}", p.message);
        }
    }

    #[test]
    fn rule_names_are_valid_stable_and_tell_pairs_apart() {
        let side = |e: &str, b: &str, p: &str| Side {
            endpoint: e.into(),
            bucket: b.into(),
            prefix: p.into(),
            s3_url: false,
        };
        let none = toml::Table::new();
        let rule_name = |a: &Side, b: &Side| rule_name(a, b, &none);
        let a = rule_name(&side("east", "photos", ""), &side("west", "photos-dr", ""));
        assert_eq!(
            a,
            rule_name(&side("east", "photos", ""), &side("west", "photos-dr", ""))
        );
        assert!(a.starts_with("sync-photos-photos-dr-"), "{a}");
        let b = rule_name(
            &side("east", "photos", "x/"),
            &side("west", "photos-dr", "x/"),
        );
        assert_eq!(a, b, "a prefix of the pair is the same rule");
        let c = rule_name(&side("east", "photos", ""), &side("north", "photos-dr", ""));
        assert_ne!(a, c);
        let long = rule_name(
            &side("e", &"b".repeat(63), ""),
            &side("w", &"c".repeat(63), ""),
        );
        assert!(long.len() <= 63, "{long}");
        assert!(
            long.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        );
    }

    #[test]
    fn s3_url_sides_are_named_by_what_they_point_at() {
        let side = parse_side("SRC", "s3://photos/2024").unwrap();
        assert_eq!(
            (
                side.endpoint.as_str(),
                side.bucket.as_str(),
                side.prefix.as_str()
            ),
            ("s3-src", "photos", "2024/")
        );
        assert!(side.s3_url);
        assert_eq!(parse_side("DST", "s3://").unwrap_err().path, "DST");
        let dst = parse_side("DST", "s3://photos-dr").unwrap();
        let at = |url: &str| {
            let mut endpoints = toml::Table::new();
            for name in ["s3-src", "s3-dst"] {
                let mut e = toml::Table::new();
                e.insert("url".into(), url.into());
                endpoints.insert(name.into(), e.into());
            }
            rule_name(&side, &dst, &endpoints)
        };
        assert_eq!(at("http://a:9000"), at("http://a:9000/"));
        assert_ne!(at("http://a:9000"), at("http://b:9000"));
    }
}
