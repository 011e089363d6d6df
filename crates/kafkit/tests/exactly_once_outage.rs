//! The exactly-once pipeline ([`kafkit::ExactlyOnce`]) when its broker stops answering in the
//! middle of a transaction commit, on a broker of the test's own that it freezes (SIGSTOP).
//! Its own test binary: it installs the process's tracing subscriber, through which it pauses
//! the broker at the very moment a commit starts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkit::{
    Admin, Kafka, Message, Record, TopicSpec, config::Isolation,
    consumer::exactly_once::ExactlyOnceOptions, reader::Limits, reader::Start,
};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, filter::LevelFilter};

const WAIT: Duration = Duration::from_secs(240);
/// The commit (counted from 1) during which the broker is paused.
const PAUSE_AT: usize = 3;
/// How long it stays paused: longer than kafkit used to try a commit (3 calls of the
/// 5 s transaction timeout), shorter than the consumer's session timeout (30 s).
const PAUSE: Duration = Duration::from_secs(20);

/// The broker the hook pauses, while a test runs.
static BROKER: Mutex<Option<Arc<testkit::OwnBroker>>> = Mutex::new(None);
/// Commits started so far.
static COMMITS: AtomicUsize = AtomicUsize::new(0);
/// Whether the broker was paused and then resumed.
static RESUMED: AtomicBool = AtomicBool::new(false);

/// Pauses the broker when the `PAUSE_AT`th commit starts (kafkit's debug event "committing
/// the transaction", written just before librdkafka's `commit_transaction`), and resumes it
/// `PAUSE` later.
struct PauseAtCommit;

impl<S: tracing::Subscriber> Layer<S> for PauseAtCommit {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct IsCommit(bool);
        impl Visit for IsCommit {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 |= format!("{value:?}") == "committing the transaction";
                }
            }
        }
        let mut visitor = IsCommit(false);
        event.record(&mut visitor);
        if !visitor.0 || COMMITS.fetch_add(1, Ordering::SeqCst) + 1 != PAUSE_AT {
            return;
        }
        let Some(broker) = BROKER.lock().unwrap().clone() else {
            return;
        };
        eprintln!("pausing the broker as commit {PAUSE_AT} starts");
        broker.pause();
        std::thread::spawn(move || {
            std::thread::sleep(PAUSE);
            eprintln!("resuming the broker");
            broker.resume();
            RESUMED.store(true, Ordering::SeqCst);
        });
    }
}

/// Hands the broker to the hook; takes it back when dropped (a failed test too), so that the
/// broker is stopped when the test ends.
struct Hooked;

impl Hooked {
    fn new(broker: &Arc<testkit::OwnBroker>) -> Self {
        *BROKER.lock().unwrap() = Some(broker.clone());
        Hooked
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        BROKER.lock().unwrap().take();
    }
}

fn install_subscriber() {
    tracing_subscriber::registry()
        .with(PauseAtCommit)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stderr)
                // RUST_LOG=kafkit=debug shows every transaction call when it fails.
                .with_filter(
                    EnvFilter::builder()
                        .with_default_directive(LevelFilter::INFO.into())
                        .from_env_lossy(),
                ),
        )
        .init();
}

/// Everything `topic` holds for a read-committed reader, up to the end as of now; `None` when
/// the end is not reached within `timeout` (a transaction open on a paused broker holds it).
async fn read_committed(kafka: &Kafka, topic: &str, timeout: Duration) -> Option<Vec<Message>> {
    let reader = kafka.reader().unwrap().isolation(Isolation::ReadCommitted);
    let mut reading = reader.open(topic, None, Start::Beginning).await.ok()?;
    let messages = reading
        .collect(&Limits::to_end(usize::MAX).timeout(timeout))
        .await
        .ok()?;
    reading.at_end().then_some(messages)
}

/// Input position (partition, offset) → how many outputs a read-committed reader sees for it.
type Outputs = BTreeMap<(i32, i64), usize>;

/// The outputs of `output` by the input position they carry; `None` as [`read_committed`].
async fn outputs(kafka: &Kafka, output: &str, timeout: Duration) -> Option<Outputs> {
    let mut found = Outputs::new();
    for message in read_committed(kafka, output, timeout).await? {
        let source: serde_json::Value = message.json().unwrap();
        let at = (
            i32::try_from(source["partition"].as_i64().unwrap()).unwrap(),
            source["offset"].as_i64().unwrap(),
        );
        *found.entry(at).or_insert(0) += 1;
    }
    Some(found)
}

/// The group's committed offset per input partition (0 where it never committed).
async fn committed(admin: &Admin, group: &str, input: &str) -> Option<BTreeMap<i32, i64>> {
    let lag = admin.group_lag(group, &[input]).await.ok()?;
    Some(
        lag.iter()
            .map(|p| (p.partition, p.committed.unwrap_or(0)))
            .collect(),
    )
}

/// Outputs and offsets move together: with `before` the committed offsets read before
/// `outputs` and `after` those read after, every input below `before` has exactly one
/// output, and none at or above `after` has any. An output twice fails at once; the rest is
/// `Err` (the transaction's markers reach the output partitions and the offsets at slightly
/// different moments, so the caller looks again before failing).
fn exactly_once(
    step: &str,
    before: &BTreeMap<i32, i64>,
    outputs: &Outputs,
    after: &BTreeMap<i32, i64>,
) -> Result<(), String> {
    let twice: Vec<_> = outputs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{step}: written more than once: {twice:?}"
    );
    for (partition, end) in before {
        let missing: Vec<i64> = (0..*end)
            .filter(|offset| !outputs.contains_key(&(*partition, *offset)))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{step}: partition {partition} committed to {end} without the outputs of {missing:?}"
            ));
        }
    }
    let ahead: Vec<_> = outputs
        .keys()
        .filter(|(partition, offset)| *offset >= after.get(partition).copied().unwrap_or(0))
        .collect();
    if !ahead.is_empty() {
        return Err(format!("{step}: outputs of uncommitted inputs: {ahead:?}"));
    }
    Ok(())
}

