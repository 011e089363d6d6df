//! A consumer process for crash and shutdown tests: handles `{"id": N}` records of `TOPIC` in
//! group `GROUP` and appends each handled id to the file `OUT` (one write per record, so a
//! SIGKILL loses nothing already handled). Stops cleanly on SIGINT/SIGTERM.
//!
//! Environment: `KAFKIT_TEST_BROKERS`, `TOPIC`, `GROUP`, `OUT`, `HANDLE_MICROS` (work per record).

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkit::{Consumer, KafkaConfig, Message, Router};

#[derive(serde::Deserialize)]
struct Item {
    id: u64,
}

#[tokio::main]
async fn main() -> kafkit::Result<()> {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is required"));
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(var("OUT"))
        .expect("output file");
    let out = Arc::new(Mutex::new(out));
    let work = Duration::from_micros(
        std::env::var("HANDLE_MICROS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
    );
    let mut router = Router::new();
    router.register(var("TOPIC"), move |m: Message<Item>| {
        let out = out.clone();
        async move {
            tokio::time::sleep(work).await;
            // One write call per line: `writeln!` may split a line over two writes, and a
            // SIGKILL between them would leave half a number for the next process to extend.
            let line = format!("{}\n", m.value.id);
            out.lock()
                .expect("not poisoned")
                .write_all(line.as_bytes())?;
            Ok(())
        }
    });
    let config = KafkaConfig {
        session_timeout: Duration::from_secs(6),
        heartbeat_interval: Duration::from_millis(500),
        ..KafkaConfig::new([var("KAFKIT_TEST_BROKERS")])
    };
    let options = kafkit::ConsumerOptions {
        drain_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let consumer = Consumer::with_options(&config, &var("GROUP"), router, options)?;
    consumer.run(kafkit::shutdown::signal()).await
}
