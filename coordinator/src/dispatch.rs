//! Batches planned tasks per shard and enqueues them, with backpressure.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_common::queue::Queue;
use ferry_common::shard::ShardId;
use ferry_common::task::Task;
use tokio_util::sync::CancellationToken;

use crate::CoordinatorError;

/// Tasks sent to Redis in one round trip.
const BATCH: usize = 256;
/// Unfinished tasks allowed per rule before the coordinator stops enqueueing and waits.
const MAX_OUTSTANDING: u64 = 50_000;

pub(crate) struct Dispatcher<'a> {
    queue: &'a Queue,
    rule: &'a str,
    iteration: u64,
    cancel: &'a CancellationToken,
    buffers: BTreeMap<ShardId, Vec<Task>>,
    enqueued: u64,
    settled_floor: u64,
}

impl<'a> Dispatcher<'a> {
    pub(crate) fn new(
        queue: &'a Queue,
        rule: &'a str,
        iteration: u64,
        cancel: &'a CancellationToken,
    ) -> Self {
        Dispatcher {
            queue,
            rule,
            iteration,
            cancel,
            buffers: BTreeMap::new(),
            enqueued: 0,
            settled_floor: 0,
        }
    }

    pub(crate) async fn add(&mut self, shard: ShardId, task: Task) -> Result<(), CoordinatorError> {
        let buffer = self.buffers.entry(shard).or_default();
        buffer.push(task);
        if buffer.len() >= BATCH {
            let batch = std::mem::take(buffer);
            self.send(shard, batch).await?;
        }
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), CoordinatorError> {
        for (shard, batch) in std::mem::take(&mut self.buffers) {
            self.send(shard, batch).await?;
        }
        Ok(())
    }

    async fn send(&mut self, shard: ShardId, batch: Vec<Task>) -> Result<(), CoordinatorError> {
        self.wait_for_room().await?;
        self.enqueued += self
            .queue
            .enqueue(self.rule, self.iteration, shard, &batch)
            .await? as u64;
        Ok(())
    }

    /// Waits while too many tasks are unfinished, so Redis memory stays bounded however large
    /// the bucket; reads Redis only when the local count says it might be needed.
    async fn wait_for_room(&mut self) -> Result<(), CoordinatorError> {
        while self.enqueued.saturating_sub(self.settled_floor) >= MAX_OUTSTANDING {
            let record = self.queue.iteration(self.rule, self.iteration).await?;
            self.settled_floor = record.done + record.dead;
            if self.enqueued.saturating_sub(self.settled_floor) < MAX_OUTSTANDING {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = self.cancel.cancelled() => return Err(CoordinatorError::Cancelled),
            }
        }
        Ok(())
    }
}
