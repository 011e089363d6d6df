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
mod poll;
mod worker;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// Default bound on records waiting per partition before it is paused.
pub const DEFAULT_MAX_QUEUED_PER_PARTITION: usize = 10_000;
/// Default bound on the bytes (keys and values) of records waiting per partition before it is
/// paused: large records reach it long before the record bound.
pub const DEFAULT_MAX_QUEUED_BYTES_PER_PARTITION: usize = 32 * 1024 * 1024;
/// Default time shutdown waits for in-flight records.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time without progress after which a consumer with waiting records is unhealthy.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often lag is refreshed from the brokers' watermarks.
pub const DEFAULT_LAG_INTERVAL: Duration = Duration::from_secs(5);

/// When stored offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitStrategy {
    /// Periodically (librdkafka auto-commit of stored offsets), on revocation and on shutdown.
    Periodic(Duration),
    /// After every handled record or batch (asynchronously), as KafkaJS's manual commits.
    EveryRecord,
}

impl Default for CommitStrategy {
    fn default() -> Self {
        CommitStrategy::Periodic(Duration::from_secs(5))
    }
}

/// Requests from workers to the poll loop.
#[derive(Debug)]
pub(crate) enum Control {
    Pause(TopicPartition, u64, PauseReason),
    Resume(TopicPartition, u64, PauseReason),
}

/// A partition as the runtime sees it; shared by the poll loop, its worker and health.
#[derive(Debug)]
pub(crate) struct PartitionState {
    started: Instant,
    /// Records dispatched and not yet settled.
    pub queued: AtomicUsize,
    /// Their bytes, as [`queued_size`] counts them.
    pub queued_bytes: AtomicUsize,
    /// Records settled so far; the poll loop turns changes into progress times.
    pub settled: AtomicU64,
    /// Epoch of the partition's current worker: only it writes `last_done`.
    pub epoch: AtomicU64,
    /// Offset of the last settled record of the current worker (-1: none).
    pub last_done: AtomicI64,
    /// Milliseconds since `started` of the last progress.
    last_progress_ms: AtomicI64,
    /// Set from when the partition's queue reaches its bound until its worker drains half of
    /// it: polling stops, and the partition is paused if that takes long.
    pub backpressured: AtomicBool,
    /// High watermark at the last lag refresh (-1: unknown).
    pub high_watermark: AtomicI64,
    /// Records being handled now (key and unordered order: up to the route's bound).
    pub in_flight: AtomicUsize,
    /// Key and unordered order: the offset and done-offset map last stored, committed
    /// explicitly at shutdown (librdkafka's commit of its current state drops metadata).
    pub committable: Mutex<Option<(i64, String)>>,
    /// Why it is paused, if it is.
    pub paused: Mutex<BTreeSet<PauseReason>>,
}

impl PartitionState {
    fn new() -> Self {
        PartitionState {
            started: Instant::now(),
            queued: AtomicUsize::new(0),
            queued_bytes: AtomicUsize::new(0),
            settled: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            last_done: AtomicI64::new(-1),
            last_progress_ms: AtomicI64::new(0),
            backpressured: AtomicBool::new(false),
            high_watermark: AtomicI64::new(-1),
            in_flight: AtomicUsize::new(0),
            committable: Mutex::new(None),
            paused: Mutex::new(BTreeSet::new()),
        }
    }

    /// Puts `count` records of `bytes` on the queue; returns the records and bytes queued.
    pub fn enqueue(&self, count: usize, bytes: usize) -> (usize, usize) {
        (
            self.queued.fetch_add(count, Ordering::SeqCst) + count,
            self.queued_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes,
        )
    }

    /// Takes `count` records of `bytes` off the queue; returns the records and bytes left.
    pub fn unqueue(&self, count: usize, bytes: usize) -> (usize, usize) {
        let take = |counter: &AtomicUsize, n: usize| {
            let previous = counter
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
                    Some(q.saturating_sub(n))
                })
                .unwrap_or_default();
            previous.saturating_sub(n)
        };
        (take(&self.queued, count), take(&self.queued_bytes, bytes))
    }

    /// Lifts back-pressure once the worker of `epoch` is down to half its bounds (`remaining`
    /// of `bounds`, in records and bytes). Only the partition's current worker may: a retiring
    /// predecessor clearing the flag would swallow its successor's `Resume`, leaving the
    /// partition paused with nothing queued.
    pub(crate) fn lift_backpressure(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        control: &mpsc::UnboundedSender<Control>,
        bounds: (usize, usize),
        remaining: (usize, usize),
    ) {
        if remaining.0 <= bounds.0 / 2
            && remaining.1 <= bounds.1 / 2
            && self.epoch.load(Ordering::SeqCst) == epoch
            && self.backpressured.swap(false, Ordering::SeqCst)
        {
            let _ = control.send(Control::Resume(
                tp.clone(),
                epoch,
                PauseReason::Backpressure,
            ));
        }
    }

    /// Notes progress now.
    pub fn touch(&self) {
        self.last_progress_ms
            .store(self.started.elapsed().as_millis() as i64, Ordering::SeqCst);
    }

    fn since_progress(&self) -> Duration {
        let last = Duration::from_millis(self.last_progress_ms.load(Ordering::SeqCst) as u64);
        self.started.elapsed().saturating_sub(last)
    }

    fn lag(&self) -> Option<i64> {
        let high = self.high_watermark.load(Ordering::SeqCst);
        let done = self.last_done.load(Ordering::SeqCst);
        (high >= 0 && done >= 0).then(|| (high - done - 1).max(0))
    }
}

