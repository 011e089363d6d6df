//! `scripts/kafka`, the test broker's own script: two starts side by side give two independent
//! Apache Kafka brokers (their own ports and data directories), each serving clients.

use std::path::PathBuf;
use std::process::Command;

use kafkit::{Kafka, KafkaConfig, TopicSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_brokers_started_in_parallel_are_independent() {
    // Given two starts at the same time, each in a directory of its own.
    let dirs: Vec<PathBuf> = (0..2)
        .map(|_| std::env::temp_dir().join(testkit::unique("kafka-script")))
        .collect();
    let starts: Vec<_> = dirs
        .iter()
        .map(|dir| {
            Command::new(testkit::OwnBroker::script())
                .arg("start")
                .arg(dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run scripts/kafka")
        })
        .collect();
    let addresses: Vec<String> = starts
        .into_iter()
        .map(|start| {
            let output = start.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "scripts/kafka start failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            // "ADDRESS PID"
            let line = String::from_utf8(output.stdout).unwrap();
            line.split_whitespace()
                .next()
                .expect("an address")
                .to_owned()
        })
        .collect();
    let stop = |dir: &PathBuf| {
        let _ = Command::new(testkit::OwnBroker::script())
            .arg("stop")
            .arg(dir)
            .status();
    };

    // Then they listen on different ports, keep data in their own directories, and a topic
    // created on one does not exist on the other.
    let (dirs_checked, addresses) = (dirs.clone(), addresses);
    let checks = async move {
        let dirs = dirs_checked;
        assert_ne!(addresses[0], addresses[1]);
        for dir in &dirs {
            assert!(dir.join("data").is_dir(), "{dir:?} has no data directory");
        }
        let admin = |address: &str| {
            Kafka::connect(&KafkaConfig::new([address]))
                .unwrap()
                .admin()
                .unwrap()
        };
        let (first, second) = (admin(&addresses[0]), admin(&addresses[1]));
        let topic = testkit::unique("only-on-first");
        first
            .ensure_topics(&[TopicSpec::new(&topic, 2)])
            .await
            .unwrap();
        assert_eq!(
            first.describe_topic(&topic).await.unwrap().partitions.len(),
            2
        );
        assert!(second.describe_topic(&topic).await.is_err());
        let (a, b) = (
            first.describe_cluster().await.unwrap(),
            second.describe_cluster().await.unwrap(),
        );
        assert_ne!(a.cluster_id, b.cluster_id, "two brokers, two clusters");
    };
    let outcome = tokio::spawn(checks).await;
    dirs.iter().for_each(stop);
    outcome.unwrap();
}
