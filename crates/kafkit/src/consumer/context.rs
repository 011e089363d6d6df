//! The rdkafka context of the runtime's consumer: it sees rebalances and commits as they happen
//! (on librdkafka's call, so it only records and forwards; it never blocks).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use tokio::sync::mpsc::UnboundedSender;

use super::TopicPartition;

/// What the poll loop learns from the context.
#[derive(Debug)]
pub(crate) enum Event {
    /// These partitions were taken away; workers of an older epoch must stop.
    Revoked(Vec<(TopicPartition, u64)>),
    /// These partitions are ours now.
    Assigned(Vec<TopicPartition>),
}

/// Per-partition epochs: bumped whenever a partition is revoked, so records fetched before a
/// rebalance are never mixed up with records fetched after it.
pub(crate) struct RuntimeContext {
    epochs: Mutex<HashMap<TopicPartition, u64>>,
    events: UnboundedSender<Event>,
    pub(crate) last_commit: Mutex<Option<(Instant, bool)>>,
}

impl std::fmt::Debug for RuntimeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeContext").finish_non_exhaustive()
    }
}

impl RuntimeContext {
    pub(crate) fn new(events: UnboundedSender<Event>) -> Self {
        RuntimeContext {
            epochs: Mutex::new(HashMap::new()),
            events,
            last_commit: Mutex::new(None),
        }
    }

    /// The current epoch of a partition.
    pub(crate) fn epoch(&self, tp: &TopicPartition) -> u64 {
        self.epochs
            .lock()
            .expect("not poisoned")
            .get(tp)
            .copied()
            .unwrap_or(0)
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for RuntimeContext {}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut epochs = self.epochs.lock().expect("not poisoned");
            let revoked = partitions(tpl)
                .into_iter()
                .map(|tp| {
                    let epoch = epochs.entry(tp.clone()).or_insert(0);
                    *epoch += 1;
                    (tp, *epoch)
                })
                .collect::<Vec<_>>();
            tracing::info!(partitions = revoked.len(), "partitions revoked");
            let _ = self.events.send(Event::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                // librdkafka keeps a partition's pause flag across revoke and re-assign; a
                // partition paused by the previous owner's worker would never flow again.
                if let Err(error) = consumer.resume(tpl) {
                    tracing::debug!(%error, "resuming newly assigned partitions");
                }
                let assigned = partitions(tpl);
                tracing::info!(partitions = assigned.len(), "partitions assigned");
                let _ = self.events.send(Event::Assigned(assigned));
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(error) = &result {
            // "No offset" only means nothing new was stored since the last commit.
            if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::NoOffset) {
                return;
            }
            tracing::warn!(%error, "offset commit failed");
        }
        *self.last_commit.lock().expect("not poisoned") = Some((Instant::now(), result.is_ok()));
    }
}
