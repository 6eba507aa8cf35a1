//! `ferry sync SRC DST`: one rule made from the command line, run to its stop condition in
//! this process, with a progress display and a summary.
//!
//! Endpoints come from the config file (as rclone names remotes); its rules are ignored.
//! Without `[redis]` the queue is the embedded one in `--state-dir`, so a second sync of the
//! same pair copies only what changed. With `[redis]`, the same command run on other machines
//! joins in: the rule's name comes from SRC and DST, so they all serve the same rule, one
//! leading its iterations and all of them copying.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use ferry_core::config::Config;
use ferry_core::task::Task;
use ferry_queue::{Persistence, Queue};
use ferry_storage::Stores;

mod config;
mod progress;
mod summary;

pub(crate) use config::{Line, build_config};
use config::{config_error, problem};
use progress::{Display, show_progress};
pub(crate) use summary::skip_reasons;
use summary::{Summary, report, summarize};

use crate::failure::{Failure, unless_interrupted};
use crate::human::bytes;
use crate::run::Workers;
use crate::startup::{self, Role, S3Args, state_dir};

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
    #[command(flatten)]
    pub(crate) pair: PairArgs,
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
    #[command(flatten)]
    copy: CopyFlags,
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

/// How SRC and DST are reached and which of their keys count: the flags `sync` and `verify`
/// share.
#[derive(Args, Clone, Default)]
pub(crate) struct PairArgs {
    /// For an s3:// SRC: the S3 API's URL [default: AWS_ENDPOINT_URL_S3, else
    /// AWS_ENDPOINT_URL, else AWS's own]. Keys: FERRY_SRC_ACCESS_KEY_ID and
    /// FERRY_SRC_SECRET_ACCESS_KEY, else the AWS credential chain.
    #[arg(
        long,
        env = "FERRY_SRC_ENDPOINT",
        value_name = "URL",
        help_heading = "s3:// sides"
    )]
    pub(crate) src_endpoint: Option<String>,
    /// For an s3:// SRC: a profile of the shared AWS config and credentials files.
    #[arg(
        long,
        env = "FERRY_SRC_PROFILE",
        value_name = "NAME",
        help_heading = "s3:// sides"
    )]
    pub(crate) src_profile: Option<String>,
    /// For an s3:// SRC: the signing region [default: AWS_REGION, else AWS_DEFAULT_REGION,
    /// else the profile's, else us-east-1].
    #[arg(
        long,
        env = "FERRY_SRC_REGION",
        value_name = "REGION",
        help_heading = "s3:// sides"
    )]
    pub(crate) src_region: Option<String>,
    /// For an s3:// DST: the S3 API's URL (as --src-endpoint; keys: FERRY_DST_ACCESS_KEY_ID
    /// and FERRY_DST_SECRET_ACCESS_KEY).
    #[arg(
        long,
        env = "FERRY_DST_ENDPOINT",
        value_name = "URL",
        help_heading = "s3:// sides"
    )]
    pub(crate) dst_endpoint: Option<String>,
    /// For an s3:// DST: a profile of the shared AWS files.
    #[arg(
        long,
        env = "FERRY_DST_PROFILE",
        value_name = "NAME",
        help_heading = "s3:// sides"
    )]
    pub(crate) dst_profile: Option<String>,
    /// For an s3:// DST: the signing region (as --src-region).
    #[arg(
        long,
        env = "FERRY_DST_REGION",
        value_name = "REGION",
        help_heading = "s3:// sides"
    )]
    pub(crate) dst_region: Option<String>,
    /// The config file with the endpoints [default: ./ferry.toml, else
    /// ~/.config/ferry/ferry.toml]. Its rules are ignored.
    #[arg(long, short, env = "FERRY_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Storage class of every copy [default: the source object's].
    #[arg(long, value_name = "CLASS", help_heading = "What is copied")]
    pub(crate) storage_class: Option<String>,
    /// Copy only keys that match GLOB (repeatable; rclone's glob rules, on the key relative
    /// to the prefix: `*.jpg`, `/2024/**`, `{a,b}/*`).
    #[arg(long, value_name = "GLOB", help_heading = "Filters")]
    pub(crate) include: Vec<String>,
    /// Leave out keys that match GLOB (repeatable; wins over --include). Excluded objects
    /// are counted, never copied, and never deleted by --delete.
    #[arg(long, value_name = "GLOB", help_heading = "Filters")]
    pub(crate) exclude: Vec<String>,
    /// Leave out objects smaller than SIZE (e.g. 1MiB).
    #[arg(long, value_name = "SIZE", help_heading = "Filters")]
    pub(crate) min_size: Option<String>,
    /// Leave out objects larger than SIZE.
    #[arg(long, value_name = "SIZE", help_heading = "Filters")]
    pub(crate) max_size: Option<String>,
    /// Leave out objects modified more recently than DURATION ago (e.g. 1h).
    #[arg(long, value_name = "DURATION", help_heading = "Filters")]
    pub(crate) min_age: Option<String>,
    /// Leave out objects modified longer than DURATION ago (e.g. 7d).
    #[arg(long, value_name = "DURATION", help_heading = "Filters")]
    pub(crate) max_age: Option<String>,
}

