//! [`verdict`]: the response contract of push delivery as one pure function of the status, the
//! headers and the body excerpt. The delivery handler only carries the [`Verdict`] out.
//!
//! - 2xx: delivered; the offset may move.
//! - 429 and 503: retried, no sooner than `Retry-After` (seconds or an HTTP date, capped).
//! - 408 and other 5xx: retried with the subscription's backoff and jitter.
//! - Other statuses (4xx, and 1xx/3xx, which a POST should never end with): dead-lettered at
//!   once with the status and a bounded excerpt of the body.
//! - A response header `kafkit-outcome: retry` or `kafkit-outcome: dead-letter` overrides the
//!   status for that record.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Response header by which an endpoint overrides the status's verdict for one record.
pub const OUTCOME_HEADER: &str = "kafkit-outcome";
/// Most characters of a response body kept in a failure message.
pub const EXCERPT_CHARS: usize = 256;

/// What to do with a record after one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done: the offset may move.
    Delivered,
    /// Try again later; not before `after` when the endpoint said when.
    Retry {
        /// Why, for the log and the dead-letter copy if attempts run out.
        reason: String,
        /// The endpoint's `Retry-After`, capped.
        after: Option<Duration>,
    },
    /// It will never succeed: dead-letter now.
    DeadLetter {
        /// Status and body excerpt.
        reason: String,
    },
}

/// The verdict on a response with `status`, `headers` and (the start of) its body, at `now`;
/// `max_retry_after` caps the wait an endpoint may ask for.
pub fn verdict(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
    max_retry_after: Duration,
) -> Verdict {
    let override_to = headers
        .get(OUTCOME_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let reason = || describe(status, body);
    let after = || {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, now))
            .map(|d| d.min(max_retry_after))
    };
    match override_to.as_deref() {
        Some("retry") => {
            return Verdict::Retry {
                reason: format!("{} (endpoint asked to retry)", reason()),
                after: after(),
            };
        }
        Some("dead-letter") => {
            return Verdict::DeadLetter {
                reason: format!("{} (endpoint asked to dead-letter)", reason()),
            };
        }
        _ => {}
    }
    match status.as_u16() {
        200..=299 => Verdict::Delivered,
        429 | 503 => Verdict::Retry {
            reason: reason(),
            after: after(),
        },
        408 | 500..=599 => Verdict::Retry {
            reason: reason(),
            after: None,
        },
        _ => Verdict::DeadLetter { reason: reason() },
    }
}

/// The status class a response counts under in metrics: `2xx`, `4xx`, `429`, `5xx`, ...
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "429",
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// `HTTP 422 Unprocessable Entity: <excerpt>`.
pub(crate) fn describe(status: StatusCode, body: &[u8]) -> String {
    let excerpt = excerpt(body);
    let status = match status.canonical_reason() {
        Some(name) => format!("HTTP {} {name}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    };
    if excerpt.is_empty() {
        status
    } else {
        format!("{status}: {excerpt}")
    }
}

/// At most [`EXCERPT_CHARS`] characters of `body`, lossily decoded, control characters as
/// spaces, `…` when cut.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    if text.chars().nth(EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// A `Retry-After` value: delay-seconds or an HTTP date (RFC 9110 §10.2.3); a date in the past
/// is no wait. Anything else is ignored.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::fixtures::{header_map, retry};

    const CAP: Duration = Duration::from_secs(60);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn on(status: u16, headers: &[(&'static str, &str)], body: &str) -> Verdict {
        verdict(
            StatusCode::from_u16(status).unwrap(),
            &header_map(headers),
            body.as_bytes(),
            now(),
            CAP,
        )
    }

    #[test]
    fn two_hundreds_are_delivered() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(on(status, &[], "ok"), Verdict::Delivered, "{status}");
        }
    }

    #[test]
    fn other_client_errors_dead_letter_with_status_and_excerpt() {
        assert_eq!(
            on(422, &[], r#"{"error":"bad sku"}"#),
            Verdict::DeadLetter {
                reason: r#"HTTP 422 Unprocessable Entity: {"error":"bad sku"}"#.into()
            }
        );
        assert_eq!(
            on(404, &[], ""),
            Verdict::DeadLetter {
                reason: "HTTP 404 Not Found".into()
            }
        );
        // A redirect is not followed: a POST that ends there never reached the handler.
        assert!(matches!(on(302, &[], ""), Verdict::DeadLetter { .. }));
    }

    #[test]
    fn server_errors_and_408_retry_with_backoff_only() {
        assert_eq!(
            on(500, &[], "boom"),
            retry(None, "HTTP 500 Internal Server Error: boom")
        );
        assert_eq!(on(502, &[], ""), retry(None, "HTTP 502 Bad Gateway"));
        assert_eq!(on(408, &[], ""), retry(None, "HTTP 408 Request Timeout"));
        // Retry-After on a plain 500 is not the 429/503 contract: backoff only.
        assert_eq!(
            on(500, &[("retry-after", "9")], ""),
            retry(None, "HTTP 500 Internal Server Error")
        );
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_in_seconds_or_as_a_date() {
        assert_eq!(
            on(429, &[("retry-after", "7")], ""),
            retry(Some(7), "HTTP 429 Too Many Requests")
        );
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(30));
        assert_eq!(
            on(503, &[("retry-after", &date)], ""),
            retry(Some(30), "HTTP 503 Service Unavailable")
        );
        // Capped, a past date is no wait, garbage is ignored.
        assert_eq!(
            on(429, &[("retry-after", "86400")], ""),
            retry(Some(60), "HTTP 429 Too Many Requests")
        );
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(30));
        assert_eq!(
            on(503, &[("retry-after", &past)], ""),
            retry(Some(0), "HTTP 503 Service Unavailable")
        );
        assert_eq!(
            on(429, &[("retry-after", "soon")], ""),
            retry(None, "HTTP 429 Too Many Requests")
        );
        assert_eq!(on(429, &[], ""), retry(None, "HTTP 429 Too Many Requests"));
    }

    #[test]
    fn the_endpoint_may_override_per_record() {
        assert_eq!(
            on(
                400,
                &[("kafkit-outcome", "retry"), ("retry-after", "3")],
                ""
            ),
            retry(Some(3), "HTTP 400 Bad Request (endpoint asked to retry)")
        );
        assert_eq!(
            on(500, &[("kafkit-outcome", "Dead-Letter")], "poison"),
            Verdict::DeadLetter {
                reason: "HTTP 500 Internal Server Error: poison (endpoint asked to dead-letter)"
                    .into()
            }
        );
        assert!(matches!(
            on(200, &[("kafkit-outcome", "dead-letter")], ""),
            Verdict::DeadLetter { .. }
        ));
        assert_eq!(
            on(200, &[("kafkit-outcome", "whatever")], ""),
            Verdict::Delivered
        );
    }

    #[test]
    fn excerpts_are_bounded_and_printable() {
        let long = "x".repeat(10_000);
        let cut = excerpt(long.as_bytes());
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt(b"line\nbreak\x00\xff  "), "line break \u{fffd}");
    }

    #[test]
    fn status_classes() {
        let class = |s| status_class(StatusCode::from_u16(s).unwrap());
        assert_eq!(
            [200, 302, 404, 429, 503].map(class),
            ["2xx", "3xx", "4xx", "429", "5xx"]
        );
    }
}
