//! An iteration's report, written where the rule's `report` says.
//!
//! Every key's line is appended to the iteration's report list in Redis (or the state dir) in
//! the same atomic step that settles the key: the planner's batch for the keys it skips, a
//! worker's ack for those it copies, deletes or skips. So each key has exactly one line,
//! whichever worker settled it and however many died on the way. The leader writes the list
//! out in gzip-compressed parts of [`PART_LINES`] lines as it fills (`part-000001.jsonl.gz`,
//! ...), each part recorded and trimmed from the list in one fenced step; once the iteration
//! is settled, it adds a line per dead letter (failed) and a summary line, and writes
//! `manifest.json`, which lists the parts. The layout: `ROOT/RULE/ITERATION/`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::config::Rule;
use ferry_core::object::{ObjectAttrs, WriteCondition};
use ferry_core::report::{ReportLine, ReportOutcome, ReportTarget};
use ferry_queue::{IterationRecord, LeaderToken};
use ferry_storage::{ObjectStore, PutOptions, StorageError};

use crate::{Context, CoordinatorError};

/// Lines per part.
pub const PART_LINES: usize = 10_000;

/// Where one iteration's report goes.
pub(crate) struct Report {
    rule: String,
    n: u64,
    place: Place,
}

enum Place {
    Dir(PathBuf),
    Bucket {
        store: Arc<dyn ObjectStore>,
        bucket: String,
        prefix: String,
    },
}

impl Report {
    /// The report of iteration `n` of `rule`, if the rule has one.
    pub(crate) fn of(ctx: &Context, rule: &Rule, n: u64) -> Option<Report> {
        let dir = ReportTarget::iteration_dir(&rule.name, n);
        let place = match rule.report.as_ref()? {
            ReportTarget::Dir(root) => Place::Dir(root.join(dir)),
            ReportTarget::Bucket {
                endpoint,
                bucket,
                prefix,
            } => Place::Bucket {
                store: ctx.stores.get(endpoint),
                bucket: bucket.clone(),
                prefix: format!("{prefix}{dir}/"),
            },
        };
        Some(Report {
            rule: rule.name.clone(),
            n,
            place,
        })
    }

    /// Writes out every full part of pending lines (all of them, with `all`).
    pub(crate) async fn drain(
        &self,
        ctx: &Context,
        token: &LeaderToken,
        all: bool,
    ) -> Result<(), CoordinatorError> {
        loop {
            let (part, lines) = ctx
                .queue
                .report_pending(&self.rule, self.n, PART_LINES, !all)
                .await?;
            if lines.is_empty() || (!all && lines.len() < PART_LINES) {
                return Ok(());
            }
            self.write(&part_name(part), &gzip(&lines, None)).await?;
            ctx.queue
                .report_written(&self.rule, self.n, part, lines.len(), token)
                .await?;
        }
    }

    /// Writes the rest: the pending lines, a line per dead letter of the iteration and the
    /// summary line, as the last part, then the manifest; then forgets the bookkeeping.
    pub(crate) async fn finish(
        &self,
        ctx: &Context,
        token: &LeaderToken,
        record: &IterationRecord,
    ) -> Result<(), CoordinatorError> {
        self.drain(ctx, token, false).await?;
        let (part, mut lines) = ctx
            .queue
            .report_pending(&self.rule, self.n, PART_LINES, false)
            .await?;
        let pending = lines.len();
        lines.extend(self.failed_lines(ctx).await?);
        let summary = summary(record);
        self.write(&part_name(part), &gzip(&lines, Some(&summary)))
            .await?;
        ctx.queue
            .report_written(&self.rule, self.n, part, pending, token)
            .await?;
        let manifest = serde_json::json!({
            "rule": self.rule,
            "iteration": self.n,
            "parts": (1..=part).map(part_name).collect::<Vec<_>>(),
            "summary": summary,
        });
        self.write("manifest.json", manifest.to_string().as_bytes())
            .await?;
        ctx.queue.report_done(&self.rule, self.n).await?;
        Ok(())
    }

