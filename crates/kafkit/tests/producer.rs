//! Producer behaviour against the real test broker (nisshi), through the shared harness.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use kafkit::partitioner::murmur2_partition;
use kafkit::{Kafka, KafkaConfig, Record, config::Compression, partitioner::HeaderHash};

const READ_TIMEOUT: Duration = Duration::from_secs(60);

fn id_of(message: &kafkit::Message) -> u64 {
    message.json::<serde_json::Value>().unwrap()["id"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn ten_thousand_keyed_records_with_headers_round_trip_exactly() {
    // Given a topic with 6 partitions and 10,000 records over 50 keys, each with two headers.
    let partitions = 6;
    let topic = testkit::topic("roundtrip", partitions).await;
    let producer = testkit::kafka().producer().unwrap();
    let records: Vec<Record> = (0..10_000)
        .map(|i| {
            Record::to(&topic)
                .key(format!("key-{}", i % 50))
                .header("tenant-id", format!("tenant-{}", i % 7))
                .header("seq", i.to_string())
                .json(&serde_json::json!({ "id": i, "body": "x".repeat(20) }))
                .unwrap()
        })
        .collect();

    // When they are sent as one batch.
    let results = producer.send_batch(records).await;
    producer.shutdown().await.unwrap();

    // Then every record was acknowledged, on the partition murmur2 predicts for its key.
    assert_eq!(results.len(), 10_000);
    for (i, result) in results.iter().enumerate() {
        let delivery = result.as_ref().unwrap();
        let key = format!("key-{}", i % 50);
        assert_eq!(
            delivery.partition,
            murmur2_partition(key.as_bytes(), partitions)
        );
    }

    // And reading the topic back gives each record once, with key, headers and value exact.
    let messages = testkit::read(&topic, 10_000, READ_TIMEOUT).await;
    assert_eq!(messages.len(), 10_000);
    let mut seen = HashSet::new();
    let mut partition_of_key: HashMap<Vec<u8>, i32> = HashMap::new();
    for message in &messages {
        let id = id_of(message);
        assert!(seen.insert(id), "record {id} read twice");
        assert_eq!(
            message.key.as_deref(),
            Some(format!("key-{}", id % 50).as_bytes())
        );
        assert_eq!(
            message.header_value("tenant-id"),
            Some(format!("tenant-{}", id % 7).as_bytes())
        );
        assert_eq!(message.header_value("seq"), Some(id.to_string().as_bytes()));
        assert_eq!(
            message.header_value("content-type"),
            Some(&b"application/json"[..])
        );
        assert_eq!(
            message.header_value("correlation-id").map(<[u8]>::len),
            Some(36)
        );
        assert!(message.header_value("timestamp").is_some());
        assert_eq!(
            message.json::<serde_json::Value>().unwrap()["body"],
            "x".repeat(20)
        );
        let partition = *partition_of_key
            .entry(message.key.clone().unwrap())
            .or_insert(message.partition);
        assert_eq!(partition, message.partition, "one key, one partition");
    }
    assert_eq!(seen.len(), 10_000);
}

#[tokio::test]
async fn every_compression_codec_round_trips() {
    for codec in Compression::ALL {
        // Given a producer compressing with `codec`.
        let topic = testkit::topic(&format!("codec-{}", codec.as_str()), 1).await;
        let config = KafkaConfig {
            compression: codec,
            ..testkit::config()
        };
        let producer = Kafka::connect(&config).unwrap().producer().unwrap();
        // When 500 compressible records are sent.
        let values: Vec<String> = (0..500)
            .map(|i| format!("{i}:{}", "abc".repeat(40)))
            .collect();
        let results = producer
            .send_batch(values.iter().map(|v| Record::to(&topic).text(v.clone())))
            .await;
        assert!(results.iter().all(Result::is_ok), "{codec:?}: {results:?}");
        producer.shutdown().await.unwrap();
        // Then they read back byte for byte, in order.
        let messages = testkit::read(&topic, 500, READ_TIMEOUT).await;
        let read: Vec<String> = messages
            .iter()
            .map(|m| String::from_utf8(m.value.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(read, values, "{codec:?}");
    }
}

#[tokio::test]
async fn idempotent_producer_delivers_in_order_without_duplicates() {
    // Given an idempotent producer (the default) and a 4-partition topic.
    let topic = testkit::topic("idempotent", 4).await;
    let config = testkit::config();
    assert!(config.idempotent);
    let producer = Kafka::connect(&config).unwrap().producer().unwrap();

    // When 10,000 records go out in 10 concurrent batches, keyed so each key has its own
    // increasing sequence.
    let batches = (0..10).map(|b| {
        let producer = producer.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let records = (0..1_000).map(|i| {
                Record::to(&topic)
                    .key(format!("k{b}"))
                    .json(&serde_json::json!({ "id": b * 1_000 + i }))
                    .unwrap()
            });
            producer.send_batch(records).await
        })
    });
    for batch in futures::future::join_all(batches).await {
        assert!(batch.unwrap().iter().all(Result::is_ok));
    }
    producer.shutdown().await.unwrap();

    // Then each id is stored once and, per partition, offsets and per-key ids both increase.
    let messages = testkit::read(&topic, 10_000, READ_TIMEOUT).await;
    assert_eq!(messages.len(), 10_000);
    let ids: HashSet<u64> = messages.iter().map(id_of).collect();
    assert_eq!(ids.len(), 10_000);
    let mut last_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let mut last_id: HashMap<Vec<u8>, u64> = HashMap::new();
    for message in &messages {
        let previous = last_offset.insert(message.partition, message.offset);
        assert!(previous.is_none_or(|p| p < message.offset));
        let id = id_of(message);
        let key = message.key.clone().unwrap();
        if let Some(before) = last_id.insert(key, id) {
            assert!(before < id, "key order broken: {before} then {id}");
        }
    }
}

#[tokio::test]
async fn header_hash_partitioner_keeps_a_tenant_on_one_partition() {
    // Given a producer partitioning by the tenant-id header.
    let partitions = 5;
    let topic = testkit::topic("tenants", partitions).await;
    let producer = testkit::kafka()
        .producer_builder()
        .partitioner(HeaderHash::new("tenant-id"))
        .build()
        .unwrap();
    // When records of 10 tenants with random keys are sent.
    let records = (0..300).map(|i| {
        Record::to(&topic)
            .key(format!("random-{i}"))
            .header("tenant-id", format!("t{}", i % 10))
            .text(i.to_string())
    });
    let results = producer.send_batch(records).await;
    producer.shutdown().await.unwrap();
    // Then each record sits on murmur2(tenant) % partitions.
    for (i, result) in results.into_iter().enumerate() {
        let tenant = format!("t{}", i % 10);
        assert_eq!(
            result.unwrap().partition,
            murmur2_partition(tenant.as_bytes(), partitions)
        );
    }
    assert_eq!(testkit::read(&topic, 300, READ_TIMEOUT).await.len(), 300);
}

#[tokio::test]
async fn shutdown_delivers_everything_queued_and_refuses_the_rest() {
    // Given records lingering in the local queue (long linger.ms).
    let topic = testkit::topic("shutdown", 2).await;
    let config = KafkaConfig {
        linger: Duration::from_millis(500),
        ..testkit::config()
    };
    let producer = Kafka::connect(&config).unwrap().producer().unwrap();
    let sender = {
        let producer = producer.clone();
        let topic = topic.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            for chunk in 0..20 {
                let records = (0..250).map(|i| Record::to(&topic).text(format!("{chunk}-{i}")));
                results.extend(producer.send_batch(records).await);
            }
            results
        })
    };
    while producer.queue_depth() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    // When shutdown starts while the sender is still going.
    producer.shutdown().await.unwrap();
    let results = sender.await.unwrap();
    let refused = producer.send(Record::to(&topic).text("late")).await;

    // Then every acknowledged record is in the topic, every other one was refused as closed,
    // and sends after shutdown are refused.
    assert!(matches!(refused, Err(kafkit::Error::ProducerClosed)));
    let delivered = results.iter().filter(|r| r.is_ok()).count();
    assert!(delivered > 0);
    for result in &results {
        if let Err(error) = result {
            assert!(matches!(error, kafkit::Error::ProducerClosed), "{error:?}");
        }
    }
    let messages = testkit::read(&topic, delivered + 1, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), delivered);
}

