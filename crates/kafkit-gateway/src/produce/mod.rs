//! `POST /kafka/send` and `POST /kafka/send-batch` (seed 003), producing through the shared
//! producer: a batch is enqueued whole, then its acknowledgements are awaited together.
//!
//! Before anything is produced a request is checked in this order: the caller's write grants
//! (one forbidden topic refuses the whole request), each record (name, encoding, size, topic
//! existence when auto-creation is off), then idempotency keys. Sends are bounded by the
//! gateway's send timeout, so an unreachable broker is a prompt 503, never a hung request.
//!
//! A send runs as a task of its own. When the broker does not answer in time the request gets
//! its 503 at once, but the send goes on (librdkafka keeps the records until its delivery
//! timeout), and so do its idempotency claims: a retry meanwhile waits or gets 409, and once
//! the delivery report arrives a success is stored for replay, a failure releases the keys.
//! A record delivered late is therefore never produced twice under the same key.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kafkit::{Delivery, Record};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ErrorBody, ErrorDetail};
use super::idempotency::{self, Claim, Owner};
use super::{AppState, MAX_BATCH_RECORDS, MAX_RECORD_BYTES};

/// Request header naming an idempotency key for the whole request.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Response header set when the answer is a replay of an earlier one.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(messages_send))
        .routes(routes!(messages_send_batch))
}

/// How the `value` of a message becomes the record's payload.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Any JSON value, stored as JSON (`content-type: application/json`).
    #[default]
    Json,
    /// A JSON string, stored as its UTF-8 text.
    String,
    /// A JSON string holding base64, stored as the decoded bytes.
    Base64,
}

/// One record to produce.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundMessage {
    /// Destination topic.
    pub topic: String,
    /// Optional key.
    pub key: Option<String>,
    /// The value; `null` makes a tombstone.
    #[serde(default)]
    pub value: serde_json::Value,
    /// Optional headers (string values).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Optional explicit partition.
    pub partition: Option<i32>,
    /// How to read `value` (default `json`).
    #[serde(default)]
    pub encoding: Encoding,
    /// Optional idempotency key for this record: a record sent again with the same key (to the
    /// same topic, by the same API key) within 10 minutes is answered from the first delivery.
    pub idempotency_key: Option<String>,
}

/// Body of `/kafka/send-batch`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The records, any topics, at most 1000.
    pub messages: Vec<OutboundMessage>,
}

/// Where one record landed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct SendResult {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// What a record-level idempotency key remembers: where the record landed, and a fingerprint
/// of the record, so the same key with another record is refused rather than replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordReply {
    fingerprint: u64,
    result: SendResult,
}

/// One record's outcome in a batch: a delivery or an error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchItem {
    /// Stored.
    Ok(SendResult),
    /// Not stored.
    Failed {
        /// Why.
        error: ErrorDetail,
    },
}

/// Body answered by `/kafka/send-batch`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse {
    /// `ok`, `partial` or `failed`.
    pub status: &'static str,
    /// Records stored.
    pub succeeded: usize,
    /// Records not stored.
    pub failed: usize,
    /// One entry per request record, in request order.
    pub results: Vec<BatchItem>,
}

/// A successful answer, as stored for idempotent replay.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Hash of the request it answered: the same key with another body is refused.
    fingerprint: u64,
    status: StatusCode,
    body: serde_json::Value,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl OutboundMessage {
    /// The record this message asks for, or why it cannot be produced.
    fn to_record(&self) -> Result<Record, ApiError> {
        kafkit::record::validate_topic(&self.topic)?;
        if let Some(partition) = self.partition
            && partition < 0
        {
            return Err(ApiError::bad_request(
                "invalid_partition",
                format!("partition must be >= 0, got {partition}"),
            ));
        }
        if let Some(key) = &self.idempotency_key {
            idempotency::validate_key(key)
                .map_err(|m| ApiError::bad_request("invalid_idempotency_key", m))?;
        }
        let mut record = Record::to(&self.topic);
        for (name, value) in &self.headers {
            record = record.header(name.clone(), value.clone());
        }
        record = match (self.encoding, &self.value) {
            (_, serde_json::Value::Null) => record,
            (Encoding::Json, value) => record.json(value)?,
            (Encoding::String, serde_json::Value::String(text)) => record.text(text.clone()),
            (Encoding::Base64, serde_json::Value::String(encoded)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|e| {
                        ApiError::bad_request("invalid_base64", format!("value is not base64: {e}"))
                    })?;
                record.bytes(bytes)
            }
            (encoding, _) => {
                return Err(ApiError::bad_request(
                    "invalid_value",
                    format!("encoding {encoding:?} needs a string value"),
                ));
            }
        };
        record.key = self.key.clone().map(String::into_bytes);
        record.partition = self.partition;
        let size = record.payload.as_ref().map_or(0, Vec::len)
            + record.key.as_ref().map_or(0, Vec::len)
            + record
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > MAX_RECORD_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "record_too_large",
                format!("the record is {size} bytes, the limit is {MAX_RECORD_BYTES}"),
            ));
        }
        Ok(record)
    }

    /// The record, once its topic (and partition) are known to exist.
    async fn checked_record(&self, state: &AppState) -> Result<Record, ApiError> {
        let record = self.to_record()?;
        state
            .known_topics
            .check(&state.admin, &self.topic, self.partition)
            .await?;
        Ok(record)
    }

    /// The cache key of this record's idempotency key, scoped to caller and topic.
    fn idempotency_scope(&self, caller: &Caller) -> Option<String> {
        self.idempotency_key
            .as_ref()
            .map(|key| format!("{}\n{}\n{key}", caller.name(), self.topic))
    }

    /// The stored answer for this record's key, or 422 when the key was used for a different
    /// record.
    fn replay(&self, stored: RecordReply) -> Result<SendResult, ApiError> {
        if stored.fingerprint == fingerprint("record", self) {
            Ok(stored.result)
        } else {
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this record's idempotency_key was used for a different record",
            ))
        }
    }
}

