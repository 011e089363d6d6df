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
    Kafka, KafkaConfig, Record, Redrive, TopicSpec, error::ErrorCode, filter::RecordFilter,
};

/// A source topic and its dead-letter topic `{source}.dlq`.
async fn pair(prefix: &str) -> (String, String) {
    pair_with(prefix, 2).await
}

/// A source topic and its dead-letter topic `{source}.dlq` with `partitions` partitions.
async fn pair_with(prefix: &str, partitions: i32) -> (String, String) {
    let source = testkit::topic(prefix, 1).await;
    let dlt = format!("{source}.dlq");
    testkit::kafka()
        .admin()
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
    testkit::kafka().redrive().unwrap()
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

    // Spring's names and `{topic}_dlt` are understood.
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
    let kafka = Kafka::connect(&KafkaConfig::new([bootstrap.as_str()])).unwrap();
    broker.create_topic("orders", 1).unwrap();
    broker.create_topic("orders.dlq", 1).unwrap();
    let producer = kafka.producer().unwrap();
    for result in producer
        .send_batch((0..4).map(|id| dead_letter("orders.dlq", Some("orders"), id)))
        .await
    {
        result.unwrap();
    }
    producer.shutdown().await.unwrap();

    let chosen = kafka
        .redrive()
        .unwrap()
        .replay_offsets("orders.dlq", &[(0, 2)], |_| true)
        .await
        .unwrap();
    assert_eq!(chosen.total(), 1);
    // The mock broker returns the commit's metadata as Apache Kafka does.
    let fresh = kafka.redrive().unwrap();
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

/// A handler call: the record's id, the topic, the attempt it was given, whether it had a due
/// time.
type Call = (u64, String, u32, bool);

/// Whether `name` is a header of a failure or of a retry round trip (kafkit's or Spring's).
fn is_round_trip_header(name: &str) -> bool {
    kafkit::dead_letter::FAILURE_HEADERS.contains(&name)
        || kafkit::retry_topic::is_retry_header(name)
        || name.starts_with("kafka_dlt-")
        || name.starts_with("retry_topic-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_dead_lettered_after_retry_tiers_replays_to_its_source_and_starts_afresh() {
    use kafkit::consumer::{CommitStrategy, ConsumerOptions};
    use kafkit::retry_topic::{self, RetryTopics};
    use kafkit::{HandlerError, Message, RetryPolicy, Router};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    // Given a route with two retry tiers of 1 s whose handler fails record 1 while `broken`.
    let source = testkit::topic("redrive-tiers", 1).await;
    let dlt = format!("{source}.dlq");
    let group = testkit::unique("redrive-tiers");
    let broken = Arc::new(AtomicBool::new(true));
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let router = || {
        let (broken, calls) = (broken.clone(), calls.clone());
        let mut router = Router::new();
        router
            .register_raw(source.clone(), move |message: Message| {
                let id = message.json::<serde_json::Value>().unwrap()["id"]
                    .as_u64()
                    .unwrap();
                let due = retry_topic::due_at(&message).is_some();
                calls
                    .lock()
                    .unwrap()
                    .push((id, message.topic.clone(), message.attempt, due));
                let fail = id == 1 && broken.load(Ordering::SeqCst);
                futures::future::ready(if fail {
                    Err(HandlerError::transient("down"))
                } else {
                    Ok(())
                })
            })
            .retry(RetryPolicy::none())
            .retry_topics(RetryTopics::new([
                Duration::from_secs(1),
                Duration::from_secs(1),
            ]));
        router
    };
    let options = ConsumerOptions {
        commit: CommitStrategy::Periodic(Duration::from_millis(200)),
        drain_timeout: Duration::from_secs(1),
        ..ConsumerOptions::default()
    };
    let run = |router: Router| {
        let consumer = testkit::kafka()
            .consumer_with_options(&group, router, options.clone())
            .unwrap();
        let token = tokio_util::sync::CancellationToken::new();
        let stop = token.clone();
        let task = tokio::spawn(async move { consumer.run(stop.cancelled_owned()).await });
        (token, task)
    };
    testkit::send((0..3).map(|id| dead_letter(&source, None, id)).collect()).await;

    // When record 1 fails on the source and both tiers, it is dead-lettered.
    let (token, task) = run(router());
    let dead = testkit::read(&dlt, 1, Duration::from_secs(60)).await;
    token.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(dead.len(), 1);

    // And replayed once the handler is fixed.
    broken.store(false, Ordering::SeqCst);
    let report = redrive().replay(&dlt, 10).await.unwrap();
    assert_eq!(report.replayed.get(&source), Some(&1), "{report:?}");
    assert_eq!(report.total(), 1, "{report:?}");

    // Then the copy is on the source topic, not on a retry tier, without any failure or
    // retry header (no due time, no tier, no attempts), with the redrive-of header.
    let on_source = testkit::read(&source, 4, Duration::from_secs(10)).await;
    assert_eq!(
        on_source.len(),
        4,
        "the three records and the replayed copy"
    );
    let replayed = &on_source[3];
    let names: Vec<&str> = replayed.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !names.iter().any(|n| is_round_trip_header(n)),
        "the replayed record carries {names:?}"
    );
    assert!(replayed.header_value(kafkit::redrive::REDRIVE_OF).is_some());

    // And the consumer handles it once, on the source, as a first attempt, not waiting.
    let before = calls.lock().unwrap().len();
    let (token, task) = run(router());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while calls.lock().unwrap().len() == before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    token.cancel();
    task.await.unwrap().unwrap();
    let after: Vec<_> = calls.lock().unwrap()[before..].to_vec();
    assert_eq!(after, vec![(1, source.clone(), 1, false)]);
}

#[tokio::test]
async fn spring_retry_topic_copies_replay_to_their_source_without_retry_headers() {
    // Given a Spring-named dead-letter topic `{source}-dlt` holding copies made after Spring's
    // retry topics: one naming the source (the first `kafka_dlt-original-topic`), one naming
    // only the last retry topic it failed on, and one of kafkit's naming tier 2. Each carries
    // a due time an hour away and its attempts.
    let source = testkit::topic("redrive-spring", 1).await;
    let dlt = format!("{source}-dlt");
    testkit::kafka()
        .admin()
        .unwrap()
        .ensure_topics(&[TopicSpec::new(&dlt, 1)])
        .await
        .unwrap();
    let later = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let spring = |id: u64, original: &[String]| {
        let mut record = Record::to(&dlt)
            .key(format!("k{id}"))
            .header("tenant", "acme");
        for topic in original {
            record = record.header("kafka_dlt-original-topic", topic.as_str());
        }
        record
            .header("kafka_dlt-original-partition", 0i32.to_be_bytes().to_vec())
            .header("kafka_dlt-exception-message", "down")
            .header("retry_topic-attempts", 3i32.to_be_bytes().to_vec())
            .header(
                "retry_topic-backoff-timestamp",
                later.to_be_bytes()[2..].to_vec(),
            )
            .header(
                "retry_topic-original-timestamp",
                1_700_000_000_000u64.to_be_bytes().to_vec(),
            )
            .json(&serde_json::json!({ "id": id }))
            .unwrap()
    };
    let kafkit_tier = dead_letter(&dlt, Some(&format!("{source}.retry.2")), 2)
        .header("tenant", "acme")
        .header(kafkit::retry_topic::RETRY_TIER, "2")
        .header(kafkit::retry_topic::RETRY_DUE_AT, later.to_string());
    testkit::send(vec![
        spring(0, &[source.clone(), format!("{source}-retry-0")]),
        spring(1, &[format!("{source}-retry-1")]),
        kafkit_tier,
    ])
    .await;

    // When the dead-letter topic is replayed.
    let report = redrive().replay(&dlt, 10).await.unwrap();

    // Then all three went back to the source, carrying their own headers only.
    assert_eq!(report.replayed.get(&source), Some(&3), "{report:?}");
    assert!(report.skipped.is_empty(), "{report:?}");
    let replayed = testkit::read(&source, 3, Duration::from_secs(10)).await;
    assert_eq!(replayed.len(), 3);
    for message in &replayed {
        let names: Vec<&str> = message.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            !names.iter().any(|n| is_round_trip_header(n)),
            "offset {} carries {names:?}",
            message.offset
        );
        assert_eq!(message.header_value("tenant"), Some(&b"acme"[..]));
        assert!(message.header_value(kafkit::redrive::REDRIVE_OF).is_some());
    }
}

