//! Retries with exponential backoff, then a dead-letter topic (the `{topic}_dlt`
//! naming of hand-written KafkaJS services): transient errors are retried, permanent and invalid ones are dead-lettered at
//! once, with the failure recorded in headers. Try `kafkit dlt list orders_dlt` afterwards.
//!
//! `cargo run -p kafkit --example dead_letter_retries`

use std::time::Duration;

use kafkit::{DeadLetter, HandlerError, Kafka, Message, Record, RetryPolicy, Router};

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
    amount: i64,
}

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    // `TOPIC` overrides the topic name (tests/examples.rs gives every run its own).
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "orders".to_owned());
    let producer = kafka.producer()?;
    let records = vec![
        Record::to(&topic).json(&serde_json::json!({"id": 1, "amount": 10}))?,
        Record::to(&topic).payload("{this is not json"),
        Record::to(&topic).json(&serde_json::json!({"id": 3, "amount": -5}))?,
        Record::to(&topic).json(&serde_json::json!({"id": 4, "amount": 99_999}))?,
    ];
    let results = producer.send_batch(records).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(error) = results.into_iter().find_map(Result::err) {
        eprintln!("{failed} of the orders could not be produced");
        return Err(error);
    }
    producer.shutdown().await?;

    let mut router = Router::new();
    router
        .register_validated(
            &topic,
            |order: &Order| {
                if order.amount > 0 {
                    Ok(())
                } else {
                    Err(format!("amount must be positive, got {}", order.amount))
                }
            },
            |order: Message<Order>| async move {
                if order.value.amount > 10_000 {
                    // Pretend the payment service times out on large amounts.
                    return Err(HandlerError::transient("payment service timed out"));
                }
                println!("order {} charged", order.value.id);
                Ok(())
            },
        )
        .retry(RetryPolicy::exponential(3, Duration::from_millis(200)))
        .dead_letter(DeadLetter::template("{topic}_dlt"));
    let consumer = kafka.consumer("payments", router)?;
    println!("consuming {topic}; failures go to {topic}_dlt; Ctrl-C to stop");
    consumer.run(kafkit::shutdown::signal()).await
}
