//! What a new user hits first, tried as they would: the real binary on Apache Kafka.

mod common;

use common::{json_lines, kafkit, run};

#[tokio::test]
async fn creating_an_existing_topic_says_it_exists_with_its_real_partition_count() {
    // Given a topic of 3 partitions.
    let topic = testkit::topic("exists", 3).await;

    // When `topics create` is asked for it again with the default partition count.
    let output = run(
        kafkit()
            .args(["topics", "create", &topic])
            .env("KAFKA_BROKERS", testkit::brokers()),
        "",
    );

    // Then it says the topic exists, with its 3 partitions, not that it created 1.
    let lines = json_lines(&output);
    assert_eq!(
        lines,
        [serde_json::json!({"exists": topic, "partitions": 3})]
    );

    // And a new topic is still reported as created.
    let fresh = testkit::unique("fresh");
    let output = run(
        kafkit()
            .args(["topics", "create", &fresh, "--partitions", "2"])
            .env("KAFKA_BROKERS", testkit::brokers()),
        "",
    );
    assert_eq!(
        json_lines(&output),
        [serde_json::json!({"created": fresh, "partitions": 2})]
    );
}

#[tokio::test]
async fn consuming_to_the_end_logs_no_partition_eof_error() {
    // Given a topic of 3 partitions with one record.
    let topic = testkit::topic("eof", 3).await;
    run(
        kafkit()
            .args(["produce", "--topic", &topic, "--value", "hello"])
            .env("KAFKA_BROKERS", testkit::brokers()),
        "",
    );

    // When it is read from the beginning until 2 s pass without a record.
    let output = run(
        kafkit()
            .args(["consume", "--topic", &topic, "--from-beginning"])
            .args(["--idle-timeout-ms", "2000"])
            .env("KAFKA_BROKERS", testkit::brokers())
            .env("KAFKIT_LOG_FORMAT", "pretty"),
        "",
    );

    // Then the record is printed, and reaching the end of each partition is no error.
    assert_eq!(json_lines(&output).len(), 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("PartitionEOF"), "stderr: {stderr}");
    assert!(!stderr.contains("ERROR"), "stderr: {stderr}");
}

#[tokio::test]
async fn describing_a_missing_topic_says_it_does_not_exist_once() {
    let missing = testkit::unique("nope");
    let output = kafkit()
        .args(["topics", "describe", &missing])
        .env("KAFKA_BROKERS", testkit::brokers())
        .env("KAFKIT_LOG_FORMAT", "pretty")
        .output()
        .unwrap();

    // It fails, naming the topic and saying it does not exist, in one line, once.
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!("topic {missing} does not exist");
    assert_eq!(stderr.matches(&expected).count(), 1, "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "stderr: {stderr}");
}

#[test]
fn release_builds_carry_no_debug_info_and_profiling_builds_do() {
    // The workspace manifest, two directories up from this crate.
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml")).unwrap();
    let section = |name: &str| -> Vec<String> {
        let header = format!("[profile.{name}]");
        manifest
            .lines()
            .skip_while(|line| line.trim() != header)
            .skip(1)
            .take_while(|line| !line.trim_start().starts_with('['))
            .map(|line| line.split('#').next().unwrap().replace(' ', ""))
            .filter(|line| !line.is_empty())
            .collect()
    };
    let release = section("release");
    assert!(
        !release
            .iter()
            .any(|line| line.starts_with("debug=") && line != "debug=0" && line != "debug=false"),
        "release keeps debug info: {release:?}"
    );
    let profiling = section("profiling");
    assert!(
        profiling.contains(&"inherits=\"release\"".to_owned()),
        "{profiling:?}"
    );
    assert!(profiling.contains(&"debug=1".to_owned()), "{profiling:?}");
}
