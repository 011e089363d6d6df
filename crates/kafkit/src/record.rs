//! Records going out ([`Record`]) and messages coming in ([`Message`]).

use rdkafka::Message as _;
use rdkafka::message::{BorrowedMessage, Headers};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, Decoder, Encoder, Json};
use crate::error::{Error, Result};

/// An outbound record: built with [`Record::to`], sent by [`crate::Producer`].
///
/// ```
/// # fn main() -> kafkit::Result<()> {
/// let record = kafkit::Record::to("orders")
///     .key("order-42")
///     .header("tenant-id", "acme")
///     .json(&serde_json::json!({"id": 42}))?;
/// assert_eq!(record.header_value("content-type"), Some(&b"application/json"[..]));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[must_use]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Optional key; records with the same key go to the same partition.
    pub key: Option<Vec<u8>>,
    /// Payload; `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
    /// Headers in order; names may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Explicit partition; otherwise the producer's partitioner picks one.
    pub partition: Option<i32>,
    /// Create time in milliseconds since the epoch; otherwise the time of sending.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record for `topic`, with nothing else set yet.
    pub fn to(topic: impl Into<String>) -> Self {
        Record {
            topic: topic.into(),
            ..Record::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Pins the record to a partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the create timestamp (milliseconds since the epoch).
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    /// Sets a JSON payload and `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self> {
        self.encode(&Json, value)
    }

    /// Sets the payload encoded by `codec` and the codec's `content-type` header.
    pub fn encode<T: ?Sized, C: Encoder<T>>(self, codec: &C, value: &T) -> Result<Self> {
        let payload = codec.encode(value)?;
        Ok(self.encoded(payload, codec.content_type()))
    }

    /// Sets a UTF-8 text payload and its `content-type`.
    pub fn text(self, value: impl Into<String>) -> Self {
        self.encoded(value.into().into_bytes(), codec::TEXT)
    }

    /// Sets a binary payload and `content-type: application/octet-stream`.
    pub fn bytes(self, value: impl Into<Vec<u8>>) -> Self {
        self.encoded(value.into(), codec::BYTES)
    }

    /// Sets the payload as is, without touching the headers.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// The first value of header `name`.
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        header_value(&self.headers, name)
    }

    fn encoded(mut self, payload: Vec<u8>, content_type: &str) -> Self {
        self.payload = Some(payload);
        self.headers
            .retain(|(name, _)| name != codec::CONTENT_TYPE_HEADER);
        self.headers
            .push((codec::CONTENT_TYPE_HEADER.to_owned(), content_type.into()));
        self
    }
}

/// Where a delivered record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// Partition the broker stored it in.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

/// The raw payload of an inbound record: bytes, or `None` for a tombstone.
pub type Payload = Option<Vec<u8>>;

/// An inbound record, owned and detached from the consumer that read it. `T` is the decoded
/// value; the raw form (`Message` alone) carries the payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<T = Payload> {
    /// Topic it was read from.
    pub topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Create or log-append time in milliseconds, when the broker gave one.
    pub timestamp: Option<i64>,
    /// Key, if any.
    pub key: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The value: raw bytes for `Message`, the decoded type for `Message<T>`.
    pub value: T,
    /// Which handler attempt this is, 1 for the first: set by the consumer runtime before each
    /// call (0 on records read outside it), so a handler can tell a retry (an HTTP endpoint
    /// gets it as a header in push delivery).
    pub attempt: u32,
}

impl Message {
    /// Copies a message borrowed from an rdkafka consumer.
    pub fn from_borrowed(message: &BorrowedMessage<'_>) -> Self {
        Message::copied(message, message.topic().to_owned())
    }

    /// Copies `message`, read from `topic`: a caller that knows the topic saves looking its
    /// name up in librdkafka (and checking it is UTF-8) per record.
    pub(crate) fn copied(message: &BorrowedMessage<'_>, topic: String) -> Self {
        let headers = message.headers().map_or_else(Vec::new, |headers| {
            let mut copied = Vec::with_capacity(headers.count());
            copied.extend(
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec())),
            );
            copied
        });
        Message {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            headers,
            value: message.payload().map(<[u8]>::to_vec),
            attempt: 0,
        }
    }

    /// The payload bytes (`None` for a tombstone).
    pub fn payload(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// Decodes the JSON payload; a tombstone decodes as JSON `null`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        Json.decode(self.payload())
    }

    /// This message with its payload decoded as JSON into `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<Message<T>> {
        self.decode_with(&Json)
    }

    /// This message with its payload decoded by `codec`.
    pub fn decode_with<T, C: Decoder<T>>(&self, codec: &C) -> Result<Message<T>> {
        let value = codec.decode(self.payload())?;
        Ok(self.with_value(value))
    }
}

impl<T> Message<T> {
    /// The first value of header `name`.
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        header_value(&self.headers, name)
    }

    /// The key as UTF-8 text, when it is some.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The same metadata with another value.
    pub fn with_value<U>(&self, value: U) -> Message<U> {
        Message {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.clone(),
            headers: self.headers.clone(),
            value,
            attempt: self.attempt,
        }
    }
}

/// The longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name against Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, and
/// neither `.` nor `..`.
pub fn validate_topic(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty".to_owned())
    } else if name.len() > MAX_TOPIC_NAME_LEN {
        Some(format!(
            "is {} characters long, the limit is {MAX_TOPIC_NAME_LEN}",
            name.len()
        ))
    } else if name == "." || name == ".." {
        Some("must not be \".\" or \"..\"".to_owned())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .map(|c| format!("contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"))
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidRecord(format!(
            "topic name {name:?} {reason}"
        ))),
    }
}

fn header_value<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        for good in ["orders", "orders.dlq", "orders_dlt", "a-b.c_D9"] {
            assert!(validate_topic(good).is_ok(), "{good}");
        }
        let long = "x".repeat(250);
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/no",
            "ümlaut",
            long.as_str(),
        ] {
            let err = validate_topic(bad).unwrap_err();
            assert_eq!(err.code(), crate::error::ErrorCode::InvalidRecord, "{bad}");
        }
    }

    #[test]
    fn builder_sets_every_field_and_one_content_type() {
        let record = Record::to("t")
            .key("k")
            .header("a", "1")
            .partition(2)
            .timestamp(1_700_000_000_000)
            .text("hello")
            .bytes(vec![0u8, 1]);
        assert_eq!(record.topic, "t");
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.partition, Some(2));
        assert_eq!(record.timestamp, Some(1_700_000_000_000));
        assert_eq!(record.payload.as_deref(), Some(&[0u8, 1][..]));
        let content_types: Vec<_> = record
            .headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .collect();
        assert_eq!(content_types.len(), 1);
        assert_eq!(
            record.header_value("content-type"),
            Some(codec::BYTES.as_bytes())
        );
        assert_eq!(record.header_value("a"), Some(&b"1"[..]));
    }
}
