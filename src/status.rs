//! `ferry status`: per rule, its state, the current iteration's progress, the last
//! iterations and the replication lag, read from Redis only (it changes nothing).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use ferry_queue::{IterationRecord, IterationState, QueueDepth, QueueError, RuleState, ViewQueue};
use serde::Serialize;

use crate::failure::Failure;
use crate::human::{bytes, time};
use crate::startup::{self, Common};

/// `ferry status` arguments.
#[derive(Args)]
pub(crate) struct StatusCommand {
    #[command(flatten)]
    common: Common,
    /// Only this rule.
    rule: Option<String>,
    /// Print JSON instead of columns.
    #[arg(long)]
    json: bool,
}

/// Prints each rule's status and the workers seen.
pub(crate) async fn run(args: StatusCommand) -> Result<(), Failure> {
    let (queue, rules) = startup::open_to_read(&args.common, args.rule.as_deref()).await?;
    let statuses = gather(&rules, &queue, args.rule.as_deref())
        .await
        .context("reading status from redis")?;
    let workers = queue
        .workers()
        .await
        .context("reading workers from redis")?;
    if args.json {
        let value = serde_json::json!({ "rules": statuses, "workers": workers });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).context("encoding json")?
        );
    } else {
        print!("{}", render(&statuses));
        print!("{}", crate::queues::render_workers(&workers));
    }
    Ok(())
}

/// Iterations shown per rule in the human-readable form (JSON has all that are kept).
const SHOWN: usize = 5;

#[derive(Serialize)]
pub(crate) struct RuleStatus {
    rule: String,
    /// running, waiting, stopped or failed.
    state: String,
    /// Why it failed (its last iteration, or its listing).
    reason: Option<String>,
    leader: Option<String>,
    current: Option<Iteration>,
    last_iterations: Vec<Iteration>,
    queue: Depth,
    /// Age of the oldest unfinished task, in seconds.
    lag_seconds: Option<f64>,
    /// Event-driven copies, for a rule that has had events.
    events: Option<Events>,
}

/// What events did, and what iterations found that they missed.
#[derive(Serialize)]
struct Events {
    /// Event tasks enqueued, done, copied, deleted, failed.
    tasks: u64,
    done: u64,
    copied: u64,
    deleted: u64,
    failed: u64,
    /// Copies whose lag from their event was measured, and that lag.
    measured: u64,
    within_1s: u64,
    within_5s: u64,
    within_30s: u64,
    over_30s: u64,
    lag_mean_seconds: Option<f64>,
    lag_max_seconds: Option<f64>,
    lag_last_seconds: Option<f64>,
    /// Changes the last finished iteration found that no event had announced, and over
    /// the iterations kept.
    missed_last_iteration: u64,
    missed_total: u64,
}

#[derive(Serialize)]
struct Depth {
    pending: u64,
    leased: u64,
    retrying: u64,
    dead: u64,
}

#[derive(Serialize)]
struct Iteration {
    number: u64,
    state: String,
    empty: bool,
    started: String,
    ended: Option<String>,
    duration_seconds: Option<f64>,
    listed: u64,
    /// Skipped by the diff, or on a worker's second look (the record's own count).
    skipped: u64,
    /// Every object not copied, by why (archived included).
    skipped_by: std::collections::BTreeMap<&'static str, u64>,
    archived: u64,
    planned: u64,
    done: u64,
    copied: u64,
    copied_bytes: u64,
    /// Copies of multipart sources whose ETag differs from the source's.
    etag_differs: u64,
    deleted: u64,
    failed: u64,
    missed: u64,
}