/// Produce one record.
#[utoipa::path(
    post,
    path = "/kafka/send",
    tag = "produce",
    request_body = OutboundMessage,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Replays the first answer for 10 minutes instead of producing again")),
    responses(
        (status = 200, description = "Stored; the broker acknowledged it", body = SendResult),
        (status = 400, description = "Invalid record", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key may not write this topic", body = ErrorBody),
        (status = 404, description = "Unknown topic (auto-creation off)", body = ErrorBody),
        (status = 413, description = "Record or body too large", body = ErrorBody),
        (status = 422, description = "Wrong fields", body = ErrorBody),
        (status = 429, description = "Producer queue full; retry later", body = ErrorBody),
        (status = 503, description = "Broker unreachable or slow", body = ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn messages_send(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(message): ApiJson<OutboundMessage>,
) -> Response {
    caller_logged(&caller);
    let fingerprint = fingerprint("send", &message);
    idempotent(
        &state,
        &caller,
        &headers,
        "send",
        fingerprint,
        |request| async {
            caller.require_write(&message.topic)?;
            let record = message.checked_record(&state).await?;
            let claim = match message.idempotency_scope(&caller) {
                Some(scope) => Some(state.record_replies.claim(&scope).await),
                None => None,
            };
            let owner = match claim {
                Some(Claim::Done(stored)) => {
                    return Ok(ok_reply(fingerprint, &message.replay(stored)?));
                }
                Some(Claim::InProgress) => return Err(in_progress()),
                Some(Claim::Owner(owner)) => Some(owner),
                None => None,
            };
            let producer = state.producer.clone();
            let topic = message.topic.clone();
            let record_fingerprint = self::fingerprint("record", &message);
            // Settles the claims with the delivery report, in the request or after it.
            let settle = move |delivery: kafkit::Result<Delivery>| {
                let result = sent(&topic, delivery?);
                if let Some(owner) = owner {
                    owner.complete(RecordReply {
                        fingerprint: record_fingerprint,
                        result: result.clone(),
                    });
                }
                Ok(ok_reply(fingerprint, &result))
            };
            bounded(&state, request, async move {
                settle(producer.send(record).await)
            })
            .await
        },
    )
    .await
}

/// Produce many records, to any topics, with a result per record.
#[utoipa::path(
    post,
    path = "/kafka/send-batch",
    tag = "produce",
    request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Replays the first answer for 10 minutes instead of producing again")),
    responses(
        (status = 200, description = "Every record stored", body = BatchResponse),
        (status = 207, description = "Some records stored, the others failed", body = BatchResponse),
        (status = 400, description = "Empty batch, or every record invalid", body = BatchResponse),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "The key may not write one of the topics: nothing produced", body = ErrorBody),
        (status = 413, description = "More than 1000 records, or body too large", body = ErrorBody),
        (status = 422, description = "Wrong fields", body = ErrorBody),
        (status = 503, description = "Broker unreachable or slow", body = ErrorBody),
    ),
    security((), ("api_key" = []))
)]
pub async fn messages_send_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(batch): ApiJson<BatchRequest>,
) -> Response {
    caller_logged(&caller);
    let fingerprint = fingerprint("send-batch", &batch);
    idempotent(
        &state,
        &caller,
        &headers,
        "send-batch",
        fingerprint,
        |request| async { send_batch(&state, &caller, batch, fingerprint, request).await },
    )
    .await
}

