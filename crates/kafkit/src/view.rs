//! How a record is shown to people and HTTP clients: one rendering for `kafkit consume`, the
//! gateway's message browser and dead-letter listings. Values come back in the encodings the
//! gateway's send API accepts, so a record can be posted again as it was read.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::dead_letter;
use crate::record::Message;

/// Spring Kafka's original-partition header (`KafkaHeaders.DLT_ORIGINAL_PARTITION`).
const SPRING_ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
/// Spring Kafka's original-offset header (`KafkaHeaders.DLT_ORIGINAL_OFFSET`).
const SPRING_ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";

/// How a value (or key, or header) is given as JSON.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// One record as shown.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageView {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Create or log-append time, milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// Key (text, or base64 when it is not UTF-8, see `key_encoding`).
    pub key: Option<String>,
    /// `string` or `base64`; absent without a key.
    pub key_encoding: Option<Encoding>,
    /// Headers in order (a name may repeat).
    pub headers: Vec<HeaderView>,
    /// The value: embedded JSON when the payload parses as JSON, else text, else base64;
    /// `null` for a tombstone.
    pub value: serde_json::Value,
    /// How `value` is given: `json`, `string` or `base64`.
    pub encoding: Encoding,
}

/// One header.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeaderView {
    /// Name.
    pub name: String,
    /// Value (text, or base64 when it is not UTF-8).
    pub value: String,
    /// `string` or `base64`.
    pub encoding: Encoding,
}

/// Why a record was dead-lettered, read from its headers (kafkit's; Spring's original topic,
/// partition and offset; Karafka's original topic).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailureView {
    /// The topic the record failed on.
    pub original_topic: Option<String>,
    /// Its partition there.
    pub original_partition: Option<String>,
    /// Its offset there.
    pub original_offset: Option<String>,
    /// The consumer group that failed it.
    pub consumer_group: Option<String>,
    /// `transient`, `permanent`, `invalid` or `panic`.
    pub error_kind: Option<String>,
    /// The handler's message.
    pub error_message: Option<String>,
    /// Attempts made.
    pub attempts: Option<String>,
    /// When it was dead-lettered (RFC 3339).
    pub failed_at: Option<String>,
}

/// A dead-lettered record with its failure.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetterView {
    /// The record as stored in the dead-letter topic.
    #[serde(flatten)]
    pub message: MessageView,
    /// Why it failed.
    pub failure: FailureView,
}

impl MessageView {
    /// Shows `message`.
    pub fn of(message: &Message) -> Self {
        let (key, key_encoding) = match message.key.as_deref() {
            None => (None, None),
            Some(bytes) => {
                let (text, encoding) = text_or_base64(bytes);
                (Some(text), Some(encoding))
            }
        };
        let headers = message
            .headers
            .iter()
            .map(|(name, value)| {
                let (value, encoding) = text_or_base64(value);
                HeaderView {
                    name: name.clone(),
                    value,
                    encoding,
                }
            })
            .collect();
        let (value, encoding) = value_view(message.payload());
        MessageView {
            topic: message.topic.clone(),
            partition: message.partition,
            offset: message.offset,
            timestamp: message.timestamp,
            key,
            key_encoding,
            headers,
            value,
            encoding,
        }
    }
}