impl From<&IterationRecord> for Iteration {
    fn from(r: &IterationRecord) -> Self {
        let ended = (r.ended_ms > 0).then_some(r.ended_ms);
        Iteration {
            number: r.number,
            state: r.state_name().to_string(),
            empty: r.ended_ms > 0 && r.is_empty(),
            started: time(r.started_ms),
            ended: ended.map(time),
            duration_seconds: ended.map(|e| e.saturating_sub(r.started_ms) as f64 / 1000.0),
            listed: r.listed,
            skipped: r.skipped,
            skipped_by: r.skipped_by_reason(),
            archived: r.archived,
            planned: r.planned,
            done: r.done,
            copied: r.copied,
            copied_bytes: r.copied_bytes,
            etag_differs: r.etag_differs,
            deleted: r.deleted,
            failed: r.dead,
            missed: r.missed,
        }
    }
}

/// Gathers the status of `only` (or every rule of `rules`).
pub(crate) async fn gather(
    rules: &[String],
    queue: &dyn ViewQueue,
    only: Option<&str>,
) -> Result<Vec<RuleStatus>, QueueError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut out = Vec::new();
    for name in rules
        .iter()
        .filter(|r| only.is_none_or(|o| o == r.as_str()))
    {
        let leader = queue.leader_of(name).await?;
        let latest = queue.latest_iteration(name).await?;
        let history = queue.history(name).await?;
        let record = queue.rule_record(name).await?;
        let last_failed = history
            .first()
            .is_some_and(|r| r.state == Some(IterationState::Failed));
        let state = match (&leader, record.state) {
            (Some(_), Some(s @ (RuleState::Running | RuleState::Waiting | RuleState::Failed))) => s,
            (Some(_), _) => RuleState::Running,
            (None, Some(RuleState::Failed)) => RuleState::Failed,
            (None, _) if last_failed => RuleState::Failed,
            (None, _) => RuleState::Stopped,
        };
        let reason = (state == RuleState::Failed)
            .then(|| record.reason.clone())
            .flatten();
        let QueueDepth {
            pending,
            leased,
            retrying,
            dead,
        } = queue.depth(name).await?;
        let lag_seconds = queue
            .oldest_pending_ms(name)
            .await?
            .map(|t| now_ms.saturating_sub(t) as f64 / 1000.0);
        let events = events_of(queue, name, &history).await?;
        out.push(RuleStatus {
            rule: name.clone(),
            state: state.as_str().to_string(),
            reason,
            leader,
            current: latest
                .as_ref()
                .filter(|r| r.is_running())
                .map(Iteration::from),
            last_iterations: history.iter().map(Iteration::from).collect(),
            queue: Depth {
                pending,
                leased,
                retrying,
                dead,
            },
            lag_seconds,
            events,
        });
    }
    Ok(out)
}

/// What events did for rule `name`, if it has had any (or iterations found some missed).
async fn events_of(
    queue: &dyn ViewQueue,
    name: &str,
    history: &[IterationRecord],
) -> Result<Option<Events>, QueueError> {
    let record = queue.events_record(name).await?;
    let missed_total = history.iter().map(|r| r.missed).sum::<u64>();
    let measured = record.measured();
    let seconds = |ms: u64| (measured > 0).then(|| ms as f64 / 1000.0);
    Ok(
        (record.tasks.planned > 0 || missed_total > 0).then(|| Events {
            tasks: record.tasks.planned,
            done: record.tasks.done,
            copied: record.tasks.copied,
            deleted: record.tasks.deleted,
            failed: record.tasks.dead,
            measured,
            within_1s: record.lag_bands[0],
            within_5s: record.lag_bands[1],
            within_30s: record.lag_bands[2],
            over_30s: record.lag_bands[3],
            lag_mean_seconds: seconds(record.lag_sum_ms / measured.max(1)),
            lag_max_seconds: seconds(record.lag_max_ms),
            lag_last_seconds: seconds(record.lag_last_ms),
            missed_last_iteration: history.first().map_or(0, |r| r.missed),
            missed_total,
        }),
    )
}

