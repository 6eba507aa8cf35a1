//! Following an SQS queue that receives the source bucket's notifications.
//!
//! A few long-polls run at once per rule. A message is deleted only once every record in it
//! is enqueued (or found stale, ignored or not needed): a coordinator that dies holding
//! messages loses nothing, since SQS delivers them again after their visibility timeout, and
//! the sequencer check makes the second delivery of an applied event a no-op.
//!
//! A message that is not an event (a poison message) is counted as invalid and logged once,
//! at its first delivery, and deleted once it has been delivered as many times as the queue's
//! redrive policy allows (`maxReceiveCount`; 3 with no redrive policy).

use std::time::Duration;

use crate::events::notice::{self as events, Notice};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use ferry_core::config::{Events, Rule};
use ferry_storage::sdk_config;
use tracing::{debug, info, warn};

use super::{Tally, apply};
use crate::Context;

/// Long-polls in flight per rule.
const POLLERS: usize = 4;
/// The longest wait SQS allows for one receive.
const WAIT_SECONDS: i32 = 20;
/// Deliveries of a poison message before it is deleted, when the queue has no redrive policy.
const DEFAULT_RECEIVES: u32 = 3;

/// Follows `rule`'s SQS queue until shutdown. Errors reaching SQS are logged and retried
/// with backoff; they never stop the coordinator.
pub async fn follow_queue(ctx: Context, rule: Rule) {
    let Some(Events::Sqs {
        queue_url,
        endpoint,
    }) = rule.events.clone()
    else {
        return;
    };
    let Some(endpoint) = ctx.config.endpoint(&endpoint).cloned() else {
        return;
    };
    let shared = sdk_config(&endpoint, &ctx.stores.trust()).await;
    // A long poll answers within WAIT_SECONDS; one that does not is given up and retried.
    let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(WAIT_SECONDS as u64 + 15))
        .build();
    let mut builder = aws_sdk_sqs::config::Builder::from(&shared).timeout_config(timeouts);
    if let Some(url) = &endpoint.url {
        builder = builder.endpoint_url(url);
    }
    let client = Client::from_conf(builder.build());
    let receives = max_receives(&client, &queue_url).await;
    info!(rule = %rule.name, queue = %queue_url, poison_deleted_after = receives,
        "following the SQS queue of the source's notifications");
    let pollers: Vec<_> = (0..POLLERS)
        .map(|_| {
            tokio::spawn(poll(
                ctx.clone(),
                rule.clone(),
                client.clone(),
                queue_url.clone(),
                receives,
            ))
        })
        .collect();
    for p in pollers {
        if let Err(e) = p.await
            && e.is_panic()
        {
            tracing::error!(error = %e, "an SQS poller panicked");
        }
    }
}

/// The queue's `maxReceiveCount`, or [`DEFAULT_RECEIVES`].
async fn max_receives(client: &Client, queue_url: &str) -> u32 {
    let answer = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await;
    answer
        .ok()
        .and_then(|a| {
            a.attributes()?
                .get(&QueueAttributeName::RedrivePolicy)
                .cloned()
        })
        .and_then(|policy| serde_json::from_str::<serde_json::Value>(&policy).ok())
        .and_then(|p| match p.get("maxReceiveCount")? {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .map_or(DEFAULT_RECEIVES, |n| n.clamp(1, 1000) as u32)
}

async fn poll(ctx: Context, rule: Rule, client: Client, queue_url: String, receives: u32) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let receive = client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT_SECONDS)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send();
        let answer = tokio::select! {
            a = receive => a,
            _ = ctx.cancel.cancelled() => return,
        };
        let messages = match answer {
            Ok(a) => {
                backoff = Duration::from_millis(500);
                a.messages.unwrap_or_default()
            }
            Err(e) => {
                warn!(rule = %rule.name, queue = %queue_url,
                    error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                    "receiving from the SQS queue failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = ctx.cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let handled =
            futures::future::join_all(messages.iter().map(|m| handle(&ctx, &rule, m, receives)))
                .await;
        let done: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .zip(handled)
            .enumerate()
            .filter(|(_, (_, delete))| *delete)
            .filter_map(|(i, (m, _))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        if done.is_empty() {
            continue;
        }
        match client
            .delete_message_batch()
            .queue_url(&queue_url)
            .set_entries(Some(done))
            .send()
            .await
        {
            Ok(a) if !a.failed().is_empty() => {
                warn!(rule = %rule.name, failed = a.failed().len(),
                    "SQS did not delete some handled messages; they will be delivered again (harmless)");
            }
            Ok(_) => {}
            Err(e) => {
                warn!(rule = %rule.name, error = %aws_sdk_sqs::error::DisplayErrorContext(&e),
                    "deleting handled SQS messages failed; they will be delivered again (harmless)");
            }
        }
    }
}

/// Handles one message; true when it can be deleted.
async fn handle(ctx: &Context, rule: &Rule, message: &Message, receives: u32) -> bool {
    let id = message.message_id().unwrap_or("?");
    let received = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1);
    let body = message.body().unwrap_or("");
    let records = match events::parse(body.as_bytes()) {
        Ok(Notice::Records(records)) => records,
        Ok(Notice::Test) => {
            info!(rule = %rule.name, "S3 test event received: the notification path works");
            return true;
        }
        Ok(Notice::SubscriptionConfirmation { topic_arn, .. }) => {
            info!(rule = %rule.name, topic = %topic_arn,
                "an SNS subscription confirmation reached the SQS queue; confirm it in SNS");
            return true;
        }
        Ok(Notice::OtherSns(kind)) => {
            debug!(rule = %rule.name, kind = %kind, "an SNS message that is not a notification");
            return true;
        }
        Err(e) => {
            if received <= 1 {
                warn!(rule = %rule.name, message = %id, error = %e,
                    "an SQS message that is not an S3 event; it is deleted after {receives} deliveries");
                Tally {
                    invalid: 1,
                    ..Tally::default()
                }
                .publish(&rule.name);
            }
            return received >= receives;
        }
    };
    match apply(ctx, rule, records).await {
        Ok(tally) => {
            debug!(rule = %rule.name, message = %id, ?tally, "events applied");
            true
        }
        Err(e) => {
            warn!(rule = %rule.name, message = %id, error = %e,
                "could not apply the events of an SQS message; it will be delivered again");
            false
        }
    }
}
