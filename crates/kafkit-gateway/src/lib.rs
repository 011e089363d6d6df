//! kafkit's HTTP gateway as a library: the send and batch APIs, topic, group and dead-letter
//! reads, replay, health, Prometheus metrics, the OpenAPI document, the web console at
//! `/console`, and push delivery ([`push`]: topics consumed and POSTed to HTTP endpoints).
//!
//! [`router`] builds the whole axum app from an [`AppState`]: mount it in your own app next to
//! your routes, or run it alone with [`serve`] (plain HTTP) or [`serve_tls`] (HTTPS), which stop
//! accepting when `shutdown` completes and finish the requests in flight. `kafkit serve` is this
//! crate plus configuration.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kafkit_gateway::{AppState, router};
//!
//! let kafka = kafkit::Kafka::from_env()?;
//! let state = AppState::new(&kafka)?;
//! let app = axum::Router::new()
//!     .route("/hello", axum::routing::get(|| async { "hi" }))
//!     .merge(router(state.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! state.shutdown().await?;   // flush what was accepted
//! # Ok(()) }
//! ```

mod api;
mod console;
#[cfg(test)]
mod fuzz;
mod http;
pub mod push;
mod reads;
#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::time::Duration;

use api::produce::idempotency::{self, IdempotencyCache};
use api::produce::{RecordReply, Reply};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::{Extension, Router};
use http::metrics::HttpMetrics;
use kafkit::{Admin, Kafka, KafkaConfig, Producer, metrics::Metrics};
use reads::known_topics::KnownTopics;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use api::health::Readiness;
pub use api::produce::Transactions;
pub use api::produce::answer_log::DEFAULT_TOPIC as DEFAULT_ANSWER_TOPIC;
pub use axum_server::tls_rustls::RustlsConfig;
pub use http::auth::{ApiKeys, MIN_KEY_DISTINCT, MIN_KEY_LEN, WEAK_KEY_RULE};
pub use http::hosts::AllowedHosts;
pub use http::limits::ReadLimit;
pub use http::server::{ServerLimits, serve, serve_tls};
pub use http::tls::load as load_tls;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Most records one `/kafka/send-batch` request may carry.
pub const MAX_BATCH_RECORDS: usize = 1_000;
/// Largest record (key, headers and value) accepted: Kafka's default `max.message.bytes`.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Default limit for a whole HTTP request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a send waits for room in a full producer queue before answering 429.
const ENQUEUE_TIMEOUT: Duration = Duration::from_millis(100);
/// Where [`router`] serves the web console.
pub const CONSOLE_PATH: &str = console::BASE;
/// Request and response header carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Time limits of the gateway's requests (not to be confused with [`kafkit::reader::Timeouts`],
/// the bounds of one read, nor with [`ServerLimits`], those of the listening socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for the broker within a request (a send's acknowledgement, a browse): the
    /// shorter of `KAFKA_REQUEST_TIMEOUT` and `KAFKA_DELIVERY_TIMEOUT`.
    pub broker_timeout: Duration,
    /// Longest a whole request may take (`--request-timeout-ms`).
    pub request_timeout: Duration,
}

