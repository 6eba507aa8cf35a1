//! Acks in batches: finished tasks are acked together, one `ack_many.lua` round trip per
//! rule per batch, each still fenced by its own lease.
//!
//! One task sends the batches, one at a time: while a batch is on its way, the tasks that
//! finish meanwhile queue up and go in the next one. While other tasks are still being
//! worked on, a batch also waits up to [`ACK_WINDOW`] for them (or until it is full); a lone
//! task, with nothing else in flight, is acked at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_queue::{AckItem, QueueError, WorkerQueue};
use tokio::sync::{mpsc, oneshot};

/// Most acks in one round trip.
const ACK_BATCH: usize = 64;

/// How long a batch waits for more acks while other tasks are in flight. Small against a
/// lease (it only delays the ack, the task's slot is free already), and long enough at a
/// few hundred small objects per second for several acks to share a round trip.
pub(crate) const ACK_WINDOW: Duration = Duration::from_millis(10);

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
    /// Starts the batching task; it ends once every `Acker` clone is dropped. `busy` counts
    /// the tasks being worked on, whose acks are worth waiting for.
    pub(crate) fn start(
        queue: Arc<dyn WorkerQueue>,
        worker: String,
        busy: Arc<AtomicU64>,
    ) -> Acker {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(queue, worker, busy, rx));
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
    busy: Arc<AtomicU64>,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + ACK_WINDOW;
        let mut by_rule: BTreeMap<String, Vec<Request>> = BTreeMap::new();
        by_rule.entry(first.rule.clone()).or_default().push(first);
        let mut n = 1;
        while n < ACK_BATCH {
            let more = match rx.try_recv() {
                Ok(more) => more,
                Err(_) if busy.load(Ordering::Relaxed) > 0 => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(more)) => more,
                        _ => break,
                    }
                }
                Err(_) => break,
            };
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
                        request.reply.send(Ok(ok)).ok(); // unread if the task was cancelled
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for request in requests {
                        request.reply.send(Err(why.clone())).ok();
                    }
                }
            }
        }
    }
}
