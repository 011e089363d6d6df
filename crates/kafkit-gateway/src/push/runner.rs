//! [`Runner`]: the push subscriptions of one process, each a kafkit [`Consumer`] of its own
//! group whose handler is its [`Delivery`]; started together, stopped together (each drains
//! its in-flight requests, commits and leaves its group).

use std::sync::Arc;
use std::time::Duration;

use kafkit::circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
use kafkit::consumer::ProcessingOrder;
use std::collections::BTreeMap;

use kafkit::consumer::{CommitStrategy, ConsumerOptions};
use kafkit::health::HealthReport;
use kafkit::metrics::Metrics;
use kafkit::{Consumer, DeadLetter, Kafka, Router};
use reqwest::Client;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use super::concurrency::ConcurrencyLimit;
use super::delivery::Delivery;
use super::metrics::PushMetrics;
use super::status::{StatusSnapshot, SubscriptionStatus};
use super::subscription::{BatchConfig, Concurrency, Format, Order};
use super::validation::Validated;

/// Longest wait for a TCP (and TLS) connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running subscriptions.
#[derive(Debug)]
pub struct Runner {
    subscriptions: Vec<Running>,
}

#[derive(Debug)]
struct Running {
    validated: Validated,
    consumer: Consumer,
    status: Arc<SubscriptionStatus>,
    limit: Arc<ConcurrencyLimit>,
}

/// A subscription as `GET /subscriptions` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionView {
    /// Name.
    pub name: String,
    /// Topics consumed.
    pub topics: Vec<String>,
    /// Consumer group.
    pub group: String,
    /// Endpoint, without credentials or query.
    pub endpoint: String,
    /// Delivery order.
    pub order: Order,
    /// `plain` or `cloudevents`.
    pub format: Format,
    /// Requests in flight per partition at most.
    pub max_in_flight: usize,
    /// The subscription's requests in flight toward the endpoint: the limit and its mode.
    pub concurrency: ConcurrencyView,
    /// Request timeout in milliseconds.
    pub timeout_ms: u64,
    /// With batching: records and bytes per request at most, and the wait for a batch to fill.
    pub batch: Option<BatchConfig>,
    /// Requests per record in place, before its retry topics or the dead-letter topic.
    pub max_attempts: u32,
    /// The retry topics of each source topic, tier 1 first: one request each, when its delay
    /// has passed, then the dead-letter topic. Empty without `retry.topics`.
    pub retry_topics: Vec<RetryTopicView>,
    /// Dead-letter topic template.
    pub dead_letter: String,
    /// Whether requests are signed (Standard Webhooks).
    pub signed: bool,
    /// `ok`, `failing` (the endpoint failed the last requests, or the circuit breaker is open
    /// or half-open) or `unhealthy` (the consumer is not consuming: see `problems`).
    #[schema(value_type = String)]
    pub status: &'static str,
    /// What is wrong, if anything.
    pub problems: Vec<String>,
    /// Delivery counters and the last failures.
    pub deliveries: StatusSnapshot,
    /// The consumer's state: assignment, records in flight, pauses, circuits, lag.
    pub consumer: ConsumerView,
}

/// A subscription's limit on requests in flight.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConcurrencyView {
    /// `adaptive` or `fixed`.
    pub mode: Concurrency,
    /// Requests allowed in flight now, all partitions together.
    pub limit: usize,
    /// The limit's ceiling (`max_concurrency`).
    pub max: usize,
    /// Requests in flight now.
    pub in_flight: usize,
}

/// One retry tier of a subscription's source topic.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RetryTopicView {
    /// The source topic.
    pub source: String,
    /// The retry topic.
    pub topic: String,
    /// How long a record waits on it before its request, in milliseconds.
    pub delay_ms: u64,
}

/// A subscription's consumer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsumerView {
    /// Whether it runs.
    pub running: bool,
    /// Whether it is really consuming (polling, committing, progressing).
    pub healthy: bool,
    /// Records fetched and not yet settled, all partitions.
    pub in_flight: usize,
    /// Records behind the high watermarks, summed over the partitions whose lag is known.
    pub lag: i64,
    /// Assigned partitions.
    pub partitions: Vec<PartitionView>,
    /// Circuit breaker state by topic: `closed`, `half_open`, `open`.
    pub circuits: BTreeMap<String, String>,
}

