//! Replaying dead-letter topics on the test broker: one replay at a time per dead-letter
//! topic, records that cannot go back reported and passed over (never a poison for the rest),
//! and replays only to the topic a dead-letter topic serves unless the operator overrides it;
//! chosen and filtered records replayed out of order once, remembered in the redrive group's
//! commit metadata across restarts (on Apache Kafka and on the embedded broker), and a choice
//! too scattered to remember refused before anything is published.

use std::collections::HashMap;
use std::time::Duration;

use kafkit::dead_letter::{ERROR_KIND, ORIGINAL_TOPIC};
use kafkit::{
    Admin, KafkaConfig, Record, Redrive, TopicSpec, error::ErrorCode, filter::RecordFilter,
};

/// A source topic and its dead-letter topic `{source}.dlq`.
async fn pair(prefix: &str) -> (String, String) {
    pair_with(prefix, 2).await
}

/// A source topic and its dead-letter topic `{source}.dlq` with `partitions` partitions.
async fn pair_with(prefix: &str, partitions: i32) -> (String, String) {
    let source = testkit::topic(prefix, 1).await;
    let dlt = format!("{source}.dlq");
    Admin::new(&testkit::config())
        .unwrap()
        .ensure_topics(&[TopicSpec::new(&dlt, partitions)])
        .await
        .unwrap();
    (source, dlt)
}

fn dead_letter(dlt: &str, original: Option<&str>, id: u64) -> Record {
    let record = Record::to(dlt).key(format!("k{id}"));
    let record = match original {
        Some(topic) => record.header(ORIGINAL_TOPIC, topic),
        None => record,
    };
    record.json(&serde_json::json!({ "id": id })).unwrap()
}

fn redrive() -> Redrive {
    Redrive::new(&testkit::config()).unwrap()
}

/// How often each id arrived on `topic` (read for a while, so late duplicates show).
async fn arrivals(topic: &str, expected: usize) -> HashMap<u64, usize> {
    arrivals_on(&testkit::brokers(), topic, expected).await
}

/// [`arrivals`] on the cluster at `bootstrap`.
async fn arrivals_on(bootstrap: &str, topic: &str, expected: usize) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for message in testkit::read_with(bootstrap, topic, expected + 1, Duration::from_secs(5)).await
    {
        let id = message.json::<serde_json::Value>().unwrap()["id"]
            .as_u64()
            .unwrap();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replays_of_one_dead_letter_topic_publish_each_record_once() {
    let (source, dlt) = pair("redrive-once").await;
    testkit::send(
        (0..300)
            .map(|id| dead_letter(&dlt, Some(&source), id))
            .collect(),
    )
    .await;

    let replays = (0..4).map(|_| {
        let dlt = dlt.clone();
        tokio::spawn(async move { redrive().replay(&dlt, 10_000).await.unwrap() })
    });
    let reports = futures::future::join_all(replays).await;
    let total: usize = reports.into_iter().map(|r| r.unwrap().total()).sum();
    assert_eq!(
        total, 300,
        "the four replays together re-publish each record once"
    );

    let counts = arrivals(&source, 300).await;
    assert_eq!(counts.len(), 300);
    assert!(counts.values().all(|&n| n == 1), "duplicates: {counts:?}");
}

#[tokio::test]
async fn records_that_cannot_go_back_are_reported_and_do_not_block_the_rest() {
    let (source, dlt) = pair("redrive-poison").await;
    let victim = testkit::topic("redrive-victim", 1).await;
    testkit::send(vec![
        dead_letter(&dlt, Some(&source), 1),
        dead_letter(&dlt, None, 2),
        dead_letter(&dlt, Some(&victim), 3),
        dead_letter(&dlt, Some("not a topic!"), 4),
        dead_letter(&dlt, Some(&source), 5),
    ])
    .await;

    let report = redrive().replay(&dlt, 100).await.unwrap();
    assert_eq!(report.replayed.get(&source), Some(&2), "{report:?}");
    assert_eq!(report.total(), 2);
    assert_eq!(report.skipped.len(), 3, "{report:?}");
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.contains("no original-topic"))
    );
    assert!(report.skipped.iter().any(|s| s.contains(&victim)));
    assert!(report.skipped.iter().any(|s| s.contains("not a topic!")));
    assert!(report.failed.is_empty());
    let counts = arrivals(&source, 2).await;
    assert_eq!(counts, HashMap::from([(1, 1), (5, 1)]));
    // A forged original-topic never reaches the topic it names.
    assert!(
        testkit::read(&victim, 1, Duration::from_secs(2))
            .await
            .is_empty()
    );

    // The next replay starts after them: nothing again, nothing skipped again.
    let again = redrive().replay(&dlt, 100).await.unwrap();
    assert_eq!(again, kafkit::redrive::ReplayReport::default());

    // The operator's override sends a record wherever its header says.
    testkit::send(vec![dead_letter(&dlt, Some(&victim), 6)]).await;
    let forced = redrive().any_destination().replay(&dlt, 100).await.unwrap();
    assert_eq!(forced.replayed.get(&victim), Some(&1), "{forced:?}");
}

