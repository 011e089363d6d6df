//! Checking a [`KafkaConfig`]: contradictions and malformed values are errors, never guessed
//! around.

use std::time::Duration;

use super::{KafkaConfig, LIBRDKAFKA_PREFIX};
use crate::error::{Error, Result};

/// librdkafka keys the passthrough map may not set, and why: kafkit's delivery guarantees rest
/// on them, or a `KAFKA_*` variable of kafkit's own sets them.
const RESERVED_KEYS: &[(&str, &str)] = &[
    (
        "enable.auto.offset.store",
        "is managed by kafkit (at-least-once delivery relies on it)",
    ),
    (
        "transactional.id",
        "would make every producer transactional: set KAFKA_TRANSACTIONAL_ID, which only \
         transactional producers use",
    ),
    ("isolation.level", "is set by KAFKA_ISOLATION_LEVEL"),
    (
        "transaction.timeout.ms",
        "is set by KAFKA_TRANSACTION_TIMEOUT",
    ),
];

impl KafkaConfig {
    /// Fails with [`Error::Disabled`] when `KAFKA_ENABLED=false`.
    pub fn ensure_enabled(&self) -> Result<()> {
        if self.enabled {
            Ok(())
        } else {
            Err(Error::Disabled)
        }
    }

    /// Checks the settings against each other; contradictions are errors, never guessed around.
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat_interval >= self.session_timeout {
            return Err(Error::config(
                "KAFKA_HEARTBEAT_INTERVAL",
                format!(
                    "must be lower than KAFKA_SESSION_TIMEOUT ({} ms), got {} ms",
                    self.session_timeout.as_millis(),
                    self.heartbeat_interval.as_millis()
                ),
            ));
        }
        if self.idempotent && !(1..=5).contains(&self.max_in_flight_requests) {
            return Err(Error::config(
                "KAFKA_MAX_IN_FLIGHT_REQUESTS",
                format!(
                    "must be between 1 and 5 for an idempotent producer, got {}",
                    self.max_in_flight_requests
                ),
            ));
        }
        if self.connection_timeout < Duration::from_millis(1000) {
            return Err(Error::config(
                "KAFKA_CONNECTION_TIMEOUT",
                format!(
                    "must be at least 1000 ms (librdkafka's minimum), got {} ms",
                    self.connection_timeout.as_millis()
                ),
            ));
        }
        if self.client_id.is_empty() {
            return Err(Error::config("KAFKA_CLIENT_ID", "must not be empty"));
        }
        if let Some(tls) = &self.security.tls
            && tls.cert_location.is_some() != tls.key_location.is_some()
        {
            return Err(Error::config(
                "KAFKA_SSL_CERT_LOCATION",
                "a client certificate needs KAFKA_SSL_KEY_LOCATION and the other way round",
            ));
        }
        if let Some(sasl) = &self.security.sasl
            && sasl.username.is_empty()
        {
            return Err(Error::config(
                "KAFKA_SASL_USERNAME",
                "required when KAFKA_SASL_MECHANISM is set",
            ));
        }
        for key in self.librdkafka.keys() {
            if let Some((_, reason)) = RESERVED_KEYS.iter().find(|(k, _)| k == key) {
                return Err(Error::config(
                    format!(
                        "{LIBRDKAFKA_PREFIX}{}",
                        key.replace('.', "_").to_uppercase()
                    ),
                    format!("{key} {reason}"),
                ));
            }
        }
        self.validate_transactions()
    }

    /// Transactions need the idempotent producer, a timeout librdkafka accepts, and an id to
    /// put a suffix on.
    fn validate_transactions(&self) -> Result<()> {
        if self.transaction_timeout < Duration::from_millis(1000) {
            return Err(Error::config(
                "KAFKA_TRANSACTION_TIMEOUT",
                format!(
                    "must be at least 1000 ms, got {} ms",
                    self.transaction_timeout.as_millis()
                ),
            ));
        }
        if self.transactional_id.is_some() && !self.idempotent {
            return Err(Error::config(
                "KAFKA_IDEMPOTENT",
                "must be true with KAFKA_TRANSACTIONAL_ID: transactions need the idempotent producer",
            ));
        }
        if self.transactional_id.is_none()
            && self.transactional_id_suffix != super::TransactionalIdSuffix::None
        {
            return Err(Error::config(
                "KAFKA_TRANSACTIONAL_ID_SUFFIX",
                "is set but KAFKA_TRANSACTIONAL_ID is not",
            ));
        }
        Ok(())
    }
}

