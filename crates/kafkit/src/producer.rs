//! [`Producer`]: typed sends, pipelined batches with per-record results, back-pressure when the
//! local queue is full, and a shutdown that refuses new records and flushes the queued ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use serde::Serialize;

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
/// Pause before retrying an enqueue when the queue is full of other callers' records.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

/// Builds a [`Producer`] with non-default behaviour.
#[derive(Debug)]
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
        self.config.ensure_enabled()?;
        self.config.validate()?;
        let client: FutureProducer =
            self.config
                .to_producer_config()
                .create()
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
/// use kafkit::{KafkaConfig, Producer, Record};
/// let producer = Producer::new(&KafkaConfig::new(["localhost:9092"]))?;
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
    client: FutureProducer,
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

/// A record handed to librdkafka, waiting for the broker's answer.
struct Pending {
    index: usize,
    topic: String,
    enqueued_at: Instant,
    delivery: DeliveryFuture,
}

impl Producer {
    /// A producer with default behaviour for `config`.
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        Producer::builder(config).build()
    }

    /// A builder to set a partitioner, metrics, or the enqueue timeout.
    pub fn builder(config: &KafkaConfig) -> ProducerBuilder {
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
    /// When the local queue fills up, enqueueing waits for earlier records of this batch to be
    /// acknowledged (back-pressure) and gives up after the enqueue timeout.
    pub async fn send_batch(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Vec<Result<Delivery>> {
        let mut results: Vec<Option<Result<Delivery>>> = Vec::new();
        let mut in_flight = FuturesOrdered::new();
        for (index, record) in records.into_iter().enumerate() {
            results.push(None);
            match self
                .enqueue(index, record, &mut in_flight, &mut results)
                .await
            {
                Ok(pending) => in_flight.push_back(pending.wait()),
                Err(error) => results[index] = Some(Err(error)),
            }
        }
        while let Some((index, topic, started, result)) = in_flight.next().await {
            self.record_outcome(&topic, started, &result);
            results[index] = Some(result);
        }
        self.update_queue_depth();
        results
            .into_iter()
            .map(|r| r.expect("every record has a result"))
            .collect()
    }

    /// Waits until every queued record is acknowledged or failed, up to `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<()> {
        let client = self.inner.client.clone();
        tokio::task::spawn_blocking(move || client.flush(timeout))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
            .map_err(|source| Error::Produce {
                topic: "*".into(),
                source,
            })
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

    /// The underlying rdkafka producer, for what kafkit does not wrap.
    pub fn client(&self) -> &FutureProducer {
        &self.inner.client
    }

    /// Hands one record to librdkafka, waiting for room (and resolving earlier deliveries of
    /// the batch meanwhile) while the queue is full.
    async fn enqueue(
        &self,
        index: usize,
        mut record: Record,
        in_flight: &mut FuturesOrdered<
            impl Future<Output = (usize, String, Instant, Result<Delivery>)>,
        >,
        results: &mut [Option<Result<Delivery>>],
    ) -> Result<Pending> {
        if self.is_closed() {
            return Err(Error::ProducerClosed);
        }
        validate_topic(&record.topic)?;
        if self.inner.standard_headers {
            add_standard_headers(&mut record);
        }
        if record.partition.is_none()
            && let Some(partitioner) = &self.inner.partitioner
            && let Some(count) = self.partition_count(&record.topic).await?
        {
            record.partition = partitioner.partition(&record, count);
        }
        let headers = record.headers.iter().fold(
            OwnedHeaders::new_with_capacity(record.headers.len()),
            |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v),
                })
            },
        );
        let deadline = Instant::now() + self.inner.enqueue_timeout;
        let mut future_record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&record.topic).headers(headers);
        future_record.key = record.key.as_deref();
        future_record.payload = record.payload.as_deref();
        future_record.partition = record.partition;
        future_record.timestamp = record.timestamp;
        loop {
            match self.inner.client.send_result(future_record) {
                Ok(delivery) => {
                    return Ok(Pending {
                        index,
                        topic: record.topic.clone(),
                        enqueued_at: Instant::now(),
                        delivery,
                    });
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    future_record = back;
                    // Back-pressure: let our own earlier records complete before retrying.
                    match in_flight.next().await {
                        Some((done, topic, started, result)) => {
                            self.record_outcome(&topic, started, &result);
                            results[done] = Some(result);
                        }
                        None => tokio::time::sleep(QUEUE_FULL_PAUSE).await,
                    }
                }
                Err((source, _)) => {
                    self.count(&record.topic, false, None);
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
        .map_err(|e| Error::Task(e.to_string()))?
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

    fn record_outcome(&self, topic: &str, started: Instant, result: &Result<Delivery>) {
        self.count(topic, result.is_ok(), Some(started));
    }

    /// Counts one record's outcome and, for a delivered one, how long the broker took.
    fn count(&self, topic: &str, delivered: bool, started: Option<Instant>) {
        let Some(metrics) = &self.inner.metrics else {
            return;
        };
        let status = if delivered { "success" } else { "error" };
        metrics
            .messages_sent
            .with_label_values(&[topic, status])
            .inc();
        if let (true, Some(started)) = (delivered, started) {
            metrics
                .send_duration
                .with_label_values(&[topic])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    fn update_queue_depth(&self) {
        if let Some(metrics) = &self.inner.metrics {
            metrics
                .producer_queue_depth
                .set(i64::from(self.queue_depth()));
        }
    }
}

impl Pending {
    async fn wait(self) -> (usize, String, Instant, Result<Delivery>) {
        let result = match self.delivery.await {
            Ok(Ok(delivery)) => Ok(Delivery {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((source, _))) => Err(Error::Produce {
                topic: self.topic.clone(),
                source,
            }),
            Err(_) => Err(Error::Produce {
                topic: self.topic.clone(),
                source: KafkaError::Canceled,
            }),
        };
        (self.index, self.topic, self.enqueued_at, result)
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

fn add_standard_headers(record: &mut Record) {
    if record.header_value(CORRELATION_ID_HEADER).is_none() {
        record.headers.push((
            CORRELATION_ID_HEADER.to_owned(),
            uuid::Uuid::new_v4().to_string().into_bytes(),
        ));
    }
    if record.header_value(TIMESTAMP_HEADER).is_none() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        record
            .headers
            .push((TIMESTAMP_HEADER.to_owned(), now.to_string().into_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_headers_fill_gaps_only() {
        let mut record = Record::to("t").header(CORRELATION_ID_HEADER, "req-1");
        add_standard_headers(&mut record);
        assert_eq!(
            record.header_value(CORRELATION_ID_HEADER),
            Some(&b"req-1"[..])
        );
        let stamp: u128 = std::str::from_utf8(record.header_value(TIMESTAMP_HEADER).unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(stamp > 1_600_000_000_000);
        let mut bare = Record::to("t");
        add_standard_headers(&mut bare);
        assert_eq!(bare.header_value(CORRELATION_ID_HEADER).unwrap().len(), 36);
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
            assert_eq!(result.unwrap_err().code(), "invalid_record");
        }
    }
}
