//! `ferry estimate --config F [RULE]`: what each rule's next iteration would do, from one
//! listing of both sides, with nothing changed: objects and bytes to copy, delete and skip,
//! the requests on each side, the cost where `[pricing]` says, and how long it would take.
//! `ferry sync --dry-run` prints the same for its pairing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use ferry_coordinator::estimate::{Estimate, Measured, Tally, duration};
use ferry_core::config::{Config, Rule};
use ferry_queue::Queue;
use ferry_storage::Stores;

use crate::failure::Failure;
use crate::human::bytes;
use crate::startup::{self, Common, S3Args};

/// `ferry estimate` arguments.
#[derive(Args)]
pub(crate) struct EstimateCommand {
    #[command(flatten)]
    common: Common,
    /// Only this rule.
    rule: Option<String>,
    /// Copies at once across the fleet, for a time guess where no iteration was measured.
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: usize,
    /// One JSON object per rule.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: S3Args,
}

pub(crate) async fn run(args: EstimateCommand) -> Result<(), Failure> {
    if args.concurrency == 0 {
        return Err(Failure::config("--concurrency", "must be at least 1"));
    }
    let config = Arc::new(startup::load(&args.common)?);
    let queue = startup::connect(&args.common, &config, ferry_queue::Persistence::FailFast).await?;
    let rules = startup::rule_names(&config, &queue).await?;
    startup::check_rule(&rules, args.rule.as_deref())?;
    let stores = Stores::connect(&config, args.s3.timeouts()?, &args.s3.trust()?)
        .await
        .with_limits(&config, Arc::new(queue.clone()));
    let shutdown = crate::shutdown::on_signal();
    for rule in config
        .rules
        .iter()
        .filter(|r| args.rule.as_ref().is_none_or(|n| *n == r.name))
    {
        let ctx = context(&config, &stores, &queue, &shutdown);
        let estimate = estimate(&ctx, &queue, rule, args.concurrency, |_| {}).await?;
        print(&estimate, args.json);
    }
    crate::failure::unless_interrupted()
}

/// A coordinator's context for a dry run (which writes nothing, so leads nothing).
pub(crate) fn context(
    config: &Arc<Config>,
    stores: &Stores,
    queue: &Queue,
    cancel: &tokio_util::sync::CancellationToken,
) -> ferry_coordinator::Context {
    ferry_coordinator::Context {
        config: config.clone(),
        stores: stores.clone(),
        queue: Arc::new(queue.clone()),
        cancel: cancel.clone(),
        id: startup::default_process_id(),
        leader_lease: Duration::from_secs(30),
        max_outstanding: 50_000,
    }
}

/// The estimate of `rule`'s next iteration; `each` sees every task it would plan.
pub(crate) async fn estimate(
    ctx: &ferry_coordinator::Context,
    queue: &Queue,
    rule: &Rule,
    concurrency: usize,
    mut each: impl FnMut(&ferry_core::task::Task) + Send,
) -> Result<Estimate, Failure> {
    let mut tally = Tally::default();
    let caps = ctx
        .stores
        .known_capabilities(&rule.destination.endpoint, &rule.destination.bucket)
        .await;
    let found = ferry_coordinator::dry_run(ctx, rule, |task| {
        tally.add(rule, caps.as_ref(), task);
        each(task);
    })
    .await
    .map_err(|e| {
        Failure::Runtime(anyhow::Error::new(e).context(format!("listing {}", rule.name)))
    })?;
    let last = queue
        .latest_iteration(&rule.name)
        .await
        .context("reading the last iteration")?;
    let measured = last
        .filter(|r| r.ended_ms > r.started_ms)
        .map(|r| Measured {
            bytes: r.copied_bytes,
            objects: r.copied,
            seconds: (r.ended_ms - r.started_ms) as f64 / 1000.0,
        });
    let time = duration(found.copies, found.copy_bytes, measured, concurrency);
    Ok(Estimate::new(rule, found, tally, &ctx.config.pricing, time))
}

/// Prints an estimate: a table, or one JSON object.
pub(crate) fn print(e: &Estimate, json: bool) {
    let f = &e.found;
    let skipped_by: BTreeMap<_, _> = f.skipped_by.iter().map(|(c, n)| (c.as_str(), *n)).collect();
    if json {
        let value = serde_json::json!({
            "rule": e.rule,
            "dry_run": true,
            "listed": f.listed,
            "destination_listed": f.destination_listed,
            "skipped": f.skipped,
            "skipped_by": skipped_by,
            "would_copy": f.copies,
            "would_copy_bytes": f.copy_bytes,
            "would_delete": f.deletes,
            "single": e.tally.single,
            "multipart": e.tally.multipart,
            "parts": e.tally.parts,
            "egress_bytes": e.tally.egress_bytes,
            "requests": e.tally.requests,
            "cost": e.cost,
            "time": e.time,
        });
        println!("{value}");
        return;
    }
    print_text(e, &skipped_by);
}

fn print_text(e: &Estimate, skipped_by: &BTreeMap<&'static str, u64>) {
    let f = &e.found;
    println!(
        "rule {}: the next iteration, from one listing of both sides (nothing changed)",
        e.rule
    );
    println!(
        "  listed      {:>12} at the source, {} at the destination",
        f.listed, f.destination_listed
    );
    println!(
        "  copy        {:>12} object(s), {} ({} in one request, {} in {} parts)",
        f.copies,
        bytes(f.copy_bytes),
        e.tally.single,
        e.tally.multipart,
        e.tally.parts
    );
    println!("  delete      {:>12} object(s)", f.deletes);
    println!(
        "  skip        {:>12} object(s){}",
        f.skipped,
        crate::sync::skip_reasons(skipped_by)
    );
    for (side, requests) in [
        ("source", &e.tally.requests.source),
        ("destination", &e.tally.requests.destination),
    ] {
        let list: Vec<String> = requests.iter().map(|(op, n)| format!("{op} {n}")).collect();
        let total: u64 = requests.values().sum();
        println!("  requests at the {side}: {total} ({})", list.join(", "));
    }
    println!("  egress      {:>12}", bytes(e.tally.egress_bytes));
    match &e.cost {
        Some(c) => println!(
            "  cost        {:>12.4} (egress {:.4}, source requests {:.4}, destination requests {:.4}){}",
            c.total,
            c.egress,
            c.source_requests,
            c.destination_requests,
            if c.unpriced.is_empty() {
                String::new()
            } else {
                format!(
                    "; no [pricing] for {} (counted free)",
                    c.unpriced.join(", ")
                )
            }
        ),
        None => println!(
            "  cost        give [pricing.ENDPOINT] (egress_per_gb, requests_per_1000) to see it"
        ),
    }
    let t = &e.time;
    println!(
        "  time        {} to {} ({}: {}/s, {:.0} objects/s)",
        crate::human::duration(t.low_seconds),
        crate::human::duration(t.high_seconds),
        if t.basis == "measured" {
            "at the last iteration's rates"
        } else {
            "a guess from the concurrency alone"
        },
        bytes(t.bytes_per_second as u64),
        t.objects_per_second
    );
}
