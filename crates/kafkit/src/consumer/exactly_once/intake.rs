//! The pipeline's input: batches read from the consumer's stream, and the stream kept polled
//! while a batch is open without delivering anything new.
//!
//! librdkafka takes a consumer that has not polled for `max.poll.interval.ms` for wedged: it
//! leaves the group, the open batch's offsets can no longer be committed, and the same slow
//! batch is read again and again. So once a batch's transform or commit has lasted a second,
//! its partitions are paused (`rd_kafka_pause_partitions`) and the stream is polled beside the
//! work until the batch closes: librdkafka sees the pipeline alive and serves rebalances, and
//! fetches nothing.
//!
//! librdkafka 2.12's pause, seek and resume, as this relies on them: a pause bumps the
//! partition's fetch version at once (in the calling thread), so what was fetched and not yet
//! polled is dropped rather than delivered, and the partition is fetched again from after the
//! last record the application polled. A seek while paused (a rewind) sets where fetching
//! resumes. The application's pause flag outlives a revoke and a re-assign, so whatever was
//! paused is resumed when the batch closes, assigned or not.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer as _, MessageStream, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::time::Instant;

use super::ExactlyOnceOptions;
use super::context::{PipelineContext, partitions};
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};
use crate::record::Message;

/// One input record as read, with why it cannot be transformed as it is (a header key that is
/// not UTF-8), if it cannot.
pub(super) struct Read {
    message: Message,
    unreadable: Option<String>,
}

impl Read {
    fn from(message: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        let topic = rdkafka::Message::topic(message).to_owned();
        let (message, unreadable) = Message::checked(message, topic);
        Read {
            message,
            unreadable,
        }
    }

    fn partition(&self) -> TopicPartition {
        (self.message.topic.clone(), self.message.partition)
    }
}

/// The consumer's stream, and the records it delivered while a batch was open.
pub(super) struct Intake<'c> {
    consumer: &'c Arc<StreamConsumer<PipelineContext>>,
    stream: MessageStream<'c, PipelineContext>,
    /// Records delivered while a batch was open, in the order read: the next batch begins with
    /// them. Dropping one would lose it: librdkafka's position is already past it. Pausing a
    /// partition discards what was fetched for it and not yet polled (its fetch version
    /// barrier), so at most the records already on their way are held.
    held: VecDeque<Read>,
    /// Whether the open batch's partitions are paused: only then is the stream polled beside
    /// its work (polling unpaused partitions would read records without bound).
    paused: bool,
}

impl<'c> Intake<'c> {
    pub(super) fn new(consumer: &'c Arc<StreamConsumer<PipelineContext>>) -> Self {
        Intake {
            consumer,
            stream: consumer.stream(),
            held: VecDeque::new(),
            paused: false,
        }
    }

