//! `POST /kafka/send` and `POST /kafka/send-batch` (the send API of a NestJS Kafka module), producing through the shared
//! producer: a batch is enqueued whole, then its acknowledgements are awaited together.
//!
//! Before anything is produced a request is checked in this order: the API key (401), before
//! the body is read; whether the key may write any topic at all (403), still before the body
//! is read; the body's JSON (400, 415, 422); the caller's write grants on the topics it names
//! (403; one forbidden topic refuses the whole request); then the `Idempotency-Key` header,
//! each record (name, encoding, size, topic existence when auto-creation is off) and the
//! record-level idempotency keys. Sends are bounded by the gateway's send timeout, so an
//! unreachable broker is a prompt 503, never a hung request.
//!
//! A send runs as a task of its own. When the broker does not answer in time the request gets
//! its 503 at once, but the send goes on (librdkafka keeps the records until its delivery
//! timeout), and so do its idempotency claims: a retry meanwhile waits or gets 409, and once
//! the delivery report arrives a success is stored for replay, a failure releases the keys.
//! A record delivered late is therefore never produced twice under the same key.
//!
//! The parts: [`body`] (the JSON bodies), [`record`] (a body becomes a record), [`answers`]
//! (idempotency keys claimed, answers replayed and settled around a send) and [`batch`] (a batch
//! assembled and answered).

pub(crate) mod answer_log;
mod answer_store;
mod answers;
mod batch;
pub(crate) mod body;
pub(crate) mod idempotency;
mod log_claims;
mod record;
mod transactional;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::http::auth::Writer;
use crate::http::error::{ApiJson, ErrorBody};
use answers::{Claimed, bounded, idempotent};

pub use answers::{RecordReply, Reply};
pub use body::{
    BatchFailure, BatchRequest, BatchResponse, IdempotencyKey, OutboundMessage, SendResult,
};
pub use transactional::Transactions;

/// Request header naming an idempotency key for the whole request.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Response header set when the answer is a replay of an earlier one.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(messages_send))
        .routes(routes!(messages_send_batch))
}

