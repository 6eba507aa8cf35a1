//! `ferry verify SRC DST` (or `--config F RULE`): both buckets compared key by key, without
//! the ledger; exit 0 when every key matches, 3 when any is missing or differs.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use clap::Args;
use ferry_coordinator::CoordinatorError;
use ferry_coordinator::verify::{self, Finding, Options, Summary, Verdict};
use ferry_core::config::{Config, Rule};
use ferry_storage::Stores;

use crate::failure::{Failure, unless_interrupted};
use crate::human::bytes;
use crate::startup::{self, S3Args};
use crate::sync::{Line, PairArgs, build_config};

/// `ferry verify` arguments.
#[derive(Args)]
#[command(
    after_help = "Verdicts: match, missing, differs, extra (at the destination only), \
archived, excluded (by the rule's filters), unverifiable (ETags of different kinds and no \
shared checksum: --deep settles it).
Exit codes: 0 every key matches, 3 a key is missing or differs, 1 runtime error, 2 usage.

Examples:
  ferry verify east:photos west:photos-dr
  ferry verify s3://photos s3://photos-dr --dst-endpoint http://127.0.0.1:9000 --headers
  ferry verify --config ferry.toml photos --sample 10 --json"
)]
pub(crate) struct VerifyArgs {
    /// SRC DST, as `ferry sync` takes them; or the name of a rule of the config file.
    #[arg(value_name = "SRC DST | RULE", num_args = 1..=2, required = true)]
    targets: Vec<String>,
    #[command(flatten)]
    pair: PairArgs,
    /// Also compare headers, metadata, storage class and tags (a HEAD and a tag read per key
    /// and side).
    #[arg(long, help_heading = "How closely")]
    headers: bool,
    /// Read every object on both sides in full and compare the bytes (MD5, streamed).
    #[arg(long, conflicts_with = "sample", help_heading = "How closely")]
    deep: bool,
    /// Read N random keys of each key range in full; the others are compared as without
    /// --deep.
    #[arg(long, value_name = "N", help_heading = "How closely")]
    sample: Option<usize>,
    /// Key ranges listed and compared at once.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8,
        help_heading = "How closely"
    )]
    lanes: usize,
    /// Keys checked (HEAD, read) at once in each key range.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 32,
        help_heading = "How closely"
    )]
    checks: usize,
    /// One JSON object per line on stdout for every key that is not a match, then one
    /// summary object.
    #[arg(long, help_heading = "Output")]
    json: bool,
    #[command(flatten)]
    s3: S3Args,
}

pub(crate) async fn run(args: VerifyArgs) -> Result<(), Failure> {
    let started = Instant::now();
    let (config, rule) = pairing(&args)?;
    for (flag, value) in [("--lanes", args.lanes), ("--checks", args.checks)] {
        if value == 0 {
            return Err(Failure::config(flag, "must be at least 1"));
        }
    }
    if args.sample == Some(0) {
        return Err(Failure::config("--sample", "must be at least 1"));
    }
    let stores = Stores::connect(&config, args.s3.timeouts()?, &args.s3.trust()?).await;
    let shutdown = crate::shutdown::on_signal();
    let options = Options {
        headers: args.headers,
        deep: args.deep,
        sample: args.sample,
        lanes: args.lanes,
        checks: args.checks,
    };
    let out = Mutex::new(std::io::BufWriter::new(std::io::stdout()));
    let json = args.json;
    let each = |finding: &Finding| {
        let line = if json {
            serde_json::to_string(finding).unwrap_or_default()
        } else {
            text_line(finding)
        };
        // A closed stdout (`| head`) ends nothing: the summary and exit code still count.
        let mut out = out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        writeln!(out, "{line}").ok();
    };
    let found = verify::verify(
        stores.source(&rule),
        stores.destination(&rule),
        &rule,
        options,
        &shutdown,
        &each,
    )
    .await;
    if let Ok(mut out) = out.into_inner() {
        out.flush().ok(); // as above: a closed stdout ends nothing
    }
    let summary = match found {
        Ok(summary) => summary,
        Err(CoordinatorError::Cancelled) => {
            unless_interrupted()?;
            return Err(Failure::Runtime(anyhow::anyhow!("verify was cancelled")));
        }
        Err(e) => {
            return Err(Failure::Runtime(
                anyhow::Error::new(e).context(format!("verifying {}", rule.name)),
            ));
        }
    };
    print_summary(&args, &rule, &summary, started.elapsed().as_secs_f64());
    if summary.failed() {
        return Err(Failure::Mismatch(format!(
            "{} key(s) missing and {} differing at the destination",
            summary.count(Verdict::Missing),
            summary.count(Verdict::Differs)
        )));
    }
    Ok(())
}

