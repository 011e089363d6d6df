//! A batch consumer (KafkaJS `eachBatch`): the handler gets up to 100 records or whatever
//! arrived within 500 ms; a failure can name the failing record, so the ones before it are
//! committed and the rest retried.
//!
//! `cargo run -p kafkit --example batch_consumer`

use std::time::Duration;

use kafkit::{
    HandlerError, Kafka, Message, Record, Router, batch::BatchError, batch::BatchOptions,
};

#[derive(serde::Deserialize)]
struct Metric {
    name: String,
    value: f64,
}

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    // `TOPIC` overrides the topic name (tests/examples.rs gives every run its own).
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "metrics".to_owned());
    let producer = kafka.producer()?;
    let records = (0..250)
        .map(|i| Record::to(&topic).json(&serde_json::json!({"name": "cpu", "value": i})))
        .collect::<kafkit::Result<Vec<_>>>()?;
    let results = producer.send_batch(records).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(error) = results.into_iter().find_map(Result::err) {
        eprintln!("{failed} of the metrics could not be produced");
        return Err(error);
    }
    producer.shutdown().await?;

    let mut router = Router::new();
    router.register_batch(
        &topic,
        BatchOptions {
            max_records: 100,
            max_wait: Duration::from_millis(500),
        },
        |batch: Vec<Message<Metric>>| async move {
            if let Some(bad) = batch.iter().position(|m| m.value.value.is_nan()) {
                return Err(BatchError::at(bad, HandlerError::invalid("NaN metric")));
            }
            let sum: f64 = batch.iter().map(|m| m.value.value).sum();
            println!(
                "stored {} {} points (sum {sum})",
                batch.len(),
                batch[0].value.name
            );
            Ok(())
        },
    );
    let consumer = kafka.consumer("metrics-writer", router)?;
    consumer.run(kafkit::shutdown::signal()).await
}
