//! [`ExactlyOnce`]: consume-transform-produce in transactions (KafkaJS `transaction.sendOffsets`). Each
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
//!   nothing of it is sent; partitions revoked meanwhile start again at the group's
//!   committed offset (never behind what another member committed meanwhile), the others are
//!   rewound to the batch's first records.
//! - A failed transaction is aborted (its records never become visible) and its batch is read
//!   again from its first records. A rewind that fails is tried again before anything more is
//!   read: reading on could commit offsets past records that were never written.
//! - A commit the broker does not answer is resumed
//!   ([`Transaction::commit`](crate::transaction::Transaction::commit)). When it has not
//!   resolved after the transaction timeout plus the request timeout, or it resolved fenced
//!   because the broker aborted the transaction for outliving the transaction timeout, the
//!   pipeline registers a new producer with the same transactional id
//!   ([`TransactionalProducer::recreate`]), which settles the transaction with the broker, and
//!   reads again from the committed offsets, which say whether it committed.
//! - Otherwise a fenced producer ([`Error::Fenced`]: another instance started with the same
//!   transactional id) stops the run with that error, writing nothing.
//! - A process killed mid-transaction leaves it open; the next producer with the same
//!   transactional id aborts it when it starts, and readers skip it.
//!
//! Records of one partition are transformed in offset order, one at a time; retries, dead
//! letters and invalid records follow the route's policy as in the at-least-once runtime, and
//! a dead-letter copy is part of the transaction.

use std::collections::{BTreeMap, BTreeSet};
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
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
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
/// use kafkit::{Kafka, Message, Record};
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64, amount: u64 }
///
/// let kafka = Kafka::from_env()?;
/// let producer = kafka.transactional_producer("billing-1").await?;
/// let mut pipeline = kafka.exactly_once("billing", producer)?;
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
    /// Replaced by a new one when the broker aborted a transaction that outlived the
    /// transaction timeout (see [`ExactlyOnce::run`]).
    producer: std::sync::Mutex<TransactionalProducer>,
    routes: BTreeMap<String, TransformRoute>,
    options: ExactlyOnceOptions,
    transactions: AtomicU64,
    /// Input records whose transaction committed.
    committed: AtomicU64,
    embedded: Option<Arc<EmbeddedBroker>>,
}

