//! The consumer runtime against the real test broker: typed handlers, retries, dead-letter
//! topics, validation, rebalances, the circuit breaker, batches, health.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkit::dead_letter;
use kafkit::{
    Consumer, HandlerError, Message, Record, RetryPolicy, Router, batch::BatchError,
    batch::BatchOptions, circuit_breaker::CircuitBreakerConfig, circuit_breaker::CircuitState,
    consumer::ConsumerOptions,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
struct Item {
    id: u64,
}

/// Ids seen by a handler, with how often each was seen.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<u64, usize>>>);

impl Seen {
    fn add(&self, id: u64) {
        *self.0.lock().unwrap().entry(id).or_default() += 1;
    }
    fn distinct(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn count(&self, id: u64) -> usize {
        self.0.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
    fn ids(&self) -> HashSet<u64> {
        self.0.lock().unwrap().keys().copied().collect()
    }
}

fn fast_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::exponential(attempts, Duration::from_millis(20)).jitter(0.0)
}

/// Runs `consumer` in the background; the returned token stops it.
fn start(
    consumer: Consumer,
) -> (
    Arc<Consumer>,
    CancellationToken,
    tokio::task::JoinHandle<kafkit::Result<()>>,
) {
    let consumer = Arc::new(consumer);
    let token = CancellationToken::new();
    let running = consumer.clone();
    let stop = token.clone();
    let task = tokio::spawn(async move { running.run(stop.cancelled_owned()).await });
    (consumer, token, task)
}

async fn stop(token: CancellationToken, task: tokio::task::JoinHandle<kafkit::Result<()>>) {
    token.cancel();
    task.await.unwrap().unwrap();
}

fn header(message: &Message, name: &str) -> String {
    String::from_utf8(message.header_value(name).unwrap_or_default().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_topics_ten_thousand_records_each_handled_exactly_as_sent() {
    // Given three topics of 10,000 JSON records each.
    let topics = [
        testkit::topic("orders", 3).await,
        testkit::topic("payments", 2).await,
        testkit::topic("shipments", 1).await,
    ];
    for topic in &topics {
        testkit::populate(topic, 10_000, 100).await;
    }

    // When one consumer handles them with a typed handler per topic.
    let seen: Vec<Seen> = topics.iter().map(|_| Seen::default()).collect();
    let mut router = Router::new();
    for (topic, seen) in topics.iter().zip(&seen) {
        let seen = seen.clone();
        let expected_topic = topic.clone();
        router.register(topic, move |m: Message<Item>| {
            let seen = seen.clone();
            let expected_topic = expected_topic.clone();
            async move {
                assert_eq!(m.topic, expected_topic);
                assert_eq!(
                    m.key_str(),
                    Some(format!("key-{}", m.value.id % 100).as_str())
                );
                seen.add(m.value.id);
                Ok(())
            }
        });
    }
    let group = testkit::unique("three");
    let (consumer, token, task) = start(testkit::kafka().consumer(&group, router).unwrap());
    assert!(testkit::eventually(WAIT, || seen.iter().all(|s| s.distinct() == 10_000)).await);
    assert!(consumer.is_running());
    stop(token, task).await;

    // Then every record was handled once, and the group committed everything.
    for (topic, seen) in topics.iter().zip(&seen) {
        assert_eq!(seen.ids(), (0..10_000).collect::<HashSet<u64>>(), "{topic}");
        assert!(
            (0..10_000).all(|id| seen.count(id) == 1),
            "{topic}: duplicates"
        );
        for (partition, committed, high) in testkit::committed(&group, topic).await {
            assert_eq!(committed, Some(high), "{topic}/{partition}");
        }
    }
    assert!(!consumer.is_running());
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    // Given a handler that fails twice on record 7, then succeeds.
    let topic = testkit::topic("retry", 1).await;
    testkit::populate(&topic, 20, 20).await;
    let attempts = Seen::default();
    let mut router = Router::new();
    let counter = attempts.clone();
    router
        .register(&topic, move |m: Message<Item>| {
            let counter = counter.clone();
            async move {
                counter.add(m.value.id);
                if m.value.id == 7 && counter.count(7) <= 2 {
                    return Err(HandlerError::transient("database busy"));
                }
                Ok(())
            }
        })
        .retry(fast_retries(5));
    let group = testkit::unique("retry");
    let metrics = kafkit::metrics::Metrics::default();
    let consumer = testkit::kafka()
        .consumer(&group, router)
        .unwrap()
        .with_metrics(metrics.clone());
    let (consumer, token, task) = start(consumer);
    assert!(testkit::eventually(WAIT, || attempts.distinct() == 20).await);
    assert!(testkit::eventually(WAIT, || consumer.health().in_flight == 0).await);
    stop(token, task).await;

    // The metrics count every outcome under the topic and group.
    let text = metrics.render();
    for (outcome, count) in [
        ("consumed", 20),
        ("succeeded", 20),
        ("retried", 2),
        ("dead_lettered", 0),
    ] {
        let line = format!(
            "kafkit_consumer_records_total{{group=\"{group}\",outcome=\"{outcome}\",topic=\"{topic}\"}} {count}"
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(text.contains(&format!(
        "kafkit_handler_duration_seconds_count{{group=\"{group}\",topic=\"{topic}\"}} 22"
    )));

    // Then record 7 took three attempts, the others one, and nothing was dead-lettered.
    assert_eq!(attempts.count(7), 3);
    assert!(
        (0..20)
            .filter(|id| *id != 7)
            .all(|id| attempts.count(id) == 1)
    );
    let dead = testkit::read(&format!("{topic}.dlq"), 1, Duration::from_secs(2)).await;
    assert!(dead.is_empty());
    for (_, committed, high) in testkit::committed(&group, &topic).await {
        assert_eq!(committed, Some(high));
    }
}

#[tokio::test]
async fn poison_and_failing_records_are_dead_lettered_and_the_partition_flows_on() {
    // Given 10 good records, a poison record (bad JSON) at offset 3 and a record whose handler
    // always fails at offset 6, all with a header.
    let topic = testkit::topic("poison", 1).await;
    let mut records = Vec::new();
    for i in 0..12u64 {
        let record = Record::to(&topic)
            .key(format!("k{i}"))
            .header("trace-id", format!("t{i}"));
        records.push(match i {
            3 => record.payload("{not json"),
            _ => record.json(&serde_json::json!({"id": i})).unwrap(),
        });
    }
    testkit::send(records).await;

    let seen = Seen::default();
    let mut router = Router::new();
    let handled = seen.clone();
    router
        .register(&topic, move |m: Message<Item>| {
            let handled = handled.clone();
            async move {
                if m.value.id == 6 {
                    return Err(HandlerError::transient("downstream rejects 6"));
                }
                handled.add(m.value.id);
                Ok(())
            }
        })
        .retry(fast_retries(3));
    let group = testkit::unique("poison");
    let (_consumer, token, task) = start(testkit::kafka().consumer(&group, router).unwrap());

    // Then both land in the dead-letter topic with their key, value and headers kept.
    let dead = testkit::read(&format!("{topic}.dlq"), 2, WAIT).await;
    assert!(testkit::eventually(WAIT, || seen.distinct() == 10).await);
    stop(token, task).await;
    assert_eq!(dead.len(), 2);
    let poison = &dead[0];
    assert_eq!(poison.key_str(), Some("k3"));
    assert_eq!(poison.payload(), Some(&b"{not json"[..]));
    assert_eq!(header(poison, "trace-id"), "t3");
    assert_eq!(header(poison, dead_letter::ORIGINAL_TOPIC), topic);
    assert_eq!(header(poison, dead_letter::ORIGINAL_PARTITION), "0");
    assert_eq!(header(poison, dead_letter::ORIGINAL_OFFSET), "3");
    assert!(!header(poison, dead_letter::ORIGINAL_TIMESTAMP).is_empty());
    assert_eq!(header(poison, dead_letter::CONSUMER_GROUP), group);
    assert_eq!(header(poison, dead_letter::ERROR_KIND), "invalid");
    assert!(header(poison, dead_letter::ERROR_MESSAGE).contains("undecodable"));
    assert_eq!(header(poison, dead_letter::ATTEMPTS), "1");
    assert!(header(poison, dead_letter::FAILED_AT).ends_with('Z'));
    let failing = &dead[1];
    assert_eq!(failing.key_str(), Some("k6"));
    assert_eq!(failing.json::<serde_json::Value>().unwrap()["id"], 6);
    assert_eq!(header(failing, dead_letter::ORIGINAL_OFFSET), "6");
    assert_eq!(header(failing, dead_letter::ERROR_KIND), "transient");
    assert_eq!(header(failing, dead_letter::ATTEMPTS), "3");
    assert_eq!(
        header(failing, dead_letter::ERROR_MESSAGE),
        "downstream rejects 6"
    );

    // And every other record was handled, the ones after the failures included.
    let expected: HashSet<u64> = (0..12).filter(|i| *i != 3 && *i != 6).collect();
    assert_eq!(seen.ids(), expected);
    for (_, committed, high) in testkit::committed(&group, &topic).await {
        assert_eq!(committed, Some(high));
    }
}

#[tokio::test]
async fn validation_failures_are_never_retried() {
    let topic = testkit::topic("validate", 1).await;
    testkit::populate(&topic, 5, 5).await;
    let validated = Arc::new(AtomicUsize::new(0));
    let seen = Seen::default();
    let mut router = Router::new();
    let (count, handled) = (validated.clone(), seen.clone());
    router
        .register_validated(
            &topic,
            move |item: &Item| {
                count.fetch_add(1, Ordering::SeqCst);
                if item.id == 2 {
                    Err("id 2 is reserved".to_owned())
                } else {
                    Ok(())
                }
            },
            move |m: Message<Item>| {
                let handled = handled.clone();
                async move {
                    handled.add(m.value.id);
                    Ok(())
                }
            },
        )
        .retry(fast_retries(5));
    let group = testkit::unique("validate");
    let (_consumer, token, task) = start(testkit::kafka().consumer(&group, router).unwrap());
    let dead = testkit::read(&format!("{topic}.dlq"), 1, WAIT).await;
    assert!(testkit::eventually(WAIT, || seen.distinct() == 4).await);
    stop(token, task).await;

    // The invalid record was validated once, never handled, dead-lettered as invalid.
    assert_eq!(validated.load(Ordering::SeqCst), 5);
    assert_eq!(seen.count(2), 0);
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], dead_letter::ERROR_KIND), "invalid");
    assert_eq!(header(&dead[0], dead_letter::ATTEMPTS), "1");
    assert!(header(&dead[0], dead_letter::ERROR_MESSAGE).contains("id 2 is reserved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_partitions_and_hand_over_without_loss() {
    // Given 4,000 records over 4 partitions.
    let topic = testkit::topic("rebalance", 4).await;
    testkit::populate(&topic, 4_000, 400).await;
    let group = testkit::unique("rebalance");
    let seen = Seen::default();
    let member = |name: &'static str, per_member: Arc<Mutex<BTreeMap<&'static str, usize>>>| {
        let mut router = Router::new();
        let seen = seen.clone();
        router.register(&topic, move |m: Message<Item>| {
            let seen = seen.clone();
            let per_member = per_member.clone();
            async move {
                // Slow enough that the second member joins while work remains.
                tokio::time::sleep(Duration::from_millis(5)).await;
                seen.add(m.value.id);
                *per_member.lock().unwrap().entry(name).or_default() += 1;
                Ok(())
            }
        });
        // Short heartbeats so the first member learns of the rebalance quickly.
        let kafka = testkit::kafka().reconfigured(|config| {
            config.heartbeat_interval = Duration::from_millis(500);
            config.session_timeout = Duration::from_secs(15);
        });
        // A small queue bound, so partitions are paused for back-pressure when the rebalance
        // happens: the new owner must still get them flowing.
        let options = ConsumerOptions {
            max_queued_per_partition: 50,
            ..ConsumerOptions::default()
        };
        kafka
            .consumer_with_options(&group, router, options)
            .unwrap()
    };
    let per_member = Arc::new(Mutex::new(BTreeMap::new()));

    // When a first member starts, and a second joins once some records are handled.
    let (first, first_token, first_task) = start(member("first", per_member.clone()));
    assert!(testkit::eventually(WAIT, || seen.distinct() >= 200).await);
    let (second, second_token, second_task) = start(member("second", per_member.clone()));
    assert!(testkit::eventually(WAIT, || !second.health().partitions.is_empty()).await);
    let all = testkit::eventually(WAIT, || seen.distinct() == 4_000).await;
    assert!(
        all,
        "{} of 4000 handled; first: {:?}; second: {:?}",
        seen.distinct(),
        first.health(),
        second.health()
    );

    // Then the partitions are split between them, both handled records, none is lost, and
    // the final commits cover every record exactly up to the end.
    let first_partitions = first.health().partitions.len();
    let second_partitions = second.health().partitions.len();
    assert_eq!(first_partitions + second_partitions, 4);
    assert!(first_partitions >= 1 && second_partitions >= 1);
    stop(first_token, first_task).await;
    stop(second_token, second_task).await;
    let counts = per_member.lock().unwrap().clone();
    assert!(counts["first"] > 0 && counts["second"] > 0, "{counts:?}");
    assert_eq!(seen.ids(), (0..4_000).collect::<HashSet<u64>>());
    for (partition, committed, high) in testkit::committed(&group, &topic).await {
        assert_eq!(committed, Some(high), "partition {partition}");
    }
}

#[tokio::test]
async fn circuit_breaker_opens_pauses_probes_and_closes() {
    // Given a dependency that is down, and a breaker opening after 3 failures for 1 s.
    let topic = testkit::topic("breaker", 1).await;
    testkit::populate(&topic, 10, 10).await;
    let down = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(Mutex::new(Vec::<tokio::time::Instant>::new()));
    let seen = Seen::default();
    let mut router = Router::new();
    let (is_down, log, handled) = (down.clone(), calls.clone(), seen.clone());
    router
        .register(&topic, move |m: Message<Item>| {
            let (is_down, log, handled) = (is_down.clone(), log.clone(), handled.clone());
            async move {
                log.lock().unwrap().push(tokio::time::Instant::now());
                if is_down.load(Ordering::SeqCst) {
                    return Err(HandlerError::transient("dependency down"));
                }
                handled.add(m.value.id);
                Ok(())
            }
        })
        .retry(RetryPolicy::exponential(100, Duration::from_millis(10)).jitter(0.0))
        .circuit_breaker(CircuitBreakerConfig {
            failure_threshold: 3,
            open_duration: Duration::from_secs(1),
            success_threshold: 1,
        });
    let group = testkit::unique("breaker");
    let (consumer, token, task) = start(testkit::kafka().consumer(&group, router).unwrap());

    // When it fails three times the circuit opens and the partition is paused.
    assert!(
        testkit::eventually(WAIT, || consumer
            .health()
            .circuits
            .values()
            .any(|s| *s == CircuitState::Open))
        .await
    );
    let health = consumer.health();
    assert!(
        health.problems.iter().any(|p| p.contains("circuit")),
        "{:?}",
        health.problems
    );
    assert!(
        testkit::eventually(WAIT, || consumer.health().partitions.iter().any(|p| p
            .paused
            .contains(&kafkit::consumer::PauseReason::CircuitOpen)))
        .await
    );
    let calls_when_opened = calls.lock().unwrap().len();
    assert_eq!(calls_when_opened, 3);
    // Then no call is made while it is open: each later call is a lone half-open probe, at
    // least the open duration after the failure before it (and each failed probe re-opens).
    assert!(testkit::eventually(WAIT, || calls.lock().unwrap().len() >= 5).await);
    let probes = calls.lock().unwrap().clone();
    for pair in probes[2..5].windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_secs(1),
            "{:?}",
            pair[1] - pair[0]
        );
    }

    // When the dependency recovers the next probe succeeds, the circuit closes and every
    // record is handled.
    down.store(false, Ordering::SeqCst);
    assert!(testkit::eventually(WAIT, || seen.distinct() == 10).await);
    assert_eq!(
        consumer.health().circuits.values().next(),
        Some(&CircuitState::Closed)
    );
    stop(token, task).await;
}

/// The sizes of the batches a handler receives for `records` records of one partition.
async fn batch_sizes(records: usize, max_records: usize, max_wait: Duration) -> Vec<usize> {
    let topic = testkit::topic("batch", 1).await;
    testkit::populate(&topic, records, 1).await;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let mut router = Router::new();
    let log = sizes.clone();
    let options = BatchOptions {
        max_records,
        max_wait,
    };
    router.register_batch(&topic, options, move |batch: Vec<Message<Item>>| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(batch.len());
            Ok(())
        }
    });
    let group = testkit::unique("batch");
    let (_c, token, task) = start(testkit::kafka().consumer(&group, router).unwrap());
    let all_in = || sizes.lock().unwrap().iter().sum::<usize>() == records;
    assert!(testkit::eventually(WAIT, all_in).await);
    stop(token, task).await;
    sizes.lock().unwrap().clone()
}

#[tokio::test]
async fn batch_handler_by_size_by_time_and_partial_failure() {
    // Size trigger: 200 records with max 50 → batches of 50.
    let sizes = batch_sizes(200, 50, Duration::from_secs(30)).await;
    assert_eq!(sizes, [50, 50, 50, 50]);

    // Time trigger: 30 records with max 1000 and 300 ms → handed over after the wait.
    let sizes = batch_sizes(30, 1_000, Duration::from_millis(300)).await;
    assert_eq!(sizes, [30]);

    // Partial failure: the first call fails at index 5; records 0..5 are done and the rest is
    // retried from record 5.
    let topic = testkit::topic("batch-fail", 1).await;
    testkit::populate(&topic, 20, 1).await;
    let calls = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
    let mut router = Router::new();
    let log = calls.clone();
    router
        .register_batch(
            &topic,
            BatchOptions {
                max_records: 20,
                max_wait: Duration::from_secs(30),
            },
            move |batch: Vec<Message<Item>>| {
                let log = log.clone();
                async move {
                    let ids: Vec<u64> = batch.iter().map(|m| m.value.id).collect();
                    let first_call = log.lock().unwrap().is_empty();
                    log.lock().unwrap().push(ids);
                    if first_call {
                        return Err(BatchError::at(5, HandlerError::transient("row 5 locked")));
                    }
                    Ok(())
                }
            },
        )
        .retry(fast_retries(3));
    let group = testkit::unique("bf");
    let (_c, token, task) = start(testkit::kafka().consumer(&group, router).unwrap());
    assert!(testkit::eventually(WAIT, || calls.lock().unwrap().len() == 2).await);
    stop(token, task).await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls[0], (0..20).collect::<Vec<u64>>());
    assert_eq!(calls[1], (5..20).collect::<Vec<u64>>());
    assert_eq!(testkit::committed(&group, &topic).await[0].1, Some(20));
}