/// One assigned partition of a subscription.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartitionView {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Records fetched and not yet settled.
    pub queued: usize,
    /// Records being delivered now (requests in flight carry them).
    pub in_flight: usize,
    /// Records behind the high watermark, when known.
    pub lag: Option<i64>,
    /// Why it is paused: `backpressure`, `retrying`, `circuit_open`, `dead_letter_retry`.
    pub paused: Vec<String>,
}

impl From<&HealthReport> for ConsumerView {
    fn from(report: &HealthReport) -> Self {
        let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        ConsumerView {
            running: report.running,
            healthy: report.healthy,
            in_flight: report.in_flight,
            lag: report.partitions.iter().filter_map(|p| p.lag).sum(),
            partitions: report
                .partitions
                .iter()
                .map(|p| PartitionView {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    queued: p.queued,
                    in_flight: p.in_flight,
                    lag: p.lag,
                    paused: p
                        .paused
                        .iter()
                        .map(|r| name(serde_json::to_value(r).unwrap_or_default()))
                        .collect(),
                })
                .collect(),
            circuits: report
                .circuits
                .iter()
                .map(|(t, s)| (t.clone(), name(serde_json::to_value(s).unwrap_or_default())))
                .collect(),
        }
    }
}

impl Runner {
    /// Builds a consumer per subscription through `kafka`, recording metrics in `metrics`.
    pub fn new(
        kafka: &Kafka,
        subscriptions: Vec<Validated>,
        metrics: &Metrics,
    ) -> Result<Self, RunnerError> {
        // reqwest is built without a bundled crypto provider: the process uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let push_metrics = PushMetrics::new(metrics.registry());
        let mut running = Vec::with_capacity(subscriptions.len());
        for validated in subscriptions {
            let name = validated.subscription.name.clone();
            let fail = |reason: String| RunnerError {
                subscription: name.clone(),
                reason,
            };
            let client = client(&validated).map_err(&fail)?;
            let status = Arc::new(SubscriptionStatus::default());
            let metrics_of = push_metrics.subscription(&name);
            let limit = Arc::new(ConcurrencyLimit::new(
                validated.subscription.concurrency == Concurrency::Adaptive,
                validated.subscription.max_concurrency,
                metrics_of.concurrency_limit.clone(),
            ));
            let delivery = Delivery::new(
                &validated,
                client,
                limit.clone(),
                metrics_of,
                status.clone(),
            );
            let router = router(&validated, delivery);
            let consumer = kafka
                .consumer_with_options(
                    &validated.group,
                    router,
                    ConsumerOptions {
                        commit: CommitStrategy::Periodic(validated.subscription.commit_interval),
                        ..ConsumerOptions::default()
                    },
                )
                .map_err(|e| fail(e.to_string()))?
                .with_metrics(metrics.clone());
            running.push(Running {
                validated,
                consumer,
                status,
                limit,
            });
        }
        Ok(Runner {
            subscriptions: running,
        })
    }

    /// Runs every subscription until `shutdown` is cancelled; then each drains, commits and
    /// leaves its group. A subscription that stops on an error cancels the others: the process
    /// should exit rather than deliver part of its subscriptions silently.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        let runs = self.subscriptions.iter().map(|s| {
            let shutdown = shutdown.clone();
            async move {
                let result = s.consumer.run(shutdown.clone().cancelled_owned()).await;
                if let Err(error) = &result {
                    tracing::error!(subscription = %s.validated.subscription.name, %error, "subscription stopped");
                    shutdown.cancel();
                }
                result.map_err(|e| RunnerError {
                    subscription: s.validated.subscription.name.clone(),
                    reason: e.to_string(),
                })
            }
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }

    /// Every subscription's configuration, state and recent failures.
    pub fn views(&self) -> Vec<SubscriptionView> {
        self.subscriptions.iter().map(Running::view).collect()
    }

    /// Whether every subscription's consumer is healthy (an endpoint failing is reported, but
    /// does not make the process unready: restarting kafkit would not bring it back).
    pub fn is_healthy(&self) -> bool {
        self.subscriptions
            .iter()
            .all(|s| s.consumer.health().healthy)
    }
}

