//! `TopicPattern`: the topic globs of API key grants, and the internal topics that only a
//! pattern spelling out their prefix reaches.

/// Prefixes of the topics Kafka and its ecosystem keep for themselves: the broker's (`__`),
/// Schema Registry's (`_schemas`), Kafka Connect's (`connect-configs`, `connect-offsets`,
/// `connect-status`) and Confluent Platform's (`_confluent-command`, `_confluent-metrics`,
/// `_confluent-telemetry-metrics`, `_confluent_balancer_*`, ...). Writing them corrupts the
/// cluster's own state; reading them leaks other applications' offsets, transactions and
/// configurations.
const INTERNAL_PREFIXES: &[&str] = &["__", "_schemas", "connect-", "_confluent"];

/// A topic glob: `*` matches any run of characters, `?` exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Parses a pattern: topic-name characters plus `*` and `?`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("empty topic pattern".to_owned());
        }
        match raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?')))
        {
            Some(c) => Err(format!("topic pattern {raw:?} contains {c:?}")),
            None => Ok(TopicPattern(raw.to_owned())),
        }
    }

    /// True when `topic` matches. An internal topic (see `INTERNAL_PREFIXES`) matches only a
    /// pattern whose wildcard-free start contains its whole prefix: `__*` reaches
    /// `__consumer_offsets`, `*` and `_*` do not.
    pub fn matches(&self, topic: &str) -> bool {
        if let Some(prefix) = INTERNAL_PREFIXES.iter().find(|p| topic.starts_with(**p))
            && !self.literal_start().starts_with(prefix)
        {
            return false;
        }
        glob(self.0.as_bytes(), topic.as_bytes())
    }

    /// The pattern up to its first wildcard.
    fn literal_start(&self) -> &str {
        self.0
            .find(['*', '?'])
            .map_or(self.0.as_str(), |end| &self.0[..end])
    }
}

/// Iterative glob matching with single-star backtracking: linear in practice, never
/// exponential, whatever pattern an operator writes.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_topic_names() {
        let cases = [
            ("orders.*", "orders.eu", true),
            ("orders.*", "orders.", true),
            ("orders.*", "orders", false),
            ("orders.*", "xorders.eu", false),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("audit", "audit", true),
            ("audit", "audits", false),
            ("t?", "t1", true),
            ("t?", "t12", false),
        ];
        for (pattern, topic, expected) in cases {
            let pattern = TopicPattern::parse(pattern).unwrap();
            assert_eq!(pattern.matches(topic), expected, "{pattern:?} vs {topic}");
        }
    }

    #[test]
    fn internal_topics_need_a_grant_that_names_their_prefix() {
        let cases = [
            // `*` and other broad patterns do not reach the cluster's own topics.
            ("*", "__consumer_offsets", false),
            ("*", "__transaction_state", false),
            ("*", "__anything", false),
            ("*", "_schemas", false),
            ("*", "connect-offsets", false),
            ("_*", "__consumer_offsets", false),
            ("*offsets", "__consumer_offsets", false),
            ("?_consumer_offsets", "__consumer_offsets", false),
            ("conn*", "connect-status", false),
            ("_schema?", "_schemas", false),
            ("*", "_confluent-command", false),
            ("*", "_confluent-telemetry-metrics", false),
            ("_*", "_confluent_balancer_api_state", false),
            // A pattern that spells the internal prefix out does.
            ("__consumer_offsets", "__consumer_offsets", true),
            ("__*", "__transaction_state", true),
            ("_schemas", "_schemas", true),
            ("connect-*", "connect-status", true),
            ("connect-offsets", "connect-offsets", true),
            ("_confluent*", "_confluent_balancer_api_state", true),
            ("_confluent-*", "_confluent-metrics", true),
            // Names that only look alike are ordinary topics.
            ("*", "_private", true),
            ("*", "connector-events", true),
            ("*", "orders__eu", true),
        ];
        for (pattern, topic, expected) in cases {
            let pattern = TopicPattern::parse(pattern).unwrap();
            assert_eq!(pattern.matches(topic), expected, "{pattern:?} vs {topic}");
        }
    }
}
