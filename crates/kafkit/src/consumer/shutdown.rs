//! How a [`Consumer`] stops: workers drain within the drain timeout, what they settled is
//! stored, done-offset maps and stored offsets are committed, and the member leaves the group.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::context::RuntimeContext;
use super::{Consumer, PartitionState, ProcessingOrder, TopicPartition};
use crate::error::{Error, Result};

impl Consumer {
    /// Lets workers finish their current record, up to the drain timeout; abandons the rest.
    pub(super) async fn drain(&self, workers: Vec<(CancellationToken, JoinHandle<()>)>) {
        let mut handles = Vec::with_capacity(workers.len());
        for (cancel, handle) in workers {
            cancel.cancel();
            handles.push(handle);
        }
        let all = futures::future::join_all(handles.iter_mut());
        if tokio::time::timeout(self.options.drain_timeout, all)
            .await
            .is_err()
        {
            tracing::warn!(
                drain_ms = self.options.drain_timeout.as_millis() as u64,
                "drain timeout: abandoning in-flight records (they will be re-delivered)"
            );
            // Polling a finished JoinHandle again would panic: keep the unfinished ones.
            handles.retain(|handle| !handle.is_finished());
            for handle in &handles {
                handle.abort();
            }
            // Aborted tasks release the consumer when they are dropped, at their next await;
            // a handler blocking its thread cannot be stopped, so this wait is bounded too.
            let aborted = futures::future::join_all(handles.iter_mut());
            if tokio::time::timeout(Duration::from_secs(1), aborted)
                .await
                .is_err()
            {
                tracing::error!(
                    "a handler does not yield: the consumer may not leave the group until it returns"
                );
            }
        }
    }

    /// Stores the last settled offset of every partition still assigned. Workers store in
    /// steps; one stuck in a handler at shutdown never reaches its next step, so the records it
    /// settled before are stored here. Records settle in offset order, so this is a true prefix.
    pub(super) fn store_settled(&self, consumer: &StreamConsumer<RuntimeContext>) {
        for (tp, state) in self.current_partitions(consumer) {
            // Key and unordered workers store their offset with its done map as they go:
            // storing the watermark here would drop the map.
            if self
                .router
                .get(&tp.0)
                .is_some_and(|r| r.order != ProcessingOrder::Partition)
            {
                continue;
            }
            let last = state.last_done.load(Ordering::SeqCst);
            if last >= 0
                && let Err(error) = consumer.store_offset(&tp.0, tp.1, last)
            {
                tracing::debug!(topic = %tp.0, partition = tp.1, %error, "offset not stored at shutdown");
            }
        }
    }

    /// The assigned partitions whose state belongs to the current assignment's worker: an older
    /// worker's offset may be behind what another member committed since.
    fn current_partitions(
        &self,
        consumer: &StreamConsumer<RuntimeContext>,
    ) -> Vec<(TopicPartition, Arc<PartitionState>)> {
        let assigned = self.shared.assigned.lock().expect("not poisoned").clone();
        let partitions = self.shared.partitions.lock().expect("not poisoned").clone();
        assigned
            .into_iter()
            .filter_map(|tp| {
                let state = partitions.get(&tp)?.clone();
                (state.epoch.load(Ordering::SeqCst) == consumer.context().epoch(&tp))
                    .then_some((tp, state))
            })
            .collect()
    }

    /// Commits stored offsets and leaves the group, off the async runtime.
    pub(super) async fn close(&self, consumer: Arc<StreamConsumer<RuntimeContext>>) -> Result<()> {
        let group = self.shared.group.clone();
        let maps = self.committable_maps(&consumer);
        tokio::task::spawn_blocking(move || {
            // First the done-offset maps of key and unordered partitions, explicitly: a commit
            // of librdkafka's current state sends stored offsets without their metadata.
            if maps.count() > 0
                && let Err(e) = consumer.commit(&maps, CommitMode::Sync)
            {
                tracing::warn!(%group, error = %e, "final commit of offset maps failed");
            }
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!(%group, "final offsets committed"),
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
                Err(e) => tracing::warn!(%group, error = %e, "final commit failed"),
            }
            consumer.unsubscribe();
            // Dropping the last handle closes the consumer: it leaves the group.
            drop(consumer);
        })
        .await
        .map_err(Error::Task)?;
        self.shared.assigned.lock().expect("not poisoned").clear();
        tracing::info!(group = %self.shared.group, "consumer stopped");
        Ok(())
    }

    /// The last stored offset and done-offset map of each assigned key or unordered partition
    /// whose current worker stored one.
    fn committable_maps(
        &self,
        consumer: &StreamConsumer<RuntimeContext>,
    ) -> rdkafka::TopicPartitionList {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (tp, state) in self.current_partitions(consumer) {
            let Some((offset, metadata)) = state.committable.lock().expect("not poisoned").clone()
            else {
                continue;
            };
            if tpl
                .add_partition_offset(&tp.0, tp.1, rdkafka::Offset::Offset(offset))
                .is_ok()
                && !metadata.is_empty()
                && let Some(mut element) = tpl.find_partition(&tp.0, tp.1)
            {
                element.set_metadata(&metadata);
            }
        }
        tpl
    }
}
