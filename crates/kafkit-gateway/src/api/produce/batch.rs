//! How `/kafka/send-batch` is assembled: the records that can go are enqueued together, the
//! others (invalid, replayed, key in progress) are answered in place, and the answer keeps
//! request order, with a status saying whether all, some or none were stored. When none was,
//! the answer is an error (the first failure's status, and a top-level `error` as every error
//! answer has) that still lists each record's failure; records refused for a full producer
//! queue add `Retry-After`.

use axum::http::StatusCode;
use kafkit::Record;
use kafkit::record::Delivery;

use super::answers::{Claimed, RecordClaim, Reply, RequestClaim, bounded};
use super::body::{BatchItem, BatchRequest, BatchResponse, OutboundMessage, SendResult};
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorDetail};
use crate::{AppState, MAX_BATCH_RECORDS};

/// One record's outcome, before it becomes a [`BatchItem`]: the error keeps its status, so an
/// all-failed batch answers the first one's.
type Outcome = Result<SendResult, ApiError>;

/// A batch record handed to the producer: its place in the answer, and its key's claim.
struct Pending {
    index: usize,
    claim: RecordClaim,
}

/// 403 unless `caller` may write every topic of `batch`. Authorization is all or nothing: a
/// batch is one request from one caller.
pub(super) fn authorize(caller: &Caller, batch: &BatchRequest) -> Result<(), ApiError> {
    batch
        .messages
        .iter()
        .try_for_each(|message| caller.require_write(&message.topic))
}

/// Produces `batch` for `caller` (authorized already), its keys claimed by `request`.
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
    // Invalid records, replays and keys in progress are answered in place (`Some`); the rest
    // are produced together.
    let mut checked = Vec::with_capacity(batch.messages.len());
    for message in &batch.messages {
        checked.push(message.checked_record(state).await);
    }
    let claimed = claim_all(state, caller, &batch.messages, checked).await;
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(batch.messages.len());
    let mut pending = Vec::new();
    let mut records = Vec::new();
    for (index, claimed) in claimed.into_iter().enumerate() {
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
    if batch.transactional {
        return send_transaction(state, outcomes, pending, records, request).await;
    }
    let fingerprint = request.fingerprint;
    let producer = state.producer().clone();
    bounded(state, request, async move {
        let deliveries = producer.send_batch(records).await;
        Ok(batch_reply(outcomes, pending, deliveries, fingerprint))
    })
    .await
}

/// Claims the idempotency key of each record of `messages` that passed its checks (`checked`,
/// in the same order): what to do with each.
async fn claim_all(
    state: &AppState,
    caller: &Caller,
    messages: &[OutboundMessage],
    checked: Vec<Result<Record, ApiError>>,
) -> Vec<Result<(Record, Claimed), ApiError>> {
    let claim = async |(record, message): (Result<Record, ApiError>, &OutboundMessage)| {
        let record = record?;
        let claimed = message.try_claim(state, caller).await?;
        Ok((record, claimed))
    };
    let records = checked.into_iter().zip(messages);
    if !messages.iter().any(|m| m.idempotency_key.is_some()) {
        // Nothing to wait for: claiming is a check per record.
        let mut claimed = Vec::with_capacity(messages.len());
        for record in records {
            claimed.push(claim(record).await);
        }
        return claimed;
    }
    // Claimed together, each key taken here in the batch's order (a key twice in one batch is
    // in progress the second time): with replicas sharing claims, each claim is a write and a
    // read-back of the answer log, which one after another would cost a batch of keyed
    // records a round trip each.
    futures::future::join_all(records.map(claim)).await
}

/// A transactional batch: the records to produce go in one transaction, committed whole or
/// not at all. A record refused before the send (invalid, its key in progress) refuses them
/// all, and so does a failed transaction: the answer is then one error status for the batch,
/// every record not stored. Records answered from their idempotency key were stored by an
/// earlier request and are answered as such.
async fn send_transaction(
    state: &AppState,
    outcomes: Vec<Option<Outcome>>,
    pending: Vec<Pending>,
    records: Vec<kafkit::Record>,
    request: RequestClaim,
) -> Result<Reply, ApiError> {
    let fingerprint = request.fingerprint;
    let refused = outcomes
        .iter()
        .flatten()
        .find_map(|outcome| outcome.as_ref().err())
        .cloned();
    if let Some(cause) = refused {
        let not_sent = ApiError::new(
            cause.status,
            "transaction_not_sent",
            format!(
                "not sent: another record of this transactional batch was refused ({})",
                cause.code
            ),
        );
        return Ok(nothing_stored(
            outcomes,
            pending,
            &cause,
            not_sent,
            fingerprint,
        ));
    }
    if records.is_empty() {
        // Every record was a replay.
        return Ok(batch_reply(outcomes, pending, Vec::new(), fingerprint));
    }
    let transactions = state.transactions().clone();
    bounded(state, request, async move {
        let sent = match transactions.producer().await {
            Ok(producer) => {
                producer
                    .transaction(async |tx| tx.send_batch(records).await)
                    .await
            }
            Err(error) => Err(error),
        };
        Ok(match sent {
            Ok(deliveries) => batch_reply(
                outcomes,
                pending,
                deliveries.into_iter().map(Ok).collect(),
                fingerprint,
            ),
            Err(error) => {
                let cause = ApiError::from(error);
                nothing_stored(outcomes, pending, &cause, cause.clone(), fingerprint)
            }
        })
    })
    .await
}

