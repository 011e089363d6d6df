//! A batch consumer (seed 000 BatchConsumer): the handler gets up to 100 records or whatever
//! arrived within 500 ms; a failure can name the failing record, so the ones before it are
//! committed and the rest retried.
//!
//! `cargo run -p kafkit --example batch_consumer`

use std::time::Duration;

use kafkit::{
    BatchError, BatchOptions, Cluster, Consumer, HandlerError, KafkaConfig, Message, Producer,
    Record, Router,
};

#[derive(serde::Deserialize)]
struct Metric {
    name: String,
    value: f64,
}

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let (cluster, config) = Cluster::connect(&KafkaConfig::from_env()?)?;
    let producer = Producer::new(&config)?;
    let records = (0..250)
        .map(|i| Record::to("metrics").json(&serde_json::json!({"name": "cpu", "value": i})))
        .collect::<kafkit::Result<Vec<_>>>()?;
    producer.send_batch(records).await;
    producer.shutdown().await?;

    let mut router = Router::new();
    router.register_batch(
        "metrics",
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
    let consumer = Consumer::new(&config, "metrics-writer", router)?.on(&cluster);
    consumer.run(kafkit::shutdown::signal()).await
}