/// Checks [`exactly_once`] on the group's offsets and outputs as of now, looking again for up
/// to 10 s while it does not hold. False when the broker did not answer (paused).
async fn check(step: &str, admin: &Admin, kafka: &Kafka, names: [&str; 3]) -> bool {
    let [group, input, output] = names;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let Some(before) = committed(admin, group, input).await else {
            return false;
        };
        let Some(seen) = outputs(kafka, output, Duration::from_secs(10)).await else {
            return false;
        };
        let Some(after) = committed(admin, group, input).await else {
            return false;
        };
        match exactly_once(step, &before, &seen, &after) {
            Ok(()) => return true,
            Err(problem) if tokio::time::Instant::now() > deadline => panic!("{problem}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_broker_does_not_answer_is_resumed_and_the_pipeline_goes_on() {
    install_subscriber();
    // Given a broker of our own, 600 items on 2 partitions, and a pipeline copying them in
    // transactions of at most 50 input records, with 5 s request and transaction timeouts.
    // The pause also outlasts the broker's KRaft session (9 s): the broker is fenced for a
    // moment when it goes on, and clients that ask for metadata then learn of no broker.
    let broker = Arc::new(testkit::OwnBroker::start());
    let mut config = broker.config();
    config.request_timeout = Duration::from_secs(5);
    config.transaction_timeout = Duration::from_secs(5);
    // RDKAFKA_DEBUG=cgrp,broker (with RUST_LOG=librdkafka=debug) adds librdkafka's own account.
    if let Ok(debug) = std::env::var("RDKAFKA_DEBUG") {
        config.librdkafka.insert("debug".into(), debug);
    }
    let kafka = Kafka::connect(&config).unwrap();
    let input = testkit::unique("eos-outage");
    let output = testkit::unique("eos-outage-out");
    kafka
        .admin()
        .unwrap()
        .ensure_topics(&[TopicSpec::new(&input, 2), TopicSpec::new(&output, 2)])
        .await
        .unwrap();
    let producer = kafka.producer().unwrap();
    let records = (0..600u64).map(|id| {
        Record::to(&input)
            .key(id.to_string())
            .json(&serde_json::json!({ "id": id }))
            .unwrap()
    });
    for delivery in producer.send_batch(records).await {
        delivery.unwrap();
    }
    producer.shutdown().await.unwrap();
    let group = testkit::unique("eos-outage");
    let transactional = kafka
        .transactional_producer(testkit::unique("eos-outage"))
        .await
        .unwrap();
    let options = ExactlyOnceOptions {
        max_records: 50,
        ..ExactlyOnceOptions::default()
    };
    let mut pipeline = kafka
        .exactly_once(&group, transactional)
        .unwrap()
        .with_options(options);
    let out = output.clone();
    // Each output names the input it was made from.
    pipeline.route(&input, move |item: Message<serde_json::Value>| {
        let output = out.clone();
        async move {
            let source = serde_json::json!({ "partition": item.partition, "offset": item.offset });
            Ok(vec![
                Record::to(&output)
                    .key(item.value["id"].to_string())
                    .json(&source)?,
            ])
        }
    });
    let pipeline = Arc::new(pipeline);

    // When the broker freezes as the third commit starts, for 20 s, then goes on.
    let _hooked = Hooked::new(&broker);
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (pipeline, stop) = (pipeline.clone(), stop.clone());
        async move { pipeline.run(stop.cancelled_owned()).await }
    });

    // Then, checked every few seconds while the broker answers, a read-committed reader sees
    // exactly the outputs of the inputs whose offsets are committed; and the pipeline goes on
    // to the end of its input.
    let admin = kafka.admin().unwrap();
    let names = [group.as_str(), input.as_str(), output.as_str()];
    let mut checks = 0;
    let done = async {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            checks += 1;
            if !check(&format!("check {checks}"), &admin, &kafka, names).await {
                continue;
            }
            let offsets = committed(&admin, &group, &input).await.unwrap_or_default();
            if offsets.len() == 2 && offsets.values().sum::<i64>() == 600 {
                break;
            }
        }
    };
    let finished = tokio::time::timeout(WAIT, done).await;
    let commits = COMMITS.load(Ordering::SeqCst);
    assert!(
        finished.is_ok(),
        "the pipeline stopped making progress after the pause: {} transactions committed, \
         {commits} commits started",
        pipeline.transactions()
    );
    assert!(commits > PAUSE_AT, "the pause never hit a commit");
    assert!(
        RESUMED.load(Ordering::SeqCst),
        "the broker was never resumed"
    );
    stop.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("run ends")
        .unwrap()
        .unwrap();

    // And at the end every input has exactly one output.
    let end = committed(&admin, &group, &input).await.unwrap();
    let seen = outputs(&kafka, &output, WAIT)
        .await
        .expect("the end of the outputs");
    exactly_once("at the end", &end, &seen, &end).unwrap();
    assert_eq!(seen.len(), 600, "not every input has its output");
}
