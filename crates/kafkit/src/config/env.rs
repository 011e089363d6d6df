//! Reading a [`KafkaConfig`] from `KAFKA_*` variables.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use super::{KafkaConfig, Sasl, Security, Tls, parse_brokers};
use crate::error::{Error, Result};
use crate::secret::Secret;

/// Every variable [`KafkaConfig::from_env`] understands, besides the `KAFKA_LIBRDKAFKA_` prefix.
pub const ENV_VARIABLES: &[&str] = &[
    "KAFKA_ENABLED",
    "KAFKA_BROKERS",
    "KAFKA_CLIENT_ID",
    "KAFKA_GROUP_ID",
    "KAFKA_SESSION_TIMEOUT",
    "KAFKA_HEARTBEAT_INTERVAL",
    "KAFKA_MAX_BYTES_PER_PARTITION",
    "KAFKA_MIN_BYTES",
    "KAFKA_MAX_WAIT_TIME",
    "KAFKA_MAX_IN_FLIGHT_REQUESTS",
    "KAFKA_REQUEST_TIMEOUT",
    "KAFKA_ENFORCE_REQUEST_TIMEOUT",
    "KAFKA_RETRY_DELAYMS",
    "KAFKA_RETRY_RETRIES",
    "KAFKA_CONNECTION_TIMEOUT",
    "KAFKA_DELIVERY_TIMEOUT",
    "KAFKA_BATCH_SIZE",
    "KAFKA_LINGER_MS",
    "KAFKA_COMPRESSION",
    "KAFKA_IDEMPOTENT",
    "KAFKA_ALLOW_AUTO_TOPIC_CREATION",
    "KAFKA_AUTO_OFFSET_RESET",
    "KAFKA_ISOLATION_LEVEL",
    "KAFKA_TRANSACTIONAL_ID",
    "KAFKA_TRANSACTIONAL_ID_SUFFIX",
    "KAFKA_TRANSACTION_TIMEOUT",
    "KAFKA_SSL_ENABLED",
    "KAFKA_SSL_CA_LOCATION",
    "KAFKA_SSL_CERT_LOCATION",
    "KAFKA_SSL_KEY_LOCATION",
    "KAFKA_SSL_KEY_PASSWORD",
    "KAFKA_SSL_REJECT_UNAUTHORIZED",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
];

/// Prefix of raw librdkafka properties in the environment.
pub const LIBRDKAFKA_PREFIX: &str = "KAFKA_LIBRDKAFKA_";