/// Splits a comma-separated bootstrap list (`KAFKA_BROKERS`, the CLI's `--brokers`) into
/// `host:port` entries. Blanks around entries and empty entries are ignored, so an empty list
/// gives no brokers; an entry without a numeric port is an error naming it.
///
/// ```
/// # use kafkit::config::parse_brokers;
/// assert_eq!(parse_brokers("kafka-1:9092, kafka-2:9093").unwrap(), ["kafka-1:9092", "kafka-2:9093"]);
/// assert_eq!(parse_brokers("kafka-1").unwrap_err().to_string(), r#"KAFKA_BROKERS: "kafka-1" has no port"#);
/// ```
pub fn parse_brokers(list: &str) -> Result<Vec<String>> {
    list.split(',')
        .map(str::trim)
        .filter(|broker| !broker.is_empty())
        .map(|broker| match broker.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => Ok(broker.to_owned()),
            Some((_, port)) => Err(Error::config(
                "KAFKA_BROKERS",
                format!("{broker:?} has no valid port (expected host:port, got port {port:?})"),
            )),
            None => Err(Error::config(
                "KAFKA_BROKERS",
                format!("{broker:?} has no port"),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{error_of, from};

    #[test]
    fn contradictions_are_refused() {
        let (variable, reason) = error_of(&[
            ("KAFKA_SESSION_TIMEOUT", "3000"),
            ("KAFKA_HEARTBEAT_INTERVAL", "3000"),
        ]);
        assert_eq!(variable, "KAFKA_HEARTBEAT_INTERVAL");
        assert!(
            reason.contains("lower than KAFKA_SESSION_TIMEOUT"),
            "{reason}"
        );
        for (vars, variable) in [
            (
                &[("KAFKA_MAX_IN_FLIGHT_REQUESTS", "10")][..],
                "KAFKA_MAX_IN_FLIGHT_REQUESTS",
            ),
            (
                &[("KAFKA_LIBRDKAFKA_ENABLE_AUTO_OFFSET_STORE", "true")],
                "KAFKA_LIBRDKAFKA_ENABLE_AUTO_OFFSET_STORE",
            ),
            (
                &[("KAFKA_CONNECTION_TIMEOUT", "500")],
                "KAFKA_CONNECTION_TIMEOUT",
            ),
            (
                &[("KAFKA_LIBRDKAFKA_TRANSACTIONAL_ID", "x")],
                "KAFKA_LIBRDKAFKA_TRANSACTIONAL_ID",
            ),
            (
                &[("KAFKA_LIBRDKAFKA_ISOLATION_LEVEL", "read_uncommitted")],
                "KAFKA_LIBRDKAFKA_ISOLATION_LEVEL",
            ),
            (
                &[("KAFKA_TRANSACTION_TIMEOUT", "999")],
                "KAFKA_TRANSACTION_TIMEOUT",
            ),
            (
                &[
                    ("KAFKA_TRANSACTIONAL_ID", "t"),
                    ("KAFKA_IDEMPOTENT", "false"),
                ],
                "KAFKA_IDEMPOTENT",
            ),
            (
                &[("KAFKA_TRANSACTIONAL_ID_SUFFIX", "hostname")],
                "KAFKA_TRANSACTIONAL_ID_SUFFIX",
            ),
        ] {
            assert_eq!(error_of(vars).0, variable, "{vars:?}");
        }
    }

    #[test]
    fn disabled_is_a_state_not_a_crash() {
        let config = from(&[("KAFKA_ENABLED", "false")]).unwrap();
        assert!(matches!(config.ensure_enabled(), Err(Error::Disabled)));
    }

    #[test]
    fn broker_lists_are_split_and_each_entry_needs_a_port() {
        // Blanks and empty entries are dropped; an empty list means no brokers.
        assert_eq!(
            parse_brokers(" kafka-1:9092 ,, [::1]:9093 ,").unwrap(),
            ["kafka-1:9092", "[::1]:9093"]
        );
        assert!(parse_brokers(" , ").unwrap().is_empty());
        // The error names the variable and the entry at fault, not the whole list.
        assert_eq!(
            parse_brokers("kafka-1:9092,kafka-2")
                .unwrap_err()
                .to_string(),
            r#"KAFKA_BROKERS: "kafka-2" has no port"#
        );
        assert_eq!(
            parse_brokers("kafka-1:90x2").unwrap_err().to_string(),
            r#"KAFKA_BROKERS: "kafka-1:90x2" has no valid port (expected host:port, got port "90x2")"#
        );
        assert!(parse_brokers("kafka-1:65536").is_err());
    }
}
