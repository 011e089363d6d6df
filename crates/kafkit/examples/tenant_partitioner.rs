//! Tenant isolation (a KafkaJS `createPartitioner`): records carrying a `tenant-id` header go to
//! the partition its murmur2 hash picks, so a tenant's records stay together and in order;
//! records without it fall back to the key, then round-robin.
//!
//! `cargo run -p kafkit --example tenant_partitioner`

use kafkit::{Kafka, Record, TopicSpec, partitioner::HeaderHash};

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    // `TOPIC` overrides the topic name (tests/examples.rs gives every run its own).
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "tenant-events".to_owned());
    kafka
        .admin()?
        .ensure_topics(&[TopicSpec::new(&topic, 6)])
        .await?;

    let producer = kafka
        .producer_builder()
        .partitioner(HeaderHash::new("tenant-id"))
        .build()?;
    for tenant in ["acme", "globex", "initech"] {
        for n in 0..3 {
            let record = Record::to(&topic)
                .header("tenant-id", tenant)
                .json(&serde_json::json!({"tenant": tenant, "n": n}))?;
            let delivery = producer.send(record).await?;
            println!("{tenant} #{n} -> partition {}", delivery.partition);
        }
    }
    producer.shutdown().await
}
