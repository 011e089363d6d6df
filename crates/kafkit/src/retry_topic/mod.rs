//! [`RetryTopics`]: non-blocking retries (Spring Kafka's `@RetryableTopic` model). A record
//! whose in-place retries are exhausted is copied to the route's first retry topic,
//! `{topic}.retry.1`, with the time it is due; its source offset then moves on, so one bad
//! record holds back neither its partition nor its key. The consumer reads each retry topic
//! with the same handler: a record waits there until it is due (in partition order, so the
//! partition waits for its head: records of one tier arrive roughly in due order), gets one
//! attempt per tier, and goes on to the next tier or, after the last, to the dead-letter
//! topic of the topic it came from.
//!
//! A retry copy carries the dead-letter failure headers (original topic, partition, offset,
//! timestamp, group, error kind and message, attempts so far) plus [`RETRY_TIER`] and
//! [`RETRY_DUE_AT`]. Copies written by Spring Kafka are understood too: their
//! `retry_topic-backoff-timestamp` and `retry_topic-attempts` headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) mod headers;

pub use headers::{
    RETRY_DUE_AT, RETRY_HEADERS, RETRY_TIER, SPRING_ATTEMPTS, SPRING_BACKOFF_TIMESTAMP,
    SPRING_ORIGINAL_TIMESTAMP, is_retry_header,
};

use crate::dead_letter::{self, Failure, Origin};
use crate::record::{Message, Record};

/// Default retry topic template: `{topic}` is the source topic, `{n}` the tier.
pub const DEFAULT_TEMPLATE: &str = "{topic}.retry.{n}";

/// Templates a retry topic's name is matched against to find the topic its tiers serve:
/// kafkit's default and Spring Kafka's (`{topic}-retry-{n}`, `{n}` the tier's index or delay
/// in milliseconds; `{topic}-retry` for a single fixed-delay topic).
pub const KNOWN_TEMPLATES: [&str; 3] = [DEFAULT_TEMPLATE, "{topic}-retry-{n}", "{topic}-retry"];

/// A route's retry tiers: how long each waits before its one attempt, and how they are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTopics {
    delays: Vec<Duration>,
    template: String,
}

impl RetryTopics {
    /// One tier per delay, in order: `RetryTopics::new([10s, 1min, 10min])` tries a record
    /// again 10 s after its in-place retries failed, then 1 min after that, then 10 min,
    /// then dead-letters it. At least one delay is needed (checked when the consumer is
    /// built).
    pub fn new(delays: impl IntoIterator<Item = Duration>) -> Self {
        RetryTopics {
            delays: delays.into_iter().collect(),
            template: DEFAULT_TEMPLATE.to_owned(),
        }
    }

    /// `tiers` tiers whose delays start at `first` and grow by `multiplier`, capped at `max`.
    pub fn exponential(tiers: usize, first: Duration, multiplier: f64, max: Duration) -> Self {
        let delays = (0..tiers).map(|n| {
            let factor = multiplier.max(1.0).powi(n as i32);
            first.mul_f64(factor).min(max)
        });
        RetryTopics::new(delays)
    }

    /// Names the tiers with `template` (default `{topic}.retry.{n}`); it must hold both
    /// `{topic}` and `{n}` (checked when the consumer is built).
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.template = template.into();
        self
    }

    /// The number of tiers.
    pub fn tiers(&self) -> usize {
        self.delays.len()
    }

    /// The delay of tier `n` (1-based).
    pub fn delay(&self, n: usize) -> Duration {
        self.delays[n - 1]
    }

    /// The topic of tier `n` (1-based) of `topic`.
    pub fn topic_for(&self, topic: &str, n: usize) -> String {
        self.template
            .replace("{topic}", topic)
            .replace("{n}", &n.to_string())
    }

    /// Every tier's topic of `topic`, tier 1 first.
    pub fn topics_for(&self, topic: &str) -> Vec<String> {
        (1..=self.tiers())
            .map(|n| self.topic_for(topic, n))
            .collect()
    }

    /// Why this configuration cannot be used, if it cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.delays.is_empty() {
            return Some("needs at least one tier".to_owned());
        }
        if !self.template.contains("{topic}") || !self.template.contains("{n}") {
            return Some(format!(
                "template {:?} must contain {{topic}} and {{n}}",
                self.template
            ));
        }
        None
    }

    /// The copy of `message` for tier `tier` of `origin`'s topic, due `delay` from now.
    pub(crate) fn record(
        &self,
        message: &Message,
        origin: &Origin,
        group: &str,
        failure: &Failure,
        tier: usize,
        delay: Duration,
    ) -> Record {
        let mut record = dead_letter::failure_copy(
            self.topic_for(&origin.topic, tier),
            message,
            origin,
            group,
            failure,
        );
        record.headers.retain(|(name, _)| !is_retry_header(name));
        let due = SystemTime::now() + delay;
        record
            .headers
            .push((RETRY_TIER.to_owned(), tier.to_string().into_bytes()));
        record.headers.push((
            RETRY_DUE_AT.to_owned(),
            millis(due).to_string().into_bytes(),
        ));
        record
    }
}