impl ExactlyOnce {
    /// A member of `group` writing through `producer`.
    pub(crate) fn new(
        config: &KafkaConfig,
        group: &str,
        producer: TransactionalProducer,
    ) -> Result<Self> {
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
            producer: std::sync::Mutex::new(producer),
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

    /// Consumes until `shutdown` completes (the batch in hand is finished first; a commit
    /// the broker does not answer is waited for a few seconds more, then left to the broker)
    /// or the producer is fenced ([`Error::Fenced`]); then leaves the group.
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
        tracing::info!(group = %self.group, transactional_id = %self.producer().transactional_id(), ?topics, "exactly-once pipeline started");
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
            consumer.context().forget();
            let first = tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(()),
                message = stream.next() => message,
            };
            // Records whose headers cannot be read as they are, by index in the batch.
            let mut unreadable: BTreeMap<usize, String> = BTreeMap::new();
            let mut read = |message: &rdkafka::message::BorrowedMessage<'_>, index: usize| {
                let topic = rdkafka::Message::topic(message).to_owned();
                let (message, problem) = Message::checked(message, topic);
                if let Some(problem) = problem {
                    unreadable.insert(index, problem);
                }
                message
            };
            let mut batch = match first {
                Some(Ok(message)) => vec![read(&message, 0)],
                Some(Err(error)) => {
                    tracing::warn!(%error, "consumer error");
                    continue;
                }
                None => return Ok(()),
            };
            let deadline = Instant::now() + self.options.max_wait;
            while batch.len() < self.options.max_records {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(Ok(message))) => batch.push(read(&message, batch.len())),
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
                if !self
                    .rewind(consumer, &batch, RewindTo::BatchStart, shutdown)
                    .await?
                {
                    return Ok(());
                }
                continue;
            }
            let Some(outputs) = self.transform(&batch, &unreadable, shutdown).await else {
                return Ok(());
            };
            let began = Instant::now();
            let commit = tokio::time::timeout(
                self.unresolved_limit(),
                self.commit(consumer, outputs, &batch),
            );
            let (outcome, stopping) = finish_unless_stopped(commit, shutdown).await;
            let Some(outcome) = outcome else {
                tracing::warn!(
                    records = batch.len(),
                    "stopping while the transaction's commit is unresolved: its outcome is \
                     unknown; the broker settles it, and the offsets committed say where the \
                     next member resumes"
                );
                return Ok(());
            };
            let Ok(outcome) = outcome else {
                tracing::warn!(
                    records = batch.len(),
                    limit_ms = self.unresolved_limit().as_millis() as u64,
                    "the transaction's commit has not resolved (librdkafka has not settled it \
                     with the broker): the broker aborts a transaction it did not see committed \
                     after the transaction timeout"
                );
                if stopping || !self.start_over(consumer, &batch, shutdown).await? {
                    return Ok(());
                }
                continue;
            };
            match outcome {
                Ok(()) => {
                    self.transactions.fetch_add(1, Ordering::Relaxed);
                    self.committed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if stopping {
                        return Ok(());
                    }
                }
                Err(error @ Error::Fenced { .. })
                    if began.elapsed() >= self.config.transaction_timeout =>
                {
                    // librdkafka reports a transaction the broker aborted for its timeout as
                    // fenced; it cannot be told from a newer instance with the same id, which
                    // the new producer fences in turn (it then stops with this error).
                    tracing::warn!(%error, open_ms = began.elapsed().as_millis() as u64,
                        "fenced after the transaction stayed open longer than the transaction \
                         timeout (the broker did not answer): the broker aborted it");
                    if stopping || !self.start_over(consumer, &batch, shutdown).await? {
                        return Ok(());
                    }
                }
                Err(error @ Error::Fenced { .. }) => {
                    tracing::error!(%error, "fenced: another instance registered this transactional id; stopping");
                    return Err(error);
                }
                Err(error @ Error::Transaction { aborted: false, .. }) => {
                    tracing::warn!(%error, records = batch.len(), "the transaction's outcome is unknown");
                    if stopping || !self.start_over(consumer, &batch, shutdown).await? {
                        return Ok(());
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, records = batch.len(), "transaction failed and was aborted: its batch is read again");
                    if stopping {
                        return Ok(());
                    }
                    if !self
                        .rewind(consumer, &batch, RewindTo::BatchStart, shutdown)
                        .await?
                    {
                        return Ok(());
                    }
                    tokio::select! {
                        biased;
                        () = shutdown.as_mut() => return Ok(()),
                        () = tokio::time::sleep(self.options.retry_pause) => {}
                    }
                }
            }
        }
    }

    /// How long a commit may stay unresolved before the pipeline starts over with a new
    /// producer: the broker has aborted the transaction by then unless it committed it.
    fn unresolved_limit(&self) -> Duration {
        self.config.transaction_timeout + self.config.request_timeout
    }

    /// After a transaction whose outcome this producer cannot learn any more: registers a new
    /// producer with the same transactional id, which settles the transaction with the broker
    /// (committed or aborted), then rewinds `batch`'s partitions to the committed offsets,
    /// which say which it was. Tries again while the broker does not answer; false when
    /// shutdown came meanwhile.
    async fn start_over<S: Future<Output = ()>>(
        &self,
        consumer: &Arc<StreamConsumer<Revocations>>,
        batch: &[Message],
        shutdown: &mut Pin<Box<S>>,
    ) -> Result<bool> {
        tracing::warn!(
            records = batch.len(),
            "registering a new producer with the same transactional id, which settles the \
             transaction; the batch is then read again from the committed offsets"
        );
        while let Err(error) = self.recreate_producer().await {
            tracing::warn!(%error, "registering a new producer failed; trying again");
            tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(false),
                () = tokio::time::sleep(self.options.retry_pause) => {}
            }
        }
        self.rewind(consumer, batch, RewindTo::Committed, shutdown)
            .await
    }

    /// Rewinds `batch`'s partitions ([`rewind`]) to `to`, again while that fails: reading on
    /// before they are rewound could commit offsets past records never written. False when
    /// shutdown came meanwhile.
    async fn rewind<S: Future<Output = ()>>(
        &self,
        consumer: &Arc<StreamConsumer<Revocations>>,
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

    /// The producer transactions are written with.
    fn producer(&self) -> TransactionalProducer {
        self.producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the (fenced) producer with a new one of the same transactional id.
    async fn recreate_producer(&self) -> Result<()> {
        let old = self.producer();
        let fresh = old.recreate().await?;
        *self
            .producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        // Dropping a client blocks until its threads end.
        tokio::task::spawn_blocking(move || drop(old))
            .await
            .map_err(Error::Task)
    }

    /// The output records of a batch, dead-letter copies included. `None` when shutdown came
    /// while a record waited for its next attempt: nothing of the batch is written.
    /// A record of `unreadable` (index in `batch`, reason) is invalid without being
    /// transformed.
    async fn transform<S: Future<Output = ()>>(
        &self,
        batch: &[Message],
        unreadable: &BTreeMap<usize, String>,
        shutdown: &mut Pin<Box<S>>,
    ) -> Option<Vec<Record>> {
        let mut outputs = Vec::with_capacity(batch.len());
        for (index, message) in batch.iter().enumerate() {
            let Some(route) = self.routes.get(&message.topic) else {
                tracing::error!(topic = %message.topic, "record from a topic without transform");
                continue;
            };
            let unreadable = unreadable.get(&index).map(String::as_str);
            if !self
                .settle(route, message, unreadable, shutdown, &mut outputs)
                .await
            {
                return None;
            }
        }
        Some(outputs)
    }

    /// Transforms one record until it succeeds, is dead-lettered or skipped, adding what it
    /// writes to `outputs`; a record `unreadable` (saying why) is invalid as it is. False when
    /// shutdown interrupted a wait between attempts.
    async fn settle<S: Future<Output = ()>>(
        &self,
        route: &TransformRoute,
        message: &Message,
        unreadable: Option<&str>,
        shutdown: &mut Pin<Box<S>>,
        outputs: &mut Vec<Record>,
    ) -> bool {
        let mut attempts = 0u32;
        let (error, verdict) = loop {
            attempts += 1;
            let result = match unreadable {
                Some(reason) => Err(HandlerError::invalid(reason)),
                None => attempt(route, message).await,
            };
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
        let transaction = self.producer().begin().await?;
        if !outputs.is_empty() {
            // A failed send leaves a transaction that can only abort: dropping it does.
            transaction.send_batch(outputs).await?;
        }
        transaction.send_offsets(&offsets, group).await?;
        transaction.commit().await
    }
}

/// One call of `route`'s transform on `message`; a panic, while it builds its future or in
/// the future, is the record's failure ([`HandlerError::panic`]) rather than the pipeline's.
async fn attempt(route: &TransformRoute, message: &Message) -> TransformResult {
    match std::panic::catch_unwind(AssertUnwindSafe(|| route.transform.transform(message))) {
        Ok(future) => AssertUnwindSafe(future)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(HandlerError::panic(&*panic))),
        Err(panic) => Err(HandlerError::panic(&*panic)),
    }
}

/// Awaits `work` (a transaction's commit); when `shutdown` completes first, waits for it a
/// little longer ([`SHUTDOWN_GRACE`]: a commit the broker answers takes milliseconds), then
/// gives up on it (`None`). True as well when `shutdown` completed (it must not be polled
/// again).
async fn finish_unless_stopped<T, S: Future<Output = ()>>(
    work: impl Future<Output = T>,
    shutdown: &mut Pin<Box<S>>,
) -> (Option<T>, bool) {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        biased;
        outcome = &mut work => (Some(outcome), false),
        () = shutdown.as_mut() => (tokio::time::timeout(SHUTDOWN_GRACE, work).await.ok(), true),
    }
}

