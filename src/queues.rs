//! `ferry queues`: per rule and shard, the backlog (pending, leased and by whom, retrying,
//! dead), the oldest pending task's age, the last minute's throughput, and the worker fleet.
//! It reads Redis only and changes nothing. `ferry dead-letters` lives here too.

use ferry_queue::{
    DeadLetter, QueueError, ShardView, THROUGHPUT_WINDOW, Throughput, ViewQueue, WorkerSeen,
};
use serde::Serialize;

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::failure::Failure;
use crate::human::{bytes, time};
use crate::startup::{self, Common};

/// `ferry queues` arguments.
#[derive(Args)]
pub(crate) struct QueuesCommand {
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
}

/// Prints the queues once, as JSON, or again every 2 seconds (`--watch`).
pub(crate) async fn run(args: QueuesCommand) -> Result<(), Failure> {
    let (queue, rules) = startup::open_to_read(&args.common, args.rule.as_deref()).await?;
    loop {
        let view = gather(&rules, &queue, args.rule.as_deref())
            .await
            .context("reading queues from redis")?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&view).context("encoding json")?
            );
            return Ok(());
        }
        if !args.watch {
            print!("{}", render(&view));
            return Ok(());
        }
        // like top: home the cursor and clear, then redraw
        print!("\x1b[H\x1b[2J{}", render(&view));
        use std::io::Write;
        std::io::stdout().flush().ok(); // redrawn in 2 s anyway
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct QueuesView {
    rules: Vec<RuleQueues>,
    workers: Vec<WorkerSeen>,
}

#[derive(Serialize)]
struct RuleQueues {
    rule: String,
    pending: u64,
    leased: u64,
    retrying: u64,
    dead: u64,
    /// Tasks and bytes finished over the last minute.
    last_minute: Throughput,
    shards: Vec<ShardView>,
}

/// Reads the queues of `only` (or every rule of `names`) and the worker registry.
pub(crate) async fn gather(
    names: &[String],
    queue: &dyn ViewQueue,
    only: Option<&str>,
) -> Result<QueuesView, QueueError> {
    let mut rules = Vec::new();
    for name in names
        .iter()
        .filter(|r| only.is_none_or(|o| o == r.as_str()))
    {
        let shards = queue.shard_views(name).await?;
        let sum = |f: fn(&ShardView) -> u64| shards.iter().map(f).sum();
        rules.push(RuleQueues {
            rule: name.clone(),
            pending: sum(|s| s.pending),
            leased: sum(|s| s.leased),
            retrying: sum(|s| s.retrying),
            dead: sum(|s| s.dead),
            last_minute: queue.throughput(name).await?,
            shards,
        });
    }
    Ok(QueuesView {
        rules,
        workers: queue.workers().await?,
    })
}

fn age(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |ms| format!("{:.0}s", ms as f64 / 1000.0))
}

/// The human-readable form: one table per rule, then the workers.
pub(crate) fn render(view: &QueuesView) -> String {
    let mut out = String::new();
    for r in &view.rules {
        out += &format!(
            "{}  pending {}  leased {}  retrying {}  dead {}  last {}s: {} tasks, {}\n",
            r.rule,
            r.pending,
            r.leased,
            r.retrying,
            r.dead,
            THROUGHPUT_WINDOW,
            r.last_minute.tasks,
            bytes(r.last_minute.bytes)
        );
        if r.shards.is_empty() {
            out += "  no tasks yet\n";
            continue;
        }
        out += &format!(
            "  {:>5} {:>9} {:>7} {:>9} {:>6} {:>8} {:>10} {:>9}  LEASED BY\n",
            "SHARD", "PENDING", "LEASED", "RETRYING", "DEAD", "OLDEST", "LIMIT", "THROTTLED"
        );
        for s in &r.shards {
            let by: Vec<String> = s
                .leased_by
                .iter()
                .map(|(w, n)| format!("{w}:{n}"))
                .collect();
            let limit = match (s.limit, s.probing) {
                (None, _) => "-".to_string(),
                (Some(_), true) => "probing".to_string(),
                (Some(l), false) => l.to_string(),
            };
            out += &format!(
                "  {:>5} {:>9} {:>7} {:>9} {:>6} {:>8} {:>10} {:>9}  {}\n",
                s.shard,
                s.pending,
                s.leased,
                s.retrying,
                s.dead,
                age(s.oldest_pending_ms),
                limit,
                s.throttled,
                by.join(" ")
            );
        }
    }
    out += &render_workers(&view.workers);
    out
}

/// The worker fleet: live ones, then dead ones until they are forgotten.
pub(crate) fn render_workers(workers: &[WorkerSeen]) -> String {
    if workers.is_empty() {
        return "workers: none registered\n".into();
    }
    let live = workers.iter().filter(|w| w.alive).count();
    let mut out = format!(
        "workers: {live} live, {} dead\n  {:<24} {:<5} {:<16} {:>8} {:>9} {:>10} {:>7}  {}\n",
        workers.len() - live,
        "ID",
        "STATE",
        "HOST",
        "PID",
        "IN FLIGHT",
        "COMPLETED",
        "FAILED",
        "LAST SEEN"
    );
    for w in workers {
        out += &format!(
            "  {:<24} {:<5} {:<16} {:>8} {:>9} {:>10} {:>7}  {} ago\n",
            w.info.id,
            if w.alive { "live" } else { "dead" },
            w.info.host,
            w.info.pid,
            w.info.in_flight,
            w.info.completed,
            w.info.failed,
            age(Some(w.silent_ms))
        );
    }
    out
}

/// The human-readable list of dead letters.
pub(crate) fn render_dead(rule: &str, letters: &[DeadLetter]) -> String {
    let mut out = format!("{rule}: {} dead letter(s)\n", letters.len());
    for d in letters {
        out += &format!(
            "  {}  {}  {} attempt(s)  died {}\n    key: {}\n    error: {}\n",
            d.id,
            d.kind,
            d.attempts,
            time(d.died_ms),
            d.key.as_deref().unwrap_or("?"),
            d.error
        );
    }
    out
}
