//! [`Producer`]: typed sends, pipelined batches with per-record results, back-pressure when the
//! local queue is full, and a shutdown that refuses new records and flushes the queued ones.

mod delivery;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ThreadedProducer};
use serde::Serialize;

pub use delivery::Batch;
pub(crate) use delivery::DeliveryContext;
use delivery::Opaque;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::partitioner::Partitioner;
use crate::record::{Delivery, Record, validate_topic};

/// Header carrying a request or trace id, added when absent.
pub const CORRELATION_ID_HEADER: &str = "correlation-id";
/// Header carrying the send time in milliseconds since the epoch, added when absent.
pub const TIMESTAMP_HEADER: &str = "timestamp";
/// How long a send waits for room in a full local queue before failing with `queue_full`.
pub const DEFAULT_ENQUEUE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a metadata lookup (partition counts, for custom partitioners) may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a delivery to free room in a full queue before trying again.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

/// Builds a [`Producer`] with non-default behaviour.
#[derive(Clone, Debug)]
#[must_use]
pub struct ProducerBuilder {
    config: KafkaConfig,
    partitioner: Option<Arc<dyn Partitioner>>,
    standard_headers: bool,
    enqueue_timeout: Duration,
    metrics: Option<Metrics>,
}

impl ProducerBuilder {
    /// Uses `partitioner` for records without an explicit partition.
    pub fn partitioner(mut self, partitioner: impl Partitioner + 'static) -> Self {
        self.partitioner = Some(Arc::new(partitioner));
        self
    }

    /// Whether to add `correlation-id` and `timestamp` headers to records lacking them
    /// (default: yes).
    pub fn standard_headers(mut self, enabled: bool) -> Self {
        self.standard_headers = enabled;
        self
    }

    /// How long a send waits for room when the local queue is full (default 30 s). Zero fails
    /// at once with a `queue_full` error, which an HTTP gateway turns into `429`.
    pub fn enqueue_timeout(mut self, timeout: Duration) -> Self {
        self.enqueue_timeout = timeout;
        self
    }

    /// Records `kafka_messages_sent_total` and `kafka_send_duration_seconds` here.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Creates the producer. It connects lazily; a wrong address shows up as delivery errors.
    pub fn build(self) -> Result<Producer> {
        let settings = self.config.to_producer_config();
        self.build_with(settings)
    }

    /// The configuration the producer is built from.
    pub(crate) fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Creates the producer with these librdkafka settings (derived from the builder's
    /// configuration by one of its `to_*_config` methods).
    pub(crate) fn build_with(self, settings: rdkafka::ClientConfig) -> Result<Producer> {
        self.config.ensure_enabled()?;
        self.config.validate()?;
        let client: ThreadedProducer<DeliveryContext> = settings
            .create_with_context(DeliveryContext::default())
            .map_err(|source| Error::ClientCreation {
                client: "producer",
                source,
            })?;
        Ok(Producer {
            inner: Arc::new(Inner {
                client,
                closed: AtomicBool::new(false),
                partitioner: self.partitioner,
                partition_counts: RwLock::new(HashMap::new()),
                standard_headers: self.standard_headers,
                enqueue_timeout: self.enqueue_timeout,
                flush_timeout: self.config.delivery_timeout,
                metrics: self.metrics,
            }),
        })
    }
}

/// A Kafka producer. Clone it freely: clones share one client and one queue.
///
/// ```no_run
/// # async fn demo() -> kafkit::Result<()> {
/// use kafkit::{Kafka, KafkaConfig, Record};
/// let producer = Kafka::connect(&KafkaConfig::new(["localhost:9092"]))?.producer()?;
/// producer.send_json("orders", Some("order-1"), &serde_json::json!({"id": 1})).await?;
/// let results = producer
///     .send_batch((0..1000).map(|i| Record::to("events").key(format!("k{i}")).text("hi")))
///     .await;
/// assert!(results.iter().all(Result::is_ok));
/// producer.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    client: ThreadedProducer<DeliveryContext>,
    closed: AtomicBool,
    partitioner: Option<Arc<dyn Partitioner>>,
    partition_counts: RwLock<HashMap<String, i32>>,
    standard_headers: bool,
    enqueue_timeout: Duration,
    flush_timeout: Duration,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("closed", &self.closed)
            .field("partitioner", &self.partitioner)
            .field("standard_headers", &self.standard_headers)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer with default behaviour for `config`.
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self> {
        Producer::builder(config).build()
    }

    /// A builder to set a partitioner, metrics, or the enqueue timeout.
    pub(crate) fn builder(config: &KafkaConfig) -> ProducerBuilder {
        ProducerBuilder {
            config: config.clone(),
            partitioner: None,
            standard_headers: true,
            enqueue_timeout: DEFAULT_ENQUEUE_TIMEOUT,
            metrics: None,
        }
    }

    /// Sends one record and waits for the broker's acknowledgement.
    pub async fn send(&self, record: Record) -> Result<Delivery> {
        self.send_batch([record])
            .await
            .pop()
            .expect("one result per record")
    }

