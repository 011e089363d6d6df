//! `kafkit bench produce`: the library's batch send next to raw rdkafka `BaseProducer`, on the
//! same broker, in the same run, with the same librdkafka settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kafkit::rdkafka::ClientContext;
use kafkit::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use kafkit::rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext,
};
use kafkit::{Admin, Cluster, KafkaConfig, Producer, Record, TopicSpec};

use crate::cli::{BenchArgs, BenchTarget};

/// Records per `send_batch` call, and how many calls are in flight at once.
const BATCH: usize = 10_000;
const BATCHES_IN_FLIGHT: usize = 8;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.what == BenchTarget::Consume {
        return super::bench_consume::run(args).await;
    }
    let config = super::config(&args.connection)?;
    let (cluster, config) = Cluster::connect(&config)?;
    let admin = Admin::new(&config)?.on(&cluster);
    let broker_kind = if cluster.embedded().is_some() {
        "embedded"
    } else {
        "remote"
    };
    println!(
        "# produce {} records of {} bytes, {} partitions, {broker_kind} broker {}",
        args.records,
        args.size,
        args.partitions,
        cluster.bootstrap_servers()
    );
    println!(
        "{} rounds, interleaved; the median round of each client is shown",
        ROUNDS
    );
    println!("| client | records/s | MB/s | seconds | failed |");
    println!("|---|---:|---:|---:|---:|");
    let payload = vec![b'x'; args.size];
    let mut raw = Vec::new();
    let mut lib = Vec::new();
    let mut lib_headers = Vec::new();
    for round in 0..ROUNDS {
        let topic = fresh_topic(&admin, &format!("bench-raw-{round}"), args.partitions).await?;
        raw.push(raw_rdkafka(&config, &topic, &payload, args.records).await?);
        let topic = fresh_topic(&admin, &format!("bench-lib-{round}"), args.partitions).await?;
        let producer = Producer::builder(&config).standard_headers(false).build()?;
        lib.push(library(&producer, &topic, &payload, args.records).await?);
        let topic = fresh_topic(&admin, &format!("bench-hdr-{round}"), args.partitions).await?;
        let producer = Producer::new(&config)?;
        lib_headers.push(library(&producer, &topic, &payload, args.records).await?);
    }
    let (raw, lib, lib_headers) = (median(raw), median(lib), median(lib_headers));
    report("raw rdkafka BaseProducer", &raw, args.size);
    report("kafkit send_batch", &lib, args.size);
    report(
        "kafkit send_batch + standard headers",
        &lib_headers,
        args.size,
    );
    println!(
        "\nkafkit send_batch reaches {:.0}% of raw rdkafka ({:.0}% with standard headers)",
        100.0 * lib.rate() / raw.rate(),
        100.0 * lib_headers.rate() / raw.rate()
    );
    Ok(())
}

/// Rounds per client; each client's median round is reported.
const ROUNDS: usize = 3;

fn median(mut outcomes: Vec<Outcome>) -> Outcome {
    outcomes.sort_by_key(|o| o.elapsed);
    outcomes.swap_remove(outcomes.len() / 2)
}

pub(super) struct Outcome {
    pub records: usize,
    pub failed: usize,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

pub(super) fn report(name: &str, outcome: &Outcome, size: usize) {
    println!(
        "| {name} | {:.0} | {:.1} | {:.2} | {} |",
        outcome.rate(),
        outcome.rate() * size as f64 / 1e6,
        outcome.elapsed.as_secs_f64(),
        outcome.failed
    );
}

pub(super) async fn fresh_topic(
    admin: &Admin,
    prefix: &str,
    partitions: i32,
) -> anyhow::Result<String> {
    let name = format!("{prefix}-{}", std::process::id());
    admin
        .ensure_topics(&[TopicSpec::new(&name, partitions)])
        .await?;
    Ok(name)
}

async fn library(
    producer: &Producer,
    topic: &str,
    payload: &[u8],
    records: usize,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let batches = (0..records).step_by(BATCH).map(|start| {
        let end = (start + BATCH).min(records);
        let batch: Vec<Record> = (start..end)
            .map(|_| Record::to(topic).payload(payload.to_vec()))
            .collect();
        producer.send_batch(batch)
    });
    let failed: usize = futures::stream::iter(batches)
        .buffer_unordered(BATCHES_IN_FLIGHT)
        .map(|results| results.iter().filter(|r| r.is_err()).count())
        .fold(0, |a, b| async move { a + b })
        .await;
    producer.shutdown().await?;
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

async fn raw_rdkafka(
    config: &KafkaConfig,
    topic: &str,
    payload: &[u8],
    records: usize,
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