impl Timeouts {
    /// Timeouts derived from the client configuration.
    pub fn from_config(config: &KafkaConfig) -> Self {
        Timeouts {
            broker_timeout: config.request_timeout.min(config.delivery_timeout),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// What every handler can reach: a handle to one shared `Shared`, so that the clone axum
/// makes for every request (and every middleware layer) is one reference-count increment, not
/// one per field (a profile at 64 connections had `AppState` clone and drop at 9% of the
/// gateway's CPU).
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

/// The state's fields, behind [`AppState`]'s `Arc`.
#[derive(Clone, Debug)]
struct Shared {
    /// The shared producer of batches (`/kafka/send-batch`), lingering `KAFKA_LINGER_MS` to
    /// fill them.
    producer: Producer,
    /// The producer of single records (`/kafka/send`, the console's produce form), with
    /// `linger.ms=0`: a client waiting on its one record never fills a batch, so lingering
    /// only adds its full length to every answer. Under load librdkafka still batches what
    /// queues while earlier requests are in flight. Flush it too at shutdown
    /// ([`AppState::shutdown`] flushes every producer).
    single_producer: Producer,
    /// The transactional producer of `transactional` batches, created on first use.
    transactions: Transactions,
    /// Admin client, for readiness and read endpoints.
    admin: Arc<Admin>,
    /// The cluster, for the readers of the browse and dead-letter endpoints.
    kafka: Kafka,
    /// The process's metrics registry.
    metrics: Metrics,
    /// HTTP request metrics, registered in `metrics`.
    http_metrics: HttpMetrics,
    /// API keys; `None` leaves the gateway open.
    api_keys: Option<Arc<ApiKeys>>,
    /// Answers by request `Idempotency-Key`.
    request_replies: IdempotencyCache<Reply>,
    /// Deliveries by record `idempotency_key`.
    record_replies: IdempotencyCache<RecordReply>,
    /// Topic existence checks when auto-creation is off.
    known_topics: Arc<KnownTopics>,
    /// Time limits.
    timeouts: Timeouts,
    /// Readiness: the last broker check, reused for a second, and whether shutdown began.
    readiness: Arc<Readiness>,
    /// The embedded development broker when the gateway runs on it (kept alive by the state):
    /// what it cannot do is answered 501 at once.
    embedded: Option<Arc<kafkit::cluster::EmbeddedBroker>>,
    /// Timeouts of the listening socket ([`serve`], [`serve_tls`]).
    server_limits: ServerLimits,
    /// Places of the read endpoints (topics, groups, dead letters).
    read_limit: ReadLimit,
    /// The push subscriptions this process runs (`GET /subscriptions`, readiness).
    push: Option<Arc<push::Runner>>,
    /// The names requests may carry in `Host` (every one unless told).
    allowed_hosts: AllowedHosts,
    /// Failed authentications per client network (API keys and console logins).
    auth_throttle: Arc<http::auth::throttle::AuthThrottle>,
}

impl AppState {
    /// State for the cluster of `kafka`, open (no API keys).
    pub fn new(kafka: &Kafka) -> kafkit::Result<Self> {
        let config = kafka.config();
        let metrics = Metrics::default();
        let producer = kafka
            .producer_builder()
            .enqueue_timeout(ENQUEUE_TIMEOUT)
            .metrics(metrics.clone())
            .build()?;
        let unlingering = kafka.reconfigured(|config| {
            config.linger = Duration::ZERO;
            // A lone produce request goes out at once rather than waiting on Nagle's algorithm
            // for the broker's acknowledgement of the previous one (unless set otherwise).
            config
                .librdkafka
                .entry("socket.nagle.disable".to_owned())
                .or_insert_with(|| "true".to_owned());
        });
        let single_producer = unlingering
            .producer_builder()
            .enqueue_timeout(ENQUEUE_TIMEOUT)
            .metrics(metrics.clone())
            .build()?;
        let admin = kafka.admin()?;
        let http = HttpMetrics::new(metrics.registry());
        // A client may retry for as long as a record may still be delivered.
        let replay_ttl = idempotency::DEFAULT_TTL.max(config.delivery_timeout);
        Ok(AppState(Arc::new(Shared {
            producer,
            single_producer,
            transactions: Transactions::new(kafka, metrics.clone())?,
            admin: Arc::new(admin),
            kafka: kafka.clone(),
            metrics,
            http_metrics: http,
            api_keys: None,
            request_replies: IdempotencyCache::replaying_for(replay_ttl),
            record_replies: IdempotencyCache::replaying_for(replay_ttl),
            known_topics: Arc::new(KnownTopics::new(config.allow_auto_topic_creation)),
            timeouts: Timeouts::from_config(config),
            readiness: Arc::default(),
            embedded: kafka.cluster().embedded().cloned(),
            server_limits: ServerLimits::default(),
            read_limit: ReadLimit::default(),
            push: None,
            allowed_hosts: AllowedHosts::any(),
            auth_throttle: Arc::default(),
        })))
    }

    /// Requires one of `keys` on every topic and group endpoint.
    #[must_use]
    pub fn with_api_keys(mut self, keys: ApiKeys) -> Self {
        Arc::make_mut(&mut self.0).api_keys = Some(Arc::new(keys));
        self
    }

    /// Overrides the time limits.
    #[must_use]
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        Arc::make_mut(&mut self.0).timeouts = timeouts;
        self
    }

    /// Answers only requests whose `Host` is one of `hosts`, and state-changing requests from
    /// a browser only when their `Origin` is one of them (DNS rebinding, cross-site posts).
    #[must_use]
    pub fn with_allowed_hosts(mut self, hosts: AllowedHosts) -> Self {
        Arc::make_mut(&mut self.0).allowed_hosts = hosts;
        self
    }

    /// Shows `push`'s subscriptions in `GET /subscriptions` and readiness.
    #[must_use]
    pub fn with_push(mut self, push: Arc<push::Runner>) -> Self {
        Arc::make_mut(&mut self.0).push = Some(push);
        self
    }

    /// Records queued in the producers, not yet acknowledged.
    pub fn queued(&self) -> i64 {
        i64::from(self.0.producer.queue_depth()) + i64::from(self.0.single_producer.queue_depth())
    }

    /// Shares the idempotency answers with every replica on the cluster through the
    /// compacted topic `topic` (created if missing; [`DEFAULT_ANSWER_TOPIC`] by default in
    /// `kafkit serve`): read now, followed from then on, written with every answer and every
    /// claim of a key. A retry that lands on another replica then replays the first answer (or
    /// is told the first send is in progress) and produces nothing.
    pub async fn with_shared_answers(self, kafka: &Kafka, topic: &str) -> kafkit::Result<Self> {
        self.share_answers(kafka, topic).await?;
        Ok(self)
    }

    /// [`AppState::with_shared_answers`] in the background, retried every few seconds until
    /// the brokers answer, so the gateway starts (live, and telling why it is not ready) while
    /// they are unreachable. Until then answers and claims are kept per process.
    pub fn share_answers_in_background(&self, kafka: Kafka, topic: String) {
        // Not ready (a load balancer sends nothing) until the answers are read.
        self.0.request_replies.expect_sharing();
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                match state.share_answers(&kafka, &topic).await {
                    Ok(()) => {
                        tracing::info!(topic, "idempotency answers shared through Kafka");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, topic, "cannot share idempotency answers yet; retrying in 5 s");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        });
    }

    /// [`AppState::with_shared_answers`] on a shared state.
    pub async fn share_answers(&self, kafka: &Kafka, topic: &str) -> kafkit::Result<()> {
        idempotency::share_through(
            kafka,
            topic,
            self.0.single_producer.clone(),
            &self.0.request_replies,
            &self.0.record_replies,
        )
        .await
        .map(drop)
    }

    /// Flushes every producer (batches, single records, transactions), so every record
    /// answered `2xx` is in Kafka: call it after [`serve`] returns.
    pub async fn shutdown(&self) -> kafkit::Result<()> {
        self.0.producer.shutdown().await?;
        self.0.single_producer.shutdown().await?;
        self.0.transactions.shutdown().await
    }

    /// Overrides the limits of the listening socket.
    #[must_use]
    pub fn with_server_limits(mut self, limits: ServerLimits) -> Self {
        Arc::make_mut(&mut self.0).server_limits = limits;
        self
    }
}

/// What handlers read of the state.
impl AppState {
    /// The shared producer of batches (`/kafka/send-batch`).
    pub fn producer(&self) -> &Producer {
        &self.0.producer
    }