    /// Serializes `value` as JSON and sends it to `topic` with an optional key.
    pub async fn send_json<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        key: Option<&str>,
        value: &T,
    ) -> Result<Delivery> {
        let mut record = Record::to(topic).json(value)?;
        record.key = key.map(|k| k.as_bytes().to_vec());
        self.send(record).await
    }

    /// Sends records to any number of topics: all are enqueued first, then their
    /// acknowledgements are awaited together. Returns one result per record, in input order.
    ///
    /// When the local queue fills up, enqueueing waits for deliveries to make room
    /// (back-pressure) and gives up after the enqueue timeout.
    #[must_use = "each record's result says whether the broker stored it"]
    pub async fn send_batch(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Vec<Result<Delivery>> {
        let records: Vec<Record> = records.into_iter().collect();
        let batch = Arc::new(Batch::new(records.len(), self.inner.metrics.is_some()));
        // One send time for the whole batch: the `timestamp` header is in milliseconds anyway.
        let sent_at = self.inner.standard_headers.then(now_millis);
        let mut refused: HashMap<usize, Error> = HashMap::new();
        let mut topics: Vec<(String, Range<usize>)> = Vec::new();
        let mut validated: Option<String> = None;
        for (index, record) in records.into_iter().enumerate() {
            match topics.last_mut() {
                Some((topic, range)) if *topic == record.topic => range.end = index + 1,
                _ => topics.push((record.topic.clone(), index..index + 1)),
            }
            if let Err(error) = self
                .enqueue(&batch, index, record, &mut validated, sent_at.as_deref())
                .await
            {
                refused.insert(index, error);
                batch.settle();
            }
        }
        batch.settled().await;
        let results = batch.results(refused);
        self.record_outcomes(&batch, &topics, &results);
        results
    }

    /// Waits until every queued record is acknowledged or failed, up to `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<()> {
        let client = self.inner.client.clone();
        tokio::task::spawn_blocking(move || client.flush(timeout))
            .await
            .map_err(Error::Task)?
            .map_err(|source| Error::Flush { source })
    }

    /// Refuses new records from now on and flushes the queued ones (within the delivery
    /// timeout). Call it before the process exits: a producer dropped unflushed loses its
    /// queue.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::SeqCst);
        let queued = self.queue_depth();
        tracing::info!(queued, "producer shutting down, flushing queued records");
        self.flush(self.inner.flush_timeout).await
    }

    /// True once [`Producer::shutdown`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    /// Records queued locally or in flight to the brokers.
    pub fn queue_depth(&self) -> i32 {
        self.inner.client.in_flight_count()
    }

    /// The librdkafka client, for the transaction calls of
    /// [`TransactionalProducer`](crate::transaction::TransactionalProducer).
    pub(crate) fn client(&self) -> &ThreadedProducer<DeliveryContext> {
        &self.inner.client
    }

    /// Hands one record to librdkafka, waiting for room while the queue is full.
    /// `validated` remembers the last topic name that passed validation.
    async fn enqueue(
        &self,
        batch: &Arc<Batch>,
        index: usize,
        mut record: Record,
        validated: &mut Option<String>,
        sent_at: Option<&str>,
    ) -> Result<()> {
        if self.is_closed() {
            return Err(Error::ProducerClosed);
        }
        if validated.as_deref() != Some(record.topic.as_str()) {
            validate_topic(&record.topic)?;
            *validated = Some(record.topic.clone());
        }
        if record.partition.is_none()
            && let Some(partitioner) = &self.inner.partitioner
            && let Some(count) = self.partition_count(&record.topic).await?
        {
            record.partition = partitioner.partition(&record, count);
        }
        let mut base: BaseRecord<'_, [u8], [u8], Opaque> =
            BaseRecord::with_opaque_to(&record.topic, Box::new((batch.clone(), index)));
        base.key = record.key.as_deref();
        base.payload = record.payload.as_deref();
        base.partition = record.partition;
        base.timestamp = record.timestamp;
        // No header block at all for header-less records: it is a C allocation per record.
        if !record.headers.is_empty() || sent_at.is_some() {
            let headers = record.headers.iter().fold(
                OwnedHeaders::new_with_capacity(record.headers.len() + 2),
                |h, (k, v)| {
                    h.insert(Header {
                        key: k,
                        value: Some(v),
                    })
                },
            );
            base.headers = Some(match sent_at {
                Some(sent_at) => add_standard_headers(&record, headers, sent_at),
                None => headers,
            });
        }
        let context = self.inner.client.context();
        let mut deadline = None;
        loop {
            match self.inner.client.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now()
                        < *deadline
                            .get_or_insert_with(|| Instant::now() + self.inner.enqueue_timeout) =>
                {
                    base = back;
                    // Back-pressure: wait for a delivery report to make room.
                    context.waiting.fetch_add(1, Ordering::SeqCst);
                    let _ = tokio::time::timeout(QUEUE_FULL_PAUSE, context.room.notified()).await;
                    context.waiting.fetch_sub(1, Ordering::SeqCst);
                }
                Err((source, _)) => {
                    return Err(Error::Produce {
                        topic: record.topic.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// The partition count of `topic`, looked up once and cached. `None` when the topic does
    /// not exist (yet): the record then goes through librdkafka's default partitioner, which
    /// lets auto-creation happen.
    async fn partition_count(&self, topic: &str) -> Result<Option<i32>> {
        if let Some(count) = self
            .inner
            .partition_counts
            .read()
            .expect("not poisoned")
            .get(topic)
        {
            return Ok(Some(*count));
        }
        let client = self.inner.client.clone();
        let name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            client
                .client()
                .fetch_metadata(Some(&name), METADATA_TIMEOUT)
        })
        .await
        .map_err(Error::Task)?
        .map_err(|source| Error::Produce {
            topic: topic.to_owned(),
            source,
        })?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as i32);
        if count == 0 {
            return Ok(None);
        }
        self.inner
            .partition_counts
            .write()
            .expect("not poisoned")
            .insert(topic.to_owned(), count);
        Ok(Some(count))
    }

    /// Counts outcomes per topic and observes delivery times, once per batch.
    fn record_outcomes(
        &self,
        batch: &Batch,
        topics: &[(String, Range<usize>)],
        results: &[Result<Delivery>],
    ) {
        let Some(metrics) = &self.inner.metrics else {
            return;
        };
        for (topic, range) in topics {
            let ok = results[range.clone()].iter().filter(|r| r.is_ok()).count();
            let failed = range.len() - ok;
            if ok > 0 {
                metrics.record_sent(topic, "success", ok as u64);
                let histogram = metrics.send_duration_of(topic);
                for slot in &batch.slots[range.clone()] {
                    if let Some((Ok(_), took)) = slot.get() {
                        histogram.observe(took.as_secs_f64());
                    }
                }
            }
            if failed > 0 {
                metrics.record_sent(topic, "error", failed as u64);
            }
        }
        metrics
            .producer_queue_depth
            .set(i64::from(self.queue_depth()));
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping an rdkafka producer discards its queue; give queued records their chance.
        let queued = self.client.in_flight_count();
        if queued > 0 && !self.closed.load(Ordering::SeqCst) {
            tracing::warn!(queued, "producer dropped without shutdown(); flushing now");
            let _ = self.client.flush(self.flush_timeout);
        }
    }
}

/// Milliseconds since the epoch, as text.
fn now_millis() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .to_string()
}

