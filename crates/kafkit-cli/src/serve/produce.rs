//! `POST /kafka/send` and `POST /kafka/send-batch` (seed 003), producing through the shared
//! producer: a batch is enqueued whole, then its acknowledgements are awaited together.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use kafkit::Record;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiJson};
use super::{AppState, MAX_BATCH_RECORDS};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/kafka/send", post(messages_send))
        .route("/kafka/send-batch", post(messages_send_batch))
}

/// How the `value` of a message becomes the record's payload.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Deserialize)]
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
}

/// Body of `/kafka/send-batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The records, any topics.
    pub messages: Vec<OutboundMessage>,
}

/// Where one record landed.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SendResult {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// One record's outcome in a batch: a delivery or an error.
#[derive(Debug, Serialize)]
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

/// A per-record error.
#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: String,
    /// Explanation.
    pub message: String,
}

/// Body answered by `/kafka/send-batch`.
#[derive(Debug, Serialize)]
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

impl OutboundMessage {
    /// The record this message asks for, or why it cannot be produced.
    fn into_record(self) -> Result<Record, ApiError> {
        kafkit::record::validate_topic(&self.topic)?;
        if let Some(partition) = self.partition
            && partition < 0
        {
            return Err(ApiError::bad_request(
                "invalid_partition",
                format!("partition must be >= 0, got {partition}"),
            ));
        }
        let mut record = Record::to(&self.topic);
        for (name, value) in self.headers {
            record = record.header(name, value);
        }
        record = match (self.encoding, self.value) {
            (_, serde_json::Value::Null) => record,
            (Encoding::Json, value) => record.json(&value)?,
            (Encoding::String, serde_json::Value::String(text)) => record.text(text),
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
        record.key = self.key.map(String::into_bytes);
        record.partition = self.partition;
        Ok(record)
    }
}

async fn messages_send(
    State(state): State<AppState>,
    ApiJson(message): ApiJson<OutboundMessage>,
) -> Result<Json<SendResult>, ApiError> {
    let topic = message.topic.clone();
    let record = message.into_record()?;
    let delivery = state.producer.send(record).await?;
    Ok(Json(SendResult {
        topic,
        partition: delivery.partition,
        offset: delivery.offset,
    }))
}

async fn messages_send_batch(
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<BatchRequest>,
) -> Result<(StatusCode, Json<BatchResponse>), ApiError> {
    if batch.messages.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "messages must not be empty",
        ));
    }
    if batch.messages.len() > MAX_BATCH_RECORDS {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "batch_too_large",
            message: format!(
                "{} messages in one batch, the limit is {MAX_BATCH_RECORDS}",
                batch.messages.len()
            ),
        });
    }
    // Invalid records are reported in place; the valid ones are produced together.
    let mut results: Vec<Option<BatchItem>> = Vec::with_capacity(batch.messages.len());
    let mut topics = Vec::new();
    let mut records = Vec::new();
    let mut positions = Vec::new();
    for (index, message) in batch.messages.into_iter().enumerate() {
        let topic = message.topic.clone();
        match message.into_record() {
            Ok(record) => {
                results.push(None);
                positions.push(index);
                topics.push(topic);
                records.push(record);
            }
            Err(error) => results.push(Some(failed(error))),
        }
    }
    let deliveries = state.producer.send_batch(records).await;
    let mut first_error_status = None;
    for ((index, topic), delivery) in positions.into_iter().zip(topics).zip(deliveries) {
        results[index] = Some(match delivery {
            Ok(d) => BatchItem::Ok(SendResult {
                topic,
                partition: d.partition,
                offset: d.offset,
            }),
            Err(error) => {
                let error = ApiError::from(error);
                first_error_status.get_or_insert(error.status);
                failed(error)
            }
        });
    }
    let results: Vec<BatchItem> = results.into_iter().map(|r| r.expect("filled")).collect();
    let failed_count = results
        .iter()
        .filter(|r| matches!(r, BatchItem::Failed { .. }))
        .count();
    let succeeded = results.len() - failed_count;
    let (status, label) = match (succeeded, failed_count) {
        (_, 0) => (StatusCode::OK, "ok"),
        (0, _) => (
            first_error_status.unwrap_or(StatusCode::BAD_REQUEST),
            "failed",
        ),
        _ => (StatusCode::MULTI_STATUS, "partial"),
    };
    Ok((
        status,
        Json(BatchResponse {
            status: label,
            succeeded,
            failed: failed_count,
            results,
        }),
    ))
}

fn failed(error: ApiError) -> BatchItem {
    BatchItem::Failed {
        error: ErrorDetail {
            code: error.code.to_owned(),
            message: error.message,
        },
    }
}
