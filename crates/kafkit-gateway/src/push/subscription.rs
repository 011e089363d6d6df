//! [`Subscription`]: what one push subscription consumes, where it delivers and how patiently,
//! as the subscriptions file (TOML, `[[subscription]]` tables) writes it, with the documented
//! defaults. [`validation`](super::validation) checks it once at start.

use std::path::PathBuf;
use std::time::Duration;

use kafkit::retry::RetryPolicy;
use kafkit::secret::Secret;
use serde::{Deserialize, Deserializer};

use super::cloud_event::CloudEvent;

/// Default consumer group of a subscription: `kafkit-push-{name}`.
pub const DEFAULT_GROUP_PREFIX: &str = "kafkit-push-";
/// Default requests in flight per partition (key and unordered order).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default ceiling of a subscription's requests in flight, all partitions together.
pub const DEFAULT_MAX_CONCURRENCY: usize = 1000;
/// Default limit on one request, from connecting to the last byte of the response read.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on the response bytes read (the rest is not read).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Default time between offset commits: what a crash re-delivers at most.
pub const DEFAULT_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Default prefix of the HTTP headers that carry the record's own headers.
pub const DEFAULT_HEADER_PREFIX: &str = "kafka-header-";
/// Default requests per record, the first included, before it is dead-lettered.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default delay before the second attempt.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(500);
/// Default cap on one backoff delay.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
/// Default randomised fraction of each delay.
pub const DEFAULT_JITTER: f64 = 0.2;
/// Default cap on a `Retry-After` an endpoint asks for.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Default records per batch request at most (with `batch`).
pub const DEFAULT_BATCH_MAX_RECORDS: usize = 100;
/// Default bytes of a batch request's body at most (with `batch`).
pub const DEFAULT_BATCH_MAX_BYTES: usize = 1024 * 1024;
/// Default wait of a batch's first record for others (with `batch`).
pub const DEFAULT_BATCH_MAX_WAIT: Duration = Duration::from_millis(20);
/// Most records a batch request may hold.
pub const MAX_BATCH_RECORDS: usize = 10_000;
/// Response bytes `max_response_bytes` must allow per record of a batch: room for a result
/// naming each record (`{"id": "topic/partition/offset", "outcome": "...", ...}`), so a full
/// list of results is never cut (a cut list retries the whole batch).
pub const RESULT_BYTES_PER_RECORD: usize = 128;
/// Default consecutive failures that open a subscription's circuit.
pub const DEFAULT_BREAKER_FAILURES: u32 = 10;
/// Default time an open circuit waits before a probe request.
pub const DEFAULT_BREAKER_OPEN: Duration = Duration::from_secs(15);

/// The subscriptions file: a list of `[[subscription]]` tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsFile {
    /// The subscriptions, in file order.
    #[serde(rename = "subscription", default)]
    pub subscriptions: Vec<Subscription>,
}

/// In which order a subscription's records are delivered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Records of one key in offset order, one at a time; keys of a partition concurrently.
    #[default]
    Key,
    /// Records of one partition in offset order, one at a time.
    Partition,
    /// No order: up to `max_in_flight` records of a partition at once.
    Unordered,
}

/// How a subscription's requests in flight are limited.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// The limit follows the endpoint: cut on 429, 503 and timeouts, grown on successes,
    /// between 1 and `max_concurrency`.
    #[default]
    Adaptive,
    /// The limit stays at `max_concurrency`.
    Fixed,
}

/// How a record is put into a request.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The value as body, the record's metadata in `kafka-*` headers.
    #[default]
    Plain,
    /// The same, plus the CloudEvents 1.0 binary content mode's `ce-*` headers.
    Cloudevents,
}

/// The CloudEvents attributes a subscription sets (with `format = "cloudevents"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudEventsConfig {
    /// `source` template: `{topic}` is the record's topic.
    pub source: String,
    /// `type` of the events.
    #[serde(rename = "type")]
    pub event_type: String,
}

impl Default for CloudEventsConfig {
    fn default() -> Self {
        let d = CloudEvent::default();
        CloudEventsConfig {
            source: d.source,
            event_type: d.event_type,
        }
    }
}