#[tokio::test]
async fn a_stalled_handler_makes_the_consumer_unhealthy() {
    // Given a handler that never finishes record 1, and a 3 s stall timeout (the poll loop
    // falls silent for a second now and then in a debug build on two busy cores: a shorter
    // timeout makes the verdict about the loop, not the handler).
    let topic = testkit::topic("stall", 1).await;
    testkit::populate(&topic, 5, 5).await;
    let mut router = Router::new();
    router.register(&topic, |m: Message<Item>| async move {
        if m.value.id == 1 {
            std::future::pending::<()>().await;
        }
        Ok(())
    });
    let options = ConsumerOptions {
        stall_timeout: Duration::from_secs(3),
        drain_timeout: Duration::from_millis(500),
        ..ConsumerOptions::default()
    };
    let group = testkit::unique("stall");
    let (consumer, token, task) = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options)
            .unwrap(),
    );

    // When records wait behind it, the verdict turns unhealthy and says which partition.
    assert!(testkit::eventually(WAIT, || consumer.health().in_flight > 0).await);
    assert!(consumer.health().healthy);
    let stalled = format!("{topic}/0 stalled");
    let names_the_partition = || {
        let report = consumer.health();
        !report.healthy && report.problems.iter().any(|p| p.contains(&stalled))
    };
    assert!(
        testkit::eventually(WAIT, names_the_partition).await,
        "{:?}",
        consumer.health().problems
    );

    // And shutdown still completes within the drain timeout; only record 0 is committed.
    stop(token, task).await;
    assert_eq!(testkit::committed(&group, &topic).await[0].1, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_grown_from_three_to_six_partitions_is_consumed_whole() {
    // Given a consumer that has read a 3-partition topic, and refreshes metadata every second
    // (librdkafka's default is 5 minutes, like the Java client's and KafkaJS's).
    let topic = testkit::topic("growing", 3).await;
    testkit::populate(&topic, 300, 30).await;
    let seen = Seen::default();
    let mut router = Router::new();
    let handled = seen.clone();
    router.register(&topic, move |m: Message<Item>| {
        let handled = handled.clone();
        async move {
            handled.add(m.value.id);
            Ok(())
        }
    });
    let kafka = testkit::kafka().reconfigured(|config| {
        config
            .librdkafka
            .insert("topic.metadata.refresh.interval.ms".into(), "1000".into());
    });
    let group = testkit::unique("growing");
    let (consumer, token, task) = start(kafka.consumer(&group, router).unwrap());
    assert!(testkit::eventually(WAIT, || seen.distinct() == 300).await);

    // When the topic grows to 6 partitions and records go to every partition, old and new.
    let admin = testkit::kafka().admin().unwrap();
    admin.create_partitions(&topic, 6).await.unwrap();
    assert_eq!(
        admin.describe_topic(&topic).await.unwrap().partitions.len(),
        6
    );
    assert!(
        admin.create_partitions(&topic, 4).await.is_err(),
        "a topic cannot shrink"
    );
    testkit::send(
        (300..600u64)
            .map(|id| {
                Record::to(&topic)
                    .partition((id % 6) as i32)
                    .json(&serde_json::json!({ "id": id }))
                    .unwrap()
            })
            .collect(),
    )
    .await;

    // Then the consumer is assigned the new partitions and handles every record once.
    assert!(
        testkit::eventually(WAIT, || seen.distinct() == 600).await,
        "handled {} of 600",
        seen.distinct()
    );
    assert!(consumer.is_running());
    stop(token, task).await;
    assert_eq!(seen.ids(), (0..600).collect::<HashSet<u64>>());
    assert!((0..600).all(|id| seen.count(id) == 1), "duplicates");
    let committed = testkit::committed(&group, &topic).await;
    assert_eq!(committed.len(), 6);
    for (partition, committed, high) in committed {
        assert!(high > 0, "partition {partition} got records");
        assert_eq!(committed, Some(high), "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_get_shared_state_by_state_extractor_or_by_type() {
    // Given two topics: one handled by a closure given `State`, one by a type holding state.
    let (first, second) = (
        testkit::topic("state-closure", 1).await,
        testkit::topic("state-type", 1).await,
    );
    testkit::populate(&first, 10, 1).await;
    testkit::populate(&second, 10, 1).await;
    let seen = Seen::default();

    struct Recorder {
        seen: Seen,
        offset: u64,
    }
    impl kafkit::handler::TypedHandler<Item> for Recorder {
        async fn handle(&self, m: Message<Item>) -> kafkit::handler::HandlerResult {
            self.seen.add(m.value.id + self.offset);
            Ok(())
        }
    }

    let mut router = Router::new();
    router.register_with_state(
        &first,
        seen.clone(),
        |kafkit::State(seen): kafkit::State<Seen>, m: Message<Item>| async move {
            seen.add(m.value.id);
            Ok(())
        },
    );
    router.register_typed(
        &second,
        Recorder {
            seen: seen.clone(),
            offset: 100,
        },
    );
    let group = testkit::unique("state");
    let (_consumer, token, task) = start(testkit::kafka().consumer(&group, router).unwrap());

    // Then both see every record, through the one shared state.
    assert!(testkit::eventually(WAIT, || seen.distinct() == 20).await);
    stop(token, task).await;
    let expected: HashSet<u64> = (0..10).chain(100..110).collect();
    assert_eq!(seen.ids(), expected);
}
