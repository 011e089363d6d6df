//! Metric names and recording, in one Prometheus registry per process.
//!
//! Labels stay low-cardinality: topic, outcome, never keys or offsets. The producer's topic
//! labels are capped ([`MAX_TOPIC_SERIES`]): a producer whose callers name the topics (a
//! gateway) would otherwise grow a series per name it was given.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Records sent, by `topic` and `status` (`success` or `error`); the name KafkaJS services export.
pub const MESSAGES_SENT_TOTAL: &str = "kafka_messages_sent_total";
/// Time from `send` to the broker's acknowledgement, by `topic`; the name KafkaJS services export.
pub const SEND_DURATION_SECONDS: &str = "kafka_send_duration_seconds";
/// Records waiting in the producer's local queue.
pub const PRODUCER_QUEUE_DEPTH: &str = "kafka_producer_queue_depth";

/// Most topics the producer metrics keep series of; records to any later topic are counted
/// under `topic="other"` ([`OTHER_TOPICS`]).
pub const MAX_TOPIC_SERIES: usize = 100;
/// The `topic` label of records to topics past [`MAX_TOPIC_SERIES`].
pub const OTHER_TOPICS: &str = "other";

/// Records seen by consumers, by `group`, `topic` and `outcome` (`consumed`, `succeeded`,
/// `retried`, `dead_lettered`, `skipped`).
pub const CONSUMER_RECORDS_TOTAL: &str = "kafkit_consumer_records_total";
/// Handler run time per call, by `group` and `topic`.
pub const HANDLER_DURATION_SECONDS: &str = "kafkit_handler_duration_seconds";
/// Records not yet processed, by `group`, `topic` and `partition`.
pub const CONSUMER_LAG: &str = "kafkit_consumer_lag";
/// Records being handled now, by `group`, `topic` and `partition`: up to the route's
/// `max_in_flight` in key and unordered order, 0 or 1 (a batch: its size) in partition order.
/// Sampled once a second by the poll loop.
pub const CONSUMER_IN_FLIGHT: &str = "kafkit_consumer_in_flight";
/// Circuit breaker state by `group` and `topic`: 0 closed, 1 half-open, 2 open.
pub const CIRCUIT_STATE: &str = "kafkit_circuit_state";
/// Rebalances a consumer went through, by `group`.
pub const REBALANCES_TOTAL: &str = "kafkit_consumer_rebalances_total";

/// kafkit's metrics and the registry they live in. Cheap to clone (handles are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) messages_sent: IntCounterVec,
    pub(crate) send_duration: HistogramVec,
    pub(crate) producer_queue_depth: IntGauge,
    pub(crate) consumer_records: IntCounterVec,
    pub(crate) handler_duration: HistogramVec,
    pub(crate) consumer_lag: IntGaugeVec,
    pub(crate) consumer_in_flight: IntGaugeVec,
    pub(crate) circuit_state: IntGaugeVec,
    pub(crate) rebalances: IntCounterVec,
    /// Topics with producer series of their own, at most [`MAX_TOPIC_SERIES`].
    send_topics: Arc<Mutex<HashSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(Registry::new())
    }
}