    /// The producer of single records (`/kafka/send`, the console's produce form).
    pub fn single_producer(&self) -> &Producer {
        &self.0.single_producer
    }

    /// The transactional producer of `transactional` batches.
    pub fn transactions(&self) -> &Transactions {
        &self.0.transactions
    }

    /// The admin client of the read endpoints and readiness.
    pub fn admin(&self) -> &Arc<Admin> {
        &self.0.admin
    }

    /// The cluster the gateway works on, to build more clients.
    pub fn kafka(&self) -> &Kafka {
        &self.0.kafka
    }

    /// The client configuration.
    pub fn config(&self) -> &KafkaConfig {
        self.0.kafka.config()
    }

    /// The process's metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The API keys; `None` when the gateway is open.
    pub fn api_keys(&self) -> Option<&ApiKeys> {
        self.0.api_keys.as_deref()
    }

    /// The time limits.
    pub fn timeouts(&self) -> Timeouts {
        self.0.timeouts
    }

    /// Readiness: the last broker check and whether shutdown began.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.0.readiness
    }

    /// The limits of the listening socket.
    pub fn server_limits(&self) -> ServerLimits {
        self.0.server_limits
    }

    /// The push subscriptions this process runs, if any.
    pub fn push(&self) -> Option<&Arc<push::Runner>> {
        self.0.push.as_ref()
    }

    /// Whether the gateway runs on the embedded development broker.
    pub fn on_embedded_broker(&self) -> bool {
        self.0.embedded.is_some()
    }

    /// The names requests may carry in `Host`.
    pub fn allowed_hosts(&self) -> &AllowedHosts {
        &self.0.allowed_hosts
    }

    pub(crate) fn auth_throttle(&self) -> &http::auth::throttle::AuthThrottle {
        &self.0.auth_throttle
    }

