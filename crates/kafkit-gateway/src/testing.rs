//! What the router tests share: state on the test broker, and one-shot calls that return the
//! status, headers and JSON body of the answer.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use kafkit::{Kafka, KafkaConfig};
use serde_json::Value;
use tower::ServiceExt;

use crate::AppState;

/// A client configuration for the test broker.
pub fn config() -> KafkaConfig {
    KafkaConfig::new([testkit::brokers()])
}

/// Open state (no API keys) on `config`'s brokers.
pub fn state_with(config: &KafkaConfig) -> AppState {
    AppState::new(&Kafka::connect(config).expect("remote cluster")).expect("gateway state")
}

/// Open state on the test broker.
pub fn state() -> AppState {
    state_with(&config())
}

/// Open state on the embedded development broker, started in-process for it; the broker
/// stops when the returned cluster is dropped.
pub fn embedded_state() -> (Kafka, AppState) {
    let kafka = Kafka::connect(&KafkaConfig::default()).expect("embedded broker");
    let state = AppState::new(&kafka).expect("gateway state");
    (kafka, state)
}

/// An answer, with its body parsed as JSON (`Value::Null` when it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

/// Sends one request through the router.
pub async fn call(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

/// A `GET` request.
pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).expect("request")
}

/// A `POST` of a JSON body.
pub fn post(path: &str, body: &Value) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request")
}

/// `request` with `Authorization: Bearer key`.
pub fn bearer(mut request: Request<Body>, key: &str) -> Request<Body> {
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header value"),
    );
    request
}

/// Records currently kept in `topic` (high minus low watermarks over its partitions).
pub async fn records_in(topic: &str) -> i64 {
    testkit::kafka()
        .admin()
        .expect("admin")
        .describe_topic(topic)
        .await
        .expect("topic exists")
        .record_count()
}

/// Open state whose API keys are `keys` (the `KAFKIT_API_KEYS` format).
pub fn state_with_keys(keys: &str) -> AppState {
    state().with_api_keys(crate::ApiKeys::parse(keys).expect("valid keys"))
}
