//! Non-blocking retry topics on Apache Kafka: a failing record is copied to
//! `{topic}.retry.{n}` and its source partition goes on; each tier delivers it once, no sooner
//! than its due time and soon after it; after the last tier it is dead-lettered with the
//! coordinates of the record it stands for. A tier waiting for its head survives a change of
//! owner: the next owner delivers it, once, when due.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kafkit::consumer::{CommitStrategy, ConsumerOptions, ProcessingOrder};
use kafkit::retry_topic::{self, RetryTopics};
use kafkit::{Consumer, HandlerError, Kafka, Message, RetryPolicy, Router, dead_letter};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);

type Running = (
    Arc<Consumer>,
    CancellationToken,
    tokio::task::JoinHandle<kafkit::Result<()>>,
);

fn start(consumer: Consumer) -> Running {
    let consumer = Arc::new(consumer);
    let token = CancellationToken::new();
    let running = consumer.clone();
    let stop = token.clone();
    let task = tokio::spawn(async move { running.run(stop.cancelled_owned()).await });
    (consumer, token, task)
}

async fn stop((_, token, task): Running) {
    token.cancel();
    task.await.unwrap().unwrap();
}

fn options() -> ConsumerOptions {
    ConsumerOptions {
        commit: CommitStrategy::Periodic(Duration::from_millis(200)),
        drain_timeout: Duration::from_secs(1),
        ..ConsumerOptions::default()
    }
}

/// One handler call: the record's id, the topic it was read from, when, the attempt number
/// it was given, and the due time its headers carried.
#[derive(Debug, Clone)]
struct Call {
    id: u64,
    topic: String,
    at: SystemTime,
    attempt: u32,
    due: Option<SystemTime>,
}

fn id_of(message: &Message) -> u64 {
    let value: serde_json::Value = message.json().expect("a JSON record");
    value["id"].as_u64().expect("an id")
}

/// A raw handler that logs every call and fails the ids `fails(id, topic)` picks.
fn logging_handler(
    calls: &Arc<Mutex<Vec<Call>>>,
    fails: impl Fn(u64, &str) -> bool + Send + Sync + 'static,
) -> impl Fn(Message) -> futures::future::Ready<kafkit::handler::HandlerResult> + Send + Sync + 'static
{
    let calls = calls.clone();
    move |message: Message| {
        let id = id_of(&message);
        calls.lock().unwrap().push(Call {
            id,
            topic: message.topic.clone(),
            at: SystemTime::now(),
            attempt: message.attempt,
            due: retry_topic::due_at(&message),
        });
        futures::future::ready(if fails(id, &message.topic) {
            Err(HandlerError::transient(format!(
                "{id} failed on {}",
                message.topic
            )))
        } else {
            Ok(())
        })
    }
}

