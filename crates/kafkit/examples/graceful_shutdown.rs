//! Graceful shutdown with a [`Manager`] (KafkaJS `consumer.disconnect()` on SIGTERM, done for every client): on
//! SIGINT/SIGTERM every consumer stops fetching, finishes its in-flight records within the
//! drain time, commits and leaves its group; then every producer is flushed; exit 0.
//!
//! `cargo run -p kafkit --example graceful_shutdown`, then Ctrl-C.

use std::time::Duration;

use kafkit::{
    Kafka, Manager, Message, Producer, Router, consumer::CommitStrategy, consumer::ConsumerOptions,
    handler::HandlerResult, handler::TypedHandler,
};

/// The handler as a type: its state (a producer, a topic) lives in `self`, no clones.
struct Forward {
    producer: Producer,
    topic: String,
}

impl TypedHandler<serde_json::Value> for Forward {
    async fn handle(&self, view: Message<serde_json::Value>) -> HandlerResult {
        // Consume-transform-produce (at-least-once): the offset is stored after the forwarded
        // record is acknowledged.
        self.producer
            .send_json(&self.topic, view.key_str(), &view.value)
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    // `TOPIC` overrides the topic name (tests/examples.rs gives every run its own).
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "page-views".to_owned());
    let enriched = format!("{topic}-enriched");
    let manager = Manager::new();
    manager.add_producer("events", kafka.producer()?);

    let mut router = Router::new();
    let forward = Forward {
        producer: manager.producer("events").expect("just added"),
        topic: enriched,
    };
    router.register_typed(&topic, forward);
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
