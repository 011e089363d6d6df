//! The JSON bodies of the produce API, requests and answers, with the schemas the OpenAPI
//! document shows for them.

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::api::produce::idempotency::MAX_KEY_LEN;
use crate::http::error::{ErrorBody, ErrorDetail};

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
    pub value: Value,
    /// Optional headers (string values).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Optional explicit partition.
    #[serde(default, deserialize_with = "integral")]
    pub partition: Option<i32>,
    /// How to read `value` (default `json`).
    #[serde(default)]
    pub encoding: Encoding,
    /// Optional idempotency key for this record: a record sent again with the same key (to the
    /// same topic, by the same API key) within 10 minutes is answered from the first delivery.
    pub idempotency_key: Option<String>,
}

/// A 32-bit integer, written `3` or `3.0`: JSON (and JSON Schema's `integer`) does not tell
/// them apart.
fn integral<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i32>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|number| {
            whole_number(&number)
                .ok_or_else(|| D::Error::custom(format!("{number} is not a 32-bit integer")))
        })
        .transpose()
}

/// An integer field written `3` or `3.0`, as [`integral`] reads it, of any integer type.
pub(crate) fn whole<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
    deserializer: D,
) -> Result<T, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    whole_number(&number).ok_or_else(|| {
        D::Error::custom(format!(
            "{number} is not an integer of {}",
            std::any::type_name::<T>()
        ))
    })
}

/// The integer `number` stands for, if it is one and fits `T`.
fn whole_number<T: TryFrom<i64>>(number: &serde_json::Number) -> Option<T> {
    number
        .as_i64()
        // An integral float within i64 (`as` would saturate one past it to i64::MAX); one past
        // `T`'s range is refused by `try_from`.
        .or_else(|| {
            const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (-LIMIT..LIMIT).contains(f))
                .map(|f| f as i64)
        })
        .and_then(|n| T::try_from(n).ok())
}

/// Base64 as the gateway decodes it: the standard alphabet, padded, and no stray bits in the
/// last symbol (so `AB==` is refused, `AA==` is not).
pub const BASE64_PATTERN: &str =
    "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

impl OutboundMessage {
    /// The rules a message follows to be produced, beyond its JSON shape (the derived schema),
    /// as JSON Schema: a valid topic name, a partition of 0 or more, an idempotency key of
    /// visible ASCII, and a `value` fitting its `encoding` (any JSON for `json`, the default; a
    /// string or `null` for `string`; base64 or `null` for `base64`). A record's size is the one
    /// rule left out: JSON Schema cannot add up a key, a value and headers.
    pub fn rules() -> Value {
        let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
        json!({
            "properties": {
                "topic": schema("TopicName"),
                "partition": {"minimum": 0},
                "idempotency_key": {"anyOf": [{"type": "null"}, schema("IdempotencyKey")]},
            },
            "anyOf": [
                {"properties": {"encoding": {"const": "json"}}},
                {
                    "required": ["encoding"],
                    "properties": {
                        "encoding": {"const": "string"},
                        "value": {"type": ["string", "null"]},
                    },
                },
                {
                    "required": ["encoding"],
                    "properties": {
                        "encoding": {"const": "base64"},
                        "value": {"type": ["string", "null"], "pattern": BASE64_PATTERN},
                    },
                },
            ],
        })
    }
}

/// An idempotency key: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey;

impl PartialSchema for IdempotencyKey {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_KEY_LEN))
            .pattern(Some("^[!-~]+$"))
            .description(Some("1 to 255 visible ASCII characters"))
            .examples(["order-42-attempt"])
            .into()
    }
}

impl ToSchema for IdempotencyKey {}

/// Body of `/kafka/send-batch`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The records, any topics, 1 to 1000, each shaped as an `OutboundMessage`. One that
    /// breaks the rules of `OutboundMessage` is answered in place with its error, and the
    /// others are produced, as long as one follows them.
    #[schema(min_items = 1, max_items = 1000)]
    pub messages: Vec<OutboundMessage>,
    /// Send every record in one Kafka transaction: all of them become visible to
    /// read-committed readers together, or none does. One record refused (invalid, its
    /// idempotency key in progress) or a failed transaction fails the whole batch, answered
    /// with one error status and every record's result an error (records replayed from their
    /// idempotency key excepted: an earlier request stored them). Default `false`: each record
    /// on its own, with per-record results.
    #[serde(default)]
    pub transactional: bool,
}

/// Where one record landed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
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

/// The body of a failed `/kafka/send-batch`: a [`BatchResponse`] with per-record results and
/// its top-level `error` once the records were looked at (every one failed), else a plain
/// [`ErrorBody`] (the request as a whole was refused). Both carry `error`.
pub struct BatchFailure;

impl PartialSchema for BatchFailure {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .item(Ref::from_schema_name(BatchResponse::name()))
            .item(Ref::from_schema_name(ErrorBody::name()))
            .description(Some(
                "Every record failed: per-record `results` and the first failure as `error`; \
                 or the request was refused as a whole: `error` only",
            ))
            .into()
    }
}

impl ToSchema for BatchFailure {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((BatchResponse::name().into(), BatchResponse::schema()));
        BatchResponse::schemas(schemas);
        schemas.push((ErrorBody::name().into(), ErrorBody::schema()));
        ErrorBody::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_partition_may_be_written_as_an_integral_number() {
        let partition = |value: Value| {
            serde_json::from_value::<OutboundMessage>(json!({"topic": "t", "partition": value}))
                .map(|message| message.partition)
                .map_err(|e| e.to_string())
        };
        // JSON Schema's `integer` admits 3.0: so does the gateway.
        assert_eq!(partition(json!(3)), Ok(Some(3)));
        assert_eq!(partition(json!(3.0)), Ok(Some(3)));
        assert_eq!(partition(json!(-1)), Ok(Some(-1)));
        assert_eq!(partition(Value::Null), Ok(None));
        let absent = serde_json::from_value::<OutboundMessage>(json!({"topic": "t"})).unwrap();
        assert_eq!(absent.partition, None);
        // Fractions, numbers beyond 32 bits and other types are not partitions.
        for wrong in [
            json!(3.5),
            json!(2_147_483_648_i64),
            json!(-1e300),
            json!("3"),
        ] {
            assert!(partition(wrong.clone()).is_err(), "{wrong}");
        }
    }

    #[test]
    fn the_base64_pattern_admits_the_last_symbols_the_decoder_does() {
        // The pattern's classes of last symbols before `==` and `=`: those whose stray bits
        // are zero, which is what the decoder wants.
        let (before_two, before_one) = ("AQgw", "AEIMQUYcgkosw048");
        assert!(BASE64_PATTERN.contains(&format!("[{before_two}]==")));
        assert!(BASE64_PATTERN.contains(&format!("[{before_one}]=")));
        let decodes = |text: String| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_ok()
        };
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for symbol in alphabet.chars() {
            assert_eq!(
                decodes(format!("A{symbol}==")),
                before_two.contains(symbol),
                "A{symbol}=="
            );
            assert_eq!(
                decodes(format!("AA{symbol}=")),
                before_one.contains(symbol),
                "AA{symbol}="
            );
        }
    }
}