    pub(super) fn consumer(&self) -> &'c Arc<StreamConsumer<PipelineContext>> {
        self.consumer
    }

    /// The next record: a held one first, else the stream's next (cancel-safe).
    pub(super) async fn next(&mut self) -> Option<std::result::Result<Read, KafkaError>> {
        if let Some(read) = self.held.pop_front() {
            return Some(Ok(read));
        }
        let next = self.stream.next().await?;
        Some(next.map(|message| Read::from(&message)))
    }

    /// The batch that begins with `first`: up to [`ExactlyOnceOptions::max_records`] records,
    /// whatever arrives within [`ExactlyOnceOptions::max_wait`]; with the records whose headers
    /// cannot be read as they are (index in the batch, why).
    pub(super) async fn read_batch(
        &mut self,
        first: Read,
        options: &ExactlyOnceOptions,
    ) -> (Vec<Message>, BTreeMap<usize, String>) {
        let mut batch = Vec::new();
        let mut unreadable = BTreeMap::new();
        let add = |batch: &mut Vec<Message>, unreadable: &mut BTreeMap<_, _>, read: Read| {
            if let Some(reason) = read.unreadable {
                unreadable.insert(batch.len(), reason);
            }
            batch.push(read.message);
        };
        add(&mut batch, &mut unreadable, first);
        let deadline = Instant::now() + options.max_wait;
        while batch.len() < options.max_records {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Some(Ok(read))) => add(&mut batch, &mut unreadable, read),
                Ok(Some(Err(error))) => tracing::warn!(%error, "consumer error"),
                Ok(None) | Err(_) => break,
            }
        }
        (batch, unreadable)
    }

    /// Awaits `work` (a batch's transform, or its commit). Work that lasts longer than
    /// [`PAUSE_AFTER`] goes on with the batch's partitions paused and the stream polled beside
    /// it: rebalances are served (see [`PipelineContext::count`]), and a record delivered all
    /// the same is held for the next batch and its partition paused. Quicker work is left
    /// alone: pausing discards what librdkafka prefetched, which would be fetched again.
    pub(super) async fn polling<T>(&mut self, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        if !self.paused {
            tokio::select! {
                biased;
                done = &mut work => return done,
                () = tokio::time::sleep(PAUSE_AFTER) => {}
            }
            self.paused = self.pause_assignment().await;
            if !self.paused {
                return work.await;
            }
            tracing::debug!(
                after = ?PAUSE_AFTER,
                "batch still open: its partitions are paused and polled beside its work"
            );
        }
        loop {
            tokio::select! {
                biased;
                done = &mut work => return done,
                next = self.stream.next() => match next {
                    Some(Ok(message)) => self.hold(Read::from(&message)),
                    Some(Err(error)) => tracing::warn!(%error, "consumer error"),
                    None => return work.await,
                },
            }
        }
    }

    /// Pauses every assigned partition, and (through the rebalance callback,
    /// [`PipelineContext::pause_while_open`]) those assigned until [`Intake::close`]. False
    /// when the assignment could not be paused: the work goes on without polling, as before.
    async fn pause_assignment(&self) -> bool {
        let consumer = self.consumer.clone();
        let paused = tokio::task::spawn_blocking(move || -> rdkafka::error::KafkaResult<()> {
            let assigned = consumer.assignment()?;
            consumer.context().pause_while_open(partitions(&assigned));
            consumer.pause(&assigned)
        })
        .await;
        let error = match paused {
            Ok(Ok(())) => return true,
            Ok(Err(error)) => error.to_string(),
            Err(error) => error.to_string(),
        };
        tracing::warn!(%error, "pausing the batch's partitions failed: its work goes on \
            without polling (keep it shorter than max.poll.interval.ms)");
        false
    }

    /// Keeps `read` for the next batch, and pauses its partition (not paused yet, or its
    /// pause in the rebalance callback failed).
    fn hold(&mut self, read: Read) {
        let (topic, partition) = read.partition();
        tracing::debug!(%topic, partition, offset = read.message.offset,
            "record delivered while a batch is open: held for the next batch");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, partition);
        self.consumer
            .context()
            .pause_while_open(BTreeSet::from([(topic, partition)]));
        if let Err(error) = self.consumer.pause(&tpl) {
            tracing::warn!(%error, "pausing a partition while a batch is open failed");
        }
        self.held.push_back(read);
    }

    /// Closes the batch: resumes what was paused for it. Held records of partitions revoked
    /// meanwhile are dropped (their next owner, or this member's new assignment, reads them
    /// from the committed offset), and so are those of `rewound`'s partitions (read again
    /// after the rewind).
    pub(super) async fn close(&mut self, rewound: Option<&[Message]>) -> Result<()> {
        let paused = self.consumer.context().stop_pausing();
        self.paused = false;
        let revoked = self.consumer.context().revoked();
        let rewound: BTreeSet<TopicPartition> = rewound
            .unwrap_or_default()
            .iter()
            .map(|m| (m.topic.clone(), m.partition))
            .collect();
        self.held.retain(|read| {
            let partition = read.partition();
            !revoked.contains(&partition) && !rewound.contains(&partition)
        });
        if paused.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in &paused {
            tpl.add_partition(topic, *partition);
        }
        // A partition revoked while paused keeps librdkafka's application pause flag; resuming
        // it too keeps it from staying paused when it is assigned again.
        let consumer = self.consumer.clone();
        let resumed = tokio::task::spawn_blocking(move || consumer.resume(&tpl))
            .await
            .map_err(Error::Task)?;
        resumed.map_err(|source| Error::Consume {
            operation: "resume the batch's partitions".to_owned(),
            source,
        })
    }
}

/// How long a batch's work goes on before its partitions are paused and the stream polled
/// beside it: far below any sensible `max.poll.interval.ms` (librdkafka's minimum is 1 s,
/// its default 300 s), and long enough that batches of quick transforms are never paused.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
