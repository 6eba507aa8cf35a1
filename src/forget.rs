//! `ferry forget RULE`: drops a pairing (its ledger, queues, iteration history and marks,
//! and its registration), so that both its buckets may be paired again.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use ferry_common::config::{Config, ConfigError, Problem, RedisConfig};
use ferry_common::queue::Persistence;

use crate::Failure;

#[derive(Args)]
pub(crate) struct ForgetArgs {
    /// The rule (a `sync` pair's rule name is in its summary and in `ferry status`).
    rule: String,
    /// A config file: its `[redis]`, or without one its embedded state dir.
    #[arg(long, short, env = "FERRY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Redis URL; overrides `[redis] url`.
    #[arg(
        long,
        env = "FERRY_REDIS_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    redis: Option<String>,
    /// The embedded queue's state dir (default: ~/.local/state/ferry).
    #[arg(long, env = "FERRY_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
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
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(Failure::Config)?,
        None => Config {
            redis: None,
            endpoints: Default::default(),
            rules: Vec::new(),
        },
    };
    if let Some(url) = &args.redis {
        let namespace = config
            .redis
            .as_ref()
            .map_or_else(|| "ferry".to_string(), |r| r.namespace.clone());
        config.redis = Some(RedisConfig::new(url.clone(), namespace));
    }
    let place = match &config.redis {
        Some(r) => format!("redis {} (namespace {:?})", r.redacted_url(), r.namespace),
        None => "the state dir".to_string(),
    };
    let dir = crate::sync::state_dir(args.state_dir.as_deref())?;
    let queue = crate::open_queue(&config, Persistence::FailFast, &dir).await?;
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
        let _ = std::io::stderr().flush();
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
