//! The pipeline consumer's context: which partitions were revoked while a batch was open, which
//! are paused for it, and whether librdkafka still knows a broker to talk to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Deserialize;
use tokio::sync::Notify;

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};

use crate::consumer::TopicPartition;

/// How often the pipeline's consumer reports the brokers it knows (librdkafka statistics).
pub(super) const STATISTICS_INTERVAL_MS: &str = "5000";

/// Counts revocations, so a batch read across one is known, and remembers which partitions
/// were revoked since [`PipelineContext::forget`]; says when the consumer is stranded.
#[derive(Debug, Default)]
pub(super) struct PipelineContext {
    count: AtomicU64,
    revoked: std::sync::Mutex<BTreeSet<TopicPartition>>,
    /// While a batch is open: the partitions paused for it, to which those assigned meanwhile
    /// are added (see `intake`).
    pausing: std::sync::Mutex<Option<BTreeSet<TopicPartition>>>,
    /// True when the last statistics listed no broker to connect to.
    stranded: AtomicBool,
    stranded_news: Notify,
}

/// The part of librdkafka's statistics that says which brokers a client knows.
#[derive(Deserialize)]
struct KnownBrokers {
    brokers: BTreeMap<String, KnownBroker>,
}

#[derive(Deserialize)]
struct KnownBroker {
    /// `configured` (bootstrap), `learned` (from metadata), `logical` or `internal`.
    source: String,
}

impl PipelineContext {
    pub(super) fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Partitions revoked since the last [`PipelineContext::forget`].
    pub(super) fn revoked(&self) -> BTreeSet<TopicPartition> {
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts remembering afresh (a batch begins).
    pub(super) fn forget(&self) {
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Remembers `partitions` as paused for the open batch, and pauses the partitions
    /// assigned from now on until [`PipelineContext::stop_pausing`].
    pub(super) fn pause_while_open(&self, partitions: BTreeSet<TopicPartition>) {
        self.pausing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_default()
            .extend(partitions);
    }

    /// The partitions paused for the batch that closes, to be resumed; partitions assigned
    /// from now on are fetched.
    pub(super) fn stop_pausing(&self) -> BTreeSet<TopicPartition> {
        self.pausing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default()
    }

    /// Completes once the consumer knows no broker it could connect to any more. librdkafka
    /// 2.12 drops every broker it knows when a metadata response lists none, and then never
    /// connects again, not even to its bootstrap servers (confluentinc/librdkafka#5301). A KRaft
    /// cluster answers so while its brokers are fenced: after a pause or outage longer than the
    /// broker session timeout, say. Such a consumer loses its group membership for good; the
    /// pipeline replaces it.
    pub(super) async fn stranded(&self) {
        loop {
            let news = self.stranded_news.notified();
            if self.stranded.load(Ordering::SeqCst) {
                return;
            }
            news.await;
        }
    }
}

impl ClientContext for PipelineContext {
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(known) = serde_json::from_slice::<KnownBrokers>(statistics) else {
            return;
        };
        let stranded = !known
            .brokers
            .values()
            .any(|b| b.source == "learned" || b.source == "configured");
        if stranded && !self.stranded.swap(true, Ordering::SeqCst) {
            tracing::warn!("the pipeline's consumer knows no broker any more");
            self.stranded_news.notify_waiters();
        } else if !stranded {
            self.stranded.store(false, Ordering::SeqCst);
        }
    }
}

impl ConsumerContext for PipelineContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.revoked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(
                        tpl.elements()
                            .iter()
                            .map(|e| (e.topic().to_owned(), e.partition())),
                    );
                self.count.fetch_add(1, Ordering::SeqCst);
                tracing::info!(partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let mut pausing = self
            .pausing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A batch is open (and its stream polled): what these partitions fetched now would
        // be read past it. They are fetched once the batch closes.
        if let Some(paused) = pausing.as_mut() {
            if let Err(error) = consumer.pause(tpl) {
                tracing::warn!(%error, "pausing partitions assigned while a batch is open failed");
            }
            paused.extend(partitions(tpl));
        }
    }
}

/// The partitions of `tpl`.
pub(super) fn partitions(tpl: &TopicPartitionList) -> BTreeSet<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}