    pub(crate) fn http_metrics(&self) -> &HttpMetrics {
        &self.0.http_metrics
    }

    pub(crate) fn request_replies(&self) -> &IdempotencyCache<Reply> {
        &self.0.request_replies
    }

    pub(crate) fn record_replies(&self) -> &IdempotencyCache<RecordReply> {
        &self.0.record_replies
    }

    pub(crate) fn known_topics(&self) -> &KnownTopics {
        &self.0.known_topics
    }

    pub(crate) fn read_limit(&self) -> &ReadLimit {
        &self.0.read_limit
    }
}

/// The whole HTTP application. Layers, outermost first: request id, tracing span, request id
/// echo, JSON bodies for layer-made errors, body limit, allowed hosts and origins, HTTP
/// metrics, request timeout.
pub fn router(state: AppState) -> Router {
    let (routes, document) = OpenApiRouter::with_openapi(api::openapi::ApiDoc::openapi())
        .merge(api::produce::routes())
        .merge(
            api::topics::routes()
                .merge(api::groups::routes())
                .merge(api::dead_letters::routes())
                .layer(axum::middleware::from_fn_with_state(
                    state.read_limit().clone(),
                    http::limits::limit,
                )),
        )
        .merge(api::health::routes())
        .merge(api::subscriptions::routes())
        .merge(api::openapi::routes())
        .split_for_parts();
    let document = api::openapi::Document::new(&document, state.api_keys().is_some());
    routes
        // The web console: HTML pages, not API routes (not in the document).
        .merge(console::routes(&state))
        .layer(Extension(document))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.timeouts().request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::metrics::track,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            http::hosts::check,
        ))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(http::error::json_errors))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The span every log line of a request carries: its id, method, path and (once known) the
/// API key's name, never the key.
fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        caller = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use kafkit::KafkaConfig;
    use std::time::Duration;

    use super::*;
    use crate::testing::{call, get, state, state_with};

    #[tokio::test]
    async fn every_answer_carries_a_request_id_echoed_or_generated() {
        let app = router(state());
        // A client's id comes back unchanged.
        let mut request = get("/health/live");
        request
            .headers_mut()
            .insert(REQUEST_ID_HEADER, "client-id-1".parse().unwrap());
        let answer = call(&app, request).await;
        assert_eq!(answer.headers[REQUEST_ID_HEADER], "client-id-1");
        // Without one, the gateway makes a UUID, errors included.
        let answer = call(&app, get("/no/such/route")).await;
        let id = answer.headers[REQUEST_ID_HEADER].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }

    #[tokio::test]
    async fn layer_errors_use_the_json_error_body() {
        let app = router(state());
        // Unknown route and wrong method.
        let answer = call(&app, get("/no/such/route")).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.body["error"]["code"], "not_found");
        let answer = call(&app, get("/kafka/send")).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(answer.body["error"]["code"], "method_not_allowed");
        assert_eq!(answer.headers["allow"], "POST");
        // A body announced over the limit is refused before it is read.
        let request = Request::post("/kafka/send")
            .header("content-type", "application/json")
            .header("content-length", MAX_BODY_BYTES + 1)
            .body(Body::from(vec![b' '; MAX_BODY_BYTES + 1]))
            .unwrap();
        let answer = call(&app, request).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(answer.body["error"]["code"], "body_too_large");
    }

    #[tokio::test]
    async fn a_request_over_the_time_limit_is_a_json_503() {
        // An unreachable broker keeps the send waiting longer than the request may take.
        let mut config = KafkaConfig::new(["127.0.0.1:1"]);
        config.request_timeout = Duration::from_secs(2);
        config.delivery_timeout = Duration::from_secs(2);
        let limits = Timeouts {
            broker_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_millis(50),
        };
        let app = router(state_with(&config).with_timeouts(limits));
        let answer = crate::api::produce::tests::send_unanswered(&app).await;
        assert_eq!(answer.body["error"]["code"], "request_timeout");
    }

    #[test]
    fn timeouts_follow_the_client_configuration() {
        let mut config = KafkaConfig::new(["b:9092"]);
        config.request_timeout = Duration::from_secs(7);
        assert_eq!(
            Timeouts::from_config(&config).broker_timeout,
            Duration::from_secs(7)
        );
        config.delivery_timeout = Duration::from_secs(3);
        assert_eq!(
            Timeouts::from_config(&config).broker_timeout,
            Duration::from_secs(3)
        );
    }
}
