//! Log lines written inside a handler carry the record's context (group, topic, partition,
//! offset) from the runtime's spans, without the handler repeating them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kafkit::{HandlerError, Message, Router, consumer::ConsumerOptions};
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

/// The process's subscriber (installed once for every test here), writing into one buffer.
fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

/// What one traced run left: the lines of its topic, and where each record really was.
struct Run {
    group: String,
    topic: String,
    lines: Vec<String>,
    seen: HashMap<u64, (i32, i64)>,
}

/// Consumes 20 records (the handler logs each and skips id 7) with `record_spans` as given.
async fn traced_run(record_spans: bool) -> Run {
    let captured = captured();
    let topic = testkit::topic("traced", 2).await;
    testkit::populate(&topic, 20, 20).await;
    let group = testkit::unique("traced-group");

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
    let options = ConsumerOptions {
        record_spans,
        ..ConsumerOptions::default()
    };
    let consumer = testkit::kafka()
        .consumer_with_options(&group, router, options)
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
    let lines = text
        .lines()
        .filter(|line| line.contains(&format!("topic={topic} ")))
        .map(str::to_owned)
        .collect();
    let seen = seen.lock().unwrap().clone();
    Run {
        group,
        topic,
        lines,
        seen,
    }
}

impl Run {
    /// The line the handler logged for record `id`.
    fn handler_line(&self, id: u64) -> &str {
        let suffix = format!("handled by the user's code id={id}");
        self.lines
            .iter()
            .find(|line| line.ends_with(&suffix))
            .unwrap_or_else(|| panic!("no line for record {id} in:\n{}", self.lines.join("\n")))
    }

    /// The partition span's text for the partition of record `id`.
    fn partition_context(&self, id: u64) -> String {
        let (partition, _) = self.seen[&id];
        format!(
            "partition{{group={} topic={} partition={partition}}}",
            self.group, self.topic
        )
    }

    /// kafkit's own event about the skipped record 7 carries its partition and offset.
    fn assert_skip_names_its_record(&self) {
        let (_, offset) = self.seen[&7];
        let skipped = self
            .lines
            .iter()
            .find(|line| line.contains("record skipped by handler"))
            .unwrap_or_else(|| panic!("no skip line in:\n{}", self.lines.join("\n")));
        let context = format!("{}:record{{offset={offset}}}", self.partition_context(7));
        assert!(skipped.contains(&context), "{skipped}\nlacks {context}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_record_spans_handler_lines_carry_group_topic_partition_and_offset() {
    let run = traced_run(true).await;
    for (id, (_, offset)) in &run.seen {
        let line = run.handler_line(*id);
        let context = format!("{}:record{{offset={offset}}}", run.partition_context(*id));
        assert!(line.contains(&context), "{line}\nlacks {context}");
    }
    run.assert_skip_names_its_record();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_record_spans_handler_lines_carry_the_partition_and_failures_their_offset() {
    let run = traced_run(false).await;
    for id in run.seen.keys() {
        let line = run.handler_line(*id);
        let context = format!("{}: ", run.partition_context(*id));
        assert!(line.contains(&context), "{line}\nlacks {context}");
        assert!(
            !line.contains("record{"),
            "{line}: a record span although they are off"
        );
    }
    run.assert_skip_names_its_record();
}
