//! [`CloudEvent`]: the CloudEvents 1.0 binary content mode of the HTTP binding, for a
//! subscription with `format = "cloudevents"`. The record's value stays the body and its
//! `content-type` the event's `datacontenttype`; the event's attributes travel as `ce-*`
//! headers, beside the plain request's headers (which are all sent too):
//!
//! - `ce-specversion: 1.0`, `ce-id` (the delivery id `topic/partition/offset`, unique within
//!   the source and the same on every attempt), `ce-source` (the subscription's template,
//!   `{topic}` replaced), `ce-type` (the subscription's), `ce-time` (the record's timestamp,
//!   RFC 3339), and, for a UTF-8 key, `ce-subject` and the partitioning extension's
//!   `ce-partitionkey`.
//! - A record that already is a CloudEvent in the Kafka binding's binary mode carries its
//!   attributes as `ce_<name>` headers: each becomes `ce-<name>` and wins over the default
//!   above (the event keeps its own id, source, type and time).
//!
//! Values are percent-encoded as the HTTP binding requires (space, `"`, `%` and everything
//! outside printable ASCII), so any UTF-8 value is a valid header.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use kafkit::Message;

use super::delivery_id::delivery_id;

/// The CloudEvents version sent.
pub const SPEC_VERSION: &str = "1.0";
/// Default `source` template.
pub const DEFAULT_SOURCE: &str = "kafka://{topic}";
/// Default `type`.
pub const DEFAULT_TYPE: &str = "kafkit.record";
/// Prefix of CloudEvents attributes in Kafka headers (Kafka protocol binding, binary mode).
pub const KAFKA_PREFIX: &str = "ce_";
/// Prefix of CloudEvents attributes in HTTP headers (HTTP protocol binding, binary mode).
pub const HTTP_PREFIX: &str = "ce-";

/// How a subscription's records become CloudEvents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    /// `source` template: `{topic}` is the record's topic.
    pub source: String,
    /// `type` of every event (unless the record carries `ce_type`).
    pub event_type: String,
}

impl Default for CloudEvent {
    fn default() -> Self {
        CloudEvent {
            source: DEFAULT_SOURCE.to_owned(),
            event_type: DEFAULT_TYPE.to_owned(),
        }
    }
}

impl CloudEvent {
    /// Adds the `ce-*` headers of `message` to `headers`.
    pub fn add_headers(&self, message: &Message, headers: &mut HeaderMap) {
        let mut set = |name: &str, value: &str| {
            let name = HeaderName::from_bytes(format!("{HTTP_PREFIX}{name}").as_bytes());
            let value = HeaderValue::from_str(&percent_encode(value));
            if let (Ok(name), Ok(value)) = (name, value) {
                headers.insert(name, value);
            }
        };
        set("specversion", SPEC_VERSION);
        set("id", &delivery_id(message));
        set("source", &self.source.replace("{topic}", &message.topic));
        set("type", &self.event_type);
        if let Some(time) = message.timestamp.and_then(rfc3339) {
            set("time", &time);
        }
        if let Some(key) = message
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
        {
            set("subject", key);
            set("partitionkey", key);
        }
        // The record's own attributes last: they win.
        for (name, value) in &message.headers {
            let Some(attribute) = name.strip_prefix(KAFKA_PREFIX) else {
                continue;
            };
            // datacontenttype is the content-type header in both bindings, never a ce- one.
            if !is_attribute_name(attribute) || attribute == "datacontenttype" {
                continue;
            }
            if let Ok(value) = std::str::from_utf8(value) {
                set(attribute, value);
            }
        }
    }
}

/// A CloudEvents attribute name: lower-case ASCII letters and digits.
fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Milliseconds since the epoch as RFC 3339 (UTC, millisecond precision as the record has).
fn rfc3339(millis: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// The HTTP binding's percent-encoding: space, `"`, `%` and every byte outside printable
/// ASCII become `%XY` (upper-case hex) of their UTF-8 bytes.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x21..=0x7e).contains(&byte) && byte != b'"' && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        crate::push::fixtures::message(&[("tenant-id", b"acme")], b"{}", 1)
    }

    fn headers(event: &CloudEvent, message: &Message) -> HeaderMap {
        let mut headers = HeaderMap::new();
        event.add_headers(message, &mut headers);
        headers
    }

    fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn a_record_becomes_an_event_with_the_required_and_optional_attributes() {
        let h = headers(&CloudEvent::default(), &message());
        assert_eq!(get(&h, "ce-specversion"), Some("1.0"));
        assert_eq!(get(&h, "ce-id"), Some("orders/2/41"));
        assert_eq!(get(&h, "ce-source"), Some("kafka://orders"));
        assert_eq!(get(&h, "ce-type"), Some("kafkit.record"));
        assert_eq!(get(&h, "ce-time"), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(get(&h, "ce-subject"), Some("order-7"));
        assert_eq!(get(&h, "ce-partitionkey"), Some("order-7"));
        assert_eq!(h.len(), 7, "{h:?}");
    }

    #[test]
    fn the_record_ce_headers_win_and_values_are_percent_encoded() {
        let mut m = message();
        m.key = Some("Zoë 100%".as_bytes().to_vec());
        m.headers = vec![
            ("ce_id".into(), b"evt-1".to_vec()),
            ("ce_type".into(), b"com.example.order.created".to_vec()),
            ("ce_traceparent".into(), b"00-ab-cd-01".to_vec()),
            ("ce_datacontenttype".into(), b"text/plain".to_vec()),
            ("ce_Bad".into(), b"x".to_vec()),
            ("ce_note".into(), "say \"hi\"".as_bytes().to_vec()),
        ];
        let event = CloudEvent {
            source: "/billing/{topic}".into(),
            event_type: "t".into(),
        };
        let h = headers(&event, &m);
        assert_eq!(get(&h, "ce-id"), Some("evt-1"));
        assert_eq!(get(&h, "ce-type"), Some("com.example.order.created"));
        assert_eq!(get(&h, "ce-source"), Some("/billing/orders"));
        assert_eq!(get(&h, "ce-traceparent"), Some("00-ab-cd-01"));
        assert_eq!(get(&h, "ce-subject"), Some("Zo%C3%AB%20100%25"));
        assert_eq!(get(&h, "ce-note"), Some("say%20%22hi%22"));
        assert!(!h.contains_key("ce-datacontenttype"));
        assert!(!h.contains_key("ce-bad"));
    }

    #[test]
    fn a_binary_key_and_no_timestamp_leave_their_attributes_out() {
        let mut m = message();
        m.key = Some(vec![0xff, 0x00]);
        m.timestamp = None;
        let h = headers(&CloudEvent::default(), &m);
        for absent in ["ce-subject", "ce-partitionkey", "ce-time"] {
            assert!(!h.contains_key(absent), "{absent}");
        }
        assert_eq!(
            percent_encode("Euro € 😀"),
            "Euro%20%E2%82%AC%20%F0%9F%98%80"
        );
    }
}
