//! Multi-topic batches (KafkaJS `sendBatch({topicMessages})`): every record is enqueued first,
//! then the acknowledgements are awaited together, and each record gets its own result.
//!
//! `cargo run -p kafkit --example batch_producer`

use kafkit::{Kafka, Record};

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    // `TOPIC` overrides the orders topic (tests/examples.rs gives every run its own).
    let orders = std::env::var("TOPIC").unwrap_or_else(|_| "orders".to_owned());
    let audit = format!("{orders}-audit");
    let producer = kafka.producer()?;

    let mut records = Vec::new();
    for i in 0..1_000 {
        records.push(
            Record::to(&orders)
                .key(format!("order-{i}"))
                .json(&serde_json::json!({"order": i}))?,
        );
        records.push(
            Record::to(&audit)
                .header("trace-id", format!("trace-{i}"))
                .text(format!("order {i} placed")),
        );
    }
    let results = producer.send_batch(records).await;
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "{} records delivered, {} failed",
        results.len() - failed.len(),
        failed.len()
    );
    for error in failed.iter().take(5) {
        eprintln!("  {error} (retriable: {})", error.is_retriable());
    }
    producer.shutdown().await
}