impl KafkaConfig {
    /// Reads the process environment. Malformed values are errors naming the variable; unknown
    /// `KAFKA_*` names are logged as warnings (they may belong to other tools).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::vars())
    }

    /// Reads configuration from `(name, value)` pairs, as [`KafkaConfig::from_env`] does.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = EnvVars::new(vars);
        for name in vars.unknown() {
            tracing::warn!(variable = %name, "unknown KAFKA_ variable ignored");
        }
        let defaults = KafkaConfig::default();
        let brokers = vars
            .get("KAFKA_BROKERS")
            .map_or(Ok(Vec::new()), parse_brokers)?;
        let config = KafkaConfig {
            enabled: vars.parse("KAFKA_ENABLED", defaults.enabled, parse_bool)?,
            brokers,
            client_id: vars
                .get("KAFKA_CLIENT_ID")
                .map_or(defaults.client_id, str::to_owned),
            group_id: vars.get("KAFKA_GROUP_ID").map(str::to_owned),
            session_timeout: vars.millis("KAFKA_SESSION_TIMEOUT", defaults.session_timeout)?,
            heartbeat_interval: vars
                .millis("KAFKA_HEARTBEAT_INTERVAL", defaults.heartbeat_interval)?,
            max_bytes_per_partition: vars.number(
                "KAFKA_MAX_BYTES_PER_PARTITION",
                defaults.max_bytes_per_partition,
            )?,
            min_bytes: vars.number("KAFKA_MIN_BYTES", defaults.min_bytes)?,
            max_wait_time: vars.millis("KAFKA_MAX_WAIT_TIME", defaults.max_wait_time)?,
            max_in_flight_requests: vars.number(
                "KAFKA_MAX_IN_FLIGHT_REQUESTS",
                defaults.max_in_flight_requests,
            )?,
            request_timeout: vars.millis("KAFKA_REQUEST_TIMEOUT", defaults.request_timeout)?,
            retry_delay: vars.millis("KAFKA_RETRY_DELAYMS", defaults.retry_delay)?,
            retries: vars.number("KAFKA_RETRY_RETRIES", defaults.retries)?,
            connection_timeout: vars
                .millis("KAFKA_CONNECTION_TIMEOUT", defaults.connection_timeout)?,
            delivery_timeout: vars.millis("KAFKA_DELIVERY_TIMEOUT", defaults.delivery_timeout)?,
            batch_size: vars.number("KAFKA_BATCH_SIZE", defaults.batch_size)?,
            linger: vars.millis("KAFKA_LINGER_MS", defaults.linger)?,
            compression: vars.parse("KAFKA_COMPRESSION", defaults.compression, str::parse)?,
            idempotent: vars.parse("KAFKA_IDEMPOTENT", defaults.idempotent, parse_bool)?,
            allow_auto_topic_creation: vars.parse(
                "KAFKA_ALLOW_AUTO_TOPIC_CREATION",
                defaults.allow_auto_topic_creation,
                parse_bool,
            )?,
            auto_offset_reset: vars.parse(
                "KAFKA_AUTO_OFFSET_RESET",
                defaults.auto_offset_reset,
                str::parse,
            )?,
            isolation: vars.parse("KAFKA_ISOLATION_LEVEL", defaults.isolation, str::parse)?,
            transactional_id: vars.get("KAFKA_TRANSACTIONAL_ID").map(str::to_owned),
            transactional_id_suffix: vars.parse(
                "KAFKA_TRANSACTIONAL_ID_SUFFIX",
                defaults.transactional_id_suffix,
                str::parse,
            )?,
            transaction_timeout: vars
                .millis("KAFKA_TRANSACTION_TIMEOUT", defaults.transaction_timeout)?,
            security: security_from(&vars)?,
            librdkafka: vars.passthrough(),
        };
        // librdkafka always enforces its request timeout; the KafkaJS flag is accepted for
        // compatibility but must still be a boolean.
        vars.parse("KAFKA_ENFORCE_REQUEST_TIMEOUT", true, parse_bool)?;
        config.validate()?;
        Ok(config)
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected true or false, got {value:?}")),
    }
}

fn security_from(vars: &EnvVars) -> Result<Security> {
    let tls_enabled = vars.parse("KAFKA_SSL_ENABLED", false, parse_bool)?;
    let tls_settings = [
        "KAFKA_SSL_CA_LOCATION",
        "KAFKA_SSL_CERT_LOCATION",
        "KAFKA_SSL_KEY_LOCATION",
        "KAFKA_SSL_KEY_PASSWORD",
    ];
    if !tls_enabled && let Some(name) = tls_settings.iter().find(|name| vars.get(name).is_some()) {
        return Err(Error::config(
            *name,
            "is set but KAFKA_SSL_ENABLED is not true",
        ));
    }
    let tls = tls_enabled
        .then(|| -> Result<Tls> {
            Ok(Tls {
                ca_location: vars.get("KAFKA_SSL_CA_LOCATION").map(PathBuf::from),
                cert_location: vars.get("KAFKA_SSL_CERT_LOCATION").map(PathBuf::from),
                key_location: vars.get("KAFKA_SSL_KEY_LOCATION").map(PathBuf::from),
                key_password: vars.get("KAFKA_SSL_KEY_PASSWORD").map(Secret::from),
                verify_certificate: vars.parse(
                    "KAFKA_SSL_REJECT_UNAUTHORIZED",
                    true,
                    parse_bool,
                )?,
            })
        })
        .transpose()?;
    let sasl = match vars.get("KAFKA_SASL_MECHANISM") {
        None => {
            if let Some(name) = ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"]
                .iter()
                .find(|name| vars.get(name).is_some())
            {
                return Err(Error::config(
                    *name,
                    "is set but KAFKA_SASL_MECHANISM is not",
                ));
            }
            None
        }
        Some(mechanism) => Some(Sasl {
            mechanism: mechanism
                .parse()
                .map_err(|reason| Error::config("KAFKA_SASL_MECHANISM", reason))?,
            username: vars.get("KAFKA_SASL_USERNAME").unwrap_or("").to_owned(),
            password: Secret::from(vars.get("KAFKA_SASL_PASSWORD").ok_or_else(|| {
                Error::config(
                    "KAFKA_SASL_PASSWORD",
                    "required when KAFKA_SASL_MECHANISM is set",
                )
            })?),
        }),
    };
    Ok(Security { tls, sasl })
}

