//! How a message body becomes a Kafka record: its topic and partition checked, its `value`
//! read as its `encoding` says, and its size held to [`MAX_RECORD_BYTES`].

use axum::http::StatusCode;
use base64::Engine;
use kafkit::Record;

use super::body::{Encoding, OutboundMessage};
use crate::api::produce::idempotency;
use crate::http::error::ApiError;
use crate::{AppState, MAX_RECORD_BYTES};

impl OutboundMessage {
    /// The record this message asks for, or why it cannot be produced.
    fn to_record(&self) -> Result<Record, ApiError> {
        kafkit::record::validate_topic(&self.topic)?;
        if let Some(partition) = self.partition
            && partition < 0
        {
            return Err(ApiError::bad_request(
                "invalid_partition",
                format!("partition must be >= 0, got {partition}"),
            ));
        }
        if let Some(key) = &self.idempotency_key {
            idempotency::validate_key(key)
                .map_err(|m| ApiError::bad_request("invalid_idempotency_key", m))?;
        }
        let mut record = Record::to(&self.topic);
        for (name, value) in &self.headers {
            record = record.header(name.clone(), value.clone());
        }
        record = match (self.encoding, &self.value) {
            (_, serde_json::Value::Null) => record,
            (Encoding::Json, value) => record.json(value)?,
            (Encoding::String, serde_json::Value::String(text)) => record.text(text.clone()),
            (Encoding::Base64, serde_json::Value::String(encoded)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.as_bytes())
                    .map_err(|e| {
                        ApiError::bad_request("invalid_base64", format!("value is not base64: {e}"))
                    })?;
                record.bytes(bytes)
            }
            (encoding, _) => {
                return Err(ApiError::bad_request(
                    "invalid_value",
                    format!("encoding {encoding:?} needs a string value"),
                ));
            }
        };
        record.key = self.key.clone().map(String::into_bytes);
        record.partition = self.partition;
        let size = record.payload.as_ref().map_or(0, Vec::len)
            + record.key.as_ref().map_or(0, Vec::len)
            + record
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > MAX_RECORD_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "record_too_large",
                format!("the record is {size} bytes, the limit is {MAX_RECORD_BYTES}"),
            ));
        }
        Ok(record)
    }

    /// The record, once its topic (and partition) are known to exist.
    pub(super) async fn checked_record(&self, state: &AppState) -> Result<Record, ApiError> {
        let record = self.to_record()?;
        state
            .known_topics()
            .check(state.admin(), &self.topic, self.partition)
            .await?;
        Ok(record)
    }
}
