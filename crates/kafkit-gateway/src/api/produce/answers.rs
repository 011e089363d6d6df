//! Idempotent sends: the request's `Idempotency-Key` and each record's `idempotency_key` are
//! claimed in the idempotency cache before anything is produced, a key answered before is
//! replayed, and the claims are settled with the delivery reports, within the request or,
//! when the send outlives the gateway's send timeout, after it.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kafkit::record::Delivery;
use serde::{Deserialize, Serialize};

use super::body::{OutboundMessage, SendResult};
use super::{IDEMPOTENCY_KEY_HEADER, REPLAYED_HEADER};
use crate::AppState;
use crate::api::produce::idempotency::{self, Claim, Owner, Weigh};
use crate::http::auth::Caller;
use crate::http::error::{ApiError, RETRY_AFTER_SECONDS};

/// A successful answer, as stored for idempotent replay (and in the shared answer log).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// Hash of the request it answered: the same key with another body is refused.
    fingerprint: u64,
    #[serde(with = "status_code")]
    status: StatusCode,
    body: serde_json::Value,
    /// Some records were refused for a full producer queue: tell the client when to retry.
    retry_after: bool,
}

impl Reply {
    /// The answer `status` with `body` to the request whose fingerprint is `fingerprint`.
    pub(super) fn new(fingerprint: u64, status: StatusCode, body: &impl Serialize) -> Self {
        Reply {
            fingerprint,
            status,
            body: serde_json::to_value(body).expect("serializable"),
            retry_after: status == StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// This answer with `Retry-After`, whatever its status.
    pub(super) fn with_retry_after(mut self) -> Self {
        self.retry_after = true;
        self
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// What a record-level idempotency key remembers: where the record landed, and a fingerprint
/// of the record, so the same key with another record is refused rather than replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordReply {
    fingerprint: u64,
    result: SendResult,
}

/// A status code as its number.
mod status_code {
    use axum::http::StatusCode;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(status.as_u16())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StatusCode, D::Error> {
        StatusCode::from_u16(u16::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Weigh for Reply {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + json_weight(&self.body)
    }
}

impl Weigh for RecordReply {
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + json_weight(&self.result)
    }
}

/// About the bytes an answer holds in memory: the length of its JSON text, counted without
/// writing the text anywhere.
fn json_weight(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_or(0, |()| count.0)
}

/// The request's own `Idempotency-Key` claim, handed to the work so a send that outlives the
/// request can keep it until the delivery report arrives.
#[derive(Clone)]
pub(super) struct RequestClaim {
    /// Hash of the request, stored with its answer.
    pub(super) fingerprint: u64,
    owner: Arc<Mutex<Option<Owner<Reply>>>>,
}

impl RequestClaim {
    /// Takes the key's owner out of the claim, if it is still there.
    fn take(&self) -> Option<Owner<Reply>> {
        self.owner.lock().expect("not poisoned").take()
    }
}

/// Runs `work` once per `Idempotency-Key` (scoped to caller and route): a retry within the TTL
/// gets the stored answer with `idempotent-replayed: true`. Only 2xx answers are stored.
pub(super) async fn idempotent(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    route: &str,
    body: &impl Serialize,
    work: impl AsyncFnOnce(RequestClaim) -> Result<Reply, ApiError>,
) -> Response {
    // Every produce request passes here: its log lines name the caller from now on.
    tracing::Span::current().record("caller", caller.name());
    let key = match headers.get(IDEMPOTENCY_KEY_HEADER).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(key)) => match idempotency::validate_key(key) {
            Ok(()) => Some(format!("{route}\n{key}")),
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
    // Without a key nothing is stored or compared: the body is not serialized to be hashed.
    let fingerprint = key.as_ref().map_or(0, |_| fingerprint(route, body));
    let owner = match &key {
        None => None,
        Some(key) => match state.request_replies().claim(caller.name(), key).await {
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
            Claim::Unavailable => return unsettled().into_response(),
            Claim::Owner(owner) => Some(owner),
        },
    };
    let claim = RequestClaim {
        fingerprint,
        owner: Arc::new(Mutex::new(owner)),
    };
    let outcome = work(claim.clone()).await;
    // Still here unless the work handed it to a send task (which settles it itself).
    let owner = claim.take();
    match outcome {
        Ok(reply) => {
            if let Some(owner) = owner
                && reply.status.is_success()
            {
                owner.complete(reply.clone()).wait().await;
            }
            reply.into_response()
        }
        // Dropping the owner releases the key: the client may retry a failure.
        Err(error) => error.into_response(),
    }
}

/// Runs `send` (which settles its record claims itself) as a task holding the request's
/// claim, and waits for it within the gateway's send timeout. The task, not the request,
/// settles the claim: a success is stored for replay, a failure releases the key, whenever
/// the outcome is known. So neither this timeout nor the outer request timeout (which drops
/// the handler) can release a key while its records may still be delivered.
pub(super) async fn bounded(
    state: &AppState,
    request: RequestClaim,
    send: impl Future<Output = Result<Reply, ApiError>> + Send + 'static,
) -> Result<Reply, ApiError> {
    let owner = request.take();
    let mut task = tokio::spawn(async move {
        let outcome = send.await;
        if let (Ok(reply), Some(owner)) = (&outcome, owner)
            && reply.status.is_success()
        {
            // Other replicas learn the answer before the client does.
            owner.complete(reply.clone()).wait().await;
        }
        outcome
    });
    match tokio::time::timeout(state.timeouts().broker_timeout, &mut task).await {
        Ok(joined) => joined.map_err(|error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                error.to_string(),
            )
        })?,
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker_timeout",
            format!(
                "the broker did not acknowledge within {} ms; the record may still be \
                 delivered, retry with an idempotency key to avoid duplicates",
                state.timeouts().broker_timeout.as_millis()
            ),
        )),
    }
}

