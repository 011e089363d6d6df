//! Interop with KafkaJS 2.2.4, the client the services kafkit replaces use: records cross
//! between the two clients with keys, headers and values intact, and both pick the same
//! partition for a key. The KafkaJS side is `interop/*.js`, installed by `scripts/test`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkit::partitioner::murmur2_partition;
use kafkit::{Message, Record, Router};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Runs `interop/SCRIPT` with node against the test broker and returns its stdout lines as
/// JSON (or raw text lines when `json` is false). Panics with its stderr when it fails.
fn node(script: &str, args: &[&str], stdin: &str) -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop");
    assert!(
        dir.join("node_modules/kafkajs").is_dir(),
        "KafkaJS is not installed in {}: run ./scripts/test, which installs it",
        dir.display()
    );
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .env("KAFKA_BROKERS", testkit::brokers())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node is installed (scripts/deps installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "node {script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_produces_and_the_kafkit_consumer_gets_keys_headers_and_values() {
    // Given 1,000 keyed records with headers produced by KafkaJS's default partitioner.
    let topic = testkit::topic("from-kafkajs", 6).await;
    let produced: HashMap<String, i64> = node("produce.js", &[&topic, "1000"], "")
        .iter()
        .map(|line| {
            let v = json(line);
            (
                v["key"].as_str().unwrap().to_owned(),
                v["partition"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(produced.len(), 1000);

    // When a kafkit consumer group reads them with a typed JSON handler.
    #[derive(serde::Deserialize)]
    struct FromKafkaJs {
        id: u64,
        from: String,
    }
    type Seen = Arc<Mutex<Vec<(String, i32, u64, String, BTreeMap<String, String>)>>>;
    let seen: Seen = Arc::default();
    let mut router = Router::new();
    let handled = seen.clone();
    router.register(&topic, move |m: Message<FromKafkaJs>| {
        let handled = handled.clone();
        async move {
            let headers = ["source", "seq"]
                .iter()
                .filter_map(|h| {
                    let value = m.header_value(h)?;
                    Some((h.to_string(), String::from_utf8(value.to_vec()).unwrap()))
                })
                .collect();
            let key = m.key_str().unwrap_or_default().to_owned();
            handled.lock().unwrap().push((
                key,
                m.partition,
                m.value.id,
                m.value.from.clone(),
                headers,
            ));
            Ok(())
        }
    });
    let consumer = Arc::new(
        testkit::kafka()
            .consumer(&testkit::unique("interop"), router)
            .unwrap(),
    );
    let token = CancellationToken::new();
    let running = tokio::spawn({
        let consumer = consumer.clone();
        let stop = token.clone();
        async move { consumer.run(stop.cancelled_owned()).await }
    });
    assert!(
        testkit::eventually(Duration::from_secs(60), || seen.lock().unwrap().len()
            >= 1000)
        .await,
        "kafkit handled {} of 1000",
        seen.lock().unwrap().len()
    );
    token.cancel();
    running.await.unwrap().unwrap();

    // Then each arrived once, in the partition KafkaJS chose, with its key, headers and value.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1000);
    let mut ids: Vec<u64> = seen.iter().map(|s| s.2).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
    for (key, partition, id, from, headers) in seen.iter() {
        assert_eq!(key, &format!("key-{id}"));
        assert_eq!(i64::from(*partition), produced[key], "{key}");
        assert_eq!(from, "kafkajs");
        assert_eq!(headers["source"], "kafkajs");
        assert_eq!(headers["seq"], id.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkit_produces_and_kafkajs_consumes_keys_headers_and_values() {
    // Given 1,000 keyed JSON records with headers sent by the kafkit producer (murmur2).
    let topic = testkit::topic("to-kafkajs", 6).await;
    let producer = testkit::kafka().producer().unwrap();
    let deliveries = producer
        .send_batch((0..1000).map(|i| {
            Record::to(&topic)
                .key(format!("key-{i}"))
                .header("tenant-id", format!("tenant-{}", i % 7))
                .json(&serde_json::json!({ "id": i, "from": "kafkit" }))
                .unwrap()
        }))
        .await;
    producer.shutdown().await.unwrap();
    let delivered: HashMap<String, (i64, i64)> = deliveries
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let d = d.expect("delivered");
            (format!("key-{i}"), (i64::from(d.partition), d.offset))
        })
        .collect();

    // When KafkaJS reads the topic from the beginning with eachMessage.
    let lines = node("consume.js", &[&topic, "1000", "60000"], "");

    // Then it gets each record once, where kafkit put it, with key, headers and value.
    assert_eq!(lines.len(), 1000);
    let mut ids = Vec::new();
    for line in &lines {
        let record = json(line);
        let key = record["key"].as_str().unwrap();
        let (partition, offset) = delivered[key];
        assert_eq!(record["partition"].as_i64().unwrap(), partition, "{key}");
        assert_eq!(
            record["offset"].as_str().unwrap(),
            offset.to_string(),
            "{key}"
        );
        let value = json(record["value"].as_str().unwrap());
        let id = value["id"].as_u64().unwrap();
        assert_eq!(key, format!("key-{id}"));
        assert_eq!(value["from"], "kafkit");
        assert_eq!(record["headers"]["tenant-id"], format!("tenant-{}", id % 7));
        // kafkit's standard headers arrive too.
        assert!(record["headers"]["correlation-id"].is_string(), "{line}");
        ids.push(id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
}

#[test]
fn kafkajs_and_kafkit_pick_the_same_partition_for_a_thousand_keys() {
    // Keys of several shapes and lengths (the murmur2 tail handles 0–3 leftover bytes).
    let keys: Vec<String> = (0..1000)
        .map(|i| match i % 4 {
            0 => format!("order-{i}"),
            1 => format!("{i}"),
            2 => format!("tenant/{}/user-{i}", i % 13),
            _ => format!("ключ-{i}-é"),
        })
        .collect();
    for partitions in [3, 6, 7, 64] {
        let lines = node(
            "partitions.js",
            &[&partitions.to_string()],
            &keys.join("\n"),
        );
        assert_eq!(lines.len(), keys.len());
        for (key, line) in keys.iter().zip(&lines) {
            let (printed, partition) = line.split_once('\t').unwrap();
            assert_eq!(printed, key);
            assert_eq!(
                partition.parse::<i32>().unwrap(),
                murmur2_partition(key.as_bytes(), partitions),
                "{key} over {partitions} partitions"
            );
        }
    }
}
