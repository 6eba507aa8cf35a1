//! Acks in batches: finished tasks are acked together, one `ack_many.lua` round trip per
//! rule per batch, each still fenced by its own lease.
//!
//! One task sends the batches, one at a time: while a batch is on its way, the tasks that
//! finish meanwhile queue up and go in the next one. No ack waits for a timer, so a lone task
//! is acked as soon as it would have been alone, and a busy worker sends many acks per round
//! trip.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferry_common::queue::{AckItem, QueueError, WorkerQueue};
use tokio::sync::{mpsc, oneshot};

/// Most acks in one round trip.
const ACK_BATCH: usize = 64;

struct Request {
    rule: String,
    item: AckItem,
    reply: oneshot::Sender<Result<bool, String>>,
}

/// Where a worker's finished tasks go to be acked.
#[derive(Clone)]
pub(crate) struct Acker {
    tx: mpsc::UnboundedSender<Request>,
}

impl Acker {
    /// Starts the batching task; it ends once every `Acker` clone is dropped.
    pub(crate) fn start(queue: Arc<dyn WorkerQueue>, worker: String) -> Acker {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(queue, worker, rx));
        Acker { tx }
    }

    /// Acks `item` of `rule` with whatever else is finishing; false when its lease was lost.
    /// An error says why Redis refused the batch (it rides out being unreachable).
    pub(crate) async fn ack(&self, rule: &str, item: AckItem) -> Result<bool, String> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            rule: rule.to_string(),
            item,
            reply,
        };
        self.tx
            .send(request)
            .map_err(|_| "the worker is stopping".to_string())?;
        answer
            .await
            .map_err(|_| "the ack batch was dropped".to_string())?
    }
}

async fn send_batches(
    queue: Arc<dyn WorkerQueue>,
    worker: String,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    while let Some(first) = rx.recv().await {
        let mut by_rule: BTreeMap<String, Vec<Request>> = BTreeMap::new();
        by_rule.entry(first.rule.clone()).or_default().push(first);
        let mut n = 1;
        while n < ACK_BATCH
            && let Ok(more) = rx.try_recv()
        {
            by_rule.entry(more.rule.clone()).or_default().push(more);
            n += 1;
        }
        for (rule, requests) in by_rule {
            let items: Vec<AckItem> = requests.iter().map(|r| r.item.clone()).collect();
            let results: Result<Vec<bool>, QueueError> =
                queue.ack_many(&worker, &rule, &items).await;
            match results {
                Ok(done) => {
                    for (request, ok) in requests.into_iter().zip(done) {
                        let _ = request.reply.send(Ok(ok));
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for request in requests {
                        let _ = request.reply.send(Err(why.clone()));
                    }
                }
            }
        }
    }
}
