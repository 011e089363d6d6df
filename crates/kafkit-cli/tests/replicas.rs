//! Two `kafkit serve` processes on one broker behave as one: an idempotent request answered
//! by one replica is replayed by the other, which writes nothing; replays of one dead-letter
//! topic asked of both at once publish each record once, and a replica cut off in the middle of
//! a replay cannot commit over the process that took over.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use common::{json_lines, kafkit, run};
use serde_json::{Value, json};

/// A running `kafkit serve` on the test broker; killed on drop.
struct Gateway {
    child: Child,
    base: String,
}

impl Gateway {
    fn start(args: &[&str]) -> Gateway {
        Gateway::start_with(args, &[])
    }

    /// A gateway with `args` and the environment variables `env`.
    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let port = {
            let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let address = format!("127.0.0.1:{port}");
        let mut child = kafkit()
            .env("KAFKA_BROKERS", testkit::brokers())
            .args(["serve", "--listen", &address])
            .args(args)
            .envs(env.iter().copied())
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

impl Gateway {
    /// Sends `signal` (`STOP`, `CONT`) to the gateway's process.
    fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal}");
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

/// How many copies of each dead-lettered record (`redrive-of` header) `topic` holds, after
/// reading all `count` records it holds.
async fn copies_by_origin(topic: &str, count: usize) -> std::collections::HashMap<String, usize> {
    let messages = testkit::read(topic, count, std::time::Duration::from_secs(60)).await;
    assert_eq!(messages.len(), count, "every stored record is read");
    let mut copies = std::collections::HashMap::new();
    for message in messages {
        let origin = message
            .headers
            .iter()
            .find(|(name, _)| name == kafkit::redrive::REDRIVE_OF)
            .map(|(_, value)| String::from_utf8(value.clone()).unwrap())
            .expect("a replayed record names its origin");
        *copies.entry(origin).or_insert(0) += 1;
    }
    copies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_asked_of_both_replicas_at_once_publish_each_record_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Given a dead-letter topic and two replicas on one broker.
    let source = testkit::topic("replicas-replay", 1).await;
    let dlt = testkit::empty_dead_letter_topic(&source, 2).await;
    let first = Gateway::start(&[]).ready().await;
    let second = Gateway::start(&[]).ready().await;
    let http = reqwest::Client::new();
    let replay = |base: &str| {
        http.post(format!("{base}/dlt/{dlt}/replay?limit=10000"))
            .send()
    };

    let (rounds, per_round) = (3, 2_000);
    for round in 0..rounds {
        // When records are dead-lettered and both replicas are asked to replay at once...
        testkit::send(
            (0..per_round)
                .map(|i| {
                    kafkit::Record::to(&dlt)
                        .key(format!("k{i}"))
                        .header(kafkit::dead_letter::ORIGINAL_TOPIC, source.as_str())
                        .json(&json!({"round": round, "id": i}))
                        .unwrap()
                })
                .collect(),
        )
        .await;
        let (a, b) = tokio::join!(replay(&first.base), replay(&second.base));
        let mut replayed = 0;
        for answer in [a.unwrap(), b.unwrap()] {
            let status = answer.status();
            let body: Value = answer.json().await.unwrap();
            match status.as_u16() {
                200 => replayed += body["replayed"].as_u64().unwrap(),
                // The one that found the other replaying is told so, having published nothing.
                409 => assert_eq!(body["error"]["code"], "replay_in_progress", "{body}"),
                other => panic!("round {round}: {other} {body}"),
            }
        }
        assert!(
            replayed <= per_round as u64,
            "round {round}: {replayed} replayed"
        );
        // Whatever one replica left (it may have been refused), one more replay finishes.
        let rest: Value = replay(&first.base).await.unwrap().json().await.unwrap();
        assert!(rest["replayed"].is_u64(), "{rest}");
    }

    // Then every record is in the source topic exactly once.
    let stored = testkit::kafka()
        .admin()
        .unwrap()
        .describe_topic(&source)
        .await
        .unwrap()
        .record_count() as usize;
    let copies = copies_by_origin(&source, stored).await;
    let duplicated = copies.values().filter(|&&n| n > 1).count();
    assert_eq!(
        (copies.len(), duplicated, stored),
        (rounds * per_round, 0, rounds * per_round),
        "(records replayed, records published more than once, records stored)"
    );
}

/// Records stored in `topic`.
async fn stored(topic: &str) -> usize {
    testkit::kafka()
        .admin()
        .unwrap()
        .describe_topic(topic)
        .await
        .unwrap()
        .record_count() as usize
}

/// `kafkit dlt replay DLT` on the test broker: what it replayed.
async fn cli_replay(dlt: &str) -> u64 {
    let dlt = dlt.to_owned();
    let report = tokio::task::spawn_blocking(move || {
        json_lines(&run(
            kafkit()
                .args(["dlt", "replay", &dlt])
                .env("KAFKA_BROKERS", testkit::brokers()),
            "",
        ))
    })
    .await
    .unwrap();
    report[0]["replayed"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_mid_replay_cannot_commit_over_the_process_that_took_over() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Given a dead-letter topic and a replica that publishes slowly (each round waits out the
    // linger), with a short session.
    let source = testkit::topic("replicas-cut-off", 1).await;
    let dlt = testkit::empty_dead_letter_topic(&source, 1).await;
    let count = 3_000;
    testkit::send(
        (0..count)
            .map(|i| {
                kafkit::Record::to(&dlt)
                    .key(format!("k{i}"))
                    .header(kafkit::dead_letter::ORIGINAL_TOPIC, source.as_str())
                    .json(&json!({"id": i}))
                    .unwrap()
            })
            .collect(),
    )
    .await;
    let replica = Gateway::start_with(
        &[],
        &[
            ("KAFKA_LINGER_MS", "1500"),
            ("KAFKA_SESSION_TIMEOUT", "6000"),
            ("KAFKA_HEARTBEAT_INTERVAL", "1000"),
        ],
    )
    .ready()
    .await;

    // When the replica is frozen once it has begun publishing...
    let asked = tokio::spawn(
        reqwest::Client::new()
            .post(format!("{}/dlt/{dlt}/replay?limit=10000", replica.base))
            .send(),
    );
    let began = async {
        while stored(&source).await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), began)
        .await
        .expect("the replica begins publishing");
    replica.signal("STOP");
    // ...the CLI gets the lock once the replica's session expired, and replays everything the
    // replica had not committed...
    assert_eq!(cli_replay(&dlt).await, count as u64);
    // ...and the replica, thawed, finds it lost its lock: its commit is refused.
    replica.signal("CONT");
    let answer = asked.await.unwrap().unwrap();
    let status = answer.status();
    let body: Value = answer.json().await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "replay_in_progress", "{body}");

    // Then the position stands where the CLI left it: nothing is left to replay.
    assert_eq!(
        cli_replay(&dlt).await,
        0,
        "the cut-off replica moved the position back"
    );
    // And every record went back (some twice: what the replica published before it was cut
    // off and never committed, as after a crash).
    let copies = copies_by_origin(&source, stored(&source).await).await;
    assert_eq!(copies.len(), count);
}

/// Records in `topic` (all `count` of them) by their key: the offsets each key is stored at.
async fn offsets_by_key(topic: &str, count: usize) -> std::collections::BTreeMap<String, Vec<i64>> {
    let messages = testkit::read(topic, count, std::time::Duration::from_secs(60)).await;
    assert_eq!(messages.len(), count, "every stored record is read");
    let mut offsets = std::collections::BTreeMap::<String, Vec<i64>>::new();
    for message in messages {
        let key = String::from_utf8(message.key.expect("a key")).unwrap();
        offsets.entry(key).or_default().push(message.offset);
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_the_other_replica_while_the_first_send_is_in_flight_writes_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Given two replicas sharing one answer topic on one broker; the first lingers 8 s before
    // sending a batch and gives up on a request after 2 s, so its send is still in flight
    // (queued in its producer, not yet acknowledged) when the client retries on the second.
    let topic = testkit::topic("replicas-in-flight", 1).await;
    let answers = testkit::unique("answers");
    let first = Gateway::start_with(
        &["--idempotency-topic", &answers],
        &[
            ("KAFKA_LINGER_MS", "8000"),
            ("KAFKIT_REQUEST_TIMEOUT", "2000"),
        ],
    )
    .ready()
    .await;
    let second = Gateway::start(&["--idempotency-topic", &answers])
        .ready()
        .await;
    let http = reqwest::Client::new();
    let post = |base: &str, key: Option<&str>, body: &Value| {
        let request = http.post(format!("{base}/kafka/send-batch")).json(body);
        match key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        }
        .send()
    };
    // One batch keyed by the request's Idempotency-Key, one whose records carry their own keys.
    let by_request = json!({"messages": [{"topic": topic, "key": "request-1", "value": 1}]});
    let by_record = json!({"messages": [
        {"topic": topic, "key": "record-1", "value": 1, "idempotency_key": "record-1"},
        {"topic": topic, "key": "record-2", "value": 2, "idempotency_key": "record-2"},
    ]});
    let cases = [(Some("request-1"), &by_request), (None, &by_record)];
    // Every 2xx answer's results: (record key, partition, offset).
    let mut acknowledged = Vec::new();
    for (key, body) in cases {
        // When the first replica's request times out with its send in flight...
        let timed_out = post(&first.base, key, body).await.unwrap();
        let status = timed_out.status();
        let answer: Value = timed_out.json().await.unwrap();
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "request_timeout", "{answer}");
        // ...its retry on the second replica, with that send still in flight, is told the key
        // is in progress, having produced nothing...
        let retry = post(&second.base, key, body).await.unwrap();
        let status = retry.status();
        let answer: Value = retry.json().await.unwrap();
        assert_eq!(
            status, 409,
            "retry while the first send is in flight: {answer}"
        );
        assert!(
            answer.to_string().contains("idempotency_in_progress"),
            "{answer}"
        );
        // ...and the client retries on both in turn until a 2xx (once the first send is
        // delivered and answered).
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut replicas = [&second.base, &first.base].into_iter().cycle();
        let answer = loop {
            let base = replicas.next().unwrap();
            let retry = post(base, key, body).await.unwrap();
            let status = retry.status();
            let answer: Value = retry.json().await.unwrap();
            if status.is_success() {
                break answer;
            }
            // Refused while the first send is unresolved: in progress, never produced.
            assert!(
                [409, 503].contains(&status.as_u16()),
                "retry on {base}: {status} {answer}"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "no 2xx within 60 s: {answer}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        let messages = body["messages"].as_array().unwrap();
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), messages.len(), "{answer}");
        for (message, result) in messages.iter().zip(results) {
            let offset = result["offset"]
                .as_i64()
                .unwrap_or_else(|| panic!("{answer}"));
            acknowledged.push((message["key"].as_str().unwrap().to_owned(), offset));
        }
    }

    // Then, once the first replica's lingering send has gone out too, each record is in Kafka
    // exactly once, at the offset the 2xx answer named.
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let offsets = offsets_by_key(&topic, stored(&topic).await).await;
    for (key, offset) in &acknowledged {
        assert_eq!(
            offsets.get(key),
            Some(&vec![*offset]),
            "record {key}: stored at {:?}, answered at {offset}",
            offsets.get(key)
        );
    }
    assert_eq!(offsets.len(), 3, "{offsets:?}");
}
