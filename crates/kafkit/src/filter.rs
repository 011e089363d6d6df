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
use crate::error::{Error, Result};
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
    /// contains `value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The value (as UTF-8 text, lossily) contains this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `path.to.field=value`: the value is JSON and that field equals `value` (a string field
    /// compares as text, any other as JSON; a number in the path indexes an array).
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
    /// Refuses a condition that cannot be applied, naming its field (`json` without `=`, a
    /// header without a name).
    pub fn check(&self) -> Result<()> {
        let invalid = |field: &str, reason: &str| Error::InvalidSelection {
            field: format!("filter.{field}"),
            reason: reason.to_owned(),
        };
        if let Some(header) = given(&self.header)
            && header.split('=').next().is_none_or(|n| n.trim().is_empty())
        {
            return Err(invalid("header", "write name or name=value"));
        }
        if let Some(json) = given(&self.json) {
            match json.split_once('=') {
                Some((path, _)) if !path.trim().is_empty() => {}
                _ => return Err(invalid("json", "write path.to.field=value")),
            }
        }
        Ok(())
    }

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

    /// Whether `message` meets every condition. A malformed condition (see
    /// [`RecordFilter::check`]) keeps nothing.
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
            if !message
                .headers
                .iter()
                .any(|(n, v)| n == name && value.is_none_or(|value| lossy(Some(v)).contains(value)))
            {
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

/// `path.to.field=value` against the JSON value of `message`.
fn json_field_equals(message: &Message, condition: &str) -> bool {
    let Some((path, wanted)) = condition.split_once('=') else {
        return false;
    };
    let (path, wanted) = (path.trim(), wanted.trim());
    if path.is_empty() {
        return false;
    }
    let Some(json) = message
        .payload()
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
    else {
        return false;
    };
    let found = path.split('.').try_fold(&json, |node, step| match node {
        serde_json::Value::Array(items) => items.get(step.parse::<usize>().ok()?),
        _ => node.get(step),
    });
    match found {
        Some(serde_json::Value::String(text)) => text == wanted,
        Some(other) => {
            serde_json::from_str::<serde_json::Value>(wanted).is_ok_and(|wanted| &wanted == other)
        }
        None => false,
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
            filter.check().unwrap();
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
    fn a_malformed_condition_is_refused_by_name_and_keeps_nothing() {
        let json = RecordFilter {
            json: Some("no-equals".into()),
            ..RecordFilter::default()
        };
        let error = json.check().unwrap_err();
        assert!(error.to_string().starts_with("filter.json:"), "{error}");
        assert!(!json.keeps(&message(b"k", &[], b"{}")));
        let header = RecordFilter {
            header: Some("=x".into()),
            ..RecordFilter::default()
        };
        assert!(header.check().unwrap_err().to_string().contains("header"));
        assert!(RecordFilter::default().is_empty());
        assert!(!json.is_empty());
    }
}
