//! Exactly-once consume-transform-produce (KafkaJS `transaction.sendOffsets`): every payment read from
//! the payments topic becomes one fee record on `{payments}-fees`, and the fee records and the
//! payments' offsets are committed together, per batch, in one transaction. Killed at any
//! moment and started again, a read-committed reader of the fees still sees each payment's fee
//! exactly once. A payment of amount 0 is invalid: its dead-letter copy is part of the
//! transaction too.
//!
//! `TOPIC` names the payments topic (default `payments`); the group is `{payments}-fees`. The
//! transactional id comes from `KAFKA_TRANSACTIONAL_ID` (with `KAFKA_TRANSACTIONAL_ID_SUFFIX`),
//! else `kafkit-example-fees`: a restarted instance with the same id aborts what its
//! predecessor left open, and fences it if it is still running. `TRANSACTION_RECORDS` sets the
//! most payments per transaction (default 1,000).
//!
//! `cargo run -p kafkit --example exactly_once_pipeline`

use kafkit::consumer::exactly_once::{DEFAULT_TRANSACTION_RECORDS, ExactlyOnceOptions};
use kafkit::{HandlerError, Kafka, Message, Record};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Payment {
    id: u64,
    amount: u64,
}

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    let payments = std::env::var("TOPIC").unwrap_or_else(|_| "payments".to_owned());
    let fees = format!("{payments}-fees");
    let id = kafka
        .config()
        .instance_transactional_id()?
        .unwrap_or_else(|| "kafkit-example-fees".to_owned());
    let max_records = std::env::var("TRANSACTION_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_TRANSACTION_RECORDS);
    let producer = kafka.transactional_producer(id).await?;

    let options = ExactlyOnceOptions {
        max_records,
        ..ExactlyOnceOptions::default()
    };
    let mut pipeline = kafka.exactly_once(&fees, producer)?.with_options(options);
    let output = fees.clone();
    pipeline.route(&payments, move |payment: Message<Payment>| {
        let output = output.clone();
        async move {
            if payment.value.amount == 0 {
                return Err(HandlerError::invalid("a payment of 0"));
            }
            let fee = serde_json::json!({
                "payment": payment.value.id,
                "fee": payment.value.amount.div_ceil(100),
                "source_partition": payment.partition,
                "source_offset": payment.offset,
            });
            Ok(vec![
                Record::to(&output)
                    .key(payment.value.id.to_string())
                    .json(&fee)?,
            ])
        }
    });
    println!("transforming {payments} into {fees}; Ctrl-C to stop");
    pipeline.run(kafkit::shutdown::signal()).await?;
    println!("stopped after {} transactions", pipeline.transactions());
    Ok(())
}
