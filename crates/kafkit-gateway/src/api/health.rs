//! `/health/live` (the process answers) and `/health/ready` (brokers reachable, producer open).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::http::auth::Caller;
use crate::http::error::ErrorBody;

/// How long readiness waits for the cluster before calling it unreachable.
const READY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a broker check answers readiness probes: an open endpoint must not turn every
/// probe (or every attacker's request) into a cluster metadata fetch.
pub const READY_CACHE: Duration = Duration::from_secs(1);

/// Readiness state shared by the gateway: the last broker check and whether shutdown began.
#[derive(Debug, Default)]
pub struct Readiness {
    draining: AtomicBool,
    /// When the brokers were last checked, and what was found; one check at a time.
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, serde_json::Value)>>,
}

impl Readiness {
    /// Shutdown began: readiness answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown began.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The brokers' status: the last check when it is fresh, else a new one (concurrent
    /// probes wait for that one check instead of each fetching metadata).
    pub(crate) async fn brokers(&self, state: &AppState) -> serde_json::Value {
        let mut last = self.last.lock().await;
        if let Some((at, brokers)) = last.as_ref()
            && at.elapsed() < READY_CACHE
        {
            return brokers.clone();
        }
        let cluster = tokio::time::timeout(READY_TIMEOUT, state.admin().describe_cluster()).await;
        let brokers = match &cluster {
            Ok(Ok(info)) if !info.brokers.is_empty() => {
                json!({"status": "up", "brokers": info.brokers.len(), "cluster_id": info.cluster_id})
            }
            Ok(Ok(_)) => json!({"status": "down", "error": "no brokers in metadata"}),
            Ok(Err(error)) => json!({"status": "down", "error": error.to_string()}),
            Err(_) => json!({"status": "down", "error": "timed out"}),
        };
        if brokers["status"] != "up" {
            tracing::warn!(error = %brokers["error"], "readiness: brokers down");
        }
        *last = Some((tokio::time::Instant::now(), brokers.clone()));
        brokers
    }
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health_live))
        .routes(routes!(health_ready))
        .routes(routes!(metrics_render))
}

/// The process answers (always open, no API key).
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses((status = 200, description = "Up", body = Object, example = json!({"status": "up"})))
)]
pub async fn health_live() -> Json<serde_json::Value> {
    Json(json!({"status": "up"}))
}

/// What readiness says of a failing check to a caller without an API key (when keys are
/// configured): the brokers' and librdkafka's own words name hosts, listeners and versions.
/// The details are in the log, and in the answer to a caller with a key.
pub const DETAILS_WITH_A_KEY: &str = "details in the log, or with an API key";

/// Brokers reachable, producer open, every push subscription consuming (open: no API key
/// needed; without one, when keys are configured, a failing check's reason is generic).
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Ready, with the checks' details", body = Object),
        (status = 503, description = "Not ready, with the failing checks (their reasons only with an API key, when keys are configured)", body = Object),
    )
)]
pub async fn health_ready(
    State(state): State<AppState>,
    caller: Option<Caller>,
) -> (StatusCode, Json<serde_json::Value>) {
    // An open gateway has no key to ask for; a keyed one tells its reasons to key holders.
    let details = state.api_keys().is_none() || caller.is_some();
    if state.readiness().is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "checks": {}})),
        );
    }
    let mut brokers = state.readiness().brokers(&state).await;
    if !details && brokers.get("error").is_some() {
        brokers["error"] = json!(DETAILS_WITH_A_KEY);
    }
    let producer_open = !state.producer().is_closed() && !state.single_producer().is_closed();
    let answers_pending = state.request_replies().sharing_pending();
    // Push subscriptions: each one's status; a consumer that is not consuming makes the
    // process unready, an endpoint that fails is shown but does not (restarting kafkit would
    // not bring the endpoint back).
    let subscriptions: serde_json::Map<String, serde_json::Value> = state
        .push()
        .as_ref()
        .map(|push| push.views())
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            let problems = if details {
                json!(v.problems)
            } else {
                json!([DETAILS_WITH_A_KEY])
            };
            (v.name, json!({"status": v.status, "problems": problems}))
        })
        .collect();
    let consuming = subscriptions.values().all(|v| v["status"] != "unhealthy");
    let ready = brokers["status"] == "up" && producer_open && consuming && !answers_pending;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {
                "brokers": brokers,
                "producer": {
                    "status": if producer_open { "up" } else { "closed" },
                    "queue_depth": state.queued(),
                },
                "idempotency_answers": {
                    "status": if answers_pending { "loading" } else { "up" },
                },
                "subscriptions": subscriptions,
            },
        })),
    )
}