/// The pairing to verify: SRC and DST as `sync` reads them, or a rule of the config file.
fn pairing(args: &VerifyArgs) -> Result<(Config, Rule), Failure> {
    match args.targets.as_slice() {
        [src, dst] => {
            let line = Line {
                src,
                dst,
                pair: &args.pair,
                copy: None,
                redis: None,
            };
            let (config, _) = build_config(&line)?;
            let rule = config.rules[0].clone();
            Ok((config, rule))
        }
        [name] => {
            if let Some(flag) = args.pair.given() {
                return Err(Failure::config(
                    flag,
                    format!(
                        "applies to SRC DST; rule {name:?} has its own settings in the config file"
                    ),
                ));
            }
            let config = startup::load(&startup::Common {
                config: args.pair.config.clone(),
                redis: None,
                state_dir: None,
            })?;
            let rule = config.rules.iter().find(|r| &r.name == name).cloned();
            match rule {
                Some(rule) => Ok((config, rule)),
                None => Err(Failure::config(
                    "RULE",
                    format!(
                        "no rule {name:?} in the config file (rules: {})",
                        config
                            .rules
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        }
        _ => Err(Failure::config(
            "SRC DST",
            "give SRC and DST, or one RULE with --config",
        )),
    }
}

fn text_line(f: &Finding) -> String {
    let detail = if !f.differs.is_empty() {
        f.differs.join("; ")
    } else {
        f.why.clone().unwrap_or_default()
    };
    let size = f
        .source
        .as_ref()
        .or(f.destination.as_ref())
        .map_or(0, |s| s.size);
    if detail.is_empty() {
        format!("{:<12} {} ({})", f.verdict.as_str(), f.key, bytes(size))
    } else {
        format!(
            "{:<12} {} ({}): {detail}",
            f.verdict.as_str(),
            f.key,
            bytes(size)
        )
    }
}

fn print_summary(args: &VerifyArgs, rule: &Rule, s: &Summary, seconds: f64) {
    if args.json {
        let value = serde_json::json!({
            "summary": true,
            "rule": rule.name,
            "source": format!("{}:{}", rule.source.endpoint, rule.source.bucket),
            "destination": format!("{}:{}", rule.destination.endpoint, rule.destination.bucket),
            "verdicts": s.verdicts,
            "source_objects": s.source_objects,
            "source_bytes": s.source_bytes,
            "destination_objects": s.destination_objects,
            "destination_bytes": s.destination_bytes,
            "bytes_read": s.bytes_read,
            "ranges": s.ranges,
            "headers": args.headers,
            "deep": args.deep,
            "sample": args.sample,
            "ok": !s.failed(),
            "seconds": seconds,
        });
        println!("{value}");
        return;
    }
    let counts: BTreeMap<_, _> = Verdict::ALL
        .iter()
        .map(|v| (v.as_str(), s.count(*v)))
        .collect();
    println!(
        "verified {}:{} against {}:{} in {seconds:.1}s ({} key range(s))",
        rule.source.endpoint,
        rule.source.bucket,
        rule.destination.endpoint,
        rule.destination.bucket,
        s.ranges
    );
    println!(
        "  source      {:>12} object(s) {:>12}",
        s.source_objects,
        bytes(s.source_bytes)
    );
    println!(
        "  destination {:>12} object(s) {:>12}",
        s.destination_objects,
        bytes(s.destination_bytes)
    );
    if s.bytes_read > 0 {
        println!("  read in full {:>22}", bytes(s.bytes_read));
    }
    for (verdict, n) in counts {
        println!("  {verdict:<13} {n:>12}");
    }
    println!(
        "{}",
        if s.failed() {
            "result: NOT a complete copy (missing or differing keys above)"
        } else if s.count(Verdict::Unverifiable) > 0 {
            "result: nothing missing or different; unverifiable keys remain (--deep reads them)"
        } else {
            "result: every compared key matches"
        }
    );
}
