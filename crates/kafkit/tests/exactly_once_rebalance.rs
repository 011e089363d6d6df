//! The exactly-once pipeline ([`kafkit::ExactlyOnce`]) when its partition is revoked and
//! assigned back while a batch is open (issue 20 item 11), with two members of one group on
//! the real test broker (dynamic membership, librdkafka's range assignor). Its own test binary:
//! it installs the process's tracing subscriber, through which it learns when a member was
//! assigned and when a batch was read again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkit::consumer::exactly_once::ExactlyOnceOptions;
use kafkit::{
    ExactlyOnce, Kafka, Message, Record, config::Isolation, reader::Limits, reader::Start,
};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, filter::LevelFilter};

const WAIT: Duration = Duration::from_secs(180);

/// Partitions assigned per "partitions assigned" event, in order (both members).
static ASSIGNED: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// Records per "partitions revoked while a batch was read" event: batches read again.
static READ_AGAIN: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Notes kafkit's rebalance events in [`ASSIGNED`] and [`READ_AGAIN`].
struct Rebalances;

impl<S: tracing::Subscriber> Layer<S> for Rebalances {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            message: String,
            count: Option<u64>,
        }
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.message = format!("{value:?}");
                }
            }
            fn record_u64(&mut self, field: &Field, value: u64) {
                if field.name() == "partitions" || field.name() == "records" {
                    self.count = Some(value);
                }
            }
            fn record_i64(&mut self, field: &Field, value: i64) {
                self.record_u64(field, u64::try_from(value).unwrap_or(0));
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (Some(count), message) = (fields.count, fields.message.as_str()) else {
            return;
        };
        if message == "partitions assigned" {
            ASSIGNED.lock().unwrap().push(count);
        } else if message.starts_with("partitions revoked while a batch was") {
            READ_AGAIN.lock().unwrap().push(count);
        }
    }
}

fn install_subscriber() {
    tracing_subscriber::registry()
        .with(Rebalances)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .with_filter(
                    EnvFilter::builder()
                        .with_default_directive(LevelFilter::INFO.into())
                        .from_env_lossy(),
                ),
        )
        .init();
}

/// Input offsets each member transformed, in order, by member name.
type Transformed = Arc<Mutex<Vec<(&'static str, i64)>>>;

/// A member of `group` named `name` (also its client id, which orders it among the members
/// for the range assignor) copying `input` to `output`: each output is keyed by its input's
/// offset and says which member wrote it; each transform is noted in `transformed`.
async fn member(
    name: &'static str,
    group: &str,
    [input, output]: [&str; 2],
    options: ExactlyOnceOptions,
    transformed: &Transformed,
) -> Arc<ExactlyOnce> {
    let mut config = testkit::config();
    config.client_id = name.to_owned();
    let kafka = Kafka::connect(&config).unwrap();
    let producer = kafka
        .transactional_producer(&testkit::unique(name))
        .await
        .unwrap();
    let mut pipeline = kafka
        .exactly_once(group, producer)
        .unwrap()
        .with_options(options);
    let output = output.to_owned();
    let transformed = transformed.clone();
    pipeline.route(input, move |record: Message<serde_json::Value>| {
        transformed.lock().unwrap().push((name, record.offset));
        let output = Record::to(&output)
            .key(record.offset.to_string())
            .text(name);
        async move { Ok(vec![output]) }
    });
    Arc::new(pipeline)
}

fn start(
    pipeline: &Arc<ExactlyOnce>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<kafkit::Result<()>>,
) {
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (pipeline, stop) = (pipeline.clone(), stop.clone());
        async move { pipeline.run(stop.cancelled_owned()).await }
    });
    (stop, run)
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

