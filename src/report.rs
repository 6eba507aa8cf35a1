//! `ferry report RULE [ITERATION]`: an iteration's report, printed or filtered. The report is
//! where the rule's `report` says, or, for a pairing of `ferry sync`, in the state dir.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use ferry_core::config::Config;
use ferry_core::report::{ReportLine, ReportOutcome, ReportTarget};
use ferry_storage::{ObjectStore, Stores};
use futures::TryStreamExt as _;

use crate::failure::Failure;
use crate::human::bytes;
use crate::startup::{self, Common, S3Args};

/// `ferry report` arguments.
#[derive(Args)]
pub(crate) struct ReportCommand {
    #[command(flatten)]
    common: Common,
    /// The rule (a `ferry sync` pairing's name, `sync-...`, for its state dir's reports).
    rule: String,
    /// The iteration [default: the last one with a report].
    iteration: Option<u64>,
    /// Only keys with this outcome: copied, deleted, skipped or failed.
    #[arg(long, value_name = "OUTCOME")]
    outcome: Option<String>,
    /// The report's own lines (JSON), the summary line last.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: S3Args,
}

/// Where the reports are.
enum Root {
    Dir(PathBuf),
    Bucket {
        store: std::sync::Arc<dyn ObjectStore>,
        bucket: String,
        prefix: String,
    },
}

pub(crate) async fn run(args: ReportCommand) -> Result<(), Failure> {
    let outcome = match args.outcome.as_deref() {
        None => None,
        Some(o) => Some(
            ReportOutcome::NAMES
                .iter()
                .position(|n| *n == o)
                .ok_or_else(|| {
                    Failure::config(
                        "--outcome",
                        format!("{o:?} is none of {}", ReportOutcome::NAMES.join(", ")),
                    )
                })?,
        ),
    };
    let config = startup::load_to_read(&args.common)?;
    let root = root(&args, &config).await?;
    let n = match args.iteration {
        Some(n) => n,
        None => latest(&root, &args.rule).await?,
    };
    let dir = ReportTarget::iteration_dir(&args.rule, n);
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&root, &dir, "manifest.json").await?)
            .context("reading the report's manifest")?;
    let parts: Vec<String> = manifest["parts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let wanted = outcome.map(|i| ReportOutcome::NAMES[i]);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for part in parts {
        let gz = read(&root, &dir, &part).await?;
        let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(gz.as_slice()));
        for line in reader.lines() {
            let line = line.with_context(|| format!("reading {part}"))?;
            print_line(&mut out, &line, wanted, args.json)?;
        }
    }
    out.flush().context("writing the report")?;
    Ok(())
}

fn print_line(
    out: &mut impl std::io::Write,
    line: &str,
    wanted: Option<&str>,
    json: bool,
) -> Result<(), Failure> {
    if let Ok(l) = serde_json::from_str::<ReportLine>(line) {
        if wanted.is_some_and(|w| w != l.outcome.as_str()) {
            return Ok(());
        }
        if json {
            writeln!(out, "{line}").ok(); // a closed stdout (`| head`) ends nothing
        } else {
            let why = l.reason.or(l.error).unwrap_or_default();
            writeln!(
                out,
                "{:<8} {} ({}) {why}",
                l.outcome.as_str(),
                l.key,
                bytes(l.bytes)
            )
            .ok();
        }
        return Ok(());
    }
    // The summary line.
    if json {
        writeln!(out, "{line}").ok();
    } else if wanted.is_none() {
        let s: serde_json::Value = serde_json::from_str(line).context("reading the summary")?;
        writeln!(
            out,
            "iteration {}: {} listed, {} copied ({}), {} skipped, {} deleted, {} failed",
            s["iteration"],
            s["listed"],
            s["copied"],
            bytes(s["copied_bytes"].as_u64().unwrap_or(0)),
            s["skipped"],
            s["deleted"],
            s["failed"]
        )
        .ok();
    }
    Ok(())
}

/// The rule's report root: its `report`, or the state dir's for a `sync` pairing.
async fn root(args: &ReportCommand, config: &Config) -> Result<Root, Failure> {
    let rule = config.rules.iter().find(|r| r.name == args.rule);
    match rule.and_then(|r| r.report.clone()) {
        Some(ReportTarget::Dir(dir)) => Ok(Root::Dir(dir)),
        Some(ReportTarget::Bucket {
            endpoint,
            bucket,
            prefix,
        }) => {
            let stores = Stores::connect(config, args.s3.timeouts()?, &args.s3.trust()?).await;
            Ok(Root::Bucket {
                store: stores.get(&endpoint),
                bucket,
                prefix,
            })
        }
        None if rule.is_some() => Err(Failure::config(
            "RULE",
            format!("rule {:?} has no `report` in the config file", args.rule),
        )),
        None => {
            let dir = startup::state_dir(args.common.state_dir.as_deref())?.join("reports");
            if !dir.join(&args.rule).is_dir() {
                return Err(Failure::config(
                    "RULE",
                    format!(
                        "no rule {:?} in the config file, and no reports of a sync pairing of that name in {}",
                        args.rule,
                        dir.display()
                    ),
                ));
            }
            Ok(Root::Dir(dir))
        }
    }
}

/// The last iteration of `rule` with a manifest.
async fn latest(root: &Root, rule: &str) -> Result<u64, Failure> {
    let found: Vec<u64> = match root {
        Root::Dir(dir) => std::fs::read_dir(dir.join(rule))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().join("manifest.json").exists())
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        Root::Bucket {
            store,
            bucket,
            prefix,
        } => {
            let pages = ferry_storage::list_pages(
                store.clone(),
                bucket.clone(),
                format!("{prefix}{rule}/"),
                None,
            );
            let mut found = Vec::new();
            futures::pin_mut!(pages);
            while let Some(page) = pages.try_next().await.context("listing the reports")? {
                found.extend(page.objects.iter().filter_map(|o| {
                    let rest = o.key.strip_prefix(&format!("{prefix}{rule}/"))?;
                    rest.strip_suffix("/manifest.json")?.parse::<u64>().ok()
                }));
            }
            found
        }
    };
    found.into_iter().max().ok_or_else(|| {
        Failure::Runtime(anyhow::anyhow!(
            "no report of rule {rule:?} has been written yet"
        ))
    })
}

/// One file of an iteration's report, whole (a part is at most 10,000 lines, compressed).
async fn read(root: &Root, dir: &str, name: &str) -> Result<Vec<u8>, Failure> {
    match root {
        Root::Dir(root) => {
            let path = root.join(dir).join(name);
            let mut body = Vec::new();
            std::fs::File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut body))
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(body)
        }
        Root::Bucket {
            store,
            bucket,
            prefix,
        } => {
            let key = format!("{prefix}{dir}/{name}");
            let object = store
                .get(bucket, &key, None, None)
                .await
                .with_context(|| format!("reading s3://{bucket}/{key}"))?;
            let chunks: Vec<bytes::Bytes> = object
                .body
                .try_collect()
                .await
                .with_context(|| format!("reading s3://{bucket}/{key}"))?;
            Ok(chunks.concat())
        }
    }
}