async fn send_batch(
    state: &AppState,
    caller: &Caller,
    batch: BatchRequest,
    fingerprint: u64,
    request: RequestClaim,
) -> Result<Reply, ApiError> {
    if batch.messages.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "messages must not be empty",
        ));
    }
    if batch.messages.len() > MAX_BATCH_RECORDS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} messages in one batch, the limit is {MAX_BATCH_RECORDS}",
                batch.messages.len()
            ),
        ));
    }
    // Authorization is all or nothing: a batch is one request from one caller.
    for message in &batch.messages {
        caller.require_write(&message.topic)?;
    }
    // Invalid records, replays and keys in progress are answered in place; the rest are
    // produced together.
    let mut results: Vec<Option<BatchItem>> = Vec::with_capacity(batch.messages.len());
    // The status of each failed record, so an all-failed batch answers the first one's.
    let mut statuses: Vec<Option<StatusCode>> = vec![None; batch.messages.len()];
    let mut pending: Vec<Pending> = Vec::new();
    let mut records = Vec::new();
    for (index, message) in batch.messages.iter().enumerate() {
        results.push(None);
        let record = match message.checked_record(state).await {
            Ok(record) => record,
            Err(error) => {
                statuses[index] = Some(error.status);
                results[index] = Some(failed(error));
                continue;
            }
        };
        let owner = match message
            .idempotency_scope(caller)
            .map(|scope| state.record_replies.try_claim(&scope))
        {
            Some(Claim::Done(stored)) => {
                results[index] = Some(match message.replay(stored) {
                    Ok(result) => BatchItem::Ok(result),
                    Err(error) => {
                        statuses[index] = Some(error.status);
                        failed(error)
                    }
                });
                continue;
            }
            Some(Claim::InProgress) => {
                statuses[index] = Some(StatusCode::CONFLICT);
                results[index] = Some(failed(in_progress()));
                continue;
            }
            Some(Claim::Owner(owner)) => Some(owner),
            None => None,
        };
        pending.push(Pending {
            index,
            topic: message.topic.clone(),
            fingerprint: self::fingerprint("record", message),
            owner,
        });
        records.push(record);
    }
    let producer = state.producer.clone();
    let settle = move |deliveries: Vec<kafkit::Result<Delivery>>| {
        Ok(batch_reply(
            results,
            statuses,
            pending,
            deliveries,
            fingerprint,
        ))
    };
    bounded(state, request, async move {
        settle(producer.send_batch(records).await)
    })
    .await
}

/// The answer to a batch once its deliveries are known; completes the record-level claims of
/// the records stored.
fn batch_reply(
    mut results: Vec<Option<BatchItem>>,
    mut statuses: Vec<Option<StatusCode>>,
    pending: Vec<Pending>,
    deliveries: Vec<kafkit::Result<Delivery>>,
    fingerprint: u64,
) -> Reply {
    for (pending, delivery) in pending.into_iter().zip(deliveries) {
        let index = pending.index;
        results[index] = Some(match delivery {
            Ok(delivery) => {
                let result = sent(&pending.topic, delivery);
                if let Some(owner) = pending.owner {
                    owner.complete(RecordReply {
                        fingerprint: pending.fingerprint,
                        result: result.clone(),
                    });
                }
                BatchItem::Ok(result)
            }
            Err(error) => {
                let error = ApiError::from(error);
                statuses[index] = Some(error.status);
                failed(error)
            }
        });
    }
    let results: Vec<BatchItem> = results.into_iter().map(|r| r.expect("filled")).collect();
    let failed_count = statuses.iter().flatten().count();
    let first_error_status = statuses.into_iter().flatten().next();
    let succeeded = results.len() - failed_count;
    let (status, label) = match (succeeded, failed_count) {
        (_, 0) => (StatusCode::OK, "ok"),
        (0, _) => (
            first_error_status.unwrap_or(StatusCode::BAD_REQUEST),
            "failed",
        ),
        _ => (StatusCode::MULTI_STATUS, "partial"),
    };
    let body = BatchResponse {
        status: label,
        succeeded,
        failed: failed_count,
        results,
    };
    Reply {
        fingerprint,
        status,
        body: serde_json::to_value(body).expect("serializable"),
    }
}

/// A batch record handed to the producer: its place in the answer, and its key's claim.
struct Pending {
    index: usize,
    topic: String,
    fingerprint: u64,
    owner: Option<Owner<RecordReply>>,
}

/// The request's own `Idempotency-Key` claim, handed to the work so a send that outlives the
/// request can keep it until the delivery report arrives.
type RequestClaim = Arc<Mutex<Option<Owner<Reply>>>>;