/// Waits until `group` committed offset `offset` of `input`'s only partition.
async fn committed_to(group: &str, input: &str, offset: i64) {
    let done = async {
        while testkit::committed(group, input).await[0].1 != Some(offset) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(WAIT, done)
        .await
        .unwrap_or_else(|_| panic!("{group} did not commit offset {offset} of {input} in time"));
}

/// Member A has read records 0..9 into a batch and waits for more when member B joins and
/// takes the partition; B transforms 0..9, commits offset 10 and leaves; A gets the
/// partition back and reads 10..14 into the same batch, which is then read again. A must
/// resume from B's commit (10), not from its batch's first record (0): otherwise it writes
/// 0..9 a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_assigned_back_during_a_batch_resumes_from_what_another_member_committed() {
    install_subscriber();
    let input = testkit::topic("eos-rebalance-in", 1).await;
    let output = testkit::topic("eos-rebalance-out", 1).await;
    let group = testkit::unique("eos-rebalance");
    let transformed = Transformed::default();
    testkit::populate(&input, 10, 1).await;

    // A: a batch stays open until it holds 15 records (or a minute passed), so that the
    // rebalances below happen while it is read. B: batches as usual. B's client id sorts
    // before A's, so the range assignor gives B the only partition while both are members.
    let batch_open = ExactlyOnceOptions {
        max_records: 15,
        max_wait: Duration::from_secs(60),
        ..ExactlyOnceOptions::default()
    };
    let topics = [input.as_str(), output.as_str()];
    let a = member("eos-z-member-a", &group, topics, batch_open, &transformed).await;
    let b = member(
        "eos-a-member-b",
        &group,
        topics,
        ExactlyOnceOptions::default(),
        &transformed,
    )
    .await;

    // A joins alone, is assigned the partition, and reads 0..9 into its batch.
    let (stop_a, run_a) = start(&a);
    assert!(
        testkit::eventually(WAIT, || ASSIGNED.lock().unwrap().contains(&1)).await,
        "A was never assigned the partition"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // B joins: A's partition is revoked while its batch is open, and B gets it. B
    // transforms 0..9 and commits offset 10, then leaves, which gives the partition back
    // to A, whose batch is still open.
    let (stop_b, run_b) = start(&b);
    committed_to(&group, &input, 10).await;
    stop_b.cancel();
    run_b.await.unwrap().unwrap();
    let by_b: Vec<i64> = transformed.lock().unwrap().iter().map(|t| t.1).collect();
    assert_eq!(
        by_b,
        (0..10).collect::<Vec<_>>(),
        "B transformed 0..9 and A nothing yet"
    );

    // A's new fetch starts at B's commit: 10..14 fill its batch, which is read again as
    // it was read across a revocation.
    testkit::populate(&input, 5, 1).await;
    assert!(
        testkit::eventually(WAIT, || !READ_AGAIN.lock().unwrap().is_empty()).await,
        "A's batch was not read again"
    );
    assert_eq!(
        *READ_AGAIN.lock().unwrap(),
        [15],
        "A's batch held 0..9 of its first assignment and 10..14 of its second"
    );
    // Ten more, so that A's next batch fills as soon as it begins at 10 (15..24).
    testkit::populate(&input, 10, 1).await;
    committed_to(&group, &input, 25).await;
    stop_a.cancel();
    run_a.await.unwrap().unwrap();

    // Every input has exactly one output for a read-committed reader: 0..9 written by B,
    // 10..24 by A.
    let mut outputs: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for message in read_committed(&output).await {
        let offset: i64 = message.key_str().unwrap().parse().unwrap();
        let writer = String::from_utf8(message.value.clone().unwrap_or_default()).unwrap();
        outputs.entry(offset).or_default().push(writer);
    }
    let twice: BTreeMap<_, _> = outputs.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(twice.is_empty(), "outputs written twice: {twice:?}");
    assert_eq!(
        outputs.keys().copied().collect::<Vec<_>>(),
        (0..25).collect::<Vec<_>>(),
        "inputs with an output (the others were skipped)"
    );
    assert!(outputs.iter().all(|(offset, writers)| writers[0]
        == if *offset < 10 {
            "eos-a-member-b"
        } else {
            "eos-z-member-a"
        }));
    // A never transformed what B had committed.
    let by_a: Vec<i64> = transformed
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.0 == "eos-z-member-a")
        .map(|t| t.1)
        .collect();
    assert_eq!(by_a, (10..25).collect::<Vec<_>>(), "A transformed {by_a:?}");
}
