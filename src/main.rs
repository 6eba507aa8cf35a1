//! The `ferry` binary: parses the command line, loads the config, and calls into the crates.
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use ferry_core::config::{BucketRef, Config, ConfigError, Problem, check_pairing};
use ferry_queue::{Persistence, Queue, ViewQueue};
use ferry_storage::{CA_BUNDLE_VAR, Stores, Timeouts, Trust};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

mod forget;
mod init;
mod probe;
mod queues;
mod remote;
mod shutdown;
mod status;
mod sync;

const EXAMPLES: &str = "\
Examples:
  ferry sync s3://photos s3://photos-dr --dst-endpoint http://127.0.0.1:9000
                      one bucket to another, credentials from the AWS environment
  ferry sync minio:photos aws:photos-dr
                      endpoints named in ./ferry.toml, or rclone remotes of type s3
  ferry sync east:photos/2024 west:photos-dr --stop never --interval 15m
                      a prefix, again every 15 minutes until stopped
  ferry init          a commented ferry.toml to start from
  ferry run --config ferry.toml
                      the rules of a config file, coordinator and worker in one process
  ferry status        what each rule is doing, from the state dir or Redis";

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Incremental, distributed replication between S3-compatible buckets",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

/// How much is logged, and how (every command).
#[derive(Args)]
struct LogArgs {
    /// More log lines: -v for info (sync and probe show warnings and errors alone by
    /// default), -vv for debug. `RUST_LOG` (e.g. `RUST_LOG=ferry=debug`) overrides both.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Errors alone (and a command's own output, such as sync's summary).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Log lines as text, or as one JSON object each (for log collectors).
    #[arg(long, global = true, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text, env = "FERRY_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl LogArgs {
    /// The filter for `command`, unless `RUST_LOG` gives one.
    fn level(&self, quiet_by_default: bool) -> &'static str {
        // The AWS SDK's own warnings (a credentials provider that found nothing, with its
        // error's structure dumped) come with -vv: ferry says what failed, once, in words.
        match (self.quiet, self.verbose, quiet_by_default) {
            (true, _, _) => "error",
            (false, 0, true) => "warn,aws_config=error,aws_smithy_runtime=error",
            (false, 0, false) | (false, 1, _) => "info,aws_config=error,aws_smithy_runtime=error",
            (false, _, _) => "debug",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Copy SRC to DST (ENDPOINT:BUCKET[/PREFIX] with endpoints from the config file or
    /// rclone's, or s3://BUCKET[/PREFIX]) in this process, with a progress display; a second
    /// run copies only what changed.
    Sync(Box<sync::SyncArgs>),
    /// Write a commented starter config (ferry.toml, readable by you alone).
    Init(init::InitArgs),
    /// Check a config file and print every problem found.
    Validate(Common),
    /// Plan iterations: list, diff and enqueue copy tasks for every rule.
    Coordinator {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Claim and copy tasks.
    Worker {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
    /// Per rule: state, current iteration, last iterations, queue depth and lag.
    Status {
        #[command(flatten)]
        common: Common,
        /// Only this rule.
        rule: Option<String>,
        /// Print JSON instead of columns.
        #[arg(long)]
        json: bool,
    },
    /// Per rule and shard: pending, leased (by which workers), retrying, dead, the oldest
    /// pending task's age, the last minute's throughput; and the workers, live and dead.
    Queues {
        #[command(flatten)]
        common: Common,
        /// Only this rule.
        rule: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// Refresh every 2 seconds, in place, until interrupted.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// List, retry (back on their queues) or purge the tasks in dead letters.
    DeadLetters {
        #[command(flatten)]
        common: Common,
        /// What to do.
        #[arg(value_enum)]
        action: DeadAction,
        /// Only this rule.
        rule: Option<String>,
        /// With `list`: print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What a store does and does not do, measured with a few small objects under
    /// `.ferry-probe/` (removed after), and what ferry does about each answer.
    Probe(Box<probe::ProbeArgs>),
    /// Drop a pairing (its ledger, queues and history; the objects stay), so that its
    /// buckets may be paired again. Stop the processes that run it first.
    Forget(Box<forget::ForgetArgs>),
    /// Coordinator and workers in one process.
    Run {
        #[command(flatten)]
        common: Common,
        /// Worker loops in this process.
        #[arg(long, env = "FERRY_WORKERS", value_name = "N", default_value_t = 1)]
        workers: usize,
        #[command(flatten)]
        coordinator: CoordinatorArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        s3: S3Args,
        #[command(flatten)]
        metrics: MetricsArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeadAction {
    /// Show each dead task with its key, error and attempts.
    List,
    /// Put every dead task back on its queue, attempts reset.
    Retry,
    /// Delete every dead task.
    Purge,
}

#[derive(Args)]
struct Common {
    /// The config file (TOML) [default: ./ferry.toml, else ~/.config/ferry/ferry.toml].
    #[arg(long, short, env = "FERRY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Redis URL; overrides `[redis] url` in the config.
    #[arg(
        long,
        env = "FERRY_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    redis: Option<String>,
    /// With no `[redis]`: where the embedded queue keeps its state [default:
    /// ~/.local/state/ferry]. One process at a time may use it.
    #[arg(long, env = "FERRY_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Args)]
struct CoordinatorArgs {
    /// Coordinator name in leader leases (default: host-pid).
    #[arg(long, env = "FERRY_COORDINATOR_ID", value_name = "NAME")]
    coordinator_id: Option<String>,
    /// Lease on leading a rule; a standby coordinator takes over this long after a leader dies.
    #[arg(long, env = "FERRY_LEADER_LEASE", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    leader_lease: Duration,
    /// Unfinished tasks per rule before planning pauses for workers to catch up.
    #[arg(long, env = "FERRY_MAX_OUTSTANDING", value_name = "N", default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_outstanding: u64,
    /// Take over rule names registered in Redis with other buckets, forgetting everything
    /// the old pairing left there (its queues, ledger and history).
    #[arg(long, env = "FERRY_REPLACE_RULE")]
    replace_rule: bool,
    /// Serve `POST http://ADDR/events/RULE` for rules with `events = { webhook = true }`.
    #[arg(long, env = "FERRY_EVENTS_LISTEN", value_name = "ADDR")]
    events_listen: Option<SocketAddr>,
    /// Let a webhook rule without `events_token_env` listen beyond loopback: anyone who
    /// reaches the port can then send it events.
    #[arg(long, env = "FERRY_EVENTS_INSECURE_NO_TOKEN")]
    events_insecure_no_token: bool,
}

impl CoordinatorArgs {
    /// The webhook refuses to run open: on an address beyond loopback, every webhook rule
    /// needs a token, unless the operator says otherwise.
    fn check_open(&self, config: &Config) -> Result<(), Failure> {
        let Some(addr) = self.events_listen else {
            return Ok(());
        };
        if addr.ip().is_loopback() || self.events_insecure_no_token {
            return Ok(());
        }
        let problems: Vec<Problem> = config
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.webhook().is_some() && r.events_token.is_none())
            .map(|(i, r)| Problem {
                path: format!("rules[{i}].events_token_env"),
                message: format!(
                    "rule {} takes webhook events on --events-listen {addr}, beyond loopback, \
                     with no token: anyone who reaches the port could send it events. Set \
                     events_token_env, listen on 127.0.0.1, or pass --events-insecure-no-token",
                    r.name
                ),
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Failure::Config(ConfigError { problems }))
        }
    }
}

#[derive(Args)]
struct WorkerArgs {
    /// Tasks copied at once.
    #[arg(
        long,
        env = "FERRY_CONCURRENCY",
        value_name = "N",
        default_value_t = 32
    )]
    concurrency: usize,
    /// Most multipart parts copied at once (within --concurrency), so the parts of one large
    /// object spread over every worker.
    #[arg(long, env = "FERRY_PART_CONCURRENCY", value_name = "N", default_value_t = ferry_worker::DEFAULT_PART_CONCURRENCY)]
    part_concurrency: usize,
    /// Worker name (default: host-pid). Must be unique among live workers.
    #[arg(long, env = "FERRY_WORKER_ID", value_name = "NAME")]
    id: Option<String>,
    /// Lease on a claimed task; renewed every third of it.
    #[arg(long, env = "FERRY_LEASE", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    lease: Duration,
    /// On SIGTERM, how long in-flight tasks may finish before they are released.
    #[arg(long, env = "FERRY_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "20s")]
    drain_timeout: Duration,
}

/// Timeouts for S3 requests, made to fit slow links: a slow transfer that keeps moving is
/// never cut off; a silent one is.
#[derive(Args)]
struct S3Args {
    /// Time to set up a connection to an S3 endpoint.
    #[arg(long, env = "FERRY_S3_CONNECT_TIMEOUT", value_name = "DURATION", help_heading = "Connections", value_parser = humantime::parse_duration, default_value = "10s")]
    s3_connect_timeout: Duration,
    /// Time to the first byte of an answer: for requests without a body, and for uploads once
    /// their body is sent.
    #[arg(long, env = "FERRY_S3_FIRST_BYTE_TIMEOUT", value_name = "DURATION", help_heading = "Connections", value_parser = humantime::parse_duration, default_value = "60s")]
    s3_first_byte_timeout: Duration,
    /// Longest time an upload may make no progress at all (not a cap on its total time).
    #[arg(long, env = "FERRY_S3_IDLE_TIMEOUT", value_name = "DURATION", help_heading = "Connections", value_parser = humantime::parse_duration, default_value = "60s")]
    s3_idle_timeout: Duration,
}

impl S3Args {
    fn timeouts(&self) -> Result<Timeouts, Failure> {
        for (flag, value) in [
            ("--s3-connect-timeout", self.s3_connect_timeout),
            ("--s3-first-byte-timeout", self.s3_first_byte_timeout),
            ("--s3-idle-timeout", self.s3_idle_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(Failure::Config(ConfigError {
                    problems: vec![Problem {
                        path: flag.into(),
                        message: format!("{value:?} is too short (at least 100ms)"),
                    }],
                }));
            }
        }
        Ok(Timeouts {
            connect: self.s3_connect_timeout,
            first_byte: self.s3_first_byte_timeout,
            idle: self.s3_idle_timeout,
        })
    }

    /// The certificate authorities HTTPS endpoints are checked against: the system's, plus
    /// `AWS_CA_BUNDLE`'s. A bundle that cannot be used stops ferry before it connects.
    fn trust(&self) -> Result<Trust, Failure> {
        let trust = Trust::from_env().map_err(|e| {
            Failure::Config(ConfigError {
                problems: vec![Problem {
                    path: e.named.into(),
                    message: format!("{}: {}", e.path.display(), e.reason),
                }],
            })
        })?;
        if let Some(bundle) = trust.bundle() {
            info!(bundle = %bundle.display(),
                "trusting the certificate authorities of {CA_BUNDLE_VAR} besides the system's");
        }
        Ok(trust)
    }
}

#[derive(Args)]
struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "FERRY_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

/// A failure and the exit code it maps to.
enum Failure {
    Config(ConfigError),
    Runtime(anyhow::Error),
    /// Stopped by this signal, after draining (its summary already said): exit 128 + signal.
    Interrupted(i32),
}

/// `Err(Interrupted)` when a signal stopped this process, so that `sync` and `run` never
/// report success for work they did not finish.
fn unless_interrupted() -> Result<(), Failure> {
    match crate::shutdown::received() {
        Some(signal) => Err(Failure::Interrupted(signal)),
        None => Ok(()),
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

fn main() -> ExitCode {
    redact_panics();
    let cli = Cli::parse();
    // `sync` draws progress on stderr: only warnings and errors go there besides, unless -v.
    let quiet_by_default = matches!(cli.command, Command::Sync(_) | Command::Probe(_));
    init_logging(cli.log.level(quiet_by_default), cli.log.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The final error goes to stderr once, as a plain line; a JSON log also gets it as a
    // record, for a collector that reads nothing else.
    let json_logs = matches!(cli.log.log_format, LogFormat::Json);
    let log_error = |e: &anyhow::Error| {
        if json_logs {
            error!("{e:#}");
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprint!("{e}");
            ExitCode::from(2)
        }
        Err(Failure::Interrupted(signal)) => ExitCode::from((128 + signal).clamp(0, 255) as u8),
        Err(Failure::Runtime(e)) => match refused(&e) {
            // Redis turned ferry away: a configuration error (a password, an ACL, protected
            // mode, a certificate), said in Redis's own words.
            Some(why) => {
                log_error(&e);
                eprintln!(
                    "error: {e:#}\n{why}: a configuration error, which waiting will not change; \
                     check [redis] (its URL, user and password, ca_file) and the server's settings"
                );
                ExitCode::from(2)
            }
            None => {
                log_error(&e);
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// A panic's message goes through the same redaction as ferry's own errors: a library that
/// panics with a URL or a key in its message does not print it.
fn redact_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        eprintln!(
            "ferry panicked in thread {}{place}: {}",
            thread.name().unwrap_or("unnamed"),
            ferry_core::config::redact_known(&message)
        );
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

/// Why Redis refused ferry, when that is what `e` comes down to.
pub(crate) fn refused(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .find_map(|c| c.downcast_ref::<ferry_queue::QueueError>())
        .and_then(|q| q.refusal())
}

fn init_logging(default: &str, format: LogFormat) {
    // `RUST_LOG`, when set and not empty, overrides the flags.
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|_| tracing_subscriber::EnvFilter::try_from_default_env().ok());
    // Module paths (`ferry_core::config`) help whoever debugs, not whoever reads a
    // warning: in text they come with -vv or RUST_LOG (JSON records always carry them).
    let targets = from_env.is_some() || default == "debug";
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder
            .with_target(targets)
            .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
            .init(),
    }
}

async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Validate(common) => {
            let config = load(&common)?;
            let prefixes: usize = config.rules.iter().map(|r| r.source.prefixes.len()).sum();
            println!(
                "ok: {} endpoint(s), {} rule(s), {} prefix(es); redis: {}",
                config.endpoints.len(),
                config.rules.len(),
                prefixes,
                config
                    .redis
                    .as_ref()
                    .map_or("none (embedded)".to_string(), |r| r.redacted_url()),
            );
            Ok(())
        }
        Command::Status { common, rule, json } => {
            let config = load_to_read(&common)?;
            let queue = connect(&common, &config, Persistence::FailFast).await?;
            let rules = rule_names(&config, &queue).await?;
            check_rule(&rules, rule.as_deref())?;
            let statuses = status::gather(&rules, &queue, rule.as_deref())
                .await
                .context("reading status from redis")?;
            let workers = queue
                .workers()
                .await
                .context("reading workers from redis")?;
            if json {
                let value = serde_json::json!({ "rules": statuses, "workers": workers });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).context("encoding json")?
                );
            } else {
                print!("{}", status::render(&statuses));
                print!("{}", queues::render_workers(&workers));
            }
            Ok(())
        }
        Command::Queues {
            common,
            rule,
            json,
            watch,
        } => {
            let config = load_to_read(&common)?;
            let queue = connect(&common, &config, Persistence::FailFast).await?;
            let rules = rule_names(&config, &queue).await?;
            check_rule(&rules, rule.as_deref())?;
            loop {
                let view = queues::gather(&rules, &queue, rule.as_deref())
                    .await
                    .context("reading queues from redis")?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&view).context("encoding json")?
                    );
                    return Ok(());
                }
                if !watch {
                    print!("{}", queues::render(&view));
                    return Ok(());
                }
                // like top: home the cursor and clear, then redraw
                print!("\x1b[H\x1b[2J{}", queues::render(&view));
                use std::io::Write;
                std::io::stdout().flush().ok(); // redrawn in 2 s anyway
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
        Command::DeadLetters {
            common,
            action,
            rule,
            json,
        } => {
            let config = load_to_read(&common)?;
            let queue = connect(&common, &config, Persistence::FailFast).await?;
            let rules = rule_names(&config, &queue).await?;
            check_rule(&rules, rule.as_deref())?;
            let mut listed = Vec::new();
            for name in rules
                .iter()
                .filter(|r| rule.as_deref().is_none_or(|o| o == r.as_str()))
            {
                match action {
                    DeadAction::List => {
                        let letters = queue
                            .dead_letters(name)
                            .await
                            .context("reading dead letters")?;
                        if json {
                            listed.push(serde_json::json!({ "rule": name, "dead": letters }));
                        } else {
                            print!("{}", queues::render_dead(name, &letters));
                        }
                    }
                    DeadAction::Retry => {
                        let n = queue
                            .retry_dead(name, None)
                            .await
                            .context("retrying dead letters")?;
                        println!("{name}: {n} dead letter(s) put back on their queues");
                    }
                    DeadAction::Purge => {
                        let n = queue
                            .purge_dead(name, None)
                            .await
                            .context("purging dead letters")?;
                        println!("{name}: {n} dead letter(s) deleted");
                    }
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&listed).context("encoding json")?
                );
            }
            Ok(())
        }
        Command::Sync(args) => sync::run(*args).await,
        Command::Probe(args) => probe::run(*args).await,
        Command::Forget(args) => forget::run(*args).await,
        Command::Init(args) => init::run(args),
        Command::Coordinator {
            common,
            coordinator,
            s3,
            metrics,
        } => {
            serve_metrics(&metrics)?;
            let timeouts = s3.timeouts()?;
            let trust = s3.trust()?;
            let cancel = crate::shutdown::on_signal();
            let stop = hard_stop(&cancel, Duration::ZERO);
            let role = Role::Coordinator {
                replace: coordinator.replace_rule,
            };
            let check = |c: &Config| coordinator.check_open(c);
            let (config, queue) = start(&common, role, stop, "ferry coordinator", &check).await?;
            let stores = Stores::connect(&config, timeouts, &trust)
                .await
                .with_limits(&config, Arc::new(queue.clone()));
            run_coordinator(&coordinator, config, stores, queue, cancel).await
        }
        Command::Worker {
            common,
            worker,
            s3,
            metrics,
        } => {
            serve_metrics(&metrics)?;
            let timeouts = s3.timeouts()?;
            let trust = s3.trust()?;
            let options = worker_options(&worker, None)?;
            let cancel = crate::shutdown::on_signal();
            let stop = hard_stop(&cancel, options.drain);
            let (config, queue) =
                start(&common, Role::Worker, stop, "ferry worker", &|_| Ok(())).await?;
            let stores = Stores::connect(&config, timeouts, &trust)
                .await
                .with_limits(&config, Arc::new(queue.clone()));
            ferry_worker::run(config, stores, Arc::new(queue), options, cancel)
                .await
                .context("worker failed")?;
            Ok(())
        }
        Command::Run {
            common,
            workers,
            coordinator,
            worker,
            s3,
            metrics,
        } => {
            serve_metrics(&metrics)?;
            let timeouts = s3.timeouts()?;
            let trust = s3.trust()?;
            let shutdown = crate::shutdown::on_signal();
            let stop = hard_stop(&shutdown, worker.drain_timeout);
            let role = Role::Coordinator {
                replace: coordinator.replace_rule,
            };
            let check = |c: &Config| coordinator.check_open(c);
            let (config, queue) = start(&common, role, stop, "", &check).await?;
            let stores = Stores::connect(&config, timeouts, &trust)
                .await
                .with_limits(&config, Arc::new(queue.clone()));
            // Workers stop when the coordinator is done (or on a signal).
            let workers_stop = shutdown.child_token();
            let mut handles = Vec::new();
            for i in 0..workers.max(1) {
                let options = worker_options(&worker, Some(i))?;
                handles.push(tokio::spawn(ferry_worker::run(
                    config.clone(),
                    stores.clone(),
                    Arc::new(queue.clone()),
                    options,
                    workers_stop.clone(),
                )));
            }
            let result =
                run_coordinator(&coordinator, config, stores, queue, shutdown.clone()).await;
            workers_stop.cancel();
            for h in handles {
                h.await
                    .context("worker task panicked")?
                    .context("worker failed")?;
            }
            result?;
            if let Some(signal) = crate::shutdown::received() {
                eprintln!(
                    "interrupted (signal {signal}); in-flight tasks were finished or released"
                );
            }
            unless_interrupted()
        }
    }
}

async fn run_coordinator(
    args: &CoordinatorArgs,
    config: Arc<Config>,
    stores: Stores,
    queue: Queue,
    cancel: CancellationToken,
) -> Result<(), Failure> {
    if args.leader_lease < Duration::from_secs(1) {
        return Err(Failure::Config(ConfigError {
            problems: vec![Problem {
                path: "--leader-lease".into(),
                message: format!("{:?} is too short (at least 1s)", args.leader_lease),
            }],
        }));
    }
    let ctx = ferry_coordinator::Context {
        config,
        stores,
        queue: Arc::new(queue),
        cancel,
        id: args
            .coordinator_id
            .clone()
            .unwrap_or_else(default_process_id),
        leader_lease: args.leader_lease,
        max_outstanding: args.max_outstanding,
    };
    let webhooks: Vec<&str> = ctx
        .config
        .rules
        .iter()
        .filter(|r| r.webhook().is_some())
        .map(|r| r.name.as_str())
        .collect();
    let listener = match args.events_listen {
        Some(addr) => {
            let sns = ferry_coordinator::events::SnsCheck::new(ctx.stores.trust().rustls_config());
            let listener = ferry_coordinator::events::Listener::bind(addr, sns)
                .await
                .with_context(|| format!("binding --events-listen {addr}"))?;
            let bound = listener
                .local_addr()
                .context("reading the events address")?;
            tracing::info!(address = %bound, rules = ?webhooks,
                "serving event notifications at POST /events/RULE");
            Some(tokio::spawn(ferry_coordinator::events::serve(
                ctx.clone(),
                listener,
            )))
        }
        None => {
            if !webhooks.is_empty() {
                tracing::warn!(rules = ?webhooks,
                    "these rules take webhook events, but this coordinator has no --events-listen");
            }
            None
        }
    };
    let result = ferry_coordinator::run(ctx).await;
    if let Some(listener) = listener {
        listener.abort();
    }
    match result {
        Ok(()) | Err(ferry_coordinator::CoordinatorError::Cancelled) => Ok(()),
        Err(e) => Err(Failure::Runtime(
            anyhow::Error::new(e).context("coordinator failed"),
        )),
    }
}

/// The config of a command that reads the queue alone (`status`, `queues`, `dead-letters`):
/// without a config file anywhere, an empty one, so the state dir a `sync` of `s3://` sides
/// (which needs no file) left behind can still be read.
fn load_to_read(common: &Common) -> Result<Config, Failure> {
    if common.config.is_none() && sync::config_path(None).is_err() {
        let config = Config {
            redis: None,
            endpoints: Default::default(),
            rules: Vec::new(),
        };
        return Ok(with_redis_flag(config, common));
    }
    load(common)
}

fn load(common: &Common) -> Result<Config, Failure> {
    let path = sync::config_path(common.config.as_deref())?;
    let config = Config::load(&path).map_err(Failure::Config)?;
    Ok(with_redis_flag(config, common))
}

/// `config`, with `--redis URL` in place of its `[redis]` nodes.
fn with_redis_flag(mut config: Config, common: &Common) -> Config {
    if let Some(redis) = &config.redis {
        redis.remember_passwords();
    }
    if let Some(url) = &common.redis {
        let configured = config.redis.take();
        let namespace = configured
            .as_ref()
            .map_or_else(|| "ferry".to_string(), |r| r.namespace.clone());
        // `--redis URL` replaces the nodes; a configured cluster stays a cluster (URL is then
        // its one seed).
        let cluster = configured.as_ref().is_some_and(|r| r.cluster);
        let ca_file = configured.and_then(|r| r.ca_file);
        config.redis = Some(ferry_core::config::RedisConfig {
            cluster,
            ca_file,
            ..ferry_core::config::RedisConfig::new(url.clone(), namespace)
        });
        if let Some(redis) = &config.redis {
            redis.remember_passwords();
        }
    }
    config
}

/// Which kind of long-running process is starting.
#[derive(Clone, Copy)]
enum Role {
    /// Plans rules: checks them against Redis and registers them.
    Coordinator {
        /// Whether to take over rule names registered with other buckets.
        replace: bool,
    },
    /// Copies: only warns about rules registered with other buckets.
    Worker,
}

/// A token cancelled `grace` plus ten seconds after `shutdown`: from then on a process waiting
/// for an unreachable Redis gives up instead of waiting for ever.
fn hard_stop(shutdown: &CancellationToken, grace: Duration) -> CancellationToken {
    let stop = CancellationToken::new();
    let (shutdown, armed) = (shutdown.clone(), stop.clone());
    tokio::spawn(async move {
        shutdown.cancelled().await;
        tokio::time::sleep(grace + Duration::from_secs(10)).await;
        armed.cancel();
    });
    stop
}

/// Loads the config, connects to Redis (riding out a Redis that is not there yet), and
/// checks the rules against those already registered there (pairing across config files,
/// and the buckets of rules of the same name); a coordinator then registers them.
///
/// `needs_redis` names a command that only works with Redis (its process shares the queue
/// with others); empty for one that may use the embedded queue. `check` runs on the config
/// before anything is connected.
async fn start(
    common: &Common,
    role: Role,
    stop: CancellationToken,
    needs_redis: &str,
    check: &dyn Fn(&Config) -> Result<(), Failure>,
) -> Result<(Arc<Config>, Queue), Failure> {
    let config = load(common)?;
    check(&config)?;
    if config.redis.is_none() && !needs_redis.is_empty() {
        return Err(Failure::Config(ConfigError {
            problems: vec![Problem {
                path: "redis".into(),
                message: format!(
                    "{needs_redis} shares its queue with other processes, so it needs a [redis] \
                     section (or --redis URL); without Redis, `ferry run` or `ferry sync` runs \
                     the coordinator and workers in one process on the embedded queue"
                ),
            }],
        }));
    }
    let queue = connect(common, &config, Persistence::RideOut(stop)).await?;
    register(&config, &queue, role).await?;
    Ok((Arc::new(config), queue))
}

/// Connects to the configured Redis, or with no `[redis]`, opens the embedded queue in the
/// state dir.
async fn connect(
    common: &Common,
    config: &Config,
    persistence: Persistence,
) -> Result<Queue, Failure> {
    let dir = sync::state_dir(common.state_dir.as_deref())?;
    open_queue(config, persistence, &dir).await
}

/// [`connect`] with the state dir resolved.
async fn open_queue(
    config: &Config,
    persistence: Persistence,
    state_dir: &std::path::Path,
) -> Result<Queue, Failure> {
    match &config.redis {
        Some(redis) => Ok(Queue::connect(redis, persistence)
            .await
            .context("connecting to the queue")?),
        None => Queue::open_embedded(state_dir, "ferry")
            .await
            .map_err(|e| match e {
                ferry_queue::QueueError::State(e) => Failure::Config(ConfigError {
                    problems: vec![Problem {
                        path: "--state-dir".into(),
                        message: e.to_string(),
                    }],
                }),
                other => {
                    Failure::Runtime(anyhow::Error::new(other).context("opening the state dir"))
                }
            }),
    }
}

/// Checks the rules against those already registered in Redis; a coordinator then registers
/// them. A rule name registered with other buckets belongs to another pairing that shares
/// this namespace: taking over its queues and ledger would corrupt both, so a coordinator
/// refuses unless told `--replace-rule`, and a worker warns.
async fn register(config: &Config, queue: &Queue, role: Role) -> Result<(), Failure> {
    let mine: Vec<BucketRef> = config
        .rules
        .iter()
        .filter_map(|r| BucketRef::of_rule(config, r))
        .collect();
    let registered = queue
        .registered_rules()
        .await
        .context("reading registered rules")?;
    let place = match &config.redis {
        Some(r) => format!("redis namespace {:?}", r.namespace),
        None => "the state dir".to_string(),
    };
    let mut taken = Vec::new();
    for old in &registered {
        let Some(new) = mine.iter().find(|m| m.rule == old.rule) else {
            continue;
        };
        if (&old.source, &old.destination) == (&new.source, &new.destination) {
            continue;
        }
        let message = format!(
            "rule {:?} is registered in {place} as {} -> {}, but this config pairs {} -> {}; \
             use another rule name or namespace, `ferry forget {}` it, or pass --replace-rule \
             to take it over (forgetting the old pairing's queues, ledger and history)",
            old.rule, old.source, old.destination, new.source, new.destination, old.rule
        );
        match role {
            Role::Coordinator { replace: false } => taken.push(Problem {
                path: format!("rules ({})", old.rule),
                message,
            }),
            Role::Coordinator { replace: true } => {
                let deleted = queue
                    .forget_rule(&old.rule)
                    .await
                    .context("forgetting the replaced rule")?;
                tracing::warn!(rule = %old.rule, keys = deleted, from = %old.destination,
                    to = %new.destination, "replaced a rule registered with other buckets");
            }
            Role::Worker => tracing::warn!("{message}"),
        }
    }
    if !taken.is_empty() {
        return Err(Failure::Config(ConfigError { problems: taken }));
    }
    let mut all: Vec<BucketRef> = registered
        .iter()
        .filter(|r| !mine.iter().any(|m| m.rule == r.rule))
        .cloned()
        .collect();
    all.extend(mine.iter().cloned());
    let conflicts = check_pairing(&all);
    if !conflicts.is_empty() {
        return Err(Failure::Config(ConfigError {
            problems: conflicts
                .into_iter()
                .map(|message| Problem {
                    path: format!("rules (against rules registered in {place})"),
                    message,
                })
                .collect(),
        }));
    }
    if matches!(role, Role::Coordinator { .. }) {
        // Shaped before registering, so a rule found registered without a shape can only
        // be one that a ferry before growing ledgers registered.
        for rule in &mine {
            let kept = registered.iter().any(|old| {
                old.rule == rule.rule
                    && (&old.source, &old.destination) == (&rule.source, &rule.destination)
            });
            queue
                .shape_ledger(&rule.rule, !kept)
                .await
                .context("giving the ledger its shape")?;
        }
        queue
            .register_rules(&mine)
            .await
            .context("registering rules")?;
    }
    let redis = config
        .redis
        .as_ref()
        .map(|r| r.redacted_url())
        .unwrap_or_default();
    info!(rules = mine.len(), redis = %redis, "config loaded");
    Ok(())
}

/// The rules the views show: the config's, and with the embedded queue (one user's state
/// dir) also those registered there by `ferry sync`, whose rules no config file names.
async fn rule_names(config: &Config, queue: &Queue) -> Result<Vec<String>, Failure> {
    let view: &dyn ViewQueue = queue;
    let mut names: Vec<String> = config.rules.iter().map(|r| r.name.clone()).collect();
    if queue.is_embedded() {
        for r in view
            .registered_rules()
            .await
            .context("reading registered rules")?
        {
            if !names.contains(&r.rule) {
                names.push(r.rule);
            }
        }
    }
    Ok(names)
}

/// A RULE argument must name one of `rules`.
fn check_rule(rules: &[String], rule: Option<&str>) -> Result<(), Failure> {
    match rule {
        Some(r) if !rules.iter().any(|n| n == r) => {
            let known: Vec<_> = rules.iter().map(String::as_str).collect();
            Err(Failure::Config(ConfigError {
                problems: vec![Problem {
                    path: "RULE".into(),
                    message: format!("no rule {r:?} in the config (rules: {})", known.join(", ")),
                }],
            }))
        }
        _ => Ok(()),
    }
}

fn worker_options(
    args: &WorkerArgs,
    index: Option<usize>,
) -> Result<ferry_worker::WorkerOptions, Failure> {
    if args.concurrency == 0 {
        return Err(Failure::Config(ConfigError {
            problems: vec![Problem {
                path: "--concurrency".into(),
                message: "must be at least 1".into(),
            }],
        }));
    }
    if args.part_concurrency == 0 {
        return Err(Failure::Config(ConfigError {
            problems: vec![Problem {
                path: "--part-concurrency".into(),
                message: "must be at least 1".into(),
            }],
        }));
    }
    if args.lease < Duration::from_secs(1) {
        return Err(Failure::Config(ConfigError {
            problems: vec![Problem {
                path: "--lease".into(),
                message: format!("{:?} is too short (at least 1s)", args.lease),
            }],
        }));
    }
    let base = args.id.clone().unwrap_or_else(default_process_id);
    let id = match index {
        Some(i) => format!("{base}-{i}"),
        None => base,
    };
    Ok(ferry_worker::WorkerOptions {
        id,
        concurrency: args.concurrency,
        lease: args.lease,
        drain: args.drain_timeout,
        part_concurrency: args.part_concurrency,
    })
}

fn default_process_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", std::process::id())
}

fn serve_metrics(args: &MetricsArgs) -> Result<(), Failure> {
    if let Some(addr) = args.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    ferry_core::telemetry::Metric::EventLag.name().to_string(),
                ),
                &[
                    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                ],
            )
            .context("setting the event lag's buckets")?
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("serving metrics on {addr}"))?;
        ferry_core::telemetry::describe_all();
    }
    Ok(())
}
