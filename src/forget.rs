//! `ferry forget RULE`: drops a pairing (its ledger, queues, iteration history and marks,
//! and its registration), so that both its buckets may be paired again.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context as _;
use clap::Args;
use ferry_core::config::{ConfigError, Problem};
use ferry_queue::Persistence;

use crate::failure::Failure;
use crate::startup;

#[derive(Args)]
pub(crate) struct ForgetArgs {
    /// The rule (a `sync` pair's rule name is in its summary and in `ferry status`).
    rule: String,
    /// Where the pairing is kept: the config's `[redis]`, or the state dir.
    #[command(flatten)]
    common: startup::Common,
    /// Do not ask for confirmation.
    #[arg(long, short)]
    yes: bool,
}

fn problem(path: &str, message: String) -> Failure {
    Failure::Config(ConfigError {
        problems: vec![Problem {
            path: path.into(),
            message,
        }],
    })
}

pub(crate) async fn run(args: ForgetArgs) -> Result<(), Failure> {
    let config = startup::load_to_read(&args.common)?;
    let place = match &config.redis {
        Some(r) => format!("redis {} (namespace {:?})", r.redacted_url(), r.namespace),
        None => "the state dir".to_string(),
    };
    let queue = startup::connect(&args.common, &config, Persistence::FailFast).await?;
    let registered = queue
        .registered_rules()
        .await
        .context("reading registered rules")?;
    let Some(pairing) = registered.iter().find(|r| r.rule == args.rule) else {
        let names: Vec<&str> = registered.iter().map(|r| r.rule.as_str()).collect();
        return Err(problem(
            "RULE",
            format!(
                "no rule {:?} is registered in {place} (registered: {})",
                args.rule,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    let what = format!(
        "rule {} ({} -> {}) in {place}",
        pairing.rule, pairing.source, pairing.destination
    );
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(problem(
                "--yes",
                format!(
                    "forgetting {what} needs a confirmation: run it on a terminal, or pass --yes"
                ),
            ));
        }
        eprint!("Forget {what}: its ledger, queues and history? The objects stay. [y/N] ");
        std::io::stderr().flush().ok(); // a prompt that cannot be shown is answered all the same
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("reading the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "not confirmed; nothing was forgotten"
            )));
        }
    }
    let keys = queue
        .forget_rule(&pairing.rule)
        .await
        .context("forgetting the rule")?;
    println!(
        "forgot {what} ({keys} keys); both buckets may be paired again, and a new sync of \
         them copies whatever differs"
    );
    Ok(())
}
