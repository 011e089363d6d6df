//! The consumer runtime: subscribes to the router's topics, dispatches each partition's records
//! to its own worker (partitions run concurrently, records of one partition in order), pauses
//! partitions under back-pressure, during retries and while a circuit is open, and on shutdown
//! drains within a bound, commits what is done and leaves the group.

mod context;
pub mod exactly_once;
mod fetched;
pub(crate) mod group_id;
mod handling;
mod keyed;
pub mod offset_map;
mod offsets;
mod options;
mod poll;
mod shutdown;
mod state;
mod worker;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use tokio::sync::mpsc;

pub use self::options::{
    CommitStrategy, ConsumerOptions, DEFAULT_DRAIN_TIMEOUT, DEFAULT_LAG_INTERVAL,
    DEFAULT_MAX_QUEUED_BYTES_PER_PARTITION, DEFAULT_MAX_QUEUED_PER_PARTITION,
    DEFAULT_STALL_TIMEOUT,
};
pub(crate) use self::state::{Control, PartitionState, Shared, queued_size};
pub use crate::router::ProcessingOrder;

#[cfg(test)]
pub(crate) use self::context::CommitHistory;
use self::context::RuntimeContext;
use crate::cluster::{Cluster, EmbeddedBroker};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
pub use crate::health::PauseReason;
use crate::health::{CommitStatus, HealthReport, PartitionHealth};
use crate::metrics::Metrics;
use crate::producer::Producer;
use crate::router::Router;

/// `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// A consumer group member running a [`Router`]'s handlers.
///
/// ```no_run
/// # async fn demo() -> kafkit::Result<()> {
/// use kafkit::{Kafka, Message, Router};
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// let mut router = Router::new();
/// router.register("orders", |order: Message<Order>| async move {
///     println!("order {}", order.value.id);
///     Ok(())
/// });
/// let consumer = Kafka::from_env()?.consumer("billing", router)?;
/// consumer.run(kafkit::shutdown::signal()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    config: KafkaConfig,
    router: Router,
    options: ConsumerOptions,
    metrics: Option<Metrics>,
    dead_letters: Option<Producer>,
    embedded: Option<Arc<EmbeddedBroker>>,
    shared: Arc<Shared>,
    /// The running client's context, for commit times in health reports.
    context: Mutex<Option<Arc<RuntimeContext>>>,
}

impl Consumer {
    /// A consumer of `group` with `options`.
    pub(crate) fn with_options(
        config: &KafkaConfig,
        group: &str,
        router: Router,
        options: ConsumerOptions,
    ) -> Result<Self> {
        config.ensure_enabled()?;
        config.validate()?;
        group_id::check(group, "a consumer")?;
        if router.topics().is_empty() {
            return Err(Error::config("router", "no handler registered"));
        }
        if let Some((topic, _)) = router.iter().find(|(_, r)| {
            matches!(r.route, crate::router::Route::Batch(..))
                && r.order != ProcessingOrder::Partition
        }) {
            return Err(Error::config(
                "order",
                format!(
                    "{topic}: a batch route is handled in partition order; key and unordered order are for single-record routes"
                ),
            ));
        }
        let router = router.with_retry_tiers()?;
        if options.drain_timeout >= config.session_timeout {
            return Err(Error::config(
                "drain_timeout",
                format!(
                    "must be shorter than KAFKA_SESSION_TIMEOUT ({} ms)",
                    config.session_timeout.as_millis()
                ),
            ));
        }
        Ok(Consumer {
            config: config.clone(),
            router,
            options,
            metrics: None,
            dead_letters: None,
            embedded: None,
            shared: Arc::new(Shared::new(group)),
            context: Mutex::new(None),
        })
    }

    /// Records consumer metrics in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Publishes dead-letter records with `producer` (default: a producer of its own).
    #[must_use]
    pub fn with_dead_letter_producer(mut self, producer: Producer) -> Self {
        self.dead_letters = Some(producer);
        self
    }

    /// Creates dead-letter topics through `broker`'s own API (the embedded development broker
    /// has no CreateTopics).
    #[must_use]
    pub(crate) fn with_embedded(mut self, broker: Arc<EmbeddedBroker>) -> Self {
        self.embedded = Some(broker);
        self
    }

    /// Runs on `cluster`: with the embedded broker, dead-letter topics are created through it.
    #[must_use]
    pub(crate) fn on(self, cluster: &Cluster) -> Self {
        match cluster.embedded() {
            Some(broker) => self.with_embedded(broker.clone()),
            None => self,
        }
    }

    /// The handlers.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The group id.
    pub fn group(&self) -> &str {
        &self.shared.group
    }

