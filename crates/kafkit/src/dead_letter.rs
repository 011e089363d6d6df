//! [`DeadLetter`]: where failed records go and what they carry.
//!
//! A dead-letter record keeps the original key, value and headers, and adds the failure
//! headers below. The source offset is stored only once the broker acknowledged the copy
//! (publish-then-commit), so a crash in between re-delivers rather than loses.

use std::time::SystemTime;

use crate::handler::ErrorKind;
use crate::record::{Message, Record};

/// Topic the record was read from.
pub const ORIGINAL_TOPIC: &str = "original-topic";
/// Partition the record was read from.
pub const ORIGINAL_PARTITION: &str = "original-partition";
/// Offset of the record in that partition.
pub const ORIGINAL_OFFSET: &str = "original-offset";
/// Timestamp of the original record (milliseconds).
pub const ORIGINAL_TIMESTAMP: &str = "original-timestamp";
/// Consumer group that gave up on it.
pub const CONSUMER_GROUP: &str = "consumer-group";
/// `transient` (retries exhausted), `permanent` or `invalid`.
pub const ERROR_KIND: &str = "error-kind";
/// The handler's error message.
pub const ERROR_MESSAGE: &str = "error-message";
/// Handler attempts made.
pub const ATTEMPTS: &str = "attempts";
/// When it was dead-lettered (RFC 3339, UTC).
pub const FAILED_AT: &str = "failed-at";
/// Set when the copy could not be stored with its value (larger than the dead-letter topic
/// takes even with the error text bounded): the value's size in bytes. The value itself stays
/// in the source topic at the offset the copy names, while its retention keeps it.
pub const VALUE_OMITTED: &str = "value-omitted";
/// Bytes of the handler's error message a copy carries at most (UTF-8, cut at a character
/// boundary and ended with `…`): an error that echoes a large payload must not make the copy
/// too large to store.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;
/// Bytes a dead-letter topic created by kafkit takes beyond its source's `max.message.bytes`:
/// room for the failure headers with the error text bounded.
const COPY_HEADROOM_BYTES: u64 = 64 * 1024;
/// Spring Kafka's original-topic header, understood by redrive.
pub const SPRING_ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
/// Karafka's original-topic header, understood by redrive.
pub const KARAFKA_ORIGINAL_TOPIC: &str = "source_topic";

/// Every header kafkit adds to a dead-letter record.
pub const FAILURE_HEADERS: [&str; 10] = [
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    CONSUMER_GROUP,
    ERROR_KIND,
    ERROR_MESSAGE,
    ATTEMPTS,
    FAILED_AT,
    VALUE_OMITTED,
];

/// Default dead-letter topic template.
pub const DEFAULT_TEMPLATE: &str = "{topic}.dlq";

/// The dead-letter policy of a topic: the naming template (`{topic}` is replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    template: String,
}

impl Default for DeadLetter {
    fn default() -> Self {
        DeadLetter::template(DEFAULT_TEMPLATE)
    }
}

/// Why a record is being dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kind of the last error.
    pub kind: ErrorKind,
    /// The last error's message.
    pub message: String,
    /// Handler attempts made.
    pub attempts: u32,
}

impl DeadLetter {
    /// Names dead-letter topics with `template`, e.g. `{topic}.dlq` or `{topic}_dlt`.
    pub fn template(template: impl Into<String>) -> Self {
        DeadLetter {
            template: template.into(),
        }
    }

    /// The dead-letter topic of `topic`.
    pub fn topic_for(&self, topic: &str) -> String {
        self.template.replace("{topic}", topic)
    }

    /// The dead-letter copy of `message`, read from its source topic.
    pub fn record(&self, message: &Message, group: &str, failure: &Failure) -> Record {
        self.record_from(message, &Origin::of(message), group, failure)
    }

    /// The dead-letter copy of `message`, which came first from `origin` (itself, or the
    /// record a retry topic's copy stands for): it goes to the dead-letter topic of
    /// `origin`'s topic and names `origin` in its headers.
    pub(crate) fn record_from(
        &self,
        message: &Message,
        origin: &Origin,
        group: &str,
        failure: &Failure,
    ) -> Record {
        let mut record = failure_copy(
            self.topic_for(&origin.topic),
            message,
            origin,
            group,
            failure,
        );
        record
            .headers
            .retain(|(name, _)| !crate::retry_topic::headers::is_retry_header(name));
        record
    }
}