/// The `KAFKA_*` variables of an environment, with typed accessors whose errors name the
/// variable.
struct EnvVars(HashMap<String, String>);

impl EnvVars {
    fn new<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        EnvVars(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .filter(|(k, _)| k.starts_with("KAFKA_"))
                .collect(),
        )
    }

    /// The value of `name`, with surrounding blanks removed; an empty value counts as unset.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T>(
        &self,
        name: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => parse(value).map_err(|reason| Error::config(name, reason)),
        }
    }

    fn millis(&self, name: &str, default: Duration) -> Result<Duration> {
        self.parse(name, default, |value| {
            value
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("expected milliseconds, got {value:?}"))
        })
    }

    fn number(&self, name: &str, default: u32) -> Result<u32> {
        self.parse(name, default, |value| {
            value
                .parse::<u32>()
                .map_err(|_| format!("expected a non-negative integer, got {value:?}"))
        })
    }

    fn passthrough(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix(LIBRDKAFKA_PREFIX)?;
                Some((key.to_ascii_lowercase().replace('_', "."), value.clone()))
            })
            .collect()
    }

    fn unknown(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .0
            .keys()
            .map(String::as_str)
            .filter(|name| !ENV_VARIABLES.contains(name) && !name.starts_with(LIBRDKAFKA_PREFIX))
            .collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{error_of, from};
    use crate::config::{Compression, Isolation, OffsetReset, SaslMechanism};

    #[test]
    fn empty_environment_gives_defaults_and_embedded_broker() {
        let config = from(&[]).unwrap();
        assert_eq!(config, KafkaConfig::default());
        assert!(config.brokers.is_empty());
    }

    #[test]
    fn every_variable_is_parsed() {
        let config = from(&[
            ("KAFKA_ENABLED", "true"),
            ("KAFKA_BROKERS", "kafka-1:9092, kafka-2:9093"),
            ("KAFKA_CLIENT_ID", "orders-api"),
            ("KAFKA_GROUP_ID", "orders"),
            ("KAFKA_SESSION_TIMEOUT", "45000"),
            ("KAFKA_HEARTBEAT_INTERVAL", "5000"),
            ("KAFKA_MAX_BYTES_PER_PARTITION", "2097152"),
            ("KAFKA_MIN_BYTES", "10"),
            ("KAFKA_MAX_WAIT_TIME", "250"),
            ("KAFKA_MAX_IN_FLIGHT_REQUESTS", "3"),
            ("KAFKA_REQUEST_TIMEOUT", "20000"),
            ("KAFKA_ENFORCE_REQUEST_TIMEOUT", "false"),
            ("KAFKA_RETRY_DELAYMS", "150"),
            ("KAFKA_RETRY_RETRIES", "8"),
            ("KAFKA_CONNECTION_TIMEOUT", "3000"),
            ("KAFKA_DELIVERY_TIMEOUT", "60000"),
            ("KAFKA_BATCH_SIZE", "65536"),
            ("KAFKA_LINGER_MS", "20"),
            ("KAFKA_COMPRESSION", "ZSTD"),
            ("KAFKA_IDEMPOTENT", "true"),
            ("KAFKA_ALLOW_AUTO_TOPIC_CREATION", "false"),
            ("KAFKA_AUTO_OFFSET_RESET", "latest"),
            ("KAFKA_ISOLATION_LEVEL", "read_uncommitted"),
            ("KAFKA_TRANSACTIONAL_ID", "orders-writer"),
            ("KAFKA_TRANSACTIONAL_ID_SUFFIX", "pid"),
            ("KAFKA_TRANSACTION_TIMEOUT", "20000"),
            ("KAFKA_SSL_ENABLED", "true"),
            ("KAFKA_SSL_CA_LOCATION", "/etc/ca.pem"),
            ("KAFKA_SSL_CERT_LOCATION", "/etc/cert.pem"),
            ("KAFKA_SSL_KEY_LOCATION", "/etc/key.pem"),
            ("KAFKA_SSL_KEY_PASSWORD", "keypass"),
            ("KAFKA_SSL_REJECT_UNAUTHORIZED", "false"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "svc"),
            ("KAFKA_SASL_PASSWORD", "s3cret"),
            ("KAFKA_LIBRDKAFKA_STATISTICS_INTERVAL_MS", "1000"),
        ])
        .unwrap();
        assert_eq!(config.brokers, ["kafka-1:9092", "kafka-2:9093"]);
        assert_eq!(config.client_id, "orders-api");
        assert_eq!(config.group_id.as_deref(), Some("orders"));
        assert_eq!(config.session_timeout, Duration::from_millis(45_000));
        assert_eq!(config.heartbeat_interval, Duration::from_millis(5_000));
        assert_eq!(config.max_bytes_per_partition, 2_097_152);
        assert_eq!(config.min_bytes, 10);
        assert_eq!(config.max_wait_time, Duration::from_millis(250));
        assert_eq!(config.max_in_flight_requests, 3);
        assert_eq!(config.request_timeout, Duration::from_millis(20_000));
        assert_eq!(config.retry_delay, Duration::from_millis(150));
        assert_eq!(config.retries, 8);
        assert_eq!(config.connection_timeout, Duration::from_millis(3_000));
        assert_eq!(config.delivery_timeout, Duration::from_millis(60_000));
        assert_eq!(config.batch_size, 65_536);
        assert_eq!(config.linger, Duration::from_millis(20));
        assert_eq!(config.compression, Compression::Zstd);
        assert!(!config.allow_auto_topic_creation);
        assert_eq!(config.auto_offset_reset, OffsetReset::Latest);
        assert_eq!(config.isolation, Isolation::ReadUncommitted);
        assert_eq!(
            config.instance_transactional_id().unwrap(),
            Some(format!("orders-writer-{}", std::process::id()))
        );
        assert_eq!(config.transaction_timeout, Duration::from_millis(20_000));
        let tls = config.security.tls.as_ref().unwrap();
        assert_eq!(tls.ca_location, Some(PathBuf::from("/etc/ca.pem")));
        assert!(!tls.verify_certificate);
        let sasl = config.security.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(sasl.password.expose(), "s3cret");
        assert_eq!(config.security.protocol(), "sasl_ssl");
        assert_eq!(
            config
                .librdkafka
                .get("statistics.interval.ms")
                .map(String::as_str),
            Some("1000")
        );
    }

    #[test]
    fn malformed_values_name_the_variable() {
        assert_eq!(
            error_of(&[("KAFKA_SESSION_TIMEOUT", "30s")]),
            (
                "KAFKA_SESSION_TIMEOUT".to_owned(),
                "expected milliseconds, got \"30s\"".to_owned()
            )
        );
        for (vars, variable) in [
            (&[("KAFKA_ENABLED", "maybe")][..], "KAFKA_ENABLED"),
            (
                &[("KAFKA_ISOLATION_LEVEL", "serializable")],
                "KAFKA_ISOLATION_LEVEL",
            ),
            (
                &[("KAFKA_TRANSACTION_TIMEOUT", "1m")],
                "KAFKA_TRANSACTION_TIMEOUT",
            ),
            (
                &[
                    ("KAFKA_TRANSACTIONAL_ID", "t"),
                    ("KAFKA_TRANSACTIONAL_ID_SUFFIX", "random"),
                ],
                "KAFKA_TRANSACTIONAL_ID_SUFFIX",
            ),
            (&[("KAFKA_BATCH_SIZE", "-1")], "KAFKA_BATCH_SIZE"),
            (&[("KAFKA_COMPRESSION", "brotli")], "KAFKA_COMPRESSION"),
            (&[("KAFKA_BROKERS", "localhost")], "KAFKA_BROKERS"),
            (
                &[
                    ("KAFKA_SASL_MECHANISM", "gssapi"),
                    ("KAFKA_SASL_PASSWORD", "x"),
                ],
                "KAFKA_SASL_MECHANISM",
            ),
            (
                &[
                    ("KAFKA_SASL_MECHANISM", "plain"),
                    ("KAFKA_SASL_USERNAME", "u"),
                ],
                "KAFKA_SASL_PASSWORD",
            ),
            (&[("KAFKA_SASL_PASSWORD", "x")], "KAFKA_SASL_PASSWORD"),
            (
                &[("KAFKA_SSL_CA_LOCATION", "/ca.pem")],
                "KAFKA_SSL_CA_LOCATION",
            ),
            (
                &[("KAFKA_ENFORCE_REQUEST_TIMEOUT", "sometimes")],
                "KAFKA_ENFORCE_REQUEST_TIMEOUT",
            ),
        ] {
            assert_eq!(error_of(vars).0, variable, "{vars:?}");
        }
    }
}