    /// One `failed` line per key of the iteration's dead letters (a key's dead parts are
    /// one line).
    async fn failed_lines(&self, ctx: &Context) -> Result<Vec<String>, CoordinatorError> {
        let mut seen = BTreeSet::new();
        let prefix = format!("{}:", self.n);
        let mut lines = Vec::new();
        for dead in ctx.queue.dead_letters(&self.rule).await? {
            let Some(task) = dead.task.filter(|_| dead.id.starts_with(&prefix)) else {
                continue;
            };
            if !seen.insert(task.key().to_string()) {
                continue;
            }
            let source_etag = match &task {
                ferry_core::task::Task::CopyObject { source, .. } => Some(source.etag.clone()),
                ferry_core::task::Task::CopyPart(p) => Some(p.source.etag.clone()),
                ferry_core::task::Task::DeleteObject { .. } => None,
                ferry_core::task::Task::CopyVersions { versions, .. } => {
                    versions.last().map(|v| v.etag.clone())
                }
                ferry_core::task::Task::CopyVersion { version, .. } => Some(version.etag.clone()),
            };
            let line = ReportLine {
                key: task.key().to_string(),
                outcome: ReportOutcome::Failed,
                reason: None,
                error: Some(dead.error),
                bytes: task.bytes(),
                source_etag,
                destination_etag: None,
            };
            lines.push(line.to_json());
        }
        Ok(lines)
    }

    async fn write(&self, name: &str, body: &[u8]) -> Result<(), CoordinatorError> {
        match &self.place {
            Place::Dir(dir) => write_file(dir, name, body).map_err(|e| {
                CoordinatorError::Report(format!("writing {}: {e}", dir.join(name).display()))
            }),
            Place::Bucket {
                store,
                bucket,
                prefix,
            } => put(store.as_ref(), bucket, &format!("{prefix}{name}"), body)
                .await
                .map_err(CoordinatorError::Storage),
        }
    }
}

/// `part-000001.jsonl.gz`.
pub fn part_name(part: u64) -> String {
    format!("part-{part:06}.jsonl.gz")
}

/// The summary line: the iteration's counts.
fn summary(r: &IterationRecord) -> serde_json::Value {
    serde_json::json!({
        "summary": true,
        "iteration": r.number,
        "started_ms": r.started_ms,
        "ended_ms": r.ended_ms,
        "listed": r.listed,
        "copied": r.copied,
        "copied_bytes": r.copied_bytes,
        "skipped": r.skipped,
        "deleted": r.deleted,
        "failed": r.dead,
    })
}

fn gzip(lines: &[String], last: Option<&serde_json::Value>) -> Vec<u8> {
    let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writes into memory cannot fail.
    for line in lines {
        out.write_all(line.as_bytes()).ok();
        out.write_all(b"\n").ok();
    }
    if let Some(last) = last {
        out.write_all(last.to_string().as_bytes()).ok();
        out.write_all(b"\n").ok();
    }
    out.finish().unwrap_or_default()
}

/// Writes `dir/name` whole or not at all (a temporary file, synced, then renamed). A report
/// names every key, so it is private: directories 0700, files 0600.
fn write_file(dir: &std::path::Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(body)?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(name))
}

async fn put(
    store: &dyn ObjectStore,
    bucket: &str,
    key: &str,
    body: &[u8],
) -> Result<(), StorageError> {
    let attrs = ObjectAttrs {
        content_type: Some(if key.ends_with(".gz") {
            "application/gzip".into()
        } else {
            "application/json".into()
        }),
        ..ObjectAttrs::default()
    };
    let condition = WriteCondition::None;
    let bytes = bytes::Bytes::copy_from_slice(body);
    let stream = futures::stream::once(async move { Ok(bytes) });
    store
        .put(
            bucket,
            key,
            Box::pin(stream),
            body.len() as u64,
            PutOptions::new(&attrs, &condition),
        )
        .await
        .map(drop)
}
