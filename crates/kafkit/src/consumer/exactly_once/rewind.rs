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
use crate::config::{KafkaConfig, OffsetReset};
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
    /// Rewinds `batch`'s partitions ([`rewind`]) to `to`, again while that fails
    /// ([`until_rewound`]). False when shutdown came meanwhile.
    pub(super) async fn rewind<S: Future<Output = ()>>(
        &self,
        consumer: &Arc<StreamConsumer<PipelineContext>>,
        batch: &[Message],
        to: RewindTo,
        shutdown: &mut Pin<Box<S>>,
    ) -> Result<bool> {
        let attempt = || self.rewind_once(consumer, batch, to);
        until_rewound(attempt, batch.len(), self.options.retry_pause, shutdown).await
    }

    /// One try at rewinding `batch`'s partitions to `to`: reads the group's committed offsets
    /// where they are needed, then seeks.
    async fn rewind_once(
        &self,
        consumer: &Arc<StreamConsumer<PipelineContext>>,
        batch: &[Message],
        to: RewindTo,
    ) -> Result<()> {
        // A partition revoked while the batch was open may be ours again, its new fetch
        // already read into the batch: it goes back to the committed offset, where its
        // new assignment began.
        let revoked = consumer.context().revoked();
        let reassigned = next_offsets(batch)
            .keys()
            .any(|partition| revoked.contains(partition));
        let committed = if to == RewindTo::Committed || reassigned {
            Some(committed_offsets(&self.config, &self.group, batch).await?)
        } else {
            None
        };
        let targets = Targets {
            batch: first_offsets(batch),
            committed,
            committed_first: to == RewindTo::Committed,
            reset: self.config.auto_offset_reset,
        };
        rewind(consumer, targets).await
    }
}

/// Runs `attempt` (one rewind of a batch of `records`) until it succeeds, `pause` apart, and
/// only then lets the caller read on: reading on before the partitions are rewound would
/// commit, with the next transaction, offsets past the records of the batch that were never
/// written. True once rewound; false when `shutdown` came first; a failed blocking task ends
/// it with its error.
async fn until_rewound<F, Fut, S>(
    mut attempt: F,
    records: usize,
    pause: Duration,
    shutdown: &mut Pin<Box<S>>,
) -> Result<bool>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
    S: Future<Output = ()>,
{
    loop {
        match attempt().await {
            Ok(()) => return Ok(true),
            Err(error @ Error::Task(_)) => return Err(error),
            Err(error) => tracing::warn!(%error, records,
                "rewinding the batch's partitions failed; trying again before reading on"),
        }
        tokio::select! {
            biased;
            () = shutdown.as_mut() => return Ok(false),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Where a rewind moves each partition of a batch.
#[derive(Debug)]
struct Targets {
    /// The batch's first offset per partition.
    batch: BTreeMap<TopicPartition, i64>,
    /// The group's committed offsets, when they were read.
    committed: Option<BTreeMap<TopicPartition, i64>>,
    /// Whether the committed offset, where there is one, comes before the batch's first.
    committed_first: bool,
    /// Where a partition never committed starts.
    reset: OffsetReset,
}

impl Targets {
    /// Where `partition` goes; `revoked` says it was revoked since the batch began (and is
    /// assigned again): it goes where its new assignment began, the committed offset.
    fn of(&self, partition: &TopicPartition, batch_first: i64, revoked: bool) -> Offset {
        let committed = self
            .committed
            .as_ref()
            .and_then(|c| c.get(partition))
            .copied();
        match (revoked, committed) {
            (_, Some(offset)) if revoked || self.committed_first => Offset::Offset(offset),
            (true, None) => match self.reset {
                OffsetReset::Earliest => Offset::Beginning,
                OffsetReset::Latest => Offset::End,
            },
            _ => Offset::Offset(batch_first),
        }
    }
}

/// Per partition of `batch`, the offset of its first record.
fn first_offsets(batch: &[Message]) -> BTreeMap<TopicPartition, i64> {
    let mut first = BTreeMap::new();
    for message in batch {
        first
            .entry((message.topic.clone(), message.partition))
            .or_insert(message.offset);
    }
    first
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

/// Moves each partition of the batch that is assigned now to its offset in `targets`, so that
/// what follows is read again; what was fetched beyond is dropped by librdkafka. A partition
/// revoked since the batch began and assigned again goes to the group's committed offset (where
/// its new assignment began: never behind what another member committed meanwhile, and never
/// past records of the new assignment already read into the batch). Fails when a partition
/// could not be rewound.
async fn rewind(consumer: &Arc<StreamConsumer<PipelineContext>>, targets: Targets) -> Result<()> {
    let consumer = consumer.clone();
    tokio::task::spawn_blocking(move || rewind_blocking(&consumer, &targets))
        .await
        .map_err(Error::Task)?
}

fn rewind_blocking(consumer: &StreamConsumer<PipelineContext>, targets: &Targets) -> Result<()> {
    let failed = |operation: String| move |source| Error::Consume { operation, source };
    let assigned = consumer
        .assignment()
        .map_err(failed("read the assignment to rewind".to_owned()))?;
    let revoked = consumer.context().revoked();
    let mut seeks = TopicPartitionList::new();
    for (tp, first) in &targets.batch {
        let (topic, partition) = tp;
        if assigned.find_partition(topic, *partition).is_none() {
            continue;
        }
        let offset = targets.of(tp, *first, revoked.contains(tp));
        seeks
            .add_partition_offset(topic, *partition, offset)
            .map_err(failed(format!(
                "rewind {topic} [{partition}] to {offset:?}"
            )))?;
    }
    if seeks.count() == 0 {
        return Ok(());
    }
    let sought = consumer
        .seek_partitions(seeks, REWIND_TIMEOUT)
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

    /// A rewind that fails as a real one can: librdkafka's `seek_partitions` per partition,
    /// or the committed-offsets look-up timing out while the broker does not answer.
    fn seek_failed() -> Error {
        Error::Consume {
            operation: "rewind the batch's partitions".to_owned(),
            source: KafkaError::Seek("Local: Timed out".to_owned()),
        }
    }

    /// Item 8 of issue 20: the pipeline used to log a failed rewind and read on, so the next
    /// transaction committed offsets past the aborted batch. Reading must wait until a rewind
    /// succeeded: here the third.
    #[tokio::test(start_paused = true)]
    async fn reading_waits_until_a_rewind_succeeds() {
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let attempt = || {
            let attempt = attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            async move {
                if attempt < 3 {
                    Err(seek_failed())
                } else {
                    Ok(())
                }
            }
        };
        let mut shutdown = Box::pin(std::future::pending::<()>());
        let rewound = until_rewound(attempt, 10, Duration::from_millis(500), &mut shutdown)
            .await
            .unwrap();
        // Returning is what lets the pipeline read on: not before the third try succeeded.
        assert_eq!(
            attempts.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "the pipeline read on before its partitions were rewound"
        );
        assert!(rewound);
    }

    /// A rewind failing until shutdown never lets the pipeline read on: it stops.
    #[tokio::test(start_paused = true)]
    async fn a_rewind_failing_until_shutdown_stops_instead_of_reading_on() {
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let attempt = || {
            attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { Err(seek_failed()) }
        };
        let mut shutdown = Box::pin(tokio::time::sleep(Duration::from_millis(60_250)));
        let rewound = until_rewound(attempt, 10, Duration::from_millis(500), &mut shutdown)
            .await
            .unwrap();
        assert!(!rewound, "the pipeline read on after failed rewinds");
        // One try every 500 ms until shutdown 60.25 s in (virtual time).
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 121);
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
