//! Transactions on the real test broker (Apache Kafka): what read-committed and
//! read-uncommitted readers see of committed, aborted, failed, dropped and fenced
//! transactions, and consumed offsets committed only with their transaction.
//!
//! Every "nothing is visible" check is paired with a read-uncommitted read showing the
//! records were written: a transaction that wrote nothing would otherwise pass for aborted.

use std::time::Duration;

use kafkit::rdkafka::consumer::{BaseConsumer, Consumer as _};
use kafkit::rdkafka::{Offset, TopicPartitionList};
use kafkit::{
    Error, Message, Record, config::Isolation, error::ErrorCode, reader::Limits, reader::Start,
};

const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `topic` holds for a reader with `isolation`, up to the end as of now.
async fn read_all(topic: &str, isolation: Isolation) -> Vec<Message> {
    let reader = testkit::kafka().reader().unwrap().isolation(isolation);
    let mut reading = reader.open(topic, None, Start::Beginning).await.unwrap();
    let messages = reading
        .collect(&Limits::to_end(usize::MAX).timeout(READ_TIMEOUT))
        .await
        .unwrap();
    assert!(reading.at_end(), "{topic}: the end was not reached in time");
    messages
}

/// What a read-committed reader sees of `topic` once it sees at least `expected` records (or
/// after [`READ_TIMEOUT`]). A commit returns once the coordinator has decided it; each
/// partition's commit marker is written just after, and until it lands a read-committed
/// reader stops before that partition's records (its last stable offset). So a read right
/// after a commit may see part of it; only what it sees in the end is asserted.
async fn read_committed(topic: &str, expected: usize) -> Vec<Message> {
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    loop {
        let read = read_all(topic, Isolation::ReadCommitted).await;
        if read.len() >= expected || tokio::time::Instant::now() > deadline {
            return read;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The text values of `messages`, in order.
fn values(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8(m.payload().unwrap().to_vec()).unwrap())
        .collect()
}

fn texts(topic: &str, prefix: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| {
            Record::to(topic)
                .key(format!("k{i}"))
                .text(format!("{prefix}-{i}"))
        })
        .collect()
}

fn named(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test]
async fn an_aborted_transaction_is_seen_only_by_read_uncommitted_readers() {
    let topic = testkit::topic("tx-abort", 1).await;
    let producer = testkit::kafka()
        .transactional_producer(testkit::unique("tx-abort"))
        .await
        .unwrap();
    // Ten records in a transaction that is aborted, then three in one that commits.
    let tx = producer.begin().await.unwrap();
    let deliveries = tx.send_batch(texts(&topic, "aborted", 10)).await.unwrap();
    assert_eq!(deliveries.len(), 10);
    tx.abort().await.unwrap();
    let tx = producer.begin().await.unwrap();
    tx.send_batch(texts(&topic, "committed", 3)).await.unwrap();
    tx.commit().await.unwrap();

    // A read-committed reader sees the three committed records only.
    let committed = read_committed(&topic, 3).await;
    assert_eq!(values(&committed), named("committed", 3));
    // A read-uncommitted reader sees all thirteen: the aborted ten were written.
    let everything = read_all(&topic, Isolation::ReadUncommitted).await;
    let mut expected = named("aborted", 10);
    expected.extend(named("committed", 3));
    assert_eq!(values(&everything), expected);
    producer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_committed_multi_topic_transaction_is_seen_whole_and_only_once_committed() {
    let orders = testkit::topic("tx-orders", 3).await;
    let audit = testkit::topic("tx-audit", 1).await;
    let producer = testkit::kafka()
        .transactional_producer(testkit::unique("tx-multi"))
        .await
        .unwrap();
    // One transaction: 100 records to `orders` (three partitions) and 50 to `audit`, sent as
    // one mixed batch and one single send.
    let tx = producer.begin().await.unwrap();
    let mut records = texts(&orders, "order", 100);
    records.extend(texts(&audit, "audit", 49));
    assert_eq!(tx.send_batch(records).await.unwrap().len(), 149);
    tx.send(Record::to(&audit).text("audit-49")).await.unwrap();

    // Before the commit a read-committed reader sees nothing of it, on either topic...
    assert!(read_all(&orders, Isolation::ReadCommitted).await.is_empty());
    assert!(read_all(&audit, Isolation::ReadCommitted).await.is_empty());
    // ...though the records are written.
    assert_eq!(read_all(&audit, Isolation::ReadUncommitted).await.len(), 50);

    // After it, everything, each record once.
    tx.commit().await.unwrap();
    let mut seen = values(&read_committed(&orders, 100).await);
    seen.sort_by_key(|v| v[6..].parse::<u32>().unwrap());
    assert_eq!(seen, named("order", 100));
    assert_eq!(
        values(&read_committed(&audit, 50).await),
        named("audit", 50)
    );
    producer.shutdown().await.unwrap();
}

/// An application's error type, as a closure would return it: Kafka errors convert into it.
#[derive(Debug)]
enum AppError {
    Kafka(#[allow(dead_code)] Error),
    Refused(&'static str),
}

impl From<Error> for AppError {
    fn from(error: Error) -> Self {
        AppError::Kafka(error)
    }
}

#[tokio::test]
async fn an_error_in_the_closure_aborts_and_the_producer_goes_on() {
    let topic = testkit::topic("tx-closure", 1).await;
    let producer = testkit::kafka()
        .transactional_producer(testkit::unique("tx-closure"))
        .await
        .unwrap();
    // The closure sends five records, then fails: the caller gets its error back.
    let outcome: Result<(), AppError> = producer
        .transaction(async |tx| {
            tx.send_batch(texts(&topic, "failed", 5)).await?;
            Err(AppError::Refused("validation failed after sending"))
        })
        .await;
    assert!(
        matches!(
            outcome,
            Err(AppError::Refused("validation failed after sending"))
        ),
        "{outcome:?}"
    );
    // The next transaction of the same producer commits and returns the closure's value.
    let offset = producer
        .transaction(async |tx| {
            let delivery = tx.send(Record::to(&topic).text("ok-0")).await?;
            Ok::<_, Error>(delivery.offset)
        })
        .await
        .unwrap();
    assert!(offset >= 5, "after the five aborted records: {offset}");

    // Read committed: only the committed record. Read uncommitted: the five were written.
    assert_eq!(values(&read_committed(&topic, 1).await), ["ok-0"]);
    assert_eq!(read_all(&topic, Isolation::ReadUncommitted).await.len(), 6);
    producer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_transaction_dropped_open_is_aborted() {
    let topic = testkit::topic("tx-drop", 1).await;
    let producer = testkit::kafka()
        .transactional_producer(testkit::unique("tx-drop"))
        .await
        .unwrap();
    // A guard dropped after sending four records, without commit or abort.
    {
        let tx = producer.begin().await.unwrap();
        tx.send_batch(texts(&topic, "dropped", 4)).await.unwrap();
    }
    // A future running a transaction, dropped (cancelled) in the middle of it.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(500),
        producer.transaction(async |tx| {
            tx.send(Record::to(&topic).text("cancelled-0")).await?;
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        }),
    )
    .await;
    assert!(cancelled.is_err(), "the transaction future was cancelled");
    // The next transaction begins once the aborts are done, and commits.
    let tx = producer.begin().await.unwrap();
    tx.send(Record::to(&topic).text("after-0")).await.unwrap();
    tx.commit().await.unwrap();

    // Had a transaction stayed open, a read-committed reader would stop before it and never
    // see the committed record.
    assert_eq!(values(&read_committed(&topic, 1).await), ["after-0"]);
    let mut expected = named("dropped", 4);
    expected.extend(["cancelled-0".to_owned(), "after-0".to_owned()]);
    assert_eq!(
        values(&read_all(&topic, Isolation::ReadUncommitted).await),
        expected
    );
    producer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_zombie_producer_is_fenced_and_its_transaction_writes_nothing_visible() {
    let topic = testkit::topic("tx-zombie", 1).await;
    let id = testkit::unique("tx-zombie");
    // The old instance opens a transaction and writes three records.
    let zombie = testkit::kafka()
        .transactional_producer(id.as_str())
        .await
        .unwrap();
    let open = zombie.begin().await.unwrap();
    open.send_batch(texts(&topic, "zombie", 3)).await.unwrap();

    // A new instance with the same transactional id registers: the old one is fenced.
    let successor = testkit::kafka()
        .transactional_producer(id.as_str())
        .await
        .unwrap();
    let tx = successor.begin().await.unwrap();
    tx.send_batch(texts(&topic, "successor", 2)).await.unwrap();
    tx.commit().await.unwrap();

    // The old instance's commit fails with Fenced, and so does anything it tries after.
    let error = open.commit().await.unwrap_err();
    assert!(matches!(error, Error::Fenced { .. }), "{error:?}");
    assert_eq!(error.code(), ErrorCode::Fenced);
    assert!(error.is_fatal() && zombie.is_fenced());
    let again = zombie.begin().await.unwrap_err();
    assert_eq!(again.code(), ErrorCode::Fenced, "{again:?}");

    // Read committed: the successor's records only. Read uncommitted: the zombie did write.
    assert_eq!(
        values(&read_committed(&topic, 2).await),
        named("successor", 2)
    );
    let mut expected = named("zombie", 3);
    expected.extend(named("successor", 2));
    assert_eq!(
        values(&read_all(&topic, Isolation::ReadUncommitted).await),
        expected
    );
    successor.shutdown().await.unwrap();
}

#[tokio::test]
async fn consumed_offsets_are_committed_only_with_their_transaction() {
    let input = testkit::topic("tx-in", 1).await;
    let output = testkit::topic("tx-out", 1).await;
    testkit::populate(&input, 10, 1).await;
    let group = testkit::unique("tx-group");
    let config = testkit::config();
    let consumer: BaseConsumer = config.to_consumer_config(&group).create().unwrap();
    let producer = testkit::kafka()
        .transactional_producer(testkit::unique("tx-offsets"))
        .await
        .unwrap();
    let offsets = |next: i64| {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&input, 0, Offset::Offset(next))
            .unwrap();
        list
    };
    // Offsets up to 4 in a transaction that aborts: the group commits nothing.
    let tx = producer.begin().await.unwrap();
    tx.send(Record::to(&output).text("from-0-to-3"))
        .await
        .unwrap();
    tx.send_offsets(&offsets(4), consumer.group_metadata().unwrap())
        .await
        .unwrap();
    tx.abort().await.unwrap();
    assert_eq!(testkit::committed(&group, &input).await, [(0, None, 10)]);
    // Offsets up to 7 in one that commits: the group's offset is 7, with the output record.
    producer
        .transaction(async |tx| {
            tx.send(Record::to(&output).text("from-0-to-6")).await?;
            tx.send_offsets(&offsets(7), consumer.group_metadata().unwrap())
                .await
        })
        .await
        .unwrap();
    assert_eq!(testkit::committed(&group, &input).await, [(0, Some(7), 10)]);
    assert_eq!(values(&read_committed(&output, 1).await), ["from-0-to-6"]);
    producer.shutdown().await.unwrap();
}