/// What a queued record counts against the per-partition byte bound: its key and value, as
/// [`fetched::size`] counts it before the record is copied.
pub(crate) fn queued_size(message: &crate::record::Message) -> usize {
    message.value.as_ref().map_or(0, Vec::len) + message.key.as_ref().map_or(0, Vec::len)
}

/// Runtime state visible to health reports.
#[derive(Debug)]
pub(crate) struct Shared {
    pub group: String,
    pub running: AtomicBool,
    started: Instant,
    last_poll_ms: AtomicI64,
    pub partitions: Mutex<HashMap<TopicPartition, Arc<PartitionState>>>,
    pub assigned: Mutex<BTreeSet<TopicPartition>>,
    pub rebalances: AtomicUsize,
    /// librdkafka's fatal error, once it raised one: the consumer consumes nothing more.
    pub fatal: Mutex<Option<(RDKafkaErrorCode, String)>>,
    /// A lag refresh is under way: at most one at a time, or refreshes stuck on an
    /// unreachable broker would pile up.
    pub refreshing_lag: AtomicBool,
}

impl Shared {
    fn touch_poll(&self) {
        self.last_poll_ms
            .store(self.started.elapsed().as_millis() as i64, Ordering::SeqCst);
    }

    fn since_poll(&self) -> Duration {
        let last = Duration::from_millis(self.last_poll_ms.load(Ordering::SeqCst) as u64);
        self.started.elapsed().saturating_sub(last)
    }

    fn partition(&self, tp: &TopicPartition) -> Arc<PartitionState> {
        self.partitions
            .lock()
            .expect("not poisoned")
            .entry(tp.clone())
            .or_insert_with(|| Arc::new(PartitionState::new()))
            .clone()
    }
}

/// Runtime settings of a [`Consumer`].
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// When offsets are committed.
    pub commit: CommitStrategy,
    /// Records waiting per partition before it is paused (bounds memory).
    pub max_queued_per_partition: usize,
    /// Bytes of records (keys and values) waiting per partition before it is paused.
    pub max_queued_bytes_per_partition: usize,
    /// How long shutdown waits for in-flight records; keep it below the session timeout.
    pub drain_timeout: Duration,
    /// No progress for this long with records waiting makes the consumer unhealthy.
    pub stall_timeout: Duration,
    /// How often lag is refreshed.
    pub lag_interval: Duration,
    /// Create missing dead-letter topics at start, with the source topic's partition count.
    pub create_dead_letter_topics: bool,
    /// Run each record's handling in a `record{offset}` span, inside the worker's
    /// `partition{group, topic, partition}` span, so every line the handler logs names its
    /// record. Off by default: with a formatting subscriber a span per record costs about as
    /// much as the rest of the runtime's per-record work (see BENCHMARKS.md). kafkit's own
    /// events about a failed record (retry, dead letter, skip) carry its offset either way.
    pub record_spans: bool,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            commit: CommitStrategy::default(),
            max_queued_per_partition: DEFAULT_MAX_QUEUED_PER_PARTITION,
            max_queued_bytes_per_partition: DEFAULT_MAX_QUEUED_BYTES_PER_PARTITION,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            lag_interval: DEFAULT_LAG_INTERVAL,
            create_dead_letter_topics: true,
            record_spans: false,
        }
    }
}

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
        if group.is_empty() {
            return Err(Error::config(
                "KAFKA_GROUP_ID",
                "a consumer needs a group id",
            ));
        }
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
            shared: Arc::new(Shared {
                group: group.to_owned(),
                running: AtomicBool::new(false),
                started: Instant::now(),
                last_poll_ms: AtomicI64::new(0),
                partitions: Mutex::new(HashMap::new()),
                assigned: Mutex::new(BTreeSet::new()),
                rebalances: AtomicUsize::new(0),
                fatal: Mutex::new(None),
                refreshing_lag: AtomicBool::new(false),
            }),
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

    /// Lets workers finish their current record, up to the drain timeout; abandons the rest.
    async fn drain(&self, workers: Vec<(CancellationToken, JoinHandle<()>)>) {
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
    fn store_settled(&self, consumer: &StreamConsumer<RuntimeContext>) {
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
    async fn close(&self, consumer: Arc<StreamConsumer<RuntimeContext>>) -> Result<()> {
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
