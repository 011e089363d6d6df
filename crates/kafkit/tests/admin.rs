//! Admin operations against the real test broker.

use std::time::Duration;

use kafkit::rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use kafkit::rdkafka::{Offset, TopicPartitionList};
use kafkit::{Admin, TopicSpec};

#[tokio::test]
async fn ensure_topics_is_idempotent_and_list_shows_watermarks() {
    let admin = Admin::new(&testkit::config()).unwrap();
    let name = testkit::unique("ensure");
    // Creating twice is fine.
    for _ in 0..2 {
        admin
            .ensure_topics(&[TopicSpec::new(&name, 3).config("retention.ms", "3600000")])
            .await
            .unwrap();
    }
    testkit::populate(&name, 30, 30).await;

    let topics = admin.list_topics().await.unwrap();
    let topic = topics.iter().find(|t| t.name == name).expect("listed");
    assert_eq!(topic.partitions.len(), 3);
    assert_eq!(topic.record_count(), 30);
    let described = admin.describe_topic(&name).await.unwrap();
    assert_eq!(&described, topic);

    let cluster = admin.describe_cluster().await.unwrap();
    assert_eq!(cluster.brokers.len(), 1);
    assert_eq!(
        format!("{}:{}", cluster.brokers[0].host, cluster.brokers[0].port),
        testkit::brokers()
    );

    let missing = admin.describe_topic(&testkit::unique("nope")).await;
    assert!(missing.is_err());
    let invalid = admin.ensure_topics(&[TopicSpec::new("bad name", 1)]).await;
    assert_eq!(
        invalid.unwrap_err().code(),
        kafkit::ErrorCode::InvalidRecord
    );
}

#[tokio::test]
async fn group_lag_is_high_watermark_minus_committed() {
    // Given 40 records over 2 partitions and a group that committed offset 5 on partition 0.
    let topic = testkit::topic("lag", 2).await;
    testkit::populate(&topic, 40, 40).await;
    let group = testkit::unique("group");
    let config = testkit::config();
    let consumer: BaseConsumer = config.to_consumer_config(&group).create().unwrap();
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(&topic, 0, Offset::Offset(5))
        .unwrap();
    let committer = tokio::task::spawn_blocking(move || {
        consumer.commit(&offsets, CommitMode::Sync).unwrap();
    });
    committer.await.unwrap();

    // When the admin client asks for the group's lag.
    let admin = Admin::new(&config).unwrap();
    let lags = admin.group_lag(&group, &[&topic]).await.unwrap();
    let topics = admin.describe_topic(&topic).await.unwrap();

    // Then partition 0 lags by high watermark - 5 and partition 1 by all its records.
    assert_eq!(lags.len(), 2);
    let p0 = &topics.partitions[0];
    let p1 = &topics.partitions[1];
    assert_eq!(lags[0].committed, Some(5));
    assert_eq!(lags[0].lag, p0.high_watermark - 5);
    assert_eq!(lags[1].committed, None);
    assert_eq!(lags[1].lag, p1.high_watermark - p1.low_watermark);

    // And the group is listed by the coordinator.
    let mut listed = false;
    for _ in 0..50 {
        let groups = admin.list_groups().await.unwrap();
        if groups.iter().any(|g| g.name == group) {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "group {group} not listed");
}
