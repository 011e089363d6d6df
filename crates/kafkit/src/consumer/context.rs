//! The rdkafka context of the runtime's consumer: it sees rebalances and commits as they happen
//! (on librdkafka's call, so it only records and forwards; it never blocks).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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
///
/// The poll loop tags each record with the [`generation`](Self::generation) current right
/// after the poll that returned it (a revocation during that poll ran before the record was
/// returned, and librdkafka drops what it fetched for the old assignment). A record whose
/// partition was revoked in a later generation is stale: it is dropped, and the partition's
/// owner re-reads it from the committed offset.
pub(crate) struct RuntimeContext {
    /// Per partition: its epoch (revocations so far) and the generation of its last revocation.
    epochs: Mutex<HashMap<TopicPartition, (u64, u64)>>,
    /// Revocations so far, over all partitions.
    generation: AtomicU64,
    events: UnboundedSender<Event>,
    pub(crate) commits: Mutex<CommitHistory>,
}

/// Outcomes of offset commits, for health.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CommitHistory {
    /// The last commit attempt: when, and whether it succeeded.
    pub last: Option<(Instant, bool)>,
    /// The first failure since the last success: commits are failing since then.
    pub failing_since: Option<Instant>,
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
            generation: AtomicU64::new(0),
            events,
            commits: Mutex::new(CommitHistory::default()),
        }
    }

    /// The current epoch of a partition.
    pub(crate) fn epoch(&self, tp: &TopicPartition) -> u64 {
        self.epochs
            .lock()
            .expect("not poisoned")
            .get(tp)
            .map_or(0, |(epoch, _)| *epoch)
    }

    /// The revocation generation now; read right after each poll to tag its record.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The partition's current epoch, or `None` when it was revoked after `generation`: its
    /// records of that generation are stale.
    pub(crate) fn epoch_since(&self, tp: &TopicPartition, generation: u64) -> Option<u64> {
        match self.epochs.lock().expect("not poisoned").get(tp) {
            Some((_, revoked_at)) if *revoked_at > generation => None,
            Some((epoch, _)) => Some(*epoch),
            None => Some(0),
        }
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
            let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            let revoked = partitions(tpl)
                .into_iter()
                .map(|tp| {
                    let entry = epochs.entry(tp.clone()).or_insert((0, 0));
                    *entry = (entry.0 + 1, generation);
                    (tp, entry.0)
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
        self.commits
            .lock()
            .expect("not poisoned")
            .record(Instant::now(), result.is_ok());
    }
}

impl CommitHistory {
    /// Notes a commit outcome at `now`.
    pub(crate) fn record(&mut self, now: Instant, ok: bool) {
        self.last = Some((now, ok));
        if ok {
            self.failing_since = None;
        } else if self.failing_since.is_none() {
            self.failing_since = Some(now);
        }
    }
}
