//! Payload codecs: how a value becomes bytes on the wire and back, and the `content-type`
//! header that tells consumers which one was used.
//!
//! [`Json`] is the default everywhere (typed handlers, [`Record::json`](crate::Record::json)).
//! [`Text`] and [`Bytes`] carry UTF-8 text and opaque bytes. A codec with state (a schema
//! registry client for Avro or Protobuf) implements the same traits on its own type and is
//! passed by value to [`Router::register_with_codec`](crate::Router::register_with_codec) and
//! [`Record::encode`](crate::Record::encode).

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

/// A payload format, named by the `content-type` header it writes.
pub trait Codec: Send + Sync + 'static {
    /// The value of the `content-type` header of payloads this codec encodes.
    fn content_type(&self) -> &'static str;
}

/// Turns values of type `T` into payload bytes.
pub trait Encoder<T: ?Sized>: Codec {
    /// Encodes `value`.
    fn encode(&self, value: &T) -> Result<Vec<u8>>;
}

/// Turns payload bytes back into values of type `T`.
pub trait Decoder<T>: Codec {
    /// Decodes a payload; `None` is a tombstone (a record without a value).
    fn decode(&self, payload: Option<&[u8]>) -> Result<T>;
}

/// JSON through serde; a tombstone decodes as `null` (so `Option<T>` reads tombstones).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

/// UTF-8 text as a `String`; invalid UTF-8 and tombstones are decode errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Text;

/// Opaque bytes as a `Vec<u8>`, untouched; a tombstone is a decode error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

impl Codec for Json {
    fn content_type(&self) -> &'static str {
        JSON
    }
}

impl<T: Serialize + ?Sized> Encoder<T> for Json {
    fn encode(&self, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| encode_error(JSON, e))
    }
}

impl<T: DeserializeOwned> Decoder<T> for Json {
    fn decode(&self, payload: Option<&[u8]>) -> Result<T> {
        serde_json::from_slice(payload.unwrap_or(b"null")).map_err(|e| decode_error(JSON, e))
    }
}

impl Codec for Text {
    fn content_type(&self) -> &'static str {
        TEXT
    }
}

impl<T: AsRef<str> + ?Sized> Encoder<T> for Text {
    fn encode(&self, value: &T) -> Result<Vec<u8>> {
        Ok(value.as_ref().as_bytes().to_vec())
    }
}

impl Decoder<String> for Text {
    fn decode(&self, payload: Option<&[u8]>) -> Result<String> {
        let bytes = payload.ok_or_else(|| decode_error(TEXT, "the record has no value"))?;
        String::from_utf8(bytes.to_vec()).map_err(|e| decode_error(TEXT, e))
    }
}

impl Codec for Bytes {
    fn content_type(&self) -> &'static str {
        BYTES
    }
}

impl<T: AsRef<[u8]> + ?Sized> Encoder<T> for Bytes {
    fn encode(&self, value: &T) -> Result<Vec<u8>> {
        Ok(value.as_ref().to_vec())
    }
}

impl Decoder<Vec<u8>> for Bytes {
    fn decode(&self, payload: Option<&[u8]>) -> Result<Vec<u8>> {
        payload
            .map(<[u8]>::to_vec)
            .ok_or_else(|| decode_error(BYTES, "the record has no value"))
    }
}

/// An encode error of the codec named by `content_type`.
pub fn encode_error(
    content_type: &'static str,
    source: impl Into<crate::error::BoxError>,
) -> Error {
    Error::Encode {
        content_type,
        source: source.into(),
    }
}

/// A decode error of the codec named by `content_type`.
pub fn decode_error(
    content_type: &'static str,
    source: impl Into<crate::error::BoxError>,
) -> Error {
    Error::Decode {
        content_type,
        source: source.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

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
        let bytes = Json.encode(&order).unwrap();
        assert_eq!(bytes, br#"{"id":7,"item":"book"}"#);
        assert_eq!(
            Decoder::<Order>::decode(&Json, Some(&bytes)).unwrap(),
            order
        );
        let err = Decoder::<Order>::decode(&Json, Some(b"{not json")).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Decode);
        assert!(err.to_string().contains("application/json"), "{err}");
        let tombstone: Option<Order> = Json.decode(None).unwrap();
        assert_eq!(tombstone, None);
    }

    #[test]
    fn text_and_bytes_keep_payloads_as_they_are() {
        assert_eq!(Text.encode("héllo").unwrap(), "héllo".as_bytes());
        assert_eq!(Text.decode(Some("héllo".as_bytes())).unwrap(), "héllo");
        let invalid = Text.decode(Some(&[0xff, 0xfe][..])).unwrap_err();
        assert_eq!(invalid.code(), ErrorCode::Decode);
        assert!(Text.decode(None).is_err());

        let raw = [0u8, 1, 255];
        assert_eq!(Bytes.encode(&raw).unwrap(), raw);
        assert_eq!(Bytes.decode(Some(&raw[..])).unwrap(), raw);
        assert_eq!(Bytes.decode(None).unwrap_err().code(), ErrorCode::Decode);
    }
}