impl Running {
    fn view(&self) -> SubscriptionView {
        let s = &self.validated.subscription;
        let consumer = self.consumer.health();
        // A healthy consumer's problems are only its open circuits: the endpoint is down.
        let mut problems = consumer.problems.clone();
        let deliveries = self.status.snapshot();
        let circuit_not_closed = consumer
            .circuits
            .values()
            .any(|state| *state != CircuitState::Closed);
        let failing = self.status.is_failing() || circuit_not_closed;
        if self.status.is_failing() {
            let last = deliveries
                .recent_failures
                .last()
                .map(|f| f.message.as_str())
                .unwrap_or_default();
            problems.push(format!(
                "endpoint failed the last {} requests; last: {last}",
                deliveries.consecutive_failures
            ));
        }
        SubscriptionView {
            name: s.name.clone(),
            topics: s.topics.clone(),
            group: self.validated.group.clone(),
            endpoint: self.validated.endpoint_display(),
            order: s.order,
            format: s.format,
            max_in_flight: s.max_in_flight,
            concurrency: ConcurrencyView {
                mode: s.concurrency,
                limit: self.limit.limit(),
                max: s.max_concurrency,
                in_flight: self.limit.in_flight(),
            },
            timeout_ms: s.timeout.as_millis() as u64,
            batch: s.batch.clone(),
            max_attempts: s.retry.max_attempts,
            retry_topics: self
                .validated
                .retry_topics
                .iter()
                .flat_map(|tiers| {
                    s.topics.iter().flat_map(move |source| {
                        (1..=tiers.tiers()).map(move |n| RetryTopicView {
                            source: source.clone(),
                            topic: tiers.topic_for(source, n),
                            delay_ms: tiers.delay(n).as_millis() as u64,
                        })
                    })
                })
                .collect(),
            dead_letter: s.dead_letter.clone(),
            signed: self.validated.signer.is_some(),
            status: if !consumer.healthy {
                "unhealthy"
            } else if failing {
                "failing"
            } else {
                "ok"
            },
            problems,
            deliveries,
            consumer: ConsumerView::from(&consumer),
        }
    }
}

/// A subscription that could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerError {
    /// Which.
    pub subscription: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for RunnerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "subscription {:?}: {}", self.subscription, self.reason)
    }
}

impl std::error::Error for RunnerError {}

/// The subscription's topics, each handled by `delivery` with the subscription's order,
/// in-flight bound, retries (and retry topics, which the consumer then reads too) and
/// dead-letter topic, and one circuit breaker for them all (the endpoint is one).
fn router(validated: &Validated, delivery: Delivery) -> Router {
    let s = &validated.subscription;
    let breaker = (s.circuit_breaker.failure_threshold > 0).then(|| {
        Arc::new(CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: s.circuit_breaker.failure_threshold,
            open_duration: s.circuit_breaker.open_duration,
            success_threshold: 1,
        }))
    });
    let order = match s.order {
        Order::Key => ProcessingOrder::Key,
        Order::Partition => ProcessingOrder::Partition,
        Order::Unordered => ProcessingOrder::Unordered,
    };
    let mut router = Router::new();
    for topic in &s.topics {
        let registration = router.register_handler(topic, delivery.clone());
        registration
            .retry(s.retry.policy())
            .dead_letter(DeadLetter::template(&s.dead_letter))
            .order(order)
            .max_in_flight(s.max_in_flight);
        if let Some(tiers) = &validated.retry_topics {
            registration.retry_topics(tiers.clone());
        }
        registration.circuit_breaker = breaker.clone();
    }
    router
}

/// The HTTP client of a subscription: its TLS settings, no redirects (a POST redirected is not
/// delivered), a connection pool as large as the requests it may have in flight.
fn client(validated: &Validated) -> Result<Client, String> {
    let s = &validated.subscription;
    let mut builder = Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT.min(s.timeout))
        .pool_max_idle_per_host(s.max_in_flight.min(1024))
        .tcp_nodelay(true)
        .user_agent(concat!("kafkit-push/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &s.tls.ca {
        let pem =
            std::fs::read(ca).map_err(|e| format!("tls.ca: reading {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("tls.ca: {}: {e}", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&s.tls.cert, &s.tls.key) {
        let mut pem = std::fs::read(cert)
            .map_err(|e| format!("tls.cert: reading {}: {e}", cert.display()))?;
        pem.push(b'\n');
        pem.extend(
            std::fs::read(key).map_err(|e| format!("tls.key: reading {}: {e}", key.display()))?,
        );
        let identity =
            reqwest::Identity::from_pem(&pem).map_err(|e| format!("tls.cert/tls.key: {e}"))?;
        builder = builder.identity(identity);
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}
