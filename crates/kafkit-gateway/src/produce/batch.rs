//! How `/kafka/send-batch` is assembled: the records that can go are enqueued together, the
//! others (invalid, replayed, key in progress) are answered in place, and the answer keeps
//! request order, with a status saying whether all, some or none were stored.

use axum::http::StatusCode;
use kafkit::Delivery;

use super::super::auth::Caller;
use super::super::error::ApiError;
use super::super::{AppState, MAX_BATCH_RECORDS};
use super::body::{BatchItem, BatchRequest, BatchResponse, SendResult};
use super::replay::{Claimed, RecordClaim, Reply, RequestClaim, bounded};

/// One record's outcome, before it becomes a [`BatchItem`]: the error keeps its status, so an
/// all-failed batch answers the first one's.
type Outcome = Result<SendResult, ApiError>;

/// A batch record handed to the producer: its place in the answer, and its key's claim.
struct Pending {
    index: usize,
    claim: RecordClaim,
}

/// Produces `batch` for `caller`, its keys claimed by `request`.
pub(super) async fn send_batch(
    state: &AppState,
    caller: &Caller,
    batch: &BatchRequest,
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
    // Invalid records, replays and keys in progress are answered in place (`Some`); the rest
    // are produced together.
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(batch.messages.len());
    let mut pending = Vec::new();
    let mut records = Vec::new();
    for (index, message) in batch.messages.iter().enumerate() {
        let claimed = match message.checked_record(state).await {
            Ok(record) => message
                .try_claim(state, caller)
                .map(|claimed| (record, claimed)),
            Err(error) => Err(error),
        };
        outcomes.push(match claimed {
            Ok((record, Claimed::Produce(claim))) => {
                pending.push(Pending { index, claim });
                records.push(record);
                None
            }
            Ok((_, Claimed::Replay(result))) => Some(Ok(result)),
            Err(error) => Some(Err(error)),
        });
    }
    let fingerprint = request.fingerprint;
    let producer = state.producer.clone();
    bounded(state, request, async move {
        let deliveries = producer.send_batch(records).await;
        Ok(batch_reply(outcomes, pending, deliveries, fingerprint))
    })
    .await
}

/// The answer to a batch once its deliveries are known; completes the record-level claims of
/// the records stored.
fn batch_reply(
    mut outcomes: Vec<Option<Outcome>>,
    pending: Vec<Pending>,
    deliveries: Vec<kafkit::Result<Delivery>>,
    fingerprint: u64,
) -> Reply {
    for (pending, delivery) in pending.into_iter().zip(deliveries) {
        outcomes[pending.index] = Some(match delivery {
            Ok(delivery) => Ok(pending.claim.settle(delivery)),
            Err(error) => Err(ApiError::from(error)),
        });
    }
    let mut results = Vec::with_capacity(outcomes.len());
    let mut failed = 0;
    let mut first_error_status = None;
    for outcome in outcomes {
        results.push(match outcome.expect("filled") {
            Ok(result) => BatchItem::Ok(result),
            Err(error) => {
                failed += 1;
                first_error_status.get_or_insert(error.status);
                BatchItem::Failed {
                    error: error.into(),
                }
            }
        });
    }
    let succeeded = results.len() - failed;
    let (status, label) = match (succeeded, failed) {
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
        failed,
        results,
    };
    Reply::new(fingerprint, status, &body)
}
