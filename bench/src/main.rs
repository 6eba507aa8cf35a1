//! `ferry-bench`: the Rust half of `bench/run` (which starts the servers, runs ferry and
//! rclone and prints the tables).
//!
//! - `seed`: uploads a dataset, reproducibly, to one endpoint of a ferry config;
//! - `verify`: checks that a destination bucket is an exact replica of a source bucket;
//! - `diff`: benchmarks the coordinator's listing diff over synthetic keys;
//! - `queue`: simulates a fleet of workers against a Redis, with no S3.
//!
//! Each prints one JSON object on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_bench::dataset::{self, Dataset};
use ferry_bench::{diff, verify};
use ferry_core::config::Config;
use ferry_storage::{Stores, Timeouts, Trust};

#[derive(Parser)]
#[command(
    name = "ferry-bench",
    about = "Datasets, replica checks and the diff benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Uploads a dataset (small, medium or large) into a bucket.
    Seed {
        /// A ferry config whose endpoints give the URLs and credentials.
        #[arg(long)]
        config: PathBuf,
        /// The endpoint to upload to.
        #[arg(long)]
        endpoint: String,
        /// The bucket (it must exist).
        #[arg(long)]
        bucket: String,
        /// small (20,000 x 4 KiB), medium (2,000 x 1 MiB), large (4 x 1 GiB) or flat
        /// (1,000,000 empty objects in one flat prefix, for the listing benchmark).
        #[arg(long)]
        dataset: String,
        /// Fraction of the object count (small, medium) or object size (large), for quick runs.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Objects (or parts) uploaded at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Checks that `--destination` holds exactly the objects of `--source`, byte for byte.
    Verify {
        /// A ferry config whose endpoints give the URLs and credentials.
        #[arg(long)]
        config: PathBuf,
        /// ENDPOINT/BUCKET of the source.
        #[arg(long)]
        source: String,
        /// ENDPOINT/BUCKET of the destination.
        #[arg(long)]
        destination: String,
    },
    /// Times the merge-join and decision table over N synthetic keys, one core.
    Diff {
        /// Source keys (the destination has 99 % of them, 1 % changed).
        #[arg(long, default_value_t = 10_000_000)]
        keys: u64,
    },
    /// Drives simulated workers' real claim, renew and ack traffic through the queue against
    /// a Redis (no S3): tasks/s, Redis CPU per task, claim latency.
    Queue {
        /// The Redis to use (a private one: the simulation adds and removes its own keys);
        /// with `--cluster`, every node of the cluster, comma-separated.
        #[arg(long)]
        redis: String,
        /// `--redis` names the nodes of a Redis Cluster.
        #[arg(long)]
        cluster: bool,
        /// Rules to spread the tasks over (on a cluster, one per master).
        #[arg(long, default_value_t = 1)]
        rules: usize,
        /// Simulated workers.
        #[arg(long, default_value_t = 100)]
        workers: usize,
        /// Tasks each worker holds at most at once (a worker's free slots).
        #[arg(long, default_value_t = 8)]
        slots: usize,
        /// Tasks run through the queue.
        #[arg(long, default_value_t = 100_000)]
        tasks: u64,
        /// How long a worker holds each claimed batch before acking it (simulated S3 time).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        work: std::time::Duration,
        /// Ack each claimed batch in one round trip, as workers do (else one per task).
        #[arg(long)]
        batch_acks: bool,
    },
}

fn split(location: &str) -> anyhow::Result<(&str, &str)> {
    location
        .split_once('/')
        .filter(|(e, b)| !e.is_empty() && !b.is_empty())
        .with_context(|| format!("{location:?} is not ENDPOINT/BUCKET"))
}

/// The stores of `config`, after checking that it names every endpoint in `wanted`.
async fn stores(config: &std::path::Path, wanted: &[&str]) -> anyhow::Result<Stores> {
    let path = config.display();
    let config = Config::load(config).with_context(|| format!("loading {path}"))?;
    if let Some(missing) = wanted.iter().find(|e| !config.endpoints.contains_key(**e)) {
        anyhow::bail!("{path} has no endpoint {missing:?}");
    }
    let trust = Trust::from_env()?;
    Ok(Stores::connect(&config, Timeouts::default(), &trust).await)
}

async fn run(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Seed {
            config,
            endpoint,
            bucket,
            dataset,
            scale,
            concurrency,
        } => {
            let set = Dataset::named(&dataset, scale)?;
            let store = stores(&config, &[&endpoint]).await?.get(&endpoint);
            let started = std::time::Instant::now();
            dataset::seed(store, &bucket, &set, concurrency.max(1)).await?;
            let out = serde_json::json!({
                "dataset": set.name, "objects": set.count, "bytes": set.bytes(),
                "seconds": started.elapsed().as_secs_f64(),
            });
            println!("{out}");
            Ok(true)
        }
        Command::Verify {
            config,
            source,
            destination,
        } => {
            let ((se, sb), (de, db)) = (split(&source)?, split(&destination)?);
            let stores = stores(&config, &[se, de]).await?;
            let report = verify::verify((stores.get(se), sb), (stores.get(de), db)).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(report.ok())
        }
        Command::Diff { keys } => {
            println!("{}", serde_json::to_string(&diff::run(keys))?);
            Ok(true)
        }
        Command::Queue {
            redis,
            cluster,
            rules,
            workers,
            slots,
            tasks,
            work,
            batch_acks,
        } => {
            anyhow::ensure!(
                workers > 0 && slots > 0 && tasks > 0 && rules > 0,
                "--workers, --slots, --tasks and --rules must be above 0"
            );
            anyhow::ensure!(
                workers >= rules,
                "--workers {workers} leaves some of the --rules {rules} without a worker"
            );
            let target = if cluster {
                ferry_bench::fleet::Target::Cluster(redis.split(',').map(str::to_string).collect())
            } else {
                ferry_bench::fleet::Target::Single(redis)
            };
            let report =
                ferry_bench::fleet::run(&target, (workers, slots, rules), tasks, work, batch_acks)
                    .await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(true)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ferry-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