/// Where a batch's partitions are rewound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RewindTo {
    /// The batch's first records: nothing of the batch was committed.
    BatchStart,
    /// The group's committed offsets: whether the batch's transaction committed is known only
    /// to the broker.
    Committed,
}

/// How long a commit under way when shutdown comes may still take.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

/// How long a rewind waits for its seeks, and a look-up of committed offsets for them.
const REWIND_TIMEOUT: Duration = Duration::from_secs(10);

/// Moves each partition of `batch` back to `targets`' offset of it (the batch's first record
/// of it where `targets` has none), so that what follows is read again; what was fetched
/// beyond is dropped by librdkafka. Partitions revoked since the batch began are left alone:
/// a partition re-assigned since starts at the group's committed offset, and rewinding it
/// could go behind what another member committed meanwhile. Fails when a partition could not
/// be rewound.
async fn rewind(
    consumer: &Arc<StreamConsumer<Revocations>>,
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
    consumer: &StreamConsumer<Revocations>,
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
async fn committed_offsets(
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

/// Counts revocations, so a batch read across one is known, and remembers which partitions
/// were revoked since [`Revocations::forget`].
#[derive(Debug, Default)]
struct Revocations {
    count: AtomicU64,
    revoked: std::sync::Mutex<BTreeSet<TopicPartition>>,
}

impl Revocations {
    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Partitions revoked since the last [`Revocations::forget`].
    fn revoked(&self) -> BTreeSet<TopicPartition> {
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts remembering afresh (a batch begins).
    fn forget(&self) {
        self.revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

impl ClientContext for Revocations {}

impl ConsumerContext for Revocations {
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
