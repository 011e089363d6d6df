//! What the push unit tests share: the record they deliver, and answers as the endpoint
//! gives them.

use std::time::Duration;

use kafkit::Message;
use reqwest::header::{HeaderMap, HeaderValue};

use super::Verdict;

/// `orders`/2 at offset 41, key `order-7`, with `headers`, `value` and `attempt`.
pub fn message(headers: &[(&str, &[u8])], value: &[u8], attempt: u32) -> Message {
    Message {
        topic: "orders".into(),
        partition: 2,
        offset: 41,
        timestamp: Some(1_700_000_000_123),
        key: Some(b"order-7".to_vec()),
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
            .collect(),
        value: Some(value.to_vec()),
        attempt,
    }
}

/// Response headers from `(name, value)` pairs.
pub fn header_map(headers: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

/// A retry verdict, after `after` seconds when given.
pub fn retry(after: Option<u64>, reason: &str) -> Verdict {
    Verdict::Retry {
        reason: reason.into(),
        after: after.map(Duration::from_secs),
    }
}
