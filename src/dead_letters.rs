//! `ferry dead-letters`: lists, retries (back on their queues, attempts reset) or purges the
//! tasks in dead letters.

use anyhow::Context as _;
use clap::Args;

use crate::failure::Failure;
use crate::queues;
use crate::startup::{self, Common};

/// `ferry dead-letters` arguments.
#[derive(Args)]
pub(crate) struct DeadLettersCommand {
    #[command(flatten)]
    common: Common,
    /// What to do.
    #[arg(value_enum)]
    action: DeadAction,
    /// Only this rule.
    rule: Option<String>,
    /// With `list`: print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum DeadAction {
    /// Show each dead task with its key, error and attempts.
    List,
    /// Put every dead task back on its queue, attempts reset.
    Retry,
    /// Delete every dead task.
    Purge,
}

/// Does `action` for the rule named, or every rule.
pub(crate) async fn run(args: DeadLettersCommand) -> Result<(), Failure> {
    let DeadLettersCommand {
        common,
        action,
        rule,
        json,
    } = args;
    let (queue, rules) = startup::open_to_read(&common, rule.as_deref()).await?;
    let mut listed = Vec::new();
    for name in rules
        .iter()
        .filter(|r| rule.as_deref().is_none_or(|o| o == r.as_str()))
    {
        match action {
            DeadAction::List => {
                let letters = queue
                    .dead_letters(name)
                    .await
                    .context("reading dead letters")?;
                if json {
                    listed.push(serde_json::json!({ "rule": name, "dead": letters }));
                } else {
                    print!("{}", queues::render_dead(name, &letters));
                }
            }
            DeadAction::Retry => {
                let n = queue
                    .retry_dead(name, None)
                    .await
                    .context("retrying dead letters")?;
                println!("{name}: {n} dead letter(s) put back on their queues");
            }
            DeadAction::Purge => {
                let n = queue
                    .purge_dead(name, None)
                    .await
                    .context("purging dead letters")?;
                println!("{name}: {n} dead letter(s) deleted");
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&listed).context("encoding json")?
        );
    }
    Ok(())
}
