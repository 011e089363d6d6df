//! Moving a batch's partitions back after its transaction failed or its outcome had to be
//! learned from the group's committed offsets.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::ExactlyOnce;
use super::context::PipelineContext;
use crate::config::KafkaConfig;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::record::Message;

/// Where a batch's partitions are rewound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RewindTo {
    /// The batch's first records: nothing of the batch was committed.
    BatchStart,
    /// The group's committed offsets: whether the batch's transaction committed is known only
    /// to the broker.
    Committed,
}

impl ExactlyOnce {
    /// Rewinds `batch`'s partitions ([`rewind`]) to `to`, again while that fails: reading on
    /// before they are rewound could commit offsets past records never written. False when
    /// shutdown came meanwhile.
    pub(super) async fn rewind<S: Future<Output = ()>>(
        &self,
        consumer: &Arc<StreamConsumer<PipelineContext>>,
        batch: &[Message],
        to: RewindTo,
        shutdown: &mut Pin<Box<S>>,
    ) -> Result<bool> {
        loop {
            let rewound = match to {
                RewindTo::BatchStart => rewind(consumer, batch, BTreeMap::new()).await,
                RewindTo::Committed => {
                    match committed_offsets(&self.config, &self.group, batch).await {
                        Ok(committed) => rewind(consumer, batch, committed).await,
                        Err(error) => Err(error),
                    }
                }
            };
            match rewound {
                Ok(()) => return Ok(true),
                Err(error @ Error::Task(_)) => return Err(error),
                Err(error) => tracing::warn!(%error, records = batch.len(),
                    "rewinding the batch's partitions failed; trying again before reading on"),
            }
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(false),
                () = tokio::time::sleep(self.options.retry_pause) => {}
            }
        }
    }
}

/// Per partition of `batch`, the offset after its last record.
pub(super) fn next_offsets(batch: &[Message]) -> BTreeMap<TopicPartition, i64> {
    let mut next = BTreeMap::new();
    for message in batch {
        next.insert(
            (message.topic.clone(), message.partition),
            message.offset + 1,
        );
    }
    next
}

/// How long a rewind waits for its seeks, and a look-up of committed offsets for them.
const REWIND_TIMEOUT: Duration = Duration::from_secs(10);

/// Moves each partition of `batch` back to `targets`' offset of it (the batch's first record
/// of it where `targets` has none), so that what follows is read again; what was fetched
/// beyond is dropped by librdkafka. Partitions revoked since the batch began are left alone:
/// a partition re-assigned since starts at the group's committed offset, and rewinding it
/// could go behind what another member committed meanwhile. Fails when a partition could not
/// be rewound.
async fn rewind(
    consumer: &Arc<StreamConsumer<PipelineContext>>,
    batch: &[Message],
    targets: BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    let mut first = targets;
    for message in batch {
        first
            .entry((message.topic.clone(), message.partition))
            .or_insert(message.offset);
    }
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || rewind_blocking(&consumer, first))
        .await
        .map_err(Error::Task)?
}

fn rewind_blocking(
    consumer: &StreamConsumer<PipelineContext>,
    first: BTreeMap<TopicPartition, i64>,
) -> Result<()> {
    let failed = |operation: String| move |source| Error::Consume { operation, source };
    let assigned = consumer
        .assignment()
        .map_err(failed("read the assignment to rewind".to_owned()))?;
    let revoked = consumer.context().revoked();
    let mut targets = TopicPartitionList::new();
    for ((topic, partition), offset) in &first {
        if revoked.contains(&(topic.clone(), *partition))
            || assigned.find_partition(topic, *partition).is_none()
        {
            continue;
        }
        targets
            .add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .map_err(failed(format!("rewind {topic} [{partition}] to {offset}")))?;
    }
    if targets.count() == 0 {
        return Ok(());
    }
    let sought = consumer
        .seek_partitions(targets, REWIND_TIMEOUT)
        .map_err(failed("rewind the batch's partitions".to_owned()))?;
    for element in sought.elements() {
        let (topic, partition, offset) = (element.topic(), element.partition(), element.offset());
        match element.error() {
            Ok(()) => {
                tracing::debug!(%topic, partition, ?offset, "partition rewound");
            }
            Err(KafkaError::OffsetFetch(code)) if rewind_holds(code) => {
                tracing::debug!(%topic, partition, ?offset, %code, "partition rewound (or starts at its committed offset)");
            }
            Err(source) => {
                return Err(failed(format!(
                    "rewind {topic} [{partition}] to {offset:?}"
                ))(source));
            }
        }
    }
    Ok(())
}

/// Whether a partition whose seek answered `code` is left where nothing is skipped: the seek
/// is still queued (librdkafka applies it before fetching the partition again and drops what
/// was fetched before it), or the partition is not being fetched in this assignment yet or any
/// more (a fetch that starts begins at the committed offset; a partition being revoked is
/// resumed by its next owner from there).
fn rewind_holds(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::InProgress
            | RDKafkaErrorCode::State
            | RDKafkaErrorCode::PreviousInProgress
    )
}

/// The offsets `group` committed for `batch`'s partitions, read (stable: after any pending
/// transaction) by a client of its own that does not join the group, so that a rebalance the
/// pipeline's consumer is in the middle of does not hold the answer up.
pub(super) async fn committed_offsets(
    config: &KafkaConfig,
    group: &str,
    batch: &[Message],
) -> Result<BTreeMap<TopicPartition, i64>> {
    let failed = |operation: &str| {
        let operation = operation.to_owned();
        move |source| Error::Consume { operation, source }
    };
    let reader: BaseConsumer = config
        .to_consumer_config_with(group, None)
        .create()
        .map_err(|source| Error::ClientCreation {
            client: "consumer",
            source,
        })?;
    let mut partitions = TopicPartitionList::new();
    for (topic, partition) in next_offsets(batch).into_keys() {
        partitions.add_partition(&topic, partition);
    }
    tokio::task::spawn_blocking(move || {
        let committed = reader
            .committed_offsets(partitions, REWIND_TIMEOUT)
            .map_err(failed("read the committed offsets"))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(offset) => Some(((e.topic().to_owned(), e.partition()), offset)),
                _ => None,
            })
            .collect())
    })
    .await
    .map_err(Error::Task)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, partition: i32, offset: i64) -> Message {
        Message {
            topic: topic.to_owned(),
            partition,
            offset,
            timestamp: None,
            key: None,
            headers: Vec::new(),
            value: None,
            attempt: 0,
        }
    }

    #[test]
    fn offsets_committed_are_after_each_partitions_last_record() {
        let batch = [
            message("a", 0, 5),
            message("a", 1, 9),
            message("a", 0, 6),
            message("b", 0, 0),
        ];
        let next = next_offsets(&batch);
        assert_eq!(
            next.into_iter().collect::<Vec<_>>(),
            [
                (("a".to_owned(), 0), 7),
                (("a".to_owned(), 1), 10),
                (("b".to_owned(), 0), 1)
            ]
        );
    }
}
