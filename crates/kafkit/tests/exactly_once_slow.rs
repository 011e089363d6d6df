//! An exactly-once pipeline ([`kafkit::ExactlyOnce`]) whose batches take longer than
//! librdkafka's `max.poll.interval.ms`, on the real test broker: its member stays in the group
//! while a batch is open, and every input's output is written exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkit::consumer::exactly_once::ExactlyOnceOptions;
use kafkit::retry::RetryPolicy;
use kafkit::{
    HandlerError, Kafka, Message, Record, config::Isolation, reader::Limits, reader::Start,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// librdkafka's `max.poll.interval.ms` for the pipelines of these tests (at least the session
/// timeout, which librdkafka requires).
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(7);

#[derive(serde::Deserialize)]
struct Item {
    id: u64,
}

/// The front door to the test broker for a pipeline that must poll every
/// [`MAX_POLL_INTERVAL`] (session timeout 6 s).
fn impatient_kafka() -> Kafka {
    let mut config = testkit::config();
    config.session_timeout = Duration::from_secs(6);
    config.heartbeat_interval = Duration::from_secs(1);
    config.librdkafka.insert(
        "max.poll.interval.ms".to_owned(),
        MAX_POLL_INTERVAL.as_millis().to_string(),
    );
    Kafka::connect(&config).unwrap()
}

/// [`outputs_per_id`] once it has `ids` ids (or after [`WAIT`]). A commit returns once the
/// coordinator has decided it; each partition's commit marker lands just after, and until it
/// does a read-committed reader stops before that partition's records of the transaction.
async fn outputs_once_visible(topic: &str, ids: usize) -> BTreeMap<u64, usize> {
    let started = tokio::time::Instant::now();
    loop {
        let outputs = outputs_per_id(topic).await;
        if outputs.len() >= ids || started.elapsed() > WAIT {
            return outputs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many output records each input id has in `topic` for a read-committed reader
/// (outputs carry the id as their key).
async fn outputs_per_id(topic: &str) -> BTreeMap<u64, usize> {
    let reader = testkit::kafka()
        .reader()
        .unwrap()
        .isolation(Isolation::ReadCommitted);
    let mut reading = reader.open(topic, None, Start::Beginning).await.unwrap();
    let messages = reading
        .collect(&Limits::to_end(usize::MAX).timeout(WAIT))
        .await
        .unwrap();
    assert!(reading.at_end(), "{topic}: the end was not reached in time");
    let mut counts = BTreeMap::new();
    for message in messages {
        let id: u64 = message.key_str().unwrap().parse().unwrap();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// The member ids `group` has now (none while it rebalances).
async fn members(group: &str) -> BTreeSet<String> {
    let admin = testkit::kafka().admin().unwrap();
    admin
        .describe_group(group)
        .await
        .unwrap()
        .map(|g| g.members.into_iter().map(|m| m.member_id).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_slower_than_max_poll_interval_keeps_its_member_and_commits_once() {
    // Given 8 items on one partition, and a pipeline whose consumer must poll every 7 s,
    // taking 4 items a transaction, each item taking 2.5 s to transform, and item 5 failing
    // twice (transient) before it succeeds, after 1 s and 2 s of back-off: each batch is open
    // for 10 s or more.
    let input = testkit::topic("eos-slow", 1).await;
    let output = testkit::topic("eos-slow-out", 1).await;
    testkit::populate(&input, 8, 8).await;
    let kafka = impatient_kafka();
    let producer = kafka
        .transactional_producer(testkit::unique("eos-slow"))
        .await
        .unwrap();
    let group = testkit::unique("eos-slow");
    let mut pipeline =
        kafka
            .exactly_once(&group, producer)
            .unwrap()
            .with_options(ExactlyOnceOptions {
                max_records: 4,
                ..ExactlyOnceOptions::default()
            });
    let calls: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let (seen, out) = (calls.clone(), output.clone());
    pipeline
        .route(&input, move |item: Message<Item>| {
            let (seen, output) = (seen.clone(), out.clone());
            async move {
                let id = item.value.id;
                let call = {
                    let mut seen = seen.lock().unwrap();
                    let call = seen.entry(id).or_insert(0);
                    *call += 1;
                    *call
                };
                tokio::time::sleep(Duration::from_millis(2_500)).await;
                if id == 5 && call <= 2 {
                    return Err(HandlerError::transient("not yet"));
                }
                Ok(vec![Record::to(&output).key(id.to_string()).text("ok")])
            }
        })
        .retry(RetryPolicy::exponential(5, Duration::from_secs(1)).jitter(0.0));
    let pipeline = Arc::new(pipeline);

    // When it runs until both transactions committed, the group watched every 500 ms.
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (pipeline, stop) = (pipeline.clone(), stop.clone());
        async move { pipeline.run(stop.cancelled_owned()).await }
    });
    let started = tokio::time::Instant::now();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    while pipeline.transactions() < 2 {
        assert!(
            started.elapsed() < 2 * WAIT,
            "not both transactions committed in time: {} committed, calls {:?}, members {ids:?}",
            pipeline.transactions(),
            calls.lock().unwrap()
        );
        // Then at every step: one member only, never a new one (a member that did not poll
        // for max.poll.interval.ms leaves the group and joins again with a new id) ...
        ids.extend(members(&group).await);
        assert!(
            ids.len() <= 1,
            "the member left the group and joined again: {ids:?}"
        );
        // ... and no record transformed again (item 5: its three attempts).
        let again: Vec<(u64, u32)> = calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, n)| **n > if **id == 5 { 3 } else { 1 })
            .map(|(id, n)| (*id, *n))
            .collect();
        assert!(again.is_empty(), "batch transformed again: {again:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("the pipeline stops")
        .unwrap()
        .unwrap();

    // Then each item has its output once for a read-committed reader, each item was
    // transformed once (item 5 three times), the 8 offsets are committed in two transactions,
    // and the member stayed the same throughout.
    assert_eq!(ids.len(), 1, "{ids:?}");
    let outputs = outputs_once_visible(&output, 8).await;
    assert_eq!(outputs, (0..8).map(|id| (id, 1)).collect());
    let expected: BTreeMap<u64, u32> = (0..8).map(|id| (id, if id == 5 { 3 } else { 1 })).collect();
    assert_eq!(*calls.lock().unwrap(), expected);
    assert_eq!(pipeline.transactions(), 2);
    assert_eq!(pipeline.committed_records(), 8);
    assert_eq!(testkit::committed(&group, &input).await, [(0, Some(8), 8)]);
}

/// A pipeline of `group` copying `input`'s items to `output` keyed by id, 4 items a
/// transaction, each taking `delay`; `calls` counts the transform's calls per item.
async fn slow_copier(
    group: &str,
    input: &str,
    output: &str,
    delay: Duration,
    calls: &Arc<Mutex<BTreeMap<u64, u32>>>,
) -> Arc<kafkit::ExactlyOnce> {
    let kafka = impatient_kafka();
    let producer = kafka
        .transactional_producer(testkit::unique("eos-slow-rebalance"))
        .await
        .unwrap();
    let mut pipeline =
        kafka
            .exactly_once(group, producer)
            .unwrap()
            .with_options(ExactlyOnceOptions {
                max_records: 4,
                ..ExactlyOnceOptions::default()
            });
    let (seen, output) = (calls.clone(), output.to_owned());
    pipeline.route(input, move |item: Message<Item>| {
        let (seen, output) = (seen.clone(), output.clone());
        async move {
            *seen.lock().unwrap().entry(item.value.id).or_insert(0) += 1;
            tokio::time::sleep(delay).await;
            Ok(vec![
                Record::to(&output)
                    .key(item.value.id.to_string())
                    .text("ok"),
            ])
        }
    });
    Arc::new(pipeline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_served_while_a_batch_is_open_writes_every_output_once() {
    // Given 24 items on 2 partitions, and a first member taking 4 items a transaction, each
    // item 2 s to transform: its batches are open for 8 s, longer than max.poll.interval.ms,
    // and it polls (serving rebalances) while they are.
    let input = testkit::topic("eos-slow-rebalance", 2).await;
    let output = testkit::topic("eos-slow-rebalance-out", 2).await;
    testkit::populate(&input, 24, 24).await;
    let group = testkit::unique("eos-slow-rebalance");
    let calls: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let delay = Duration::from_secs(2);
    let first = slow_copier(&group, &input, &output, delay, &calls).await;
    let second = slow_copier(&group, &input, &output, delay, &calls).await;
    let stop = CancellationToken::new();
    let first_run = tokio::spawn({
        let (first, stop) = (first.clone(), stop.clone());
        async move { first.run(stop.cancelled_owned()).await }
    });
    let started = tokio::time::Instant::now();
    while first.transactions() == 0 {
        assert!(started.elapsed() < WAIT, "the first member never committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // When a second member joins the group a second into the first's next batch: the
    // rebalance revokes the first member's partitions while that batch is open.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second_run = tokio::spawn({
        let (second, stop) = (second.clone(), stop.clone());
        async move { second.run(stop.cancelled_owned()).await }
    });

    // Then both members commit, the group commits the end of both partitions, and at every
    // step the outputs committed so far hold no item twice.
    let done = async {
        loop {
            let outputs = outputs_per_id(&output).await;
            let twice: Vec<_> = outputs.iter().filter(|(_, n)| **n != 1).collect();
            assert!(twice.is_empty(), "not exactly once: {twice:?}");
            let positions = testkit::committed(&group, &input).await;
            if positions.iter().all(|(_, c, end)| *c == Some(*end)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::timeout(2 * WAIT, done)
        .await
        .expect("every offset committed");
    // Read after the last commit (the loop's last read came before it).
    let outputs = outputs_once_visible(&output, 24).await;
    stop.cancel();
    first_run.await.unwrap().unwrap();
    second_run.await.unwrap().unwrap();
    assert_eq!(outputs, (0..24).map(|id| (id, 1)).collect());
    assert!(
        second.transactions() > 0,
        "the second member never committed"
    );
    // The revoked batch was transformed but not committed: its items were transformed again
    // (by whichever member got their partition), and counted as committed once.
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 24, "{calls:?}");
    assert!(
        calls.values().any(|n| *n > 1),
        "the rebalance did not come while a batch was open: {calls:?}"
    );
    assert_eq!(
        first.committed_records() + second.committed_records(),
        24,
        "an aborted batch counted as committed"
    );
}
