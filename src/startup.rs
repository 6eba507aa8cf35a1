//! What the commands share to start: the config (found, loaded, given `--redis`), the state
//! dir, the queue opened on Redis or the embedded store, the rules checked against those
//! registered and registered, the S3 settings, the metrics server, and the hard stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ferry_core::config::{BucketRef, Config, ConfigError, Problem, check_pairing};
use ferry_queue::{Persistence, Queue, ViewQueue};
use ferry_storage::{CA_BUNDLE_VAR, Stores, Timeouts, Trust};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::failure::Failure;

/// Where a command finds its config and its queue.
#[derive(Args)]
pub(crate) struct Common {
    /// The config file (TOML) [default: ./ferry.toml, else ~/.config/ferry/ferry.toml].
    #[arg(long, short, env = "FERRY_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Redis URL; overrides `[redis] url` in the config.
    #[arg(
        long,
        env = "FERRY_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub(crate) redis: Option<String>,
    /// With no `[redis]`: where the embedded queue keeps its state [default:
    /// ~/.local/state/ferry]. One process at a time may use it.
    #[arg(long, env = "FERRY_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

/// Timeouts for S3 requests, made to fit slow links: a slow transfer that keeps moving is
/// never cut off; a silent one is.
#[derive(Args)]
pub(crate) struct S3Args {
    /// Time to set up a connection to an S3 endpoint.
    #[arg(long, env = "FERRY_S3_CONNECT_TIMEOUT", value_name = "DURATION", help_heading = "Connections", value_parser = humantime::parse_duration, default_value = "10s")]
    pub(crate) s3_connect_timeout: Duration,
    /// Time to the first byte of an answer: for requests without a body, and for uploads once
    /// their body is sent.
    #[arg(long, env = "FERRY_S3_FIRST_BYTE_TIMEOUT", value_name = "DURATION", help_heading = "Connections", value_parser = humantime::parse_duration, default_value = "60s")]
    pub(crate) s3_first_byte_timeout: Duration,
    /// Longest time an upload may make no progress at all (not a cap on its total time).
    #[arg(long, env = "FERRY_S3_IDLE_TIMEOUT", value_name = "DURATION", help_heading = "Connections", value_parser = humantime::parse_duration, default_value = "60s")]
    pub(crate) s3_idle_timeout: Duration,
}

impl S3Args {
    pub(crate) fn timeouts(&self) -> Result<Timeouts, Failure> {
        for (flag, value) in [
            ("--s3-connect-timeout", self.s3_connect_timeout),
            ("--s3-first-byte-timeout", self.s3_first_byte_timeout),
            ("--s3-idle-timeout", self.s3_idle_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(Failure::config(
                    flag,
                    format!("{value:?} is too short (at least 100ms)"),
                ));
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
    pub(crate) fn trust(&self) -> Result<Trust, Failure> {
        let trust = Trust::from_env()
            .map_err(|e| Failure::config(e.named, format!("{}: {}", e.path.display(), e.reason)))?;
        if let Some(bundle) = trust.bundle() {
            info!(bundle = %bundle.display(),
                "trusting the certificate authorities of {CA_BUNDLE_VAR} besides the system's");
        }
        Ok(trust)
    }
}

#[derive(Args)]
pub(crate) struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "FERRY_METRICS_LISTEN", value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,
}

/// The config of a command that reads the queue alone (`status`, `queues`, `dead-letters`):
/// without a config file anywhere, an empty one, so the state dir a `sync` of `s3://` sides
/// (which needs no file) left behind can still be read.
pub(crate) fn load_to_read(common: &Common) -> Result<Config, Failure> {
    if common.config.is_none() && config_path(None).is_err() {
        let config = Config {
            redis: None,
            endpoints: Default::default(),
            rules: Vec::new(),
            pricing: Default::default(),
        };
        return Ok(with_redis_flag(config, common));
    }
    load(common)
}

pub(crate) fn load(common: &Common) -> Result<Config, Failure> {
    let path = config_path(common.config.as_deref())?;
    let config = Config::load(&path).map_err(Failure::Config)?;
    Ok(with_redis_flag(config, common))
}

/// `config`, with `--redis URL` in place of its `[redis]` nodes.
pub(crate) fn with_redis_flag(mut config: Config, common: &Common) -> Config {
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

/// The config file to read endpoints from.
pub(crate) fn config_path(given: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let mut tried = vec![PathBuf::from("ferry.toml")];
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
    {
        tried.push(dir.join("ferry").join("ferry.toml"));
    }
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let names: Vec<_> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(Failure::config(
        "--config",
        format!(
            "no config file: give --config F (its [endpoints.NAME] name SRC's and DST's endpoints); looked for {}",
            names.join(" and ")
        ),
    ))
}

/// The state dir: the flag, else `$XDG_STATE_HOME/ferry`, else `~/.local/state/ferry`.
pub(crate) fn state_dir(given: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map(|d| d.join("ferry"))
        .ok_or_else(|| {
            Failure::config(
                "--state-dir",
                "no HOME to put the default state dir in; give --state-dir DIR",
            )
        })
}

/// Which kind of long-running process is starting.
#[derive(Clone, Copy)]
pub(crate) enum Role {
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
pub(crate) fn hard_stop(shutdown: &CancellationToken, grace: Duration) -> CancellationToken {
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
pub(crate) async fn start(
    common: &Common,
    role: Role,
    stop: CancellationToken,
    needs_redis: &str,
    check: &dyn Fn(&Config) -> Result<(), Failure>,
) -> Result<(Arc<Config>, Queue), Failure> {
    let config = load(common)?;
    check(&config)?;
    if config.redis.is_none() && !needs_redis.is_empty() {
        return Err(Failure::config(
            "redis",
            format!(
                "{needs_redis} shares its queue with other processes, so it needs a [redis] \
                     section (or --redis URL); without Redis, `ferry run` or `ferry sync` runs \
                     the coordinator and workers in one process on the embedded queue"
            ),
        ));
    }
    let queue = connect(common, &config, Persistence::RideOut(stop)).await?;
    register(&config, &queue, role).await?;
    Ok((Arc::new(config), queue))
}

/// Connects to the configured Redis, or with no `[redis]`, opens the embedded queue in the
/// state dir.
pub(crate) async fn connect(
    common: &Common,
    config: &Config,
    persistence: Persistence,
) -> Result<Queue, Failure> {
    let dir = state_dir(common.state_dir.as_deref())?;
    open_queue(config, persistence, &dir).await
}

/// [`connect`] with the state dir resolved.
pub(crate) async fn open_queue(
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
                ferry_queue::QueueError::State(e) => Failure::config("--state-dir", e.to_string()),
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
pub(crate) async fn register(config: &Config, queue: &Queue, role: Role) -> Result<(), Failure> {
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
    let taken = taken_over(queue, &registered, &mine, &place, role).await?;
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

/// The rule names of `mine` registered with other buckets: refused for a coordinator (the
/// problems returned), taken over with `--replace-rule` (the old pairing forgotten), or
/// warned about by a worker.
async fn taken_over(
    queue: &Queue,
    registered: &[BucketRef],
    mine: &[BucketRef],
    place: &str,
    role: Role,
) -> Result<Vec<Problem>, Failure> {
    let mut taken = Vec::new();
    for old in registered {
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
    Ok(taken)
}

/// The rules the views show: the config's, and with the embedded queue (one user's state
/// dir) also those registered there by `ferry sync`, whose rules no config file names.
pub(crate) async fn rule_names(config: &Config, queue: &Queue) -> Result<Vec<String>, Failure> {
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
pub(crate) fn check_rule(rules: &[String], rule: Option<&str>) -> Result<(), Failure> {
    match rule {
        Some(r) if !rules.iter().any(|n| n == r) => {
            let known: Vec<_> = rules.iter().map(String::as_str).collect();
            Err(Failure::config(
                "RULE",
                format!("no rule {r:?} in the config (rules: {})", known.join(", ")),
            ))
        }
        _ => Ok(()),
    }
}

pub(crate) fn serve_metrics(args: &MetricsArgs) -> Result<(), Failure> {
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

pub(crate) fn default_process_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", std::process::id())
}

/// The queue a read-only command (`status`, `queues`, `dead-letters`) reads, and the rules it
/// shows: `rule` alone when given (it must be one of them).
pub(crate) async fn open_to_read(
    common: &Common,
    rule: Option<&str>,
) -> Result<(Queue, Vec<String>), Failure> {
    let config = load_to_read(common)?;
    let queue = connect(common, &config, Persistence::FailFast).await?;
    let rules = rule_names(&config, &queue).await?;
    check_rule(&rules, rule)?;
    Ok((queue, rules))
}

/// Rules with `versions = "all"` need a destination bucket that keeps versions: one that
/// does not is a configuration error (exit 2), named under `path(rule index)`, before any
/// copy. A source bucket that keeps none has one version per key: its rule is copied as with
/// `versions = "current"`, with a warning.
pub(crate) async fn check_versions(
    config: Arc<Config>,
    stores: &Stores,
    path: impl Fn(usize, &str) -> String,
) -> Result<Arc<Config>, Failure> {
    use ferry_core::config::Versions;
    use ferry_storage::Versioning;
    if config
        .rules
        .iter()
        .all(|r| r.versions != Versions::All && r.at_ms.is_none())
    {
        return Ok(config);
    }
    let mut checked = (*config).clone();
    let mut problems = Vec::new();
    for (i, rule) in checked.rules.iter_mut().enumerate() {
        if rule.at_ms.is_some() {
            // The source's versions are what is read: it must keep them.
            let source = stores.source(rule).versioning(&rule.source.bucket).await;
            if !matches!(source, Ok(Versioning::Enabled | Versioning::Suspended)) {
                let why = match source {
                    Ok(state) => format!("versioning is {}", state.as_str()),
                    Err(e) => format!("{e}"),
                };
                problems.push(Problem {
                    path: path(i, "at"),
                    message: format!(
                        "source bucket {} on endpoint {} keeps no versions ({why}): it cannot \
                         be read as it was at an earlier moment",
                        rule.source.bucket, rule.source.endpoint
                    ),
                });
            }
            continue;
        }
        if rule.versions != Versions::All {
            continue;
        }
        let (bucket, endpoint) = (&rule.destination.bucket, &rule.destination.endpoint);
        let destination = stores
            .destination(rule)
            .versioning(bucket)
            .await
            .with_context(|| format!("reading the versioning of destination bucket {bucket}"));
        match destination {
            Ok(Versioning::Enabled) => {}
            Ok(state) => problems.push(Problem {
                path: path(i, "versions"),
                message: format!(
                    "rule {} copies every version, and destination bucket {bucket} on endpoint \
                     {endpoint} does not keep versions (versioning is {}): enable versioning \
                     on it (PutBucketVersioning, Status=Enabled), or copy current versions only",
                    rule.name,
                    state.as_str()
                ),
            }),
            // A store without versioning at all (Garage answers 501) says the same.
            Err(e) if is_unsupported(&e) => problems.push(Problem {
                path: path(i, "versions"),
                message: format!(
                    "rule {} copies every version, and destination bucket {bucket} on endpoint \
                     {endpoint} does not keep versions (the store does not implement \
                     versioning: {e:#})",
                    rule.name
                ),
            }),
            Err(e) => return Err(Failure::Runtime(e)),
        }
        let source = stores.source(rule).versioning(&rule.source.bucket).await;
        match source {
            Ok(Versioning::Enabled | Versioning::Suspended) => {}
            Ok(Versioning::Off) | Err(_) => {
                tracing::warn!(rule = %rule.name, bucket = %rule.source.bucket,
                    "the source bucket keeps no versions: its current objects are copied, as with versions = \"current\"");
                rule.versions = Versions::Current;
            }
        }
    }
    if problems.is_empty() {
        Ok(Arc::new(checked))
    } else {
        Err(Failure::Config(ConfigError { problems }))
    }
}

/// Whether a failed request says the store does not implement the operation.
fn is_unsupported(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<ferry_storage::StorageError>())
        .any(|s| s.status == Some(501) || s.code.as_deref() == Some("NotImplemented"))
}
