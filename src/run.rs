//! `ferry run`: a coordinator and N workers in one process (the embedded queue without
//! `[redis]`); and [`Workers`], the workers such a process runs beside its coordinator,
//! which `ferry sync` runs too.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use ferry_core::config::Config;
use ferry_queue::Queue;
use ferry_storage::Stores;
use ferry_worker::{WorkerError, WorkerOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::coordinator::{CoordinatorArgs, run_coordinator};
use crate::failure::{Failure, unless_interrupted};
use crate::startup::{self, Common, MetricsArgs, Role, S3Args};
use crate::worker::{WorkerArgs, worker_options};

/// `ferry run` arguments.
#[derive(Args)]
pub(crate) struct RunCommand {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Worker loops in this process.
    #[arg(long, env = "FERRY_WORKERS", value_name = "N", default_value_t = 1)]
    pub(crate) workers: usize,
    #[command(flatten)]
    pub(crate) coordinator: CoordinatorArgs,
    #[command(flatten)]
    pub(crate) worker: WorkerArgs,
    #[command(flatten)]
    pub(crate) s3: S3Args,
    #[command(flatten)]
    pub(crate) metrics: MetricsArgs,
}

/// Runs the config's rules to their stop conditions (or until a signal).
pub(crate) async fn run(args: RunCommand) -> Result<(), Failure> {
    startup::serve_metrics(&args.metrics)?;
    let timeouts = args.s3.timeouts()?;
    let trust = args.s3.trust()?;
    let shutdown = crate::shutdown::on_signal();
    let stop = startup::hard_stop(&shutdown, args.worker.drain_timeout);
    let role = Role::Coordinator {
        replace: args.coordinator.replace_rule,
    };
    let check = |c: &Config| args.coordinator.check_open(c);
    let (config, queue) = startup::start(&args.common, role, stop, "", &check).await?;
    let stores = Stores::connect(&config, timeouts, &trust)
        .await
        .with_limits(&config, Arc::new(queue.clone()));
    let options = (0..args.workers.max(1))
        .map(|i| worker_options(&args.worker, Some(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let workers = Workers::start(&config, &stores, &queue, options, &shutdown);
    let result = run_coordinator(&args.coordinator, config, stores, queue, shutdown).await;
    workers.stop().await?;
    result?;
    if let Some(signal) = crate::shutdown::received() {
        eprintln!("interrupted (signal {signal}); in-flight tasks were finished or released");
    }
    unless_interrupted()
}

/// Workers running in this process beside its coordinator. They stop when the coordinator
/// is done ([`Workers::stop`]), or on a signal.
pub(crate) struct Workers {
    stop: CancellationToken,
    handles: Vec<JoinHandle<Result<(), WorkerError>>>,
}

impl Workers {
    /// Starts one worker loop per `options`, stopping with `shutdown`.
    pub(crate) fn start(
        config: &Arc<Config>,
        stores: &Stores,
        queue: &Queue,
        options: Vec<WorkerOptions>,
        shutdown: &CancellationToken,
    ) -> Workers {
        let stop = shutdown.child_token();
        let handles = options
            .into_iter()
            .map(|options| {
                tokio::spawn(ferry_worker::run(
                    config.clone(),
                    stores.clone(),
                    Arc::new(queue.clone()),
                    options,
                    stop.clone(),
                ))
            })
            .collect();
        Workers { stop, handles }
    }

    /// Stops them (they drain), and says how the first one that failed failed.
    pub(crate) async fn stop(self) -> Result<(), Failure> {
        self.stop.cancel();
        for handle in self.handles {
            handle
                .await
                .context("worker task panicked")?
                .context("worker failed")?;
        }
        Ok(())
    }
}
