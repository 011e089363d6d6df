//! [`Reader`]: read a topic without joining a consumer group. Partitions are assigned
//! directly, from the beginning, the end, an offset, a timestamp or a group's committed
//! offsets, and reading stops at the end of each partition as it was when reading began, at a
//! record or byte limit, or after a time.
//!
//! Everything that browses (`kafkit consume`, the gateway's message and dead-letter endpoints,
//! [`Redrive`](crate::Redrive), the test harness) reads through this one type.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::consumer::{
    CommitMode, Consumer as _, ConsumerContext, ConsumerGroupMetadata, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use crate::config::{Isolation, KafkaConfig};
use crate::error::{Error, Result};
use crate::record::{Message, validate_topic};

/// Where reading starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record still stored.
    Beginning,
    /// The next record to be written (only new records are read).
    End,
    /// This offset (clamped to what is stored).
    Offset(i64),
    /// The first record whose timestamp is at or after this time (milliseconds since the
    /// epoch); the end when there is none.
    Timestamp(i64),
    /// The reader's group's committed offset, or the beginning when it has none.
    Committed,
}

/// When reading stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Limits {
    /// At most this many records.
    pub records: usize,
    /// At most about this many bytes of keys, values and headers (the record that crosses the
    /// limit is the last one returned, so one oversized record still comes back).
    pub bytes: usize,
    /// Stop once each partition reached its end as of opening. Without it reading follows
    /// new records until another limit stops it.
    pub to_end: bool,
    /// Stop when no record arrived for this long.
    pub idle: Option<Duration>,
    /// Stop after this long in all.
    pub timeout: Option<Duration>,
}

impl Limits {
    /// Up to `records` records, stopping at the end of each partition; no byte or time limit.
    pub fn to_end(records: usize) -> Self {
        Limits {
            records,
            bytes: usize::MAX,
            to_end: true,
            idle: None,
            timeout: None,
        }
    }

    /// Follows new records without end.
    pub fn follow() -> Self {
        Limits {
            to_end: false,
            ..Limits::to_end(usize::MAX)
        }
    }

    /// At most about `bytes` bytes.
    pub fn bytes(mut self, bytes: usize) -> Self {
        self.bytes = bytes;
        self
    }

    /// Stops after `idle` without a record.
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// Stops after `timeout` in all.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Opens [`Reading`]s of topics on one cluster.
#[derive(Debug, Clone)]
pub struct Reader {
    config: KafkaConfig,
    group: String,
}

impl Reader {
    /// A reader on the cluster of `config`. It carries a group id only because librdkafka wants
    /// one; it never joins that group or commits unless [`Reader::with_group`] says so.
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self> {
        config.ensure_enabled()?;
        Ok(Reader {
            config: config.clone(),
            group: "kafkit-reader".to_owned(),
        })
    }

    /// Reads with `group`'s committed offsets: [`Start::Committed`] starts from them and
    /// [`Reading::commit`] moves them. The group is still never joined.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// Reads with `isolation`: [`Isolation::ReadCommitted`] (the default, unless
    /// `KAFKA_ISOLATION_LEVEL` says otherwise) skips records of aborted and still-open
    /// transactions and stops before them; [`Isolation::ReadUncommitted`] reads everything
    /// written.
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.config.isolation = isolation;
        self
    }

    /// Starts reading `topic`: every partition, or only `partitions`. An unknown topic or
    /// partition is an error.
    pub async fn open(
        &self,
        topic: &str,
        partitions: Option<&[i32]>,
        start: Start,
    ) -> Result<Reading> {
        let consumer = self.consumer_for(topic)?;
        let timeout = self.config.request_timeout;
        let name = topic.to_owned();
        let wanted = partitions.map(<[i32]>::to_vec);
        tokio::task::spawn_blocking(move || {
            let positions = positions(&consumer, &name, wanted.as_deref(), start, timeout)?;
            let mut assignment = TopicPartitionList::new();
            let mut ends = HashMap::new();
            for (partition, position) in &positions {
                assignment.add_partition_offset(
                    &name,
                    *partition,
                    Offset::Offset(position.from),
                )?;
                if position.from < position.high {
                    ends.insert(*partition, position.high);
                }
            }
            consumer.assign(&assignment)?;
            Ok(Reading {
                consumer: Arc::new(consumer),
                topic: name,
                ends,
                positions,
                started: Instant::now(),
                timeout,
            })
        })
        .await
        .map_err(Error::Task)?
        .map_err(|source| Error::Consume {
            operation: format!("open {topic} for reading"),
            source,
        })
    }
}

