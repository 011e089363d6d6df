//! Client configuration: [`KafkaConfig`], read from `KAFKA_*` variables or built in code, and the
//! one place ([`KafkaConfig::to_client_config`] and its role-specific siblings) that turns it into
//! librdkafka keys.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use rdkafka::ClientConfig;

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Default client id, as librdkafka reports it to brokers.
pub const DEFAULT_CLIENT_ID: &str = "kafkit";
/// Default consumer session timeout (KafkaJS default).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Default consumer heartbeat interval (KafkaJS default).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(3_000);
/// Default maximum bytes fetched per partition (KafkaJS default, 1 MiB).
pub const DEFAULT_MAX_BYTES_PER_PARTITION: u32 = 1_048_576;
/// Default minimum bytes a fetch waits for.
pub const DEFAULT_MIN_BYTES: u32 = 1;
/// Default maximum time a fetch waits for `min_bytes`. librdkafka's 500 ms rather than KafkaJS's
/// 5 s: a shorter wait keeps shutdown and rebalances responsive.
pub const DEFAULT_MAX_WAIT_TIME: Duration = Duration::from_millis(500);
/// Default in-flight requests per connection (the idempotence maximum).
pub const DEFAULT_MAX_IN_FLIGHT_REQUESTS: u32 = 5;
/// Default request timeout (KafkaJS default).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(30_000);
/// Default backoff between protocol retries.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(300);
/// Default number of protocol retries of a failed produce request.
pub const DEFAULT_RETRIES: u32 = 5;
/// Default TCP connection setup timeout. librdkafka refuses less than 1 s.
pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_millis(10_000);
/// Default time a record may take from `send` to acknowledgement before it fails.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_millis(300_000);
/// Default maximum size in bytes of one produce batch (librdkafka default).
pub const DEFAULT_BATCH_SIZE: u32 = 1_000_000;
/// Default time the producer waits to fill a batch.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);

/// Payload compression of produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip (what KafkaJS's `CompressionTypes.GZIP` gives).
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Every codec, in the order Kafka numbers them.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The librdkafka name of the codec.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Compression::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("expected one of none, gzip, snappy, lz4, zstd, got {s:?}"))
    }
}

/// Where a new consumer group starts when it has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// From the oldest record still kept.
    #[default]
    Earliest,
    /// From the next record produced.
    Latest,
}

impl FromStr for OffsetReset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "earliest" => Ok(OffsetReset::Earliest),
            "latest" => Ok(OffsetReset::Latest),
            _ => Err(format!("expected earliest or latest, got {s:?}")),
        }
    }
}

/// SASL mechanisms kafkit supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN (only over TLS in production).
    Plain,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "plain" => Ok(SaslMechanism::Plain),
            "scram-sha-256" => Ok(SaslMechanism::ScramSha256),
            "scram-sha-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(format!(
                "expected plain, scram-sha-256 or scram-sha-512, got {s:?}"
            )),
        }
    }
}

/// TLS settings. Paths are PEM files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tls {
    /// CA bundle to verify the brokers with (system store when absent).
    pub ca_location: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub cert_location: Option<PathBuf>,
    /// Client private key for mutual TLS.
    pub key_location: Option<PathBuf>,
    /// Password of the client private key.
    pub key_password: Option<Secret>,
    /// Verify the broker's certificate (turn off only for tests).
    pub verify_certificate: bool,
}

/// SASL credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password, redacted in all output.
    pub password: Secret,
}

/// How the client authenticates and encrypts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Security {
    /// TLS, when enabled.
    pub tls: Option<Tls>,
    /// SASL, when enabled.
    pub sasl: Option<Sasl>,
}

impl Security {
    /// The librdkafka `security.protocol` these settings imply.
    pub fn protocol(&self) -> &'static str {
        match (&self.tls, &self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        }
    }
}

