//! `kafkit-bench transform`: consume-transform-produce, each input record becoming one output
//! record, exactly once ([`ExactlyOnce`], one transaction per batch) next to the at-least-once
//! runtime doing the same work (a batch route sending its outputs with `send_batch`, offsets
//! committed after). Same input topic, same batch size, interleaved rounds, in one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kafkit::consumer::exactly_once::ExactlyOnceOptions;
use kafkit::{
    Admin, Kafka, Message, Record, Router, TopicSpec, batch::BatchError, batch::BatchOptions,
};

use crate::BenchArgs;
use crate::consume::{populate, with_peak_rss};
use crate::outcome::{Outcome, ROUNDS, median};

#[derive(serde::Deserialize)]
struct Event {
    id: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (kafka, admin) = args.connect()?;
    let topic = args.fresh_topic(&admin, "bench-transform").await?;
    populate(&kafka, &topic, args.records, args.size).await?;
    println!(
        "# transform {} JSON records of ~{} bytes into one output record each, topic {topic} ({} partitions), broker {}",
        args.records,
        args.size,
        args.partitions,
        kafka.cluster().bootstrap_servers()
    );
    println!(
        "{ROUNDS} rounds, interleaved, each from the beginning with a fresh group and output topic; {} input records per transaction or batch; the median round is shown",
        args.batch
    );
    println!("| pipeline | records/s | MB/s | seconds | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    let mut at_least_once = Vec::new();
    let mut exactly_once = Vec::new();
    for number in 0..ROUNDS {
        let round = Round {
            kafka: &kafka,
            admin: &admin,
            topic: &topic,
            records: args.records,
            partitions: args.partitions,
            batch: args.batch,
            number,
        };
        at_least_once.push(with_peak_rss(round.at_least_once()).await?);
        exactly_once.push(with_peak_rss(round.exactly_once()).await?);
    }
    let at_least_once = median(at_least_once, |(outcome, _)| outcome);
    let exactly_once = median(exactly_once, |(outcome, _)| outcome);
    for (name, (outcome, peak_rss)) in [
        (
            "kafkit Consumer, batch route + send_batch (at-least-once)",
            &at_least_once,
        ),
        (
            "kafkit ExactlyOnce, one transaction per batch",
            &exactly_once,
        ),
    ] {
        println!("{} {peak_rss:.0} |", outcome.row(name, args.size));
    }
    println!(
        "\nexactly-once reaches {:.0}% of at-least-once ({} records per transaction)",
        exactly_once.0.percent_of(&at_least_once.0),
        args.batch
    );
    Ok(())
}

/// One round of one pipeline: transform every record of `topic` into a fresh output topic.
struct Round<'a> {
    kafka: &'a Kafka,
    admin: &'a Admin,
    topic: &'a str,
    records: usize,
    partitions: i32,
    batch: usize,
    number: usize,
}

impl Round<'_> {
    /// A fresh name for `pipeline` in this round (group, output topic, transactional id).
    fn name(&self, pipeline: &str) -> String {
        format!("bench-{pipeline}-{}-{}", std::process::id(), self.number)
    }

    async fn output(&self, pipeline: &str) -> anyhow::Result<String> {
        let name = self.name(pipeline);
        self.admin
            .ensure_topics(&[TopicSpec::new(&name, self.partitions)])
            .await?;
        Ok(name)
    }

    async fn at_least_once(&self) -> anyhow::Result<Outcome> {
        let output = self.output("alo").await?;
        let producer = self
            .kafka
            .producer_builder()
            .standard_headers(false)
            .build()?;
        let (done, finished) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(tokio::sync::Notify::new()),
        );
        let mut router = Router::new();
        let (count, notify, records) = (done.clone(), finished.clone(), self.records);
        let options = BatchOptions {
            max_records: self.batch,
            max_wait: Duration::from_millis(100),
        };
        router
            .register_batch(self.topic, options, move |batch: Vec<Message<Event>>| {
                let (producer, output) = (producer.clone(), output.clone());
                let (count, notify) = (count.clone(), notify.clone());
                async move {
                    let outputs = batch.iter().map(|event| {
                        Record::to(&output)
                            .key(event.value.id.to_string())
                            .payload(event.value.id.to_string())
                    });
                    let failed = producer
                        .send_batch(outputs)
                        .await
                        .into_iter()
                        .position(|r| r.is_err());
                    if let Some(index) = failed {
                        return Err(BatchError::at(index, "output not stored"));
                    }
                    if count.fetch_add(batch.len(), Ordering::Relaxed) + batch.len() >= records {
                        notify.notify_one();
                    }
                    Ok(())
                }
            })
            .no_dead_letter();
        let consumer = self.kafka.consumer(&self.name("alo"), router)?;
        let started = Instant::now();
        let mut elapsed = Duration::ZERO;
        consumer
            .run(async {
                finished.notified().await;
                elapsed = started.elapsed();
            })
            .await?;
        Ok(Outcome {
            records: done.load(Ordering::Relaxed),
            failed: 0,
            elapsed,
        })
    }

    async fn exactly_once(&self) -> anyhow::Result<Outcome> {
        let output = self.output("eos").await?;
        let producer = self.kafka.transactional_producer(self.name("eos")).await?;
        let options = ExactlyOnceOptions {
            max_records: self.batch,
            ..ExactlyOnceOptions::default()
        };
        let mut pipeline = self
            .kafka
            .exactly_once(&self.name("eos"), producer)?
            .with_options(options);
        pipeline
            .route(self.topic, move |event: Message<Event>| {
                let output = output.clone();
                async move {
                    Ok(vec![
                        Record::to(&output)
                            .key(event.value.id.to_string())
                            .payload(event.value.id.to_string()),
                    ])
                }
            })
            .no_dead_letter();
        let pipeline = Arc::new(pipeline);
        let started = Instant::now();
        let stop = Arc::new(tokio::sync::Notify::new());
        let run = tokio::spawn({
            let (pipeline, stop) = (pipeline.clone(), stop.clone());
            async move { pipeline.run(stop.notified()).await }
        });
        let elapsed = loop {
            if pipeline.committed_records() >= self.records as u64 {
                break started.elapsed();
            }
            anyhow::ensure!(!run.is_finished(), "the pipeline stopped early");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        stop.notify_one();
        run.await??;
        Ok(Outcome {
            records: self.records,
            failed: 0,
            elapsed,
        })
    }
}