/// The answer to a transactional batch of which nothing was stored: `cause`'s status, the
/// records that were to be sent failed with `not_sent` (their key claims released), the
/// others with their own errors (or their replayed results).
fn nothing_stored(
    mut outcomes: Vec<Option<Outcome>>,
    pending: Vec<Pending>,
    cause: &ApiError,
    not_sent: ApiError,
    fingerprint: u64,
) -> Reply {
    for pending in pending {
        // Dropping the claim releases the record's key: the client may retry.
        outcomes[pending.index] = Some(Err(not_sent.clone()));
    }
    let mut results = Vec::with_capacity(outcomes.len());
    let mut failed = 0;
    for outcome in outcomes {
        results.push(match outcome.expect("filled") {
            Ok(result) => BatchItem::Ok(result),
            Err(error) => {
                failed += 1;
                BatchItem::Failed {
                    error: error.into(),
                }
            }
        });
    }
    let body = BatchResponse {
        status: "failed",
        succeeded: results.len() - failed,
        failed,
        results,
        error: Some(ErrorDetail {
            code: cause.code.to_owned(),
            message: format!(
                "transactional batch: none of its records was stored; {}",
                cause.message
            ),
        }),
    };
    Reply::new(fingerprint, cause.status, &body)
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
    let mut first_error = None;
    let mut queue_full = false;
    for outcome in outcomes {
        results.push(match outcome.expect("filled") {
            Ok(result) => BatchItem::Ok(result),
            Err(error) => {
                failed += 1;
                queue_full |= error.status == StatusCode::TOO_MANY_REQUESTS;
                first_error.get_or_insert_with(|| error.clone());
                BatchItem::Failed {
                    error: error.into(),
                }
            }
        });
    }
    let succeeded = results.len() - failed;
    let (status, label, error) = match (succeeded, first_error) {
        (_, None) => (StatusCode::OK, "ok", None),
        // Nothing stored: the answer is an error, with the first failure's status and code,
        // and the per-record results still tell which record failed how.
        (0, Some(first)) => (
            first.status,
            "failed",
            Some(ErrorDetail {
                code: first.code.to_owned(),
                message: format!(
                    "none of the {failed} records was stored; the first failed with: {}",
                    first.message
                ),
            }),
        ),
        (_, Some(_)) => (StatusCode::MULTI_STATUS, "partial", None),
    };
    let body = BatchResponse {
        status: label,
        succeeded,
        failed,
        results,
        error,
    };
    let reply = Reply::new(fingerprint, status, &body);
    // Records refused for a full queue may be sent again shortly: say when.
    if queue_full {
        reply.with_retry_after()
    } else {
        reply
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;
    use serde_json::json;

    use crate::router;
    use crate::testing::{call, config, post, records_in, state, state_with};

    #[tokio::test]
    async fn a_batch_where_every_record_fails_has_results_and_an_error() {
        let app = router(state());
        let answer = call(
            &app,
            post(
                "/kafka/send-batch",
                &json!({"messages": [{"topic": "a b"}, {"topic": "c d"}]}),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
        // Per-record results, as in any batch answer...
        assert_eq!(answer.body["status"], "failed");
        assert_eq!(answer.body["succeeded"], 0);
        assert_eq!(answer.body["failed"], 2);
        assert_eq!(answer.body["results"][0]["error"]["code"], "invalid_record");
        assert_eq!(answer.body["results"][1]["error"]["code"], "invalid_record");
        // ...and the top-level error every failed answer carries, naming the first failure.
        assert_eq!(answer.body["error"]["code"], "invalid_record");
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("none of the 2 records was stored"),
            "{message}"
        );
        // A batch with a success has no top-level error.
        let topic = testkit::topic("rt-batch-err", 1).await;
        let answer = call(
            &app,
            post(
                "/kafka/send-batch",
                &json!({"messages": [{"topic": topic, "value": 1}, {"topic": "c d"}]}),
            ),
        )
        .await;
        assert_eq!(answer.status, StatusCode::MULTI_STATUS, "{}", answer.text);
        assert!(answer.body.get("error").is_none(), "{}", answer.text);
        assert_eq!(records_in(&topic).await, 1);
    }

    #[tokio::test]
    async fn a_batch_refused_for_a_full_queue_says_when_to_retry() {
        // A producer queue of one record, which lingers a second before it is sent.
        let topic = testkit::topic("rt-queue-full", 1).await;
        let mut config = config();
        config.linger = Duration::from_secs(1);
        config
            .librdkafka
            .insert("queue.buffering.max.messages".to_owned(), "1".to_owned());
        let app = router(state_with(&config));
        let batch = |values: &[i32]| {
            json!({"messages": values.iter().map(|n| json!({"topic": topic, "value": n}))
                .collect::<Vec<_>>()})
        };
        // A batch of three: the first record fills the queue, the other two find it full.
        let partial = call(&app, post("/kafka/send-batch", &batch(&[1, 2, 3]))).await;
        assert_eq!(partial.status, StatusCode::MULTI_STATUS, "{}", partial.text);
        assert_eq!(partial.body["results"][1]["error"]["code"], "queue_full");
        assert_eq!(partial.body["results"][2]["error"]["code"], "queue_full");
        assert_eq!(partial.headers["retry-after"], "1");
        // A batch sent while another request's record holds the queue: every record fails,
        // the answer is a 429 with per-record results, an error and Retry-After.
        let (first, refused) =
            tokio::join!(call(&app, post("/kafka/send-batch", &batch(&[4]))), async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                call(&app, post("/kafka/send-batch", &batch(&[5, 6]))).await
            });
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert_eq!(
            refused.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            refused.text
        );
        assert_eq!(refused.headers["retry-after"], "1");
        assert_eq!(refused.body["error"]["code"], "queue_full");
        assert_eq!(refused.body["results"][0]["error"]["code"], "queue_full");
        assert_eq!(refused.body["results"][1]["error"]["code"], "queue_full");
        // Only the records that found room were stored.
        assert_eq!(records_in(&topic).await, 2);
    }
}
