//! The JSON bodies of the produce API, requests and answers, with the schemas the OpenAPI
//! document shows for them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::super::error::ErrorDetail;

/// How the `value` of a message becomes the record's payload (the same encodings the read
/// API answers with).
pub use kafkit::view::Encoding;

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
    /// Present when no record was stored: the first failure's code, as every error answer
    /// carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}
