//! `ferry worker`: claims and copies tasks of every rule of the config, under leases, until
//! stopped; then drains.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ferry_storage::Stores;

use crate::failure::Failure;
use crate::startup::{self, Common, MetricsArgs, Role, S3Args};

/// `ferry worker` arguments.
#[derive(Args)]
pub(crate) struct WorkerCommand {
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) worker: WorkerArgs,
    #[command(flatten)]
    pub(crate) s3: S3Args,
    #[command(flatten)]
    pub(crate) metrics: MetricsArgs,
}

/// Copies until stopped.
pub(crate) async fn run(args: WorkerCommand) -> Result<(), Failure> {
    startup::serve_metrics(&args.metrics)?;
    let timeouts = args.s3.timeouts()?;
    let trust = args.s3.trust()?;
    let options = worker_options(&args.worker, None)?;
    let cancel = crate::shutdown::on_signal();
    let stop = startup::hard_stop(&cancel, options.drain);
    let (config, queue) =
        startup::start(
            &args.common,
            Role::Worker,
            stop,
            "ferry worker",
            &|_| Ok(()),
        )
        .await?;
    let stores = Stores::connect(&config, timeouts, &trust)
        .await
        .with_limits(&config, Arc::new(queue.clone()));
    ferry_worker::run(config, stores, Arc::new(queue), options, cancel)
        .await
        .context("worker failed")?;
    Ok(())
}

#[derive(Args)]
pub(crate) struct WorkerArgs {
    /// Tasks copied at once.
    #[arg(
        long,
        env = "FERRY_CONCURRENCY",
        value_name = "N",
        default_value_t = 32
    )]
    pub(crate) concurrency: usize,
    /// Most multipart parts copied at once (within --concurrency), so the parts of one large
    /// object spread over every worker.
    #[arg(long, env = "FERRY_PART_CONCURRENCY", value_name = "N", default_value_t = ferry_worker::DEFAULT_PART_CONCURRENCY)]
    pub(crate) part_concurrency: usize,
    /// Worker name (default: host-pid). Must be unique among live workers.
    #[arg(long, env = "FERRY_WORKER_ID", value_name = "NAME")]
    pub(crate) id: Option<String>,
    /// Lease on a claimed task; renewed every third of it.
    #[arg(long, env = "FERRY_LEASE", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    pub(crate) lease: Duration,
    /// On SIGTERM, how long in-flight tasks may finish before they are released.
    #[arg(long, env = "FERRY_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "20s")]
    pub(crate) drain_timeout: Duration,
}

pub(crate) fn worker_options(
    args: &WorkerArgs,
    index: Option<usize>,
) -> Result<ferry_worker::WorkerOptions, Failure> {
    if args.concurrency == 0 {
        return Err(Failure::config("--concurrency", "must be at least 1"));
    }
    if args.part_concurrency == 0 {
        return Err(Failure::config("--part-concurrency", "must be at least 1"));
    }
    if args.lease < Duration::from_secs(1) {
        return Err(Failure::config(
            "--lease",
            format!("{:?} is too short (at least 1s)", args.lease),
        ));
    }
    let base = args.id.clone().unwrap_or_else(startup::default_process_id);
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
