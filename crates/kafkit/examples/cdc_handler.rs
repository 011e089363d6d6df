//! Debezium change events (`kafkit::cdc::DatabaseEvent<T>`): creates, updates, deletes and snapshot
//! reads of a table, in the plain or `{schema, payload}` envelope; tombstones arrive as `None`.
//!
//! `cargo run -p kafkit --example cdc_handler`

use kafkit::{Kafka, Message, Record, Router, cdc::DatabaseEvent, cdc::Operation};

#[derive(Debug, serde::Deserialize)]
struct User {
    id: u64,
    email: String,
}

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let kafka = Kafka::from_env()?;
    let producer = kafka.producer()?;
    // `TOPIC` overrides the topic name (tests/examples.rs gives every run its own).
    let topic = std::env::var("TOPIC").unwrap_or_else(|_| "dbserver1.public.users".to_owned());
    let events = [
        Record::to(&topic).key("1").payload(r#"{"before":null,"after":{"id":1,"email":"a@x.io"},"source":{"table":"users"},"op":"c","ts_ms":1}"#),
        Record::to(&topic).key("1").payload(r#"{"schema":{},"payload":{"before":{"id":1,"email":"a@x.io"},"after":{"id":1,"email":"b@x.io"},"source":{},"op":"u","ts_ms":2}}"#),
        Record::to(&topic).key("1").payload(r#"{"before":{"id":1,"email":"b@x.io"},"after":null,"source":{},"op":"d","ts_ms":3}"#),
        Record::to(&topic).key("1"), // tombstone
    ];
    let results = producer.send_batch(events).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(error) = results.into_iter().find_map(Result::err) {
        eprintln!("{failed} of the change events could not be produced");
        return Err(error);
    }
    producer.shutdown().await?;

    let mut router = Router::new();
    router.register(
        &topic,
        |m: Message<Option<DatabaseEvent<User>>>| async move {
            match m.value {
                None => println!("tombstone for key {:?}", m.key_str()),
                Some(event) => match event.op {
                    Operation::Create | Operation::Read => println!("insert {:?}", event.after),
                    Operation::Update => println!("update {:?} -> {:?}", event.before, event.after),
                    Operation::Delete => {
                        println!("delete {:?}", event.before.map(|u| (u.id, u.email)))
                    }
                    Operation::Truncate => println!("table truncated"),
                },
            }
            Ok(())
        },
    );
    kafka
        .consumer("user-projection", router)?
        .run(kafkit::shutdown::signal())
        .await
}
