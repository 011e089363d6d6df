//! `kafkit-bench consume`: the consumer runtime (typed no-op handler, at-least-once, commits on)
//! next to raw rdkafka consumer loops doing the same work (decode JSON, store offset,
//! auto-commit), on the same topic, in the same run. Peak RSS is reported per phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kafkit::rdkafka::Message as _;
use kafkit::rdkafka::config::FromClientConfig;
use kafkit::rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as RdConsumer, StreamConsumer};
use kafkit::rdkafka::message::Headers as _;
use kafkit::{Kafka, Message, Record, Router};

use crate::BenchArgs;
use crate::outcome::{Outcome, ROUNDS, median};
use crate::produce::send_batches;

#[derive(serde::Deserialize)]
struct Event {
    #[allow(dead_code)]
    id: u64,
    #[allow(dead_code)]
    body: String,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (kafka, admin) = args.connect()?;
    let topic = args.fresh_topic(&admin, "bench-consume").await?;
    populate(&kafka, &topic, args.records, args.size).await?;
    println!(
        "# consume {} JSON records of ~{} bytes, topic {topic} ({} partitions), broker {}",
        args.records,
        args.size,
        args.partitions,
        kafka.cluster().bootstrap_servers()
    );
    println!(
        "{ROUNDS} rounds, interleaved, each from the beginning with a fresh group; the median round is shown"
    );
    println!("| client | records/s | MB/s | seconds | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    let chosen = |client: &str| args.only.as_deref().is_none_or(|only| only == client);
    let mut raw = Vec::new();
    let mut raw_headers = Vec::new();
    let mut stream = Vec::new();
    let mut lib = Vec::new();
    for number in 0..ROUNDS {
        let round = Round {
            kafka: &kafka,
            topic: &topic,
            records: args.records,
            number,
        };
        if chosen("raw") {
            raw.push(with_peak_rss(round.raw_loop(false)).await?);
        }
        if chosen("raw-headers") {
            raw_headers.push(with_peak_rss(round.raw_loop(true)).await?);
        }
        if chosen("stream") {
            stream.push(with_peak_rss(round.stream_loop()).await?);
        }
        if chosen("kafkit") {
            lib.push(with_peak_rss(round.runtime()).await?);
        }
    }
    let [raw, raw_headers, stream, lib] = [raw, raw_headers, stream, lib]
        .map(|rounds| (!rounds.is_empty()).then(|| median(rounds, |(outcome, _)| outcome)));
    for (name, measured) in [
        ("raw rdkafka BaseConsumer loop (blocking thread)", &raw),
        (
            "raw rdkafka BaseConsumer loop, reading headers",
            &raw_headers,
        ),
        ("raw rdkafka StreamConsumer loop (async)", &stream),
        ("kafkit Consumer runtime", &lib),
    ] {
        if let Some((outcome, peak_rss)) = measured {
            println!("{} {peak_rss:.0} |", outcome.row(name, args.size));
        }
    }
    if let (Some(lib), Some(raw), Some(raw_headers), Some(stream)) =
        (&lib, &raw, &raw_headers, &stream)
    {
        println!(
            "\nkafkit Consumer reaches {:.0}% of the blocking raw loop ({:.0}% of it reading headers), {:.0}% of the async one",
            lib.0.percent_of(&raw.0),
            lib.0.percent_of(&raw_headers.0),
            lib.0.percent_of(&stream.0)
        );
    }
    Ok(())
}

/// Writes `records` JSON records of about `size` bytes to `topic`.
pub async fn populate(
    kafka: &Kafka,
    topic: &str,
    records: usize,
    size: usize,
) -> anyhow::Result<()> {
    let producer = kafka.producer_builder().standard_headers(false).build()?;
    let body = "x".repeat(size.saturating_sub(30));
    let failed = send_batches(&producer, records, |id| {
        Record::to(topic)
            .json(&serde_json::json!({"id": id, "body": body}))
            .expect("encodable")
    })
    .await?;
    anyhow::ensure!(failed == 0, "{failed} records failed to populate the topic");
    Ok(())
}

/// One round of one client: read `records` records of `topic` from the beginning, in a group
/// of its own.
struct Round<'a> {
    kafka: &'a Kafka,
    topic: &'a str,
    records: usize,
    number: usize,
}

impl Round<'_> {
    /// The group of `client` in this round: new, so it starts from the beginning.
    fn group(&self, client: &str) -> String {
        format!("bench-{client}-{}-{}", std::process::id(), self.number)
    }

    /// An rdkafka consumer in `client`'s group, subscribed to the topic.
    fn subscribed<C: FromClientConfig + RdConsumer>(&self, client: &str) -> anyhow::Result<C> {
        let consumer: C = self
            .kafka
            .config()
            .to_consumer_config(&self.group(client))
            .create()?;
        consumer.subscribe(&[self.topic])?;
        Ok(consumer)
    }

    /// What a blocking application writes by hand: a `BaseConsumer` poll loop on a thread.
    /// With `headers`, it also looks at each record's headers (as a handler given the
    /// `content-type` or a correlation id does): librdkafka parses them only when asked.
    async fn raw_loop(&self, headers: bool) -> anyhow::Result<Outcome> {
        let consumer: BaseConsumer =
            self.subscribed(if headers { "raw-headers" } else { "raw" })?;
        let records = self.records;
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut seen = 0;
            while seen < records {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        if headers {
                            let seen = message.headers().map_or(0, |h| h.iter().count());
                            std::hint::black_box(seen);
                        }
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
            consumer.commit_consumer_state(CommitMode::Sync)?;
            Ok(Outcome {
                records,
                failed: 0,
                elapsed,
            })
        })
        .await?
    }

    /// What a tokio service writes by hand: a `StreamConsumer` loop doing the same work.
    async fn stream_loop(&self) -> anyhow::Result<Outcome> {
        let consumer: StreamConsumer = self.subscribed("stream")?;
        let started = Instant::now();
        let mut stream = consumer.stream();
        let mut seen = 0;
        while seen < self.records {
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
        tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
            .await??;
        Ok(Outcome {
            records: seen,
            failed: 0,
            elapsed,
        })
    }

    /// kafkit's consumer runtime with a typed no-op handler, at-least-once, commits on.
    async fn runtime(&self) -> anyhow::Result<Outcome> {
        let records = self.records;
        let seen = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(tokio::sync::Notify::new());
        let mut router = Router::new();
        let (count, finished) = (seen.clone(), done.clone());
        router
            .register(self.topic, move |_event: Message<Event>| {
                let (count, finished) = (count.clone(), finished.clone());
                async move {
                    if count.fetch_add(1, Ordering::Relaxed) + 1 == records {
                        finished.notify_one();
                    }
                    Ok(())
                }
            })
            .no_dead_letter();
        let consumer = self.kafka.consumer(&self.group("kafkit"), router)?;
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
}

/// Runs `round` with the kernel's peak-RSS counter reset first; answers its outcome and the
/// peak resident set size it reached, in MiB.
pub async fn with_peak_rss(
    round: impl Future<Output = anyhow::Result<Outcome>>,
) -> anyhow::Result<(Outcome, f64)> {
    // Linux `clear_refs` 5 resets this process's VmHWM.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let outcome = round.await?;
    Ok((outcome, peak_rss_mib()))
}

/// Peak resident set size since the last reset, in MiB.
pub fn peak_rss_mib() -> f64 {
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
