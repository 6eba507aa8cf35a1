//! `ferry-chaos --ferry PATH [--runs N] [--seed S] [--objects N] [--store garage|rgw]`: randomized fault
//! schedules against a real cluster (see `ferry_testkit::chaos`). Exits 1 on any anomaly.

use std::path::PathBuf;

use clap::Parser;
use ferry_testkit::chaos::{Options, run};
use ferry_testkit::servers::Kind;

#[derive(Parser)]
#[command(about = "Randomized fault schedules against a real ferry cluster")]
struct Args {
    /// The ferry binary to run.
    #[arg(long)]
    ferry: PathBuf,
    /// Schedules to run.
    #[arg(long, default_value_t = 10)]
    runs: u32,
    /// Seed of the first schedule (run i uses seed + i); default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Small objects per run (plus three large ones).
    #[arg(long, default_value_t = 400)]
    objects: usize,
    /// The S3 servers: `garage` or `rgw` (Ceph's RADOS Gateway).
    #[arg(long, default_value = "garage", value_parser = ["garage", "rgw"])]
    store: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    println!(
        "chaos: {} runs from seed {seed}, {} objects each (rerun one with --runs 1 --seed S)",
        args.runs, args.objects
    );
    let options = Options {
        ferry: args.ferry,
        runs: args.runs,
        seed,
        objects: args.objects,
        store: if args.store == "rgw" {
            Kind::Rgw
        } else {
            Kind::Garage
        },
    };
    let summary = run(&options).await;
    if summary.anomalies == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}
