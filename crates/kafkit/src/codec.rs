//! Payload codecs: how a value becomes bytes on the wire and back, and the `content-type`
//! header that tells consumers which one was used.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The header naming a payload's codec.
pub const CONTENT_TYPE_HEADER: &str = "content-type";
/// `content-type` of JSON payloads.
pub const JSON: &str = "application/json";
/// `content-type` of UTF-8 text payloads.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// `content-type` of opaque binary payloads.
pub const BYTES: &str = "application/octet-stream";

/// Encodes `value` as JSON.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(Error::Encode)
}

/// Decodes a JSON payload into `T`.
pub fn from_json<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(Error::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u32,
        item: String,
    }

    #[test]
    fn json_round_trips_and_reports_bad_input() {
        let order = Order {
            id: 7,
            item: "book".into(),
        };
        let bytes = to_json(&order).unwrap();
        assert_eq!(bytes, br#"{"id":7,"item":"book"}"#);
        assert_eq!(from_json::<Order>(&bytes).unwrap(), order);
        let err = from_json::<Order>(b"{not json").unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::Decode);
    }
}
