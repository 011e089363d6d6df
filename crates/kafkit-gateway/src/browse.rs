//! Reading a slice of one partition for `GET /topics/{topic}/messages`: a group-less consumer
//! assigned to one partition at one offset, polled until it has `limit` records, reaches the
//! end of the partition, or runs out of time. Everything here blocks, so it runs on
//! `spawn_blocking`, and the consumer is created and dropped there too.

use std::time::{Duration, Instant};

use base64::Engine;
use kafkit::KafkaConfig;
use kafkit::rdkafka::consumer::{BaseConsumer, Consumer};
use kafkit::rdkafka::error::KafkaError;
use kafkit::rdkafka::message::{Headers, Message as _};
use kafkit::rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::produce::Encoding;

/// Group id the readers carry (never joined, never committed).
const BROWSE_GROUP: &str = "kafkit-browse";
/// Longest single poll, so the deadline is checked regularly.
const POLL_SLICE: Duration = Duration::from_millis(200);

/// One record as the read API shows it. Values come back in the encodings `/kafka/send`
/// accepts, so a record can be posted again as it was read.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct BrowsedMessage {
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
    /// Headers in order.
    pub headers: Vec<BrowsedHeader>,
    /// The value: embedded JSON when the payload parses as JSON, else text, else base64.
    pub value: serde_json::Value,
    /// How `value` is given: `json`, `string` or `base64`.
    pub encoding: Encoding,
}

/// One header.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct BrowsedHeader {
    /// Name.
    pub name: String,
    /// Value (text, or base64 when it is not UTF-8).
    pub value: String,
    /// `string` or `base64`.
    pub encoding: Encoding,
}

/// Reads up to `limit` records of `topic`/`partition` from `offset` (which must lie below
/// `high_watermark`), stopping at the high watermark or after `timeout`. Blocking.
pub fn read_partition(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
    high_watermark: i64,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<BrowsedMessage>, ApiError> {
    let failed = |operation: &str, source: KafkaError| {
        ApiError::from(kafkit::Error::Consume {
            operation: format!("{operation} {topic}/{partition}"),
            source,
        })
    };
    // librdkafka wants a group id even for assign(), but with assign() and no commits the
    // group is never joined nor written: browsing leaves no trace on the cluster.
    let consumer: BaseConsumer = config
        .to_admin_config()
        .set("group.id", BROWSE_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .map_err(|e| failed("creating a reader for", e))?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|e| failed("assigning", e))?;
    consumer
        .assign(&assignment)
        .map_err(|e| failed("assigning", e))?;
    let deadline = Instant::now() + timeout;
    let mut messages = Vec::with_capacity(limit.min(64));
    let mut next = offset;
    while messages.len() < limit && next < high_watermark {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left.min(POLL_SLICE)) {
            None => {}
            Some(Ok(message)) => {
                next = message.offset() + 1;
                messages.push(view(&message));
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(error)) => return Err(failed("reading", error)),
        }
    }
    drop(consumer);
    Ok(messages)
}

fn view(message: &kafkit::rdkafka::message::BorrowedMessage<'_>) -> BrowsedMessage {
    let (key, key_encoding) = match message.key() {
        None => (None, None),
        Some(bytes) => {
            let (text, encoding) = text_or_base64(bytes);
            (Some(text), Some(encoding))
        }
    };
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    let (value, encoding) = text_or_base64(h.value.unwrap_or_default());
                    BrowsedHeader {
                        name: h.key.to_owned(),
                        value,
                        encoding,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let (value, encoding) = decode_value(message.payload());
    BrowsedMessage {
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        key,
        key_encoding,
        headers,
        value,
        encoding,
    }
}

/// A payload as JSON when it parses, else as text, else as base64; a tombstone is `null`.
pub fn decode_value(payload: Option<&[u8]>) -> (serde_json::Value, Encoding) {
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

fn text_or_base64(bytes: &[u8]) -> (String, Encoding) {
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
    fn values_decode_as_json_then_text_then_base64() {
        assert_eq!(
            decode_value(Some(br#"{"id":1}"#)),
            (serde_json::json!({"id": 1}), Encoding::Json)
        );
        assert_eq!(
            decode_value(Some(b"hello")),
            (serde_json::json!("hello"), Encoding::String)
        );
        assert_eq!(
            decode_value(Some(&[0, 159, 146, 150])),
            (serde_json::json!("AJ+Slg=="), Encoding::Base64)
        );
        assert_eq!(
            decode_value(None),
            (serde_json::Value::Null, Encoding::Json)
        );
    }
}
