//! Log lines written inside a handler carry the record's context (group, topic, partition,
//! offset) from the runtime's spans, without the handler repeating them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkit::{Consumer, ConsumerOptions, HandlerError, Message, Router};
use tokio_util::sync::CancellationToken;

/// Everything the subscriber writes, kept for the assertions.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_log_lines_carry_group_topic_partition_and_offset() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .init();

    let topic = testkit::topic("traced", 2).await;
    testkit::populate(&topic, 20, 20).await;
    let group = testkit::unique("traced-group");

    // Where each record really was, as the handler saw it.
    let seen: Arc<Mutex<HashMap<u64, (i32, i64)>>> = Arc::default();
    let mut router = Router::new();
    let record = seen.clone();
    router.register(&topic, move |m: Message<serde_json::Value>| {
        let record = record.clone();
        async move {
            let id = m.value["id"].as_u64().expect("populate writes ids");
            record.lock().unwrap().insert(id, (m.partition, m.offset));
            tracing::info!(id, "handled by the user's code");
            if id == 7 {
                return Err(HandlerError::skip("seven is skipped"));
            }
            Ok(())
        }
    });
    let consumer = Consumer::with_options(
        &testkit::config(),
        &group,
        router,
        ConsumerOptions::default(),
    )
    .expect("consumer");
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let stop = stop.clone();
        async move { consumer.run(stop.cancelled_owned()).await }
    });
    assert!(
        testkit::eventually(Duration::from_secs(60), || seen.lock().unwrap().len() == 20).await,
        "all 20 records handled"
    );
    stop.cancel();
    run.await.unwrap().unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let seen = seen.lock().unwrap();
    for (id, (partition, offset)) in seen.iter() {
        let line = text
            .lines()
            .find(|line| line.ends_with(&format!("handled by the user's code id={id}")))
            .unwrap_or_else(|| panic!("no line for record {id} in:\n{text}"));
        let context = format!(
            "partition{{group={group} topic={topic} partition={partition}}}:record{{offset={offset}}}"
        );
        assert!(line.contains(&context), "{line}\nlacks {context}");
    }
    // kafkit's own events inside the record carry the same context.
    let (partition, offset) = seen[&7];
    let skipped = text
        .lines()
        .find(|line| line.contains("record skipped by handler"))
        .unwrap_or_else(|| panic!("no skip line in:\n{text}"));
    assert!(
        skipped.contains(&format!(
            "partition={partition}}}:record{{offset={offset}}}"
        )),
        "{skipped}"
    );
}