impl Metrics {
    /// Registers kafkit's metrics in `registry` (which may hold the application's own too).
    pub fn new(registry: Registry) -> Self {
        let messages_sent = counters(
            MESSAGES_SENT_TOTAL,
            "Records sent to Kafka, by outcome.",
            &["topic", "status"],
        );
        let send_duration = HistogramVec::new(
            HistogramOpts::new(
                SEND_DURATION_SECONDS,
                "Time from send to broker acknowledgement.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["topic"],
        )
        .expect("valid metric definition");
        let producer_queue_depth = IntGauge::new(
            PRODUCER_QUEUE_DEPTH,
            "Records in the producer's local queue, not yet acknowledged.",
        )
        .expect("valid metric definition");
        let consumer_records = counters(
            CONSUMER_RECORDS_TOTAL,
            "Records seen by consumers, by outcome.",
            &["group", "topic", "outcome"],
        );
        let handler_duration = HistogramVec::new(
            HistogramOpts::new(HANDLER_DURATION_SECONDS, "Handler run time per call."),
            &["group", "topic"],
        )
        .expect("valid metric definition");
        let per_partition = &["group", "topic", "partition"];
        let consumer_lag = gauges(
            CONSUMER_LAG,
            "Records not yet processed, per partition.",
            per_partition,
        );
        let consumer_in_flight = gauges(
            CONSUMER_IN_FLIGHT,
            "Records being handled now, per partition.",
            per_partition,
        );
        let circuit_state = gauges(
            CIRCUIT_STATE,
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            &["group", "topic"],
        );
        let rebalances = counters(
            REBALANCES_TOTAL,
            "Rebalances a consumer went through.",
            &["group"],
        );
        for collector in [
            Box::new(messages_sent.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(send_duration.clone()),
            Box::new(producer_queue_depth.clone()),
            Box::new(consumer_records.clone()),
            Box::new(handler_duration.clone()),
            Box::new(consumer_lag.clone()),
            Box::new(consumer_in_flight.clone()),
            Box::new(circuit_state.clone()),
            Box::new(rebalances.clone()),
        ] {
            // A second Metrics on the same registry reuses nothing; registering twice is a
            // programming error we surface early.
            registry
                .register(collector)
                .expect("kafkit metrics registered once per registry");
        }
        Metrics {
            registry,
            messages_sent,
            send_duration,
            producer_queue_depth,
            consumer_records,
            handler_duration,
            consumer_lag,
            consumer_in_flight,
            circuit_state,
            rebalances,
            send_topics: Arc::default(),
        }
    }

    /// Counts `count` records sent to `topic` with `status` (`success` or `error`).
    pub(crate) fn record_sent(&self, topic: &str, status: &str, count: u64) {
        self.messages_sent
            .with_label_values(&[self.topic_label(topic), status])
            .inc_by(count);
    }

    /// The send-duration histogram of `topic`.
    pub(crate) fn send_duration_of(&self, topic: &str) -> prometheus::Histogram {
        self.send_duration
            .with_label_values(&[self.topic_label(topic)])
    }

    /// `topic` while fewer than [`MAX_TOPIC_SERIES`] topics have series, else
    /// [`OTHER_TOPICS`].
    fn topic_label<'a>(&self, topic: &'a str) -> &'a str {
        let mut topics = self.send_topics.lock().expect("not poisoned");
        if topics.contains(topic) {
            return topic;
        }
        if topics.len() < MAX_TOPIC_SERIES {
            topics.insert(topic.to_owned());
            return topic;
        }
        OTHER_TOPICS
    }

    /// The registry, to add application metrics or to gather.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the registry in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# metrics encoding failed: {e}\n"))
    }
}

/// A counter family; the definitions are constants, so a failure is a programming error.
fn counters(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

/// A gauge family, as [`counters`].
fn gauges(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_recorded_values_in_text_format() {
        let metrics = Metrics::default();
        metrics
            .messages_sent
            .with_label_values(&["orders", "success"])
            .inc_by(3);
        metrics
            .send_duration
            .with_label_values(&["orders"])
            .observe(0.002);
        let text = metrics.render();
        assert!(
            text.contains(r#"kafka_messages_sent_total{status="success",topic="orders"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"kafka_send_duration_seconds_count{topic="orders"} 1"#));
    }

    #[test]
    fn topic_series_are_capped_and_later_topics_counted_as_other() {
        let metrics = Metrics::default();
        // Records to 150 topics, one each, plus one more to the first.
        for i in 0..MAX_TOPIC_SERIES + 50 {
            metrics.record_sent(&format!("topic-{i}"), "success", 1);
            metrics
                .send_duration_of(&format!("topic-{i}"))
                .observe(0.001);
        }
        metrics.record_sent("topic-0", "error", 1);
        let text = metrics.render();
        let series = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        // A series per topic for the first 100, one for the 50 others.
        assert_eq!(series("kafka_messages_sent_total{"), MAX_TOPIC_SERIES + 2);
        assert_eq!(
            series("kafka_send_duration_seconds_count{"),
            MAX_TOPIC_SERIES + 1
        );
        assert!(text.contains(r#"kafka_messages_sent_total{status="success",topic="other"} 50"#));
        assert!(text.contains(r#"kafka_messages_sent_total{status="error",topic="topic-0"} 1"#));
        assert!(!text.contains("topic-149"), "{text}");
    }
}
