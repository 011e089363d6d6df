//! Graceful shutdown with a [`Manager`] (seed 000 GracefulShutdown, seed 002 KafkaManager): on
//! SIGINT/SIGTERM every consumer stops fetching, finishes its in-flight records within the
//! drain time, commits and leaves its group; then every producer is flushed; exit 0.
//!
//! `cargo run -p kafkit --example graceful_shutdown`, then Ctrl-C.

use std::time::Duration;

use kafkit::{CommitStrategy, ConsumerOptions, Kafka, Manager, Message, Router};

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    // `TOPIC` overrides the topic name (tests/examples.rs gives every run its own).
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "page-views".to_owned());
    let enriched = format!("{topic}-enriched");
    let manager = Manager::new();
    manager.add_producer("events", kafka.producer()?);

    let mut router = Router::new();
    let forward = manager.producer("events").expect("just added");
    router.register(&topic, move |view: Message<serde_json::Value>| {
        let (forward, enriched) = (forward.clone(), enriched.clone());
        async move {
            // Consume-transform-produce (at-least-once): the offset is stored after the
            // forwarded record is acknowledged.
            forward
                .send_json(&enriched, view.key_str(), &view.value)
                .await
                .map_err(kafkit::HandlerError::transient)?;
            Ok(())
        }
    });
    let options = ConsumerOptions {
        // Manual-commit style: commit after every record, as KafkaJS autoCommit: false.
        commit: CommitStrategy::EveryRecord,
        drain_timeout: Duration::from_secs(5),
        ..ConsumerOptions::default()
    };
    manager.start_consumer(
        "views",
        kafka.consumer_with_options("enricher", router, options)?,
    );

    let producer = manager.producer("events").expect("just added");
    for i in 0..5 {
        producer
            .send_json(
                &topic,
                Some(&format!("user-{i}")),
                &serde_json::json!({"page": "/", "n": i}),
            )
            .await?;
    }
    println!("running; Ctrl-C to shut down gracefully");
    kafkit::shutdown::signal().await;
    manager.shutdown().await?;
    println!("all consumers committed and left their groups; producers flushed");
    Ok(())
}
