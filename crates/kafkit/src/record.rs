//! Records going out ([`Record`]) and messages coming in ([`Message`]).

use rdkafka::Message as _;
use rdkafka::message::BorrowedMessage;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, Decoder, Encoder, Json};
use crate::error::{Error, Result};

/// Copies `message`'s headers through librdkafka's C API, so that a key that is not UTF-8 is
/// copied lossily and reported (the second value) instead of panicking as rdkafka's
/// `BorrowedHeaders` does.
fn copy_headers(message: &BorrowedMessage<'_>) -> (Vec<(String, Vec<u8>)>, Option<String>) {
    use rdkafka::bindings as rdsys;
    use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;

    let mut headers = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is a live librdkafka message; librdkafka parses its headers on
    // first access and keeps them with the message, which outlives this function.
    let found = unsafe { rdsys::rd_kafka_message_headers(message.ptr(), &mut headers) };
    if found != RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return (Vec::new(), None);
    }
    // SAFETY: `headers` is the message's header list, valid while the message is.
    let count = unsafe { rdsys::rd_kafka_header_cnt(headers) };
    let mut copied = Vec::with_capacity(count);
    let mut unreadable = None;
    for index in 0..count {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
        // SAFETY: `index` is below the count; librdkafka points `name` at a NUL-terminated
        // string and `value` at `size` bytes (or null), both owned by the list.
        let got = unsafe {
            rdsys::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
        };
        if got != RD_KAFKA_RESP_ERR_NO_ERROR {
            break;
        }
        // SAFETY: as above.
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let key = match std::str::from_utf8(key) {
            Ok(key) => key.to_owned(),
            Err(_) => {
                let lossy = String::from_utf8_lossy(key).into_owned();
                unreadable.get_or_insert_with(|| {
                    format!("header key {lossy:?} (header {index}) is not UTF-8: {key:02x?}")
                });
                lossy
            }
        };
        let value = if value.is_null() {
            Vec::new()
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec()
        };
        copied.push((key, value));
    }
    (copied, unreadable)
}

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
    /// name up in librdkafka (and checking it is UTF-8) per record. A header key that is not
    /// UTF-8 is copied lossily (U+FFFD for what is not UTF-8).
    pub(crate) fn copied(message: &BorrowedMessage<'_>, topic: String) -> Self {
        Message::checked(message, topic).0
    }

    /// [`Message::copied`], and why the record cannot be handled as it is, if it cannot: a
    /// header key that is not UTF-8 (Go and C producers can send one; rdkafka's
    /// `BorrowedHeaders` panics on it), which the runtimes treat as an invalid record.
    pub(crate) fn checked(message: &BorrowedMessage<'_>, topic: String) -> (Self, Option<String>) {
        let (headers, unreadable) = copy_headers(message);
        let message = Message {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            headers,
            value: message.payload().map(<[u8]>::to_vec),
            attempt: 0,
        };
        (message, unreadable)
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
