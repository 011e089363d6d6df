//! The simplest producer (KafkaJS `producer.send`): typed JSON values with a key, the
//! standard headers added for you, and a flush on shutdown.
//!
//! `cargo run -p kafkit --example simple_producer` (uses `KAFKA_BROKERS`, or starts the embedded
//! development broker when it is unset).

use kafkit::Kafka;
use serde::Serialize;

#[derive(Serialize)]
struct UserCreated {
    user_id: u64,
    email: String,
}

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    let producer = kafka.producer()?;
    // `TOPIC` overrides the topic name (tests/examples.rs gives every run its own).
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "user-events".to_owned());

    for user_id in 1..=3 {
        let event = UserCreated {
            user_id,
            email: format!("user{user_id}@example.com"),
        };
        let delivery = producer
            .send_json(&topic, Some(&user_id.to_string()), &event)
            .await?;
        println!(
            "user {user_id} -> partition {} offset {}",
            delivery.partition, delivery.offset
        );
    }
    producer.shutdown().await
}
