//! Atomic multi-topic sends (KafkaJS `producer.transaction()`): each transfer writes a
//! debit to the payments topic and a notification to a second topic in one transaction, so a
//! read-committed reader sees both or neither. The fourth transfer fails a check after its
//! debit was sent: its transaction is aborted and the debit never becomes visible.
//!
//! The transactional id comes from `KAFKA_TRANSACTIONAL_ID` (with
//! `KAFKA_TRANSACTIONAL_ID_SUFFIX`), else `kafkit-example-payments`. Starting a second copy with
//! the same id fences the first: its next commit fails with `Error::Fenced`.
//!
//! `cargo run -p kafkit --example transactional_producer`

use kafkit::{Error, Kafka, Record};

/// The largest transfer the (pretend) risk check lets through.
const LIMIT: u64 = 1_000;

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    // `TOPIC` overrides the payments topic (tests/examples.rs gives every run its own).
    let payments = std::env::var("TOPIC").unwrap_or_else(|_| "payments".to_owned());
    let notifications = format!("{payments}-notifications");
    let id = kafka
        .config()
        .instance_transactional_id()?
        .unwrap_or_else(|| "kafkit-example-payments".to_owned());
    let producer = kafka.transactional_producer(id).await?;

    for (transfer, amount) in [(1, 250), (2, 40), (3, 999), (4, 5_000)] {
        let outcome = producer
            .transaction(async |tx| {
                tx.send(
                    Record::to(&payments)
                        .key(format!("transfer-{transfer}"))
                        .json(&serde_json::json!({"transfer": transfer, "debit": amount}))?,
                )
                .await?;
                // A failure after a send: returning Err aborts the whole transaction.
                if amount > LIMIT {
                    return Err(Error::InvalidRecord(format!(
                        "{amount} is over the limit of {LIMIT}"
                    )));
                }
                tx.send(
                    Record::to(&notifications)
                        .key(format!("transfer-{transfer}"))
                        .text(format!("transfer {transfer} of {amount} done")),
                )
                .await?;
                Ok(())
            })
            .await;
        match outcome {
            Ok(()) => println!("transfer {transfer} committed"),
            // Fenced: another instance took over this transactional id; stop writing.
            Err(error @ Error::Fenced { .. }) => return Err(error),
            Err(error) => println!("transfer {transfer} aborted: {error}"),
        }
    }
    producer.shutdown().await
}
