//! `ferry status`: per rule, its state, the current iteration's progress, the last
//! iterations and the replication lag, read from Redis only (it changes nothing).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_common::queue::{
    IterationRecord, IterationState, QueueDepth, QueueError, RuleState, ViewQueue,
};
use serde::Serialize;

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
    skipped: u64,
    archived: u64,
    planned: u64,
    done: u64,
    copied: u64,
    copied_bytes: u64,
    deleted: u64,
    failed: u64,
}

pub(crate) fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
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
            archived: r.archived,
            planned: r.planned,
            done: r.done,
            copied: r.copied,
            copied_bytes: r.copied_bytes,
            deleted: r.deleted,
            failed: r.dead,
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
        });
    }
    Ok(out)
}

pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
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
        for i in s.last_iterations.iter().take(SHOWN) {
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
        }
    }
    out
}
