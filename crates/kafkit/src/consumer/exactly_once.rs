//! [`ExactlyOnce`]: consume-transform-produce in transactions (seed 004's `sendOffsets`). Each
//! batch of input records is transformed, and the output records, the dead-letter copies and
//! the input offsets are committed in one transaction: a read-committed reader of the outputs
//! sees each input's output exactly once, whatever crashes, restarts and rebalances happen.
//!
//! How it holds:
//! - Input is read `read_committed`, offsets are never auto-committed or stored: they move
//!   only inside a committed transaction ([`Transaction::send_offsets`]), with the consumer's
//!   group metadata, so a member that lost its partitions in a rebalance cannot commit them
//!   (KIP-447).
//! - A batch is transformed without polling, so no rebalance happens while it is open. A
//!   rebalance that revoked partitions while the batch was being read discards the batch:
//!   nothing of it is sent, and the partitions still assigned are rewound to its first
//!   offsets.
//! - A failed transaction is aborted (its records never become visible) and its batch is read
//!   again from its first offsets. A fenced producer ([`Error::Fenced`]: another instance
//!   started with the same transactional id) stops the run with that error, writing nothing.
//! - A process killed mid-transaction leaves it open; the next producer with the same
//!   transactional id aborts it when it starts, and readers skip it.
//!
//! Records of one partition are transformed in offset order, one at a time; retries, dead
//! letters and invalid records follow the route's policy as in the at-least-once runtime, and
//! a dead-letter copy is part of the transaction.

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::cluster::{Cluster, EmbeddedBroker};
use crate::config::{Isolation, KafkaConfig};
use crate::consumer::TopicPartition;
use crate::dead_letter::Failure;
use crate::error::{Error, Result};
use crate::handler::HandlerError;
use crate::policy::{FailurePolicy, Verdict, verdict};
use crate::record::{Message, Record};
use crate::transaction::TransactionalProducer;

/// What a transform answers for one input record: the records to write for it (none is fine).
pub type TransformResult = std::result::Result<Vec<Record>, HandlerError>;

/// Turns one input record into output records. Register a closure with
/// [`ExactlyOnce::route`], or implement this for full control over decoding.
pub trait Transform: Send + Sync + 'static {
    /// The output records of `message`. Called for records of one partition in offset order;
    /// may be called again for the same record when its transaction is aborted.
    fn transform<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, TransformResult>;
}

/// A closure over decoded JSON values as a [`Transform`]; an undecodable value is invalid.
struct Typed<T, F> {
    transform: F,
    _value: PhantomData<fn() -> T>,
}

impl<T, F, Fut> Transform for Typed<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = TransformResult> + Send + 'static,
{
    fn transform<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, TransformResult> {
        Box::pin(async move {
            let typed = message
                .decode()
                .map_err(|e| HandlerError::invalid(format!("undecodable value: {e}")))?;
            (self.transform)(typed).await
        })
    }
}

/// An input topic's transform and its failure policy.
#[derive(Clone)]
struct TransformRoute {
    transform: Arc<dyn Transform>,
    failure: FailurePolicy,
}

impl std::fmt::Debug for TransformRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformRoute")
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

/// How input records are grouped into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactlyOnceOptions {
    /// Most input records per transaction.
    pub max_records: usize,
    /// Longest wait for more records once a batch has its first one.
    pub max_wait: Duration,
    /// Pause after a failed transaction before its batch is read again.
    pub retry_pause: Duration,
}

/// Default most input records per transaction.
pub const DEFAULT_TRANSACTION_RECORDS: usize = 1_000;

impl Default for ExactlyOnceOptions {
    fn default() -> Self {
        ExactlyOnceOptions {
            max_records: DEFAULT_TRANSACTION_RECORDS,
            max_wait: Duration::from_millis(100),
            retry_pause: Duration::from_millis(500),
        }
    }
}

