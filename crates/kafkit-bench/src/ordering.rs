//! `kafkit-bench ordering`: Confluent Parallel Consumer's published workload. 10,000 records in
//! one partition, each handled in a random 0-5 ms (an I/O wait, not CPU), in partition order,
//! in key order with 1, 10 and 1,000 keys, and unordered. The time is from the first record
//! handled to the last (group join left out), the median of the rounds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafkit::consumer::ProcessingOrder;
use kafkit::{Kafka, Message, Record, Router};

use crate::BenchArgs;
use crate::outcome::ROUNDS;
use crate::produce::send_batches;

/// Parallel Consumer's README times for this workload, in seconds.
const PUBLISHED: [(&str, f64); 5] = [
    ("partition order", 22.2),
    ("key order, 1 key", 26.7),
    ("key order, 10 keys", 3.3),
    ("key order, 1,000 keys", 2.06),
    ("unordered", 2.83),
];

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (kafka, admin) = args.connect()?;
    let records = args.records;
    let in_flight = args.batch;
    println!(
        "# {records} records in one partition, each handled in a random 0-5 ms; at most {in_flight} in flight (key and unordered order); broker {}",
        kafka.cluster().bootstrap_servers()
    );
    println!("{ROUNDS} rounds per case; the median is shown, first record handled to last");
    println!("| case | kafkit seconds | records/s | Parallel Consumer (published) seconds |");
    println!("|---|---:|---:|---:|");
    let cases = [
        (ProcessingOrder::Partition, 1_000),
        (ProcessingOrder::Key, 1),
        (ProcessingOrder::Key, 10),
        (ProcessingOrder::Key, 1_000),
        (ProcessingOrder::Unordered, 1_000),
    ];
    for (index, (order, keys)) in cases.into_iter().enumerate() {
        let topic = format!("bench-ordering-{}-{index}", std::process::id());
        admin
            .ensure_topics(&[kafkit::TopicSpec::new(&topic, 1)])
            .await?;
        // A producer per case: one that cached the cluster's metadata before the topic existed
        // failed every record of it.
        let producer = kafka.producer()?;
        let failed = send_batches(&producer, records, |id| {
            Record::to(&topic)
                .key(format!("key-{}", id % keys))
                .json(&id)
                .expect("encodable")
        })
        .await?;
        anyhow::ensure!(failed == 0, "{failed} records not written");
        producer.shutdown().await?;
        let mut times = Vec::new();
        for round in 0..ROUNDS {
            times.push(consume(&kafka, &topic, records, order, in_flight, round).await?);
        }
        times.sort();
        let median = times[times.len() / 2].as_secs_f64();
        println!(
            "| {} | {median:.2} | {:.0} | {} |",
            PUBLISHED[index].0,
            records as f64 / median,
            PUBLISHED[index].1
        );
    }
    Ok(())
}

/// One round: a fresh group reads the topic from the beginning; answers the time from the
/// first record handled to the last.
async fn consume(
    kafka: &Kafka,
    topic: &str,
    records: usize,
    order: ProcessingOrder,
    in_flight: usize,
    round: usize,
) -> anyhow::Result<Duration> {
    let seen = Arc::new(AtomicUsize::new(0));
    let first = Arc::new(Mutex::new(None::<Instant>));
    let done = Arc::new(tokio::sync::Notify::new());
    let mut router = Router::new();
    let (count, started, finished) = (seen.clone(), first.clone(), done.clone());
    router
        .register(topic, move |record: Message<u64>| {
            let (count, started, finished) = (count.clone(), started.clone(), finished.clone());
            async move {
                started
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert_with(Instant::now);
                // A random wait of 0-5 ms, fixed per record so every case waits the same.
                let micros = (record.value.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) % 5_000;
                tokio::time::sleep(Duration::from_micros(micros)).await;
                if count.fetch_add(1, Ordering::Relaxed) + 1 == records {
                    finished.notify_one();
                }
                Ok(())
            }
        })
        .order(order)
        .max_in_flight(in_flight)
        .no_dead_letter();
    let group = format!("{topic}-{round}");
    let consumer = kafka.consumer(&group, router)?;
    let mut elapsed = Duration::ZERO;
    consumer
        .run(async {
            done.notified().await;
            let first = first
                .lock()
                .expect("not poisoned")
                .expect("a record was handled");
            elapsed = first.elapsed();
        })
        .await?;
    anyhow::ensure!(
        seen.load(Ordering::Relaxed) >= records,
        "not every record was handled"
    );
    Ok(elapsed)
}