/// The human-readable form: one block per rule.
pub(crate) fn render(statuses: &[RuleStatus]) -> String {
    let mut out = String::new();
    for s in statuses {
        let lag = s
            .lag_seconds
            .map_or("-".to_string(), |l| format!("{l:.0}s"));
        out += &format!(
            "{}  state: {}  leader: {}  lag: {}  queue: {} pending, {} leased, {} retrying, {} dead\n",
            s.rule,
            s.state,
            s.leader.as_deref().unwrap_or("-"),
            lag,
            s.queue.pending,
            s.queue.leased,
            s.queue.retrying,
            s.queue.dead
        );
        if let Some(reason) = &s.reason {
            out += &format!("  failed: {reason}\n");
        }
        if let Some(e) = &s.events {
            out += &render_events(e, s.last_iterations.len());
        }
        if let Some(c) = &s.current {
            out += &format!(
                "  current: #{} since {}: {} listed, {} planned, {} done, {} copied ({}), {} failed\n",
                c.number,
                c.started,
                c.listed,
                c.planned,
                c.done,
                c.copied,
                bytes(c.copied_bytes),
                c.failed
            );
        }
        if s.last_iterations.is_empty() {
            out += "  no finished iteration yet\n";
            continue;
        }
        out += &render_history(&s.last_iterations);
    }
    out
}

/// What events did, in two lines.
fn render_events(e: &Events, iterations: usize) -> String {
    let mut out = String::new();
    let lag = |v: Option<f64>| v.map_or("-".to_string(), |l| format!("{l:.2}s"));
    out += &format!(
        "  events: {} tasks, {} done, {} copied, {} deleted, {} failed; lag from event to copy: mean {}, max {}, last {} ({} within 1s, {} within 5s, {} within 30s, {} later)\n",
        e.tasks,
        e.done,
        e.copied,
        e.deleted,
        e.failed,
        lag(e.lag_mean_seconds),
        lag(e.lag_max_seconds),
        lag(e.lag_last_seconds),
        e.within_1s,
        e.within_5s,
        e.within_30s,
        e.over_30s
    );
    out += &format!(
        "  missed events: {} found by the last iteration, {} over the last {} iterations\n",
        e.missed_last_iteration, e.missed_total, iterations
    );
    out
}

/// The last iterations, one row each (and why keys were skipped, below a row).
fn render_history(iterations: &[Iteration]) -> String {
    let mut out = String::new();
    out += &format!(
        "  {:<6} {:<17} {:<21} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11} {:>7}\n",
        "ITER",
        "OUTCOME",
        "STARTED",
        "SECONDS",
        "LISTED",
        "SKIPPED",
        "ARCHIVED",
        "COPIED",
        "BYTES",
        "FAILED"
    );
    for i in iterations.iter().take(SHOWN) {
        let outcome = if i.empty {
            format!("{} (empty)", i.state)
        } else {
            i.state.clone()
        };
        out += &format!(
            "  #{:<5} {:<17} {:<21} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>11} {:>7}\n",
            i.number,
            outcome,
            i.started,
            i.duration_seconds.unwrap_or(0.0),
            i.listed,
            i.skipped,
            i.archived,
            i.copied,
            bytes(i.copied_bytes),
            i.failed
        );
        if i.etag_differs > 0 {
            out += &format!(
                "         {} cop{} with another ETag than the source's (ETag differs: source layout unknown)\n",
                i.etag_differs,
                if i.etag_differs == 1 { "y" } else { "ies" }
            );
        }
        let reasons: Vec<String> = i
            .skipped_by
            .iter()
            .filter(|(reason, n)| **n > 0 && **reason != "archived")
            .map(|(reason, n)| format!("{n} {}", reason.replace('_', " ")))
            .collect();
        if !reasons.is_empty() {
            out += &format!("         skipped: {}\n", reasons.join(", "));
        }
        if let Some(n) = i.skipped_by.get("unmanaged").filter(|n| **n > 0) {
            out += &format!(
                "         {n} destination object(s) ferry did not write differ from the source: left as they are (overwrite_unmanaged = true, or sync --overwrite-unmanaged, replaces them)\n"
            );
        }
    }
    out
}