#[tokio::test]
async fn a_dead_letter_topic_of_unknown_naming_is_refused_without_an_override() {
    let odd = testkit::topic("redrive-odd-name", 1).await;
    let target = testkit::topic("redrive-odd-target", 1).await;
    testkit::send(vec![dead_letter(&odd, Some(&target), 1)]).await;
    let error = redrive().replay(&odd, 10).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidTopicSpec, "{error}");
    assert!(
        testkit::read(&target, 1, Duration::from_secs(2))
            .await
            .is_empty()
    );

    // Spring's and seed 001's names are understood.
    assert_eq!(Redrive::source_of("orders-dlt").as_deref(), Some("orders"));
    assert_eq!(Redrive::source_of("orders_dlt").as_deref(), Some("orders"));
    assert_eq!(Redrive::source_of("orders.DLT").as_deref(), Some("orders"));
    assert_eq!(Redrive::source_of(".dlq"), None);
}

/// Partition 0's position and the records remembered as replayed ahead of it.
async fn progress(redrive: &Redrive, dlt: &str) -> (i64, String) {
    let partitions = redrive.progress(dlt).await.unwrap();
    let p = &partitions[0].progress;
    (p.next(), p.metadata())
}

#[tokio::test]
async fn chosen_records_are_replayed_once_and_later_replays_pass_over_them_after_a_restart() {
    let (source, dlt) = pair_with("redrive-chosen", 1).await;
    testkit::send(
        (0..6)
            .map(|id| dead_letter(&dlt, Some(&source), id))
            .collect(),
    )
    .await;

    // Replay records 1 and 3 of six: those two go back, the position stays at 0 and the two
    // are remembered in the redrive group's commit.
    let first = redrive();
    let chosen = first
        .replay_offsets(&dlt, &[(0, 3), (0, 1)], |_| true)
        .await
        .unwrap();
    assert_eq!(chosen.total(), 2, "{chosen:?}");
    assert_eq!(chosen.scanned, 3, "read from offset 1 to 3: {chosen:?}");
    assert_eq!(arrivals(&source, 2).await, HashMap::from([(1, 1), (3, 1)]));
    assert_eq!(
        progress(&first, &dlt).await,
        (0, "kafkit-redrive/1 1,3".to_owned())
    );
    assert_eq!(
        testkit::committed(&Redrive::group_of(&dlt), &dlt).await,
        vec![(0, Some(0), 6)]
    );

    // Choosing one of them again publishes nothing: it is already replayed.
    let again = first
        .replay_offsets(&dlt, &[(0, 3)], |_| true)
        .await
        .unwrap();
    assert_eq!(again.total(), 0);
    assert_eq!(again.skipped, vec!["0/3: already replayed".to_owned()]);

    // The next record is 0; the position then moves past 1, replayed before.
    let next = first.replay(&dlt, 1).await.unwrap();
    assert_eq!(next.total(), 1, "{next:?}");
    assert_eq!(
        progress(&first, &dlt).await,
        (2, "kafkit-redrive/1 3".to_owned())
    );

    // A new Redrive (a restart) replays the rest, and not 1 or 3 a second time.
    let rest = redrive().replay(&dlt, 100).await.unwrap();
    assert_eq!(rest.total(), 3, "2, 4 and 5: {rest:?}");
    let counts = arrivals(&source, 6).await;
    assert_eq!(
        counts,
        (0..6).map(|id| (id, 1)).collect::<HashMap<u64, usize>>()
    );
    assert_eq!(progress(&redrive(), &dlt).await, (6, String::new()));
}

#[tokio::test]
async fn a_choice_too_scattered_to_remember_is_refused_and_publishes_nothing() {
    let (source, dlt) = pair_with("redrive-budget", 1).await;
    testkit::send(
        (0..3_000)
            .map(|id| dead_letter(&dlt, Some(&source), id))
            .collect(),
    )
    .await;

    // Every other record from 1001 to 2599: 800 of them, 5 bytes each in the metadata, over
    // the budget.
    let scattered: Vec<(i32, i64)> = (0..800).map(|i| (0, 1_001 + 2 * i)).collect();
    let error = redrive()
        .replay_offsets(&dlt, &scattered, |_| true)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::ReplayRefused, "{error}");
    let message = error.to_string();
    assert!(
        message.contains("3072") && message.contains("replay the earlier records"),
        "{message}"
    );
    assert!(
        testkit::read(&source, 1, Duration::from_secs(2))
            .await
            .is_empty(),
        "nothing was published"
    );
    assert_eq!(progress(&redrive(), &dlt).await, (0, String::new()));
    // An offset past the end, or of a partition the topic does not have, names no record:
    // reported as skipped, and nothing changes.
    let report = redrive()
        .replay_offsets(&dlt, &[(0, 3_000), (7, 1)], |_| true)
        .await
        .unwrap();
    assert_eq!(report.total(), 0);
    assert!(
        report.skipped[0].starts_with("0/3000: past the end of partition 0"),
        "{:?}",
        report.skipped
    );
    assert!(
        report.skipped[1].contains("has no partition 7"),
        "{:?}",
        report.skipped
    );
    assert_eq!(progress(&redrive(), &dlt).await, (0, String::new()));

    // The same number of records in a row fit: one range.
    let contiguous: Vec<(i32, i64)> = (1_001..1_801).map(|o| (0, o)).collect();
    let report = redrive()
        .replay_offsets(&dlt, &contiguous, |_| true)
        .await
        .unwrap();
    assert_eq!(report.total(), 800);
    assert_eq!(
        progress(&redrive(), &dlt).await,
        (0, "kafkit-redrive/1 1001-1800".to_owned())
    );
}