#[tokio::test]
async fn oversized_records_and_unknown_topics_are_classified_errors() {
    // A record above message.max.bytes is refused with a clear, non-retriable error.
    let topic = testkit::topic("limits", 1).await;
    let producer = testkit::kafka().producer().unwrap();
    let error = producer
        .send(Record::to(&topic).bytes(vec![7u8; 2_000_000]))
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        kafkit::error::ErrorCode::MessageTooLarge,
        "{error}"
    );
    assert!(!error.is_retriable());

    // With auto-creation off, a missing topic fails within the delivery timeout.
    let config = KafkaConfig {
        allow_auto_topic_creation: false,
        delivery_timeout: Duration::from_secs(3),
        ..testkit::config()
    };
    let strict = Kafka::connect(&config).unwrap().producer().unwrap();
    let missing = testkit::unique("missing");
    let error = strict
        .send(Record::to(&missing).text("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error.code(),
            kafkit::error::ErrorCode::UnknownTopic | kafkit::error::ErrorCode::TimedOut
        ),
        "{error} ({})",
        error.code()
    );
    let topics = testkit::kafka()
        .admin()
        .unwrap()
        .list_topics()
        .await
        .unwrap();
    assert!(
        topics.iter().all(|t| t.name != missing),
        "topic was auto-created"
    );
}