    /// Whether [`Consumer::run`] is running.
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Consumes until `shutdown` completes: then stops fetching, lets in-flight records finish
    /// within the drain timeout (abandoning the rest, which are re-delivered later), commits
    /// what is done and leaves the group.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        if self.shared.running.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyRunning);
        }
        let result = self.run_inner(shutdown).await;
        self.shared.running.store(false, Ordering::SeqCst);
        result
    }

    async fn run_inner(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        // Polled once now, so that a signal handler it installs is in place while the consumer
        // starts: a SIGTERM during start-up then stops it cleanly instead of killing it.
        let mut shutdown = std::pin::pin!(shutdown);
        if futures::FutureExt::now_or_never(shutdown.as_mut()).is_some() {
            return Ok(());
        }
        let dead_letters = self.dead_letter_producer().await?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let auto_commit = match self.options.commit {
            CommitStrategy::Periodic(interval) => Some(interval),
            CommitStrategy::EveryRecord => None,
        };
        let client_config: ClientConfig = self
            .config
            .to_consumer_config_with(&self.shared.group, auto_commit);
        let consumer: StreamConsumer<RuntimeContext> = client_config
            .create_with_context(RuntimeContext::new(events_tx))
            .map_err(|source| Error::ClientCreation {
                client: "consumer",
                source,
            })?;
        let consumer = Arc::new(consumer);
        *self.context.lock().expect("not poisoned") = Some(consumer.context().clone());
        let topics = self.router.topics();
        consumer
            .subscribe(&topics)
            .map_err(|source| Error::Consume {
                operation: format!("subscribe to {}", topics.join(", ")),
                source,
            })?;
        tracing::info!(group = %self.shared.group, topics = ?topics, "consumer started");
        self.shared.touch_poll();
        let mut poll = poll::PollLoop::new(self, consumer.clone(), dead_letters, events_rx);
        poll.run(shutdown).await;
        let workers = poll.into_workers();
        self.drain(workers).await;
        self.store_settled(&consumer);
        let closed = self.close(consumer).await;
        let fatal = self.shared.fatal.lock().expect("not poisoned").clone();
        match fatal {
            Some((code, reason)) => Err(Error::ConsumerFailed {
                group: self.shared.group.clone(),
                code,
                reason,
            }),
            None => closed,
        }
    }

    /// The producer for dead-letter records, and the dead-letter topics, when any route has one.
    async fn dead_letter_producer(&self) -> Result<Option<Producer>> {
        // Retry tiers copy to their source's topics, listed with the source.
        let dead_letter_topics: Vec<(String, String)> = self
            .router
            .iter()
            .filter(|(_, r)| r.tier.is_none())
            .flat_map(|(topic, r)| {
                r.copy_topics(topic)
                    .into_iter()
                    .map(move |copy| (topic.to_owned(), copy))
            })
            .collect();
        if dead_letter_topics.is_empty() {
            return Ok(None);
        }
        if self.options.create_dead_letter_topics {
            crate::dead_letter::ensure_topics(
                &self.config,
                self.embedded.as_ref(),
                &dead_letter_topics,
            )
            .await?;
        }
        match &self.dead_letters {
            Some(producer) => Ok(Some(producer.clone())),
            None => Ok(Some(Producer::new(&self.config)?)),
        }
    }

    /// The consumer's health: assignment, polling, commits, queues, pauses, circuits, lag.
    pub fn health(&self) -> HealthReport {
        let partitions = self.shared.partitions.lock().expect("not poisoned").clone();
        let assigned = self.shared.assigned.lock().expect("not poisoned").clone();
        let mut entries: Vec<PartitionHealth> = assigned
            .iter()
            .map(|tp| {
                let state = partitions.get(tp);
                PartitionHealth {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    queued: state.map_or(0, |s| s.queued.load(Ordering::SeqCst)),
                    queued_bytes: state.map_or(0, |s| s.queued_bytes.load(Ordering::SeqCst)),
                    in_flight: state.map_or(0, |s| s.in_flight.load(Ordering::SeqCst)),
                    last_done_offset: state
                        .map(|s| s.last_done.load(Ordering::SeqCst))
                        .filter(|o| *o >= 0),
                    since_progress: state.map(|s| s.since_progress()),
                    paused: state
                        .map(|s| {
                            let mut reasons = s.paused.lock().expect("not poisoned").clone();
                            // Held back while polling waits for it, before any pause.
                            if s.backpressured.load(Ordering::SeqCst) {
                                reasons.insert(PauseReason::Backpressure);
                            }
                            reasons.into_iter().collect()
                        })
                        .unwrap_or_default(),
                    lag: state.and_then(|s| s.lag()),
                }
            })
            .collect();
        entries.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let circuits = self
            .router
            .iter()
            .filter_map(|(topic, r)| {
                r.circuit_breaker
                    .as_ref()
                    .map(|b| (topic.to_owned(), b.state()))
            })
            .collect();
        HealthReport::new(
            &self.shared.group,
            self.is_running(),
            self.shared.since_poll(),
            self.commits(),
            entries,
            circuits,
            self.options.stall_timeout,
        )
        .with_fatal(self.shared.fatal.lock().expect("not poisoned").as_ref())
    }

    /// The last commit (how long ago, whether it succeeded) and how long commits have been
    /// failing, if they are.
    fn commits(&self) -> CommitStatus {
        let history = self
            .context
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|context| *context.commits.lock().expect("not poisoned"))
            .unwrap_or_default();
        CommitStatus {
            last: history.last.map(|(at, ok)| (at.elapsed(), ok)),
            failing_for: history.failing_since.map(|since| since.elapsed()),
        }
    }
}
