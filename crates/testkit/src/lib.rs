//! The integration-test harness shared by every kafkit crate: where the test broker is, unique
//! topic and group names, and helpers to populate topics and read them back.
//!
//! The broker address comes from `KAFKIT_TEST_BROKERS`, which `scripts/test` sets after
//! starting Apache Kafka (`scripts/kafka start --security`); the same broker's SASL_SSL
//! listener and its users come from `KAFKIT_TEST_SECURE_*` (see [`SecureListener`]). A missing
//! variable fails the test loudly: a test that skipped itself would pass without testing
//! anything.

use std::time::Duration;

use kafkit::{Kafka, KafkaConfig, Message, Record, TopicSpec, reader::Limits, reader::Start};

/// The variable naming the test broker.
pub const BROKERS_VAR: &str = "KAFKIT_TEST_BROKERS";

/// The test broker's bootstrap address. Panics when `KAFKIT_TEST_BROKERS` is unset.
pub fn brokers() -> String {
    std::env::var(BROKERS_VAR).unwrap_or_else(|_| {
        panic!(
            "{BROKERS_VAR} is not set: integration tests need the test broker. \
             Run ./scripts/test, which starts Apache Kafka and sets it."
        )
    })
}

/// A variable that `scripts/test` sets; panics, naming it, when it is unset.
fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run ./scripts/test, which starts the test broker and sets it")
    })
}

/// The test broker's SASL_SSL listener: TLS with a test CA, SASL PLAIN and SCRAM users created
/// by `scripts/kafka start --security`.
#[derive(Debug, Clone)]
pub struct SecureListener {
    /// `host:port` of the SASL_SSL listener.
    pub address: String,
    /// PEM file of the CA that signed the broker's certificate.
    pub ca: std::path::PathBuf,
}

