//! Two `kafkit serve` processes on one broker behave as one: an idempotent request answered
//! by one replica is replayed by the other, which writes nothing.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use common::kafkit;
use serde_json::{Value, json};

/// A running `kafkit serve` on the test broker; killed on drop.
struct Gateway {
    child: Child,
    base: String,
}

impl Gateway {
    fn start(args: &[&str]) -> Gateway {
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let address = format!("127.0.0.1:{port}");
        let mut child = kafkit()
            .env("KAFKA_BROKERS", testkit::brokers())
            .args(["serve", "--listen", &address])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("gateway exited before it was ready")
                .unwrap();
            if line.contains("kafkit gateway ready") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Gateway {
            child,
            base: format!("http://{address}"),
        }
    }

    /// Waits until `/health/ready` answers 200: the shared answers are read.
    async fn ready(self) -> Gateway {
        let http = reqwest::Client::new();
        for _ in 0..100 {
            let ready = http.get(format!("{}/health/ready", self.base)).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return self;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        panic!("{} never ready", self.base);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_the_other_replica_replays_the_first_answer_and_writes_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Given two replicas sharing one answer topic, on one broker.
    let topic = testkit::topic("replicas", 3).await;
    let answers = testkit::unique("answers");
    let first = Gateway::start(&["--idempotency-topic", &answers])
        .ready()
        .await;
    let second = Gateway::start(&["--idempotency-topic", &answers])
        .ready()
        .await;
    let http = reqwest::Client::new();
    let send = |base: &str, body: &Value| {
        http.post(format!("{base}/kafka/send"))
            .header("idempotency-key", "order-7")
            .json(body)
            .send()
    };
    let body = json!({"topic": topic, "key": "o-7", "value": {"order": 7}});

    // When a keyed request is answered by the first replica...
    let answered = send(&first.base, &body).await.unwrap();
    assert_eq!(answered.status(), 200);
    assert!(answered.headers().get("idempotent-replayed").is_none());
    let answered: Value = answered.json().await.unwrap();

    // ...its retry on the second replica gets the same answer, marked as a replay.
    let retried = send(&second.base, &body).await.unwrap();
    assert_eq!(retried.status(), 200);
    assert_eq!(retried.headers()["idempotent-replayed"], "true");
    assert_eq!(retried.json::<Value>().await.unwrap(), answered);
    // The same key with another body is refused there too.
    let other = json!({"topic": topic, "key": "o-7", "value": {"order": 8}});
    let reused = send(&second.base, &other).await.unwrap();
    assert_eq!(reused.status(), 422);

    // And the record is in Kafka once.
    let stored = testkit::kafka()
        .admin()
        .unwrap()
        .describe_topic(&topic)
        .await
        .unwrap()
        .record_count();
    assert_eq!(stored, 1);

    // A replica started after the answer learns it at start.
    let third = Gateway::start(&["--idempotency-topic", &answers])
        .ready()
        .await;
    let late = send(&third.base, &body).await.unwrap();
    assert_eq!(late.status(), 200);
    assert_eq!(late.headers()["idempotent-replayed"], "true");
    let stored = testkit::kafka()
        .admin()
        .unwrap()
        .describe_topic(&topic)
        .await
        .unwrap()
        .record_count();
    assert_eq!(stored, 1);
}