#[tokio::test]
async fn a_filter_replays_only_the_records_it_keeps() {
    let (source, dlt) = pair_with("redrive-filter", 1).await;
    let kinds = [
        "transient",
        "permanent",
        "transient",
        "invalid",
        "transient",
        "permanent",
    ];
    testkit::send(
        kinds
            .iter()
            .zip(0..)
            .map(|(kind, id)| dead_letter(&dlt, Some(&source), id).header(ERROR_KIND, *kind))
            .collect(),
    )
    .await;

    // A malformed filter is refused by its field.
    let bad = RecordFilter {
        json: Some("id".into()),
        ..RecordFilter::default()
    };
    let error = redrive()
        .replay_matching(&dlt, &bad, 100, |_| true)
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidSelection);
    assert!(error.to_string().starts_with("filter.json:"), "{error}");

    // The transient failures go back, no others; at most two of them this time.
    let transient = RecordFilter {
        error_kind: Some("transient".into()),
        ..RecordFilter::default()
    };
    let report = redrive()
        .replay_matching(&dlt, &transient, 2, |_| true)
        .await
        .unwrap();
    assert_eq!(report.total(), 2, "{report:?}");
    assert_eq!(report.scanned, 3);
    assert_eq!(arrivals(&source, 2).await, HashMap::from([(0, 1), (2, 1)]));
    // Record 0 was at the position: the position moved past it.
    assert_eq!(
        progress(&redrive(), &dlt).await,
        (1, "kafkit-redrive/1 2".to_owned())
    );
    let rest = redrive()
        .replay_matching(&dlt, &transient, 100, |_| true)
        .await
        .unwrap();
    assert_eq!(rest.total(), 1, "{rest:?}");
    // A key and JSON filter together.
    let both = RecordFilter {
        key: Some("k5".into()),
        json: Some("id=5".into()),
        ..RecordFilter::default()
    };
    assert_eq!(
        redrive()
            .replay_matching(&dlt, &both, 100, |_| true)
            .await
            .unwrap()
            .total(),
        1
    );

    // Replay all takes the two left (1 and 3), each record went back once.
    assert_eq!(redrive().replay(&dlt, 100).await.unwrap().total(), 2);
    let counts = arrivals(&source, 6).await;
    assert_eq!(
        counts,
        (0..6).map(|id| (id, 1)).collect::<HashMap<u64, usize>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_keeps_what_was_replayed_out_of_order() {
    let broker = kafkit::cluster::EmbeddedBroker::start(1).unwrap();
    let bootstrap = broker.bootstrap_servers().to_owned();
    let config = KafkaConfig::new([bootstrap.as_str()]);
    broker.create_topic("orders", 1).unwrap();
    broker.create_topic("orders.dlq", 1).unwrap();
    let producer = kafkit::Producer::new(&config).unwrap();
    for result in producer
        .send_batch((0..4).map(|id| dead_letter("orders.dlq", Some("orders"), id)))
        .await
    {
        result.unwrap();
    }
    producer.shutdown().await.unwrap();

    let chosen = Redrive::new(&config)
        .unwrap()
        .replay_offsets("orders.dlq", &[(0, 2)], |_| true)
        .await
        .unwrap();
    assert_eq!(chosen.total(), 1);
    // The mock broker returns the commit's metadata as Apache Kafka does.
    let fresh = Redrive::new(&config).unwrap();
    assert_eq!(
        progress(&fresh, "orders.dlq").await,
        (0, "kafkit-redrive/1 2".to_owned())
    );
    assert_eq!(fresh.replay("orders.dlq", 100).await.unwrap().total(), 3);
    let counts = arrivals_on(&bootstrap, "orders", 4).await;
    assert_eq!(
        counts,
        (0..4).map(|id| (id, 1)).collect::<HashMap<u64, usize>>()
    );
}