/// Runs `work` once per `Idempotency-Key` (scoped to caller and route): a retry within the TTL
/// gets the stored answer with `idempotent-replayed: true`. Only 2xx answers are stored.
async fn idempotent(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    route: &str,
    fingerprint: u64,
    work: impl AsyncFnOnce(RequestClaim) -> Result<Reply, ApiError>,
) -> Response {
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(key)) => match idempotency::validate_key(key) {
            Ok(()) => Some(format!("{}\n{route}\n{key}", caller.name())),
            Err(message) => {
                return ApiError::bad_request("invalid_idempotency_key", message).into_response();
            }
        },
        Some(Err(_)) => {
            return ApiError::bad_request(
                "invalid_idempotency_key",
                "an idempotency key is visible ASCII only",
            )
            .into_response();
        }
    };
    let owner = match &key {
        None => None,
        Some(key) => match state.request_replies.claim(key).await {
            Claim::Done(reply) if reply.fingerprint != fingerprint => {
                return ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                )
                .into_response();
            }
            Claim::Done(reply) => {
                let mut response = reply.into_response();
                response
                    .headers_mut()
                    .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
                return response;
            }
            Claim::InProgress => return in_progress().into_response(),
            Claim::Owner(owner) => Some(owner),
        },
    };
    let claim: RequestClaim = Arc::new(Mutex::new(owner));
    let outcome = work(claim.clone()).await;
    // Still here unless a send that outlived the request took it along.
    let owner = claim.lock().expect("not poisoned").take();
    match outcome {
        Ok(reply) => {
            if let Some(owner) = owner
                && reply.status.is_success()
            {
                owner.complete(reply.clone());
            }
            reply.into_response()
        }
        // Dropping the owner releases the key: the client may retry a failure.
        Err(error) => error.into_response(),
    }
}

/// Runs `send` (which settles its record claims itself) as a task, and waits for it within the
/// gateway's send timeout. On expiry the request gets a 503, while the task goes on with the
/// request's claim: a success is then stored for replay, a failure releases the key.
async fn bounded(
    state: &AppState,
    request: RequestClaim,
    send: impl Future<Output = Result<Reply, ApiError>> + Send + 'static,
) -> Result<Reply, ApiError> {
    let mut task = tokio::spawn(send);
    match tokio::time::timeout(state.limits.broker_timeout, &mut task).await {
        Ok(joined) => joined.map_err(|error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                error.to_string(),
            )
        })?,
        Err(_) => {
            let owner = request.lock().expect("not poisoned").take();
            tokio::spawn(async move {
                if let (Ok(Ok(reply)), Some(owner)) = (task.await, owner)
                    && reply.status.is_success()
                {
                    owner.complete(reply);
                }
            });
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broker_timeout",
                format!(
                    "the broker did not acknowledge within {} ms; the record may still be \
                     delivered, retry with an idempotency key to avoid duplicates",
                    state.limits.broker_timeout.as_millis()
                ),
            ))
        }
    }
}

/// A stable hash of the request, to spot an idempotency key reused for another body.
fn fingerprint(route: &str, body: &impl Serialize) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    route.hash(&mut hasher);
    serde_json::to_vec(body)
        .expect("serializable")
        .hash(&mut hasher);
    hasher.finish()
}

fn caller_logged(caller: &Caller) {
    tracing::Span::current().record("caller", caller.name());
}

fn sent(topic: &str, delivery: Delivery) -> SendResult {
    SendResult {
        topic: topic.to_owned(),
        partition: delivery.partition,
        offset: delivery.offset,
    }
}

fn ok_reply(fingerprint: u64, result: &SendResult) -> Reply {
    Reply {
        fingerprint,
        status: StatusCode::OK,
        body: serde_json::to_value(result).expect("serializable"),
    }
}

fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_in_progress",
        "a request with this idempotency key is still running; retry shortly",
    )
}

fn failed(error: ApiError) -> BatchItem {
    BatchItem::Failed {
        error: error.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;
    use serde_json::{Value, json};

    use super::super::router;
    use super::super::testing::{
        bearer, call, post, records_in, state, state_with, state_with_keys,
    };

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
    async fn invalid_requests_get_their_error_code_and_produce_nothing() {
        let topic = testkit::topic("rt-bad", 1).await;
        let app = router(state());
        let big = "x".repeat(super::MAX_RECORD_BYTES + 1);
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
        // A batch whose every record is invalid fails as a whole, with per-record errors.
        let answer = call(
            &app,
            post(
                "/kafka/send-batch",
                &json!({"messages": [{"topic": "a b"}, {"topic": "c d"}]}),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.body["status"], "failed");
        assert_eq!(answer.body["failed"], 2);
        assert_eq!(answer.body["results"][1]["error"]["code"], "invalid_record");
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
                    {"topic": topic, "value": "x".repeat(super::MAX_RECORD_BYTES + 1), "encoding": "string"},
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
        let mut config = super::super::testing::config();
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
        let answer = call(
            &app,
            post("/kafka/send", &json!({"topic": "t", "value": 1})),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            answer.text
        );
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
