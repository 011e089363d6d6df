//! Idempotency keys against a broker that stops answering mid-request: a send that times out
//! keeps its key until the delivery report arrives, so a retry never produces a second copy.

use std::time::Duration;

use kafkit::{Kafka, KafkaConfig, TopicSpec};
use kafkit_gateway::{AppState, Timeouts, router};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_send_keeps_its_idempotency_key_until_the_broker_answers() {
    // reqwest is built with rustls and no bundled crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // Given a gateway on a broker of its own, a 1 s broker timeout, and a 3 s request limit.
    let broker = testkit::OwnBroker::start();
    let topic = testkit::unique("paused");
    broker
        .kafka()
        .admin()
        .unwrap()
        .ensure_topics(&[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    let config = KafkaConfig {
        request_timeout: Duration::from_secs(1),
        delivery_timeout: Duration::from_secs(60),
        ..broker.config()
    };
    let kafka = Kafka::connect(&config).unwrap();
    let limits = Timeouts {
        broker_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(3),
    };
    let state = AppState::new(&kafka).unwrap().with_timeouts(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
    let client = reqwest::Client::new();
    let send = |key: &'static str| {
        client
            .post(format!("{base}/kafka/send"))
            .header("idempotency-key", key)
            .json(&json!({"topic": topic, "key": "k", "value": {"n": 1}}))
            .send()
    };
    // The producer knows the broker and the topic (and has its producer id) before the broker
    // freezes: sent directly, since a first send can take longer than the 1 s limit.
    state
        .producer()
        .send(kafkit::Record::to(&topic).text("warm-up"))
        .await
        .unwrap();

    // When the broker freezes during a send with an idempotency key, and the client retries.
    broker.pause();
    let first = send("order-1").await.unwrap();
    assert_eq!(first.status(), 503);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["error"]["code"], "broker_timeout", "{body}");
    let retry = send("order-1").await.unwrap();
    assert_ne!(
        retry.status(),
        200,
        "a retry succeeded while the broker was frozen"
    );

    // Then, once the broker answers again, the first send is delivered, a retry replays its
    // answer, and the record is in the topic once (plus the warm-up).
    broker.resume();
    let count = || async {
        broker
            .kafka()
            .admin()
            .unwrap()
            .describe_topic(&topic)
            .await
            .unwrap()
            .record_count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count().await < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Give the delivery report a moment to reach the claim.
    let mut replay = send("order-1").await.unwrap();
    for _ in 0..20 {
        if replay.status() == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        replay = send("order-1").await.unwrap();
    }
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count().await, 2, "the retried record was produced twice");
    server.abort();
    state.producer().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_timeout_shorter_than_the_broker_timeout_never_duplicates_a_keyed_record() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Given a gateway on a broker of its own whose request limit (1 s) fires before its broker
    // timeout (4 s): the outer timeout drops the handler while the send runs on.
    let broker = testkit::OwnBroker::start();
    let topic = testkit::unique("paused-retry");
    broker
        .kafka()
        .admin()
        .unwrap()
        .ensure_topics(&[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    let config = KafkaConfig {
        request_timeout: Duration::from_secs(4),
        delivery_timeout: Duration::from_secs(60),
        ..broker.config()
    };
    let kafka = Kafka::connect(&config).unwrap();
    let limits = Timeouts {
        broker_timeout: Duration::from_secs(4),
        request_timeout: Duration::from_secs(1),
    };
    let state = AppState::new(&kafka).unwrap().with_timeouts(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
    state
        .producer()
        .send(kafkit::Record::to(&topic).text("warm-up"))
        .await
        .unwrap();

    // When the broker freezes for 5 s while four clients each send three records, every
    // record under its own Idempotency-Key, each client retrying a failed request with the
    // same key until it is answered 200.
    broker.pause();
    let client = reqwest::Client::new();
    let mut clients = Vec::new();
    for c in 0..4 {
        let (client, url, topic) = (client.clone(), format!("{base}/kafka/send"), topic.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = 0;
            for i in 0..3 {
                let key = format!("c{c}-r{i}");
                loop {
                    let answer = client
                        .post(&url)
                        .header("idempotency-key", &key)
                        .json(&json!({"topic": topic, "key": key, "value": {"c": c, "i": i}}))
                        .send()
                        .await
                        .unwrap();
                    if answer.status() == 200 {
                        break;
                    }
                    failures += 1;
                    assert!(failures < 200, "{key} never answered 200");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    broker.resume();
    let mut failures = 0;
    for client in clients {
        failures += client.await.unwrap();
    }
    // (The freeze did make requests fail and be retried.)
    assert!(failures > 0);

    // Then every record is in Kafka exactly once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored = broker
        .kafka()
        .admin()
        .unwrap()
        .describe_topic(&topic)
        .await
        .unwrap()
        .record_count();
    assert_eq!(stored, 1 + 12, "records written more than once");
    server.abort();
    state.producer().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_cached_for_a_second_and_turns_503_once_draining() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Given a gateway served by `serve` on a broker of its own.
    let broker = testkit::OwnBroker::start();
    let config = KafkaConfig {
        request_timeout: Duration::from_secs(2),
        ..broker.config()
    };
    let kafka = Kafka::connect(&config).unwrap();
    let state = AppState::new(&kafka).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ready_url = format!("http://{}/health/ready", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kafkit_gateway::serve(listener, state.clone(), async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    // (A first metadata fetch may be slow on a loaded machine.)
    let mut ready = client.get(&ready_url).send().await.unwrap().status();
    for _ in 0..30 {
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        ready = client.get(&ready_url).send().await.unwrap().status();
    }
    assert_eq!(ready, 200);

    // When the broker freezes: within a second the last check answers, without asking it.
    broker.pause();
    let started = std::time::Instant::now();
    assert_eq!(client.get(&ready_url).send().await.unwrap().status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // After it, the frozen broker is found out.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fresh = client.get(&ready_url).send().await.unwrap();
    assert_eq!(fresh.status(), 503);
    let body: Value = fresh.json().await.unwrap();
    assert_eq!(body["checks"]["brokers"]["status"], "down", "{body}");
    broker.resume();

    // And once shutdown begins, readiness is 503 "draining" whatever the brokers say.
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(state.readiness().is_draining());
    let app = router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ready_url = format!("http://{}/health/ready", listener.local_addr().unwrap());
    let again = tokio::spawn(axum::serve(listener, app).into_future());
    let draining = client.get(&ready_url).send().await.unwrap();
    assert_eq!(draining.status(), 503);
    let body: Value = draining.json().await.unwrap();
    assert_eq!(body["status"], "draining");
    again.abort();
    state.producer().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_send_that_cannot_claim_its_key_across_replicas_is_refused_not_produced() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Given a gateway sharing its idempotency answers and claims through a topic of a broker
    // of its own, with limits (8 s to the broker, 10 s per request) above the claim's 3 s.
    let broker = testkit::OwnBroker::start();
    let topic = testkit::unique("paused-claim");
    broker
        .kafka()
        .admin()
        .unwrap()
        .ensure_topics(&[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    let config = KafkaConfig {
        request_timeout: Duration::from_secs(2),
        delivery_timeout: Duration::from_secs(60),
        ..broker.config()
    };
    let kafka = Kafka::connect(&config).unwrap();
    let limits = Timeouts {
        broker_timeout: Duration::from_secs(8),
        request_timeout: Duration::from_secs(10),
    };
    let state = AppState::new(&kafka)
        .unwrap()
        .with_timeouts(limits)
        .with_shared_answers(&kafka, &testkit::unique("answers"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, router(state.clone())).into_future());
    let client = reqwest::Client::new();
    let send = |key: &'static str| {
        client
            .post(format!("{base}/kafka/send"))
            .header("idempotency-key", key)
            .json(&json!({"topic": topic, "key": key, "value": {"n": 1}}))
            .send()
    };
    let count = || async {
        broker
            .kafka()
            .admin()
            .unwrap()
            .describe_topic(&topic)
            .await
            .unwrap()
            .record_count()
    };
    // A keyed send goes through while the broker answers.
    assert_eq!(send("warm-up").await.unwrap().status(), 200);

    // When the broker freezes and a request with a new key arrives, the gateway cannot know
    // whether another replica holds the key: it refuses, producing nothing.
    broker.pause();
    let refused = send("order-1").await.unwrap();
    let status = refused.status();
    let retry_after = refused.headers().get("retry-after").cloned();
    let body: Value = refused.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_unavailable", "{body}");
    assert!(retry_after.is_some(), "no Retry-After");

    // Then, once the broker answers again, nothing was produced for it (its late claim is
    // released), and a retry produces the record once.
    broker.resume();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count().await, 1, "the refused request produced its record");
    let mut retry = send("order-1").await.unwrap();
    for _ in 0..40 {
        if retry.status() == 200 {
            break;
        }
        // A retry that reads the late claim before its release is told it is in progress.
        assert_eq!(retry.status(), 409);
        tokio::time::sleep(Duration::from_millis(250)).await;
        retry = send("order-1").await.unwrap();
    }
    assert_eq!(retry.status(), 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(count().await, 2);
    server.abort();
    state.shutdown().await.unwrap();
}