/// Prometheus metrics in the text exposition format. With API keys configured any valid key is
/// needed: the series name the topics records were sent to (Prometheus sends one with
/// `authorization: {credentials_file: ...}` in its scrape config).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Metrics", body = String, content_type = "text/plain"),
        (status = 401, description = "No valid API key (when keys are configured)", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn metrics_render(
    State(state): State<AppState>,
    _caller: Caller,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::json;

    use crate::router;
    use crate::testing::{bearer, call, get, post, state, state_with_keys};

    #[tokio::test]
    async fn health_answers_without_a_key_and_metrics_need_one() {
        // Keys are configured, yet the health endpoints stay open.
        let app = router(state_with_keys("k:write=*"));
        let live = call(&app, get("/health/live")).await;
        assert_eq!(live.status, StatusCode::OK);
        assert_eq!(live.body, json!({"status": "up"}));
        let ready = call(&app, get("/health/ready")).await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
        assert_eq!(ready.body["status"], "ready");
        assert_eq!(ready.body["checks"]["producer"]["status"], "up");
        // The metrics name topics: a key is needed (any key).
        let refused = call(&app, get("/metrics")).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);
        assert_eq!(refused.body["error"]["code"], "unauthorized");
        let metrics = call(&app, bearer(get("/metrics"), "k")).await;
        assert_eq!(metrics.status, StatusCode::OK);
        assert_eq!(metrics.headers["content-type"], "text/plain; version=0.0.4");
        // Requests are counted under their route template.
        assert!(
            metrics.text.contains(
                r#"kafkit_http_requests_total{method="GET",route="/health/ready",status="200"} 1"#
            ),
            "{}",
            metrics.text
        );
    }

    #[tokio::test]
    async fn readiness_tells_why_the_brokers_are_down_only_to_a_key() {
        // A keyed gateway whose brokers do not answer.
        let mut config = kafkit::KafkaConfig::new(["127.0.0.1:1"]);
        config.request_timeout = std::time::Duration::from_secs(1);
        let keys = crate::ApiKeys::parse("key-0123456789abcdef:read=*").unwrap();
        let app = router(crate::testing::state_with(&config).with_api_keys(keys));
        // Without a key: not ready, with a generic reason.
        let ready = call(&app, get("/health/ready")).await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            ready.body["checks"]["brokers"],
            json!({"status": "down", "error": super::DETAILS_WITH_A_KEY}),
            "{}",
            ready.text
        );
        // With one: the broker client's own words.
        let ready = call(&app, bearer(get("/health/ready"), "key-0123456789abcdef")).await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
        let error = ready.body["checks"]["brokers"]["error"].as_str().unwrap();
        assert_ne!(error, super::DETAILS_WITH_A_KEY, "{}", ready.text);
    }

    #[tokio::test]
    async fn readiness_fails_with_details_when_the_producer_is_closed() {
        let state = state();
        state.shutdown().await.unwrap();
        let app = router(state);
        let ready = call(&app, get("/health/ready")).await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready.body["status"], "not_ready");
        assert_eq!(ready.body["checks"]["producer"]["status"], "closed");
        // A closed producer refuses sends with a 503.
        let answer = call(
            &app,
            post("/kafka/send", &json!({"topic": "t", "value": 1})),
        )
        .await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.body["error"]["code"], "producer_closed");
    }

    #[tokio::test]
    async fn a_subscription_that_is_not_consuming_makes_the_process_unready() {
        // A push subscription whose consumer is built but not running (as after it stopped).
        let state = state();
        let subscriptions = crate::push::parse(
            "[[subscription]]\nname = \"billing\"\ntopics = [\"orders\"]\nendpoint = \"http://127.0.0.1:1/\"",
            |_| None,
        )
        .unwrap();
        let kafka = kafkit::Kafka::connect(&crate::testing::config()).unwrap();
        let runner =
            crate::push::Runner::new(&kafka, subscriptions, &kafkit::metrics::Metrics::default())
                .unwrap();
        let app = router(state.with_push(std::sync::Arc::new(runner)));
        let ready = call(&app, get("/health/ready")).await;
        // The brokers are up, yet the process is not ready, and says which subscription.
        assert_eq!(ready.body["checks"]["brokers"]["status"], "up");
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
        let billing = &ready.body["checks"]["subscriptions"]["billing"];
        assert_eq!(billing["status"], "unhealthy");
        assert_eq!(billing["problems"][0], "consumer is not running");
        // GET /subscriptions shows the same.
        let list = call(&app, get("/subscriptions")).await;
        assert_eq!(list.status, StatusCode::OK);
        assert_eq!(list.body[0]["name"], "billing");
        assert_eq!(list.body[0]["status"], "unhealthy");
        assert_eq!(list.body[0]["consumer"]["running"], false);
    }
}