/// Whether `message` carries a header of a retry round trip: a copy made on or after a retry
/// topic, by kafkit or by Spring.
pub fn is_retry_copy(message: &Message) -> bool {
    message
        .headers
        .iter()
        .any(|(name, _)| is_retry_header(name))
}

/// The topic a retry topic's tiers serve, and the number its name ends with (kafkit's tier;
/// Spring's index or delay), read from its name with [`KNOWN_TEMPLATES`]; `None` when the
/// name follows none of them.
pub fn source_of(retry_topic: &str) -> Option<(String, Option<u64>)> {
    KNOWN_TEMPLATES.iter().find_map(|template| {
        let (prefix, rest) = template.split_once("{topic}")?;
        let name = retry_topic.strip_prefix(prefix)?;
        let (source, n) = match rest.split_once("{n}") {
            Some((infix, suffix)) => {
                let name = name.strip_suffix(suffix)?;
                let (source, n) = name.rsplit_once(infix)?;
                let n = (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| n.parse().ok())
                    .flatten()?;
                (source, Some(n))
            }
            None => (name.strip_suffix(rest)?, None),
        };
        (!source.is_empty()).then(|| (source.to_owned(), n))
    })
}

/// When a copy on a retry topic is due, from kafkit's or Spring's header.
pub fn due_at(message: &Message) -> Option<SystemTime> {
    if let Some(ms) = message
        .header_value(RETRY_DUE_AT)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(UNIX_EPOCH + Duration::from_millis(ms));
    }
    let spring = message.header_value(SPRING_BACKOFF_TIMESTAMP)?;
    spring_millis(spring).map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

/// The handler attempts a copy on a retry topic has had before, from kafkit's `attempts`
/// header or Spring's `retry_topic-attempts`; 0 when neither says.
pub fn prior_attempts(message: &Message) -> u32 {
    if let Some(n) = message
        .header_value(dead_letter::ATTEMPTS)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    match message.header_value(SPRING_ATTEMPTS) {
        // Spring counts the delivery the copy is for; what was before it is one less.
        Some(v) if (1..=4).contains(&v.len()) => {
            let n = v.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b));
            n.saturating_sub(1)
        }
        _ => 0,
    }
}

