//! `kafkit bench consume`: the consumer runtime (typed no-op handler, at-least-once, commits on)
//! next to a raw rdkafka consumer loop doing the same work (decode JSON, store offset,
//! auto-commit), on the same topic, in the same run. Peak RSS is reported per phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kafkit::rdkafka::Message as _;
use kafkit::rdkafka::consumer::{BaseConsumer, Consumer as _};
use kafkit::{Admin, Cluster, Consumer, Message, Producer, Record, Router};

use super::bench::{Outcome, fresh_topic};
use crate::cli::BenchArgs;

#[derive(serde::Deserialize)]
struct Event {
    #[allow(dead_code)]
    id: u64,
    #[allow(dead_code)]
    body: String,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let config = super::config(&args.connection)?;
    let (cluster, config) = Cluster::connect(&config)?;
    let admin = Admin::new(&config)?.on(&cluster);
    let topic = fresh_topic(&admin, "bench-consume", args.partitions).await?;
    populate(&config, &topic, args.records, args.size).await?;
    println!(
        "# consume {} JSON records of ~{} bytes, topic {topic} ({} partitions), broker {}",
        args.records,
        args.size,
        args.partitions,
        cluster.bootstrap_servers()
    );
    println!(
        "{ROUNDS} rounds, interleaved, each from the beginning with a fresh group; the median round is shown"
    );
    println!("| client | records/s | MB/s | seconds | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    let mut raw = Vec::new();
    let mut stream = Vec::new();
    let mut lib = Vec::new();
    for round in 0..ROUNDS {
        reset_peak_rss();
        let outcome = raw_loop(&config, &topic, args.records, round).await?;
        raw.push((outcome, peak_rss_mib()));
        reset_peak_rss();
        let outcome = stream_loop(&config, &topic, args.records, round).await?;
        stream.push((outcome, peak_rss_mib()));
        reset_peak_rss();
        let outcome = runtime(&config, &cluster, &topic, args.records, round).await?;
        lib.push((outcome, peak_rss_mib()));
    }
    let (raw, raw_rss) = median(raw);
    let (stream, stream_rss) = median(stream);
    let (lib, lib_rss) = median(lib);
    let blocking = row(
        "raw rdkafka BaseConsumer loop (blocking thread)",
        &raw,
        args.size,
    );
    println!("{blocking} {raw_rss:.0} |");
    let asynchronous = row(
        "raw rdkafka StreamConsumer loop (async)",
        &stream,
        args.size,
    );
    println!("{asynchronous} {stream_rss:.0} |");
    println!(
        "{} {lib_rss:.0} |",
        row("kafkit Consumer runtime", &lib, args.size)
    );
    println!(
        "\nkafkit Consumer reaches {:.0}% of the blocking raw loop, {:.0}% of the async one",
        100.0 * lib.rate() / raw.rate(),
        100.0 * lib.rate() / stream.rate()
    );
    Ok(())
}

/// Rounds per client.
const ROUNDS: usize = 3;

fn median(mut outcomes: Vec<(Outcome, f64)>) -> (Outcome, f64) {
    outcomes.sort_by_key(|(o, _)| o.elapsed);
    outcomes.swap_remove(outcomes.len() / 2)
}

fn row(name: &str, outcome: &Outcome, size: usize) -> String {
    format!(
        "| {name} | {:.0} | {:.1} | {:.2} |",
        outcome.rate(),
        outcome.rate() * size as f64 / 1e6,
        outcome.elapsed.as_secs_f64()
    )
}

async fn populate(
    config: &kafkit::KafkaConfig,
    topic: &str,
    records: usize,
    size: usize,
) -> anyhow::Result<()> {
    let producer = Producer::builder(config).standard_headers(false).build()?;
    let body = "x".repeat(size.saturating_sub(30));
    let batches = (0..records).step_by(10_000).map(|start| {
        let batch: Vec<Record> = (start..(start + 10_000).min(records))
            .map(|id| {
                Record::to(topic)
                    .json(&serde_json::json!({"id": id, "body": body}))
                    .expect("encodable")
            })
            .collect();
        producer.send_batch(batch)
    });
    let failed: usize = futures::stream::iter(batches)
        .buffer_unordered(8)
        .map(|r| r.iter().filter(|r| r.is_err()).count())
        .fold(0, |a, b| async move { a + b })
        .await;
    producer.shutdown().await?;
    anyhow::ensure!(failed == 0, "{failed} records failed to populate the topic");
    Ok(())
}

async fn raw_loop(
    config: &kafkit::KafkaConfig,
    topic: &str,
    records: usize,
    round: usize,
) -> anyhow::Result<Outcome> {
    let group = format!("bench-raw-{}-{round}", std::process::id());
    let consumer: BaseConsumer = config.to_consumer_config(&group).create()?;
    consumer.subscribe(&[topic])?;
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut seen = 0;
        while seen < records {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let payload = message.payload().unwrap_or_default();
                    let _: Event = serde_json::from_slice(payload)?;
                    consumer.store_offset_from_message(&message)?;
                    seen += 1;
                }
                Some(Err(error)) => return Err(anyhow::Error::from(error)),
                None => {}
            }
        }
        let elapsed = started.elapsed();
        consumer.commit_consumer_state(kafkit::rdkafka::consumer::CommitMode::Sync)?;
        Ok(Outcome {
            records,
            failed: 0,
            elapsed,
        })
    })
    .await?
}