impl PairArgs {
    /// The first flag given that only a SRC DST pairing takes.
    pub(crate) fn given(&self) -> Option<&'static str> {
        let named = [
            ("--src-endpoint", self.src_endpoint.is_some()),
            ("--src-profile", self.src_profile.is_some()),
            ("--src-region", self.src_region.is_some()),
            ("--dst-endpoint", self.dst_endpoint.is_some()),
            ("--dst-profile", self.dst_profile.is_some()),
            ("--dst-region", self.dst_region.is_some()),
            ("--storage-class", self.storage_class.is_some()),
            ("--include", !self.include.is_empty()),
            ("--exclude", !self.exclude.is_empty()),
            ("--min-size", self.min_size.is_some()),
            ("--max-size", self.max_size.is_some()),
            ("--min-age", self.min_age.is_some()),
            ("--max-age", self.max_age.is_some()),
        ];
        named
            .into_iter()
            .find_map(|(flag, given)| given.then_some(flag))
    }
}

/// What `sync` copies, and until when: flags of its own.
#[derive(Args, Clone, Default)]
pub(crate) struct CopyFlags {
    /// When to stop: `once`, `empty:N` (after N iterations in a row that change nothing) or
    /// `never`.
    #[arg(
        long,
        value_name = "WHEN",
        default_value = "once",
        help_heading = "Iterations"
    )]
    pub(crate) stop: Option<String>,
    /// Pause between iterations (with `--stop empty:N` or `never`).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "15m",
        help_heading = "Iterations"
    )]
    pub(crate) interval: Option<String>,
    /// When an existing destination object is replaced.
    #[arg(
        long,
        value_parser = ["never", "if-newer", "if-different", "always"],
        default_value = "if-newer",
        help_heading = "What is copied"
    )]
    pub(crate) overwrite: Option<String>,
    /// Also replace destination objects ferry did not write.
    #[arg(long, help_heading = "What is copied")]
    pub(crate) overwrite_unmanaged: bool,
    /// Delete destination objects ferry wrote whose source is gone.
    #[arg(long, help_heading = "What is copied")]
    pub(crate) delete: bool,
    /// Copy every version and delete marker, oldest first, to a versioned destination
    /// (`versions = "all"`).
    #[arg(long, help_heading = "What is copied")]
    pub(crate) all_versions: bool,
    /// Copy the source as it was at TIME (RFC 3339, e.g. 2026-11-30T12:00:00Z): each key's
    /// version current then, and nothing for a key absent or deleted then.
    #[arg(long, value_name = "TIME", help_heading = "What is copied")]
    pub(crate) at: Option<String>,
    /// Objects at or above SIZE are copied in parts.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "100MiB",
        help_heading = "What is copied"
    )]
    pub(crate) multipart_threshold: Option<String>,
    /// Size of each part.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "50MiB",
        help_heading = "What is copied"
    )]
    pub(crate) part_size: Option<String>,
}

pub(crate) async fn run(args: SyncArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let (mut config, rule) = build_config(&args.line())?;
    // Every iteration's report goes to the state dir: with the embedded queue alone, since
    // with Redis no state dir is used (and whichever machine leads would write it).
    let reports = state_dir(args.state_dir.as_deref())?.join("reports");
    if config.redis.is_none() {
        config.rules[0].report = Some(ferry_core::report::ReportTarget::Dir(reports.clone()));
    }
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
    let config = startup::check_versions(config, &stores, |_, field| match field {
        "at" => "--at".to_string(),
        _ => "--all-versions".to_string(),
    })
    .await?;
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
    registered_or_answering(&queue, &stores, &rule_cfg).await?;
    if args.dry_run {
        startup::register(&config, &queue, Role::Worker).await?;
        return dry_run(&args, &coordinator, &queue, &rule_cfg).await;
    }
    startup::register(&config, &queue, Role::Coordinator { replace: false }).await?;

    let first = first_iteration(&queue, &rule).await?;
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
    let manifest = reports
        .join(ferry_core::report::ReportTarget::iteration_dir(
            &rule,
            summary.last_iteration,
        ))
        .join("manifest.json");
    summary.report = manifest.exists().then(|| manifest.display().to_string());
    finish(&args, &queue, summary, worker_result, result)
}

/// A pair is registered (and its buckets claimed) only once both buckets answered: a typo in
/// a bucket's name must not claim the other bucket for good. A pair registered before has
/// answered already, and its rerun lists nothing more than it needs.
async fn registered_or_answering(
    queue: &ferry_queue::Queue,
    stores: &Stores,
    rule: &ferry_core::config::Rule,
) -> Result<(), Failure> {
    let registered = queue
        .registered_rules()
        .await
        .context("reading the registered pairs")?
        .iter()
        .any(|r| r.rule == rule.name);
    if !registered {
        answers_a_listing(stores, rule).await?;
    }
    Ok(())
}

/// The first iteration this run works on: one left running (resumed), else the next.
async fn first_iteration(queue: &ferry_queue::Queue, rule: &str) -> Result<u64, Failure> {
    Ok(
        match queue
            .latest_iteration(rule)
            .await
            .context("reading the rule")?
        {
            Some(r) if r.is_running() => r.number,
            Some(r) => r.number + 1,
            None => 1,
        },
    )
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

/// The estimate of the pairing's next iteration, with each copy and delete listed (unless
/// `--json`): nothing is changed.
async fn dry_run(
    args: &SyncArgs,
    ctx: &ferry_coordinator::Context,
    queue: &Queue,
    rule: &ferry_core::config::Rule,
) -> Result<(), Failure> {
    let json = args.json;
    let estimate = crate::estimate::estimate(ctx, queue, rule, args.concurrency, |task| {
        if json {
            return;
        }
        match task {
            Task::DeleteObject { key, .. } => println!("would delete {key}"),
            other => println!("would copy {} ({} bytes)", other.key(), other.bytes()),
        }
    })
    .await?;
    crate::estimate::print(&estimate, json);
    if !json {
        println!("dry run: nothing was changed");
    }
    Ok(())
}