/// A replay on the cluster at `bootstrap` that sends each record wherever its header says,
/// giving up on a delivery after 3 s.
fn impatient(bootstrap: &str) -> Redrive {
    let config = KafkaConfig {
        delivery_timeout: Duration::from_secs(3),
        ..KafkaConfig::new([bootstrap])
    };
    Kafka::connect(&config)
        .unwrap()
        .redrive()
        .unwrap()
        .any_destination()
}

/// The ids of the records that arrived on `topic` of the cluster at `bootstrap`, each
/// arrival counted, in order.
async fn ids_on(bootstrap: &str, topic: &str, expected: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = arrivals_on(bootstrap, topic, expected)
        .await
        .into_iter()
        .flat_map(|(id, n)| std::iter::repeat_n(id, n))
        .collect();
    ids.sort_unstable();
    ids
}

/// The cluster at `bootstrap` (the embedded broker of a test).
fn on(bootstrap: &str) -> Kafka {
    Kafka::connect(&KafkaConfig::new([bootstrap])).unwrap()
}

/// Sends `records` to the cluster at `bootstrap`.
async fn send_on(bootstrap: &str, records: Vec<Record>) {
    let producer = on(bootstrap).producer().unwrap();
    for result in producer.send_batch(records).await {
        result.unwrap();
    }
    producer.shutdown().await.unwrap();
}

