//! Manual commits (KafkaJS `autoCommit: false`): the offset of each record is
//! committed right after its handler succeeded, instead of periodically. Costs a commit request
//! per record; use it when re-processing after a crash must be as small as possible.
//!
//! `cargo run -p kafkit --example manual_commit`

use kafkit::{Kafka, Message, Router, consumer::CommitStrategy, consumer::ConsumerOptions};

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    // `TOPIC` overrides the topic name (tests/examples.rs gives every run its own).
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "invoices".to_owned());
    let producer = kafka.producer()?;
    for i in 0..5 {
        producer
            .send_json(
                &topic,
                Some(&i.to_string()),
                &serde_json::json!({"invoice": i}),
            )
            .await?;
    }
    producer.shutdown().await?;

    let mut router = Router::new();
    router.register(&topic, |m: Message<serde_json::Value>| async move {
        println!(
            "invoice {} booked at offset {}",
            m.value["invoice"], m.offset
        );
        Ok(())
    });
    let options = ConsumerOptions {
        commit: CommitStrategy::EveryRecord,
        ..ConsumerOptions::default()
    };
    kafka
        .consumer_with_options("bookkeeping", router, options)?
        .run(kafkit::shutdown::signal())
        .await
}
