//! Admin operations against the real test broker.

use std::time::Duration;

use kafkit::rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use kafkit::rdkafka::{Offset, TopicPartitionList};
use kafkit::{Kafka, TopicSpec};

#[tokio::test]
async fn ensure_topics_is_idempotent_and_list_shows_watermarks() {
    let admin = testkit::kafka().admin().unwrap();
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
        kafkit::error::ErrorCode::InvalidRecord
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
    let admin = Kafka::connect(&config).unwrap().admin().unwrap();
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

#[tokio::test]
async fn listed_watermarks_match_the_per_partition_query_and_offsets_reset_as_planned() {
    // A topic of three partitions holding 30 records spread by key.
    let topic = testkit::topic("admin-marks", 3).await;
    testkit::populate(&topic, 30, 7).await;
    let admin = testkit::kafka().admin().unwrap();
    // The listing asks all partitions at once; the reader asks them one by one: they agree.
    let wanted = topic.clone();
    let listed = admin
        .list_topics_where(move |name| name == wanted)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].record_count(), 30);
    let reading = testkit::kafka()
        .reader()
        .unwrap()
        .open(&topic, None, kafkit::reader::Start::Beginning)
        .await
        .unwrap();
    for p in &listed[0].partitions {
        assert_eq!(
            reading.watermarks(p.id),
            Some((p.low_watermark, p.high_watermark)),
            "partition {}",
            p.id
        );
    }
    // An offset reset plans the earliest, latest or an exact (clamped) offset per partition,
    // and commits exactly that for a group that never joined.
    let highs: Vec<(i32, i64)> = listed[0]
        .partitions
        .iter()
        .map(|p| (p.id, p.high_watermark))
        .collect();
    let group = testkit::unique("admin-reset");
    let plan = admin
        .offsets_for(&topic, kafkit::admin::ResetTo::Latest)
        .await
        .unwrap();
    assert_eq!(plan, highs);
    let plan = admin
        .offsets_for(&topic, kafkit::admin::ResetTo::Earliest)
        .await
        .unwrap();
    assert_eq!(plan, vec![(0, 0), (1, 0), (2, 0)]);
    let plan = admin
        .offsets_for(&topic, kafkit::admin::ResetTo::Offset(1_000))
        .await
        .unwrap();
    assert_eq!(plan, highs);
    admin
        .commit_offsets(&group, &topic, &[(0, 1), (1, 0), (2, 0)])
        .await
        .unwrap();
    let committed = testkit::committed(&group, &topic).await;
    let committed: Vec<(i32, Option<i64>)> = committed.iter().map(|(p, c, _)| (*p, *c)).collect();
    assert_eq!(committed, vec![(0, Some(1)), (1, Some(0)), (2, Some(0))]);
    // A time after every record: the high watermarks.
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 60_000;
    let plan = admin
        .offsets_for(&topic, kafkit::admin::ResetTo::Timestamp(later))
        .await
        .unwrap();
    assert_eq!(plan, highs);
}
