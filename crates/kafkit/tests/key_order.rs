//! Key and unordered processing order on Apache Kafka: keys run concurrently inside one
//! partition, one record of a key at a time and in offset order; the offsets done out of order
//! are committed in the offset's metadata, within its budget, and a new owner skips them.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkit::batch::BatchOptions;
use kafkit::consumer::offset_map::{self, MAX_METADATA_BYTES};
use kafkit::consumer::{CommitStrategy, ConsumerOptions, ProcessingOrder};
use kafkit::{Consumer, HandlerError, Message, Record, RetryPolicy, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);

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

fn options() -> ConsumerOptions {
    ConsumerOptions {
        commit: CommitStrategy::Periodic(Duration::from_millis(200)),
        drain_timeout: Duration::from_secs(1),
        ..ConsumerOptions::default()
    }
}

/// A pseudo-random duration below `max_micros`, fixed per id.
fn jitter(id: u64, max_micros: u64) -> Duration {
    Duration::from_micros((id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) % max_micros.max(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_order_runs_keys_concurrently_one_record_of_a_key_at_a_time_in_offset_order() {
    // Given 3,000 records of 5 keys in one partition (key-{id % 5}, ids increase with the
    // offset), and a handler taking 0-3 ms: fewer keys than the in-flight bound, so only the
    // key order keeps two records of a key apart.
    const RECORDS: u64 = 3_000;
    const KEYS: u64 = 5;
    let topic = testkit::topic("key-order", 1).await;
    testkit::populate(&topic, RECORDS as usize, KEYS as usize).await;
    let group = testkit::unique("key-order");

    // When it is consumed in key order with at most 16 records in flight.
    #[derive(Default)]
    struct Seen {
        /// Per key: the last id started, and whether it is still in flight.
        keys: HashMap<u64, (u64, bool)>,
        handled: Vec<u64>,
        violations: Vec<String>,
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut router = Router::new();
    let (s, n, m) = (seen.clone(), now.clone(), max.clone());
    router
        .register(topic.clone(), move |record: Message<Item>| {
            let (seen, now, max) = (s.clone(), n.clone(), m.clone());
            async move {
                let id = record.value.id;
                let key = id % KEYS;
                // Checked at every start: the key's previous record is done, and it is the
                // record just before this one.
                {
                    let mut seen = seen.lock().unwrap();
                    let previous = seen.keys.get(&key).copied();
                    match previous {
                        Some((_, true)) => seen
                            .violations
                            .push(format!("{id} started while its key is in flight")),
                        Some((last, false)) if last + KEYS != id => seen
                            .violations
                            .push(format!("{id} started after {last} of its key")),
                        None if id >= KEYS => seen
                            .violations
                            .push(format!("{id} started first of its key")),
                        _ => {}
                    }
                    seen.keys.insert(key, (id, true));
                }
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(jitter(id, 3_000)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                let mut seen = seen.lock().unwrap();
                seen.keys.insert(key, (id, false));
                seen.handled.push(id);
                Ok(())
            }
        })
        .order(ProcessingOrder::Key)
        .max_in_flight(16);
    let running = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options())
            .unwrap(),
    );
    let done = testkit::eventually(WAIT, || {
        seen.lock().unwrap().handled.len() as u64 >= RECORDS
    })
    .await;
    assert!(
        done,
        "handled {} of {RECORDS}",
        seen.lock().unwrap().handled.len()
    );
    // The last commit lands with the final state.
    stop(running).await;

    // Then no key ever ran twice at once or out of order, keys did run concurrently, within
    // the bound, and every record was handled exactly once.
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.violations.is_empty(),
        "{:?}",
        &seen.violations[..seen.violations.len().min(5)]
    );
    let max = max.load(Ordering::SeqCst);
    assert!((2..=KEYS as usize).contains(&max), "{max} records at once");
    let unique: BTreeSet<u64> = seen.handled.iter().copied().collect();
    assert_eq!(unique.len() as u64, RECORDS);
    assert_eq!(
        seen.handled.len() as u64,
        RECORDS,
        "a record was handled twice"
    );
    // And the group committed the end, with nothing left in a map.
    let committed = testkit::committed_maps(&group, &topic, 1).await;
    assert_eq!(committed, vec![(0, RECORDS as i64, String::new())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_runs_records_of_one_key_concurrently() {
    // Given 400 records of one key, and a handler taking 2 ms.
    let topic = testkit::topic("unordered", 1).await;
    testkit::populate(&topic, 400, 1).await;
    let group = testkit::unique("unordered");
    let handled = Arc::new(Mutex::new(Vec::new()));
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut router = Router::new();
    let (h, n, m) = (handled.clone(), now.clone(), max.clone());
    router
        .register(topic.clone(), move |record: Message<Item>| {
            let (handled, now, max) = (h.clone(), n.clone(), m.clone());
            async move {
                max.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                handled.lock().unwrap().push(record.value.id);
                Ok(())
            }
        })
        .order(ProcessingOrder::Unordered)
        .max_in_flight(32);
    // When it is consumed unordered.
    let running = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options())
            .unwrap(),
    );
    assert!(testkit::eventually(WAIT, || handled.lock().unwrap().len() >= 400).await);
    stop(running).await;
    // Then the one key's records ran up to 32 at once, each once.
    let max = max.load(Ordering::SeqCst);
    assert!((8..=32).contains(&max), "{max} at once");
    let handled = handled.lock().unwrap();
    assert_eq!(handled.iter().collect::<BTreeSet<_>>().len(), 400);
    assert_eq!(handled.len(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_skips_the_records_its_predecessor_did_out_of_order() {
    // Given 200 records of distinct keys in one partition, and a first member whose handler
    // never finishes the first record (it is abandoned at shutdown) and does all the others.
    let topic = testkit::topic("key-takeover", 1).await;
    testkit::populate(&topic, 200, 200).await;
    let group = testkit::unique("key-takeover");
    let first = Arc::new(Mutex::new(BTreeSet::new()));
    let mut router = Router::new();
    let f = first.clone();
    router
        .register(topic.clone(), move |record: Message<Item>| {
            let first = f.clone();
            async move {
                if record.value.id == 0 {
                    std::future::pending::<()>().await;
                }
                first.lock().unwrap().insert(record.value.id);
                Ok(())
            }
        })
        .order(ProcessingOrder::Key)
        .max_in_flight(50);
    let running = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options())
            .unwrap(),
    );
    assert!(testkit::eventually(WAIT, || first.lock().unwrap().len() >= 199).await);

    // When it stops (drain timeout: record 0 is abandoned, not done).
    stop(running).await;

    // Then the group's commit is offset 0 with 1..=199 done in its map.
    let committed = testkit::committed_maps(&group, &topic, 1).await;
    assert_eq!(committed.len(), 1, "{committed:?}");
    let (_, offset, metadata) = &committed[0];
    assert_eq!(*offset, 0);
    assert!(metadata.len() <= MAX_METADATA_BYTES);
    assert_eq!(
        offset_map::done_ranges(0, metadata).unwrap(),
        vec![(1, 199)],
        "{metadata}"
    );

    // And a new member of the group handles record 0 alone.
    let second = Arc::new(Mutex::new(Vec::new()));
    let mut router = Router::new();
    let s = second.clone();
    router
        .register(topic.clone(), move |record: Message<Item>| {
            let second = s.clone();
            async move {
                second.lock().unwrap().push(record.value.id);
                Ok(())
            }
        })
        .order(ProcessingOrder::Key);
    let running = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options())
            .unwrap(),
    );
    assert!(testkit::eventually(WAIT, || !second.lock().unwrap().is_empty()).await);
    // Time for any record it should not have handled to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(running).await;
    assert_eq!(*second.lock().unwrap(), vec![0]);
    let committed = testkit::committed_maps(&group, &topic, 1).await;
    assert_eq!(committed, vec![(0, 200, String::new())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offset_map_stays_within_its_budget_with_100_000_records_in_flight() {
    // Given 100,000 records of one partition consumed unordered with room for all of them in
    // flight, and a handler that holds every record until a gate opens: even ids first, odd
    // ids later (every other offset done: the worst map there is).
    const RECORDS: usize = 100_000;
    let topic = testkit::topic("key-map", 1).await;
    testkit::populate(&topic, RECORDS, 1).await;
    let group = testkit::unique("key-map");
    let (even, odd) = (
        Arc::new(tokio::sync::Semaphore::new(0)),
        Arc::new(tokio::sync::Semaphore::new(0)),
    );
    let handled = Arc::new(Mutex::new(BTreeSet::new()));
    let mut router = Router::new();
    let (e, o, h) = (even.clone(), odd.clone(), handled.clone());
    router
        .register(topic.clone(), move |record: Message<Item>| {
            let (even, odd, handled) = (e.clone(), o.clone(), h.clone());
            async move {
                let gate = if record.value.id.is_multiple_of(2) {
                    even
                } else {
                    odd
                };
                drop(gate.acquire().await.unwrap());
                handled.lock().unwrap().insert(record.offset);
                Ok(())
            }
        })
        .order(ProcessingOrder::Unordered)
        .max_in_flight(RECORDS);
    let options = ConsumerOptions {
        max_queued_per_partition: 2 * RECORDS,
        ..options()
    };
    let running = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options)
            .unwrap(),
    );
    let consumer = running.0.clone();
    let in_flight = || {
        consumer
            .health()
            .partitions
            .first()
            .map_or(0, |p| p.in_flight)
    };
    assert!(
        testkit::eventually(WAIT, || in_flight() == RECORDS).await,
        "{} in flight",
        in_flight()
    );

    // When the even ids finish, then the odd ones.
    even.add_permits(RECORDS);
    // Then at every commit seen meanwhile the map fits the broker's bound, and every offset
    // it or the committed offset calls done was handled.
    let check = |step: &'static str| {
        let (group, topic, handled) = (group.clone(), topic.clone(), handled.clone());
        async move {
            let committed = testkit::committed_maps(&group, &topic, 1).await;
            let handled = handled.lock().unwrap().clone();
            let Some((_, offset, metadata)) = committed.into_iter().next() else {
                return 0;
            };
            {
                assert!(
                    metadata.len() <= MAX_METADATA_BYTES,
                    "{step}: {} bytes",
                    metadata.len()
                );
                assert!(
                    (0..offset).all(|o| handled.contains(&o)),
                    "{step}: committed {offset} past a record not done"
                );
                for (start, end) in offset_map::done_ranges(offset, &metadata).unwrap() {
                    assert!(
                        (start..=end).all(|o| handled.contains(&o)),
                        "{step}: {start}..={end} in the map, not all done"
                    );
                }
            }
            metadata.len()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut largest = 0;
    while Instant::now() < deadline && largest < MAX_METADATA_BYTES / 2 {
        let size = check("evens done").await;
        largest = largest.max(size);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        largest > MAX_METADATA_BYTES / 2,
        "the map never grew: {largest} bytes"
    );
    odd.add_permits(RECORDS);
    assert!(testkit::eventually(WAIT, || handled.lock().unwrap().len() == RECORDS).await);
    check("all done").await;
    // And once every record settled the whole partition is committed, with no map.
    assert!(
        testkit::eventually(WAIT, || consumer.health().partitions[0].last_done_offset
            == Some(RECORDS as i64 - 1))
        .await
    );
    drop(consumer);
    stop(running).await;
    let committed = testkit::committed_maps(&group, &topic, 1).await;
    assert_eq!(committed, vec![(0, RECORDS as i64, String::new())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_holds_back_its_key_only() {
    // Given records a0, b0..b9, a1 in one partition; a0 fails once asking to be retried after
    // one second.
    let topic = testkit::topic("key-retry-after", 1).await;
    let mut records = vec![Record::to(&topic).key("a").partition(0).json(&0).unwrap()];
    for i in 0..10 {
        records.push(
            Record::to(&topic)
                .key("b")
                .partition(0)
                .json(&(100 + i))
                .unwrap(),
        );
    }
    records.push(Record::to(&topic).key("a").partition(0).json(&1).unwrap());
    testkit::send(records).await;
    let group = testkit::unique("key-retry-after");
    let events = Arc::new(Mutex::new(Vec::<(u64, u32, Instant)>::new()));
    let mut router = Router::new();
    let ev = events.clone();
    router
        .register(topic.clone(), move |record: Message<u64>| {
            let events = ev.clone();
            async move {
                events
                    .lock()
                    .unwrap()
                    .push((record.value, record.attempt, Instant::now()));
                if record.value == 0 && record.attempt == 1 {
                    return Err(
                        HandlerError::transient("rate limited").retry_after(Duration::from_secs(1))
                    );
                }
                Ok(())
            }
        })
        .order(ProcessingOrder::Key)
        .retry(RetryPolicy::exponential(3, Duration::from_millis(10)));
    // When it is consumed in key order.
    let running = start(
        testkit::kafka()
            .consumer_with_options(&group, router, options())
            .unwrap(),
    );
    assert!(testkit::eventually(WAIT, || events.lock().unwrap().len() >= 13).await);
    stop(running).await;

    // Then b's records all ran before a0's second attempt, which came no sooner than a second
    // after its first, and a1 only after a0 was done.
    let events = events.lock().unwrap().clone();
    let at = |value: u64, attempt: u32| {
        events
            .iter()
            .position(|(v, a, _)| *v == value && *a == attempt)
            .unwrap_or_else(|| panic!("{value} attempt {attempt} never ran: {events:?}"))
    };
    let (first, second, a1) = (at(0, 1), at(0, 2), at(1, 1));
    for b in 100..110 {
        assert!(at(b, 1) < second, "{b} waited for a0's retry");
    }
    assert!(second < a1);
    let waited = events[second].2 - events[first].2;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert_eq!(events.len(), 13);
}

#[test]
fn a_batch_route_in_key_order_is_refused_with_the_route_named() {
    let mut router = Router::new();
    router
        .register_batch(
            "orders",
            BatchOptions::default(),
            |_: Vec<Message<Item>>| async { Ok(()) },
        )
        .order(ProcessingOrder::Key);
    let error = testkit::kafka().consumer("g", router).unwrap_err();
    assert!(
        error.to_string().contains("orders: a batch route"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_flight_are_a_gauge_per_partition_in_every_order() {
    // Given two topics of one partition, one read in key order with 4 in flight and one in
    // partition order, each with 10 keys and a handler that waits until released.
    let keyed = testkit::topic("in-flight-key", 1).await;
    let ordered = testkit::topic("in-flight-partition", 1).await;
    testkit::populate(&keyed, 40, 10).await;
    testkit::populate(&ordered, 40, 10).await;
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let mut router = Router::new();
    for (topic, order) in [
        (&keyed, ProcessingOrder::Key),
        (&ordered, ProcessingOrder::Partition),
    ] {
        let (release, handled) = (release.clone(), handled.clone());
        router
            .register(topic.clone(), move |_: Message<Item>| {
                let (release, handled) = (release.clone(), handled.clone());
                async move {
                    release.acquire().await.unwrap().forget();
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .order(order)
            .max_in_flight(4);
    }
    let metrics = kafkit::metrics::Metrics::default();
    let group = testkit::unique("in-flight");
    let consumer = testkit::kafka()
        .consumer_with_options(&group, router, options())
        .unwrap()
        .with_metrics(metrics.clone());
    let running = start(consumer);
    let gauge = |topic: &str| {
        let prefix = format!(
            "kafkit_consumer_in_flight{{group=\"{group}\",partition=\"0\",topic=\"{topic}\"}} "
        );
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.parse::<i64>().unwrap()))
    };

    // Then, while every handler waits, the gauge says 4 records of the keyed partition and 1
    // of the partition-ordered one are being handled.
    let expected = || gauge(&keyed) == Some(4) && gauge(&ordered) == Some(1);
    assert!(
        testkit::eventually(WAIT, expected).await,
        "{}",
        metrics.render()
    );
    // And once every record is let through, both fall to 0.
    release.add_permits(80);
    assert!(testkit::eventually(WAIT, || handled.load(Ordering::SeqCst) == 80).await);
    let idle = || gauge(&keyed) == Some(0) && gauge(&ordered) == Some(0);
    assert!(
        testkit::eventually(WAIT, idle).await,
        "{}",
        metrics.render()
    );
    // And once the member has stopped, its partitions are no longer reported.
    stop(running).await;
    assert_eq!((gauge(&keyed), gauge(&ordered)), (None, None));
}
