//! `kafkit-bench produce`: the library's batch send next to raw rdkafka `BaseProducer`, on the
//! same broker, in the same run, with the same librdkafka settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kafkit::rdkafka::ClientContext;
use kafkit::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use kafkit::rdkafka::message::{Header, OwnedHeaders};
use kafkit::rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext,
};
use kafkit::{KafkaConfig, Producer, Record};

use crate::BenchArgs;
use crate::outcome::{Outcome, ROUNDS, median};

/// Records per `send_batch` call, and how many calls are in flight at once.
const BATCH: usize = 10_000;
const BATCHES_IN_FLIGHT: usize = 8;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (kafka, admin) = args.connect()?;
    let broker_kind = if kafka.cluster().embedded().is_some() {
        "embedded"
    } else {
        "remote"
    };
    println!(
        "# produce {} records of {} bytes, {} partitions, {broker_kind} broker {}",
        args.records,
        args.size,
        args.partitions,
        kafka.cluster().bootstrap_servers()
    );
    println!("{ROUNDS} rounds, interleaved; the median round of each client is shown");
    println!("| client | records/s | MB/s | seconds | failed |");
    println!("|---|---:|---:|---:|---:|");
    let payload = vec![b'x'; args.size];
    let mut raw = Vec::new();
    let mut raw_headers = Vec::new();
    let mut lib = Vec::new();
    let mut lib_headers = Vec::new();
    for round in 0..ROUNDS {
        let topic = args
            .fresh_topic(&admin, &format!("bench-raw-{round}"))
            .await?;
        raw.push(raw_rdkafka(kafka.config(), &topic, &payload, args.records, false).await?);
        let topic = args
            .fresh_topic(&admin, &format!("bench-rawhdr-{round}"))
            .await?;
        raw_headers.push(raw_rdkafka(kafka.config(), &topic, &payload, args.records, true).await?);
        let topic = args
            .fresh_topic(&admin, &format!("bench-lib-{round}"))
            .await?;
        let producer = kafka.producer_builder().standard_headers(false).build()?;
        lib.push(library(&producer, &topic, &payload, args.records).await?);
        let topic = args
            .fresh_topic(&admin, &format!("bench-hdr-{round}"))
            .await?;
        let producer = kafka.producer()?;
        lib_headers.push(library(&producer, &topic, &payload, args.records).await?);
    }
    let [raw, raw_headers, lib, lib_headers] =
        [raw, raw_headers, lib, lib_headers].map(|rounds| median(rounds, |outcome| outcome));
    for (name, outcome) in [
        ("raw rdkafka BaseProducer", &raw),
        (
            "raw rdkafka BaseProducer + the same two headers",
            &raw_headers,
        ),
        ("kafkit send_batch", &lib),
        ("kafkit send_batch + standard headers", &lib_headers),
    ] {
        println!("{} {} |", outcome.row(name, args.size), outcome.failed);
    }
    println!(
        "\nkafkit send_batch reaches {:.0}% of raw rdkafka; with standard headers {:.0}% of raw \
         rdkafka sending the same headers (the headers themselves cost raw rdkafka {:.0}%)",
        lib.percent_of(&raw),
        lib_headers.percent_of(&raw_headers),
        100.0 - raw_headers.percent_of(&raw)
    );
    Ok(())
}

/// Sends `records` records, the `i`th made by `record(i)`, through `producer`: [`BATCH`] per
/// `send_batch` call, [`BATCHES_IN_FLIGHT`] calls at once. Then shuts the producer down, so
/// everything is delivered, and answers how many records failed.
pub async fn send_batches(
    producer: &Producer,
    records: usize,
    record: impl Fn(usize) -> Record,
) -> anyhow::Result<usize> {
    let batches = (0..records).step_by(BATCH).map(|start| {
        let end = (start + BATCH).min(records);
        producer.send_batch((start..end).map(&record).collect::<Vec<_>>())
    });
    let failed: usize = futures::stream::iter(batches)
        .buffer_unordered(BATCHES_IN_FLIGHT)
        .map(|results| results.iter().filter(|r| r.is_err()).count())
        .fold(0, |a, b| async move { a + b })
        .await;
    producer.shutdown().await?;
    Ok(failed)
}

/// kafkit's `send_batch`, until every record is delivered.
async fn library(
    producer: &Producer,
    topic: &str,
    payload: &[u8],
    records: usize,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let failed = send_batches(producer, records, |_| {
        Record::to(topic).payload(payload.to_vec())
    })
    .await?;
    Ok(Outcome {
        records,
        failed,
        elapsed: started.elapsed(),
    })
}

/// Counts deliveries, as a raw rdkafka application would.
#[derive(Default)]
struct Counter {
    done: AtomicUsize,
    failed: AtomicUsize,
}

impl ClientContext for Counter {}

impl ProducerContext for Counter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A raw rdkafka `BaseProducer` loop (`send` + `poll(0)`, retry on queue full), until every
/// record is delivered. With `headers`, each record carries what kafkit's standard headers
/// add, written as a hand-made producer would: a fresh `correlation-id` UUID and the
/// `timestamp` of sending.
async fn raw_rdkafka(
    config: &KafkaConfig,
    topic: &str,
    payload: &[u8],
    records: usize,
    headers: bool,
) -> anyhow::Result<Outcome> {
    let producer: Arc<BaseProducer<Counter>> = Arc::new(
        config
            .to_producer_config()
            .create_with_context(Counter::default())?,
    );
    let topic = topic.to_owned();
    let payload = payload.to_vec();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        for _ in 0..records {
            let mut record: BaseRecord<'_, (), [u8]> = BaseRecord::to(&topic).payload(&payload);
            if headers {
                let mut id = uuid::Uuid::encode_buffer();
                let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
                    .to_string();
                record = record.headers(
                    OwnedHeaders::new_with_capacity(2)
                        .insert(Header {
                            key: "correlation-id",
                            value: Some(id.as_bytes()),
                        })
                        .insert(Header {
                            key: "timestamp",
                            value: Some(now.as_bytes()),
                        }),
                );
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((error, _)) => return Err(anyhow::Error::from(error)),
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(120))?;
        let context = producer.context();
        anyhow::ensure!(
            context.done.load(Ordering::Relaxed) == records,
            "lost deliveries"
        );
        Ok(Outcome {
            records,
            failed: context.failed.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        })
    })
    .await?
}
