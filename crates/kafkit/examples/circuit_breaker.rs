//! A circuit breaker around a flaky dependency (what KafkaJS services build with `opossum`): after 5 consecutive failures the
//! circuit opens and the topic's partitions are paused for 5 s instead of burning retries;
//! then one probe goes through: a failure opens the circuit again, a success closes it.
//!
//! `cargo run -p kafkit --example circuit_breaker`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kafkit::{
    HandlerError, Kafka, Message, RetryPolicy, Router, State, circuit_breaker::CircuitBreakerConfig,
};

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    // `TOPIC` overrides the topic name (tests/examples.rs gives every run its own).
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "notifications".to_owned());
    let producer = kafka.producer()?;
    for i in 0..20 {
        producer
            .send_json(&topic, None, &serde_json::json!({"n": i}))
            .await?;
    }
    producer.shutdown().await?;

    // The dependency fails its first 6 calls, then recovers: five open the circuit, the first
    // probe fails and opens it again, the second closes it.
    // The call count is shared state, handed to the handler as `State` (as in axum).
    let calls = Arc::new(AtomicU64::new(0));
    let mut router = Router::new();
    router
        .register_with_state(
            &topic,
            calls,
            |State(calls): State<Arc<AtomicU64>>, m: Message<serde_json::Value>| async move {
                if calls.fetch_add(1, Ordering::SeqCst) < 6 {
                    return Err(HandlerError::transient("SMTP server unavailable"));
                }
                println!("sent notification {}", m.value["n"]);
                Ok(())
            },
        )
        .retry(RetryPolicy::exponential(50, Duration::from_millis(100)))
        .circuit_breaker(CircuitBreakerConfig {
            failure_threshold: 5,
            open_duration: Duration::from_secs(5),
            success_threshold: 1,
        });
    let consumer = Arc::new(kafka.consumer("notifier", router)?);
    let watcher = consumer.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            println!("circuits: {:?}", watcher.health().circuits);
        }
    });
    consumer.run(kafkit::shutdown::signal()).await
}
