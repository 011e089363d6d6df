//! [`PushMetrics`]: push delivery in the process's Prometheus registry, labelled by
//! subscription (a handful per process, so the label stays low-cardinality).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Records delivered with a 2xx, by `subscription`.
pub const PUSH_DELIVERED_TOTAL: &str = "kafkit_push_delivered_total";
/// Failed requests, by `subscription` and `class` (`4xx`, `429`, `5xx`, `timeout`, `connect`,
/// `error`, ...).
pub const PUSH_FAILED_TOTAL: &str = "kafkit_push_failed_total";
/// Requests that were a retry of a record (attempt 2 or later), by `subscription`.
pub const PUSH_RETRIES_TOTAL: &str = "kafkit_push_retries_total";
/// Request duration, response read included, by `subscription`.
pub const PUSH_REQUEST_DURATION_SECONDS: &str = "kafkit_push_request_duration_seconds";
/// Requests in flight, by `subscription`.
pub const PUSH_IN_FLIGHT: &str = "kafkit_push_in_flight";

/// The requests a subscription may have in flight now (adaptive concurrency), by
/// `subscription`.
pub const PUSH_CONCURRENCY_LIMIT: &str = "kafkit_push_concurrency_limit";

/// The push metric families, registered once per registry.
#[derive(Clone, Debug)]
pub struct PushMetrics {
    delivered: IntCounterVec,
    failed: IntCounterVec,
    retries: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGaugeVec,
    concurrency_limit: IntGaugeVec,
}

impl PushMetrics {
    /// Registers the families in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let delivered = counter(
            PUSH_DELIVERED_TOTAL,
            "Records delivered with a 2xx.",
            &["subscription"],
        );
        let failed = counter(
            PUSH_FAILED_TOTAL,
            "Failed push requests by status class.",
            &["subscription", "class"],
        );
        let retries = counter(
            PUSH_RETRIES_TOTAL,
            "Push requests that retry a record.",
            &["subscription"],
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(PUSH_REQUEST_DURATION_SECONDS, "Push request duration.").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ],
            ),
            &["subscription"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
        let in_flight = IntGaugeVec::new(
            Opts::new(PUSH_IN_FLIGHT, "Push requests in flight."),
            &["subscription"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(in_flight.clone()))
            .expect("registered once");
        let concurrency_limit = IntGaugeVec::new(
            Opts::new(
                PUSH_CONCURRENCY_LIMIT,
                "Push requests a subscription may have in flight now.",
            ),
            &["subscription"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(concurrency_limit.clone()))
            .expect("registered once");
        PushMetrics {
            concurrency_limit,
            delivered,
            failed,
            retries,
            latency,
            in_flight,
        }
    }

    /// The series of one subscription.
    pub fn subscription(&self, name: &str) -> SubscriptionMetrics {
        SubscriptionMetrics {
            name: name.to_owned(),
            failed: self.failed.clone(),
            delivered: self.delivered.with_label_values(&[name]),
            retries: self.retries.with_label_values(&[name]),
            latency: self.latency.with_label_values(&[name]),
            in_flight: self.in_flight.with_label_values(&[name]),
            concurrency_limit: self.concurrency_limit.with_label_values(&[name]),
        }
    }
}

/// One subscription's series.
#[derive(Clone, Debug)]
pub struct SubscriptionMetrics {
    name: String,
    failed: IntCounterVec,
    pub(crate) delivered: IntCounter,
    pub(crate) retries: IntCounter,
    pub(crate) latency: Histogram,
    in_flight: IntGauge,
    pub(crate) concurrency_limit: IntGauge,
}

impl SubscriptionMetrics {
    /// Counts a failed request of `class`.
    pub(crate) fn failed(&self, class: &str) {
        self.failed.with_label_values(&[&self.name, class]).inc();
    }

    /// Counts a request in flight until the guard drops (a cancelled request included).
    pub(crate) fn in_flight_guard(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub(crate) struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_labelled_by_subscription_and_class() {
        let registry = Registry::new();
        let metrics = PushMetrics::new(&registry).subscription("billing");
        metrics.delivered.inc();
        metrics.failed("4xx");
        metrics.failed("4xx");
        {
            let _guard = metrics.in_flight_guard();
            assert_eq!(metrics.in_flight.get(), 1);
        }
        assert_eq!(metrics.in_flight.get(), 0);
        let families = registry.gather();
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap();
        assert!(
            text.contains(r#"kafkit_push_delivered_total{subscription="billing"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kafkit_push_failed_total{class="4xx",subscription="billing"} 2"#),
            "{text}"
        );
    }
}
