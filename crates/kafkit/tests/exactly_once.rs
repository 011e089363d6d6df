//! The exactly-once pipeline ([`kafkit::ExactlyOnce`]) on the real test broker: failures
//! retried or dead-lettered inside the transaction, and a zombie instance fenced by a newer
//! one with the same transactional id. The SIGKILL test is `exactly_once_pipeline` in
//! tests/examples.rs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kafkit::consumer::exactly_once::{Transform, TransformResult};
use kafkit::dead_letter::{ERROR_KIND, ERROR_MESSAGE, ORIGINAL_OFFSET};
use kafkit::retry::RetryPolicy;
use kafkit::{
    ExactlyOnce, HandlerError, Message, Record, config::Isolation, error::ErrorCode,
    reader::Limits, reader::Start,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

#[derive(serde::Deserialize)]
struct Item {
    id: u64,
}

/// Everything `topic` holds for a read-committed reader, up to the end as of now.
async fn read_committed(topic: &str) -> Vec<Message> {
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
    messages
}

/// How many output records each input id has in `topic` (outputs carry the id as their key).
async fn outputs_per_id(topic: &str) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for message in read_committed(topic).await {
        let id: u64 = message.key_str().unwrap().parse().unwrap();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// A pipeline of `group` copying `input`'s items to `output`, keyed by id, through a producer
/// with `transactional_id`; `delay` slows each record down.
async fn copier(
    group: &str,
    transactional_id: &str,
    input: &str,
    output: &str,
    delay: Duration,
) -> ExactlyOnce {
    let kafka = testkit::kafka();
    let producer = kafka
        .transactional_producer(transactional_id)
        .await
        .unwrap();
    let mut pipeline = kafka.exactly_once(group, producer).unwrap();
    let output = output.to_owned();
    pipeline.route(input, move |item: Message<Item>| {
        let output = output.clone();
        async move {
            tokio::time::sleep(delay).await;
            Ok(vec![
                Record::to(&output)
                    .key(item.value.id.to_string())
                    .text("copied"),
            ])
        }
    });
    pipeline
}

/// Runs `pipeline` until `group` has committed the end of every partition of `input`, then
/// stops it and checks it ended well.
async fn run_to_end(pipeline: ExactlyOnce, group: &str, input: &str) {
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { pipeline.run(stop.cancelled_owned()).await }
    });
    let done = async {
        loop {
            let positions = testkit::committed(group, input).await;
            if positions
                .iter()
                .all(|(_, committed, end)| *committed == Some(*end))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(WAIT, done)
        .await
        .expect("every offset committed");
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_or_dead_lettered_inside_the_transaction() {
    // Given 50 items; item 7 fails twice (transient) before it succeeds, 13 fails for good and
    // 21 is invalid.
    let input = testkit::topic("eos-failures", 1).await;
    let output = testkit::topic("eos-failures-out", 1).await;
    testkit::populate(&input, 50, 50).await;
    let attempts: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let kafka = testkit::kafka();
    let producer = kafka
        .transactional_producer(testkit::unique("eos-failures"))
        .await
        .unwrap();
    let group = testkit::unique("eos-failures");
    let mut pipeline = kafka.exactly_once(&group, producer).unwrap();
    let (seen, out) = (attempts.clone(), output.clone());
    pipeline
        .route(&input, move |item: Message<Item>| {
            let (seen, output) = (seen.clone(), out.clone());
            async move {
                let id = item.value.id;
                let attempt = {
                    let mut seen = seen.lock().unwrap();
                    let attempt = seen.entry(id).or_insert(0);
                    *attempt += 1;
                    *attempt
                };
                match id {
                    7 if attempt <= 2 => return Err(HandlerError::transient("not yet")),
                    13 => return Err(HandlerError::permanent("never")),
                    21 => return Err(HandlerError::invalid("bad item")),
                    _ => {}
                }
                Ok(vec![Record::to(&output).key(id.to_string()).text("ok")])
            }
        })
        .retry(RetryPolicy::exponential(5, Duration::from_millis(10)));

    // When it runs until every item's offset is committed.
    run_to_end(pipeline, &group, &input).await;

    // Then every good item has its output once, item 7 after three attempts; 13 and 21 have
    // none, and one dead-letter copy each, with its kind.
    let outputs = outputs_per_id(&output).await;
    let expected: BTreeMap<u64, usize> = (0..50)
        .filter(|id| *id != 13 && *id != 21)
        .map(|id| (id, 1))
        .collect();
    assert_eq!(outputs, expected);
    assert_eq!(attempts.lock().unwrap()[&7], 3);
    let copies = read_committed(&format!("{input}.dlq")).await;
    let kinds: BTreeMap<String, String> = copies
        .iter()
        .map(|copy| {
            let header = |name| String::from_utf8(copy.header_value(name).unwrap().to_vec());
            (
                header(ORIGINAL_OFFSET).unwrap(),
                header(ERROR_KIND).unwrap(),
            )
        })
        .collect();
    assert_eq!(copies.len(), 2, "{kinds:?}");
    assert_eq!(
        kinds,
        [
            ("13".to_owned(), "permanent".to_owned()),
            ("21".to_owned(), "invalid".to_owned())
        ]
        .into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_with_the_same_transactional_id_fences_the_first() {
    // Given 2,000 items on 2 partitions, and a slow first instance.
    let input = testkit::topic("eos-zombie", 2).await;
    let output = testkit::topic("eos-zombie-out", 2).await;
    testkit::populate(&input, 2_000, 2_000).await;
    let group = testkit::unique("eos-zombie");
    let id = testkit::unique("eos-zombie");
    let slow = Duration::from_millis(2);
    let first = Arc::new(copier(&group, &id, &input, &output, slow).await);
    let first_run = tokio::spawn({
        let first = first.clone();
        async move { first.run(std::future::pending()).await }
    });
    let started = tokio::time::Instant::now();
    while first.transactions() == 0 {
        assert!(
            started.elapsed() < WAIT,
            "the first instance never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // When a second instance starts with the same transactional id (a restart while the old
    // process still runs: the old one is now a zombie).
    let second = copier(&group, &id, &input, &output, Duration::ZERO).await;

    // Then the first stops with the fenced error, and writes nothing more.
    let outcome = tokio::time::timeout(WAIT, first_run)
        .await
        .expect("the zombie stops")
        .unwrap();
    let error = outcome.expect_err("the zombie is fenced");
    assert_eq!(error.code(), ErrorCode::Fenced, "{error}");
    let by_first = first.transactions();

    // And with the second running to the end, every item has its output exactly once.
    run_to_end(second, &group, &input).await;
    assert_eq!(first.transactions(), by_first, "the zombie committed again");
    let outputs = outputs_per_id(&output).await;
    let twice: Vec<_> = outputs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "not exactly once: {twice:?}");
    assert_eq!(outputs.len(), 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_that_is_not_utf8_dead_letters_its_record_and_the_partition_goes_on() {
    // Given items 0..10, then item 10 with a header key that is not UTF-8 (0xff 0xfe), then
    // items 11..20, on one partition.
    let input = testkit::topic("eos-raw-header", 1).await;
    let output = testkit::topic("eos-raw-header-out", 1).await;
    let item = |id: u64| {
        Record::to(&input)
            .key(id.to_string())
            .json(&serde_json::json!({ "id": id }))
            .unwrap()
    };
    testkit::send((0..10).map(item).collect()).await;
    let raw_topic = input.clone();
    tokio::task::spawn_blocking(move || {
        testkit::send_with_raw_header_key(&raw_topic, 10, b"\xff\xfek")
    })
    .await
    .unwrap();
    testkit::send((11..20).map(item).collect()).await;
    let group = testkit::unique("eos-raw-header");
    let pipeline = copier(
        &group,
        &testkit::unique("eos-raw-header"),
        &input,
        &output,
        Duration::ZERO,
    )
    .await;

    // When the pipeline runs until every offset is committed.
    run_to_end(pipeline, &group, &input).await;

    // Then every other item has its output once, and item 10 has none but one dead-letter
    // copy, invalid, saying which header key it could not read.
    let outputs = outputs_per_id(&output).await;
    let expected: BTreeMap<u64, usize> = (0..20).filter(|id| *id != 10).map(|id| (id, 1)).collect();
    assert_eq!(outputs, expected);
    let copies = read_committed(&format!("{input}.dlq")).await;
    assert_eq!(copies.len(), 1);
    let header = |name| String::from_utf8(copies[0].header_value(name).unwrap().to_vec()).unwrap();
    assert_eq!(header(ORIGINAL_OFFSET), "10");
    assert_eq!(header(ERROR_KIND), "invalid");
    let reason = header(ERROR_MESSAGE);
    assert!(reason.contains("header key"), "{reason}");
    assert_eq!(copies[0].json::<serde_json::Value>().unwrap()["id"], 10);
}

/// A transform whose `transform` panics, before building its future, on item 3.
struct PanicsOnThree {
    output: String,
}

impl Transform for PanicsOnThree {
    fn transform<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, TransformResult> {
        let item: serde_json::Value = message.json().unwrap();
        assert_ne!(item["id"], 3, "item 3 breaks the transform");
        let record = Record::to(&self.output)
            .key(item["id"].to_string())
            .text("copied");
        Box::pin(async move { Ok(vec![record]) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_that_panics_before_its_future_exists_dead_letters_only_its_record() {
    // Given 10 items and a transform that panics on item 3 before it builds its future (the
    // panic is outside the future the pipeline guards).
    let input = testkit::topic("eos-sync-panic", 1).await;
    let output = testkit::topic("eos-sync-panic-out", 1).await;
    testkit::populate(&input, 10, 10).await;
    let kafka = testkit::kafka();
    let producer = kafka
        .transactional_producer(testkit::unique("eos-sync-panic"))
        .await
        .unwrap();
    let group = testkit::unique("eos-sync-panic");
    let mut pipeline = kafka.exactly_once(&group, producer).unwrap();
    pipeline.route_with(
        &input,
        PanicsOnThree {
            output: output.clone(),
        },
    );

    // When it runs until every offset is committed.
    run_to_end(pipeline, &group, &input).await;

    // Then item 3 is dead-lettered as a panic and every other item has its output once.
    let outputs = outputs_per_id(&output).await;
    let expected: BTreeMap<u64, usize> = (0..10).filter(|id| *id != 3).map(|id| (id, 1)).collect();
    assert_eq!(outputs, expected);
    let copies = read_committed(&format!("{input}.dlq")).await;
    assert_eq!(copies.len(), 1);
    let header = |name| String::from_utf8(copies[0].header_value(name).unwrap().to_vec()).unwrap();
    assert_eq!(header(ORIGINAL_OFFSET), "3");
    assert_eq!(header(ERROR_KIND), "panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_too_large_for_its_topic_stops_the_pipeline_with_the_error() {
    // Given 20 items on 1 partition, and a pipeline whose output for item 7 is larger than the
    // output topic accepts (max.message.bytes 2,000), in transactions of at most 5 items.
    let input = testkit::topic("eos-too-large", 1).await;
    let output = testkit::unique("eos-too-large-out");
    let kafka = testkit::kafka();
    kafka
        .admin()
        .unwrap()
        .ensure_topics(&[kafkit::TopicSpec::new(&output, 1).config("max.message.bytes", "2000")])
        .await
        .unwrap();
    testkit::populate(&input, 20, 20).await;
    let group = testkit::unique("eos-too-large");
    let producer = kafka
        .transactional_producer(testkit::unique("eos-too-large"))
        .await
        .unwrap();
    let options = kafkit::consumer::exactly_once::ExactlyOnceOptions {
        max_records: 5,
        retry_pause: Duration::from_millis(100),
        ..Default::default()
    };
    let mut pipeline = kafka
        .exactly_once(&group, producer)
        .unwrap()
        .with_options(options);
    let out = output.clone();
    pipeline.route(&input, move |item: Message<Item>| {
        let output = out.clone();
        async move {
            let size = if item.value.id == 7 { 10_000 } else { 10 };
            Ok(vec![
                Record::to(&output)
                    .key(item.value.id.to_string())
                    .text("x".repeat(size)),
            ])
        }
    });
    let pipeline = Arc::new(pipeline);
    let run = tokio::spawn({
        let pipeline = pipeline.clone();
        async move { pipeline.run(std::future::pending()).await }
    });

    // Then the run stops with the error instead of aborting and retrying the batch forever,
    // its health says why, and no offset moves past the batch that cannot be written.
    let outcome = tokio::time::timeout(WAIT, run)
        .await
        .expect("the pipeline stops")
        .unwrap();
    let error = outcome.expect_err("an output that can never be written is an error");
    assert_eq!(error.code(), ErrorCode::MessageTooLarge, "{error}");
    let health = pipeline.health();
    assert!(!health.healthy, "{health:?}");
    assert!(
        health.problems.iter().any(|p| p.contains("too large")),
        "{health:?}"
    );
    let committed = testkit::committed(&group, &input).await;
    assert!(
        committed
            .iter()
            .all(|(_, offset, _)| offset.unwrap_or(0) <= 7),
        "offsets moved past item 7's batch: {committed:?}"
    );
    // And a read-committed reader sees the outputs of the committed items only, once each.
    let outputs = outputs_per_id(&output).await;
    let written: Vec<u64> = outputs.keys().copied().collect();
    let expected: Vec<u64> = (0..committed[0].1.unwrap_or(0) as u64).collect();
    assert_eq!(written, expected);
    assert!(outputs.values().all(|n| *n == 1), "{outputs:?}");
}