/// Produce one record.
#[utoipa::path(
    post,
    path = "/kafka/send",
    tag = "produce",
    request_body = OutboundMessage,
    params(("Idempotency-Key" = Option<IdempotencyKey>, Header, nullable = false,
        description = "Replays the first answer for 10 minutes instead of producing again")),
    responses(
        (status = 200, description = "Stored; the broker acknowledged it", body = SendResult,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"))),
        (status = 400, description = "Invalid record, malformed JSON, or a body that could not be read", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key (the body is not read)", body = ErrorBody),
        (status = 403, description = "The key may not write this topic (the body is not read when it may write none), or the broker refused the gateway", body = ErrorBody),
        (status = 404, description = "Unknown topic (auto-creation off) or partition", body = ErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still running", body = ErrorBody),
        (status = 413, description = "Record or body too large", body = ErrorBody),
        (status = 415, description = "The body is not declared `application/json`", body = ErrorBody),
        (status = 422, description = "Wrong fields, or an idempotency key used before for another request or record", body = ErrorBody),
        (status = 429, description = "Producer queue full; retry later", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "The broker refused the record for another reason", body = ErrorBody),
        (status = 503, description = "Broker unreachable or slow, or the request over the gateway's time limit; the record may still be delivered", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn messages_send(
    State(state): State<AppState>,
    Writer(caller): Writer,
    headers: HeaderMap,
    ApiJson(message): ApiJson<OutboundMessage>,
) -> Response {
    if let Err(error) = caller.require_write(&message.topic) {
        return error.into_response();
    }
    idempotent(
        &state,
        &caller,
        &headers,
        "send",
        &message,
        async |request| {
            let record = message.checked_record(&state).await?;
            let fingerprint = request.fingerprint;
            let claim = match message.claim(&state, &caller).await? {
                Claimed::Replay(result) => {
                    return Ok(Reply::new(fingerprint, StatusCode::OK, &result));
                }
                Claimed::Produce(claim) => claim,
            };
            let producer = state.single_producer().clone();
            // The delivery report settles the claims, in the request or after it.
            bounded(&state, request, async move {
                let result = claim.settle(producer.send(record).await?);
                Ok(Reply::new(fingerprint, StatusCode::OK, &result))
            })
            .await
        },
    )
    .await
}

/// Produce many records, to any topics, with a result per record.
///
/// With `"transactional": true` the records are sent in one Kafka transaction: all become
/// visible to read-committed readers together, or none does, and one refused record (invalid,
/// or its idempotency key in progress) or a failed transaction fails the whole batch with one
/// error status.
#[utoipa::path(
    post,
    path = "/kafka/send-batch",
    tag = "produce",
    request_body = BatchRequest,
    params(("Idempotency-Key" = Option<IdempotencyKey>, Header, nullable = false,
        description = "Replays the first answer for 10 minutes instead of producing again")),
    responses(
        (status = 200, description = "Every record stored (with `transactional`, committed in one transaction)", body = BatchResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`"))),
        (status = 207, description = "Some records stored, the others failed; `Retry-After` \
            when some found the producer queue full (never for a `transactional` batch)", body = BatchResponse,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying the records refused for a full queue"))),
        (status = 400, description = "Malformed JSON or a body that could not be read (`error` only), or every record invalid (`results` and `error`)", body = BatchFailure),
        (status = 401, description = "Missing or unknown API key (the body is not read)", body = ErrorBody),
        (status = 403, description = "The key may not write one of the topics: nothing produced (the body is not read when it may write none); or the broker refused every record", body = BatchFailure),
        (status = 404, description = "Every record names an unknown topic (auto-creation off) or partition", body = BatchFailure),
        (status = 409, description = "A request with this `Idempotency-Key` is still running, or every record's `idempotency_key` is", body = BatchFailure),
        (status = 413, description = "More than 1000 records, a body too large, or every record too large", body = BatchFailure),
        (status = 415, description = "The body is not declared `application/json`", body = ErrorBody),
        (status = 422, description = "Wrong fields, or an idempotency key used before for another request (or every record's for another record)", body = BatchFailure),
        (status = 429, description = "Every record found the producer queue full: per-record \
            `results` and a top-level `error`", body = BatchFailure,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
        (status = 502, description = "The broker refused every record for another reason, or a `transactional` batch's transaction failed (`transaction_aborted`, `fenced`): nothing stored", body = BatchFailure),
        (status = 503, description = "Broker unreachable or slow, or the request over the gateway's time limit; records may still be delivered (a `transactional` batch: committed whole or not at all)", body = BatchFailure),
    ),
    security(("api_key" = []))
)]
pub async fn messages_send_batch(
    State(state): State<AppState>,
    Writer(caller): Writer,
    headers: HeaderMap,
    ApiJson(batch): ApiJson<BatchRequest>,
) -> Response {
    if let Err(error) = batch::authorize(&caller, &batch) {
        return error.into_response();
    }
    idempotent(
        &state,
        &caller,
        &headers,
        "send-batch",
        &batch,
        async |request| batch::send_batch(&state, &caller, &batch, request).await,
    )
    .await
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::http::StatusCode;
    use kafkit::KafkaConfig;
    use serde_json::{Value, json};

    use crate::testing::{
        Answer, bearer, call, post, records_in, state, state_with, state_with_keys,
    };
    use crate::{MAX_RECORD_BYTES, router};

    /// Sends one record through `app`, whose broker cannot answer in time, and checks the
    /// answer is a 503; which limit expired (its code) is the caller's to check.
    pub(crate) async fn send_unanswered(app: &Router) -> Answer {
        let answer = call(app, post("/kafka/send", &json!({"topic": "t", "value": 1}))).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.text
        );
        answer
    }

    #[tokio::test]
    async fn send_answers_where_the_record_landed() {
        let topic = testkit::topic("rt-send", 2).await;
        let app = router(state());
        // One keyed JSON record on an explicit partition.
        let answer = call(
            &app,
            post(
                "/kafka/send",
                &json!({"topic": topic, "key": "k", "partition": 1, "value": {"n": 1}}),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(
            answer.body,
            json!({"topic": topic, "partition": 1, "offset": 0})
        );
        // It is in Kafka, exactly once, with key and value.
        let read = testkit::read(&topic, 1, Duration::from_secs(10)).await;
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(read[0].json::<Value>().unwrap(), json!({"n": 1}));
    }

    #[tokio::test]
    async fn a_single_send_does_not_wait_for_the_batch_linger() {
        // Given a gateway whose producer lingers 300 ms to fill batches.
        let topic = testkit::topic("rt-linger", 1).await;
        let config = KafkaConfig {
            linger: Duration::from_millis(300),
            ..crate::testing::config()
        };
        let app = router(state_with(&config));
        let send = |n: i32| post("/kafka/send", &json!({"topic": topic, "value": n}));
        // (The first send also fetches metadata and the producer id.)
        assert_eq!(call(&app, send(0)).await.status, StatusCode::OK);
        // When one client sends records one at a time, each is answered well within the
        // linger: a request/response client never fills a batch while it waits.
        for n in 1..=5 {
            let started = std::time::Instant::now();
            let answer = call(&app, send(n)).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            assert!(
                started.elapsed() < Duration::from_millis(150),
                "send {n} took {:?}",
                started.elapsed()
            );
        }
        // While a batch still lingers, to fill itself.
        let started = std::time::Instant::now();
        let batch = json!({"messages": [{"topic": topic, "value": 6}]});
        let answer = call(&app, post("/kafka/send-batch", &batch)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert!(started.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn invalid_requests_get_their_error_code_and_produce_nothing() {
        let topic = testkit::topic("rt-bad", 1).await;
        let app = router(state());
        let big = "x".repeat(MAX_RECORD_BYTES + 1);
        let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
            (
                "/kafka/send",
                json!({"value": 1}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                "/kafka/send",
                json!({"topic": "bad topic", "value": 1}),
                StatusCode::BAD_REQUEST,
                "invalid_record",
            ),
            (
                "/kafka/send",
                json!({"topic": topic, "partition": -1}),
                StatusCode::BAD_REQUEST,
                "invalid_partition",
            ),
            (
                "/kafka/send",
                json!({"topic": topic, "value": "%%", "encoding": "base64"}),
                StatusCode::BAD_REQUEST,
                "invalid_base64",
            ),
            (
                "/kafka/send",
                json!({"topic": topic, "value": 5, "encoding": "string"}),
                StatusCode::BAD_REQUEST,
                "invalid_value",
            ),
            (
                "/kafka/send",
                json!({"topic": topic, "value": 1, "idempotency_key": "has space"}),
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
            ),
            (
                "/kafka/send",
                json!({"topic": topic, "value": big, "encoding": "string"}),
                StatusCode::PAYLOAD_TOO_LARGE,
                "record_too_large",
            ),
            (
                "/kafka/send-batch",
                json!({"messages": []}),
                StatusCode::BAD_REQUEST,
                "empty_batch",
            ),
            (
                "/kafka/send-batch",
                json!({"messages": vec![json!({"topic": topic}); 1001]}),
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
            ),
        ];
        for (path, body, status, code) in cases {
            let answer = call(&app, post(path, &body)).await;
            assert_eq!(answer.status, status, "{code}: {}", answer.text);
            assert_eq!(answer.body["error"]["code"], code, "{}", answer.text);
        }
        // Malformed JSON and a body that is not JSON.
        let malformed = axum::http::Request::post("/kafka/send")
            .header("content-type", "application/json")
            .body(axum::body::Body::from("{\"topic\": "))
            .unwrap();
        let answer = call(&app, malformed).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.body["error"]["code"], "malformed_json");
        let text = axum::http::Request::post("/kafka/send")
            .body(axum::body::Body::from("hello"))
            .unwrap();
        let answer = call(&app, text).await;
        assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(answer.body["error"]["code"], "unsupported_media_type");
        // (A batch whose every record is invalid: produce::batch's tests.)
        assert_eq!(records_in(&topic).await, 0);
    }

    #[tokio::test]
    async fn a_batch_reports_each_record_and_a_partial_status() {
        let topic = testkit::topic("rt-batch", 1).await;
        let app = router(state());
        let answer = call(
            &app,
            post(
                "/kafka/send-batch",
                &json!({"messages": [
                    {"topic": topic, "value": 1},
                    {"topic": topic, "value": "x".repeat(MAX_RECORD_BYTES + 1), "encoding": "string"},
                    {"topic": topic, "value": 3},
                ]}),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::MULTI_STATUS, "{}", answer.text);
        assert_eq!(answer.body["status"], "partial");
        assert_eq!(
            answer.body["results"][0],
            json!({"topic": topic, "partition": 0, "offset": 0})
        );
        assert_eq!(
            answer.body["results"][1]["error"]["code"],
            "record_too_large"
        );
        assert_eq!(
            answer.body["results"][2],
            json!({"topic": topic, "partition": 0, "offset": 1})
        );
        assert_eq!(records_in(&topic).await, 2);
    }

    #[tokio::test]
    async fn api_keys_guard_writes_per_topic_and_a_forbidden_batch_produces_nothing() {
        let allowed = testkit::topic("rt-auth-ok", 1).await;
        let other = testkit::topic("rt-auth-no", 1).await;
        let app = router(state_with_keys(&format!(
            "writer:write={allowed};reader:read=*"
        )));
        let message = |topic: &str| json!({"topic": topic, "value": 1});
        // No key, a malformed header and an unknown key: 401.
        let answer = call(&app, post("/kafka/send", &message(&allowed))).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.body["error"]["code"], "unauthorized");
        let mut basic = post("/kafka/send", &message(&allowed));
        basic
            .headers_mut()
            .insert("authorization", "Basic d3JpdGVy".parse().unwrap());
        assert_eq!(call(&app, basic).await.status, StatusCode::UNAUTHORIZED);
        let answer = call(
            &app,
            bearer(post("/kafka/send", &message(&allowed)), "nope"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        // A key without the topic in its write list, or with read rights only: 403.
        let answer = call(
            &app,
            bearer(post("/kafka/send", &message(&other)), "writer"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(answer.body["error"]["code"], "forbidden");
        let answer = call(
            &app,
            bearer(post("/kafka/send", &message(&allowed)), "reader"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        // A batch with one forbidden record is refused whole.
        let batch = json!({"messages": [message(&allowed), message(&other)]});
        let answer = call(&app, bearer(post("/kafka/send-batch", &batch), "writer")).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
        assert_eq!(records_in(&allowed).await, 0);
        assert_eq!(records_in(&other).await, 0);
        // The right key writes.
        let answer = call(
            &app,
            bearer(post("/kafka/send", &message(&allowed)), "writer"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(records_in(&allowed).await, 1);
    }

    #[tokio::test]
    async fn an_idempotency_key_replays_the_first_answer() {
        let topic = testkit::topic("rt-idem", 1).await;
        let app = router(state());
        let body = json!({"topic": topic, "value": {"n": 1}});
        let with_key = |body: &Value, key: &str| {
            let mut request = post("/kafka/send", body);
            request
                .headers_mut()
                .insert("idempotency-key", key.parse().unwrap());
            request
        };
        // The first request produces; its retry replays the same answer and produces nothing.
        let first = call(&app, with_key(&body, "req-1")).await;
        assert_eq!(first.status, StatusCode::OK);
        assert!(first.headers.get("idempotent-replayed").is_none());
        let retry = call(&app, with_key(&body, "req-1")).await;
        assert_eq!(retry.status, StatusCode::OK);
        assert_eq!(retry.body, first.body);
        assert_eq!(retry.headers["idempotent-replayed"], "true");
        assert_eq!(records_in(&topic).await, 1);
        // The same key with another body is refused.
        let other = call(
            &app,
            with_key(&json!({"topic": topic, "value": 2}), "req-1"),
        )
        .await;
        assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(other.body["error"]["code"], "idempotency_key_reused");
        // Per-record keys: a batch retried with one new record produces only that one.
        let batch = |values: &[(&str, i32)]| {
            json!({"messages": values.iter().map(|(key, n)| json!({
                "topic": topic, "value": n, "idempotency_key": key
            })).collect::<Vec<_>>()})
        };
        let first = call(
            &app,
            post("/kafka/send-batch", &batch(&[("a", 1), ("b", 2)])),
        )
        .await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        let retry = call(
            &app,
            post("/kafka/send-batch", &batch(&[("a", 1), ("b", 2), ("c", 3)])),
        )
        .await;
        assert_eq!(retry.status, StatusCode::OK);
        assert_eq!(retry.body["results"][0], first.body["results"][0]);
        assert_eq!(retry.body["results"][1], first.body["results"][1]);
        assert_eq!(retry.body["results"][2]["offset"], 3);
        // And a single send with a record key the batch used is a replay too.
        let single = call(
            &app,
            post(
                "/kafka/send",
                &json!({"topic": topic, "value": 1, "idempotency_key": "a"}),
            ),
        )
        .await;
        assert_eq!(single.body, first.body["results"][0]);
        assert_eq!(records_in(&topic).await, 4);
        // A record key reused for another record is refused, alone or in a batch.
        let reused = call(
            &app,
            post(
                "/kafka/send",
                &json!({"topic": topic, "value": 99, "idempotency_key": "a"}),
            ),
        )
        .await;
        assert_eq!(
            reused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            reused.text
        );
        assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");
        let reused = call(
            &app,
            post("/kafka/send-batch", &batch(&[("a", 99), ("d", 4)])),
        )
        .await;
        assert_eq!(reused.status, StatusCode::MULTI_STATUS, "{}", reused.text);
        assert_eq!(
            reused.body["results"][0]["error"]["code"],
            "idempotency_key_reused"
        );
        assert_eq!(records_in(&topic).await, 5);
    }

    #[tokio::test]
    async fn unknown_topics_are_404_when_auto_creation_is_off() {
        let topic = testkit::topic("rt-known", 1).await;
        let mut config = crate::testing::config();
        config.allow_auto_topic_creation = false;
        let app = router(state_with(&config));
        let missing = testkit::unique("rt-missing");
        let answer = call(
            &app,
            post("/kafka/send", &json!({"topic": missing, "value": 1})),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
        assert_eq!(answer.body["error"]["code"], "unknown_topic");
        let answer = call(
            &app,
            post(
                "/kafka/send",
                &json!({"topic": topic, "partition": 4, "value": 1}),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.body["error"]["code"], "unknown_partition");
        // In a batch the unknown topic is reported in place; the known one is produced.
        let answer = call(
            &app,
            post(
                "/kafka/send-batch",
                &json!({"messages": [{"topic": missing, "value": 1}, {"topic": topic, "value": 2}]}),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::MULTI_STATUS);
        assert_eq!(answer.body["results"][0]["error"]["code"], "unknown_topic");
        assert_eq!(records_in(&topic).await, 1);
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_a_503_within_the_configured_timeout() {
        // Nothing listens on port 1; the broker timeout comes from KAFKA_REQUEST_TIMEOUT.
        let mut config = kafkit::KafkaConfig::new(["127.0.0.1:1"]);
        config.request_timeout = Duration::from_millis(500);
        config.delivery_timeout = Duration::from_secs(2);
        let app = router(state_with(&config));
        let answer = send_unanswered(&app).await;
        assert_eq!(answer.body["error"]["code"], "broker_timeout");
        let answer = call(
            &app,
            post(
                "/kafka/send-batch",
                &json!({"messages": [{"topic": "t", "value": 1}]}),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.body["error"]["code"], "broker_timeout");
    }
}
