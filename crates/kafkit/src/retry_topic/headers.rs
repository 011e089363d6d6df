//! The headers of a retry round trip, kafkit's and Spring Kafka's. Their own module below
//! [`super`], so that a dead-letter copy can drop them without the dead-letter module
//! depending on retry topics (which build on dead letters).

/// Which retry tier a copy is on (1 for the first).
pub const RETRY_TIER: &str = "retry-tier";
/// When the copy is due, in milliseconds since the Unix epoch.
pub const RETRY_DUE_AT: &str = "retry-due-at";
/// Spring Kafka's due-time header (milliseconds since the epoch as a big-endian integer, or
/// an ISO date-time in older releases).
pub const SPRING_BACKOFF_TIMESTAMP: &str = "retry_topic-backoff-timestamp";
/// Spring Kafka's attempts header (a big-endian integer, one or four bytes).
pub const SPRING_ATTEMPTS: &str = "retry_topic-attempts";
/// Spring Kafka's original-timestamp header.
pub const SPRING_ORIGINAL_TIMESTAMP: &str = "retry_topic-original-timestamp";

/// Headers about a retry round trip, kafkit's and Spring's: dropped from a record redriven to
/// its source topic, which then starts afresh.
pub const RETRY_HEADERS: [&str; 5] = [
    RETRY_TIER,
    RETRY_DUE_AT,
    SPRING_BACKOFF_TIMESTAMP,
    SPRING_ATTEMPTS,
    SPRING_ORIGINAL_TIMESTAMP,
];

/// Whether `name` is a header of a retry round trip: one of [`RETRY_HEADERS`], or any other
/// of Spring Kafka's `retry_topic-*`.
pub fn is_retry_header(name: &str) -> bool {
    RETRY_HEADERS.contains(&name) || name.starts_with(SPRING_PREFIX)
}

/// The prefix of Spring Kafka's retry-topic headers.
const SPRING_PREFIX: &str = "retry_topic-";