impl FailureView {
    /// The failure headers of `message`.
    pub fn of(message: &Message) -> Self {
        let header = |name: &str| {
            message
                .header_value(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        // Spring writes them as big-endian integers, the first for the record's first topic
        // when it took retry topics.
        let spring = |name: &str| {
            message
                .header_value(name)
                .filter(|v| v.len() == 4 || v.len() == 8)
                .map(|v| {
                    if v.len() == 4 {
                        i32::from_be_bytes(v.try_into().expect("4 bytes")).to_string()
                    } else {
                        i64::from_be_bytes(v.try_into().expect("8 bytes")).to_string()
                    }
                })
        };
        FailureView {
            original_topic: dead_letter::original_topic(message),
            original_partition: header(dead_letter::ORIGINAL_PARTITION)
                .or_else(|| spring(SPRING_ORIGINAL_PARTITION)),
            original_offset: header(dead_letter::ORIGINAL_OFFSET)
                .or_else(|| spring(SPRING_ORIGINAL_OFFSET)),
            consumer_group: header(dead_letter::CONSUMER_GROUP),
            error_kind: header(dead_letter::ERROR_KIND),
            error_message: header(dead_letter::ERROR_MESSAGE),
            attempts: header(dead_letter::ATTEMPTS),
            failed_at: header(dead_letter::FAILED_AT),
        }
    }
}

impl DeadLetterView {
    /// Shows a dead-lettered `message`.
    pub fn of(message: &Message) -> Self {
        DeadLetterView {
            message: MessageView::of(message),
            failure: FailureView::of(message),
        }
    }
}

/// A payload as JSON when it parses, else as text, else as base64; a tombstone is `null`.
pub fn value_view(payload: Option<&[u8]>) -> (serde_json::Value, Encoding) {
    match payload {
        None => (serde_json::Value::Null, Encoding::Json),
        Some(bytes) => match serde_json::from_slice(bytes) {
            Ok(value) => (value, Encoding::Json),
            Err(_) => {
                let (text, encoding) = text_or_base64(bytes);
                (serde_json::Value::String(text), encoding)
            }
        },
    }
}

/// Bytes as text when they are UTF-8, else as base64.
pub fn text_or_base64(bytes: &[u8]) -> (String, Encoding) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), Encoding::String),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Encoding::Base64,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_show_as_json_then_text_then_base64() {
        assert_eq!(
            value_view(Some(br#"{"id":1}"#)),
            (serde_json::json!({"id": 1}), Encoding::Json)
        );
        assert_eq!(
            value_view(Some(b"hello")),
            (serde_json::json!("hello"), Encoding::String)
        );
        assert_eq!(
            value_view(Some(&[0, 159, 146, 150])),
            (serde_json::json!("AJ+Slg=="), Encoding::Base64)
        );
        assert_eq!(value_view(None), (serde_json::Value::Null, Encoding::Json));
    }

    #[test]
    fn a_dead_letter_shows_its_record_and_failure_flat() {
        let message = Message {
            topic: "orders.dlq".into(),
            partition: 0,
            offset: 4,
            timestamp: Some(1),
            key: Some(vec![0xff]),
            headers: vec![
                (dead_letter::ORIGINAL_TOPIC.into(), b"orders".to_vec()),
                (dead_letter::ERROR_KIND.into(), b"permanent".to_vec()),
                ("trace".into(), b"a".to_vec()),
                ("trace".into(), b"b".to_vec()),
            ],
            value: Some(b"not json".to_vec()),
            attempt: 0,
        };
        let shown = serde_json::to_value(DeadLetterView::of(&message)).unwrap();
        assert_eq!(shown["key"], "/w==");
        assert_eq!(shown["key_encoding"], "base64");
        assert_eq!(shown["value"], "not json");
        assert_eq!(shown["encoding"], "string");
        assert_eq!(
            shown["headers"][3]["value"], "b",
            "repeated headers are kept"
        );
        assert_eq!(shown["failure"]["original_topic"], "orders");
        assert_eq!(shown["failure"]["error_kind"], "permanent");
        assert_eq!(shown["failure"]["attempts"], serde_json::Value::Null);
    }

    #[test]
    fn a_spring_dead_letter_shows_the_coordinates_of_its_first_topic() {
        let message = Message {
            topic: "orders-dlt".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: None,
            headers: vec![
                ("kafka_dlt-original-topic".into(), b"orders".to_vec()),
                (
                    SPRING_ORIGINAL_PARTITION.into(),
                    3i32.to_be_bytes().to_vec(),
                ),
                (SPRING_ORIGINAL_OFFSET.into(), 42i64.to_be_bytes().to_vec()),
                (
                    "kafka_dlt-original-topic".into(),
                    b"orders-retry-0".to_vec(),
                ),
                (
                    SPRING_ORIGINAL_PARTITION.into(),
                    0i32.to_be_bytes().to_vec(),
                ),
                (SPRING_ORIGINAL_OFFSET.into(), 7i64.to_be_bytes().to_vec()),
            ],
            value: None,
            attempt: 0,
        };
        let failure = FailureView::of(&message);
        assert_eq!(failure.original_topic.as_deref(), Some("orders"));
        assert_eq!(failure.original_partition.as_deref(), Some("3"));
        assert_eq!(failure.original_offset.as_deref(), Some("42"));
    }
}
