//! The consumer runtime's guarantees where they are hardest to keep: rebalances during a
//! backlog, half-open circuits whose probe says nothing, panicking handlers, batches failing on
//! different records, a drain that times out, slow handlers and health. Each test checks the
//! guarantee at every step, not only at the end.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkit::{
    Consumer, HandlerError, Kafka, KafkaConfig, Message, RetryPolicy, Router, batch::BatchError,
    batch::BatchOptions, circuit_breaker::CircuitBreakerConfig, consumer::ConsumerOptions,
    dead_letter,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
struct Item {
    id: u64,
}

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

fn header(message: &Message, name: &str) -> String {
    String::from_utf8(message.header_value(name).unwrap_or_default().to_vec()).unwrap()
}

/// Quick heartbeats, so members learn of rebalances fast.
fn fast_group_config() -> KafkaConfig {
    KafkaConfig {
        heartbeat_interval: Duration::from_millis(300),
        session_timeout: Duration::from_secs(15),
        ..testkit::config()
    }
}

/// Offsets handled per partition, by any member.
type Handled = Arc<Mutex<BTreeMap<i32, BTreeSet<i64>>>>;

/// Asserts the at-least-once invariant now: every offset below the group's committed offset
/// was handled, and no committed offset moved back since `last`.
async fn assert_commits_cover_handled(
    group: &str,
    topic: &str,
    handled: &Handled,
    last: &mut BTreeMap<i32, i64>,
    step: &str,
) {
    // Committed first, handled second: the handled set only grows, so a committed offset
    // read before it must be covered by it.
    let committed = testkit::committed(group, topic).await;
    let handled = handled.lock().unwrap().clone();
    for (partition, committed, _) in committed {
        let Some(committed) = committed else { continue };
        let done = handled.get(&partition).cloned().unwrap_or_default();
        let missing: Vec<i64> = (0..committed)
            .filter(|o| !done.contains(o))
            .take(5)
            .collect();
        assert!(
            missing.is_empty(),
            "{step}: partition {partition} committed at {committed} but offsets {missing:?} were never handled"
        );
        let previous = last.insert(partition, committed).unwrap_or(0);
        assert!(
            committed >= previous,
            "{step}: partition {partition} commit moved back from {previous} to {committed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_rebalances_during_a_backlog_never_commit_past_unhandled_records() {
    rebalance_storm(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_rebalances_during_a_backlog_never_commit_past_unhandled_records() {
    rebalance_storm(&[("partition.assignment.strategy", "cooperative-sticky")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip_848_rebalances_during_a_backlog_never_commit_past_unhandled_records() {
    rebalance_storm(&[("group.protocol", "consumer")]).await;
}

/// Two members of one group with the given librdkafka group settings: the second joins and
/// leaves four times while the first works through a backlog; the at-least-once invariant is
/// checked after every join and every leave.
async fn rebalance_storm(protocol: &[(&str, &str)]) {
    // Given a backlog of 3,000 records over 4 partitions and a slow first member with a
    // deep queue, so fetched records wait in the runtime whenever a rebalance comes.
    let topic = testkit::topic("storm", 4).await;
    testkit::populate(&topic, 3_000, 300).await;
    let group = testkit::unique("storm");
    let handled: Handled = Arc::default();
    let member = |delay: Duration| {
        let handled = handled.clone();
        let mut router = Router::new();
        router.register(&topic, move |m: Message<Item>| {
            let handled = handled.clone();
            async move {
                tokio::time::sleep(delay).await;
                handled
                    .lock()
                    .unwrap()
                    .entry(m.partition)
                    .or_default()
                    .insert(m.offset);
                Ok(())
            }
        });
        let options = ConsumerOptions {
            commit: kafkit::consumer::CommitStrategy::Periodic(Duration::from_millis(200)),
            drain_timeout: Duration::from_secs(5),
            ..ConsumerOptions::default()
        };
        let mut config = fast_group_config();
        for (key, value) in protocol {
            config.librdkafka.insert((*key).into(), (*value).into());
        }
        Kafka::connect(&config)
            .unwrap()
            .consumer_with_options(&group, router, options)
            .unwrap()
    };
    let first = start(member(Duration::from_millis(2)));
    let mut last = BTreeMap::new();
    assert!(testkit::eventually(WAIT, || !first.0.health().partitions.is_empty()).await);

    // When a second member joins and leaves again, four times, while the backlog lasts.
    for round in 0..4 {
        let second = start(member(Duration::from_millis(1)));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_commits_cover_handled(
            &group,
            &topic,
            &handled,
            &mut last,
            &format!("join {round}"),
        )
        .await;
        stop(second).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_commits_cover_handled(
            &group,
            &topic,
            &handled,
            &mut last,
            &format!("leave {round}"),
        )
        .await;
    }

    // Then the first member finishes everything; commits never passed an unhandled record,
    // never moved back, and nothing is left counted in its queues.
    let total = || {
        handled
            .lock()
            .unwrap()
            .values()
            .map(BTreeSet::len)
            .sum::<usize>()
    };
    assert!(
        testkit::eventually(WAIT, || total() == 3_000).await,
        "handled {} of 3000",
        total()
    );
    assert!(
        testkit::eventually(Duration::from_secs(10), || first.0.health().in_flight == 0).await,
        "records still counted as queued: {:?}",
        first.0.health()
    );
    assert!(first.0.health().healthy, "{:?}", first.0.health());
    stop(first).await;
    assert_commits_cover_handled(&group, &topic, &handled, &mut last, "end").await;
    for (partition, committed, high) in testkit::committed(&group, &topic).await {
        assert_eq!(committed, Some(high), "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_probe_that_is_skipped_invalid_or_panics_never_sticks_the_circuit() {
    // Given a breaker that opens after 2 failures for 200 ms, and records whose probes end
    // without a verdict on the dependency: a skip, an invalid record, a panic.
    let topic = testkit::topic("probe", 1).await;
    testkit::populate(&topic, 30, 1).await;
    let handled = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut router = Router::new();
    let log = handled.clone();
    router
        .register(&topic, move |m: Message<Item>| {
            let log = log.clone();
            async move {
                let id = m.value.id;
                log.lock().unwrap().push(id);
                match id {
                    0 | 1 | 4 | 5 | 8 | 9 => Err(HandlerError::permanent("dependency down")),
                    2 => Err(HandlerError::skip("not for us")),
                    6 => Err(HandlerError::invalid("bad record")),
                    10 => panic!("bug in the handler"),
                    _ => Ok(()),
                }
            }
        })
        .circuit_breaker(CircuitBreakerConfig {
            failure_threshold: 2,
            open_duration: Duration::from_millis(200),
            success_threshold: 1,
        });
    let group = testkit::unique("probe");
    let consumer = start(testkit::kafka().consumer(&group, router).unwrap());

    // Then every record is handled once, in order: the circuit closed again each time.
    let all = testkit::eventually(WAIT, || handled.lock().unwrap().len() >= 30).await;
    assert!(
        all,
        "stuck after {:?}; health: {:?}",
        handled.lock().unwrap(),
        consumer.0.health()
    );
    assert_eq!(*handled.lock().unwrap(), (0..30).collect::<Vec<_>>());
    assert!(testkit::eventually(WAIT, || consumer.0.health().healthy).await);
    stop(consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_dead_letters_the_record_and_the_partition_goes_on() {
    // Given a handler that panics on one record.
    let topic = testkit::topic("panics", 1).await;
    testkit::populate(&topic, 20, 1).await;
    let handled = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut router = Router::new();
    let log = handled.clone();
    router.register(&topic, move |m: Message<Item>| {
        let log = log.clone();
        async move {
            assert_ne!(m.value.id, 5, "record 5 breaks the handler");
            log.lock().unwrap().push(m.value.id);
            Ok(())
        }
    });
    let metrics = kafkit::metrics::Metrics::default();
    let group = testkit::unique("panics");
    let consumer = start(
        testkit::kafka()
            .consumer(&group, router)
            .unwrap()
            .with_metrics(metrics.clone()),
    );

    // Then the others are all handled, the panicking one is in the dead-letter topic with
    // error-kind "panic", it is counted, health stays true, and the group commits the end.
    assert!(testkit::eventually(WAIT, || handled.lock().unwrap().len() == 19).await);
    let dead = testkit::read(&format!("{topic}.dlq"), 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], dead_letter::ERROR_KIND), "panic");
    assert!(header(&dead[0], dead_letter::ERROR_MESSAGE).contains("record 5 breaks the handler"));
    assert_eq!(header(&dead[0], dead_letter::ORIGINAL_OFFSET), "5");
    assert!(
        metrics
            .render()
            .lines()
            .any(|l| l.contains("outcome=\"panicked\"") && l.ends_with(" 1")),
        "{}",
        metrics.render()
    );
    assert!(consumer.0.health().healthy, "{:?}", consumer.0.health());
    let expected: Vec<u64> = (0..20).filter(|id| *id != 5).collect();
    assert_eq!(*handled.lock().unwrap(), expected);
    stop(consumer).await;
    for (partition, committed, high) in testkit::committed(&group, &topic).await {
        assert_eq!(committed, Some(high), "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_before_its_future_exists_fails_only_its_record() {
    // Given a raw handler whose closure panics on record 5 before it builds its future (the
    // panic is outside the future the runtime guards).
    let topic = testkit::topic("sync-panic", 1).await;
    testkit::populate(&topic, 20, 1).await;
    let handled = Arc::new(Mutex::new(Vec::<i64>::new()));
    let mut router = Router::new();
    let log = handled.clone();
    router.register_raw(&topic, move |m: Message| {
        assert_ne!(m.offset, 5, "record 5 breaks the closure");
        let log = log.clone();
        async move {
            log.lock().unwrap().push(m.offset);
            Ok(())
        }
    });
    let group = testkit::unique("sync-panic");
    let consumer = start(testkit::kafka().consumer(&group, router).unwrap());

    // Then record 5 is dead-lettered as a panic and every other record is handled: the
    // partition's worker lives on.
    assert!(
        testkit::eventually(WAIT, || handled.lock().unwrap().len() == 19).await,
        "handled {:?}",
        handled.lock().unwrap()
    );
    let dead = testkit::read(&format!("{topic}.dlq"), 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], dead_letter::ERROR_KIND), "panic");
    assert_eq!(header(&dead[0], dead_letter::ORIGINAL_OFFSET), "5");
    stop(consumer).await;
    for (partition, committed, high) in testkit::committed(&group, &topic).await {
        assert_eq!(committed, Some(high), "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_retries_are_counted_per_failing_record() {
    // Given batches where every third record fails once (transiently) before succeeding, and
    // a policy of two attempts per record.
    let topic = testkit::topic("batch-attempts", 1).await;
    testkit::populate(&topic, 30, 1).await;
    let failed_once = Arc::new(Mutex::new(HashSet::<u64>::new()));
    let done = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut router = Router::new();
    let (failed, log) = (failed_once.clone(), done.clone());
    router
        .register_batch(
            &topic,
            BatchOptions {
                max_records: 30,
                max_wait: Duration::from_millis(500),
            },
            move |batch: Vec<Message<Item>>| {
                let (failed, log) = (failed.clone(), log.clone());
                async move {
                    let mut failed = failed.lock().unwrap();
                    for (index, m) in batch.iter().enumerate() {
                        if m.value.id % 3 == 2 && failed.insert(m.value.id) {
                            return Err(BatchError::at(index, HandlerError::transient("once")));
                        }
                        log.lock().unwrap().push(m.value.id);
                    }
                    Ok(())
                }
            },
        )
        .retry(RetryPolicy::exponential(2, Duration::from_millis(10)).jitter(0.0));
    let group = testkit::unique("batch-attempts");
    let consumer = start(testkit::kafka().consumer(&group, router).unwrap());

    // Then every record succeeds on its second attempt: none is dead-lettered for failures
    // that belonged to the records before it.
    assert!(
        testkit::eventually(WAIT, || done.lock().unwrap().len() == 30).await,
        "done: {:?}",
        done.lock().unwrap()
    );
    let mut ids = done.lock().unwrap().clone();
    ids.sort_unstable();
    assert_eq!(ids, (0..30).collect::<Vec<_>>());
    stop(consumer).await;
    let dead = testkit::read(&format!("{topic}.dlq"), 1, Duration::from_secs(2)).await;
    assert!(dead.is_empty(), "dead-lettered: {:?}", dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_leaves_no_worker_holding_the_consumer_in_the_group() {
    // Given a member whose handler never returns, and a rebalance (a second member of the same
    // group joining for another topic) that hands the partition back to it with a new worker
    // waiting behind the stuck one.
    let topic = testkit::topic("stuck", 1).await;
    let other = testkit::topic("stuck-other", 1).await;
    testkit::populate(&topic, 5, 1).await;
    let group = testkit::unique("stuck");
    let entered = Arc::new(AtomicUsize::new(0));
    // Handler calls still alive (their futures not dropped).
    let alive = Arc::new(AtomicUsize::new(0));
    struct Alive(Arc<AtomicUsize>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let mut router = Router::new();
    let (calls, live) = (entered.clone(), alive.clone());
    router.register(&topic, move |_: Message<Item>| {
        let (calls, live) = (calls.clone(), live.clone());
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            live.fetch_add(1, Ordering::SeqCst);
            let _alive = Alive(live);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
    });
    let options = ConsumerOptions {
        drain_timeout: Duration::from_secs(1),
        ..ConsumerOptions::default()
    };
    let stuck_config = KafkaConfig {
        client_id: "stuck-member".into(),
        ..fast_group_config()
    };
    let stuck = start(
        Kafka::connect(&stuck_config)
            .unwrap()
            .consumer_with_options(&group, router, options)
            .unwrap(),
    );
    assert!(testkit::eventually(WAIT, || entered.load(Ordering::SeqCst) == 1).await);
    let mut router = Router::new();
    router.register(&other, |_: Message<Item>| async { Ok(()) });
    let bystander_config = KafkaConfig {
        client_id: "bystander".into(),
        ..fast_group_config()
    };
    let bystander = start(
        Kafka::connect(&bystander_config)
            .unwrap()
            .consumer(&group, router)
            .unwrap(),
    );
    let rebalanced =
        || stuck.0.health().partitions.len() == 1 && !bystander.0.health().partitions.is_empty();
    assert!(testkit::eventually(WAIT, rebalanced).await);
    // Let the re-assigned partition's records arrive, so a new worker waits on the stuck one.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // When the stuck member shuts down: the drain times out.
    let started = std::time::Instant::now();
    stop(stuck).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );

    // Then no handler of it runs on after its shutdown (the stuck worker was aborted with the
    // one waiting behind it), and it is out of the group; the other member stays.
    assert!(
        testkit::eventually(Duration::from_secs(2), || alive.load(Ordering::SeqCst) == 0).await,
        "{} handler calls still running after shutdown",
        alive.load(Ordering::SeqCst)
    );
    assert_eq!(
        entered.load(Ordering::SeqCst),
        1,
        "the record was handled twice at once"
    );
    let admin = testkit::kafka().admin().unwrap();
    let mut clients = Vec::new();
    for _ in 0..50 {
        let description = admin.describe_group(&group).await.unwrap();
        clients = description
            .map(|d| d.members.into_iter().map(|m| m.client_id).collect())
            .unwrap_or_default();
        if clients == ["bystander"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        clients,
        ["bystander"],
        "the stuck member is still in the group"
    );
    stop(bystander).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_with_a_backlog_is_healthy_and_a_stuck_one_is_not() {
    // Given a stall timeout of 3 s and a handler taking 1.2 s per record, 8 records waiting.
    let topic = testkit::topic("slow", 1).await;
    testkit::populate(&topic, 8, 1).await;
    let done = Arc::new(AtomicUsize::new(0));
    let mut router = Router::new();
    let count = done.clone();
    router.register(&topic, move |m: Message<Item>| {
        let count = count.clone();
        async move {
            // The last record hangs: that one is a real stall.
            let pause = if m.value.id == 7 { 3600 } else { 1 };
            tokio::time::sleep(Duration::from_millis(1200 * pause)).await;
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let options = ConsumerOptions {
        stall_timeout: Duration::from_secs(3),
        drain_timeout: Duration::from_secs(1),
        ..ConsumerOptions::default()
    };
    let group = testkit::unique("slow");
    let consumer = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options)
            .unwrap(),
    );
    assert!(testkit::eventually(WAIT, || !consumer.0.health().partitions.is_empty()).await);

    // Then health is true at every check while the records progress, one per 1.2 s.
    while done.load(Ordering::SeqCst) < 7 {
        let health = consumer.0.health();
        assert!(
            health.healthy,
            "a slow but progressing handler reported as: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // And it turns unhealthy once the hanging record passes the stall timeout.
    assert!(
        testkit::eventually(Duration::from_secs(10), || !consumer.0.health().healthy).await,
        "a handler stuck for longer than the stall timeout was reported healthy"
    );
    let problems = consumer.0.health().problems;
    assert!(
        problems.iter().any(|p| p.contains("stalled")),
        "{problems:?}"
    );
    stop(consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_gauges_of_revoked_partitions_are_removed() {
    // Given a member reporting lag for both partitions of a topic.
    let topic = testkit::topic("lag-gauges", 2).await;
    testkit::populate(&topic, 20, 2).await;
    let group = testkit::unique("lag-gauges");
    let member = |metrics: Option<kafkit::metrics::Metrics>| {
        let mut router = Router::new();
        router.register(&topic, |_: Message<Item>| async { Ok(()) });
        let options = ConsumerOptions {
            lag_interval: Duration::from_millis(200),
            ..ConsumerOptions::default()
        };
        let consumer = Kafka::connect(&fast_group_config())
            .unwrap()
            .consumer_with_options(&group, router, options)
            .unwrap();
        match metrics {
            Some(metrics) => consumer.with_metrics(metrics),
            None => consumer,
        }
    };
    let metrics = kafkit::metrics::Metrics::default();
    let gauges = |metrics: &kafkit::metrics::Metrics| {
        metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("kafkit_consumer_lag{"))
            .count()
    };
    let first = start(member(Some(metrics.clone())));
    assert!(
        testkit::eventually(WAIT, || gauges(&metrics) == 2).await,
        "{}",
        metrics.render()
    );

    // When a second member takes one partition.
    let second = start(member(None));
    let split =
        || first.0.health().partitions.len() == 1 && second.0.health().partitions.len() == 1;
    assert!(testkit::eventually(WAIT, split).await);

    // Then the first member reports lag for its one partition only, and keeps doing so.
    assert!(
        testkit::eventually(Duration::from_secs(5), || gauges(&metrics) == 1).await,
        "{}",
        metrics.render()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(gauges(&metrics), 1, "{}", metrics.render());
    stop(second).await;
    stop(first).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_are_bounded_by_bytes_not_only_by_count() {
    // Given 400 records of 10 kB (4 MB in all) and a slow handler, with a record bound that
    // would let all of them in and a byte bound of 100 kB.
    let topic = testkit::topic("large", 1).await;
    let body = "x".repeat(10_000);
    testkit::send(
        (0..400u64)
            .map(|id| {
                kafkit::Record::to(&topic)
                    .json(&serde_json::json!({ "id": id, "body": body }))
                    .unwrap()
            })
            .collect(),
    )
    .await;
    let done = Arc::new(AtomicUsize::new(0));
    let mut router = Router::new();
    let count = done.clone();
    router.register(&topic, move |_: Message<Item>| {
        let count = count.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let options = ConsumerOptions {
        max_queued_per_partition: 10_000,
        max_queued_bytes_per_partition: 100_000,
        ..ConsumerOptions::default()
    };
    let group = testkit::unique("large");
    let consumer = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options)
            .unwrap(),
    );

    // Then the partition is held back for back-pressure, and what waits in memory stays far
    // below the 4 MB a record bound alone would have let in.
    let (mut peak, mut paused) = (0usize, false);
    while done.load(Ordering::SeqCst) < 400 {
        for p in consumer.0.health().partitions {
            peak = peak.max(p.queued_bytes);
            paused |= p
                .paused
                .contains(&kafkit::consumer::PauseReason::Backpressure);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(paused, "never paused for back-pressure");
    // At most twice the bound plus one record, as the README says: the bound is checked after
    // each poll's chunk, and a chunk stops at the bound.
    let record = serde_json::to_vec(&serde_json::json!({ "id": 399, "body": body }))
        .unwrap()
        .len();
    assert!(
        peak <= 2 * 100_000 + record,
        "{peak} bytes were queued at once"
    );
    assert_eq!(consumer.0.health().partitions[0].queued_bytes, 0);
    stop(consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_commits_each_record_as_it_settles() {
    // Given commits after every record, and a handler that stops at record 10.
    let topic = testkit::topic("every-record", 1).await;
    testkit::populate(&topic, 20, 1).await;
    let mut router = Router::new();
    router.register(&topic, |m: Message<Item>| async move {
        if m.value.id == 10 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(())
    });
    let options = ConsumerOptions {
        commit: kafkit::consumer::CommitStrategy::EveryRecord,
        drain_timeout: Duration::from_secs(1),
        ..ConsumerOptions::default()
    };
    let group = testkit::unique("every-record");
    let consumer = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options)
            .unwrap(),
    );

    // Then the group's committed offset reaches 10 (records 0..=9) within a second or two,
    // long before a periodic commit (5 s) would, and never passes the stuck record.
    let committed = || async { testkit::committed(&group, &topic).await[0].1 };
    let started = std::time::Instant::now();
    while committed().await != Some(10) {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "committed: {:?}",
            committed().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(committed().await, Some(10));
    stop(consumer).await;
    assert_eq!(committed().await, Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_dead_letter_write_keeps_the_offset_and_pauses_the_partition() {
    // Given a dead-letter topic whose broker refuses records of more than 100 bytes, and a
    // poison record at offset 3.
    let topic = testkit::topic("dlt-refused", 1).await;
    let dlt = format!("{topic}.dlq");
    let admin = testkit::kafka().admin().unwrap();
    admin
        .ensure_topics(&[kafkit::TopicSpec::new(&dlt, 1).config("max.message.bytes", "100")])
        .await
        .unwrap();
    testkit::populate(&topic, 10, 1).await;
    let handled = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut router = Router::new();
    let log = handled.clone();
    router.register(&topic, move |m: Message<Item>| {
        let log = log.clone();
        async move {
            if m.value.id == 3 {
                return Err(HandlerError::permanent("poison"));
            }
            log.lock().unwrap().push(m.value.id);
            Ok(())
        }
    });
    let options = ConsumerOptions {
        commit: kafkit::consumer::CommitStrategy::Periodic(Duration::from_millis(200)),
        ..ConsumerOptions::default()
    };
    let group = testkit::unique("dlt-refused");
    let consumer = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options)
            .unwrap(),
    );

    // Then the partition is paused while the copy is refused, health says why, nothing after
    // the poison record is handled, and the committed offset stays at the poison record.
    let paused = || {
        consumer.0.health().partitions.iter().any(|p| {
            p.paused
                .contains(&kafkit::consumer::PauseReason::DeadLetterRetry)
        })
    };
    assert!(
        testkit::eventually(WAIT, paused).await,
        "{:?}",
        consumer.0.health()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*handled.lock().unwrap(), [0, 1, 2]);
    assert_eq!(testkit::committed(&group, &topic).await[0].1, Some(3));
    assert!(paused(), "{:?}", consumer.0.health());

    // When the dead-letter topic accepts records again.
    admin.delete_topics(&[&dlt]).await.unwrap();
    let recreated = async {
        loop {
            if admin
                .ensure_topics(&[kafkit::TopicSpec::new(&dlt, 1)])
                .await
                .is_ok()
                && admin
                    .topic_configs(&dlt)
                    .await
                    .is_ok_and(|c| c.get("max.message.bytes").is_some_and(|v| v != "100"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(WAIT, recreated).await.unwrap();

    // Then the copy is stored, the partition flows on and the group commits the end.
    assert!(
        testkit::eventually(WAIT, || handled.lock().unwrap().len() == 9).await,
        "{:?}",
        consumer.0.health()
    );
    let dead = testkit::read(&dlt, 1, WAIT).await;
    assert_eq!(header(&dead[0], dead_letter::ORIGINAL_OFFSET), "3");
    stop(consumer).await;
    assert_eq!(testkit::committed(&group, &topic).await[0].1, Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_partitions_of_a_blocked_member_are_taken_over_without_loss() {
    // Given member A on a runtime of its own whose handler blocks that runtime's only thread
    // for 12 s on record 5 (so A cannot poll), with a 6 s max poll interval.
    let topic = testkit::topic("lost", 1).await;
    testkit::populate(&topic, 20, 1).await;
    let group = testkit::unique("lost");
    let handled: Handled = Arc::default();
    let by_member = Arc::new(Mutex::new(Vec::<(&'static str, u64)>::new()));
    let member = |name: &'static str, block: bool| {
        let (handled, by_member) = (handled.clone(), by_member.clone());
        let blocked_once = Arc::new(AtomicUsize::new(0));
        let mut router = Router::new();
        router.register(&topic, move |m: Message<Item>| {
            let (handled, by_member, blocked_once) =
                (handled.clone(), by_member.clone(), blocked_once.clone());
            async move {
                if block && m.value.id == 5 && blocked_once.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Blocks the runtime thread, not only this task: no polling meanwhile.
                    std::thread::sleep(Duration::from_secs(12));
                }
                by_member.lock().unwrap().push((name, m.value.id));
                handled
                    .lock()
                    .unwrap()
                    .entry(m.partition)
                    .or_default()
                    .insert(m.offset);
                Ok(())
            }
        });
        let mut config = KafkaConfig {
            client_id: name.into(),
            heartbeat_interval: Duration::from_millis(500),
            session_timeout: Duration::from_secs(6),
            ..testkit::config()
        };
        config
            .librdkafka
            .insert("max.poll.interval.ms".into(), "6000".into());
        let options = ConsumerOptions {
            commit: kafkit::consumer::CommitStrategy::Periodic(Duration::from_millis(200)),
            drain_timeout: Duration::from_secs(2),
            ..ConsumerOptions::default()
        };
        Kafka::connect(&config)
            .unwrap()
            .consumer_with_options(&group, router, options)
            .unwrap()
    };

    let blocked = Arc::new(member("blocked", true));
    let stop_blocked = CancellationToken::new();
    let blocked_thread = std::thread::spawn({
        let (consumer, stop) = (blocked.clone(), stop_blocked.clone());
        move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(consumer.run(stop.cancelled_owned()))
        }
    });
    let reached = || by_member.lock().unwrap().iter().any(|(_, id)| *id == 4);
    let got_there = testkit::eventually(WAIT, reached).await;
    if blocked_thread.is_finished() {
        panic!("the blocked member stopped: {:?}", blocked_thread.join());
    }
    assert!(got_there, "{:?}", blocked.health());

    // When a second member joins while A is blocked.
    let mut last = BTreeMap::new();
    let taker = start(member("taker", false));

    // Then A's partition is lost and taken over: B handles record 5 and the rest while A is
    // still blocked, and commits never pass an unhandled record, before or after A wakes.
    let took_over = || {
        by_member
            .lock()
            .unwrap()
            .iter()
            .any(|(m, id)| *m == "taker" && *id == 19)
    };
    assert!(
        testkit::eventually(Duration::from_secs(40), took_over).await,
        "{:?}",
        by_member.lock().unwrap()
    );
    assert_commits_cover_handled(&group, &topic, &handled, &mut last, "taken over").await;
    let a_woke = || {
        by_member
            .lock()
            .unwrap()
            .iter()
            .any(|(m, id)| *m == "blocked" && *id == 5)
    };
    assert!(testkit::eventually(Duration::from_secs(30), a_woke).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_commits_cover_handled(&group, &topic, &handled, &mut last, "after A woke").await;
    let all = handled.lock().unwrap().get(&0).map_or(0, BTreeSet::len);
    assert_eq!(all, 20);

    stop_blocked.cancel();
    blocked_thread.join().unwrap().unwrap();
    stop(taker).await;
    assert_commits_cover_handled(&group, &topic, &handled, &mut last, "end").await;
    assert_eq!(testkit::committed(&group, &topic).await[0].1, Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_stuck_at_its_queue_bound_does_not_hold_up_the_others() {
    // Given two partitions and a queue bound of 20 records: partition 0 has 200 records and a
    // handler stuck on its first one.
    let topic = testkit::topic("stuck-bound", 2).await;
    let record = |partition: i32, id: usize| {
        kafkit::Record::to(&topic)
            .partition(partition)
            .json(&serde_json::json!({ "id": id }))
            .unwrap()
    };
    testkit::send((0..200).map(|id| record(0, id)).collect()).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let mut router = Router::new();
    let count = handled.clone();
    router.register(&topic, move |m: Message<Item>| {
        let count = count.clone();
        async move {
            if m.partition == 0 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let options = ConsumerOptions {
        max_queued_per_partition: 20,
        drain_timeout: Duration::from_secs(1),
        ..ConsumerOptions::default()
    };
    let group = testkit::unique("stuck-bound");
    let consumer = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options)
            .unwrap(),
    );
    let partition_0 = || {
        consumer
            .0
            .health()
            .partitions
            .into_iter()
            .find(|p| p.partition == 0)
    };
    // When partition 0 is held back at its bound (polling stops for it first),
    assert!(
        testkit::eventually(WAIT, || partition_0().is_some_and(|p| p
            .paused
            .contains(&kafkit::consumer::PauseReason::Backpressure)))
        .await,
        "partition 0 never reported back-pressure"
    );
    // and 2,000 records arrive in partition 1 after that.
    testkit::send((0..2_000).map(|id| record(1, id)).collect()).await;

    // Then polling goes on without partition 0, and all of partition 1 is handled. At every
    // step partition 0 holds at most its bound plus one poll's chunk (512).
    let deadline = tokio::time::Instant::now() + WAIT;
    while handled.load(Ordering::SeqCst) < 2_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "partition 1 stopped at {} of 2000 behind the stuck partition",
            handled.load(Ordering::SeqCst)
        );
        let queued = partition_0().map_or(0, |p| p.queued);
        assert!(queued <= 20 + 512, "{queued} records queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(handled.load(Ordering::SeqCst), 2_000);
    stop(consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_static_member_ends_run_with_the_error_and_is_unhealthy_first() {
    // Given a static member (group.instance.id) consuming, and a second process starting with
    // the same instance id: the broker fences the first, a fatal error in librdkafka.
    let topic = testkit::topic("fenced", 1).await;
    testkit::populate(&topic, 10, 1).await;
    let group = testkit::unique("fenced");
    let instance = testkit::unique("instance");
    let member = |handled: Arc<AtomicUsize>| {
        let mut config = fast_group_config();
        config
            .librdkafka
            .insert("group.instance.id".to_owned(), instance.clone());
        let mut router = Router::new();
        router.register(&topic, move |_: Message<Item>| {
            let handled = handled.clone();
            async move {
                handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
        Kafka::connect(&config)
            .unwrap()
            .consumer(&group, router)
            .unwrap()
    };
    let handled = Arc::new(AtomicUsize::new(0));
    let (first, _first_token, first_task) = start(member(handled.clone()));
    assert!(testkit::eventually(WAIT, || handled.load(Ordering::SeqCst) == 10).await);
    let (second, second_token, second_task) = start(member(Arc::new(AtomicUsize::new(0))));

    // Then the first one's health turns unhealthy naming the fatal error, and run() ends with
    // it, instead of logging it and going on with nothing consumed.
    let mut unhealthy = None;
    for _ in 0..240 {
        let health = first.health();
        if !health.healthy {
            unhealthy = Some(health);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let health = unhealthy.expect("the fenced member stayed healthy for 60 s");
    assert!(
        health.problems.iter().any(|p| p.contains("fatal")),
        "{health:?}"
    );
    let ended = tokio::time::timeout(WAIT, first_task)
        .await
        .expect("run() of the fenced member did not end")
        .unwrap();
    let error = ended.expect_err("run() of a fenced member ended with Ok");
    assert!(error.to_string().contains("fatal"), "{error}");
    assert!(!first.is_running());
    stop((second, second_token, second_task)).await;
}

/// A consumer of `topic` whose handler fails every record with id below `failing` with an
/// error message of `error_bytes`, and records the ids of the others.
fn failing_consumer(
    config: &KafkaConfig,
    topic: &str,
    failing: u64,
    error_bytes: usize,
) -> (Running, Arc<Mutex<Vec<u64>>>, String) {
    let handled = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut router = Router::new();
    let log = handled.clone();
    router.register(topic, move |m: Message<Item>| {
        let log = log.clone();
        async move {
            if m.value.id < failing {
                return Err(HandlerError::permanent("x".repeat(error_bytes)));
            }
            log.lock().unwrap().push(m.value.id);
            Ok(())
        }
    });
    let group = testkit::unique("oversized");
    let consumer = start(
        Kafka::connect(config)
            .unwrap()
            .consumer(&group, router)
            .unwrap(),
    );
    (consumer, handled, group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_failure_copy_is_stored_bounded_or_without_its_value() {
    // Given a dead-letter topic that takes records of 20 kB at most, and two poison records
    // whose handler fails with a 100 kB error message: one of 50 kB, one small.
    let topic = testkit::topic("oversized", 1).await;
    let dlt = format!("{topic}.dlq");
    testkit::kafka()
        .admin()
        .unwrap()
        .ensure_topics(&[kafkit::TopicSpec::new(&dlt, 1).config("max.message.bytes", "20000")])
        .await
        .unwrap();
    let pad = "p".repeat(50_000);
    testkit::send(vec![
        kafkit::Record::to(&topic)
            .json(&serde_json::json!({ "id": 0, "pad": pad }))
            .unwrap(),
        kafkit::Record::to(&topic)
            .json(&serde_json::json!({ "id": 1 }))
            .unwrap(),
        kafkit::Record::to(&topic)
            .json(&serde_json::json!({ "id": 2 }))
            .unwrap(),
    ])
    .await;
    let (consumer, handled, group) = failing_consumer(&testkit::config(), &topic, 2, 100_000);

    // Then both are dead-lettered and the partition goes on: the error text is bounded, and
    // the copy too large even so is stored without its value, saying so and how large it was
    // (the value stays in the source topic at the offset the copy names).
    assert!(
        testkit::eventually(WAIT, || *handled.lock().unwrap() == [2]).await,
        "{:?}",
        consumer.0.health()
    );
    let dead = testkit::read(&dlt, 2, WAIT).await;
    assert_eq!(dead.len(), 2);
    let by_offset = |o: &str| {
        dead.iter()
            .find(|m| header(m, dead_letter::ORIGINAL_OFFSET) == o)
            .unwrap()
    };
    let large = by_offset("0");
    assert_eq!(large.value, None);
    let omitted: usize = header(large, dead_letter::VALUE_OMITTED).parse().unwrap();
    assert!(omitted > 50_000, "{omitted}");
    let small = by_offset("1");
    assert_eq!(small.value.as_deref(), Some(br#"{"id":1}"#.as_slice()));
    let message = header(small, dead_letter::ERROR_MESSAGE);
    assert!(
        message.len() <= dead_letter::MAX_ERROR_MESSAGE_BYTES && message.ends_with('…'),
        "error message of {} bytes",
        message.len()
    );
    stop(consumer).await;
    assert_eq!(testkit::committed(&group, &topic).await[0].1, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_topics_take_records_as_large_as_their_source_does() {
    // Given a topic raised to 3 MB records, clients allowed 4 MB, and a poison record of
    // 1.5 MB.
    let mut config = testkit::config();
    config
        .librdkafka
        .insert("message.max.bytes".to_owned(), "4000000".to_owned());
    let topic = testkit::unique("large-source");
    let kafka = Kafka::connect(&config).unwrap();
    let admin = kafka.admin().unwrap();
    admin
        .ensure_topics(&[kafkit::TopicSpec::new(&topic, 1).config("max.message.bytes", "3000000")])
        .await
        .unwrap();
    let producer = kafka.producer().unwrap();
    let pad = "p".repeat(1_500_000);
    producer
        .send(
            kafkit::Record::to(&topic)
                .json(&serde_json::json!({ "id": 0, "pad": pad }))
                .unwrap(),
        )
        .await
        .unwrap();
    producer
        .send(
            kafkit::Record::to(&topic)
                .json(&serde_json::json!({ "id": 1 }))
                .unwrap(),
        )
        .await
        .unwrap();
    let (consumer, handled, _) = failing_consumer(&config, &topic, 1, 10);

    // Then the dead-letter topic kafkit creates takes it whole, value included.
    assert!(
        testkit::eventually(WAIT, || *handled.lock().unwrap() == [1]).await,
        "{:?}",
        consumer.0.health()
    );
    let limit: usize =
        admin.topic_configs(&format!("{topic}.dlq")).await.unwrap()["max.message.bytes"]
            .parse()
            .unwrap();
    assert!(limit >= 3_000_000, "dead-letter topic limit {limit}");
    let dead = testkit::read_with(&testkit::brokers(), &format!("{topic}.dlq"), 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].value.as_ref().is_some_and(|v| v.len() > 1_500_000),
        "the copy lost its value: {:?}",
        dead[0].headers
    );
    stop(consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_that_is_not_utf8_dead_letters_its_record_and_the_partition_goes_on() {
    // Given records 0..5, then record 5 with a header key that is not UTF-8 (0xff 0xfe 'k'),
    // then records 6..10, on one partition.
    let topic = testkit::topic("raw-header", 1).await;
    testkit::populate(&topic, 5, 1).await;
    let raw_topic = topic.clone();
    tokio::task::spawn_blocking(move || {
        testkit::send_with_raw_header_key(&raw_topic, 5, b"\xff\xfek")
    })
    .await
    .unwrap();
    let rest = (6..10u64)
        .map(|id| {
            kafkit::Record::to(&topic)
                .json(&serde_json::json!({ "id": id }))
                .unwrap()
        })
        .collect();
    testkit::send(rest).await;
    let handled = Arc::new(Mutex::new(BTreeMap::<i64, Vec<String>>::new()));
    let mut router = Router::new();
    let log = handled.clone();
    router.register_raw(&topic, move |m: Message| {
        let log = log.clone();
        async move {
            let keys = m.headers.iter().map(|(k, _)| k.clone()).collect();
            log.lock().unwrap().insert(m.offset, keys);
            Ok(())
        }
    });
    let group = testkit::unique("raw-header");
    let consumer = start(testkit::kafka().consumer(&group, router).unwrap());

    // Then every other record is handled, and record 5 never reaches the handler: it is
    // dead-lettered as invalid, naming the header key's bytes, with its key copied lossily
    // (U+FFFD for what is not UTF-8); every offset is committed: the partition goes on.
    assert!(
        testkit::eventually(WAIT, || handled.lock().unwrap().len() == 9).await,
        "handled {:?}",
        handled.lock().unwrap()
    );
    let dead = testkit::read(&format!("{topic}.dlq"), 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], dead_letter::ORIGINAL_OFFSET), "5");
    assert_eq!(header(&dead[0], dead_letter::ERROR_KIND), "invalid");
    let reason = header(&dead[0], dead_letter::ERROR_MESSAGE);
    assert!(reason.contains("is not UTF-8: [ff, fe, 6b]"), "{reason}");
    assert!(
        dead[0]
            .headers
            .iter()
            .any(|(k, _)| k == "\u{fffd}\u{fffd}k")
    );
    assert!(!handled.lock().unwrap().contains_key(&5));
    stop(consumer).await;
    for (partition, committed, high) in testkit::committed(&group, &topic).await {
        assert_eq!(committed, Some(high), "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_worker_never_lifts_its_successors_back_pressure() {
    // Given a member with a queue bound of 2 records whose handler blocks inside record 0 the
    // first time it gets it: that worker holds one queued record.
    let topic = testkit::topic("retired-lift", 1).await;
    let other = testkit::topic("retired-lift-other", 1).await;
    testkit::populate(&topic, 1, 1).await;
    let group = testkit::unique("retired-lift");
    let handled = Arc::new(Mutex::new(BTreeSet::<u64>::new()));
    let (entered, release) = (CancellationToken::new(), CancellationToken::new());
    let mut router = Router::new();
    let (seen, inside, unblock) = (handled.clone(), entered.clone(), release.clone());
    let blocked_once = Arc::new(AtomicUsize::new(0));
    router.register(&topic, move |m: Message<Item>| {
        let (seen, inside, unblock, blocked_once) = (
            seen.clone(),
            inside.clone(),
            unblock.clone(),
            blocked_once.clone(),
        );
        async move {
            if m.value.id == 0 && blocked_once.fetch_add(1, Ordering::SeqCst) == 0 {
                inside.cancel();
                unblock.cancelled().await;
            }
            seen.lock().unwrap().insert(m.value.id);
            Ok(())
        }
    });
    let options = ConsumerOptions {
        max_queued_per_partition: 2,
        drain_timeout: Duration::from_secs(2),
        ..ConsumerOptions::default()
    };
    let member = start(
        Kafka::connect(&fast_group_config())
            .unwrap()
            .consumer_with_options(&group, router, options)
            .unwrap(),
    );
    tokio::time::timeout(WAIT, entered.cancelled())
        .await
        .expect("record 0 never reached its handler");

    // When a second member joins the group (on another topic, so the first gets its partition
    // back): the eager rebalance revokes and re-assigns it while the old worker is inside the
    // handler. Record 0 is fetched again for the new worker, which waits for the old one: with
    // the old worker's record still counted, the partition is at its bound.
    let mut router = Router::new();
    router.register(&other, |_: Message<Item>| async { Ok(()) });
    let joiner = start(
        Kafka::connect(&fast_group_config())
            .unwrap()
            .consumer(&group, router)
            .unwrap(),
    );
    let partition = || {
        member
            .0
            .health()
            .partitions
            .into_iter()
            .find(|p| p.partition == 0)
    };
    assert!(
        testkit::eventually(WAIT, || partition().is_some_and(|p| p
            .paused
            .contains(&kafkit::consumer::PauseReason::Backpressure)))
        .await,
        "the re-assigned partition never reached its bound: {:?}",
        member.0.health()
    );

    // And then the old worker's handler returns, and more records arrive.
    release.cancel();
    testkit::send(
        (1..=20u64)
            .map(|id| {
                kafkit::Record::to(&topic)
                    .json(&serde_json::json!({ "id": id }))
                    .unwrap()
            })
            .collect(),
    )
    .await;

    // Then every record is handled, and the partition is left neither paused nor queued.
    let all: BTreeSet<u64> = (0..=20).collect();
    assert!(
        testkit::eventually(WAIT, || *handled.lock().unwrap() == all).await,
        "handled {:?}; health: {:?}",
        handled.lock().unwrap(),
        member.0.health()
    );
    assert!(
        testkit::eventually(Duration::from_secs(10), || partition()
            .is_some_and(|p| p.paused.is_empty() && p.queued == 0))
        .await,
        "{:?}",
        member.0.health()
    );
    stop(joiner).await;
    stop(member).await;
}