/// One push subscription.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Unique name: metric label, default group, `GET /subscriptions`.
    pub name: String,
    /// Topics consumed.
    pub topics: Vec<String>,
    /// Consumer group (default `kafkit-push-{name}`).
    #[serde(default)]
    pub group: Option<String>,
    /// Where each record is POSTed (http or https).
    pub endpoint: String,
    /// Delivery order (default `key`).
    #[serde(default)]
    pub order: Order,
    /// Requests in flight per partition in key and unordered order.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// `adaptive` (default) or `fixed`: how the subscription's requests in flight are limited.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// The subscription's requests in flight at most, all partitions together (the adaptive
    /// limit's ceiling).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Limit on one request, response body included (`"10s"`, `"500ms"`).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Time between offset commits (a crash re-delivers at most what was delivered since).
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Response bytes read at most (the excerpt dead-lettered with a 4xx comes from them).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Prefix of the HTTP headers carrying the record's own headers.
    #[serde(default = "default_header_prefix")]
    pub header_prefix: String,
    /// `plain` (default) or `cloudevents` (binary content mode).
    #[serde(default)]
    pub format: Format,
    /// CloudEvents `source` and `type` (with `format = "cloudevents"`).
    #[serde(default)]
    pub cloudevents: CloudEventsConfig,
    /// Dead-letter topic template (`{topic}` is the source topic).
    #[serde(default = "default_dead_letter")]
    pub dead_letter: String,
    /// Retries of failed requests.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The circuit breaker that pauses the subscription while its endpoint is down.
    #[serde(default)]
    pub circuit_breaker: BreakerConfig,
    /// Authentication to the endpoint.
    #[serde(default)]
    pub auth: AuthConfig,
    /// TLS toward an https endpoint.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Several records per request, each with its own result (off without it).
    #[serde(default)]
    pub batch: Option<BatchConfig>,
}

/// Batching: the records whose requests are due are sent together, as a JSON array, and the
/// endpoint answers each record's outcome (see [`super::batch`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Records per request at most, 1 to 10,000.
    pub max_records: usize,
    /// Bytes of a request's body at most (one larger record is sent alone).
    pub max_bytes: usize,
    /// How long a batch's first record waits for others before the batch is sent.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String)]
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: DEFAULT_BATCH_MAX_RECORDS,
            max_bytes: DEFAULT_BATCH_MAX_BYTES,
            max_wait: DEFAULT_BATCH_MAX_WAIT,
        }
    }
}

/// Retries of a subscription: backoff in place, then retry topics (when `topics` names their
/// delays), then the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Requests per record, the first included; at least 1.
    pub max_attempts: u32,
    /// Delay before the second attempt; it doubles after each.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Cap on one delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Randomised fraction of each delay, 0 to 1.
    pub jitter: f64,
    /// Cap on the wait a `Retry-After` may ask for.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Retry topics after the in-place attempts: one tier per delay (`["1s", "10s"]`), each
    /// `{topic}.retry.{n}`, with one request when its delay has passed; none by default.
    /// Parsed by [`validate`] into [`Validated::retry_topics`].
    pub topics: Vec<String>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_delay: DEFAULT_INITIAL_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            jitter: DEFAULT_JITTER,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            topics: Vec::new(),
        }
    }
}

impl RetryConfig {
    /// The runtime's policy.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy::exponential(self.max_attempts, self.initial_delay)
            .max_delay(self.max_delay)
            .jitter(self.jitter)
    }
}

/// A subscription's circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failed requests that open it; 0 turns the breaker off.
    pub failure_threshold: u32,
    /// How long it stays open before one probe request.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: DEFAULT_BREAKER_FAILURES,
            open_duration: DEFAULT_BREAKER_OPEN,
        }
    }
}

/// Authentication to the endpoint. A value `${NAME}` is read from the environment variable
/// `NAME` at start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Sent as `Authorization: Bearer <token>`.
    #[serde(deserialize_with = "optional_secret")]
    pub bearer: Option<Secret>,
    /// Standard Webhooks secrets (`whsec_<base64>`): each request is signed with every one, so
    /// an endpoint can rotate (accept the new, then drop the old).
    #[serde(deserialize_with = "secrets")]
    pub webhook_secrets: Vec<Secret>,
}

/// TLS toward an https endpoint: a private CA, a client certificate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of CA certificates trusted besides the public roots.
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate chain (needs `key`).
    pub cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key (needs `cert`).
    pub key: Option<PathBuf>,
}

fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}
fn default_max_concurrency() -> usize {
    DEFAULT_MAX_CONCURRENCY
}
fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_commit_interval() -> Duration {
    DEFAULT_COMMIT_INTERVAL
}
fn default_max_response_bytes() -> usize {
    DEFAULT_MAX_RESPONSE_BYTES
}
fn default_header_prefix() -> String {
    DEFAULT_HEADER_PREFIX.to_owned()
}
fn default_dead_letter() -> String {
    kafkit::dead_letter::DEFAULT_TEMPLATE.to_owned()
}

fn optional_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

fn secrets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Secret>, D::Error> {
    Ok(Vec::<String>::deserialize(d)?
        .into_iter()
        .map(Secret::new)
        .collect())
}
