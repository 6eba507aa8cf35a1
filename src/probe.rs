//! `ferry probe ENDPOINT[:BUCKET]`: what a store does and does not do, as measured by the
//! same probe the workers run before their first write to a bucket, and what ferry does
//! about each answer.
//!
//! The probe writes only under `.ferry-probe/` in the bucket and removes what it wrote. Without
//! a bucket, it makes a bucket of its own (`ferry-probe-…`), probes it and deletes it.

use std::path::PathBuf;

use clap::Args;
use ferry_core::config::{Config, ConfigError, Problem};
use ferry_storage::{Capabilities, S3Store, probe};
use serde::Serialize;

use crate::failure::Failure;
use crate::startup::{S3Args, config_path};

/// `ferry probe` arguments.
#[derive(Args)]
pub(crate) struct ProbeArgs {
    /// ENDPOINT[:BUCKET]: an endpoint named in the config file, and the bucket to probe
    /// (default: a temporary bucket, made and deleted).
    target: String,
    /// The config file with the endpoints (default: ./ferry.toml, else
    /// ~/.config/ferry/ferry.toml). Its rules are ignored.
    #[arg(long, short, env = "FERRY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: S3Args,
}

fn config_error(path: &str, message: String) -> Failure {
    Failure::Config(ConfigError {
        problems: vec![Problem {
            path: path.into(),
            message,
        }],
    })
}

/// The config with only the endpoint named (its rules and Redis are not needed to probe).
fn endpoint_config(path: &std::path::Path, endpoint: &str) -> Result<Config, Failure> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| config_error(&shown, format!("cannot read the config file: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| config_error(&shown, e.message().to_string()))?;
    let endpoints = table.get("endpoints").and_then(|e| e.as_table());
    let Some(found) = endpoints.and_then(|e| e.get(endpoint)) else {
        let known: Vec<String> = endpoints
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        return Err(config_error(
            "ENDPOINT",
            format!(
                "no endpoint {endpoint:?} in {shown} (endpoints: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    let mut only = toml::Table::new();
    only.insert(endpoint.into(), found.clone());
    let mut minimal = toml::Table::new();
    minimal.insert("endpoints".into(), only.into());
    let rendered = toml::to_string(&minimal).map_err(|e| Failure::Runtime(e.into()))?;
    Config::from_toml(&rendered).map_err(|e| {
        Failure::Config(ConfigError {
            problems: e
                .problems
                .into_iter()
                .map(|p| Problem {
                    path: format!("{} ({shown})", p.path),
                    message: p.message,
                })
                .collect(),
        })
    })
}

#[derive(Serialize)]
struct Row {
    capability: &'static str,
    measured: String,
    ferry: &'static str,
}

#[derive(Serialize)]
struct Report {
    endpoint: String,
    bucket: String,
    /// Whether the bucket was made for the probe (and deleted).
    temporary_bucket: bool,
    capabilities: Capabilities,
    rows: Vec<Row>,
}

pub(crate) async fn run(args: ProbeArgs) -> Result<(), Failure> {
    let (endpoint, bucket) = match args.target.split_once(':') {
        Some((e, b)) => (e.to_string(), Some(b.to_string())),
        None => (args.target.clone(), None),
    };
    if endpoint.is_empty() || bucket.as_deref().is_some_and(str::is_empty) {
        return Err(config_error(
            "ENDPOINT[:BUCKET]",
            format!(
                "{:?} is not ENDPOINT[:BUCKET] (empty endpoint or bucket)",
                args.target
            ),
        ));
    }
    let path = config_path(args.config.as_deref())?;
    let config = endpoint_config(&path, &endpoint)?;
    let timeouts = args.s3.timeouts()?;
    let trust = args.s3.trust()?;
    let store = S3Store::connect(&config.endpoints[&endpoint], timeouts, &trust).await;
    let temporary = bucket.is_none();
    let bucket = match bucket {
        Some(b) => b,
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!("ferry-probe-{:x}-{nanos:x}", std::process::id());
            store.create_bucket(&name).await.map_err(|e| {
                Failure::Runtime(anyhow::anyhow!(
                    "making a temporary bucket to probe (name one as ENDPOINT:BUCKET instead): {e}"
                ))
            })?;
            name
        }
    };
    let found = probe(&store, &bucket).await;
    if temporary && let Err(e) = store.delete_bucket(&bucket).await {
        tracing::warn!(bucket, error = %e, "could not delete the temporary bucket");
    }
    let capabilities =
        found.map_err(|e| Failure::Runtime(anyhow::anyhow!("probing {endpoint}:{bucket}: {e}")))?;
    let rows = capabilities
        .rows()
        .into_iter()
        .map(|(capability, measured, ferry)| Row {
            capability,
            measured,
            ferry,
        })
        .collect();
    let report = Report {
        endpoint,
        bucket,
        temporary_bucket: temporary,
        capabilities,
        rows,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Failure::Runtime(e.into()))?;
        println!("{text}");
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn render(report: &Report) -> String {
    let mut out = format!(
        "{}:{}{}\n\n",
        report.endpoint,
        report.bucket,
        if report.temporary_bucket {
            " (a temporary bucket, deleted)"
        } else {
            ""
        }
    );
    let width = |f: &dyn Fn(&Row) -> usize, title: &str| {
        report
            .rows
            .iter()
            .map(f)
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let (a, b) = (
        width(&|r| r.capability.len(), "capability"),
        width(&|r| r.measured.len(), "measured"),
    );
    out += &format!("{:a$}  {:b$}  ferry does\n", "capability", "measured");
    for r in &report.rows {
        out += &format!("{:a$}  {:b$}  {}\n", r.capability, r.measured, r.ferry);
    }
    out
}