/// Where a record was first consumed: the coordinates a dead-letter or retry copy names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp (milliseconds), when the record had one.
    pub timestamp: Option<i64>,
}

impl Origin {
    /// The message's own coordinates.
    pub fn of(message: &Message) -> Self {
        Origin {
            topic: message.topic.clone(),
            partition: message.partition,
            offset: message.offset,
            timestamp: message.timestamp,
        }
    }

    /// The coordinates a copy on a retry topic carries in its failure headers; each one its
    /// headers lack is the message's own.
    pub fn of_retry_copy(message: &Message) -> Self {
        let own = Origin::of(message);
        let text = |name| {
            message
                .header_value(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|v| !v.is_empty())
        };
        Origin {
            topic: original_topic(message).unwrap_or(own.topic),
            partition: text(ORIGINAL_PARTITION)
                .and_then(|v| v.parse().ok())
                .unwrap_or(own.partition),
            offset: text(ORIGINAL_OFFSET)
                .and_then(|v| v.parse().ok())
                .unwrap_or(own.offset),
            timestamp: text(ORIGINAL_TIMESTAMP)
                .and_then(|v| v.parse().ok())
                .or(own.timestamp),
        }
    }
}

/// A copy of `message` for `topic` with the failure headers: its key, value and own headers
/// (minus stale failure headers of an earlier round trip), then where it came from and why it
/// failed. Dead-letter and retry copies are both this.
pub(crate) fn failure_copy(
    topic: String,
    message: &Message,
    origin: &Origin,
    group: &str,
    failure: &Failure,
) -> Record {
    let mut record = clean_copy(topic, message, |_| false);
    let failed_at = time_rfc3339(SystemTime::now());
    let added = [
        (ORIGINAL_TOPIC, origin.topic.clone()),
        (ORIGINAL_PARTITION, origin.partition.to_string()),
        (ORIGINAL_OFFSET, origin.offset.to_string()),
        (
            ORIGINAL_TIMESTAMP,
            origin.timestamp.map(|t| t.to_string()).unwrap_or_default(),
        ),
        (CONSUMER_GROUP, group.to_owned()),
        (ERROR_KIND, failure.kind.as_str().to_owned()),
        (
            ERROR_MESSAGE,
            bounded(&failure.message, MAX_ERROR_MESSAGE_BYTES),
        ),
        (ATTEMPTS, failure.attempts.to_string()),
        (FAILED_AT, failed_at),
    ];
    for (name, value) in added {
        record.headers.push((name.to_owned(), value.into_bytes()));
    }
    record
}

/// `message`'s key, value and headers for `topic`, without the failure headers an earlier
/// failure added nor the headers `also_drop` names: what a new failure copy or a replay
/// starts from.
pub(crate) fn clean_copy(
    topic: String,
    message: &Message,
    also_drop: impl Fn(&str) -> bool,
) -> Record {
    let mut record = Record::to(topic);
    record.key = message.key.clone();
    record.payload = message.value.clone();
    record.headers = message
        .headers
        .iter()
        .filter(|(name, _)| !FAILURE_HEADERS.contains(&name.as_str()) && !also_drop(name))
        .cloned()
        .collect();
    record
}

/// `text` cut to at most `max` bytes at a character boundary, ended with `…` when cut.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The topic a dead-lettered record came from, as kafkit, Spring Kafka or Karafka recorded it.
pub fn original_topic(message: &Message) -> Option<String> {
    [
        ORIGINAL_TOPIC,
        SPRING_ORIGINAL_TOPIC,
        KARAFKA_ORIGINAL_TOPIC,
    ]
    .iter()
    .find_map(|name| message.header_value(name))
    .and_then(|v| std::str::from_utf8(v).ok())
    .filter(|t| !t.is_empty())
    .map(str::to_owned)
}

/// Formats a time as RFC 3339 in UTC with millisecond precision, e.g. `2026-11-26T14:10:38.123Z`.
fn time_rfc3339(time: SystemTime) -> String {
    const MILLIS_UTC: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from(time)
        .format(MILLIS_UTC)
        .expect("every field of the format is known")
}

