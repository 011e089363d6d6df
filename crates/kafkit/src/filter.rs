//! [`RecordFilter`]: which records a browse shows or a replay takes, by key, header, value
//! substring, JSON field, and for dead-lettered records their error kind and original topic.
//!
//! One filter serves the console's message browser, the dead-letter pages and
//! [`Redrive::replay_matching`](crate::Redrive::replay_matching), so "what the page shows" and
//! "what the replay takes" can never disagree. Its fields are the texts people type (a header
//! as `name` or `name=value`, a JSON field as `path.to.field=value`); [`RecordFilter::check`]
//! refuses a malformed one, naming the field, instead of ignoring it: an ignored filter would
//! turn "replay all matching" into "replay all".

use serde::{Deserialize, Serialize};

use crate::dead_letter;
use crate::record::Message;

/// Conditions a record must all meet; an empty (or blank) field sets no condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RecordFilter {
    /// The key (as UTF-8 text, lossily) contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A header named `name` exists, or with `name=value`, a header `name` whose value
    /// contains `value` (`=value`: a header of any name whose value contains it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The value (as UTF-8 text, lossily) contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `path.to.field=value`: the value is JSON and that field equals `value` (a string field
    /// compares as text, any other as JSON; a number in the path indexes an array). Without
    /// `=`, `path.to.field`: the field exists; an empty path is the whole value (`=5`: the
    /// value is 5; `=`-less and blank sets no condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<String>,
    /// The dead-letter `error-kind` header equals this (`transient`, `permanent`, `invalid`,
    /// `panic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The topic the record was dead-lettered from equals this (kafkit's `original-topic`,
    /// Spring's or Karafka's header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_topic: Option<String>,
}

fn given(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

fn lossy(bytes: Option<&[u8]>) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes.unwrap_or_default())
}

impl RecordFilter {
    /// Whether no field sets a condition (every record is kept).
    pub fn is_empty(&self) -> bool {
        [
            &self.key,
            &self.header,
            &self.value,
            &self.json,
            &self.error_kind,
            &self.original_topic,
        ]
        .into_iter()
        .all(|field| given(field).is_none())
    }

    /// Whether `message` meets every condition. Every text is a condition: none is refused.
    pub fn keeps(&self, message: &Message) -> bool {
        if let Some(key) = given(&self.key)
            && !lossy(message.key.as_deref()).contains(key)
        {
            return false;
        }
        if let Some(header) = given(&self.header) {
            let (name, value) = match header.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim())),
                None => (header, None),
            };
            if !message.headers.iter().any(|(n, v)| {
                (name.is_empty() || n == name)
                    && value.is_none_or(|value| lossy(Some(v)).contains(value))
            }) {
                return false;
            }
        }
        if let Some(value) = given(&self.value)
            && !lossy(message.payload()).contains(value)
        {
            return false;
        }
        if let Some(json) = given(&self.json)
            && !json_field_equals(message, json)
        {
            return false;
        }
        if let Some(kind) = given(&self.error_kind)
            && message.header_value(dead_letter::ERROR_KIND) != Some(kind.as_bytes())
        {
            return false;
        }
        if let Some(topic) = given(&self.original_topic)
            && dead_letter::original_topic(message).as_deref() != Some(topic)
        {
            return false;
        }
        true
    }
}

/// `path.to.field=value` (or `path.to.field`: it exists) against the JSON value of `message`;
/// an empty path is the whole value.
fn json_field_equals(message: &Message, condition: &str) -> bool {
    let (path, wanted) = match condition.split_once('=') {
        Some((path, wanted)) => (path.trim(), Some(wanted.trim())),
        None => (condition.trim(), None),
    };
    let Some(json) = message
        .payload()
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
    else {
        return false;
    };
    let found = if path.is_empty() {
        Some(&json)
    } else {
        path.split('.').try_fold(&json, |node, step| match node {
            serde_json::Value::Array(items) => items.get(step.parse::<usize>().ok()?),
            _ => node.get(step),
        })
    };
    match (found, wanted) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(serde_json::Value::String(text)), Some(wanted)) => text == wanted,
        (Some(other), Some(wanted)) => {
            serde_json::from_str::<serde_json::Value>(wanted).is_ok_and(|wanted| &wanted == other)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: &[u8], headers: &[(&str, &[u8])], value: &[u8]) -> Message {
        Message {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: Some(key.to_vec()),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect(),
            value: Some(value.to_vec()),
            attempt: 0,
        }
    }

    #[test]
    fn filters_match_key_header_value_json_field_and_failure() {
        let m = message(
            b"order-7",
            &[
                ("tenant", b"acme"),
                (dead_letter::ERROR_KIND, b"permanent"),
                (dead_letter::ORIGINAL_TOPIC, b"orders"),
            ],
            br#"{"a":{"b":[1,"x"]},"n":5}"#,
        );
        let keeps = |pairs: &[(&str, &str)]| {
            let mut filter = RecordFilter::default();
            for (name, value) in pairs {
                let value = Some((*value).to_owned());
                match *name {
                    "key" => filter.key = value,
                    "header" => filter.header = value,
                    "value" => filter.value = value,
                    "kind" => filter.error_kind = value,
                    "from" => filter.original_topic = value,
                    _ => filter.json = value,
                }
            }
            filter.keeps(&m)
        };
        assert!(keeps(&[]) && keeps(&[("key", "  ")]));
        assert!(keeps(&[("key", "der-")]) && !keeps(&[("key", "nope")]));
        assert!(keeps(&[("header", "tenant")]) && keeps(&[("header", "tenant=ac")]));
        assert!(!keeps(&[("header", "tenant=zz")]) && !keeps(&[("header", "other")]));
        assert!(keeps(&[("value", "\"n\":5")]) && !keeps(&[("value", "zzz")]));
        assert!(keeps(&[("json", "n=5")]) && keeps(&[("json", "a.b.1=x")]));
        assert!(!keeps(&[("json", "n=6")]) && !keeps(&[("json", "a.c=1")]));
        assert!(keeps(&[("key", "order"), ("json", "a.b.0=1")]));
        assert!(keeps(&[("kind", "permanent")]) && !keeps(&[("kind", "perm")]));
        assert!(keeps(&[("from", "orders")]) && !keeps(&[("from", "order")]));
    }

    #[test]
    fn every_condition_has_a_meaning() {
        let m = message(b"k", &[("tenant", b"acme")], br#"{"a":{"b":null},"n":5}"#);
        let keeps = |filter: RecordFilter| filter.keeps(&m);
        let json = |text: &str| RecordFilter {
            json: Some(text.into()),
            ..RecordFilter::default()
        };
        let header = |text: &str| RecordFilter {
            header: Some(text.into()),
            ..RecordFilter::default()
        };
        // A path without `=`: the field exists (a null field too); an empty path: the value.
        assert!(keeps(json("a.b")) && keeps(json("n")) && !keeps(json("a.c")));
        assert!(keeps(json(r#" = {"n":5,"a":{"b":null}}"#)) && !keeps(json("=5")));
        assert!(!keeps(json("=")));
        // `=value`: a header of any name holding it.
        assert!(keeps(header("=ac")) && !keeps(header("=zz")));
        // Blank sets no condition; anything else does.
        assert!(json("  ").is_empty() && !json("no-equals").is_empty());
        // A value that is not JSON meets no JSON condition.
        let text = message(b"k", &[], b"plain");
        assert!(!json("a").keeps(&text) && !json(" =plain").keeps(&text));
    }
}
