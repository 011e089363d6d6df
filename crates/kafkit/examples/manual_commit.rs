//! Manual commits (seed 000, KafkaJS `autoCommit: false`): the offset of each record is
//! committed right after its handler succeeded, instead of periodically. Costs a commit request
//! per record; use it when re-processing after a crash must be as small as possible.
//!
//! `cargo run -p kafkit --example manual_commit`

use kafkit::{
    Cluster, CommitStrategy, Consumer, ConsumerOptions, KafkaConfig, Message, Producer, Router,
};

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let (cluster, config) = Cluster::connect(&KafkaConfig::from_env()?)?;
    let producer = Producer::new(&config)?;
    for i in 0..5 {
        producer
            .send_json(
                "invoices",
                Some(&i.to_string()),
                &serde_json::json!({"invoice": i}),
            )
            .await?;
    }
    producer.shutdown().await?;

    let mut router = Router::new();
    router.register("invoices", |m: Message<serde_json::Value>| async move {
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
    Consumer::with_options(&config, "bookkeeping", router, options)?
        .on(&cluster)
        .run(kafkit::shutdown::signal())
        .await
}