/// Creates missing dead-letter topics, each with its source topic's partition count so the
/// original partitioning is kept; `pairs` are `(source, dead-letter topic)`. Only when the
/// configuration allows topic creation; a refusal is logged (auto-creation may still work).
pub(crate) async fn ensure_topics(
    config: &crate::config::KafkaConfig,
    embedded: Option<&std::sync::Arc<crate::cluster::EmbeddedBroker>>,
    pairs: &[(String, String)],
) -> crate::Result<()> {
    if pairs.is_empty() || !config.allow_auto_topic_creation {
        return Ok(());
    }
    let mut admin = crate::admin::Admin::new(config)?;
    if let Some(broker) = embedded {
        admin = admin.with_embedded(broker.clone());
    }
    let mut specs = Vec::new();
    for (source, dlt) in pairs {
        if let Ok(info) = admin.describe_topic(source).await {
            let mut spec = crate::admin::TopicSpec::new(dlt, info.partitions.len() as i32);
            // A record the source takes must fit in its copy: the broker's default limit
            // would refuse the copy of a large record on a topic whose limit was raised.
            let limit = admin.topic_configs(source).await.ok().and_then(|configs| {
                configs
                    .get("max.message.bytes")
                    .and_then(|v| v.parse::<u64>().ok())
            });
            if let Some(limit) = limit {
                spec = spec.config(
                    "max.message.bytes",
                    (limit + COPY_HEADROOM_BYTES).to_string(),
                );
            }
            specs.push(spec);
        }
    }
    if let Err(error) = admin.ensure_topics(&specs).await {
        tracing::warn!(%error, "could not create dead-letter topics; relying on auto-creation");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message() -> Message {
        Message {
            topic: "orders".into(),
            partition: 3,
            offset: 42,
            timestamp: Some(1_700_000_000_000),
            key: Some(b"order-1".to_vec()),
            headers: vec![
                ("tenant-id".into(), b"acme".to_vec()),
                (ERROR_MESSAGE.into(), b"stale".to_vec()),
            ],
            value: Some(b"{\"id\":1}".to_vec()),
            attempt: 0,
        }
    }

    #[test]
    fn error_text_is_bounded_at_a_character_boundary() {
        assert_eq!(bounded("short", 10), "short");
        let cut = bounded(&"é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
        assert_eq!(cut, "éééé…");
    }

    #[test]
    fn templates_name_the_topic() {
        assert_eq!(DeadLetter::default().topic_for("orders"), "orders.dlq");
        assert_eq!(
            DeadLetter::template("{topic}_dlt").topic_for("orders"),
            "orders_dlt"
        );
    }

    #[test]
    fn dead_letter_record_keeps_the_original_and_adds_failure_headers() {
        let failure = Failure {
            kind: ErrorKind::Transient,
            message: "db down".into(),
            attempts: 3,
        };
        let record = DeadLetter::default().record(&message(), "billing", &failure);
        assert_eq!(record.topic, "orders.dlq");
        assert_eq!(record.key.as_deref(), Some(&b"order-1"[..]));
        assert_eq!(record.payload.as_deref(), Some(&b"{\"id\":1}"[..]));
        assert_eq!(record.header_value("tenant-id"), Some(&b"acme"[..]));
        let header = |n| String::from_utf8(record.header_value(n).unwrap().to_vec()).unwrap();
        assert_eq!(header(ORIGINAL_TOPIC), "orders");
        assert_eq!(header(ORIGINAL_PARTITION), "3");
        assert_eq!(header(ORIGINAL_OFFSET), "42");
        assert_eq!(header(ORIGINAL_TIMESTAMP), "1700000000000");
        assert_eq!(header(CONSUMER_GROUP), "billing");
        assert_eq!(header(ERROR_KIND), "transient");
        assert_eq!(header(ERROR_MESSAGE), "db down");
        assert_eq!(header(ATTEMPTS), "3");
        assert!(header(FAILED_AT).ends_with('Z'));
        let stale = record
            .headers
            .iter()
            .filter(|(n, _)| n == ERROR_MESSAGE)
            .count();
        assert_eq!(
            stale, 1,
            "the stale failure header is replaced, not repeated"
        );
    }

    #[test]
    fn original_topic_understands_spring_and_karafka() {
        let mut m = message();
        m.headers = vec![(SPRING_ORIGINAL_TOPIC.into(), b"payments".to_vec())];
        assert_eq!(original_topic(&m).as_deref(), Some("payments"));
        m.headers = vec![(KARAFKA_ORIGINAL_TOPIC.into(), b"events".to_vec())];
        assert_eq!(original_topic(&m).as_deref(), Some("events"));
        m.headers.clear();
        assert_eq!(original_topic(&m), None);
    }

    #[test]
    fn rfc3339_formatting() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(time_rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            time_rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(time_rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
