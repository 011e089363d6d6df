//! [`ExactlyOnce`]: consume-transform-produce in transactions (KafkaJS `transaction.sendOffsets`). Each
//! batch of input records is transformed, and the output records, the dead-letter copies and
//! the input offsets are committed in one transaction: a read-committed reader of the outputs
//! sees each input's output exactly once, whatever crashes, restarts and rebalances happen.
//!
//! How it holds:
//! - Input is read `read_committed`, offsets are never auto-committed or stored: they move
//!   only inside a committed transaction
//!   ([`Transaction::send_offsets`](crate::transaction::Transaction::send_offsets)), with the
//!   consumer's group metadata, so a member that lost its partitions in a rebalance cannot
//!   commit them (KIP-447).
//! - Once a batch's transform or commit has lasted a second, its partitions are paused and
//!   the consumer is polled beside the work until the batch closes (`intake`): librdkafka sees
//!   the pipeline alive however long the batch takes (`max.poll.interval.ms` bounds the time
//!   between polls, not a batch), serves rebalances, and delivers nothing new. A rebalance that revoked partitions while the batch
//!   was read or transformed discards the batch before its offsets are sent (polling stops
//!   first): nothing of it is written; partitions revoked meanwhile start again at the group's
//!   committed offset (never behind what another member committed meanwhile), the others are
//!   rewound to the batch's first records. Once the offsets are sent, a rebalance during the
//!   commit hands the partitions on safely (KIP-447: the next owner waits for the commit's
//!   outcome).
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
//! - A consumer that knows no broker any more (librdkafka#5301, see
//!   `context::PipelineContext::stranded`) is replaced by a new one, which rejoins the group at
//!   its committed offsets.
//! - A process killed mid-transaction leaves it open; the next producer with the same
//!   transactional id aborts it when it starts, and readers skip it.
//!
//! Records of one partition are transformed in offset order, one at a time; retries, dead
//! letters and invalid records follow the route's policy as in the at-least-once runtime, and
//! a dead-letter copy is part of the transaction.

mod commit;
mod context;
mod health;
mod intake;
mod rewind;
mod transform;

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use serde::de::DeserializeOwned;

use crate::cluster::{Cluster, EmbeddedBroker};
use crate::config::{Isolation, KafkaConfig};
use crate::error::{Error, Result};
use crate::policy::FailurePolicy;
use crate::record::Message;
use crate::transaction::TransactionalProducer;
use context::{PipelineContext, STATISTICS_INTERVAL_MS};
use intake::Intake;
use rewind::RewindTo;
pub use transform::{Transform, TransformResult};
use transform::{TransformRoute, Typed};

/// How input records are grouped into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExactlyOnceOptions {
    /// Most input records per transaction.
    pub max_records: usize,
    /// Longest wait for more records once a batch has its first one.
    pub max_wait: Duration,
    /// Pause after a failed transaction before its batch is read again.
    pub retry_pause: Duration,
    /// The loop not turning, or transactions failing, for this long makes
    /// [`ExactlyOnce::health`] unhealthy.
    pub stall_timeout: Duration,
}

/// Default most input records per transaction.
pub const DEFAULT_TRANSACTION_RECORDS: usize = 1_000;

