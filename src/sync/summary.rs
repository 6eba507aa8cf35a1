//! What a sync did: counted from its iterations' records, and said (a summary, or JSON).

use std::collections::BTreeMap;

use anyhow::Context as _;
use ferry_queue::{DeadLetter, IterationRecord, Queue, TaskId};
use serde::Serialize;

use super::SyncArgs;
use crate::failure::Failure;
use crate::human::bytes;

/// What one sync did, as `--json` prints it.
#[derive(Debug, Default, Serialize)]
pub(super) struct Summary {
    pub(super) rule: String,
    pub(super) backend: &'static str,
    pub(super) iterations: u64,
    pub(super) listed: u64,
    /// Every listed object not copied, whatever the reason: the sum of `skipped_by`.
    pub(super) skipped: u64,
    /// Why: `unchanged`, `destination_newer`, `unmanaged` (ferry did not write it, and it
    /// differs), `overwrite_never`, `archived` (not restored).
    pub(super) skipped_by: BTreeMap<&'static str, u64>,
    pub(super) copied: u64,
    pub(super) bytes: u64,
    pub(super) deleted: u64,
    pub(super) failed: u64,
    pub(super) seconds: f64,
    /// A signal stopped the sync before it was done (it exits 130 or 143).
    pub(super) interrupted: bool,
    pub(super) failures: Vec<FailedObject>,
    /// The source keys found archived and not restored (up to 10,000 per iteration).
    pub(super) archived_keys: Vec<String>,
    /// The last iteration this run worked on.
    #[serde(skip)]
    pub(super) last_iteration: u64,
    /// The manifest of the last iteration's report (in the state dir).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) report: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct FailedObject {
    key: String,
    error: String,
    attempts: u32,
}

/// Adds up the iterations from `first` on, whole (a resumed one counts what the runs before
/// did in it too), the one still running included when a signal stopped this run; and lists
/// their dead letters.
pub(super) async fn summarize(queue: &Queue, rule: &str, first: u64) -> Result<Summary, Failure> {
    let mut records = queue
        .history(rule)
        .await
        .context("reading the iterations")?;
    if let Some(latest) = queue
        .latest_iteration(rule)
        .await
        .context("reading the rule")?
        && !records.iter().any(|r| r.number == latest.number)
    {
        records.push(latest);
    }
    let mut summary = Summary {
        rule: rule.to_string(),
        ..Summary::default()
    };
    let mut by: BTreeMap<&'static str, u64> = IterationRecord::default().skipped_by_reason();
    for r in records.iter().filter(|r| r.number >= first) {
        if r.archived > 0 {
            summary.archived_keys.extend(
                queue
                    .archived_keys(rule, r.number)
                    .await
                    .context("reading the archived keys")?,
            );
        }
        summary.iterations += 1;
        summary.last_iteration = summary.last_iteration.max(r.number);
        summary.listed += r.listed;
        for (reason, n) in r.skipped_by_reason() {
            *by.entry(reason).or_default() += n;
        }

        summary.copied += r.copied;
        summary.bytes += r.copied_bytes;
        summary.deleted += r.deleted;
    }
    let dead: Vec<DeadLetter> = queue
        .dead_letters(rule)
        .await
        .context("reading dead letters")?;
    summary.failures = dead
        .into_iter()
        .filter(|d| TaskId::parse(&d.id).is_some_and(|id| id.iteration() >= first))
        .map(|d| FailedObject {
            key: d.key.unwrap_or_else(|| format!("(task {})", d.id)),
            error: d.error,
            attempts: d.attempts,
        })
        .collect();
    summary.failed = summary.failures.len() as u64;
    summary.skipped = by.values().sum();
    summary.skipped_by = by;
    Ok(summary)
}

/// Failed and archived keys named on screen; `--json` has them all.
const SHOWN_KEYS: usize = 20;

pub(super) fn report(args: &SyncArgs, s: &Summary) -> Result<(), Failure> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string(s).context("encoding the summary")?
        );
        return Ok(());
    }
    for f in s.failures.iter().take(SHOWN_KEYS) {
        eprintln!("failed: {} ({} attempts): {}", f.key, f.attempts, f.error);
    }
    if s.failures.len() > SHOWN_KEYS {
        eprintln!(
            "failed: ... and {} more (all in --json, and in ferry dead-letters list)",
            s.failures.len() - SHOWN_KEYS
        );
    }
    eprintln!(
        "{}: {} listed, {} copied ({}), {} skipped{}, {} deleted, {} failed in {:.1}s ({} iteration(s), {} queue)",
        s.rule,
        s.listed,
        s.copied,
        bytes(s.bytes),
        s.skipped,
        skip_reasons(&s.skipped_by),
        s.deleted,
        s.failed,
        s.seconds,
        s.iterations,
        s.backend
    );
    if let Some(report) = &s.report {
        eprintln!("report: {report} (ferry report --state-dir ... RULE prints it)");
    }
    let unmanaged = s.skipped_by.get("unmanaged").copied().unwrap_or(0);
    if unmanaged > 0 {
        eprintln!(
            "{unmanaged} destination object(s) were not written by ferry and differ from the \
             source, so they were left as they are; --overwrite-unmanaged replaces them (as \
             --overwrite allows)"
        );
    }
    let archived = s.skipped_by.get("archived").copied().unwrap_or(0);
    if archived > 0 {
        eprintln!(
            "{archived} source object(s) are archived and not restored, so they could not be \
             read; restore them, and the next run copies them"
        );
        for key in s.archived_keys.iter().take(SHOWN_KEYS) {
            eprintln!("archived: {key}");
        }
        if s.archived_keys.len() > SHOWN_KEYS {
            eprintln!(
                "archived: ... and {} more (all in --json)",
                archived as usize - SHOWN_KEYS
            );
        }
    }
    Ok(())
}

/// ` (N unchanged, M unmanaged, ...)`, the reasons that counted any, or nothing.
pub(crate) fn skip_reasons(by: &BTreeMap<&'static str, u64>) -> String {
    let said: Vec<String> = by
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{n} {}", reason.replace('_', " ")))
        .collect();
    if said.is_empty() {
        String::new()
    } else {
        format!(" ({})", said.join(", "))
    }
}
