//! `kafkit-bench stuck`: the memory a consumer holds while handlers are stuck, next to what
//! raw rdkafka holds with the same fetch settings. Each client runs in a process of its own
//! (this binary again, with `--only`), so each peak resident set size (`VmHWM`) is its own
//! and no allocator keeps another client's pages.
//!
//! The topic's partitions all have a backlog; the handler of the first `--stuck` partitions
//! never returns, the others are handled at once (raw records: no decoding, so the flowing
//! partitions keep up and what stays is what the stuck ones hold). What the runtime counts against
//! `max_queued_bytes_per_partition` is sampled from its health report as it runs.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use kafkit::consumer::ConsumerOptions;
use kafkit::rdkafka::consumer::{Consumer as RdConsumer, StreamConsumer};
use kafkit::{Kafka, Message, Record, Router};

use crate::BenchArgs;
use crate::produce::send_batches;

/// What to measure, and with which fetch settings.
#[derive(Debug, Args)]
pub struct StuckArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Partitions whose handler never returns (the first ones).
    #[arg(long, default_value_t = 1)]
    pub stuck: i32,
    /// The runtime's `max_queued_bytes_per_partition`.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub queued_bytes: usize,
    /// librdkafka `max.partition.fetch.bytes` (`KAFKA_MAX_BYTES_PER_PARTITION`).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub partition_fetch_bytes: u32,
    /// librdkafka `fetch.max.bytes` (the whole fetch response).
    #[arg(long, default_value_t = 52_428_800)]
    pub fetch_max_bytes: u32,
    /// How long the stuck handlers are watched once the other partitions are done.
    #[arg(long, default_value_t = 3)]
    pub hold_secs: u64,
    /// Clients to run, in this order, each once (raw-all, raw-stuck, kafkit-none-stuck, kafkit);
    /// repeat a name for more rounds.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "raw-all,raw-stuck,kafkit-none-stuck,kafkit"
    )]
    pub clients: Vec<String>,
    /// The populated topic (set by the parent for each client's process).
    #[arg(long, hide = true)]
    pub topic: Option<String>,
}

/// One client's process: what it measured, as a JSON line on stdout.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Measured {
    client: String,
    handled: usize,
    /// The largest sum over partitions of what the runtime counted as queued, in MiB.
    counted_mib: Option<f64>,
    peak_rss_mib: f64,
}

pub async fn run(args: StuckArgs) -> anyhow::Result<()> {
    match (&args.common.only, &args.topic) {
        (Some(client), Some(topic)) => {
            let measured = measure(&args, client, topic).await?;
            println!("{}", serde_json::to_string(&measured)?);
            Ok(())
        }
        _ => compare(&args).await,
    }
}

/// Populates a topic, runs each client in a process of its own and prints the table.
async fn compare(args: &StuckArgs) -> anyhow::Result<()> {
    let (kafka, admin) = args.common.connect()?;
    let topic = args.common.fresh_topic(&admin, "bench-stuck").await?;
    populate(
        &kafka,
        &topic,
        args.common.records,
        args.common.size,
        args.common.partitions,
    )
    .await?;
    println!(
        "# stuck handlers: {} records of ~{} bytes over {} partitions (uncompressed), the first {} stuck; broker {}",
        args.common.records,
        args.common.size,
        args.common.partitions,
        args.stuck,
        kafka.cluster().bootstrap_servers()
    );
    println!(
        "max.partition.fetch.bytes {}, fetch.max.bytes {}, queued.max.messages.kbytes librdkafka's default; kafkit max_queued_bytes_per_partition {}",
        args.partition_fetch_bytes, args.fetch_max_bytes, args.queued_bytes
    );
    println!("| client | records handled | runtime's queued bytes (max, MiB) | peak RSS MiB |");
    println!("|---|---:|---:|---:|");
    for client in &args.clients {
        let output = Command::new(std::env::current_exe()?)
            .args(child_args(args, client, &topic))
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "{client}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let measured: Measured = serde_json::from_slice(&output.stdout)?;
        let counted = measured
            .counted_mib
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}"));
        println!(
            "| {} | {} | {counted} | {:.0} |",
            describe(client),
            measured.handled,
            measured.peak_rss_mib
        );
    }
    admin.delete_topics(&[&topic]).await?;
    Ok(())
}

fn describe(client: &str) -> &'static str {
    match client {
        "raw-all" => "raw rdkafka StreamConsumer, no handler stuck (reads everything)",
        "raw-stuck" => "raw rdkafka StreamConsumer loop stuck in its first record",
        "kafkit-none-stuck" => "kafkit Consumer, no handler stuck",
        _ => "kafkit Consumer, stuck partitions",
    }
}

