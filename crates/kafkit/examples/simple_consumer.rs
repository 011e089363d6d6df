//! A typed consumer (KafkaJS `consumer.run({ eachMessage })` with a handler per topic): one handler per
//! topic, records decoded from JSON, at-least-once offsets, Ctrl-C to stop.
//!
//! `cargo run -p kafkit --example simple_consumer` (uses `KAFKA_BROKERS`, or the embedded
//! development broker with a few records produced first).

use kafkit::{Kafka, Message, Router};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct UserCreated {
    user_id: u64,
    /// A record without this field is undecodable: invalid, never retried.
    email: String,
}

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    // `TOPIC` overrides the topic name (tests/examples.rs gives every run its own).
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "user-events".to_owned());
    let kafka = Kafka::from_env()?;
    if kafka.cluster().embedded().is_some() {
        let producer = kafka.producer()?;
        for user_id in 1..=3 {
            let user =
                serde_json::json!({"user_id": user_id, "email": format!("u{user_id}@example.com")});
            producer
                .send_json(&topic, Some(&user_id.to_string()), &user)
                .await?;
        }
        producer.shutdown().await?;
    }

    let mut router = Router::new();
    router.register(&topic, |event: Message<UserCreated>| async move {
        println!(
            "user {} <{}> (partition {}, offset {})",
            event.value.user_id, event.value.email, event.partition, event.offset
        );
        Ok(())
    });
    let consumer = kafka.consumer("user-service", router)?;
    println!("consuming {topic}; Ctrl-C to stop");
    consumer.run(kafkit::shutdown::signal()).await
}