/// A reader's librdkafka callbacks: the end of a partition, which a reader asks to be told
/// about (`enable.partition.eof`), is how a bounded read ends, not an error to log.
#[derive(Debug, Default)]
struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::debug!("librdkafka: {error}: {reason}");
        } else {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReaderContext {}

type ReaderConsumer = StreamConsumer<ReaderContext>;

impl Reader {
    /// A client for reading `topic`, once its name is known to be valid.
    fn consumer_for(&self, topic: &str) -> Result<ReaderConsumer> {
        validate_topic(topic)?;
        self.config
            .to_reader_config(&self.group)
            .create_with_context(ReaderContext)
            .map_err(|source| Error::ClientCreation {
                client: "reader",
                source,
            })
    }

    /// Where reading `topic` from `start` would begin in each partition, without reading: with
    /// [`Start::Committed`], the group's committed offsets and their metadata.
    pub async fn positions(&self, topic: &str, start: Start) -> Result<HashMap<i32, Position>> {
        let consumer = self.consumer_for(topic)?;
        let timeout = self.config.request_timeout;
        let name = topic.to_owned();
        tokio::task::spawn_blocking(move || positions(&consumer, &name, None, start, timeout))
            .await
            .map_err(Error::Task)?
            .map_err(|source| Error::Consume {
                operation: format!("look up the positions of {topic}"),
                source,
            })
    }
}

/// Where reading a partition begins, as of opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The first offset to read.
    pub from: i64,
    /// The low watermark.
    pub low: i64,
    /// The high watermark.
    pub high: i64,
    /// With [`Start::Committed`], the metadata committed with the group's offset (empty
    /// otherwise, or when there is none).
    pub metadata: String,
}

/// The partitions of `topic` to read: `wanted` when each exists, else all of them.
fn partitions_of(
    consumer: &ReaderConsumer,
    topic: &str,
    wanted: Option<&[i32]>,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    if let Some(wanted) = wanted {
        if wanted.iter().any(|p| !partitions.contains(p)) {
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownPartition,
            ));
        }
        partitions = wanted.to_vec();
    }
    Ok(partitions)
}

/// Each partition's first offset to read, its watermarks and committed metadata.
fn positions(
    consumer: &ReaderConsumer,
    topic: &str,
    wanted: Option<&[i32]>,
    start: Start,
    timeout: Duration,
) -> Result<HashMap<i32, Position>, KafkaError> {
    let partitions = partitions_of(consumer, topic, wanted, timeout)?;
    let mut list = TopicPartitionList::new();
    for partition in &partitions {
        match start {
            Start::Timestamp(millis) => {
                list.add_partition_offset(topic, *partition, Offset::Offset(millis))?
            }
            _ => {
                list.add_partition(topic, *partition);
            }
        }
    }
    let found_at = match start {
        Start::Committed => Some(crate::admin::with_coordinator(timeout, || {
            consumer.committed_offsets(list.clone(), timeout)
        })?),
        Start::Timestamp(_) => Some(consumer.offsets_for_times(list, timeout)?),
        _ => None,
    };
    let mut ranges = HashMap::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        let element = found_at
            .as_ref()
            .and_then(|list| list.find_partition(topic, partition));
        let found = element.as_ref().map(|element| element.offset());
        // rdkafka panics on metadata that is not UTF-8; such metadata is not kafkit's.
        let metadata = match (start, &element) {
            (Start::Committed, Some(element)) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    element.metadata().to_owned()
                }))
                .unwrap_or_default()
            }
            _ => String::new(),
        };
        let from = match (start, found) {
            (Start::Beginning, _) => low,
            (Start::End, _) => high,
            (Start::Offset(offset), _) => offset,
            (_, Some(Offset::Offset(offset))) => offset,
            // No record at or after the time: only newer records.
            (Start::Timestamp(_), _) => high,
            // No committed offset: the beginning.
            (Start::Committed, _) => low,
        };
        ranges.insert(
            partition,
            Position {
                from: from.clamp(low, high),
                low,
                high,
                metadata,
            },
        );
    }
    Ok(ranges)
}

/// Records of one topic being read. Dropping it closes the reader.
pub struct Reading {
    // Shared with the blocking task of a synchronous commit.
    consumer: Arc<ReaderConsumer>,
    topic: String,
    /// High watermarks of the partitions not yet read to their end.
    ends: HashMap<i32, i64>,
    /// Where each assigned partition began, as of opening.
    positions: HashMap<i32, Position>,
    started: Instant,
    /// How long a commit may wait for the group's coordinator.
    timeout: Duration,
}

impl std::fmt::Debug for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reading")
            .field("topic", &self.topic)
            .field("unfinished", &self.ends)
            .finish_non_exhaustive()
    }
}

impl Reading {
    /// The low and high watermarks of `partition` as of opening; `None` if it is not read.
    pub fn watermarks(&self, partition: i32) -> Option<(i64, i64)> {
        self.positions.get(&partition).map(|p| (p.low, p.high))
    }

    /// Where reading `partition` began, its watermarks and committed metadata, as of opening;
    /// `None` if it is not read.
    pub fn position(&self, partition: i32) -> Option<&Position> {
        self.positions.get(&partition)
    }

