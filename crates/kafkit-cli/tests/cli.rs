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
        // The gateway's view: headers in order, each with its encoding.
        let headers: Vec<(&str, &str)> = record["headers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["name"] == "tenant-id" || h["name"] == "source")
            .map(|h| (h["name"].as_str().unwrap(), h["value"].as_str().unwrap()))
            .collect();
        assert_eq!(headers, [("tenant-id", "acme"), ("source", "cli")]);
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

    // Admin calls the mock cannot answer fail at once and say what to do instead.
    let began = std::time::Instant::now();
    let refused = kafkit()
        .args(["topics", "create", "more", "--partitions", "3"])
        .env("KAFKA_BROKERS", &address)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("kafkit broker --topics"), "{stderr}");
    assert!(
        began.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}: the mock's missing admin API was waited out",
        began.elapsed()
    );
}

#[tokio::test]
async fn groups_describe_shows_members_with_client_ids_hosts_and_assignments() {
    // Given two members of one group on a 4-partition topic, each with its own client id.
    let brokers = testkit::brokers();
    let topic = testkit::topic("cli-members", 4).await;
    let group = testkit::unique("cli-members");
    let members: Vec<Running> = ["member-a", "member-b"]
        .into_iter()
        .map(|client_id| {
            Running(
                kafkit()
                    .args(["consume", "--topic", &topic, "--group", &group])
                    .args(["--idle-timeout-ms", "120000"])
                    .env("KAFKA_BROKERS", &brokers)
                    .env("KAFKA_CLIENT_ID", client_id)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();

    // When the group is stable with both members, `groups describe` lists each member with
    // its client id, host and partitions, and together they hold all four partitions once.
    // (Until the first member joined, the group is unknown and the command fails.)
    let describe = || {
        let output = kafkit()
            .args(["groups", "describe", &group])
            .env("KAFKA_BROKERS", &brokers)
            .output()
            .unwrap();
        if output.status.success() {
            serde_json::from_slice::<Value>(&output.stdout).unwrap()
        } else {
            Value::String(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    };
    let stable = |d: &Value| {
        d["state"] == "Stable"
            && d["members"].as_array().is_some_and(|m| {
                m.len() == 2 && m.iter().all(|m| m["assignment"][topic.as_str()].is_array())
            })
    };
    let mut description = describe();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !stable(&description) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        description = describe();
    }
    assert!(stable(&description), "{description:#}");
    let listed = description["members"].as_array().unwrap();
    let client_ids: Vec<&str> = listed
        .iter()
        .map(|m| m["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(client_ids, ["member-a", "member-b"]);
    assert!(
        listed
            .iter()
            .all(|m| m["host"].as_str().unwrap().contains("127.0.0.1")
                && !m["member_id"].as_str().unwrap().is_empty()),
        "{description:#}"
    );
    let mut partitions: Vec<i64> = listed
        .iter()
        .flat_map(|m| m["assignment"][topic.as_str()].as_array().unwrap().clone())
        .map(|p| p.as_i64().unwrap())
        .collect();
    partitions.sort_unstable();
    assert_eq!(partitions, [0, 1, 2, 3], "{description:#}");
    drop(members);
}

#[tokio::test]
async fn consume_isolation_chooses_whether_aborted_transactions_are_printed() {
    let brokers = testkit::brokers();
    let topic = testkit::topic("cli-isolation", 1).await;
    // One aborted transaction, then one committed.
    let producer = testkit::kafka()
        .transactional_producer(testkit::unique("cli-isolation"))
        .await
        .unwrap();
    let tx = producer.begin().await.unwrap();
    tx.send(kafkit::Record::to(&topic).text("aborted"))
        .await
        .unwrap();
    tx.abort().await.unwrap();
    let tx = producer.begin().await.unwrap();
    tx.send(kafkit::Record::to(&topic).text("committed"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    producer.shutdown().await.unwrap();

    // Up to two records, stopping after two seconds without one.
    let consume = |isolation: Option<&str>| {
        let mut command = kafkit();
        command
            .args([
                "consume",
                "--topic",
                &topic,
                "--from-beginning",
                "--count",
                "2",
            ])
            .args(["--idle-timeout-ms", "2000"])
            .env("KAFKA_BROKERS", &brokers);
        if let Some(isolation) = isolation {
            command.args(["--isolation", isolation]);
        }
        json_lines(&run(&mut command, ""))
            .into_iter()
            .map(|r| r["value"].clone())
            .collect::<Vec<Value>>()
    };
    assert_eq!(consume(Some("read-uncommitted")), ["aborted", "committed"]);
    assert_eq!(consume(Some("read-committed")), ["committed"]);
    // Read committed is the default.
    assert_eq!(consume(None), ["committed"]);
}
