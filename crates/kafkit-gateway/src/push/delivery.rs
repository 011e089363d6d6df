//! [`Delivery`]: the consumer [`Handler`] of a push subscription. Each call POSTs one record
//! to the endpoint and turns the response's [`verdict`] into the handler's result, so the
//! consumer runtime does the rest: retries with backoff (no sooner than a `Retry-After`),
//! dead-letter copies, the circuit breaker, offsets, rebalances and the shutdown drain.
//!
//! The request: `POST`, the record's value as body, `content-type` from the record's
//! `content-type` header (JSON by default), the record's coordinates in `kafka-*` headers, its
//! own headers under the subscription's prefix, `kafkit-delivery-id: topic/partition/offset`
//! (the same on every attempt, for the endpoint to drop duplicates), `kafkit-attempt`, and the
//! Standard Webhooks signature and bearer token when configured.
//!
//! A copy read from one of the subscription's retry topics is delivered as the record it is a
//! copy of: the source's topic, partition, offset, timestamp and delivery id, its own headers
//! without the failure and retry headers kafkit added, the attempt counted on from the source's
//! attempts, and `kafkit-retry-topic` naming the tier it came from.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use futures::future::BoxFuture;
use kafkit::dead_letter::{FAILURE_HEADERS, Origin};
use kafkit::handler::{Handler, HandlerResult};
use kafkit::retry_topic::is_retry_header;
use kafkit::{HandlerError, Message};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Url};