fn header(message: &Message, name: &str) -> String {
    String::from_utf8(message.header_value(name).unwrap_or_default().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_topics_deliver_once_per_tier_when_due_then_dead_letter_and_hold_nothing_back() {
    // Given 200 records on 2 partitions: ids ending in 0 always fail, ids ending in 1 fail on
    // the source topic only; the route retries nowhere in place, then through two tiers of
    // 2 s and 3 s, in key order.
    const RECORDS: u64 = 200;
    let topic = testkit::topic("retry-topics", 2).await;
    testkit::populate(&topic, RECORDS as usize, 50).await;
    let group = testkit::unique("retry-topics");
    let tiers = RetryTopics::new([Duration::from_secs(2), Duration::from_secs(3)]);
    let (tier1, tier2) = (tiers.topic_for(&topic, 1), tiers.topic_for(&topic, 2));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let source = topic.clone();
    let mut router = Router::new();
    router
        .register_raw(
            topic.clone(),
            logging_handler(&calls, move |id, on| {
                id % 10 == 0 || (id % 10 == 1 && on == source)
            }),
        )
        .retry(RetryPolicy::none())
        .retry_topics(tiers.clone())
        .order(ProcessingOrder::Key);

    // When it is consumed until every always-failing record is in the dead-letter topic.
    let running = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options())
            .unwrap(),
    );
    let dlt = format!("{topic}.dlq");
    let dead = testkit::read(&dlt, 20, WAIT).await;
    // Calls that would come late (a second delivery on a tier) have time to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop(running).await;

    // Then every record was called once on the source topic, the failing ones once on each
    // tier they reached, and no other call happened.
    let calls = calls.lock().unwrap().clone();
    let mut per_topic: BTreeMap<(u64, String), Vec<&Call>> = BTreeMap::new();
    for call in &calls {
        per_topic
            .entry((call.id, call.topic.clone()))
            .or_default()
            .push(call);
    }
    for id in 0..RECORDS {
        let count = |t: &str| per_topic.get(&(id, t.to_owned())).map_or(0, Vec::len);
        let expected = match id % 10 {
            0 => (1, 1, 1),
            1 => (1, 1, 0),
            _ => (1, 0, 0),
        };
        assert_eq!(
            (count(&topic), count(&tier1), count(&tier2)),
            expected,
            "calls of id {id} on the source, tier 1, tier 2"
        );
    }
    assert_eq!(calls.len(), 200 + 40 + 20, "no call beyond one per tier");

    // Each tier's call came no sooner than its due time, and soon after it.
    let mut late_ms: Vec<u128> = Vec::new();
    for call in calls.iter().filter(|c| c.topic != topic) {
        let due = call.due.expect("a retry copy carries its due time");
        let late = call.at.duration_since(due).unwrap_or_else(|early| {
            panic!(
                "id {} on {} called {:?} early",
                call.id,
                call.topic,
                early.duration()
            )
        });
        late_ms.push(late.as_millis());
    }
    late_ms.sort_unstable();
    let p99 = late_ms[(late_ms.len() * 99).div_ceil(100) - 1];
    println!(
        "retry tiers: {} calls, lateness after the due time p50 {} ms, p99 {p99} ms, max {} ms",
        late_ms.len(),
        late_ms[late_ms.len() / 2],
        late_ms[late_ms.len() - 1]
    );
    assert!(p99 <= 1_000, "p99 lateness {p99} ms");

    // The attempt numbers go on across tiers: 1 on the source, 2 on tier 1, 3 on tier 2.
    for call in &calls {
        let expected = if call.topic == topic {
            1
        } else if call.topic == tier1 {
            2
        } else {
            3
        };
        assert_eq!(call.attempt, expected, "{call:?}");
    }

    // A failing record held nothing back: on its source partition, every later record was
    // handled before the failing record's first retry (2 s after it failed).
    let first_retry: BTreeMap<u64, SystemTime> = calls
        .iter()
        .filter(|c| c.topic == tier1)
        .map(|c| (c.id, c.at))
        .collect();
    let earliest_retry = first_retry.values().min().copied().unwrap();
    let last_source = calls
        .iter()
        .filter(|c| c.topic == topic)
        .map(|c| c.at)
        .max()
        .unwrap();
    assert!(
        last_source < earliest_retry,
        "the source partitions went on while failures waited in the retry topics"
    );

    // The dead-letter topic holds the 20 always-failing records, once each, naming the
    // source record (not the retry copy) and the three attempts.
    let dead_ids: BTreeSet<u64> = dead.iter().map(id_of).collect();
    assert_eq!(dead.len(), 20, "each once");
    assert_eq!(dead_ids, (0..RECORDS).filter(|i| i % 10 == 0).collect());
    let source_offsets: BTreeMap<u64, (i32, i64)> = testkit::read(&topic, RECORDS as usize, WAIT)
        .await
        .iter()
        .map(|m| (id_of(m), (m.partition, m.offset)))
        .collect();
    for record in &dead {
        let (partition, offset) = source_offsets[&id_of(record)];
        assert_eq!(header(record, dead_letter::ORIGINAL_TOPIC), topic);
        assert_eq!(
            header(record, dead_letter::ORIGINAL_PARTITION),
            partition.to_string()
        );
        assert_eq!(
            header(record, dead_letter::ORIGINAL_OFFSET),
            offset.to_string()
        );
        assert_eq!(header(record, dead_letter::ATTEMPTS), "3");
        assert_eq!(header(record, dead_letter::ERROR_KIND), "transient");
        assert!(record.header_value(retry_topic::RETRY_DUE_AT).is_none());
        assert!(record.header_value(retry_topic::RETRY_TIER).is_none());
    }

    // And every topic the group read is committed to its end.
    for t in [&topic, &tier1, &tier2] {
        for (partition, committed, end) in testkit::committed(&group, t).await {
            assert_eq!(committed.unwrap_or(0), end, "{t}/{partition}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_waiting_for_its_head_is_delivered_once_when_due_across_a_rebalance() {
    // Given 20 records on 2 partitions that fail once on the source topic and succeed on the
    // retry tier, due 8 s later.
    const RECORDS: u64 = 20;
    let topic = testkit::topic("retry-rebalance", 2).await;
    testkit::populate(&topic, RECORDS as usize, RECORDS as usize).await;
    let group = testkit::unique("retry-rebalance");
    let tiers = RetryTopics::new([Duration::from_secs(8)]);
    let tier1 = tiers.topic_for(&topic, 1);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let member = |calls: &Arc<Mutex<Vec<Call>>>| {
        let source = topic.clone();
        let mut router = Router::new();
        router
            .register_raw(
                topic.clone(),
                logging_handler(calls, move |_, on| on == source),
            )
            .retry(RetryPolicy::none())
            .retry_topics(tiers.clone());
        testkit::kafka()
            .consumer_with_options(&group, router, options())
            .unwrap()
    };

    // When one member forwards them all and waits on the tier's heads,
    let first = start(member(&calls));
    let forwarded = testkit::eventually(WAIT, || {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.topic == topic)
            .count() as u64
            >= RECORDS
    })
    .await;
    assert!(forwarded, "every record failed once on the source");
    let waiting = testkit::eventually(WAIT, || {
        first.0.health().partitions.iter().any(|p| {
            p.topic == tier1 && p.paused.contains(&kafkit::consumer::PauseReason::RetryDue)
        })
    })
    .await;
    assert!(waiting, "the tier's partitions wait for their heads");
    assert!(
        calls.lock().unwrap().iter().all(|c| c.topic == topic),
        "nothing was delivered from the tier before its due time"
    );

    // a second member joins (the partitions are shared again while the heads wait),
    let second = start(member(&calls));
    let shared = testkit::eventually(WAIT, || !second.0.health().partitions.is_empty()).await;
    assert!(shared, "the second member got partitions");
    // and, after the rebalance, the first one leaves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop(first).await;

    // Then every record is delivered from the tier exactly once, no sooner than it was due.
    let delivered = testkit::eventually(WAIT, || {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.topic == tier1)
            .count() as u64
            >= RECORDS
    })
    .await;
    // Late duplicates have time to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(second).await;
    let calls = calls.lock().unwrap().clone();
    assert!(
        delivered,
        "{} of {RECORDS} delivered from the tier",
        calls.iter().filter(|c| c.topic == tier1).count()
    );
    let mut per_id: BTreeMap<u64, usize> = BTreeMap::new();
    for call in calls.iter().filter(|c| c.topic == tier1) {
        *per_id.entry(call.id).or_default() += 1;
        let due = call.due.expect("due time");
        assert!(call.at >= due, "id {} delivered before it was due", call.id);
    }
    assert_eq!(per_id.len() as u64, RECORDS);
    assert!(per_id.values().all(|n| *n == 1), "once each: {per_id:?}");
    for (partition, committed, end) in testkit::committed(&group, &tier1).await {
        assert_eq!(committed.unwrap_or(0), end, "{tier1}/{partition}");
    }
}

fn refusal(config: &kafkit::KafkaConfig, router: Router) -> String {
    match Kafka::connect(config).and_then(|kafka| kafka.consumer("g", router)) {
        Ok(_) => panic!("a consumer was built"),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn a_retry_configuration_that_cannot_run_is_refused_naming_the_route() {
    let config = testkit::config();
    let no_tier = {
        let mut router = Router::new();
        router
            .register_raw("orders", |_: Message| async { Ok(()) })
            .retry_topics(RetryTopics::new([]));
        refusal(&config, router)
    };
    assert!(
        no_tier.contains("orders") && no_tier.contains("tier"),
        "{no_tier}"
    );
    let batch = {
        let mut router = Router::new();
        router
            .register_batch(
                "events",
                kafkit::batch::BatchOptions::default(),
                |_: Vec<Message<u32>>| async { Ok(()) },
            )
            .retry_topics(RetryTopics::new([Duration::from_secs(1)]));
        refusal(&config, router)
    };
    assert!(
        batch.contains("events") && batch.contains("batch"),
        "{batch}"
    );
    let clash = {
        let mut router = Router::new();
        router
            .register_raw("orders", |_: Message| async { Ok(()) })
            .retry_topics(RetryTopics::new([Duration::from_secs(1)]));
        router.register_raw("orders.retry.1", |_: Message| async { Ok(()) });
        refusal(&config, router)
    };
    assert!(clash.contains("orders.retry.1"), "{clash}");
}
