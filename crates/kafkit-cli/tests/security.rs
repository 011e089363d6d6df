//! TLS with SASL PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 end to end, on the test broker's
//! SASL_SSL listener (`scripts/kafka start --security`: a CA made for the run, users created at
//! format time), configured through the same `KAFKA_*` variables users set.

mod common;

use std::path::Path;

use common::{json_lines, kafkit, run};
use kafkit::{Kafka, KafkaConfig, Record, TopicSpec};
use testkit::{SaslUser, SecureListener};

fn secure_config(address: &str, ca: &Path, (mechanism, user, password): &SaslUser) -> KafkaConfig {
    KafkaConfig::from_vars([
        ("KAFKA_BROKERS", address),
        ("KAFKA_SSL_ENABLED", "true"),
        ("KAFKA_SSL_CA_LOCATION", ca.to_str().unwrap()),
        ("KAFKA_SASL_MECHANISM", mechanism),
        ("KAFKA_SASL_USERNAME", user),
        ("KAFKA_SASL_PASSWORD", password),
        ("KAFKA_DELIVERY_TIMEOUT", "5000"),
        ("KAFKA_REQUEST_TIMEOUT", "5000"),
    ])
    .unwrap()
}

/// Produces `count` records as `user` and asserts every one was acknowledged.
async fn produce_as(listener: &SecureListener, user: &SaslUser, topic: &str, count: usize) {
    let producer = Kafka::connect(&secure_config(&listener.address, &listener.ca, user))
        .unwrap()
        .producer()
        .unwrap();
    let results = producer
        .send_batch(
            (0..count).map(|i| Record::to(topic).key(format!("k{i}")).text(format!("v{i}"))),
        )
        .await;
    assert!(
        results.iter().all(Result::is_ok),
        "{} could not produce: {results:?}",
        user.1
    );
    producer.shutdown().await.unwrap();
}

/// Reads the whole topic through the CLI, configured by the environment alone, as `user`.
fn consume_with_cli(
    listener: &SecureListener,
    user: &SaslUser,
    topic: &str,
    count: usize,
) -> usize {
    let (mechanism, name, password) = user;
    let output = run(
        kafkit()
            .args(["consume", "--topic", topic, "--from-beginning"])
            .args(["--count", &count.to_string(), "--idle-timeout-ms", "20000"])
            .env("KAFKA_BROKERS", &listener.address)
            .env("KAFKA_SSL_ENABLED", "true")
            .env("KAFKA_SSL_CA_LOCATION", &listener.ca)
            .env("KAFKA_SASL_MECHANISM", mechanism)
            .env("KAFKA_SASL_USERNAME", name)
            .env("KAFKA_SASL_PASSWORD", password),
        "",
    );
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains(password.as_str()),
        "password in the log"
    );
    json_lines(&output).len()
}

/// A producer with a wrong password delivers nothing: its send fails and the topic keeps
/// `expected` records.
async fn wrong_password_is_refused(
    listener: &SecureListener,
    user: &SaslUser,
    topic: &str,
    expected: i64,
) {
    let wrong: SaslUser = (user.0, user.1.clone(), format!("{}-wrong", user.2));
    let producer = Kafka::connect(&secure_config(&listener.address, &listener.ca, &wrong))
        .unwrap()
        .producer()
        .unwrap();
    let refused = producer.send(Record::to(topic).text("intruder")).await;
    assert!(refused.is_err(), "a wrong {} password was accepted", user.0);
    let admin = Kafka::connect(&secure_config(&listener.address, &listener.ca, user))
        .unwrap()
        .admin()
        .unwrap();
    assert_eq!(
        admin.describe_topic(topic).await.unwrap().record_count(),
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_scram_sha_512_and_256_produces_and_consumes() {
    // Given the TLS listener and SCRAM users created at format time.
    let listener = SecureListener::from_env();
    let (alice, bob) = (listener.scram512_user(), listener.scram256_user());
    let alice_config = secure_config(&listener.address, &listener.ca, &alice);
    assert_eq!(alice_config.security.protocol(), "sasl_ssl");

    // When alice (SCRAM-SHA-512 over TLS) creates a topic and produces to it.
    let topic = testkit::unique("secure-scram");
    Kafka::connect(&alice_config)
        .unwrap()
        .admin()
        .unwrap()
        .ensure_topics(&[TopicSpec::new(&topic, 2)])
        .await
        .unwrap();
    produce_as(&listener, &alice, &topic, 50).await;

    // Then bob (SCRAM-SHA-256) reads all of it back through the CLI.
    assert_eq!(consume_with_cli(&listener, &bob, &topic, 50), 50);

    // And a wrong password is refused for either mechanism: nothing is delivered.
    wrong_password_is_refused(&listener, &alice, &topic, 50).await;
    wrong_password_is_refused(&listener, &bob, &topic, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_sasl_plain_produces_and_consumes() {
    // Given the TLS listener and its PLAIN user.
    let listener = SecureListener::from_env();
    let carol = listener.plain_user();

    // When carol creates a topic and produces to it over SASL PLAIN.
    let topic = testkit::unique("secure-plain");
    Kafka::connect(&secure_config(&listener.address, &listener.ca, &carol))
        .unwrap()
        .admin()
        .unwrap()
        .ensure_topics(&[TopicSpec::new(&topic, 3)])
        .await
        .unwrap();
    produce_as(&listener, &carol, &topic, 30).await;

    // Then she reads it back through the CLI, and a wrong password delivers nothing.
    assert_eq!(consume_with_cli(&listener, &carol, &topic, 30), 30);
    wrong_password_is_refused(&listener, &carol, &topic, 30).await;
}