use super::batch::{self, Answer, BATCH_SIZE_HEADER, Batcher, Item};
use super::cloud_event::CloudEvent;
use super::concurrency::{ConcurrencyLimit, Signal};
pub use super::delivery_id::delivery_id;
use super::metrics::SubscriptionMetrics;
use super::signature::{Signer, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
use super::status::SubscriptionStatus;
use super::validation::Validated;
use super::verdict::{Verdict, status_class, verdict};

/// The record's topic.
pub const TOPIC_HEADER: &str = "kafka-topic";
/// The record's partition.
pub const PARTITION_HEADER: &str = "kafka-partition";
/// The record's offset.
pub const OFFSET_HEADER: &str = "kafka-offset";
/// The record's timestamp, milliseconds since the epoch.
pub const TIMESTAMP_HEADER: &str = "kafka-timestamp";
/// The record's key, when it is a valid header value (else [`KEY_BASE64_HEADER`]).
pub const KEY_HEADER: &str = "kafka-key";
/// The record's key in base64, when it is not a valid header value.
pub const KEY_BASE64_HEADER: &str = "kafka-key-base64";
/// `topic/partition/offset`: stable across attempts and restarts.
pub const DELIVERY_ID_HEADER: &str = "kafkit-delivery-id";
/// The attempt, 1 for the first request of a record.
pub const ATTEMPT_HEADER: &str = "kafkit-attempt";
/// On a retry, the retry topic the request's record was read from.
pub const RETRY_TOPIC_HEADER: &str = "kafkit-retry-topic";
/// Content type of a record without a `content-type` header.
pub const DEFAULT_CONTENT_TYPE: &str = "application/json";

/// Delivers one subscription's records to its endpoint.
#[derive(Debug, Clone)]
pub struct Delivery {
    client: Client,
    endpoint: Url,
    timeout: Duration,
    max_response_bytes: usize,
    max_retry_after: Duration,
    header_prefix: String,
    bearer: Option<HeaderValue>,
    signer: Option<Signer>,
    cloud_event: Option<CloudEvent>,
    limit: Arc<ConcurrencyLimit>,
    metrics: SubscriptionMetrics,
    status: Arc<SubscriptionStatus>,
    /// The subscription's retry topics, all source topics' tiers.
    retry_topics: Arc<HashSet<String>>,
    /// With `batch`: gathers records into batch requests.
    batcher: Option<Arc<Batcher>>,
}

impl Delivery {
    /// The handler of `subscription`, sending with `client` within `limit`.
    pub fn new(
        subscription: &Validated,
        client: Client,
        limit: Arc<ConcurrencyLimit>,
        metrics: SubscriptionMetrics,
        status: Arc<SubscriptionStatus>,
    ) -> Self {
        let s = &subscription.subscription;
        let bearer = s.auth.bearer.as_ref().map(|token| {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .expect("validated at start");
            value.set_sensitive(true);
            value
        });
        Delivery {
            client,
            endpoint: subscription.endpoint.clone(),
            timeout: s.timeout,
            max_response_bytes: s.max_response_bytes,
            max_retry_after: s.retry.max_retry_after,
            header_prefix: s.header_prefix.clone(),
            bearer,
            signer: subscription.signer.clone(),
            cloud_event: subscription.cloud_event.clone(),
            limit,
            metrics,
            status,
            retry_topics: Arc::new(
                subscription
                    .retry_topics
                    .iter()
                    .flat_map(|tiers| s.topics.iter().flat_map(|t| tiers.topics_for(t)))
                    .collect(),
            ),
            batcher: s.batch.clone().map(|config| Arc::new(Batcher::new(config))),
        }
    }

    /// A copy read from a retry topic, as the record it is a copy of (see the module's
    /// documentation); `None` for a record of a source topic.
    fn as_source(&self, message: &Message) -> Option<Message> {
        if !self.retry_topics.contains(&message.topic) {
            return None;
        }
        let origin = Origin::of_retry_copy(message);
        let mut source = message.clone();
        source.topic = origin.topic;
        source.partition = origin.partition;
        source.offset = origin.offset;
        source.timestamp = origin.timestamp;
        source.headers.retain(|(name, _)| {
            !FAILURE_HEADERS.contains(&name.as_str()) && !is_retry_header(name)
        });
        Some(source)
    }

    async fn deliver(&self, message: &Message) -> HandlerResult {
        let copy = self.as_source(message);
        let retry_topic = copy.as_ref().map(|_| message.topic.as_str());
        let message = copy.as_ref().unwrap_or(message);
        if message.attempt > 1 {
            self.metrics.retries.inc();
        }
        let (verdict, class) = match &self.batcher {
            Some(batcher) => self.deliver_in_batch(batcher, message, retry_topic).await,
            None => self.deliver_alone(message, retry_topic).await,
        };
        self.settle(message, verdict, class)
    }

    /// One request for `message`.
    async fn deliver_alone(&self, message: &Message, retry_topic: Option<&str>) -> Answer {
        let body = message.value.clone().unwrap_or_default();
        let mut headers = request_headers(message, &self.header_prefix);
        if let Some(topic) = retry_topic {
            headers.insert(RETRY_TOPIC_HEADER, header_value(topic));
        }
        if let Some(cloud_event) = &self.cloud_event {
            cloud_event.add_headers(message, &mut headers);
        }
        self.authenticate(&mut headers, &delivery_id(message), &body);
        match self.request(headers, body).await {
            Ok((status, headers, excerpt)) => (
                verdict(
                    status,
                    &headers,
                    &excerpt,
                    SystemTime::now(),
                    self.max_retry_after,
                ),
                status_class(status),
            ),
            Err(error) => (error.verdict(), error.class()),
        }
    }

    /// `message` in the batch being gathered; its answer once the batch's request is answered.
    async fn deliver_in_batch(
        &self,
        batcher: &Arc<Batcher>,
        message: &Message,
        retry_topic: Option<&str>,
    ) -> Answer {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pushed = batcher.push(Item {
            id: delivery_id(message),
            json: batch::item_bytes(message, retry_topic, DEFAULT_CONTENT_TYPE),
            reply,
        });
        // Sent by tasks of their own: a batch is answered even if the handler call that
        // completed it is dropped (a drain timeout).
        for items in pushed.send {
            let this = self.clone();
            tokio::spawn(async move { this.send_batch(items).await });
        }
        if let Some(generation) = pushed.timer {
            let this = self.clone();
            let batcher = batcher.clone();
            tokio::spawn(async move {
                tokio::time::sleep(batcher.max_wait()).await;
                if let Some(items) = batcher.take(generation) {
                    this.send_batch(items).await;
                }
            });
        }
        answer.await.unwrap_or_else(|_| {
            (
                Verdict::Retry {
                    reason: "batch request abandoned".into(),
                    after: None,
                },
                "error",
            )
        })
    }

    /// Sends a batch and answers each of its records.
    async fn send_batch(&self, items: Vec<Item>) {
        let body = batch::body(&items);
        let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
        headers.insert(BATCH_SIZE_HEADER, HeaderValue::from(items.len()));
        // The webhook id names the batch by its first record and size; each record's own id
        // is in the body.
        let id = format!("batch:{}:{}", ids[0], ids.len());
        self.authenticate(&mut headers, &id, &body);
        let answers: Vec<Answer> = match self.request(headers, body).await {
            Ok((status, headers, excerpt)) => {
                let class = status_class(status);
                batch::results(
                    status,
                    &headers,
                    &excerpt,
                    &ids,
                    SystemTime::now(),
                    self.max_retry_after,
                )
                .into_iter()
                .map(|v| {
                    // A record the endpoint failed inside a 2xx counts as `result`.
                    let class = match (&v, status.is_success()) {
                        (Verdict::Delivered, _) | (_, false) => class,
                        (_, true) => "result",
                    };
                    (v, class)
                })
                .collect()
            }
            Err(error) => vec![(error.verdict(), error.class()); ids.len()],
        };
        for (item, answer) in items.into_iter().zip(answers) {
            let _ = item.reply.send(answer);
        }
    }

    /// Adds the bearer token and the Standard Webhooks signature of `body` as `id`.
    fn authenticate(&self, headers: &mut HeaderMap, id: &str, body: &[u8]) {
        if let Some(bearer) = &self.bearer {
            headers.insert(AUTHORIZATION, bearer.clone());
        }
        if let Some(signer) = &self.signer {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let signature = signer.sign(id, now, body);
            headers.insert(WEBHOOK_ID, header_value(id));
            headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(now));
            headers.insert(WEBHOOK_SIGNATURE, header_value(&signature));
        }
    }

    /// One request within the concurrency limit, timed and counted.
    async fn request(
        &self,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<(reqwest::StatusCode, HeaderMap, Vec<u8>), SendError> {
        // Held back here only: the runtime already chose this record, in its order.
        let permit = self.limit.acquire().await;
        let _in_flight = self.metrics.in_flight_guard();
        let started = Instant::now();
        let outcome = self.send(headers, body).await;
        permit.finish(match &outcome {
            Ok((status, _, _)) if matches!(status.as_u16(), 429 | 503) => Signal::Overload,
            Ok(_) => Signal::Ok,
            Err(SendError::Timeout(_)) => Signal::Overload,
            Err(_) => Signal::Ignore,
        });
        self.metrics
            .latency
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// Counts the record's verdict and turns it into the handler's result.
    fn settle(&self, message: &Message, verdict: Verdict, class: &str) -> HandlerResult {
        match verdict {
            Verdict::Delivered => {
                self.metrics.delivered.inc();
                self.status.delivered();
                Ok(())
            }
            Verdict::Retry { reason, after } => {
                self.metrics.failed(class);
                self.status.failed(message, class, &reason);
                let error = HandlerError::transient(reason);
                Err(match after {
                    Some(after) => error.retry_after(after),
                    None => error,
                })
            }
            Verdict::DeadLetter { reason } => {
                self.metrics.failed(class);
                self.status.failed(message, class, &reason);
                Err(HandlerError::permanent(reason))
            }
        }
    }

    /// POSTs and reads at most `max_response_bytes` of the answer, all within the timeout.
    async fn send(
        &self,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<(reqwest::StatusCode, HeaderMap, Vec<u8>), SendError> {
        let request = self
            .client
            .post(self.endpoint.clone())
            .headers(headers)
            .body(body)
            .timeout(self.timeout);
        let mut response = request.send().await.map_err(|e| self.error(e))?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut excerpt = Vec::new();
        // A body is read only for its excerpt, and only up to the bound: an endpoint that
        // streams forever cannot hold the record longer than the timeout, nor fill memory.
        while excerpt.len() < self.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_response_bytes - excerpt.len();
                    excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                // The status is known; a body cut short does not change the verdict.
                Err(error) if !error.is_timeout() => break,
                Err(error) => return Err(self.error(error)),
            }
        }
        Ok((status, headers, excerpt))
    }

    fn error(&self, error: reqwest::Error) -> SendError {
        if error.is_timeout() {
            SendError::Timeout(self.timeout)
        } else if error.is_connect() {
            SendError::Connect(error_chain(&error))
        } else {
            SendError::Other(error_chain(&error))
        }
    }
}

impl Handler for Delivery {
    fn handle<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, HandlerResult> {
        Box::pin(self.deliver(message))
    }
}

/// A request that got no response.
#[derive(Debug)]
enum SendError {
    Timeout(Duration),
    Connect(String),
    Other(String),
}

impl SendError {
    /// No response: retried with backoff.
    fn verdict(&self) -> Verdict {
        Verdict::Retry {
            reason: self.to_string(),
            after: None,
        }
    }

    fn class(&self) -> &'static str {
        match self {
            SendError::Timeout(_) => "timeout",
            SendError::Connect(_) => "connect",
            SendError::Other(_) => "error",
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Timeout(after) => {
                write!(f, "request timed out after {} ms", after.as_millis())
            }
            SendError::Connect(e) => write!(f, "connection failed: {e}"),
            SendError::Other(e) => write!(f, "request failed: {e}"),
        }
    }
}

