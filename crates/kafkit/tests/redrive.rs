//! Replaying dead-letter topics on the test broker: one replay at a time per dead-letter
//! topic, records that cannot go back reported and passed over (never a poison for the rest),
//! and replays only to the topic a dead-letter topic serves unless the operator overrides it.

use std::collections::HashMap;
use std::time::Duration;

use kafkit::dead_letter::ORIGINAL_TOPIC;
use kafkit::{Admin, ErrorCode, Record, Redrive, TopicSpec};

/// A source topic and its dead-letter topic `{source}.dlq`.
async fn pair(prefix: &str) -> (String, String) {
    let source = testkit::topic(prefix, 1).await;
    let dlt = format!("{source}.dlq");
    Admin::new(&testkit::config())
        .unwrap()
        .ensure_topics(&[TopicSpec::new(&dlt, 2)])
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
    let mut counts = HashMap::new();
    for message in testkit::read(topic, expected + 1, Duration::from_secs(5)).await {
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
