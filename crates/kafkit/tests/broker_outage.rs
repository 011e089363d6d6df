//! The consumer runtime during a broker outage, on a broker of the test's own that it freezes
//! (SIGSTOP). Its own test binary: it counts the threads of its process, which other tests
//! running beside it would change.

use std::time::Duration;

use kafkit::{Message, Router, TopicSpec, consumer::ConsumerOptions};
use tokio_util::sync::CancellationToken;

/// Threads of this process, from /proc.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_refreshes_do_not_pile_up_while_the_broker_does_not_answer() {
    // Given a consumer of 16 partitions refreshing lag as often as its loop turns (once a
    // second); each refresh waits up to 2 s per partition for a broker that does not answer.
    let broker = testkit::OwnBroker::start();
    let topic = testkit::unique("outage");
    let kafka = broker.kafka();
    kafka
        .admin()
        .unwrap()
        .ensure_topics(&[TopicSpec::new(&topic, 16)])
        .await
        .unwrap();
    let mut router = Router::new();
    router.register_raw(&topic, |_: Message| async { Ok(()) });
    let options = ConsumerOptions {
        lag_interval: Duration::from_millis(50),
        ..ConsumerOptions::default()
    };
    let consumer = std::sync::Arc::new(
        kafka
            .consumer_with_options(&testkit::unique("outage"), router, options)
            .unwrap(),
    );
    let token = CancellationToken::new();
    let task = tokio::spawn({
        let consumer = consumer.clone();
        let stop = token.clone();
        async move { consumer.run(stop.cancelled_owned()).await }
    });
    assert!(
        testkit::eventually(Duration::from_secs(60), || consumer
            .health()
            .partitions
            .len()
            == 16)
        .await,
        "never assigned: {:?}",
        consumer.health()
    );
    // Lag is known once before the outage: a refresh is quick while the broker answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = threads();

    // When the broker freezes for 15 s.
    broker.pause();
    let mut most = before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        most = most.max(threads());
    }
    broker.resume();

    // Then at most one refresh waited on it at a time: the process gained a thread or two,
    // not one per refresh (15 refreshes started in 15 s, each waiting 32 s).
    eprintln!("threads: {before} before the outage, {most} at most during it");
    assert!(
        most <= before + 4,
        "lag refreshes piled up: {before} threads before the outage, {most} during it"
    );
    token.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("run ends after the outage")
        .unwrap()
        .unwrap();
}