impl Default for ExactlyOnceOptions {
    fn default() -> Self {
        ExactlyOnceOptions {
            max_records: DEFAULT_TRANSACTION_RECORDS,
            max_wait: Duration::from_millis(100),
            retry_pause: Duration::from_millis(500),
            stall_timeout: crate::consumer::DEFAULT_STALL_TIMEOUT,
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
    vitals: health::Vitals,
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
        crate::consumer::group_id::check(group, "an exactly-once pipeline")?;
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
            vitals: health::Vitals::default(),
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
        let topics: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        tracing::info!(group = %self.group, transactional_id = %self.producer().transactional_id(), ?topics, "exactly-once pipeline started");
        self.vitals.started();
        let outcome = loop {
            let consumer = match self.subscribe(&topics) {
                Ok(consumer) => consumer,
                Err(error) => break Err(error),
            };
            let outcome = self.consume(&consumer, &mut shutdown).await;
            let stranded = matches!(outcome, Ok(Ended::Stranded));
            close(consumer, stranded).await?;
            match outcome {
                Ok(Ended::Stranded) => tracing::warn!(group = %self.group,
                    "the consumer knows no broker any more and cannot get back into the group \
                     (librdkafka#5301): replacing it; the new one starts at the group's \
                     committed offsets"),
                Ok(Ended::Stopped) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        self.vitals.stopped(outcome.as_ref().err());
        tracing::info!(group = %self.group, "exactly-once pipeline stopped");
        outcome
    }

    /// A consumer of the group, subscribed to `topics`.
    fn subscribe(&self, topics: &[&str]) -> Result<Arc<StreamConsumer<PipelineContext>>> {
        let mut settings = self.config.to_consumer_config_with(&self.group, None);
        if settings.get("statistics.interval.ms").is_none() {
            // Its statistics say whether it is stranded (PipelineContext::stranded).
            settings.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        }
        let consumer: StreamConsumer<PipelineContext> = settings
            .create_with_context(PipelineContext::default())
            .map_err(|source| Error::ClientCreation {
                client: "consumer",
                source,
            })?;
        consumer
            .subscribe(topics)
            .map_err(|source| Error::Consume {
                operation: format!("subscribe to {}", topics.join(", ")),
                source,
            })?;
        Ok(Arc::new(consumer))
    }

    /// Reads, transforms and commits batch after batch, until shutdown, a fatal error, or the
    /// consumer is stranded.
    async fn consume<S: Future<Output = ()>>(
        &self,
        consumer: &Arc<StreamConsumer<PipelineContext>>,
        shutdown: &mut Pin<Box<S>>,
    ) -> Result<Ended> {
        let mut intake = Intake::new(consumer);
        loop {
            let revocations = consumer.context().count();
            consumer.context().forget();
            let first = tokio::select! {
                biased;
                () = shutdown.as_mut() => return Ok(Ended::Stopped),
                () = consumer.context().stranded() => return Ok(Ended::Stranded),
                read = intake.next() => read,
            };
            let first = match first {
                Some(Ok(read)) => read,
                Some(Err(error)) => {
                    tracing::warn!(%error, "consumer error");
                    continue;
                }
                None => return Ok(Ended::Stopped),
            };
            self.vitals.turned();
            let (batch, unreadable) = intake.read_batch(first, &self.options).await;
            if consumer.context().count() != revocations {
                // Some of these records may be another member's now.
                tracing::info!(
                    records = batch.len(),
                    "partitions revoked while a batch was read: it is read again"
                );
                if !self.read_again(&mut intake, &batch, shutdown).await? {
                    return Ok(Ended::Stopped);
                }
                continue;
            }
            let transformed = intake
                .polling(self.transform(&batch, &unreadable, shutdown))
                .await;
            let Some(outputs) = transformed else {
                return Ok(Ended::Stopped);
            };
            // Polling has stopped, so no rebalance is served from here until the offsets are
            // sent: a revocation served while the batch was transformed is seen here, and the
            // batch commits no offset of a partition that is not ours any more.
            if consumer.context().count() != revocations {
                tracing::info!(
                    records = batch.len(),
                    "partitions revoked while a batch was transformed: it is read again"
                );
                if !self.read_again(&mut intake, &batch, shutdown).await? {
                    return Ok(Ended::Stopped);
                }
                continue;
            }
            let transactions = self.transactions();
            let go_on = self
                .commit_batch(&mut intake, &batch, outputs, shutdown)
                .await?;
            // A batch not committed was rewound (or the pipeline stops).
            let committed = self.transactions() > transactions;
            intake.close((!committed).then_some(&batch[..])).await?;
            if go_on != Some(true) {
                return Ok(Ended::Stopped);
            }
        }
    }

    /// Rewinds `batch`'s partitions to its first records and closes it, writing nothing of
    /// it; false when shutdown came meanwhile.
    async fn read_again<S: Future<Output = ()>>(
        &self,
        intake: &mut Intake<'_>,
        batch: &[Message],
        shutdown: &mut Pin<Box<S>>,
    ) -> Result<bool> {
        let rewound = self
            .rewind(intake.consumer(), batch, RewindTo::BatchStart, shutdown)
            .await?;
        intake.close(Some(batch)).await?;
        Ok(rewound)
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

/// Why [`ExactlyOnce::consume`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Shutdown came (or the consumer's stream ended).
    Stopped,
    /// The consumer knows no broker any more ([`PipelineContext::stranded`]): replace it.
    Stranded,
}

/// Leaves the group and closes `consumer`. A stranded consumer cannot tell the group it
/// leaves; its closing is not waited for beyond [`STRANDED_CLOSE_WAIT`].
async fn close(consumer: Arc<StreamConsumer<PipelineContext>>, stranded: bool) -> Result<()> {
    let closing = tokio::task::spawn_blocking(move || {
        consumer.unsubscribe();
        drop(consumer);
    });
    if !stranded {
        return closing.await.map_err(Error::Task);
    }
    match tokio::time::timeout(STRANDED_CLOSE_WAIT, closing).await {
        Ok(closed) => closed.map_err(Error::Task),
        Err(_) => {
            tracing::warn!("the stranded consumer is still closing; going on without it");
            Ok(())
        }
    }
}

/// How long the closing of a stranded consumer is waited for.
const STRANDED_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// How long a commit under way when shutdown comes may still take.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