/// A consumer group member that transforms its input topics into output records, exactly once.
///
/// ```no_run
/// # async fn demo() -> kafkit::Result<()> {
/// use kafkit::{ExactlyOnce, KafkaConfig, Message, Producer, Record};
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64, amount: u64 }
///
/// let config = KafkaConfig::from_env()?;
/// let producer = Producer::transactional(&config, "billing-1").await?;
/// let mut pipeline = ExactlyOnce::new(&config, "billing", producer)?;
/// pipeline.route("orders", |order: Message<Order>| async move {
///     let invoice = serde_json::json!({"order": order.value.id, "due": order.value.amount});
///     Ok(vec![Record::to("invoices").key(order.value.id.to_string()).json(&invoice)?])
/// });
/// pipeline.run(kafkit::shutdown::signal()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ExactlyOnce {
    config: KafkaConfig,
    group: String,
    producer: TransactionalProducer,
    routes: BTreeMap<String, TransformRoute>,
    options: ExactlyOnceOptions,
    transactions: AtomicU64,
    /// Input records whose transaction committed.
    committed: AtomicU64,
    embedded: Option<Arc<EmbeddedBroker>>,
}

impl ExactlyOnce {
    /// A member of `group` writing through `producer`.
    pub fn new(config: &KafkaConfig, group: &str, producer: TransactionalProducer) -> Result<Self> {
        config.ensure_enabled()?;
        config.validate()?;
        if group.is_empty() {
            return Err(Error::config(
                "KAFKA_GROUP_ID",
                "an exactly-once pipeline needs a group id",
            ));
        }
        let mut config = config.clone();
        // Inputs written in transactions: never the records of aborted ones.
        config.isolation = Isolation::ReadCommitted;
        Ok(ExactlyOnce {
            config,
            group: group.to_owned(),
            producer,
            routes: BTreeMap::new(),
            options: ExactlyOnceOptions::default(),
            transactions: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            embedded: None,
        })
    }

    /// Sets how records are grouped into transactions.
    #[must_use]
    pub fn with_options(mut self, options: ExactlyOnceOptions) -> Self {
        self.options = options;
        self
    }

    /// Runs on `cluster`: with the embedded broker, dead-letter topics are created through it.
    #[must_use]
    pub(crate) fn on(mut self, cluster: &Cluster) -> Self {
        self.embedded = cluster.embedded().cloned();
        self
    }

    /// Transforms `topic`'s JSON records with `transform`; the answer sets its failure policy.
    pub fn route<T, F, Fut>(&mut self, topic: &str, transform: F) -> &mut FailurePolicy
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = TransformResult> + Send + 'static,
    {
        self.route_with(
            topic,
            Typed {
                transform,
                _value: PhantomData,
            },
        )
    }

    /// Transforms `topic`'s records with a [`Transform`] of your own.
    pub fn route_with(&mut self, topic: &str, transform: impl Transform) -> &mut FailurePolicy {
        let route = TransformRoute {
            transform: Arc::new(transform),
            failure: FailurePolicy::default(),
        };
        self.routes.insert(topic.to_owned(), route);
        &mut self.routes.get_mut(topic).expect("just inserted").failure
    }

