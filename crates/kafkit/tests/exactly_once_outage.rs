//! The exactly-once pipeline ([`kafkit::ExactlyOnce`]) when its broker stops answering in the
//! middle of a transaction commit, on a broker of the test's own that it freezes (SIGSTOP).
//! Its own test binary: it installs the process's tracing subscriber, through which it pauses
//! the broker at the very moment a commit starts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkit::{
    Kafka, Message, Record, TopicSpec, config::Isolation,
    consumer::exactly_once::ExactlyOnceOptions, reader::Limits, reader::Start,
};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, filter::LevelFilter};

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
                .with_filter(LevelFilter::INFO),
        )
        .init();
}

/// Everything `topic` holds for a read-committed reader, up to the end as of now.
async fn read_committed(kafka: &Kafka, topic: &str) -> Vec<Message> {
    let reader = kafka.reader().unwrap().isolation(Isolation::ReadCommitted);
    let mut reading = reader.open(topic, None, Start::Beginning).await.unwrap();
    let messages = reading
        .collect(&Limits::to_end(usize::MAX).timeout(WAIT))
        .await
        .unwrap();
    assert!(reading.at_end(), "{topic}: the end was not reached in time");
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_broker_does_not_answer_is_resumed_and_the_pipeline_goes_on() {
    install_subscriber();
    // Given a broker of our own, 600 items on 2 partitions, and a pipeline copying them in
    // transactions of at most 50 input records, with 5 s request and transaction timeouts.
    let broker = Arc::new(testkit::OwnBroker::start());
    let mut config = broker.config();
    config.request_timeout = Duration::from_secs(5);
    config.transaction_timeout = Duration::from_secs(5);
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
    pipeline.route(&input, move |item: Message<serde_json::Value>| {
        let output = out.clone();
        async move {
            let id = item.value["id"].as_u64().unwrap();
            Ok(vec![Record::to(&output).key(id.to_string()).text("copied")])
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

    // Then the pipeline goes on to the end of its input: every offset is committed.
    let admin = kafka.admin().unwrap();
    let done = async {
        loop {
            let lag = admin.group_lag(&group, &[input.as_str()]).await;
            if let Ok(lag) = lag
                && lag.len() == 2
                && lag.iter().all(|p| p.committed == Some(p.high_watermark))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
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

    // And a read-committed reader sees every item's output exactly once.
    let mut outputs: BTreeMap<u64, usize> = BTreeMap::new();
    for message in read_committed(&kafka, &output).await {
        *outputs
            .entry(message.key_str().unwrap().parse().unwrap())
            .or_insert(0) += 1;
    }
    let expected: BTreeMap<u64, usize> = (0..600).map(|id| (id, 1)).collect();
    assert_eq!(outputs, expected, "not exactly once");
}
