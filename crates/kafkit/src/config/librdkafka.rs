//! The one place that turns a [`KafkaConfig`] into librdkafka keys, per client role.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;

use super::{KafkaConfig, OffsetReset};

impl KafkaConfig {
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
        let mut config = self.producer_settings();
        self.apply_passthrough(&mut config);
        config
    }

    /// Settings of a transactional producer named `transactional_id`: the producer settings,
    /// idempotent with `acks=all` whatever `KAFKA_IDEMPOTENT` says (transactions need it), the
    /// transaction timeout, and a delivery timeout no longer than the transaction timeout
    /// (librdkafka refuses a longer one).
    pub fn to_transactional_producer_config(&self, transactional_id: &str) -> ClientConfig {
        let mut config = self.producer_settings();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", millis(self.transaction_timeout))
            .set(
                "message.timeout.ms",
                millis(self.delivery_timeout.min(self.transaction_timeout)),
            );
        self.apply_passthrough(&mut config);
        config
    }

    /// The producer keys, without the passthrough map.
    fn producer_settings(&self) -> ClientConfig {
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
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", self.isolation.as_str())
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
            .set("isolation.level", self.isolation.as_str())
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
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

/// How long librdkafka postpones fetching a partition whose local queue is full
/// (`queued.min.messages` or `queued.max.messages.kbytes`). Its default, 1 s, starves a
/// consumer that drains the queue within milliseconds: fetching stops for the rest of the
/// second. Measured with `kafkit-bench consume`, it cut throughput by 2-3x for raw loops and
/// the runtime alike (BENCHMARKS.md). The queue thresholds still bound memory.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::from;
    use crate::config::{Compression, Sasl, SaslMechanism, Security, Tls};

    #[test]
    fn settings_reach_librdkafka_under_its_own_names() {
        let config = KafkaConfig {
            brokers: vec!["kafka-1:9092".to_owned(), "kafka-2:9093".to_owned()],
            session_timeout: Duration::from_millis(45_000),
            max_wait_time: Duration::from_millis(250),
            delivery_timeout: Duration::from_millis(60_000),
            linger: Duration::from_millis(20),
            compression: Compression::Zstd,
            auto_offset_reset: OffsetReset::Latest,
            security: Security {
                tls: Some(Tls {
                    ca_location: Some(PathBuf::from("/etc/ca.pem")),
                    ..Tls::default()
                }),
                sasl: Some(Sasl {
                    mechanism: SaslMechanism::ScramSha512,
                    username: "svc".to_owned(),
                    password: "s3cret".into(),
                }),
            },
            librdkafka: [("statistics.interval.ms".to_owned(), "1000".to_owned())].into(),
            ..KafkaConfig::default()
        };
        let producer = config.to_producer_config();
        assert_eq!(
            producer.get("bootstrap.servers"),
            Some("kafka-1:9092,kafka-2:9093")
        );
        assert_eq!(producer.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(producer.get("ssl.ca.location"), Some("/etc/ca.pem"));
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
        assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("10"));
        assert_eq!(consumer.get("auto.offset.reset"), Some("latest"));
        // Read committed unless told otherwise, as librdkafka's default.
        assert_eq!(consumer.get("isolation.level"), Some("read_committed"));
        assert_eq!(
            config.to_reader_config("r").get("isolation.level"),
            Some("read_committed")
        );
        // Plain producers are never transactional.
        assert_eq!(producer.get("transactional.id"), None);
    }

    #[test]
    fn a_transactional_producer_is_idempotent_and_bounded_by_its_timeout() {
        let config = KafkaConfig {
            idempotent: false,
            isolation: crate::config::Isolation::ReadUncommitted,
            delivery_timeout: Duration::from_secs(300),
            transaction_timeout: Duration::from_secs(20),
            ..KafkaConfig::default()
        };
        let producer = config.to_transactional_producer_config("orders-1");
        assert_eq!(producer.get("transactional.id"), Some("orders-1"));
        assert_eq!(producer.get("transaction.timeout.ms"), Some("20000"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));
        // librdkafka refuses a delivery timeout beyond the transaction timeout.
        assert_eq!(producer.get("message.timeout.ms"), Some("20000"));
        assert_eq!(
            config.to_consumer_config("g").get("isolation.level"),
            Some("read_uncommitted")
        );
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
}