/// What a tokio service writes by hand: a `StreamConsumer` loop doing the same work.
async fn stream_loop(
    config: &kafkit::KafkaConfig,
    topic: &str,
    records: usize,
    round: usize,
) -> anyhow::Result<Outcome> {
    let group = format!("bench-stream-{}-{round}", std::process::id());
    let consumer: kafkit::rdkafka::consumer::StreamConsumer =
        config.to_consumer_config(&group).create()?;
    consumer.subscribe(&[topic])?;
    let started = Instant::now();
    let mut stream = consumer.stream();
    let mut seen = 0;
    while seen < records {
        let Some(message) = stream.next().await else {
            break;
        };
        let message = message?;
        let _: Event = serde_json::from_slice(message.payload().unwrap_or_default())?;
        consumer.store_offset_from_message(&message)?;
        seen += 1;
    }
    let elapsed = started.elapsed();
    drop(stream);
    tokio::task::spawn_blocking(move || {
        consumer.commit_consumer_state(kafkit::rdkafka::consumer::CommitMode::Sync)
    })
    .await??;
    Ok(Outcome {
        records: seen,
        failed: 0,
        elapsed,
    })
}

async fn runtime(
    config: &kafkit::KafkaConfig,
    cluster: &Cluster,
    topic: &str,
    records: usize,
    round: usize,
) -> anyhow::Result<Outcome> {
    let seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let mut router = Router::new();
    let (count, finished) = (seen.clone(), done.clone());
    router
        .register(topic, move |_event: Message<Event>| {
            let (count, finished) = (count.clone(), finished.clone());
            async move {
                if count.fetch_add(1, Ordering::Relaxed) + 1 == records {
                    finished.notify_one();
                }
                Ok(())
            }
        })
        .no_dead_letter();
    let group = format!("bench-kafkit-{}-{round}", std::process::id());
    let consumer = Consumer::new(config, &group, router)?.on(cluster);
    let started = Instant::now();
    let waiter = done.clone();
    let mut elapsed = Duration::ZERO;
    consumer
        .run(async {
            waiter.notified().await;
            elapsed = started.elapsed();
        })
        .await?;
    Ok(Outcome {
        records: seen.load(Ordering::Relaxed),
        failed: 0,
        elapsed,
    })
}

/// Resets the kernel's peak-RSS counter of this process (Linux `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size since the last reset, in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