    /// Transactions committed so far.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Input records whose transaction committed so far (a record read again after an abort
    /// counts once more when it commits).
    pub fn committed_records(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Consumes until `shutdown` completes (the batch in hand is finished first) or the
    /// producer is fenced ([`Error::Fenced`]); then leaves the group.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        if self.routes.is_empty() {
            return Err(Error::config("routes", "no transform registered"));
        }
        if let Some(topic) = self
            .routes
            .iter()
            .find_map(|(t, r)| r.failure.retry_topics.as_ref().map(|_| t))
        {
            return Err(Error::config(
                "retry_topics",
                format!(
                    "{topic}: an exactly-once pipeline retries in place; retry topics are for Consumer routes"
                ),
            ));
        }
        // Polled once now, so that a signal handler it installs is in place while the pipeline
        // starts: a SIGTERM during start-up then stops it cleanly instead of killing it.
        let mut shutdown = Box::pin(shutdown);
        if shutdown.as_mut().now_or_never().is_some() {
            return Ok(());
        }
        let dead_letter_topics: Vec<(String, String)> = self
            .routes
            .iter()
            .filter_map(|(topic, route)| {
                route
                    .failure
                    .dead_letter
                    .as_ref()
                    .map(|d| (topic.clone(), d.topic_for(topic)))
            })
            .collect();
        crate::dead_letter::ensure_topics(
            &self.config,
            self.embedded.as_ref(),
            &dead_letter_topics,
        )
        .await?;
        let consumer: StreamConsumer<Revocations> = self
            .config
            .to_consumer_config_with(&self.group, None)
            .create_with_context(Revocations::default())
            .map_err(|source| Error::ClientCreation {
                client: "consumer",
                source,
            })?;
        let consumer = Arc::new(consumer);
        let topics: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| Error::Consume {
                operation: format!("subscribe to {}", topics.join(", ")),
                source,
            })?;
        tracing::info!(group = %self.group, transactional_id = %self.producer.transactional_id(), ?topics, "exactly-once pipeline started");
        let outcome = self.consume(&consumer, &mut shutdown).await;
        let closing = consumer.clone();
        tokio::task::spawn_blocking(move || {
            closing.unsubscribe();
            drop(closing);
        })
        .await
        .map_err(Error::Task)?;
        tracing::info!(group = %self.group, "exactly-once pipeline stopped");
        outcome
    }

    async fn consume<S: Future<Output = ()>>(
        &self,
        consumer: &Arc<StreamConsumer<Revocations>>,
        shutdown: &mut Pin<Box<S>>,
    ) -> Result<()> {
        let mut stream = consumer.stream();
        loop {
            let revocations = consumer.context().count();
            let first = tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(()),
                message = stream.next() => message,
            };
            let mut batch = match first {
                Some(Ok(message)) => vec![Message::from_borrowed(&message)],
                Some(Err(error)) => {
                    tracing::warn!(%error, "consumer error");
                    continue;
                }
                None => return Ok(()),
            };
            let deadline = Instant::now() + self.options.max_wait;
            while batch.len() < self.options.max_records {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(Ok(message))) => batch.push(Message::from_borrowed(&message)),
                    Ok(Some(Err(error))) => tracing::warn!(%error, "consumer error"),
                    Ok(None) | Err(_) => break,
                }
            }
            if consumer.context().count() != revocations {
                // Some of these records may be another member's now.
                tracing::info!(
                    records = batch.len(),
                    "partitions revoked while a batch was read: it is read again"
                );
                rewind(consumer, &batch).await;
                continue;
            }
            let Some(outputs) = self.transform(&batch, shutdown).await else {
                return Ok(());
            };
            match self.commit(consumer, outputs, &batch).await {
                Ok(()) => {
                    self.transactions.fetch_add(1, Ordering::Relaxed);
                    self.committed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
                Err(error @ Error::Fenced { .. }) => {
                    tracing::error!(%error, "fenced: another instance owns this transactional id; stopping");
                    return Err(error);
                }
                Err(error) => {
                    tracing::warn!(%error, records = batch.len(), "transaction failed and was aborted: its batch is read again");
                    rewind(consumer, &batch).await;
                    tokio::select! {
                        biased;
                        () = shutdown.as_mut() => return Ok(()),
                        () = tokio::time::sleep(self.options.retry_pause) => {}
                    }
                }
            }
        }
    }

    /// The output records of a batch, dead-letter copies included. `None` when shutdown came
    /// while a record waited for its next attempt: nothing of the batch is written.
    async fn transform<S: Future<Output = ()>>(
        &self,
        batch: &[Message],
        shutdown: &mut Pin<Box<S>>,
    ) -> Option<Vec<Record>> {
        let mut outputs = Vec::with_capacity(batch.len());
        for message in batch {
            let Some(route) = self.routes.get(&message.topic) else {
                tracing::error!(topic = %message.topic, "record from a topic without transform");
                continue;
            };
            if !self.settle(route, message, shutdown, &mut outputs).await {
                return None;
            }
        }
        Some(outputs)
    }

    /// Transforms one record until it succeeds, is dead-lettered or skipped, adding what it
    /// writes to `outputs`. False when shutdown interrupted a wait between attempts.
    async fn settle<S: Future<Output = ()>>(
        &self,
        route: &TransformRoute,
        message: &Message,
        shutdown: &mut Pin<Box<S>>,
        outputs: &mut Vec<Record>,
    ) -> bool {
        let mut attempts = 0u32;
        let (error, verdict) = loop {
            attempts += 1;
            let result = AssertUnwindSafe(route.transform.transform(message))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(HandlerError::panic(&*panic)));
            let error = match result {
                Ok(records) => {
                    outputs.extend(records);
                    return true;
                }
                Err(error) => error,
            };
            match verdict(error.kind(), attempts, &route.failure) {
                Verdict::Retry => {}
                settled => break (error, settled),
            }
            tracing::debug!(parent: &record_span(message), attempts, error = error.message(), "retrying");
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return false,
                () = tokio::time::sleep(route.failure.retry_delay(attempts, &error)) => {}
            }
        };
        // Only a failed record gets a span (a span per record costs as much as the rest of the
        // per-record work, see ConsumerOptions::record_spans).
        let _span = record_span(message).entered();
        // A pipeline reads no retry topics: what would go to one is dead-lettered.
        match (&route.failure.dead_letter, verdict) {
            (Some(policy), Verdict::DeadLetter | Verdict::RetryTopic(_)) => {
                tracing::warn!(
                    error = error.message(),
                    attempts,
                    "record dead-lettered in the transaction"
                );
                let failure = Failure {
                    kind: error.kind(),
                    message: error.message().to_owned(),
                    attempts,
                };
                outputs.push(policy.record(message, &self.group, &failure));
            }
            (_, Verdict::Drop | Verdict::DeadLetter | Verdict::RetryTopic(_)) => tracing::error!(
                error = error.message(),
                "no dead-letter topic: record dropped after failure"
            ),
            (_, Verdict::Skip | Verdict::Retry) => {
                tracing::info!(error = error.message(), "record skipped")
            }
        }
        true
    }

    /// Writes `outputs` and the offsets after `batch` in one transaction.
    async fn commit(
        &self,
        consumer: &StreamConsumer<Revocations>,
        outputs: Vec<Record>,
        batch: &[Message],
    ) -> Result<()> {
        let mut offsets = TopicPartitionList::new();
        for (tp, next) in next_offsets(batch) {
            offsets
                .add_partition_offset(&tp.0, tp.1, Offset::Offset(next))
                .map_err(|source| Error::Consume {
                    operation: format!("offset {next} of {} [{}]", tp.0, tp.1),
                    source,
                })?;
        }
        let group = consumer.group_metadata().ok_or_else(|| {
            Error::config("group", "the consumer has no group metadata to commit with")
        })?;
        let transaction = self.producer.begin().await?;
        if !outputs.is_empty() {
            // A failed send leaves a transaction that can only abort: dropping it does.
            transaction.send_batch(outputs).await?;
        }
        transaction.send_offsets(&offsets, group).await?;
        transaction.commit().await
    }
}

