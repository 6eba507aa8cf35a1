//! An iteration's report: where it is written (a rule's `report`), and its records, one JSON
//! object per line: every key the iteration acted on, with its outcome.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a rule's reports go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportTarget {
    /// A local directory (`file:///var/lib/ferry/reports`).
    Dir(PathBuf),
    /// A bucket of an endpoint, under a prefix (`s3://ENDPOINT/BUCKET/PREFIX`).
    Bucket {
        /// The endpoint's name in the config.
        endpoint: String,
        /// The bucket.
        bucket: String,
        /// The prefix reports go under (empty, or ending in `/`).
        prefix: String,
    },
}

impl ReportTarget {
    /// Reads `file:///ABSOLUTE/DIR` or `s3://ENDPOINT/BUCKET[/PREFIX]`.
    pub fn parse(text: &str) -> Result<ReportTarget, String> {
        if let Some(path) = text.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{text:?}: a file:// report needs an absolute path (file:///var/lib/ferry/reports)"
                ));
            }
            return Ok(ReportTarget::Dir(PathBuf::from(path)));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let mut it = rest.splitn(3, '/');
            let (endpoint, bucket) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            if endpoint.is_empty() || bucket.is_empty() {
                return Err(format!(
                    "{text:?}: an s3:// report is s3://ENDPOINT/BUCKET[/PREFIX], with an endpoint of this file"
                ));
            }
            let mut prefix = it.next().unwrap_or("").trim_matches('/').to_string();
            if !prefix.is_empty() {
                prefix.push('/');
            }
            return Ok(ReportTarget::Bucket {
                endpoint: endpoint.into(),
                bucket: bucket.into(),
                prefix,
            });
        }
        Err(format!(
            "{text:?} must start with file:// (a directory) or s3:// (ENDPOINT/BUCKET/PREFIX)"
        ))
    }

    /// Where the report of `rule`'s iteration `n` goes, relative to the target's root.
    pub fn iteration_dir(rule: &str, n: u64) -> String {
        format!("{rule}/{n:08}")
    }
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportOutcome {
    /// Copied to the destination.
    Copied,
    /// Deleted at the destination.
    Deleted,
    /// Left as it is (`reason` says why).
    Skipped,
    /// Given up on (`error` says why): a dead letter.
    Failed,
}

impl ReportOutcome {
    /// Its name, as `--outcome` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportOutcome::Copied => "copied",
            ReportOutcome::Deleted => "deleted",
            ReportOutcome::Skipped => "skipped",
            ReportOutcome::Failed => "failed",
        }
    }

    /// Every outcome's name.
    pub const NAMES: [&'static str; 4] = ["copied", "deleted", "skipped", "failed"];
}

/// One key in an iteration's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportLine {
    /// The key.
    pub key: String,
    /// What happened.
    pub outcome: ReportOutcome,
    /// For `skipped`: why (`unchanged`, `destination_newer`, `unmanaged`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `failed`: the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes moved (copied) or of the object (skipped).
    pub bytes: u64,
    /// The source's ETag, where there is a source object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_etag: Option<String>,
    /// The destination's ETag after the copy (or as it was, skipped or deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_etag: Option<String>,
}

impl ReportLine {
    /// The line as the report stores it (one JSON object, no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_a_directory_or_a_bucket_and_nothing_else() {
        assert_eq!(
            ReportTarget::parse("file:///var/lib/ferry/reports"),
            Ok(ReportTarget::Dir("/var/lib/ferry/reports".into()))
        );
        assert_eq!(
            ReportTarget::parse("s3://aws/audit/ferry/reports/"),
            Ok(ReportTarget::Bucket {
                endpoint: "aws".into(),
                bucket: "audit".into(),
                prefix: "ferry/reports/".into()
            })
        );
        assert!(matches!(
            ReportTarget::parse("s3://aws/audit"),
            Ok(ReportTarget::Bucket { prefix, .. }) if prefix.is_empty()
        ));
        assert!(ReportTarget::parse("file://relative/dir").is_err());
        assert!(ReportTarget::parse("s3://aws").is_err());
        assert!(ReportTarget::parse("/var/reports").is_err());
    }

    #[test]
    fn lines_read_back_as_written() {
        let line = ReportLine {
            key: "a/b".into(),
            outcome: ReportOutcome::Skipped,
            reason: Some("unchanged".into()),
            error: None,
            bytes: 3,
            source_etag: Some("e".into()),
            destination_etag: None,
        };
        let text = line.to_json();
        assert!(text.contains(r#""outcome":"skipped""#), "{text}");
        assert_eq!(serde_json::from_str::<ReportLine>(&text).unwrap(), line);
    }
}