/// What claiming a record's idempotency key decided.
pub(super) enum Claimed {
    /// The key was answered before, for this very record: it landed here.
    Replay(SendResult),
    /// Produce the record, then settle the claim with its delivery.
    Produce(RecordClaim),
}

/// A record handed to the producer, with its key's claim when it has a key.
pub(super) struct RecordClaim {
    topic: String,
    fingerprint: u64,
    owner: Option<Owner<RecordReply>>,
}

impl RecordClaim {
    /// Where the record landed, stored for replay under its key. A claim dropped without a
    /// delivery releases the key.
    pub(super) fn settle(self, delivery: Delivery) -> SendResult {
        let result = SendResult {
            topic: self.topic,
            partition: delivery.partition,
            offset: delivery.offset,
        };
        if let Some(owner) = self.owner {
            // Written to the shared log in the background.
            let _ = owner.complete(RecordReply {
                fingerprint: self.fingerprint,
                result: result.clone(),
            });
        }
        result
    }
}

impl OutboundMessage {
    /// Claims this record's key, waiting for an attempt in progress to finish (a single send).
    pub(super) async fn claim(
        &self,
        state: &AppState,
        caller: &Caller,
    ) -> Result<Claimed, ApiError> {
        let claim = match self.idempotency_key() {
            Some(key) => Some(state.record_replies().claim(caller.name(), &key).await),
            None => None,
        };
        self.claimed(claim)
    }

    /// Claims this record's key without waiting (a batch, where waiting on several keys could
    /// deadlock two requests): a key in progress is a 409.
    pub(super) async fn try_claim(
        &self,
        state: &AppState,
        caller: &Caller,
    ) -> Result<Claimed, ApiError> {
        let claim = match self.idempotency_key() {
            Some(key) => Some(state.record_replies().try_claim(caller.name(), &key).await),
            None => None,
        };
        self.claimed(claim)
    }

    /// What `claim` (`None` without a key) leaves to do: replay, produce, or refuse with 422
    /// (the key was used for a different record) or 409 (the key is in progress).
    fn claimed(&self, claim: Option<Claim<RecordReply>>) -> Result<Claimed, ApiError> {
        let owner = match claim {
            Some(Claim::Done(stored)) if stored.fingerprint != self.fingerprint() => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency_key_reused",
                    "this record's idempotency_key was used for a different record",
                ));
            }
            Some(Claim::Done(stored)) => return Ok(Claimed::Replay(stored.result)),
            Some(Claim::InProgress) => return Err(in_progress()),
            Some(Claim::Unavailable) => return Err(unsettled()),
            Some(Claim::Owner(owner)) => Some(owner),
            None => None,
        };
        Ok(Claimed::Produce(RecordClaim {
            topic: self.topic.clone(),
            // Only a key's claim stores it: a record without one is not serialized to be hashed.
            fingerprint: owner.as_ref().map_or(0, |_| self.fingerprint()),
            owner,
        }))
    }

    /// A stable hash of this record, stored with its key's answer.
    fn fingerprint(&self) -> u64 {
        fingerprint("record", self)
    }

    /// The cache key of this record's idempotency key within the caller's scope: per topic.
    fn idempotency_key(&self) -> Option<String> {
        self.idempotency_key
            .as_ref()
            .map(|key| format!("{}\n{key}", self.topic))
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

/// The replicas' shared log could not say in time whether another replica is producing for
/// the key: nothing is produced rather than risking a second copy.
fn unsettled() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "idempotency_unavailable",
        "the idempotency key could not be claimed across gateway replicas in time; nothing \
         was produced, retry shortly",
    )
    .retry_after(1)
}

fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_in_progress",
        "a request with this idempotency key is still running; retry shortly",
    )
}