/// The span of kafkit's events about a failed record.
fn record_span(message: &Message) -> tracing::Span {
    tracing::info_span!(
        "record",
        topic = %message.topic,
        partition = message.partition,
        offset = message.offset
    )
}

/// Per partition of `batch`, the offset after its last record.
fn next_offsets(batch: &[Message]) -> BTreeMap<TopicPartition, i64> {
    let mut next = BTreeMap::new();
    for message in batch {
        next.insert(
            (message.topic.clone(), message.partition),
            message.offset + 1,
        );
    }
    next
}

/// Moves each partition of `batch` still assigned back to the batch's first record of it, so
/// the batch is read again; what was fetched beyond is dropped by librdkafka.
async fn rewind(consumer: &Arc<StreamConsumer<Revocations>>, batch: &[Message]) {
    let mut first: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for message in batch {
        first
            .entry((message.topic.clone(), message.partition))
            .or_insert(message.offset);
    }
    let consumer = consumer.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let assigned = consumer.assignment().unwrap_or_default();
        for ((topic, partition), offset) in first {
            if assigned.find_partition(&topic, partition).is_none() {
                continue;
            }
            if let Err(error) = consumer.seek(
                &topic,
                partition,
                Offset::Offset(offset),
                Duration::from_secs(10),
            ) {
                tracing::warn!(%topic, partition, offset, %error, "rewinding a partition failed");
            }
        }
    })
    .await;
}

/// Counts revocations, so a batch read across one is known.
#[derive(Debug, Default)]
struct Revocations(AtomicU64);

impl Revocations {
    fn count(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ClientContext for Revocations {}

impl ConsumerContext for Revocations {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                self.0.fetch_add(1, Ordering::SeqCst);
                tracing::info!(partitions = tpl.count(), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }
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
