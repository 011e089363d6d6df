//! `kafkit dlt list|replay` end to end: a consumer dead-letters a record, the CLI shows and
//! replays it, the consumer then handles it; replay is safe to re-run.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{json_lines, kafkit, run};
use kafkit::{HandlerError, Message, Record, RetryPolicy, Router};
use serde_json::Value;

fn kafkit_lines(args: &[&str]) -> Vec<Value> {
    json_lines(&run(
        kafkit().args(args).env("KAFKA_BROKERS", testkit::brokers()),
        "",
    ))
}

#[derive(serde::Deserialize)]
struct Item {
    id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_republishes_to_the_original_topic_and_the_consumer_handles_it() {
    // Given a consumer whose handler rejects record 2 while a dependency is broken.
    let topic = testkit::topic("redrive", 1).await;
    let dlt = format!("{topic}.dlq");
    testkit::populate(&topic, 5, 5).await;
    let broken = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(HashMap::<u64, Vec<Option<String>>>::new()));
    let mut router = Router::new();
    let (is_broken, log) = (broken.clone(), seen.clone());
    router
        .register(&topic, move |m: Message<Item>| {
            let (is_broken, log) = (is_broken.clone(), log.clone());
            async move {
                if m.value.id == 2 && is_broken.load(Ordering::SeqCst) {
                    return Err(HandlerError::permanent("inventory service rejected it"));
                }
                let redrive = m
                    .header_value("redrive-of")
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                log.lock()
                    .unwrap()
                    .entry(m.value.id)
                    .or_default()
                    .push(redrive);
                Ok(())
            }
        })
        .retry(RetryPolicy::none());
    let consumer = Arc::new(
        testkit::kafka()
            .consumer(&testkit::unique("redrive"), router)
            .unwrap(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = consumer.clone();
    let task = tokio::spawn(async move {
        running
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    assert!(testkit::eventually(Duration::from_secs(60), || seen.lock().unwrap().len() == 4).await);
    assert_eq!(
        testkit::read(&dlt, 1, Duration::from_secs(30)).await.len(),
        1
    );

    // When the operator lists the dead-letter topic, the failure is explained.
    let listed = kafkit_lines(&["dlt", "list", &dlt]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["value"]["id"], 2);
    assert_eq!(listed[0]["failure"]["original_topic"], topic.as_str());
    assert_eq!(listed[0]["failure"]["original_offset"], "2");
    assert_eq!(listed[0]["failure"]["error_kind"], "permanent");
    assert_eq!(
        listed[0]["failure"]["error_message"],
        "inventory service rejected it"
    );

    // And, the dependency fixed, replays it.
    broken.store(false, Ordering::SeqCst);
    let report = kafkit_lines(&["dlt", "replay", &dlt]);
    assert_eq!(report[0]["replayed"], 1);
    assert_eq!(report[0]["by_topic"][&topic], 1);

    // Then the consumer handles record 2, marked as a redrive of the dead-letter copy.
    assert!(testkit::eventually(Duration::from_secs(60), || seen.lock().unwrap().len() == 5).await);
    assert_eq!(seen.lock().unwrap()[&2], [Some(format!("{dlt}/0/0"))]);

    // And a second replay finds nothing new.
    let again = kafkit_lines(&["dlt", "replay", &dlt]);
    assert_eq!(again[0]["replayed"], 0);
    // Unless the operator asks for the record again, by its offset.
    let forced = kafkit_lines(&["dlt", "replay", &dlt, "--again", "0/0"]);
    assert_eq!(forced[0]["replayed"], 1, "{forced:?}");
    assert!(
        testkit::eventually(Duration::from_secs(60), || seen.lock().unwrap()[&2].len()
            == 2)
        .await
    );

    // Spring's and Karafka's dead-letter headers are understood too.
    let target = testkit::topic("spring-target", 1).await;
    // Spring's default dead-letter name: the replay goes back only to the topic it serves.
    let spring_dlt = format!("{target}-dlt");
    testkit::kafka()
        .admin()
        .unwrap()
        .ensure_topics(&[kafkit::TopicSpec::new(&spring_dlt, 1)])
        .await
        .unwrap();
    testkit::send(vec![
        Record::to(&spring_dlt)
            .header("kafka_dlt-original-topic", target.as_str())
            .text("from spring"),
        Record::to(&spring_dlt)
            .header("source_topic", target.as_str())
            .text("from karafka"),
        Record::to(&spring_dlt).text("no origin"),
    ])
    .await;
    let report = kafkit_lines(&["dlt", "replay", &spring_dlt]);
    assert_eq!(report[0]["replayed"], 2);
    assert_eq!(report[0]["skipped"].as_array().unwrap().len(), 1);
    let replayed = testkit::read(&target, 2, Duration::from_secs(30)).await;
    let values: Vec<&[u8]> = replayed.iter().map(|m| m.payload().unwrap()).collect();
    assert_eq!(values, [&b"from spring"[..], b"from karafka"]);
    assert!(
        replayed
            .iter()
            .all(|m| m.header_value("kafka_dlt-original-topic").is_none())
    );

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