/// Spring's due time: a big-endian two's-complement integer of at most 8 bytes (Java's
/// `BigInteger.toByteArray`), or decimal digits.
fn spring_millis(value: &[u8]) -> Option<u64> {
    if let Some(ms) = std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
    {
        return Some(ms);
    }
    if value.is_empty() || value.len() > 8 || value[0] & 0x80 != 0 {
        return None;
    }
    Some(value.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::ErrorKind;

    fn message(headers: Vec<(&str, Vec<u8>)>) -> Message {
        Message {
            topic: "orders.retry.1".into(),
            partition: 0,
            offset: 7,
            timestamp: Some(1_700_000_000_000),
            key: Some(b"k".to_vec()),
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect(),
            value: Some(b"v".to_vec()),
            attempt: 0,
        }
    }

    #[test]
    fn tiers_are_named_by_the_template() {
        let tiers = RetryTopics::new([Duration::from_secs(1), Duration::from_secs(10)]);
        assert_eq!(
            tiers.topics_for("orders"),
            ["orders.retry.1", "orders.retry.2"]
        );
        let custom = tiers.template("{topic}-retry-{n}");
        assert_eq!(custom.topic_for("orders", 2), "orders-retry-2");
        assert!(custom.problem().is_none());
        assert!(RetryTopics::new([]).problem().is_some());
        let bad = RetryTopics::new([Duration::from_secs(1)]).template("{topic}.retry");
        assert!(bad.problem().unwrap().contains("{n}"));
    }

    #[test]
    fn retry_topics_are_known_by_kafkit_and_spring_names() {
        let of = |name| source_of(name);
        assert_eq!(of("orders.retry.2"), Some(("orders".into(), Some(2))));
        assert_eq!(of("a.b.retry.10"), Some(("a.b".into(), Some(10))));
        assert_eq!(of("orders-retry-1000"), Some(("orders".into(), Some(1000))));
        assert_eq!(of("orders-retry"), Some(("orders".into(), None)));
        for name in [
            "orders",
            "orders.retry.",
            "orders.retry.x",
            ".retry.1",
            "-retry",
            "orders.dlq",
        ] {
            assert_eq!(of(name), None, "{name}");
        }
        assert!(is_retry_header("retry_topic-original-timestamp"));
        assert!(is_retry_header(RETRY_DUE_AT));
        assert!(!is_retry_header("retry"));
    }

    #[test]
    fn exponential_tiers_grow_and_are_capped() {
        let tiers =
            RetryTopics::exponential(4, Duration::from_secs(1), 10.0, Duration::from_secs(300));
        let delays: Vec<_> = (1..=4).map(|n| tiers.delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 10, 100, 300]);
    }

    #[test]
    fn a_copy_carries_its_origin_its_tier_and_its_due_time() {
        let tiers = RetryTopics::new([Duration::from_secs(5), Duration::from_secs(60)]);
        // A copy on tier 1, going to tier 2: the origin stays the first topic's record.
        let on_tier_one = message(vec![
            (dead_letter::ORIGINAL_TOPIC, b"orders".to_vec()),
            (dead_letter::ORIGINAL_PARTITION, b"3".to_vec()),
            (dead_letter::ORIGINAL_OFFSET, b"42".to_vec()),
            (dead_letter::ORIGINAL_TIMESTAMP, b"1690000000000".to_vec()),
            (dead_letter::ATTEMPTS, b"3".to_vec()),
            (RETRY_TIER, b"1".to_vec()),
            (RETRY_DUE_AT, b"1".to_vec()),
            ("tenant", b"acme".to_vec()),
        ]);
        let origin = Origin::of_retry_copy(&on_tier_one);
        assert_eq!(
            (origin.topic.as_str(), origin.partition, origin.offset),
            ("orders", 3, 42)
        );
        let failure = Failure {
            kind: ErrorKind::Transient,
            message: "503".into(),
            attempts: 4,
        };
        let before = millis(SystemTime::now());
        let copy = tiers.record(&on_tier_one, &origin, "g", &failure, 2, tiers.delay(2));
        assert_eq!(copy.topic, "orders.retry.2");
        let header = |n| String::from_utf8(copy.header_value(n).unwrap().to_vec()).unwrap();
        assert_eq!(header(RETRY_TIER), "2");
        assert_eq!(header(dead_letter::ORIGINAL_TOPIC), "orders");
        assert_eq!(header(dead_letter::ORIGINAL_OFFSET), "42");
        assert_eq!(header(dead_letter::ATTEMPTS), "4");
        assert_eq!(header("tenant"), "acme");
        let due: u64 = header(RETRY_DUE_AT).parse().unwrap();
        assert!(
            due >= before + 60_000 && due < before + 61_000,
            "{due} {before}"
        );
        for name in [RETRY_TIER, RETRY_DUE_AT, dead_letter::ATTEMPTS] {
            let n = copy.headers.iter().filter(|(h, _)| h == name).count();
            assert_eq!(n, 1, "{name} appears once");
        }
    }

    #[test]
    fn due_time_and_attempts_are_read_from_kafkit_and_spring_headers() {
        let kafkit = message(vec![
            (RETRY_DUE_AT, b"1700000000123".to_vec()),
            (dead_letter::ATTEMPTS, b"4".to_vec()),
        ]);
        assert_eq!(
            due_at(&kafkit),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        assert_eq!(prior_attempts(&kafkit), 4);
        // Spring: BigInteger.valueOf(1700000000123L).toByteArray() and a 4-byte int.
        let spring = message(vec![
            (
                SPRING_BACKOFF_TIMESTAMP,
                1_700_000_000_123u64.to_be_bytes()[2..].to_vec(),
            ),
            (SPRING_ATTEMPTS, 3u32.to_be_bytes().to_vec()),
        ]);
        assert_eq!(
            due_at(&spring),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123))
        );
        assert_eq!(prior_attempts(&spring), 2);
        assert_eq!(due_at(&message(vec![])), None);
        assert_eq!(prior_attempts(&message(vec![])), 0);
        let negative = message(vec![(SPRING_BACKOFF_TIMESTAMP, vec![0xff, 0x01])]);
        assert_eq!(due_at(&negative), None);
    }
}