/// Everything needed to connect kafkit's clients to a cluster.
///
/// Build it in code (`KafkaConfig::new(["localhost:9092"])`) or from the environment with
/// [`KafkaConfig::from_env`]. Times are `Duration`s; the environment gives them in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// `KAFKA_ENABLED`: when false, clients refuse to start with [`Error::Disabled`].
    pub enabled: bool,
    /// `KAFKA_BROKERS`: bootstrap servers. Empty means "use the embedded development broker".
    pub brokers: Vec<String>,
    /// `KAFKA_CLIENT_ID`.
    pub client_id: String,
    /// `KAFKA_GROUP_ID`: default consumer group.
    pub group_id: Option<String>,
    /// `KAFKA_SESSION_TIMEOUT`.
    pub session_timeout: Duration,
    /// `KAFKA_HEARTBEAT_INTERVAL`.
    pub heartbeat_interval: Duration,
    /// `KAFKA_MAX_BYTES_PER_PARTITION`.
    pub max_bytes_per_partition: u32,
    /// `KAFKA_MIN_BYTES`.
    pub min_bytes: u32,
    /// `KAFKA_MAX_WAIT_TIME`.
    pub max_wait_time: Duration,
    /// `KAFKA_MAX_IN_FLIGHT_REQUESTS`.
    pub max_in_flight_requests: u32,
    /// `KAFKA_REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
    /// `KAFKA_RETRY_DELAYMS`.
    pub retry_delay: Duration,
    /// `KAFKA_RETRY_RETRIES`.
    pub retries: u32,
    /// `KAFKA_CONNECTION_TIMEOUT`.
    pub connection_timeout: Duration,
    /// `KAFKA_DELIVERY_TIMEOUT`.
    pub delivery_timeout: Duration,
    /// `KAFKA_BATCH_SIZE`.
    pub batch_size: u32,
    /// `KAFKA_LINGER_MS`.
    pub linger: Duration,
    /// `KAFKA_COMPRESSION`.
    pub compression: Compression,
    /// `KAFKA_IDEMPOTENT`: idempotent producer (acks=all, no duplicates on retry).
    pub idempotent: bool,
    /// `KAFKA_ALLOW_AUTO_TOPIC_CREATION`: let the broker create unknown topics on use.
    pub allow_auto_topic_creation: bool,
    /// `KAFKA_AUTO_OFFSET_RESET`.
    pub auto_offset_reset: OffsetReset,
    /// `KAFKA_SSL_*` and `KAFKA_SASL_*`.
    pub security: Security,
    /// `KAFKA_LIBRDKAFKA_<KEY>`: raw librdkafka properties, applied last (`_` becomes `.`).
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            enabled: true,
            brokers: Vec::new(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            group_id: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            max_bytes_per_partition: DEFAULT_MAX_BYTES_PER_PARTITION,
            min_bytes: DEFAULT_MIN_BYTES,
            max_wait_time: DEFAULT_MAX_WAIT_TIME,
            max_in_flight_requests: DEFAULT_MAX_IN_FLIGHT_REQUESTS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_delay: DEFAULT_RETRY_DELAY,
            retries: DEFAULT_RETRIES,
            connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            batch_size: DEFAULT_BATCH_SIZE,
            linger: DEFAULT_LINGER,
            compression: Compression::None,
            idempotent: true,
            allow_auto_topic_creation: true,
            auto_offset_reset: OffsetReset::Earliest,
            security: Security::default(),
            librdkafka: BTreeMap::new(),
        }
    }
}

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

/// librdkafka keys the passthrough map may not set, because kafkit's delivery guarantees rest
/// on them.
const RESERVED_KEYS: &[&str] = &["enable.auto.offset.store"];

