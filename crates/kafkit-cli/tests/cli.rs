//! The real `kafkit` binary, end to end, against the test broker and the embedded broker.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use common::{json_lines, kafkit, run};
use serde_json::Value;

#[tokio::test]
async fn produce_then_consume_through_the_cli() {
    let brokers = testkit::brokers();
    let topic = testkit::topic("cli", 3).await;

    // Produce three lines with a key and two headers.
    let produced = run(
        kafkit()
            .args(["produce", "--topic", &topic, "--key", "user-7"])
            .args(["--header", "tenant-id=acme", "-H", "source=cli"])
            .env("KAFKA_BROKERS", &brokers),
        "{\"n\":1}\nplain text\n{\"n\":3}\n",
    );
    let deliveries = json_lines(&produced);
    assert_eq!(deliveries.len(), 3);
    let partition = deliveries[0]["partition"].as_i64().unwrap();
    assert!(deliveries.iter().all(|d| d["partition"] == partition));
    let offsets: Vec<i64> = deliveries
        .iter()
        .map(|d| d["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [offsets[0], offsets[0] + 1, offsets[0] + 2]);

    // Consume them back without a group.
    let consumed = run(
        kafkit()
            .args([
                "consume",
                "--topic",
                &topic,
                "--from-beginning",
                "--count",
                "3",
            ])
            .env("KAFKA_BROKERS", &brokers),
        "",
    );
    let records = json_lines(&consumed);
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["value"], serde_json::json!({"n": 1}));
    assert_eq!(records[1]["value"], "plain text");
    assert_eq!(records[2]["value"], serde_json::json!({"n": 3}));
    for record in &records {
        assert_eq!(record["topic"], topic.as_str());
        assert_eq!(record["key"], "user-7");
        assert_eq!(record["partition"], partition);
        assert_eq!(record["headers"]["tenant-id"], "acme");
        assert_eq!(record["headers"]["source"], "cli");
        assert!(record["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }

    // Consume with a group: it commits, so the group shows no lag afterwards.
    let group = testkit::unique("cli-group");
    run(
        kafkit()
            .args(["consume", "--topic", &topic, "--group", &group])
            .args(["--from-beginning", "--count", "3"])
            .env("KAFKA_BROKERS", &brokers),
        "",
    );
    let lag = run(
        kafkit()
            .args(["groups", "lag", &group, "--topic", &topic])
            .env("KAFKA_BROKERS", &brokers),
        "",
    );
    let lags = json_lines(&lag);
    assert_eq!(lags.len(), 3, "one line per partition");
    assert!(lags.iter().all(|l| l["lag"] == 0), "{lags:?}");
    let committed: i64 = lags.iter().filter_map(|l| l["committed"].as_i64()).sum();
    assert_eq!(committed, offsets[2] + 1);
}

#[tokio::test]
async fn topics_create_list_and_describe() {
    let brokers = testkit::brokers();
    let name = testkit::unique("cli-topic");
    let created = run(
        kafkit()
            .args(["topics", "create", &name, "--partitions", "4"])
            .env("KAFKA_BROKERS", &brokers),
        "",
    );
    assert_eq!(json_lines(&created)[0]["created"], name.as_str());

    let listed = run(
        kafkit()
            .args(["topics", "list"])
            .env("KAFKA_BROKERS", &brokers),
        "",
    );
    let topic = json_lines(&listed)
        .into_iter()
        .find(|t| t["name"] == name.as_str())
        .expect("listed");
    assert_eq!(topic["partitions"], 4);
    assert_eq!(topic["records"], 0);

    let described = run(
        kafkit()
            .args(["topics", "describe", &name])
            .env("KAFKA_BROKERS", &brokers),
        "",
    );
    let description: Value = serde_json::from_slice(&described.stdout).unwrap();
    let partitions = description["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 4);
    assert!(partitions.iter().all(|p| p["high_watermark"] == 0));
}

#[test]
fn bad_configuration_is_named_and_fails() {
    let output = kafkit()
        .args(["topics", "list"])
        .env("KAFKA_BROKERS", "127.0.0.1:9092")
        .env("KAFKA_SESSION_TIMEOUT", "30s")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("KAFKA_SESSION_TIMEOUT: expected milliseconds, got \"30s\""),
        "{stderr}"
    );

    let output = kafkit().args(["produce", "--topic", "t"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("KAFKA_BROKERS is not set"));
}

/// Kills the child on drop, so a failing test leaves no broker behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn embedded_broker_serves_cli_produce_and_consume() {
    // Start the embedded broker with a 2-partition topic and read its address.
    let mut broker = Running(
        kafkit()
            .args(["broker", "--topics", "demo:2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut address = String::new();
    BufReader::new(broker.0.stdout.take().unwrap())
        .read_line(&mut address)
        .unwrap();
    let address = address.trim().to_owned();
    assert!(address.starts_with("127.0.0.1:"), "{address}");

    // Produce and consume through it like through any cluster.
    let produced = run(
        kafkit()
            .args(["produce", "--topic", "demo", "--key", "k"])
            .env("KAFKA_BROKERS", &address),
        "one\ntwo\n",
    );
    assert_eq!(json_lines(&produced).len(), 2);
    let consumed = run(
        kafkit()
            .args([
                "consume",
                "--topic",
                "demo",
                "--from-beginning",
                "--count",
                "2",
            ])
            .args(["--idle-timeout-ms", "20000"])
            .env("KAFKA_BROKERS", &address),
        "",
    );
    let values: Vec<Value> = json_lines(&consumed)
        .into_iter()
        .map(|r| r["value"].clone())
        .collect();
    assert_eq!(values, ["one", "two"]);
}
