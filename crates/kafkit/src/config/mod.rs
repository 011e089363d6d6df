//! Client configuration: [`KafkaConfig`], read from `KAFKA_*` variables or built in code, and the
//! one place ([`KafkaConfig::to_client_config`] and its role-specific siblings) that turns it into
//! librdkafka keys.
//!
//! The module is split by role: the types live here and in `security`, `env` reads `KAFKA_*`
//! variables, `validate` refuses contradictions, and `librdkafka` holds the translation to
//! librdkafka keys. Everything is re-exported here, so `kafkit::config::X` is the one path.

mod env;
mod librdkafka;
mod security;
mod validate;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

pub use env::{ENV_VARIABLES, LIBRDKAFKA_PREFIX};
pub use security::{Sasl, SaslMechanism, Security, Tls};
pub use validate::parse_brokers;

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
/// Default longest time a transaction may stay open before the broker aborts it (the Java
/// client's and librdkafka's default).
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_millis(60_000);

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

/// Which records a consumer or reader sees of transactional producers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Only records of committed transactions (and non-transactional ones), up to the last
    /// stable offset: aborted and still-open transactions are invisible. librdkafka's default.
    #[default]
    ReadCommitted,
    /// Every record written, aborted and open transactions included.
    ReadUncommitted,
}

impl Isolation {
    /// The librdkafka (and Kafka) name: `read_committed` or `read_uncommitted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

impl FromStr for Isolation {
    type Err = String;

    /// Reads `read_committed` or `read_uncommitted`, with `-` or `_`, any case.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "read_committed" => Ok(Isolation::ReadCommitted),
            "read_uncommitted" => Ok(Isolation::ReadUncommitted),
            _ => Err(format!(
                "expected read_committed or read_uncommitted, got {s:?}"
            )),
        }
    }
}

/// What is appended to `KAFKA_TRANSACTIONAL_ID` to make it unique per instance
/// (`KAFKA_TRANSACTIONAL_ID_SUFFIX`).
///
/// A transactional id names one producer: a second producer starting with the same id fences
/// the first (the first's open transaction is aborted and it can write nothing more). That is
/// what stops a zombie instance, but it also means replicas of one service each need their own
/// id. A suffix that stays the same across restarts of one instance (`hostname` on a
/// StatefulSet pod, `kafka-0`, `kafka-1`...) keeps both properties; `pid` is unique per process
/// but a restarted instance no longer fences its predecessor (whose open transaction then
/// blocks read-committed readers until the transaction timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransactionalIdSuffix {
    /// The id is used as it is (one instance, or ids set per instance already).
    #[default]
    None,
    /// `-<hostname>` is appended.
    Hostname,
    /// `-<process id>` is appended.
    Pid,
}

impl FromStr for TransactionalIdSuffix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(TransactionalIdSuffix::None),
            "hostname" => Ok(TransactionalIdSuffix::Hostname),
            "pid" => Ok(TransactionalIdSuffix::Pid),
            _ => Err(format!("expected none, hostname or pid, got {s:?}")),
        }
    }
}

impl TransactionalIdSuffix {
    /// `id` with this suffix. The host name comes from the kernel (`/proc/sys/kernel/hostname`)
    /// or `HOSTNAME`; having neither is an error naming `KAFKA_TRANSACTIONAL_ID_SUFFIX`.
    pub fn apply(self, id: &str) -> crate::Result<String> {
        match self {
            TransactionalIdSuffix::None => Ok(id.to_owned()),
            TransactionalIdSuffix::Pid => Ok(format!("{id}-{}", std::process::id())),
            TransactionalIdSuffix::Hostname => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| {
                        crate::Error::config(
                            "KAFKA_TRANSACTIONAL_ID_SUFFIX",
                            "hostname: the host name is unknown (no /proc/sys/kernel/hostname, no HOSTNAME)",
                        )
                    })?;
                Ok(format!("{id}-{host}"))
            }
        }
    }
}

/// Everything needed to connect kafkit's clients to a cluster.
///
/// Build it in code (`KafkaConfig::new(["localhost:9092"])`) or from the environment with
/// [`KafkaConfig::from_env`]. Times are `Duration`s; the environment gives them in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaConfig {
    /// `KAFKA_ENABLED`: when false, clients refuse to start with
    /// [`Error::Disabled`](crate::Error::Disabled).
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
    /// `KAFKA_ISOLATION_LEVEL`: what consumers and readers see of transactions
    /// (`read_committed`, the default, or `read_uncommitted`).
    pub isolation: Isolation,
    /// `KAFKA_TRANSACTIONAL_ID`: a transactional id before its suffix
    /// ([`KafkaConfig::instance_transactional_id`]), for
    /// [`Kafka::transactional_producer`](crate::Kafka::transactional_producer) and the gateway's
    /// transactional batches. Plain producers never use it.
    pub transactional_id: Option<String>,
    /// `KAFKA_TRANSACTIONAL_ID_SUFFIX`: what makes `transactional_id` unique per instance.
    pub transactional_id_suffix: TransactionalIdSuffix,
    /// `KAFKA_TRANSACTION_TIMEOUT`: how long a transaction may stay open before the broker
    /// aborts it. A transactional producer's delivery timeout is at most this long.
    pub transaction_timeout: Duration,
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
            isolation: Isolation::ReadCommitted,
            transactional_id: None,
            transactional_id_suffix: TransactionalIdSuffix::None,
            transaction_timeout: DEFAULT_TRANSACTION_TIMEOUT,
            security: Security::default(),
            librdkafka: BTreeMap::new(),
        }
    }
}

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

    /// `KAFKA_TRANSACTIONAL_ID` with its `KAFKA_TRANSACTIONAL_ID_SUFFIX`, when it is set.
    pub fn instance_transactional_id(&self) -> crate::Result<Option<String>> {
        self.transactional_id
            .as_deref()
            .map(|id| self.transactional_id_suffix.apply(id))
            .transpose()
    }
}

/// Helpers the submodules' tests share: reading a configuration from variables, and the
/// variable and reason of the error it fails with.
#[cfg(test)]
mod tests {
    use super::KafkaConfig;
    use crate::error::{Error, Result};

    pub(super) fn from(vars: &[(&str, &str)]) -> Result<KafkaConfig> {
        KafkaConfig::from_vars(vars.iter().copied())
    }

    pub(super) fn error_of(vars: &[(&str, &str)]) -> (String, String) {
        match from(vars) {
            Err(Error::Config { variable, reason }) => (variable, reason),
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}
