//! The `ferry` binary: parses the command line, loads the config, and calls into the crates.
//! Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod coordinator;
mod dead_letters;
mod estimate;
mod failure;
mod forget;
mod human;
mod init;
mod logging;
mod probe;
mod queues;
mod remote;
mod report;
mod run;
mod shutdown;
mod startup;
mod status;
mod sync;
mod validate;
mod verify;
mod worker;

use failure::Failure;

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
pub(crate) enum LogFormat {
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
    /// Compare SRC and DST key by key, independently of what ferry recorded: every key that
    /// is missing, differs, or cannot be compared, and a summary; exit 3 when any key is
    /// missing or differs.
    Verify(Box<verify::VerifyArgs>),
    /// What each rule's next iteration would do, from one listing of both sides: objects and
    /// bytes to copy, delete and skip, requests per side, cost (with [pricing]) and time.
    Estimate(Box<estimate::EstimateCommand>),
    /// An iteration's report: every key it acted on, with its outcome (copied, deleted,
    /// skipped and why, failed and why), and its summary.
    Report(Box<report::ReportCommand>),
    /// Write a commented starter config (ferry.toml, readable by you alone).
    Init(init::InitArgs),
    /// Check a config file and print every problem found.
    Validate(startup::Common),
    /// Plan iterations: list, diff and enqueue copy tasks for every rule.
    Coordinator(coordinator::CoordinatorCommand),
    /// Claim and copy tasks.
    Worker(worker::WorkerCommand),
    /// Per rule: state, current iteration, last iterations, queue depth and lag.
    Status(status::StatusCommand),
    /// Per rule and shard: pending, leased (by which workers), retrying, dead, the oldest
    /// pending task's age, the last minute's throughput; and the workers, live and dead.
    Queues(queues::QueuesCommand),
    /// List, retry (back on their queues) or purge the tasks in dead letters.
    DeadLetters(dead_letters::DeadLettersCommand),
    /// What a store does and does not do, measured with a few small objects under
    /// `.ferry-probe/` (removed after), and what ferry does about each answer.
    Probe(Box<probe::ProbeArgs>),
    /// Drop a pairing (its ledger, queues and history; the objects stay), so that its
    /// buckets may be paired again. Stop the processes that run it first.
    Forget(Box<forget::ForgetArgs>),
    /// Coordinator and workers in one process.
    Run(run::RunCommand),
}

fn main() -> ExitCode {
    logging::redact_panics();
    let cli = Cli::parse();
    // `sync` draws progress on stderr: only warnings and errors go there besides, unless -v.
    let quiet_by_default = matches!(
        cli.command,
        Command::Sync(_) | Command::Probe(_) | Command::Verify(_)
    );
    logging::init_logging(cli.log.level(quiet_by_default), cli.log.log_format);
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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(matches!(cli.log.log_format, LogFormat::Json)),
    }
}

async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Sync(args) => sync::run(*args).await,
        Command::Verify(args) => verify::run(*args).await,
        Command::Estimate(args) => estimate::run(*args).await,
        Command::Report(args) => report::run(*args).await,
        Command::Init(args) => init::run(args),
        Command::Validate(common) => validate::run(&common),
        Command::Coordinator(args) => coordinator::run(args).await,
        Command::Worker(args) => worker::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Queues(args) => queues::run(args).await,
        Command::DeadLetters(args) => dead_letters::run(args).await,
        Command::Probe(args) => probe::run(*args).await,
        Command::Forget(args) => forget::run(*args).await,
        Command::Run(args) => run::run(args).await,
    }
}