impl KafkaConfig {
    /// A configuration for the given bootstrap servers, everything else default.
    pub fn new<I, S>(brokers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        KafkaConfig {
            brokers: brokers.into_iter().map(Into::into).collect(),
            ..KafkaConfig::default()
        }
    }

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
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|b| !b.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if vars
            .get("KAFKA_BROKERS")
            .is_some_and(|v| !v.trim().is_empty())
        {
            for broker in &brokers {
                validate_broker(broker)?;
            }
        }
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
            security: security_from(&vars)?,
            librdkafka: vars.passthrough(),
        };
        // librdkafka always enforces its request timeout; the KafkaJS flag is accepted for
        // compatibility but must still be a boolean.
        vars.parse("KAFKA_ENFORCE_REQUEST_TIMEOUT", true, parse_bool)?;
        config.validate()?;
        Ok(config)
    }

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
            if RESERVED_KEYS.contains(&key.as_str()) {
                return Err(Error::config(
                    format!(
                        "{LIBRDKAFKA_PREFIX}{}",
                        key.replace('.', "_").to_uppercase()
                    ),
                    format!("{key} is managed by kafkit (at-least-once delivery relies on it)"),
                ));
            }
        }
        Ok(())
    }

    /// The settings every client shares: bootstrap servers, identity, timeouts and security,
    /// without the passthrough map. The role-specific methods ([`KafkaConfig::to_producer_config`],
    /// [`KafkaConfig::to_consumer_config`], [`KafkaConfig::to_reader_config`],
    /// [`KafkaConfig::to_admin_config`]) add their keys and then apply the passthrough map last,
    /// so a `KAFKA_LIBRDKAFKA_*` key always wins over what kafkit derives.
    pub fn to_client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.brokers.join(","))
            .set("client.id", &self.client_id)
            .set("socket.timeout.ms", millis(self.request_timeout))
            .set(
                "socket.connection.setup.timeout.ms",
                millis(self.connection_timeout),
            )
            .set("retry.backoff.ms", millis(self.retry_delay))
            .set(
                "allow.auto.create.topics",
                self.allow_auto_topic_creation.to_string(),
            )
            .set("security.protocol", self.security.protocol());
        if let Some(tls) = &self.security.tls {
            set_path(&mut config, "ssl.ca.location", &tls.ca_location);
            set_path(&mut config, "ssl.certificate.location", &tls.cert_location);
            set_path(&mut config, "ssl.key.location", &tls.key_location);
            if let Some(password) = &tls.key_password {
                config.set("ssl.key.password", password.expose());
            }
            config.set(
                "enable.ssl.certificate.verification",
                tls.verify_certificate.to_string(),
            );
        }
        if let Some(sasl) = &self.security.sasl {
            config
                .set("sasl.mechanisms", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        config
    }

    /// Producer settings: idempotence, acks, batching, compression, delivery timeout and the
    /// Java-compatible murmur2 partitioner.
    pub fn to_producer_config(&self) -> ClientConfig {
        let mut config = self.to_client_config();
        config
            .set("enable.idempotence", self.idempotent.to_string())
            .set("acks", if self.idempotent { "all" } else { "1" })
            .set(
                "max.in.flight.requests.per.connection",
                self.max_in_flight_requests.to_string(),
            )
            .set("request.timeout.ms", millis(self.request_timeout))
            .set("message.timeout.ms", millis(self.delivery_timeout))
            .set("message.send.max.retries", self.retries.to_string())
            .set("batch.size", self.batch_size.to_string())
            .set("linger.ms", millis(self.linger))
            .set("compression.type", self.compression.as_str())
            // Same key → same partition as the Java client and KafkaJS's DefaultPartitioner.
            .set("partitioner", "murmur2_random");
        self.apply_passthrough(&mut config);
        config
    }

    /// Consumer settings for `group_id`: offsets are stored only by kafkit
    /// (`enable.auto.offset.store=false`) and committed by librdkafka every five seconds.
    pub fn to_consumer_config(&self, group_id: &str) -> ClientConfig {
        self.to_consumer_config_with(group_id, Some(Duration::from_secs(5)))
    }

    /// Consumer settings for `group_id`, committing stored offsets every `auto_commit`, or
    /// only when kafkit commits explicitly (`None`).
    pub fn to_consumer_config_with(
        &self,
        group_id: &str,
        auto_commit: Option<Duration>,
    ) -> ClientConfig {
        let mut config = self.to_client_config();
        match auto_commit {
            Some(interval) => config
                .set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", millis(interval)),
            None => config.set("enable.auto.commit", "false"),
        };
        config
            .set("group.id", group_id)
            .set("session.timeout.ms", millis(self.session_timeout))
            .set("heartbeat.interval.ms", millis(self.heartbeat_interval))
            .set(
                "max.partition.fetch.bytes",
                self.max_bytes_per_partition.to_string(),
            )
            .set("fetch.min.bytes", self.min_bytes.to_string())
            .set("fetch.wait.max.ms", millis(self.max_wait_time))
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match self.auto_offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            );
        // KIP-848 (`group.protocol=consumer`): the broker owns session and heartbeat timing,
        // and librdkafka refuses these keys.
        if self
            .librdkafka
            .get("group.protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case("consumer"))
        {
            config.remove("session.timeout.ms");
            config.remove("heartbeat.interval.ms");
        }
        self.apply_passthrough(&mut config);
        config
    }

    /// Admin and metadata client settings. Looking a topic up never creates it. Passthrough
    /// keys of consumer group membership (`max.poll.interval.ms`, `group.*`, ...) are left
    /// out: they mean nothing to these clients, and librdkafka checks some of them against
    /// defaults the admin client never changes (`max.poll.interval.ms` below the default
    /// session timeout would refuse to create it).
    pub fn to_admin_config(&self) -> ClientConfig {
        let mut config = self.to_client_config();
        config.set("allow.auto.create.topics", "false");
        self.apply_passthrough_outside_groups(&mut config);
        config
    }

    /// Settings of a group-less reader ([`crate::reader::Reader`]): assigned partitions, never
    /// commits on its own, reports the end of each partition, never creates a topic. `group_id`
    /// only names whose committed offsets it may read and write; it never joins that group.
    pub fn to_reader_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.to_client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "false")
            .set(
                "max.partition.fetch.bytes",
                self.max_bytes_per_partition.to_string(),
            );
        self.apply_passthrough_outside_groups(&mut config);
        config
    }

    fn apply_passthrough_outside_groups(&self, config: &mut ClientConfig) {
        for (key, value) in &self.librdkafka {
            if !GROUP_MEMBERSHIP_KEYS.contains(&key.as_str()) && !key.starts_with("group.") {
                config.set(key, value);
            }
        }
    }

    fn apply_passthrough(&self, config: &mut ClientConfig) {
        for (key, value) in &self.librdkafka {
            config.set(key, value);
        }
    }
}