/// A SASL user of the secure listener: `(mechanism as KAFKA_SASL_MECHANISM spells it, user,
/// password)`.
pub type SaslUser = (&'static str, String, String);

impl SecureListener {
    /// The listener `scripts/test` started. Panics when its variables are unset.
    pub fn from_env() -> Self {
        Self {
            address: required("KAFKIT_TEST_SECURE_BROKERS"),
            ca: required("KAFKIT_TEST_CA").into(),
        }
    }

    /// The PLAIN user.
    pub fn plain_user(&self) -> SaslUser {
        Self::user("plain", "PLAIN")
    }

    /// The SCRAM-SHA-256 user.
    pub fn scram256_user(&self) -> SaslUser {
        Self::user("scram-sha-256", "SCRAM256")
    }

    /// The SCRAM-SHA-512 user.
    pub fn scram512_user(&self) -> SaslUser {
        Self::user("scram-sha-512", "SCRAM512")
    }

    fn user(mechanism: &'static str, var: &str) -> SaslUser {
        (
            mechanism,
            required(&format!("KAFKIT_TEST_{var}_USER")),
            required(&format!("KAFKIT_TEST_{var}_PASSWORD")),
        )
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A client configuration for the test broker.
pub fn config() -> KafkaConfig {
    KafkaConfig::new([brokers()])
}

/// The front door to the test broker, building every client of a test. Cheap: it opens no
/// connection (each client it builds connects on its own).
pub fn kafka() -> Kafka {
    Kafka::connect(&config()).expect("a client configuration for the test broker")
}

/// A name unique to this test run, e.g. `orders-3f2a…`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Creates a topic with a unique name and `partitions` partitions; returns its name.
pub async fn topic(prefix: &str, partitions: i32) -> String {
    let name = unique(prefix);
    kafka()
        .admin()
        .expect("admin client")
        .ensure_topics(&[TopicSpec::new(&name, partitions)])
        .await
        .expect("create test topic");
    name
}

/// Creates the dead-letter topic of `source` (`{source}.dlq`) with `partitions` partitions and
/// returns its name.
pub async fn empty_dead_letter_topic(source: &str, partitions: i32) -> String {
    let name = format!("{source}.dlq");
    kafka()
        .admin()
        .expect("admin client")
        .ensure_topics(&[TopicSpec::new(&name, partitions)])
        .await
        .expect("create dead-letter topic");
    name
}

/// Produces `count` keyed JSON records `{"id": i}` with key `key-{i % keys}` and returns when
/// all are acknowledged.
pub async fn populate(topic: &str, count: usize, keys: usize) {
    let producer = kafka().producer().expect("producer");
    let records = (0..count).map(|i| {
        Record::to(topic)
            .key(format!("key-{}", i % keys.max(1)))
            .json(&serde_json::json!({ "id": i }))
            .expect("encodable")
    });
    for result in producer.send_batch(records).await {
        result.expect("populate delivery");
    }
    producer.shutdown().await.expect("flush");
}

/// Reads `topic` from the beginning of every partition until `count` records arrived or
/// `timeout` passed, without a consumer group. Returns what was read, in arrival order.
pub async fn read(topic: &str, count: usize, timeout: Duration) -> Vec<Message> {
    read_with(&brokers(), topic, count, timeout).await
}

/// [`read`] against any bootstrap address (the embedded broker, for instance).
pub async fn read_with(
    bootstrap: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Message> {
    let reader = Kafka::connect(&KafkaConfig::new([bootstrap]))
        .and_then(|kafka| kafka.reader())
        .expect("reader");
    let deadline = tokio::time::Instant::now() + timeout;
    // The topic may not exist yet (a dead-letter topic created by a consumer that just
    // started): wait for it within the timeout.
    let mut reading = loop {
        match reader.open(topic, None, Start::Beginning).await {
            Ok(reading) => break reading,
            Err(error) if tokio::time::Instant::now() >= deadline => {
                panic!("opening {topic}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let limits = Limits {
        records: count,
        ..Limits::follow().timeout(left)
    };
    reading
        .collect(&limits)
        .await
        .unwrap_or_else(|error| panic!("reading {topic}: {error}"))
}

/// Creates `{source}.dlq` with one partition holding one dead-lettered record per
/// `(key, error kind)` of `records`, as the consumer writes them (value `{"id": n}`, n from
/// 1, `original-topic` naming `source`); returns its name.
pub async fn dead_letter_topic(source: &str, records: &[(&str, &str)]) -> String {
    use kafkit::dead_letter::{ATTEMPTS, ERROR_KIND, ERROR_MESSAGE, ORIGINAL_TOPIC};
    let dlt = empty_dead_letter_topic(source, 1).await;
    let records = records.iter().zip(1..).map(|((key, kind), id)| {
        Record::to(&dlt)
            .key(*key)
            .header(ORIGINAL_TOPIC, source)
            .header(ERROR_KIND, *kind)
            .header(ERROR_MESSAGE, "rejected")
            .header(ATTEMPTS, "1")
            .json(&serde_json::json!({ "id": id }))
            .expect("encodable")
    });
    send(records.collect()).await;
    dlt
}

/// Sends `records` and panics unless every one is acknowledged.
pub async fn send(records: Vec<Record>) {
    let producer = kafka().producer().expect("producer");
    for result in producer.send_batch(records).await {
        result.expect("delivery");
    }
    producer.shutdown().await.expect("flush");
}

/// Sends (blocking) one JSON record `{"id": id}` to `topic` with one header whose key is the bytes `key`,
/// through librdkafka's C API: rdkafka's Rust API takes header keys as `&str`, but Go and C
/// producers can send any bytes.
pub fn send_with_raw_header_key(topic: &str, id: u64, key: &[u8]) {
    use kafkit::rdkafka::bindings as rdsys;
    use kafkit::rdkafka::producer::{BaseProducer, Producer as _};
    use kafkit::rdkafka::types::RDKafkaRespErr;
    use rdsys::rd_kafka_vtype_t::*;

    let producer: BaseProducer = config().to_producer_config().create().unwrap();
    let topic = std::ffi::CString::new(topic).unwrap();
    let value = serde_json::to_vec(&serde_json::json!({ "id": id })).unwrap();
    // SAFETY: every pointer outlives the call (librdkafka copies the value, RD_KAFKA_MSG_F_COPY,
    // and owns the headers once the record is accepted).
    let error = unsafe {
        let headers = rdsys::rd_kafka_headers_new(1);
        let added = rdsys::rd_kafka_header_add(
            headers,
            key.as_ptr().cast(),
            key.len() as isize,
            b"v".as_ptr().cast(),
            1,
        );
        assert_eq!(added, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
        rdsys::rd_kafka_producev(
            producer.client().native_ptr(),
            RD_KAFKA_VTYPE_TOPIC,
            topic.as_ptr(),
            RD_KAFKA_VTYPE_MSGFLAGS,
            rdsys::RD_KAFKA_MSG_F_COPY,
            RD_KAFKA_VTYPE_VALUE,
            value.as_ptr() as *mut std::ffi::c_void,
            value.len(),
            RD_KAFKA_VTYPE_HEADERS,
            headers,
            RD_KAFKA_VTYPE_END,
        )
    };
    assert_eq!(error, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The group's committed offset per partition of `topic` (`None` where it never committed),
/// and the partitions' high watermarks.
pub async fn committed(group: &str, topic: &str) -> Vec<(i32, Option<i64>, i64)> {
    let admin = kafka().admin().expect("admin");
    admin
        .group_lag(group, &[topic])
        .await
        .expect("group lag")
        .into_iter()
        .map(|l| (l.partition, l.committed, l.high_watermark))
        .collect()
}

/// The group's committed offset and its metadata per partition of `topic`, for partitions it
/// committed (the done-offset maps of key and unordered order live in the metadata).
pub async fn committed_maps(group: &str, topic: &str, partitions: i32) -> Vec<(i32, i64, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = config()
        .to_consumer_config_with(group, None)
        .create()
        .expect("consumer for committed offsets");
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for partition in 0..partitions {
            tpl.add_partition(&topic, partition);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(30))
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(offset) => {
                    Some((e.partition(), offset, e.metadata().to_owned()))
                }
                _ => None,
            })
            .collect()
    })
    .await
    .expect("committed offsets task")
}

/// An Apache Kafka broker of a test's own, started by `scripts/kafka start` in a temporary
/// directory and stopped on drop: for tests that pause or stop their broker.
#[derive(Debug)]
pub struct OwnBroker {
    /// `host:port` of its PLAINTEXT listener.
    pub address: String,
    pid: u32,
    dir: std::path::PathBuf,
}

impl OwnBroker {
    /// Starts one (10–30 s on a loaded 2-core machine). Panics with the script's error.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(unique("own-broker"));
        let output = std::process::Command::new(Self::script())
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run scripts/kafka");
        assert!(
            output.status.success(),
            "scripts/kafka start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = String::from_utf8(output.stdout).expect("utf-8");
        let mut words = line.split_whitespace();
        let address = words.next().expect("an address").to_owned();
        let pid = words.next().and_then(|p| p.parse().ok()).expect("a pid");
        OwnBroker { address, pid, dir }
    }

    /// The path of `scripts/kafka`.
    pub fn script() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka")
    }

    /// A client configuration for it.
    pub fn config(&self) -> KafkaConfig {
        KafkaConfig::new([self.address.clone()])
    }

    /// The front door to it.
    pub fn kafka(&self) -> Kafka {
        Kafka::connect(&self.config()).expect("a client configuration for the broker")
    }

    /// Freezes the broker process (SIGSTOP): connections stay open, nothing is answered.
    /// Returns once every thread of it is stopped: a signal is only queued by `kill`, and on a
    /// loaded machine a broker thread may still answer a request just after it.
    pub fn pause(&self) {
        self.signal("-STOP");
        let tasks = format!("/proc/{}/task", self.pid);
        let stopped = || {
            std::fs::read_dir(&tasks).is_ok_and(|entries| {
                entries.flatten().all(|task| {
                    std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                        // The state follows the command name in parentheses: "pid (comm) T ...".
                        stat.rsplit_once(") ")
                            .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                    })
                })
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !stopped() {
            assert!(
                std::time::Instant::now() < deadline,
                "broker {} not stopped 10 s after SIGSTOP",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([name, &self.pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {name} {}", self.pid);
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.resume();
        let _ = std::process::Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}
