//! The group-less [`Reader`] against the test broker: where reading starts (beginning, end,
//! offset, timestamp, a group's commits), where it stops (the end as of opening, records,
//! bytes, idle time), and committing a read position.

use std::collections::HashMap;
use std::time::Duration;

use kafkit::{Reader, Record, reader::Limits, reader::Start};

const IDLE: Duration = Duration::from_secs(10);

fn reader() -> Reader {
    testkit::kafka().reader().expect("reader")
}

fn ids(messages: &[kafkit::Message]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| {
            m.json::<serde_json::Value>().unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn reading_starts_where_asked_and_stops_at_the_end_as_of_opening() {
    let topic = testkit::topic("reader", 2).await;
    testkit::populate(&topic, 40, 40).await;

    // From the beginning to the end: every record once, and nothing written later.
    let mut reading = reader().open(&topic, None, Start::Beginning).await.unwrap();
    testkit::populate(&topic, 5, 5).await;
    let all = reading
        .collect(&Limits::to_end(1000).idle(IDLE))
        .await
        .unwrap();
    assert_eq!(all.len(), 40, "records written after opening are not read");
    let mut seen = ids(&all);
    seen.sort_unstable();
    assert_eq!(seen, (0..40).collect::<Vec<_>>());
    assert!(reading.at_end());

    // From the end: nothing, at once.
    let mut at_end = reader().open(&topic, None, Start::End).await.unwrap();
    assert!(at_end.at_end());
    assert!(
        at_end
            .collect(&Limits::to_end(10))
            .await
            .unwrap()
            .is_empty()
    );

    // One partition from an offset, limited by count.
    let partition = all[0].partition;
    let mut slice = reader()
        .open(&topic, Some(&[partition]), Start::Offset(3))
        .await
        .unwrap();
    let three = slice.collect(&Limits::to_end(3).idle(IDLE)).await.unwrap();
    assert_eq!(
        three
            .iter()
            .map(|m| (m.partition, m.offset))
            .collect::<Vec<_>>(),
        [(partition, 3), (partition, 4), (partition, 5)]
    );

    // An unknown partition or topic is an error naming it.
    let error = reader()
        .open(&topic, Some(&[7]), Start::Beginning)
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        kafkit::error::ErrorCode::UnknownPartition,
        "{error}"
    );
    let missing = testkit::unique("reader-missing");
    assert!(
        reader()
            .open(&missing, None, Start::Beginning)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_byte_limit_stops_reading_after_the_record_that_crosses_it() {
    let topic = testkit::topic("reader-bytes", 1).await;
    let big = "x".repeat(10_000);
    testkit::send(
        (0..10)
            .map(|i| Record::to(&topic).key(format!("k{i}")).text(big.clone()))
            .collect(),
    )
    .await;
    let mut reading = reader().open(&topic, None, Start::Beginning).await.unwrap();
    let read = reading
        .collect(&Limits::to_end(100).bytes(25_000).idle(IDLE))
        .await
        .unwrap();
    // 10,000 bytes each (plus key and content-type header): the third crosses 25,000.
    assert_eq!(read.len(), 3);
}

#[tokio::test]
async fn timestamps_and_committed_offsets_choose_the_start() {
    let topic = testkit::topic("reader-time", 1).await;
    let base = 1_700_000_000_000i64;
    testkit::send(
        (0..10)
            .map(|i| {
                Record::to(&topic)
                    .timestamp(base + i * 1000)
                    .json(&serde_json::json!({ "id": i }))
                    .unwrap()
            })
            .collect(),
    )
    .await;

    // The first record at or after a time.
    let mut from_time = reader()
        .open(&topic, None, Start::Timestamp(base + 6500))
        .await
        .unwrap();
    let late = from_time
        .collect(&Limits::to_end(100).idle(IDLE))
        .await
        .unwrap();
    assert_eq!(ids(&late), [7, 8, 9]);
    // A time after every record: nothing.
    let future = reader()
        .open(&topic, None, Start::Timestamp(base + 60_000))
        .await
        .unwrap();
    assert!(future.at_end());

    // A group without commits starts at the beginning; a committed position is where the
    // next reading with that group starts, and the group is never joined.
    let group = testkit::unique("reader-group");
    let grouped = || reader().with_group(group.clone());
    let mut first = grouped()
        .open(&topic, None, Start::Committed)
        .await
        .unwrap();
    let four = first.collect(&Limits::to_end(4).idle(IDLE)).await.unwrap();
    assert_eq!(ids(&four), [0, 1, 2, 3]);
    first.commit(&HashMap::from([(0, 4)])).await.unwrap();
    drop(first);
    assert_eq!(testkit::committed(&group, &topic).await[0].1, Some(4));
    let mut second = grouped()
        .open(&topic, None, Start::Committed)
        .await
        .unwrap();
    let rest = second
        .collect(&Limits::to_end(100).idle(IDLE))
        .await
        .unwrap();
    assert_eq!(ids(&rest), [4, 5, 6, 7, 8, 9]);
}