/// librdkafka keys that only concern a consumer's group membership.
const GROUP_MEMBERSHIP_KEYS: &[&str] = &[
    "max.poll.interval.ms",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
];

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

fn set_path(config: &mut ClientConfig, key: &str, path: &Option<PathBuf>) {
    if let Some(path) = path {
        config.set(key, path.to_string_lossy());
    }
}

fn validate_broker(broker: &str) -> Result<()> {
    let port = broker.rsplit_once(':').map(|(_, port)| port);
    match port.map(str::parse::<u16>) {
        Some(Ok(_)) => Ok(()),
        _ => Err(Error::config(
            "KAFKA_BROKERS",
            format!("expected comma-separated host:port pairs, got {broker:?}"),
        )),
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

    fn from(vars: &[(&str, &str)]) -> Result<KafkaConfig> {
        KafkaConfig::from_vars(vars.iter().copied())
    }

    #[test]
    fn group_membership_passthrough_reaches_consumers_only() {
        let config = from(&[
            ("KAFKA_BROKERS", "b:9092"),
            ("KAFKA_LIBRDKAFKA_MAX_POLL_INTERVAL_MS", "6000"),
            ("KAFKA_LIBRDKAFKA_GROUP_PROTOCOL", "consumer"),
            ("KAFKA_LIBRDKAFKA_STATISTICS_INTERVAL_MS", "1000"),
        ])
        .unwrap();
        let consumer = config.to_consumer_config("g");
        assert_eq!(consumer.get("max.poll.interval.ms"), Some("6000"));
        assert_eq!(consumer.get("group.protocol"), Some("consumer"));
        // KIP-848: the broker owns the session; librdkafka refuses these keys with it.
        assert_eq!(consumer.get("session.timeout.ms"), None);
        assert_eq!(consumer.get("heartbeat.interval.ms"), None);
        let admin = config.to_admin_config();
        assert_eq!(admin.get("max.poll.interval.ms"), None);
        assert_eq!(admin.get("group.protocol"), None);
        assert_eq!(admin.get("statistics.interval.ms"), Some("1000"));
    }

    fn error_of(vars: &[(&str, &str)]) -> (String, String) {
        match from(vars) {
            Err(Error::Config { variable, reason }) => (variable, reason),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

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
        let tls = config.security.tls.as_ref().unwrap();
        assert_eq!(tls.ca_location, Some(PathBuf::from("/etc/ca.pem")));
        assert!(!tls.verify_certificate);
        let sasl = config.security.sasl.as_ref().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(sasl.password.expose(), "s3cret");
        assert_eq!(config.security.protocol(), "sasl_ssl");

        // And they reach librdkafka under its own names.
        let producer = config.to_producer_config();
        assert_eq!(
            producer.get("bootstrap.servers"),
            Some("kafka-1:9092,kafka-2:9093")
        );
        assert_eq!(producer.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(producer.get("compression.type"), Some("zstd"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("linger.ms"), Some("20"));
        assert_eq!(producer.get("message.timeout.ms"), Some("60000"));
        assert_eq!(producer.get("statistics.interval.ms"), Some("1000"));
        assert_eq!(producer.get("partitioner"), Some("murmur2_random"));
        let consumer = config.to_consumer_config("orders");
        assert_eq!(consumer.get("session.timeout.ms"), Some("45000"));
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("250"));
        assert_eq!(consumer.get("auto.offset.reset"), Some("latest"));
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
        assert_eq!(error_of(&[("KAFKA_ENABLED", "maybe")]).0, "KAFKA_ENABLED");
        assert_eq!(
            error_of(&[("KAFKA_BATCH_SIZE", "-1")]).0,
            "KAFKA_BATCH_SIZE"
        );
        assert_eq!(
            error_of(&[("KAFKA_COMPRESSION", "brotli")]).0,
            "KAFKA_COMPRESSION"
        );
        assert_eq!(
            error_of(&[("KAFKA_BROKERS", "localhost")]).0,
            "KAFKA_BROKERS"
        );
        assert_eq!(
            error_of(&[
                ("KAFKA_SASL_MECHANISM", "gssapi"),
                ("KAFKA_SASL_PASSWORD", "x")
            ])
            .0,
            "KAFKA_SASL_MECHANISM"
        );
        assert_eq!(
            error_of(&[
                ("KAFKA_SASL_MECHANISM", "plain"),
                ("KAFKA_SASL_USERNAME", "u")
            ])
            .0,
            "KAFKA_SASL_PASSWORD"
        );
        assert_eq!(
            error_of(&[("KAFKA_SASL_PASSWORD", "x")]).0,
            "KAFKA_SASL_PASSWORD"
        );
        assert_eq!(
            error_of(&[("KAFKA_SSL_CA_LOCATION", "/ca.pem")]).0,
            "KAFKA_SSL_CA_LOCATION"
        );
        assert_eq!(
            error_of(&[("KAFKA_ENFORCE_REQUEST_TIMEOUT", "sometimes")]).0,
            "KAFKA_ENFORCE_REQUEST_TIMEOUT"
        );
    }

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
        assert_eq!(
            error_of(&[("KAFKA_MAX_IN_FLIGHT_REQUESTS", "10")]).0,
            "KAFKA_MAX_IN_FLIGHT_REQUESTS"
        );
        assert_eq!(
            error_of(&[("KAFKA_LIBRDKAFKA_ENABLE_AUTO_OFFSET_STORE", "true")]).0,
            "KAFKA_LIBRDKAFKA_ENABLE_AUTO_OFFSET_STORE"
        );
        assert_eq!(
            error_of(&[("KAFKA_CONNECTION_TIMEOUT", "500")]).0,
            "KAFKA_CONNECTION_TIMEOUT"
        );
    }

    #[test]
    fn disabled_is_a_state_not_a_crash() {
        let config = from(&[("KAFKA_ENABLED", "false")]).unwrap();
        assert!(matches!(config.ensure_enabled(), Err(Error::Disabled)));
    }

    #[test]
    fn secrets_never_reach_debug_output() {
        let config = from(&[
            ("KAFKA_SASL_MECHANISM", "plain"),
            ("KAFKA_SASL_USERNAME", "svc"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            ("KAFKA_SSL_ENABLED", "true"),
            ("KAFKA_SSL_KEY_PASSWORD", "keypass2"),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("keypass2"),
            "{debug}"
        );
        assert!(debug.contains("***"));
    }
}