// A single Apache Kafka node cannot fail some records of a replay and not others (a topic
// asking for more in-sync replicas than it has is served anyway: Kafka 4 caps
// min.insync.replicas at the replication factor), so these tests fail a destination topic in
// librdkafka's mock cluster, which keeps commit metadata as Kafka does.

#[tokio::test]
async fn scattered_failures_never_grow_the_commit_past_what_kafka_keeps() {
    // 2,000 dead letters; the odd ones go back to a topic whose leader is unavailable, so
    // each of them fails (retriably, after the delivery timeout) and splits the set of
    // replayed records.
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    for topic in ["orders", "orders.dlq", "stuck"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    cluster
        .topic_error(
            "stuck",
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        )
        .unwrap();
    send_on(
        &bootstrap,
        (0..2_000)
            .map(|id| {
                let home = if id % 2 == 0 { "orders" } else { "stuck" };
                dead_letter("orders.dlq", Some(home), id)
            })
            .collect(),
    )
    .await;
    let all: Vec<(i32, i64)> = (0..2_000).map(|offset| (0, offset)).collect();

    // A replay of all of them (one range: within the budget) commits what it published,
    // within Kafka's offset.metadata.max.bytes (4096). It publishes in rounds that leave
    // room for each record of the round to fail: the first round is 407 records (the tag,
    // 17 bytes, and 10 bytes per failure: 17 + 407 x 10 <= 4096), and after a round with
    // failures it stops.
    let first = impatient(&bootstrap)
        .replay_offsets("orders.dlq", &all, |_| true)
        .await
        .unwrap();
    let published = ids_on(&bootstrap, "orders", 1_000).await;
    assert_eq!(published, (0..407).step_by(2).collect::<Vec<u64>>());
    assert_eq!(
        (first.total(), first.failed.len(), first.held_back),
        (204, 203, 1_593),
        "{first:?}"
    );
    let progress = committed_progress(&bootstrap).await.progress;
    assert!(
        progress.metadata().len() <= 4_096,
        "{} bytes",
        progress.metadata().len()
    );
    // Every record it published is remembered as replayed; no record that failed is.
    for id in &published {
        assert!(progress.replayed(*id as i64), "{id}");
    }
    for failed in &first.failed {
        let offset: i64 = failed[2..failed.find(':').unwrap()].parse().unwrap();
        assert!(!progress.replayed(offset), "{failed}");
    }

    // The next replay of the same choice publishes none of them again: it passes over the
    // 204, tries the 203 again and 204 more, and holds back the rest.
    let second = impatient(&bootstrap)
        .replay_offsets("orders.dlq", &all, |_| true)
        .await
        .unwrap();
    let passed_over = second
        .skipped
        .iter()
        .filter(|s| s.ends_with("already replayed"))
        .count();
    assert_eq!(
        (
            passed_over,
            second.total(),
            second.failed.len(),
            second.held_back
        ),
        (204, 102, 305, 1_389),
        "{second:?}"
    );
    let both = ids_on(&bootstrap, "orders", 1_000).await;
    assert_eq!(both, (0..611).step_by(2).collect::<Vec<u64>>(), "each once");
    let progress = committed_progress(&bootstrap).await.progress;
    assert!(
        progress.metadata().len() <= 4_096,
        "{} bytes",
        progress.metadata().len()
    );
}

/// The progress of partition 0 of orders.dlq on the cluster at `bootstrap`.
async fn committed_progress(bootstrap: &str) -> kafkit::redrive::PartitionProgress {
    impatient(bootstrap)
        .progress("orders.dlq")
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test]
async fn a_sequential_replay_remembers_what_it_published_after_a_failure() {
    // Ten dead letters; record 3 goes back to a topic whose leader is unavailable.
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    for topic in ["orders", "orders.dlq", "stuck"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    cluster
        .topic_error(
            "stuck",
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        )
        .unwrap();
    send_on(
        &bootstrap,
        (0..10)
            .map(|id| {
                let home = if id == 3 { "stuck" } else { "orders" };
                dead_letter("orders.dlq", Some(home), id)
            })
            .collect(),
    )
    .await;

    // The replay publishes nine; record 3 fails for now. The position goes back to 3, and
    // the six published after it are remembered ahead of it.
    let first = impatient(&bootstrap)
        .replay("orders.dlq", 100)
        .await
        .unwrap();
    assert_eq!((first.total(), first.failed.len()), (9, 1), "{first:?}");
    assert!(first.failed[0].starts_with("0/3: "), "{first:?}");
    let progress = committed_progress(&bootstrap).await.progress;
    assert_eq!(
        (progress.next(), progress.metadata().as_str()),
        (3, "kafkit-redrive/1 4-9")
    );

    // The next replay tries record 3 again, and publishes none of the others a second time.
    let second = impatient(&bootstrap)
        .replay("orders.dlq", 100)
        .await
        .unwrap();
    assert_eq!((second.total(), second.failed.len()), (0, 1), "{second:?}");
    let ids = ids_on(&bootstrap, "orders", 9).await;
    assert_eq!(ids, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
}

#[tokio::test]
async fn a_record_passed_over_for_an_unknown_topic_is_replayed_again_by_offset_once_it_exists() {
    // Three dead letters of "orders", whose topic is missing when the replay runs.
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    for topic in ["orders", "orders.dlq"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    send_on(
        &bootstrap,
        (0..3)
            .map(|id| dead_letter("orders.dlq", Some("orders"), id))
            .collect(),
    )
    .await;
    let unknown = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    cluster.topic_error("orders", unknown).unwrap();
    let redrive = || on(&bootstrap).redrive().unwrap();

    // The replay passes over all three for good, naming why; the position moves past them.
    let first = redrive().replay("orders.dlq", 100).await.unwrap();
    assert_eq!((first.total(), first.skipped.len()), (0, 3), "{first:?}");
    assert!(first.skipped[0].starts_with("0/0: "), "{first:?}");
    assert_eq!(committed_progress(&bootstrap).await.progress.next(), 3);

    // The topic is back. Chosen by offset, records 0 and 2 are replayed again, once; the
    // progress does not change.
    cluster
        .topic_error(
            "orders",
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
        )
        .unwrap();
    let again = redrive()
        .replay_again("orders.dlq", &[(0, 0), (0, 2)], |_| true)
        .await
        .unwrap();
    assert_eq!(again.total(), 2, "{again:?}");
    assert_eq!(ids_on(&bootstrap, "orders", 2).await, [0, 2]);
    assert_eq!(committed_progress(&bootstrap).await.progress.next(), 3);
    // Without `again`, a record replayed or passed over before is not published twice.
    let once = redrive()
        .replay_offsets("orders.dlq", &[(0, 1)], |_| true)
        .await
        .unwrap();
    assert_eq!(once.skipped, ["0/1: already replayed"]);
}

/// A replay holds about its byte budget of records (the one crossing it is the last taken):
/// the rest wait for the next replay, never lost nor published twice, however they are chosen.
#[tokio::test]
async fn a_replay_holds_at_most_its_byte_budget_and_the_next_one_continues() {
    let (source, dlt) = pair_with("redrive-bytes", 1).await;
    // Twelve dead letters of about 100 kB each.
    let big = |id: u64| {
        Record::to(&dlt)
            .key(format!("k{id}"))
            .header(ORIGINAL_TOPIC, source.as_str())
            .json(&serde_json::json!({"id": id, "pad": "x".repeat(100_000)}))
            .unwrap()
    };
    testkit::send((0..12).map(big).collect()).await;
    // A budget of 250 kB: three records a replay.
    let redrive = redrive().max_bytes(250_000);
    let next = redrive.replay(&dlt, 100).await.unwrap();
    assert_eq!(next.total(), 3, "0 to 2: {next:?}");
    // Six records chosen: three replayed, three held back for the next replay.
    let chosen: Vec<(i32, i64)> = (3..9).map(|offset| (0, offset)).collect();
    let offsets = redrive
        .replay_offsets(&dlt, &chosen, |_| true)
        .await
        .unwrap();
    assert_eq!((offsets.total(), offsets.held_back), (3, 3), "{offsets:?}");
    // Those a filter keeps (all): three more, 6 to 8.
    let matching = redrive
        .replay_matching(&dlt, &RecordFilter::default(), 100, |_| true)
        .await
        .unwrap();
    assert_eq!(matching.total(), 3, "{matching:?}");
    // The next ones pass over those and take the last three.
    let rest = redrive.replay(&dlt, 100).await.unwrap();
    assert_eq!(rest.total(), 3, "9 to 11: {rest:?}");
    assert_eq!(redrive.replay(&dlt, 100).await.unwrap().total(), 0);
    let counts = arrivals(&source, 12).await;
    assert_eq!(
        counts,
        (0..12).map(|id| (id, 1)).collect::<HashMap<u64, usize>>()
    );
}
