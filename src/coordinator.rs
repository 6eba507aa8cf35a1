//! `ferry coordinator`: plans iterations (lists, diffs, enqueues) for every rule of the config,
//! leading each rule under a lease, and serves webhook events; its workers run elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ferry_core::config::{Config, ConfigError, Problem};
use ferry_queue::Queue;
use ferry_storage::Stores;
use tokio_util::sync::CancellationToken;

use crate::failure::Failure;
use crate::startup::{self, Common, MetricsArgs, Role, S3Args};

/// `ferry coordinator` arguments.
#[derive(Args)]
pub(crate) struct CoordinatorCommand {
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) coordinator: CoordinatorArgs,
    #[command(flatten)]
    pub(crate) s3: S3Args,
    #[command(flatten)]
    pub(crate) metrics: MetricsArgs,
}

/// Plans until stopped.
pub(crate) async fn run(args: CoordinatorCommand) -> Result<(), Failure> {
    startup::serve_metrics(&args.metrics)?;
    let timeouts = args.s3.timeouts()?;
    let trust = args.s3.trust()?;
    let cancel = crate::shutdown::on_signal();
    let stop = startup::hard_stop(&cancel, Duration::ZERO);
    let role = Role::Coordinator {
        replace: args.coordinator.replace_rule,
    };
    let check = |c: &Config| args.coordinator.check_open(c);
    let (config, queue) =
        startup::start(&args.common, role, stop, "ferry coordinator", &check).await?;
    let stores = Stores::connect(&config, timeouts, &trust)
        .await
        .with_limits(&config, Arc::new(queue.clone()));
    run_coordinator(&args.coordinator, config, stores, queue, cancel).await
}

#[derive(Args)]
pub(crate) struct CoordinatorArgs {
    /// Coordinator name in leader leases (default: host-pid).
    #[arg(long, env = "FERRY_COORDINATOR_ID", value_name = "NAME")]
    pub(crate) coordinator_id: Option<String>,
    /// Lease on leading a rule; a standby coordinator takes over this long after a leader dies.
    #[arg(long, env = "FERRY_LEADER_LEASE", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    pub(crate) leader_lease: Duration,
    /// Unfinished tasks per rule before planning pauses for workers to catch up.
    #[arg(long, env = "FERRY_MAX_OUTSTANDING", value_name = "N", default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_outstanding: u64,
    /// Take over rule names registered in Redis with other buckets, forgetting everything
    /// the old pairing left there (its queues, ledger and history).
    #[arg(long, env = "FERRY_REPLACE_RULE")]
    pub(crate) replace_rule: bool,
    /// Serve `POST http://ADDR/events/RULE` for rules with `events = { webhook = true }`.
    #[arg(long, env = "FERRY_EVENTS_LISTEN", value_name = "ADDR")]
    pub(crate) events_listen: Option<SocketAddr>,
    /// Let a webhook rule without `events_token_env` listen beyond loopback: anyone who
    /// reaches the port can then send it events.
    #[arg(long, env = "FERRY_EVENTS_INSECURE_NO_TOKEN")]
    pub(crate) events_insecure_no_token: bool,
}

impl CoordinatorArgs {
    /// The webhook refuses to run open: on an address beyond loopback, every webhook rule
    /// needs a token, unless the operator says otherwise.
    pub(crate) fn check_open(&self, config: &Config) -> Result<(), Failure> {
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

pub(crate) async fn run_coordinator(
    args: &CoordinatorArgs,
    config: Arc<Config>,
    stores: Stores,
    queue: Queue,
    cancel: CancellationToken,
) -> Result<(), Failure> {
    if args.leader_lease < Duration::from_secs(1) {
        return Err(Failure::config(
            "--leader-lease",
            format!("{:?} is too short (at least 1s)", args.leader_lease),
        ));
    }
    let config =
        startup::check_versions(config, &stores, |i, field| format!("rules[{i}].{field}")).await?;
    let ctx = ferry_coordinator::Context {
        config,
        stores,
        queue: Arc::new(queue),
        cancel,
        id: args
            .coordinator_id
            .clone()
            .unwrap_or_else(startup::default_process_id),
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