/// The error and its sources, `: `-separated (reqwest's own message says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The headers of the request for `message`, without authentication: content type, the
/// record's coordinates, key and timestamp, its own headers under `prefix` (those that are no
/// valid HTTP header are left out), the delivery id and the attempt.
pub fn request_headers(message: &Message, prefix: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let content_type = message
        .header_value("content-type")
        .and_then(|v| HeaderValue::from_bytes(v).ok())
        .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(TOPIC_HEADER, header_value(&message.topic));
    headers.insert(PARTITION_HEADER, HeaderValue::from(message.partition));
    headers.insert(OFFSET_HEADER, HeaderValue::from(message.offset));
    if let Some(timestamp) = message.timestamp {
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
    }
    if let Some(key) = &message.key {
        match std::str::from_utf8(key)
            .ok()
            .and_then(|k| HeaderValue::from_str(k).ok())
        {
            Some(value) => headers.insert(KEY_HEADER, value),
            None => headers.insert(
                KEY_BASE64_HEADER,
                header_value(&base64::engine::general_purpose::STANDARD.encode(key)),
            ),
        };
    }
    for (name, value) in &message.headers {
        let name = HeaderName::from_bytes(format!("{prefix}{name}").as_bytes());
        let value = HeaderValue::from_bytes(value);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    headers.insert(DELIVERY_ID_HEADER, header_value(&delivery_id(message)));
    headers.insert(ATTEMPT_HEADER, HeaderValue::from(message.attempt.max(1)));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        crate::push::fixtures::message(
            &[
                ("tenant-id", b"acme"),
                ("trace", b"a"),
                ("trace", b"b"),
                ("bad name", b"x"),
                ("bin", b"\x00\x01"),
            ],
            b"{}",
            3,
        )
    }

    fn get<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
        headers[name].to_str().unwrap()
    }

    #[test]
    fn the_request_carries_coordinates_headers_delivery_id_and_attempt() {
        let headers = request_headers(&message(), "kafka-header-");
        assert_eq!(get(&headers, "content-type"), "application/json");
        assert_eq!(get(&headers, "kafka-topic"), "orders");
        assert_eq!(get(&headers, "kafka-partition"), "2");
        assert_eq!(get(&headers, "kafka-offset"), "41");
        assert_eq!(get(&headers, "kafka-timestamp"), "1700000000123");
        assert_eq!(get(&headers, "kafka-key"), "order-7");
        assert_eq!(get(&headers, "kafka-header-tenant-id"), "acme");
        let traces: Vec<_> = headers.get_all("kafka-header-trace").iter().collect();
        assert_eq!(traces, ["a", "b"], "repeated headers keep their order");
        // A name that is no HTTP token and a value with control bytes are left out.
        assert!(!headers.keys().any(|k| k.as_str().contains("bad")));
        assert!(!headers.contains_key("kafka-header-bin"));
        assert_eq!(get(&headers, "kafkit-delivery-id"), "orders/2/41");
        assert_eq!(get(&headers, "kafkit-attempt"), "3");
    }

    #[test]
    fn the_record_content_type_wins_and_binary_keys_go_base64() {
        let mut m = message();
        m.headers = vec![("content-type".into(), b"text/plain; charset=utf-8".to_vec())];
        m.key = Some(vec![0xff, 0x00]);
        let headers = request_headers(&m, "x-");
        assert_eq!(get(&headers, "content-type"), "text/plain; charset=utf-8");
        assert!(!headers.contains_key("kafka-key"));
        assert_eq!(get(&headers, "kafka-key-base64"), "/wA=");
        m.key = None;
        let headers = request_headers(&m, "x-");
        assert!(!headers.contains_key("kafka-key") && !headers.contains_key("kafka-key-base64"));
    }
}