/// Appends to `headers` the standard headers `record` lacks. They go straight into librdkafka's
/// header block: no Rust copy of the names and values, and the correlation id is formatted on
/// the stack.
fn add_standard_headers(record: &Record, mut headers: OwnedHeaders, sent_at: &str) -> OwnedHeaders {
    if record.header_value(CORRELATION_ID_HEADER).is_none() {
        let mut text = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        headers = headers.insert(Header {
            key: CORRELATION_ID_HEADER,
            value: Some(id.as_bytes()),
        });
    }
    if record.header_value(TIMESTAMP_HEADER).is_none() {
        headers = headers.insert(Header {
            key: TIMESTAMP_HEADER,
            value: Some(sent_at.as_bytes()),
        });
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers `record` is sent with, as name and text.
    fn sent_headers(record: &Record, sent_at: &str) -> Vec<(String, String)> {
        use rdkafka::message::Headers as _;
        let headers = record
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v),
                })
            });
        add_standard_headers(record, headers, sent_at)
            .iter()
            .map(|h| {
                let value = String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap();
                (h.key.to_owned(), value)
            })
            .collect()
    }

    #[test]
    fn standard_headers_fill_gaps_only() {
        let record = Record::to("t").header(CORRELATION_ID_HEADER, "req-1");
        let headers = sent_headers(&record, &now_millis());
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers[0], (CORRELATION_ID_HEADER.into(), "req-1".into()));
        assert_eq!(headers[1].0, TIMESTAMP_HEADER);
        let stamp: u128 = headers[1].1.parse().unwrap();
        assert!(stamp > 1_600_000_000_000);

        let bare = sent_headers(&Record::to("t"), "1");
        assert_eq!(bare[0].0, CORRELATION_ID_HEADER);
        let id = uuid::Uuid::parse_str(&bare[0].1).expect("a UUID");
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(bare[1], (TIMESTAMP_HEADER.into(), "1".into()));
        // Fresh per record.
        assert_ne!(sent_headers(&Record::to("t"), "1")[0], bare[0]);
    }

    #[tokio::test]
    async fn send_after_shutdown_is_refused() {
        // No broker is needed: the refusal happens before anything is enqueued.
        let producer = Producer::new(&KafkaConfig::new(["127.0.0.1:1"])).unwrap();
        producer.shutdown().await.unwrap();
        let error = producer
            .send(Record::to("t").text("late"))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::ProducerClosed), "{error:?}");
    }

    #[tokio::test]
    async fn invalid_topic_names_are_refused_before_enqueueing() {
        let producer = Producer::new(&KafkaConfig::new(["127.0.0.1:1"])).unwrap();
        let results = producer
            .send_batch([Record::to("bad topic!").text("x"), Record::to("").text("y")])
            .await;
        for result in results {
            assert_eq!(
                result.unwrap_err().code(),
                crate::error::ErrorCode::InvalidRecord
            );
        }
    }
}