    /// The partitions read.
    pub fn partitions(&self) -> Vec<i32> {
        let mut partitions: Vec<i32> = self.positions.keys().copied().collect();
        partitions.sort_unstable();
        partitions
    }

    /// True once every partition reached its end as of opening.
    pub fn at_end(&self) -> bool {
        self.ends.is_empty()
    }

    /// The next record; `None` when `limits` say stop (the end of every partition with
    /// `to_end`, the idle time or the timeout). The record and byte limits are [`Reading::collect`]'s.
    pub async fn next(&mut self, limits: &Limits) -> Result<Option<Message>> {
        loop {
            if limits.to_end && self.at_end() {
                return Ok(None);
            }
            let deadline = limits.timeout.map(|t| self.started + t);
            let idle_deadline = limits.idle.map(|idle| Instant::now() + idle);
            let until = match (deadline, idle_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let received = match until {
                Some(until) => match tokio::time::timeout_at(until, self.consumer.recv()).await {
                    Ok(received) => received,
                    Err(_) => return Ok(None),
                },
                None => self.consumer.recv().await,
            };
            match received {
                Ok(message) => {
                    let message = Message::from_borrowed(&message);
                    if self
                        .ends
                        .get(&message.partition)
                        .is_some_and(|end| message.offset + 1 >= *end)
                    {
                        self.ends.remove(&message.partition);
                    }
                    return Ok(Some(message));
                }
                // The end of a partition: past its last record, or past control records that
                // never reach the application (transaction markers).
                Err(KafkaError::PartitionEOF(partition)) => {
                    self.ends.remove(&partition);
                }
                Err(source) => {
                    return Err(Error::Consume {
                        operation: format!("read {}", self.topic),
                        source,
                    });
                }
            }
        }
    }

    /// Reads until `limits` say stop.
    pub async fn collect(&mut self, limits: &Limits) -> Result<Vec<Message>> {
        let mut messages = Vec::new();
        let mut bytes = 0usize;
        while messages.len() < limits.records && bytes < limits.bytes {
            let Some(message) = self.next(limits).await? else {
                break;
            };
            bytes += message_size(&message);
            messages.push(message);
        }
        Ok(messages)
    }

    /// Commits, for the reader's group, `next` as the next offset to read in each partition.
    pub async fn commit(&self, next: &HashMap<i32, i64>) -> Result<()> {
        let with_none = next
            .iter()
            .map(|(partition, offset)| (*partition, (*offset, String::new())))
            .collect();
        self.commit_with_metadata(&with_none).await
    }

    /// Commits, for the reader's group, the next offset to read in each partition with its
    /// metadata, in one OffsetCommit (Kafka stores both or neither, per partition).
    pub async fn commit_with_metadata(&self, next: &HashMap<i32, (i64, String)>) -> Result<()> {
        let failed = |source| Error::Consume {
            operation: format!("commit the read position of {}", self.topic),
            source,
        };
        if next.is_empty() {
            return Ok(());
        }
        let list = self.offsets(next).map_err(failed)?;
        let consumer = self.consumer.clone();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || {
            crate::admin::with_coordinator(timeout, || consumer.commit(&list, CommitMode::Sync))
        })
        .await
        .map_err(Error::Task)?
        .map_err(failed)
    }
}

impl Reading {
    /// `next` (offset and metadata per partition) as a list of this reading's topic.
    fn offsets(&self, next: &HashMap<i32, (i64, String)>) -> KafkaResult<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        for (partition, (offset, metadata)) in next {
            let mut element = list.add_partition(&self.topic, *partition);
            element.set_offset(Offset::Offset(*offset))?;
            element.set_metadata(metadata);
        }
        Ok(list)
    }

    /// What a transaction needs to commit `next` for the reader's group instead
    /// ([`crate::transaction::Transaction::send_offsets`]): the offsets, and the group as this
    /// never-joined reader knows it (no member, no generation: the broker takes such a commit
    /// only while the group has no members).
    pub(crate) fn offsets_for_transaction(
        &self,
        next: &HashMap<i32, (i64, String)>,
    ) -> Result<(TopicPartitionList, ConsumerGroupMetadata)> {
        let failed = |source| Error::Consume {
            operation: format!("commit the read position of {}", self.topic),
            source,
        };
        let list = self.offsets(next).map_err(failed)?;
        let group = self
            .consumer
            .group_metadata()
            .ok_or_else(|| failed(KafkaError::MetadataFetch(RDKafkaErrorCode::InvalidGroupId)))?;
        Ok((list, group))
    }
}

/// The bytes a record holds in memory: key, value and headers.
pub fn message_size(message: &Message) -> usize {
    message.key.as_ref().map_or(0, Vec::len)
        + message.value.as_ref().map_or(0, Vec::len)
        + message
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>()
}