fn child_args(args: &StuckArgs, client: &str, topic: &str) -> Vec<String> {
    let mut out: Vec<String> = vec!["stuck".into(), "--only".into(), client.into()];
    if let Some(brokers) = &args.common.brokers {
        out.extend(["--brokers".into(), brokers.clone()]);
    }
    for (flag, value) in [
        ("--topic", topic.to_owned()),
        ("--records", args.common.records.to_string()),
        ("--partitions", args.common.partitions.to_string()),
        ("--stuck", args.stuck.to_string()),
        ("--queued-bytes", args.queued_bytes.to_string()),
        (
            "--partition-fetch-bytes",
            args.partition_fetch_bytes.to_string(),
        ),
        ("--fetch-max-bytes", args.fetch_max_bytes.to_string()),
        ("--hold-secs", args.hold_secs.to_string()),
    ] {
        out.extend([flag.into(), value]);
    }
    out
}

/// Writes `records` JSON records of about `size` bytes, record `i` to partition `i % partitions`,
/// uncompressed: a fetch response then holds the records themselves.
async fn populate(
    kafka: &Kafka,
    topic: &str,
    records: usize,
    size: usize,
    partitions: i32,
) -> anyhow::Result<()> {
    let producer = kafka.producer_builder().standard_headers(false).build()?;
    let body = "x".repeat(size.saturating_sub(30));
    let failed = send_batches(&producer, records, |id| {
        Record::to(topic)
            .partition((id % partitions as usize) as i32)
            .json(&serde_json::json!({"id": id, "body": body}))
            .expect("encodable")
    })
    .await?;
    anyhow::ensure!(failed == 0, "{failed} records failed to populate the topic");
    Ok(())
}

/// Runs `client` in this process and measures it.
async fn measure(args: &StuckArgs, client: &str, topic: &str) -> anyhow::Result<Measured> {
    let (kafka, _) = args.common.connect()?;
    let kafka = kafka.reconfigured(|config| {
        config.max_bytes_per_partition = args.partition_fetch_bytes;
        config
            .librdkafka
            .insert("fetch.max.bytes".into(), args.fetch_max_bytes.to_string());
    });
    let config = kafka.config();
    let records = args.common.records;
    let partitions = args.common.partitions;
    // Records in the partitions whose handler returns (record i is in partition i % n).
    let stuck = if client == "kafkit-none-stuck" || client == "raw-all" {
        0
    } else {
        args.stuck
    };
    let flowing = (0..records)
        .filter(|i| (i % partitions as usize) as i32 >= stuck)
        .count();
    let group = format!("bench-stuck-{client}-{}", std::process::id());
    let hold = Duration::from_secs(args.hold_secs);
    let (handled, counted) = match client {
        "raw-all" | "raw-stuck" => {
            let consumer: StreamConsumer = config.to_consumer_config(&group).create()?;
            consumer.subscribe(&[topic])?;
            let mut stream = consumer.stream();
            let mut handled = 0;
            while handled < records {
                let Some(message) = stream.next().await else {
                    break;
                };
                let _ = message?.payload_len();
                if client == "raw-stuck" {
                    // A hand-written loop whose handler never returns polls no more; librdkafka
                    // goes on prefetching up to its own bounds meanwhile.
                    tokio::time::sleep(hold * 3).await;
                    break;
                }
                handled += 1;
            }
            (handled, None)
        }
        _ => {
            let seen = Arc::new(AtomicUsize::new(0));
            let mut router = Router::new();
            let count = seen.clone();
            router
                .register_raw(topic, move |m: Message| {
                    let count = count.clone();
                    async move {
                        if m.partition < stuck {
                            std::future::pending::<()>().await;
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                })
                .no_dead_letter();
            let options = ConsumerOptions {
                max_queued_bytes_per_partition: args.queued_bytes,
                drain_timeout: Duration::from_secs(1),
                ..ConsumerOptions::default()
            };
            let consumer = kafka.consumer_with_options(&group, router, options)?;
            let mut counted = 0usize;
            let watched = async {
                let mut done_at: Option<Instant> = None;
                loop {
                    let queued: usize = consumer
                        .health()
                        .partitions
                        .iter()
                        .map(|p| p.queued_bytes)
                        .sum();
                    counted = counted.max(queued);
                    if done_at.is_none() && seen.load(Ordering::Relaxed) >= flowing {
                        done_at = Some(Instant::now());
                    }
                    if done_at.is_some_and(|at| at.elapsed() >= hold) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            consumer.run(watched).await?;
            (
                seen.load(Ordering::Relaxed),
                Some(counted as f64 / 1048576.0),
            )
        }
    };
    Ok(Measured {
        client: client.to_owned(),
        handled,
        counted_mib: counted,
        peak_rss_mib: crate::consume::peak_rss_mib(),
    })
}
